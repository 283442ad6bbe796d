"""What the source decides when the user did not (issue 12 parts 5 and 8), the ONNX side of
--inputs/--outputs, and the manifest's source record."""
from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from partitioner.config import PartitionConfig
from partitioner.importers.adapt import float_image_io
from partitioner.importers.source import SourceInfo, attach_source_info, source_info_of
from partitioner.loading import load_any_model
from partitioner.source_defaults import apply_source_defaults, default_input_size, model_stride
from protos import bundle_pb2
from protos.errors import ManifestError
from protos.source_format import validate_source_format


def _conv_model(stride: int, outputs: int = 1, height: int | str = "height") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["image", "w"], ["a"], strides=[stride, stride], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("MaxPool", ["b"], ["c"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["c"], ["d"]),
             helper.make_node("Flatten", ["d"], ["out0"])]
    outs = [helper.make_tensor_value_info("out0", TensorProto.FLOAT, ["batch", 4])]
    for k in range(1, outputs):
        nodes.append(helper.make_node("Neg", ["out0"], [f"out{k}"]))
        outs.append(helper.make_tensor_value_info(f"out{k}", TensorProto.FLOAT, ["batch", 4]))
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                         ["batch", 3, height, "width"])], outs,
                              [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("stride, outputs, task, expected", [
    (2, 1, "", (224, 224)),       # classifier-like: 224, already a multiple of 2 * 2
    (3, 1, "", (228, 228)),       # stride 3 * 2 = 6: 224 rounded up to 228
    (2, 2, "", (640, 640)),       # more than one output: a detector's 640
    (2, 1, "detection", (640, 640)),
    (64, 2, "", (640, 640)),      # strides past 32 (an SSD's extra layers reach 512) do not grow the size
    (24, 1, "", (224, 224)),      # stride 48 capped at 32: 224 is already a multiple
])
def test_symbolic_size_default(stride: int, outputs: int, task: str, expected: tuple[int, int]) -> None:
    model = _conv_model(stride, outputs)
    assert model_stride(model) == stride * 2  # the Conv's stride times the MaxPool's 2
    assert default_input_size(model, detector=task == "detection") == expected
    config, _, notes = apply_source_defaults(PartitionConfig(model="m.onnx", out_dir=pathlib.Path("x"), task=task),
                                             model)
    assert config.input_size == expected
    assert any(f"using {expected[0]}x{expected[1]}" in note and "--input-size" in note for note in notes)


def test_fixed_size_or_user_size_is_kept() -> None:
    model = _conv_model(2)
    config = PartitionConfig(model="m.onnx", out_dir=pathlib.Path("x"), input_size=(96, 128))
    config2, record, notes = apply_source_defaults(config, model)
    assert config2.input_size == (96, 128) and notes == () and record.format == "onnx"


def test_uint8_image_io_is_wrapped_exactly() -> None:
    """A uint8-in/uint8-out quantized model: FP32 0..255 in, its own dequantized values out."""
    nodes = [helper.make_node("DequantizeLinear", ["image", "s_in", "z_in"], ["x"]),
             helper.make_node("Relu", ["x"], ["y"]),
             helper.make_node("QuantizeLinear", ["y", "s_out", "z_out"], ["scores"])]
    graph = helper.make_graph(
        nodes, "q", [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 4, 4, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.UINT8, [1, 4, 4, 3])],
        [numpy_helper.from_array(np.array(0.02, np.float32), "s_in"), numpy_helper.from_array(np.array(128, np.uint8), "z_in"),
         numpy_helper.from_array(np.array(0.01, np.float32), "s_out"), numpy_helper.from_array(np.array(0, np.uint8), "z_out")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    wrapped, changes = float_image_io(model)
    assert len(changes) == 2 and wrapped.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    pixels = np.random.default_rng(1).integers(0, 256, (1, 4, 4, 3), dtype=np.uint8)
    (raw,) = ort.InferenceSession(model.SerializeToString()).run(None, {"image": pixels})
    (got,) = ort.InferenceSession(wrapped.SerializeToString()).run(None, {"image": pixels.astype(np.float32)})
    np.testing.assert_array_equal(got, raw.astype(np.float32) * np.float32(0.01))


def test_onnx_inputs_outputs_cut_pre_and_post_processing_away(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(_conv_model(2, height=16), str(path))
    model, info = load_any_model(path, inputs=["a"], outputs=["c"])
    assert [i.name for i in model.graph.input] == ["a"] and [o.name for o in model.graph.output] == ["c"]
    assert [n.op_type for n in model.graph.node] == ["Relu", "MaxPool"]
    assert info.format == "onnx" and info.inputs == ("a",) and source_info_of(model) == info
    with pytest.raises(ValueError, match=r"'cc' \(nearest: c"):
        load_any_model(path, outputs=["cc"])


def test_source_record_round_trips_and_is_checked() -> None:
    info = SourceInfo(format="tflite", file_name="m.tflite", sha256="a" * 64, converter="tf2onnx",
                      converter_version="1.17.0", framework_version="2.21.0", pre_quantized=True)
    model = attach_source_info(_conv_model(2), info)
    assert source_info_of(model) == info
    with pytest.raises(ManifestError, match="source_format.converter_version: is empty"):
        validate_source_format(bundle_pb2.SourceFormat(format="tflite", converter="tf2onnx"))
    with pytest.raises(ManifestError, match="source_format.format: 'caffe' is not one of"):
        validate_source_format(bundle_pb2.SourceFormat(format="caffe"))


def test_a_saved_conversion_keeps_its_source_record(tmp_path: pathlib.Path) -> None:
    info = SourceInfo(format="tflite", file_name="m.tflite", sha256="b" * 64, converter="tf2onnx",
                      converter_version="1.17.0", framework_version="2.21.0")
    path = tmp_path / "converted.onnx"
    onnx.save(attach_source_info(_conv_model(2, height=16), info), str(path))
    assert load_any_model(path)[1] == info
    assert load_any_model(path, outputs=["c"])[1].format == "onnx"  # extracted: a new ONNX model


def test_cli_takes_inputs_outputs_and_a_saved_model_folder(tmp_path: pathlib.Path) -> None:
    from partitioner import cli

    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"")
    config, _, _ = cli.build_partition_config(
        [str(folder), "--out", str(tmp_path / "b"), "--inputs", "Preprocessor/sub:0", "--outputs", "concat:0, concat_1:0"],
        environ={})
    assert config.inputs == ("Preprocessor/sub:0",) and config.outputs == ("concat:0", "concat_1:0")
    config, _, _ = cli.build_partition_config([str(folder), "--out", str(tmp_path / "b")],
                                              environ={"SPLITINFER_PARTITION_OUTPUTS": "a:0,b:0"})
    assert config.outputs == ("a:0", "b:0")
    with pytest.raises(ValueError, match="is not a file; expected an .onnx, .pb or .tflite path, a SavedModel folder"):
        cli.build_partition_config([str(tmp_path / "missing.tflite"), "--out", str(tmp_path / "b")], environ={})
