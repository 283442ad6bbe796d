"""Link emulation: token bucket and trace tables with an injected clock; the wrapper's waits and outages."""
from __future__ import annotations

import numpy as np
import pytest

from edge_agent.errors import ConfigError, OffloadUnavailable
from edge_agent.link import (
    EmulatedTransport,
    LinkEmulator,
    LinkState,
    LinkTrace,
    TokenBucket,
    load_trace_csv,
    parse_trace_csv,
)
from edge_agent.types import OffloadRequest, OffloadResponse, WireTensor


class FakeClock:
    """A clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now_s = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds


class EchoTransport:
    """An in-memory inner transport: returns the request's id and records when it was called."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, float, float]] = []
        self.closed = False

    def infer(self, request: OffloadRequest, timeout_s: float) -> OffloadResponse:
        self.calls.append((request.request_id, self.clock(), timeout_s))
        return OffloadResponse(request_id=request.request_id, outputs={"y": np.zeros(1, np.float32)})

    def healthy(self, timeout_s: float) -> bool:
        return True

    def model_ready(self, name: str, version: str, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


def _request(nbytes: int, request_id: str = "r") -> OffloadRequest:
    return OffloadRequest("m.cut", "v", request_id, [WireTensor("x", "UINT8", (1, nbytes), b"\0" * nbytes)])


# --------------------------------------------------------------------------- token bucket


@pytest.mark.parametrize(
    "burst, rate, sends, expected_waits",
    [
        # (bytes, at time s) -> seconds until the last byte has left
        (0, 1000.0, [(500, 0.0)], [0.5]),
        (0, 1000.0, [(500, 0.0), (500, 0.0)], [0.5, 1.0]),  # the second queues behind the first
        (0, 1000.0, [(500, 0.0), (500, 2.0)], [0.5, 0.5]),  # idle by t=2: only its own serialization
        (1000, 1000.0, [(800, 0.0), (800, 0.0)], [0.0, 0.6]),  # burst pays for the first, 200 B left
        (1000, 1000.0, [(800, 0.0), (800, 10.0)], [0.0, 0.0]),  # refilled (capped at burst) after idle
        (1000, 1000.0, [(3000, 0.0)], [2.0]),  # bigger than the burst: debt
        (0, 125_000.0, [(125_000, 0.0)], [1.0]),  # 1 Mbit/s, 125 kB = 1 s
    ],
)
def test_token_bucket_table(burst, rate, sends, expected_waits):
    bucket = TokenBucket(burst)
    waits = [bucket.reserve(n, t, rate) for n, t in sends]
    assert waits == pytest.approx(expected_waits)


@pytest.mark.parametrize(
    "rate, sends, expected_waits",
    [
        # the default bucket holds 4 ms of the rate; (bytes, at time s) -> seconds until the last byte left
        (250_000.0, [(3055, 0.0)], [0.008_22]),  # 2 Mbit/s: 3055 B = 12.2 ms, minus 4 ms (the 1000 B burst)
        (125_000.0, [(3055, 0.0)], [0.020_44]),  # 1 Mbit/s: 24.4 ms - 4 ms
        (250_000.0, [(24_227, 0.0)], [0.092_908]),  # the model-size JPEG at 2 Mbit/s: 96.9 ms - 4 ms
        (250_000.0, [(500, 0.0)], [0.0]),  # within the burst: leaves at once
        (250_000.0, [(3055, 0.0), (3055, 0.0)], [0.008_22, 0.020_44]),  # back to back: the second queues
        (250_000.0, [(3055, 0.0), (3055, 1.0)], [0.008_22, 0.008_22]),  # idle: refilled to 4 ms, not more
    ],
)
def test_default_bucket_is_four_ms_of_the_rate(rate, sends, expected_waits):
    bucket = TokenBucket()
    waits = [bucket.reserve(n, t, rate) for n, t in sends]
    assert waits == pytest.approx(expected_waits)


def test_default_bucket_follows_a_rate_change():
    bucket = TokenBucket()
    assert bucket.reserve(10_000, 0.0, 12_500_000.0) == 0.0  # 100 Mbit/s: 50 kB burst
    # 10 s later at 400 kbit/s the bucket holds 4 ms of the new rate (200 B), not the old 50 kB
    assert bucket.reserve(2200, 10.0, 50_000.0) == pytest.approx(0.04)


@pytest.mark.parametrize("kwargs, match", [({"burst_bytes": -1}, "burst_bytes -1"), ({"burst_ms": -1.0}, "burst_ms")])
def test_token_bucket_rejects_bad_bursts(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TokenBucket(**kwargs)


def test_token_bucket_rejects_zero_rate():
    with pytest.raises(ValueError, match="must be > 0"):
        TokenBucket(0).reserve(10, 0.0, 0.0)


# --------------------------------------------------------------------------- traces

TRACE = """time_s,uplink_kbps,delay_ms,up
0,8000,5,1
10,400,20,1
20,,0,0
25,8000,5,up
"""


@pytest.mark.parametrize(
    "t_s, kbps, delay_ms, up",
    [
        (0.0, 8000.0, 5.0, True),
        (9.999, 8000.0, 5.0, True),
        (10.0, 400.0, 20.0, True),
        (19.0, 400.0, 20.0, True),
        (20.0, None, 0.0, False),
        (24.9, None, 0.0, False),
        (25.0, 8000.0, 5.0, True),
        (1000.0, 8000.0, 5.0, True),  # the last row holds
        (-1.0, 8000.0, 5.0, True),
    ],
)
def test_trace_state_at(t_s, kbps, delay_ms, up):
    state = parse_trace_csv(TRACE).state_at(t_s)
    assert (state.uplink_kbps, state.delay_ms, state.up) == (kbps, delay_ms, up)


def test_looping_trace_repeats_with_the_last_rows_length():
    trace = parse_trace_csv(TRACE, loop=True)
    assert trace.period_s == 30.0
    assert trace.state_at(30.0 + 12.0).uplink_kbps == 400.0
    assert trace.state_at(60.0 + 21.0).up is False


def test_load_trace_csv_from_file(tmp_path):
    path = tmp_path / "link.csv"
    path.write_text(TRACE)
    assert [s.time_s for s in load_trace_csv(path).states] == [0.0, 10.0, 20.0, 25.0]


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty link trace"),
        ("time,kbps,delay,up\n0,1,1,1\n", "header"),
        ("time_s,uplink_kbps,delay_ms,up\n0,100,5\n", "row 2 has 3 columns"),
        ("time_s,uplink_kbps,delay_ms,up\n0,-5,5,1\n", "uplink_kbps -5.0 must be > 0"),
        ("time_s,uplink_kbps,delay_ms,up\n0,100,5,maybe\n", "'maybe' is not 1/0"),
        ("time_s,uplink_kbps,delay_ms,up\n0,100,5,1\n0,100,5,1\n", "must increase"),
        ("time_s,uplink_kbps,delay_ms,up\n3,100,5,1\n", "must start at time_s 0"),
        ("time_s,uplink_kbps,delay_ms,up\n0,fast,5,1\n", "row 2"),
    ],
)
def test_bad_traces_name_the_problem(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_trace_csv(text)


def test_missing_trace_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read link trace"):
        load_trace_csv(tmp_path / "nope.csv")


# --------------------------------------------------------------------------- the wrapper


def test_wrapper_shapes_delays_and_reports_round_trip():
    clock = FakeClock()
    inner = EchoTransport(clock)
    link = EmulatedTransport(
        inner, LinkEmulator(LinkTrace.fixed(uplink_kbps=80.0, delay_ms=20.0), burst_bytes=0), clock=clock, sleep=clock.sleep
    )
    # 1000 bytes at 80 kbit/s (10 kB/s) = 100 ms serialization, +20 ms each way
    response = link.infer(_request(1000, "a"), timeout_s=5.0)
    assert response.request_id == "a"
    assert clock.sleeps == pytest.approx([0.12, 0.02])
    assert inner.calls[0][1] == pytest.approx(100.12)  # the server saw it after shaping + delay
    assert response.round_trip_ms == pytest.approx(140.0)


def test_wrapper_paces_a_small_payload_at_the_rate_by_default():
    """The default bucket (4 ms of the rate): 3055 B at 2 Mbit/s take ~N/rate, not ~0 as under a 16 kB burst."""
    clock = FakeClock()
    inner = EchoTransport(clock)
    link = EmulatedTransport(inner, LinkEmulator(LinkTrace.fixed(uplink_kbps=2000.0, delay_ms=10.0)),
                             clock=clock, sleep=clock.sleep)
    trips_ms = [link.infer(_request(3055), timeout_s=5.0).round_trip_ms for _ in range(3)]
    # 12.22 ms of serialization less the 4 ms burst, + 2 x 10 ms; each one, since a round trip refills only 4 ms
    assert trips_ms == pytest.approx([12.22 - 4.0 + 20.0] * 3)


def test_wrapper_follows_the_trace_over_time():
    clock = FakeClock()
    inner = EchoTransport(clock)
    trace = parse_trace_csv(TRACE)
    link = EmulatedTransport(inner, LinkEmulator(trace, burst_bytes=0), clock=clock, sleep=clock.sleep)
    fast = link.infer(_request(10_000), timeout_s=60.0).round_trip_ms  # 8 Mbit/s: 10 ms + 2 * 5 ms
    clock.now_s = link.start_s + 12.0
    slow = link.infer(_request(10_000), timeout_s=60.0).round_trip_ms  # 400 kbit/s: 200 ms + 2 * 20 ms
    assert fast == pytest.approx(20.0)
    assert slow == pytest.approx(240.0)


def test_wrapper_outage_raises_offload_unavailable_without_calling_the_server():
    clock = FakeClock()
    inner = EchoTransport(clock)
    link = EmulatedTransport(inner, LinkEmulator(parse_trace_csv(TRACE)), clock=clock, sleep=clock.sleep)
    clock.now_s = link.start_s + 21.0
    with pytest.raises(OffloadUnavailable, match="emulated link is down") as info:
        link.infer(_request(100, "lost"), timeout_s=1.0)
    assert info.value.code == "UNAVAILABLE"
    assert inner.calls == []
    assert link.healthy(1.0) is False
    clock.now_s = link.start_s + 26.0
    assert link.healthy(1.0) is True
    assert link.infer(_request(100, "back"), timeout_s=1.0).request_id == "back"


def test_wrapper_deadline_exceeded_when_the_link_is_too_slow():
    clock = FakeClock()
    inner = EchoTransport(clock)
    link = EmulatedTransport(
        inner, LinkEmulator(LinkTrace.fixed(uplink_kbps=8.0), burst_bytes=0), clock=clock, sleep=clock.sleep
    )
    with pytest.raises(OffloadUnavailable, match="over the 500 ms deadline") as info:
        link.infer(_request(10_000), timeout_s=0.5)  # needs 10 s
    assert info.value.code == "DEADLINE_EXCEEDED"
    assert clock.sleeps == [0.5]  # it waited out the deadline, as a real call would
    assert inner.calls == []


def test_wrapper_close_closes_inner():
    clock = FakeClock()
    inner = EchoTransport(clock)
    EmulatedTransport(inner, LinkEmulator(LinkTrace.fixed()), clock=clock, sleep=clock.sleep).close()
    assert inner.closed


def test_link_state_validation():
    with pytest.raises(ConfigError, match="delay_ms"):
        LinkState(delay_ms=-1)
    assert LinkState(uplink_kbps=500, delay_ms=10).describe() == "500 kbps, +10 ms one-way"
    assert LinkState(up=False).describe() == "down"


def test_outage_windows_and_jitter_on_top_of_a_trace():
    import random

    emulator = LinkEmulator(
        LinkTrace.fixed(uplink_kbps=None, delay_ms=10.0), outages=[(5.0, 2.0)], jitter_ms=4.0, rng=random.Random(1)
    )
    assert emulator.plan(100, 4.9).up and not emulator.plan(100, 5.0).up and not emulator.plan(100, 6.99).up
    plans = [emulator.plan(100, 7.0 + i) for i in range(20)]
    assert all(p.up for p in plans)
    delays = [p.delay_s for p in plans]
    assert all(0.010 <= d <= 0.014 for d in delays) and len(set(delays)) > 1


@pytest.mark.parametrize("outage", [(-1.0, 1.0), (1.0, 0.0)])
def test_bad_outage_windows_are_rejected(outage):
    with pytest.raises(ConfigError, match="outage"):
        LinkEmulator(LinkTrace.fixed(), outages=[outage])


def test_wrap_transport_from_config_is_off_by_default(tmp_path):
    from edge_agent.config import LinkConfig
    from edge_agent.link import wrap_transport_from_config

    inner = EchoTransport(FakeClock())
    assert wrap_transport_from_config(inner, LinkConfig()) is inner
    path = tmp_path / "t.csv"
    path.write_text(TRACE)
    wrapped = wrap_transport_from_config(inner, LinkConfig(enabled=True, trace_file=path, outages=((1.0, 1.0),)))
    assert isinstance(wrapped, EmulatedTransport)
    assert wrapped.emulator.state_at(0.0).uplink_kbps == 8000.0
    assert wrapped.emulator.state_at(1.5).up is False
    assert wrapped.emulator.state_at(21.0).up is False


def test_health_check_pays_the_link_delay_both_ways():
    clock = FakeClock()
    link = EmulatedTransport(EchoTransport(clock), LinkEmulator(parse_trace_csv(TRACE)), clock=clock, sleep=clock.sleep)
    clock.now_s = link.start_s + 12.0  # the slow phase: 20 ms one-way delay
    start = clock()
    assert link.healthy(1.0) is True
    assert (clock() - start) * 1000.0 == pytest.approx(40.0)
    clock.now_s = link.start_s + 12.0
    assert link.healthy(0.030) is False  # 40 ms round trip cannot fit a 30 ms timeout
