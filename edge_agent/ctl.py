"""``splitctl`` — the operator's tool for a running edge agent.

Commands::

    splitctl status                      current cut, mode, reason, estimates, telemetry, counters
    splitctl watch [--interval-ms N]     live view, refreshed in place (Ctrl-C exits)
    splitctl cuts                        every cut with its predicted latency/energy right now
    splitctl set-split CUT               pin a split (the policy stops choosing)
    splitctl auto                        return to automatic split selection
    splitctl policy --objective latency|energy|slo [--slo-ms N]
    splitctl discover [--timeout-s S]    servers and agents on the LAN (zeroconf)
    splitctl gate on|off                 turn the motion gate on or off
    splitctl exit-threshold T [--cut C]  set the early exits' confidence threshold (edge_agent.ctl_exits)

Where the agent is: ``--socket PATH`` (default ``$SPLITINFER_CONTROL_SOCKET`` or the
agent's default socket), or ``--address host:port`` with ``--token T`` (defaults
``$SPLITINFER_CONTROL_ADDRESS``, ``$SPLITINFER_CONTROL_TOKEN``). Read commands take
``--json``. Errors are one line on stderr; exit codes: 0 ok, 1 other failure, 2 bad
usage or argument, 3 agent unreachable, 4 no such cut, 5 not authorized.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence, TextIO

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from edge_agent.control import ADDRESS_ENV, TOKEN_ENV, default_socket_path
from edge_agent.ctl_exits import add_gate_exit_parsers, gate_exit_lines
from protos import control_pb2, control_pb2_grpc

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_FOUND, EXIT_UNAUTHORIZED = 0, 1, 2, 3, 4, 5

_MODE_NAMES = {
    control_pb2.MODE_AUTO: "auto",
    control_pb2.MODE_PINNED: "pinned",
    control_pb2.MODE_LOCAL_FALLBACK: "local-fallback",
}
_OBJECTIVE_NAMES = {
    control_pb2.OBJECTIVE_LATENCY: "latency",
    control_pb2.OBJECTIVE_ENERGY: "energy",
    control_pb2.OBJECTIVE_SLO: "slo",
}
_OBJECTIVE_VALUES = {name: value for value, name in _OBJECTIVE_NAMES.items()}


class CtlError(Exception):
    """A failure reported as one line with an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        self.exit_code = exit_code
        super().__init__(message)


# --------------------------------------------------------------------------- client


