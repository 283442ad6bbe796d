"""The three-region sweep's part of docs/benchmarks/README.md: goal rows and one section per run.

Pure (results document in, rows or Markdown lines out). The document is
``benchmarks/results/three_region.json``: ``{"runs": {label: run}, "latest": label}``, each run
written by :mod:`benchmarks.testbed_three_region`.
"""
from __future__ import annotations

from typing import Any, Optional

from benchmarks.testbed.three_region import ADAPTIVE, BAND_MIN_WIDTH, RATIO_MAX


def goal_rows(three: dict) -> list[dict]:
    """One goal row per labelled run, in the shape of :func:`benchmarks.testbed.report.evaluate_goals`."""
    rows = []
    for label, run in (three.get("runs") or {}).items():
        ev = run.get("evaluation") or {}
        goal = ev.get("goal") or {}
        band = ev.get("best_band")
        if band:
            detail = (f"{band['strategy']} fastest from {band['from_mbit']:g} to {band['to_mbit']:g} Mbit/s "
                      f"({band['width']:g}x), best {band['best_ratio']}x min(edge-only, cloud-only), adaptive "
                      f"settled on it at {sum(band['adaptive_agrees'])} of {len(band['adaptive_agrees'])} points")
        else:
            detail = (f"no mid-graph cut was the fastest at any uplink; lowest ratio anywhere "
                      f"{ev.get('lowest_mid_ratio_anywhere')}x")
        rows.append({"goal": f"three regions: a mid-graph cut fastest over >= {BAND_MIN_WIDTH:g}x of uplink, "
                             f"<= {RATIO_MAX:g}x min(edge, cloud), chosen by adaptive",
                     "scenario": f"three_region/{label}", "measured": goal.get("band_width"),
                     "target": f"band >= {BAND_MIN_WIDTH:g}x, ratio <= {RATIO_MAX:g}", "met": goal.get("met"),
                     "detail": detail})
    return rows


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(three: dict) -> list[str]:
    """Markdown lines: per labelled run, the device, the floors, the measured table and the goal."""
    out: list[str] = []
    for label, run in (three.get("runs") or {}).items():
        dev = run.get("device") or {}
        ev = run.get("evaluation") or {}
        goal = ev.get("goal") or {}
        out += [f"## Three regions: {label}", "",
                f"`{run.get('command', 'python -m benchmarks.testbed_three_region')}` "
                f"({run.get('generated_at', '?')}, {run.get('duration_s', '?')} s). Device: edge CPU = one core / "
                f"{dev.get('slowdown', '?')} ({dev.get('stands_for', '?')}); heads profiled "
                f"{'on the emulated device' if dev.get('edge_profiled_on_device') else 'on the host'}. "
                f"JPEG sent by cloud-only: {_kb(run.get('jpeg_bytes_sent_per_frame'))} per frame. "
                f"Static runs {run.get('settings', {}).get('static_frames')} frames, adaptive "
                f"{run.get('settings', {}).get('adaptive_frames')}; latency objective.", ""]
        out += ["How to read it, the device choice and the adaptive agent's probes: "
                "[three_region_notes.md](three_region_notes.md).", ""]
        if run.get("plot"):
            name = str(run["plot"]).rsplit("/", 1)[-1]
            out += [f"![{name}]({name})", ""]
        floors = run.get("ratio_floor") or {}
        if floors:
            out.append("Ratio floor per cut: the lowest latency cut / min(edge-only, cloud-only) its device profile "
                       "allows at any uplink, about head / edge-only + bytes / JPEG (it is reached where edge-only and "
                       "cloud-only tie; >= 1: the cut never beats both, > 0.7: the goal's ratio is out of reach): "
                       + ", ".join(
                           f"{c} {v if v is not None else '-'}" for c, v in floors.items()) + ".")
        if run.get("skipped_cuts"):
            out.append("Not run: " + "; ".join(f"{s['cut']} ({s['why']})" for s in run["skipped_cuts"]) + ".")
        out.append("")
        names: list[str] = []
        for point in run.get("sweep", []):
            for r in point["runs"]:
                if r["strategy"] != ADAPTIVE and r["strategy"] not in names:
                    names.append(r["strategy"])
        out += ["| Mbit/s | fps | " + " | ".join(names) + " | adaptive settled on | adaptive (settled) ms | "
                "learning | fastest |", "|---" * (len(names) + 6) + "|"]
        points = {p["uplink_mbit"]: p for p in ev.get("points", [])}
        for point in run.get("sweep", []):
            by = {r["strategy"]: r for r in point["runs"]}
            cells = [_ms(by.get(n, {}).get("mean_ms")) for n in names]
            ad: dict[str, Any] = by.get(ADAPTIVE, {})
            settled = ad.get("settled") or {}
            learn = (f"{settled.get('learning_frames')} frames / {ad.get('learning_s')} s"
                     if settled else "-")
            row = points.get(point["uplink_mbit"], {})
            out.append(f"| {point['uplink_mbit']:g} | {point['fps']:g} | " + " | ".join(cells)
                       + f" | {settled.get('choice', '-')} ({_pct(settled.get('settled_share'))}) | "
                       f"{_ms(ad.get('settled_mean_ms'))} | {learn} | {row.get('fastest', '-')} |")
        out += ["", f"Goal: band {goal.get('band_width')}x (target {goal.get('band_width_target')}), ratio "
                f"{goal.get('ratio')} (target {goal.get('ratio_target')}), adaptive chooses the cut there: "
                f"{goal.get('adaptive_chooses_the_cut_there')}: **{'met' if goal.get('met') else 'not met'}**.", ""]
    return out


def _kb(value: Optional[float]) -> str:
    return "?" if value is None else f"{value / 1000:.1f} kB"


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"
