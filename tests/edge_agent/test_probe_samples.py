"""Bandwidth probes measure the link, not the busy device (issue 19): the pure combination of a
probe's samples and the probe schedule as tables, the probe window with real threads, and one
real probe over gRPC (server on port 0, behind the testbed's delay proxy) with one ping and one
transfer stretched by an injected stall."""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Optional

import cv2
import pytest

from benchmarks.testbed.proxy import DelayProxy
from benchmarks.testbed.schedule import fixed
from cloud_server.server import create_server
from cloud_server.settings import ServerSettings
from edge_agent.agent import EdgeAgent
from edge_agent.errors import ConfigError
from edge_agent.probe_window import ProbeWindow
from edge_agent.telemetry import ProbeScheduler, TelemetryError
from edge_agent.telemetry.bandwidth import agreeing_streak, probe_gap_ms
from edge_agent.telemetry.probe_samples import ProbeTransfer, combine_probe, fastest_transfer
from edge_agent.transport_grpc import GrpcTransport
from edge_agent.types import OffloadRequest, OffloadResponse
from protos.bundle import Bundle
from tests.edge_agent.conftest import agent_config, first_video_frame
from tests.waiting import wait_for

# --------------------------------------------------------------------------- combining one probe's samples


@pytest.mark.parametrize(
    ("pings_ms", "transfers", "floor_ms", "fastest", "uplink_kbps", "link_ms"),
    [
        # the testbed's case: the first ping and transfer stretched by the busy core; 16 kB at 4 Mbit/s is 32 ms
        ([140.0, 22.0, 25.0], [ProbeTransfer(16_000, 300.0, 5.0), ProbeTransfer(16_000, 59.0, 5.0)],
         22.0, 1, 16_000 * 8 / 32.0, 2 * 54.0),
        # no ping answered: the whole network time is transmission
        ([], [ProbeTransfer(10_000, 45.0, 5.0)], None, 0, 10_000 * 8 / 40.0, 40.0),
        # no transfer completed: the RTT floor only, and nothing to charge (the wall time counts)
        ([30.0, 20.0], [], 20.0, None, None, None),
        # a transfer faster than the ping floor (within the link's burst): half its network time, as the
        # estimator does (a 10 % floor read up to 10x the link)
        ([50.0], [ProbeTransfer(10_000, 20.0, 0.0)], 50.0, 0, 10_000 * 8 / 10.0, 20.0),
        # different sizes: the fastest per byte (2 kB in 30 ms is slower than 16 kB in 60 ms)
        ([10.0], [ProbeTransfer(2_000, 30.0), ProbeTransfer(16_000, 60.0)], 10.0, 1, 16_000 * 8 / 50.0,
         60.0 * 18_000 / 16_000),
    ],
)
def test_a_probe_is_measured_on_its_fastest_samples(pings_ms, transfers, floor_ms, fastest, uplink_kbps,
                                                     link_ms) -> None:
    result = combine_probe(pings_ms, transfers)
    assert result.rtt_floor_ms == floor_ms
    assert result.fastest is (None if fastest is None else transfers[fastest])
    assert result.uplink_kbps == (None if uplink_kbps is None else pytest.approx(uplink_kbps))
    assert result.link_ms == (None if link_ms is None else pytest.approx(link_ms))


def test_server_time_is_not_network_time_and_bad_samples_raise() -> None:
    assert ProbeTransfer(1_000, 20.0, 50.0).network_ms == 0.0  # clocks disagree: nothing on the network
    assert fastest_transfer([]) is None
    for bad in ([-1.0], [float("nan")], [True]):
        with pytest.raises(TelemetryError, match="probe ping"):
            combine_probe(bad, [])
    with pytest.raises(TelemetryError, match="duration_ms = -3.0"):
        ProbeTransfer(1_000, -3.0)


# --------------------------------------------------------------------------- the schedule

GAP = dict(interval_ms=5_000.0, young_interval_ms=1_000.0, max_duty_pct=2.0, young_duty_pct=10.0, max_wall_pct=20.0)


