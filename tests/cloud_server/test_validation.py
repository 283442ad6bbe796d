"""Malformed requests of every kind: the right gRPC status, a message quoting the bad and the expected
value, and a server that keeps serving afterwards. Crafted with our own stub over a real channel (a
stock client refuses to build most of them); deadline and queue cases also through tritonclient."""

from __future__ import annotations

import struct
import time
from typing import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from cloud_server.server import RunningServer
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc
from protos.datatypes import serialize_bytes_tensor

from .conftest import FC_B, FC_W, MODEL_NAME

POOL = f"{MODEL_NAME}.pool"
INPUT = f"{MODEL_NAME}.input"
Tensor = pb.ModelInferRequest.InferInputTensor


@pytest.fixture(scope="module")
def stub(server: RunningServer) -> Iterator[inference_pb2_grpc.GRPCInferenceServiceStub]:
    channel = grpc.insecure_channel(
        f"127.0.0.1:{server.port}", options=[("grpc.max_send_message_length", 64 << 20),
                                              ("grpc.max_receive_message_length", 64 << 20)]
    )
    yield inference_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def _pool_request(**overrides: object) -> pb.ModelInferRequest:
    """A good request for tiny_net.pool, then with fields replaced."""
    x = np.ones((1, 8), np.float32)
    request = pb.ModelInferRequest(model_name=POOL)
    request.inputs.append(Tensor(name="pooled", datatype="FP32", shape=[1, 8]))
    request.raw_input_contents.append(x.tobytes())
    tensor = request.inputs[0]
    for key, value in overrides.items():
        if key == "raw":
            del request.raw_input_contents[:]
            request.raw_input_contents.extend(value)  # type: ignore[arg-type]
        elif key == "name":
            tensor.name = value  # type: ignore[assignment]
        elif key == "datatype":
            tensor.datatype = value  # type: ignore[assignment]
        elif key == "shape":
            del tensor.shape[:]
            tensor.shape.extend(value)  # type: ignore[arg-type]
        elif key == "fp32_contents":
            tensor.contents.fp32_contents.extend(value)  # type: ignore[arg-type]
        elif key == "int_contents":
            tensor.contents.int_contents.extend(value)  # type: ignore[arg-type]
        elif key == "extra_input":
            request.inputs.append(Tensor(name=value, datatype="FP32", shape=[1, 8]))  # type: ignore[arg-type]
            request.raw_input_contents.append(np.ones((1, 8), np.float32).tobytes())
        elif key == "output":
            request.outputs.add(name=value)  # type: ignore[arg-type]
        elif key == "compression":
            tensor.parameters["compression"].string_param = value  # type: ignore[assignment]
        else:
            raise KeyError(key)
    return request


def _jpeg_request(raw: bytes, count: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=INPUT)
    request.inputs.append(Tensor(name="jpeg", datatype="BYTES", shape=[count]))
    request.raw_input_contents.append(raw)
    return request


def _no_inputs() -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name=POOL)


INVALID = grpc.StatusCode.INVALID_ARGUMENT

