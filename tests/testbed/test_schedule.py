from __future__ import annotations

import math

import pytest

from benchmarks.testbed.schedule import (
    ChunkScheduler,
    LinkSchedule,
    ScheduleError,
    Segment,
    TokenBucket,
    fixed,
    steps,
    summarize,
)


def varying() -> LinkSchedule:
    return LinkSchedule((
        Segment(at_s=0, uplink_kbps=30_000, delay_ms=10),
        Segment(at_s=5, uplink_kbps=3_000, delay_ms=10, ramp_to_kbps=1_000),
        Segment(at_s=9, uplink_kbps=1_000, up=False),
        Segment(at_s=19, uplink_kbps=10_000, delay_ms=20, loss_pct=50),
    ))


def test_state_at_follows_segments_and_ramps() -> None:
    s = varying()
    assert s.state_at(0).uplink_kbps == 30_000
    assert s.state_at(4.99).delay_ms == 10
    assert s.state_at(5).uplink_kbps == pytest.approx(3_000)
    assert s.state_at(7).uplink_kbps == pytest.approx(2_000)  # halfway down the ramp
    assert s.state_at(10).up is False
    assert s.state_at(100).uplink_kbps == 10_000 and s.state_at(100).loss_pct == 50
    assert s.state_at(-3) == s.state_at(0)


def test_outages_and_next_up() -> None:
    s = varying()
    assert s.outages() == [(9, 19)]
    assert s.next_up_s(3) == 3
    assert s.next_up_s(12) == 19
    forever = steps([(0, 1000), (2, 0)])
    assert forever.outages() == [(2, math.inf)]
    assert forever.next_up_s(5) == math.inf


def test_rate_steps_turn_ramps_into_steps() -> None:
    got = varying().rate_steps(step_s=1.0)
    assert got[0] == (0, 30_000)
    assert got[1] == (5, 3_000)
    assert got[2] == (6, pytest.approx(2_500))
    assert got[-1] == (19, 10_000)
    assert [t for t, _ in got] == sorted(t for t, _ in got)
    with pytest.raises(ScheduleError, match="step_s"):
        varying().rate_steps(0)


def test_json_round_trip_and_validation() -> None:
    s = varying()
    assert LinkSchedule.from_json(s.to_json()) == s
    with pytest.raises(ScheduleError, match="unknown keys"):
        LinkSchedule.from_dict({"segments": [{"at_s": 0, "bandwidth": 3}]})
    with pytest.raises(ScheduleError, match="strictly increasing"):
        LinkSchedule((Segment(at_s=0), Segment(at_s=0)))
    with pytest.raises(ScheduleError, match="expected 0"):
        LinkSchedule((Segment(at_s=1),))
    with pytest.raises(ScheduleError, match="loss_pct=120"):
        Segment(at_s=0, loss_pct=120)
    with pytest.raises(ScheduleError, match="not valid JSON"):
        LinkSchedule.from_json("{")


def test_chunk_delay_keeps_order() -> None:
    sched = ChunkScheduler(fixed(delay_ms=50))
    assert sched.release_s(1.0, 100, draw=0.9) == pytest.approx(1.05)
    # a later chunk never overtakes an earlier one
    assert sched.release_s(1.01, 100, draw=0.9) == pytest.approx(1.06)


def test_chunk_loss_adds_a_stall_only_when_drawn() -> None:
    s = LinkSchedule((Segment(at_s=0, delay_ms=10, loss_pct=10, stall_ms=200),))
    assert ChunkScheduler(s).release_s(0.0, 10, draw=0.5) == pytest.approx(0.01)
    assert ChunkScheduler(s).release_s(0.0, 10, draw=0.05) == pytest.approx(0.21)


def test_chunk_in_outage_waits_for_the_link() -> None:
    s = steps([(0, None), (1, 0), (3, None)], delay_ms=5)
    sched = ChunkScheduler(s)
    assert sched.release_s(1.5, 10, draw=1.0) == pytest.approx(3.005)
    # in flight when the link dropped: leaves when it returns
    s2 = LinkSchedule((Segment(at_s=0, delay_ms=500), Segment(at_s=1, up=False), Segment(at_s=2, delay_ms=500)))
    assert ChunkScheduler(s2).release_s(0.8, 10, draw=1.0) == pytest.approx(2.5)
    assert ChunkScheduler(steps([(0, 100), (1, 0)])).release_s(2, 10, 1.0) == math.inf


def test_token_bucket_serialises_bytes_at_the_rate() -> None:
    bucket = TokenBucket()
    s = fixed(uplink_kbps=8_000)  # 1 MB/s
    a, b = ChunkScheduler(s, bucket), ChunkScheduler(s, bucket)
    assert a.release_s(0.0, 100_000, 1.0) == pytest.approx(0.1)
    # a second connection shares the same link
    assert b.release_s(0.0, 100_000, 1.0) == pytest.approx(0.2)
    assert a.release_s(1.0, 0, 1.0) == pytest.approx(1.0)


def test_summarize_names_every_segment() -> None:
    text = summarize(varying())
    assert "30 Mbit/s +10ms" in text and "9s down" in text and "3 Mbit/s->1" in text and "loss 50%" in text
