"""Uplink bandwidth and RTT estimated from real transfers, and when to probe (pure; time passed in).

The daemon feeds every completed offload to :meth:`BandwidthEstimator.observe_transfer`
(bytes sent, wall duration of the round trip, the server's reported time if any)
and every health check / empty request to :meth:`observe_rtt`. A transfer's
network time is ``duration - server_ms``; a small transfer (below
``min_sample_bytes``) is an RTT sample, a large one a bandwidth sample after
subtracting the RTT estimate::

    uplink_kbps_sample = sent_bytes * 8 / max(duration - server_ms - rtt_ms, 10 % of it)

Both are exponentially weighted moving averages whose weight also follows time: a
sample that arrives ``gap_ms`` after the previous one gets the weight
``max(alpha, 1 - exp(-gap_ms / time_constant_ms))``, so the dense samples of
steady offloading are smoothed while a sparse probe after a long quiet spell (the
link may have changed completely) mostly replaces the old value. An estimate older than
``stale_after_ms`` is still reported (flagged stale - it is better than the
prior) until ``forget_after_ms``, after which it is ``None`` (unknown), and the
policy falls back to its prior.

While the agent runs fully local no transfer refreshes the estimate;
:class:`ProbeScheduler` says when a small probe is due: no sooner than
``interval_ms`` after the last sample, and never more than ``max_duty_pct`` of the
time spent probing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from edge_agent.telemetry._common import TelemetryError

__all__ = ["BandwidthEstimate", "BandwidthEstimator", "ProbeScheduler"]


def _check(name: str, value: float, *, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
            or (positive and value == 0):
        raise TelemetryError(f"{name} = {value!r}; expected a finite number {'>' if positive else '>='} 0")


@dataclass(frozen=True)
class BandwidthEstimate:
    uplink_kbps: Optional[float]
    rtt_ms: Optional[float]
    uplink_age_ms: Optional[float]
    rtt_age_ms: Optional[float]
    uplink_samples: int
    rtt_samples: int
    stale: bool  # the newest sample is older than stale_after_ms (or there is none)
    last_sample_ms: Optional[int]


class BandwidthEstimator:
    """EWMA uplink (kbps) and RTT (ms) from real transfers; see the module docstring."""

    def __init__(self, *, alpha: float = 0.3, rtt_alpha: float = 0.2, min_sample_bytes: int = 4_096,
                 stale_after_ms: int = 15_000, forget_after_ms: int = 300_000,
                 max_kbps: float = 10_000_000.0, time_constant_ms: float = 5_000.0) -> None:
        for name, value in (("alpha", alpha), ("rtt_alpha", rtt_alpha)):
            if not 0 < value <= 1:
                raise TelemetryError(f"{name} = {value!r}; expected 0 < {name} <= 1")
        _check("min_sample_bytes", min_sample_bytes)
        _check("stale_after_ms", stale_after_ms, positive=True)
        _check("max_kbps", max_kbps, positive=True)
        _check("time_constant_ms", time_constant_ms, positive=True)
        if forget_after_ms < stale_after_ms:
            raise TelemetryError(f"forget_after_ms = {forget_after_ms} is below stale_after_ms = {stale_after_ms}")
        self._alpha, self._rtt_alpha = alpha, rtt_alpha
        self._min_sample_bytes = min_sample_bytes
        self._stale_after_ms, self._forget_after_ms = stale_after_ms, forget_after_ms
        self._max_kbps = max_kbps
        self._time_constant_ms = float(time_constant_ms)
        self._uplink: Optional[float] = None
        self._rtt: Optional[float] = None
        self._uplink_at: Optional[int] = None
        self._rtt_at: Optional[int] = None
        self._uplink_n = 0
        self._rtt_n = 0

    def observe_rtt(self, rtt_ms: float, now_ms: int) -> None:
        """A round trip that carried (almost) no payload: a health check, an empty request."""
        _check("rtt_ms", rtt_ms)
        weight = self._weight(self._rtt_alpha, self._rtt_at, now_ms)
        self._rtt = rtt_ms if self._rtt is None else self._rtt + weight * (rtt_ms - self._rtt)
        self._rtt_at = now_ms if self._rtt_at is None else max(self._rtt_at, now_ms)
        self._rtt_n += 1

    def observe_transfer(self, sent_bytes: int, duration_ms: float, now_ms: int, server_ms: float = 0.0) -> None:
        """A completed request: ``sent_bytes`` up, answer back after ``duration_ms`` (server time inside)."""
        _check("sent_bytes", sent_bytes)
        _check("duration_ms", duration_ms)
        _check("server_ms", server_ms)
        net_ms = duration_ms - server_ms
        if net_ms <= 0:
            return  # clocks disagree (server time >= round trip): nothing to learn
        if sent_bytes < self._min_sample_bytes:
            self.observe_rtt(net_ms, now_ms)
            return
        tx_ms = max(net_ms - (self._rtt or 0.0), 0.1 * net_ms)
        sample = min(sent_bytes * 8.0 / tx_ms, self._max_kbps)
        weight = self._weight(self._alpha, self._uplink_at, now_ms)
        self._uplink = sample if self._uplink is None else self._uplink + weight * (sample - self._uplink)
        self._uplink_at = now_ms if self._uplink_at is None else max(self._uplink_at, now_ms)
        self._uplink_n += 1

    def _weight(self, alpha: float, last_at: Optional[int], now_ms: int) -> float:
        """The EWMA weight of a new sample: ``alpha``, or more after a long gap."""
        if last_at is None:
            return 1.0
        gap_ms = max(0, now_ms - last_at)
        return max(alpha, 1.0 - math.exp(-gap_ms / self._time_constant_ms))

    def observe_timeout(self, sent_bytes: int, waited_ms: float, now_ms: int) -> None:
        """A transfer of ``sent_bytes`` that had not completed after ``waited_ms``.

        Nothing was measured, but the uplink is at most ``sent_bytes * 8 / waited_ms``
        kbps: the estimate is clamped to that bound. Without this, a link that collapsed
        so far that every offload misses its deadline would keep its old, fast estimate
        forever (no transfer ever completes to correct it).
        """
        _check("sent_bytes", sent_bytes)
        _check("waited_ms", waited_ms, positive=True)
        if sent_bytes < self._min_sample_bytes:
            return  # a small request that timed out says nothing about bandwidth
        bound_kbps = sent_bytes * 8.0 / waited_ms
        if self._uplink is None or self._uplink > bound_kbps:
            self._uplink = bound_kbps
        self._uplink_at = now_ms if self._uplink_at is None else max(self._uplink_at, now_ms)
        self._uplink_n += 1

    @property
    def last_sample_ms(self) -> Optional[int]:
        times = [t for t in (self._uplink_at, self._rtt_at) if t is not None]
        return max(times) if times else None

    def estimate(self, now_ms: int) -> BandwidthEstimate:
        """The current estimate; values older than ``forget_after_ms`` become ``None``."""
        def aged(value: Optional[float], at: Optional[int]) -> tuple[Optional[float], Optional[float]]:
            if value is None or at is None:
                return None, None
            age = max(0.0, float(now_ms - at))
            return (None, age) if age > self._forget_after_ms else (value, age)

        uplink, uplink_age = aged(self._uplink, self._uplink_at)
        rtt, rtt_age = aged(self._rtt, self._rtt_at)
        last = self.last_sample_ms
        stale = last is None or now_ms - last > self._stale_after_ms
        return BandwidthEstimate(uplink, rtt, uplink_age, rtt_age, self._uplink_n, self._rtt_n, stale, last)


class ProbeScheduler:
    """Says when a small bandwidth probe is due while no real transfer keeps the estimate fresh.

    A probe is due when none is in flight, the newest real sample is at least
    ``interval_ms`` old, the last probe started at least ``interval_ms`` ago, and
    the last probe's duration is at most ``max_duty_pct`` of the time since it
    started (so a probe that took 400 ms on a bad link waits 20 s at 2 %).
    ``probe_bytes`` is the suggested payload: big enough to measure bandwidth
    (above ``BandwidthEstimator.min_sample_bytes``), small enough to be cheap.
    """

    def __init__(self, *, interval_ms: int = 10_000, max_duty_pct: float = 2.0, probe_bytes: int = 16_384) -> None:
        _check("interval_ms", interval_ms, positive=True)
        if not 0 < max_duty_pct <= 100:
            raise TelemetryError(f"max_duty_pct = {max_duty_pct!r}; expected 0 < max_duty_pct <= 100")
        _check("probe_bytes", probe_bytes, positive=True)
        self.interval_ms = interval_ms
        self.max_duty_pct = max_duty_pct
        self.probe_bytes = probe_bytes
        self._started_ms: Optional[int] = None
        self._duration_ms: Optional[float] = None
        self._in_flight = False
        self.probes = 0

    def next_due_ms(self, last_sample_ms: Optional[int]) -> int:
        """The earliest time a probe may start (given the newest real sample's time)."""
        due = 0 if last_sample_ms is None else last_sample_ms + self.interval_ms
        if self._started_ms is not None:
            gap = self.interval_ms
            if self._duration_ms is not None:
                gap = max(gap, self._duration_ms * 100.0 / self.max_duty_pct)
            due = max(due, self._started_ms + math.ceil(gap))
        return int(due)

    def due(self, now_ms: int, last_sample_ms: Optional[int]) -> bool:
        return not self._in_flight and now_ms >= self.next_due_ms(last_sample_ms)

    def note_started(self, now_ms: int) -> None:
        if self._in_flight:
            raise TelemetryError("a probe is already in flight; call note_finished first")
        self._in_flight = True
        self._started_ms = now_ms
        self._duration_ms = None
        self.probes += 1

    def note_finished(self, now_ms: int) -> None:
        """The probe ended (answered or failed); its duration counts against the duty cycle."""
        if not self._in_flight or self._started_ms is None:
            raise TelemetryError("no probe in flight; call note_started first")
        self._in_flight = False
        self._duration_ms = max(0.0, float(now_ms - self._started_ms))
