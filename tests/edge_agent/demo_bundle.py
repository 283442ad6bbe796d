"""A small real image classifier bundle for the control/split/demo tests (built in seconds).

Built with onnx.helper and written by the shared factory (:mod:`tests.bundles`), so the
agent and the server read it exactly as they read a partitioner bundle. The model:
image [N,3,32,32] -> Conv(3->8, 3x3) -> Relu -> "feat" [N,8,32,32] (32 KiB fp32)
-> Conv(8->16, 3x3, stride 2) -> Relu -> GlobalAveragePool -> Flatten -> MatMul -> logits [N,10].
Cuts: ``input`` (JPEG), ``feat`` (FP32), ``output``. Labels: ``edge/labels.json``.
"""
from __future__ import annotations

import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from protos.bundle import Bundle
from tests.bundles import FULL, BundleSpec, CutSpec, InputSpec, Profile, Tensor, write_test_bundle

SIZE = 32
CLASSES = 10
LABELS = [f"class_{i}" for i in range(CLASSES)]


def _params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {
        "W1": (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
        "B1": (rng.standard_normal(8) * 0.1).astype(np.float32),
        "W2": (rng.standard_normal((16, 8, 3, 3)) * 0.2).astype(np.float32),
        "B2": (rng.standard_normal(16) * 0.1).astype(np.float32),
        "W3": rng.standard_normal((16, CLASSES)).astype(np.float32),
    }


def _nodes(part: str) -> tuple[list[onnx.NodeProto], list[str]]:
    head = [
        helper.make_node("Conv", ["image", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["feat"]),
    ]
    tail = [
        helper.make_node("Conv", ["feat", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W3"], ["logits"]),
    ]
    if part == "head":
        return head, ["W1", "B1"]
    if part == "tail":
        return tail, ["W2", "B2", "W3"]
    return head + tail, ["W1", "B1", "W2", "B2", "W3"]


def _model(part: str) -> onnx.ModelProto:
    params = _params()
    nodes, names = _nodes(part)
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    feat = helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["N", 8, SIZE, SIZE])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])
    inputs = [feat] if part == "tail" else [image]
    outputs = [feat] if part == "head" else [logits]
    graph = helper.make_graph(
        nodes, f"demo_{part}", inputs, outputs, initializer=[numpy_helper.from_array(params[n], n) for n in names]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edge-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _profile(head_ms: float, tail_ms: float) -> Profile:
    return Profile(head_ms=head_ms, tail_ms=tail_ms, runs=1)


def build_demo_bundle(out_dir: pathlib.Path, *, model_name: str = "tinynet") -> Bundle:
    """Write the bundle at ``out_dir`` (replacing it) and return it."""
    logits = Tensor("logits", "FP32", (-1, CLASSES), codec=None)
    spec = BundleSpec(
        model_name=model_name, model_version="1", created_by="edge-tests", opset=17,
        full_model=_model("full").SerializeToString(), full_model_path="edge/full.onnx", labels=LABELS,
        input=InputSpec(Tensor("image", "FP32", (-1, 3, SIZE, SIZE), codec=None), SIZE, SIZE),
        outputs=(logits,),
        cuts=(
            CutSpec("input", (Tensor("image_jpeg", "BYTES", (-1,), codec="jpeg"),), tail=FULL, wire_bytes=2000,
                    edge_profile=_profile(0.0, 1.0), cloud_profile=_profile(0.0, 1.0)),
            CutSpec("feat", (Tensor("feat", "FP32", (-1, 8, SIZE, SIZE)),), head=_model("head").SerializeToString(),
                    tail=_model("tail").SerializeToString(), wire_bytes=8 * SIZE * SIZE * 4,
                    edge_profile=_profile(0.3, 0.5), cloud_profile=_profile(0.3, 0.5)),
            CutSpec("output", (logits,), head=FULL, edge_profile=_profile(1.0, 0.0)),
        ),
    )
    return write_test_bundle(out_dir, spec)
