"""The preprocess + head stage: the frame's cut on the device, then the exit check and the encoder.

The cut comes from the frame's :class:`~edge_agent.types.Decision`. "output" runs the
full model (the frame is finished); any other cut runs its head, unless the cloud is
unreachable, in which case the full model runs at once (path ``fallback``). Head times
go to :meth:`Feedback.head_timed` (the slowdown factor). While the frame's cut is not
"input", every ``INPUT_SIZING_FRAMES``-th frame (the first included) is JPEG-encoded once
more only to size what "input" would send (:meth:`Feedback.input_sized`). With ``roi`` set (ROI mode,
:class:`~edge_agent.stages.hooks.MotionRoi`) the model runs on the frame's ROI crop and
``job.roi`` records it for the postprocessor.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional

from edge_agent.feedback import Feedback
from edge_agent.head import HeadRunner
from edge_agent.stages.encode import Encoder
from edge_agent.stages.hooks import ExitCheck, MotionRoi, NeverExit
from edge_agent.stages.job import FrameJob
from edge_agent.types import CutProfile, Mode, Path
from protos.names import INPUT_CUT, OUTPUT_CUT

INPUT_SIZING_FRAMES = 50  # one extra JPEG encode per this many frames: ~1 ms at 300x300 on a host core


class HeadStage:
    def __init__(
        self,
        runner: HeadRunner,
        encoder: Encoder,
        profiles: Mapping[str, CutProfile],
        feedback: Feedback,
        *,
        has_server: Callable[[], bool],
        exit_check: ExitCheck = NeverExit(),
    ) -> None:
        self.runner = runner
        self.encoder = encoder
        self.profiles = profiles
        self.feedback = feedback
        self.has_server = has_server
        self.exit_check = exit_check
        self.roi: Optional[MotionRoi] = None  # set by the daemon when [gate] roi = true
        self._frames_to_sizing = 0  # frames (not on "input") until the next sizing; 0: size this one

    def run(self, job: FrameJob) -> None:
        """Fill ``job.head`` (encoded, ready to send) or finish the frame (``job.local_outputs``)."""
        cut = job.decision.cut_id
        if self.roi is not None:
            job.roi = self.roi.roi_of(job.frame)
        image = job.model_image
        self._size_input(cut, image)
        if cut != OUTPUT_CUT and not (self.has_server() and self.feedback.offload_allowed()):
            job.local_outputs, job.local_ms = self.runner.run_full(image)
            job.path, job.fallback_reason = Path.FALLBACK, "cloud unavailable (circuit open)"
            job.decision = dataclasses.replace(job.decision, cut_id=OUTPUT_CUT)
            return
        head = self.runner.run_head(cut, image)
        job.head = head
        self.feedback.head_timed(cut, head.head_ms, self.profiles[cut].head_ms)
        if cut == OUTPUT_CUT:
            job.local_outputs = dict(head.local_outputs or {})
            # fully local by choice, or because the server is down (no server at all is a choice)
            fallback = job.decision.mode is Mode.LOCAL_FALLBACK and self.has_server()
            job.path = Path.FALLBACK if fallback else Path.LOCAL
            state = self.feedback.breaker.state.value
            job.fallback_reason = f"cloud unavailable (circuit {state})" if fallback else None
            return
        early = self.exit_check.check(head)
        if early is not None:
            job.local_outputs, job.path = dict(early), Path.EXITED
            return
        job.head = self.encoder.encode(head)

    def _size_input(self, cut: str, image) -> None:  # noqa: ANN001 - the frame (numpy BGR)
        if cut == INPUT_CUT:  # its offloads report what they sent
            return
        if self._frames_to_sizing > 0:
            self._frames_to_sizing -= 1
            return
        self._frames_to_sizing = INPUT_SIZING_FRAMES - 1
        wire_bytes = self.runner.input_wire_bytes(image)
        if wire_bytes:
            self.feedback.input_sized(wire_bytes)
