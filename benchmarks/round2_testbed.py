"""Issue 19's testbed scenarios for one camera: varying trace, server load, battery, server kill.

    python -m benchmarks.round2_testbed --camera ssd-vtest --kinds varying \\
        [--profiled-bundle DIR] [--best-cut CUT] [--out benchmarks/results/round2_ssd_varying.json]

Cameras and scenarios are plain values in :mod:`benchmarks.testbed.cameras`. Each strategy runs
in the namespace testbed with :class:`benchmarks.testbed_bench.Bench` (real server in
``si-cloud``, real agent in ``si-edge`` under the CPU quota: one host core / ``--slowdown``,
10 = a Raspberry Pi Zero 2 W as in the three-region sweep). The agent loads at host speed and
joins the quota before its first frame (``BenchSettings.load_unthrottled``).

Before the runs the bundle is copied and its heads re-profiled inside the throttled cgroup, as a
device profiles itself (``--profiled-bundle`` reuses such a copy, e.g. the sweep's). The static
cut is the one the device profile predicts fastest on average over the varying trace
(:func:`benchmarks.testbed.cameras.best_static_cut`) unless ``--best-cut`` names one.

Battery: the clip is built here like ``benchmarks.gate_exit_bench.idle_clip`` (camera frames held
with fresh sigma = 3 sensor noise, numpy seed 0, between stretches of real motion), written
losslessly (FFV1) and played by the agent. Energy per frame is the bench's modeled edge energy
(:func:`benchmarks.testbed_bench.energy_fn_for`); with the gate on, every frame also pays the
gate's decision (its isolated time on these frames x the slowdown, at one core's 3.6 W). A gated
frame repeats the last computed frame's result, as the agent does.

The document keeps ``testbed.json``'s structure (environment, ``scenarios`` with their ``runs``)
and adds ``camera``, ``device``, ``best_cut``, ``phases``, ``battery_clip``, ``goals``, ``command``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import pathlib
import signal
import sys
import time
from typing import Any, Optional, Sequence

import numpy as np

from benchmarks.testbed.cameras import CAMERAS, Camera, battery_clip_plan, best_static_cut, long_varying_schedule, \
    phase_spans, round2_scenarios
from benchmarks.testbed.goals import evaluate_round, phase_means
from benchmarks.testbed.scenarios import ONE_WAY_DELAY_MS
from benchmarks.testbed_bench import REPO, Bench, BenchSettings, choose_testbed, describe_environment

logger = logging.getLogger("benchmarks.round2_testbed")
SIGMA = 3.0  # grey levels of sensor noise on held frames (gate_exit_bench.idle_clip)


def resolve_camera(camera: Camera) -> tuple[pathlib.Path, pathlib.Path]:
    """The first existing bundle of the camera and its video."""
    from partitioner import samples

    bundles = [pathlib.Path(b).expanduser() if b.startswith("~") else REPO / b for b in camera.bundles]
    bundle = next((b for b in bundles if (b / "manifest.json").is_file()), None)
    if bundle is None:
        raise SystemExit(f"camera {camera.name}: no bundle at any of {[str(b) for b in bundles]}")
    if camera.video == "vtest.avi":
        video = samples.vtest_path()
    elif "/" in camera.video:
        video = pathlib.Path(camera.video).expanduser()
    else:
        video = samples.video_path(camera.video)
    return bundle, video


def write_battery_clip(video: pathlib.Path, out: pathlib.Path, plan: Sequence[tuple[int, bool]], fps: float,
                       seed: int = 0) -> tuple[dict, list[np.ndarray]]:
    """Write the clip ``plan`` describes (FFV1, lossless: the noise reaches the gate as generated)."""
    import cv2

    need = max(i for i, _ in plan) + 1
    cap = cv2.VideoCapture(str(video))
    frames: list[np.ndarray] = []
    while len(frames) < need:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    if len(frames) < need:
        raise SystemExit(f"{video} has {len(frames)} frames; the clip needs {need}")
    rng = np.random.default_rng(seed)
    h, w = frames[0].shape[:2]
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))  # type: ignore[attr-defined]
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write FFV1 to {out}")
    clip = []
    for index, held in plan:
        img = frames[index]
        if held:
            img = np.clip(img + rng.normal(0, SIGMA, img.shape), 0, 255).astype(np.uint8)
        writer.write(img)
        clip.append(img)
    writer.release()
    held_n = sum(1 for _, h_ in plan if h_)
    return {"path": str(out), "frames": len(plan), "held_frames": held_n, "motion_frames": len(plan) - held_n,
            "held_share": round(held_n / len(plan), 3), "noise_sigma": SIGMA, "seed": seed,
            "source": f"{video.name} frames 0..{need - 1}", "codec": "FFV1 (lossless)"}, clip


def gate_energy(clip: Sequence[np.ndarray], fps: float, slowdown: float) -> dict:
    """The gate's decision time on the clip (host, tight loop) x ``slowdown``, as energy at one core."""
    import cv2

    from benchmarks.gate_exit_bench import GATE_POWER, isolated_gate_ms

    cv2.setNumThreads(1)
    host_ms = isolated_gate_ms(list(clip), fps)
    device_ms = host_ms * slowdown
    return {"gate_ms_host": round(host_ms, 4), "gate_ms_device": round(device_ms, 3),
            "gate_mj_per_frame": round(GATE_POWER.energy_mj(device_ms, 0, 10_000.0, 0.0), 4),
            "how": f"isolated MotionGate.decide on the clip's frames on this host x {slowdown:g}, "
                   "at GATE_POWER (one core, 3.6 W)"}


