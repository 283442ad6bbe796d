"""The three-region sweep (issue 13): which strategy is fastest at each uplink, as plain values.

Pure: no I/O, no clock. :mod:`benchmarks.testbed_three_region` runs the sweep in the
namespace testbed and feeds the measured means here.

The classic result of split inference (Neurosurgeon and the papers since) is three
regions along the uplink axis: on a slow link everything runs on the device (edge-only),
on a fast link the frame goes to the server (cloud-only), and in between a mid-graph cut
whose head is cheap and whose wire is much smaller than the JPEG beats both. Per frame::

    edge-only  = E                                     (the full model on the device)
    cloud-only = jpeg_encode + J / uplink + rtt + S    (J: the frame's JPEG, S: full model on the server)
    cut c      = head_c + b_c / uplink + rtt + tail_c  (head_c includes the codec's encode, tail_c its decode)

The ratio cut / min(edge-only, cloud-only) falls with the uplink while edge-only is the
smaller and rises (for any cut worth sending) once cloud-only is, so it is lowest where
edge-only and cloud-only tie, J / uplink = E - rtt - S. There it is
(head_c + (b_c / J)(E - rtt - S) + rtt + tail_c) / E, about ``head_c / E + b_c / J``:
:func:`ratio_floor` computes it from the bundle's profiles before anything is measured
(a floor >= 1 means the cut never beats both ends; a floor above :data:`RATIO_MAX` means
the goal's ratio cannot be met, whatever the measurement).

Goal (issue 13, reported, never asserted): over uplinks from 0.25 to 50 Mbit/s one
mid-graph cut is the fastest strategy over a band at least :data:`BAND_MIN_WIDTH` wide
(the ratio of the highest to the lowest sweep uplink where it is fastest, consecutive
sweep points), its latency is at most :data:`RATIO_MAX` x min(edge-only, cloud-only) at
some uplink of the band, and the adaptive agent's settled choice there is that cut.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

SWEEP_UPLINKS_MBIT = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 50.0)
BAND_MIN_WIDTH = 4.0
RATIO_MAX = 0.7
EDGE, CLOUD, ADAPTIVE = "edge-only", "cloud-only", "adaptive"
CUT_PREFIX = "cut:"


@dataclass(frozen=True)
class CutRow:
    """A cut as the sweep sees it: the bundle's bytes and profiled times (edge at device speed)."""

    cut_id: str
    order: int
    wire_bytes: float
    head_ms: float  # on the (emulated) device, codec encode included
    tail_ms: float  # on the server, codec decode included
    codec: str = ""  # "" = the bundle's plain wire codec
    base_id: str = ""  # the cut a codec variant varies ("" for plain cuts)


@dataclass(frozen=True)
class Pick:
    """The sweep's static mid-graph strategies and the cuts left out, with why."""

    cuts: tuple[CutRow, ...]
    skipped: tuple[tuple[str, str], ...]


def pick_mid_cuts(rows: Sequence[CutRow], jpeg_bytes: float) -> Pick:
    """Per base cut the variant with the fewest bytes ("each cut with its best codec"); cuts whose wire is
    at least the JPEG's are left out: they send more than cloud-only and also compute a head, so cloud-only
    beats them at every uplink whenever the server is at least as fast as the device."""
    if jpeg_bytes <= 0:
        raise ValueError(f"jpeg_bytes = {jpeg_bytes!r}; expected the frame's JPEG size in bytes (> 0)")
    mids = [r for r in rows if r.cut_id not in ("input", "output")]
    best: dict[str, CutRow] = {}
    skipped: list[tuple[str, str]] = []
    for r in mids:
        base = r.base_id or r.cut_id
        if base not in best or r.wire_bytes < best[base].wire_bytes:
            if base in best:
                skipped.append((best[base].cut_id, f"{r.cut_id} carries fewer bytes "
                                                    f"({r.wire_bytes:.0f} < {best[base].wire_bytes:.0f} B)"))
            best[base] = r
        else:
            skipped.append((r.cut_id, f"{best[base].cut_id} carries fewer bytes "
                                      f"({best[base].wire_bytes:.0f} <= {r.wire_bytes:.0f} B)"))
    kept: list[CutRow] = []
    for r in sorted(best.values(), key=lambda r: (r.order, r.cut_id)):
        if r.wire_bytes >= jpeg_bytes:
            skipped.append((r.cut_id, f"{r.wire_bytes:.0f} B >= the JPEG's {jpeg_bytes:.0f} B: dominated by cloud-only"))
        else:
            kept.append(r)
    return Pick(tuple(kept), tuple(skipped))


