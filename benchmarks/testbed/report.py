"""From the bench's results document to goals, a Markdown report and PNG plots.

:func:`evaluate_goals` and :func:`render_markdown` are pure (document in, values or
text out); :func:`write_plots` draws with matplotlib's Agg backend into a folder.

Goals (issue 7; reported, never asserted): adaptive mean latency within 1.10x of
the best static strategy at every fixed bandwidth; at most 0.85x of the best single
static strategy on the varying trace; modeled energy at most 0.5x of cloud-only
under the energy objective; zero frames without a result; back to offloading
within 3 s after the link or the server returns.
"""
from __future__ import annotations

import math
import pathlib
from typing import Any, Optional, Sequence

from benchmarks.testbed import three_region_report

FIXED_RATIO = 1.10
VARYING_RATIO = 0.85
ENERGY_RATIO = 0.5
RETURN_S = 3.0
ADAPTIVE = "adaptive"


def _ok_runs(scenario: dict) -> list[dict]:
    return [r for r in scenario.get("runs", []) if "error" not in r and r.get("results")]


def _run(scenario: dict, name: str) -> Optional[dict]:
    for r in _ok_runs(scenario):
        if r["strategy"] == name:
            return r
    return None


def _best_static(scenario: dict, key: str = "mean_ms") -> Optional[dict]:
    statics = [r for r in _ok_runs(scenario)
               if r.get("pinned_cut") is not None and r.get(key) is not None]
    return min(statics, key=lambda r: r[key]) if statics else None


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{float(value):.{digits}f}"
    return str(value)


def evaluate_goals(doc: dict) -> list[dict]:
    """One row per goal check: goal, scenario, measured, target, met (None = not measured), detail."""
    rows: list[dict] = []
    scenarios = doc.get("scenarios", [])

    def row(goal: str, scenario: str, measured: Optional[float], target: str, met: Optional[bool], detail: str) -> None:
        rows.append({"goal": goal, "scenario": scenario, "measured": measured, "target": target, "met": met,
                     "detail": detail})

    for sc in scenarios:
        if sc["kind"] != "fixed":
            continue
        ad, best = _run(sc, ADAPTIVE), _best_static(sc)
        if ad is None or best is None:
            row("adaptive within 1.10x of best static", sc["name"], None, f"<= {FIXED_RATIO}", None,
                "adaptive or static runs missing")
            continue
        ratio = ad["mean_ms"] / best["mean_ms"]
        row("adaptive within 1.10x of best static", sc["name"], ratio, f"<= {FIXED_RATIO}", ratio <= FIXED_RATIO,
            f"adaptive {ad['mean_ms']:.1f} ms vs {best['strategy']} {best['mean_ms']:.1f} ms")
    for sc in scenarios:
        if sc["kind"] != "varying":
            continue
        ad, best = _run(sc, ADAPTIVE), _best_static(sc)
        if ad is None or best is None:
            row("adaptive <= 0.85x best static on the varying trace", sc["name"], None, f"<= {VARYING_RATIO}", None,
                "adaptive or static runs missing")
            continue
        ratio = ad["mean_ms"] / best["mean_ms"]
        row("adaptive <= 0.85x best static on the varying trace", sc["name"], ratio, f"<= {VARYING_RATIO}",
            ratio <= VARYING_RATIO, f"adaptive {ad['mean_ms']:.1f} ms vs {best['strategy']} {best['mean_ms']:.1f} ms")
    for sc in scenarios:
        if sc["kind"] != "battery":
            continue
        en, cloud = _run(sc, "adaptive-energy"), _run(sc, "cloud-only")
        for name, run in (("adaptive-energy", en), ("adaptive", _run(sc, ADAPTIVE))):
            if run is None or cloud is None or not cloud.get("energy_mj_per_frame"):
                row(f"energy <= 0.5x cloud-only ({name})", sc["name"], None, f"<= {ENERGY_RATIO}", None,
                    "runs missing")
                continue
            ratio = run["energy_mj_per_frame"] / cloud["energy_mj_per_frame"]
            floor = _best_static(sc, key="energy_mj_per_frame")
            context = ""
            if floor is not None:
                context = (f"; the most frugal fixed choice, {floor['strategy']}, reaches "
                           f"{floor['energy_mj_per_frame'] / cloud['energy_mj_per_frame']:.2f}x")
            row(f"energy <= 0.5x cloud-only ({name})", sc["name"], ratio, f"<= {ENERGY_RATIO}",
                ratio <= ENERGY_RATIO,
                f"{run['energy_mj_per_frame']:.0f} mJ vs cloud-only {cloud['energy_mj_per_frame']:.0f} mJ per frame"
                + context)
    missing = [(sc["name"], r["strategy"], r["frames_without_result"]) for sc in scenarios for r in _ok_runs(sc)
               if r.get("frames_without_result")]
    broken = [(sc["name"], r["strategy"]) for sc in scenarios for r in sc.get("runs", [])
              if "error" in r or not r.get("results")]
    total_missing = sum(m for _, _, m in missing)
    detail = "; ".join(f"{s}/{st}: {m}" for s, st, m in missing) or "every frame of every run has a result"
    if broken:
        detail += "; runs without results: " + ", ".join(f"{s}/{st}" for s, st in broken)
    row("zero frames without a result", "all", float(total_missing), "0", total_missing == 0 and not broken, detail)
    for sc in scenarios:
        if sc["kind"] not in ("varying", "kill"):
            continue
        ad = _run(sc, ADAPTIVE)
        if ad is None:
            continue
        returns = ad.get("offload_return_s") or []
        if not returns:
            row("back to offloading within 3 s", sc["name"], None, f"<= {RETURN_S}", None, "no return event recorded")
            continue
        before = ad.get("offloaded_before_return") or [True] * len(returns)
        what = "link" if sc["kind"] == "varying" else "server"
        detail = f"after the {what} returned: " + ", ".join("never" if r is None else f"{r:.2f} s" for r in returns)
        if any(r is None and b for r, b in zip(returns, before)):
            row("back to offloading within 3 s", sc["name"], None, f"<= {RETURN_S}", False,
                detail + " (it offloaded before, not after, within the run)")
        elif all(r is None for r in returns):
            row("back to offloading within 3 s", sc["name"], None, f"<= {RETURN_S}", None,
                detail + " (adaptive never offloaded in this run: running locally was its best choice)")
        else:
            worst = max(r for r in returns if r is not None)
            row("back to offloading within 3 s", sc["name"], worst, f"<= {RETURN_S}", worst <= RETURN_S, detail)
    return rows


