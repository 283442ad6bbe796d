"""Tiny real bundles for the operations tests (security, metrics, discovery, CLI lifecycle).

Built with onnx.helper and written by the shared factory (tests.bundles), so the server reads them the
way it reads a partitioner bundle. The model: image [N,3,8,8] -> Flatten -> MatMul -> "mid" [N,W]
-> (optionally `slow_repeats` x Tanh(MatMul(t, t)) on a [N,W,W] tensor) -> MatMul -> logits [N,3].
Cuts: 'input' (BYTES JPEGs, tail = full model), 'mid' (FP32 [-1,W]), 'output' (no tail).
"""
from __future__ import annotations

import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from protos.bundle import tail_model_name, tail_model_version
from tests.bundles import FULL, BundleSpec, CutSpec, InputSpec, Tensor, write_test_bundle
from protos import bundle_pb2

IMAGE_SHAPE = (3, 8, 8)
CLASSES = 3


def _weights(width: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    w1 = rng.standard_normal((int(np.prod(IMAGE_SHAPE)), width)).astype(np.float32) * 0.1
    w2 = rng.standard_normal((width, CLASSES)).astype(np.float32)
    return w1, w2


def _head_nodes(width: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    w1, _ = _weights(width)
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W1"], ["mid"]),
    ]
    return nodes, [numpy_helper.from_array(w1, "W1")]


def _tail_nodes(width: int, slow_repeats: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    _, w2 = _weights(width)
    inits = [numpy_helper.from_array(w2, "W2")]
    nodes: list[onnx.NodeProto] = []
    current = "mid"
    if slow_repeats:
        # [N,W] -> [N,W,1] x ones[1,W] -> [N,W,W]; then repeated square matmuls (compute only, no big weights)
        inits += [
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
            numpy_helper.from_array(np.full((1, width), 1.0 / width, dtype=np.float32), "ones_row"),
        ]
        nodes += [
            helper.make_node("Unsqueeze", ["mid", "axis2"], ["col"]),
            helper.make_node("MatMul", ["col", "ones_row"], ["sq0"]),
        ]
        for i in range(slow_repeats):
            nodes += [
                helper.make_node("MatMul", [f"sq{i}", f"sq{i}"], [f"mm{i}"]),
                helper.make_node("Tanh", [f"mm{i}"], [f"sq{i + 1}"]),
            ]
        nodes.append(helper.make_node("ReduceMean", [f"sq{slow_repeats}"], ["pooled"], axes=[2], keepdims=0))
        current = "pooled"
    nodes.append(helper.make_node("MatMul", [current, "W2"], ["logits"]))
    return nodes, inits


def _model(nodes: list, inits: list, inputs: list, name: str) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, name, inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="ops-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def full_logits(images: np.ndarray, width: int = 16) -> np.ndarray:
    """Reference logits for images [N,3,8,8] (only for slow_repeats=0 bundles)."""
    w1, w2 = _weights(width)
    return images.reshape(images.shape[0], -1) @ w1 @ w2


def build_tiny_bundle(out_dir: pathlib.Path, *, model_name: str = "tiny", width: int = 16, slow_repeats: int = 0):
    """Write a valid bundle at ``out_dir`` and return the partitioner Bundle."""
    image_in = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", *IMAGE_SHAPE])
    mid_in = helper.make_tensor_value_info("mid", TensorProto.FLOAT, ["N", width])
    head_nodes, head_inits = _head_nodes(width)
    tail_nodes, tail_inits = _tail_nodes(width, slow_repeats)
    full = _model(head_nodes + tail_nodes, head_inits + tail_inits, [image_in], f"{model_name}_full")
    head = helper.make_graph(
        head_nodes, f"{model_name}_head", [image_in],
        [helper.make_tensor_value_info("mid", TensorProto.FLOAT, ["N", width])], initializer=head_inits,
    )
    head_model = helper.make_model(head, opset_imports=[helper.make_opsetid("", 17)])
    head_model.ir_version = 8
    tail = _model(tail_nodes, tail_inits, [mid_in], f"{model_name}_tail")

    logits = Tensor("logits", "FP32", (-1, CLASSES), codec=None)
    spec = BundleSpec(
        model_name=model_name, model_version="1", created_by="ops-tests", opset=17, top_k=1, softmax=False,
        full_model=full.SerializeToString(), full_model_path="edge/full.onnx",
        input=InputSpec(Tensor("image", "FP32", (-1, *IMAGE_SHAPE), codec=None), IMAGE_SHAPE[2], IMAGE_SHAPE[1],
                        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
        outputs=(logits,),
        verification=bundle_pb2.Verification(frames=1, passed=True, max_abs_error=0.0),
        cuts=(
            CutSpec("input", (Tensor("image_jpeg", "BYTES", (-1,), codec=None),), tail=FULL, wire_bytes=1000),
            CutSpec("mid", (Tensor("mid", "FP32", (-1, width), codec=None),), head=head_model.SerializeToString(),
                    tail=tail.SerializeToString(), wire_bytes=4 * width),
            CutSpec("output", (logits,), head=FULL),
        ),
    )
    return write_test_bundle(out_dir, spec)


def mid_model(bundle) -> tuple[str, str]:
    """(served name, version) of the bundle's 'mid' tail."""
    return tail_model_name(bundle.manifest, "mid"), tail_model_version(bundle.manifest)
