"""Uplink bandwidth and RTT estimated from real transfers, and when to probe (pure; time passed in).

The daemon feeds every completed offload to :meth:`BandwidthEstimator.observe_transfer`
(bytes sent, wall duration of the round trip, the server's reported time if any)
and every health check / empty request to :meth:`observe_rtt`. A transfer's
network time is ``duration - server_ms``; a small transfer (below
``min_sample_bytes``) is an RTT sample, a large one a bandwidth sample after
subtracting the RTT estimate::

    uplink_kbps_sample = sent_bytes * 8 / max(duration - server_ms - rtt_ms, half of it)

Both are exponentially weighted moving averages whose weight also follows time: a
sample that arrives ``gap_ms`` after the previous one gets the weight
``max(alpha, 1 - exp(-gap_ms / time_constant_ms))``, so the dense samples of
steady offloading are smoothed while a sparse probe after a long quiet spell (the
link may have changed completely) mostly replaces the old value. An estimate older than
``stale_after_ms`` is still reported (flagged stale - it is better than the
prior) until ``forget_after_ms``, after which it is ``None`` (unknown), and the
policy falls back to its prior.

An RTT estimate must not outlive the link it measured. While the agent offloads steadily
with payloads of at least ``min_sample_bytes`` no transfer is an RTT sample, and an RTT
learnt on a slow, distant link (80 ms) was subtracted from every transfer on a faster, nearer
one (3 ms): the demo's agent read 8 Mbit/s as 11.4-16.2 Mbit/s and chose a cut too big for
the link. Two mechanisms, both needed:

* **the clamp** (here): every round trip pays the link's RTT at least once, so a transfer's
  network time bounds the RTT from above, and so does the fastest of a few warm pings
  (``observe_rtt(..., floor=True)``): the estimate is clamped to the bound at once. A bound is
  not a sample (its age is not refreshed). It errs on the safe side: an RTT read too low makes
  the uplink read lower, never higher. It is enough only when some transfer is short (a
  33 kB payload at 8 Mbit/s takes 36 ms, more than the stale 17-29 ms); hence
* **the refresh**: while transfers keep coming and the RTT sample is older than a few seconds,
  the agent sends a few empty round trips (:func:`rtt_refresh_due` says when;
  :mod:`edge_agent.probes` sends them) and reports their fastest as a floor.

A single round trip (a health check, a small transfer) stays a plain EWMA sample: one
quicker than the mean is as often jitter as change.

While the agent runs fully local no transfer refreshes the estimate;
:class:`ProbeScheduler` says when a small probe is due: no sooner than
``interval_ms`` after the last sample (sooner while the estimate is young: the first probes,
and those after a big change), with the link time that probes occupy held to a share of the
time (:func:`probe_gap_ms`). The share counts the link time a probe measured, not its wall
time, which a device busy with local inference stretches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from edge_agent.telemetry._common import MIN_TX_FRACTION, TelemetryError

__all__ = ["BandwidthEstimate", "BandwidthEstimator", "ProbeScheduler", "agreeing_streak", "probe_gap_ms",
           "rtt_refresh_due"]

#: While transfers keep coming, an RTT sample older than this is refreshed with a few empty round trips.
RTT_REFRESH_MS = 3_000





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

    def observe_rtt(self, rtt_ms: float, now_ms: int, *, floor: bool = False) -> None:
        """A round trip that carried (almost) no payload: a health check, an empty request.

        ``floor``: the sample is the fastest of a few warm pings just taken, so the link's RTT is at
        most that now; after the EWMA step the estimate is clamped to it (see the module docstring).
        """
        _check("rtt_ms", rtt_ms)
        weight = self._weight(self._rtt_alpha, self._rtt_at, now_ms)
        self._rtt = rtt_ms if self._rtt is None else self._rtt + weight * (rtt_ms - self._rtt)
        if floor:
            self._rtt = min(self._rtt, rtt_ms)
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
        if self._rtt is not None and self._rtt > net_ms:
            self._rtt = net_ms  # a round trip cannot take longer than this whole transfer did (a bound, not a sample)
        tx_ms = max(net_ms - (self._rtt or 0.0), MIN_TX_FRACTION * net_ms)
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
    def min_sample_bytes(self) -> int:
        """Transfers smaller than this are RTT samples, not bandwidth samples."""
        return self._min_sample_bytes

    def rtt_refresh_due(self, now_ms: int, *, last_attempt_ms: Optional[int],
                        refresh_after_ms: int = RTT_REFRESH_MS) -> bool:
        """Whether the RTT needs empty round trips now (see :func:`rtt_refresh_due`)."""
        return rtt_refresh_due(now_ms=now_ms, rtt_at_ms=self._rtt_at, uplink_at_ms=self._uplink_at,
                               last_attempt_ms=last_attempt_ms, refresh_after_ms=refresh_after_ms)

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


def rtt_refresh_due(*, now_ms: int, rtt_at_ms: Optional[int], uplink_at_ms: Optional[int],
                    last_attempt_ms: Optional[int], refresh_after_ms: int = RTT_REFRESH_MS) -> bool:
    """Whether an RTT refresh (a few empty round trips) is due while the agent offloads.

    Due when bandwidth samples keep coming (the newest is at most ``refresh_after_ms`` old: the agent
    offloads; fully local, the bandwidth probe measures the RTT itself) and both the newest RTT sample
    and the last refresh attempt (one on a dead link measures nothing) are at least ``refresh_after_ms``
    old, or there are none.
    """
    _check("refresh_after_ms", refresh_after_ms, positive=True)
    if uplink_at_ms is None or now_ms - uplink_at_ms > refresh_after_ms:
        return False
    newest = max((t for t in (rtt_at_ms, last_attempt_ms) if t is not None), default=None)
    return newest is None or now_ms - newest >= refresh_after_ms


def probe_gap_ms(*, wall_ms: float, link_ms: Optional[float], young: bool, interval_ms: float,
                 young_interval_ms: float, max_duty_pct: float, young_duty_pct: float, max_wall_pct: float) -> float:
    """How long after a probe's start the next may start.

    ``link_ms`` is the time the probe occupied the link (its transfers at the pace of the
    fastest, see :func:`~edge_agent.telemetry.probe_samples.combine_probe`), ``None`` when it
    measured nothing (it failed or timed out): a dead link carries nothing, so the next probe
    comes at the steady interval (its wall time bounded at ``max_wall_pct`` like any probe's);
    charging the wait at ``max_duty_pct`` put the next probe minutes away, and the demo's agent
    kept a 468 kbit/s estimate for the 18 s of 100 Mbit/s that followed its outage.
    A probe that measured is charged its link time, not its wall time: the device's own CPU
    stalls (a throttled core busy with local inference) lengthen the wall time but do not load
    the link. While the estimate is ``young`` the pace is ``young_interval_ms`` and the cap on the
    link share ``young_duty_pct`` (the hard cap), else ``interval_ms`` and ``max_duty_pct``; in
    both cases the wall time is held to ``max_wall_pct`` of the gap (probes pause local frames).
    """
    if link_ms is None:
        return max(interval_ms, wall_ms * 100.0 / max_wall_pct)
    base, duty = (young_interval_ms, young_duty_pct) if young else (interval_ms, max_duty_pct)
    return max(base, link_ms * 100.0 / duty, wall_ms * 100.0 / max_wall_pct)


def agreeing_streak(streak: int, previous_kbps: Optional[float], new_kbps: Optional[float],
                    change_ratio: float) -> int:
    """Consecutive probes whose uplink agreed (within ``change_ratio``) with the one before.

    A probe that measured nothing leaves the streak alone; the first measurement, or one that
    differs from the previous by ``change_ratio`` or more either way, starts it again at 0.
    """
    if new_kbps is None:
        return streak
    if previous_kbps is None or previous_kbps <= 0 or new_kbps <= 0:
        return 0
    ratio = max(new_kbps / previous_kbps, previous_kbps / new_kbps)
    return streak + 1 if ratio < change_ratio else 0


class ProbeScheduler:
    """Says when a small bandwidth probe is due while no real transfer keeps the estimate fresh.

    A probe is due when none is in flight, the newest real sample is at least the current
    interval old, and the last probe started at least :func:`probe_gap_ms` ago. The estimate
    is *young* from the first probe that measured until ``settle_probes`` consecutive probes
    agreed (each within ``change_ratio`` of the one before): the probes after the first, and
    those after a big change, come every
    ``young_interval_ms`` (at most ``interval_ms``) instead of ``interval_ms``, with their link
    time held to ``young_duty_pct`` of the gap (the hard cap) instead of ``max_duty_pct``.
    A probe that measured nothing (``note_finished`` without ``link_ms``) is followed by the next
    at the steady interval (or five times its wall time, if longer: ``max_wall_pct``).
    ``probe_bytes`` is the suggested payload: big enough to measure bandwidth
    (above ``BandwidthEstimator.min_sample_bytes``), small enough to be cheap.
    """

    def __init__(self, *, interval_ms: int = 10_000, max_duty_pct: float = 2.0, probe_bytes: int = 16_384,
                 young_interval_ms: int = 1_000, young_duty_pct: float = 10.0, max_wall_pct: float = 20.0,
                 settle_probes: int = 2, change_ratio: float = 2.0) -> None:
        _check("interval_ms", interval_ms, positive=True)
        _check("young_interval_ms", young_interval_ms, positive=True)
        for name, pct in (("max_duty_pct", max_duty_pct), ("young_duty_pct", young_duty_pct),
                          ("max_wall_pct", max_wall_pct)):
            if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 < pct <= 100:
                raise TelemetryError(f"{name} = {pct!r}; expected 0 < {name} <= 100")
        if young_duty_pct < max_duty_pct:
            raise TelemetryError(f"young_duty_pct = {young_duty_pct!r} is below max_duty_pct = {max_duty_pct!r}")
        _check("probe_bytes", probe_bytes, positive=True)
        _check("settle_probes", settle_probes)
        if isinstance(change_ratio, bool) or not isinstance(change_ratio, (int, float)) or not change_ratio > 1:
            raise TelemetryError(f"change_ratio = {change_ratio!r}; expected a number > 1")
        self.interval_ms = interval_ms
        self.young_interval_ms = min(young_interval_ms, interval_ms)
        self.max_duty_pct = max_duty_pct
        self.young_duty_pct = young_duty_pct
        self.max_wall_pct = max_wall_pct
        self.settle_probes = int(settle_probes)
        self.change_ratio = float(change_ratio)
        self.probe_bytes = probe_bytes
        self._started_ms: Optional[int] = None
        self._gap_ms: Optional[float] = None
        self._in_flight = False
        self._last_kbps: Optional[float] = None
        self._streak = 0
        self.probes = 0

    @property
    def young(self) -> bool:
        """A probe measured the link, and fewer than ``settle_probes`` since agreed: probe at the young pace."""
        return self._last_kbps is not None and self._streak < self.settle_probes

    def next_due_ms(self, last_sample_ms: Optional[int]) -> int:
        """The earliest time a probe may start (given the newest real sample's time)."""
        interval = self.young_interval_ms if self.young else self.interval_ms
        due = 0 if last_sample_ms is None else last_sample_ms + interval
        if self._started_ms is not None:
            due = max(due, self._started_ms + math.ceil(self._gap_ms if self._gap_ms is not None else interval))
        return int(due)

    def due(self, now_ms: int, last_sample_ms: Optional[int]) -> bool:
        return not self._in_flight and now_ms >= self.next_due_ms(last_sample_ms)

    def note_started(self, now_ms: int) -> None:
        if self._in_flight:
            raise TelemetryError("a probe is already in flight; call note_finished first")
        self._in_flight = True
        self._started_ms = now_ms
        self._gap_ms = None
        self.probes += 1

    def note_finished(self, now_ms: int, *, link_ms: Optional[float] = None,
                      uplink_kbps: Optional[float] = None) -> None:
        """The probe ended (answered or failed). ``link_ms``: the link time it measured (None: it
        measured nothing, and its wall time counts); ``uplink_kbps``: the uplink it saw, which
        decides whether the estimate is settled."""
        if not self._in_flight or self._started_ms is None:
            raise TelemetryError("no probe in flight; call note_started first")
        if link_ms is not None:
            _check("link_ms", link_ms)
        if uplink_kbps is not None:
            _check("uplink_kbps", uplink_kbps, positive=True)
        self._in_flight = False
        if link_ms is not None:
            self._streak = agreeing_streak(self._streak, self._last_kbps, uplink_kbps, self.change_ratio)
            self._last_kbps = uplink_kbps if uplink_kbps is not None else self._last_kbps
        self._gap_ms = probe_gap_ms(
            wall_ms=max(0.0, float(now_ms - self._started_ms)), link_ms=link_ms, young=self.young,
            interval_ms=self.interval_ms, young_interval_ms=self.young_interval_ms,
            max_duty_pct=self.max_duty_pct, young_duty_pct=self.young_duty_pct, max_wall_pct=self.max_wall_pct)
