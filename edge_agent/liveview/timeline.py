"""The live view's timeline: one point per interval of cut, latency, bandwidth and gate/exit rates.

Pure: the caller feeds results as they happen (:meth:`Timeline.add_result`) and closes
an interval with :meth:`Timeline.tick`, giving the time and the agent's gated/captured
counters; nothing here reads a clock. An early exit is a frame finished on the device
(path ``local``) at a cut other than ``output``.
"""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Optional


@dataclass(frozen=True)
class TimelinePoint:
    t_s: float  # agent uptime at the end of the interval
    cut: str
    cut_order: int
    results_per_s: float
    latency_ms: Optional[float]  # mean total latency of the interval's results
    uplink_kbps: float  # wire bytes sent per second, in kbit/s
    gate_pct: float  # frames the gate skipped, % of captured
    exit_pct: float  # results that exited early, % of results

    def to_json(self) -> dict:
        return asdict(self)


class Timeline:
    def __init__(self, max_points: int) -> None:
        if max_points < 1:
            raise ValueError(f"max_points {max_points}: expected >= 1")
        self.points: deque[TimelinePoint] = deque(maxlen=max_points)
        self._results = 0
        self._latency_sum_ms = 0.0
        self._wire_bytes = 0
        self._exits = 0
        self._last_t_s: Optional[float] = None
        self._last_gated = 0
        self._last_captured = 0

    def add_result(self, *, latency_ms: float, wire_bytes: int, path: str, cut: str) -> None:
        self._results += 1
        self._latency_sum_ms += latency_ms
        self._wire_bytes += wire_bytes
        if path == "local" and cut != "output":
            self._exits += 1

    def tick(self, t_s: float, *, cut: str, cut_order: int, gated: int, captured: int) -> Optional[TimelinePoint]:
        """Close the interval ending at ``t_s``; the first call only sets the start."""
        if self._last_t_s is None or t_s <= self._last_t_s:
            self._last_t_s, self._last_gated, self._last_captured = t_s, gated, captured
            return None
        dt = t_s - self._last_t_s
        d_gated, d_captured = gated - self._last_gated, captured - self._last_captured
        point = TimelinePoint(
            t_s=round(t_s, 3), cut=cut, cut_order=cut_order,
            results_per_s=round(self._results / dt, 3),
            latency_ms=round(self._latency_sum_ms / self._results, 3) if self._results else None,
            uplink_kbps=round(self._wire_bytes * 8 / 1000 / dt, 3),
            gate_pct=round(100.0 * d_gated / d_captured, 2) if d_captured > 0 else 0.0,
            exit_pct=round(100.0 * self._exits / self._results, 2) if self._results else 0.0,
        )
        self.points.append(point)
        self._results = self._exits = self._wire_bytes = 0
        self._latency_sum_ms = 0.0
        self._last_t_s, self._last_gated, self._last_captured = t_s, gated, captured
        return point