def _load() -> list[float]:
    try:
        return [float(x) for x in pathlib.Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def run(args: argparse.Namespace) -> dict:
    from benchmarks.testbed_three_region import DEVICES, cut_rows, measure_jpeg_bytes, profile_on_device
    from protos.bundle import Side, read_bundle

    camera = CAMERAS[args.camera]
    bundle, video = resolve_camera(camera)
    fps = args.fps or camera.fps_cap
    # absolute: the agent resolves the paths of its edge.toml relative to the file
    log_dir = (args.log_dir or REPO / "benchmarks" / "results" / "testbed_logs" / f"round2_{camera.name}").resolve()
    settings = BenchSettings(bundle=bundle, fps_cap=fps, edge_slowdown=args.slowdown, testbed=args.testbed,
                             log_dir=log_dir, load_unthrottled=True, load_client_fps=fps,
                             agent_log_level=args.agent_log_level, strategies=tuple(args.strategy), video=video,
                             battery_low_pct=20.0)
    testbed = choose_testbed(args.testbed, settings)
    started = time.time()
    testbed.teardown()  # type: ignore[attr-defined]
    testbed.setup()  # type: ignore[attr-defined]
    bench: Optional[Bench] = None
    doc: dict[str, Any] = {}
    try:
        on_device = testbed.kind == "namespaces"  # type: ignore[attr-defined]
        if args.profiled_bundle:
            root = args.profiled_bundle.resolve()
        elif on_device:
            root = profile_on_device(log_dir, bundle, testbed, f"emulated: one host core / {args.slowdown:g} "
                                                                "(cgroup quota)")
        else:
            root = bundle
        settings = dataclasses.replace(settings, bundle=root)
        manifest = read_bundle(root, Side.ALL, check_hashes=False).manifest
        rows = cut_rows(manifest, args.slowdown, on_device)
        by_id = {r.cut_id: r for r in rows}
        if not args.fps:  # the device keeps up with the whole model: its profile fits 1.5 times in a frame
            fps = min(camera.fps_cap, round(1000.0 / (1.5 * by_id["output"].head_ms), 2))
            settings = dataclasses.replace(settings, fps_cap=fps, load_client_fps=fps)
        jpeg_bytes = measure_jpeg_bytes(video, int(manifest.input.jpeg_quality), spec=manifest.input)
        predicted_best, predicted = best_static_cut(rows, long_varying_schedule(), jpeg_bytes=jpeg_bytes,
                                                    rtt_ms=2 * ONE_WAY_DELAY_MS, jpeg_encode_ms=by_id["input"].head_ms)
        best_cut = args.best_cut or predicted_best
        clip_info: Optional[dict] = None
        clip_path: Optional[pathlib.Path] = None
        gate: dict = {}
        plan = battery_clip_plan(args.battery_held, args.battery_motion, args.battery_stretches)
        if "battery" in args.kinds or "varying" in args.kinds:  # the gate's energy needs the clip's frames
            clip_path = log_dir / "battery_clip.mkv"
            clip_info, clip = write_battery_clip(video, clip_path, plan, fps)
            gate = gate_energy(clip, fps, args.slowdown)
            settings = dataclasses.replace(settings, gate_mj_per_frame=gate["gate_mj_per_frame"])
        bench = Bench(settings, testbed)
        scenarios = round2_scenarios(bench.bundle.cut_ids, fps_cap=fps, best_cut=best_cut, kinds=args.kinds,
                                     load_clients=args.load_clients,
                                     battery_frames=len(plan), kill_fps=args.kill_fps)
        doc = describe_environment(testbed, settings, bench.bundle)
        doc.update({
            "camera": dataclasses.asdict(camera) | {
                "bundle_used": str(bundle), "video_used": str(video), "fps_used": fps,
                "fps_rule": "--fps" if args.fps else "min(camera cap, 1000 / (1.5 x the device profile's full model ms))"},
            "device": {"slowdown": args.slowdown, "stands_for": DEVICES.get(args.slowdown, "custom"),
                       "emulation": "cgroup CPU quota (one core / slowdown); the agent loads unthrottled",
                       "edge_profiled_on_device": on_device},
            "cuts": [dataclasses.asdict(r) for r in rows],
            "jpeg_bytes_per_frame": round(jpeg_bytes, 1),
            "best_cut": {"used": best_cut, "predicted": predicted_best, "predicted_mean_ms_on_varying": predicted,
                         "how": "--best-cut" if args.best_cut else "device profile: lowest mean predicted latency "
                                                                    "over the varying trace's up time"},
            "phases": [list(p) for p in phase_spans()],
            "battery_clip": clip_info, "gate_energy": gate or None,
            "load_average_1_5_15_at_start": _load(),
            "command": "python -m benchmarks.round2_testbed " + " ".join(args.argv),
        })
        out_scenarios: list[dict] = []
        for scenario in scenarios:
            bench.video = clip_path if scenario.kind == "battery" and clip_path else video
            result = bench.run([scenario])[0]
            result["video"] = str(bench.video)
            if scenario.kind == "varying":
                for r in result["runs"]:
                    if r.get("timeline"):
                        r["phase_mean_ms"] = phase_means(r["timeline"], phase_spans())
            out_scenarios.append(result)
            doc["scenarios"] = out_scenarios
            doc["goals"] = evaluate_round(out_scenarios)
            _write(args.out, doc)  # partial results survive a later failure
            logger.info("%s done: %s", scenario.name, json.dumps(doc["goals"].get(scenario.name) or "")[:400])
    finally:
        if bench is not None:
            bench.stop_server()
        testbed.teardown()  # type: ignore[attr-defined]
    doc["load_average_1_5_15_at_end"] = _load()
    doc["generated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    doc["duration_s"] = round(time.time() - started, 1)
    return doc


def _write(path: pathlib.Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=_jsonable), encoding="utf-8")


def _jsonable(value: Any) -> Any:
    if isinstance(value, pathlib.Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON: {value!r}")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.round2_testbed", description=__doc__.split("\n")[0])
    p.add_argument("--camera", choices=sorted(CAMERAS), required=True)
    p.add_argument("--kinds", default="varying,load,battery,kill", help="',' separated: varying,load,battery,kill")
    p.add_argument("--strategy", action="append", default=[], help="run strategies starting with this")
    p.add_argument("--best-cut", help="the static mid cut (default: predicted from the device profile)")
    p.add_argument("--profiled-bundle", type=pathlib.Path, help="a bundle copy already profiled on the device")
    p.add_argument("--fps", type=float, help="frame rate cap (default: the camera's)")
    p.add_argument("--kill-fps", type=float, help="frame rate of the server-kill scenario (default: --fps)")
    p.add_argument("--slowdown", type=float, default=10.0, help="edge CPU = one core / this (10: Pi Zero 2 W)")
    p.add_argument("--load-clients", default="16,64", help="other cameras of the load scenarios, ',' separated")
    p.add_argument("--battery-held", type=int, default=30, help="held (noisy) frames per quiet stretch")
    p.add_argument("--battery-motion", type=int, default=10, help="real frames per motion stretch")
    p.add_argument("--battery-stretches", type=int, default=3, help="quiet stretches")
    p.add_argument("--testbed", choices=("auto", "namespaces", "loopback"), default="namespaces")
    p.add_argument("--agent-log-level", default="WARNING")
    p.add_argument("--log-dir", type=pathlib.Path)
    p.add_argument("--out", type=pathlib.Path, required=True)
    a = p.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    a.kinds = tuple(k.strip() for k in a.kinds.split(",") if k.strip())
    try:
        a.load_clients = tuple(int(x) for x in a.load_clients.split(",") if x.strip())
    except ValueError:
        p.error(f"--load-clients {a.load_clients!r}: expected integers separated by ','")
    return a


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    doc = run(args)
    _write(args.out, doc)
    print(json.dumps(doc.get("goals", {}), indent=1, default=_jsonable))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
