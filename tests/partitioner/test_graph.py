"""Model loading (files, external data, bad files) and graph preparation."""
from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from partitioner import graph
from partitioner.subgraphs import node_inputs
from partitioner.errors import ModelLoadError, UnsupportedModel
from partitioner.loading import load_model
from partitioner.evaluation import run_model


def _conv_bn_model(shuffle: bool = False) -> onnx.ModelProto:
    """x -> Conv -> BatchNorm -> Identity -> Relu -> Mul(Constant) -> y, batch fixed at 1."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "conv.w"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), "bn.scale"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "bn.bias"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "bn.mean"),
        numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "bn.var"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv.w"], ["block/conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["block/conv", "bn.scale", "bn.bias", "bn.mean", "bn.var"],
                         ["block/bn"], name="bn"),
        helper.make_node("Identity", ["block/bn"], ["block/identity"], name="identity"),
        helper.make_node("Relu", ["block/identity"], ["block/relu"], name="relu"),
        helper.make_node("Constant", [], ["two"], name="two",
                         value=numpy_helper.from_array(np.array(2.0, dtype=np.float32))),
        helper.make_node("Mul", ["block/relu", "two"], ["y"], name="mul"),
    ]
    if shuffle:
        nodes = nodes[::-1]
    g = helper.make_graph(nodes, "conv_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


# --------------------------------------------------------------------------- loading


def test_load_model_reads_external_data(tmp_path: pathlib.Path) -> None:
    model = _conv_bn_model()
    expected = numpy_helper.to_array(model.graph.initializer[0])
    path = tmp_path / "m.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="m.data", size_threshold=0)
    assert (tmp_path / "m.data").stat().st_size > 0
    loaded = load_model(path)
    w = {t.name: numpy_helper.to_array(t) for t in loaded.graph.initializer}
    np.testing.assert_array_equal(w["conv.w"], expected)


def test_missing_external_data_names_the_file_and_tensor(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save_model(_conv_bn_model(), path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelLoadError, match=r"m\.onnx.*external data file 'weights\.bin' for tensor '[a-z.]+' is missing"):
        load_model(path)


def test_truncated_external_data_is_reported(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save_model(_conv_bn_model(), path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    data = tmp_path / "weights.bin"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match=r"'weights\.bin' is 100 bytes but tensor"):
        load_model(path)


@pytest.mark.parametrize(
    "content, cause",
    [
        (b"", "not an ONNX model"),
        (b"\x00\x01 this is certainly not protobuf \xff\xfe" * 8, "not an ONNX model"),
        (b"GIF89a" + bytes(range(256)) * 4, "not an ONNX model"),
    ],
)
def test_corrupt_files_name_the_path(tmp_path: pathlib.Path, content: bytes, cause: str) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=f"broken.onnx.*{cause}"):
        load_model(path)


def test_truncated_model_file_is_rejected(tmp_path: pathlib.Path, mobilenet_v2_onnx_path: pathlib.Path) -> None:
    path = tmp_path / "half.onnx"
    data = mobilenet_v2_onnx_path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="half.onnx"):
        load_model(path)


def test_missing_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ModelLoadError, match="nope.onnx: no such model file"):
        load_model(tmp_path / "nope.onnx")


# --------------------------------------------------------------------------- preparation


def test_prepare_folds_batchnorm_removes_identity_and_constants() -> None:
    model = _conv_bn_model()
    prepared = graph.prepare_model(model)
    ops = [n.op_type for n in prepared.graph.node]
    assert "BatchNormalization" not in ops and "Identity" not in ops and "Constant" not in ops
    assert ops.count("Conv") == 1
    # original names survive where a node survives
    names = {out for n in prepared.graph.node for out in n.output}
    assert "block/relu" in names and "y" in names
    x = np.random.default_rng(0).normal(size=(1, 3, 8, 8)).astype(np.float32)
    (before,), (after,) = run_model(model, [x]), run_model(prepared, [x])
    np.testing.assert_allclose(after["y"], before["y"], atol=1e-5, rtol=1e-5)


def test_prepare_sorts_topologically_and_shapes_every_value() -> None:
    prepared = graph.prepare_model(_conv_bn_model(shuffle=True))
    seen = {"x"} | {t.name for t in prepared.graph.initializer}
    for node in prepared.graph.node:
        assert all(i in seen for i in node.input if i), f"{node.name} reads a value before it is produced"
        seen.update(node.output)
    infos = graph.value_infos(prepared)
    for node in prepared.graph.node:
        for out in node.output:
            assert graph.has_full_shape(infos[out]), f"{out} has shape {graph.tensor_shape(infos[out])}"
    assert graph.tensor_shape(prepared.graph.input[0]) == ["batch", 3, 8, 8]
    assert graph.tensor_shape(prepared.graph.output[0]) == ["batch", 4, 8, 8]


def test_prepare_makes_batch_dynamic_for_a_fixed_batch_model() -> None:
    prepared = graph.prepare_model(_conv_bn_model())
    x = np.random.default_rng(0).normal(size=(3, 3, 8, 8)).astype(np.float32)
    (out,) = run_model(prepared, [x])
    assert out["y"].shape == (3, 4, 8, 8)


def test_prepare_keeps_torch_names(prepared_mobilenet_v2: onnx.ModelProto) -> None:
    names = {out for n in prepared_mobilenet_v2.graph.node for out in n.output}
    assert "/features/features.6/Add_output_0" in names
    assert not any(n.op_type in ("Constant", "Identity", "BatchNormalization") for n in prepared_mobilenet_v2.graph.node)


def test_prepare_folds_constant_weight_subgraphs(prepared_light_models) -> None:
    ops = {n.op_type for n in prepared_light_models["light_resnet50"].graph.node}
    assert "ConstantOfShape" not in ops and "BatchNormalization" not in ops


def _control_flow_model(op: str) -> onnx.ModelProto:
    body_out = helper.make_tensor_value_info("b_out", TensorProto.FLOAT, [1])
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["b_out"])], "then", [], [body_out])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["b_out"])], "else", [], [body_out])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["cond"])]
    if op == "If":
        nodes.append(helper.make_node("If", ["cond"], ["y"], name="branch/if_positive", then_branch=then,
                                      else_branch=other))
    else:
        body = helper.make_graph(
            [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Neg", ["v_in"], ["v_out"])],
            "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])],
        )
        nodes.append(helper.make_node("Loop", ["trip", "cond", "x"], ["y"], name="decoder/loop", body=body))
    g = helper.make_graph(
        nodes, "cf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=[numpy_helper.from_array(np.array(0, dtype=np.float32), "zero"),
                     numpy_helper.from_array(np.array(3, dtype=np.int64), "trip")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op", ["If", "Loop"])
def test_control_flow_is_kept_with_its_outer_reads_as_inputs(op: str) -> None:
    """Issue 12 part 2: If/Loop stay one node of the outer graph; what a body reads from the
    outer scope (the If branches read x) counts as that node's input."""
    model = _control_flow_model(op)
    prepared = graph.prepare_model(model)
    node = next(n for n in prepared.graph.node if n.op_type == op)
    assert "x" in node_inputs(node)
    for value in (2.5, -1.5):
        x = np.array([value], dtype=np.float32)
        expected = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
        got = ort.InferenceSession(prepared.SerializeToString()).run(None, {"x": x})[0]
        np.testing.assert_array_equal(got, expected)


