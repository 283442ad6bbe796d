"""Link emulation for demos and tests: a slow, lossy uplink without root or ``tc``.

This is **emulation**, not a network: it wraps a real :class:`~edge_agent.types.Transport`
and delays each request in user space before handing it on. It is off by default;
the daemon uses it only when the config (or ``splitinfer demo``) asks for it.

What it models, per request:

* **uplink shaping** — a token bucket refilled at ``uplink_kbps`` (kilobits per second,
  1 kbit = 1000 bits); a request of ``wire_bytes`` waits until the bucket has paid for it,
  i.e. until its last byte has left. The bucket holds ``DEFAULT_BURST_MS`` (4 ms) of the
  rate unless ``burst_bytes`` is given, so a transfer of N bytes takes about N / rate
  (at least N / rate - 4 ms), as on a real slow link: a bucket of a fixed 16 kB let every
  payload below that leave at once and the agent read 2 Mbit/s as 4-8 Mbit/s. Requests
  queue behind each other. The downlink is not shaped (results are a few kilobytes).
* **one-way delay** — ``delay_ms`` is added before the request leaves and again before
  the response is returned, so the round trip grows by ``2 * delay_ms``.
* **outages** — while the link is down, :meth:`EmulatedTransport.infer` raises
  :class:`~edge_agent.errors.OffloadUnavailable` at once and ``healthy`` is false.

The link follows either fixed values (:meth:`LinkTrace.fixed`) or a trace, a CSV file
with the header ``time_s,uplink_kbps,delay_ms,up``; each row holds from its ``time_s``
until the next row (the last row holds forever, or the trace repeats with ``loop``).
An empty ``uplink_kbps`` means unshaped. ``up`` is ``1``/``0`` (also ``true``/``false``,
``up``/``down``).

The pure parts (:class:`LinkTrace`, :class:`TokenBucket`, :class:`LinkEmulator`) take
times as arguments and never sleep; only :class:`EmulatedTransport` reads a clock and
sleeps, and both are injectable for tests. Limits: an outage that starts while a
request is already waiting does not abort it; shaping follows the rate at the moment
a request arrives, not rate changes during its transmission.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
import random
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from edge_agent.errors import ConfigError, OffloadUnavailable
from edge_agent.types import OffloadRequest, OffloadResponse, Transport

if TYPE_CHECKING:
    from edge_agent.config import LinkConfig

log = logging.getLogger(__name__)

TRACE_HEADER = ("time_s", "uplink_kbps", "delay_ms", "up")
_TRUE = {"1", "true", "up", "yes"}
_FALSE = {"0", "false", "down", "no"}


@dataclass(frozen=True)
class LinkState:
    """The link's condition from ``time_s`` on; ``uplink_kbps`` None means unshaped."""

    time_s: float = 0.0
    uplink_kbps: Optional[float] = None
    delay_ms: float = 0.0
    up: bool = True

    def __post_init__(self) -> None:
        if not math.isfinite(self.time_s) or self.time_s < 0:
            raise ConfigError(f"link time_s {self.time_s!r} must be a finite number >= 0")
        if self.uplink_kbps is not None and not (self.uplink_kbps > 0 and math.isfinite(self.uplink_kbps)):
            raise ConfigError(f"link uplink_kbps {self.uplink_kbps!r} must be > 0 (leave it empty for unshaped)")
        if not (self.delay_ms >= 0 and math.isfinite(self.delay_ms)):
            raise ConfigError(f"link delay_ms {self.delay_ms!r} must be a finite number >= 0")

    def describe(self) -> str:
        if not self.up:
            return "down"
        rate = "unshaped" if self.uplink_kbps is None else f"{self.uplink_kbps:g} kbps"
        return f"{rate}, +{self.delay_ms:g} ms one-way"


