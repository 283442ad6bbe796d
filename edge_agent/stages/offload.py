"""The offload stage: one request for the frame's tail over the Transport.

A response finishes the frame (path ``split``, or ``cloud`` for the "input" cut); any
:class:`~edge_agent.errors.OffloadUnavailable` or an open circuit completes it on the
device instead (:func:`~edge_agent.stages.local.complete_on_device`). Both outcomes are
reported to :class:`~edge_agent.feedback.Feedback`.
"""
from __future__ import annotations

import itertools
import time
from typing import Callable, Optional, Sequence

from edge_agent.errors import OffloadUnavailable
from edge_agent.feedback import Feedback
from edge_agent.head import HeadRunner
from edge_agent.stages.job import FrameJob
from edge_agent.stages.local import complete_on_device
from edge_agent.types import OffloadRequest, OffloadResponse, Path, Transport, WireTensor
from protos.bundle import BUNDLE_HASH_PARAMETER, Bundle, bundle_hash, tail_model_name, tail_model_version
from protos.names import INPUT_CUT


#: failures of a probe that say the server is not there (not busy, not slow)
SERVER_GONE_CODES = frozenset({"UNAVAILABLE", "STREAM_CLOSED"})


class Offloader:
    def __init__(
        self,
        bundle: Bundle,
        runner: HeadRunner,
        feedback: Feedback,
        *,
        agent_id: str,
        deadline_ms: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.manifest = bundle.manifest
        self.model_version = tail_model_version(bundle.manifest)
        self.bundle_hash = bundle_hash(bundle.manifest)
        self.runner = runner
        self.feedback = feedback
        self.agent_id = agent_id
        self.timeout_s = deadline_ms / 1000.0
        self._clock = clock
        self._seq = itertools.count()

    def request_for(self, cut_id: str, tensors: Sequence[WireTensor], frame_id: int) -> OffloadRequest:
        return OffloadRequest(
            model_name=tail_model_name(self.manifest, cut_id),
            model_version=self.model_version,
            request_id=f"{self.agent_id}-{frame_id}-{next(self._seq)}",
            inputs=tuple(tensors),
            output_names=tuple(self.runner.output_names),
            # the bundle hash lets the transport check the server's ModelConfig names the same bundle
            parameters={"splitinfer_cut": cut_id, "edge_sent_unix_us": int(time.time() * 1_000_000),
                        BUNDLE_HASH_PARAMETER: self.bundle_hash},
        )

    def send(self, request: OffloadRequest, transport: Transport, *, probe: bool = False) -> OffloadResponse:
        """One request within the deadline, reported to the feedback (a failure re-raised).

        ``probe``: a bandwidth probe while fully local. If it finds the server gone (``UNAVAILABLE``,
        ``STREAM_CLOSED``) the failure is reported as one retrying cannot fix, which opens the circuit
        at once: no offloads follow a probe to count up to the threshold, and with the circuit open
        the breaker's cheap health probes (not the next bandwidth probe, ~10 s or more away) watch
        for the server's return."""
        start = self._clock()
        try:
            response = transport.infer(request, self.timeout_s)
        except OffloadUnavailable as exc:
            reported = exc
            if probe and exc.code in SERVER_GONE_CODES and exc.retryable:
                reported = OffloadUnavailable(f"bandwidth probe: {exc}", code=exc.code, retryable=False)
            self.feedback.offload_failed(reported, (request.model_name, request.model_version),
                                         sent_bytes=request.wire_bytes, waited_ms=(self._clock() - start) * 1000.0)
            raise
        if response.round_trip_ms is None:
            response = OffloadResponse(response.request_id, response.outputs, response.server_queue_ms,
                                       response.server_compute_ms, (self._clock() - start) * 1000.0)
        cut_id = str(request.parameters.get("splitinfer_cut", ""))
        self.feedback.offload_succeeded(cut_id, request.wire_bytes, float(response.round_trip_ms or 0.0),
                                        response.server_queue_ms, response.server_compute_ms)
        return response

    def run(self, job: FrameJob, transport: Optional[Transport]) -> None:
        """Offload ``job`` (its head is encoded) or complete it on the device."""
        head = job.head
        assert head is not None
        if transport is None or not self.feedback.offload_allowed():
            job.fallback_reason = "cloud unavailable (circuit open)"
            complete_on_device(job, self.runner)
            return
        request = self.request_for(head.cut_id, head.tensors, job.frame.frame_id)
        job.wire_bytes = request.wire_bytes
        try:
            response = self.send(request, transport)
        except OffloadUnavailable as exc:
            job.fallback_reason = f"{exc.code}: {exc}"
            complete_on_device(job, self.runner)
            return
        job.round_trip_ms = float(response.round_trip_ms or 0.0)
        job.server_ms = (response.server_queue_ms or 0.0) + (response.server_compute_ms or 0.0)
        job.local_outputs = dict(response.outputs)
        job.path = Path.CLOUD if head.cut_id == INPUT_CUT else Path.SPLIT
        job.tail_where = "cloud"
