"""A pure circuit breaker with exponential backoff for the offload path.

It never touches a socket or a clock: the caller passes ``now_ms`` (from
``time.monotonic()``) with every event and asks what to do. Transitions::

    state      event                                    next state   effect
    ---------  ---------------------------------------  -----------  ------------------------------
    CLOSED     success                                  CLOSED       consecutive failures = 0
    CLOSED     failure (< failure_threshold in a row)   CLOSED       count it
    CLOSED     failure (= failure_threshold in a row)   OPEN         retry_at = now + backoff
    CLOSED     trip (a failure retrying cannot fix)     OPEN         retry_at = now + backoff
    OPEN       poll, now <  retry_at                    OPEN         -
    OPEN       poll, now >= retry_at                    HALF_OPEN    one health probe may run
    OPEN       success / failure (late, in flight)      OPEN         ignored
    HALF_OPEN  begin_probe (first time)                 HALF_OPEN    returns True: run the probe
    HALF_OPEN  success (probe ok)                       CLOSED       backoff reset to initial
    HALF_OPEN  failure (probe failed)                   OPEN         backoff x multiplier (capped)

Offloads are allowed only while CLOSED; in HALF_OPEN the daemon runs one health probe
(``Transport.healthy``) and reports its outcome. The breaker never raises on an event
in the wrong state; it simply follows the table.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, kw_only=True)
class BreakerConfig:
    """The one definition of the breaker's defaults (``[runtime] breaker_*`` in edge.toml).

    failure_threshold   consecutive offload failures that open the circuit; default 3
    initial_backoff_ms  first wait before a health probe; default 500 ms
    max_backoff_ms      cap of the doubling wait; default 2000 ms: a probe is one tiny
                        ServerReady call, cheap enough to bound recovery at ~2 s
    multiplier          backoff growth per failed probe; default 2
    """

    failure_threshold: int = 3
    initial_backoff_ms: int = 500
    max_backoff_ms: int = 2_000
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError(f"failure_threshold {self.failure_threshold} must be >= 1")
        if not 0 < self.initial_backoff_ms <= self.max_backoff_ms:
            raise ValueError(
                f"initial_backoff_ms {self.initial_backoff_ms} must be > 0 and <= max_backoff_ms {self.max_backoff_ms}"
            )
        if self.multiplier < 1:
            raise ValueError(f"multiplier {self.multiplier} must be >= 1")


class CircuitBreaker:
    """State, consecutive failures, current backoff and the time the next probe is due."""

    def __init__(self, config: BreakerConfig = BreakerConfig()) -> None:
        self.config = config
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.backoff_ms = config.initial_backoff_ms
        self.retry_at_ms: int | None = None
        self.opened_count = 0
        self._probe_running = False

    def poll(self, now_ms: int) -> BreakerState:
        """Advance OPEN -> HALF_OPEN when the backoff has elapsed; return the state."""
        if self.state is BreakerState.OPEN and self.retry_at_ms is not None and now_ms >= self.retry_at_ms:
            self.state = BreakerState.HALF_OPEN
            self._probe_running = False
        return self.state

    def allows_offload(self, now_ms: int) -> bool:
        return self.poll(now_ms) is BreakerState.CLOSED

    def begin_probe(self, now_ms: int) -> bool:
        """True exactly once per HALF_OPEN period: the caller should run a health probe now."""
        if self.poll(now_ms) is BreakerState.HALF_OPEN and not self._probe_running:
            self._probe_running = True
            return True
        return False

    def record_success(self, now_ms: int) -> BreakerState:
        if self.state is BreakerState.CLOSED:
            self.consecutive_failures = 0
        elif self.state is BreakerState.HALF_OPEN:
            self.state = BreakerState.CLOSED
            self.consecutive_failures = 0
            self.backoff_ms = self.config.initial_backoff_ms
            self.retry_at_ms = None
            self._probe_running = False
        return self.state

    def record_failure(self, now_ms: int) -> BreakerState:
        if self.state is BreakerState.CLOSED:
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.config.failure_threshold:
                self._open(now_ms)
        elif self.state is BreakerState.HALF_OPEN:
            self.backoff_ms = min(int(self.backoff_ms * self.config.multiplier), self.config.max_backoff_ms)
            self._open(now_ms)
        return self.state

    def trip(self, now_ms: int) -> BreakerState:
        """A failure that retrying cannot fix (not found, not authorized): open now if closed."""
        if self.state is BreakerState.CLOSED:
            self.consecutive_failures += 1
            self._open(now_ms)
        elif self.state is BreakerState.HALF_OPEN:
            return self.record_failure(now_ms)
        return self.state

    def _open(self, now_ms: int) -> None:
        self.state = BreakerState.OPEN
        self.retry_at_ms = now_ms + self.backoff_ms
        self.opened_count += 1
        self._probe_running = False
