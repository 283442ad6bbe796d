"""A small real image classifier bundle for the control/split/demo tests (built in seconds).

Built with onnx.helper and written with :class:`protos.bundle.BundleWriter`, so the
agent and the server read it exactly as they read a partitioner bundle. The model:
image [N,3,32,32] -> Conv(3->8, 3x3) -> Relu -> "feat" [N,8,32,32] (32 KiB fp32)
-> Conv(8->16, 3x3, stride 2) -> Relu -> GlobalAveragePool -> Flatten -> MatMul -> logits [N,10].
Cuts: ``input`` (JPEG), ``feat`` (FP32), ``output``. Labels: ``edge/labels.json``.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from protos.bundle import Bundle, BundleWriter
from protos import bundle_pb2

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


def _profile(head_ms: float, tail_ms: float) -> bundle_pb2.LatencyProfile:
    return bundle_pb2.LatencyProfile(device="test", threads=1, runs=1, head_ms=head_ms, tail_ms=tail_ms)


def build_demo_bundle(out_dir: pathlib.Path, *, model_name: str = "tinynet") -> Bundle:
    """Write the bundle at ``out_dir`` (replacing it) and return it."""
    full = _model("full")
    feat_bytes = 8 * SIZE * SIZE * 4
    with BundleWriter(out_dir, overwrite=True) as writer:
        full_ref = writer.add_bytes("edge/full.onnx", full.SerializeToString())
        head_ref = writer.add_bytes("edge/heads/feat.onnx", _model("head").SerializeToString())
        labels_ref = writer.add_bytes("edge/labels.json", json.dumps(LABELS).encode())
        tail_feat = writer.add_bytes("cloud/tails/feat.onnx", _model("tail").SerializeToString())
        tail_input = writer.add_bytes("cloud/tails/input.onnx", full.SerializeToString())
        m = bundle_pb2.Manifest(model_name=model_name, model_version="1", created_by="edge-tests", opset=17)
        m.input.tensor.CopyFrom(bundle_pb2.TensorSpec(name="image", datatype="FP32", shape=[-1, 3, SIZE, SIZE]))
        m.input.width_px = m.input.height_px = SIZE
        m.input.layout, m.input.color_order = "NCHW", "RGB"
        m.input.pixel_scale = 1 / 255
        m.input.mean.extend([0.485, 0.456, 0.406])
        m.input.std.extend([0.229, 0.224, 0.225])
        m.input.jpeg_quality = 90
        m.output.tensors.append(bundle_pb2.TensorSpec(name="logits", datatype="FP32", shape=[-1, CLASSES]))
        m.output.classification.top_k = 3
        m.output.classification.softmax = True
        m.output.classification.output_tensor = "logits"
        m.output.classification.labels.CopyFrom(labels_ref)
        m.full_model.CopyFrom(full_ref)
        verified = bundle_pb2.Verification(frames=4, passed=True, max_abs_error=0.0, top1_agreement=1.0, cosine=1.0,
                                           reference="full fp32 model")
        m.cuts.append(bundle_pb2.Cut(
            id="input", display_name="input", order=0, wire_bytes=2000, tail=tail_input,
            tensors=[bundle_pb2.TensorSpec(name="image_jpeg", datatype="BYTES", shape=[-1],
                                           encoding=bundle_pb2.WireEncoding(codec="jpeg"))],
            edge_profiles=[_profile(0.0, 1.0)], cloud_profiles=[_profile(0.0, 1.0)],
        ))
        m.cuts.append(bundle_pb2.Cut(
            id="feat", display_name="feat", order=1, wire_bytes=feat_bytes, head=head_ref, tail=tail_feat,
            tensors=[bundle_pb2.TensorSpec(name="feat", datatype="FP32", shape=[-1, 8, SIZE, SIZE],
                                           encoding=bundle_pb2.WireEncoding(codec="fp32"))],
            verification=verified, edge_profiles=[_profile(0.3, 0.5)], cloud_profiles=[_profile(0.3, 0.5)],
        ))
        m.cuts.append(bundle_pb2.Cut(
            id="output", display_name="output", order=2, head=full_ref,
            tensors=[bundle_pb2.TensorSpec(name="logits", datatype="FP32", shape=[-1, CLASSES])],
            edge_profiles=[_profile(1.0, 0.0)],
        ))
        return writer.commit(m)
