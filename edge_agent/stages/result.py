"""The postprocess and result stages: the payload, the :class:`FrameResult`, every sink."""
from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

from edge_agent.postprocess import Postprocessor
from edge_agent.results import FrameResult, ResultSink
from edge_agent.stages.job import FrameJob
from edge_agent.types import Path

log = logging.getLogger(__name__)


def postprocess_job(postprocessor: Postprocessor, job: FrameJob) -> dict:
    """The frame's payload; a frame without outputs or a malformed response yields an ``error``."""
    if job.local_outputs is None:
        return {"error": job.fallback_reason}
    try:
        return postprocessor(job.local_outputs)
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
    if job.path is Path.LOCAL or (job.path is Path.FALLBACK and tail_where == "skipped"):
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


class ResultStage:
    """Postprocess a finished job and write its result to every sink, in order.

    A sink that raises is logged and the others still get the result.
    """

    def __init__(self, postprocessor: Postprocessor, sinks: Sequence[ResultSink],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.postprocessor = postprocessor
        self.sinks = list(sinks)
        self._clock = clock

    def emit(self, job: FrameJob) -> FrameResult:
        start = self._clock()
        payload = postprocess_job(self.postprocessor, job)
        end = self._clock()
        result = assemble_result(job, payload, (end - start) * 1000.0, end)
        for sink in self.sinks:
            try:
                sink.write(result)
            except Exception:  # noqa: BLE001 - one broken sink must not starve the others
                log.exception("result sink %s failed on frame %d", type(sink).__name__, job.frame.frame_id)
        return result

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
