"""Wait until an Open Inference Protocol server answers ServerReady; print the wall time.

Runs inside a namespace (``ip netns exec si-cloud python -m benchmarks.testbed.probe``)
where the bench itself cannot reach. Exit status 0 when ready (stdout: ``ready UNIX_S``),
1 on timeout. With ``--warm-bundle`` it then sends one request to every tail, so that
no strategy of the bench pays a cold session load on its first frames.
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


def warm_tails(target: str, bundle_dir: str, timeout_s: float = 30.0) -> list[str]:
    """Send one request to every tail of the bundle so no strategy pays a cold session load.

    Inputs are zeros of each cut's tensors (batch 1); the "input" cut gets a real JPEG.
    Returns one line per tail: its model name and "ok" or the error.
    """
    import numpy as np

    from protos.bundle import Side, read_bundle, tail_model_name, tail_model_version
    from protos.datatypes import serialize_bytes_tensor, to_numpy_dtype

    bundle = read_bundle(bundle_dir, Side.CLOUD, check_hashes=False)
    m = bundle.manifest
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 256 << 20),
                                                     ("grpc.max_receive_message_length", 256 << 20)])
    stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
    report = []
    try:
        for cut in m.cuts:
            if cut.id == "output":
                continue
            request = inference_pb2.ModelInferRequest(model_name=tail_model_name(m, cut.id),
                                                      model_version=tail_model_version(m), id="warm")
            for spec in cut.tensors:
                shape = [1 if d < 0 else int(d) for d in spec.shape]
                tensor = request.inputs.add()
                tensor.name, tensor.datatype = spec.name, spec.datatype
                tensor.shape.extend(shape)
                if spec.datatype == "BYTES":
                    request.raw_input_contents.append(serialize_bytes_tensor([_sample_jpeg()] * shape[0]))
                else:
                    zeros = np.zeros(shape, dtype=to_numpy_dtype(spec.datatype))
                    request.raw_input_contents.append(zeros.tobytes())
            try:
                stub.ModelInfer(request, timeout=timeout_s)
                report.append(f"{request.model_name} ok")
            except grpc.RpcError as exc:
                report.append(f"{request.model_name} {exc.code().name}: {exc.details()}")
    finally:
        channel.close()
    return report


def _sample_jpeg() -> bytes:
    import cv2

    from partitioner.samples import image_path

    ok, buf = cv2.imencode(".jpg", cv2.imread(str(image_path("chelsea"))))
    if not ok:
        raise RuntimeError("could not encode the sample JPEG")
    return buf.tobytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.testbed.probe")
    parser.add_argument("--target", required=True, help="HOST:PORT")
    parser.add_argument("--model", default="", help="also wait for this model to be ready")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--warm-bundle", help="then send one request to every tail of this bundle")
    args = parser.parse_args(argv)
    at = wait_ready(args.target, args.timeout, args.model)
    if at is None:
        print(f"not ready after {args.timeout:g}s: {args.target}", file=sys.stderr)
        return 1
    print(f"ready {at:.3f}", flush=True)
    if args.warm_bundle:
        for line in warm_tails(args.target, args.warm_bundle):
            print(f"warm {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
