"""Edge agent benchmark: memory, cold start, pipelined throughput and runtime overhead.

    python -m benchmarks.edge_bench [--bundle bundles/mobilenet_v2] [--cut CUT] [--frames 200]
        [--threads 2] [--out benchmarks/results/edge.json]

A real cloud server (``cloud_server.server.create_server``) runs in this process on loopback;
the agent runs in fresh child processes (``splitinfer edge`` as a library: ``EdgeAgent``) so
its memory and start-up are its own. Source: the sample video ``bikes.mp4`` (640x272 H.264,
250 frames, replayed) at its own size unless ``--width-px``/``--height-px`` ask for a resize.
The split is pinned to ``--cut`` (default: the middle one of the cuts with an INT8 head/activation).

Figures and goals:

1. **RSS** of the agent process with the INT8 head loaded: the median of samples taken every
   100 ms while results flow (goal <= 150 MB); also the maximum, the value after the run once
   freed heap pages are returned (``malloc_trim``, which the daemon does every second), and USS
   (RSS without shared library pages). The agent also holds the full FP32 model for fallback and
   the neighbouring heads (prewarm).
2. **Cold start**: process launch -> first result written (goal <= 3 s); includes Python imports,
   bundle verification (sha256 of every edge file), session creation and warm-up.
3. **Pipelined frames/s** vs the slowest stage's bound (goal >= 0.9x). Stages: capture (decode +
   resize, timed separately), preprocess + head, network (round trip; ``max_in_flight`` workers),
   results (postprocess + sink). The bound uses per-frame stage times measured in the same run;
   also reported: the sequential bound (sum of the stages).
4. **Per-frame runtime overhead** on loopback = end-to-end latency - (preprocess + head + wire +
   server) in a paced run (no queueing): the agent's own cost (queue hand-offs, request building,
   postprocess, sink). Goal <= 1 ms (median).

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
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
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
            "width_px": args.width_px, "height_px": args.height_px}
    try:
        _spawn(dict(base, frames=5))  # warm the server's sessions and the OS page cache
        pipelined = _spawn(dict(base, frames=args.frames))
        paced = _spawn(dict(base, frames=args.paced_frames, fps_cap=args.paced_fps))
    finally:
        server.stop(0)

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
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"edge agent on {report['machine']['platform']} ({os.cpu_count()} cores), bundle {args.bundle.name}, cut {cut}")
    print(f"  RSS with INT8 head loaded   {figures['rss_mb']:8.1f} MB   (goal <= {GOALS['rss_mb']:g}; median while "
          f"running, max {pipelined['rss_max_mb']}, after trim {pipelined['rss_after_trim_mb']}, "
          f"USS {pipelined['uss_after_trim_mb']}, peak {pipelined['peak_rss_mb']})")
    print(f"      loaded: heads {pipelined['loaded_heads']} + the full model for fallback")
    print(f"  cold start -> first result  {figures['cold_start_s']:8.2f} s    (goal <= {GOALS['cold_start_s']:g})")
    print(f"  pipelined frames/s          {pipelined['fps']:8.2f}      bound {bound_fps:.2f} ({slowest}), "
          f"ratio {ratio:.2f} (goal >= {GOALS['pipeline_ratio']}); sequential {sequential_fps:.2f}")
    print("  stage ms: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    print(f"  runtime overhead / frame    {figures['overhead_ms']:8.3f} ms   (goal <= {GOALS['overhead_ms']:g}; "
          f"p90 {paced['overhead_ms']['p90']} ms, paced {args.paced_fps:g} fps)")
    print(f"  results by path: {pipelined['paths']}; torch imported: {pipelined['torch_imported']}, "
          f"onnx imported: {pipelined['onnx_imported']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
