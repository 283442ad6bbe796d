"""Task-aware fidelity of a pipeline against the FP32 full model, and the gate that decides
whether an optimized variant ships (pure numpy: nothing here runs a model).

Measures, by task (all relative to the FP32 full model's outputs on the same frames):

* ``classification`` — :func:`classification_fidelity`: top-1 agreement overall and
  bucketed by the FP32 model's confidence (its top softmax probability), agreement on the
  frames where FP32 is confident, the candidate's top-1 within FP32's top-5, and the mean
  KL(FP32 ‖ candidate) of the softmax distributions.
* ``detection`` — :func:`detection_fidelity`: the candidate's detections matched to
  FP32's per class at IoU >= 0.5 (greedy, highest score first) give precision, recall,
  F1, the mean IoU of matched boxes and the mean absolute score error; the FP32
  detections scoring at least ``confident_at`` must all be found.
* ``other`` (regression, keypoints, embeddings) — :func:`output_fidelity`: per output the
  mean and minimum cosine of the flattened outputs and the normalised error
  ``‖a - b‖ / ‖a‖``.

:func:`score_outputs` reduces any task to one :class:`Score` (the gate's metric, named
by :data:`METRICS`). :class:`Gate` compares a score with the cloud-only baseline (the
frame sent as a JPEG at the bundle's quality, decoded, preprocessed, run through the FP32
model) or with an absolute threshold; see :meth:`Gate.judge`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from protos import bundle_pb2

TASKS = ("classification", "detection", "other")
#: The gate's metric per task (higher is better, 1.0 = identical to FP32).
METRICS = {"classification": "top1_agreement", "detection": "detection_f1", "other": "min_output_cosine"}
GATE_MODES = ("baseline", "absolute")
CONFIDENCE_BUCKETS = (0.0, 0.25, 0.5, 0.75, 1.0)

#: Per frame, the outputs of a model or pipeline in graph output order.
Outputs = Sequence[Sequence[np.ndarray]]


# --------------------------------------------------------------------------- classification


def _probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows of ``scores`` as probabilities: kept when they already are (>= 0, sum 1), else softmax."""
    x = np.asarray(scores, np.float64)
    if np.all(x >= 0) and np.allclose(x.sum(axis=-1), 1.0, atol=1e-3):
        return x
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class ConfidenceBucket:
    """Frames whose FP32 confidence lies in [low, high) (the last bucket includes 1.0)."""

    low: float
    high: float
    frames: int
    top1_agreement: float


@dataclass(frozen=True)
class ClassificationFidelity:
    frames: int
    top1_agreement: float
    top5_containment: float
    mean_kl: float
    confident_frames: int
    confident_agreement: float  # 1.0 when no frame is confident
    buckets: tuple[ConfidenceBucket, ...]


def _class_rows(outputs: Sequence[np.ndarray]) -> np.ndarray:
    rows = [np.asarray(o, np.float64).reshape(-1) for o in outputs]
    sizes = {r.size for r in rows}
    if len(sizes) != 1 or sizes == {1}:
        raise ValueError(f"classification needs one score vector of C > 1 classes per frame; got sizes {sorted(sizes)}")
    return np.stack(rows)


