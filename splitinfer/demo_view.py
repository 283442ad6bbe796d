"""What ``splitinfer demo`` shows: the live table of results and the summary that adds them up.

Pure formatting and arithmetic over :class:`~edge_agent.results.FrameResult` values and
the emulated link's state; :mod:`splitinfer.demo` wires it to the running agent.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from typing import Any, Optional, Sequence, TextIO

import numpy as np

from edge_agent.link import EmulatedTransport, LinkState
from edge_agent.results import FrameResult

class RecentLog(logging.Handler):
    """Keeps the last few log lines for the live view's header (instead of printing them)."""

    def __init__(self, keep: int = 3) -> None:
        super().__init__(level=logging.INFO)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        self._lines: deque[str] = deque(maxlen=keep)

    def emit(self, record: logging.LogRecord) -> None:
        self._lines.append(self.format(record).splitlines()[0])

    def recent(self) -> list[str]:
        return list(self._lines)


EVENTS = RecentLog()


@dataclass
class Row:
    result: FrameResult
    uplink_kbps: Optional[float]
    link: str
    reason: str
    phase: int
    t_s: float


def _top1(result: FrameResult) -> tuple[Optional[int], str, float]:
    top = result.payload.get("top_k") or []
    if "detections" in result.payload:
        return None, detection_counts(result.payload["detections"]), max((float(d["score"]) for d in
                                                                          result.payload["detections"]), default=0.0)
    if not top:
        return None, str(result.payload.get("error", "-"))[:24], 0.0
    return int(top[0]["index"]), str(top[0]["label"]), float(top[0]["score"])


def detection_counts(detections: Sequence[dict]) -> str:
    """``3 person 2 car`` (most frequent first), or ``nothing`` — the table's label column for a detector."""
    counts = Counter(str(d["label"]) for d in detections)
    return " ".join(f"{n} {label}" for label, n in counts.most_common()) or "nothing"


def detection_f1(rows: Sequence[Row], reference: dict[int, list[dict]]) -> Optional[dict]:
    """Detections of ``rows`` against the full FP32 model's on the same frames (boxes matched per
    class at IoU >= 0.5, :func:`partitioner.fidelity.detection_fidelity`); None without comparable frames."""
    from partitioner.fidelity import Detections, detection_fidelity

    def as_detections(found: Sequence[dict]) -> Detections:
        return Detections(np.array([d["box_xyxy"] for d in found], np.float64).reshape(-1, 4),
                          np.array([d["score"] for d in found], np.float64),
                          np.array([d["index"] for d in found], np.int64))

    pairs = [(reference[r.result.frame_id], r.result.payload["detections"]) for r in rows
             if r.result.frame_id in reference and "detections" in r.result.payload]
    if not pairs:
        return None
    f = detection_fidelity([as_detections(a) for a, _ in pairs], [as_detections(b) for _, b in pairs])
    return {"frames": f.frames, "f1": round(f.f1, 4), "precision": round(f.precision, 4),
            "recall": round(f.recall, 4), "mean_iou": round(f.mean_iou, 4)}


CUT_WIDTH = 30
COLUMNS = (f"frame  top-1 / detections         {'cut [codec]':<{CUT_WIDTH}} ran on    total   pre  head  wire  srv  local"
           "   uplink est  link now           reason")
END_CUTS = ("input", "output")


def cut_labels(manifest: Any) -> dict[str, str]:
    """Cut id -> what the table shows: ``features_14_conv_2 [q4p+zstd]`` for a codec variant (the cut it
    varies and its codec), ``input [jpeg]`` for the frame's JPEG, the id itself otherwise."""
    out: dict[str, str] = {}
    for cut in manifest.cuts:
        if cut.HasField("codec") and cut.codec.name:
            out[cut.id] = f"{cut.codec_of or cut.id} [{cut.codec.name}]"
        elif cut.id == "input":
            out[cut.id] = "input [jpeg]"
        else:
            out[cut.id] = cut.id
    return out


def head_shares(manifest: Any) -> dict[str, float]:
    """Cut id -> the head's share of the model's FLOPs (head / (head + tail)), for cuts that record both."""
    out = {}
    for cut in manifest.cuts:
        total = cut.head_flops + cut.tail_flops
        if total:
            out[cut.id] = cut.head_flops / total
    return out


