"""Edge agent benchmark: memory, cold start, pipelined throughput and runtime overhead.

    python -m benchmarks.edge_bench [--bundle bundles/mobilenet_v2] [--cut CUT] [--frames 200]
        [--threads 2] [--out benchmarks/results/edge.json]

A real cloud server (``cloud_server.server.create_server``) runs in this process on loopback;
the agent runs in fresh child processes (``splitinfer edge`` as a library: ``EdgeAgent``) so
its memory and start-up are its own. Source: the sample video ``bikes.mp4`` (640x272 H.264,
250 frames, replayed) at its own size unless ``--width-px``/``--height-px`` ask for a resize.
The split is pinned to ``--cut`` (default: the middle one of the cuts with an INT8 head/activation).

Figures and goals:

1. **RSS** of the agent process: the median of samples taken every 100 ms while results flow
   (goal <= 150 MB); also the maximum, the value after the run once freed heap pages are
   returned (``malloc_trim``, which the daemon does every second), and USS (RSS without shared
   library pages). What is loaded is reported as it is: each loaded head with the precision
   the manifest records for it (``head_precision``), the full model held for fallback (the
   INT8 one when the bundle ships ``full_model_int8``, else FP32), and ``prewarm_neighbours``.
   A separate fresh process (``footprint``) loads the same parts one at a time and reports
   RSS/USS after each, then the resident memory by owner (/proc/self/smaps): OpenCV+FFmpeg,
   ONNX Runtime, Python, anonymous memory (heap, weights, arenas).
2. **Cold start**: process launch -> first result written (goal <= 3 s); includes Python imports,
   bundle verification (sha256 of every edge file), session creation and warm-up.
3. **Pipelined frames/s** vs the slowest stage's bound (goal >= 0.9x). Stages: capture (decode +
   resize, timed separately), preprocess + head, network (round trip; ``max_in_flight`` workers),
   results (postprocess + sink). The bound uses per-frame stage times measured in the same run;
   also reported: the sequential bound (sum of the stages).
4. **Per-frame runtime overhead** on loopback = end-to-end latency - (preprocess + head + wire +
   server) in a paced run (no queueing): the agent's own cost (queue hand-offs, request building,
   postprocess, sink). Goal <= 1 ms (median).
5. **Live view cost**: the same paced run with the live view on and one viewer reading the
   MJPEG stream: the time to draw the overlay and encode one JPEG, and the overhead per frame
   watched vs not.

The machine is shared: the server, the agent's four stages and the video decoder all
compete for the same cores, which the figures include.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Optional

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = REPO / "bundles" / "mobilenet_v2"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "edge.json"
GOALS = {"rss_mb": 150.0, "cold_start_s": 3.0, "pipeline_ratio": 0.9, "overhead_ms": 1.0}


def pick_cut(bundle_root: pathlib.Path) -> str:
    """The middle cut (by order) among those whose head is INT8 or ends in an INT8 activation."""
    from protos.bundle import Side, read_bundle

    cuts = sorted((c for c in read_bundle(bundle_root, Side.EDGE, check_hashes=False).manifest.cuts
                   if c.id not in ("input", "output")), key=lambda c: c.order)
    int8 = [c for c in cuts if "int8" in c.head_precision.lower() or any(t.encoding.codec == "int8" for t in c.tensors)]
    pool = int8 or cuts
    if not pool:
        raise SystemExit(f"{bundle_root} has no middle cut to benchmark")
    return pool[(len(pool) - 1) // 2].id


# --------------------------------------------------------------------------- child (the agent)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the agent once as ``spec`` says; called in a fresh process."""
    launched = float(spec["launched_unix_s"])
    import resource

    import psutil

    from edge_agent.agent import EdgeAgent
    from edge_agent.config import build_config
    from edge_agent.results import FrameResult, MemorySink
    from partitioner import samples

    first: dict[str, float] = {}

    class TimedSink(MemorySink):
        def write(self, result: FrameResult) -> None:
            now = time.time()
            first.setdefault("first_result_unix_s", now)
            first["last_result_unix_s"] = now
            super().write(result)

    values = {
        "bundle": spec["bundle"],
        "server.address": spec["server"],
        "server.discovery": False,
        "source.uri": str(samples.video_path("bikes.mp4")),
        "source.loop": True,
        "runtime.max_frames": spec["frames"],
        "runtime.threads": spec["threads"],
        "runtime.deadline_ms": 5000,
        "policy.pinned_cut": spec["cut"],
        "results.sink": "none",
        "battery.source": "none",
        "agent.agent_id": "bench",
    }
    if spec.get("width_px"):
        values["source.width_px"], values["source.height_px"] = spec["width_px"], spec["height_px"]
    if spec.get("fps_cap"):
        values["source.fps_cap"] = spec["fps_cap"]
    if spec.get("prewarm_neighbours") is not None:
        values["runtime.prewarm_neighbours"] = spec["prewarm_neighbours"]
    values.update(spec.get("settings") or {})
    if spec.get("liveview"):
        values.update({"liveview.enabled": True, "liveview.port": 0, "liveview.fps": spec["fps_cap"] or 10})
    sink = TimedSink()
    agent = EdgeAgent(build_config(values), sink=sink)
    proc = psutil.Process()
    samples_mb: list[float] = []
    running = threading.Event()

    def sample_rss() -> None:  # steady state: every 100 ms once results flow
        while not running.wait(0.1):
            if "first_result_unix_s" in first:
                samples_mb.append(proc.memory_info().rss / 2**20)

    monitor = threading.Thread(target=sample_rss, daemon=True)
    agent.start()
    monitor.start()
    view = next((v for v in agent.sinks if hasattr(v, "render_history_ms")), None)
    if view is not None:  # one viewer watching the MJPEG stream for the whole run
        threading.Thread(target=_watch_stream, args=(view.url + "stream.mjpg", running), daemon=True).start()
    ok = agent.run_until_done(600)
    done = time.time()
    running.set()
    monitor.join()
    rss_end_mb = proc.memory_info().rss / 2**20
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from edge_agent.head import release_free_memory

    release_free_memory()  # what the daemon's periodic trim gives back
    full = proc.memory_full_info()
    rss_trimmed_mb, uss_mb = full.rss / 2**20, full.uss / 2**20
    rss_mb = statistics.median(samples_mb) if samples_mb else rss_end_mb
    results = sink.results
    paths: dict[str, int] = {}
    for r in results:
        paths[r.path.value] = paths.get(r.path.value, 0) + 1
    lat = {k: [r.latency_ms.get(k, 0.0) for r in results] for k in
           ("queue", "preprocess", "head", "wire", "server", "postprocess", "total")}
    overhead = [r.latency_ms["total"] - r.latency_ms["preprocess"] - r.latency_ms["head"]
                - r.latency_ms["wire"] - r.latency_ms["server"] for r in results]
    # capture stage alone: decode + resize of the same video, after the run
    from edge_agent.sources import open_source

    import dataclasses

    src = open_source(dataclasses.replace(agent.config.source, fps_cap=None))
    t0 = time.perf_counter()
    n_cap = 60
    for _ in range(n_cap):
        src.read()
    capture_ms = (time.perf_counter() - t0) * 1000 / n_cap
    src.close()
    span_s = first["last_result_unix_s"] - first["first_result_unix_s"]
    return {
        "ok": ok and not agent.errors,
        "errors": agent.errors,
        "frames": len(results),
        "paths": paths,
        "cut": spec["cut"],
        "loaded_heads": agent.head.loaded_heads(),
        "loaded_head_precision": {c: _head_precision(agent.bundle, c) for c in agent.head.loaded_heads()},
        "full_model_precision": agent.head.full_precision,
        "prewarm_neighbours": agent.config.runtime.prewarm_neighbours,
        "liveview_render_ms": ({"median": round(statistics.median(view.render_history_ms), 3),
                                "p90": round(_pct(list(view.render_history_ms), 0.9), 3),
                                "renders": view.renders} if view is not None and view.render_history_ms else None),
        "providers": [p if isinstance(p, str) else p[0] for p in agent.head.providers],
        "rss_mb": round(rss_mb, 1),
        "rss_max_mb": round(max(samples_mb), 1) if samples_mb else None,
        "rss_samples": len(samples_mb),
        "rss_end_mb": round(rss_end_mb, 1),
        "rss_after_trim_mb": round(rss_trimmed_mb, 1),
        "uss_after_trim_mb": round(uss_mb, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "cold_start_s": round(first["first_result_unix_s"] - launched, 3),
        "fps": round((len(results) - 1) / span_s, 2) if span_s > 0 else None,
        "wall_s": round(done - launched, 2),
        "stage_ms": {
            "capture": round(capture_ms, 3),
            "preprocess_head": round(statistics.mean(a + b for a, b in zip(lat["preprocess"], lat["head"])), 3),
            "network_round_trip": round(statistics.mean(a + b for a, b in zip(lat["wire"], lat["server"])), 3),
            "results": round(statistics.mean(lat["postprocess"]), 3),
        },
        "latency_ms": {k: {"median": round(statistics.median(v), 3), "p90": round(_pct(v, 0.9), 3)}
                       for k, v in lat.items()},
        "overhead_ms": {"median": round(statistics.median(overhead), 3), "p90": round(_pct(overhead, 0.9), 3),
                        "mean": round(statistics.mean(overhead), 3)},
        "max_in_flight": agent.config.runtime.max_in_flight,
        "torch_imported": "torch" in sys.modules,
        "onnx_imported": "onnx" in sys.modules,
    }


def _head_precision(bundle: Any, cut_id: str) -> str:
    """What a cut's head really is: the manifest's head_precision (the partitioner records it)."""
    cut = next(c for c in bundle.manifest.cuts if c.id == cut_id)
    return cut.head_precision or "unknown"


def _watch_stream(url: str, stop: threading.Event) -> None:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as stream:
        while not stop.is_set() and stream.read(65536):
            pass


def _smaps_by_owner() -> dict[str, dict[str, float]]:
    """This process's resident memory by what maps it (/proc/self/smaps): RSS and USS in MB."""
    groups = (("opencv+ffmpeg", ("cv2", "opencv")), ("onnxruntime", ("onnxruntime",)),
              ("grpc+protobuf", ("grpc", "protobuf", "google")), ("numpy", ("numpy",)),
              ("python", ("python", "lib-dynload")))
    out: dict[str, dict[str, float]] = {}
    owner = "anonymous (heap, model weights, arenas)"
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and not head[0].endswith(":"):
                path = head[5] if len(head) > 5 else ""
                owner = "anonymous (heap, model weights, arenas)" if not path or path.startswith("[") else next(
                    (name for name, keys in groups if any(k in path for k in keys)), "other libraries and files")
                out.setdefault(owner, {"rss_mb": 0.0, "uss_mb": 0.0})
            elif head and head[0] == "Rss:":
                out[owner]["rss_mb"] += int(head[1]) / 1024
            elif head and head[0] in ("Private_Clean:", "Private_Dirty:"):
                out[owner]["uss_mb"] += int(head[1]) / 1024
    return {k: {m: round(v, 1) for m, v in d.items()} for k, d in sorted(out.items(), key=lambda kv: -kv[1]["rss_mb"])}


def footprint_child(spec: dict[str, Any]) -> dict[str, Any]:
    """What the agent's memory is made of, step by step in a fresh process (RSS/USS after each)."""
    import psutil

    proc = psutil.Process()
    steps: list[dict[str, Any]] = []

    import ctypes

    libc = ctypes.CDLL("libc.so.6")

    def mark(step: str) -> None:
        libc.malloc_trim(0)  # what the daemon's periodic trim gives back
        full = proc.memory_full_info()
        steps.append({"step": step, "rss_mb": round(full.rss / 2**20, 1), "uss_mb": round(full.uss / 2**20, 1)})

    mark("python + psutil")
    import numpy  # noqa: F401

    mark("+ numpy")
    import grpc  # noqa: F401

    from edge_agent.agent import EdgeAgent  # noqa: F401 - the daemon's own imports

    mark("+ the daemon's modules (grpc, protobuf, protos)")
    import onnxruntime  # noqa: F401

    mark("+ onnxruntime")
    import cv2  # noqa: F401

    mark("+ cv2 (OpenCV with its FFmpeg)")
    from edge_agent.head import HeadRunner
    from protos.bundle import Side, read_bundle

    bundle = read_bundle(pathlib.Path(spec["bundle"]), Side.EDGE)
    if spec.get("full") == "fp32":
        bundle.manifest.ClearField("full_model_int8")
    runner = HeadRunner(bundle, threads=spec["threads"], prewarm_neighbours=0)
    mark(f"+ full model ({runner.full_precision})")
    start = time.perf_counter()
    runner.activate(spec["cut"])  # what a switch to a head that is not prewarmed costs
    switch_ms = (time.perf_counter() - start) * 1000.0
    mark(f"+ head {spec['cut']} ({_head_precision(bundle, spec['cut'])})")
    runner.prewarm_neighbours = 1
    runner.activate(spec["cut"])
    mark(f"+ neighbour heads {[c for c in runner.loaded_heads() if c != spec['cut']]}")
    from edge_agent.config import SourceConfig
    from edge_agent.sources import open_source
    from partitioner import samples

    video = str(samples.video_path("bikes.mp4"))
    if spec.get("source") == "pipe":  # what a Pi camera module gives: rpicam-vid's MJPEG through a pipe
        import tempfile

        cap = cv2.VideoCapture(video)
        with tempfile.NamedTemporaryFile(suffix=".mjpeg", delete=False) as f:
            for _ in range(60):
                f.write(cv2.imencode(".jpg", cap.read()[1], [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
        cap.release()
        src = open_source(SourceConfig(kind="pipe", uri=f.name))
        label = "MJPEG pipe decoding"
    else:
        src = open_source(SourceConfig(uri=video, loop=True))
        label = "H.264 video decoding (FFmpeg)"
    for _ in range(30):  # only the last frame is kept, as in the daemon
        frame = src.read()
    mark(f"+ {label} (30 frames)")
    for _ in range(30):
        frame = src.read()
        runner.run_head(spec["cut"], frame.image_bgr)
        runner.run_full(frame.image_bgr)
    mark("+ 30 frames through the head and the full model")
    src.close()
    return {"steps": steps, "by_owner": _smaps_by_owner(), "full_model_precision": runner.full_precision,
            "cold_switch_ms": round(switch_ms, 1),
            "loaded_heads": {c: _head_precision(bundle, c) for c in runner.loaded_heads()}}


def _spawn(spec: dict[str, Any]) -> dict[str, Any]:
    spec = dict(spec, launched_unix_s=time.time())
    proc = subprocess.run([sys.executable, "-m", "benchmarks.edge_bench", "--child", json.dumps(spec)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"agent child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- parent


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=pathlib.Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--cut", default=None)
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--paced-frames", type=int, default=60)
    parser.add_argument("--paced-fps", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--width-px", type=int, default=None, help="resize frames at capture (default: as decoded)")
    parser.add_argument("--height-px", type=int, default=None)
    parser.add_argument("--prewarm-neighbours", type=int, default=None,
                        help="runtime.prewarm_neighbours for the agent runs (default: the config default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an agent setting for every run, e.g. --set runtime.cpu_mem_arena=true")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(footprint_child(spec) if spec.get("footprint") else run_child(spec)))
        return 0
    if not (args.bundle / "manifest.json").is_file():
        print(f"edge_bench: no bundle at {args.bundle}; build it with `splitinfer partition mobilenet_v2 "
              f"--out {args.bundle}` or pass --bundle", file=sys.stderr)
        return 2
    import onnxruntime as ort
    import psutil

    from cloud_server.server import create_server
    from cloud_server.settings import ServerSettings

    cut = args.cut or pick_cut(args.bundle)
    server = create_server(ServerSettings(host="127.0.0.1", port=0, bundles=(args.bundle.resolve(),),
                                          metrics_port=None, discovery=False, max_queue_delay_us=0,
                                          intra_op_threads=1))
    base = {"bundle": str(args.bundle.resolve()), "server": server.address, "cut": cut, "threads": args.threads,
            "width_px": args.width_px, "height_px": args.height_px, "prewarm_neighbours": args.prewarm_neighbours,
            "settings": dict(item.split("=", 1) for item in args.set)}
    try:
        _spawn(dict(base, frames=5))  # warm the server's sessions and the OS page cache
        pipelined = _spawn(dict(base, frames=args.frames))
        paced = _spawn(dict(base, frames=args.paced_frames, fps_cap=args.paced_fps))
        watched = _spawn(dict(base, frames=args.paced_frames, fps_cap=args.paced_fps, liveview=True))
        # the same pipelined run with one prewarmed neighbour on each side (the old default), for the record
        prewarmed = (_spawn(dict(base, frames=args.frames, prewarm_neighbours=1))
                     if pipelined["prewarm_neighbours"] != 1 else None)
    finally:
        server.stop(0)
    footprint = {"video": _spawn(dict(base, footprint=True)),
                 "mjpeg_pipe": _spawn(dict(base, footprint=True, source="pipe"))}
    if footprint["video"]["full_model_precision"] == "int8":
        footprint["video_fp32_full_model"] = _spawn(dict(base, footprint=True, full="fp32"))

    stages = dict(pipelined["stage_ms"])
    stages["capture"] = paced["stage_ms"]["capture"]
    capacity_fps = {
        "capture": 1000 / stages["capture"],
        "preprocess_head": 1000 / stages["preprocess_head"],
        "network_round_trip": pipelined["max_in_flight"] * 1000 / stages["network_round_trip"],
        "results": 1000 / max(stages["results"], 1e-3),
    }
    slowest = min(capacity_fps, key=capacity_fps.get)
    bound_fps = capacity_fps[slowest]
    sequential_fps = 1000 / sum(stages.values())
    ratio = pipelined["fps"] / bound_fps
    figures = {
        "rss_mb": pipelined["rss_mb"],
        "cold_start_s": pipelined["cold_start_s"],
        "pipeline_ratio": round(ratio, 3),
        "overhead_ms": paced["overhead_ms"]["median"],
    }
    met = {
        "rss_mb": figures["rss_mb"] <= GOALS["rss_mb"],
        "cold_start_s": figures["cold_start_s"] <= GOALS["cold_start_s"],
        "pipeline_ratio": figures["pipeline_ratio"] >= GOALS["pipeline_ratio"],
        "overhead_ms": figures["overhead_ms"] <= GOALS["overhead_ms"],
    }
    report = {
        "benchmark": "edge_bench",
        "command": "python -m benchmarks.edge_bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "onnxruntime": ort.__version__, "load_avg": os.getloadavg(),
                    "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)},
        "bundle": str(args.bundle), "cut": cut, "threads": args.threads,
        "capture_px": [args.width_px or 640, args.height_px or 272], "source": "partitioner.samples bikes.mp4 (640x272 H.264)",
        "goals": GOALS, "figures": figures, "goals_met": met,
        "pipelining": {"fps": pipelined["fps"], "bound_fps": round(bound_fps, 2), "slowest_stage": slowest,
                       "sequential_fps": round(sequential_fps, 2), "stage_ms": stages,
                       "stage_capacity_fps": {k: round(v, 2) for k, v in capacity_fps.items()}},
        "pipelined_run": pipelined,
        "paced_run": paced,
        "liveview": {"overhead_ms_median_watched": watched["overhead_ms"]["median"],
                     "overhead_ms_median_unwatched": paced["overhead_ms"]["median"],
                     "render_ms": watched["liveview_render_ms"], "rss_mb_watched": watched["rss_mb"],
                     "rss_mb_unwatched": paced["rss_mb"]},
        "footprint": footprint,
        "prewarmed_neighbours_run": None if prewarmed is None else {
            k: prewarmed[k] for k in ("rss_mb", "rss_max_mb", "rss_after_trim_mb", "uss_after_trim_mb", "fps",
                                      "loaded_head_precision", "prewarm_neighbours")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"edge agent on {report['machine']['platform']} ({os.cpu_count()} cores), bundle {args.bundle.name}, cut {cut}")
    heads = ", ".join(f"{c} {p}" for c, p in pipelined["loaded_head_precision"].items()) or "none"
    print(f"  agent RSS                   {figures['rss_mb']:8.1f} MB   (goal <= {GOALS['rss_mb']:g}; median while "
          f"running, max {pipelined['rss_max_mb']}, after trim {pipelined['rss_after_trim_mb']}, "
          f"USS {pipelined['uss_after_trim_mb']}, peak {pipelined['peak_rss_mb']})")
    print(f"      loaded: heads [{heads}] (prewarm_neighbours {pipelined['prewarm_neighbours']}) + the "
          f"{pipelined['full_model_precision'].upper()} full model for fallback")
    if prewarmed is not None:
        print(f"      with prewarm_neighbours 1 (heads {list(prewarmed['loaded_head_precision'])}): RSS median "
              f"{prewarmed['rss_mb']} MB, max {prewarmed['rss_max_mb']}, after trim {prewarmed['rss_after_trim_mb']}, "
              f"USS {prewarmed['uss_after_trim_mb']}")
    for name, fp in footprint.items():
        print(f"  footprint ({name}), RSS / USS MB after each step:")
        for step in fp["steps"]:
            print(f"      {step['rss_mb']:7.1f} / {step['uss_mb']:6.1f}  {step['step']}")
        print("      by owner: " + ", ".join(f"{k} {v['rss_mb']}/{v['uss_mb']}" for k, v in fp["by_owner"].items()))
        print(f"      a switch to a head that is not prewarmed: {fp['cold_switch_ms']} ms (load + warm-up)")
    print(f"  cold start -> first result  {figures['cold_start_s']:8.2f} s    (goal <= {GOALS['cold_start_s']:g})")
    print(f"  pipelined frames/s          {pipelined['fps']:8.2f}      bound {bound_fps:.2f} ({slowest}), "
          f"ratio {ratio:.2f} (goal >= {GOALS['pipeline_ratio']}); sequential {sequential_fps:.2f}")
    print("  stage ms: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    print(f"  runtime overhead / frame    {figures['overhead_ms']:8.3f} ms   (goal <= {GOALS['overhead_ms']:g}; "
          f"p90 {paced['overhead_ms']['p90']} ms, paced {args.paced_fps:g} fps)")
    lv = report["liveview"]
    if lv["render_ms"]:
        print(f"  live view, one viewer       {lv['render_ms']['median']:8.3f} ms   per drawn frame (overlay + JPEG, "
              f"p90 {lv['render_ms']['p90']}, {lv['render_ms']['renders']} renders); overhead/frame "
              f"{lv['overhead_ms_median_watched']} ms watched vs {lv['overhead_ms_median_unwatched']} ms not")
    print(f"  results by path: {pipelined['paths']}; torch imported: {pipelined['torch_imported']}, "
          f"onnx imported: {pipelined['onnx_imported']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
