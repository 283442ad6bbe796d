"""Measurements flowing back from the frame path into the telemetry, the breaker and the policy.

:class:`Feedback` is the one interface through which stages and probes report what they
saw; it owns the agent lock that guards the policy, the breaker and the telemetry
trackers, so no stage reaches into the hub's parts. Three loops run through it:

* **device speed**: a timed head run feeds the slowdown factor (:meth:`head_timed`);
* **link**: completed transfers feed bandwidth/RTT, server times and the bytes each cut
  really sends; deadline misses bound the uplink (:meth:`offload_succeeded`,
  :meth:`offload_failed`, :meth:`rtt_measured`);
* **availability**: successes and failures drive the circuit breaker, whose openings and
  closings tell the policy (:meth:`health_checked`);
* **what frames really took**: each result's latency against the policy's prediction for
  its cut corrects that cut's later predictions (:meth:`frame_finished`, :mod:`edge_agent.residuals`).

Two failures are not outages. ``SERVER_BUSY`` (RESOURCE_EXHAUSTED: the server is up but full)
leaves the breaker alone and tells the policy's cost model (``note_server_busy``) with a hold
that doubles per consecutive busy answer (``BUSY_HOLD_MS``) and resets on a success.
``MODEL_NOT_SERVED`` (the server lacks this bundle version) is configuration: logged once at
ERROR, quoted in the decision's reason (``splitctl status`` shows it), and rechecked every
``CONFIG_RECHECK_MS`` instead of at the breaker's pace.

A report that changes the policy's decision returns it through ``on_decision`` (the
daemon prewarms the new cut and publishes it), called without the lock held.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Callable, Optional

from edge_agent.breaker import BreakerState, CircuitBreaker
from edge_agent.errors import MODEL_NOT_SERVED, SERVER_BUSY, OffloadUnavailable
from edge_agent.metrics import EdgeMetrics
from edge_agent.policy import SplitPolicy
from edge_agent.residuals import MEASURED_PATHS, frame_latency_ms
from edge_agent.results import FrameResult
from edge_agent.telemetry import TelemetryHub
from edge_agent.types import Decision, Telemetry
from protos.names import INPUT_CUT

log = logging.getLogger(__name__)

#: Hold of the first busy answer and its cap (ms); doubles per consecutive busy answer.
BUSY_HOLD_MS = (500, 8_000)
#: How often a configuration problem (the server lacks our bundle version) is rechecked.
CONFIG_RECHECK_MS = 60_000


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
        self.busy_streak = 0  # consecutive SERVER_BUSY answers
        self.config_problem = ""  # set while the server lacks our model version (MODEL_NOT_SERVED)
        self._recheck_at_ms = 0

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

    def frame_finished(self, result: FrameResult) -> None:
        """A frame's result: its latency (total minus capture-queue wait) against the prediction for its
        cut feeds the cut's residual; fallback and gated frames measure nothing (``MEASURED_PATHS``)."""
        if result.path.value not in MEASURED_PATHS:
            return
        with self.lock:
            now = self.now_ms()
            self.policy.residuals.observe_frame(self.policy.estimates(now), result.cut, result.path.value,
                                                frame_latency_ms(result.latency_ms), now)

    # ------------------------------------------------------------------ link and availability

    def rtt_measured(self, rtt_ms: float) -> None:
        """The fastest of a few warm pings: an RTT sample and a bound (the link's RTT is at most that now)."""
        with self.lock:
            self.telemetry.bandwidth.observe_rtt(rtt_ms, self.now_ms(), floor=True)

    def input_sized(self, wire_bytes: int) -> None:
        """What the "input" cut would send for a recent frame (sized on the device, not sent)."""
        with self.lock:
            if INPUT_CUT in self.policy.cut_ids:
                self.policy.note_wire_bytes(INPUT_CUT, wire_bytes, self.now_ms())

    def offload_succeeded(self, cut_id: str, wire_bytes: int, rtt_ms: float, queue_ms: Optional[float],
                          compute_ms: Optional[float]) -> None:
        """A real transfer completed: feed bandwidth/RTT and server times, close the breaker."""
        with self.lock:
            now = self.now_ms()
            before = self.breaker.state
            self.breaker.record_success(now)
            self.busy_streak = 0
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
        if exc.code == SERVER_BUSY:
            self._server_busy(exc)
            return
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
            first_problem = exc.code == MODEL_NOT_SERVED and not self.config_problem
            if exc.code == MODEL_NOT_SERVED:
                self.config_problem = self._problem_text(model)
                self._recheck_at_ms = now + CONFIG_RECHECK_MS
            decision = (self.policy.note_cloud_available(False, now, problem=self.config_problem)
                        if opened or first_problem else None)
        self.metrics.offload_failed(exc.code)
        if first_problem:
            log.error("configuration: %s (%s); completing frames on the device, rechecking every %d s",
                      self.config_problem, exc, CONFIG_RECHECK_MS // 1000)
            if decision is not None:
                self.on_decision(decision)
            return
        if decision is not None:
            log.warning("offload failing (%s: %s); circuit open, completing frames on the device, retry in %d ms",
                        exc.code, exc, self.breaker.backoff_ms)
            self.on_decision(decision)
        else:
            log.debug("offload failed: %s: %s", exc.code, exc)

    def _problem_text(self, model: Optional[tuple[str, str]]) -> str:
        what = f"model {model[0]!r} version {model[1]!r}" if model is not None else "this agent's model"
        return f"the server does not serve {what} (bundle version mismatch between agent and server?)"

    def _server_busy(self, exc: OffloadUnavailable) -> None:
        """The server is up but full: a cost for the policy, never a breaker failure."""
        with self.lock:
            now = self.now_ms()
            self.offload_failures[exc.code] += 1
            self.busy_streak += 1
            first, cap = BUSY_HOLD_MS
            hold_ms = min(cap, first * 2 ** min(self.busy_streak - 1, 16))
            before = self.policy.cut_id
            decision = self.policy.note_server_busy(hold_ms, now)
        self.metrics.offload_failed(exc.code)
        log.log(logging.INFO if self.busy_streak == 1 else logging.DEBUG,
                "server busy (%s); offloading counts %d ms dearer for %d ms", exc, hold_ms, hold_ms)
        if decision.cut_id != before:
            self.on_decision(decision)

    def begin_health_probe(self, now_ms: int) -> bool:
        with self.lock:
            if self.config_problem and now_ms < self._recheck_at_ms:
                return False  # configuration does not fix itself every 2 s
            return self.breaker.begin_probe(now_ms)

    def health_checked(self, ok: bool, rtt_ms: float, server: str) -> None:
        """The half-open breaker's probe came back."""
        with self.lock:
            now = self.now_ms()
            if self.config_problem:
                self._recheck_at_ms = now + CONFIG_RECHECK_MS
            if ok:
                if self.config_problem:
                    log.info("configuration problem resolved: the server serves our model again")
                self.config_problem = ""
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