def is_mid_graph(cut_id: str) -> bool:
    """A split inside the model: neither the whole frame sent ("input") nor everything on the device."""
    return cut_id not in END_CUTS


def short_link(state: LinkState) -> str:
    """``100 Mbps +2ms`` / ``400 kbps +40ms`` / ``down``: the table's "link now" column."""
    if not state.up:
        return "down"
    if state.uplink_kbps is None:
        rate = "unshaped"
    elif state.uplink_kbps >= 1000:
        rate = f"{state.uplink_kbps / 1000:g} Mbps"
    else:
        rate = f"{state.uplink_kbps:g} kbps"
    return f"{rate} +{state.delay_ms:g}ms"


def format_row(row: Row, width: int, labels: Optional[dict[str, str]] = None) -> str:
    r = row.result
    _, label, score = _top1(r)
    lat = r.latency_ms
    where = {"split": "edge+cloud", "cloud": "cloud", "local": "edge", "fallback": "edge*"}.get(r.path.value, r.path.value)
    est = f"{row.uplink_kbps:,.0f} kbps" if row.uplink_kbps else "-"
    line = (
        f"{r.frame_id:5d}  {label[:20]:<20} {score:4.2f}  {(labels or {}).get(r.cut, r.cut)[:CUT_WIDTH]:<{CUT_WIDTH}} {where:<8}"
        f"{lat.get('total', 0):7.1f} {lat.get('preprocess', 0):5.1f} {lat.get('head', 0):5.1f}"
        f" {lat.get('wire', 0):5.1f} {lat.get('server', 0):4.1f} {lat.get('tail_local', 0):6.1f}"
        f"  {est:>11}  {row.link[:17]:<17}  {row.reason}"
    )
    return line[:width] if width > 0 else line


class DemoView:
    """The result sink: keeps every row, draws the live table (or plain lines when headless)."""

    def __init__(self, out: TextIO, *, headless: bool, link: EmulatedTransport, phases: Sequence[str],
                 control_hint: str, start_unix_ms: float, labels: Optional[dict[str, str]] = None) -> None:
        self.out = out
        self.labels = dict(labels or {})
        self.headless = headless
        self.link = link
        self.phases = list(phases)
        self.control_hint = control_hint
        self.start_unix_ms = start_unix_ms
        self.agent: Any = None
        self.rows: list[Row] = []
        self._last_draw = 0.0
        self._closed = False
        self._lock = threading.Lock()
        if headless:
            out.write(COLUMNS + "\n")
        else:
            out.write("\x1b[2J\x1b[?25l")

    def phase_of(self, t_s: float) -> int:
        states = self.link.emulator.trace.states
        index = 0
        for i, state in enumerate(states):
            if state.time_s <= t_s:
                index = i
        return index

    def write(self, result: FrameResult) -> None:
        snapshot = self.agent.snapshot() if self.agent is not None else None
        t_s = max(0.0, (result.capture_unix_ms - self.start_unix_ms) / 1000.0)
        row = Row(
            result=result,
            uplink_kbps=snapshot.telemetry.uplink_kbps if snapshot else None,
            link=short_link(self.link.emulator.state_at(t_s)),
            reason=snapshot.decision.reason if snapshot else "",
            phase=self.phase_of(t_s),
            t_s=t_s,
        )
        with self._lock:
            self.rows.append(row)
            if self.headless:
                self.out.write(format_row(row, 0, self.labels) + "\n")
                self.out.flush()
            else:
                now = time.monotonic()
                if now - self._last_draw >= 0.1:
                    self._last_draw = now
                    self._draw(snapshot)

    def _draw(self, snapshot: Any) -> None:
        size = shutil.get_terminal_size((160, 40))
        state = self.link.current_state()
        header = [
            f"splitinfer demo — {len(self.rows)} results   emulated link now: {state.describe()}"
            f"   (phase {self.phases[self.phase_of(self.link.elapsed_s())]})",
        ]
        if snapshot is not None:
            d = snapshot.decision
            header.append(f"cut {self.labels.get(d.cut_id, d.cut_id)} ({d.mode.value}, {d.objective.value}) — {d.reason}")
            paths = ", ".join(f"{k} {v}" for k, v in sorted(snapshot.results_by_path.items()))
            header.append(f"captured {snapshot.frames_captured}  results {snapshot.results}  by path: {paths}")
        header += [f"log: {line}" for line in EVENTS.recent()]
        header += [self.control_hint, "", COLUMNS]
        rows = self.rows[-max(3, size.lines - len(header) - 2):]
        lines = header + [format_row(r, size.columns, self.labels) for r in rows]
        self.out.write("\x1b[H" + "".join(line[: size.columns] + "\x1b[K\n" for line in lines) + "\x1b[J")
        self.out.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.headless:
            with self._lock:
                self._draw(self.agent.snapshot() if self.agent is not None else None)
            self.out.write("\x1b[?25h\n")
            self.out.flush()


