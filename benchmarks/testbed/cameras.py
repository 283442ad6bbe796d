"""Round-2 testbed scenarios (issue 19): cameras, long traces, many cameras, a battery camera.

Pure values and arithmetic: no I/O, no clock. :mod:`benchmarks.round2_testbed` resolves the
paths, builds the battery clip and runs these scenarios in the namespace testbed with
:class:`benchmarks.testbed_bench.Bench`; :mod:`benchmarks.testbed_three_region` runs the
fixed-uplink sweep of the same cameras.

Two cameras (:data:`CAMERAS`): the SSD-MobileNetV2 COCO detector on ``vtest.avi`` (a fixed
camera over a walkway; 768x576 frames whose JPEG is ~110 kB: the workload where offloading
matters) and MobileNetV2 on ``bikes.mp4``. The device is a Raspberry Pi Zero 2 W, emulated as
one host core / 10 (cgroup quota; see ``benchmarks.testbed_three_region.DEVICES``).

Scenarios per camera (:func:`round2_scenarios`):

* ``varying``: long phases (:func:`long_varying_schedule`): fast 30 Mbit/s, slow 1 Mbit/s with
  loss-like stalls, very fast 100, a slow ramp 8 -> 0.5, a 10 s outage, fast again;
* ``server_load_N``: 30 Mbit/s while N other cameras send their JPEGs to the server;
* ``battery``: a battery camera over a mostly quiet scene (the clip is built by the runner),
  its battery crossing the low-battery threshold;
* ``server_kill``: the server SIGKILLed and restarted mid-stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

from benchmarks.testbed.scenarios import ONE_WAY_DELAY_MS, Scenario, Strategy
from benchmarks.testbed.schedule import LinkSchedule, Segment, fixed

if TYPE_CHECKING:
    from benchmarks.testbed.three_region import CutRow

EDGE_ONLY = Strategy("edge-only", "output")
CLOUD_ONLY = Strategy("cloud-only", "input")
ADAPTIVE = Strategy("adaptive", None, "latency")
ADAPTIVE_GATE = Strategy("adaptive+gate", None, "latency", gate=True, exits=True)
ADAPTIVE_ENERGY = Strategy("adaptive-energy", None, "energy")
ADAPTIVE_ENERGY_GATE = Strategy("adaptive-energy+gate", None, "energy", gate=True, exits=True)

#: (name, seconds, uplink Mbit/s at the start, Mbit/s at the end (ramp) or None, loss %, up)
VARYING_PHASES: tuple[tuple[str, float, float, Optional[float], float, bool], ...] = (
    ("fast", 20.0, 30.0, None, 0.0, True),
    ("slow, loss-like stalls", 20.0, 1.0, None, 2.0, True),
    ("very fast", 20.0, 100.0, None, 0.0, True),
    ("slow ramp", 20.0, 8.0, 0.5, 0.0, True),
    ("outage", 10.0, 1.0, None, 0.0, False),
    ("fast again", 20.0, 30.0, None, 0.0, True),
)
LOAD_UPLINK_MBIT = 30.0
BATTERY_UPLINK_MBIT = 10.0


@dataclass(frozen=True)
class Camera:
    """One camera of the round: its model bundle (candidates, first existing wins), its video and
    the frame rate the emulated device keeps up with when it runs the whole model."""

    name: str
    model: str
    bundles: tuple[str, ...]  # "~" = the home folder; the first that exists is used
    video: str  # "vtest.avi" (partitioner.samples.vtest_path), a sample name (video_path) or a path
    fps_cap: float
    description: str


CAMERAS: dict[str, Camera] = {
    "ssd-vtest": Camera(
        name="ssd-vtest", model="ssd_mobilenet_v2_coco",
        bundles=("~/.cache/splitinfer/bundles/ssd_codecs", "~/.cache/splitinfer/bundles/ssd_mobilenet_v2_coco"),
        video="vtest.avi", fps_cap=2.0,
        description="SSD-MobileNetV2 COCO (FP32 full model on the device: no INT8 recipe passed its gate; INT8 "
                    "heads at conv_636/664/708 and their feature-codec variants) on vtest.avi, a fixed camera "
                    "over a walkway (768x576)"),
    "mnv2-bikes": Camera(
        name="mnv2-bikes", model="mobilenet_v2",
        bundles=("bundles/mnv2_codecs", "~/.cache/splitinfer/bundles/mobilenet_v2-codecs"),
        video="bikes.mp4", fps_cap=5.0,
        description="MobileNetV2 (INT8 full model on the device, INT8 heads and the features_14 q4p+zstd codec "
                    "cut) on bikes.mp4"),
}


def long_varying_schedule(phases: Sequence[tuple[str, float, float, Optional[float], float, bool]] = VARYING_PHASES,
                          delay_ms: float = ONE_WAY_DELAY_MS) -> LinkSchedule:
    """The varying trace: one segment per phase, a last segment holding the final phase's rate."""
    if not phases:
        raise ValueError("no phases: expected (name, seconds, Mbit/s, ramp-to Mbit/s or None, loss %, up) rows")
    segs, t = [], 0.0
    for name, seconds, mbit, ramp_to, loss, up in phases:
        if not seconds > 0 or not mbit > 0:
            raise ValueError(f"phase {name!r}: seconds={seconds!r}, Mbit/s={mbit!r}; expected both > 0")
        segs.append(Segment(at_s=round(t, 3), uplink_kbps=mbit * 1000, delay_ms=delay_ms, loss_pct=loss, up=up,
                            ramp_to_kbps=ramp_to * 1000 if ramp_to else None))
        t += seconds
    last = phases[-1]
    segs.append(Segment(at_s=round(t, 3), uplink_kbps=(last[3] or last[2]) * 1000, delay_ms=delay_ms))
    return LinkSchedule(tuple(segs))


