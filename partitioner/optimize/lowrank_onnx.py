"""Low-rank factorization directly in an ONNX graph, for models without their PyTorch source.

Rewritten nodes (weights must be initializers; others are left alone):

* ``MatMul(X, W)`` with a 2-D ``W`` (K × N) -> ``MatMul(MatMul(X, P), Q)``;
* ``Gemm(X, B, C)`` (``transA = 0``) -> ``Gemm(MatMul(X, P), Q, C)`` with ``alpha`` folded in;
* ``Conv(X, W, b)`` with a 1 × 1 kernel and ``group = 1`` -> a 1 × 1 ``Conv`` to ``r`` channels
  (keeping stride and pads) then a 1 × 1 ``Conv`` with the bias.

``P @ Q`` is the truncated SVD of the weight; ranks come from the same energy rule as the
PyTorch pass (:func:`partitioner.optimize.lowrank.choose_rank`) and a node is rewritten only
when the rank makes it cheaper, unless its rank is fixed by node name. The transformer is
in memory: it takes a ``ModelProto`` and returns a new one.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

from partitioner.optimize.lowrank import choose_rank, is_cheaper, split_matrix
from partitioner.optimize.steps import LowRank
from protos import bundle_pb2

logger = logging.getLogger(__name__)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _weight_matrix(node: onnx.NodeProto, inits: dict[str, np.ndarray]) -> np.ndarray | None:
    """The node's weight as K × N (input features × outputs), or None when it cannot be rewritten."""
    if len(node.input) < 2 or node.input[1] not in inits:
        return None
    w = inits[node.input[1]]
    attrs = _attrs(node)
    if node.op_type == "MatMul" and w.ndim == 2:
        return w
    if node.op_type == "Gemm" and w.ndim == 2 and not attrs.get("transA", 0):
        return (w.T if attrs.get("transB", 0) else w) * np.float32(attrs.get("alpha", 1.0))
    if (node.op_type == "Conv" and w.ndim == 4 and w.shape[2:] == (1, 1) and attrs.get("group", 1) == 1
            and all(d == 1 for d in attrs.get("dilations", [1, 1]))):
        return w[:, :, 0, 0].T
    return None


def factorize_onnx(model: onnx.ModelProto, step: LowRank) -> tuple[onnx.ModelProto, list[bundle_pb2.LayerRank]]:
    """A copy of ``model`` with its Gemm/MatMul/1×1 Conv weights factorized; the ranks chosen.

    Raises ``ValueError`` naming a fixed-rank node that is missing or cannot be factorized,
    or a rank above its full rank.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    fixed = dict(step.ranks)
    names = {n.name for n in graph.node}
    for name in fixed:
        if name not in names:
            raise ValueError(f"node {name!r} is not in the graph; expected the name of a Gemm, MatMul or 1x1 Conv")
    new_nodes: list[onnx.NodeProto] = []
    chosen: list[bundle_pb2.LayerRank] = []
    for node in graph.node:
        matrix = _weight_matrix(node, inits) if node.op_type in ("MatMul", "Gemm", "Conv") else None
        if matrix is None:
            if node.name in fixed:
                raise ValueError(f"node {node.name!r} ({node.op_type}) cannot be factorized; expected a Gemm, MatMul "
                                 "or 1x1 Conv (group 1) whose weight is an initializer")
            new_nodes.append(node)
            continue
        fan_in, fan_out = matrix.shape
        full = min(matrix.shape)
        if node.name in fixed:
            rank = fixed[node.name]
            if rank > full:
                raise ValueError(f"rank {rank} of node {node.name!r} is above its full rank {full}")
        else:
            rank = choose_rank(np.linalg.svd(matrix.astype(np.float64), compute_uv=False), step.energy)
            if not is_cheaper(rank, fan_in, fan_out):
                new_nodes.append(node)
                continue
        left, right = split_matrix(matrix, rank)  # matrix (K x N) ~= left (K x r) @ right (r x N)
        new_nodes.extend(_rewrite(node, left, right, graph))
        chosen.append(bundle_pb2.LayerRank(layer=node.name or node.output[0], rank=rank, full_rank=full))
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {name for n in graph.node for name in n.input} | {i.name for i in graph.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(out)
    logger.info("%s: factorized %d ONNX nodes", step.label, len(chosen))
    return out, chosen


def _rewrite(node: onnx.NodeProto, left: np.ndarray, right: np.ndarray, graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    base = node.name or node.output[0]
    p_name, q_name, mid = f"{base}/lowrank_P", f"{base}/lowrank_Q", f"{base}/lowrank_mid"
    rank = left.shape[1]
    if node.op_type == "Conv":
        attrs = {k: v for k, v in _attrs(node).items() if k in ("strides", "pads", "auto_pad")}
        graph.initializer.extend([
            numpy_helper.from_array(np.ascontiguousarray(left.T.reshape(rank, -1, 1, 1)), p_name),
            numpy_helper.from_array(np.ascontiguousarray(right.T.reshape(-1, rank, 1, 1)), q_name),
        ])
        first = helper.make_node("Conv", [node.input[0], p_name], [mid], name=f"{base}/lowrank_0",
                                 kernel_shape=[1, 1], **attrs)
        second = helper.make_node("Conv", [mid, q_name, *node.input[2:]], list(node.output), name=f"{base}/lowrank_1",
                                  kernel_shape=[1, 1])
        return [first, second]
    graph.initializer.extend([numpy_helper.from_array(left, p_name), numpy_helper.from_array(right, q_name)])
    first = helper.make_node("MatMul", [node.input[0], p_name], [mid], name=f"{base}/lowrank_0")
    if node.op_type == "MatMul":
        second = helper.make_node("MatMul", [mid, q_name], list(node.output), name=f"{base}/lowrank_1")
    else:
        beta = _attrs(node).get("beta", 1.0)
        second = helper.make_node("Gemm", [mid, q_name, *node.input[2:]], list(node.output), name=f"{base}/lowrank_1",
                                  beta=beta)
    return [first, second]
