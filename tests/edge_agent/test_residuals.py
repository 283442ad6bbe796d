"""Residual tables: sequences of (cut, predicted, measured, now_ms) -> the correction each cut gets,
and the policy choosing with it (issue 19). The policy case is the testbed's: the model says
local 62 ms < cloud 74 ms, frames measured local 82 ms and cloud 56 ms."""
from __future__ import annotations

import math

import pytest

from edge_agent.errors import ConfigError, PolicyError
from edge_agent.policy import SplitPolicy
from edge_agent.residuals import CorrectedEstimate, ResidualConfig, Residuals, frame_latency_ms
from edge_agent.types import CutEstimate, CutProfile, Telemetry

CFG = ResidualConfig(alpha=0.5, max_ms=50.0, hold_ms=1_000.0, fade_ms=1_000.0, min_frames=2)

# (name, [(cut, predicted_ms, measured_ms, now_ms)], now_ms asked, {cut: expected correction_ms})
TABLE = [
    ("nothing measured", [], 0, {"a": 0.0}),
    ("one frame is below min_frames", [("a", 10, 30, 0)], 0, {"a": 0.0}),
    ("the first min_frames frames are averaged", [("a", 10, 30, 0), ("a", 10, 20, 10)], 10, {"a": 15.0}),
    ("then an EWMA with alpha", [("a", 10, 30, 0), ("a", 10, 20, 10), ("a", 10, 35, 20)], 20, {"a": 20.0}),
    ("negative when the model is too high", [("b", 74, 56, 0), ("b", 74, 56, 5)], 5, {"b": -18.0}),
    ("per cut", [("a", 10, 30, 0), ("a", 10, 30, 1), ("b", 5, 0, 2), ("b", 5, 1, 3)], 3, {"a": 20.0, "b": -4.5}),
    ("clamped to +max_ms", [("a", 10, 500, 0), ("a", 10, 500, 1)], 1, {"a": 50.0}),
    ("clamped to -max_ms", [("a", 500, 10, 0), ("a", 500, 10, 1)], 1, {"a": -50.0}),
    ("kept through hold_ms", [("a", 10, 30, 0), ("a", 10, 30, 0)], 1_000, {"a": 20.0}),
    ("halfway through the fade", [("a", 10, 30, 0), ("a", 10, 30, 0)], 1_500, {"a": 10.0}),
    ("gone after hold + fade", [("a", 10, 30, 0), ("a", 10, 30, 0)], 2_000, {"a": 0.0}),
    ("a frame while fading restarts learning", [("a", 10, 30, 0), ("a", 10, 30, 0), ("a", 10, 12, 1_500)],
     1_500, {"a": 0.0}),
    ("and the new residual counts from min_frames", [("a", 10, 30, 0), ("a", 10, 30, 0), ("a", 10, 12, 1_500),
                                                      ("a", 10, 14, 1_600)], 1_600, {"a": 3.0}),
]


@pytest.mark.parametrize("name,frames,now_ms,expected", TABLE, ids=[t[0] for t in TABLE])
def test_residual_table(name: str, frames: list, now_ms: int, expected: dict) -> None:
    r = Residuals(CFG)
    for cut, predicted, measured, at in frames:
        r.observe(cut, predicted, measured, at)
    for cut, correction in expected.items():
        assert r.correction_ms(cut, now_ms) == pytest.approx(correction), name


def test_disabled_residuals_correct_nothing() -> None:
    r = Residuals(CFG, enabled=False)
    for t in range(5):
        r.observe("a", 10, 30, t)
    assert r.correction_ms("a", 5) == 0.0
    r.enabled = True
    assert r.correction_ms("a", 5) == pytest.approx(20.0)


@pytest.mark.parametrize("field,value", [("model_ms", -1.0), ("measured_ms", math.nan), ("now_ms", math.inf),
                                         ("measured_ms", True)])
def test_bad_observation_raises_and_leaves_state(field: str, value: object) -> None:
    r = Residuals(CFG)
    r.observe("a", 10, 30, 0)
    r.observe("a", 10, 30, 1)
    args = {"model_ms": 10.0, "measured_ms": 30.0, "now_ms": 2.0, field: value}
    with pytest.raises(PolicyError, match=field):
        r.observe("a", **args)  # type: ignore[arg-type]
    assert r.correction_ms("a", 2) == pytest.approx(20.0)


@pytest.mark.parametrize("field,value", [("alpha", 0.0), ("alpha", 1.5), ("max_ms", -1.0), ("hold_ms", math.inf),
                                         ("min_frames", 0), ("fade_ms", "10")])
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"residuals.{field} = "):
        ResidualConfig(**{field: value})  # type: ignore[arg-type]