# case id -> (request factory, status, fragments the message must contain: bad value and expected one)
CASES = {
    "wrong_name": (lambda: _pool_request(name="pool"), INVALID, ["no input 'pool'", "expected inputs ['pooled']"]),
    "missing_input": (_no_inputs, INVALID, ["lacks input 'pooled'", "expected inputs ['pooled']"]),
    "extra_input": (lambda: _pool_request(extra_input="mask"), INVALID, ["no input 'mask'", "['pooled']"]),
    "wrong_datatype": (
        lambda: _pool_request(datatype="FP16", raw=[np.ones((1, 8), np.float16).tobytes()]),
        INVALID, ["datatype 'FP16'", "expected 'FP32'"],
    ),
    "unknown_datatype": (lambda: _pool_request(datatype="FLOAT"), INVALID, ["'FLOAT'", "expected 'FP32'"]),
    "wrong_rank": (lambda: _pool_request(shape=[8]), INVALID, ["shape [8]", "expected [-1, 8]"]),
    "wrong_dim": (
        lambda: _pool_request(shape=[1, 9], raw=[np.ones((1, 9), np.float32).tobytes()]),
        INVALID, ["shape [1, 9]", "expected [-1, 8]"],
    ),
    "zero_batch": (lambda: _pool_request(shape=[0, 8], raw=[b""]), INVALID, ["batch size 0", "at least 1"]),
    "negative_dim": (lambda: _pool_request(shape=[-1, 8]), INVALID, ["shape [-1, 8]", "expected [-1, 8]"]),
    "raw_too_short": (lambda: _pool_request(raw=[b"\0" * 31]), INVALID, ["31 raw bytes", "expected 32"]),
    "raw_too_long": (lambda: _pool_request(raw=[b"\0" * 64]), INVALID, ["64 raw bytes", "expected 32"]),
    "raw_count": (lambda: _pool_request(raw=[b"\0" * 32, b"\0" * 32]), INVALID,
                  ["2 raw_input_contents for 1 inputs", "one raw entry per input"]),
    "contents_and_raw": (lambda: _pool_request(fp32_contents=[1.0] * 8), INVALID,
                         ["both contents ['fp32_contents'] and raw_input_contents", "exactly one"]),
    "contents_wrong_field": (lambda: _pool_request(raw=[], int_contents=[1] * 8), INVALID,
                             ["fills contents ['int_contents']", "expected only 'fp32_contents'"]),
    "contents_wrong_count": (lambda: _pool_request(raw=[], fp32_contents=[1.0] * 7), INVALID,
                             ["7 values in fp32_contents", "expected 8"]),
    "no_data": (lambda: _pool_request(raw=[]), INVALID, ["carries no data", "expected raw_input_contents or contents"]),
    "unknown_output": (lambda: _pool_request(output="probs"), INVALID, ["no output 'probs'", "expected one of ['logits']"]),
    "bad_compression": (lambda: _pool_request(compression="gzip"), INVALID, ["'gzip'", "expected 'zlib' or 'none'"]),
    "bad_zlib": (lambda: _pool_request(compression="zlib"), INVALID, ["not valid zlib data", "expected zlib"]),
    "bad_jpeg": (lambda: _jpeg_request(serialize_bytes_tensor([b"GIF89a not a jpeg"]), 1), INVALID,
                 ["element 0", "not a decodable JPEG", "0x47494638", "expected a JPEG frame"]),
    "bytes_framing_truncated": (lambda: _jpeg_request(struct.pack("<I", 100) + b"\xff\xd8", 1), INVALID,
                                ["bad BYTES framing", "claims 100 bytes but only 2 remain", "4-byte little-endian length"]),
    "bytes_count": (lambda: _jpeg_request(serialize_bytes_tensor([b"a", b"b"]), 1), INVALID,
                    ["holds 2 BYTES elements", "expected 1"]),
    "unknown_model": (lambda: pb.ModelInferRequest(model_name="tiny_net.layer9"), grpc.StatusCode.NOT_FOUND,
                      ["'tiny_net.layer9'", "available models", POOL]),
    "unknown_version": (lambda: pb.ModelInferRequest(model_name=POOL, model_version="7"), grpc.StatusCode.NOT_FOUND,
                        ["no version '7'", "available versions"]),
}


