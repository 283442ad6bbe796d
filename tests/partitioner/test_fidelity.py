"""Task-aware fidelity on hand-made outputs with known answers, and the gate's decisions."""
from __future__ import annotations

import math

import numpy as np
import pytest

from partitioner import fidelity
from partitioner.fidelity import Detections, Gate, Score


def _probs(*rows: list[float]) -> list[np.ndarray]:
    return [np.array([r], np.float32) for r in rows]


# --------------------------------------------------------------------------- classification

# FP32 probabilities on four frames: confident (0.9, 0.6) on two, unsure (0.4, 0.3) on two.
REF = _probs([0.9, 0.05, 0.03, 0.02], [0.6, 0.3, 0.05, 0.05], [0.4, 0.35, 0.15, 0.1], [0.3, 0.25, 0.25, 0.2])

CLASSIFICATION_TABLE = {
    "identical": (REF, dict(top1_agreement=1.0, top5_containment=1.0, confident_frames=2, confident_agreement=1.0)),
    "flips only an unsure frame": (
        _probs([0.9, 0.05, 0.03, 0.02], [0.6, 0.3, 0.05, 0.05], [0.3, 0.45, 0.15, 0.1], [0.3, 0.25, 0.25, 0.2]),
        dict(top1_agreement=0.75, top5_containment=1.0, confident_frames=2, confident_agreement=1.0)),
    "flips a confident frame": (
        _probs([0.9, 0.05, 0.03, 0.02], [0.3, 0.6, 0.05, 0.05], [0.4, 0.35, 0.15, 0.1], [0.3, 0.25, 0.25, 0.2]),
        dict(top1_agreement=0.75, top5_containment=1.0, confident_frames=2, confident_agreement=0.5)),
}


@pytest.mark.parametrize("case", CLASSIFICATION_TABLE)
def test_classification_table(case: str) -> None:
    candidate, want = CLASSIFICATION_TABLE[case]
    got = fidelity.classification_fidelity(REF, candidate, confident_at=0.5)
    for name, value in want.items():
        assert getattr(got, name) == pytest.approx(value), name
    if case == "identical":
        assert got.mean_kl == pytest.approx(0.0, abs=1e-9)
    else:
        assert got.mean_kl > 0.0


def test_classification_kl_and_buckets_by_hand() -> None:
    ref = _probs([0.8, 0.2], [0.1, 0.9])
    got = _probs([0.5, 0.5], [0.1, 0.9])
    result = fidelity.classification_fidelity(ref, got, confident_at=0.85, buckets=(0.0, 0.85, 1.0))
    kl_first = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    assert result.mean_kl == pytest.approx(kl_first / 2, rel=1e-6)
    # argmax of [0.5, 0.5] is class 0, so both frames agree; only the second is confident
    assert (result.top1_agreement, result.confident_frames, result.confident_agreement) == (1.0, 1, 1.0)
    assert [(b.low, b.high, b.frames) for b in result.buckets] == [(0.0, 0.85, 1), (0.85, 1.0, 1)]


def test_classification_reads_logits_through_softmax() -> None:
    logits = [np.array([[2.0, 0.0, -1.0]], np.float32)]
    result = fidelity.classification_fidelity(logits, logits, confident_at=0.8)
    softmax_top = math.exp(2) / (math.exp(2) + 1 + math.exp(-1))  # 0.84
    assert result.confident_frames == int(softmax_top >= 0.8) == 1
    top5 = fidelity.classification_fidelity(_probs([0.5, 0.2, 0.1, 0.08, 0.07, 0.05]),
                                            _probs([0.0, 0.0, 0.0, 0.0, 0.0, 1.0]))
    assert top5.top5_containment == 0.0  # class 5 is FP32's 6th


def test_classification_rejects_mismatched_frames() -> None:
    with pytest.raises(ValueError, match="compare 1 frames against 4"):
        fidelity.classification_fidelity(REF, REF[:1])
    with pytest.raises(ValueError, match="C > 1 classes"):
        fidelity.classification_fidelity([np.ones((1, 1))], [np.ones((1, 1))])


# --------------------------------------------------------------------------- detection


def _dets(boxes, scores, labels) -> Detections:
    return Detections(np.array(boxes, np.float64).reshape(-1, 4), np.array(scores, np.float64), np.array(labels))


def test_box_iou_known_values() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 10, 5], [20, 20, 30, 30]])
    np.testing.assert_allclose(fidelity.box_iou(a, b), [[1.0, 50 / 150, 0.5, 0.0]])


REF_DETS = _dets([[0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30]], [0.9, 0.4, 0.8], [1, 1, 2])

DETECTION_TABLE = {
    "identical": (REF_DETS, dict(precision=1.0, recall=1.0, f1=1.0, mean_iou=1.0, confident_recall=1.0)),
    # one box shifted to IoU 0.5 exactly (still a match), one to IoU 1/3 (a miss and a false positive)
    "shifted": (_dets([[0, 0, 10, 5], [20, 0, 30, 10], [5, 20, 15, 30]], [0.9, 0.4, 0.8], [1, 1, 2]),
                dict(precision=2 / 3, recall=2 / 3, f1=2 / 3, mean_iou=0.75, confident_recall=0.5)),
    # right box, wrong class: no match
    "wrong class": (_dets([[0, 0, 10, 10]], [0.9], [2]), dict(precision=0.0, recall=0.0, f1=0.0, confident_recall=0.0)),
    # misses only the weak (0.4) detection, scores off by 0.1
    "misses the weak one": (_dets([[0, 0, 10, 10], [0, 20, 10, 30]], [0.8, 0.7], [1, 2]),
                            dict(precision=1.0, recall=2 / 3, f1=0.8, mean_score_error=0.1, confident_recall=1.0)),
}


