"""Round-2 testbed scenarios, the static cut choice and the pacing (pure values)."""
from __future__ import annotations

import pytest

from benchmarks.testbed.cameras import (
    CAMERAS, VARYING_PHASES, battery_clip_plan, best_static_cut, long_varying_schedule, phase_spans, round2_scenarios,
)
from benchmarks.testbed.three_region import CutRow, strategy_fps

CUTS = ["input", "c1", "c1_q4_zstd", "c2", "output"]


def test_varying_trace_has_long_phases_an_outage_and_ends_fast() -> None:
    schedule = long_varying_schedule()
    spans = phase_spans()
    assert [name for name, *_ in spans] == [p[0] for p in VARYING_PHASES]
    assert all(end - start >= 10.0 for _, start, end in spans)
    assert all(end - start >= 20.0 for name, start, end in spans if name != "outage")
    assert schedule.last_change_s == pytest.approx(110.0)
    assert schedule.outages() == [(80.0, 90.0)]
    assert schedule.state_at(30.0).uplink_kbps == 1000 and schedule.state_at(30.0).loss_pct == 2.0
    assert schedule.state_at(70.0).uplink_kbps == pytest.approx(8000 + (500 - 8000) * 0.5)
    assert schedule.state_at(500.0).uplink_kbps == 30_000 and schedule.state_at(500.0).up


@pytest.mark.parametrize("phases, message", [
    ((), "no phases"),
    ((("x", 0.0, 1.0, None, 0.0, True),), "seconds=0.0"),
    ((("x", 5.0, -1.0, None, 0.0, True),), "Mbit/s=-1.0"),
])
def test_varying_trace_rejects_bad_phases(phases: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        long_varying_schedule(phases)


def test_battery_clip_holds_noisy_frames_between_motion() -> None:
    plan = battery_clip_plan(held=3, motion=2, stretches=3)
    assert plan == [(0, True)] * 3 + [(1, False), (2, False)] + [(2, True)] * 3 + [(3, False), (4, False)] \
        + [(4, True)] * 3
    with pytest.raises(ValueError, match="held=0"):
        battery_clip_plan(held=0, motion=2, stretches=1)


def test_round2_scenarios_run_the_issue_strategies() -> None:
    scenarios = round2_scenarios(CUTS, fps_cap=2.0, best_cut="c1_q4_zstd", load_clients=(16, 64), battery_frames=50,
                                 kill_fps=4.0)
    by = {s.name: s for s in scenarios}
    assert list(by) == ["varying", "server_load_16", "server_load_64", "battery", "server_kill"]
    assert [x.name for x in by["varying"].strategies] == [
        "edge-only", "cloud-only", "cut:c1_q4_zstd", "adaptive", "adaptive+gate"]
    assert by["varying"].frames == 220
    gate = by["varying"].strategies[-1]
    assert gate.gate and gate.exits and gate.adaptive
    assert [x.name for x in by["server_load_64"].strategies] == ["edge-only", "cloud-only", "adaptive"]
    assert by["server_load_64"].load_clients == 64
    battery = by["battery"]
    assert [x.name for x in battery.strategies] == [
        "edge-only", "cloud-only", "cut:c1_q4_zstd", "adaptive-energy", "adaptive-energy+gate"]
    assert {x.objective for x in battery.strategies if x.adaptive} == {"energy"}
    assert battery.frames == 50
    assert battery.battery_trace[0][1] > 20.0 > battery.battery_trace[-1][1]
    kill = by["server_kill"]
    assert kill.fps_cap == 4.0 and kill.frames == 240
    assert kill.kill_at_s is not None and kill.restart_at_s is not None
    assert 0 < kill.kill_at_s < kill.restart_at_s < kill.frames / kill.fps_cap


@pytest.mark.parametrize("kwargs, message", [
    ({"best_cut": "nope"}, "best_cut 'nope' is not a cut"),
    ({"best_cut": None, "fps_cap": 0.0}, "fps_cap=0.0"),
    ({"best_cut": None, "kinds": ("varying", "chaos")}, "kinds \\['chaos'\\]"),
])
def test_round2_scenarios_reject_bad_arguments(kwargs: dict, message: str) -> None:
    args = {"fps_cap": 2.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        round2_scenarios(CUTS, **args)


def test_cameras_name_their_bundle_and_video() -> None:
    assert set(CAMERAS) == {"ssd-vtest", "mnv2-bikes"}
    assert CAMERAS["ssd-vtest"].video == "vtest.avi" and CAMERAS["mnv2-bikes"].video == "bikes.mp4"
    assert all(c.bundles and c.fps_cap > 0 for c in CAMERAS.values())


def _rows() -> list[CutRow]:
    return [
        CutRow("input", 0, 100_000, 1.0, 40.0),
        CutRow("output", 9, 0, 300.0, 0.0),
        # a cheap head with few bytes: best on slow links
        CutRow("small", 5, 10_000, 80.0, 20.0, codec="q5+zstd", base_id="mid"),
        CutRow("mid", 5, 20_000, 60.0, 20.0),
        # cheaper head, more bytes
        CutRow("early", 2, 60_000, 20.0, 30.0),
        # more bytes than the JPEG: never a candidate
        CutRow("huge", 1, 150_000, 5.0, 30.0),
    ]


def test_best_static_cut_is_the_lowest_predicted_mean_over_the_trace() -> None:
    best, means = best_static_cut(_rows(), long_varying_schedule(), jpeg_bytes=100_000, rtt_ms=10.0)
    assert set(means) == {"small", "early"}  # "mid" has a variant with fewer bytes, "huge" > the JPEG
    assert best == "small" and means["small"] < means["early"]
    # by hand at 1 Mbit/s: 80 + 10000 * 8 / 1000 / 1 + 10 + 20
    one, _ = best_static_cut(_rows(), long_varying_schedule((("x", 3.0, 1.0, None, 0.0, True),)),
                             jpeg_bytes=100_000, rtt_ms=10.0)
    assert one == "small"


def test_best_static_cut_none_without_candidates() -> None:
    rows = [r for r in _rows() if r.cut_id in ("input", "output", "huge")]
    assert best_static_cut(rows, long_varying_schedule(), jpeg_bytes=100_000, rtt_ms=10.0) == (None, {})


@pytest.mark.parametrize("predicted, edge, adaptive, expected", [
    (100.0, 300.0, False, 5.0),  # capped
    (1000.0, 300.0, False, round(1000 / 1500, 3)),  # its own pace
    (100.0, 1000.0, True, round(1000 / 1500, 3)),  # adaptive: never faster than edge-only's pace
    (2000.0, 1000.0, True, round(1000 / 3000, 3)),
])
def test_strategy_fps(predicted: float, edge: float, adaptive: bool, expected: float) -> None:
    assert strategy_fps(predicted, edge_ms=edge, fps_cap=5.0, adaptive=adaptive) == expected


def test_strategy_fps_rejects_non_positive() -> None:
    with pytest.raises(ValueError, match="predicted_ms=0"):
        strategy_fps(0.0, edge_ms=1.0, fps_cap=5.0)
