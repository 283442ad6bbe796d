"""Link schedules for the emulated testbed: what the link does at each second.

Pure logic, no sockets and no clocks: every function takes the time (seconds
since the schedule's origin) from the caller. The proxy (:mod:`benchmarks.testbed.proxy`)
asks :class:`ChunkScheduler` when a chunk of bytes may leave, and the bench asks
:meth:`LinkSchedule.rate_steps` when to re-shape the kernel's tbf qdisc.

A schedule is a list of segments, each starting at ``at_s`` and lasting until
the next one (the last one lasts forever). A segment sets the uplink rate
(``uplink_kbps``; ``None`` = unshaped by the proxy), a one-way added delay, a
"loss" probability and whether the link is up. Since netem is not available,
loss is emulated as what the application sees of a lost TCP segment: the chunk
(and everything behind it on that connection) is held for a retransmission
timeout ``stall_ms``. ``ramp_to_kbps`` makes the rate move linearly to that
value by the start of the next segment.

Limits: delay and loss apply per chunk (one ``recv`` of up to 64 KiB), not per
packet; an outage holds bytes (a black hole that TCP rides out) rather than
resetting connections, and new connections wait until the link returns.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Optional, Sequence

DEFAULT_STALL_MS = 200.0  # Linux TCP minimum RTO


class ScheduleError(ValueError):
    """A schedule document or segment is invalid; the message quotes the value."""


@dataclass(frozen=True)
class Segment:
    at_s: float
    uplink_kbps: Optional[float] = None
    delay_ms: float = 0.0
    loss_pct: float = 0.0
    up: bool = True
    ramp_to_kbps: Optional[float] = None
    stall_ms: float = DEFAULT_STALL_MS

    def __post_init__(self) -> None:
        if not (self.at_s >= 0 and math.isfinite(self.at_s)):
            raise ScheduleError(f"segment at_s={self.at_s!r}; expected a finite time >= 0")
        for name in ("uplink_kbps", "ramp_to_kbps"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ScheduleError(f"segment at {self.at_s}s: {name}={value!r}; expected > 0 or null")
        if self.ramp_to_kbps is not None and self.uplink_kbps is None:
            raise ScheduleError(f"segment at {self.at_s}s: ramp_to_kbps needs uplink_kbps as its start")
        if not self.delay_ms >= 0:
            raise ScheduleError(f"segment at {self.at_s}s: delay_ms={self.delay_ms!r}; expected >= 0")
        if not 0 <= self.loss_pct <= 100:
            raise ScheduleError(f"segment at {self.at_s}s: loss_pct={self.loss_pct!r}; expected 0..100")
        if not self.stall_ms >= 0:
            raise ScheduleError(f"segment at {self.at_s}s: stall_ms={self.stall_ms!r}; expected >= 0")


@dataclass(frozen=True)
class LinkState:
    """The link at one instant."""

    uplink_kbps: Optional[float]
    delay_ms: float
    loss_pct: float
    up: bool
    stall_ms: float = DEFAULT_STALL_MS


@dataclass(frozen=True)
class LinkSchedule:
    segments: tuple[Segment, ...] = field(default_factory=lambda: (Segment(at_s=0.0),))

    def __post_init__(self) -> None:
        if not self.segments:
            raise ScheduleError("a schedule needs at least one segment")
        if self.segments[0].at_s != 0:
            raise ScheduleError(f"the first segment starts at {self.segments[0].at_s}s; expected 0")
        times = [s.at_s for s in self.segments]
        if any(b <= a for a, b in zip(times, times[1:])):
            raise ScheduleError(f"segment times {times} are not strictly increasing")

    # ------------------------------------------------------------------ queries

    def _index_at(self, t_s: float) -> int:
        index = 0
        for i, seg in enumerate(self.segments):
            if seg.at_s <= t_s:
                index = i
            else:
                break
        return index

    def state_at(self, t_s: float) -> LinkState:
        """The link at ``t_s`` (times before 0 read as 0)."""
        i = self._index_at(max(t_s, 0.0))
        seg = self.segments[i]
        rate = seg.uplink_kbps
        if seg.ramp_to_kbps is not None and rate is not None and i + 1 < len(self.segments):
            end = self.segments[i + 1].at_s
            frac = (t_s - seg.at_s) / (end - seg.at_s)
            rate = rate + (seg.ramp_to_kbps - rate) * min(max(frac, 0.0), 1.0)
        return LinkState(uplink_kbps=rate, delay_ms=seg.delay_ms, loss_pct=seg.loss_pct, up=seg.up,
                         stall_ms=seg.stall_ms)

    def next_up_s(self, t_s: float) -> float:
        """The first time >= ``t_s`` at which the link is up (``inf`` if it never returns)."""
        i = self._index_at(max(t_s, 0.0))
        if self.segments[i].up:
            return t_s
        for seg in self.segments[i + 1:]:
            if seg.up:
                return seg.at_s
        return math.inf

    def outages(self) -> list[tuple[float, float]]:
        """``(start_s, end_s)`` of every down period, merged; ``end_s`` may be ``inf``."""
        spans: list[tuple[float, float]] = []
        for i, seg in enumerate(self.segments):
            if seg.up:
                continue
            end = self.segments[i + 1].at_s if i + 1 < len(self.segments) else math.inf
            if spans and spans[-1][1] == seg.at_s:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((seg.at_s, end))
        return spans

    def rate_steps(self, step_s: float = 1.0) -> list[tuple[float, Optional[float]]]:
        """``(t_s, uplink_kbps)`` changes to apply to a kernel shaper; ramps become steps of ``step_s``."""
        if not step_s > 0:
            raise ScheduleError(f"step_s={step_s!r}; expected > 0")
        steps: list[tuple[float, Optional[float]]] = []
        for i, seg in enumerate(self.segments):
            if seg.ramp_to_kbps is not None and i + 1 < len(self.segments):
                t = seg.at_s
                while t < self.segments[i + 1].at_s - 1e-9:
                    steps.append((round(t, 6), self.state_at(t).uplink_kbps))
                    t += step_s
            else:
                steps.append((seg.at_s, seg.uplink_kbps))
        merged: list[tuple[float, Optional[float]]] = []
        for t, rate in steps:
            if not merged or merged[-1][1] != rate:
                merged.append((t, rate))
        return merged

    @property
    def last_change_s(self) -> float:
        return self.segments[-1].at_s

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict:
        return {"segments": [asdict(s) for s in self.segments]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, doc: dict) -> "LinkSchedule":
        if not isinstance(doc, dict) or not isinstance(doc.get("segments"), list):
            raise ScheduleError(f"expected {{'segments': [...]}}, got {str(doc)[:80]!r}")
        allowed = set(Segment.__dataclass_fields__)
        segments = []
        for i, raw in enumerate(doc["segments"]):
            if not isinstance(raw, dict):
                raise ScheduleError(f"segments[{i}] = {raw!r}; expected an object")
            unknown = sorted(set(raw) - allowed)
            if unknown:
                raise ScheduleError(f"segments[{i}] has unknown keys {unknown}; expected some of {sorted(allowed)}")
            try:
                segments.append(Segment(**raw))
            except TypeError as exc:
                raise ScheduleError(f"segments[{i}]: {exc}") from exc
        return cls(tuple(segments))

    @classmethod
    def from_json(cls, text: str) -> "LinkSchedule":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScheduleError(f"schedule is not valid JSON: {exc}") from exc
        return cls.from_dict(doc)


def fixed(uplink_kbps: Optional[float] = None, delay_ms: float = 0.0) -> LinkSchedule:
    """A link that never changes."""
    return LinkSchedule((Segment(at_s=0.0, uplink_kbps=uplink_kbps, delay_ms=delay_ms),))


def steps(points: Iterable[tuple[float, Optional[float]]], delay_ms: float = 0.0) -> LinkSchedule:
    """A schedule of ``(at_s, uplink_kbps)`` steps; ``uplink_kbps=0`` means an outage."""
    segments = []
    for at_s, kbps in points:
        if kbps == 0:
            segments.append(Segment(at_s=at_s, uplink_kbps=None, delay_ms=delay_ms, up=False))
        else:
            segments.append(Segment(at_s=at_s, uplink_kbps=kbps, delay_ms=delay_ms))
    return LinkSchedule(tuple(segments))


# --------------------------------------------------------------------------- chunk timing


class TokenBucket:
    """A shared serialising link of the schedule's rate: when the last byte given so far leaves.

    Pure: the caller passes the time. ``None`` rates pass bytes through instantly.
    """

    def __init__(self) -> None:
        self.free_at_s = 0.0

    def transmit(self, start_s: float, nbytes: int, uplink_kbps: Optional[float]) -> float:
        begin = max(start_s, self.free_at_s)
        if uplink_kbps is None:
            return begin
        done = begin + nbytes * 8.0 / (uplink_kbps * 1000.0)
        self.free_at_s = done
        return done


class ChunkScheduler:
    """Release times for the chunks of one direction of one connection.

    ``release_s(now_s, nbytes, draw)`` returns when a chunk read at ``now_s`` may be
    written on: after the bytes ahead of it (order is kept), after transmission on
    the shared ``bucket`` when one is given (user-space shaping), plus the one-way
    delay, plus ``stall_ms`` when ``draw`` (uniform in [0, 1), from the caller's
    seeded RNG) falls below the loss probability. A chunk due inside an outage
    leaves when the link returns, plus the delay then in force.
    """

    def __init__(self, schedule: LinkSchedule, bucket: Optional[TokenBucket] = None) -> None:
        self.schedule = schedule
        self.bucket = bucket
        self.last_release_s = 0.0

    def release_s(self, now_s: float, nbytes: int, draw: float) -> float:
        if nbytes < 0:
            raise ScheduleError(f"nbytes={nbytes}; expected >= 0")
        start = self.schedule.next_up_s(now_s)
        if math.isinf(start):
            return math.inf
        state = self.schedule.state_at(start)
        sent = self.bucket.transmit(start, nbytes, state.uplink_kbps) if self.bucket else start
        due = sent + state.delay_ms / 1000.0
        if draw < state.loss_pct / 100.0:
            due += state.stall_ms / 1000.0
        back = self.schedule.next_up_s(due)
        if back != due:  # the link went down while the chunk was in flight
            due = back + self.schedule.state_at(back).delay_ms / 1000.0
        due = max(due, self.last_release_s)
        self.last_release_s = due
        return due


def summarize(schedule: LinkSchedule) -> str:
    """One line per segment, for logs and the results README."""
    parts = []
    for seg in schedule.segments:
        if not seg.up:
            parts.append(f"{seg.at_s:g}s down")
            continue
        rate = "unshaped" if seg.uplink_kbps is None else f"{seg.uplink_kbps / 1000:g} Mbit/s"
        if seg.ramp_to_kbps is not None:
            rate += f"->{seg.ramp_to_kbps / 1000:g}"
        extra = f" +{seg.delay_ms:g}ms" if seg.delay_ms else ""
        extra += f" loss {seg.loss_pct:g}%" if seg.loss_pct else ""
        parts.append(f"{seg.at_s:g}s {rate}{extra}")
    return ", ".join(parts)


def merge_outage_times(spans: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sort and merge overlapping ``(start, end)`` spans."""
    out: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