# --------------------------------------------------------------------------- summary


def summarize(rows: Sequence[Row], *, frames_captured: int, frames_dropped: int, reference: dict[int, int],
              phases: Sequence[str], link: EmulatedTransport, wall_s: float,
              reference_detections: Optional[dict[int, list[dict]]] = None,
              head_share: Optional[dict[str, float]] = None) -> dict:
    """Everything the summary prints, as plain data (also written by ``--summary-json``)."""
    ordered = sorted(rows, key=lambda r: r.result.frame_id)
    paths = Counter(r.result.path.value for r in ordered)
    compared = agree = 0
    for r in ordered:
        index, _, _ = _top1(r.result)
        if r.result.frame_id in reference and index is not None:
            compared += 1
            agree += int(reference[r.result.frame_id] == index)
    runs: list[dict] = []
    for r in ordered:
        if runs and runs[-1]["cut"] == r.result.cut:
            run = runs[-1]
            run["last_frame"], run["end_s"] = r.result.frame_id, round(r.t_s, 2)
            run["frames"] += 1
            run["paths"][r.result.path.value] = run["paths"].get(r.result.path.value, 0) + 1
        else:
            runs.append({"cut": r.result.cut, "first_frame": r.result.frame_id, "last_frame": r.result.frame_id,
                         "start_s": round(r.t_s, 2), "end_s": round(r.t_s, 2), "frames": 1,
                         "paths": {r.result.path.value: 1}})
    states = link.emulator.trace.states
    phase_rows: list[dict[str, Any]] = []
    mid_graph = []
    for i, state in enumerate(states):
        members = [r for r in ordered if r.phase == i]
        end = states[i + 1].time_s if i + 1 < len(states) else None
        # frames a mid-graph cut really split (a cut's frame whose offload failed ran on the device: "fallback")
        mids = dict(Counter(r.result.cut for r in members if r.result.path.value == "split" and is_mid_graph(r.result.cut)))
        phase_rows.append({
            "phase": phases[i] if i < len(phases) else f"row {i}",
            "link": state.describe(), "start_s": state.time_s, "end_s": end,
            "frames": len(members),
            "paths": dict(Counter(r.result.path.value for r in members)),
            "cuts": dict(Counter(r.result.cut for r in members)),
            "split_cuts": mids,
            "mean_latency_ms": round(float(np.mean([r.result.latency_ms.get("total", 0.0) for r in members])), 2)
            if members else None,
            "mean_latency_ms_by_path": _mean_latency_by_path(members),
        })
        if reference_detections is not None:
            phase_rows[-1]["detection"] = detection_f1(members, reference_detections)
        if mids and sum(mids.values()) * 2 > len(members):  # split frames at mid-graph cuts are the majority
            top = max(mids, key=lambda c: mids[c])
            share = (head_share or {}).get(top)
            mid_graph.append({"phase": phase_rows[-1]["phase"], "cut": top, "frames": sum(mids.values()),
                              "of": len(members), "cuts": dict(sorted(mids.items(), key=lambda kv: -kv[1])),
                              "head_flops_share": None if share is None else round(share, 4)})
    return {
        "frames": frames_captured,
        "results": len(ordered),
        "frames_equal_results": frames_captured == len(ordered),
        "frames_dropped": frames_dropped,
        "paths": dict(paths),
        "mean_latency_ms_by_path": _mean_latency_by_path(ordered),
        "agreement": {"frames": compared, "agree": agree,
                      "top1_agreement": round(agree / compared, 4) if compared else None,
                      "reference": "full fp32 model, run locally on the same frames"},
        "detection": detection_f1(ordered, reference_detections) if reference_detections is not None else None,
        "cuts_over_time": runs,
        "phases": phase_rows,
        "mid_graph_phases": mid_graph,
        "link": "emulated in user space (edge_agent.link), not a real network",
        "wall_s": round(wall_s, 1),
    }


