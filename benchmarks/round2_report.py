"""Round 2's docs/benchmarks/README.md (issue 19), from the results files only.

    python -m benchmarks.round2_report [--results benchmarks/results] [--out docs/benchmarks]

(``python -m benchmarks.run_all --report-only`` ends with this too.) It reads ``benchmarks/results/``:

* ``round2_*.json``: per camera, the testbed scenarios (``testbed.json``'s shape: fixed uplinks, the varying
  trace, server load, battery drain, server kill / Triton restart) or the three-region uplink sweep
  (``three_region.json``'s shape); the label is the file name without ``round2_`` and ``.json``;
* ``triton.json``: the agent's recovery after Triton's and our server's restarts (``benchmarks/triton_bench.py``);
* ``server.json``, ``streams.json``, ``scaleout.json``: the server's throughput and streams (issue 15);
* the offline fidelity files (:mod:`benchmarks.fidelity_table`);
* ``three_region.json``: runs labelled other than :data:`ROUND1_SWEEPS` are round-2 sweeps too;
* round 1's ``testbed.json`` and ``three_region.json``'s round-1 runs, kept as a marked, superseded section.

It writes ``README.md``, ``round2_goals.json`` (the goal rows and the files they came from), ``fidelity.md``
and the PNGs into ``docs/benchmarks/``. Goals and tables: :mod:`benchmarks.testbed.round2_report`.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from typing import Any, Optional, Sequence

from benchmarks import fidelity_table
from benchmarks.testbed import report as round1, round2_plots as plots, round2_report as r2
from benchmarks.testbed import three_region_report

# three_region.json's round-1 runs; any other label there was swept in round 2 and joins the round-2 sweeps
ROUND1_SWEEPS = ("training-free", "training-free-pi4")
REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DOCS = REPO / "docs" / "benchmarks"


def load_round2(results: pathlib.Path) -> tuple[dict[str, dict], dict[str, dict], dict[str, str]]:
    """(testbed documents, sweep documents, {label: file}) of ``round2_*.json``; other shapes are skipped."""
    testbeds: dict[str, dict] = {}
    sweeps: dict[str, dict] = {}
    files: dict[str, str] = {}
    for path in sorted(results.glob("round2_*.json")):
        label = path.stem.removeprefix("round2_")
        doc = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(doc.get("scenarios"), list):
            testbeds[label] = doc
        elif isinstance(doc.get("runs"), dict) and any("sweep" in r for r in doc["runs"].values()):
            sweeps[label] = doc
        else:
            print(f"skipping {path.name}: neither scenarios nor sweep runs", file=sys.stderr)
            continue
        files[label] = f"benchmarks/results/{path.name}"
    three = _json(results / "three_region.json") or {}
    for label, run in (three.get("runs") or {}).items():
        if label not in ROUND1_SWEEPS:
            sweeps[label] = {"runs": {label: run}}
            files[label] = f"benchmarks/results/three_region.json (run {label!r})"
    return testbeds, sweeps, files


def round1_sweeps(three: Optional[dict]) -> Optional[dict]:
    """three_region.json with its round-1 runs only."""
    if not three:
        return None
    return {**three, "runs": {k: v for k, v in (three.get("runs") or {}).items() if k in ROUND1_SWEEPS}}


def _json(path: pathlib.Path) -> Optional[dict]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _when(doc: Optional[dict]) -> str:
    if not doc:
        return "?"
    runs = [r.get("generated_at") for r in (doc.get("runs") or {}).values() if isinstance(r, dict)] \
        if isinstance(doc.get("runs"), dict) else []
    return str(doc.get("generated_at") or doc.get("finished_at") or doc.get("started_at")
               or max((r for r in runs if r), default=None) or "partial: no generated_at yet")


def camera_sections(testbeds: dict[str, dict], sweeps: dict[str, dict], files: dict[str, str],
                    out: pathlib.Path) -> list[str]:
    """Per camera: its uplink sweep(s) (figure + table), then its testbed documents (figures + tables)."""
    cameras: dict[str, list[tuple[str, Optional[str]]]] = {}  # camera -> [(file label, sweep run label or None)]
    run_labels = [run_label for doc in sweeps.values() for run_label in (doc.get("runs") or {})]
    for label, doc in sweeps.items():
        for run_label in doc.get("runs") or {}:
            cameras.setdefault(r2.camera_of_run(run_label, run_labels), []).append((label, run_label))
    for label, doc in testbeds.items():
        cameras.setdefault(r2.camera_of(label, doc), []).append((label, None))
    lines: list[str] = []
    for camera, entries in cameras.items():
        lines += [f"## Camera: {camera}", ""]
        for label, run_label in entries:
            if run_label is not None:
                lines += _sweep_lines(label, run_label, sweeps[label]["runs"][run_label], files[label], out)
            else:
                lines += _testbed_lines(label, testbeds[label], files[label], out)
    return lines


def _sweep_lines(label: str, run_label: str, run: dict, file: str, out: pathlib.Path) -> list[str]:
    dev = run.get("device") or {}
    bundle = run.get("bundle") or {}
    lines = [f"### {run_label}: latency vs uplink", "",
             f"From `{file}` (`{run.get('command', '?')}`, {run.get('generated_at', '?')}, "
             f"{run.get('duration_s', '?')} s). Bundle {bundle.get('model_name', '?')}@"
             f"{bundle.get('content_hash', '?')}; edge CPU = one core / {dev.get('slowdown', '?')}. Settings: "
             + ", ".join(f"{k}={v}" for k, v in (run.get("settings") or {}).items()) + ".", ""]
    name = plots.plot_sweep(run, f"{run_label}: mean latency vs uplink, every strategy",
                            out / f"{label}_{run_label}_sweep.png")
    if name:
        lines += [f"![{name}]({name})", ""]
    return lines + r2.sweep_table(run)


def _testbed_lines(label: str, doc: dict, file: str, out: pathlib.Path) -> list[str]:
    settings = doc.get("settings") or {}
    bundle = doc.get("bundle") or {}
    device = doc.get("device") or {}
    names = ", ".join(sc["name"] for sc in doc.get("scenarios", []))
    lines = [f"### {label}: {names}", "",
             f"From `{file}` (`{doc.get('command', '?')}`, {doc.get('generated_at', 'partial: still running or stopped')}, "
             f"{doc.get('duration_s', '?')} s). Bundle {bundle.get('model_name', '?')}@{bundle.get('content_hash', '?')}"
             + (f"; edge CPU = one core / {device.get('slowdown')} ({device.get('stands_for', '?')})" if device else "")
             + (f"; static cut {doc['best_cut'].get('used')} ({doc['best_cut'].get('how')})"
                if isinstance(doc.get("best_cut"), dict) else "")
             + ". Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + ".", ""]
    machine, testbed = doc.get("machine") or {}, doc.get("testbed") or {}
    if machine or testbed:
        lines += [f"Machine: {machine.get('cpu', '?')}, {machine.get('cpus', '?')} CPUs; testbed: "
                  f"{testbed.get('kind', '?')}, uplink shaping {testbed.get('uplink_shaping', '?')}, edge CPU "
                  f"{testbed.get('edge_cpu_quota', '?')}; load average at start / end: "
                  f"{doc.get('load_average_1_5_15_at_start', '?')} / {doc.get('load_average_1_5_15_at_end', '?')}.", ""]
    for name in round1.write_plots(doc, out, prefix=f"{label}_"):
        lines += [f"![{name}]({name})", ""]
    for sc in doc.get("scenarios", []):
        lines += round1.scenario_section(sc, heading="####")
        lines += r2.phase_table(sc)
    return lines


def restart_section(triton: Optional[dict], out: pathlib.Path) -> list[str]:
    if not triton:
        return ["## Restarts", "", "No `benchmarks/results/triton.json`.", ""]
    lines = ["## Restarts: Triton and our server (`benchmarks/results/triton.json`)", "",
             f"`python -m benchmarks.triton_bench` ({_when(triton)}, {triton.get('duration_s', '?')} s; "
             f"{(triton.get('bundle') or {}).get('model')}@{(triton.get('bundle') or {}).get('hash')}, "
             f"{(triton.get('settings') or {}).get('source')}). {triton.get('triton', '')}. The agent runs pinned to "
             "a mid-graph cut (and adaptive, its edge slowed); the server is stopped, left down, started again on "
             "the same port; 'ready' is the first ServerReady answer seen by a probe polling every 20 ms over a "
             "channel that reconnects within 50 ms, 'first offload' the first offloaded result after the restart.",
             ""]
    name = plots.plot_restart_timeline(triton, out / "restart_timeline.png")
    if name:
        lines += [f"![{name}]({name})", ""]
    lines += r2.triton_table(triton)
    cuts = triton.get("cuts") or {}
    if cuts:
        lines += ["Round trip (wire + server, as the agent measures it) per cut, pinned, "
                  f"{(triton.get('settings') or {}).get('frames')} frames each:", "",
                  "| cut | Triton offloaded | Triton p50 / p95 ms | ours offloaded | ours p50 / p95 ms |",
                  "|---|---|---|---|---|"]
        for cut, row in cuts.items():
            t, o = row.get("triton") or {}, row.get("ours") or {}
            lines.append(f"| {cut} | {t.get('offloaded')}/{t.get('frames')} | {t.get('round_trip_ms_p50')} / "
                         f"{t.get('round_trip_ms_p95')} | {o.get('offloaded')}/{o.get('frames')} | "
                         f"{o.get('round_trip_ms_p50')} / {o.get('round_trip_ms_p95')} |")
        lines.append("")
    return lines


def server_section(server: Optional[dict], streams: Optional[dict], scaleout: Optional[dict],
                   out: pathlib.Path) -> list[str]:
    lines = ["## Server: streams and throughput (issue 15's results)", "",
             f"`benchmarks/results/server.json` ({_when(server)}), `streams.json` ({_when(streams)}), "
             f"`scaleout.json` ({_when(scaleout)}); measured on a stand-in bundle where the files say so "
             f"(server: {(server or {}).get('bundle_kind', '?')}, streams: {(streams or {}).get('bundle_kind', '?')}).",
             ""]
    name = plots.plot_server(server, streams, out / "server_throughput.png")
    if name:
        lines += [f"![{name}]({name})", ""]
    sat = ((server or {}).get("throughput") or {}).get("saturation") or {}
    if sat:
        lines += [f"Saturation: our server {sat.get('server_rps_32_clients')} requests/s at 32 clients vs the best "
                  f"in-process {sat.get('in_process_best_rps')} ({sat.get('in_process_best')}): "
                  f"{sat.get('ratio_vs_best')}x (goal {sat.get('goal')}: "
                  f"{'met' if sat.get('goal_met') else '**missed**'}).", ""]
    rows = []
    for key in ("cameras", "overload"):
        c = (streams or {}).get(key)
        if c:
            lat = c.get("ok_latency") or {}
            rows.append(f"| {key} | {c.get('cameras')} x {c.get('fps_per_camera')} fps = {c.get('offered_rps')} | "
                        f"{c.get('ok_rps')} | {c.get('share_resource_exhausted')} | {lat.get('p50_ms')} / "
                        f"{lat.get('p99_ms')} | {c.get('server_rss_mb_max')} |")
    if rows:
        lines += ["| streams.json | cameras x fps = offered req/s | OK req/s | share shed (RESOURCE_EXHAUSTED) | "
                  "OK p50 / p99 ms | server RSS MB max |", "|---|---|---|---|---|---|"] + rows + [""]
    if scaleout:
        lines += [f"Scale-out (`scaleout.json`): {scaleout.get('settings', {}).get('servers')} servers behind gRPC "
                  f"round robin, one killed at {scaleout.get('settings', {}).get('kill_at_s')} s: "
                  f"{scaleout.get('frames_after_kill')} frames after the kill, {scaleout.get('fallback_after_kill')} "
                  f"fell back; longest gap between offloads around the kill "
                  f"{scaleout.get('longest_gap_between_offloads_around_kill_s')} s (frame interval "
                  f"{scaleout.get('frame_interval_s')} s).", ""]
    return lines


def round1_section(testbed: Optional[dict], three: Optional[dict], out: pathlib.Path) -> list[str]:
    if not testbed and not three:
        return []
    lines = ["## Round 1 (superseded)", "",
             "Kept for comparison, superseded by the round-2 sections above: MobileNetV2 on an emulated Pi with raw "
             "activations and FP32 heads, round 1's goals and thresholds (issue 7). Full tables: "
             "`benchmarks/results/testbed.json` and `benchmarks/results/three_region.json`.", ""]
    goals = round1.evaluate_goals(testbed) if testbed else []
    goals += three_region_report.goal_rows(three) if three else []
    lines += r2.goals_table(goals)
    names = round1.write_plots(testbed, out) if testbed else []
    names += [str(r["plot"]).rsplit("/", 1)[-1] for r in ((three or {}).get("runs") or {}).values() if r.get("plot")]
    for name in names:
        lines += [f"![{name}]({name})", ""] if (out / name).is_file() else []
    return lines


def files_section(results: pathlib.Path) -> list[str]:
    """Every results file, linked, with its size and modification time."""
    lines = ["## All results files", ""]
    for path in sorted(results.glob("*.json")):
        stat = path.stat()
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stat.st_mtime))
        lines.append(f"* [benchmarks/results/{path.name}](../../benchmarks/results/{path.name}) "
                     f"({stat.st_size / 1000:.1f} KB, {when})")
    return lines + [""]


def render(goal_rows: Sequence[dict], sections: Sequence[list[str]], sources: dict[str, str], generated: str) -> str:
    lines = ["# Benchmarks, round 2: the adaptive split on camera workloads (issue 19)", "",
             f"Generated {generated} by `python -m benchmarks.round2_report` (also the end of "
             "`python -m benchmarks.run_all --report-only`) from these results files only:", ""]
    lines += [f"* `{f}` ({when})" for f, when in sources.items()] + [""]
    lines += ["## Goals", "", "Missed goals stay here with the measured number; 'not measured' means the run "
              "that would measure it is missing or failed (the detail says which).", ""]
    lines += r2.goals_table(goal_rows)
    for section in sections:
        lines += section
    return "\n".join(lines)


def write_report(results: pathlib.Path = RESULTS, out: pathlib.Path = DOCS, now: Optional[str] = None) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    testbeds, sweeps, files = load_round2(results)
    triton = _json(results / "triton.json")
    server, streams, scaleout = (_json(results / f"{n}.json") for n in ("server", "streams", "scaleout"))
    goals = r2.evaluate(testbeds, sweeps, triton)
    sources = {f: _when(testbeds.get(c) or sweeps.get(c)) for c, f in files.items()}
    for name, doc in (("triton", triton), ("server", server), ("streams", streams), ("scaleout", scaleout)):
        if doc:
            sources[f"benchmarks/results/{name}.json"] = _when(doc)
    fid_section = ["## Fidelity per strategy next to the JPEG baseline", ""]
    try:
        fid_rows = fidelity_table.all_rows(fidelity_table.load_docs(results))
    except fidelity_table.FidelityTableError as exc:
        fid_section += [f"Not rendered: {exc}.", ""]
    else:
        fidelity_table.write_plot(fid_rows, out / "fidelity.png")
        (out / "fidelity.md").write_text(fidelity_table.render_document(fid_rows), encoding="utf-8")
        sources.update({f"benchmarks/results/{f}": "offline" for f in sorted({r.fidelity.file for r in fid_rows})})
        fid_section += ["From the offline results files ([fidelity.md](fidelity.md) has the method); each row is "
                        "compared with the cloud-only JPEG on the same frames.", "", "![fidelity.png](fidelity.png)", ""]
        fid_section += [line.replace("### ", "### Fidelity: ", 1) for line in fidelity_table.render_markdown(fid_rows)]
    sections = [camera_sections(testbeds, sweeps, files, out), restart_section(triton, out), fid_section,
                server_section(server, streams, scaleout, out),
                round1_section(_json(results / "testbed.json"), round1_sweeps(_json(results / "three_region.json")), out),
                files_section(results)]
    if not testbeds and not sweeps:
        sections.insert(0, ["## Cameras", "", "No `benchmarks/results/round2_*.json` yet: the camera scenarios and "
                            "sweeps have not been run, so their goals are not measured.", ""])
    generated = now or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (out / "README.md").write_text(render(goals, sections, sources, generated), encoding="utf-8")
    (out / "round2_goals.json").write_text(json.dumps({"generated_at": generated, "sources": sources,
                                                       "goals": goals}, indent=1) + "\n", encoding="utf-8")
    return goals


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.round2_report", description=__doc__.split("\n")[0])
    p.add_argument("--results", type=pathlib.Path, default=RESULTS)
    p.add_argument("--out", type=pathlib.Path, default=DOCS)
    args = p.parse_args(argv)
    goals = write_report(args.results, args.out)
    counts: dict[Any, int] = {}
    for g in goals:
        counts[g["met"]] = counts.get(g["met"], 0) + 1
    print(f"wrote {args.out / 'README.md'}: {counts.get(True, 0)} goals met, {counts.get(False, 0)} missed, "
          f"{counts.get(None, 0)} not measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
