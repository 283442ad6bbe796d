"""Issue 12 part 2: a graph with control flow at each end (a Loop mapping preprocessing over
the batch in front, a Loop and an If refining the outputs behind, as the TensorFlow Object
Detection API's graphs have) partitions: every enumerated cut keeps each body wholly in
the head or wholly in the tail, and every head/tail pair reproduces the model."""
from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from partitioner.cuts import enumerate_cuts
from partitioner.graph import prepare_model
from partitioner.subgraphs import node_inputs
from partitioner.pipeline import PartitionConfig, run_partition
from partitioner.split import split_model

SIZE = 16
CONTROL_FLOW = ("Loop", "If")


def loop_at_each_end_model() -> onnx.ModelProto:
    rng = np.random.default_rng(3)

    def init(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    scalar = helper.make_tensor_value_info
    # Front: for i in range(batch): out[i] = image[i] * two - one  (image, two, one read from the outer scope)
    front_body = helper.make_graph(
        [helper.make_node("Gather", ["image", "i"], ["frame"], axis=0),
         helper.make_node("Mul", ["frame", "two"], ["scaled"]),
         helper.make_node("Sub", ["scaled", "one"], ["frame_out"]),
         helper.make_node("Identity", ["c_in"], ["c_out"])],
        "preprocess_body",
        [scalar("i", TensorProto.INT64, []), scalar("c_in", TensorProto.BOOL, [])],
        [scalar("c_out", TensorProto.BOOL, []), scalar("frame_out", TensorProto.FLOAT, [3, SIZE, SIZE])],
    )
    # Behind: v = feat; 3 times: v = v * half + feat  (feat, half read from the outer scope)
    back_body = helper.make_graph(
        [helper.make_node("Mul", ["v_in", "half"], ["v_half"]),
         helper.make_node("Add", ["v_half", "feat"], ["v_out"]),
         helper.make_node("Identity", ["c_in"], ["c_out"])],
        "refine_body",
        [scalar("j", TensorProto.INT64, []), scalar("c_in", TensorProto.BOOL, []),
         scalar("v_in", TensorProto.FLOAT, None)],
        [scalar("c_out", TensorProto.BOOL, []), scalar("v_out", TensorProto.FLOAT, None)],
    )
    then = helper.make_graph([helper.make_node("Relu", ["feat"], ["branch"])], "then",
                             [], [scalar("branch", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Neg", ["feat"], ["branch"])], "else",
                              [], [scalar("branch", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("Shape", ["image"], ["image_shape"], name="preprocess/shape"),
        helper.make_node("Gather", ["image_shape", "zero_i"], ["batch_size"], name="preprocess/batch", axis=0),
        helper.make_node("Loop", ["batch_size", "true", ], ["normalized"], name="preprocess/map", body=front_body),
        helper.make_node("Conv", ["normalized", "w1", "b1"], ["stem"], name="stem_conv", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["stem"], ["stem_relu"], name="stem_relu"),
        helper.make_node("Conv", ["stem_relu", "w2", "b2"], ["body"], name="body_conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["body"], ["body_relu"], name="body_relu"),
        helper.make_node("Add", ["body_relu", "stem_relu"], ["merged"], name="skip_add"),
        helper.make_node("GlobalAveragePool", ["merged"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wfc", "bfc"], ["feat"], name="fc", transB=1),
        helper.make_node("Loop", ["three", "true", "feat"], ["refined"], name="postprocess/refine", body=back_body),
        helper.make_node("ReduceSum", ["feat"], ["total"], name="postprocess/total", keepdims=0),
        helper.make_node("Greater", ["total", "zero_f"], ["positive"], name="postprocess/positive"),
        helper.make_node("If", ["positive"], ["gated"], name="postprocess/gate", then_branch=then, else_branch=other),
    ]
    graph = helper.make_graph(
        nodes, "loops_at_both_ends",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("refined", TensorProto.FLOAT, ["batch", 5]),
         helper.make_tensor_value_info("gated", TensorProto.FLOAT, ["batch", 5])],
        [init("w1", 8, 3, 3, 3), init("b1", 8, scale=0.1), init("w2", 8, 8, 3, 3, scale=0.2), init("b2", 8, scale=0.1),
         init("wfc", 5, 8, scale=1.0), init("bfc", 5, scale=0.1),
         numpy_helper.from_array(np.array(2.0, np.float32), "two"), numpy_helper.from_array(np.array(1.0, np.float32), "one"),
         numpy_helper.from_array(np.array(0.5, np.float32), "half"),
         numpy_helper.from_array(np.array(0.0, np.float32), "zero_f"),
         numpy_helper.from_array(np.array(0, np.int64), "zero_i"), numpy_helper.from_array(np.array(3, np.int64), "three"),
         numpy_helper.from_array(np.array(True), "true")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _body_names(model: onnx.ModelProto) -> set[str]:
    names: set[str] = set()
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                names |= {out for inner in attr.g.node for out in inner.output}
    return names


@pytest.fixture(scope="module")
def prepared() -> onnx.ModelProto:
    return prepare_model(loop_at_each_end_model())


def test_every_cut_keeps_bodies_whole_and_reproduces_the_model(prepared: onnx.ModelProto) -> None:
    cuts = enumerate_cuts(prepared, max_tensors=3)
    inner = [c for c in cuts if not c.is_end]
    assert len(inner) >= 5, [c.tensors for c in cuts]
    # The cut right after the front Loop and the one right before the back Loop and If are among them.
    assert ("normalized",) in {c.tensors for c in inner} and ("feat",) in {c.tensors for c in inner}
    body_values = _body_names(prepared)
    image = np.random.default_rng(11).random((2, 3, SIZE, SIZE), dtype=np.float32) - 0.5
    expected = _run(prepared, {"image": image})
    control_flow = [n.name for n in prepared.graph.node if n.op_type in CONTROL_FLOW]
    assert len(control_flow) == 3
    for cut in cuts:
        assert not set(cut.tensors) & body_values, cut.tensors
        head, tail = split_model(prepared, cut)
        sides = [{n.name for n in part.graph.node if n.op_type in CONTROL_FLOW} for part in (head, tail) if part]
        for name in control_flow:  # each body lies wholly in one side
            assert sum(name in side for side in sides) == 1, (cut.id, name)
        if head is None:
            got = _run(tail, {"image": image})
        else:
            activations = dict(zip([o.name for o in head.graph.output], _run(head, {"image": image})))
            got = _run(tail, {name: activations[name] for name in cut.tensors}) if tail is not None else list(
                activations[o.name] for o in prepared.graph.output)
        for value, reference in zip(got, expected):
            np.testing.assert_allclose(value, reference, rtol=1e-5, atol=1e-5, err_msg=cut.id)


def test_a_tail_loop_reading_an_outer_value_makes_it_cross_the_cut(prepared: onnx.ModelProto) -> None:
    """The back Loop reads feat from the outer scope: a cut after feat that does not send feat is no cut."""
    loop = next(n for n in prepared.graph.node if n.name == "postprocess/refine")
    assert "feat" in node_inputs(loop) and "half" in node_inputs(loop)
    cut_sets = {c.tensors for c in enumerate_cuts(prepared, max_tensors=3)}
    assert not any("total" in tensors and "feat" not in tensors for tensors in cut_sets)


def test_partition_ships_a_model_with_loops_at_both_ends(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "loops.onnx"
    onnx.save(loop_at_each_end_model(), str(path))
    config = PartitionConfig(model=str(path), out_dir=tmp_path / "bundle", calibration_frames=8, fidelity_frames=16,
                             verify_frames=4, profile_runs=2, profile_warmup=1, resize_shorter_px=0, max_cuts=4,
                             task="other")
    report = run_partition(config)
    manifest = report.bundle.manifest
    assert len(manifest.cuts) >= 3 and all(cut.verification.passed for cut in manifest.cuts)
    assert not report.rejected, report.rejected
