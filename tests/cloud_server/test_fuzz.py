"""A bounded, seeded fuzz of the server: every class of malformed request an operator's fuzzer sent
(garbage bytes to every method, protobuf mutations of a valid request, requests valid as protobuf but
wrong for the model, Triton features we do not serve, oversized names and counts), unary and on one
stream. Each must be answered with a clear status -- never INTERNAL/UNKNOWN, a non-empty message of
bounded size -- without a traceback in the log, and the server must answer a valid request correctly
afterwards. Seeded (random.Random(SEED)) and bounded (CASES per class) so a failure reproduces.
"""

from __future__ import annotations

import logging
import random
import struct
import zlib
from typing import Callable

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloud_server.server import RunningServer
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc
from protos.wire import array_to_raw

from .conftest import FC_B, FC_W, MODEL_NAME

SEED = 20261202
CASES = 60
POOL = f"{MODEL_NAME}.pool"
JPEG_MODEL = f"{MODEL_NAME}.input"
CLEAR = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE,
}
METHODS = ("ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata", "ModelConfig",
           "ModelStatistics", "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload", "ModelInfer")


def _valid(x: np.ndarray | None = None, request_id: str = "ok") -> pb.ModelInferRequest:
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8) if x is None else x
    datatype, raw = array_to_raw(x)
    request = pb.ModelInferRequest(model_name=POOL, id=request_id)
    request.inputs.add(name="pooled", datatype=datatype, shape=list(x.shape))
    request.raw_input_contents.append(raw)
    return request


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        kind = rng.randrange(4)
        pos = rng.randrange(len(out) + 1)
        if kind == 0 and out:
            out[min(pos, len(out) - 1)] = rng.randrange(256)
        elif kind == 1:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == 2:
            del out[pos:pos + rng.randint(1, 8)]
        else:
            out = out[:pos]
    return bytes(out)


def _semantic(rng: random.Random) -> pb.ModelInferRequest:
    """Valid protobuf, wrong for the model (or for this server)."""
    request = _valid(request_id=f"s{rng.randrange(10**6)}")
    inp = request.inputs[0]
    choice = rng.randrange(16)
    if choice == 0:
        inp.datatype = rng.choice(["FP16", "INT64", "BYTES", "NOPE", "", "fp32"])
    elif choice == 1:
        inp.shape[:] = [rng.randint(-3, 3) for _ in range(rng.randint(0, 4))]
    elif choice == 2:
        inp.shape[:] = [1, rng.choice([2**31, 2**62, 10**12])]
    elif choice == 3:
        del request.raw_input_contents[:]
    elif choice == 4:
        request.raw_input_contents.append(b"\x00" * rng.randint(0, 64))
    elif choice == 5:
        inp.contents.fp32_contents.extend([1.0] * 8)
    elif choice == 6:
        inp.name = rng.choice(["", "x" * 10_000, "pooled\x00", "feat"])
    elif choice == 7:
        request.model_name = rng.choice(["", "m" * 10_000, MODEL_NAME, "../etc/passwd", POOL + "\n"])
    elif choice == 8:
        request.model_version = rng.choice(["0", "v" * 5_000, "-1", "latest"])
    elif choice == 9:
        request.parameters[rng.choice(["sequence_id", "sequence_start"])].int64_param = 7
    elif choice == 10:
        inp.parameters["shared_memory_region"].string_param = "region"
    elif choice == 11:
        inp.parameters["compression"].string_param = rng.choice(["zlib", "lz4", "gzip"])
        request.raw_input_contents[0] = rng.choice([b"not deflate", zlib.compress(b"\x00" * 10_000_000)])
    elif choice == 12:
        request.outputs.add(name=rng.choice(["nope", "x" * 4_000]))
    elif choice == 13:
        request.model_name, inp.name, inp.datatype = JPEG_MODEL, "jpeg", "BYTES"
        inp.shape[:] = [1]
        item = rng.choice([b"", b"\xff\xd8", b"\xff\xd8\xff\xc0\x00\x11\x08\xff\xff\xff\xff" + b"\x00" * 20,
                           bytes(rng.randrange(256) for _ in range(64))])
        request.raw_input_contents[0] = struct.pack("<I", len(item)) + item
    elif choice == 14:
        request.model_name, inp.name, inp.datatype = JPEG_MODEL, "jpeg", "BYTES"
        inp.shape[:] = [1]
        request.raw_input_contents[0] = rng.choice([b"\xff\xff\xff\x7f", b"\x01\x00", b""])
    else:
        request.parameters["timeout"].int64_param = rng.choice([1, -5, 2**62])
    return request


