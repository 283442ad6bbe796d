"""The postprocess and result stages: the payload, the :class:`FrameResult`, every sink.

A frame the gate skipped arrives as a :class:`GatedFrame` naming the last admitted frame;
its result repeats that frame's payload. When that frame's result is not out yet (its
offload is still in flight) the gated frame waits for it, so every frame gets exactly
one result and a gated result never carries an older frame's payload than it names.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence, Union

from edge_agent.postprocess import Postprocessor
from edge_agent.results import FrameResult, ResultSink
from edge_agent.sources import Frame
from edge_agent.stages.job import FrameJob
from edge_agent.types import Path

log = logging.getLogger(__name__)


def postprocess_job(postprocessor: Postprocessor, job: FrameJob) -> dict:
    """The frame's payload; a frame without outputs or a malformed response yields an ``error``."""
    if job.local_outputs is None:
        return {"error": job.fallback_reason}
    try:
        crop = {} if job.roi is None else {"roi": job.roi}  # ROI mode: the boxes are on that crop
        return postprocessor(job.local_outputs, frame_hw=job.frame.image_bgr.shape[:2], **crop)
    except Exception as exc:  # noqa: BLE001 - a malformed response still yields one result line
        return {"error": f"postprocess failed: {exc}"}


def assemble_result(job: FrameJob, payload: dict, postprocess_ms: float, end_s: float) -> FrameResult:
    """Where each part ran and how long each took (pure: times are arguments)."""
    head = job.head
    cut = job.decision.cut_id if head is None else head.cut_id
    preprocess_where = head_where = "edge"
    if job.path is Path.CLOUD:
        preprocess_where = head_where = "cloud"
    tail_where = job.tail_where
    if job.path in (Path.LOCAL, Path.EXITED) or (job.path is Path.FALLBACK and tail_where == "skipped"):
        tail_where = "skipped"
    latency = {
        "queue": max(0.0, (job.head_start_s - job.frame.capture_mono_s) * 1000.0),
        "preprocess": head.preprocess_ms if head else 0.0,
        "head": head.head_ms if head else 0.0,
        "wire": max(0.0, job.round_trip_ms - job.server_ms),
        "server": job.server_ms,
        "tail_local": job.local_ms,
        "postprocess": postprocess_ms,
        "total": (end_s - job.frame.capture_mono_s) * 1000.0,
    }
    return FrameResult(
        frame_id=job.frame.frame_id,
        capture_unix_ms=job.frame.capture_unix_ms,
        source=job.frame.source,
        cut=cut,
        path=job.path,
        stages={"preprocess": preprocess_where, "head": head_where, "tail": tail_where},
        latency_ms=latency,
        payload=payload,
        wire_bytes=job.wire_bytes,
        fallback_reason=job.fallback_reason,
    )


SKIPPED_STAGES = {"preprocess": "skipped", "head": "skipped", "tail": "skipped"}
_KEEP_COMPUTED = 64  # computed results kept for gated frames (far above max_in_flight)


@dataclass(frozen=True)
class GatedFrame:
    """A frame the gate skipped; ``source_frame_id`` is the last frame admitted before it."""

    frame: Frame
    source_frame_id: int


def assemble_gated_result(gated: GatedFrame, source: FrameResult, end_s: float) -> FrameResult:
    """The result of a gated frame: the source's cut and payload, no stage ran (pure)."""
    frame = gated.frame
    total_ms = (end_s - frame.capture_mono_s) * 1000.0
    return FrameResult(
        frame_id=frame.frame_id, capture_unix_ms=frame.capture_unix_ms, source=frame.source, cut=source.cut,
        path=Path.GATED, stages=dict(SKIPPED_STAGES), latency_ms={"total": total_ms}, payload=dict(source.payload),
        source_frame_id=source.frame_id)


class ResultStage:
    """Postprocess a finished job and write its result to every sink, in order.

    A sink that raises is logged and the others still get the result.
    """

    def __init__(self, postprocessor: Postprocessor, sinks: Sequence[ResultSink],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.postprocessor = postprocessor
        self.sinks = list(sinks)
        self._clock = clock

        self._computed: OrderedDict[int, FrameResult] = OrderedDict()
        self._waiting: dict[int, list[GatedFrame]] = {}

    def emit(self, job: FrameJob) -> FrameResult:
        """The result of a computed frame (written to every sink)."""
        start = self._clock()
        payload = postprocess_job(self.postprocessor, job)
        end = self._clock()
        result = assemble_result(job, payload, (end - start) * 1000.0, end)
        self._write(result)
        self._computed[result.frame_id] = result
        while len(self._computed) > _KEEP_COMPUTED:
            self._computed.popitem(last=False)
        return result

    def emit_all(self, item: Union[FrameJob, GatedFrame]) -> list[FrameResult]:
        """Every result ``item`` completes: none (a gated frame waiting for its source), one,
        or a computed frame's plus those of the gated frames that waited for it."""
        if isinstance(item, GatedFrame):
            source = self._computed.get(item.source_frame_id)
            if source is None:
                self._waiting.setdefault(item.source_frame_id, []).append(item)
                return []
            return [self._emit_gated(item, source)]
        result = self.emit(item)
        return [result, *(self._emit_gated(g, result) for g in self._waiting.pop(result.frame_id, []))]

    def _emit_gated(self, gated: GatedFrame, source: FrameResult) -> FrameResult:
        result = assemble_gated_result(gated, source, self._clock())
        self._write(result)
        return result

    def _write(self, result: FrameResult) -> None:
        for sink in self.sinks:
            try:
                sink.write(result)
            except Exception:  # noqa: BLE001 - one broken sink must not starve the others
                log.exception("result sink %s failed on frame %d", type(sink).__name__, result.frame_id)

    def close(self) -> None:
        """Close every sink; a gated frame still waiting (its source never finished) gets an error result."""
        for source_id, waiting in sorted(self._waiting.items()):
            for gated in waiting:
                orphan = FrameResult(frame_id=source_id, capture_unix_ms=0, source=gated.frame.source, cut="",
                                     path=Path.GATED, stages={}, latency_ms={},
                                     payload={"error": f"gated after frame {source_id}, which has no result"})
                self._write(assemble_gated_result(gated, orphan, self._clock()))
        self._waiting.clear()
        for sink in self.sinks:
            sink.close()
