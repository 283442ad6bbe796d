"""Issue 19's goals, checked on the round-2 testbed runs (pure: run summaries in, verdicts out).

Reported, never asserted: every verdict carries the measured numbers it was decided on, so a
missed goal stays in the table with its reason. A run is one strategy's summary as
:meth:`benchmarks.testbed.metrics.RunSummary.to_dict` writes it (plus the bench's keys);
runs with an ``error`` key or no results take no part.

* varying trace: adaptive (latency) mean <= :data:`VARYING_RATIO_MAX` x the best fixed
  strategy's mean (edge-only, cloud-only, the static cut);
* load: adaptive mean within :data:`WITHIN_BEST` x the best fixed strategy's (the sweep's
  per-uplink goal, applied to a loaded server: the agent should see the load and stay fast);
* battery: adaptive (energy) modeled edge energy per frame <= :data:`ENERGY_RATIO_MAX` x
  cloud-only's and x edge-only's;
* server kill: back to offloading <= :data:`RECOVERY_MAX_S` after the restarted server is ready;
* every run: 0 frames without a result.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

VARYING_RATIO_MAX = 0.8
WITHIN_BEST = 1.1
ENERGY_RATIO_MAX = 0.5
RECOVERY_MAX_S = 3.0
FIXED = ("edge-only", "cloud-only")


def _ok(run: dict) -> bool:
    return "error" not in run and bool(run.get("results")) and _finite(run.get("mean_ms"))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def fixed_runs(runs: Sequence[dict]) -> list[dict]:
    """The pinned strategies without gate: edge-only, cloud-only and static cuts."""
    return [r for r in runs if _ok(r) and (r["strategy"] in FIXED or r["strategy"].startswith("cut:"))
            and not r.get("gate")]


def latency_goal(runs: Sequence[dict], *, adaptive: str, ratio_max: float, key: str = "mean_ms") -> dict:
    """``adaptive``'s ``key`` against the best fixed strategy's: met when the ratio <= ``ratio_max``."""
    fixed = fixed_runs(runs)
    ad = next((r for r in runs if r["strategy"] == adaptive and _ok(r)), None)
    if not fixed or ad is None:
        return {"met": None, "why": f"not measured: fixed runs {len(fixed)}, {adaptive} run "
                                   f"{'present' if ad else 'missing or failed'}"}
    best = min(fixed, key=lambda r: r[key])
    ratio = ad[key] / best[key]
    return {"met": ratio <= ratio_max, "ratio": round(ratio, 3), "target": f"<= {ratio_max:g}",
            "adaptive": adaptive, "adaptive_ms": round(ad[key], 2), "best_fixed": best["strategy"],
            "best_fixed_ms": round(best[key], 2),
            "fixed_ms": {r["strategy"]: round(r[key], 2) for r in fixed}}


def energy_goal(runs: Sequence[dict], *, adaptive: str, ratio_max: float = ENERGY_RATIO_MAX) -> dict:
    """``adaptive``'s modeled energy per frame against cloud-only's and edge-only's."""
    by = {r["strategy"]: r for r in runs if _ok(r) and _finite(r.get("energy_mj_per_frame"))}
    missing = [s for s in (adaptive, *FIXED) if s not in by]
    if missing:
        return {"met": None, "why": f"not measured: no energy for {missing}"}
    mj = by[adaptive]["energy_mj_per_frame"]
    vs = {s: round(mj / by[s]["energy_mj_per_frame"], 3) for s in FIXED}
    return {"met": all(v <= ratio_max for v in vs.values()), "adaptive": adaptive, "mj_per_frame": round(mj, 2),
            "ratio_vs": vs, "target": f"<= {ratio_max:g} x each",
            "mj_per_frame_all": {s: round(r["energy_mj_per_frame"], 2) for s, r in by.items()}}


def recovery_goal(runs: Sequence[dict], max_s: float = RECOVERY_MAX_S) -> dict:
    """Per strategy, the seconds from the restarted server's ready to its first offloaded result."""
    rows: dict[str, Any] = {}
    for r in runs:
        if "error" in r:
            rows[r["strategy"]] = {"met": None, "why": r["error"]}
            continue
        back = r.get("offload_return_s") or []
        after_ready = back[-1] if back else None
        rows[r["strategy"]] = {"back_to_offloading_s": after_ready,
                               "met": after_ready is not None and after_ready <= max_s}
    verdicts = [v["met"] for v in rows.values()]
    return {"met": all(verdicts) if verdicts and None not in verdicts else None, "target_s": max_s, "runs": rows}


def no_result_goal(scenarios: Sequence[dict]) -> dict:
    """0 frames without a result in every run of these scenarios (``{"name", "runs"}`` each)."""
    missing = {f"{s['name']}/{r['strategy']}": r.get("frames_without_result")
               for s in scenarios for r in s.get("runs", []) if "error" not in r}
    errors = [f"{s['name']}/{r['strategy']}" for s in scenarios for r in s.get("runs", []) if "error" in r]
    bad = {k: v for k, v in missing.items() if v}
    return {"met": not bad and not errors and bool(missing), "runs": len(missing),
            "frames_without_result": sum(v or 0 for v in missing.values()), "runs_with_missing": bad,
            "failed_runs": errors}


def phase_means(timeline: Sequence[Sequence[Any]], spans: Sequence[tuple[str, float, float]]) -> dict[str, Optional[float]]:
    """Mean latency per phase from a run's timeline rows ``[t_s, total_ms, cut, path]`` (frames
    captured within ``[start, end)`` of each phase)."""
    out: dict[str, Optional[float]] = {}
    for name, start, end in spans:
        values = [row[1] for row in timeline if start <= row[0] < end]
        out[name] = round(sum(values) / len(values), 2) if values else None
    return out


def evaluate_round(scenarios: Sequence[dict]) -> dict:
    """Every goal that these scenarios measure (by ``kind``), plus the no-result goal over all of them."""
    out: dict[str, Any] = {}
    for s in scenarios:
        runs = s.get("runs", [])
        if s["kind"] == "varying":
            out["varying"] = latency_goal(runs, adaptive="adaptive", ratio_max=VARYING_RATIO_MAX)
            out["varying_gate"] = latency_goal(runs, adaptive="adaptive+gate", ratio_max=VARYING_RATIO_MAX)
        elif s["kind"] == "load":
            out[s["name"]] = latency_goal(runs, adaptive="adaptive", ratio_max=WITHIN_BEST)
        elif s["kind"] == "battery":
            out["battery_energy"] = energy_goal(runs, adaptive="adaptive-energy")
            out["battery_energy_gate"] = energy_goal(runs, adaptive="adaptive-energy+gate")
        elif s["kind"] == "kill":
            out["server_kill"] = recovery_goal(runs)
    out["no_result"] = no_result_goal(scenarios)
    return out
