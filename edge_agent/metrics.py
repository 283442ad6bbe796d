"""Prometheus metrics of the edge agent as one typed object.

:class:`EdgeMetrics` is what the daemon and :class:`~edge_agent.feedback.Feedback` call;
without ``metrics.port`` it is a no-op (:meth:`EdgeMetrics.disabled`), so callers never
check whether metrics are on. :func:`serve_metrics` registers the series and starts the
``/metrics`` HTTP server (``prometheus_client`` is imported only then).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from edge_agent.types import Telemetry

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)


@dataclass
class EdgeMetrics:
    """The series; every field None when metrics are off."""

    captured: Any = None
    dropped: Any = None
    gated: Any = None
    results: Any = None
    offload_failures: Any = None
    cut: Any = None
    cut_order: Any = None
    uplink_kbps: Any = None
    rtt_ms: Any = None
    battery_pct: Any = None
    circuit_open: Any = None
    latency_s: Any = None
    gate_rate: Any = None
    gate_enabled: Any = None
    exit_rate: Any = None
    exit_threshold: Any = None
    exit_checks: Any = None
    server: Any = None  # the HTTP server
    port: Optional[int] = None

    @classmethod
    def disabled(cls) -> "EdgeMetrics":
        return cls()

    @property
    def enabled(self) -> bool:
        return self.captured is not None

    def frame_captured(self) -> None:
        if self.enabled:
            self.captured.inc()

    def frame_dropped(self) -> None:
        if self.enabled:
            self.dropped.inc()

    def frame_gated(self) -> None:
        if self.enabled:
            self.gated.inc()

    def result(self, path: str, latency_ms: float) -> None:
        if self.enabled:
            self.results.labels(path=path).inc()
            self.latency_s.observe(latency_ms / 1000.0)

    def offload_failed(self, code: str) -> None:
        if self.enabled:
            self.offload_failures.labels(code=code).inc()

    def cut_chosen(self, cut_id: str, order: int, cut_ids: Sequence[str]) -> None:
        if self.enabled:
            self.cut_order.set(order)
            for c in cut_ids:
                self.cut.labels(cut=c).set(1 if c == cut_id else 0)

    def telemetry_sampled(self, t: Telemetry, circuit_open: bool) -> None:
        if not self.enabled:
            return
        nan = float("nan")
        self.uplink_kbps.set(t.uplink_kbps if t.uplink_kbps is not None else nan)
        self.rtt_ms.set(t.rtt_ms if t.rtt_ms is not None else nan)
        self.battery_pct.set(t.battery_pct if t.battery_pct is not None else nan)
        self.circuit_open.set(1 if circuit_open else 0)

    def rates_sampled(self, rates: Any, exits: Sequence[Any], *, gate_enabled: bool) -> None:
        """Gate and exit rates (:class:`edge_agent.rates.FrameRates`, :class:`edge_agent.exits.ExitCount`)."""
        if not self.enabled:
            return
        self.gate_rate.set(rates.gate_rate)
        self.gate_enabled.set(1 if gate_enabled else 0)
        for count in exits:
            self.exit_rate.labels(cut=count.cut_id).set(count.rate if count.rate is not None else float("nan"))
            self.exit_threshold.labels(cut=count.cut_id).set(count.threshold)
            self.exit_checks.labels(cut=count.cut_id).set(count.checked)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


def serve_metrics(port: int, host: str) -> EdgeMetrics:
    """Register every series in a fresh registry and serve ``/metrics`` on ``host:port`` (0 = any)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

    reg = CollectorRegistry()
    metrics = EdgeMetrics(
        captured=Counter("splitinfer_edge_frames_captured", "Frames read from the source", registry=reg),
        dropped=Counter("splitinfer_edge_frames_dropped", "Live frames dropped because the pipeline was behind",
                        registry=reg),
        gated=Counter("splitinfer_edge_frames_gated", "Frames the motion gate skipped (their result repeats the "
                      "last computed frame's)", registry=reg),
        results=Counter("splitinfer_edge_results", "Results by path", ["path"], registry=reg),
        offload_failures=Counter("splitinfer_edge_offload_failures", "Failed offloads by code", ["code"], registry=reg),
        cut=Gauge("splitinfer_edge_chosen_cut", "1 for the cut in use", ["cut"], registry=reg),
        cut_order=Gauge("splitinfer_edge_chosen_cut_order", "Order of the cut in use (0 = input)", registry=reg),
        uplink_kbps=Gauge("splitinfer_edge_uplink_kbps", "Estimated uplink bandwidth", registry=reg),
        rtt_ms=Gauge("splitinfer_edge_rtt_ms", "Estimated round-trip time", registry=reg),
        battery_pct=Gauge("splitinfer_edge_battery_pct", "Battery charge (NaN when unknown)", registry=reg),
        circuit_open=Gauge("splitinfer_edge_circuit_open", "1 while the circuit breaker is not closed", registry=reg),
        gate_rate=Gauge("splitinfer_edge_gate_rate", "Share of captured frames the motion gate skipped", registry=reg),
        gate_enabled=Gauge("splitinfer_edge_gate_enabled", "1 while the motion gate is on", registry=reg),
        exit_rate=Gauge("splitinfer_edge_exit_rate", "Share of frames checked at a cut's early exit that exited",
                        ["cut"], registry=reg),
        exit_threshold=Gauge("splitinfer_edge_exit_threshold", "Confidence threshold of a cut's early exit", ["cut"],
                             registry=reg),
        exit_checks=Gauge("splitinfer_edge_exit_checked_frames", "Frames that reached a cut's early exit", ["cut"],
                          registry=reg),
        latency_s=Histogram("splitinfer_edge_latency_seconds", "Capture-to-result latency", registry=reg,
                            buckets=LATENCY_BUCKETS_S),
    )
    server, _thread = start_http_server(port, addr=host, registry=reg)
    metrics.server = server
    metrics.port = server.server_address[1]
    log.info("metrics on http://%s:%d/metrics", host, metrics.port)
    return metrics
