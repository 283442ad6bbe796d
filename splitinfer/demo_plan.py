"""Which strategy should win each phase of the demo's link story, by the agent's own cost model.

``python -m splitinfer.demo_plan`` reads a bundle's measured profile (the demo's cached MobileNetV2
bundle by default), and for each phase of :data:`splitinfer.demo.STORY` and each effective device
slowdown asks :func:`edge_agent.estimates.estimate_cuts` (the formulas the policy ranks cuts with)
for every cut's predicted latency and energy. It prints, per phase, the best mid-graph cut against
the best end (the frame's JPEG to the cloud, or the whole model on the device) and writes the same
as JSON. It is arithmetic on profiled figures, not a measurement: the demo's summary says what the
agent did.

Assumptions, stated in the output too: the RTT is twice the phase's one-way delay plus
``--loopback-rtt-ms`` (the agent measured ~1 ms over the demo's loopback gRPC), the server runs each
tail in its profiled time (``server_scale`` 1), the uplink estimate equals the emulated rate, and
the policy's gate/exit rates and residual corrections are neutral.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
from dataclasses import asdict, dataclass, replace
from typing import Optional, Sequence

from edge_agent.estimates import estimate_cuts
from edge_agent.power import PI4_DEFAULT, PowerModel
from edge_agent.types import CutProfile, Telemetry
from protos.names import INPUT_CUT, OUTPUT_CUT

ENDS = (INPUT_CUT, OUTPUT_CUT)
DEFAULT_SLOWDOWNS = (4.0, 6.0, 10.0, 13.0, 16.0)


@dataclass(frozen=True)
class PhasePlan:
    """One phase at one effective slowdown: every cut's predicted value and the mid-graph verdict."""

    phase: str
    uplink_kbps: Optional[float]
    rtt_ms: float
    slowdown: float
    objective: str  # "energy" (mJ) or "latency" (ms)
    values: dict[str, float]  # cut id -> predicted value of the objective's metric
    best_mid: Optional[str]  # the cheapest cut that is neither end (None if the bundle has none)
    best_end: str  # the cheaper of the JPEG and the device
    mid_vs_end: Optional[float]  # best_mid's value / best_end's; < 1: the split should win

    @property
    def winner(self) -> str:
        return min(self.values, key=lambda c: self.values[c])


def plan_phase(cuts: Sequence[CutProfile], *, phase: str, uplink_kbps: Optional[float], rtt_ms: float,
               slowdown: float, objective: str = "energy", power: PowerModel = PI4_DEFAULT) -> PhasePlan:
    """The agent's predicted cost of every cut in one phase (pure arithmetic)."""
    if objective not in ("energy", "latency"):
        raise ValueError(f"objective {objective!r}: expected 'energy' or 'latency'")
    if uplink_kbps is not None and not uplink_kbps > 0:
        raise ValueError(f"uplink_kbps {uplink_kbps!r}: expected > 0 or None (the link is down)")
    if not (slowdown > 0 and math.isfinite(slowdown)):
        raise ValueError(f"slowdown {slowdown!r}: expected a finite number > 0")
    up = uplink_kbps is not None
    ests = estimate_cuts(cuts, Telemetry(at_ms=0, slowdown_factor=slowdown), uplink_kbps=uplink_kbps or 0.0,
                         rtt_ms=rtt_ms, server_scale=1.0, cloud_available=up, power=power)
    values = {e.cut_id: (e.energy_mj if objective == "energy" else e.latency_ms) for e in ests if e.available}
    ends = [c for c in ENDS if c in values]
    best_end = min(ends, key=lambda c: values[c])
    mids = [c for c in values if c not in ENDS]
    best_mid = min(mids, key=lambda c: values[c]) if mids else None
    ratio = values[best_mid] / values[best_end] if best_mid is not None else None
    return PhasePlan(phase=phase, uplink_kbps=uplink_kbps, rtt_ms=rtt_ms, slowdown=slowdown, objective=objective,
                     values=values, best_mid=best_mid, best_end=best_end, mid_vs_end=ratio)


def plan_story(cuts: Sequence[CutProfile], story: Sequence[tuple[str, Optional[float], float]], *,
               slowdowns: Sequence[float] = DEFAULT_SLOWDOWNS, objective: str = "energy",
               loopback_rtt_ms: float = 1.0, power: PowerModel = PI4_DEFAULT) -> list[PhasePlan]:
    """``story``: (phase, uplink kbps or None when down, one-way delay ms) per phase."""
    return [plan_phase(cuts, phase=name, uplink_kbps=kbps, rtt_ms=2.0 * delay_ms + loopback_rtt_ms,
                       slowdown=s, objective=objective, power=power)
            for name, kbps, delay_ms in story for s in slowdowns]


GRID_KBPS = (500.0, 1000.0, 2000.0, 4000.0, 6000.0, 8000.0, 12000.0, 16000.0, 24000.0, 32000.0, 50000.0, 100000.0)
GRID_DELAY_MS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0)


