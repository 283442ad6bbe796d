"""Wait until an Open Inference Protocol server answers ServerReady; print the wall time.

Runs inside a namespace (``ip netns exec si-cloud python -m benchmarks.testbed.probe``)
where the bench itself cannot reach. Exit status 0 when ready (stdout: ``ready UNIX_S``),
1 on timeout.
"""
from __future__ import annotations

import argparse
import sys
import time

import grpc

from protos import inference_pb2, inference_pb2_grpc


def wait_ready(target: str, timeout_s: float, model: str = "") -> float | None:
    """Poll every 50 ms; the wall time (s) of the first ready answer, or None."""
    deadline = time.monotonic() + timeout_s
    channel = grpc.insecure_channel(target)
    stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
    try:
        while time.monotonic() < deadline:
            try:
                if model:
                    ok = stub.ModelReady(inference_pb2.ModelReadyRequest(name=model), timeout=1.0).ready
                else:
                    ok = stub.ServerReady(inference_pb2.ServerReadyRequest(), timeout=1.0).ready
                if ok:
                    return time.time()
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        return None
    finally:
        channel.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.testbed.probe")
    parser.add_argument("--target", required=True, help="HOST:PORT")
    parser.add_argument("--model", default="", help="also wait for this model to be ready")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    at = wait_ready(args.target, args.timeout, args.model)
    if at is None:
        print(f"not ready after {args.timeout:g}s: {args.target}", file=sys.stderr)
        return 1
    print(f"ready {at:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