def test_apply_adds_corrections_and_keeps_the_model() -> None:
    r = Residuals(CFG)
    for t in range(2):
        r.observe("a", 10, 30, t)
        r.observe("b", 10, 0, t)
    ests = [CutEstimate("a", 1, 2, 3, 10.0, 5.0), CutEstimate("b", 1, 2, 3, 4.0, 5.0),
            CutEstimate("c", 1, 2, 3, 7.0, 5.0), CutEstimate("a2", 1, 2, 3, 9.0, 5.0)]
    out = r.apply(ests, 2)
    a, b, c, _ = out
    assert isinstance(a, CorrectedEstimate) and (a.latency_ms, a.model_ms, a.correction_ms) == (30.0, 10.0, 20.0)
    assert a.energy_mj == 5.0 and a.head_ms == 1
    assert isinstance(b, CorrectedEstimate) and b.latency_ms == 0.0 and b.correction_ms == -4.0  # floored at 0
    assert c == ests[2] and type(c) is CutEstimate and out[3] == ests[3]  # no correction: the same value
    unavailable = CutEstimate("a", 1, 2, 3, 10.0, 5.0, available=False, unavailable_reason="cloud unavailable")
    assert r.apply([unavailable], 2) == [unavailable]


@pytest.mark.parametrize("path,learns", [("split", True), ("cloud", True), ("local", True), ("exited", True),
                                         ("fallback", False), ("gated", False)])
def test_observe_frame_learns_only_from_frames_that_ran_their_cut(path: str, learns: bool) -> None:
    r = Residuals(CFG)
    ests = [CutEstimate("a", 1, 2, 3, 10.0, 5.0)]
    for t in range(2):
        got = r.observe_frame(ests, "a", path, 30.0, t)
        assert got == (10.0 if learns else None)
    assert r.correction_ms("a", 2) == pytest.approx(20.0 if learns else 0.0)


def test_observe_frame_compares_with_the_uncorrected_model() -> None:
    r = Residuals(CFG)
    for t in range(2):
        r.observe("a", 10, 30, t)
    corrected = r.apply([CutEstimate("a", 1, 2, 3, 10.0, 5.0)], 2)
    assert corrected[0].latency_ms == 30.0
    assert r.observe_frame(corrected, "a", "split", 30.0, 3) == 10.0  # not 30: no feedback on itself
    assert r.correction_ms("a", 3) == pytest.approx(20.0)


def test_frame_latency_leaves_out_the_capture_queue() -> None:
    assert frame_latency_ms({"queue": 4.0, "head": 3.0, "total": 19.0}) == 15.0


# The testbed case: the model says local (output) 62 ms < cloud (input) 74 ms; frames measured 82 and 56.
TESTBED_CUTS = (CutProfile("input", 0, 13_000, 0.0, 10.0), CutProfile("output", 1, 0, 62.0, 0.0))


def _testbed_policy() -> SplitPolicy:
    policy = SplitPolicy(TESTBED_CUTS)
    # 13000 B at 2000 kbps = 52 ms wire + 12 ms rtt + 10 ms server = 74 ms
    policy.observe(Telemetry(at_ms=0, uplink_kbps=2_000.0, rtt_ms=12.0), 0)
    return policy


def test_policy_without_measurements_keeps_the_model_choice() -> None:
    d = _testbed_policy().decide(0)
    assert d.cut_id == "output" and "output 62 ms < input 74 ms" in d.reason, d.reason


def test_policy_with_measured_frames_moves_to_the_truly_faster_path() -> None:
    policy = _testbed_policy()
    assert policy.decide(0).cut_id == "output"
    for t in range(10, 60, 10):
        policy.residuals.observe_frame(policy.estimates(t), "output", "local", 82.0, t)  # local frames: 82 ms
    d = policy.decide(100)
    assert d.cut_id == "output" and "input 74 ms < output 82 ms (model 62, measured +20)" in d.reason, d.reason
    for t in range(110, 160, 10):
        policy.residuals.observe_frame(policy.estimates(t), "input", "cloud", 56.0, t)  # cloud frames: 56 ms
    d = policy.decide(3_200)
    assert d.cut_id == "input", d.reason
    assert "input 56 ms (model 74, measured -18) < output 82 ms (model 62, measured +20) (-32%)" in d.reason, d.reason
    assert [e.latency_ms for e in policy.estimates(3_200)] == pytest.approx([56.0, 82.0])


def test_policy_returns_to_the_model_when_a_residual_fades() -> None:
    policy = _testbed_policy()
    policy.residuals = Residuals(ResidualConfig(hold_ms=1_000.0, fade_ms=1_000.0))
    for t in range(0, 50, 10):
        policy.residuals.observe_frame(policy.estimates(t), "output", "local", 82.0, t)
    assert policy.estimates(1_000)[1].latency_ms == pytest.approx(82.0)
    assert policy.estimates(1_540)[1].latency_ms == pytest.approx(72.0)  # half faded
    assert policy.estimates(2_040)[1].latency_ms == pytest.approx(62.0)  # the model again


def test_reason_leaves_out_a_correction_that_rounds_to_zero() -> None:
    policy = _testbed_policy()
    for t in range(10, 60, 10):
        policy.residuals.observe_frame(policy.estimates(t), "output", "local", 61.8, t)
    d = policy.decide(100)
    assert d.cut_id == "output" and "output 62 ms < input 74 ms" in d.reason and "measured" not in d.reason, d.reason