def _mean_latency_by_path(rows: Sequence[Row]) -> dict[str, float]:
    latency: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        latency[r.result.path.value].append(float(r.result.latency_ms.get("total", 0.0)))
    return {k: round(float(np.mean(v)), 2) for k, v in sorted(latency.items())}


def render_summary(s: dict) -> str:
    lines = ["", "=== summary ==="]
    if s.get("setup"):
        lines.append(f"setup: {s['setup']}; link {s['link']}")
    equal = "equal" if s["frames_equal_results"] else "NOT EQUAL"
    lines.append(f"frames {s['frames']}, results {s['results']} ({equal}), dropped {s['frames_dropped']}, "
                 f"wall time {s['wall_s']} s")
    a = s["agreement"]
    det = s.get("detection")
    if det:
        lines.append(f"detection F1 against the full FP32 model: {det['f1']:.3f} over {det['frames']} frames "
                     f"(precision {det['precision']:.3f}, recall {det['recall']:.3f}, mean IoU {det['mean_iou']:.3f})")
    elif a["frames"]:
        lines.append(f"top-1 agreement with the full FP32 model: {a['agree']}/{a['frames']} "
                     f"({100.0 * a['top1_agreement']:.1f}%)")
    else:
        lines.append("top-1 agreement with the full FP32 model: n/a (no comparable frames)")
    lines.append("results by path: " + ", ".join(f"{k} {v}" for k, v in sorted(s["paths"].items())))
    lines.append("mean latency by path: " + ", ".join(f"{k} {v:.1f} ms" for k, v in s["mean_latency_ms_by_path"].items()))
    lines.append("cuts chosen over time:")
    for run in s["cuts_over_time"]:
        paths = ", ".join(f"{k} {v}" for k, v in sorted(run["paths"].items()))
        lines.append(f"  {run['start_s']:6.1f}-{run['end_s']:6.1f} s  frames {run['first_frame']:4d}-{run['last_frame']:<4d}"
                     f"  {run['cut']:<{CUT_WIDTH}} ({paths})")
    lines.append("by link phase (emulated):")
    for p in s["phases"]:
        end = f"{p['end_s']:.1f}" if p["end_s"] is not None else "end"
        mean = f"{p['mean_latency_ms']:.1f} ms" if p["mean_latency_ms"] is not None else "-"
        by_path = p.get("mean_latency_ms_by_path", {})
        paths = ", ".join(f"{k} {v}" + (f" ({by_path[k]:.0f} ms)" if k in by_path else "")
                          for k, v in sorted(p["paths"].items())) or "no frames"
        cuts = ", ".join(f"{k} {v}" for k, v in sorted(p["cuts"].items()))
        f1 = f"  detection F1 {p['detection']['f1']:.3f}" if p.get("detection") else ""
        lines.append(f"  {p['phase']:<11} {p['start_s']:6.1f}-{end:>6} s  {p['link']:<26} frames {p['frames']:4d}"
                     f"  mean {mean:>9}{f1}  paths: {paths}  cuts: {cuts}")
    mids = s.get("mid_graph_phases") or []
    if mids:
        lines.append("mid-graph split chosen in: " + "; ".join(
            f"{m['phase']} ({m['frames']} of {m['of']} frames split; most at {m['cut']}"
            + (f", head {100 * m['head_flops_share']:.1f}% of the model's FLOPs" if m.get("head_flops_share") is not None
               else "")
            + ("".join(f"; {c} {n}" for c, n in m["cuts"].items()) if len(m.get("cuts", {})) > 1 else "") + ")"
            for m in mids))
    else:
        lines.append("mid-graph split chosen in: no phase (in no phase did frames split at a mid-graph cut, edge head "
                     "and cloud tail, make up most of the frames)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
