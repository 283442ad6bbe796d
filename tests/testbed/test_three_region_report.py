"""The three-region section of docs/benchmarks/README.md: goal rows and the per-uplink table."""
from __future__ import annotations

from benchmarks.testbed.report import render_markdown
from benchmarks.testbed.three_region import CLOUD, EDGE, Point, evaluate
from benchmarks.testbed.three_region_report import goal_rows, render


def _run(mid_ms: dict) -> dict:
    points, sweep = [], []
    for mbit in (0.5, 1.0, 2.0, 4.0):
        cloud = 20 + 120 / mbit
        means = {EDGE: 100.0, CLOUD: cloud, "cut:bn": mid_ms[mbit]}
        ad_cut = "bn" if mid_ms[mbit] < min(100.0, cloud) else ("output" if cloud > 100 else "input")
        points.append(Point(mbit, means, adaptive_cut=ad_cut, adaptive_ms=min(means.values())))
        runs = [{"strategy": s, "mean_ms": v} for s, v in means.items()]
        runs.append({"strategy": "adaptive", "mean_ms": 70.0, "settled_mean_ms": min(means.values()),
                     "settled": {"choice": ad_cut, "learning_frames": 3, "settled_share": 0.95}, "learning_s": 1.2})
        sweep.append({"uplink_mbit": mbit, "fps": 2.0, "runs": runs})
    return {"label": "x", "device": {"slowdown": 10.0, "stands_for": "a Pi Zero 2 W", "edge_profiled_on_device": True},
            "jpeg_bytes_sent_per_frame": 15400.0, "settings": {"static_frames": 24, "adaptive_frames": 48},
            "ratio_floor": {"bn": 0.61, "f14_q4p": 1.39}, "skipped_cuts": [{"cut": "f2", "why": "too big"}],
            "sweep": sweep, "evaluation": evaluate(points), "plot": "docs/benchmarks/three_region_x.png",
            "command": "python -m benchmarks.testbed_three_region --label x"}


def test_goal_rows_and_section_say_what_was_measured() -> None:
    met = {"runs": {"bottleneck": _run({0.5: 70.0, 1.0: 60.0, 2.0: 55.0, 4.0: 48.0})}}
    (row,) = goal_rows(met)
    assert row["met"] is True and row["measured"] == 8.0 and row["scenario"] == "three_region/bottleneck"
    # cloud-only is 260, 140, 80, 50 ms: bn is fastest at every point, best at 1 Mbit/s (60 / 100)
    assert row["detail"] == ("cut:bn fastest from 0.5 to 4 Mbit/s (8x), best 0.6x min(edge-only, cloud-only), "
                             "adaptive settled on it at 4 of 4 points")
    missed = {"runs": {"training-free": _run({0.5: 150.0, 1.0: 150.0, 2.0: 150.0, 4.0: 150.0})}}
    (row,) = goal_rows(missed)
    assert row["met"] is False and "no mid-graph cut was the fastest" in row["detail"]
    text = "\n".join(render(missed))
    assert "## Three regions: training-free" in text and "![three_region_x.png](three_region_x.png)" in text
    assert "bn 0.61, f14_q4p 1.39" in text and "Not run: f2 (too big)" in text
    assert "| 0.5 | 2 | 100.0 | 260.0 | 150.0 | output (95%) | 100.0 | 3 frames / 1.2 s | edge-only |" in text
    assert "**not met**" in text
    md = render_markdown({"scenarios": [], "three_region": missed})
    assert "three_region/training-free" in md and "## Three regions: training-free" in md
