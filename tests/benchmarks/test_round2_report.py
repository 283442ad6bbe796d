from __future__ import annotations

import json
import pathlib

import pytest

from benchmarks.round2_report import write_report
from benchmarks.testbed import round2_report as r2
from benchmarks.testbed.schedule import fixed


def run(strategy: str, mean_ms: float, *, pinned: str | None = "x", **kw: object) -> dict:
    return {"strategy": strategy, "pinned_cut": pinned, "results": 20, "mean_ms": mean_ms, "p95_ms": mean_ms,
            "frames_per_s": 2.0, "frames_without_result": 0, "paths": {"split": 20}, "notes": [], **kw}


def scenario(name: str, kind: str, runs: list[dict]) -> dict:
    return {"name": name, "kind": kind, "description": "d", "frames": 20, "fps_cap": 2.0,
            "schedule": fixed(1000).to_dict(), "schedule_text": "t", "outages": [], "runs": runs}


def make_testbed_doc() -> dict:
    tl = [[0.5, 100.0, "output", "local"], [25.0, 90.0, "conv_708", "split"]]
    return {"camera": {"name": "ssd-vtest"}, "bundle": {"model_name": "ssd", "content_hash": "abc"},
            "settings": {"fps_cap": 2.0}, "device": {"slowdown": 10.0, "stands_for": "Pi Zero 2 W"},
            "scenarios": [
                scenario("varying", "varying", [
                    run("edge-only", 400.0, pinned="output", timeline=tl, phase_mean_ms={"fast": 400.0, "slow": 400.0}),
                    run("cloud-only", 300.0, pinned="input", timeline=tl, phase_mean_ms={"fast": 100.0, "slow": 500.0}),
                    run("adaptive", 270.0, pinned=None, timeline=tl, settled_mean_ms=250.0, learning_s=4.0,
                        settled={"learning_frames": 8}, phase_mean_ms={"fast": 110.0, "slow": 420.0})]),
                scenario("battery", "battery", [
                    run("edge-only", 400.0, pinned="output", energy_mj_per_frame=1000.0),
                    run("cloud-only", 300.0, pinned="input", energy_mj_per_frame=400.0),
                    run("adaptive-energy", 300.0, pinned=None, energy_mj_per_frame=150.0, frames_without_result=2)]),
                scenario("server_kill", "kill", [
                    run("cloud-only", 300.0, pinned="input", offload_return_s=[0.2]),
                    run("adaptive", 300.0, pinned=None, offload_return_s=[3.5])]),
            ]}


def sweep_doc() -> dict:
    def point(mbit: float, edge: float, cloud: float, adaptive: float) -> dict:
        return {"uplink_mbit": mbit, "fps": 2.0, "runs": [
            run("edge-only", edge, pinned="output"), run("cloud-only", cloud, pinned="input"),
            run("adaptive", adaptive, pinned=None, settled_mean_ms=adaptive * 0.9, learning_s=2.0,
                settled={"learning_frames": 4})]}
    return {"runs": {"ssd-vtest": {"device": {"slowdown": 10.0}, "settings": {}, "sweep": [
        point(0.5, 400.0, 900.0, 420.0), point(8.0, 400.0, 200.0, 240.0), point(50.0, 400.0, 100.0, 105.0)]}}}


def triton_doc() -> dict:
    ev = {"stop_s": 1.0, "ready_s": 5.0, "restart_s": 4.0, "first_offload_s": 5.5, "recovery_s": 0.5,
          "restart_to_offload_s": 1.5}
    return {"recovery": {
        "triton_restart": {"recovery_s": [0.5, 1.2], "recovery_s_max": 1.2, "recovered": "2/2", "cut": "c",
                           "edge_slowdown": 1.0, "events": [ev, ev], "frames": [[0.1, "split", 10.0]]},
        "ours_restart_proxy_adaptive": {"error": "the agent never offloaded before the first restart"}}}


