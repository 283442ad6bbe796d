"""Running frames through models and measuring fidelity against the full model."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from partitioner import evaluation, fidelity


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


def _toy_frames() -> list[dict[str, np.ndarray]]:
    """24 frames the toy model is unsure about (top probability ~0.37), 8 it is sure of (~0.99)."""
    unsure = [{"x": np.array([[1.0, 1.1, 1.2]], np.float32) + 0.01 * k} for k in range(24)]
    sure = [{"x": np.array([[0.0, 5.0, 5.0]], np.float32) + 0.01 * k} for k in range(8)]
    return unsure + sure


def _reversed(feeds: list[dict[str, np.ndarray]], frames: list[int]) -> list[dict[str, np.ndarray]]:
    """The feeds with the chosen frames' values reversed: exactly those frames change their top-1."""
    return [{"x": f["x"][:, ::-1].copy()} if k in frames else f for k, f in enumerate(feeds)]


def test_judge_gates_relative_to_a_known_baseline() -> None:
    """On -relu(x), reversing a frame's values moves its argmax; so the baseline and each variant
    disagree with the reference on exactly the frames chosen."""
    model = _scores_model()
    feeds = _toy_frames()
    pipeline = evaluation.Pipeline(model, None)
    reference = evaluation.run_frames(pipeline, feeds)
    task = evaluation.infer_task(reference[0][:1])
    assert task == "classification"
    scorer = evaluation.Judge(task, fidelity.Gate(), 0.0, reference, feeds)
    baseline = scorer.score(pipeline, _reversed(feeds, [0, 1, 2, 3]))
    assert baseline.value == 28 / 32 and baseline.confident_frames == 8 and baseline.confident_agreement == 1.0

    five_unsure = _reversed(feeds, [0, 1, 2, 3, 4])  # 27/32 = 0.84375
    table = [
        (fidelity.Gate(margin=0.04), five_unsure, True),  # needs 0.835
        (fidelity.Gate(margin=0.02), five_unsure, False),  # needs 0.855
        (fidelity.Gate(margin=0.0), feeds, True),
        (fidelity.Gate(margin=0.2), _reversed(feeds, [30]), False),  # 31/32, but a confident frame flips
        (fidelity.Gate(mode="absolute", threshold=0.84), five_unsure, True),
        (fidelity.Gate(mode="absolute", threshold=0.99), five_unsure, False),
    ]
    for gate, variant, ships in table:
        judge = evaluation.Judge(task, gate, baseline.value, reference, feeds)
        record = judge(pipeline, feeds=variant, remedy="none")
        assert record.passed is ships, (gate, record)
        assert record.threshold == pytest.approx(gate.required(baseline.value))
    last = evaluation.Judge(task, fidelity.Gate(), baseline.value, reference, feeds)(pipeline, feeds=five_unsure)
    assert (last.value, last.frames, last.top1_agreement) == (pytest.approx(27 / 32), 32, pytest.approx(27 / 32))
    assert last.top5_containment == 1.0 and last.mean_kl > 0


def test_infer_task_from_outputs() -> None:
    assert evaluation.infer_task([np.zeros((1, 10), np.float32)]) == "classification"
    assert evaluation.infer_task([np.zeros((1, 10, 4), np.float32)]) == "other"
    assert evaluation.infer_task([np.zeros((1, 10), np.float32), np.zeros((1, 3), np.float32)]) == "other"


def test_measures_used_by_verification() -> None:
    assert fidelity.cosine(np.zeros(3), np.zeros(3)) == 1.0
    assert fidelity.cosine(np.zeros(3), np.ones(3)) == 0.0
    assert evaluation.is_classifier_like(np.zeros((2, 5, 1, 1), np.float32))
    assert not evaluation.is_classifier_like(np.zeros((2, 5, 2), np.float32))
    assert not evaluation.is_classifier_like(np.zeros((2, 5), np.int64))


@pytest.mark.parametrize("flags, machine, saturates", [
    ("fpu sse2 avx avx2 fma", "x86_64", True),            # AVX2 only: vpmaddubsw pair sums saturate
    ("fpu sse2 avx avx2 avx512f avx512_vnni", "x86_64", False),
    ("fpu sse2 avx avx2 avx_vnni", "x86_64", False),
    ("fp asimd asimddp", "aarch64", False),               # ARM kernels accumulate in 32 bits
    ("", "aarch64", False),
])
def test_host_int8_saturation_is_read_from_cpu_flags(flags: str, machine: str, saturates: bool) -> None:
    cpuinfo = f"processor\t: 0\nflags\t\t: {flags}\n" if machine == "x86_64" else f"Features\t: {flags}\n"
    assert evaluation.host_int8_saturates(cpuinfo, machine) is saturates


def test_int8_arithmetic_setting_resolves_and_rejects_unknown_values() -> None:
    assert evaluation.resolve_int8_arithmetic("exact") == "exact"
    assert evaluation.resolve_int8_arithmetic("fused") == "fused"
    assert evaluation.resolve_int8_arithmetic("auto") in ("exact", "fused")
    with pytest.raises(ValueError, match="'approx' is not one of auto, exact, fused"):
        evaluation.resolve_int8_arithmetic("approx")


def test_exact_int8_sessions_compute_the_quantized_graph_itself() -> None:
    """Activations at 255 times weights at 127: pair sums of 64,770 overflow 16 bits, so a
    saturating fused kernel would be off; the exact session matches numpy's arithmetic."""
    from onnx import TensorProto, helper, numpy_helper

    k, n = 16, 4
    w = np.full((k, n), 127, dtype=np.int8)
    w[:, 1] = -127
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"]),
        helper.make_node("MatMul", ["xd", "wd"], ["y0"]),
        helper.make_node("QuantizeLinear", ["y0", "ys", "yz"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(1.0, np.float32), "xs"), numpy_helper.from_array(np.array(0, np.uint8), "xz"),
        numpy_helper.from_array(w, "wq"), numpy_helper.from_array(np.array(1.0, np.float32), "ws"),
        numpy_helper.from_array(np.array(4096.0, np.float32), "ys"), numpy_helper.from_array(np.array(128, np.uint8), "yz"),
    ]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = np.full((1, k), 255.0, dtype=np.float32)
    exact = evaluation.make_session(model, exact_int8=True).run(None, {"x": x})[0]
    real = x.astype(np.float64) @ w.astype(np.float64)
    expected = (np.clip(np.rint(real / 4096.0) + 128, 0, 255) - 128) * 4096.0
    np.testing.assert_array_equal(exact, expected.astype(np.float32))
    fused = evaluation.make_session(model).run(None, {"x": x})[0]
    assert fused.shape == exact.shape  # what the fused kernels give depends on this host's CPU