def classification_fidelity(
    reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], *, confident_at: float = 0.5,
    buckets: Sequence[float] = CONFIDENCE_BUCKETS,
) -> ClassificationFidelity:
    """Per-frame class scores (logits or probabilities, ``[1, C]`` or ``[C]``) against FP32's."""
    if len(reference) != len(candidate) or not reference:
        raise ValueError(f"compare {len(candidate)} frames against {len(reference)} reference frames")
    p, q = _probabilities(_class_rows(reference)), _probabilities(_class_rows(candidate))
    if p.shape != q.shape:
        raise ValueError(f"candidate scores {q.shape} differ in shape from the reference {p.shape}")
    ref_top, got_top = p.argmax(axis=1), q.argmax(axis=1)
    agree = ref_top == got_top
    k = min(5, p.shape[1])
    top5 = np.argsort(-p, axis=1)[:, :k]
    contained = np.array([got_top[i] in top5[i] for i in range(len(p))])
    eps = 1e-12
    kl = np.sum(p * (np.log(p + eps) - np.log(q + eps)), axis=1)
    confidence = p.max(axis=1)
    confident = confidence >= confident_at
    table = []
    for j, (low, high) in enumerate(zip(buckets[:-1], buckets[1:])):
        last = j == len(buckets) - 2
        inside = (confidence >= low) & ((confidence <= high) if last else (confidence < high))
        n = int(inside.sum())
        table.append(ConfidenceBucket(float(low), float(high), n, float(agree[inside].mean()) if n else 1.0))
    return ClassificationFidelity(
        frames=len(p), top1_agreement=float(agree.mean()), top5_containment=float(contained.mean()),
        mean_kl=float(max(0.0, kl.mean())), confident_frames=int(confident.sum()),
        confident_agreement=float(agree[confident].mean()) if confident.any() else 1.0, buckets=tuple(table),
    )


# --------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class Detections:
    """One frame's detections: ``boxes`` [N, 4] as x1, y1, x2, y2; ``scores`` [N]; ``labels`` [N]."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.scores)
        if np.shape(self.boxes) not in ((n, 4),) and not (n == 0 and np.size(self.boxes) == 0):
            raise ValueError(f"boxes have shape {np.shape(self.boxes)}; expected ({n}, 4) for {n} scores")
        if len(self.labels) != n:
            raise ValueError(f"{len(self.labels)} labels for {n} scores; expected one label per detection")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of xyxy boxes (0 where a box has no area)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def match_detections(reference: Detections, candidate: Detections, *, iou_at: float = 0.5) -> list[tuple[int, int, float]]:
    """(reference index, candidate index, IoU) pairs: per class, candidates by falling score
    each take the unmatched reference box of the same class with the highest IoU >= ``iou_at``."""
    pairs: list[tuple[int, int, float]] = []
    ious = box_iou(candidate.boxes, reference.boxes)
    taken: set[int] = set()
    for c in np.argsort(-np.asarray(candidate.scores, np.float64), kind="stable"):
        same = [r for r in range(len(reference.scores)) if reference.labels[r] == candidate.labels[c] and r not in taken]
        if not same:
            continue
        best = max(same, key=lambda r: ious[c, r])
        if ious[c, best] >= iou_at:
            taken.add(best)
            pairs.append((int(best), int(c), float(ious[c, best])))
    return pairs


@dataclass(frozen=True)
class DetectionFidelity:
    frames: int
    precision: float
    recall: float
    f1: float
    mean_iou: float  # over matched boxes; 1.0 when nothing matched
    mean_score_error: float
    confident_detections: int
    confident_recall: float  # FP32 detections scoring >= confident_at that were found


def detection_fidelity(
    reference: Sequence[Detections], candidate: Sequence[Detections], *, iou_at: float = 0.5, confident_at: float = 0.5
) -> DetectionFidelity:
    """Candidate detections against FP32's, frame by frame (no detections on either side counts as perfect)."""
    if len(reference) != len(candidate) or not reference:
        raise ValueError(f"compare {len(candidate)} frames against {len(reference)} reference frames")
    matched = n_ref = n_got = confident = confident_found = 0
    ious: list[float] = []
    score_errors: list[float] = []
    for ref, got in zip(reference, candidate):
        pairs = match_detections(ref, got, iou_at=iou_at)
        matched += len(pairs)
        n_ref += len(ref.scores)
        n_got += len(got.scores)
        found = {r for r, _, _ in pairs}
        strong = [r for r in range(len(ref.scores)) if ref.scores[r] >= confident_at]
        confident += len(strong)
        confident_found += sum(r in found for r in strong)
        ious += [iou for _, _, iou in pairs]
        score_errors += [abs(float(ref.scores[r]) - float(got.scores[c])) for r, c, _ in pairs]
    precision = matched / n_got if n_got else 1.0
    recall = matched / n_ref if n_ref else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return DetectionFidelity(
        frames=len(reference), precision=precision, recall=recall, f1=f1,
        mean_iou=float(np.mean(ious)) if ious else 1.0,
        mean_score_error=float(np.mean(score_errors)) if score_errors else 0.0,
        confident_detections=confident, confident_recall=confident_found / confident if confident else 1.0,
    )