@pytest.mark.parametrize(
    ("wall_ms", "link_ms", "young", "gap_ms"),
    [
        (400.0, None, False, 5_000.0),  # measured nothing (a dead link carries nothing): the interval
        (400.0, None, True, 5_000.0),  # ... even while young
        (2_000.0, None, False, 10_000.0),  # a long wait: five times it (the 20 % wall bound)
        (50.0, None, False, 5_000.0),  # a quick failure: the interval
        (300.0, 60.0, False, 5_000.0),  # the testbed's CPU-stretched probe: 300 ms wall, 60 ms link (was 15 s)
        (300.0, 150.0, False, 7_500.0),  # a slow link: its link time at 2 %
        (300.0, 120.0, True, 1_500.0),  # young: the frames it paused (wall) bound it at 20 %
        (30.0, 120.0, True, 1_200.0),  # young: the hard cap on link time, 10 %
        (20.0, 10.0, True, 1_000.0),  # young on a fast link: the young interval
    ],
)
def test_probe_gap_charges_link_time_not_wall_time(wall_ms, link_ms, young, gap_ms) -> None:
    assert probe_gap_ms(wall_ms=wall_ms, link_ms=link_ms, young=young, **GAP) == pytest.approx(gap_ms)


@pytest.mark.parametrize(
    ("streak", "previous_kbps", "new_kbps", "expected"),
    [
        (0, None, 4_000.0, 0),  # the first measurement
        (0, 4_000.0, 3_000.0, 1),  # agrees
        (1, 3_000.0, 3_500.0, 2),
        (2, 4_000.0, 8_000.0, 0),  # doubled: a big change starts again
        (2, 4_000.0, 1_000.0, 0),  # collapsed
        (1, 4_000.0, None, 1),  # measured nothing: unchanged
    ],
)
def test_agreeing_streak(streak, previous_kbps, new_kbps, expected) -> None:
    assert agreeing_streak(streak, previous_kbps, new_kbps, 2.0) == expected


def test_young_estimate_probes_sooner_until_probes_agree_and_again_after_a_change() -> None:
    """(start, end, link_ms, uplink_kbps) -> (young afterwards, next due); the probe's own result is the
    newest sample (the agent is fully local)."""
    p = ProbeScheduler(interval_ms=5_000, max_duty_pct=2.0, young_interval_ms=1_000, young_duty_pct=10.0,
                       max_wall_pct=20.0, settle_probes=2, change_ratio=2.0)
    steps = [
        ((0, 300, 60.0, 900.0), (True, 1_500)),  # stretched first probe: young, again in 1.5 s (was 15 s)
        ((1_500, 1_560, 40.0, 4_000.0), (True, 2_560)),  # 4.4x the first: still young
        ((2_560, 2_610, 40.0, 3_900.0), (True, 3_610)),  # agrees once
        ((3_610, 3_660, 40.0, 4_100.0), (False, 8_660)),  # agrees twice: settled, the interval
        ((8_660, 8_700, 40.0, 1_000.0), (True, 9_700)),  # the link changed: young again
        ((9_700, 10_700, None, None), (True, 14_700)),  # a probe that measured nothing: the interval
    ]
    assert not p.young and p.due(0, None)
    last_ms: Optional[int] = None
    for (start, end, link_ms, kbps), (young, due_ms) in steps:
        assert p.due(start, last_ms) and (last_ms is None or p.next_due_ms(last_ms) == start)  # due, not sooner
        p.note_started(start)
        p.note_finished(end, link_ms=link_ms, uplink_kbps=kbps)
        assert (p.young, p.next_due_ms(end)) == (young, due_ms)
        last_ms = end
    assert p.probes == len(steps)