def best_link_for_split(cuts: Sequence[CutProfile], *, slowdown: float, objective: str = "energy",
                        loopback_rtt_ms: float = 1.0, kbps: Sequence[float] = GRID_KBPS,
                        delays_ms: Sequence[float] = GRID_DELAY_MS, power: PowerModel = PI4_DEFAULT) -> PhasePlan:
    """The link (rate x one-way delay, from the grids) where the best mid-graph cut's margin over the best end is
    largest: how clear a "medium" phase can make the split at this slowdown."""
    plans = [plan_phase(cuts, phase=f"{k:g} kbps +{d:g} ms", uplink_kbps=k, rtt_ms=2.0 * d + loopback_rtt_ms,
                        slowdown=slowdown, objective=objective, power=power) for k in kbps for d in delays_ms]
    return min(plans, key=lambda p: math.inf if p.mid_vs_end is None else p.mid_vs_end)


def render(plans: Sequence[PhasePlan]) -> str:
    unit = "mJ" if plans and plans[0].objective == "energy" else "ms"
    lines = [f"{'phase':<19} {'uplink':>10} {'rtt':>6} {'slow':>5}  {'winner':<28} "
             f"{'best mid-graph cut':<28} {'best end':<14} mid/end"]
    for p in plans:
        link = "down" if p.uplink_kbps is None else f"{p.uplink_kbps:g} kbps"
        mid = "-" if p.best_mid is None else f"{p.best_mid} {p.values[p.best_mid]:.0f}"
        ratio = "-" if p.mid_vs_end is None else f"{p.mid_vs_end:.2f}"
        lines.append(f"{p.phase:<19} {link:>10} {p.rtt_ms:5.0f}m {p.slowdown:5g}  {p.winner:<28} {mid:<28} "
                     f"{p.best_end} {p.values[p.best_end]:.0f} {ratio:>6}")
    lines.append(f"(values in {unit}; mid/end < 1: the agent's cost model ranks a mid-graph cut above both ends)")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from edge_agent.head import cut_profiles
    from protos.bundle import Side, read_bundle
    from splitinfer.demo import DEFAULT_MODEL, STORY, default_cache_dir

    p = argparse.ArgumentParser(prog="python -m splitinfer.demo_plan", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default=None, help="bundle dir (default: the demo's cached MobileNetV2 bundle)")
    p.add_argument("--objective", choices=("energy", "latency"), default="energy")
    p.add_argument("--slowdowns", default=",".join(f"{s:g}" for s in DEFAULT_SLOWDOWNS),
                   help="effective device slowdowns (the agent measures padded runs / profile)")
    p.add_argument("--loopback-rtt-ms", type=float, default=1.0)
    p.add_argument("--cpu-active-w", type=float, default=PI4_DEFAULT.cpu_active_w,
                   help=f"whole-board power while computing (default {PI4_DEFAULT.cpu_active_w:g} W, the Pi 4's "
                        "4-thread figure; edge_agent.power gives ~3.6 W for the demo's one device thread)")
    p.add_argument("--json", default=None, help="also write the plans here")
    args = p.parse_args(argv)
    power = replace(PI4_DEFAULT, cpu_active_w=args.cpu_active_w)
    root = pathlib.Path(args.bundle) if args.bundle else default_cache_dir() / f"{DEFAULT_MODEL}-codecs"
    bundle = read_bundle(root, Side.EDGE, check_hashes=False)
    try:
        slowdowns = [float(s) for s in args.slowdowns.split(",")]
    except ValueError as exc:
        print(f"demo_plan: --slowdowns {args.slowdowns!r}: expected numbers separated by commas ({exc})",
              file=sys.stderr)
        return 2
    story = [(name, values["uplink_kbps"] if up else None, values["delay_ms"]) for _, name, values, up in STORY]
    plans = plan_story(cut_profiles(bundle), story, slowdowns=slowdowns, objective=args.objective,
                       loopback_rtt_ms=args.loopback_rtt_ms, power=power)
    best = [best_link_for_split(cut_profiles(bundle), slowdown=s, objective=args.objective,
                                loopback_rtt_ms=args.loopback_rtt_ms, power=power) for s in slowdowns]
    print(f"bundle {root} ({bundle.manifest.model_name}), objective {args.objective}, "
          f"cpu_active_w {power.cpu_active_w:g} W")
    print(render(plans))
    print(f"the clearest link for a mid-graph cut over {len(GRID_KBPS)} rates x {len(GRID_DELAY_MS)} delays:")
    print(render(best))
    if args.json:
        doc = {"command": "python -m splitinfer.demo_plan " + " ".join(sys.argv[1:] if argv is None else argv),
               "bundle": str(root), "objective": args.objective, "loopback_rtt_ms": args.loopback_rtt_ms,
               "cpu_active_w": power.cpu_active_w,
               "assumptions": __doc__.split("\n\n")[1].replace("\n", " "),
               "plans": [{**asdict(p), "winner": p.winner} for p in plans],
               "clearest_link_per_slowdown": [{**asdict(p), "winner": p.winner} for p in best]}
        pathlib.Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
