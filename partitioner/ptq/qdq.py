"""Facts about QDQ graphs, shared by the passes: is a model already quantized, which
scale quantizes a graph output, and the graph outputs with their last Q/DQ pair removed.

"Quantize once": a head whose output tensor ends in QuantizeLinear -> DequantizeLinear
is quantized twice when the wire codec quantizes it again with its own scale. The caller
either reuses the head's scale (:func:`output_quantization`) or ships the output in
float and lets the codec quantize it (:func:`strip_output_qdq`). Pure ModelProto code.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx.helper
from onnx import numpy_helper

#: Operators that only appear in a model someone already quantized.
QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
    "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool",
    "QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat", "QLinearAveragePool", "QGemm",
})


@dataclass(frozen=True)
class TensorQuantization:
    """How a tensor is quantized: ``q = clip(round(x / scale) + zero_point)`` in ``dtype``."""

    scale: float
    zero_point: int
    dtype: str  # "uint8" | "int8" | ...


def quantized_nodes(model: onnx.ModelProto) -> list[str]:
    """'name (op)' of every node that belongs to a quantized graph; empty for a float model."""
    return [f"{n.name or '#' + str(i)} ({n.op_type})" for i, n in enumerate(model.graph.node) if n.op_type in QUANTIZED_OPS]


def refuse_quantized(model: onnx.ModelProto) -> None:
    """Raise ``ValueError`` naming the quantized nodes when ``model`` is already quantized."""
    found = quantized_nodes(model)
    if found:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise ValueError(
            f"the model is already quantized ({shown}); expected a float model: pass the FP32 model to quantize it once"
        )


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def output_quantization(model: onnx.ModelProto) -> dict[str, TensorQuantization]:
    """For each graph output produced by ``DequantizeLinear(QuantizeLinear(t))`` with a
    per-tensor scale, that quantization (the scale a wire codec should reuse)."""
    inits = _initializers(model)
    producers = _producers(model)
    found: dict[str, TensorQuantization] = {}
    for out in model.graph.output:
        dq = producers.get(out.name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or q.input[1] not in inits:
            continue
        scale = numpy_helper.to_array(inits[q.input[1]])
        if scale.size != 1:
            continue
        zp = numpy_helper.to_array(inits[q.input[2]]) if len(q.input) > 2 and q.input[2] in inits else np.uint8(0)
        found[out.name] = TensorQuantization(float(scale.reshape(())), int(np.asarray(zp).reshape(())), str(zp.dtype))
    return found


def strip_output_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs come straight from the float producer:
    every trailing ``QuantizeLinear -> DequantizeLinear`` pair on an output is removed
    (the output keeps its name), so the only quantization of it is the wire codec's."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = list(out.graph.node)
    producer_index = {name: i for i, node in enumerate(nodes) for name in node.output}
    consumers: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    drop: set[int] = set()
    rename: dict[str, str] = {}
    identities: list[onnx.NodeProto] = []
    for output in out.graph.output:
        dq_i = producer_index.get(output.name)
        if dq_i is None or nodes[dq_i].op_type != "DequantizeLinear":
            continue
        q_i = producer_index.get(nodes[dq_i].input[0])
        if q_i is None or nodes[q_i].op_type != "QuantizeLinear" or consumers.get(nodes[q_i].output[0], 0) != 1:
            continue
        source = nodes[q_i].input[0]
        drop.update({dq_i, q_i})
        if consumers.get(source, 0) == 1 and source in producer_index:  # only Q read it: rename at the producer
            rename[source] = output.name
        else:
            identities.append(onnx.helper.make_node("Identity", [source], [output.name], name=f"{output.name}_float"))
    kept = [n for i, n in enumerate(nodes) if i not in drop] + identities
    for node in kept:
        for i, name in enumerate(node.output):
            if name in rename:
                node.output[i] = rename[name]
    del out.graph.node[:]
    out.graph.node.extend(kept)
    return out
