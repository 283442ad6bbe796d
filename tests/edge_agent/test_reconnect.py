"""Reconnects that work (issue 15 part 5): our real server restarted on the same port, directly and
behind the testbed's TCP proxy; the agent drops its stale stream and channel and offloads again,
and once back it stays back (no failing offload down an old stream). Recovery times are measured by
benchmarks/triton_bench.py, not asserted here."""
from __future__ import annotations

import pathlib
import time

import numpy as np
import pytest

from benchmarks.testbed.proxy import DelayProxy
from benchmarks.testbed.schedule import fixed
from cloud_server.server import RunningServer, create_server
from cloud_server.settings import ServerSettings
from edge_agent.agent import EdgeAgent
from edge_agent.errors import OffloadUnavailable
from edge_agent.transport_grpc import GrpcTransport
from edge_agent.types import OffloadRequest, Path, WireTensor
from protos.bundle import BUNDLE_HASH_PARAMETER, Bundle, bundle_hash
from tests.edge_agent.conftest import agent_config
from tests.triton.conftest import TimedSink
from tests.waiting import wait_for


def _serve(bundle: Bundle, port: int = 0) -> RunningServer:
    return create_server(ServerSettings(host="127.0.0.1", port=port, bundles=(bundle.root,), metrics_port=None,
                                        discovery=False, max_queue_delay_us=0))


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])



def _request(bundle: Bundle, rid: str) -> OffloadRequest:
    x = np.ones((1, 4, 16, 16), np.float32)
    return OffloadRequest(model_name="tiny_net.conv1", model_version="1", request_id=rid,
                          inputs=(WireTensor("conv1_out", "FP32", x.shape, x.tobytes()),), output_names=("logits",),
                          parameters={BUNDLE_HASH_PARAMETER: bundle_hash(bundle.manifest)})


def test_transport_replaces_its_channel_after_the_server_went_away(tiny_bundle: Bundle) -> None:
    server = _serve(tiny_bundle)
    port = _port(server.address)
    transport = GrpcTransport(server.address)
    try:
        assert transport.infer(_request(tiny_bundle, "a"), 5.0).outputs["logits"].shape == (1, 5)
        server.stop(0)
        with pytest.raises(OffloadUnavailable) as failed:
            transport.infer(_request(tiny_bundle, "b"), 5.0)
        assert failed.value.code in ("UNAVAILABLE", "STREAM_CLOSED", "CANCELLED")
        assert transport.channels_opened == 2  # the failure replaced the channel
        assert not transport.healthy(0.5)
        assert transport.channels_opened == 3  # so did the failed probe that followed
        server = _serve(tiny_bundle, port)
        assert transport.healthy(2.0)
        assert transport.channels_opened == 3  # a probe that works proves the channel: kept
        assert transport.infer(_request(tiny_bundle, "c"), 5.0).outputs["logits"].shape == (1, 5)
    finally:
        transport.close()
        server.stop(0)


@pytest.mark.parametrize("through_proxy", [False, True], ids=["direct", "proxy"])
def test_agent_offloads_again_after_our_server_restarts(tiny_bundle: Bundle, through_proxy: bool,
                                                        tmp_path: pathlib.Path) -> None:
    server = _serve(tiny_bundle)
    port = _port(server.address)
    proxy = None
    address = server.address
    if through_proxy:
        proxy = DelayProxy(("127.0.0.1", 0), ("127.0.0.1", port), fixed(delay_ms=5.0))
        address = f"127.0.0.1:{proxy.start()}"
    sink = TimedSink()
    cfg = agent_config(tiny_bundle, server__address=address, server__discovery=False, policy__pinned_cut="conv1",
                       source__fps_cap=30.0, source__loop=True, runtime__deadline_ms=1000.0)
    agent = EdgeAgent(cfg, sink=sink).start()
    try:
        assert wait_for(lambda: sum(r.path is Path.SPLIT for _, r in sink.snapshot()) >= 20, 30)
        server.stop(0)
        stopped = time.monotonic()
        assert wait_for(lambda: sum(r.path is Path.FALLBACK and t > stopped for t, r in sink.snapshot()) >= 10, 30)
        server = _serve(tiny_bundle, port)
        ready = time.monotonic()
        assert wait_for(lambda: sum(r.path is Path.SPLIT and t > ready for t, r in sink.snapshot()) >= 20, 30), \
            f"no offload after the restart; breaker {agent.breaker.state}, failures {agent.offload_failures}"
    finally:
        agent.stop(10)
        server.stop(0)
        if proxy is not None:
            proxy.stop()
    after = [r for t, r in sink.snapshot() if t > ready]
    first = next(i for i, r in enumerate(after) if r.path is Path.SPLIT)
    assert {r.path for r in after[first:]} == {Path.SPLIT}, [r.fallback_reason for r in after[first:]]


