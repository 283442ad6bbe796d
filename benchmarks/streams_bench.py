"""Many cameras on one `splitinfer serve`: open streams vs liveness, simulated cameras, deliberate overload.

    python -m benchmarks.streams_bench [--bundle bundles/mobilenet_v2] [--cameras 256] [--seconds 30]
        [--fps 0.5] [--overload-fps 2] [--overload-seconds 20] [--streams 0,128,256,512]
        [--out benchmarks/results/streams.json]

What it measures, against a real `splitinfer serve` subprocess on loopback (so its RSS is its own):

1. **Open streams vs ServerLive**: for each count in `--streams`, that many `ModelStreamInfer` streams
   are opened (8 per connection), each answers one request, then all sit open and idle while 100
   sequential `ServerLive` calls are timed (p50/p99) and the server's RSS is read.
2. **Simulated cameras**: `--cameras` cameras, each with its own stream (8 per connection), send one
   frame's tensor every 1/`--fps` s (open loop, like a camera: frames do not wait for answers) for
   `--seconds`; every answer's latency and status is recorded (errors by status, p50/p99 of the
   answered, server RSS sampled every 0.5 s).
3. **Liveness under large messages**: ServerLive latency while 4 clients send 5 MB tensors back to
   back (the aio loop only moves bytes; parsing happens on the pool).
4. **Deliberate overload**: the same cameras at `--overload-fps`, beyond what the server computes:
   the share answered RESOURCE_EXHAUSTED (and by which limit), and the latency of the admitted.

Every frame carries the edge agent's per-frame deadline (`--deadline-ms`, 500) as Triton's `timeout`
request parameter, as the agent sends it. The tensor is the cut's real activation shape (random
values) of the bundle's middle cut; the server
runs with its defaults (max_inflight 128, max_queue_size 64, max_batch_size 8, grpc_workers 16).
Clients and server share this machine's cores (the client is one asyncio process), so the figures are
conservative. Bundle: `--bundle`, else the MobileNetV2-architecture stand-in of `server_bench`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from typing import Any, Sequence

import grpc
import numpy as np

from benchmarks.server_bench import (
    DEFAULT_BUNDLE,
    ServeProcess,
    build_payload_bundle,
    build_standin_bundle,
    infer_request,
    percentiles_ms,
    pick_cut,
    random_inputs,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "streams.json"
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
LIVE = "/inference.GRPCInferenceService/ServerLive"
PER_CONNECTION = 8
OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


def rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def with_id(base: bytes, request_id: str) -> bytes:
    """A serialized ModelInferRequest with field 3 (id) prepended: protobuf merges fields in any order."""
    data = request_id.encode()
    size, prefix = len(data), bytearray([0x1A])
    while True:
        byte, size = size & 0x7F, size >> 7
        prefix.append(byte | (0x80 if size else 0))
        if not size:
            return bytes(prefix) + data + base


def reply_status(raw: bytes) -> tuple[str, str]:
    """(id, status name) of a stream answer; 'OK' when it carries no error."""
    from protos import inference_pb2 as pb

    reply = pb.ModelStreamInferResponse.FromString(raw)
    if not reply.error_message:
        return reply.infer_response.id, "OK"
    param = reply.infer_response.parameters.get("splitinfer_status")
    status = param.string_param if param is not None else "UNKNOWN"
    if status == "RESOURCE_EXHAUSTED":
        message = reply.error_message
        status += (" (max_inflight)" if "server is full" in message else " (max_queue_size)" if "queue is full"
                   in message else " (estimated wait)" if "estimated wait" in message else " (other)")
    if status == "DEADLINE_EXCEEDED":
        message = reply.error_message
        status += (" (in the batch queue)" if "in the queue" in message else " (waiting for the batch)"
                   if "no result after" in message else " (other)")
    return reply.infer_response.id, status


class Streams:
    """`count` streams over count/8 connections, each proven to answer one request."""

    def __init__(self, address: str, count: int) -> None:
        self.address = address
        self.count = count
        self.channels: list[grpc.aio.Channel] = []
        self.calls: list[Any] = []

    async def open(self, request: bytes) -> list[str]:
        self.channels = [grpc.aio.insecure_channel(self.address, options=OPTIONS)
                         for _ in range((self.count + PER_CONNECTION - 1) // PER_CONNECTION)]
        self.calls = [self.channels[i // PER_CONNECTION].stream_stream(STREAM)() for i in range(self.count)]
        errors: list[str] = []

        async def first(i: int) -> None:
            await self.calls[i].write(with_id(request, f"open{i}"))
            _, status = reply_status(await self.calls[i].read())
            if status != "OK":
                errors.append(status)

        for start in range(0, self.count, 16):  # small waves: opening is not the measured load
            await asyncio.gather(*(first(i) for i in range(start, min(start + 16, self.count))))
        return errors

    async def close(self) -> None:
        for call in self.calls:
            call.cancel()
        for channel in self.channels:
            await channel.close()


async def live_latencies(address: str, calls: int) -> list[float]:
    async with grpc.aio.insecure_channel(address) as channel:
        live = channel.unary_unary(LIVE)
        await live(b"", timeout=10)
        out = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await live(b"", timeout=10)
            out.append(time.perf_counter() - t0)
        return out


async def streams_vs_live(address: str, pid: int, counts: Sequence[int], request: bytes) -> list[dict[str, Any]]:
    rows = []
    for count in counts:
        streams = Streams(address, count)
        try:
            errors = await streams.open(request)
            await asyncio.sleep(0.5)
            latencies = await live_latencies(address, 100)
            row = {"open_streams": count, "open_errors": len(errors), "server_rss_mb": rss_mb(pid),
                   "server_threads": len(os.listdir(f"/proc/{pid}/task"))}
            row.update({f"live_{k}": v for k, v in percentiles_ms(latencies).items()})
        finally:
            await streams.close()
        print(f"  {count:4d} open streams: ServerLive p50 {row['live_p50_ms']} ms p99 {row['live_p99_ms']} ms, "
              f"RSS {row['server_rss_mb']} MB, {row['server_threads']} threads", flush=True)
        rows.append(row)
    return rows


def _send_large(address: str, request: bytes, senders: int, seconds: float, counter: Any) -> None:
    """In a child process (so the prober's event loop is not shared): `senders` threads send `request`
    back to back for `seconds`."""
    import threading

    def loop() -> None:
        with grpc.insecure_channel(address, options=OPTIONS) as channel:
            call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                call(request, timeout=60)
                with counter.get_lock():
                    counter.value += 1

    threads = [threading.Thread(target=loop) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


async def live_under_large_messages(address: str, request: bytes, senders: int, seconds: float) -> dict[str, Any]:
    """ServerLive latency while `senders` clients (another process) send `request` (MBs) back to back:
    does receiving large messages stall the server's event loop? (We parse them on the pool.)"""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("l", 0)
    child = ctx.Process(target=_send_large, args=(address, request, senders, seconds + 2.0, counter))
    child.start()
    await asyncio.sleep(1.5)  # the child is up and sending
    latencies = []
    before, t0 = counter.value, time.perf_counter()
    async with grpc.aio.insecure_channel(address) as channel:
        live = channel.unary_unary(LIVE)
        while time.perf_counter() - t0 < seconds:
            t1 = time.perf_counter()
            await live(b"", timeout=10)
            latencies.append(time.perf_counter() - t1)
            await asyncio.sleep(0.01)
    rate = (counter.value - before) / (time.perf_counter() - t0)
    await asyncio.get_running_loop().run_in_executor(None, child.join, 60)
    out = {"senders": senders, "request_mb": round(len(request) / 1e6, 2), "seconds": seconds,
           "large_requests_per_s": round(rate, 1), "live_calls": len(latencies)}
    out.update({f"live_{k}": v for k, v in percentiles_ms(latencies).items()})
    return out


async def cameras(address: str, pid: int, count: int, fps: float, seconds: float, request: bytes) -> dict[str, Any]:
    """Open-loop cameras: each sends a frame every 1/fps s on its own stream and reads answers by id."""
    streams = Streams(address, count)
    open_errors = await streams.open(request)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    ok_latencies: list[float] = []
    statuses: Counter[str] = Counter()
    rss: list[float] = []
    start = time.perf_counter() + 0.5
    end = start + seconds
    rng = np.random.default_rng(5)

    async def send(i: int) -> None:
        call = streams.calls[i]
        t = start + float(rng.uniform(0, 1.0 / fps))  # cameras are not in phase
        frame = 0
        while t < end:
            await asyncio.sleep(max(0.0, t - time.perf_counter()))
            rid = f"c{i}f{frame}"
            sent[rid] = time.perf_counter()
            await call.write(with_id(request, rid))
            frame += 1
            t += 1.0 / fps

    async def receive(i: int) -> None:
        call = streams.calls[i]
        while True:
            raw = await call.read()
            if raw is grpc.aio.EOF:
                return
            rid, status = reply_status(raw)
            t0 = sent.pop(rid, None)
            if t0 is None:
                continue
            latency = time.perf_counter() - t0
            statuses[status] += 1
            latencies.append(latency)
            if status == "OK":
                ok_latencies.append(latency)

    async def sample_rss() -> None:
        while time.perf_counter() < end + 2.0:
            rss.append(rss_mb(pid))
            await asyncio.sleep(0.5)

    readers = [asyncio.ensure_future(receive(i)) for i in range(count)]
    sampler = asyncio.ensure_future(sample_rss())
    await asyncio.gather(*(send(i) for i in range(count)))
    deadline = time.perf_counter() + 5.0
    while sent and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    unanswered = len(sent)
    for task in readers:
        task.cancel()
    await sampler
    await streams.close()
    total = sum(statuses.values()) + unanswered
    out: dict[str, Any] = {
        "cameras": count, "fps_per_camera": fps, "seconds": seconds, "offered_rps": round(count * fps, 1),
        "frames_sent": total, "answered_rps": round(sum(statuses.values()) / seconds, 1),
        "ok_rps": round(statuses["OK"] / seconds, 1), "by_status": dict(statuses.most_common()),
        "unanswered_within_5s_after_end": unanswered, "open_errors": len(open_errors),
        "share_resource_exhausted": round(sum(v for k, v in statuses.items() if k.startswith("RESOURCE"))
                                          / max(total, 1), 4),
        "server_rss_mb_max": max(rss) if rss else None,
        "server_rss_mb_median": statistics.median(rss) if rss else None,
    }
    if ok_latencies:
        out["ok_latency"] = percentiles_ms(ok_latencies)
    if latencies:
        out["all_answers_latency"] = percentiles_ms(latencies)
    return out


async def run(address: str, pid: int, args: argparse.Namespace, request: bytes, large: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    print("open streams vs ServerLive", flush=True)
    doc["streams_vs_live"] = await streams_vs_live(address, pid, args.streams, request)
    print("ServerLive while 4 clients send 5 MB requests", flush=True)
    doc["live_under_large_messages"] = await live_under_large_messages(address, large, 4, 5.0)
    print("  " + json.dumps(doc["live_under_large_messages"]), flush=True)
    print(f"{args.cameras} cameras at {args.fps} fps for {args.seconds} s", flush=True)
    doc["cameras"] = await cameras(address, pid, args.cameras, args.fps, args.seconds, request)
    print("  " + json.dumps(doc["cameras"]), flush=True)
    print(f"overload: {args.cameras} cameras at {args.overload_fps} fps for {args.overload_seconds} s", flush=True)
    doc["overload"] = await cameras(address, pid, args.cameras, args.overload_fps, args.overload_seconds, request)
    print("  " + json.dumps(doc["overload"]), flush=True)
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.streams_bench", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=pathlib.Path, default=DEFAULT_BUNDLE)
    p.add_argument("--cut", default=None)
    p.add_argument("--cameras", type=int, default=256)
    p.add_argument("--fps", type=float, default=0.5, help="frames per second per camera (normal load)")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--overload-fps", type=float, default=2.0)
    p.add_argument("--overload-seconds", type=float, default=20.0)
    p.add_argument("--deadline-ms", type=float, default=500.0,
                   help="per-frame deadline sent as Triton's 'timeout' parameter (the edge agent's default)")
    p.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[0, 128, 256, 512])
    p.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)

    from protos.bundle import Side, read_bundle, tail_model_name

    work = pathlib.Path(tempfile.mkdtemp(prefix="streams_bench."))
    if args.bundle.is_dir():
        bundle_root, kind = args.bundle, "real"
    else:
        print(f"{args.bundle} does not exist: building the MobileNetV2-architecture stand-in", flush=True)
        bundle_root, kind = build_standin_bundle(work / "mobilenet_v2_standin"), "standin"
    bundle = read_bundle(bundle_root, Side.CLOUD)
    cut = pick_cut(bundle.manifest, args.cut)
    feeds = random_inputs(cut, 1, np.random.default_rng(1))
    message = infer_request(tail_model_name(bundle.manifest, cut.id), feeds)
    message.parameters["timeout"].int64_param = int(args.deadline_ms * 1000)  # as the edge agent sends it
    request = message.SerializeToString()
    payload = build_payload_bundle(work / "payload")
    blob = np.random.default_rng(2).standard_normal((1, 1_250_000)).astype(np.float32)  # 5 MB
    large = infer_request("payload.blob", {"blob": blob}).SerializeToString()
    serve = ServeProcess(["--bundle", str(bundle_root), "--bundle", str(payload), "--port", "0",
                          "--metrics-port", "off", "--no-discovery"])
    doc: dict[str, Any] = {
        "benchmark": "streams_bench",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([sys.executable, "-m", "benchmarks.streams_bench", *(argv or sys.argv[1:])]),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "grpcio": grpc.__version__},
        "bundle": str(bundle_root), "bundle_kind": kind, "cut": cut.id, "request_bytes": len(request),
        "server": "splitinfer serve defaults (grpc.aio, max_inflight 128, max_queue_size 64, max_batch_size 8, "
                  "max_queue_delay_us 2000, grpc_workers 16, intra_op_threads 1)",
        "clients": f"one asyncio process, {PER_CONNECTION} streams per connection, open-loop cameras",
        "notes": ["clients and server share this machine's cores; other helpers' work adds noise"],
    }
    try:
        doc.update(asyncio.run(run(f"127.0.0.1:{serve.port}", serve.proc.pid, args, request, large)))
    finally:
        doc["server_exit_code"] = serve.stop()
    doc["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    doc["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
