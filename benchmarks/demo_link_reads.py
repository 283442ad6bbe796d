"""What the demo's agent read of the link, per phase, from a ``splitinfer demo --headless`` log.

Each headless row quotes the agent's uplink estimate ("uplink est"), the emulated link at that
moment ("link now") and the decision's reason, which quotes the RTT the policy used
(``rtt N ms``). This groups the rows by link phase (a phase starts where "link now" changes)
and reports, per phase, the frames per cut and path and the spread of the uplink and RTT read,
next to the emulated truth (the RTT's truth is twice the one-way delay plus loopback gRPC).

    python -m benchmarks.demo_link_reads /tmp/d2/s1.log [more logs] --json out.json
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional, Sequence

_ROW = re.compile(r"^\s*(\d+)\s")
_RTT = re.compile(r"\brtt (\d+) ms( \(prior\))?")
_KBPS = re.compile(r"([\d,]+) kbps\s*$")
_CUT_PATH = re.compile(r"\s{2,}(\S+(?: \[[^\]]+\])?)\s+(edge\+cloud|edge\*|edge|cloud)\s")


class LogFormatError(ValueError):
    """The log lacks the headless table's header row."""


@dataclass
class Phase:
    link: str
    frames: int = 0
    cuts: Counter[str] = field(default_factory=Counter)
    ran_on: Counter[str] = field(default_factory=Counter)
    uplink_kbps: list[float] = field(default_factory=list)
    rtt_ms: list[float] = field(default_factory=list)
    offloading_uplink_kbps: list[float] = field(default_factory=list)  # rows whose frame went to the server
    offloading_rtt_ms: list[float] = field(default_factory=list)

    def summary(self, name: str) -> dict[str, object]:
        def spread(values: list[float]) -> Optional[dict[str, float]]:
            if not values:
                return None
            return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}

        return {"phase": name, "link_now": self.link, "frames": self.frames, "cuts": dict(self.cuts),
                "ran_on": dict(self.ran_on), "uplink_kbps_read": spread(self.uplink_kbps),
                "rtt_ms_read": spread(self.rtt_ms),
                "offloading_uplink_kbps_read": spread(self.offloading_uplink_kbps),
                "offloading_rtt_ms_read": spread(self.offloading_rtt_ms)}


def parse_log(text: str, phase_names: Sequence[str] = ()) -> list[dict[str, object]]:
    """Per-phase reads from one headless demo log (see the module docstring)."""
    lines = text.splitlines()
    header = next((line for line in lines if line.startswith("frame ") and "link now" in line), None)
    if header is None:
        raise LogFormatError("no headless table header ('frame ... link now ... reason') in the log")
    link_at, reason_at = header.index("link now"), header.index("reason")
    phases: list[Phase] = []
    for line in lines:
        if not _ROW.match(line) or len(line) <= reason_at:
            continue
        link = line[link_at:reason_at].strip()
        if not phases or phases[-1].link != link:
            phases.append(Phase(link))
        phase = phases[-1]
        phase.frames += 1
        cut_path = _CUT_PATH.search(line[:link_at])
        offloaded = bool(cut_path) and cut_path.group(2) in ("edge+cloud", "cloud")  # type: ignore[union-attr]
        if cut_path:
            phase.cuts[cut_path.group(1)] += 1
            phase.ran_on[cut_path.group(2)] += 1
        kbps = _KBPS.search(line[:link_at])
        if kbps:
            value = float(kbps.group(1).replace(",", ""))
            phase.uplink_kbps.append(value)
            if offloaded:
                phase.offloading_uplink_kbps.append(value)
        rtt = _RTT.search(line[reason_at:])
        if rtt and not rtt.group(2):
            phase.rtt_ms.append(float(rtt.group(1)))
            if offloaded:
                phase.offloading_rtt_ms.append(float(rtt.group(1)))
    names = list(phase_names) + [f"phase {i}" for i in range(len(phase_names), len(phases))]
    return [p.summary(names[i]) for i, p in enumerate(phases)]


def _phase_names(text: str) -> list[str]:
    """The story's phase names from the 'link: emulated (N phases ...: fast from 0 s: ...; ...)' line."""
    match = re.search(r"^link: emulated \(\d+ phases over [^:]*: (.*)\)$", text, re.M)
    if not match:
        return []
    return [re.sub(r" from [\d.]+ s$", "", part.split(":")[0].strip()) for part in match.group(1).split("; ")]


def _spread(value: object) -> str:
    if not isinstance(value, dict):
        return "-"
    return f"{value['min']:.0f}/{value['median']:.0f}/{value['max']:.0f} (min/med/max of {value['n']})"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+")
    parser.add_argument("--json", help="write the per-log, per-phase reads here")
    args = parser.parse_args(argv)
    out: dict[str, object] = {}
    for path in args.logs:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        phases = parse_log(text, _phase_names(text))
        out[path] = phases
        print(path)
        for p in phases:
            print(f"  {p['phase']:<11} {p['link_now']:<15} frames {p['frames']:>3}  ran {p['ran_on']}  cuts {p['cuts']}")
            print(f"  {'':<27} all rows: uplink kbps {_spread(p['uplink_kbps_read'])}, rtt ms {_spread(p['rtt_ms_read'])}"
                  f"; offloaded rows: uplink kbps {_spread(p['offloading_uplink_kbps_read'])},"
                  f" rtt ms {_spread(p['offloading_rtt_ms_read'])}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
