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
                think_ms: float = 0.0) -> dict:
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()

    def one_client() -> None:
        channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20),
                                                         ("grpc.max_receive_message_length", 64 << 20)])
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        while not stop.is_set():
            try:
                stub.ModelInfer(request, timeout=10.0)
                key = "ok"
            except grpc.RpcError:
                key = "failed"
                stop.wait(0.2)
            with lock:
                counts[key] += 1
            if think_ms:
                stop.wait(think_ms / 1000.0)
        channel.close()

    threads = [threading.Thread(target=one_client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
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
    args = parser.parse_args(argv)
    with open(args.jpeg, "rb") as fh:
        jpeg = fh.read()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    started = time.monotonic()
    print("ready", flush=True)
    counts = run_clients(args.target, build_request(args.model, args.version, jpeg, args.tensor), args.clients,
                         stop, args.think_ms)
    counts["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