def detections_from_outputs(outputs: Sequence[np.ndarray], *, score_at: float = 0.05) -> Detections:
    """One frame's detections from a detector's outputs (batch of one), those scoring >= ``score_at``.

    Understood shapes: boxes ``[N, 4]`` plus scores ``[N]`` and labels ``[N]`` (the
    manifest's ``boxes_scores_labels``), or boxes plus class scores ``[N, C]`` (label =
    argmax). Anything else raises, naming the shapes: use ``--task other`` for it.
    """
    arrays = [np.asarray(o) for o in outputs]
    if any(a.ndim == 3 and a.shape[0] == 1 and a.shape[2] == 4 for a in arrays):  # batched: [1, N, 4], [1, N], ...
        arrays = [a[0] if a.ndim >= 2 and a.shape[0] == 1 else a for a in arrays]
    boxes = next((a for a in arrays if a.ndim == 2 and a.shape[1] == 4), None)
    if boxes is None:
        raise ValueError(f"detector outputs {[a.shape for a in arrays]} hold no [N, 4] boxes; use --task other")
    n = boxes.shape[0]
    rest = [a for a in arrays if a is not boxes and a.shape[:1] == (n,)]
    vectors = [a for a in rest if a.ndim == 1]
    matrices = [a for a in rest if a.ndim == 2 and a.shape[1] > 1]
    if len(vectors) >= 2:
        floats = [v for v in vectors if np.issubdtype(v.dtype, np.floating)]
        scores = floats[0] if floats else vectors[0]
        labels = next(v for v in vectors if v is not scores)
    elif matrices:
        scores, labels = matrices[0].max(axis=1), matrices[0].argmax(axis=1)
    else:
        raise ValueError(f"detector outputs {[a.shape for a in arrays]}: expected scores and labels [{n}] "
                         f"or class scores [{n}, C] next to the boxes; use --task other")
    keep = np.asarray(scores, np.float64) >= score_at
    return Detections(boxes[keep].astype(np.float64), np.asarray(scores, np.float64)[keep],
                      np.asarray(labels)[keep].astype(np.int64))


# --------------------------------------------------------------------------- other outputs


@dataclass(frozen=True)
class OutputFidelity:
    """One output over all frames: cosine of the flattened values, and ‖a - b‖ / ‖a‖."""

    index: int
    mean_cosine: float
    min_cosine: float
    normalised_error: float


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two flattened arrays; 1.0 when both are zero, 0.0 when one is."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def output_fidelity(reference: Outputs, candidate: Outputs) -> tuple[OutputFidelity, ...]:
    """Per output (graph order), over frames: mean and min cosine, mean normalised error."""
    if len(reference) != len(candidate) or not reference:
        raise ValueError(f"compare {len(candidate)} frames against {len(reference)} reference frames")
    results = []
    for k in range(len(reference[0])):
        cos, err = [], []
        for ref_outs, got_outs in zip(reference, candidate):
            a = np.asarray(ref_outs[k], np.float64).ravel()
            b = np.asarray(got_outs[k], np.float64).ravel()
            if a.shape != b.shape:
                raise ValueError(f"output {k} has {b.size} values, the reference {a.size}")
            cos.append(cosine(a, b))
            norm = float(np.linalg.norm(a))
            err.append(float(np.linalg.norm(a - b)) / norm if norm else float(np.linalg.norm(b) > 0))
        results.append(OutputFidelity(k, float(np.mean(cos)), float(np.min(cos)), float(np.mean(err))))
    return tuple(results)


# --------------------------------------------------------------------------- one score per task