@pytest.mark.parametrize("case", DETECTION_TABLE)
def test_detection_table(case: str) -> None:
    candidate, want = DETECTION_TABLE[case]
    got = fidelity.detection_fidelity([REF_DETS], [candidate], confident_at=0.5)
    assert got.confident_detections == 2
    for name, value in want.items():
        assert getattr(got, name) == pytest.approx(value), name


def test_detection_empty_frames_and_decoding() -> None:
    empty = _dets(np.zeros((0, 4)), [], [])
    assert fidelity.detection_fidelity([empty], [empty]).f1 == 1.0
    assert fidelity.detection_fidelity([REF_DETS], [empty]).recall == 0.0
    boxes = np.array([[[0, 0, 10, 10], [1, 1, 2, 2]]], np.float32)
    decoded = fidelity.detections_from_outputs([boxes, np.array([[0.9, 0.01]]), np.array([[3, 4]])], score_at=0.05)
    assert decoded.labels.tolist() == [3] and decoded.scores.tolist() == pytest.approx([0.9])
    by_class = fidelity.detections_from_outputs([boxes[0], np.array([[0.1, 0.7], [0.2, 0.3]])])
    assert by_class.labels.tolist() == [1, 1] and by_class.scores.tolist() == pytest.approx([0.7, 0.3])
    with pytest.raises(ValueError, match=r"no \[N, 4\] boxes; use --task other"):
        fidelity.detections_from_outputs([np.zeros((1, 7))])


# --------------------------------------------------------------------------- other outputs


def test_regression_cosine_and_normalised_error() -> None:
    ref = [[np.array([3.0, 4.0]), np.array([1.0, 0.0])], [[0.0, 5.0], np.array([0.0, 1.0])]]
    got = [[np.array([3.0, 4.0]), np.array([0.0, 1.0])], [[0.0, 4.0], np.array([0.0, 1.0])]]
    first, second = fidelity.output_fidelity(ref, got)
    assert (first.mean_cosine, first.min_cosine) == (pytest.approx(1.0), pytest.approx(1.0))
    assert first.normalised_error == pytest.approx((0.0 + 1 / 5) / 2)
    assert (second.mean_cosine, second.min_cosine) == (pytest.approx(0.5), pytest.approx(0.0))
    score = fidelity.score_outputs("other", ref, got)
    assert (score.metric, score.value, score.confident_agreement) == ("min_output_cosine", pytest.approx(0.0), 1.0)


def test_score_outputs_names_the_task_metric() -> None:
    ref = [[r] for r in REF]
    assert fidelity.score_outputs("classification", ref, ref).metric == "top1_agreement"
    with pytest.raises(ValueError, match="task 'segmentation' is not one of classification, detection, other"):
        fidelity.score_outputs("segmentation", ref, ref)


# --------------------------------------------------------------------------- the gate


def _score(value: float, confident_agreement: float = 1.0) -> Score:
    return Score("classification", "top1_agreement", value, 100, 10, confident_agreement, value)


GATE_TABLE = [
    # gate, score, baseline, ships, reason fragment
    (Gate(), _score(0.83), 0.836, True, ">= 0.8160"),
    (Gate(), _score(0.81), 0.836, False, "0.8100 < 0.8160 (baseline 0.8360 - margin 0.02)"),
    (Gate(margin=0.0), _score(0.836), 0.836, True, ">= 0.8360"),
    (Gate(), _score(0.95, confident_agreement=0.9), 0.836, False, "disagrees with FP32 on 0.9000 of the 10 confident"),
    (Gate(mode="absolute", threshold=0.99), _score(0.95), 0.5, False, "0.9500 < 0.9900 (threshold)"),
    (Gate(mode="absolute", threshold=0.9), _score(0.95), 0.99, True, ">= 0.9000 (threshold)"),
]


@pytest.mark.parametrize(("gate", "score", "baseline", "ships", "reason"), GATE_TABLE)
def test_gate_table(gate: Gate, score: Score, baseline: float, ships: bool, reason: str) -> None:
    got, why = gate.judge(score, baseline)
    assert got is ships
    assert reason in why


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(mode="vibes"), "gate mode 'vibes' is not one of baseline, absolute"),
    (dict(margin=1.5), "gate margin=1.5 is invalid"),
    (dict(confident_at=-0.1), "gate confident_at=-0.1 is invalid"),
    (dict(threshold=0.0), "gate threshold=0.0 is invalid"),
])
def test_gate_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Gate(**kwargs)


def test_to_proto_records_every_figure() -> None:
    proto = fidelity.to_proto(_score(0.9), passed=True, remedy="none")
    assert (proto.value, proto.passed, proto.confident_frames, proto.frames) == (pytest.approx(0.9), True, 10, 100)
