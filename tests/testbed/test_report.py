from __future__ import annotations

import pathlib

import pytest

from benchmarks.run_all import write_docs
from benchmarks.testbed.report import evaluate_goals, render_markdown
from benchmarks.testbed.schedule import fixed, steps


def run(strategy: str, mean: float, *, pinned: str | None = "x", energy: float = 100.0, missing: int = 0,
        returns: list | None = None, timeline: list | None = None) -> dict:
    return {"scenario": "s", "strategy": strategy, "pinned_cut": pinned, "results": 10, "mean_ms": mean,
            "p95_ms": mean * 1.5, "frames_per_s": 5.0, "payload_bytes_per_frame": 1000.0, "link_bytes": 20000,
            "energy_mj_per_frame": energy, "frames_without_result": missing, "paths": {"split": 10},
            "offload_return_s": returns or [], "notes": [], **({"timeline": timeline} if timeline else {})}


def doc() -> dict:
    tl = [[0.5, 20.0, "c1", "split"], [1.5, 400.0, "output", "fallback"], [2.5, 30.0, "c1", "split"]]
    return {
        "machine": {"cpu": "test cpu", "cpus": 2}, "versions": {"onnxruntime": "1"}, "testbed": {"kind": "loopback"},
        "settings": {"quick": True}, "bundle": {"model_name": "m", "content_hash": "abc", "cuts": [
            {"id": "input", "wire_bytes": 9000}]},
        "scenarios": [
            {"name": "fixed_1mbit", "kind": "fixed", "uplink_mbit": 1.0, "description": "d", "frames": 10,
             "fps_cap": 5.0, "schedule": fixed(1000).to_dict(), "schedule_text": "t", "outages": [],
             "runs": [run("edge-only", 100, pinned="output"), run("cloud-only", 50, pinned="input"),
                      run("adaptive", 54, pinned=None)]},
            {"name": "fixed_10mbit", "kind": "fixed", "uplink_mbit": 10.0, "description": "d", "frames": 10,
             "fps_cap": 5.0, "schedule": fixed(10000).to_dict(), "schedule_text": "t", "outages": [],
             "runs": [run("edge-only", 100, pinned="output"), run("cloud-only", 20, pinned="input"),
                      run("adaptive", 30, pinned=None)]},
            {"name": "varying", "kind": "varying", "description": "d", "frames": 10, "fps_cap": 5.0,
             "schedule": steps([(0, 1000), (1, 0), (2, 3000)]).to_dict(), "schedule_text": "t", "outages": [[1, 2]],
             "runs": [run("cloud-only", 100, pinned="input", timeline=tl),
                      run("adaptive", 80, pinned=None, returns=[0.4], timeline=tl)]},
            {"name": "battery_drain", "kind": "battery", "description": "d", "frames": 10, "fps_cap": 5.0,
             "schedule": fixed(1000).to_dict(), "schedule_text": "t", "outages": [],
             "runs": [run("cloud-only", 50, pinned="input", energy=400), run("adaptive", 50, pinned=None, energy=300),
                      run("adaptive-energy", 60, pinned=None, energy=150, missing=2)]},
        ],
    }


def test_goals_measure_ratios_and_misses() -> None:
    goals = {(g["goal"], g["scenario"]): g for g in evaluate_goals(doc())}
    one = goals[("adaptive within 1.10x of best static", "fixed_1mbit")]
    assert one["measured"] == pytest.approx(54 / 50) and one["met"] is True
    ten = goals[("adaptive within 1.10x of best static", "fixed_10mbit")]
    assert ten["measured"] == pytest.approx(1.5) and ten["met"] is False
    var = goals[("adaptive <= 0.85x best static on the varying trace", "varying")]
    assert var["measured"] == pytest.approx(0.8) and var["met"] is True
    energy = goals[("energy <= 0.5x cloud-only (adaptive-energy)", "battery_drain")]
    assert energy["measured"] == pytest.approx(150 / 400) and energy["met"] is True
    zero = goals[("zero frames without a result", "all")]
    assert zero["measured"] == 2 and zero["met"] is False and "adaptive-energy: 2" in zero["detail"]
    back = goals[("back to offloading within 3 s", "varying")]
    assert back["measured"] == pytest.approx(0.4) and back["met"] is True


def test_markdown_has_goal_and_scenario_tables() -> None:
    text = render_markdown(doc(), ["fixed_uplinks.png"])
    assert "| adaptive within 1.10x of best static | fixed_10mbit | 1.50 | <= 1.1 | **no** |" in text
    assert "## varying" in text and "| **adaptive** | 80.0 |" in text
    assert "![fixed_uplinks.png](fixed_uplinks.png)" in text
    assert "test cpu" in text


def test_write_docs_makes_json_markdown_and_plots(tmp_path: pathlib.Path) -> None:
    write_docs(doc(), tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"results.json", "README.md", "fixed_uplinks.png", "varying_timeline.png", "energy.png"} <= names
    assert (tmp_path / "fixed_uplinks.png").read_bytes()[:4] == b"\x89PNG"


def test_return_goal_fails_when_offloading_never_resumes() -> None:
    d = doc()
    d["scenarios"][2]["runs"][1]["offload_return_s"] = [None]
    d["scenarios"][2]["runs"][1]["offloaded_before_return"] = [True]
    back = next(g for g in evaluate_goals(d) if g["goal"].startswith("back to offloading"))
    assert back["met"] is False and "never" in back["detail"]
    d["scenarios"][2]["runs"][1]["offloaded_before_return"] = [False]
    back = next(g for g in evaluate_goals(d) if g["goal"].startswith("back to offloading"))
    assert back["met"] is None and "never offloaded" in back["detail"]
