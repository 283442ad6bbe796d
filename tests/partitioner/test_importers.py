"""TensorFlow frozen graphs, SavedModels and .tflite files built inside the tests, converted
with partitioner.importers and run with ONNX Runtime against TensorFlow's own answer."""
from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow", reason="the TensorFlow importer tests need the 'tensorflow' extra")

from partitioner.errors import ModelLoadError  # noqa: E402
from tests.partitioner.tf_models import TinyNet, frozen_graph, run_tflite, tflite_file  # noqa: E402
from partitioner.importers.source import SourceInfo  # noqa: E402
from partitioner.importers.tensorflow import convert_frozen_graph, convert_saved_model, convert_tflite  # noqa: E402


def _run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_frozen_graph_converts_and_matches_tensorflow(tmp_path):
    net, path = frozen_graph(tmp_path)
    images = np.random.default_rng(1).random((2, 16, 16, 3), dtype=np.float32)
    model, info = convert_frozen_graph(path, inputs=["image"], outputs=["logits"], input_shapes=None, opset=17)
    (logits,) = _run(model, {model.graph.input[0].name: images})
    np.testing.assert_allclose(logits, net(tf.constant(images))["logits"].numpy(), rtol=1e-4, atol=1e-5)
    assert info.format == "tensorflow-frozen-graph" and info.converter == "tf2onnx"
    assert info.converter_version and info.framework_version == tf.__version__
    assert info.inputs == ("image:0",) and info.outputs == ("logits:0",) and len(info.sha256) == 64


def test_frozen_graph_inner_tensors_cut_preprocessing_away(tmp_path):
    net, path = frozen_graph(tmp_path)
    model, _ = convert_frozen_graph(path, inputs=["scaled:0"], outputs=["pooled:0"],
                                    input_shapes={"scaled:0": [1, 16, 16, 3]}, opset=17)
    assert [i.name for i in model.graph.input] == ["scaled:0"]
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 16, 16, 3]
    images = np.random.default_rng(2).random((1, 16, 16, 3), dtype=np.float32)
    (pooled,) = _run(model, {"scaled:0": images * 2 - 1})
    expected = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(images * 2 - 1, net.kernel, 1, "SAME") + net.bias), [1, 2])
    np.testing.assert_allclose(pooled, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_frozen_graph_names_missing_tensors(tmp_path):
    _, path = frozen_graph(tmp_path)
    with pytest.raises(ValueError, match=r"'logitz:0' \(nearest: logits"):
        convert_frozen_graph(path, inputs=["image"], outputs=["logitz"], input_shapes=None, opset=17)
    with pytest.raises(ValueError, match="input_shapes: 'other' is not one of the inputs"):
        convert_frozen_graph(path, inputs=["image"], outputs=["logits"], input_shapes={"other": [1]}, opset=17)


def test_frozen_graph_rejects_bad_files(tmp_path):
    with pytest.raises(ModelLoadError, match="no such TensorFlow frozen graph"):
        convert_frozen_graph(tmp_path / "missing.pb", inputs=["a"], outputs=["b"], input_shapes=None, opset=17)
    junk = tmp_path / "junk.pb"
    junk.write_bytes(b"\xff\xfe not a graph")
    with pytest.raises(ModelLoadError, match="not a TensorFlow GraphDef"):
        convert_frozen_graph(junk, inputs=["a"], outputs=["b"], input_shapes=None, opset=17)


def test_saved_model_converts_and_matches_tensorflow(tmp_path):
    net = TinyNet()
    tf.saved_model.save(net, str(tmp_path / "saved"), signatures=net.__call__.get_concrete_function())
    model, info = convert_saved_model(tmp_path / "saved", opset=17)
    images = np.random.default_rng(3).random((1, 16, 16, 3), dtype=np.float32)
    (logits,) = _run(model, {model.graph.input[0].name: images})
    np.testing.assert_allclose(logits, net(tf.constant(images))["logits"].numpy(), rtol=1e-4, atol=1e-5)
    assert info.format == "tensorflow-saved-model"


def test_source_info_rejects_unknown_format():
    with pytest.raises(ValueError, match="source format 'caffe' is not one of"):
        SourceInfo(format="caffe")


def test_tflite_converts_and_matches_the_interpreter(tmp_path):
    _, path = tflite_file(tmp_path, quantized=False)
    model, info = convert_tflite(path, opset=17)
    image = np.random.default_rng(5).random((1, 16, 16, 3), dtype=np.float32)
    (logits,) = _run(model, {model.graph.input[0].name: image})
    np.testing.assert_allclose(logits, run_tflite(path, image), rtol=1e-4, atol=1e-5)
    assert info.format == "tflite" and info.converter == "tf2onnx" and not info.pre_quantized


def test_pre_quantized_tflite_keeps_its_quantization(tmp_path):
    _, path = tflite_file(tmp_path, quantized=True)
    model, info = convert_tflite(path, opset=17)
    assert info.pre_quantized
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in model.graph.node}
    image = np.random.default_rng(6).integers(0, 256, size=(1, 16, 16, 3), dtype=np.uint8)
    (scores,) = _run(model, {model.graph.input[0].name: image})
    reference = run_tflite(path, image)
    assert scores.dtype == np.uint8
    # Same integer model, different kernels: at most one quantization step apart.
    assert np.abs(scores.astype(int) - reference.astype(int)).max() <= 1


def test_tflite_rejects_other_files(tmp_path):
    junk = tmp_path / "model.tflite"
    junk.write_bytes(b"\x00" * 16)
    with pytest.raises(ModelLoadError, match="not a TensorFlow Lite flatbuffer"):
        convert_tflite(junk, opset=17)


def test_frozen_graph_without_names_uses_its_own_ends(tmp_path):
    from partitioner.importers.tensorflow import frozen_graph_ends
    from partitioner.loading import load_any_model

    net, path = frozen_graph(tmp_path)
    inputs, outputs = frozen_graph_ends(path)
    # tf.function wraps the returned tensor in an Identity: that is the node nothing reads.
    assert inputs == ["image:0"] and outputs == ["Identity:0"]
    model, info = load_any_model(path)
    assert info.format == "tensorflow-frozen-graph" and info.inputs == ("image:0",)
    image = np.random.default_rng(7).random((1, 16, 16, 3), dtype=np.float32)
    got = dict(zip([o.name for o in model.graph.output], _run(model, {model.graph.input[0].name: image})))
    np.testing.assert_allclose(got["Identity:0"], net(tf.constant(image))["logits"].numpy(), rtol=1e-4, atol=1e-5)
