"""Measurements flowing back from the frame path into the telemetry, the breaker and the policy.

:class:`Feedback` is the one interface through which stages and probes report what they
saw; it owns the agent lock that guards the policy, the breaker and the telemetry
trackers, so no stage reaches into the hub's parts. Three loops run through it:

* **device speed**: a timed head run feeds the slowdown factor (:meth:`head_timed`);
* **link**: completed transfers feed bandwidth/RTT, server times and the bytes each cut
  really sends; deadline misses bound the uplink (:meth:`offload_succeeded`,
  :meth:`offload_failed`, :meth:`rtt_measured`);
* **availability**: successes and failures drive the circuit breaker, whose openings and
  closings tell the policy (:meth:`health_checked`).

A report that changes the policy's decision returns it through ``on_decision`` (the
daemon prewarms the new cut and publishes it), called without the lock held.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Callable, Optional

from edge_agent.breaker import BreakerState, CircuitBreaker
from edge_agent.errors import OffloadUnavailable
from edge_agent.metrics import EdgeMetrics
from edge_agent.policy import SplitPolicy
from edge_agent.telemetry import TelemetryHub
from edge_agent.types import Decision, Telemetry
from protos.names import INPUT_CUT

log = logging.getLogger(__name__)


class Feedback:
    def __init__(
        self,
        *,
        policy: SplitPolicy,
        breaker: CircuitBreaker,
        telemetry: TelemetryHub,
        metrics: EdgeMetrics,
        now_ms: Callable[[], int],
        on_decision: Callable[[Decision], None],
        lock: Optional[threading.RLock] = None,
    ) -> None:
        self.policy = policy
        self.breaker = breaker
        self.telemetry = telemetry
        self.metrics = metrics
        self.now_ms = now_ms
        self.on_decision = on_decision
        self.lock = lock if lock is not None else threading.RLock()
        self.offload_failures: Counter[str] = Counter()
        self.last_failed_model: Optional[tuple[str, str]] = None  # (name, version) the health probe checks

    # ------------------------------------------------------------------ questions

    def offload_allowed(self) -> bool:
        with self.lock:
            return self.breaker.allows_offload(self.now_ms())

    def cloud_available(self, now_ms: int, has_transport: bool) -> bool:
        """HALF_OPEN counts as unavailable until the health probe closes the breaker."""
        return has_transport and self.breaker.poll(now_ms) is BreakerState.CLOSED

    def sample(self, now_ms: int, *, has_transport: bool, current_cut: Optional[str]) -> Telemetry:
        with self.lock:
            available = self.cloud_available(now_ms, has_transport)
            return self.telemetry.sample(now_ms, cloud_available=available, current_cut=current_cut)

    # ------------------------------------------------------------------ device speed

    def head_timed(self, cut_id: str, head_ms: float, profiled_ms: float) -> None:
        """A head run on the device; the "input" cut runs no model (its head_ms is 0), and
        feeding it would drag the factor to its floor and make the policy flap."""
        if profiled_ms > 0 and cut_id != INPUT_CUT:
            with self.lock:
                self.telemetry.slowdown.observe(head_ms, profiled_ms, self.now_ms())

    # ------------------------------------------------------------------ link and availability

    def rtt_measured(self, rtt_ms: float) -> None:
        with self.lock:
            self.telemetry.bandwidth.observe_rtt(rtt_ms, self.now_ms())

    def offload_succeeded(self, cut_id: str, wire_bytes: int, rtt_ms: float, queue_ms: Optional[float],
                          compute_ms: Optional[float]) -> None:
        """A real transfer completed: feed bandwidth/RTT and server times, close the breaker."""
        with self.lock:
            now = self.now_ms()
            before = self.breaker.state
            self.breaker.record_success(now)
            server_ms = (queue_ms or 0.0) + (compute_ms or 0.0)
            self.telemetry.bandwidth.observe_transfer(wire_bytes, rtt_ms, now, server_ms=min(server_ms, rtt_ms))
            self.telemetry.server.observe(cut_id, queue_ms, compute_ms, now)
            self.policy.note_wire_bytes(cut_id, wire_bytes, now)  # the bundle's size is an estimate
            recovered = before is not BreakerState.CLOSED and self.breaker.state is BreakerState.CLOSED
            decision = self.policy.note_cloud_available(True, now) if recovered else None
        if decision is not None:
            self.on_decision(decision)

    def offload_failed(self, exc: OffloadUnavailable, model: Optional[tuple[str, str]] = None, *,
                       sent_bytes: int = 0, waited_ms: float = 0.0) -> None:
        with self.lock:
            if model is not None:
                self.last_failed_model = model
            now = self.now_ms()
            if exc.code == "DEADLINE_EXCEEDED" and sent_bytes > 0 and waited_ms > 0:
                # the link may have collapsed: no completed transfer will ever say so
                self.telemetry.bandwidth.observe_timeout(sent_bytes, waited_ms, now)
            self.offload_failures[exc.code] += 1
            before = self.breaker.state
            if exc.retryable:
                self.breaker.record_failure(now)
            else:  # e.g. the server lacks this bundle version or rejects our token: stop at once
                self.breaker.trip(now)
            opened = before is BreakerState.CLOSED and self.breaker.state is BreakerState.OPEN
            decision = self.policy.note_cloud_available(False, now) if opened else None
        self.metrics.offload_failed(exc.code)
        if decision is not None:
            log.warning("offload failing (%s: %s); circuit open, completing frames on the device, retry in %d ms",
                        exc.code, exc, self.breaker.backoff_ms)
            self.on_decision(decision)
        else:
            log.debug("offload failed: %s: %s", exc.code, exc)

    def begin_health_probe(self, now_ms: int) -> bool:
        with self.lock:
            return self.breaker.begin_probe(now_ms)

    def health_checked(self, ok: bool, rtt_ms: float, server: str) -> None:
        """The half-open breaker's probe came back."""
        with self.lock:
            now = self.now_ms()
            if ok:
                self.last_failed_model = None
                self.telemetry.bandwidth.observe_rtt(rtt_ms, now)
                self.breaker.record_success(now)
                log.info("server %s healthy again; circuit closed", server)
                decision: Optional[Decision] = self.policy.note_cloud_available(True, now)
            else:
                self.breaker.record_failure(now)
                log.debug("health probe failed; next in %d ms", self.breaker.backoff_ms)
                decision = None
        if decision is not None:
            self.on_decision(decision)
