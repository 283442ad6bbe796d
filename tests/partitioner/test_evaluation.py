"""Running frames through models and measuring fidelity against the full model."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from partitioner import evaluation


def _scores_model(batch_dim: int | str = "batch") -> onnx.ModelProto:
    """x [N, 3] -> Neg -> scores [N, 3], plus the intermediate 'mid' exposed as an output."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["mid"]), helper.make_node("Neg", ["mid"], ["scores"])],
        "scores",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch_dim, 3]),
         helper.make_tensor_value_info("mid", TensorProto.FLOAT, [batch_dim, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _feeds(n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [{"x": rng.standard_normal((1, 3)).astype(np.float32)} for _ in range(n)]


def test_compare_outputs_counts_top1_and_cosine() -> None:
    ref = [[np.array([[0.1, 0.9, 0.0]], np.float32)], [np.array([[0.8, 0.1, 0.1]], np.float32)]]
    same = evaluation.compare_outputs(ref, ref)
    assert same[0] == 1.0 and same[1] == pytest.approx(1.0) and same[2] == 0.0
    flipped = [[np.array([[0.9, 0.1, 0.0]], np.float32)], ref[1]]
    top1, cosine, max_abs = evaluation.compare_outputs(ref, flipped)
    assert top1 == 0.5 and cosine < 1.0 and max_abs == pytest.approx(0.8)
    with pytest.raises(ValueError):
        evaluation.compare_outputs(ref, ref[:1])


def test_run_frames_batches_or_falls_back_to_single_frames() -> None:
    feeds = _feeds(5)
    batched = evaluation.Pipeline(_scores_model(), None)
    got = evaluation.run_frames(batched, feeds, batch=2)
    assert batched.batchable is True
    single = evaluation.Pipeline(_scores_model(batch_dim=1), None)
    want = evaluation.run_frames(single, feeds, batch=2)
    assert single.batchable is False
    assert len(got) == len(want) == 5
    for g, w, feed in zip(got, want, feeds):
        np.testing.assert_allclose(g[0], w[0])
        np.testing.assert_allclose(g[0], -np.maximum(feed["x"], 0))


def test_collect_activations_names_missing_outputs() -> None:
    feeds = _feeds(3)
    acts = evaluation.collect_activations(_scores_model(), feeds, ["mid"])
    assert [a.shape for a in acts["mid"]] == [(1, 3)] * 3
    np.testing.assert_allclose(acts["mid"][1], np.maximum(feeds[1]["x"], 0))
    with pytest.raises(ValueError, match=r"no outputs \['nope'\]"):
        evaluation.collect_activations(_scores_model(), feeds, ["nope"])


def test_measure_fidelity_stops_once_the_threshold_is_out_of_reach() -> None:
    feeds = _feeds(32)
    model = _scores_model()
    reference = evaluation.run_frames(evaluation.Pipeline(model, None), feeds)
    same = evaluation.measure_fidelity(reference, evaluation.Pipeline(model, None), feeds, threshold=0.9)
    assert (same.frames, same.top1_agreement, same.threshold) == (32, 1.0, pytest.approx(0.9))
    assert same.cosine == pytest.approx(1.0)

    class Reversed(evaluation.Pipeline):
        def run(self, feed):
            return [o[..., ::-1].copy() for o in super().run(feed)]

    wrong = evaluation.measure_fidelity(reference, Reversed(model, None), feeds, stop_below=0.9, remedy="x")
    assert wrong.frames < 32 and wrong.top1_agreement < 0.9 and wrong.remedy == "x"


def test_measures_used_by_verification() -> None:
    assert evaluation.cosine(np.zeros(3), np.zeros(3)) == 1.0
    assert evaluation.cosine(np.zeros(3), np.ones(3)) == 0.0
    assert evaluation.is_classifier_like(np.zeros((2, 5, 1, 1), np.float32))
    assert not evaluation.is_classifier_like(np.zeros((2, 5, 2), np.float32))
    assert not evaluation.is_classifier_like(np.zeros((2, 5), np.int64))