def render_markdown(doc: dict, plots: Sequence[str] = ()) -> str:
    """The docs/benchmarks/README.md text."""
    env = doc.get("machine", {})
    tb = doc.get("testbed", {})
    st = doc.get("settings", {})
    out = ["# Benchmarks: adaptive split vs every fixed choice", "",
           "Generated by `make bench` (`python -m benchmarks.run_all`) from the emulated edge testbed "
           "(`deploy/testbed/`). Machine-readable results: [results.json](results.json).", ""]
    out += [f"Generated {doc.get('generated_at', '?')} in {doc.get('duration_s', '?')} s"
            f"{' (quick mode)' if st.get('quick') else ''}.", ""]
    out += ["## Goals", "", "| goal | scenario | measured | target | met | detail |", "|---|---|---|---|---|---|"]
    goals = list(doc.get("goals") or evaluate_goals(doc))
    if doc.get("three_region"):
        goals += three_region_report.goal_rows(doc["three_region"])
    for g in goals:
        met = {True: "yes", False: "**no**", None: "not measured"}[g["met"]]
        out.append(f"| {g['goal']} | {g['scenario']} | {_fmt(g['measured'], 2)} | {g['target']} | {met} | "
                   f"{g['detail']} |")
    out.append("")
    for plot in plots:
        out += [f"![{plot}]({plot})", ""]
    if doc.get("three_region"):
        out += three_region_report.render(doc["three_region"])
    for sc in doc.get("scenarios", []):
        out += scenario_section(sc)
    out += ["## How it was measured", "",
            f"* Machine: {env.get('cpu', '?')}, {env.get('cpus', '?')} CPUs, {env.get('platform', '?')}, "
            f"Python {env.get('python', '?')}.",
            "* Versions: " + ", ".join(f"{k} {v}" for k, v in (doc.get("versions") or {}).items()) + ".",
            f"* Testbed: {tb.get('kind', '?')}; uplink shaping: {tb.get('uplink_shaping', '?')}; "
            f"edge CPU: {tb.get('edge_cpu_quota', '?')} on core {tb.get('edge_cpu', '?')}; "
            f"server on core {tb.get('cloud_cpu', '?')}.",
            "* Delay, loss-like stalls and outages come from the user-space link proxy "
            "(`benchmarks/testbed/proxy.py`; netem is unavailable).",
            "* Settings: " + ", ".join(f"{k}={v}" for k, v in st.items()) + ".",
            "* Bundle: " + (lambda b: f"{b.get('model_name')}@{b.get('content_hash')}, cuts "
                            + ", ".join(f"{c['id']} ({c['wire_bytes'] / 1000:.1f} KB)" for c in b.get('cuts', [])))(
                doc.get("bundle", {})) + ".",
            f"* The first {st.get('warmup_frames', 0)} frames of each run (cold sessions and connections) are left out "
            "of latency, frames/s, bytes and energy; every frame counts for 'no result' and the return times.",
            "* Latency is per frame from capture to result (queueing included); energy per frame is modeled "
            "with the documented Raspberry Pi 4 power model (`edge_agent/power.py`) from each frame's measured "
            "on-device compute time (under the CPU quota), wire bytes and the uplink rate in force.",
            "* 'link KB' counts both directions on the edge's veth (headers included); 'payload' is the "
            "agent's own count of tensor bytes sent.",
            "* Static strategies pin a cut with `policy.pinned_cut`; a pinned offload that misses the "
            "per-frame deadline completes on the device, so every strategy gives every frame a result.", ""]
    if doc.get("other_results"):
        out += ["## Results of the other benchmarks", "",
                "Left in `benchmarks/results/` by their own scripts (`benchmarks/*_bench.py`); "
                "`make bench` reruns them unless `--skip-others` is given.", ""]
        out += [f"* [{r['file']}](../../{r['file']}) ({r['bytes'] / 1000:.1f} KB, {r['modified_utc']})" for r in doc["other_results"]]
        out.append("")
    if doc.get("other_benchmarks"):
        out += ["## Other benchmarks", "", "| script | exit | seconds | output |", "|---|---|---|---|"]
        for b in doc["other_benchmarks"]:
            out.append(f"| {b['script']} | {b['returncode']} | {b['seconds']} | {b.get('summary', '')[:200]} |")
        out.append("")
    return "\n".join(out)


