"""Prometheus metrics: scrape /metrics over HTTP after real requests to a real server."""
from __future__ import annotations

import threading
import time
import urllib.request
from typing import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from cloud_server.metrics import InflightInterceptor, MetricsServer, PrometheusObserver, start_metrics_server
from cloud_server.server import RunningServer, create_server
from cloud_server.settings import ServerSettings

MODEL = "tiny_net.pool"


@pytest.fixture(scope="module")
def observed(tiny_bundle) -> Iterator[tuple[RunningServer, MetricsServer, PrometheusObserver]]:  # type: ignore[no-untyped-def]
    observer = PrometheusObserver()
    endpoint = start_metrics_server(observer.registry, "127.0.0.1", 0)
    inflight = InflightInterceptor(on_change=observer.inflight.set)
    settings = ServerSettings(port=0, bundles=(tiny_bundle.root,), metrics_port=0, discovery=False,
                              max_batch_size=8, max_queue_delay_us=20_000, grpc_workers=16)
    running = create_server(settings, interceptors=[inflight], observer=observer)
    yield running, endpoint, observer
    running.stop(0.5)
    endpoint.stop()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _infer(client: grpcclient.InferenceServerClient, rows: int = 1) -> None:
    inp = grpcclient.InferInput("pooled", [rows, 8], "FP32")
    inp.set_data_from_numpy(np.ones((rows, 8), np.float32))
    client.infer(MODEL, [inp])


def test_metrics_after_real_requests(observed) -> None:  # type: ignore[no-untyped-def]
    running, endpoint, _ = observed
    label = (("model", MODEL),)
    before = scrape(endpoint.url)
    base_requests = before.get(("splitinfer_requests_total", label), 0.0)
    base_failures = before.get(("splitinfer_request_failures_total", label), 0.0)

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{running.port}")
    try:
        # 8 concurrent successes (batched together within the 20 ms window) ...
        errors: list[BaseException] = []

        def one() -> None:
            try:
                _infer(client)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        # ... and one failure: a tensor of the wrong shape
        bad = grpcclient.InferInput("pooled", [1, 7], "FP32")
        bad.set_data_from_numpy(np.ones((1, 7), np.float32))
        with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT"):
            client.infer(MODEL, [bad])
    finally:
        client.close()

    after = scrape(endpoint.url)
    assert after[("splitinfer_requests_total", label)] - base_requests == 9
    assert after[("splitinfer_request_failures_total", label)] - base_failures == 1
    assert after[("splitinfer_request_latency_seconds_count", label)] >= 9
    assert after[("splitinfer_request_latency_seconds_sum", label)] > 0
    assert after[("splitinfer_request_latency_seconds_bucket", (("le", "+Inf"), ("model", MODEL)))] >= 9
    # every successful row went through some batch; at least one batch merged several requests
    batches = after[("splitinfer_batch_size_count", label)]
    rows = after[("splitinfer_batch_size_sum", label)]
    assert rows >= 8 and 1 <= batches <= rows
    assert after[("splitinfer_queue_depth", label)] == 0
    # grpc.aio sends an aborted call's status before the handler coroutine has unwound, so the last
    # decrement may land just after the client saw its error: the gauge returns to 0 within moments
    deadline = time.monotonic() + 5
    while after[("splitinfer_inflight_requests", ())] != 0 and time.monotonic() < deadline:
        time.sleep(0.02)
        after = scrape(endpoint.url)
    assert after[("splitinfer_inflight_requests", ())] == 0


def test_observers_have_separate_registries() -> None:
    a, b = PrometheusObserver(), PrometheusObserver()
    a.on_request("m", True, 0.01)
    assert a.registry.get_sample_value("splitinfer_requests_total", {"model": "m"}) == 1
    assert b.registry.get_sample_value("splitinfer_requests_total", {"model": "m"}) is None


def test_observer_hooks_record_each_family() -> None:
    obs = PrometheusObserver()
    obs.on_request("m", False, 0.003)
    obs.on_batch("m", 4)
    obs.on_queue_depth("m", 3)
    reg = obs.registry
    assert reg.get_sample_value("splitinfer_request_failures_total", {"model": "m"}) == 1
    assert reg.get_sample_value("splitinfer_request_latency_seconds_bucket", {"model": "m", "le": "0.0025"}) == 0
    assert reg.get_sample_value("splitinfer_request_latency_seconds_bucket", {"model": "m", "le": "0.005"}) == 1
    assert reg.get_sample_value("splitinfer_batch_size_sum", {"model": "m"}) == 4
    assert reg.get_sample_value("splitinfer_queue_depth", {"model": "m"}) == 3


def test_metrics_endpoint_port_in_use_is_named() -> None:
    obs = PrometheusObserver()
    first = start_metrics_server(obs.registry, "127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match=f"127.0.0.1:{first.port}"):
            start_metrics_server(obs.registry, "127.0.0.1", first.port)
    finally:
        first.stop()
