"""One agent, several servers: how gRPC's round_robin spreads the offloads, and what killing one costs.

    python -m benchmarks.scaleout_bench [--bundle ~/.cache/splitinfer/bundles/mobilenet_v2]
        [--servers 3] [--cut features_4_conv_2] [--fps 15] [--seconds 20] [--kill-at-s 8]
        [--out benchmarks/results/scaleout.json]

``--servers`` ``splitinfer serve`` subprocesses on loopback; the agent (pinned to ``--cut``) gets
all of them as ``server.address = "127.0.0.1:p1,127.0.0.1:p2,..."`` (edge_agent/channels.py:
round_robin, UNAVAILABLE retried on another server). At ``--kill-at-s`` one server is SIGKILLed.
Reported: requests each server answered before and after the kill (its ModelStatistics), frames
that lost their offload (fallback) and the longest gap between offloaded results around the kill.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time
from typing import Any, Optional

import grpc

from benchmarks.triton_bench import DEFAULT_BUNDLE, OFFLOADED, OurServer, _agent

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "scaleout.json"


def served(address: str, model: str) -> Optional[int]:
    from protos import inference_pb2, inference_pb2_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            reply = inference_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(
                inference_pb2.ModelStatisticsRequest(name=model, version="1"), timeout=5)
    except grpc.RpcError:
        return None
    return int(sum(s.inference_count for s in reply.model_stats))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from partitioner.triton_launch import free_port
    from protos.bundle import bundle_hash, read_bundle, tail_model_name

    bundle = read_bundle(args.bundle)
    model = tail_model_name(bundle.manifest, args.cut)
    servers = [OurServer(args.bundle, free_port()) for _ in range(args.servers)]
    try:
        for server in servers:
            server.start()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    addresses = [s.address for s in servers]
    out: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "bundle": {"path": str(args.bundle), "hash": bundle_hash(bundle.manifest), "model": model},
        "settings": {"servers": args.servers, "fps": args.fps, "seconds": args.seconds, "kill_at_s": args.kill_at_s,
                     "address": ",".join(addresses), "balancing": "gRPC round_robin, UNAVAILABLE retried (3 attempts)"},
    }
    agent, sink = _agent(args.bundle, ",".join(addresses), cut=args.cut, frames=None, fps=args.fps, deadline_ms=2000.0)
    try:
        start = time.monotonic()
        time.sleep(max(0.0, start + args.kill_at_s - time.monotonic()))
        before = [served(a, model) for a in addresses]
        servers[1].stop()
        killed = time.monotonic()
        time.sleep(max(0.0, start + args.seconds - time.monotonic()))
        after = [served(a, model) for a in addresses]
    finally:
        agent.stop(10)
        for server in servers:
            server.stop()
    results = sink.snapshot()
    offloaded_t = [t for t, r in results if r.path.value in OFFLOADED]
    around = [t for t in offloaded_t if killed - 2.0 <= t <= killed + 5.0]
    gaps = [b - a for a, b in zip(around, around[1:])]
    out["requests_before_kill"] = dict(zip(addresses, before))
    out["requests_after_kill"] = {a: (n - b if n is not None and b is not None else None)
                                  for a, b, n in zip(addresses, before, after)}
    out["killed"] = addresses[1]
    out["frames"] = len(results)
    out["paths"] = {p: sum(r.path.value == p for _, r in results) for p in sorted({r.path.value for _, r in results})}
    out["frames_after_kill"] = sum(t > killed for t, _ in results)
    out["fallback_after_kill"] = sum(t > killed and r.path.value == "fallback" for t, r in results)
    out["offload_failures"] = dict(agent.offload_failures)
    out["longest_gap_between_offloads_around_kill_s"] = round(max(gaps), 3) if gaps else None
    out["frame_interval_s"] = round(1.0 / args.fps, 3)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaleout_bench", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=pathlib.Path, default=DEFAULT_BUNDLE)
    p.add_argument("--servers", type=int, default=3)
    p.add_argument("--cut", default="features_4_conv_2")
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--kill-at-s", type=float, default=8.0)
    p.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.servers < 2 or not 0 < args.kill_at_s < args.seconds:
        p.error(f"--servers {args.servers} must be >= 2 and --kill-at-s {args.kill_at_s} inside (0, --seconds)")
    began = time.monotonic()
    result = run(args)
    result["duration_s"] = round(time.monotonic() - began, 1)
    result["generated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("requests_before_kill", "requests_after_kill", "paths",
                                             "fallback_after_kill", "longest_gap_between_offloads_around_kill_s")}))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