@dataclass(frozen=True)
class Score:
    """A pipeline's fidelity reduced to what the gate needs, plus the figures recorded."""

    task: str
    metric: str
    value: float
    frames: int
    confident_frames: int
    confident_agreement: float
    top1_agreement: float = 0.0
    top5_containment: float = 0.0
    mean_kl: float = 0.0
    cosine: float = 0.0


def score_outputs(task: str, reference: Outputs, candidate: Outputs, *, confident_at: float = 0.5) -> Score:
    """``candidate``'s fidelity to ``reference`` on the same frames, by ``task`` (see the module docstring).

    Classification reads the first output that holds C > 1 scores per frame.
    """
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {', '.join(TASKS)}")
    outs = output_fidelity(reference, candidate)
    cosine = float(np.mean([o.mean_cosine for o in outs]))
    if task == "classification":
        k = next((i for i, o in enumerate(reference[0]) if np.asarray(o).size > 1), None)
        if k is None:
            raise ValueError(f"no output holds class scores (shapes {[np.shape(o) for o in reference[0]]}); "
                             "use --task other")
        c = classification_fidelity([r[k] for r in reference], [g[k] for g in candidate], confident_at=confident_at)
        return Score(task, METRICS[task], c.top1_agreement, c.frames, c.confident_frames, c.confident_agreement,
                     c.top1_agreement, c.top5_containment, c.mean_kl, cosine)
    if task == "detection":
        d = detection_fidelity([detections_from_outputs(r) for r in reference],
                               [detections_from_outputs(g) for g in candidate], confident_at=confident_at)
        return Score(task, METRICS[task], d.f1, d.frames, d.confident_detections, d.confident_recall, cosine=cosine)
    value = min(o.min_cosine for o in outs)
    return Score(task, METRICS[task], value, len(reference), 0, 1.0, cosine=cosine)


# --------------------------------------------------------------------------- the gate


@dataclass(frozen=True)
class Gate:
    """When an optimized variant ships.

    ``mode="baseline"``: its metric is at least the cloud-only JPEG baseline's minus
    ``margin``; ``mode="absolute"``: at least ``threshold``. Either way it must agree with
    FP32 wherever FP32 is confident (probability, or detection score, >= ``confident_at``).
    """

    mode: str = "baseline"
    margin: float = 0.02
    threshold: float = 0.99
    confident_at: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in GATE_MODES:
            raise ValueError(f"gate mode {self.mode!r} is not one of {', '.join(GATE_MODES)}")
        for name in ("margin", "confident_at"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"gate {name}={getattr(self, name)!r} is invalid; expected a fraction in [0, 1]")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"gate threshold={self.threshold!r} is invalid; expected a fraction in (0, 1]")

    def required(self, baseline: float) -> float:
        """The least metric value that ships."""
        return baseline - self.margin if self.mode == "baseline" else self.threshold

    def judge(self, score: Score, baseline: float) -> tuple[bool, str]:
        """(ships, reason quoting the figures)."""
        need = self.required(baseline)
        what = f"baseline {baseline:.4f} - margin {self.margin:g}" if self.mode == "baseline" else "threshold"
        if score.value < need:
            return False, f"{score.metric} {score.value:.4f} < {need:.4f} ({what})"
        if score.confident_agreement < 1.0:
            return False, (f"disagrees with FP32 on {score.confident_agreement:.4f} of the {score.confident_frames} "
                           f"confident (>= {self.confident_at:g}) cases")
        return True, f"{score.metric} {score.value:.4f} >= {need:.4f} ({what})"


def to_proto(score: Score, *, passed: bool, remedy: str = "none", threshold: float = 0.0) -> bundle_pb2.Fidelity:
    """The manifest's record of one pipeline's fidelity."""
    return bundle_pb2.Fidelity(
        frames=score.frames, top1_agreement=score.top1_agreement, cosine=score.cosine, remedy=remedy,
        threshold=threshold, value=score.value, passed=passed, confident_frames=score.confident_frames,
        confident_agreement=score.confident_agreement, top5_containment=score.top5_containment, mean_kl=score.mean_kl,
    )
