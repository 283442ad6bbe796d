"""TensorFlow frozen graphs, SavedModels and .tflite files built inside the tests, converted
with partitioner.importers and run with ONNX Runtime against TensorFlow's own answer."""
from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow", reason="the TensorFlow importer tests need the 'tensorflow' extra")

from partitioner.errors import ModelLoadError  # noqa: E402
from partitioner.importers.source import SourceInfo  # noqa: E402
from partitioner.importers.tensorflow import convert_frozen_graph, convert_saved_model  # noqa: E402


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
