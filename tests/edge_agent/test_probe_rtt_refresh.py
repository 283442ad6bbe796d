"""The RTT refresh while offloading (issue 13 follow-up): real server on port 0, real gRPC, the emulated link.

An RTT learnt on a slow, distant link must not outlive it: while the agent offloads with payloads too
big to be RTT samples, the control loop sends a few empty round trips every ``rtt_refresh_ms`` and the
estimator's RTT is clamped to their fastest. The pure rules are table-tested in ``test_bandwidth.py``.
"""
from __future__ import annotations

from cloud_server.server import RunningServer, create_server
from cloud_server.settings import ServerSettings
from edge_agent.agent import EdgeAgent
from edge_agent.link import EmulatedTransport, LinkEmulator, LinkState, LinkTrace
from edge_agent.transport_grpc import GrpcTransport
from edge_agent.types import Decision, Mode, Objective
from protos.bundle import Bundle
from tests.edge_agent.conftest import agent_config, first_video_frame
from tests.waiting import wait_for


def _serve(bundle: Bundle) -> RunningServer:
    return create_server(ServerSettings(host="127.0.0.1", port=0, bundles=(bundle.root,), metrics_port=None,
                                        discovery=False, max_queue_delay_us=0))


class CountingLink(EmulatedTransport):
    """The emulated link, counting the empty round trips (health checks) that cross it."""

    pings = 0

    def healthy(self, timeout_s: float) -> bool:
        self.pings += 1
        return super().healthy(timeout_s)


def test_an_offloading_agent_refreshes_a_stale_rtt_with_empty_round_trips(tiny_bundle: Bundle) -> None:
    """An 80 ms RTT from 10 s ago and a transfer 100 ms ago (offloading steadily): the control tick's
    measurement sends ``pings`` empty round trips over the +1 ms link, and the RTT is their fastest (the
    clamp), not the EWMA's 80 -> 63 ms. A second tick right after sends nothing; fully local, nothing."""
    server = _serve(tiny_bundle)
    inner = GrpcTransport(server.address)
    link = CountingLink(inner, LinkEmulator(LinkTrace.fixed(delay_ms=1.0)))
    agent = EdgeAgent(agent_config(tiny_bundle), transport=link)
    try:
        assert inner.healthy(2.0)  # the connection is warm, as it is while offloading
        bandwidth, prober = agent.feedback.telemetry.bandwidth, agent.prober
        now = agent.feedback.now_ms()
        with agent.feedback.lock:
            bandwidth.observe_rtt(80.0, now - 10_000)  # the slow phase
            bandwidth.observe_transfer(33_000, 36.0, now - 100)  # a medium-phase transfer: no RTT sample
        offloading = Decision("conv1", Mode.AUTO, "test", Objective.LATENCY, now)
        image = first_video_frame()
        prober.measure_due(link, offloading, now, image)
        estimate = bandwidth.estimate(agent.feedback.now_ms())
        assert link.pings == prober.pings == 3
        assert estimate.rtt_samples == 2
        assert estimate.rtt_ms is not None and 2.0 <= estimate.rtt_ms < 20.0, estimate
        prober.measure_due(link, offloading, agent.feedback.now_ms(), image)  # refreshed: not due again
        local = Decision("output", Mode.AUTO, "test", Objective.LATENCY, now)
        prober.measure_due(link, local, now + 10_000, None)  # fully local (and no frame to probe with)
        assert link.pings == 3
    finally:
        agent.stop(5)
        inner.close()
        server.stop(0)


def test_a_running_agent_forgets_the_slow_links_rtt(tiny_bundle: Bundle) -> None:
    """The whole loop: pinned to the conv1 cut (4 kB FP32 features, bandwidth samples) over an emulated
    link that is +40 ms one-way for 4 s, then +1 ms. The first refresh reads the slow link's RTT (no transfer
is an RTT sample); after the switch the estimate follows within a few refreshes."""
    server = _serve(tiny_bundle)
    inner = GrpcTransport(server.address)
    cfg = agent_config(tiny_bundle, source__fps_cap=20.0, source__loop=True, policy__pinned_cut="conv1")
    trace = LinkTrace([LinkState(0.0, None, 40.0), LinkState(4.0, None, 1.0)])
    link = CountingLink(inner, LinkEmulator(trace))
    agent = EdgeAgent(cfg, transport=link)
    refresh_ms = agent.prober.rtt_refresh_ms = 500
    bandwidth = agent.feedback.telemetry.bandwidth

    def rtt_ms() -> float:
        with agent.feedback.lock:
            return bandwidth.estimate(agent.feedback.now_ms()).rtt_ms or -1.0

    try:
        agent.start()
        assert wait_for(lambda: rtt_ms() >= 80.0, 4.0 - link.elapsed_s())  # the slow link's, from a refresh
        assert link.elapsed_s() < 4.0
        with agent.feedback.lock:
            assert bandwidth.estimate(agent.feedback.now_ms()).uplink_samples >= 1  # transfers, not RTT samples
        assert wait_for(lambda: link.elapsed_s() > 4.0, 5)
        assert wait_for(lambda: 0 < rtt_ms() < 20.0, 10 * refresh_ms / 1000)
    finally:
        agent.stop(10)
        inner.close()
        server.stop(0)
    assert link.pings >= agent.prober.pings
