"""BandwidthEstimator and ProbeScheduler: pure, time passed in."""
from __future__ import annotations

import math

import pytest

from edge_agent.policy import PolicyConfig, SplitPolicy
from edge_agent.telemetry import BandwidthEstimator, ProbeScheduler, TelemetryError
from edge_agent.telemetry.bandwidth import rtt_refresh_due
from edge_agent.telemetry.hub import combine_telemetry
from edge_agent.types import CutProfile


def test_no_samples_means_unknown() -> None:
    e = BandwidthEstimator().estimate(0)
    assert (e.uplink_kbps, e.rtt_ms, e.uplink_samples, e.rtt_samples, e.stale, e.last_sample_ms) == \
        (None, None, 0, 0, True, None)


def test_small_transfers_are_rtt_samples_and_large_ones_bandwidth() -> None:
    b = BandwidthEstimator(alpha=1.0, rtt_alpha=1.0, min_sample_bytes=4_096)
    b.observe_transfer(200, 25.0, 0, server_ms=5.0)  # tiny: rtt = 25 - 5
    assert b.estimate(0).rtt_ms == 20.0 and b.estimate(0).uplink_kbps is None
    b.observe_transfer(100_000, 825.0, 10, server_ms=5.0)  # 800 ms on the air after rtt and server
    assert b.estimate(10).uplink_kbps == pytest.approx(100_000 * 8 / 800.0)  # 1000 kbps


def test_ewma_smooths_and_follows_a_collapse() -> None:
    b = BandwidthEstimator(alpha=0.5)
    b.observe_rtt(10.0, 0)
    for i in range(5):
        b.observe_transfer(50_000, 10.0 + 40.0, i)  # 50 kB in 40 ms = 10000 kbps
    assert b.estimate(5).uplink_kbps == pytest.approx(10_000.0)
    b.observe_transfer(50_000, 10.0 + 400.0, 6)  # collapse to 1000 kbps
    assert b.estimate(6).uplink_kbps == pytest.approx(5_500.0)
    for i in range(6):
        b.observe_transfer(50_000, 410.0, 7 + i)
    assert b.estimate(20).uplink_kbps < 1_200.0


def test_transfer_faster_than_the_rtt_estimate_is_floored_not_infinite() -> None:
    b = BandwidthEstimator(alpha=1.0, max_kbps=1e9)
    b.observe_rtt(50.0, 0)
    b.observe_transfer(10_000, 20.0, 1)  # shorter than the RTT (within a burst): half the net time
    assert b.estimate(1).uplink_kbps == pytest.approx(10_000 * 8 / 10.0)
    assert b.estimate(1).rtt_ms == 20.0  # and the RTT cannot be longer than that whole round trip
    b.observe_transfer(10_000, 3.0, 2, server_ms=5.0)  # server time > round trip: ignored
    assert b.estimate(2).uplink_kbps == pytest.approx(8_000.0) and b.estimate(2).uplink_samples == 1
    b.observe_rtt(50.0, 3, floor=True)  # (a floor above the estimate moves it by the EWMA weight only)
    b.observe_rtt(50.0, 3)
    b.observe_rtt(50.0, 3)  # rtt_alpha 0.2 at no gap: 20 -> 26 -> 30.8 -> 34.64
    rtt = b.estimate(3).rtt_ms
    assert rtt == pytest.approx(20.0 + 30.0 * (1 - 0.8 ** 3))
    b.observe_transfer(10_000, rtt + 10.0, 4)  # 10 ms past the RTT: half the network time still bounds it
    assert b.estimate(4).uplink_kbps == pytest.approx(10_000 * 8 / ((rtt + 10.0) / 2))
    b.observe_transfer(10_000, rtt + 100.0, 5)  # well past the RTT: the RTT is subtracted
    assert b.estimate(5).uplink_kbps == pytest.approx(10_000 * 8 / 100.0)
    capped = BandwidthEstimator(alpha=1.0, max_kbps=1_000.0)
    capped.observe_transfer(1_000_000, 1.0, 0)
    assert capped.estimate(0).uplink_kbps == 1_000.0


def test_staleness_then_forgetting() -> None:
    b = BandwidthEstimator(stale_after_ms=15_000, forget_after_ms=60_000)
    b.observe_rtt(10.0, 1_000)
    b.observe_transfer(100_000, 110.0, 1_000)
    fresh, stale, gone = b.estimate(16_000), b.estimate(16_001), b.estimate(61_001)
    assert (fresh.stale, fresh.uplink_age_ms) == (False, 15_000)
    assert stale.stale and stale.uplink_kbps == fresh.uplink_kbps  # kept, flagged
    assert gone.stale and (gone.uplink_kbps, gone.rtt_ms) == (None, None)  # forgotten: the policy's prior
    # out-of-order completions (pipelined requests) never move the sample time backwards
    b.observe_rtt(10.0, 500)
    assert b.last_sample_ms == 1_000


