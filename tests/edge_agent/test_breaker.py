"""Circuit breaker: transition tables with explicit time, whole state asserted after each event."""
from __future__ import annotations

import pytest

from edge_agent.breaker import BreakerConfig, BreakerState, CircuitBreaker

C, O, H = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
CFG = BreakerConfig(failure_threshold=3, initial_backoff_ms=100, max_backoff_ms=400, multiplier=2.0)

# (event, now_ms) -> (state, consecutive failures, backoff_ms, retry_at_ms, offload allowed)
TABLES = {
    "opens after threshold failures, closes after a healthy probe": [
        (("fail", 0), (C, 1, 100, None, True)),
        (("fail", 10), (C, 2, 100, None, True)),
        (("fail", 20), (O, 3, 100, 120, False)),
        (("poll", 119), (O, 3, 100, 120, False)),
        (("poll", 120), (H, 3, 100, 120, False)),
        (("probe", 121), (H, 3, 100, 120, False)),
        (("ok", 130), (C, 0, 100, None, True)),
    ],
    "a success in between resets the count": [
        (("fail", 0), (C, 1, 100, None, True)),
        (("fail", 1), (C, 2, 100, None, True)),
        (("ok", 2), (C, 0, 100, None, True)),
        (("fail", 3), (C, 1, 100, None, True)),
    ],
    "failed probes double the backoff up to the cap; recovery resets it": [
        (("fail", 0), (C, 1, 100, None, True)),
        (("fail", 0), (C, 2, 100, None, True)),
        (("fail", 0), (O, 3, 100, 100, False)),
        (("probe", 100), (H, 3, 100, 100, False)),
        (("fail", 105), (O, 3, 200, 305, False)),
        (("probe", 305), (H, 3, 200, 305, False)),
        (("fail", 306), (O, 3, 400, 706, False)),
        (("probe", 706), (H, 3, 400, 706, False)),
        (("fail", 706), (O, 3, 400, 1106, False)),
        (("probe", 1106), (H, 3, 400, 1106, False)),
        (("ok", 1110), (C, 0, 100, None, True)),
    ],
    "late results while open are ignored": [
        (("fail", 0), (C, 1, 100, None, True)),
        (("fail", 0), (C, 2, 100, None, True)),
        (("fail", 0), (O, 3, 100, 100, False)),
        (("ok", 50), (O, 3, 100, 100, False)),
        (("fail", 60), (O, 3, 100, 100, False)),
    ],
}


@pytest.mark.parametrize("name", list(TABLES))
def test_breaker_table(name: str) -> None:
    b = CircuitBreaker(CFG)
    for (event, now), (state, fails, backoff, retry_at, allowed) in TABLES[name]:
        if event == "fail":
            b.record_failure(now)
        elif event == "ok":
            b.record_success(now)
        elif event == "probe":
            assert b.begin_probe(now) is True
        else:
            b.poll(now)
        assert (b.state, b.consecutive_failures, b.backoff_ms, b.retry_at_ms) == (state, fails, backoff, retry_at), (event, now)
        assert b.allows_offload(now) is allowed


def test_probe_runs_once_per_half_open_period() -> None:
    b = CircuitBreaker(BreakerConfig(failure_threshold=1, initial_backoff_ms=10, max_backoff_ms=10))
    assert b.begin_probe(0) is False  # closed: nothing to probe
    b.record_failure(0)
    assert b.begin_probe(5) is False  # still backing off
    assert b.begin_probe(10) is True
    assert b.begin_probe(11) is False  # one probe at a time
    b.record_failure(12)
    assert b.begin_probe(22) is True
    assert b.opened_count == 2


@pytest.mark.parametrize("kwargs", [
    {"failure_threshold": 0},
    {"initial_backoff_ms": 0},
    {"initial_backoff_ms": 500, "max_backoff_ms": 100},
    {"multiplier": 0.5},
])
def test_bad_breaker_config(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        BreakerConfig(**kwargs)


def test_trip_opens_at_once_and_counts_as_a_failed_probe_when_half_open() -> None:
    b = CircuitBreaker(CFG)
    assert b.trip(0) is O and b.retry_at_ms == 100 and not b.allows_offload(50)
    assert b.begin_probe(100)
    assert b.trip(101) is O and b.backoff_ms == 200 and b.retry_at_ms == 301
    assert b.trip(150) is O and b.retry_at_ms == 301  # ignored while open
