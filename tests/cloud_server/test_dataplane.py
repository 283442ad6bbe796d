"""The transport-agnostic data plane: real sessions and schedulers, domain requests, no gRPC."""

from __future__ import annotations

import threading
import zlib
from typing import Iterator

import numpy as np
import pytest

from cloud_server.dataplane import DataPlane
from cloud_server.domain import InferInput, InferRequest
from cloud_server.errors import InvalidInput
from cloud_server.registry import load_registry
from cloud_server.sessions import SessionPool
from protos import bundle as bundle_io
from protos.preprocess import decode_jpeg, preprocess_bgr
from protos.datatypes import serialize_bytes_tensor

from .conftest import FC_B, FC_W, MODEL_NAME, make_settings, reference_logits


class RecordingObserver:
    """A real Observer implementation that keeps what it was told."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, bool, float]] = []
        self.batches: list[tuple[str, int]] = []
        self.depths: list[tuple[str, int]] = []

    def on_request(self, model: str, ok: bool, latency_s: float) -> None:
        with self.lock:
            self.requests.append((model, ok, latency_s))

    def on_batch(self, model: str, size: int) -> None:
        with self.lock:
            self.batches.append((model, size))

    def on_queue_depth(self, model: str, depth: int) -> None:
        with self.lock:
            self.depths.append((model, depth))


@pytest.fixture
def plane(tiny_bundle: bundle_io.Bundle) -> Iterator[tuple[DataPlane, RecordingObserver]]:
    settings = make_settings(tiny_bundle, max_queue_delay_us=1000)
    observer = RecordingObserver()
    dp = DataPlane(settings, load_registry(settings.bundles), SessionPool(memory_budget_mb=64), observer=observer)
    yield dp, observer
    dp.close()


def _pool_request(x: np.ndarray, **params: object) -> InferRequest:
    raw = x.astype("<f4").tobytes()
    if params.get("compression") == "zlib":
        raw = zlib.compress(raw)
    return InferRequest(
        model_name=f"{MODEL_NAME}.pool",
        id="req-1",
        inputs=(InferInput("pooled", "FP32", x.shape, parameters=params),),
        raw_input_contents=(raw,),
    )


def _logits(response) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = response.outputs[0]
    return np.frombuffer(out.raw, "<f4").reshape(out.shape)


def test_raw_request_runs_and_reports_advisory_times(plane) -> None:  # type: ignore[no-untyped-def]
    dp, observer = plane
    x = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    response = dp.infer(_pool_request(x))
    assert response.id == "req-1" and response.model_name == f"{MODEL_NAME}.pool"
    np.testing.assert_allclose(_logits(response), x @ FC_W.T + FC_B, rtol=1e-5, atol=1e-6)
    assert set(response.parameters) == {"server_queue_us", "server_compute_us"}
    assert response.parameters["server_queue_us"] >= 0 and response.parameters["server_compute_us"] > 0
    assert observer.requests[-1][:2] == (f"{MODEL_NAME}.pool", True)
    assert observer.batches == [(f"{MODEL_NAME}.pool", 3)]
    assert (f"{MODEL_NAME}.pool", 1) in observer.depths


def test_zlib_compressed_raw_input(plane) -> None:  # type: ignore[no-untyped-def]
    dp, _ = plane
    x = np.arange(16, dtype=np.float32).reshape(2, 8)
    np.testing.assert_allclose(_logits(dp.infer(_pool_request(x, compression="zlib"))), x @ FC_W.T + FC_B, rtol=1e-5)
    bad = InferRequest(
        model_name=f"{MODEL_NAME}.pool",
        inputs=(InferInput("pooled", "FP32", (2, 8), parameters={"compression": "zlib"}),),
        raw_input_contents=(x.tobytes(),),
    )
    with pytest.raises(InvalidInput, match="not valid zlib data"):
        dp.infer(bad)
    bomb = InferRequest(
        model_name=f"{MODEL_NAME}.pool",
        inputs=(InferInput("pooled", "FP32", (1, 8), parameters={"compression": "zlib"}),),
        raw_input_contents=(zlib.compress(b"\0" * 10_000_000),),
    )
    with pytest.raises(InvalidInput, match="inflates beyond 32 bytes"):
        dp.infer(bomb)
    with pytest.raises(InvalidInput, match="compression 'lz4'; expected 'zlib' or 'none'"):
        dp.infer(_pool_request(x, compression="lz4"))


def test_contents_request(plane) -> None:  # type: ignore[no-untyped-def]
    dp, _ = plane
    x = np.linspace(-1, 1, 8, dtype=np.float32)[None, :]
    request = InferRequest(
        model_name=f"{MODEL_NAME}.pool",
        inputs=(InferInput("pooled", "FP32", (1, 8), contents={"fp32_contents": x.ravel().tolist()}),),
    )
    np.testing.assert_allclose(_logits(dp.infer(request)), x @ FC_W.T + FC_B, rtol=1e-5)


def test_input_cut_decodes_and_preprocesses_jpegs_as_the_manifest_says(
    plane, tiny_bundle: bundle_io.Bundle, jpeg_frames: list[bytes]  # type: ignore[no-untyped-def]
) -> None:
    dp, _ = plane
    request = InferRequest(
        model_name=f"{MODEL_NAME}.input",
        inputs=(InferInput("jpeg", "BYTES", (len(jpeg_frames),)),),
        raw_input_contents=(serialize_bytes_tensor(jpeg_frames),),
    )
    got = _logits(dp.infer(request))
    spec = tiny_bundle.manifest.input
    images = np.concatenate([preprocess_bgr(decode_jpeg(f), spec) for f in jpeg_frames])
    np.testing.assert_allclose(got, reference_logits(images), rtol=1e-4, atol=1e-5)


def test_statistics_use_tritons_fields(plane) -> None:  # type: ignore[no-untyped-def]
    dp, observer = plane
    x = np.ones((2, 8), np.float32)
    dp.infer(_pool_request(x))
    dp.infer(_pool_request(x))
    with pytest.raises(InvalidInput):
        dp.infer(_pool_request(np.ones((2, 7), np.float32)))
    (stats,) = dp.statistics(f"{MODEL_NAME}.pool")
    assert stats.inference_count == 4 and stats.execution_count == 2
    assert stats.success.count == 2 and stats.fail.count == 1
    assert stats.queue.count == 2 and stats.compute_infer.count == 2 and stats.compute_infer.ns > 0
    assert stats.batch_stats[2].compute_infer.count == 2
    assert stats.last_inference_ms > 1_600_000_000_000
    assert [ok for _, ok, _ in observer.requests] == [True, True, False]
    all_stats = dp.statistics()
    assert {s.name for s in all_stats} == set(dp.registry.names())


class BrokenObserver(RecordingObserver):
    def on_batch(self, model: str, size: int) -> None:
        raise RuntimeError("metrics backend down")


def test_a_failing_observer_never_breaks_requests(tiny_bundle: bundle_io.Bundle) -> None:
    settings = make_settings(tiny_bundle, max_queue_delay_us=0)
    observer = BrokenObserver()
    dp = DataPlane(settings, load_registry(settings.bundles), SessionPool(memory_budget_mb=64), observer=observer)
    try:
        x = np.ones((1, 8), np.float32)
        np.testing.assert_allclose(_logits(dp.infer(_pool_request(x), timeout_s=5)), x @ FC_W.T + FC_B, rtol=1e-5)
        assert observer.requests and observer.requests[-1][1] is True
    finally:
        dp.close()


def test_jpeg_size_is_read_from_the_header(jpeg_frames: list[bytes]) -> None:
    import cv2

    from cloud_server.validation import jpeg_size_px

    for frame in jpeg_frames:
        img = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR)
        assert jpeg_size_px(frame) == (img.shape[1], img.shape[0])
    assert jpeg_size_px(b"GIF89a") is None
    assert jpeg_size_px(b"\xff\xd8\xff") is None


def test_a_jpeg_claiming_a_huge_frame_is_refused_before_decoding(plane, jpeg_frames: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    from cloud_server.validation import jpeg_size_px

    dp, _ = plane
    frame = bytearray(jpeg_frames[0])
    width, height = jpeg_size_px(bytes(frame))  # type: ignore[misc]
    # patch the start-of-frame header to claim 60000 x 60000 pixels
    sof = bytes(frame).find(height.to_bytes(2, "big") + width.to_bytes(2, "big"))
    frame[sof : sof + 4] = (60000).to_bytes(2, "big") * 2
    request = InferRequest(
        model_name=f"{MODEL_NAME}.input",
        inputs=(InferInput("jpeg", "BYTES", (1,)),),
        raw_input_contents=(serialize_bytes_tensor([bytes(frame)]),),
    )
    with pytest.raises(InvalidInput, match="60000x60000 px JPEG; expected at most 67108864 pixels"):
        dp.infer(request)


def test_warm_up_loads_sessions_within_the_budget(tiny_bundle: bundle_io.Bundle) -> None:
    settings = make_settings(tiny_bundle)
    sessions = SessionPool(memory_budget_mb=64)
    dp = DataPlane(settings, load_registry(settings.bundles), sessions)
    try:
        warmed = dp.warm_up()
        assert {m.name for m in warmed} == set(dp.registry.names())
        assert len(sessions.loaded()) == len(warmed)
    finally:
        dp.close()
    tight = SessionPool(memory_budget_mb=1)
    tight.memory_budget_bytes = 1  # nothing fits: everything stays on demand
    dp = DataPlane(settings, load_registry(settings.bundles), tight)
    try:
        assert dp.warm_up() == [] and tight.loaded() == []
    finally:
        dp.close()