def predict_ms(rows: Sequence[CutRow], *, uplink_mbit: float, rtt_ms: float, jpeg_bytes: float,
               jpeg_encode_ms: float = 0.0) -> dict[str, float]:
    """The formula of the module docstring for edge-only, cloud-only and every mid cut in ``rows``
    (``rows`` must hold "input" and "output"); 1 Mbit/s = 1 kbit/ms."""
    if not uplink_mbit > 0:
        raise ValueError(f"uplink_mbit = {uplink_mbit!r}; expected > 0")
    by_id = {r.cut_id: r for r in rows}
    missing = [c for c in ("input", "output") if c not in by_id]
    if missing:
        raise ValueError(f"rows lack {missing}; have {sorted(by_id)}")
    kbit_per_ms = uplink_mbit
    out = {EDGE: by_id["output"].head_ms,
           CLOUD: jpeg_encode_ms + jpeg_bytes * 8 / 1000 / kbit_per_ms + rtt_ms + by_id["input"].tail_ms}
    for r in rows:
        if r.cut_id in ("input", "output"):
            continue
        out[CUT_PREFIX + r.cut_id] = r.head_ms + r.wire_bytes * 8 / 1000 / kbit_per_ms + rtt_ms + r.tail_ms
    return out


def ratio_floor(cut: CutRow, *, edge_ms: float, jpeg_bytes: float, rtt_ms: float, server_ms: float) -> Optional[float]:
    """The lowest latency ratio to min(edge-only, cloud-only) that ``cut`` reaches at any uplink (module
    docstring); None when cloud-only never beats edge-only (``edge_ms <= rtt_ms + server_ms``)."""
    if edge_ms <= 0 or jpeg_bytes <= 0:
        raise ValueError(f"edge_ms = {edge_ms!r}, jpeg_bytes = {jpeg_bytes!r}; expected both > 0")
    network_ms = edge_ms - rtt_ms - server_ms
    if network_ms <= 0:
        return None
    return (cut.head_ms + cut.wire_bytes / jpeg_bytes * network_ms + rtt_ms + cut.tail_ms) / edge_ms


def sweep_fps(uplink_mbit: float, *, jpeg_bytes: float, edge_ms: float, fps_cap: float) -> float:
    """Frame rate for one sweep point: at most ``fps_cap``, and slow enough that one frame's JPEG plus a
    device run fit 1.5 times in a frame interval, so the slowest strategy does not queue frames behind each
    other (the sweep compares per-frame latency, not throughput)."""
    slowest_ms = jpeg_bytes * 8 / 1000 / uplink_mbit + edge_ms
    return round(min(fps_cap, 1000.0 / (1.5 * slowest_ms)), 2)


def strategy_fps(predicted_ms: float, *, edge_ms: float, fps_cap: float, adaptive: bool = False) -> float:
    """Frame rate for one strategy at one sweep point when each strategy is paced by itself: slow enough
    that its own predicted frame (``predicted_ms``) fits 1.5 times in a frame interval. The adaptive agent
    is paced by the slower of its prediction and edge-only (``edge_ms``), the choice it can always fall
    back to, so that a choice it learns its way out of does not queue frames behind each other."""
    if not predicted_ms > 0 or not edge_ms > 0 or not fps_cap > 0:
        raise ValueError(f"predicted_ms={predicted_ms!r}, edge_ms={edge_ms!r}, fps_cap={fps_cap!r}; expected > 0")
    slowest_ms = max(predicted_ms, edge_ms) if adaptive else predicted_ms
    return round(min(fps_cap, 1000.0 / (1.5 * slowest_ms)), 3)


@dataclass(frozen=True)
class Settled:
    """An adaptive run split into its learning period and the rest."""

    choice: str  # the cut it used most in the second half of the run
    learning_frames: int  # frames before it first reached that cut and stayed (see settle)
    settled_frames: int
    settled_share: float  # of the frames after the learning period, the share on ``choice``
    cuts_after: dict[str, int]  # cut -> frames after the learning period


