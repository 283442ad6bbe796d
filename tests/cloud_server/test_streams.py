"""Hundreds of cameras on one server: open streams pin no thread, overload is refused at once with
RESOURCE_EXHAUSTED saying what is full, and a port another server listens on fails at start."""

from __future__ import annotations

import asyncio
import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloud_server.errors import ServerStartError
from cloud_server.server import create_server
from protos import bundle as bundle_io
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc
from protos.wire import array_to_raw

from .conftest import FC_B, FC_W, MODEL_NAME, make_settings

POOL = f"{MODEL_NAME}.pool"


def _request(x: np.ndarray, request_id: str = "") -> pb.ModelInferRequest:
    datatype, raw = array_to_raw(x)
    request = pb.ModelInferRequest(model_name=POOL, id=request_id)
    request.inputs.add(name="pooled", datatype=datatype, shape=list(x.shape))
    request.raw_input_contents.append(raw)
    return request


def _logits(response: pb.ModelInferResponse) -> np.ndarray:
    return np.frombuffer(response.raw_output_contents[0], np.float32).reshape(tuple(response.outputs[0].shape))


async def _hold_streams(address: str, channels: int, per_channel: int, check: Future[None]) -> list[str]:
    """Open channels * per_channel streams, prove each answers, keep them all open while `check` runs,
    then prove each still answers. Returns the error messages seen (expected none)."""
    chans = [grpc.aio.insecure_channel(address) for _ in range(channels)]
    errors: list[str] = []
    try:
        calls = [inference_pb2_grpc.GRPCInferenceServiceStub(c).ModelStreamInfer() for c in chans
                 for _ in range(per_channel)]

        async def round_trip(i: int, call: grpc.aio.StreamStreamCall, tag: str) -> None:
            x = np.full((1, 8), i % 7, np.float32)
            await call.write(_request(x, f"{tag}{i}"))
            reply = await call.read()
            if reply.error_message or reply.infer_response.id != f"{tag}{i}":
                errors.append(reply.error_message or f"id {reply.infer_response.id!r}")
            elif not np.allclose(_logits(reply.infer_response), x @ FC_W.T + FC_B, rtol=1e-4, atol=1e-5):
                errors.append(f"wrong logits on stream {i}")

        async def in_waves(tag: str) -> None:  # 64 at a time: under the default max_inflight=128
            for start in range(0, len(calls), 64):
                await asyncio.gather(*(round_trip(i, calls[i], tag) for i in range(start, min(start + 64, len(calls)))))

        await in_waves("a")
        await asyncio.get_running_loop().run_in_executor(None, check.result)  # streams stay open, idle
        await in_waves("b")
        for call in calls:
            await call.done_writing()
    finally:
        for c in chans:
            await c.close()
    return errors


def test_256_open_streams_pin_no_thread_and_liveness_answers(tiny_bundle: bundle_io.Bundle) -> None:
    running = create_server(make_settings(tiny_bundle, grpc_workers=4))
    threads_before = threading.active_count()
    probed: Future[None] = Future()
    seen: dict[str, object] = {}

    def probe() -> None:
        """Runs once all 256 streams answered their first request and sit open and idle."""
        with grpc.insecure_channel(running.address) as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            seen["live"] = stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live
            health = health_pb2_grpc.HealthStub(channel)
            seen["health"] = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
            seen["infer"] = _logits(stub.ModelInfer(_request(np.ones((1, 8), np.float32)), timeout=5))
            seen["threads"] = threading.active_count()

    try:
        with ThreadPoolExecutor(1) as pool:
            holder = pool.submit(
                lambda: asyncio.run(_hold_streams(running.address, channels=32, per_channel=8, check=probed))
            )
            while not holder.done() and running.dataplane.statistics(POOL)[0].success.count < 256:
                threading.Event().wait(0.05)
            try:
                probe()
                probed.set_result(None)
            except BaseException as exc:
                probed.set_exception(exc)
                raise
            errors = holder.result(timeout=120)
    finally:
        running.stop(0.5)
    assert errors == []
    assert seen["live"] is True
    assert seen["health"] == health_pb2.HealthCheckResponse.SERVING
    np.testing.assert_allclose(seen["infer"], np.ones((1, 8), np.float32) @ FC_W.T + FC_B, rtol=1e-4)  # type: ignore[arg-type]
    # 256 open streams cost no server threads: growth is bounded by the pool (4) and gRPC's own few
    assert int(seen["threads"]) - threads_before < 16, (threads_before, seen["threads"])  # type: ignore[call-overload]


def test_overload_answers_resource_exhausted_naming_what_is_full(tiny_bundle: bundle_io.Bundle) -> None:
    """max_inflight=2 and a 400 ms window: two requests are held, the rest are refused at once."""
    running = create_server(
        make_settings(tiny_bundle, max_inflight=2, max_queue_delay_us=400_000, max_batch_size=8),
        eager_batching=False,
    )
    barrier = threading.Barrier(8)

    def call(i: int) -> tuple[str, str]:
        with grpc.insecure_channel(running.address) as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            stub.ServerLive(pb.ServerLiveRequest(), timeout=5)  # connected before the race
            barrier.wait(timeout=10)
            try:
                stub.ModelInfer(_request(np.ones((1, 8), np.float32)), timeout=10)
                return "OK", ""
            except grpc.RpcError as exc:
                return exc.code().name, exc.details()

    try:
        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(call, range(8)))
    finally:
        running.stop(0.5)
    codes = [code for code, _ in outcomes]
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, outcomes
    assert 1 <= codes.count("OK") <= 2 + 1, outcomes  # a third may slip in once the first batch ran
    assert codes.count("RESOURCE_EXHAUSTED") >= 5, outcomes
    refusal = next(details for code, details in outcomes if code == "RESOURCE_EXHAUSTED")
    assert "server is full" in refusal and "max_inflight=2" in refusal
    assert running.admission.refused >= 5 and running.admission.held == 0


def test_port_already_in_use_fails_at_start_naming_the_address(tiny_bundle: bundle_io.Bundle) -> None:
    first = create_server(make_settings(tiny_bundle))
    try:
        with pytest.raises(ServerStartError) as info:
            create_server(make_settings(tiny_bundle, port=first.port))
        assert f"127.0.0.1:{first.port}" in str(info.value)
    finally:
        first.stop(0.5)
    with socket.socket() as other:  # any listener, not only gRPC
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(ServerStartError, match=f"127.0.0.1:{port}"):
            create_server(make_settings(tiny_bundle, port=port))
