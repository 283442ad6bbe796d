"""Small TensorFlow models built in the tests: a frozen graph, a float and a full-integer .tflite."""
from __future__ import annotations

import os
import pathlib

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402


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


def frozen_graph(tmp_path: pathlib.Path):
    """(the module, its frozen GraphDef written to tmp_path/tiny.pb)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    net = TinyNet()
    frozen = convert_variables_to_constants_v2(net.__call__.get_concrete_function())
    path = tmp_path / "tiny.pb"
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    return net, path


def tflite_file(tmp_path: pathlib.Path, *, quantized: bool):
    """(the module, its .tflite: float, or full-integer with uint8 input and output)."""
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


def run_tflite(path, image):
    """The TFLite interpreter's first output for one input."""
    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
