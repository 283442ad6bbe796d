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
from partitioner.importers.source import SourceInfo  # noqa: E402
from partitioner.importers.tensorflow import convert_frozen_graph, convert_saved_model, convert_tflite  # noqa: E402


class TinyNet(tf.Module):
    """Conv 3x3 + ReLU + pooling + dense: a small image classifier with fixed weights."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(0)
        self.kernel = tf.Variable(rng.normal(size=(3, 3, 3, 8)).astype(np.float32) * 0.3)
        self.bias = tf.Variable(rng.normal(size=(8,)).astype(np.float32) * 0.1)
        self.dense = tf.Variable(rng.normal(size=(8, 5)).astype(np.float32) * 0.5)

    @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.float32, name="image")])
    def __call__(self, image):
        scaled = tf.subtract(image * 2.0, 1.0, name="scaled")
        features = tf.nn.relu(tf.nn.conv2d(scaled, self.kernel, 1, "SAME") + self.bias, name="features")
        pooled = tf.reduce_mean(features, axis=[1, 2], name="pooled")
        return {"logits": tf.identity(tf.matmul(pooled, self.dense), name="logits")}


def _frozen_graph(tmp_path):
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    net = TinyNet()
    frozen = convert_variables_to_constants_v2(net.__call__.get_concrete_function())
    path = tmp_path / "tiny.pb"
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    return net, path


def _run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_frozen_graph_converts_and_matches_tensorflow(tmp_path):
    net, path = _frozen_graph(tmp_path)
    images = np.random.default_rng(1).random((2, 16, 16, 3), dtype=np.float32)
    model, info = convert_frozen_graph(path, inputs=["image"], outputs=["logits"], input_shapes=None, opset=17)
    (logits,) = _run(model, {model.graph.input[0].name: images})
    np.testing.assert_allclose(logits, net(tf.constant(images))["logits"].numpy(), rtol=1e-4, atol=1e-5)
    assert info.format == "tensorflow-frozen-graph" and info.converter == "tf2onnx"
    assert info.converter_version and info.framework_version == tf.__version__
    assert info.inputs == ("image:0",) and info.outputs == ("logits:0",) and len(info.sha256) == 64


def test_frozen_graph_inner_tensors_cut_preprocessing_away(tmp_path):
    net, path = _frozen_graph(tmp_path)
    model, _ = convert_frozen_graph(path, inputs=["scaled:0"], outputs=["pooled:0"],
                                    input_shapes={"scaled:0": [1, 16, 16, 3]}, opset=17)
    assert [i.name for i in model.graph.input] == ["scaled:0"]
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 16, 16, 3]
    images = np.random.default_rng(2).random((1, 16, 16, 3), dtype=np.float32)
    (pooled,) = _run(model, {"scaled:0": images * 2 - 1})
    expected = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(images * 2 - 1, net.kernel, 1, "SAME") + net.bias), [1, 2])
    np.testing.assert_allclose(pooled, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_frozen_graph_names_missing_tensors(tmp_path):
    _, path = _frozen_graph(tmp_path)
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


def _tflite(tmp_path, *, quantized: bool):
    net = TinyNet()
    fn = tf.function(lambda image: net(image)["logits"],
                     input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32, name="image")])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], net)
    if quantized:
        rng = np.random.default_rng(4)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([rng.random((1, 16, 16, 3), dtype=np.float32)] for _ in range(16))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    path = tmp_path / ("tiny_int8.tflite" if quantized else "tiny.tflite")
    path.write_bytes(converter.convert())
    return net, path


def _run_tflite(path, image):
    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_tflite_converts_and_matches_the_interpreter(tmp_path):
    _, path = _tflite(tmp_path, quantized=False)
    model, info = convert_tflite(path, opset=17)
    image = np.random.default_rng(5).random((1, 16, 16, 3), dtype=np.float32)
    (logits,) = _run(model, {model.graph.input[0].name: image})
    np.testing.assert_allclose(logits, _run_tflite(path, image), rtol=1e-4, atol=1e-5)
    assert info.format == "tflite" and info.converter == "tf2onnx" and not info.pre_quantized


def test_pre_quantized_tflite_keeps_its_quantization(tmp_path):
    _, path = _tflite(tmp_path, quantized=True)
    model, info = convert_tflite(path, opset=17)
    assert info.pre_quantized
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in model.graph.node}
    image = np.random.default_rng(6).integers(0, 256, size=(1, 16, 16, 3), dtype=np.uint8)
    (scores,) = _run(model, {model.graph.input[0].name: image})
    reference = _run_tflite(path, image)
    assert scores.dtype == np.uint8
    # Same integer model, different kernels: at most one quantization step apart.
    assert np.abs(scores.astype(int) - reference.astype(int)).max() <= 1


def test_tflite_rejects_other_files(tmp_path):
    junk = tmp_path / "model.tflite"
    junk.write_bytes(b"\x00" * 16)
    with pytest.raises(ModelLoadError, match="not a TensorFlow Lite flatbuffer"):
        convert_tflite(junk, opset=17)