def phase_spans(phases: Sequence[tuple[str, float, float, Optional[float], float, bool]] = VARYING_PHASES
                ) -> list[tuple[str, float, float]]:
    """(name, start_s, end_s) per phase, for per-phase tables and plots."""
    out, t = [], 0.0
    for name, seconds, *_ in phases:
        out.append((name, round(t, 3), round(t + seconds, 3)))
        t += seconds
    return out


def battery_clip_plan(held: int, motion: int, stretches: int) -> list[tuple[int, bool]]:
    """The battery camera's clip as (source frame index, held) rows: frame 0 held ``held`` times (fresh
    sensor noise on each copy), then ``motion`` real frames, the last of them held, and so on for
    ``stretches`` quiet stretches; the clip ends on a quiet stretch. ``benchmarks.gate_exit_bench.idle_clip``
    is the same construction with 150 held and 100 real frames."""
    if held < 1 or motion < 1 or stretches < 1:
        raise ValueError(f"held={held}, motion={motion}, stretches={stretches}; expected each >= 1")
    rows: list[tuple[int, bool]] = []
    source = 0
    for i in range(stretches):
        rows += [(source, True)] * held
        if i < stretches - 1:
            rows += [(source + k, False) for k in range(1, motion + 1)]
            source += motion
    return rows


