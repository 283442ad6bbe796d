"""Small pure trackers: how much slower the device runs heads than the profile says, and
how long the server queues and computes (from its advisory response parameters).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from edge_agent.telemetry._common import TelemetryError

__all__ = ["SlowdownTracker", "ServerTimeTracker", "ServerTimes"]


class SlowdownTracker:
    """EWMA of measured head time / profiled head time (the policy's ``slowdown_factor``).

    It follows thermal throttling and competing load because it is measured. Heads
    with a profiled time of 0 (the "input" cut) teach nothing. The factor is clamped
    to ``[min_factor, max_factor]`` so one pathological run (a page fault storm)
    cannot send it to absurd values.
    """

    def __init__(self, *, alpha: float = 0.2, initial: float = 1.0, min_factor: float = 0.1,
                 max_factor: float = 50.0) -> None:
        if not 0 < alpha <= 1:
            raise TelemetryError(f"alpha = {alpha!r}; expected 0 < alpha <= 1")
        if not 0 < min_factor <= initial <= max_factor:
            raise TelemetryError(f"expected 0 < min_factor <= initial <= max_factor; got "
                                 f"{min_factor}, {initial}, {max_factor}")
        self._alpha, self._min, self._max = alpha, min_factor, max_factor
        self._factor = initial
        self.samples = 0
        self.last_ms: Optional[int] = None

    @property
    def factor(self) -> float:
        return self._factor

    def observe(self, measured_head_ms: float, profiled_head_ms: float, now_ms: int) -> None:
        for name, value in (("measured_head_ms", measured_head_ms), ("profiled_head_ms", profiled_head_ms)):
            if not math.isfinite(value) or value < 0:
                raise TelemetryError(f"{name} = {value!r}; expected a finite number >= 0")
        if profiled_head_ms <= 0:
            return
        ratio = min(max(measured_head_ms / profiled_head_ms, self._min), self._max)
        self._factor = ratio if self.samples == 0 else self._factor + self._alpha * (ratio - self._factor)
        self.samples += 1
        self.last_ms = now_ms


@dataclass(frozen=True)
class ServerTimes:
    queue_ms: Optional[float]
    compute_ms: Optional[float]


class ServerTimeTracker:
    """EWMA of the server's ``server_queue_us`` / ``server_compute_us`` response parameters.

    Queueing is a property of the server and is shared by all cuts; compute time is
    kept per cut (a different tail costs differently). Values older than
    ``forget_after_ms`` are dropped (unknown), e.g. after switching to a stock
    Triton that sends none.
    """

    def __init__(self, *, alpha: float = 0.3, forget_after_ms: int = 60_000) -> None:
        if not 0 < alpha <= 1:
            raise TelemetryError(f"alpha = {alpha!r}; expected 0 < alpha <= 1")
        self._alpha = alpha
        self._forget_after_ms = forget_after_ms
        self._queue: Optional[tuple[float, int]] = None
        self._compute: dict[str, tuple[float, int]] = {}

    def _ewma(self, old: Optional[tuple[float, int]], value: float, now_ms: int) -> tuple[float, int]:
        if old is None or now_ms - old[1] > self._forget_after_ms:
            return value, now_ms
        return old[0] + self._alpha * (value - old[0]), max(old[1], now_ms)

    def observe(self, cut_id: str, queue_ms: Optional[float], compute_ms: Optional[float], now_ms: int) -> None:
        """One response; ``None`` for a parameter the server did not send."""
        for name, value in (("queue_ms", queue_ms), ("compute_ms", compute_ms)):
            if value is not None and (not math.isfinite(value) or value < 0):
                raise TelemetryError(f"{name} = {value!r}; expected a finite number >= 0 or None")
        if queue_ms is not None:
            self._queue = self._ewma(self._queue, queue_ms, now_ms)
        if compute_ms is not None:
            self._compute[cut_id] = self._ewma(self._compute.get(cut_id), compute_ms, now_ms)

    def times(self, cut_id: Optional[str], now_ms: int) -> ServerTimes:
        """Queue time, and compute time of ``cut_id`` (the cut in use), when fresh."""
        def fresh(entry: Optional[tuple[float, int]]) -> Optional[float]:
            if entry is None or now_ms - entry[1] > self._forget_after_ms:
                return None
            return entry[0]

        compute = fresh(self._compute.get(cut_id)) if cut_id is not None else None
        return ServerTimes(fresh(self._queue), compute)