def test_a_bandwidth_probe_is_due_at_once_when_the_server_comes_back(tiny_bundle: Bundle) -> None:
    """The probe schedule must not keep an agent that fell back to "output" local after the server
    returned: probes that hung on the dead link pushed the next slot far out (2 % duty cycle), but the
    health probe that finds the server back makes the next bandwidth probe due at once."""
    from edge_agent.types import Decision, Mode, Objective
    from tests.edge_agent.conftest import first_video_frame

    server = _serve(tiny_bundle)
    transport = GrpcTransport(server.address)
    agent = EdgeAgent(agent_config(tiny_bundle), transport=transport)
    try:
        prober, scheduler = agent.prober, agent.prober.scheduler
        now = agent.feedback.now_ms()
        scheduler.note_started(now)
        scheduler.note_finished(now + 1000)  # a probe that waited 1 s on a dead link: next slot in 10 s
        local = Decision("output", Mode.AUTO, "test", Objective.LATENCY, now)
        image = first_video_frame()
        assert not prober.bandwidth_probe_due(local, now + 2000, image)
        prober.health_probe(transport, server.address)  # the server answers: it is back
        assert prober.bandwidth_probe_due(local, now + 2000, image)
        prober.bandwidth_probe(transport, image)  # measured: the schedule applies again
        assert not prober.bandwidth_probe_due(local, agent.feedback.now_ms(), image)
        assert scheduler.probes == 2
    finally:
        agent.stop(5)
        transport.close()
        server.stop(0)


def test_a_probe_that_finds_the_server_gone_opens_the_circuit_at_once(tiny_bundle: Bundle) -> None:
    """Fully local by choice nothing else talks to the server: one bandwidth probe meeting a dead server
    opens the circuit (no threshold of offloads will follow), so the breaker's health probes watch for
    its return instead of the next bandwidth probe >= 10 s later; once back, a probe is due at once."""
    from edge_agent.breaker import BreakerState
    from tests.edge_agent.conftest import first_video_frame

    server = _serve(tiny_bundle)
    port = _port(server.address)
    transport = GrpcTransport(server.address)
    # pinned to "output": the loop itself never probes, so the probe below is the only request
    cfg = agent_config(tiny_bundle, source__fps_cap=5.0, source__loop=True, policy__pinned_cut="output")
    agent = EdgeAgent(cfg, transport=transport).start()
    try:
        assert wait_for(lambda: agent.results >= 3, 20)
        image = first_video_frame()
        server.stop(0)
        with agent.feedback.lock:
            assert agent.breaker.state is BreakerState.CLOSED
        agent.prober.bandwidth_probe(transport, image)
        with agent.feedback.lock:
            assert agent.breaker.state is BreakerState.OPEN  # one failed probe, not three
        assert agent.offload_failures["UNAVAILABLE"] == 1
        server = _serve(tiny_bundle, port)
        # the running agent's own loop probes health when the backoff (500 ms) is over and closes it
        assert wait_for(lambda: agent.breaker.state is BreakerState.CLOSED, 10)
    finally:
        agent.stop(10)
        transport.close()
        server.stop(0)