def round2_scenarios(
    cut_ids: Sequence[str],
    *,
    fps_cap: float,
    best_cut: Optional[str],
    kinds: Sequence[str] = ("varying", "load", "battery", "kill"),
    load_clients: Sequence[int] = (16, 64),
    battery_frames: int = 110,
    battery_low_pct: float = 20.0,
    kill_frames: Optional[int] = None,
    kill_fps: Optional[float] = None,
) -> list[Scenario]:
    """The round's scenarios for a bundle with these cut ids; ``best_cut`` is the static mid cut to
    run (None: no static mid cut)."""
    if not fps_cap > 0:
        raise ValueError(f"fps_cap={fps_cap!r}; expected > 0")
    if best_cut is not None and best_cut not in cut_ids:
        raise ValueError(f"best_cut {best_cut!r} is not a cut of the bundle; have {list(cut_ids)}")
    unknown = [k for k in kinds if k not in ("varying", "load", "battery", "kill")]
    if unknown:
        raise ValueError(f"kinds {unknown}: expected varying, load, battery or kill")
    cut = (Strategy(f"cut:{best_cut}", best_cut),) if best_cut else ()
    out: list[Scenario] = []
    if "varying" in kinds:
        schedule = long_varying_schedule()
        seconds = schedule.last_change_s
        out.append(Scenario(
            name="varying", kind="varying", schedule=schedule, fps_cap=fps_cap,
            frames=int(seconds * fps_cap),
            description="long phases: 20 s at 30 Mbit/s, 20 s at 1 Mbit/s with 2% loss-like stalls, 20 s at "
                        "100, a 20 s ramp 8 -> 0.5, a 10 s outage, 20 s at 30 again",
            strategies=(EDGE_ONLY, CLOUD_ONLY, *cut, ADAPTIVE, ADAPTIVE_GATE)))
    if "load" in kinds:
        for n in load_clients:
            out.append(Scenario(
                name=f"server_load_{n}", kind="load", load_clients=n, fps_cap=fps_cap,
                frames=max(12, int(40 * fps_cap)),
                description=f"{LOAD_UPLINK_MBIT:g} Mbit/s uplink while {n} other cameras send their JPEGs "
                            f"to the server, each at {fps_cap:g} fps",
                schedule=fixed(uplink_kbps=LOAD_UPLINK_MBIT * 1000, delay_ms=ONE_WAY_DELAY_MS),
                strategies=(EDGE_ONLY, CLOUD_ONLY, ADAPTIVE), extra={"client_fps": fps_cap}))
    if "battery" in kinds:
        drain_s = battery_frames / fps_cap
        out.append(Scenario(
            name="battery", kind="battery", fps_cap=fps_cap, frames=battery_frames,
            description=(f"{BATTERY_UPLINK_MBIT:g} Mbit/s uplink, a mostly quiet scene; the battery discharges "
                         f"from {battery_low_pct + 10:g}% to {battery_low_pct - 10:g}%, crossing the "
                         f"{battery_low_pct:g}% low-battery threshold mid-run"),
            schedule=fixed(uplink_kbps=BATTERY_UPLINK_MBIT * 1000, delay_ms=ONE_WAY_DELAY_MS),
            strategies=(EDGE_ONLY, CLOUD_ONLY, *cut, ADAPTIVE_ENERGY, ADAPTIVE_ENERGY_GATE),
            battery_trace=((0.0, battery_low_pct + 10, False), (drain_s, battery_low_pct - 10, False))))
    if "kill" in kinds:
        kfps = kill_fps or fps_cap
        frames = kill_frames or max(30, int(60 * kfps))
        seconds = frames / kfps
        kill_at, restart_at = round(seconds * 0.25, 1), round(seconds * 0.45, 1)
        out.append(Scenario(
            name="server_kill", kind="kill", fps_cap=kfps, frames=frames,
            description=f"30 Mbit/s uplink; the server is killed (SIGKILL) at {kill_at:g} s and restarted "
                        f"at {restart_at:g} s (cold: no warm-up request)",
            schedule=fixed(uplink_kbps=30_000, delay_ms=ONE_WAY_DELAY_MS), kill_at_s=kill_at,
            restart_at_s=restart_at, strategies=(CLOUD_ONLY, ADAPTIVE)))
    return out


def best_static_cut(rows: Sequence[CutRow], schedule: LinkSchedule, *, jpeg_bytes: float, rtt_ms: float,
                    jpeg_encode_ms: float = 0.0, step_s: float = 1.0) -> tuple[Optional[str], dict[str, float]]:
    """The mid cut (each base cut's fewest-bytes variant, :func:`pick_mid_cuts`) whose predicted latency
    (:func:`predict_ms`, from the device profile) is lowest on average over the trace's up time, sampled
    every ``step_s``; and every candidate's mean. (None, {}) when no mid cut sends fewer bytes than the JPEG."""
    from benchmarks.testbed.three_region import CUT_PREFIX, pick_mid_cuts, predict_ms

    by_id = {r.cut_id: r for r in rows}
    pick = pick_mid_cuts(rows, jpeg_bytes)
    if not pick.cuts:
        return None, {}
    sums = {r.cut_id: 0.0 for r in pick.cuts}
    n, t = 0, 0.0
    end = schedule.last_change_s
    while t < end:
        state = schedule.state_at(t)
        if state.up and state.uplink_kbps:
            pred = predict_ms([by_id["input"], by_id["output"], *pick.cuts], uplink_mbit=state.uplink_kbps / 1000,
                              rtt_ms=rtt_ms, jpeg_bytes=jpeg_bytes, jpeg_encode_ms=jpeg_encode_ms)
            for cut_id in sums:
                sums[cut_id] += pred[CUT_PREFIX + cut_id]
            n += 1
        t += step_s
    if not n:
        raise ValueError("the schedule is never up: no uplink to predict a cut's latency at")
    means = {c: round(v / n, 2) for c, v in sums.items()}
    return min(means, key=lambda c: means[c]), means
