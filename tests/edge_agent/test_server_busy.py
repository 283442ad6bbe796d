"""The agent's answers to a busy server and to a server without its bundle version, end to end with
a real server and the real gRPC client feeding a real Feedback (policy, breaker, telemetry).

RESOURCE_EXHAUSTED is "server busy": a cost in the policy, never a breaker failure. NOT_FOUND for
our model version is configuration: the decision's reason says so (and `splitctl status` shows it),
and the health probe waits CONFIG_RECHECK_MS instead of probing every couple of seconds.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from cloud_server.server import create_server
from cloud_server.settings import ServerSettings
from edge_agent import ctl
from edge_agent.breaker import BreakerState, CircuitBreaker
from edge_agent.errors import MODEL_NOT_SERVED, SERVER_BUSY, OffloadUnavailable
from edge_agent.feedback import CONFIG_RECHECK_MS, Feedback
from edge_agent.head import HeadRunner
from edge_agent.metrics import EdgeMetrics
from edge_agent.policy import PolicyConfig, SplitPolicy
from edge_agent.telemetry import TelemetryHub
from edge_agent.transport_grpc import GrpcOptions, GrpcTransport
from edge_agent.types import CutProfile, Decision, Mode, OffloadRequest
from protos import control_pb2
from protos.bundle import tail_model_name, tail_model_version
from tests.edge_agent.conftest import first_video_frame

CUTS = (CutProfile("conv1", 1, 4_000, 2.0, 1.0), CutProfile("output", 2, 0, 40.0, 0.0))


class Clock:
    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:
        return self.ms


def _feedback(clock: Clock, decisions: list[Decision]) -> Feedback:
    policy = SplitPolicy(CUTS, PolicyConfig(min_dwell_ms=60_000))
    policy.decide(0)
    return Feedback(policy=policy, breaker=CircuitBreaker(), telemetry=TelemetryHub(),
                    metrics=EdgeMetrics.disabled(), now_ms=clock, on_decision=decisions.append)


def _request(bundle, rid: str, version: str | None = None) -> OffloadRequest:  # type: ignore[no-untyped-def]
    head = HeadRunner(bundle, threads=1, prewarm_neighbours=0)
    head.activate("conv1")
    out = head.run_head("conv1", first_video_frame())
    return OffloadRequest(tail_model_name(bundle.manifest, "conv1"), version or tail_model_version(bundle.manifest),
                          rid, out.tensors, ("logits",), {})


@pytest.mark.parametrize("streaming", [True, False])
def test_a_full_server_is_busy_not_down(tiny_bundle, streaming: bool) -> None:  # type: ignore[no-untyped-def]
    server = create_server(ServerSettings(host="127.0.0.1", port=0, bundles=(tiny_bundle.root,), metrics_port=None,
                                          discovery=False, max_inflight=1, max_queue_delay_us=300_000),
                           eager_batching=False)
    transport = GrpcTransport(server.address, GrpcOptions(streaming=streaming))
    requests = [_request(tiny_bundle, f"b{i}") for i in range(6)]

    def send(request: OffloadRequest) -> str:
        try:
            transport.infer(request, 10.0)
            return "OK"
        except OffloadUnavailable as exc:
            return exc.code

    try:
        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(send, requests))
        assert transport.infer(requests[0], 10.0).outputs["logits"].shape == (1, 5)  # idle again: served
    finally:
        transport.close()
        server.stop(0)
    assert "OK" in codes and codes.count(SERVER_BUSY) >= 3, codes
    assert set(codes) <= {"OK", SERVER_BUSY}, codes

    clock, decisions = Clock(), []
    feedback = _feedback(clock, decisions)
    assert feedback.policy.cut_id == "conv1"
    clock.ms = 1_000
    for _ in range(codes.count(SERVER_BUSY)):
        feedback.offload_failed(OffloadUnavailable("server busy", code=SERVER_BUSY))
    assert feedback.breaker.state is BreakerState.CLOSED  # not an outage
    assert decisions and decisions[0].cut_id == "output" and decisions[0].mode is Mode.AUTO
    assert "server busy (RESOURCE_EXHAUSTED)" in decisions[0].reason
    assert feedback.policy.cloud_available and feedback.offload_failures[SERVER_BUSY] == codes.count(SERVER_BUSY)


def test_a_server_without_our_version_is_configuration(tiny_bundle) -> None:  # type: ignore[no-untyped-def]
    server = create_server(ServerSettings(host="127.0.0.1", port=0, bundles=(tiny_bundle.root,), metrics_port=None,
                                          discovery=False))
    transport = GrpcTransport(server.address)
    request = _request(tiny_bundle, "v1", version="0123456789ab")
    try:
        with pytest.raises(OffloadUnavailable) as info:
            transport.infer(request, 5.0)
    finally:
        transport.close()
        server.stop(0)
    assert info.value.code == MODEL_NOT_SERVED and not info.value.retryable

    clock, decisions = Clock(), []
    feedback = _feedback(clock, decisions)
    clock.ms = 1_000
    feedback.offload_failed(info.value, (request.model_name, request.model_version))
    assert feedback.breaker.state is BreakerState.OPEN
    (decision,) = decisions
    assert decision.mode is Mode.LOCAL_FALLBACK
    assert decision.reason.startswith("configuration: the server does not serve model")
    assert "'0123456789ab'" in decision.reason
    clock.ms = 1_000 + 10_000  # well past the breaker's 2 s backoff: still no probe
    assert not feedback.begin_health_probe(clock.ms)
    clock.ms = 1_000 + CONFIG_RECHECK_MS + 1
    assert feedback.begin_health_probe(clock.ms)
    status = control_pb2.AgentStatus(agent_id="a", bundle_name="tiny", circuit_state="open",
                                     current=control_pb2.Decision(cut_id="output", reason=decision.reason))
    text = ctl.render_status(status)
    assert "problem    configuration: the server does not serve model" in text