class LinkTrace:
    """A step function of time -> :class:`LinkState`."""

    def __init__(self, states: Sequence[LinkState], *, loop: bool = False) -> None:
        if not states:
            raise ConfigError("a link trace needs at least one row")
        times = [s.time_s for s in states]
        if times[0] != 0.0:
            raise ConfigError(f"a link trace must start at time_s 0, not {times[0]:g}")
        for earlier, later in zip(times, times[1:]):
            if later <= earlier:
                raise ConfigError(f"link trace times must increase; {later:g} follows {earlier:g}")
        self.states = tuple(states)
        self.loop = loop
        # for a looping trace, the period is the last row's start plus the previous row's length
        last_len = (times[-1] - times[-2]) if len(times) > 1 else 1.0
        self.period_s = times[-1] + last_len

    @classmethod
    def fixed(cls, *, uplink_kbps: Optional[float] = None, delay_ms: float = 0.0, up: bool = True) -> "LinkTrace":
        return cls([LinkState(0.0, uplink_kbps, delay_ms, up)])

    def state_at(self, t_s: float) -> LinkState:
        """The state in force at ``t_s`` seconds after the trace started."""
        if t_s < 0:
            t_s = 0.0
        if self.loop and len(self.states) > 1:
            t_s = math.fmod(t_s, self.period_s)
        current = self.states[0]
        for state in self.states:
            if state.time_s <= t_s:
                current = state
            else:
                break
        return current

    @property
    def duration_s(self) -> float:
        """Start of the last row (where a non-looping trace stops changing)."""
        return self.states[-1].time_s


def parse_trace_csv(text: str, *, source: str = "trace", loop: bool = False) -> LinkTrace:
    """Parse ``time_s,uplink_kbps,delay_ms,up`` CSV text; ConfigError names the row and value."""
    reader = csv.reader(io.StringIO(text))
    rows = [row for row in reader if row and not row[0].lstrip().startswith("#")]
    if not rows:
        raise ConfigError(f"{source}: empty link trace; expected the header {','.join(TRACE_HEADER)}")
    header = tuple(cell.strip() for cell in rows[0])
    if header != TRACE_HEADER:
        raise ConfigError(f"{source}: header {','.join(header)!r} is not {','.join(TRACE_HEADER)!r}")
    states = []
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != 4:
            raise ConfigError(f"{source}: row {lineno} has {len(row)} columns; expected 4 ({','.join(TRACE_HEADER)})")
        time_s, kbps, delay, up = (cell.strip() for cell in row)
        try:
            state = LinkState(
                time_s=float(time_s),
                uplink_kbps=float(kbps) if kbps else None,
                delay_ms=float(delay) if delay else 0.0,
                up=_parse_up(up),
            )
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"{source}: row {lineno} {','.join(row)!r}: {exc}") from exc
        states.append(state)
    try:
        return LinkTrace(states, loop=loop)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def _parse_up(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE or lowered == "":
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"up {value!r} is not 1/0, true/false or up/down")


def load_trace_csv(path: str | os.PathLike[str], *, loop: bool = False) -> LinkTrace:
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read link trace {str(path)!r}: {exc.strerror}") from exc
    return parse_trace_csv(text, source=str(path), loop=loop)


#: The emulated bucket's depth in time at the current rate. The namespace testbed's tbf uses 4 ms
#: of the rate too (deploy/testbed/setup.sh), floored at two full packets because tbf cannot pass a
#: packet bigger than its bucket; this emulator charges whole requests, so it needs no such floor
#: (with one, a 3 kB codec payload would cross a 1 Mbit/s link in ~0 ms instead of ~24 ms).
DEFAULT_BURST_MS = 4.0


class TokenBucket:
    """A token bucket in bytes; pure arithmetic over caller-supplied times.

    The bucket holds up to ``burst_bytes`` tokens, or ``burst_ms`` of the rate given with each
    call when ``burst_bytes`` is None (so the burst follows the rate as a trace changes it); it
    starts full and is refilled at that rate. Sending more than the bucket holds drives it into
    debt, and the returned wait is how long until that debt is paid, i.e. when the last byte has left.
    """

    def __init__(self, burst_bytes: Optional[int] = None, *, burst_ms: float = DEFAULT_BURST_MS) -> None:
        if burst_bytes is not None and burst_bytes < 0:
            raise ConfigError(f"burst_bytes {burst_bytes} must be >= 0 (or None for {burst_ms:g} ms of the rate)")
        if not (burst_ms >= 0 and math.isfinite(burst_ms)):
            raise ConfigError(f"burst_ms {burst_ms!r} must be a finite number >= 0")
        self.burst_bytes = None if burst_bytes is None else float(burst_bytes)
        self.burst_ms = float(burst_ms)
        self.tokens: Optional[float] = None  # full at the first reservation (its capacity needs the rate)
        self._last_s: Optional[float] = None

    def capacity_bytes(self, rate_bytes_per_s: float) -> float:
        """How many bytes the bucket holds at this rate."""
        if self.burst_bytes is not None:
            return self.burst_bytes
        return rate_bytes_per_s * self.burst_ms / 1000.0

    def reserve(self, nbytes: int, now_s: float, rate_bytes_per_s: float) -> float:
        """Take ``nbytes`` at ``now_s``; return seconds until they have been transmitted."""
        if rate_bytes_per_s <= 0:
            raise ValueError(f"rate {rate_bytes_per_s} bytes/s must be > 0")
        capacity = self.capacity_bytes(rate_bytes_per_s)
        tokens = capacity if self.tokens is None else self.tokens
        if self._last_s is not None and now_s > self._last_s:
            tokens = min(capacity, tokens + (now_s - self._last_s) * rate_bytes_per_s)
        if self._last_s is None or now_s > self._last_s:
            self._last_s = now_s
        self.tokens = min(tokens, capacity) - nbytes
        return max(0.0, -self.tokens / rate_bytes_per_s)


