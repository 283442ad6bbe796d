"""grpc.aio server (this checkout) vs the former sync thread-pool server (a git ref), same machine, same run.

    python -m benchmarks.aio_vs_sync_bench [--sync-ref 34c3596] [--rounds 2] [--repeats 30]
        [--out benchmarks/results/aio_vs_sync.json]

PROTOCOL.md noted that a sync `grpc.server` was at least as fast as `grpc.aio` for 0.1-5 MB messages
because the aio server deserializes on its event loop. Ours does not (it takes bytes and parses on a
pool), so this measures both designs on what matters for cameras, alternating them `--rounds` times:

1. round trip (one client, sequential ModelInfer) of 0.1, 1 and 5 MB FP32 tensors to a tail that
   reduces them to 3 numbers (`server_bench`'s payload bundle), p10/p50/p99;
2. ServerLive latency from this process while 4 clients in another process send 5 MB tensors back to
   back, and how many of those large requests per second the server answered.

The sync server is `cloud_server/` of `--sync-ref` (extracted with `git archive`), run with the current
`protos/`; each server runs in its own subprocess with default settings.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

import grpc
import numpy as np

from benchmarks.server_bench import build_payload_bundle, infer_request, percentiles_ms
from benchmarks.streams_bench import OPTIONS, live_under_large_messages

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "aio_vs_sync.json"
_SERVER = """
import pathlib, sys, time
from cloud_server.server import create_server
from cloud_server.settings import ServerSettings
s = create_server(ServerSettings(port=0, bundles=(pathlib.Path(sys.argv[1]),), metrics_port=None, discovery=False))
print(s.port, flush=True)
time.sleep(3600)
"""


def _round_trips(address: str, requests: dict[str, bytes], repeats: int) -> dict[str, Any]:
    out = {}
    with grpc.insecure_channel(address, options=OPTIONS) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for label, raw in requests.items():
            for _ in range(3):
                call(raw, timeout=60)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                call(raw, timeout=60)
                times.append(time.perf_counter() - t0)
            out[label] = percentiles_ms(times)
    return out


def _measure(pythonpath: str, payload: pathlib.Path, requests: dict[str, bytes], large: bytes,
             repeats: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITINFER_")}
    env["PYTHONPATH"] = pythonpath
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(payload)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        address = f"127.0.0.1:{int(proc.stdout.readline())}"
        return {"round_trip": _round_trips(address, requests, repeats),
                "live_under_5mb_load": asyncio.run(live_under_large_messages(address, large, 4, 5.0))}
    finally:
        proc.kill()
        proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.aio_vs_sync_bench", description=__doc__.split("\n")[0])
    p.add_argument("--sync-ref", default="34c3596", help="git ref whose cloud_server/ is the sync server")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)

    work = pathlib.Path(tempfile.mkdtemp(prefix="aio_vs_sync."))
    old = work / "sync_ref"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", args.sync_ref, "cloud_server"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    payload = build_payload_bundle(work / "payload")
    rng = np.random.default_rng(3)
    requests = {f"{mb:g}MB": infer_request("payload.blob", {"blob": rng.standard_normal((1, int(mb * 250_000)))
                                                            .astype(np.float32)}).SerializeToString()
                for mb in (0.1, 1.0, 5.0)}
    variants = {"aio (this checkout)": str(REPO), f"sync ({args.sync_ref})": f"{old}{os.pathsep}{REPO}"}
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_start = [round(x, 2) for x in os.getloadavg()]
    for r in range(args.rounds):
        for name, path in variants.items():
            result = _measure(path, payload, requests, requests["5MB"], args.repeats)
            rounds[name].append(result)
            live = result["live_under_5mb_load"]
            print(f"round {r + 1} {name}: " + ", ".join(
                f"{k} p50 {v['p50_ms']} ms" for k, v in result["round_trip"].items())
                + f"; ServerLive under 5 MB load p50 {live['live_p50_ms']} ms p99 {live['live_p99_ms']} ms, "
                  f"{live['large_requests_per_s']} large req/s", flush=True)
    summary = {}
    for name, results in rounds.items():
        summary[name] = {
            **{f"round_trip_{k}_p50_ms_median": float(np.median([x["round_trip"][k]["p50_ms"] for x in results]))
               for k in requests},
            "live_under_5mb_load_p50_ms_median": float(np.median([x["live_under_5mb_load"]["live_p50_ms"]
                                                                  for x in results])),
            "live_under_5mb_load_p99_ms_median": float(np.median([x["live_under_5mb_load"]["live_p99_ms"]
                                                                  for x in results])),
            "large_requests_per_s_median": float(np.median([x["live_under_5mb_load"]["large_requests_per_s"]
                                                            for x in results])),
        }
    doc = {"benchmark": "aio_vs_sync_bench", "started_at": started,
           "command": " ".join([sys.executable, "-m", "benchmarks.aio_vs_sync_bench", *(argv or sys.argv[1:])]),
           "load_average_at_start": load_start, "cpus": os.cpu_count(), "grpcio": grpc.__version__,
           "notes": ["client processes and the server share this machine's cores; other work adds noise",
                     "medians over rounds of each variant's p50/p99"],
           "summary": summary, "rounds": rounds,
           "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
