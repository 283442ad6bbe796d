"""The complete-locally stage: finish a frame on the device when it cannot (or need not) be offloaded."""
from __future__ import annotations

import logging

from edge_agent.head import HeadRunner, complete_locally
from edge_agent.stages.job import FrameJob
from edge_agent.types import Path

log = logging.getLogger(__name__)


def complete_on_device(job: FrameJob, runner: HeadRunner, *, guard: bool = False) -> None:
    """Finish ``job`` locally (its cut's tail if loaded, else the full model) with path
    ``fallback``; ``fallback_reason`` says why and what ran. With ``guard`` a failure here
    too leaves no outputs (the result carries an ``error``) instead of raising."""
    if guard:
        try:
            complete_on_device(job, runner)
        except Exception as exc:  # noqa: BLE001 - the one result of this frame says what failed
            log.exception("frame %d could not complete on the device either", job.frame.frame_id)
            job.local_outputs, job.path = None, Path.FALLBACK
            job.fallback_reason = f"{job.fallback_reason}; local completion failed: {exc}"
        return
    image = job.model_image  # the ROI crop the head ran on, if any: the boxes are mapped from it
    if job.head is not None:
        outputs, ms, what = complete_locally(runner, job.head, image)
    else:
        outputs, ms = runner.run_full(image)
        what = "full"
    job.local_outputs, job.local_ms = outputs, ms
    job.path = Path.FALLBACK
    job.tail_where = "edge" if what == "tail" else "skipped"
    job.fallback_reason = f"{job.fallback_reason}; completed with the local {'tail' if what == 'tail' else 'full model'}"