def _good_request_still_works(stub: inference_pb2_grpc.GRPCInferenceServiceStub) -> None:
    response = stub.ModelInfer(_pool_request(), timeout=10)
    logits = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(1, 5)
    np.testing.assert_allclose(logits, np.ones((1, 8), np.float32) @ FC_W.T + FC_B, rtol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_request_is_refused_with_a_precise_message(
    stub: inference_pb2_grpc.GRPCInferenceServiceStub, case: str
) -> None:
    make, status, fragments = CASES[case]
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(make(), timeout=10)
    assert info.value.code() == status, info.value.details()
    for fragment in fragments:
        assert fragment in info.value.details(), (fragment, info.value.details())
    _good_request_still_works(stub)


def test_malformed_requests_are_counted_as_failures(server: RunningServer, stub) -> None:  # type: ignore[no-untyped-def]
    (before,) = server.dataplane.statistics(POOL)
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(_pool_request(shape=[1, 9]), timeout=10)
    (after,) = server.dataplane.statistics(POOL)
    assert after.fail.count == before.fail.count + 1


# ---------------------------------------------------------------------- deadlines and queue bounds


def _pool_input(x: np.ndarray) -> grpcclient.InferInput:
    inp = grpcclient.InferInput("pooled", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def _wait_for_empty_queue(running: RunningServer, timeout_s: float = 5.0) -> None:
    scheduler = running.dataplane.scheduler(running.registry.get(POOL))
    end = time.monotonic() + timeout_s
    while scheduler.queue_depth and time.monotonic() < end:
        time.sleep(0.01)


def test_deadline_exceeded_server_side(slow_server: RunningServer) -> None:
    """Triton's `timeout` request parameter (microseconds) shorter than the 0.5 s batching window."""
    _wait_for_empty_queue(slow_server)
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{slow_server.port}")
    try:
        start = time.monotonic()
        with pytest.raises(InferenceServerException) as info:
            client.infer(POOL, [_pool_input(np.ones((1, 8), np.float32))], timeout=100_000)
        assert time.monotonic() - start < 0.45, "the server must answer at the deadline, not after the window"
        assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        assert "deadline" in info.value.message() and "expected a longer deadline" in info.value.message()
        _wait_for_empty_queue(slow_server)
        assert client.infer(POOL, [_pool_input(np.ones((1, 8), np.float32))]).as_numpy("logits").shape == (1, 5)
    finally:
        client.close()


def test_deadline_exceeded_client_deadline(slow_server: RunningServer) -> None:
    """A gRPC deadline (context.time_remaining) shorter than the window."""
    _wait_for_empty_queue(slow_server)
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{slow_server.port}")
    try:
        with pytest.raises(InferenceServerException) as info:
            client.infer(POOL, [_pool_input(np.ones((1, 8), np.float32))], client_timeout=0.1)
        assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        (stats,) = slow_server.dataplane.statistics(POOL)
        time.sleep(0.1)
        (stats,) = slow_server.dataplane.statistics(POOL)
        assert stats.fail.count >= 1, "the server saw the deadline too"
    finally:
        client.close()


def test_queue_full_is_resource_exhausted(slow_server: RunningServer) -> None:
    """max_queue_size=2 and a 0.5 s window: the third waiting request is refused at once."""
    _wait_for_empty_queue(slow_server)
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{slow_server.port}")
    scheduler = slow_server.dataplane.scheduler(slow_server.registry.get(POOL))
    done: list = []
    try:
        for i in range(2):
            client.async_infer(POOL, [_pool_input(np.full((1, 8), i, np.float32))],
                               callback=lambda result, error: done.append((result, error)))
        end = time.monotonic() + 5
        while scheduler.queue_depth < 2 and time.monotonic() < end:
            time.sleep(0.005)
        assert scheduler.queue_depth == 2
        with pytest.raises(InferenceServerException) as info:
            client.infer(POOL, [_pool_input(np.ones((1, 8), np.float32))])
        assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert "2 requests waiting" in info.value.message() and "max_queue_size=2" in info.value.message()
        end = time.monotonic() + 5
        while len(done) < 2 and time.monotonic() < end:
            time.sleep(0.01)
        assert [error for _, error in done] == [None, None], "queued requests still complete"
        # and the server keeps serving
        assert client.infer(POOL, [_pool_input(np.ones((1, 8), np.float32))]).as_numpy("logits").shape == (1, 5)
    finally:
        client.close()