def settle(cuts: Sequence[str]) -> Settled:
    """Where an adaptive run's choice settles: ``choice`` is its most used cut over the second half; the
    learning period ends at the start of the last stretch on ``choice`` that begins in the first half, or at
    the first frame on ``choice`` when every such stretch starts later."""
    if not cuts:
        raise ValueError("no frames: expected the adaptive run's cut per frame")
    second = cuts[len(cuts) // 2:]
    choice = Counter(second).most_common(1)[0][0]
    starts = [i for i, c in enumerate(cuts) if c == choice and (i == 0 or cuts[i - 1] != choice)]
    early = [i for i in starts if i <= len(cuts) // 2]
    learning = early[-1] if early else starts[0]
    after = cuts[learning:]
    return Settled(choice, learning, len(after), round(after.count(choice) / len(after), 3), dict(Counter(after)))


@dataclass(frozen=True)
class Point:
    """One sweep uplink: measured mean latency per static strategy, and adaptive's settled choice."""

    uplink_mbit: float
    means_ms: Mapping[str, float]  # static strategies only (edge-only, cloud-only, cut:...)
    adaptive_cut: Optional[str] = None  # adaptive's settled choice as a cut id ("output", "input", ...)
    adaptive_ms: Optional[float] = None  # adaptive's mean after its learning period


def strategy_of_cut(cut_id: str) -> str:
    return {"output": EDGE, "input": CLOUD}.get(cut_id, CUT_PREFIX + cut_id)


def evaluate(points: Sequence[Point]) -> dict[str, Any]:
    """The goal check of the module docstring over the measured points (sorted by uplink)."""
    pts = sorted(points, key=lambda p: p.uplink_mbit)
    rows: list[dict[str, Any]] = []
    for p in pts:
        fastest = min(p.means_ms, key=lambda s: p.means_ms[s]) if p.means_ms else None
        ends = [p.means_ms[s] for s in (EDGE, CLOUD) if s in p.means_ms]
        floor = min(ends) if ends else None
        mids = {s: v for s, v in p.means_ms.items() if s.startswith(CUT_PREFIX)}
        best_mid = min(mids, key=lambda s: mids[s]) if mids else None
        rows.append({
            "uplink_mbit": p.uplink_mbit, "fastest": fastest,
            "fastest_ms": round(p.means_ms[fastest], 2) if fastest else None,
            "edge_ms": _r(p.means_ms.get(EDGE)), "cloud_ms": _r(p.means_ms.get(CLOUD)),
            "best_mid": best_mid, "best_mid_ms": _r(mids.get(best_mid)) if best_mid else None,
            "best_mid_ratio": round(mids[best_mid] / floor, 3) if best_mid and floor else None,
            "adaptive_cut": p.adaptive_cut,
            "adaptive_strategy": strategy_of_cut(p.adaptive_cut) if p.adaptive_cut else None,
            "adaptive_ms": _r(p.adaptive_ms),
            "adaptive_vs_fastest": round(p.adaptive_ms / p.means_ms[fastest], 3)
            if p.adaptive_ms is not None and fastest else None,
        })
    bands: list[dict[str, Any]] = []
    i = 0
    while i < len(rows):
        s = rows[i]["fastest"]
        j = i
        while j + 1 < len(rows) and rows[j + 1]["fastest"] == s:
            j += 1
        if s is not None and s.startswith(CUT_PREFIX):
            members = rows[i:j + 1]
            ratios = [m["fastest_ms"] / min(v for v in (m["edge_ms"], m["cloud_ms"]) if v is not None)
                      for m in members if m["edge_ms"] is not None or m["cloud_ms"] is not None]
            bands.append({
                "strategy": s, "from_mbit": members[0]["uplink_mbit"], "to_mbit": members[-1]["uplink_mbit"],
                "width": round(members[-1]["uplink_mbit"] / members[0]["uplink_mbit"], 3),
                "best_ratio": round(min(ratios), 3) if ratios else None,
                "adaptive_agrees": [m["adaptive_strategy"] == s for m in members],
            })
        i = j + 1
    best: Optional[dict[str, Any]] = max(bands, key=lambda b: (b["width"], -(b["best_ratio"] or math.inf)), default=None)
    width_met = best is not None and best["width"] >= BAND_MIN_WIDTH
    ratio_met = best is not None and best["best_ratio"] is not None and best["best_ratio"] <= RATIO_MAX
    adaptive_met = best is not None and bool(best["adaptive_agrees"]) and all(best["adaptive_agrees"])
    ratios_all = [r["best_mid_ratio"] for r in rows if r["best_mid_ratio"] is not None]
    return {
        "points": rows,
        "bands": bands,
        "best_band": best,
        "lowest_mid_ratio_anywhere": min(ratios_all) if ratios_all else None,
        "goal": {
            "band_width": best["width"] if best else 0.0, "band_width_target": f">= {BAND_MIN_WIDTH:g}",
            "band_width_met": width_met,
            "ratio": best["best_ratio"] if best else None, "ratio_target": f"<= {RATIO_MAX:g}",
            "ratio_met": ratio_met,
            "adaptive_chooses_the_cut_there": adaptive_met,
            "met": width_met and ratio_met and adaptive_met,
        },
    }


def _r(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(float(value), 2)
