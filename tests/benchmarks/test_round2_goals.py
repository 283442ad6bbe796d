"""Issue 19's goal checks over run summaries (pure)."""
from __future__ import annotations

from benchmarks.testbed.goals import (
    energy_goal, evaluate_round, latency_goal, no_result_goal, phase_means, recovery_goal,
)


def run(strategy: str, mean_ms: float, **kw: object) -> dict:
    return {"strategy": strategy, "results": 10, "mean_ms": mean_ms, "frames_without_result": 0, **kw}


def test_latency_goal_compares_with_the_best_fixed_strategy() -> None:
    runs = [run("edge-only", 300.0), run("cloud-only", 200.0), run("cut:c1", 150.0), run("adaptive", 110.0),
            run("adaptive+gate", 100.0, gate=True)]
    g = latency_goal(runs, adaptive="adaptive", ratio_max=0.8)
    assert g["met"] is True and g["ratio"] == round(110 / 150, 3) and g["best_fixed"] == "cut:c1"
    assert set(g["fixed_ms"]) == {"edge-only", "cloud-only", "cut:c1"}  # neither adaptive run is "fixed"
    missed = latency_goal([*runs[:3], run("adaptive", 140.0)], adaptive="adaptive", ratio_max=0.8)
    assert missed["met"] is False and missed["ratio"] == round(140 / 150, 3)


def test_latency_goal_not_measured_without_the_runs() -> None:
    g = latency_goal([run("edge-only", 1.0), {"strategy": "adaptive", "error": "boom"}], adaptive="adaptive",
                     ratio_max=0.8)
    assert g["met"] is None and "missing or failed" in g["why"]


def test_energy_goal_needs_half_of_each_end() -> None:
    runs = [run("edge-only", 1, energy_mj_per_frame=1000.0), run("cloud-only", 1, energy_mj_per_frame=400.0),
            run("adaptive-energy", 1, energy_mj_per_frame=150.0), run("adaptive-energy+gate", 1, energy_mj_per_frame=250.0)]
    ok = energy_goal(runs, adaptive="adaptive-energy")
    assert ok["met"] is True and ok["ratio_vs"] == {"edge-only": 0.15, "cloud-only": 0.375}
    missed = energy_goal(runs, adaptive="adaptive-energy+gate")
    assert missed["met"] is False and missed["ratio_vs"]["cloud-only"] == 0.625
    assert energy_goal(runs[:2], adaptive="adaptive-energy")["met"] is None


def test_recovery_goal_uses_the_return_after_the_server_is_ready() -> None:
    runs = [run("cloud-only", 1, offload_return_s=[0.05]), run("adaptive", 1, offload_return_s=[2.5])]
    assert recovery_goal(runs)["met"] is True
    runs[1]["offload_return_s"] = [None]
    g = recovery_goal(runs)
    assert g["met"] is False and g["runs"]["adaptive"] == {"back_to_offloading_s": None, "met": False}
    runs[1]["offload_return_s"] = [3.2]
    assert recovery_goal(runs)["runs"]["adaptive"]["met"] is False


def test_no_result_goal_counts_missing_frames_and_failed_runs() -> None:
    scenarios = [{"name": "a", "runs": [run("edge-only", 1), run("adaptive", 1)]}]
    assert no_result_goal(scenarios)["met"] is True
    scenarios[0]["runs"][1]["frames_without_result"] = 2
    g = no_result_goal(scenarios)
    assert g["met"] is False and g["runs_with_missing"] == {"a/adaptive": 2} and g["frames_without_result"] == 2
    failed = no_result_goal([{"name": "b", "runs": [{"strategy": "x", "error": "e"}]}])
    assert failed["met"] is False and failed["failed_runs"] == ["b/x"]


def test_phase_means_split_the_timeline() -> None:
    timeline = [[0.5, 10.0, "input", "cloud"], [1.5, 30.0, "input", "cloud"], [2.5, 100.0, "output", "local"]]
    assert phase_means(timeline, [("a", 0.0, 2.0), ("b", 2.0, 3.0), ("c", 3.0, 4.0)]) == {"a": 20.0, "b": 100.0,
                                                                                           "c": None}


def test_evaluate_round_checks_each_scenario_kind() -> None:
    scenarios = [
        {"name": "varying", "kind": "varying", "runs": [run("edge-only", 300.0), run("adaptive", 200.0)]},
        {"name": "server_load_16", "kind": "load", "runs": [run("cloud-only", 100.0), run("adaptive", 105.0)]},
        {"name": "server_kill", "kind": "kill", "runs": [run("adaptive", 1, offload_return_s=[1.0])]},
    ]
    goals = evaluate_round(scenarios)
    assert goals["varying"]["met"] is True and goals["varying"]["ratio"] == round(200 / 300, 3)
    assert goals["varying_gate"]["met"] is None
    assert goals["server_load_16"]["met"] is True
    assert goals["server_kill"]["met"] is True and goals["no_result"]["met"] is True
