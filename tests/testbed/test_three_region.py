"""The three-region sweep's pure parts: which cuts run, the paper model, the learning period, the goal check."""
from __future__ import annotations

import pytest

from benchmarks.testbed.three_region import (
    CLOUD, EDGE, CutRow, Point, evaluate, pick_mid_cuts, predict_ms, ratio_floor, settle, sweep_fps,
)

ROWS = [
    CutRow("input", 0, 15_000, 0.5, 10.0),
    CutRow("f2", 1, 75_000, 20.0, 8.0),
    CutRow("f14", 2, 7_840, 60.0, 2.0),
    CutRow("f14_q4p", 3, 3_557, 62.0, 2.2, codec="q4p+zstd", base_id="f14"),
    CutRow("bn", 4, 3_400, 16.0, 9.0, codec="bottleneck", base_id="f2"),
    CutRow("output", 5, 0, 80.0, 0.0),
]


def test_each_cut_runs_with_its_fewest_bytes_and_cuts_above_the_jpeg_are_left_out() -> None:
    pick = pick_mid_cuts(ROWS, jpeg_bytes=15_000)
    assert [r.cut_id for r in pick.cuts] == ["f14_q4p", "bn"]
    skipped = dict(pick.skipped)
    assert set(skipped) == {"f2", "f14"}
    assert "bn carries fewer bytes" in skipped["f2"] and "f14_q4p carries fewer bytes" in skipped["f14"]
    # without the codec variants, a cut above the JPEG's bytes is dominated by cloud-only
    plain = pick_mid_cuts([r for r in ROWS if not r.codec], jpeg_bytes=15_000)
    assert [r.cut_id for r in plain.cuts] == ["f14"]
    assert "dominated by cloud-only" in dict(plain.skipped)["f2"]
    with pytest.raises(ValueError, match="jpeg_bytes = 0"):
        pick_mid_cuts(ROWS, jpeg_bytes=0)


@pytest.mark.parametrize("mbit, expected", [
    # edge = 80; cloud = 0.5 + 15000*8/1000/mbit + 10 + 10; bn = 16 + 3400*8/1000/mbit + 10 + 9
    (1.0, {EDGE: 80.0, CLOUD: 140.5, "cut:bn": 62.2}),
    (10.0, {EDGE: 80.0, CLOUD: 32.5, "cut:bn": 37.72}),
])
def test_predict_ms_follows_the_formula(mbit: float, expected: dict) -> None:
    got = predict_ms([ROWS[0], ROWS[4], ROWS[5]], uplink_mbit=mbit, rtt_ms=10.0, jpeg_bytes=15_000, jpeg_encode_ms=0.5)
    assert got == pytest.approx(expected)
    with pytest.raises(ValueError, match="lack \\['output'\\]"):
        predict_ms(ROWS[:2], uplink_mbit=1.0, rtt_ms=10.0, jpeg_bytes=15_000)


def test_ratio_floor_is_the_ratio_where_edge_and_cloud_tie() -> None:
    bn = ROWS[4]
    floor = ratio_floor(bn, edge_ms=80.0, jpeg_bytes=15_000, rtt_ms=10.0, server_ms=10.0)
    # at the tie, 15000 B take 80 - 10 - 10 = 60 ms: bn costs 16 + 3400/15000*60 + 10 + 9 = 48.6 ms = 0.6075 x 80
    assert floor == pytest.approx(0.6075)
    tie_mbit = 15_000 * 8 / 1000 / 60.0
    p = predict_ms([ROWS[0], bn, ROWS[5]], uplink_mbit=tie_mbit, rtt_ms=10.0, jpeg_bytes=15_000)
    assert p[EDGE] == pytest.approx(p[CLOUD]) and p["cut:bn"] / p[EDGE] == pytest.approx(floor)
    for mbit in (0.5, tie_mbit * 0.8, tie_mbit * 1.25, 20.0):  # nowhere lower than at the tie
        q = predict_ms([ROWS[0], bn, ROWS[5]], uplink_mbit=mbit, rtt_ms=10.0, jpeg_bytes=15_000)
        assert q["cut:bn"] / min(q[EDGE], q[CLOUD]) > floor
    assert ratio_floor(ROWS[3], edge_ms=80.0, jpeg_bytes=15_000, rtt_ms=10.0, server_ms=10.0) > 1.0
    assert ratio_floor(bn, edge_ms=15.0, jpeg_bytes=15_000, rtt_ms=10.0, server_ms=10.0) is None


