"""The manifest's input spec from a model's image input (the bundle writing itself runs in test_pipeline)."""
from __future__ import annotations

import pathlib

import onnx
import pytest
from onnx import TensorProto, helper

from partitioner import assemble
from partitioner.config import PartitionConfig
from partitioner.errors import UnsupportedModel


def _identity(*inputs: tuple[str, list]) -> onnx.ModelProto:
    nodes = [helper.make_node("Identity", [name], [name + "_out"]) for name, _ in inputs]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs],
        [helper.make_tensor_value_info(name + "_out", TensorProto.FLOAT, shape) for name, shape in inputs],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _config(**overrides) -> PartitionConfig:
    return PartitionConfig(model="m.onnx", out_dir=pathlib.Path("b"), **overrides)


def test_nchw_and_nhwc_inputs() -> None:
    nchw = assemble.input_spec(_identity(("image", ["batch", 3, 24, 32])), _config(jpeg_quality=80))
    assert (nchw.layout, nchw.height_px, nchw.width_px, list(nchw.tensor.shape)) == ("NCHW", 24, 32, [-1, 3, 24, 32])
    assert nchw.jpeg_quality == 80 and nchw.tensor.name == "image"
    nhwc = assemble.input_spec(_identity(("pixels", ["batch", 24, 32, 3])), _config(color_order="BGR"))
    assert (nhwc.layout, nhwc.color_order, list(nhwc.tensor.shape)) == ("NHWC", "BGR", [-1, 24, 32, 3])


def test_input_size_fixes_a_symbolic_image() -> None:
    model = _identity(("image", ["batch", 3, "h", "w"]))
    with pytest.raises(UnsupportedModel, match="symbolic image size"):
        assemble.input_spec(model, _config())
    assert assemble.fixed_input_shapes(model, _config()) is None
    assert assemble.fixed_input_shapes(model, _config(input_size=(20, 30))) == {"image": [1, 3, 20, 30]}
    assert assemble.input_spec(model, _config(input_size=(20, 30))).width_px == 30


def test_only_one_image_input() -> None:
    with pytest.raises(UnsupportedModel, match=r"2 graph inputs \['a', 'b'\]"):
        assemble.input_spec(_identity(("a", [1, 3, 8, 8]), ("b", [1, 3, 8, 8])), _config())
    with pytest.raises(UnsupportedModel, match=r"shape \[1, 8\]"):
        assemble.input_spec(_identity(("a", [1, 8])), _config())
