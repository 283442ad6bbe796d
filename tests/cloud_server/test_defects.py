"""The smaller defects an operator found with fuzzers, each against a real server on port 0: no secret
in logs or statuses, client errors and undecodable messages logged once per kind per interval,
INVALID_ARGUMENT for bad payloads (undecodable, empty JPEG), echoed names cut short, element counts
checked before any work."""

from __future__ import annotations

import logging
import pathlib
import struct

import grpc
import numpy as np
import pytest

from cloud_server.logs import ThrottledLog
from cloud_server.security import TokenAuthInterceptor
from cloud_server.server import RunningServer, create_server
from cloud_server import convert
from cloud_server.domain import TailModel, TensorSignature
from cloud_server.errors import InvalidInput
from cloud_server.validation import MAX_BYTES_ELEMENTS, decode_request
from protos import bundle as bundle_io
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc

from .conftest import MODEL_NAME, make_settings

POOL = f"{MODEL_NAME}.pool"
JPEG_MODEL = f"{MODEL_NAME}.input"
TOKEN = "s3cret-token-value-0123456789"


def _call(server: RunningServer, request: pb.ModelInferRequest | bytes,
          metadata: tuple[tuple[str, str], ...] = ()) -> grpc.RpcError:
    with grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        raw = request if isinstance(request, bytes) else request.SerializeToString()
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as info:
            call(raw, timeout=20, metadata=metadata)
    return info.value


def _bytes_request(model: str, name: str, items: list[bytes], shape: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype="BYTES", shape=shape)
    request.raw_input_contents.append(b"".join(struct.pack("<I", len(i)) + i for i in items))
    return request


def test_undecodable_request_is_invalid_argument_logged_once(server: RunningServer,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    garbage = [bytes([0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]), b"\xff" * 7, b"\x0a\x05ab"]
    for i in range(30):
        error = _call(server, garbage[i % 3])
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid inference.ModelInferRequest" in error.details()
    lines = [r for r in caplog.records if r.name.startswith(("cloud_server", "grpc")) and r.levelno >= logging.INFO]
    assert len(lines) <= 1, [r.getMessage() for r in lines]
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged for a client's garbage"


def test_client_errors_are_logged_once_per_kind(server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    server.servicer.log = ThrottledLog(logging.getLogger("cloud_server.servicer"), interval_s=3600.0)  # fresh
    caplog.set_level(logging.INFO, logger="cloud_server")
    for i in range(20):
        _call(server, pb.ModelInferRequest(model_name=f"missing_{i}"))
    x = np.ones((1, 7), np.float32)
    bad = pb.ModelInferRequest(model_name=POOL)
    bad.inputs.add(name="pooled", datatype="FP32", shape=[1, 7])
    bad.raw_input_contents.append(x.tobytes())
    for _ in range(20):
        assert _call(server, bad).code() is grpc.StatusCode.INVALID_ARGUMENT
    kinds = [r.getMessage().split(":")[0] for r in caplog.records if r.levelno >= logging.INFO
             and r.name == "cloud_server.servicer"]
    assert sorted(kinds) == ["client error INVALID_ARGUMENT", "client error NOT_FOUND"], kinds


def test_throttled_log_reports_what_it_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = ThrottledLog(logging.getLogger("tests.throttle"), interval_s=10.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="tests.throttle")
    assert log.log(logging.INFO, "a", "bad %s", 1)
    assert not log.log(logging.INFO, "a", "bad %s", 2)
    assert log.log(logging.INFO, "b", "other")  # another kind is not held back
    now[0] = 10.5
    assert log.log(logging.INFO, "a", "bad %s", 3)
    assert [r.getMessage() for r in caplog.records] == [
        "bad 1", "other", "bad 3 (and 1 more like it in the last 10 s, not logged)"]


def test_token_without_bearer_never_reaches_logs_or_status(tiny_bundle: bundle_io.Bundle,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    running = create_server(make_settings(tiny_bundle, auth_token=TOKEN), interceptors=[TokenAuthInterceptor(TOKEN)])
    try:
        for value in (TOKEN, f"Basic {TOKEN}", f"{TOKEN} Bearer"):
            error = _call(running, pb.ModelInferRequest(model_name=POOL), metadata=(("authorization", value),))
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
            assert TOKEN[:6] not in error.details()
    finally:
        running.stop(0.5)
    assert not [r for r in caplog.records if TOKEN[:6] in r.getMessage()]


def test_empty_jpeg_element_is_invalid_argument(server: RunningServer) -> None:
    error = _call(server, _bytes_request(JPEG_MODEL, "jpeg", [b""], [1]))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "element 0 is empty (0 bytes); expected a JPEG frame" in error.details()
    error = _call(server, _bytes_request(JPEG_MODEL, "jpeg", [b"\xff\xd8\xff\xe0" + b"\x00" * 40], [1]))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and "expected a JPEG frame" in error.details()


def test_a_10kb_model_name_is_cut_short_in_the_answer(server: RunningServer) -> None:
    name = "m" * 10_000
    error = _call(server, pb.ModelInferRequest(model_name=name, id="x" * 10_000))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert "(10000 characters)" in error.details() and len(error.details()) < 2_000
    with grpc.insecure_channel(server.address) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelMetadata(pb.ModelMetadataRequest(name=name, version="v" * 10_000), timeout=10)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND and len(info.value.details()) < 2_000


def test_element_counts_are_checked_before_decoding(server: RunningServer) -> None:
    count = 4_000_000
    error = _call(server, _bytes_request(JPEG_MODEL, "jpeg", [b""] * count, [count]))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f"batch size {count}" in error.details() and "max_batch_size=8" in error.details()
    # an unbatched BYTES input of any length is capped from its shape too (the pure validation step)
    model = TailModel(name="text", version="1", model_path=pathlib.Path("unused.onnx"),
                      inputs=(TensorSignature("t", "BYTES", (-1,)),), outputs=(TensorSignature("o", "BYTES", (-1,)),),
                      feed_names=("t",), batched=False)
    request = convert.request_from_proto(_bytes_request("text", "t", [b""] * count, [count]))
    with pytest.raises(InvalidInput) as info:
        decode_request(model, request, limit_bytes=1 << 30)
    assert f"= {count} elements" in str(info.value) and f"at most {MAX_BYTES_ELEMENTS}" in str(info.value)
    # a shape claiming more elements than the bytes can frame is refused from the lengths alone
    short = convert.request_from_proto(_bytes_request("text", "t", [b"x"], [60_000]))
    with pytest.raises(InvalidInput, match="at least 4 bytes"):
        decode_request(model, short, limit_bytes=1 << 30)
