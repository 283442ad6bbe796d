from __future__ import annotations

import pytest

from benchmarks.testbed.scenarios import battery_at, build_scenarios, static_strategies, varying_schedule


def test_static_strategies_cover_every_cut() -> None:
    names = [s.name for s in static_strategies(["input", "f3", "f7", "output"])]
    assert names == ["edge-only", "cloud-only", "cut:f3", "cut:f7"]


def test_scenarios_compare_every_strategy_in_each_fixed_run() -> None:
    scenarios = build_scenarios(["input", "f3", "output"], quick=True)
    fixed = [s for s in scenarios if s.kind == "fixed"]
    assert [s.uplink_mbit for s in fixed] == [1, 3, 10, 30, 100]
    for s in fixed:
        assert [x.name for x in s.strategies] == ["edge-only", "cloud-only", "cut:f3", "adaptive"]
        assert s.frames == 30
    kinds = {s.kind for s in scenarios}
    assert kinds == {"fixed", "varying", "load", "battery", "kill"}
    battery = next(s for s in scenarios if s.kind == "battery")
    assert "adaptive-energy" in [x.name for x in battery.strategies]
    only = build_scenarios(["input", "output"], quick=True, only=["fixed_3mbit", "varying"])
    assert [s.name for s in only] == ["fixed_3mbit", "varying"]


def test_varying_trace_has_steps_ramp_and_a_ten_second_outage() -> None:
    for quick in (True, False):
        s = varying_schedule(quick)
        (start, end), = s.outages()
        assert end - start == pytest.approx(10.0)
        assert any(seg.ramp_to_kbps for seg in s.segments)
        assert len({seg.uplink_kbps for seg in s.segments}) >= 4
        assert s.state_at(end + 0.1).up


def test_battery_trace_crosses_the_threshold() -> None:
    s = next(x for x in build_scenarios(["input", "output"], quick=True, battery_low_pct=20) if x.kind == "battery")
    start, _ = battery_at(s.battery_trace, 0)
    end, charging = battery_at(s.battery_trace, 1e6)
    assert start > 20 > end and charging is False
    assert battery_at(((0, 50, False), (10, 30, False)), 5) == (40, False)
