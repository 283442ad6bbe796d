"""A tiny real bundle for the daemon's tests, built inline with onnx.helper.

Model: input [N,3,16,16] -> Conv(3->4) -> Relu ("conv1_out", the fp32 cut "conv1")
-> Conv(4->8, stride 2) -> Relu ("conv2_out", the int8 cut "conv2": QuantizeLinear in
the head, DequantizeLinear in the tail) -> GlobalAveragePool -> Flatten -> Gemm -> logits [N,5].
Profiles in the manifest describe a slow device (the full model "costs" 80 ms) so that
offloading is worth it when the network is good; the real sessions run in microseconds.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from protos import bundle as bundle_io
from protos import bundle_pb2

LABELS = ["cat", "dog", "bike", "car", "tree"]
INT8_SCALE = 0.05
SIZE = 16


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "w1": rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
        "b1": rng.normal(0, 0.1, (4,)).astype(np.float32),
        "w2": rng.normal(0, 0.5, (8, 4, 3, 3)).astype(np.float32),
        "b2": rng.normal(0, 0.1, (8,)).astype(np.float32),
        "w3": rng.normal(0, 0.5, (8, 5)).astype(np.float32),
        "b3": rng.normal(0, 0.1, (5,)).astype(np.float32),
        "q_scale": np.array(INT8_SCALE, dtype=np.float32),
        "q_zp": np.array(0, dtype=np.uint8),
    }


_NODES = {
    "c1": helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
    "r1": helper.make_node("Relu", ["c1"], ["conv1_out"]),
    "c2": helper.make_node("Conv", ["conv1_out", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
    "r2": helper.make_node("Relu", ["c2"], ["conv2_out"]),
    "q": helper.make_node("QuantizeLinear", ["conv2_out", "q_scale", "q_zp"], ["conv2_q"]),
    "dq": helper.make_node("DequantizeLinear", ["conv2_q", "q_scale", "q_zp"], ["conv2_dq"]),
    "gap": helper.make_node("GlobalAveragePool", ["conv2_dq"], ["gap"]),
    "gap_f": helper.make_node("GlobalAveragePool", ["conv2_out"], ["gap"]),
    "flat": helper.make_node("Flatten", ["gap"], ["flat"]),
    "fc": helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"]),
}


def _model(nodes: list[str], inp: tuple[str, int, list], out: tuple[str, int, list]) -> bytes:
    w = _weights()
    used = {i for n in nodes for i in _NODES[n].input}
    inits = [numpy_helper.from_array(v, k) for k, v in w.items() if k in used]
    graph = helper.make_graph(
        [_NODES[n] for n in nodes], "tiny",
        [helper.make_tensor_value_info(inp[0], inp[1], inp[2])],
        [helper.make_tensor_value_info(out[0], out[1], out[2])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _tensor(name: str, datatype: str, shape: list[int], codec: str = "fp32", scale: float = 0.0) -> bundle_pb2.TensorSpec:
    spec = bundle_pb2.TensorSpec(name=name, datatype=datatype, shape=shape, encoding=bundle_pb2.WireEncoding(codec=codec))
    if scale:
        spec.encoding.scale = scale
    return spec


def write_tiny_bundle(out: pathlib.Path, *, input_wire_bytes: int = 1500, labels: list[str] = LABELS) -> bundle_io.Bundle:
    F = TensorProto.FLOAT
    full = _model(["c1", "r1", "c2", "r2", "gap_f", "flat", "fc"], ("input", F, ["N", 3, SIZE, SIZE]), ("logits", F, ["N", 5]))
    head1 = _model(["c1", "r1"], ("input", F, ["N", 3, SIZE, SIZE]), ("conv1_out", F, ["N", 4, SIZE, SIZE]))
    tail1 = _model(["c2", "r2", "gap_f", "flat", "fc"], ("conv1_out", F, ["N", 4, SIZE, SIZE]), ("logits", F, ["N", 5]))
    head2 = _model(["c1", "r1", "c2", "r2", "q"], ("input", F, ["N", 3, SIZE, SIZE]), ("conv2_q", TensorProto.UINT8, ["N", 8, 8, 8]))
    tail2 = _model(["dq", "gap", "flat", "fc"], ("conv2_q", TensorProto.UINT8, ["N", 8, 8, 8]), ("logits", F, ["N", 5]))
    with bundle_io.BundleWriter(out, overwrite=True) as writer:
        m = bundle_pb2.Manifest(model_name="tiny_net", model_version="1.0", created_by="tests/edge_agent")
        m.input.tensor.CopyFrom(_tensor("input", "FP32", [-1, 3, SIZE, SIZE]))
        m.input.width_px, m.input.height_px = SIZE, SIZE
        m.input.layout, m.input.color_order = "NCHW", "RGB"
        m.input.pixel_scale = 1 / 255
        m.input.mean.extend([0.485, 0.456, 0.406])
        m.input.std.extend([0.229, 0.224, 0.225])
        m.input.jpeg_quality = 80
        m.output.tensors.append(_tensor("logits", "FP32", [-1, 5]))
        m.output.classification.top_k = 3
        m.output.classification.softmax = True
        m.output.classification.output_tensor = "logits"
        m.output.classification.labels.CopyFrom(writer.add_bytes("edge/labels.json", json.dumps(labels).encode()))
        m.full_model.CopyFrom(writer.add_bytes("edge/full_model.onnx", full))
        ver = bundle_pb2.Verification(frames=4, max_abs_error=1e-5, top1_agreement=1.0, cosine=1.0, passed=True)
        inp = m.cuts.add(id="input", display_name="input", order=0, wire_bytes=input_wire_bytes)
        inp.tensors.append(_tensor("input_jpeg", "BYTES", [-1], codec="jpeg"))
        inp.tail.CopyFrom(writer.add_bytes("cloud/tails/input.onnx", full))
        inp.cloud_profiles.add(device="test", threads=1, runs=5, tail_ms=2.0)
        c1 = m.cuts.add(id="conv1", display_name="conv1_out", order=1, wire_bytes=4 * SIZE * SIZE * 4)
        c1.tensors.append(_tensor("conv1_out", "FP32", [-1, 4, SIZE, SIZE]))
        c1.head.CopyFrom(writer.add_bytes("edge/heads/conv1.onnx", head1))
        c1.tail.CopyFrom(writer.add_bytes("cloud/tails/conv1.onnx", tail1))
        c1.verification.CopyFrom(ver)
        c1.edge_profiles.add(device="test", threads=1, runs=5, head_ms=20.0)
        c1.cloud_profiles.add(device="test", threads=1, runs=5, tail_ms=1.5)
        c2 = m.cuts.add(id="conv2", display_name="conv2_out", order=2, wire_bytes=8 * 8 * 8)
        c2.tensors.append(_tensor("conv2_q", "UINT8", [-1, 8, 8, 8], codec="int8", scale=INT8_SCALE))
        c2.head.CopyFrom(writer.add_bytes("edge/heads/conv2.onnx", head2))
        c2.tail.CopyFrom(writer.add_bytes("cloud/tails/conv2.onnx", tail2))
        c2.verification.CopyFrom(ver)
        c2.edge_profiles.add(device="test", threads=1, runs=5, head_ms=50.0)
        c2.cloud_profiles.add(device="test", threads=1, runs=5, tail_ms=0.5)
        out_cut = m.cuts.add(id="output", display_name="output", order=3)
        out_cut.tensors.append(_tensor("logits", "FP32", [-1, 5]))
        out_cut.edge_profiles.add(device="test", threads=1, runs=5, head_ms=80.0)
        return writer.commit(m)
