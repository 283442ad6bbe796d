"""A tiny real bundle for the daemon's tests, built inline with onnx.helper.

Model: input [N,3,16,16] -> Conv(3->4) -> Relu ("conv1_out", the fp32 cut "conv1")
-> Conv(4->8, stride 2) -> Relu ("conv2_out", the int8 cut "conv2": QuantizeLinear in
the head, DequantizeLinear in the tail) -> GlobalAveragePool -> Flatten -> Gemm -> logits [N,5].
Profiles in the manifest describe a slow device (the full model "costs" 80 ms) so that
offloading is worth it when the network is good; the real sessions run in microseconds.
"""
from __future__ import annotations

import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from protos import bundle_pb2
from protos.bundle import Bundle
from tests.bundles import FULL, BundleSpec, CutSpec, InputSpec, Profile, Tensor, write_test_bundle

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


def write_tiny_bundle(out: pathlib.Path, *, input_wire_bytes: int = 1500, labels: list[str] = LABELS) -> Bundle:
    F = TensorProto.FLOAT
    full = _model(["c1", "r1", "c2", "r2", "gap_f", "flat", "fc"], ("input", F, ["N", 3, SIZE, SIZE]), ("logits", F, ["N", 5]))
    head1 = _model(["c1", "r1"], ("input", F, ["N", 3, SIZE, SIZE]), ("conv1_out", F, ["N", 4, SIZE, SIZE]))
    tail1 = _model(["c2", "r2", "gap_f", "flat", "fc"], ("conv1_out", F, ["N", 4, SIZE, SIZE]), ("logits", F, ["N", 5]))
    head2 = _model(["c1", "r1", "c2", "r2", "q"], ("input", F, ["N", 3, SIZE, SIZE]), ("conv2_q", TensorProto.UINT8, ["N", 8, 8, 8]))
    tail2 = _model(["dq", "gap", "flat", "fc"], ("conv2_q", TensorProto.UINT8, ["N", 8, 8, 8]), ("logits", F, ["N", 5]))
    logits = Tensor("logits", "FP32", (-1, 5))
    spec = BundleSpec(
        model_name="tiny_net", created_by="tests/edge_agent", full_model=full, labels=labels,
        input=InputSpec(Tensor("input", "FP32", (-1, 3, SIZE, SIZE)), SIZE, SIZE, jpeg_quality=80),
        outputs=(logits,),
        verification=bundle_pb2.Verification(frames=4, max_abs_error=1e-5, top1_agreement=1.0, cosine=1.0, passed=True),
        cuts=(
            CutSpec("input", (Tensor("input_jpeg", "BYTES", (-1,), codec="jpeg"),), tail=FULL,
                    wire_bytes=input_wire_bytes, cloud_profile=Profile(tail_ms=2.0)),
            CutSpec("conv1", (Tensor("conv1_out", "FP32", (-1, 4, SIZE, SIZE)),), head=head1, tail=tail1,
                    display_name="conv1_out", wire_bytes=4 * SIZE * SIZE * 4,
                    edge_profile=Profile(head_ms=20.0), cloud_profile=Profile(tail_ms=1.5)),
            CutSpec("conv2", (Tensor("conv2_q", "UINT8", (-1, 8, 8, 8), codec="int8", scale=INT8_SCALE),),
                    head=head2, tail=tail2, display_name="conv2_out", wire_bytes=8 * 8 * 8,
                    edge_profile=Profile(head_ms=50.0), cloud_profile=Profile(tail_ms=0.5)),
            CutSpec("output", (logits,), edge_profile=Profile(head_ms=80.0)),
        ),
    )
    return write_test_bundle(out, spec)