@dataclass(frozen=True)
class LinkPlan:
    """What the emulator decided for one request."""

    up: bool
    shaping_s: float  # waiting for the bucket (queueing + serialization)
    delay_s: float  # one-way delay, applied in each direction
    state: LinkState


class LinkEmulator:
    """Trace + bucket (+ outage windows and delay jitter): decides each request's waits
    from its size and time. Thread-safe; no clock of its own.

    ``outages`` are ``(start_s, duration_s)`` windows on the emulation's own time axis
    (not folded by a looping trace); ``jitter_ms`` adds a uniform ``[0, jitter_ms]`` to the
    one-way delay of each request, drawn from ``rng`` (seed it for repeatable runs).
    """

    def __init__(
        self,
        trace: LinkTrace,
        *,
        burst_bytes: Optional[int] = None,
        outages: Sequence[tuple[float, float]] = (),
        jitter_ms: float = 0.0,
        rng: Optional[random.Random] = None,
    ) -> None:
        for start_s, duration_s in outages:
            if start_s < 0 or duration_s <= 0:
                raise ConfigError(f"outage ({start_s}, {duration_s}) needs start_s >= 0 and duration_s > 0")
        if jitter_ms < 0:
            raise ConfigError(f"jitter_ms {jitter_ms} must be >= 0")
        self.trace = trace
        self.outages = tuple((float(a), float(b)) for a, b in outages)
        self.jitter_ms = float(jitter_ms)
        self._rng = rng or random.Random(0)
        self._bucket = TokenBucket(burst_bytes)
        self._lock = threading.Lock()

    def state_at(self, t_s: float) -> LinkState:
        """The trace's state at ``t_s``, marked down inside an outage window."""
        state = self.trace.state_at(t_s)
        if state.up and any(start <= t_s < start + duration for start, duration in self.outages):
            return replace(state, up=False)
        return state

    def plan(self, nbytes: int, t_s: float) -> LinkPlan:
        """The plan for ``nbytes`` sent ``t_s`` seconds after the emulation started."""
        state = self.state_at(t_s)
        if not state.up:
            return LinkPlan(up=False, shaping_s=0.0, delay_s=0.0, state=state)
        shaping_s = 0.0
        with self._lock:
            if state.uplink_kbps is not None:
                shaping_s = self._bucket.reserve(nbytes, t_s, state.uplink_kbps * 1000.0 / 8.0)
            jitter_ms = self._rng.uniform(0.0, self.jitter_ms) if self.jitter_ms else 0.0
        return LinkPlan(up=True, shaping_s=shaping_s, delay_s=(state.delay_ms + jitter_ms) / 1000.0, state=state)


