"""Turn a model's output tensors into what a result reports: top-k labels or detections.

Pure numpy; labels are read once by :func:`load_labels` (a JSON list or one label per
line). Classification applies softmax when the manifest says the output holds logits.
Detection supports the ``boxes_scores_labels`` decoding (N x 4 xyxy boxes, N scores,
N class ids) with a score threshold, greedy per-class NMS, the manifest's class filter and
max detections, and boxes mapped back to source-frame pixels (:mod:`protos.detection`);
``raw`` reports shapes only.
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, replace
from typing import Mapping, Optional, Sequence

import numpy as np

from edge_agent.roi import Roi, shift_to_source
from protos import bundle_pb2
from protos.detection import check_spec, to_source_pixels


def load_labels(path: pathlib.Path) -> list[str]:
    """Labels in index order from a JSON list or a text file with one label per line."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        data = json.loads(text)
        return [str(x) for x in data]
    if stripped.startswith("{"):  # {"0": "tench", ...}
        data = json.loads(text)
        return [str(data[k]) for k in sorted(data, key=lambda k: int(k))]
    return [line.strip() for line in text.splitlines() if line.strip()]


@dataclass(frozen=True)
class Classification:
    index: int
    label: str
    score: float

    def to_json(self) -> dict:
        return {"index": self.index, "label": self.label, "score": round(self.score, 6)}


@dataclass(frozen=True)
class Detection:
    box_xyxy: tuple[float, float, float, float]
    score: float
    index: int
    label: str

    def to_json(self) -> dict:
        return {
            "box_xyxy": [round(v, 2) for v in self.box_xyxy],
            "score": round(self.score, 6),
            "index": self.index,
            "label": self.label,
        }


def softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def top_k(scores_row: np.ndarray, k: int, labels: Sequence[str], *, apply_softmax: bool) -> list[Classification]:
    """Top ``k`` classes of one row of logits or probabilities, best first."""
    row = np.asarray(scores_row, dtype=np.float64).reshape(-1)
    probs = softmax(row) if apply_softmax else row
    k = min(k, row.size)
    idx = np.argpartition(-probs, k - 1)[:k]
    idx = idx[np.argsort(-probs[idx], kind="stable")]
    return [Classification(int(i), labels[i] if i < len(labels) else str(int(i)), float(probs[i])) for i in idx]


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def decode_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    labels: Sequence[str],
    *,
    score_threshold: float,
    iou_threshold: float,
) -> list[Detection]:
    """One image's boxes/scores/classes -> detections above the threshold after per-class NMS."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1).astype(np.int64)
    keep_mask = scores >= score_threshold
    boxes, scores, classes = boxes[keep_mask], scores[keep_mask], classes[keep_mask]
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    for i in order:
        if iou_threshold > 0:
            same = [j for j in kept if classes[j] == classes[i]]
            if same and (_iou(boxes[i], boxes[same]) > iou_threshold).any():
                continue
        kept.append(int(i))
    return [
        Detection(
            tuple(float(v) for v in boxes[i]),  # type: ignore[arg-type]
            float(scores[i]),
            int(classes[i]),
            labels[classes[i]] if 0 <= classes[i] < len(labels) else str(int(classes[i])),
        )
        for i in kept
    ]


class Postprocessor:
    """Built once from the manifest's OutputSpec; ``__call__`` maps outputs to a result payload.

    Detections: the declared score threshold, per-class NMS, class filter and max detections
    apply; with the bundle's ``input_spec`` and the frame's size, boxes the model reports
    normalised to its input come back in source-frame pixels (``"box_units": "source_px"``).
    """

    def __init__(self, spec: bundle_pb2.OutputSpec, labels: Sequence[str] = (), *, top_k_override: Optional[int] = None,
                 input_spec: Optional[bundle_pb2.InputSpec] = None) -> None:
        self.spec = spec
        self.labels = list(labels)
        self.kind = spec.WhichOneof("postprocess") or "raw"
        self.top_k = top_k_override or (spec.classification.top_k if self.kind == "classification" else 0)
        self.input_spec = input_spec
        if self.kind == "detection":
            check_spec(spec.detection, self.labels)

    def __call__(self, outputs: Mapping[str, np.ndarray], *, frame_hw: Optional[tuple[int, int]] = None,
                 roi: Optional[Roi] = None) -> dict:
        """``{"top_k": [...]}`` or ``{"detections": [...], "box_units": ...}``; KeyError names a missing output.

        ``roi``: the model ran on that crop of the frame (ROI mode); boxes are mapped from the
        crop and shifted by its offset, and the payload records it as ``"roi"``."""
        if self.kind == "classification":
            cls = self.spec.classification
            name = cls.output_tensor or self.spec.tensors[0].name
            if name not in outputs:
                raise KeyError(f"output {name!r} missing from the response; got {sorted(outputs)}")
            row = np.asarray(outputs[name])[0]
            return {"top_k": [c.to_json() for c in top_k(row, self.top_k, self.labels, apply_softmax=cls.softmax)]}
        if self.kind == "detection" and self.spec.detection.decoding == "boxes_scores_labels":
            det = self.spec.detection
            names = list(det.output_tensors) or [t.name for t in self.spec.tensors[:3]]
            missing = [n for n in names if n not in outputs]
            if missing:
                raise KeyError(f"outputs {missing} missing from the response; got {sorted(outputs)}")
            boxes, scores, classes = (np.asarray(outputs[n])[0] for n in names[:3])
            found = decode_detections(
                boxes, scores, classes, self.labels,
                score_threshold=det.score_threshold, iou_threshold=det.iou_threshold,
            )
            return self._detection_payload(found, det, frame_hw, roi)
        return {"outputs": {name: list(np.asarray(arr).shape) for name, arr in outputs.items()}}

    def _detection_payload(self, found: list[Detection], det: bundle_pb2.Detection,
                           frame_hw: Optional[tuple[int, int]], roi: Optional[Roi] = None) -> dict:
        if det.class_filter:
            wanted = set(det.class_filter)
            found = [d for d in found if d.label in wanted]
        if det.max_detections:
            found = found[: det.max_detections]
        if roi is not None:
            frame_hw = (roi.height, roi.width)  # the model saw the crop; its offset is added below
        mapped = bool(det.box_units) and frame_hw is not None and self.input_spec is not None
        if mapped and found:
            px = to_source_pixels(np.array([d.box_xyxy for d in found]), self.input_spec, frame_hw,  # type: ignore[arg-type]
                                  units=det.box_units)
            if roi is not None:
                px = shift_to_source(px, roi)
            found = [replace(d, box_xyxy=(float(box[0]), float(box[1]), float(box[2]), float(box[3])))
                     for d, box in zip(found, px)]
        units = "source_px" if mapped else (det.box_units or "model")  # "": an older bundle's boxes, as given
        payload: dict[str, object] = {"detections": [d.to_json() for d in found], "box_units": units}
        if roi is not None:
            payload["roi"] = roi.to_json()
        return payload