@pytest.mark.parametrize(("uplinks_kbps", "cap_pct"), [((1_000.0, 4_000.0), 10.0), ((3_000.0, 3_100.0), 2.0)])
def test_probe_link_share_stays_under_its_cap_over_ten_minutes(uplinks_kbps, cap_pct) -> None:
    """Fully local for 10 minutes, each probe 120 ms on the link and 100 ms wall: a link that never
    settles is probed at the young pace but within the hard cap (10 %); a steady one at 2 % after its
    first ``settle_probes + 1`` probes (the young ones)."""
    p = ProbeScheduler(interval_ms=5_000, max_duty_pct=2.0)
    link_total_ms, last = 0.0, None
    for now in range(0, 600_000, 50):
        if p.due(now, last):
            p.note_started(now)
            p.note_finished(now + 100, link_ms=120.0, uplink_kbps=uplinks_kbps[p.probes % 2])
            link_total_ms += 120.0
            last = now + 100
    assert link_total_ms / 600_000 <= cap_pct / 100 + (p.settle_probes + 1) * 120.0 / 600_000
    assert p.probes >= 600_000 * cap_pct / 100 / 120.0 * 0.9  # and not far below it: the cap is what binds


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"young_duty_pct": 1.0}, "young_duty_pct = 1.0 is below max_duty_pct = 2.0"),
    ({"max_wall_pct": 0}, "max_wall_pct = 0"),
    ({"change_ratio": 1.0}, "change_ratio = 1.0"),
    ({"young_interval_ms": -5}, "young_interval_ms = -5"),
])
def test_scheduler_rejects_bad_settings(kwargs, message) -> None:
    with pytest.raises(TelemetryError, match=message):
        ProbeScheduler(**kwargs)
    p = ProbeScheduler()
    p.note_started(0)
    with pytest.raises(TelemetryError, match="link_ms = -1"):
        p.note_finished(10, link_ms=-1.0)


# --------------------------------------------------------------------------- the window between frames


def _in_thread(fn) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_a_probe_waits_for_the_frame_and_holds_the_next_one_back() -> None:
    window = ProbeWindow(probe_wait_s=10.0, frame_wait_s=10.0)
    log: list[str] = []
    frame_started, frame_may_end, probe_may_end = threading.Event(), threading.Event(), threading.Event()

    def frame(name: str, started: Optional[threading.Event] = None, may_end: Optional[threading.Event] = None):
        def run() -> None:
            with window.frame():
                log.append(f"{name} start")
                if started is not None:
                    started.set()
                if may_end is not None:
                    assert may_end.wait(10)
                log.append(f"{name} end")
        return run

    def probe() -> None:
        with window.probe() as quiet:
            log.append(f"probe start quiet={quiet}")
            assert probe_may_end.wait(10)
            log.append("probe end")

    first = _in_thread(frame("frame 1", frame_started, frame_may_end))
    assert frame_started.wait(10)
    prober = _in_thread(probe)
    assert not wait_for(lambda: len(log) > 1, 0.3)  # the probe waits while frame 1 computes
    frame_may_end.set()
    assert wait_for(lambda: "probe start quiet=True" in log)
    second = _in_thread(frame("frame 2"))
    assert not wait_for(lambda: "frame 2 start" in log, 0.3)  # frame 2 waits while the probe measures
    probe_may_end.set()
    for t in (first, prober, second):
        t.join(10)
    assert log == ["frame 1 start", "frame 1 end", "probe start quiet=True", "probe end", "frame 2 start",
                   "frame 2 end"]
    assert (window.frames_held, window.probes_overlapped) == (1, 0)


def test_the_waits_are_bounded() -> None:
    window = ProbeWindow(probe_wait_s=0.05, frame_wait_s=0.05)
    with window.frame():  # a frame that does not end in time: the probe measures beside it
        with window.probe() as quiet:
            assert not quiet
    assert window.probes_overlapped == 1
    ran = threading.Event()

    def frame() -> None:
        with window.frame():
            ran.set()

    with window.probe():  # a probe that hangs: the frame runs after its bounded wait
        t = _in_thread(frame)
        assert ran.wait(5)
    t.join(5)
    assert window.frames_held == 1
    with pytest.raises(ConfigError, match="probe_wait_s = -1"):
        ProbeWindow(probe_wait_s=-1)