def test_unknown_operator_in_a_body_is_rejected_naming_the_body() -> None:
    model = _control_flow_model("If")
    model.graph.node[2].attribute[0].g.node[0].op_type = "FancyActivation"
    model.graph.node[2].attribute[0].g.node[0].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedModel, match=r"\(op com\.example::FancyActivation\) in the '\w+_branch' body of "
                                               r"'branch/if_positive' has no ONNX Runtime"):
        graph.prepare_model(model)


def test_unknown_operator_is_rejected_naming_node_and_op() -> None:
    model = _conv_bn_model()
    model.graph.node[3].op_type = "FancyActivation"
    model.graph.node[3].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedModel, match=r"node 'relu' \(op com\.example::FancyActivation\) has no ONNX Runtime"):
        graph.prepare_model(model)


def test_input_shapes_fix_symbolic_spatial_dims() -> None:
    model = _conv_bn_model()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "W"
    prepared = graph.prepare_model(model, input_shapes={"x": [1, 3, 16, 16]})
    assert graph.tensor_shape(prepared.graph.output[0]) == ["batch", 4, 16, 16]
    with pytest.raises(UnsupportedModel, match=r"\['images'\] that are not graph inputs"):
        graph.prepare_model(model, input_shapes={"images": [1, 3, 16, 16]})


def test_values_shape_inference_cannot_type_get_a_probed_shape() -> None:
    """com.microsoft ops are unknown to ONNX shape inference; a probe run fills the gap."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Gelu", ["a"], ["b"], domain="com.microsoft"),
        helper.make_node("Conv", ["b", "w2"], ["y"]),
    ]
    g = helper.make_graph(
        nodes, "contrib", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1"),
                     numpy_helper.from_array(rng.normal(size=(2, 4, 1, 1)).astype(np.float32), "w2")],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    prepared = graph.prepare_model(model)
    infos = graph.value_infos(prepared)
    assert graph.tensor_shape(infos["b"]) == ["batch", 4, 8, 8]
    assert graph.tensor_shape(infos["y"]) == ["batch", 2, 8, 8]


def test_supports_batching_tells_hard_coded_batches_apart(prepared_mobilenet_v2, prepared_light_models) -> None:
    assert graph.supports_batching(prepared_mobilenet_v2)
    assert graph.supports_batching(prepared_light_models["light_densenet121"])
    # light_resnet50 ends with Reshape(x, [1, 2048]): it cannot run a batch of 2
    assert not graph.supports_batching(prepared_light_models["light_resnet50"])
