"""``splitctl``'s gate and early-exit part (issue 16): status lines and two commands.

* ``splitctl gate on|off`` turns the motion gate on or off at run time;
* ``splitctl exit-threshold VALUE [--cut CUT]`` sets one exit's confidence threshold, or
  every exit's;
* ``splitctl status`` / ``watch`` show the gate's share of results and its time per
  frame, and each exit's checked frames, exit rate and threshold.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence, TextIO

from protos import control_pb2

__all__ = ["add_gate_exit_parsers", "gate_exit_lines"]


def _share(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def gate_exit_lines(s: control_pb2.AgentStatus) -> list[str]:
    """The ``gate`` and ``exits`` lines of the status screen."""
    gated = sum(p.results for p in s.results_by_path if p.path == "gated")
    exited = sum(p.results for p in s.results_by_path if p.path == "exited")
    if not s.results:
        gate = "no results yet"
    else:
        gate = f"{gated} gated of {s.results} results ({_share(gated, s.results)})"
    state = ("on" if s.gate_enabled else "off") if s.HasField("current") else "-"
    gate += f"   gate {state}" + (f", {s.gate_ms:.2f} ms per frame" if s.gate_ms else "")
    lines = [f"gate       {gate}"]
    if s.exits:
        parts = [f"{e.cut_id}: {e.exited} of {e.checked} exited ({_share(e.exited, e.checked)}), "
                 f"threshold {e.threshold:.3f}, {e.exit_ms:.2f} ms" for e in s.exits]
        lines.append(f"exits      {exited} exited of {s.results} results ({_share(exited, s.results)})   "
                     + "; ".join(parts))
    else:
        lines.append("exits      none (the bundle has no early exit, or exits.enabled = false)")
    return lines


def render_exits(exits: Sequence[control_pb2.ExitStatus]) -> str:
    return "\n".join(f"{e.cut_id}: threshold {e.threshold:.3f}" for e in exits) or "(no exits)"


def add_gate_exit_parsers(sub: Any, parents: list[argparse.ArgumentParser],
                          client: Callable[[argparse.Namespace], Any],
                          emit: Callable[[argparse.Namespace, TextIO, Any, str], None]) -> None:
    """Register ``gate`` and ``exit-threshold`` with splitctl's subparsers."""

    def cmd_gate(args: argparse.Namespace, out: TextIO) -> int:
        with client(args) as c:
            response = c.set_gate(args.state == "on")
        emit(args, out, response, f"motion gate {'on' if response.enabled else 'off'}")
        return 0

    def cmd_exit_threshold(args: argparse.Namespace, out: TextIO) -> int:
        with client(args) as c:
            response = c.set_exit_threshold(args.threshold, args.cut)
        emit(args, out, response, render_exits(response.exits))
        return 0

    p = sub.add_parser("gate", parents=parents, help="turn the motion gate on or off")
    p.add_argument("state", choices=["on", "off"])
    p.set_defaults(func=cmd_gate)
    p = sub.add_parser("exit-threshold", parents=parents, help="set the early exits' confidence threshold")
    p.add_argument("threshold", type=float, help="in (0, 1]; higher exits fewer frames")
    p.add_argument("--cut", default="", help="the cut whose exit changes (default: every exit)")
    p.set_defaults(func=cmd_exit_threshold)
