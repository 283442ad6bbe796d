"""The state of one frame on its way through the stages."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from edge_agent.head import HeadOutput
from edge_agent.roi import Roi, crop
from edge_agent.sources import Frame
from edge_agent.types import Decision, Path


@dataclass
class FrameJob:
    """One frame and what happened to it; each stage fills its own fields.

    ``decision`` is read once when the frame enters the head stage and its cut never
    changes for this frame (a fallback to the full model rewrites it to "output").
    """

    frame: Frame
    decision: Decision
    head_start_s: float  # monotonic seconds when the head stage took the frame
    head: Optional[HeadOutput] = None
    local_outputs: Optional[Mapping[str, np.ndarray]] = None  # final outputs, wherever they ran
    local_ms: float = 0.0
    path: Path = Path.LOCAL
    fallback_reason: Optional[str] = None
    round_trip_ms: float = 0.0
    server_ms: float = 0.0
    wire_bytes: int = 0
    tail_where: str = "skipped"
    roi: Optional[Roi] = None  # ROI mode: the part of the frame the model ran on (None: the whole frame)

    @property
    def model_image(self) -> np.ndarray:
        """What the model runs on: the frame, or its ROI crop (a view)."""
        image = self.frame.image_bgr
        return image if self.roi is None else crop(image, self.roi)

    @property
    def finished(self) -> bool:
        """True once the outputs are known (no offload needed)."""
        return self.local_outputs is not None