def _check(code: grpc.StatusCode, details: str, what: str) -> None:
    assert code in CLEAR, f"{what}: {code.name}: {details[:300]}"
    if code is not grpc.StatusCode.OK:
        assert details and len(details) < 2_000, f"{what}: {code.name} with a {len(details)}-character message"


def _unary(channel: grpc.Channel, method: str, raw: bytes, what: str) -> None:
    call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
    try:
        call(raw, timeout=20)
        _check(grpc.StatusCode.OK, "", what)
    except grpc.RpcError as exc:
        _check(exc.code(), exc.details() or "", what)


def _assert_still_serving(channel: grpc.Channel) -> None:
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)
    reply = inference_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(_valid(x), timeout=20)
    logits = np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(1, 5)
    np.testing.assert_allclose(logits, x @ FC_W.T + FC_B, rtol=1e-4, atol=1e-5)


FUZZ_CLASSES: dict[str, Callable[[random.Random], tuple[str, bytes]]] = {
    "garbage bytes to every method": lambda rng: (
        rng.choice(METHODS), bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))),
    "protobuf mutations of a valid request": lambda rng: (
        "ModelInfer", _mutate_bytes(rng, _valid(request_id=f"m{rng.randrange(10**6)}").SerializeToString())),
    "valid protobuf, wrong for the model": lambda rng: ("ModelInfer", _semantic(rng).SerializeToString()),
    "repository and metadata requests with odd names": lambda rng: (
        rng.choice(["ModelReady", "ModelMetadata", "ModelConfig", "ModelStatistics", "RepositoryModelLoad"]),
        pb.ModelMetadataRequest(name=rng.choice(["", "n" * 20_000, "../x", "\x00"]),
                                version=rng.choice(["", "1", "v" * 3_000])).SerializeToString()),
}


@pytest.mark.parametrize("kind", list(FUZZ_CLASSES))
def test_fuzz_unary(server: RunningServer, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rng = random.Random(f"{SEED}:{kind}")
    with grpc.insecure_channel(server.address) as channel:
        for i in range(CASES):
            method, raw = FUZZ_CLASSES[kind](rng)
            _unary(channel, method, raw, f"{kind} #{i} ({method}, {len(raw)} bytes)")
        _assert_still_serving(channel)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged for a malformed request"


def test_fuzz_one_stream_answers_each_and_goes_on(server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    """Malformed messages on one stream: each gets an answer (an error naming the status, with the
    request's id when it parses) and the stream still serves a valid request at the end."""
    caplog.set_level(logging.DEBUG)
    rng = random.Random(f"{SEED}:stream")
    messages = [_semantic(rng).SerializeToString() for _ in range(CASES)]
    messages += [_mutate_bytes(rng, _valid(request_id=f"m{i}").SerializeToString()) for i in range(CASES)]
    messages.append(_valid(request_id="final").SerializeToString())
    with grpc.insecure_channel(server.address) as channel:
        call = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        replies = [pb.ModelStreamInferResponse.FromString(r) for r in call(iter(messages), timeout=60)]
        _assert_still_serving(channel)
    assert len(replies) == len(messages)
    final = [r for r in replies if r.infer_response.id == "final"]
    assert len(final) == 1 and not final[0].error_message
    for reply in replies:
        if reply.error_message:
            status = reply.infer_response.parameters["splitinfer_status"].string_param
            assert status in {c.name for c in CLEAR}, reply.error_message[:300]
            assert len(reply.error_message) < 2_000
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged for a malformed request"


def test_fuzz_health_and_unknown_methods(server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rng = random.Random(f"{SEED}:health")
    with grpc.insecure_channel(server.address) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        for i in range(CASES // 4):
            try:
                check(bytes(rng.randrange(256) for _ in range(rng.randint(1, 50))), timeout=10)
            except grpc.RpcError as exc:
                _check(exc.code(), exc.details() or "", f"health garbage #{i}")
        for name in ("SystemSharedMemoryStatus", "CudaSharedMemoryRegister", "TraceSetting", "LogSettings", "x" * 500):
            _unary(channel, name, b"", f"unknown method {name[:40]}")
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        _assert_still_serving(channel)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged for a malformed request"
