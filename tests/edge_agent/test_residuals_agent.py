"""The daemon with measured residuals (issue 19), with real parts: the tiny real bundle, real
ONNX Runtime tails behind the fake transport, the sample video.

The case: the device is emulated 100x slower (``runtime.emulated_slowdown``), every offload takes
40 ms, one network worker, 50 frames/s, and the operator ran the agent cloud-only ("input" pinned)
before switching it to auto. The model predicts "input" at ~45 ms (JPEG profiled at 0 ms + wire +
RTT + tail) and "output" at the bundle's 80 ms (no head ran yet, so the slowdown factor is still 1).
What frames really take: offloaded frames wait for the one worker and pay the emulated JPEG
encoding (~170 ms after the capture queue, seen on a loaded 2-core box), local frames ~13 ms. With
the correction the agent leaves "input" and settles on "output"; without it, it never leaves the
offloading cuts (assertions on decisions, not timings).
"""
from __future__ import annotations

import time
from collections import Counter

from edge_agent.agent import EdgeAgent
from edge_agent.residuals import CorrectedEstimate
from edge_agent.results import MemorySink
from edge_agent.transport_fake import FakeTransport
from tests.edge_agent.conftest import agent_config
from tests.waiting import wait_for

OFFLOAD_S = 0.04
SLOWDOWN = 100.0


def _agent(tiny_bundle, tail_server, sink: MemorySink, *, corrected: bool) -> EdgeAgent:
    cfg = agent_config(tiny_bundle, source__fps_cap=50, source__loop=True, runtime__deadline_ms=2_000,
                       runtime__emulated_slowdown=SLOWDOWN, runtime__max_in_flight=1, policy__pinned_cut="input")
    agent = EdgeAgent(cfg, transport=FakeTransport(tail_server, delay_s=lambda r: OFFLOAD_S), sink=sink)
    agent.policy.residuals.enabled = corrected
    return agent


def _watch(agent: EdgeAgent, seconds: float) -> Counter[str]:
    seen: Counter[str] = Counter()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seen[agent.decision.cut_id] += 1
        time.sleep(0.02)
    return seen


def test_measured_latency_moves_the_agent_to_the_truly_faster_path(tiny_bundle, tail_server) -> None:
    sink = MemorySink()
    agent = _agent(tiny_bundle, tail_server, sink, corrected=True).start()
    try:
        assert wait_for(lambda: agent.results >= 30, timeout_s=30)  # cloud-only, pinned by the operator
        assert agent.set_auto().cut_id != "output"  # the model alone still ranks offloading first ...
        started = time.monotonic()
        assert wait_for(lambda: agent.decision.cut_id == "output", timeout_s=30), agent.decision.reason
        settle_s = time.monotonic() - started
        cloud = next(e for e in agent.cut_estimates() if e.cut_id == "input")
        assert isinstance(cloud, CorrectedEstimate) and cloud.correction_ms > 0, cloud  # frames took longer
        after = _watch(agent, 2.0)
        local_ms = [r.latency_ms["total"] for r in sink.results if r.path.value == "local"]
        offload_ms = [r.latency_ms["total"] for r in sink.results if r.path.value in ("cloud", "split")]
    finally:
        assert agent.stop(20)
    assert after["output"] >= 0.9 * sum(after.values()), after  # it stays on the faster path
    # the path it settled on is the faster one, as frames measured it (median of all frames of the run)
    assert offload_ms and local_ms
    assert sorted(local_ms)[len(local_ms) // 2] < sorted(offload_ms)[len(offload_ms) // 2]

    plain = _agent(tiny_bundle, tail_server, MemorySink(), corrected=False).start()
    try:
        assert wait_for(lambda: plain.results >= 30, timeout_s=30)
        plain.set_auto()
        seen = _watch(plain, settle_s + 2.0)
        reason = plain.decision.reason
    finally:
        assert plain.stop(20)
    assert seen["output"] == 0 and plain.results_by_path["local"] == 0, (seen, reason)  # the model alone: never
    assert "measured" not in reason
