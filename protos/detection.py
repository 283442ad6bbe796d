"""Detection output specs and box geometry, shared by the partitioner and the edge (pure numpy).

A detector whose graph already decodes its boxes (splitinfer's built-in SSD-MobileNetV2
does decoding + NMS as ONNX operators, so tails return detections, not anchors) carries
its postprocessing settings in the ONNX model's ``metadata_props`` under
:data:`METADATA_KEY`; :func:`fill_spec` turns them into the manifest's ``Detection`` and
:func:`check_spec` validates one read from a bundle. :func:`to_source_pixels` maps boxes
from the network input back to the camera frame, undoing exactly the resize (and centre
crop) :func:`protos.preprocess.preprocess_bgr` applied.
"""
from __future__ import annotations

import json
from typing import Mapping, Sequence

import numpy as np

from protos import bundle_pb2

#: ``metadata_props`` key of a detector's settings (a JSON object, see :func:`fill_spec`).
METADATA_KEY = "splitinfer.detection"
BOX_UNITS = ("normalized", "input_px")
_KNOWN = {"graph_postprocess", "candidate_score_threshold", "score_threshold", "iou_threshold", "max_detections",
          "class_filter", "box_units", "output_tensors"}


def settings_json(**settings: object) -> str:
    """The metadata value a detector model carries (checked like :func:`fill_spec` does)."""
    text = json.dumps(settings, sort_keys=True)
    fill_spec(bundle_pb2.Detection(), json.loads(text))
    return text


def fill_spec(det: bundle_pb2.Detection, settings: Mapping[str, object]) -> bundle_pb2.Detection:
    """``det`` filled from a detector's metadata settings; ValueError names a bad key or value."""
    unknown = sorted(set(settings) - _KNOWN)
    if unknown:
        raise ValueError(f"detection settings {unknown} are unknown; expected some of {sorted(_KNOWN)}")
    det.decoding = "boxes_scores_labels"
    det.graph_postprocess = str(settings.get("graph_postprocess", ""))
    det.candidate_score_threshold = float(settings.get("candidate_score_threshold", 0.0))  # type: ignore[arg-type]
    det.score_threshold = float(settings.get("score_threshold", 0.5))  # type: ignore[arg-type]
    det.iou_threshold = float(settings.get("iou_threshold", 0.5))  # type: ignore[arg-type]
    det.max_detections = int(settings.get("max_detections", 100))  # type: ignore[call-overload]
    det.box_units = str(settings.get("box_units", "normalized"))
    del det.class_filter[:]
    det.class_filter.extend(str(c) for c in settings.get("class_filter", ()))  # type: ignore[attr-defined]
    if "output_tensors" in settings:
        del det.output_tensors[:]
        det.output_tensors.extend(str(n) for n in settings["output_tensors"])  # type: ignore[attr-defined]
    check_spec(det)
    return det


def check_spec(det: bundle_pb2.Detection, labels: Sequence[str] = ()) -> None:
    """ValueError naming the field and value when a ``boxes_scores_labels`` spec cannot be applied."""
    if det.decoding != "boxes_scores_labels":
        return
    for name in ("score_threshold", "iou_threshold", "candidate_score_threshold"):
        value = getattr(det, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"detection {name}={value!r} is invalid; expected a fraction in [0, 1]")
    if det.box_units not in ("", *BOX_UNITS):
        raise ValueError(f"detection box_units={det.box_units!r} is invalid; expected one of {', '.join(BOX_UNITS)}")
    if det.output_tensors and len(det.output_tensors) != 3:
        raise ValueError(f"detection output_tensors {list(det.output_tensors)} must name boxes, scores and labels")
    if labels:
        missing = sorted(set(det.class_filter) - set(labels))
        if missing:
            raise ValueError(f"detection class_filter {missing} are not labels of this model")


def to_source_pixels(boxes: np.ndarray, spec: bundle_pb2.InputSpec, frame_hw: tuple[int, int], *,
                     units: str = "normalized") -> np.ndarray:
    """Boxes [N, 4] (x1, y1, x2, y2) on the network input -> pixels of the ``frame_hw`` camera frame,
    clipped to it. Undoes ``preprocess_bgr``: a straight resize, or resize-shorter then centre crop."""
    if units not in BOX_UNITS:
        raise ValueError(f"box units {units!r} are unknown; expected one of {', '.join(BOX_UNITS)}")
    h, w = int(frame_hw[0]), int(frame_hw[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"frame size {frame_hw} is invalid; expected (height, width) > 0")
    in_w, in_h = int(spec.width_px), int(spec.height_px)
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    px = b * np.array([in_w, in_h, in_w, in_h]) if units == "normalized" else b.copy()
    if spec.resize_shorter_px:
        scale = spec.resize_shorter_px / min(h, w)
        new_w, new_h = max(in_w, round(w * scale)), max(in_h, round(h * scale))
        left, top = (new_w - in_w) // 2, (new_h - in_h) // 2
        px = (px + np.array([left, top, left, top])) * np.array([w / new_w, h / new_h, w / new_w, h / new_h])
    else:
        px = px * np.array([w / in_w, h / in_h, w / in_w, h / in_h])
    return np.clip(px, 0, np.array([w, h, w, h], np.float64))
