"""Many clients at once: merged batches give the same answers as one-by-one runs; 32 clients all finish."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from cloud_server.server import RunningServer, create_server
from protos import bundle as bundle_io

from .conftest import FC_B, FC_W, MODEL_NAME, make_settings, reference_logits

POOL = f"{MODEL_NAME}.pool"
FEAT = f"{MODEL_NAME}.feat"


@pytest.fixture(scope="module")
def batching_server(tiny_bundle: bundle_io.Bundle) -> Iterator[RunningServer]:
    """A 300 ms window so that concurrent requests are certainly merged."""
    running = create_server(
        make_settings(tiny_bundle, max_queue_delay_us=300_000, max_batch_size=8), eager_batching=False
    )
    yield running
    running.stop(1.0)


def _input(name: str, x: np.ndarray) -> grpcclient.InferInput:
    inp = grpcclient.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def test_batched_results_equal_unbatched(batching_server: RunningServer, tiny_bundle: bundle_io.Bundle) -> None:
    rng = np.random.default_rng(3)
    # feat tensors of one spatial size (mergeable), with 1 or 2 rows each: 8 requests, 12 rows
    requests = [rng.random((1 + i % 2, 8, 6, 6), dtype=np.float32) for i in range(8)]
    tail = ort.InferenceSession(
        str(tiny_bundle.path(tiny_bundle.cut("feat").tail)), providers=["CPUExecutionProvider"]
    )
    one_by_one = [tail.run(["logits"], {"feat": x})[0] for x in requests]
    barrier = threading.Barrier(len(requests))

    def call(x: np.ndarray) -> np.ndarray:
        client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{batching_server.port}")
        try:
            barrier.wait(timeout=10)
            return client.infer(FEAT, [_input("feat", x)]).as_numpy("logits")
        finally:
            client.close()

    with ThreadPoolExecutor(len(requests)) as pool:
        merged = list(pool.map(call, requests))
    for got, want in zip(merged, one_by_one):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    (stats,) = batching_server.dataplane.statistics(FEAT)
    assert stats.inference_count == 12
    assert max(stats.batch_stats) > 2, f"requests were not merged: batch sizes {sorted(stats.batch_stats)}"
    assert stats.execution_count < len(requests)


def test_32_concurrent_clients_complete_without_error(server: RunningServer, jpeg_frames: list[bytes]) -> None:
    from protos.preprocess import decode_jpeg, preprocess_bgr

    spec = server.registry.get(f"{MODEL_NAME}.input").input_spec
    assert spec is not None
    jpeg_expected = reference_logits(preprocess_bgr(decode_jpeg(jpeg_frames[0]), spec))
    errors: list[BaseException] = []
    calls_per_client = 6
    success_before = sum(s.success.count for s in server.dataplane.statistics())

    def client_loop(index: int) -> int:
        client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
        rng = np.random.default_rng(index)
        done = 0
        try:
            for call in range(calls_per_client):
                kind = (index + call) % 3
                if kind == 0:
                    x = rng.normal(size=(1 + call % 3, 8)).astype(np.float32)
                    got = client.infer(POOL, [_input("pooled", x)]).as_numpy("logits")
                    np.testing.assert_allclose(got, x @ FC_W.T + FC_B, rtol=1e-4, atol=1e-5)
                elif kind == 1:
                    x = rng.random((1, 8, 16, 16), dtype=np.float32)
                    got = client.infer(FEAT, [_input("feat", x)]).as_numpy("logits")
                    np.testing.assert_allclose(got, x.mean(axis=(2, 3)) @ FC_W.T + FC_B, rtol=1e-4, atol=1e-5)
                else:
                    inp = grpcclient.InferInput("jpeg", [1], "BYTES")
                    inp.set_data_from_numpy(np.array([jpeg_frames[0]], dtype=np.object_))
                    got = client.infer(f"{MODEL_NAME}.input", [inp]).as_numpy("logits")
                    np.testing.assert_allclose(got, jpeg_expected, rtol=1e-4, atol=1e-5)
                done += 1
        except BaseException as exc:  # collected and reported below
            errors.append(exc)
        finally:
            client.close()
        return done

    with ThreadPoolExecutor(32) as pool:
        completed = list(pool.map(client_loop, range(32)))
    assert not errors, errors[:3]
    assert completed == [calls_per_client] * 32
    success_after = sum(s.success.count for s in server.dataplane.statistics())
    assert success_after - success_before == 32 * calls_per_client


def test_requests_on_one_stream_are_batched_together(batching_server: RunningServer) -> None:
    """A stream does not serialize its requests: 6 sent back to back share one execution."""
    import queue

    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{batching_server.port}")
    (before,) = batching_server.dataplane.statistics(POOL)
    xs = [np.full((1, 8), i, np.float32) for i in range(6)]
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for i, x in enumerate(xs):
            client.async_stream_infer(POOL, [_input("pooled", x)], request_id=str(i))
        got = [results.get(timeout=10) for _ in xs]
    finally:
        client.stop_stream()
        client.close()
    assert [e for _, e in got] == [None] * len(xs)
    by_id = {r.get_response().id: r.as_numpy("logits") for r, _ in got}
    for i, x in enumerate(xs):
        np.testing.assert_allclose(by_id[str(i)], x @ FC_W.T + FC_B, rtol=1e-5)
    (after,) = batching_server.dataplane.statistics(POOL)
    assert after.execution_count - before.execution_count < len(xs), "stream requests ran one at a time"