def test_goal_rows_carry_the_measured_ratios_and_verdicts() -> None:
    rows = r2.evaluate({"round2_ssd": make_testbed_doc()}, {"sweep_ssd": sweep_doc()}, triton_doc())
    by = {(g["goal"], g["scenario"]): g for g in rows}
    varying = by[(r2.GOAL_VARYING, "ssd-vtest: varying")]
    assert varying["measured"] == pytest.approx(0.9) and varying["met"] is False
    assert "adaptive 270.0 ms vs cloud-only 300.0 ms" in varying["detail"]
    assert "settled 250.0 ms after learning 4.0 s / 8 frames" in varying["detail"]
    sweep = by[(r2.GOAL_FIXED, "ssd-vtest: uplink sweep (sweep_ssd)")]
    assert sweep["measured"] == pytest.approx(1.2) and sweep["met"] is False
    assert "worst at 8 Mbit/s" in sweep["detail"] and "over 1.1x at 8 Mbit/s 1.20x" in sweep["detail"]
    energy = by[(r2.GOAL_ENERGY, "ssd-vtest: battery")]
    assert energy["measured"] == pytest.approx(0.375) and energy["met"] is None  # energy met, fidelity not measured
    assert "fidelity not measured in this run" in energy["detail"]
    kill = by[(r2.GOAL_RETURN, "ssd-vtest: server_kill")]
    assert kill["measured"] == pytest.approx(3.5) and kill["met"] is False
    triton = by[(r2.GOAL_RETURN, "triton.json: triton_restart")]
    assert triton["measured"] == pytest.approx(1.2) and triton["met"] is True
    assert by[(r2.GOAL_RETURN, "triton.json: ours_restart_proxy_adaptive")]["met"] is None
    missing = by[("0 frames without a result in every run", "all round-2 runs")]
    assert missing["measured"] == 2 and missing["met"] is False
    assert "ssd-vtest" not in missing["detail"] and "round2_ssd/battery/adaptive-energy: 2" in missing["detail"]


@pytest.mark.parametrize("fidelity, met", [((0.99, 0.98), True), ((0.97, 0.98), False)])
def test_energy_goal_needs_fidelity_at_least_the_jpeg(fidelity: tuple[float, float], met: bool) -> None:
    doc = make_testbed_doc()
    runs = doc["scenarios"][1]["runs"]
    runs[2]["fidelity"], runs[1]["fidelity"] = fidelity
    row = next(g for g in r2.testbed_rows("cam", doc) if g["goal"] == r2.GOAL_ENERGY)
    assert row["met"] is met and f"fidelity fidelity {fidelity[0]:.3f} vs cloud-only {fidelity[1]:.3f}" in row["detail"]


def test_goals_nothing_measures_are_listed_as_not_measured() -> None:
    rows = r2.evaluate({}, {}, None)
    assert {g["goal"] for g in rows} == {r2.GOAL_FIXED, r2.GOAL_VARYING, r2.GOAL_ENERGY, r2.GOAL_RETURN,
                                          "0 frames without a result in every run"}
    assert all(g["met"] is None for g in rows)


def test_tables_show_learning_ratio_and_phases() -> None:
    table = "\n".join(r2.sweep_table(sweep_doc()["runs"]["ssd-vtest"]))
    assert "| 8 | 400.0 | 200.0 | 240.0 | - | 216.0 | 2.0 s / 4 fr | 1.20 **over** | cloud-only |" in table
    phases = "\n".join(r2.phase_table(make_testbed_doc()["scenarios"][0]))
    assert "| **adaptive** | 110.0 | 420.0 |" in phases
    goals = "\n".join(r2.goals_table(r2.triton_rows(triton_doc())))
    assert "| 1.20 | <= 3 | met |" in goals and "| not measured | not measured: the agent never offloaded" in goals