class EmulatedTransport:
    """A :class:`Transport` that sends through an emulated link, then through ``inner``.

    ``clock`` (seconds, monotonic) and ``sleep`` are injectable; the trace's time 0 is
    the clock reading at construction (or the ``start_s`` given).
    """

    def __init__(
        self,
        inner: Transport,
        emulator: LinkEmulator,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        start_s: Optional[float] = None,
    ) -> None:
        self.inner = inner
        self.emulator = emulator
        self._clock = clock
        self._sleep = sleep
        self.start_s = clock() if start_s is None else start_s

    def elapsed_s(self) -> float:
        return self._clock() - self.start_s

    def current_state(self) -> LinkState:
        return self.emulator.state_at(self.elapsed_s())

    def infer(self, request: OffloadRequest, timeout_s: float) -> OffloadResponse:
        started = self._clock()
        plan = self.emulator.plan(request.wire_bytes, started - self.start_s)
        if not plan.up:
            raise OffloadUnavailable(f"emulated link is down (request {request.request_id})", code="UNAVAILABLE")
        before_s = plan.shaping_s + plan.delay_s
        if before_s + plan.delay_s > timeout_s:
            self._sleep(max(0.0, timeout_s))
            raise OffloadUnavailable(
                f"emulated link: {request.wire_bytes} bytes at {plan.state.describe()} need "
                f"{(before_s + plan.delay_s) * 1000:.0f} ms, over the {timeout_s * 1000:.0f} ms deadline",
                code="DEADLINE_EXCEEDED",
            )
        if before_s > 0:
            self._sleep(before_s)
        remaining_s = timeout_s - (self._clock() - started) - plan.delay_s
        response = self.inner.infer(request, max(remaining_s, 0.001))
        if plan.delay_s > 0:
            self._sleep(plan.delay_s)
        return replace(response, round_trip_ms=(self._clock() - started) * 1000.0)

    def healthy(self, timeout_s: float) -> bool:
        """A health check crosses the emulated link too: it pays the one-way delay both ways."""
        plan = self.emulator.plan(0, self.elapsed_s())
        if not plan.up:
            return False
        if 2 * plan.delay_s > timeout_s:
            self._sleep(max(0.0, timeout_s))
            return False
        if plan.delay_s > 0:
            self._sleep(plan.delay_s)
        ok = self.inner.healthy(timeout_s)
        if plan.delay_s > 0:
            self._sleep(plan.delay_s)
        return ok

    def model_ready(self, name: str, version: str, timeout_s: float) -> bool:
        """Like :meth:`healthy`: the question crosses the emulated link both ways."""
        plan = self.emulator.plan(0, self.elapsed_s())
        if not plan.up or 2 * plan.delay_s > timeout_s:
            return False
        if plan.delay_s > 0:
            self._sleep(plan.delay_s)
        ready = self.inner.model_ready(name, version, timeout_s)
        if plan.delay_s > 0:
            self._sleep(plan.delay_s)
        return ready

    def close(self) -> None:
        self.inner.close()


def emulate(
    inner: Transport,
    *,
    trace: Optional[LinkTrace] = None,
    uplink_kbps: Optional[float] = None,
    delay_ms: float = 0.0,
    jitter_ms: float = 0.0,
    outages: Sequence[tuple[float, float]] = (),
    burst_bytes: Optional[int] = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> EmulatedTransport:
    """Wrap ``inner`` in an emulated link following ``trace`` or the fixed values given."""
    if trace is None:
        trace = LinkTrace.fixed(uplink_kbps=uplink_kbps, delay_ms=delay_ms)
    emulator = LinkEmulator(trace, burst_bytes=burst_bytes, outages=outages, jitter_ms=jitter_ms)
    return EmulatedTransport(inner, emulator, clock=clock, sleep=sleep)


def wrap_transport_from_config(inner: Transport, link: "LinkConfig") -> Transport:
    """``inner`` unchanged unless ``link.enabled``; else wrapped as the ``[link]`` section says
    (``trace_file`` wins over the fixed ``uplink_kbps``/``delay_ms``; ``outages`` and
    ``jitter_ms`` apply either way). Time 0 is the moment of wrapping."""
    if not link.enabled:
        return inner
    trace = load_trace_csv(link.trace_file) if link.trace_file is not None else None
    wrapped = emulate(
        inner,
        trace=trace,
        uplink_kbps=link.uplink_kbps,
        delay_ms=link.delay_ms,
        jitter_ms=link.jitter_ms,
        outages=link.outages,
        burst_bytes=link.burst_bytes,
    )
    log.warning("link emulation is ON: %s", describe_emulation(wrapped))
    return wrapped


def describe_emulation(transport: EmulatedTransport) -> str:
    em = transport.emulator
    parts = [f"trace of {len(em.trace.states)} rows" if len(em.trace.states) > 1 else em.trace.states[0].describe()]
    if em.outages:
        parts.append("outages " + ", ".join(f"{a:g}s+{b:g}s" for a, b in em.outages))
    if em.jitter_ms:
        parts.append(f"jitter {em.jitter_ms:g} ms")
    return "; ".join(parts)