@pytest.mark.parametrize("args, message", [((-1, 10.0, 0), "sent_bytes = -1"), ((10, math.nan, 0), "duration_ms = nan"),
                                           ((10, 1.0, 0, -2.0), "server_ms = -2.0")])
def test_illegal_samples_raise(args: tuple, message: str) -> None:
    b = BandwidthEstimator()
    with pytest.raises(TelemetryError, match=message):
        b.observe_transfer(*args)
    assert b.estimate(0).uplink_samples == 0
    with pytest.raises(TelemetryError, match="alpha = 0"):
        BandwidthEstimator(alpha=0)


def test_probe_scheduler_interval_and_duty_cycle() -> None:
    # the young pace set to the steady one: this checks the steady rules (the young ones: test_probe_samples)
    p = ProbeScheduler(interval_ms=10_000, max_duty_pct=2.0, probe_bytes=16_384, young_interval_ms=10_000,
                       young_duty_pct=2.0)
    assert p.due(0, None)  # nothing known yet: probe now
    p.note_started(0)
    assert not p.due(50_000, None)  # one in flight
    p.note_finished(400, link_ms=400.0, uplink_kbps=300.0)  # 400 ms on the link at 2% -> next 20 s after its start
    assert p.next_due_ms(None) == 20_000
    assert not p.due(19_999, None) and p.due(20_000, None)
    p.note_started(20_000)
    p.note_finished(20_050, link_ms=50.0, uplink_kbps=300.0)  # a quick probe that agrees: the interval rules
    assert p.next_due_ms(None) == 30_000
    # real traffic keeps the estimate fresh: no probe within interval_ms of the last real sample
    assert not p.due(30_000, last_sample_ms=25_000) and p.due(35_000, last_sample_ms=25_000)
    p.note_started(35_000)
    p.note_finished(35_400)  # measured nothing (a dead link carries nothing): the interval again
    assert p.next_due_ms(None) == 45_000
    assert p.probes == 3


def test_probe_duty_cycle_over_a_long_local_run() -> None:
    """Simulate 10 minutes fully local on a slow link (each probe holds it 300 ms): link time probing stays
    <= 2% (after the first probes, which run at the young pace under its 10 % cap)."""
    p = ProbeScheduler(interval_ms=5_000, max_duty_pct=2.0)
    busy = 0
    for now in range(0, 600_000, 100):
        if p.due(now, None):
            p.note_started(now)
            p.note_finished(now + 300, link_ms=300.0, uplink_kbps=500.0)
            busy += 300
    assert busy / 600_000 <= 0.02 + 3 * 300 / 600_000
    assert p.probes >= 35


def test_probe_scheduler_misuse_raises() -> None:
    p = ProbeScheduler()
    with pytest.raises(TelemetryError, match="no probe in flight"):
        p.note_finished(0)
    p.note_started(0)
    with pytest.raises(TelemetryError, match="already in flight"):
        p.note_started(1)
    with pytest.raises(TelemetryError, match="max_duty_pct = 0"):
        ProbeScheduler(max_duty_pct=0)


def test_collapse_measured_by_the_estimator_moves_the_policy_local() -> None:
    """End to end through the pure parts: transfers slow down -> estimate drops -> policy leaves the network."""
    cuts = [CutProfile("input", 0, 12_000, 0.0, 10.0), CutProfile("features_13", 2, 3_000, 40.0, 3.0),
            CutProfile("output", 3, 0, 90.0, 0.0)]
    policy = SplitPolicy(cuts, PolicyConfig(min_dwell_ms=1_000))
    bw = BandwidthEstimator(alpha=0.5)
    now = 0
    bw.observe_rtt(10.0, now)
    cuts_seen = []
    for air_ms in [5.0] * 5 + [100.0] * 5 + [1_000.0] * 8:  # 12 kB in 5 ms, 100 ms, 1 s
        now += 1_000
        bw.observe_transfer(12_000, 10.0 + air_ms + 10.0, now, server_ms=10.0)
        policy.observe(combine_telemetry(now, bandwidth=bw.estimate(now)), now)
        cuts_seen.append(policy.decide(now).cut_id)
    assert cuts_seen[4] == "input"
    assert "features_13" in cuts_seen[5:10]
    assert cuts_seen[-1] == "output"


