"""What `make bench` runs: every benchmark, then docs/benchmarks/ regenerated.

    python -m benchmarks.run_all [--quick] [--report-only] [--skip-others] [-- testbed_bench options]

1. ``benchmarks/testbed_bench.py`` (the adaptive-vs-static comparison on the
   emulated testbed) writes ``benchmarks/results/testbed.json``; with
   ``--three-region-bundle B`` the three-region sweep (``benchmarks/testbed_three_region.py``)
   writes ``benchmarks/results/three_region.json``, whose last results join the report.
2. Every other ``benchmarks/*_bench.py`` runs as its own process (bounded time);
   its exit status and last output lines are recorded.
3. ``docs/benchmarks/results.json`` (round 1's testbed results, with machine, versions and
   settings) and its PNG plots are regenerated;
4. ``docs/benchmarks/README.md`` is round 2's report (issue 19): :mod:`benchmarks.round2_report`
   renders it from every results file, round 1 kept in a marked, superseded section.

``--report-only`` skips the runs and rebuilds the docs from the last results.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time
from typing import Optional, Sequence

from benchmarks import round2_report
from benchmarks.testbed.report import evaluate_goals, render_markdown, write_plots

REPO = pathlib.Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "benchmarks"
DOCS = REPO / "docs" / "benchmarks"
TESTBED_JSON = BENCH_DIR / "results" / "testbed.json"
THREE_REGION_JSON = BENCH_DIR / "results" / "three_region.json"
OTHER_TIMEOUT_S = 900


def run_others(quick: bool) -> list[dict]:
    """Run every benchmarks/*_bench.py except the testbed bench; one record each."""
    records = []
    for script in sorted(BENCH_DIR.glob("*_bench.py")):
        if script.name == "testbed_bench.py":
            continue
        module = f"benchmarks.{script.stem}"
        argv = [sys.executable, "-m", module] + (["--quick"] if quick and "--quick" in script.read_text() else [])
        started = time.monotonic()
        try:
            done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=OTHER_TIMEOUT_S)
            code, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            code, out, err = None, str(exc.stdout or ""), f"timed out after {OTHER_TIMEOUT_S}s"
        tail = [line for line in out.splitlines() if line.strip()][-8:]
        records.append({"script": script.name, "argv": argv[1:], "returncode": code,
                        "seconds": round(time.monotonic() - started, 1),
                        "summary": " / ".join(tail) if code == 0 else (err.strip().splitlines() or ["?"])[-1],
                        "stdout_tail": tail})
        print(f"{script.name}: exit {code} in {records[-1]['seconds']} s", flush=True)
    return records


def list_other_results() -> list[dict]:
    """Result files other benchmarks left in benchmarks/results/ (name, when, size)."""
    out = []
    for path in sorted((BENCH_DIR / "results").glob("*.json")):
        if path.name in (TESTBED_JSON.name, THREE_REGION_JSON.name, "other_benchmarks.json"):
            continue
        stat = path.stat()
        out.append({"file": f"benchmarks/results/{path.name}", "bytes": stat.st_size,
                    "modified_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stat.st_mtime))})
    return out


def write_docs(doc: dict, docs_dir: pathlib.Path = DOCS) -> None:
    docs_dir.mkdir(parents=True, exist_ok=True)
    doc["goals"] = evaluate_goals(doc)
    plots = write_plots(doc, docs_dir)
    (docs_dir / "results.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    (docs_dir / "README.md").write_text(render_markdown(doc, plots), encoding="utf-8")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="bounded quick pass of every benchmark")
    p.add_argument("--report-only", action="store_true", help="rebuild docs/benchmarks from the last results")
    p.add_argument("--skip-others", action="store_true", help="only the testbed bench")
    p.add_argument("--three-region-bundle", default=None,
                   help="also run the three-region sweep (benchmarks/testbed_three_region.py) on this bundle; "
                        "its last results are in the report either way")
    args = p.parse_args(argv)

    if not args.report_only:
        cmd = [sys.executable, "-m", "benchmarks.testbed_bench", "--out", str(TESTBED_JSON)]
        cmd += (["--quick"] if args.quick else []) + passthrough
        print("running", " ".join(cmd[1:]), flush=True)
        code = subprocess.run(cmd, cwd=REPO).returncode
        if code != 0:
            print(f"testbed bench failed with exit {code}", file=sys.stderr)
            if not TESTBED_JSON.exists():
                return code
    if not TESTBED_JSON.exists():
        round2_report.write_report(BENCH_DIR / "results", DOCS)
        print(f"no {TESTBED_JSON}: wrote round 2's {DOCS / 'README.md'} only", file=sys.stderr)
        return 0
    doc = json.loads(TESTBED_JSON.read_text(encoding="utf-8"))
    others_path = BENCH_DIR / "results" / "other_benchmarks.json"
    if not args.report_only and not args.skip_others:
        others = run_others(args.quick)
        others_path.parent.mkdir(parents=True, exist_ok=True)
        others_path.write_text(json.dumps(others, indent=1), encoding="utf-8")
    if others_path.exists():
        doc["other_benchmarks"] = json.loads(others_path.read_text(encoding="utf-8"))
    if args.three_region_bundle and not args.report_only:
        cmd = [sys.executable, "-m", "benchmarks.testbed_three_region", "--bundle", args.three_region_bundle,
               "--out", str(THREE_REGION_JSON)]
        print("running", " ".join(cmd[1:]), flush=True)
        if subprocess.run(cmd, cwd=REPO).returncode != 0:
            print("three-region sweep failed", file=sys.stderr)
    if THREE_REGION_JSON.exists():
        doc["three_region"] = json.loads(THREE_REGION_JSON.read_text(encoding="utf-8"))
    doc["other_results"] = list_other_results()
    write_docs(doc)
    goals = round2_report.write_report(BENCH_DIR / "results", DOCS)  # README.md: round 2, round 1 marked
    missed = sum(g["met"] is False for g in goals)
    print(f"wrote {DOCS / 'README.md'} (round 2: {len(goals)} goal rows, {missed} missed), "
          f"{DOCS / 'results.json'} and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
