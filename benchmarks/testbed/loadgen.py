"""Server load from N other clients: each sends JPEG frames to the "input" cut in a loop.

Runs beside the server (``ip netns exec si-cloud ...``), so the load competes for
the server's core but not for the edge's shaped uplink. Stops on SIGTERM and prints
one JSON line with the requests completed and failed.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

import grpc

from protos import inference_pb2, inference_pb2_grpc
from protos.datatypes import serialize_bytes_tensor


def build_request(model: str, version: str, jpeg: bytes, tensor_name: str) -> inference_pb2.ModelInferRequest:
    request = inference_pb2.ModelInferRequest(model_name=model, model_version=version, id="load")
    tensor = request.inputs.add()
    tensor.name = tensor_name
    tensor.datatype = "BYTES"
    tensor.shape.append(1)
    request.raw_input_contents.append(serialize_bytes_tensor([jpeg]))
    return request


def run_clients(target: str, request: inference_pb2.ModelInferRequest, clients: int, stop: threading.Event,
                think_ms: float = 0.0, interval_ms: float = 0.0) -> dict:
    """``clients`` closed-loop clients until ``stop``; with ``interval_ms`` each one starts at most one
    request per interval (client i first at i/clients of it: cameras are not in step)."""
    counts: dict = {"ok": 0, "failed": 0}
    latencies_ms: list[float] = []
    lock = threading.Lock()

    def one_client(index: int) -> None:
        channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20),
                                                         ("grpc.max_receive_message_length", 64 << 20)])
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        next_s = time.monotonic() + interval_ms / 1000.0 * index / max(clients, 1)
        while not stop.is_set():
            if interval_ms:
                if stop.wait(max(0.0, next_s - time.monotonic())):
                    break
                next_s = max(next_s + interval_ms / 1000.0, time.monotonic())
            sent = time.monotonic()
            try:
                stub.ModelInfer(request, timeout=10.0)
                key = "ok"
            except grpc.RpcError:
                key = "failed"
                stop.wait(0.2)
            with lock:
                counts[key] += 1
                if key == "ok":
                    latencies_ms.append((time.monotonic() - sent) * 1000.0)
            if think_ms:
                stop.wait(think_ms / 1000.0)
        channel.close()

    threads = [threading.Thread(target=one_client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if latencies_ms:
        ordered = sorted(latencies_ms)
        counts["mean_ms"] = round(sum(ordered) / len(ordered), 2)
        counts["p95_ms"] = round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.testbed.loadgen")
    parser.add_argument("--target", required=True)
    parser.add_argument("--model", required=True, help="tail model name of the input cut")
    parser.add_argument("--version", default="")
    parser.add_argument("--tensor", required=True, help="input tensor name of the input cut")
    parser.add_argument("--jpeg", required=True, help="a JPEG file to send")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--think-ms", type=float, default=0.0)
    parser.add_argument("--interval-ms", type=float, default=0.0,
                        help="each client starts at most one request per interval (a camera's frame period)")
    args = parser.parse_args(argv)
    with open(args.jpeg, "rb") as fh:
        jpeg = fh.read()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    started = time.monotonic()
    print("ready", flush=True)
    counts = run_clients(args.target, build_request(args.model, args.version, jpeg, args.tensor), args.clients,
                         stop, args.think_ms, args.interval_ms)
    counts["clients"] = args.clients
    counts["interval_ms"] = args.interval_ms
    counts["seconds"] = round(time.monotonic() - started, 3)
    counts["requests_per_s"] = round(counts["ok"] / counts["seconds"], 3) if counts["seconds"] else None
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
