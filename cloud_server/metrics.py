"""Prometheus metrics of the cloud server and the ``/metrics`` HTTP endpoint.

:class:`PrometheusObserver` implements the data plane's observer hooks
(:class:`cloud_server.observe.Observer`) on its **own** :class:`prometheus_client.CollectorRegistry`, so
two servers in one process (tests, benchmarks) never share counters, and nothing is registered at
import time. Metric families (label ``model`` = the served model name, e.g. ``mobilenet_v2.features_6``):

=====================================  =========  ===================================================
``splitinfer_requests_total``          counter    inference requests that reached a known model
``splitinfer_request_failures_total``  counter    those that failed (validation, queue full, deadline,
                                                  runtime)
``splitinfer_request_latency_seconds`` histogram  receipt to answer, successes and failures
``splitinfer_batch_size``              histogram  rows per model execution (dynamic batching)
``splitinfer_queue_depth``             gauge      requests waiting (not running) in the model's queue
``splitinfer_inflight_requests``       gauge      RPCs being handled right now (no label; from
                                                  :class:`InflightInterceptor`)
=====================================  =========  ===================================================

:class:`InflightInterceptor` counts RPCs between arrival and the last response message; the CLI
uses it to drain on SIGTERM. :func:`start_metrics_server` serves the registry as text on
``http://host:port/metrics`` from a daemon thread.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import start_http_server

from cloud_server.aio_handlers import refusing_handler, wrap_handler

__all__ = [
    "LATENCY_BUCKETS_S",
    "BATCH_SIZE_BUCKETS",
    "PrometheusObserver",
    "InflightInterceptor",
    "MetricsServer",
    "start_metrics_server",
]

logger = logging.getLogger(__name__)

#: 0.5 ms .. 10 s: split-inference tails run in milliseconds, a cold session load takes seconds.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class PrometheusObserver:
    """The data plane's observer, recording into ``registry`` (a new one when not given).

    Thread-safe (prometheus_client metrics are) and cheap: no I/O on the request path.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "splitinfer_requests", "Inference requests that reached a known model.", ["model"],
            registry=self.registry,
        )
        self.failures = Counter(
            "splitinfer_request_failures", "Inference requests that failed (any reason).", ["model"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "splitinfer_request_latency_seconds", "Time from receipt to answer of an inference request.",
            ["model"], buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.batch_size = Histogram(
            "splitinfer_batch_size", "Rows per model execution after dynamic batching.",
            ["model"], buckets=BATCH_SIZE_BUCKETS, registry=self.registry,
        )
        self.queue_depth = Gauge(
            "splitinfer_queue_depth", "Requests waiting in the model's queue (not yet running).",
            ["model"], registry=self.registry,
        )
        self.inflight = Gauge(
            "splitinfer_inflight_requests", "RPCs being handled right now.", registry=self.registry,
        )

    # -- Observer hooks (see cloud_server.observe.Observer)

    def on_request(self, model: str, ok: bool, latency_s: float) -> None:
        self.requests.labels(model).inc()
        if not ok:
            self.failures.labels(model).inc()
        self.latency.labels(model).observe(max(0.0, float(latency_s)))

    def on_batch(self, model: str, size: int) -> None:
        self.batch_size.labels(model).observe(size)

    def on_queue_depth(self, model: str, depth: int) -> None:
        self.queue_depth.labels(model).set(depth)


# --------------------------------------------------------------------------- in-flight RPCs


_INFERENCE_METHODS = ("/inference.GRPCInferenceService/ModelInfer", "/inference.GRPCInferenceService/ModelStreamInfer")


class InflightInterceptor(grpc.aio.ServerInterceptor):
    """Counts RPCs from the moment a handler starts until it returns (or its stream ends), and closes
    the door to new inference calls once :meth:`start_draining` was called.

    Methods for which ``track(method)`` is False (by default the health and reflection services) are
    not counted, so a load balancer's probes never delay a drain. ``on_change(count)`` is called with the
    new count after every change (e.g. a Prometheus gauge's ``set``). After :meth:`start_draining`, new
    ``ModelInfer`` / ``ModelStreamInfer`` calls are answered UNAVAILABLE (a client retries elsewhere or
    runs locally) so that the in-flight count can only fall; calls already running are not touched.
    """

    def __init__(
        self,
        *,
        track: Callable[[str], bool] | None = None,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self._track = track if track is not None else _is_application_method
        self._on_change = on_change
        self._count = 0
        self._cond = threading.Condition()
        self._draining = False

    def start_draining(self) -> None:
        """Refuse new inference calls with UNAVAILABLE from now on."""
        self._draining = True

    @property
    def count(self) -> int:
        with self._cond:
            return self._count

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no tracked RPC is running or ``timeout_s`` passed; True when idle."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while self._count > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def _add(self, delta: int) -> None:
        with self._cond:
            self._count += delta
            count = self._count
            if count == 0:
                self._cond.notify_all()
        if self._on_change is not None:
            self._on_change(count)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None or not self._track(method):
            return handler
        if self._draining and method in _INFERENCE_METHODS:
            return refusing_handler(
                handler, grpc.StatusCode.UNAVAILABLE, "server is draining (shutting down); retry on another server"
            )

        async def enter(context: Any) -> None:
            self._add(1)

        return wrap_handler(handler, before=enter, after=lambda: self._add(-1))


def _is_application_method(method: str) -> bool:
    return not (method.startswith("/grpc.health.") or method.startswith("/grpc.reflection."))


# --------------------------------------------------------------------------- HTTP endpoint


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`stop` shuts it down."""

    host: str
    port: int
    _httpd: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` (port 0 = any free port) from a daemon thread.

    Raises OSError (e.g. address in use) with the address in the message.
    """
    try:
        httpd, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
    actual_port = int(httpd.server_address[1])
    return MetricsServer(host=host, port=actual_port, _httpd=httpd, _thread=thread)