# --------------------------------------------------------------------------- one real probe over gRPC


class StallOnce:
    """A real transport whose chosen calls are stretched by ``stall_s`` on the client, as a device busy
    with local inference stretches them: ``healthy`` call number ``stall_ping`` (0 is the cold one) and
    ``infer`` call number ``stall_transfer``."""

    def __init__(self, inner: GrpcTransport, *, stall_ping: int, stall_transfer: int, stall_s: float) -> None:
        self.inner = inner
        self.stall_ping, self.stall_transfer, self.stall_s = stall_ping, stall_transfer, stall_s
        self.pings = self.transfers = 0
        self.sent_bytes: list[int] = []

    def healthy(self, timeout_s: float) -> bool:
        if self.pings == self.stall_ping:
            time.sleep(self.stall_s)
        self.pings += 1
        return self.inner.healthy(timeout_s)

    def infer(self, request: OffloadRequest, timeout_s: float) -> OffloadResponse:
        start = time.monotonic()
        if self.transfers == self.stall_transfer:
            time.sleep(self.stall_s)
        self.transfers += 1
        self.sent_bytes.append(request.wire_bytes)
        response = self.inner.infer(request, timeout_s)
        return replace(response, round_trip_ms=(time.monotonic() - start) * 1000.0)

    def model_ready(self, name: str, version: str, timeout_s: float) -> bool:
        return self.inner.model_ready(name, version, timeout_s)

    def close(self) -> None:
        self.inner.close()


def test_a_stalled_first_ping_and_transfer_do_not_reach_the_estimate(tiny_bundle: Bundle) -> None:
    """A real probe to a real server on port 0 through the testbed's proxy (20 ms delay): the first warm
    ping and the first transfer are stretched by 1 s. One sample of each (the old probe) would have put
    the RTT above 1 s and the uplink below ``bytes * 8 / 1 s``; the estimate is the link's."""
    stall_s, delay_ms = 1.0, 20.0
    server = create_server(ServerSettings(host="127.0.0.1", port=0, bundles=(tiny_bundle.root,),
                                          metrics_port=None, discovery=False, max_queue_delay_us=0))
    proxy = DelayProxy(("127.0.0.1", 0), ("127.0.0.1", int(server.address.rsplit(":", 1)[1])), fixed(delay_ms=delay_ms))
    transport = StallOnce(GrpcTransport(f"127.0.0.1:{proxy.start()}"), stall_ping=1, stall_transfer=0,
                          stall_s=stall_s)
    # the whole frame (the tiny model's 16x16 input would make a ~0.7 kB JPEG): at 640x480 a ~16 kB JPEG, above
    # the estimator's min_sample_bytes (the 160x120 test frame's is an RTT sample)
    agent = EdgeAgent(agent_config(tiny_bundle, server__jpeg_size="frame"), transport=transport)
    image = cv2.resize(first_video_frame(), (640, 480), interpolation=cv2.INTER_LINEAR)
    try:
        agent.prober.bandwidth_probe(transport, image)
        estimate = agent.feedback.telemetry.bandwidth.estimate(agent.feedback.now_ms())
    finally:
        agent.stop(5)
        transport.close()
        proxy.stop()
        server.stop(0)
    assert (transport.pings, transport.transfers) == (4, 2)  # a cold ping, three warm ones, two transfers
    assert transport.sent_bytes[0] > agent.feedback.telemetry.bandwidth.min_sample_bytes
    assert (estimate.rtt_samples, estimate.uplink_samples) == (1, 1)  # one floor, one fastest transfer
    assert estimate.rtt_ms is not None and delay_ms <= estimate.rtt_ms < stall_s * 1000.0
    stalled_kbps = transport.sent_bytes[0] * 8 / (stall_s * 1000.0)  # the most the stalled transfer could show
    assert estimate.uplink_kbps is not None and estimate.uplink_kbps > 2 * stalled_kbps
    assert agent.prober.scheduler.young  # a first measurement: the next probe comes at the young pace
