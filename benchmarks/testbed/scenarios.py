"""The bench's scenarios and strategies, as plain values (pure: no I/O).

Scenarios (issue 7): fixed uplinks of 1, 3, 10, 30 and 100 Mbit/s; a varying
trace (steps, a slow ramp, a 10 s outage); server load from N other clients; a
battery-drain trace that crosses the agent's low-battery threshold; and a server
killed and restarted mid-stream. Strategies compared in the same run: edge-only
(the "output" cut pinned), cloud-only (the JPEG "input" cut pinned), every other
cut of the bundle pinned, and the adaptive policy (latency objective; plus the
energy objective where energy is the point).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from benchmarks.testbed.schedule import LinkSchedule, Segment, fixed

FIXED_UPLINKS_MBIT = (1.0, 3.0, 10.0, 30.0, 100.0)
ONE_WAY_DELAY_MS = 5.0  # a Wi-Fi + metro path: ~10 ms RTT on top of the proxy's own
OUTAGE_S = 10.0


@dataclass(frozen=True)
class Strategy:
    name: str
    pinned_cut: Optional[str]  # None = adaptive
    objective: str = "latency"
    gate: bool = False  # the motion gate on ([gate] mode = "on"; gated frames repeat the last result)
    exits: bool = False  # the bundle's early exits, where one shipped ([exits] enabled)

    @property
    def adaptive(self) -> bool:
        return self.pinned_cut is None


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # fixed | varying | load | battery | kill
    description: str
    schedule: LinkSchedule
    frames: int
    fps_cap: float
    strategies: tuple[Strategy, ...]
    load_clients: int = 0
    # (t_s, battery_pct, charging) samples, linear in between; () = no battery
    battery_trace: tuple[tuple[float, float, bool], ...] = ()
    kill_at_s: Optional[float] = None
    restart_at_s: Optional[float] = None
    uplink_mbit: Optional[float] = None  # for fixed scenarios: the x axis of the plot
    extra: dict = field(default_factory=dict)


def static_strategies(cut_ids: Sequence[str]) -> list[Strategy]:
    """edge-only, cloud-only and every intermediate cut, in bundle order."""
    out = []
    if "output" in cut_ids:
        out.append(Strategy("edge-only", "output"))
    if "input" in cut_ids:
        out.append(Strategy("cloud-only", "input"))
    out += [Strategy(f"cut:{c}", c) for c in cut_ids if c not in ("input", "output")]
    return out


ADAPTIVE = Strategy("adaptive", None, "latency")
ADAPTIVE_ENERGY = Strategy("adaptive-energy", None, "energy")


def varying_schedule(quick: bool) -> LinkSchedule:
    """Steps (one with loss-like stalls), a slow ramp down, a 10 s outage, recovery. ~46 s (~34 s quick)."""
    unit = 0.6 if quick else 1.0
    t = 0.0
    segs = []

    def add(duration_s: float, **kw: object) -> None:
        nonlocal t
        segs.append(Segment(at_s=round(t, 3), delay_ms=ONE_WAY_DELAY_MS, **kw))  # type: ignore[arg-type]
        t += duration_s

    add(8 * unit, uplink_kbps=30_000)
    add(6 * unit, uplink_kbps=3_000, loss_pct=2.0)  # with loss-like 200 ms stalls
    add(4 * unit, uplink_kbps=100_000)
    add(10 * unit, uplink_kbps=10_000, ramp_to_kbps=1_000)  # slow ramp down
    add(OUTAGE_S, uplink_kbps=1_000, up=False)  # the outage keeps its full 10 s
    add(8 * unit, uplink_kbps=30_000)
    segs.append(Segment(at_s=round(t, 3), uplink_kbps=30_000, delay_ms=ONE_WAY_DELAY_MS))
    return LinkSchedule(tuple(segs))


def build_scenarios(
    cut_ids: Sequence[str],
    *,
    quick: bool,
    frames: Optional[int] = None,
    fps_cap: float = 5.0,
    load_clients: int = 4,
    battery_low_pct: float = 20.0,
    only: Sequence[str] = (),
) -> list[Scenario]:
    """Every scenario for a bundle with these cut ids; ``only`` keeps names starting with any given prefix."""
    n = frames or (30 if quick else 80)
    statics = tuple(static_strategies(cut_ids))
    everything = statics + (ADAPTIVE,)
    scenarios: list[Scenario] = []
    for mbit in FIXED_UPLINKS_MBIT:
        scenarios.append(Scenario(
            name=f"fixed_{mbit:g}mbit", kind="fixed", uplink_mbit=mbit,
            description=f"fixed {mbit:g} Mbit/s uplink, {ONE_WAY_DELAY_MS:g} ms one-way delay",
            schedule=fixed(uplink_kbps=mbit * 1000, delay_ms=ONE_WAY_DELAY_MS),
            frames=n, fps_cap=fps_cap, strategies=everything))
    varying = varying_schedule(quick)
    duration_s = varying.last_change_s
    scenarios.append(Scenario(
        name="varying", kind="varying",
        description="30 -> 3 (2% loss-like stalls) -> 100 Mbit/s steps, a slow ramp 10 -> 1 Mbit/s, a 10 s outage, back to 30 Mbit/s",
        schedule=varying, frames=int(duration_s * fps_cap), fps_cap=fps_cap, strategies=everything))
    scenarios.append(Scenario(
        name=f"server_load_{load_clients}", kind="load", load_clients=load_clients,
        description=f"30 Mbit/s uplink while {load_clients} other clients send JPEG frames to the server",
        schedule=fixed(uplink_kbps=30_000, delay_ms=ONE_WAY_DELAY_MS),
        frames=n, fps_cap=fps_cap, strategies=everything))
    drain_s = max(n / fps_cap, 10.0)
    scenarios.append(Scenario(
        name="battery_drain", kind="battery",
        description=(f"10 Mbit/s uplink; battery discharging from {battery_low_pct + 10:g}% to "
                     f"{battery_low_pct - 10:g}%, crossing the {battery_low_pct:g}% low-battery threshold mid-run"),
        schedule=fixed(uplink_kbps=10_000, delay_ms=ONE_WAY_DELAY_MS),
        frames=n, fps_cap=fps_cap,
        strategies=statics + (ADAPTIVE, ADAPTIVE_ENERGY),
        battery_trace=((0.0, battery_low_pct + 10, False), (drain_s, battery_low_pct - 10, False))))
    kill_frames = max(n, int(24 * fps_cap))
    scenarios.append(Scenario(
        name="server_kill", kind="kill",
        description="30 Mbit/s uplink; the server is killed (SIGKILL) at 4 s and restarted at 9 s",
        schedule=fixed(uplink_kbps=30_000, delay_ms=ONE_WAY_DELAY_MS),
        frames=kill_frames, fps_cap=fps_cap, kill_at_s=4.0, restart_at_s=9.0,
        strategies=(Strategy("cloud-only", "input"), ADAPTIVE) if "input" in cut_ids else (ADAPTIVE,)))
    if only:
        scenarios = [s for s in scenarios if any(s.name.startswith(p) for p in only)]
    return scenarios


def battery_at(trace: Sequence[tuple[float, float, bool]], t_s: float) -> tuple[float, bool]:
    """Battery percent and charging state at ``t_s``, linear between samples."""
    if not trace:
        raise ValueError("empty battery trace")
    if t_s <= trace[0][0]:
        return trace[0][1], trace[0][2]
    for (t0, p0, c0), (t1, p1, _) in zip(trace, trace[1:]):
        if t0 <= t_s <= t1:
            return p0 + (p1 - p0) * (t_s - t0) / (t1 - t0), c0
    return trace[-1][1], trace[-1][2]
