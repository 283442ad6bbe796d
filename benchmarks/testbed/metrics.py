"""Per-run metrics from the edge agent's JSON-lines results.

Pure: parses lines (schema ``splitinfer.edge.result/1``, see :mod:`edge_agent.results`)
and aggregates them; no files, no clocks. The bench passes the frames it fed,
the wall time, the link counters and the times the link or server came back.

Energy per frame uses the documented Pi power model (:mod:`edge_agent.power`):
compute on the device = preprocess + head + local tail + postprocess (measured
under the testbed's CPU throttle, i.e. at "Pi speed"), transmit time = wire bytes
over the uplink rate in force when the frame was captured, waiting = the rest of
the wire and server time.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Optional, Sequence

OFFLOAD_PATHS = frozenset({"split", "cloud"})


@dataclass(frozen=True)
class FrameRecord:
    frame_id: int
    capture_unix_ms: float
    cut: str
    path: str
    total_ms: float
    compute_ms: float  # on the device: preprocess + head + local tail + postprocess
    wire_ms: float
    server_ms: float
    wire_bytes: int
    fallback_reason: Optional[str] = None

    @property
    def done_unix_ms(self) -> float:
        return self.capture_unix_ms + self.total_ms

    @property
    def offloaded(self) -> bool:
        return self.path in OFFLOAD_PATHS


def parse_result(doc: dict) -> FrameRecord:
    """One result line's JSON object; KeyError/ValueError on a malformed line."""
    lat = doc.get("latency_ms") or {}
    compute = sum(float(lat.get(k, 0.0) or 0.0) for k in ("preprocess", "head", "tail_local", "postprocess"))
    return FrameRecord(
        frame_id=int(doc["frame_id"]),
        capture_unix_ms=float(doc["capture_unix_ms"]),
        cut=str(doc.get("cut", "")),
        path=str(doc.get("path", "")),
        total_ms=float(lat["total"]),
        compute_ms=compute,
        wire_ms=float(lat.get("wire", 0.0) or 0.0),
        server_ms=float(lat.get("server", 0.0) or 0.0),
        wire_bytes=int(doc.get("wire_bytes", 0) or 0),
        fallback_reason=doc.get("fallback_reason"),
    )


def parse_result_lines(lines: Iterable[str]) -> tuple[list[FrameRecord], int]:
    """Records from JSON lines, and how many non-empty lines were not results (logs, junk)."""
    records: list[FrameRecord] = []
    skipped = 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            doc = json.loads(line)
            if not isinstance(doc, dict) or "frame_id" not in doc:
                raise ValueError("not a result")
            records.append(parse_result(doc))
        except (ValueError, KeyError, TypeError):
            skipped += 1
    return records, skipped


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (numpy's default); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def time_to_offload_s(records: Sequence[FrameRecord], back_unix_ms: float) -> Optional[float]:
    """Seconds from ``back_unix_ms`` (link or server returned) to the first offloaded result
    completed after it; None when no frame was offloaded afterwards."""
    done = [r.done_unix_ms for r in records if r.offloaded and r.done_unix_ms >= back_unix_ms]
    if not done:
        return None
    return (min(done) - back_unix_ms) / 1000.0


# energy_fn(record) -> mJ; the bench builds it from the power model and the link schedule
EnergyFn = Callable[[FrameRecord], float]


@dataclass
class RunSummary:
    scenario: str
    strategy: str
    frames_expected: int
    results: int
    frames_without_result: int
    duplicate_results: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    frames_per_s: float
    payload_bytes_per_frame: float
    link_bytes: Optional[int]
    energy_mj_per_frame: float
    paths: dict[str, int] = field(default_factory=dict)
    cuts: dict[str, int] = field(default_factory=dict)
    offload_return_s: list[Optional[float]] = field(default_factory=list)
    # per return event: whether any frame was offloaded before it (else "never came back" is moot)
    offloaded_before_return: list[bool] = field(default_factory=list)
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out


def summarize_run(
    records: Sequence[FrameRecord],
    *,
    scenario: str,
    strategy: str,
    frames_expected: int,
    wall_s: float,
    energy_fn: Optional[EnergyFn] = None,
    link_bytes: Optional[int] = None,
    returns_unix_ms: Sequence[float] = (),
    warmup_frames: int = 0,
) -> RunSummary:
    """Aggregate one strategy's run. ``frames_expected`` are the frame ids 0..N-1 fed to the agent.

    Latency, frames/s, bytes and energy leave out the first ``warmup_frames`` frame ids
    (cold sessions and connections); result counts and the return times use every frame.
    """
    by_id = Counter(r.frame_id for r in records)
    expected_ids = set(range(frames_expected))
    missing = len(expected_ids - set(by_id))
    dups = sum(n - 1 for n in by_id.values() if n > 1)
    steady = [r for r in records if r.frame_id >= warmup_frames] or list(records)
    latencies = [r.total_ms for r in steady]
    if steady:
        span_s = (max(r.done_unix_ms for r in steady) - min(r.capture_unix_ms for r in steady)) / 1000.0
    else:
        span_s = 0.0
    fps = len(steady) / span_s if span_s > 0 else math.nan
    energy = [energy_fn(r) for r in steady] if energy_fn else []
    return RunSummary(
        scenario=scenario,
        strategy=strategy,
        frames_expected=frames_expected,
        results=len(records),
        frames_without_result=missing,
        duplicate_results=dups,
        mean_ms=sum(latencies) / len(latencies) if latencies else math.nan,
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
        frames_per_s=fps,
        payload_bytes_per_frame=sum(r.wire_bytes for r in steady) / len(steady) if steady else math.nan,
        link_bytes=link_bytes,
        energy_mj_per_frame=sum(energy) / len(energy) if energy else math.nan,
        paths=dict(Counter(r.path for r in records)),
        cuts=dict(Counter(r.cut for r in records)),
        offload_return_s=[time_to_offload_s(records, t) for t in returns_unix_ms],
        offloaded_before_return=[any(r.offloaded and r.capture_unix_ms < t for r in records) for t in returns_unix_ms],
        wall_s=wall_s,
    )


def best_static(summaries: Sequence[RunSummary], *, key: str = "mean_ms") -> Optional[RunSummary]:
    """The static strategy (not 'adaptive') with the lowest ``key``."""
    statics = [s for s in summaries if s.strategy != "adaptive" and s.results and math.isfinite(getattr(s, key))]
    return min(statics, key=lambda s: getattr(s, key)) if statics else None
