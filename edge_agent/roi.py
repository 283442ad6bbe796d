"""Region-of-interest mode for detectors (issue 16 part 1). Pure geometry, no I/O.

With ROI mode the detector runs on the motion region rather than the whole frame: the
motion gate's changed-pixel box (:attr:`edge_agent.gate.Measurement.region`, frame
fractions) is widened by a margin, grown to the model input's aspect ratio (so the resize
to the input size does not distort it) and to a minimum size (a few changed pixels should
not become a 20x zoom), and kept inside the frame by shifting, not shrinking. The crop is
resized to the input size like a whole frame would be; the detector's boxes then come back
in the crop's coordinates and :func:`boxes_to_source` maps them to the source frame::

    source_x = roi.x0 + box_x * roi.width  / input_w     (boxes in input pixels)
    source_x = roi.x0 + box_x * roi.width                (normalized boxes, 0..1)

(and likewise for y). Without motion (or for the first frame) the ROI is the whole frame,
which makes the mapping the plain input-to-frame scaling.

In the agent (``[gate] roi = true``) the head stage crops with :class:`~edge_agent.stages.hooks.MotionRoi`
and the postprocessor maps the boxes with :func:`protos.detection.to_source_pixels` on the crop's
size plus the crop's offset (:func:`shift_to_source`), which also undoes a centre-crop resize.
ROI mode is for detector bundles whose boxes have declared units (:func:`roi_unsupported`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from protos import bundle_pb2

__all__ = ["BOX_UNITS", "Roi", "boxes_to_source", "crop", "roi_for", "roi_unsupported", "shift_to_source"]

BOX_UNITS = ("pixels", "normalized")  # detector boxes in model-input pixels, or as 0..1 fractions


@dataclass(frozen=True)
class Roi:
    """A rectangle of the source frame in integer pixels, ``x1``/``y1`` exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @classmethod
    def full(cls, frame_w: int, frame_h: int) -> "Roi":
        return cls(0, 0, frame_w, frame_h)

    def to_json(self) -> list[int]:
        """``[x0, y0, x1, y1]`` in source pixels, as results record it."""
        return [self.x0, self.y0, self.x1, self.y1]


def roi_for(region: Optional[tuple[float, float, float, float]], frame_w: int, frame_h: int, *, input_w: int,
            input_h: int, margin: float = 0.1, min_fraction: float = 0.25) -> Roi:
    """The crop for a motion ``region`` (frame fractions x0, y0, x1, y1; None = whole frame).

    ``margin`` widens the region by that fraction of its size on every side; ``min_fraction``
    is the smallest crop side as a fraction of the frame's matching side.
    """
    if frame_w <= 0 or frame_h <= 0 or input_w <= 0 or input_h <= 0:
        raise ValueError(f"frame {frame_w}x{frame_h} and input {input_w}x{input_h}: expected positive sizes")
    if not 0.0 <= margin <= 1.0 or not 0.0 < min_fraction <= 1.0:
        raise ValueError(f"margin {margin!r} and min_fraction {min_fraction!r}: expected 0..1 and (0, 1]")
    if region is None:
        return Roi.full(frame_w, frame_h)
    x0, y0, x1, y1 = region
    if not (0.0 <= x0 <= x1 <= 1.0 and 0.0 <= y0 <= y1 <= 1.0):
        raise ValueError(f"motion region {region!r}: expected fractions 0 <= x0 <= x1 <= 1, 0 <= y0 <= y1 <= 1")
    cx, cy = (x0 + x1) / 2 * frame_w, (y0 + y1) / 2 * frame_h
    w = max((x1 - x0) * frame_w * (1 + 2 * margin), min_fraction * frame_w, 1.0)
    h = max((y1 - y0) * frame_h * (1 + 2 * margin), min_fraction * frame_h, 1.0)
    aspect = input_w / input_h
    if w / h < aspect:  # grow the narrow side to the input's aspect ratio
        w = h * aspect
    else:
        h = w / aspect
    if w > frame_w:  # too big for the frame: the largest box of that aspect that fits
        w, h = frame_w, frame_w / aspect
    if h > frame_h:
        w, h = frame_h * aspect, frame_h
    w_px, h_px = max(1, round(w)), max(1, round(h))
    left = int(round(min(max(cx - w_px / 2, 0), frame_w - w_px)))
    top = int(round(min(max(cy - h_px / 2, 0), frame_h - h_px)))
    return Roi(left, top, left + w_px, top + h_px)


def crop(frame_bgr: np.ndarray, roi: Roi) -> np.ndarray:
    """The ROI's pixels (a view, no copy)."""
    h, w = frame_bgr.shape[:2]
    if not (0 <= roi.x0 < roi.x1 <= w and 0 <= roi.y0 < roi.y1 <= h):
        raise ValueError(f"ROI {roi} does not fit a {w}x{h} frame")
    return frame_bgr[roi.y0:roi.y1, roi.x0:roi.x1]


def boxes_to_source(boxes_xyxy: np.ndarray, roi: Roi, *, units: str, input_w: int, input_h: int) -> np.ndarray:
    """Detector boxes ``[N, 4]`` (x0, y0, x1, y1) on the ROI crop -> source-frame pixels."""
    if units not in BOX_UNITS:
        raise ValueError(f"box units {units!r}: expected one of {list(BOX_UNITS)}")
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    sx = roi.width / (input_w if units == "pixels" else 1.0)
    sy = roi.height / (input_h if units == "pixels" else 1.0)
    scale = np.array([sx, sy, sx, sy])
    offset = np.array([roi.x0, roi.y0, roi.x0, roi.y0], dtype=np.float64)
    return boxes * scale + offset


def shift_to_source(boxes_px: np.ndarray, roi: Roi) -> np.ndarray:
    """Boxes ``[N, 4]`` in pixels of the ROI crop -> pixels of the source frame (adds the crop's offset)."""
    boxes = np.asarray(boxes_px, dtype=np.float64).reshape(-1, 4)
    return boxes + np.array([roi.x0, roi.y0, roi.x0, roi.y0], dtype=np.float64)


def roi_unsupported(output: bundle_pb2.OutputSpec) -> Optional[str]:
    """Why ROI mode cannot apply to a bundle with this output spec, or None when it can.

    It needs decoded detections (``boxes_scores_labels``) with declared box units: a classifier
    has no boxes to map back, and boxes of unknown units could not be placed in the frame.
    """
    kind = output.WhichOneof("postprocess") or "raw"
    if kind != "detection" or output.detection.decoding != "boxes_scores_labels":
        return f"the bundle's output is {kind!r}, not decoded detections (boxes_scores_labels)"
    if not output.detection.box_units:
        return "the bundle's detection output does not declare its box units (normalized or input_px)"
    return None
