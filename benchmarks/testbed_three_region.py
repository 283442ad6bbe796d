"""The three-region sweep in the namespace testbed (issue 13).

For each uplink of the sweep (0.25 ... 50 Mbit/s, 5 ms one-way delay) it runs, with the
real server in ``si-cloud`` and the real agent in ``si-edge`` under the CPU quota (see
:mod:`benchmarks.testbed_bench`): edge-only, cloud-only (the frame's JPEG), every mid-graph
cut of the bundle with its best codec (the variant with the fewest bytes per cut; cuts
sending at least the JPEG's bytes are left out and listed), and the adaptive agent
(latency objective), which gets more frames so that its learning period can be told apart
from its settled choice. Then it checks the goal in code
(:func:`benchmarks.testbed.three_region.evaluate`), adds the prediction from the bundle's
profiles and each cut's ratio floor, and writes one labelled run into the results file
(other labels already there are kept) and a PNG of latency against uplink.

    python -m benchmarks.testbed_three_region --bundle bundles/mnv2_codecs --label training-free \\
        [--slowdown 10] [--frames 24] [--adaptive-frames 48] [--uplinks 0.25,0.5,...]

``--slowdown`` is the emulated device: edge CPU = one core / this factor. The default 10
stands for a Raspberry Pi Zero 2 W (see DEVICES). Before the sweep the bundle is copied
and its heads re-profiled inside the throttled cgroup (``splitinfer profile``, as a device
would profile itself once), so that the agent's cost model and the paper prediction start
from device times rather than this host's.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import shutil
import signal
import sys
import time
from typing import Optional, Sequence

from benchmarks.testbed.launch import run_checked
from benchmarks.testbed.scenarios import ONE_WAY_DELAY_MS, Scenario, Strategy
from benchmarks.testbed.schedule import fixed
from benchmarks.testbed.three_region import (
    ADAPTIVE, CLOUD, CUT_PREFIX, EDGE, SWEEP_UPLINKS_MBIT, CutRow, Point, evaluate, pick_mid_cuts, predict_ms,
    ratio_floor, settle, strategy_fps, sweep_fps,
)
from benchmarks.testbed_bench import REPO, Bench, BenchSettings, choose_testbed, describe_environment

logger = logging.getLogger("benchmarks.testbed_three_region")

DEFAULT_OUT = REPO / "benchmarks" / "results" / "three_region.json"
DEFAULT_PLOT_DIR = REPO / "docs" / "benchmarks"
#: What each --slowdown stands for (edge CPU = one host core / factor), and why.
DEVICES = {
    4.0: "Raspberry Pi 4 (Cortex-A72 1.5 GHz): the project's standing assumption that one Pi 4 core runs "
         "MobileNetV2 about 4x slower than one core of this host",
    10.0: "Raspberry Pi Zero 2 W (4x Cortex-A53 at 1 GHz, the SoC of a Pi 3 clocked lower): a Pi 4 runs "
          "inference about 2x faster than a Pi 3 (A. Allan, 'Benchmarking Machine Learning on the New "
          "Raspberry Pi 4, Model B', Hackster.io 2019), and the Zero 2 W's 1.0 GHz against the Pi 3 B's "
          "1.2 GHz costs ~1.2x more: ~2.4x a Pi 4, i.e. ~10x this host's core",
}


def cut_rows(manifest: object, slowdown: float, on_device: bool) -> list[CutRow]:
    """The manifest's cuts with the newest edge/cloud profiles (host edge times x ``slowdown`` unless
    they were measured on the emulated device)."""
    rows = []
    for c in manifest.cuts:  # type: ignore[attr-defined]
        head = c.edge_profiles[-1].head_ms if c.edge_profiles else 0.0
        tail = c.cloud_profiles[-1].tail_ms if c.cloud_profiles else 0.0
        codec = c.codec.name if c.HasField("codec") else ""
        if on_device:  # `splitinfer profile` times the ONNX head only; the codec's packing and entropy coding
            head += c.codec.encode_ms * slowdown if codec else 0.0  # ran on the host at partition time
        else:
            head *= slowdown
        rows.append(CutRow(cut_id=c.id, order=int(c.order), wire_bytes=float(c.wire_bytes),
                           head_ms=head, tail_ms=tail, codec=codec,
                           base_id=c.codec_of))
    return rows


def measure_jpeg_bytes(video: pathlib.Path, quality: int, frames: int = 60, spec: object = None) -> float:
    """Mean JPEG size of the video's first frames, encoded exactly as the agent's "input" cut does: at the
    model's input resolution (``protos.preprocess.model_sized``, the agent's default ``server.jpeg_size =
    "model"``) when the bundle's input ``spec`` is given, else the whole frame."""
    import cv2

    from protos.preprocess import encode_jpeg, model_sized

    cap = cv2.VideoCapture(str(video))
    sizes: list[int] = []
    try:
        while len(sizes) < frames:
            ok, frame = cap.read()
            if not ok:
                break
            sizes.append(len(encode_jpeg(model_sized(frame, spec) if spec is not None else frame,  # type: ignore[arg-type]
                                         quality)))
    finally:
        cap.release()
    if not sizes:
        raise SystemExit(f"could not read frames from {video}")
    return sum(sizes) / len(sizes)