@dataclass
class ControlClient:
    """A small synchronous client for the control API."""

    target: str  # "unix:/path" or "host:port"
    token: Optional[str] = None
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        self._channel = grpc.insecure_channel(self.target)
        self._stub = control_pb2_grpc.AgentControlStub(self._channel)
        self._metadata = (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self.translate(exc) from None

    def translate(self, exc: grpc.RpcError) -> CtlError:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return CtlError(
                f"cannot reach the agent at {self.target}: {details or code.name}; is `splitinfer edge` running?",
                EXIT_UNREACHABLE,
            )
        if code is grpc.StatusCode.NOT_FOUND:
            return CtlError(details, EXIT_NOT_FOUND)
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            return CtlError(details, EXIT_USAGE)
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return CtlError(f"the agent at {self.target} refused the call: {details}; check --token", EXIT_UNAUTHORIZED)
        return CtlError(f"{code.name if code else 'error'}: {details}", EXIT_ERROR)

    def status(self) -> control_pb2.AgentStatus:
        return self._call(self._stub.GetStatus, control_pb2.GetStatusRequest())

    def cuts(self) -> control_pb2.ListCutsResponse:
        return self._call(self._stub.ListCuts, control_pb2.ListCutsRequest())

    def set_split(self, cut_id: str) -> control_pb2.SetSplitResponse:
        return self._call(self._stub.SetSplit, control_pb2.SetSplitRequest(cut_id=cut_id))

    def set_auto(self) -> control_pb2.SetAutoResponse:
        return self._call(self._stub.SetAuto, control_pb2.SetAutoRequest())

    def set_policy(self, objective: str, slo_ms: Optional[float]) -> control_pb2.SetPolicyResponse:
        request = control_pb2.SetPolicyRequest(objective=_OBJECTIVE_VALUES[objective], slo_ms=slo_ms or 0.0)
        return self._call(self._stub.SetPolicy, request)

    def set_gate(self, enabled: bool) -> control_pb2.SetGateResponse:
        return self._call(self._stub.SetGate, control_pb2.SetGateRequest(enabled=enabled))

    def set_exit_threshold(self, threshold: float, cut_id: str = "") -> control_pb2.SetExitThresholdResponse:
        return self._call(self._stub.SetExitThreshold, control_pb2.SetExitThresholdRequest(threshold=threshold,
                                                                                          cut_id=cut_id))

    def watch(self, interval_ms: int) -> Any:
        """The server stream of ``AgentEvent`` (iterate it; ``.cancel()`` ends it). No deadline:
        it runs until cancelled."""
        return self._stub.Watch(control_pb2.WatchRequest(interval_ms=interval_ms), metadata=self._metadata)


# --------------------------------------------------------------------------- rendering


def to_dict(message) -> dict:
    """Protobuf JSON with field names as in the .proto, every field present, and 64-bit
    integers as JSON numbers (protobuf's JSON mapping would quote them)."""
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _unquote_int64(message.DESCRIPTOR, data)


_INT64_TYPES = frozenset(
    {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
     FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}
)


def _unquote_int64(descriptor, data: dict) -> dict:
    for field in descriptor.fields:
        if field.name not in data:
            continue
        value = data[field.name]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, dict):
                    _unquote_int64(field.message_type, item)
        elif field.type in _INT64_TYPES:
            data[field.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
    return data


def _mode(value: int) -> str:
    return _MODE_NAMES.get(value, "unknown")


def _objective(value: int) -> str:
    return _OBJECTIVE_NAMES.get(value, "unknown")


def _num(value: float, unit: str, fmt: str = ".0f") -> str:
    return f"{value:{fmt}} {unit}" if value else "-"


#: How the policy's reason starts when a configuration problem keeps the cloud unavailable.
CONFIGURATION_PREFIX = "configuration:"


def render_status(s: control_pb2.AgentStatus) -> str:
    t = s.telemetry
    by_path = ", ".join(f"{p.path} {p.results}" for p in s.results_by_path) or "none yet"
    objective = _objective(s.objective) + (f" (SLO {s.slo_ms:g} ms)" if s.slo_ms else "")
    battery = f"{t.battery_pct:.0f}%{' charging' if t.charging else ''}" if t.has_battery else "mains (no battery)"
    lines = [
        f"agent      {s.agent_id}   up {s.uptime_s:.0f} s",
        f"bundle     {s.bundle_name}@{s.bundle_version}   server {s.server_address or '-'} (circuit {s.circuit_state or '-'})",
        f"cut        {s.current.cut_id}   mode {_mode(s.current.mode)}   objective {objective}",
        f"reason     {s.current.reason or '-'}",
        f"link       uplink {_num(t.uplink_kbps, 'kbps')}   rtt {_num(t.rtt_ms, 'ms', '.1f')}"
        f"   server queue {_num(t.server_queue_ms, 'ms', '.1f')} compute {_num(t.server_compute_ms, 'ms', '.1f')}",
        f"device     battery {battery}   cpu {_num(t.cpu_temp_c, 'C', '.0f')}{' THROTTLED' if t.throttled else ''}"
        f"   load {_num(t.cpu_load_pct, '%', '.0f')}   head slowdown x{t.slowdown_factor:.2f}",
        f"frames     captured {s.frames_captured}   dropped {s.frames_dropped}   results {s.results}"
        f"   mean latency {_num(s.mean_latency_ms, 'ms', '.1f')}",
        f"by path    {by_path}",
        *gate_exit_lines(s),
    ]
    if s.current.reason.startswith(CONFIGURATION_PREFIX):
        # not an outage: the server answers but lacks what this agent needs (e.g. its bundle version)
        lines.insert(2, f"problem    {s.current.reason.split(';')[0]} -- fix the agent's or the server's bundles")
    return "\n".join(lines)


def render_cuts(cuts: Sequence[control_pb2.CutCost]) -> str:
    header = ("", "cut", "wire KB", "head ms", "wire ms", "server ms", "latency ms", "energy mJ", "note")
    rows = [header]
    for c in cuts:
        rows.append(
            (
                "*" if c.current else "",
                c.cut_id,
                f"{c.wire_bytes / 1024:.1f}" if c.wire_bytes else "-",
                f"{c.head_ms:.1f}",
                f"{c.wire_ms:.1f}",
                f"{c.server_ms:.1f}",
                f"{c.predicted_latency_ms:.1f}",
                f"{c.predicted_energy_mj:.1f}",
                "" if c.available else f"unavailable: {c.unavailable_reason}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(row[2:8], widths[2:8])]
        cells.append(row[8])
        lines.append("  ".join(cells).rstrip())
    lines.append("(* = current cut; predictions use the agent's telemetry right now)")
    return "\n".join(lines)


def render_decision(d: control_pb2.Decision) -> str:
    return f"{d.cut_id} ({_mode(d.mode)}, {_objective(d.objective)}): {d.reason}"


# --------------------------------------------------------------------------- commands


def _client(args: argparse.Namespace) -> ControlClient:
    if args.address:
        return ControlClient(args.address, token=args.token, timeout_s=args.timeout_s)
    path = args.socket or default_socket_path()
    if not os.path.exists(path):
        raise CtlError(
            f"cannot reach the agent: no control socket at {path}; is `splitinfer edge` running? "
            "(use --socket PATH or --address host:port)",
            EXIT_UNREACHABLE,
        )
    return ControlClient(f"unix:{os.path.abspath(path)}", token=args.token, timeout_s=args.timeout_s)


def _emit(args: argparse.Namespace, out: TextIO, message, text: str) -> None:
    if args.json:
        out.write(json.dumps(to_dict(message), indent=2, sort_keys=True) + "\n")
    else:
        out.write(text + "\n")


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    with _client(args) as client:
        status = client.status()
    _emit(args, out, status, render_status(status))
    return EXIT_OK


def cmd_cuts(args: argparse.Namespace, out: TextIO) -> int:
    with _client(args) as client:
        response = client.cuts()
    _emit(args, out, response, render_cuts(response.cuts))
    return EXIT_OK


def cmd_set_split(args: argparse.Namespace, out: TextIO) -> int:
    with _client(args) as client:
        response = client.set_split(args.cut)
    _emit(args, out, response, f"pinned: {render_decision(response.decision)}")
    return EXIT_OK


def cmd_auto(args: argparse.Namespace, out: TextIO) -> int:
    with _client(args) as client:
        response = client.set_auto()
    _emit(args, out, response, f"automatic: {render_decision(response.decision)}")
    return EXIT_OK


def cmd_policy(args: argparse.Namespace, out: TextIO) -> int:
    if args.objective == "slo" and args.slo_ms is None:
        raise CtlError("--objective slo needs --slo-ms N (the latency SLO in milliseconds)", EXIT_USAGE)
    if args.slo_ms is not None and not args.slo_ms > 0:
        raise CtlError(f"--slo-ms {args.slo_ms:g} must be > 0", EXIT_USAGE)
    with _client(args) as client:
        response = client.set_policy(args.objective, args.slo_ms)
    slo = f", SLO {response.slo_ms:g} ms" if response.slo_ms else ""
    _emit(args, out, response, f"policy: objective {_objective(response.objective)}{slo}")
    return EXIT_OK


class WatchView:
    """Folds Watch events into the latest status plus recent decisions; renders a screen."""

    def __init__(self, keep_decisions: int = 8) -> None:
        self.status: Optional[control_pb2.AgentStatus] = None
        self.decisions: list[control_pb2.Decision] = []
        self.keep = keep_decisions
        self.events = 0

    def apply(self, event: control_pb2.AgentEvent) -> None:
        self.events += 1
        kind = event.WhichOneof("event")
        if kind == "status":
            self.status = event.status
        elif kind == "telemetry" and self.status is not None:
            self.status.telemetry.CopyFrom(event.telemetry)
        elif kind == "decision":
            self.decisions = (self.decisions + [event.decision])[-self.keep :]
            if self.status is not None:
                self.status.current.CopyFrom(event.decision)

    def render(self, target: str) -> str:
        head = f"splitctl watch  {target}  {time.strftime('%H:%M:%S')}  (Ctrl-C to exit)"
        body = render_status(self.status) if self.status is not None else "waiting for the agent..."
        recent = [
            f"  {time.strftime('%H:%M:%S', time.localtime(d.at_unix_ms / 1000))}  {render_decision(d)}"
            for d in reversed(self.decisions)
        ]
        return "\n".join([head, "", body, "", "recent decisions:"] + (recent or ["  (none since watch started)"]))


def cmd_watch(args: argparse.Namespace, out: TextIO) -> int:
    """Live view. On a terminal the screen is redrawn in place with ANSI; otherwise (or with
    ``--plain``) each refresh is printed below the last. ``--json`` prints one event per line."""
    ansi = out.isatty() and not args.plain and not args.json
    view = WatchView()
    client = _client(args)
    call = client.watch(args.interval_ms)
    shown = 0
    # The stream is read on a helper thread: a main thread blocked inside gRPC's iterator
    # may not see Ctrl-C until the next event arrives, which never happens once the agent
    # goes quiet. The main thread waits on a queue with a timeout, so SIGINT always lands.
    events: "queue.Queue[object]" = queue.Queue(maxsize=64)
    done = object()

    def pump() -> None:
        try:
            for item in call:
                events.put(item)
        except grpc.RpcError as exc:
            events.put(exc)
        finally:
            events.put(done)

    threading.Thread(target=pump, name="splitctl-watch", daemon=True).start()
    try:
        if ansi:
            out.write("\x1b[?25l")  # hide the cursor while redrawing
        while True:
            try:
                event = events.get(timeout=0.2)
            except queue.Empty:
                continue
            if event is done:
                break
            if isinstance(event, grpc.RpcError):
                raise event
            view.apply(event)
            if args.json:
                out.write(json.dumps(to_dict(event), sort_keys=True) + "\n")
            elif ansi:
                out.write("\x1b[H\x1b[2J" + view.render(client.target) + "\n")
            else:
                out.write(view.render(client.target) + "\n\n")
            out.flush()
            shown += 1
            if args.count and shown >= args.count:
                break
    except KeyboardInterrupt:
        pass
    except grpc.RpcError as exc:
        if exc.code() is not grpc.StatusCode.CANCELLED:
            raise client.translate(exc) from None
    finally:
        call.cancel()
        client.close()
        if ansi:
            out.write("\x1b[?25h")
            out.flush()
    return EXIT_OK


def _discover(timeout_s: float) -> list[dict]:
    """Services of type ``_splitinfer._tcp.local.`` seen within ``timeout_s`` (via :mod:`edge_agent.discovery`)."""
    from edge_agent import discovery

    try:
        return discovery.browse_all(timeout_s)
    except OSError as exc:
        raise CtlError(f"zeroconf browsing failed: {exc}", EXIT_ERROR) from None


def render_discovered(items: Sequence[dict]) -> str:
    if not items:
        return "no splitinfer servers or agents found (zeroconf, _splitinfer._tcp.local.)"
    lines = []
    for item in items:
        txt = item.get("txt", {})
        role = item.get("role") or txt.get("role", "?")
        extra = txt.get("control") if role == "agent" else txt.get("bundles") or txt.get("models", "")
        tls = " tls" if txt.get("tls") == "1" else ""
        lines.append(f"{role:<7} {item.get('name', '?')}  {item.get('address', '?')}{tls}  {extra or ''}".rstrip())
    return "\n".join(lines)


def cmd_discover(args: argparse.Namespace, out: TextIO) -> int:
    items = _discover(args.timeout_s)
    if args.json:
        out.write(json.dumps(items, indent=2, sort_keys=True, default=str) + "\n")
    else:
        out.write(render_discovered(items) + "\n")
    return EXIT_OK


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("agent address")
    where.add_argument("--socket", default=None, help="control Unix socket (default: $SPLITINFER_CONTROL_SOCKET or the agent's default)")
    where.add_argument("--address", default=os.environ.get(ADDRESS_ENV), help=f"control TCP host:port (${ADDRESS_ENV})")
    where.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=f"bearer token for TCP (${TOKEN_ENV})")
    where.add_argument("--timeout-s", type=float, default=5.0, help="per-call deadline (default 5)")
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="machine-readable output")

    parser = argparse.ArgumentParser(prog="splitctl", description="Control a running splitinfer edge agent.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("status", parents=[common, json_flag], help="current cut, mode, reason, estimates, counters")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("watch", parents=[common, json_flag], help="live view, refreshed in place")
    p.add_argument("--interval-ms", type=int, default=1000, help="refresh interval (default 1000)")
    p.add_argument("--count", type=int, default=0, help="stop after N refreshes (0 = until Ctrl-C)")
    p.add_argument("--plain", action="store_true", help="print each refresh instead of redrawing")
    p.set_defaults(func=cmd_watch)
    p = sub.add_parser("cuts", parents=[common, json_flag], help="cuts with predicted latency/energy now")
    p.set_defaults(func=cmd_cuts)
    p = sub.add_parser("set-split", parents=[common, json_flag], help="pin a split")
    p.add_argument("cut", help="cut id, e.g. features_6 (see `splitctl cuts`)")
    p.set_defaults(func=cmd_set_split)
    p = sub.add_parser("auto", parents=[common, json_flag], help="return to automatic split selection")
    p.set_defaults(func=cmd_auto)
    p = sub.add_parser("policy", parents=[common, json_flag], help="set the objective and latency SLO")
    p.add_argument("--objective", required=True, choices=sorted(_OBJECTIVE_VALUES))
    p.add_argument("--slo-ms", type=float, default=None, help="latency SLO in ms (required for slo)")
    p.set_defaults(func=cmd_policy)
    p = sub.add_parser("discover", parents=[json_flag], help="servers and agents on the LAN (zeroconf)")
    p.add_argument("--timeout-s", type=float, default=2.0, help="how long to listen (default 2)")
    p.set_defaults(func=cmd_discover)
    add_gate_exit_parsers(sub, [common, json_flag], _client, _emit)
    return parser


def main(argv: Optional[Sequence[str]] = None, *, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return args.func(args, out)
    except CtlError as exc:
        err.write(f"splitctl {args.command}: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
