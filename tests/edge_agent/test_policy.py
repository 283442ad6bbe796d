"""Policy tables: telemetry sequences with explicit now_ms -> expected cut, mode and reason.

Cuts are MobileNetV2-like figures for a Pi 4 (int8 activations):

    cut          wire_bytes  head_ms  tail_ms
    input            12000        0       10
    features_6       25088       20        6
    features_13       3000       40        3
    output               0       90        0

With rtt 10 ms the latency ranking is: uplink 20000 kbps -> input (25 ms);
1000 kbps -> features_13 (77 ms); 200 kbps -> output (90 ms). At 400 kbps
latency picks output (90 ms) while energy picks features_13 (496 < 576 mJ).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import ConfigError, PolicyError, UnknownCutError
from edge_agent.policy import PolicyConfig, SplitPolicy
from edge_agent.power import PowerModel
from edge_agent.types import CutProfile, Mode, Objective, Telemetry

CUTS = (
    CutProfile("input", 0, 12_000, 0.0, 10.0),
    CutProfile("features_6", 1, 25_088, 20.0, 6.0),
    CutProfile("features_13", 2, 3_000, 40.0, 3.0),
    CutProfile("output", 3, 0, 90.0, 0.0),
)


def tel(now_ms: int, **kw: object) -> Telemetry:
    kw.setdefault("rtt_ms", 10.0)
    return Telemetry(at_ms=now_ms, **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Step:
    now_ms: int
    telemetry: Optional[dict]  # None: no new observation, just decide
    cut: str
    mode: Mode = Mode.AUTO
    reason: str = ""


def run(policy: SplitPolicy, steps: list[Step]) -> None:
    for i, step in enumerate(steps):
        if step.telemetry is not None:
            policy.observe(tel(step.now_ms, **step.telemetry), step.now_ms)
        decision = policy.decide(step.now_ms)
        where = f"step {i} at {step.now_ms} ms: {decision.reason}"
        assert decision.cut_id == step.cut, where
        assert decision.mode is step.mode, where
        assert step.reason in decision.reason, where
        assert decision.at_ms == step.now_ms


TABLES = {
    "bandwidth collapse moves to smaller activations, then local": (
        PolicyConfig(),
        [
            Step(0, {"uplink_kbps": 20_000}, "input", reason="initial choice: uplink 20000 kbps: input 25 ms"),
            Step(6_000, {"uplink_kbps": 1_000}, "features_13",
                 reason="uplink 1000 kbps: features_13 77 ms < input 116 ms (-34%)"),
            Step(12_000, {"uplink_kbps": 200}, "output",
                 reason="uplink 200 kbps: output 90 ms < features_13 173 ms (-48%)"),
            Step(18_000, {"uplink_kbps": 20_000}, "input", reason="input 25 ms < output 90 ms (-72%)"),
        ],
    ),
    # these tables set hysteresis 10 % (the default is 15 %): the -14 %/-15 % switches below test the mechanism
    "flapping near a crossover is suppressed by hysteresis": (
        PolicyConfig(min_dwell_ms=0, hysteresis_pct=10),
        [
            Step(0, {"uplink_kbps": 600}, "output", reason="output 90 ms < features_13 93 ms"),
            Step(1_000, {"uplink_kbps": 700}, "output", reason="gain 3% within hysteresis 10%"),
            Step(2_000, {"uplink_kbps": 600}, "output"),
            Step(3_000, {"uplink_kbps": 700}, "output", reason="keeping output"),
            Step(4_000, {"uplink_kbps": 1_000}, "features_13", reason="features_13 77 ms < output 90 ms (-14%)"),
            Step(5_000, {"uplink_kbps": 600}, "features_13", reason="gain 3% within hysteresis 10%"),
        ],
    ),
    "dwell holds a fresh cut, then the switch happens": (
        PolicyConfig(min_dwell_ms=5_000),
        [
            Step(0, {"uplink_kbps": 1_000}, "features_13"),
            Step(1_000, {"uplink_kbps": 200}, "features_13", reason="keeping features_13, dwell 4000 ms left"),
            Step(4_999, None, "features_13", reason="dwell 1 ms left"),
            Step(5_000, None, "output", reason="output 90 ms < features_13 173 ms"),
            Step(6_000, {"uplink_kbps": 20_000}, "output", reason="dwell 4000 ms left"),
            Step(10_000, None, "input"),
        ],
    ),
    "no measurement yet: the configured prior, said so": (
        PolicyConfig(prior_uplink_kbps=5_000, prior_rtt_ms=30),
        [
            Step(0, None, "input", reason="uplink 5000 kbps (prior): input 59 ms < features_13 78 ms"),
            Step(1_000, {"uplink_kbps": 200, "rtt_ms": None}, "input", reason="rtt 30 ms (prior)"),
        ],
    ),
    "low battery while discharging switches to energy at once; charging lifts it": (
        PolicyConfig(),
        [
            Step(0, {"uplink_kbps": 400, "battery_pct": 50.0, "charging": False}, "output",
                 reason="objective latency"),
            Step(1_000, {"uplink_kbps": 400, "battery_pct": 15.0, "charging": False}, "features_13",
                 reason="objective latency -> energy: uplink 400 kbps: features_13 496 mJ < output 576 mJ (-14%)"),
            Step(2_000, {"uplink_kbps": 400, "battery_pct": 15.0, "charging": False}, "features_13",
                 reason="battery 15% discharging (< 20%): objective energy"),
            Step(3_000, {"uplink_kbps": 400, "battery_pct": 16.0, "charging": True}, "output",
                 reason="objective energy -> latency: uplink 400 kbps: output 90 ms"),
        ],
    ),
    "battery rule has its own hysteresis (resume at 25%)": (
        PolicyConfig(),
        [
            Step(0, {"uplink_kbps": 400, "battery_pct": 19.0, "charging": False}, "features_13",
                 reason="objective energy"),
            Step(1_000, {"uplink_kbps": 400, "battery_pct": 22.0, "charging": False}, "features_13",
                 reason="battery 22% discharging"),
            Step(2_000, {"uplink_kbps": 400, "battery_pct": 26.0, "charging": False}, "output",
                 reason="objective latency"),
        ],
    ),
    "unknown charging state never triggers the battery rule": (
        PolicyConfig(),
        [Step(0, {"uplink_kbps": 400, "battery_pct": 5.0, "charging": None}, "output", reason="objective latency")],
    ),
    "battery rule can be switched off": (
        PolicyConfig(battery_rule=False),
        [Step(0, {"uplink_kbps": 400, "battery_pct": 5.0, "charging": False}, "output",
              reason="objective latency")],
    ),
    "SLO 120 ms: least energy among cuts that meet it": (
        PolicyConfig(objective=Objective.SLO, slo_ms=120),
        [Step(0, {"uplink_kbps": 400}, "features_13",
              reason="objective energy within SLO 120 ms (2/4 cuts meet it)")],
    ),
    "SLO 100 ms: only local meets it": (
        PolicyConfig(objective=Objective.SLO, slo_ms=100),
        [Step(0, {"uplink_kbps": 400}, "output", reason="(1/4 cuts meet it)")],
    ),
    "SLO 50 ms: nobody meets it, minimum latency with a reason": (
        PolicyConfig(objective=Objective.SLO, slo_ms=50),
        [Step(0, {"uplink_kbps": 400}, "output",
              reason="no cut meets SLO 50 ms (fastest output 90 ms): minimum latency instead")],
    ),
    "SLO: a current cut that starts missing the SLO is left after dwell regardless of hysteresis": (
        PolicyConfig(objective=Objective.SLO, slo_ms=120, min_dwell_ms=1_000, hysteresis_pct=90),
        [
            Step(0, {"uplink_kbps": 400}, "features_13"),
            Step(500, {"uplink_kbps": 300}, "features_13", reason="dwell 500 ms left"),
            Step(1_000, {"uplink_kbps": 300}, "output", reason="features_13 misses the SLO"),
        ],
    ),
    "energy objective from config": (
        PolicyConfig(objective=Objective.ENERGY),
        [Step(0, {"uplink_kbps": 400}, "features_13", reason="objective energy")],
    ),
    "throttling (slowdown) moves work off the device": (
        PolicyConfig(min_dwell_ms=0, hysteresis_pct=10),
        [
            Step(0, {"uplink_kbps": 400}, "output"),
            Step(1_000, {"uplink_kbps": 400, "slowdown_factor": 1.5}, "output", reason="within hysteresis"),
            Step(2_000, {"uplink_kbps": 400, "slowdown_factor": 2.0}, "features_13",
                 reason="features_13 153 ms < output 180 ms (-15%)"),
        ],
    ),
    "a server queue reported by the server pushes work local": (
        PolicyConfig(min_dwell_ms=0, hysteresis_pct=10),
        [
            Step(0, {"uplink_kbps": 20_000}, "input"),
            Step(1_000, {"uplink_kbps": 20_000, "server_queue_ms": 80.0, "server_compute_ms": 10.0}, "output",
                 reason="output 90 ms < input 105 ms (-14%)"),
        ],
    ),
    "cloud down -> LOCAL_FALLBACK at once; back to AUTO at once when it returns": (
        PolicyConfig(min_dwell_ms=60_000),
        [
            Step(0, {"uplink_kbps": 20_000}, "input"),
            Step(1_000, {"uplink_kbps": 20_000, "cloud_available": False}, "output", Mode.LOCAL_FALLBACK,
                 reason="cloud unavailable: running output locally (90 ms)"),
            Step(2_000, None, "output", Mode.LOCAL_FALLBACK),
            Step(3_000, {"uplink_kbps": 20_000, "cloud_available": True}, "input",
                 reason="cloud available again: uplink 20000 kbps: input 25 ms < output 90 ms"),
        ],
    ),
    "uplink measured at 0 kbps: only local is available": (
        PolicyConfig(),
        [Step(0, {"uplink_kbps": 0.0}, "output", reason="output 90 ms (only available cut)")],
    ),
}


@pytest.mark.parametrize("name", list(TABLES))
def test_policy_table(name: str) -> None:
    config, steps = TABLES[name]
    run(SplitPolicy(CUTS, config), steps)


def state(p: SplitPolicy) -> tuple:
    return (p.mode, p.cut_id, p.pinned_cut, p.objective, p.slo_ms, p.effective_objective,
            p.battery_rule_active, p.cloud_available, p.telemetry, p.current)


def test_pin_and_unpin_whole_state() -> None:
    p = SplitPolicy(CUTS, PolicyConfig(min_dwell_ms=60_000))
    p.observe(tel(0, uplink_kbps=20_000), 0)
    assert p.decide(0).cut_id == "input"
    d = p.pin("features_6", 1_000)
    assert (d.cut_id, d.mode) == ("features_6", Mode.PINNED)
    assert "pinned to features_6 by operator" in d.reason and "auto would choose input" in d.reason
    p.observe(tel(2_000, uplink_kbps=200), 2_000)
    assert p.decide(2_000).cut_id == "features_6"  # telemetry does not move a pin
    d = p.unpin(3_000)  # immediate, although the dwell (60 s) is not over
    assert (d.cut_id, d.mode) == ("output", Mode.AUTO)
    assert d.reason.startswith("unpinned: uplink 200 kbps: output 90 ms")
    assert state(p)[:8] == (Mode.AUTO, "output", None, Objective.LATENCY, None, Objective.LATENCY, False, True)


def test_pin_while_cloud_down_falls_back_and_returns_to_pin() -> None:
    p = SplitPolicy(CUTS)
    p.decide(0)
    d = p.note_offload_failed(100)
    assert (d.cut_id, d.mode) == ("output", Mode.LOCAL_FALLBACK)
    d = p.pin("features_13", 200)
    assert (d.cut_id, d.mode) == ("output", Mode.LOCAL_FALLBACK)
    assert "pinned features_13 needs the server" in d.reason
    d = p.note_cloud_available(True, 300)
    assert (d.cut_id, d.mode) == ("features_13", Mode.PINNED)
    # pinning the local cut survives a dead cloud as PINNED
    p.pin("output", 400)
    d = p.note_cloud_available(False, 500)
    assert (d.cut_id, d.mode) == ("output", Mode.PINNED)


def test_unknown_cut_raises_listing_valid_and_leaves_state() -> None:
    p = SplitPolicy(CUTS)
    p.observe(tel(0, uplink_kbps=1_000), 0)
    p.decide(0)
    before = state(p)
    with pytest.raises(UnknownCutError) as info:
        p.pin("features_99", 10)
    assert info.value.valid == ["input", "features_6", "features_13", "output"]
    assert "valid cuts: input, features_6, features_13, output" in str(info.value)
    assert state(p) == before


@pytest.mark.parametrize(
    "objective, slo_ms, message",
    [
        (Objective.SLO, None, "needs slo_ms"),
        (Objective.SLO, -5.0, "slo_ms = -5.0"),
        (Objective.SLO, 0, "slo_ms = 0"),
        (Objective.SLO, math.nan, "slo_ms = nan"),
        (Objective.LATENCY, math.inf, "slo_ms = inf"),
        ("latency", None, "objective 'latency' is not one of latency, energy, slo"),
    ],
)
def test_bad_objective_raises_and_leaves_state(objective: object, slo_ms: object, message: str) -> None:
    p = SplitPolicy(CUTS)
    p.decide(0)
    before = state(p)
    with pytest.raises(PolicyError) as info:
        p.set_objective(objective, slo_ms, 10)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert state(p) == before


def test_set_objective_applies_at_once() -> None:
    p = SplitPolicy(CUTS, PolicyConfig(min_dwell_ms=60_000))
    p.observe(tel(0, uplink_kbps=400), 0)
    assert p.decide(0).cut_id == "output"
    d = p.set_objective(Objective.SLO, 120, 1_000)
    assert (d.cut_id, d.objective) == ("features_13", Objective.SLO)
    assert d.reason.startswith("objective latency -> slo: uplink 400 kbps: features_13 496 mJ")
    d = p.set_objective(Objective.SLO, 100, 2_000)  # a new bound is a change too
    assert d.cut_id == "output"
    assert d.reason.startswith("SLO 120 ms -> 100 ms: ")
    assert (p.objective, p.slo_ms) == (Objective.SLO, 100.0)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"battery_pct": 140.0}, "telemetry.battery_pct = 140.0"),
        ({"uplink_kbps": -1.0}, "telemetry.uplink_kbps = -1.0"),
        ({"uplink_kbps": math.nan}, "telemetry.uplink_kbps = nan"),
        ({"rtt_ms": math.inf}, "telemetry.rtt_ms = inf"),
        ({"slowdown_factor": 0.0}, "telemetry.slowdown_factor = 0.0"),
        ({"server_queue_ms": -3.0}, "telemetry.server_queue_ms = -3.0"),
    ],
)
def test_bad_telemetry_raises_and_leaves_state(bad: dict, message: str) -> None:
    p = SplitPolicy(CUTS)
    p.observe(tel(0, uplink_kbps=1_000), 0)
    p.decide(0)
    before = state(p)
    with pytest.raises(PolicyError) as info:
        p.observe(tel(10, **bad), 10)
    assert message in str(info.value)
    assert state(p) == before


def test_time_going_backwards_raises_and_leaves_state() -> None:
    p = SplitPolicy(CUTS)
    p.observe(tel(1_000, uplink_kbps=1_000), 1_000)
    p.decide(1_000)
    before = state(p)
    for call in (lambda: p.decide(999), lambda: p.observe(tel(999), 999), lambda: p.pin("input", 999),
                 lambda: p.unpin(999), lambda: p.estimates(999), lambda: p.note_offload_failed(999),
                 lambda: p.set_objective(Objective.ENERGY, None, 999)):
        with pytest.raises(PolicyError, match="now_ms = 999 is before the last time the policy saw"):
            call()
    assert state(p) == before
    with pytest.raises(PolicyError, match="now_ms = nan"):
        p.decide(math.nan)  # type: ignore[arg-type]


def test_estimates_follow_the_documented_formula() -> None:
    power = PowerModel()
    p = SplitPolicy(CUTS, power=power)
    p.observe(tel(0, uplink_kbps=1_000, rtt_ms=10.0, slowdown_factor=2.0), 0)
    est = {e.cut_id: e for e in p.estimates(0)}
    e = est["features_13"]
    assert e.head_ms == pytest.approx(80.0)
    assert e.wire_ms == pytest.approx(3_000 * 8 / 1_000)
    assert e.server_ms == pytest.approx(3.0)
    assert e.latency_ms == pytest.approx(80 + 24 + 10 + 3)
    assert e.energy_mj == pytest.approx(power.energy_mj(80.0, 3_000, 1_000, 13.0))
    out = est["output"]
    assert (out.head_ms, out.wire_ms, out.server_ms, out.latency_ms) == (180.0, 0.0, 0.0, 180.0)
    assert out.energy_mj == pytest.approx(power.cpu_active_w * 180.0)
    assert all(x.available for x in est.values())


def test_server_time_scales_profiled_tails_by_the_measured_one() -> None:
    p = SplitPolicy(CUTS)
    p.observe(tel(0, uplink_kbps=20_000), 0)
    assert p.decide(0).cut_id == "input"  # tail_ms 10
    p.observe(tel(1, uplink_kbps=20_000, server_queue_ms=2.0, server_compute_ms=30.0), 1)  # 3x slower server
    est = {e.cut_id: e for e in p.estimates(1)}
    assert est["input"].server_ms == pytest.approx(2 + 30)  # the measured cut: queue + compute
    assert est["features_13"].server_ms == pytest.approx(2 + 3 * 3)
    assert est["output"].server_ms == 0.0


def test_estimates_mark_network_cuts_unavailable_when_cloud_down() -> None:
    p = SplitPolicy(CUTS)
    p.observe(tel(0, uplink_kbps=1_000, cloud_available=False), 0)
    est = p.estimates(0)
    assert [(e.cut_id, e.available, e.unavailable_reason) for e in est] == [
        ("input", False, "cloud unavailable"),
        ("features_6", False, "cloud unavailable"),
        ("features_13", False, "cloud unavailable"),
        ("output", True, ""),
    ]
    assert p.mode is Mode.LOCAL_FALLBACK
    assert p.current is None  # estimates never decide


def test_constructor_and_config_validation() -> None:
    with pytest.raises(PolicyError, match="no 'output' cut"):
        SplitPolicy(CUTS[:3])
    with pytest.raises(PolicyError, match="'input' appears twice"):
        SplitPolicy(CUTS + (CUTS[0],))
    with pytest.raises(PolicyError, match="head_ms = -1"):
        SplitPolicy((CutProfile("output", 0, 0, -1.0, 0.0),))
    with pytest.raises(ConfigError, match="policy.objective = 'slo' needs policy.slo_ms"):
        PolicyConfig(objective=Objective.SLO)
    with pytest.raises(ConfigError, match=r"policy.hysteresis_pct = -1; expected a number in \[0, 100\]"):
        PolicyConfig(hysteresis_pct=-1)
    with pytest.raises(ConfigError, match="battery_resume_pct = 10 is below policy.battery_low_pct = 20"):
        PolicyConfig(battery_resume_pct=10)
    with pytest.raises(ConfigError, match="prior_uplink_kbps = 0"):
        PolicyConfig(prior_uplink_kbps=0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3_000), st.floats(50, 50_000), st.floats(1, 200), st.floats(1, 3)),
                min_size=1, max_size=40))
def test_auto_never_switches_faster_than_dwell(events: list[tuple[int, float, float, float]]) -> None:
    """Property: with a steady objective and a live cloud, AUTO switches are >= min_dwell_ms apart
    and every decision names a known, available cut."""
    p = SplitPolicy(CUTS, PolicyConfig(min_dwell_ms=2_000))
    now, last_switch, cut = 0, None, None
    for gap, uplink, rtt, slowdown in events:
        now += gap
        p.observe(tel(now, uplink_kbps=uplink, rtt_ms=rtt, slowdown_factor=slowdown), now)
        d = p.decide(now)
        assert d.mode is Mode.AUTO and d.cut_id in p.cut_ids
        assert {e.cut_id: e for e in p.estimates(now)}[d.cut_id].available
        if cut is not None and d.cut_id != cut:
            assert last_switch is None or now - last_switch >= 2_000
            last_switch = now
        elif cut is None:
            last_switch = now
        cut = d.cut_id


def test_measured_wire_bytes_replace_the_bundle_estimate_and_change_the_choice() -> None:
    # The bundle guessed 120 kB for the JPEG (partitioned on large frames); this camera sends 15 kB.
    cuts = (CutProfile("input", 0, 120_000, 0.0, 10.0),) + CUTS[1:]
    policy = SplitPolicy(cuts, PolicyConfig(min_dwell_ms=0))
    policy.observe(tel(0, uplink_kbps=10_000), 0)
    assert policy.decide(0).cut_id != "input"  # 96 ms on the wire: looks too expensive
    policy.note_wire_bytes("input", 15_000, 10)  # first real sample replaces the estimate
    assert {e.cut_id: e.wire_ms for e in policy.estimates(10)}["input"] == pytest.approx(12.0)
    assert policy.decide(10).cut_id == "input"
    policy.note_wire_bytes("input", 25_000, 20)  # later samples are smoothed
    assert {e.cut_id: e.wire_ms for e in policy.estimates(20)}["input"] == pytest.approx(18_000 * 8 / 10_000)


@pytest.mark.parametrize(
    ("cut_id", "wire_bytes", "error"),
    [("features_99", 1_000, UnknownCutError), ("input", 0, PolicyError), ("input", -5, PolicyError),
     ("input", 1.5, PolicyError), ("input", True, PolicyError)],
)
def test_bad_wire_bytes_raise_and_leave_the_state_unchanged(cut_id, wire_bytes, error) -> None:
    policy = SplitPolicy(CUTS, PolicyConfig())
    policy.observe(tel(0, uplink_kbps=10_000), 0)
    before = policy.estimates(0)
    with pytest.raises(error):
        policy.note_wire_bytes(cut_id, wire_bytes, 5)
    assert policy.estimates(0) == before


def test_first_measurements_are_not_held_back_by_dwell_or_hysteresis() -> None:
    """The start-up choice rests on priors; the first real uplink/RTT decide at once."""
    policy = SplitPolicy(CUTS, PolicyConfig(min_dwell_ms=60_000, prior_uplink_kbps=500.0, prior_rtt_ms=100.0))
    first = policy.decide(0)
    assert first.cut_id == "output" and "(prior)" in first.reason
    policy.observe(tel(200, uplink_kbps=50_000, rtt_ms=2.0), 200)
    second = policy.decide(200)
    assert second.cut_id == "input"
    assert second.reason.startswith("first measurements replace the priors: uplink 50000 kbps")
    # after that, dwell applies again: a collapse 1 s later does not move the split yet
    policy.observe(tel(1_200, uplink_kbps=100, rtt_ms=2.0), 1_200)
    third = policy.decide(1_200)
    assert third.cut_id == "input" and "dwell" in third.reason


def test_server_busy_is_a_cost_not_an_outage() -> None:
    """RESOURCE_EXHAUSTED makes offloading dearer for the hold (forced re-choice, dwell ignored); the
    cloud stays available, and the penalty ends with the hold."""
    p = SplitPolicy(CUTS, PolicyConfig(min_dwell_ms=60_000))
    p.observe(tel(0, uplink_kbps=20_000), 0)
    assert p.decide(0).cut_id == "input"
    d = p.note_server_busy(500, 1_000)
    assert (d.cut_id, d.mode) == ("output", Mode.AUTO) and p.cloud_available
    assert d.reason.startswith("server busy: ") and "server busy (RESOURCE_EXHAUSTED): +500 ms" in d.reason
    input_est = {e.cut_id: e for e in p.estimates(1_200)}["input"]
    assert input_est.available and input_est.server_ms == pytest.approx(500 + 10.0)
    assert {e.cut_id: e for e in p.estimates(1_600)}["input"].server_ms == pytest.approx(10.0)  # hold over
    with pytest.raises(PolicyError, match="hold_ms = 0"):
        p.note_server_busy(0, 1_700)
    assert p.current is d


def test_configuration_problem_is_quoted_until_the_cloud_is_back() -> None:
    p = SplitPolicy(CUTS)
    p.decide(0)
    d = p.note_cloud_available(False, 100, problem="the server does not serve model 'm' version 'v1'")
    assert (d.cut_id, d.mode) == ("output", Mode.LOCAL_FALLBACK)
    assert d.reason.startswith("configuration: the server does not serve model 'm' version 'v1'; running output")
    assert p.decide(200).reason.startswith("configuration:")
    d = p.note_cloud_available(True, 300)
    assert d.mode is Mode.AUTO and "configuration" not in d.reason