@pytest.mark.parametrize(
    ("gap_ms", "expected_rtt_ms"),
    [
        (0, 80.0 + 0.2 * (4.0 - 80.0)),  # dense samples: plain alpha
        (1_000, 80.0 + 0.2 * (4.0 - 80.0)),  # 1 s gap: time weight 0.18 < alpha 0.2, so alpha
        (10_000, 80.0 + (1 - math.exp(-2.0)) * (4.0 - 80.0)),  # a probe 10 s later mostly replaces the old value
        (60_000, 80.0 + (1 - math.exp(-12.0)) * (4.0 - 80.0)),
    ],
)
def test_sparse_samples_weigh_more_after_a_long_gap(gap_ms: int, expected_rtt_ms: float) -> None:
    b = BandwidthEstimator(rtt_alpha=0.2, time_constant_ms=5_000)
    b.observe_rtt(80.0, 1_000)  # the slow phase
    b.observe_rtt(4.0, 1_000 + gap_ms)  # the link is fast again
    assert b.estimate(1_000 + gap_ms).rtt_ms == pytest.approx(expected_rtt_ms)


@pytest.mark.parametrize(
    ("before_kbps", "sent_bytes", "waited_ms", "after_kbps"),
    [
        (100_000.0, 75_000, 500.0, 1_200.0),  # a collapse: clamp to the bound 75 kB in 500 ms
        (800.0, 75_000, 500.0, 800.0),  # already below the bound: unchanged
        (None, 75_000, 500.0, 1_200.0),  # no estimate yet: the bound is the best guess
        (100_000.0, 1_000, 500.0, 100_000.0),  # a tiny request timing out says nothing about bandwidth
    ],
)
def test_a_timed_out_transfer_bounds_the_uplink(before_kbps, sent_bytes, waited_ms, after_kbps) -> None:
    b = BandwidthEstimator(alpha=1.0, min_sample_bytes=4_096)
    if before_kbps is not None:
        b.observe_rtt(0.0, 0)
        b.observe_transfer(int(before_kbps * 100 / 8), 100.0, 0)  # 100 ms on the air at before_kbps
        assert b.estimate(0).uplink_kbps == pytest.approx(before_kbps)
    b.observe_timeout(sent_bytes, waited_ms, 10)
    assert b.estimate(10).uplink_kbps == pytest.approx(after_kbps)
    with pytest.raises(TelemetryError, match="waited_ms"):
        b.observe_timeout(sent_bytes, 0.0, 11)


@pytest.mark.parametrize(
    ("rtt_before_ms", "sent_bytes", "duration_ms", "server_ms", "rtt_after_ms", "uplink_kbps"),
    [
        # a 33 kB transfer at 8 Mbit/s with a 3 ms RTT takes 36 ms: a stale 29 ms estimate is not above it
        (29.0, 33_000, 36.0, 0.0, 29.0, 33_000 * 8 / 18.0),
        # a 4.1 kB transfer (within the link's burst) took 4 ms of network time: the 29 ms RTT is clamped to 4
        (29.0, 4_100, 9.0, 5.0, 4.0, 4_100 * 8 / 2.0),
        (3.0, 33_000, 36.0, 0.0, 3.0, 33_000 * 8 / 33.0),  # a fresh estimate below the bound: untouched
        (None, 33_000, 36.0, 0.0, None, 33_000 * 8 / 36.0),  # no estimate: nothing to clamp
    ],
)
def test_a_transfer_bounds_the_rtt_from_above(rtt_before_ms, sent_bytes, duration_ms, server_ms, rtt_after_ms,
                                              uplink_kbps) -> None:
    b = BandwidthEstimator(alpha=1.0, min_sample_bytes=4_096)
    if rtt_before_ms is not None:
        b.observe_rtt(rtt_before_ms, 0)
    b.observe_transfer(sent_bytes, duration_ms, 10, server_ms=server_ms)
    e = b.estimate(10)
    assert (e.rtt_ms, e.uplink_kbps) == (rtt_after_ms, pytest.approx(uplink_kbps))
    assert e.rtt_samples == (0 if rtt_before_ms is None else 1)  # a bound, not a sample
    assert e.rtt_age_ms == (None if rtt_before_ms is None else 10.0)  # ... so its age is not refreshed


