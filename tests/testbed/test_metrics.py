from __future__ import annotations

import json
import math

import pytest

from benchmarks.testbed.metrics import (
    best_static,
    parse_result_lines,
    percentile,
    summarize_run,
    time_to_offload_s,
)


def line(frame_id: int, at_ms: float, total: float, path: str = "split", cut: str = "c1", wire: int = 1000) -> str:
    return json.dumps({
        "schema": "splitinfer.edge.result/1", "frame_id": frame_id, "capture_unix_ms": at_ms, "cut": cut,
        "path": path, "latency_ms": {"preprocess": 1, "head": 5, "wire": 3, "server": 2, "tail_local": 0,
                                     "postprocess": 0.5, "total": total},
        "wire_bytes": wire, "fallback_reason": None, "top_k": [],
    })


def test_parse_skips_junk_and_reads_fields() -> None:
    records, skipped = parse_result_lines([line(0, 1000, 10), "INFO something", "", "{\"x\": 1}", line(1, 1100, 20)])
    assert skipped == 2
    assert [r.frame_id for r in records] == [0, 1]
    assert records[0].compute_ms == pytest.approx(6.5)
    assert records[1].done_unix_ms == 1120


def test_summary_counts_missing_and_duplicate_frames() -> None:
    lines = [line(i, 1000 + 100 * i, 10 + i) for i in range(5)] + [line(2, 1300, 10)]
    records, _ = parse_result_lines(lines)
    s = summarize_run(records, scenario="x", strategy="adaptive", frames_expected=7, wall_s=1.0,
                      energy_fn=lambda r: 2.0 * r.total_ms)
    assert s.results == 6
    assert s.frames_without_result == 2  # frames 5 and 6
    assert s.duplicate_results == 1
    assert s.mean_ms == pytest.approx((10 + 11 + 12 + 13 + 14 + 10) / 6)
    assert s.energy_mj_per_frame == pytest.approx(2 * s.mean_ms)
    assert s.paths == {"split": 6}
    assert s.frames_per_s == pytest.approx(6 / ((1414 - 1000) / 1000))
    assert s.to_dict()["link_bytes"] is None


def test_percentile_matches_numpy_linear() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 95) == 5
    assert math.isnan(percentile([], 50))
    assert percentile(list(range(101)), 95) == 95


def test_time_to_offload_after_return() -> None:
    records, _ = parse_result_lines([
        line(0, 0, 10), line(1, 1000, 500, path="fallback"), line(2, 2000, 500, path="fallback"),
        line(3, 3000, 400, path="split"),
    ])
    assert time_to_offload_s(records, 2500) == pytest.approx(0.9)
    assert time_to_offload_s(records, 5000) is None


def test_best_static_ignores_adaptive() -> None:
    records, _ = parse_result_lines([line(0, 0, 10)])
    a = summarize_run(records, scenario="s", strategy="adaptive", frames_expected=1, wall_s=1)
    b = summarize_run(records, scenario="s", strategy="cut:c1", frames_expected=1, wall_s=1)
    a.mean_ms, b.mean_ms = 5.0, 9.0
    assert best_static([a, b]) is b


def test_summary_records_offloading_before_each_return() -> None:
    records, _ = parse_result_lines([line(0, 0, 10, path="local"), line(1, 3000, 10, path="split")])
    s = summarize_run(records, scenario="k", strategy="adaptive", frames_expected=2, wall_s=1,
                      returns_unix_ms=[1000, 5000])
    assert s.offload_return_s == [pytest.approx(2.01), None]
    assert s.offloaded_before_return == [False, True]


def test_warmup_frames_are_left_out_of_latency_but_counted() -> None:
    records, _ = parse_result_lines([line(0, 0, 900), line(1, 100, 10), line(2, 200, 20)])
    s = summarize_run(records, scenario="w", strategy="a", frames_expected=3, wall_s=1, warmup_frames=1)
    assert s.mean_ms == pytest.approx(15) and s.results == 3 and s.frames_without_result == 0