def profile_on_device(bench_root: pathlib.Path, source: pathlib.Path, testbed: object, device: str) -> pathlib.Path:
    """Copy the bundle next to the logs and re-time its heads inside the throttled edge cgroup."""
    copy = bench_root / "bundle"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(source, copy)
    argv = [sys.executable, "-m", "splitinfer.cli", "profile", str(copy), "--runs", "15", "--warmup", "3",
            "--device", device]
    out = run_checked(testbed.edge_command(argv), timeout_s=900)  # type: ignore[attr-defined]
    logger.info("device profile:\n%s", out.strip())
    return copy


def run_sweep(args: argparse.Namespace) -> dict:
    from protos.bundle import Side, read_bundle

    sleep = args.device_emulation == "sleep"
    settings = BenchSettings(bundle=args.bundle.resolve(), fps_cap=args.fps,
                             edge_slowdown=1.0 if sleep else args.slowdown,
                             agent_emulated_slowdown=args.slowdown if sleep else 1.0,
                             testbed=args.testbed, log_dir=args.log_dir, load_clients=0,
                             agent_log_level=args.agent_log_level, edge_launcher=args.edge_launcher,
                             video=args.video.resolve() if args.video else None,
                             load_unthrottled=args.load_unthrottled, startup_s=args.startup_s,
                             deadline_ms=args.deadline_ms)
    testbed = choose_testbed(args.testbed, settings)
    started = time.time()
    testbed.teardown()  # type: ignore[attr-defined]
    testbed.setup()  # type: ignore[attr-defined]
    try:
        on_device = testbed.kind == "namespaces" and not args.no_device_profile  # type: ignore[attr-defined]
        bundle_root = settings.bundle
        if on_device:
            device = (f"edge cgroup at host speed (model runs sleep-padded x{args.slowdown:g} by the agent)" if sleep
                      else f"emulated: one host core / {args.slowdown:g} (cgroup quota)")
            bundle_root = profile_on_device(args.log_dir, settings.bundle, testbed, device)
            settings = dataclasses.replace(settings, bundle=bundle_root)
        bench = Bench(settings, testbed)
        manifest = read_bundle(bundle_root, Side.ALL, check_hashes=False).manifest
        # with sleep padding the cgroup runs at host speed: its profile is scaled like a host profile
        rows = cut_rows(manifest, args.slowdown, on_device and not sleep)
        jpeg_bytes = measure_jpeg_bytes(bench.video, int(manifest.input.jpeg_quality), spec=manifest.input)
        by_id = {r.cut_id: r for r in rows}
        edge_ms = by_id["output"].head_ms
        pick = pick_mid_cuts(rows, jpeg_bytes)
        strategies = [Strategy(EDGE, "output"), Strategy(CLOUD, "input")]
        strategies += [Strategy(CUT_PREFIX + r.cut_id, r.cut_id) for r in pick.cuts]
        if args.strategy:
            strategies = [s for s in strategies if any(s.name.startswith(p) for p in args.strategy)]
        rtt_ms = 2 * ONE_WAY_DELAY_MS
        server_ms = by_id["input"].tail_ms
        doc = describe_environment(testbed, settings, bench.bundle)
        doc.update({
            "label": args.label,
            "device": {"slowdown": args.slowdown, "stands_for": DEVICES.get(args.slowdown, "custom"),
                       "emulation": ("sleep-padded model runs (runtime.emulated_slowdown), no CPU quota" if sleep
                                     else "cgroup CPU quota (one core / slowdown)"),
                       "edge_profiled_on_device": on_device and not sleep},
            "jpeg_bytes_per_frame": round(jpeg_bytes, 1),  # first 60 frames; paces the sweep (sweep_fps)
            "jpeg_source": f"{bench.video.name} frames at q{manifest.input.jpeg_quality}, downscaled to the model's "
                           "input resolution as the agent sends it (server.jpeg_size = \"model\")",
            "cuts": [dataclasses.asdict(r) for r in rows],
            "mid_cuts": [r.cut_id for r in pick.cuts],
            "skipped_cuts": [{"cut": c, "why": why} for c, why in pick.skipped],
            "ratio_floor": {r.cut_id: _round(ratio_floor(r, edge_ms=edge_ms, jpeg_bytes=jpeg_bytes, rtt_ms=rtt_ms,
                                                         server_ms=server_ms))
                            for r in rows if r.cut_id not in ("input", "output")},
            "settings": {"static_frames": args.frames, "adaptive_frames": args.adaptive_frames, "fps_cap": args.fps,
                         "one_way_delay_ms": ONE_WAY_DELAY_MS, "warmup_frames": settings.warmup_frames,
                         "uplinks_mbit": list(args.uplinks), "objective": "latency"},
        })
        doc["settings"]["pace"] = args.pace
        doc["settings"]["deadline_ms"] = args.deadline_ms
        doc["settings"]["slow_static_frames"] = args.slow_frames
        doc["settings"]["load_unthrottled"] = args.load_unthrottled
        points, runs, cloud_payloads = [], [], []
        for mbit in args.uplinks:
            fps = sweep_fps(mbit, jpeg_bytes=jpeg_bytes, edge_ms=edge_ms, fps_cap=args.fps)
            guess = predict_ms([by_id["input"], by_id["output"], *pick.cuts], uplink_mbit=mbit, rtt_ms=rtt_ms,
                               jpeg_bytes=jpeg_bytes, jpeg_encode_ms=by_id["input"].head_ms)
            static_frames = args.slow_frames if args.slow_frames and mbit < args.slow_below else args.frames
            scenario = Scenario(name=f"sweep_{mbit:g}mbit", kind="sweep", uplink_mbit=mbit,
                                description=f"fixed {mbit:g} Mbit/s uplink, {ONE_WAY_DELAY_MS:g} ms one-way delay",
                                schedule=fixed(uplink_kbps=mbit * 1000, delay_ms=ONE_WAY_DELAY_MS),
                                frames=static_frames, fps_cap=fps, strategies=tuple(strategies))
            point_runs = []
            for strategy in strategies:
                own = scenario
                if args.pace == "strategy":
                    own = dataclasses.replace(scenario, fps_cap=strategy_fps(guess[strategy.name], edge_ms=edge_ms,
                                                                             fps_cap=args.fps))
                point_runs.append(_run(bench, own, strategy))
            if not args.strategy or any(ADAPTIVE.startswith(p) for p in args.strategy):
                ad = dataclasses.replace(scenario, frames=args.adaptive_frames)
                if args.pace == "strategy":
                    ad = dataclasses.replace(ad, fps_cap=strategy_fps(min(guess.values()), edge_ms=edge_ms,
                                                                      fps_cap=args.fps, adaptive=True))
                point_runs.append(_run(bench, ad, Strategy(ADAPTIVE, None, "latency")))
            points.append(_point(mbit, point_runs))
            sent = next((r.get("payload_bytes_per_frame") for r in point_runs
                         if r["strategy"] == CLOUD and r.get("payload_bytes_per_frame")), None)
            if sent:
                cloud_payloads.append(sent)
            predicted = predict_ms([by_id["input"], by_id["output"], *pick.cuts], uplink_mbit=mbit, rtt_ms=rtt_ms,
                                   jpeg_bytes=sent or jpeg_bytes, jpeg_encode_ms=by_id["input"].head_ms)
            runs.append({"uplink_mbit": mbit, "fps": fps, "predicted_ms": {k: round(v, 2) for k, v in predicted.items()},
                         "runs": [_compact(r) for r in point_runs]})
            logger.info("%g Mbit/s: %s", mbit, {r["strategy"]: r.get("mean_ms") for r in point_runs})
        doc["sweep"] = runs
        doc["evaluation"] = evaluate(points)
        if cloud_payloads:  # the JPEGs the agent really sent (the frames it played), for the floors
            sent_jpeg = sum(cloud_payloads) / len(cloud_payloads)
            doc["jpeg_bytes_sent_per_frame"] = round(sent_jpeg, 1)
            doc["ratio_floor"] = {r.cut_id: _round(ratio_floor(r, edge_ms=edge_ms, jpeg_bytes=sent_jpeg, rtt_ms=rtt_ms,
                                                               server_ms=server_ms))
                                  for r in rows if r.cut_id not in ("input", "output")}
    finally:
        bench_obj = locals().get("bench")
        if bench_obj is not None:
            bench_obj.stop_server()
        testbed.teardown()  # type: ignore[attr-defined]
    doc["generated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    doc["duration_s"] = round(time.time() - started, 1)
    return doc


def _run(bench: Bench, scenario: Scenario, strategy: Strategy) -> dict:
    try:
        return bench.run_one(scenario, strategy)
    except Exception as exc:  # one broken run must not lose the others
        logger.exception("run %s/%s failed", scenario.name, strategy.name)
        return {"scenario": scenario.name, "strategy": strategy.name, "error": str(exc)}


def _point(mbit: float, runs: Sequence[dict]) -> Point:
    means = {r["strategy"]: r["mean_ms"] for r in runs
             if r["strategy"] != ADAPTIVE and "error" not in r and r.get("mean_ms") is not None}
    ad = next((r for r in runs if r["strategy"] == ADAPTIVE and "error" not in r and r.get("timeline")), None)
    if ad is None:
        return Point(mbit, means)
    timeline = ad["timeline"]
    s = settle([p[2] for p in timeline])
    after = [p[1] for p in timeline[s.learning_frames:]]
    ad["settled"] = dataclasses.asdict(s)
    ad["learning_mean_ms"] = _round(sum(p[1] for p in timeline[:s.learning_frames]) / s.learning_frames) \
        if s.learning_frames else None
    ad["learning_s"] = round(timeline[s.learning_frames][0] - timeline[0][0], 2) if s.learning_frames else 0.0
    ad["settled_mean_ms"] = _round(sum(after) / len(after))
    return Point(mbit, means, adaptive_cut=s.choice, adaptive_ms=ad["settled_mean_ms"])


def _compact(run: dict) -> dict:
    keep = ("strategy", "pinned_cut", "error", "results", "mean_ms", "p50_ms", "p95_ms", "frames_per_s", "paths",
            "fps_cap", "frames_expected", "energy_mj_per_frame", "cuts", "agent_sources",
            "payload_bytes_per_frame", "frames_without_result", "notes", "settled", "learning_mean_ms", "learning_s",
            "settled_mean_ms", "trace_offset_s")
    out = {k: run[k] for k in keep if k in run}
    if run.get("strategy") == ADAPTIVE and run.get("timeline"):
        out["timeline"] = run["timeline"]
    return out


def _round(value: Optional[float], digits: int = 3) -> Optional[float]:
    return None if value is None else round(float(value), digits)


# --------------------------------------------------------------------------- plot


def write_plot(doc: dict, path: pathlib.Path) -> None:
    """Measured mean latency per strategy against the uplink (log-log), adaptive's settled mean in black,
    the best band shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5))
    names: list[str] = []
    for point in doc["sweep"]:
        for r in point["runs"]:
            if r["strategy"] not in names and "error" not in r:
                names.append(r["strategy"])
    for name in names:
        xs, ys = [], []
        for point in doc["sweep"]:
            r = next((r for r in point["runs"] if r["strategy"] == name and "error" not in r), None)
            value = (r.get("settled_mean_ms") if name == ADAPTIVE else r.get("mean_ms")) if r else None
            if value is not None:
                xs.append(point["uplink_mbit"])
                ys.append(value)
        bold = name == ADAPTIVE
        ax.plot(xs, ys, marker="o", linewidth=3 if bold else 1.3, color="black" if bold else None,
                label=f"{name} (settled)" if bold else name, zorder=3 if bold else 2)
    band = doc["evaluation"].get("best_band")
    if band:
        ax.axvspan(band["from_mbit"], band["to_mbit"], color="tab:green", alpha=0.12,
                   label=f"{band['strategy']} fastest ({band['width']:g}x)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("uplink (Mbit/s), 5 ms one-way delay")
    ax.set_ylabel("mean latency per frame (ms)")
    goal = doc["evaluation"]["goal"]
    ax.set_title(f"Three regions ({doc['label']}, device {doc['device']['slowdown']:g}x slower): "
                 f"goal {'met' if goal['met'] else 'not met'}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.testbed_three_region", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=pathlib.Path, required=True, help="bundle with codec cuts")
    p.add_argument("--label", default="training-free", help="name of this run in the results file")
    p.add_argument("--uplinks", default=",".join(f"{u:g}" for u in SWEEP_UPLINKS_MBIT),
                   help="Mbit/s, ',' separated (default %(default)s)")
    p.add_argument("--frames", type=int, default=24, help="frames per static run (default %(default)s)")
    p.add_argument("--adaptive-frames", type=int, default=48, help="frames of the adaptive run (default %(default)s)")
    p.add_argument("--fps", type=float, default=5.0, help="frame rate cap; slow links get less (sweep_fps)")
    p.add_argument("--slowdown", type=float, default=10.0, help="edge CPU = one core / this (default 10: Pi Zero 2 W)")
    p.add_argument("--strategy", action="append", default=[], help="run only strategies starting with this")
    p.add_argument("--testbed", choices=("auto", "namespaces", "loopback"), default="auto")
    p.add_argument("--no-device-profile", action="store_true", help="keep the bundle's host profiles")
    p.add_argument("--device-emulation", choices=("quota", "sleep"), default="quota",
                   help="quota: cgroup CPU quota (default); sleep: every model run padded to --slowdown times its "
                        "duration, no quota (fair to heads shorter than the quota's grant per period)")
    p.add_argument("--agent-log-level", default="WARNING", help="INFO: every decision and its reason in edge.err")
    p.add_argument("--edge-launcher", choices=("runner", "cli"), default="runner",
                   help="cli: `splitinfer edge` with its control socket (splitctl --socket RUN_DIR/control.sock)")
    p.add_argument("--video", type=pathlib.Path, help="the camera's video (default bikes.mp4)")
    p.add_argument("--pace", choices=("point", "strategy"), default="point",
                   help="point: one frame rate per uplink, paced by the slowest strategy (default); strategy: "
                        "each static strategy paced by its own predicted latency, adaptive by max(its best "
                        "prediction, edge-only) (benchmarks.testbed.three_region.strategy_fps)")
    p.add_argument("--slow-frames", type=int, default=0, help="frames per static run below --slow-below Mbit/s")
    p.add_argument("--slow-below", type=float, default=1.0)
    p.add_argument("--load-unthrottled", action="store_true",
                   help="the agent loads at host speed and joins the CPU quota before its first frame")
    p.add_argument("--deadline-ms", type=float, default=500.0,
                   help="the agent's per-offload budget (a miss completes on the device); raise it when a "
                        "frame's JPEG takes longer than 500 ms on the slowest uplinks, so that the pinned "
                        "strategy is what is measured")
    p.add_argument("--startup-s", type=float, default=4.0, help="time allowed for the agent to load")
    p.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    p.add_argument("--plot-dir", type=pathlib.Path, default=DEFAULT_PLOT_DIR)
    p.add_argument("--log-dir", type=pathlib.Path, default=REPO / "benchmarks" / "results" / "testbed_logs" / "three_region")
    a = p.parse_args(argv)
    a.log_dir = a.log_dir.resolve()  # the agent resolves its edge.toml's paths relative to the file
    try:
        a.uplinks = tuple(float(x) for x in a.uplinks.split(",") if x.strip())
    except ValueError:
        p.error(f"--uplinks {a.uplinks!r}: expected numbers separated by ','")
    if not a.uplinks or min(a.uplinks) <= 0:
        p.error(f"--uplinks {a.uplinks!r}: expected positive rates")
    if a.frames < 5 or a.adaptive_frames < 10:
        p.error(f"--frames {a.frames} / --adaptive-frames {a.adaptive_frames}: expected >= 5 / >= 10")
    return a


def plot_name(label: str) -> str:
    return "three_region.png" if label == "training-free" else f"three_region_{label}.png"


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not (args.bundle / "manifest.json").is_file():
        print(f"testbed_three_region: no bundle at {args.bundle}", file=sys.stderr)
        return 2
    doc = run_sweep(args)
    doc["command"] = "python -m benchmarks.testbed_three_region " + " ".join(sys.argv[1:] if argv is None else argv)
    plot = args.plot_dir / plot_name(args.label)
    write_plot(doc, plot)
    doc["plot"] = str(plot.relative_to(REPO)) if plot.is_relative_to(REPO) else str(plot)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results.setdefault("runs", {})[args.label] = doc
    results["latest"] = args.label
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    goal = doc["evaluation"]["goal"]
    print(json.dumps({"label": args.label, "goal": goal, "ratio_floor": doc["ratio_floor"]}, indent=1))
    print(f"wrote {args.out} and {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