@pytest.mark.parametrize(
    ("floor", "sample_ms", "gap_ms", "rtt_after_ms"),
    [
        (False, 3.0, 0, 80.0 + 0.2 * (3.0 - 80.0)),  # one round trip: a plain EWMA sample
        (True, 3.0, 0, 3.0),  # the fastest of a few warm pings: the link's RTT is at most that now
        (True, 100.0, 0, 80.0 + 0.2 * (100.0 - 80.0)),  # a floor above the estimate: the EWMA step only
        # the demo's medium phase before the clamp: its first probe 6 s after a slow-phase probe moved the
        # estimate only part of the way (three logged runs read 17-29 ms), and no offload refreshed it afterwards
        (False, 3.0, 6_000, 80.0 + (1 - math.exp(-6_000 / 5_000)) * (3.0 - 80.0)),
        (True, 3.0, 6_000, 3.0),
    ],
)
def test_a_ping_floor_clamps_the_rtt(floor: bool, sample_ms: float, gap_ms: int, rtt_after_ms: float) -> None:
    b = BandwidthEstimator(rtt_alpha=0.2, time_constant_ms=5_000)
    b.observe_rtt(80.0, 0)
    b.observe_rtt(sample_ms, gap_ms, floor=floor)
    assert b.estimate(gap_ms).rtt_ms == pytest.approx(rtt_after_ms) and b.estimate(gap_ms).rtt_samples == 2


@pytest.mark.parametrize(
    ("now_ms", "rtt_at_ms", "uplink_at_ms", "last_attempt_ms", "due"),
    [
        (20_000, 10_000, 19_900, None, True),  # offloading, RTT 10 s old: refresh
        (20_000, 17_000, 19_900, None, True),  # exactly refresh_after_ms old
        (20_000, 17_001, 19_900, None, False),  # fresh enough
        (20_000, None, 19_900, None, True),  # transfers but never an RTT sample
        (20_000, 10_000, 16_999, None, False),  # no transfer for > 3 s: not offloading (the bandwidth probe's job)
        (20_000, 10_000, None, None, False),  # never offloaded
        (20_000, 10_000, 19_900, 18_000, False),  # a refresh 2 s ago measured nothing: wait
        (20_000, 10_000, 19_900, 16_000, True),  # ... and after 3 s try again
    ],
)
def test_rtt_refresh_due_while_transfers_keep_coming(now_ms, rtt_at_ms, uplink_at_ms, last_attempt_ms, due) -> None:
    assert rtt_refresh_due(now_ms=now_ms, rtt_at_ms=rtt_at_ms, uplink_at_ms=uplink_at_ms,
                           last_attempt_ms=last_attempt_ms, refresh_after_ms=3_000) is due
    with pytest.raises(TelemetryError, match="refresh_after_ms = 0"):
        rtt_refresh_due(now_ms=0, rtt_at_ms=None, uplink_at_ms=None, last_attempt_ms=None, refresh_after_ms=0)


@pytest.mark.parametrize(("refresh", "rtt_ms", "uplink_kbps"), [(False, 36.0, 2 * 8_000.0 * 33 / 36),
                                                                  (True, 3.0, 8_000.0)])
def test_the_demo_medium_phase_reads_its_rate_only_with_the_refresh(refresh: bool, rtt_ms: float,
                                                                    uplink_kbps: float) -> None:
    """The demo's story through the pure estimator: the slow phase (400 kbit/s, +40 ms) leaves an 80 ms
    RTT; medium (8 Mbit/s, +1 ms: RTT 2 ms + 1 ms of gRPC) carries a 33 kB payload every 333 ms, 36 ms
    of network time, never an RTT sample. Without the refresh the clamp stops at that whole round trip,
    and half of it is read as wire time: 2x the rate. The refresh's 3 ms floor puts it on the link."""
    b = BandwidthEstimator()
    b.observe_rtt(80.0, 0)
    for i in range(6):  # the slow phase: 4.1 kB input JPEGs at 400 kbit/s, 82 ms on the air + 80 ms RTT
        b.observe_transfer(4_100, 82.0 + 80.0, 300 * (i + 1))
    now, refreshes = 2_000, 0
    for _ in range(30):  # 10 s of medium
        now += 333
        if refresh and b.rtt_refresh_due(now, last_attempt_ms=None, refresh_after_ms=3_000):
            b.observe_rtt(3.0, now, floor=True)
            refreshes += 1
        b.observe_transfer(33_000, 36.0, now)
    e = b.estimate(now)
    assert (e.rtt_ms, refreshes) == (rtt_ms, 3 if refresh else 0)
    assert e.uplink_kbps == pytest.approx(uplink_kbps, rel=0.05)