@pytest.mark.parametrize("mbit, fps", [(0.25, 1.0), (1.0, 4.08), (50.0, 5.0)])
def test_sweep_fps_leaves_room_for_the_slowest_strategy(mbit: float, fps: float) -> None:
    # 0.25 Mbit/s: 15000 B take 480 ms, + 186.67 ms edge -> 1000 / (1.5 * 666.67) = 1.0 fps
    assert sweep_fps(mbit, jpeg_bytes=15_000, edge_ms=186.67 if mbit == 0.25 else 43.3, fps_cap=5.0) == fps


@pytest.mark.parametrize("cuts, choice, learning, share", [
    (["a"] * 10, "a", 0, 1.0),
    (["in", "in", "out", "bn", "bn", "bn", "bn", "bn"], "bn", 3, 1.0),
    # a late excursion does not restart the learning period
    (["in", "bn", "bn", "bn", "bn", "out", "bn", "bn", "bn", "bn"], "bn", 1, 0.889),
    # settles only in the second half
    (["in"] * 6 + ["bn"] * 4 + ["bn"] * 4, "bn", 6, 1.0),
])
def test_settle_splits_off_the_learning_period(cuts: list, choice: str, learning: int, share: float) -> None:
    s = settle(cuts)
    assert (s.choice, s.learning_frames, s.settled_share) == (choice, learning, share)
    assert s.settled_frames == len(cuts) - learning and sum(s.cuts_after.values()) == s.settled_frames
    with pytest.raises(ValueError, match="no frames"):
        settle([])


def _points(mid_ms: dict, adaptive: dict) -> list[Point]:
    edge = 100.0
    out = []
    for mbit in (0.25, 0.5, 1, 2, 4, 8, 16, 50):
        cloud = 20 + 120 / mbit
        means = {EDGE: edge, CLOUD: cloud}
        if mbit in mid_ms:
            means["cut:bn"] = mid_ms[mbit]
        out.append(Point(mbit, means, adaptive_cut=adaptive.get(mbit, "output" if edge < cloud else "input"),
                         adaptive_ms=min(means.values())))
    return out


def test_evaluate_finds_the_band_ratio_and_adaptive_choice() -> None:
    # cloud: 500, 260, 140, 80, 50, 35, 27.5, 22.4; bn fastest from 0.5 to 4 Mbit/s (8x), 0.6x at 1 Mbit/s
    mid = {0.25: 130.0, 0.5: 80.0, 1: 60.0, 2: 55.0, 4: 45.0, 8: 40.0, 16: 38.0, 50: 37.0}
    ev = evaluate(_points(mid, {m: "bn" for m in (0.5, 1, 2, 4)}))
    band = ev["best_band"]
    assert (band["strategy"], band["from_mbit"], band["to_mbit"], band["width"]) == ("cut:bn", 0.5, 4, 8.0)
    assert band["best_ratio"] == pytest.approx(0.6)
    assert ev["goal"] == {"band_width": 8.0, "band_width_target": ">= 4", "band_width_met": True,
                          "ratio": 0.6, "ratio_target": "<= 0.7", "ratio_met": True,
                          "adaptive_chooses_the_cut_there": True, "met": True}
    assert [p["fastest"] for p in ev["points"]] == [EDGE] + ["cut:bn"] * 4 + [CLOUD] * 3


def test_evaluate_reports_each_missed_part() -> None:
    # adaptive stays on the cloud at 4 Mbit/s: the band is found but adaptive misses it there
    mid = {0.25: 130.0, 0.5: 80.0, 1: 60.0, 2: 55.0, 4: 45.0, 8: 40.0, 16: 38.0, 50: 37.0}
    ev = evaluate(_points(mid, {0.5: "bn", 1: "bn", 2: "bn", 4: "input"}))
    assert ev["goal"]["band_width_met"] and ev["goal"]["ratio_met"]
    assert ev["best_band"]["adaptive_agrees"] == [True, True, True, False] and not ev["goal"]["met"]
    # a narrow band (one point, width 1) with a weak ratio
    ev = evaluate(_points({1: 95.0, 2: 90.0}, {}))
    assert ev["best_band"]["width"] == 1.0 and ev["best_band"]["best_ratio"] == pytest.approx(0.95)
    assert not ev["goal"]["band_width_met"] and not ev["goal"]["ratio_met"] and not ev["goal"]["met"]
    # no mid cut is ever fastest
    ev = evaluate(_points({1: 150.0}, {}))
    assert ev["bands"] == [] and ev["best_band"] is None and ev["lowest_mid_ratio_anywhere"] == 1.5
    assert ev["goal"]["met"] is False and ev["goal"]["band_width"] == 0.0