def test_write_report_renders_every_section_from_the_files(tmp_path: pathlib.Path) -> None:
    results, out = tmp_path / "results", tmp_path / "docs"
    results.mkdir()
    (results / "round2_ssd_varying.json").write_text(json.dumps(make_testbed_doc()))
    (results / "round2_ssd_sweep.json").write_text(json.dumps(sweep_doc()))
    (results / "round2_bogus.json").write_text(json.dumps({"neither": 1}))
    (results / "triton.json").write_text(json.dumps(triton_doc()))
    goals = write_report(results, out, now="T")
    assert any(g["scenario"] == "ssd-vtest: varying" for g in goals)
    text = (out / "README.md").read_text()
    assert text.count("## Camera: ") == 1  # the sweep's run and the testbed document are one camera
    for expected in ("## Camera: ssd-vtest", "### ssd-vtest: latency vs uplink", "![ssd_varying_varying_timeline.png]",
                     "![ssd_sweep_ssd-vtest_sweep.png]", "![restart_timeline.png]", "`benchmarks/results/round2_ssd_varying.json`",
                     "| **adaptive** | 110.0 | 420.0 |"):
        assert expected in text, expected
    assert "## Camera: bogus" not in text and "round2_bogus" not in text[:text.index("## All results files")]
    assert "Not rendered: results file 'codecs_ssd.json' is not loaded" in text
    for png in ("ssd_varying_varying_timeline.png", "ssd_varying_energy.png", "restart_timeline.png",
                "ssd_sweep_ssd-vtest_sweep.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png
    saved = json.loads((out / "round2_goals.json").read_text())
    assert saved["goals"] == goals and "benchmarks/results/triton.json" in saved["sources"]


def test_three_region_runs_of_round_two_join_the_sweeps_round_one_stays_marked(tmp_path: pathlib.Path) -> None:
    results, out = tmp_path / "results", tmp_path / "docs"
    results.mkdir()
    old = sweep_doc()["runs"]["ssd-vtest"]
    (results / "three_region.json").write_text(json.dumps({"runs": {"training-free": old, "ssd-vtest": old}}))
    goals = write_report(results, out, now="T")
    scenarios = {g["scenario"] for g in goals if g["goal"] == r2.GOAL_FIXED}
    assert scenarios == {"ssd-vtest: uplink sweep"}
    text = (out / "README.md").read_text()
    assert "## Camera: ssd-vtest" in text and "three_region.json (run 'ssd-vtest')" in text
    round1 = text[text.index("## Round 1 (superseded)"):]
    assert "three_region/training-free" in round1 and "ssd-vtest" not in round1


def test_a_sweep_whose_runs_all_failed_is_not_measured_and_not_drawn(tmp_path: pathlib.Path) -> None:
    results, out = tmp_path / "results", tmp_path / "docs"
    results.mkdir()
    failed = {"strategy": "adaptive", "pinned_cut": None, "error": "edge exited with 1 before printing 'loaded'"}
    doc = {"runs": {"cam": {"sweep": [{"uplink_mbit": 1.0, "runs": [dict(failed, strategy="edge-only"), failed]}]}}}
    (results / "round2_sweep.json").write_text(json.dumps(doc))
    goals = write_report(results, out, now="T")
    fixed = next(g for g in goals if g["goal"] == r2.GOAL_FIXED)
    assert fixed["met"] is None and fixed["detail"] == "no uplink with both adaptive and fixed runs"
    missing = next(g for g in goals if g["goal"] == "0 frames without a result in every run")
    assert missing["met"] is None and "2 runs failed" in missing["detail"]
    assert not (out / "sweep_cam_sweep.png").exists()
    assert "| 1 | err | err | - | - | - | - | - |" in (out / "README.md").read_text()


def test_an_adaptive_only_rerun_is_judged_against_the_cameras_fixed_runs_and_says_so() -> None:
    sweep = sweep_doc()
    rerun = {"runs": {"ssd-vtest-rerun": {"sweep": [{"uplink_mbit": 8.0, "runs": [
        run("adaptive", 210.0, pinned=None)]}]}}}
    varying = {"camera": {"name": "ssd-vtest"}, "scenarios": [scenario("varying", "varying", [
        run("adaptive", 150.0, pinned=None)])]}
    rows = r2.evaluate({"tb": make_testbed_doc(), "tb_rerun": varying}, {"sw": sweep, "sw_rerun": rerun}, None)
    by = {g["scenario"]: g for g in rows}
    swept = by["ssd-vtest-rerun: uplink sweep (sw_rerun) (adaptive rerun vs another run's fixed strategies)"]
    assert swept["measured"] == pytest.approx(210 / 200) and swept["met"] is True
    assert "the fixed runs of sw/ssd-vtest: another run" in swept["detail"]
    varied = by["ssd-vtest: varying (adaptive rerun vs the fixed runs of tb: another run)"]
    assert varied["measured"] == pytest.approx(150 / 300) and varied["met"] is True
    assert r2.camera_of_run("ssd-vtest-rerun", ["ssd-vtest", "ssd-vtest-rerun"]) == "ssd-vtest"
