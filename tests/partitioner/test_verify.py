"""Verification of head/tail pairs against the full model with ONNX Runtime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from partitioner.cuts import enumerate_cuts
from partitioner.errors import VerificationFailed
from partitioner.split import split_model
from partitioner.evaluation import run_model
from partitioner.verify import Tolerances, verify_split


@pytest.fixture(scope="module")
def features_13(prepared_mobilenet_v2):
    cut = {c.id: c for c in enumerate_cuts(prepared_mobilenet_v2)}["features_13"]
    return split_model(prepared_mobilenet_v2, cut)


def _tampered(model: onnx.ModelProto, name: str, scale: float) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name == name:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(scale), name))
            return out
    raise AssertionError(f"{name} not found")


def test_a_correct_split_passes_with_real_images(prepared_mobilenet_v2, features_13, imagenet_frames) -> None:
    head, tail = features_13
    result = verify_split(prepared_mobilenet_v2, head, tail, imagenet_frames)
    assert result.passed and result.frames == 3
    assert result.top1_agreement == 1.0 and result.cosine > 0.99999 and result.max_abs_error < 1e-3
    assert result.reference == "full fp32 model"


def test_a_wrong_tail_fails_with_the_reason(prepared_mobilenet_v2, features_13, imagenet_frames) -> None:
    head, tail = features_13
    broken = _tampered(tail, "classifier.1.weight", -1.0)  # flips every logit
    reference = run_model(prepared_mobilenet_v2, imagenet_frames)
    result = verify_split(prepared_mobilenet_v2, head, broken, imagenet_frames, reference=reference)
    assert not result.passed and result.top1_agreement == 0.0 and result.cosine < 0
    with pytest.raises(VerificationFailed, match=r"max abs error .* > .*top-1 agreement|output 'output' max abs error"):
        verify_split(prepared_mobilenet_v2, head, broken, imagenet_frames, reference=reference, raise_on_failure=True)


def test_small_drift_is_caught_by_the_error_tolerance(prepared_mobilenet_v2, features_13, imagenet_frames) -> None:
    head, tail = features_13
    slightly = _tampered(tail, "classifier.1.weight", 1.01)  # top-1 unchanged, logits 1% off
    result = verify_split(prepared_mobilenet_v2, head, slightly, imagenet_frames)
    assert result.top1_agreement == 1.0 and not result.passed
    loose = Tolerances(atol=1.0, rtol=0.05, min_cosine=0.999)
    assert verify_split(prepared_mobilenet_v2, head, slightly, imagenet_frames, tolerances=loose).passed


def test_ends_compare_the_model_with_itself(prepared_mobilenet_v2, imagenet_frames) -> None:
    assert verify_split(prepared_mobilenet_v2, None, prepared_mobilenet_v2, imagenet_frames[:1]).passed
    assert verify_split(prepared_mobilenet_v2, prepared_mobilenet_v2, None, imagenet_frames[:1]).passed


def test_ties_in_the_reference_count_as_agreement() -> None:
    from partitioner.evaluation import top1_agrees

    want = np.array([[0.5, 0.5, 0.1]], dtype=np.float32)
    assert top1_agrees(np.array([[0.5, 0.5000001, 0.1]]), want, 1e-5)
    assert not top1_agrees(np.array([[0.5, 0.4, 0.6]]), want, 1e-5)


def test_bad_arguments(prepared_mobilenet_v2, features_13, imagenet_frames) -> None:
    head, tail = features_13
    with pytest.raises(ValueError, match="at least one frame"):
        verify_split(prepared_mobilenet_v2, head, tail, [])
    with pytest.raises(ValueError, match="both None"):
        verify_split(prepared_mobilenet_v2, None, None, imagenet_frames)
    with pytest.raises(ValueError, match="reference holds 1 results for 3 frames"):
        verify_split(prepared_mobilenet_v2, head, tail, imagenet_frames, reference=[{}])
