"""The "input" cut's bytes are sized on the camera's own frames while the agent uses another cut."""
from __future__ import annotations

from edge_agent.agent import EdgeAgent
from edge_agent.results import MemorySink
from edge_agent.stages.compute import INPUT_SIZING_FRAMES
from tests.edge_agent.conftest import agent_config, first_video_frame
from tests.waiting import wait_for


def _input_wire_ms(agent: EdgeAgent) -> float:
    now = agent.feedback.now_ms()
    return next(e.wire_ms for e in agent.policy.estimates(now) if e.cut_id == "input")


def test_the_policy_prices_input_with_this_cameras_jpeg(tiny_bundle) -> None:
    # no server: fully local, so nothing is sent and no probe changes the uplink estimate
    agent = EdgeAgent(agent_config(tiny_bundle, source__fps_cap=100, source__loop=True), sink=MemorySink())
    bundle_bytes = int(tiny_bundle.cut("input").wire_bytes)  # the 160x120 frame's whole JPEG
    sized = agent.head.input_wire_bytes(first_video_frame())  # downscaled to the tiny model's 16x16 input
    assert sized is not None and sized < bundle_bytes / 2
    before = _input_wire_ms(agent)
    agent.start()
    try:
        assert wait_for(lambda: agent.results >= INPUT_SIZING_FRAMES + 2)
        after = _input_wire_ms(agent)
    finally:
        assert agent.stop(30)
    assert after < before / 2  # the bundle's figure replaced by this camera's
    # the frames of the looped video differ a little: within 20 % of the first frame's JPEG
    assert abs(after / before - sized / bundle_bytes) < 0.2 * sized / bundle_bytes