def scenario_section(sc: dict, heading: str = "##") -> list[str]:
    """A scenario's heading, description and one table row per strategy run."""
    out = [f"{heading} {sc['name']}", "", f"{sc['description']}. Link: {sc['schedule_text']}. "
           f"{sc['frames']} frames at {sc['fps_cap']:g} fps.", ""]
    out += ["| strategy | mean ms | p95 ms | frames/s | payload KB/frame | link KB | energy mJ/frame | "
            "no result | paths | back to offload s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sc.get("runs", []):
        if "error" in r:
            out.append(f"| {r['strategy']} | error: {r['error'][:120]} | | | | | | | | |")
            continue
        link_kb = r["link_bytes"] / 1000 if r.get("link_bytes") is not None else None
        payload = r["payload_bytes_per_frame"] / 1000 if r.get("payload_bytes_per_frame") is not None else None
        paths = ", ".join(f"{k} {v}" for k, v in sorted((r.get("paths") or {}).items()))
        ret = ", ".join("never" if x is None else f"{x:.2f}" for x in r.get("offload_return_s") or []) or "-"
        name = f"**{r['strategy']}**" if r["strategy"].startswith(ADAPTIVE) else r["strategy"]
        out.append(f"| {name} | {_fmt(r.get('mean_ms'))} | {_fmt(r.get('p95_ms'))} | "
                   f"{_fmt(r.get('frames_per_s'), 2)} | {_fmt(payload)} | {_fmt(link_kb, 0)} | "
                   f"{_fmt(r.get('energy_mj_per_frame'), 0)} | {r.get('frames_without_result')} | {paths} | {ret} |")
        if r.get("notes"):
            out.append(f"| | _{'; '.join(r['notes'])[:300]}_ | | | | | | | | |")
    out.append("")
    return out


# --------------------------------------------------------------------------- plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(doc: dict, out_dir: pathlib.Path, prefix: str = "") -> list[str]:
    """Draw the PNGs (file names start with ``prefix``); return their names (relative to ``out_dir``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scenarios = doc.get("scenarios", [])
    written = [plot_fixed_uplinks(scenarios, out_dir / f"{prefix}fixed_uplinks.png")]
    for sc in scenarios:
        if sc["kind"] in ("varying", "kill"):
            written.append(plot_timeline(sc, out_dir / f"{prefix}{sc['name']}_timeline.png"))
        elif sc["kind"] == "battery":
            written.append(plot_energy(sc, out_dir / f"{prefix}energy.png"))
    return [name for name in written if name is not None]


def plot_fixed_uplinks(scenarios: Sequence[dict], path: pathlib.Path) -> Optional[str]:
    """Mean latency vs uplink, one line per strategy, over the fixed-uplink scenarios."""
    fixed = sorted((s for s in scenarios if s["kind"] == "fixed" and s.get("uplink_mbit")),
                   key=lambda s: s["uplink_mbit"])
    if not fixed:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    names: list[str] = []
    for sc in fixed:
        for r in _ok_runs(sc):
            if r["strategy"] not in names:
                names.append(r["strategy"])
    for name in names:
        xs, ys = [], []
        for sc in fixed:
            got = _run(sc, name)
            if got is not None and got.get("mean_ms") is not None:
                xs.append(sc["uplink_mbit"])
                ys.append(got["mean_ms"])
        bold = name.startswith(ADAPTIVE)
        ax.plot(xs, ys, marker="o", linewidth=3 if bold else 1.2, color="black" if bold else None,
                label=name, zorder=3 if bold else 2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("uplink (Mbit/s)")
    ax.set_ylabel("mean latency per frame (ms)")
    ax.set_title("Fixed uplinks: mean latency by strategy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_timeline(sc: dict, path: pathlib.Path) -> Optional[str]:
    """A varying-link or server-kill scenario: per-frame latency of adaptive, the best static, edge-only and
    cloud-only over time, the uplink, outages / server down shaded, and the cut adaptive ran."""
    runs = [r for r in _ok_runs(sc) if r.get("timeline")]
    if not runs:
        return None
    plt = _pyplot()
    best = _best_static(sc)
    shown = [r for r in runs if r["strategy"].startswith(ADAPTIVE) or (best is not None and r is best)
             or r["strategy"] in ("cloud-only", "edge-only")]
    fig, (ax, ax_cut) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for r in shown:
        t = [p[0] for p in r["timeline"]]
        lat = [p[1] for p in r["timeline"]]
        bold = r["strategy"] == ADAPTIVE
        ax.plot(t, lat, linewidth=2 if bold else 1, color="black" if bold else None, label=r["strategy"],
                linestyle="--" if r["strategy"].startswith(ADAPTIVE) and not bold else "-")
    for start, end in sc.get("outages") or []:
        ax.axvspan(start, end if end is not None else ax.get_xlim()[1], color="red", alpha=0.1)
    if sc["kind"] == "kill" and sc.get("kill_at_s") is not None:
        ax.axvspan(sc["kill_at_s"], sc.get("restart_at_s") or sc["kill_at_s"], color="red", alpha=0.1)
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    t_end = max(p[0] for r in shown for p in r["timeline"]) if shown else 1.0
    ax2 = ax.twinx()
    steps = _rate_curve(sc, t_end + 1)
    if steps:
        ax2.step([p[0] for p in steps], [p[1] for p in steps], where="post", color="tab:gray", alpha=0.6,
                 linestyle="--", label="uplink")
        ax2.set_ylabel("uplink (Mbit/s)", color="tab:gray")
        ax2.set_ylim(0, max(p[1] for p in steps) * 1.15 or 1)
    ax.set_xlim(0, t_end + 1)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"{sc['name']}: per-frame latency (shaded: outage / server down)")
    ad = _run(sc, ADAPTIVE)
    if ad is not None and ad.get("timeline"):
        cuts = sorted({p[2] for p in ad["timeline"]}, key=str)
        ax_cut.scatter([p[0] for p in ad["timeline"]], [cuts.index(p[2]) for p in ad["timeline"]],
                       c=["tab:red" if p[3] == "fallback" else "tab:blue" for p in ad["timeline"]], s=8)
        ax_cut.set_yticks(range(len(cuts)))
        ax_cut.set_yticklabels(cuts, fontsize=7)
        ax_cut.set_ylabel("adaptive cut")
    ax_cut.set_xlabel("time since schedule start (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_energy(sc: dict, path: pathlib.Path) -> Optional[str]:
    """Modeled energy per frame, one bar per strategy (adaptive ones black)."""
    runs = [r for r in _ok_runs(sc) if r.get("energy_mj_per_frame") is not None]
    if not runs:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar([r["strategy"] for r in runs], [r["energy_mj_per_frame"] for r in runs],
           color=["black" if r["strategy"].startswith(ADAPTIVE) else "tab:blue" for r in runs])
    ax.set_ylabel("modeled energy per frame (mJ)")
    ax.set_title(f"{sc['name']}: energy per frame (Pi 4 power model)")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _rate_curve(sc: dict, t_end: float) -> list[tuple[float, float]]:
    from benchmarks.testbed.schedule import LinkSchedule

    schedule = LinkSchedule.from_dict(sc["schedule"])
    out = []
    for t, kbps in schedule.rate_steps(1.0):
        state = schedule.state_at(t)
        out.append((t, 0.0 if not state.up else (kbps or 0) / 1000.0))
    if out:
        out.append((max(t_end, schedule.last_change_s), out[-1][1]))
    return out
