"""Float image input and float outputs for integer models (in memory: ``ModelProto`` in and out).

A pre-quantized ``.tflite`` (e.g. efficientnet_lite3) takes uint8 pixels and returns uint8
scores. splitinfer's contracts feed FP32 preprocessed frames (``InputSpec``) and score
float outputs, so :func:`float_image_io` wraps such a model without touching its own
quantization: the uint8 image input becomes an FP32 one holding the same 0..255 pixel
values (rounded, clipped and cast back to uint8 as the first step: exact for pixel
values), and each uint8/int8 output made by a ``QuantizeLinear`` is followed by the
matching ``DequantizeLinear`` (its real value, exactly as the model's quantization
defines it). The outputs keep their names.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

logger = logging.getLogger(__name__)

_INTEGER_OUTPUTS = (TensorProto.UINT8, TensorProto.INT8)


def float_image_io(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` with a float image input and float outputs; also what changed, in words."""
    model = _copy(model)
    graph = model.graph
    initializer_names = {t.name for t in graph.initializer}
    inputs = [vi for vi in graph.input if vi.name not in initializer_names]
    changes: list[str] = []
    nodes_front: list[onnx.NodeProto] = []
    for vi in inputs:
        tt = vi.type.tensor_type
        if tt.elem_type != TensorProto.UINT8 or len(tt.shape.dim) != 4:
            continue
        inner = f"{vi.name}__uint8"
        _rename_reads(graph, vi.name, inner)
        low, high = f"{vi.name}__min", f"{vi.name}__max"
        graph.initializer.extend([numpy_helper.from_array(np.array(0.0, np.float32), low),
                                  numpy_helper.from_array(np.array(255.0, np.float32), high)])
        nodes_front += [
            helper.make_node("Round", [vi.name], [f"{vi.name}__rounded"], name=f"{vi.name}__round"),
            helper.make_node("Clip", [f"{vi.name}__rounded", low, high], [f"{vi.name}__clipped"],
                             name=f"{vi.name}__clip"),
            helper.make_node("Cast", [f"{vi.name}__clipped"], [inner], to=TensorProto.UINT8, name=f"{vi.name}__cast"),
        ]
        tt.elem_type = TensorProto.FLOAT
        changes.append(f"input {vi.name!r}: uint8 pixels fed as FP32 0..255 (rounded and cast inside the model)")
    producers = {out: node for node in graph.node for out in node.output}
    nodes_back: list[onnx.NodeProto] = []
    for out in graph.output:
        tt = out.type.tensor_type
        producer = producers.get(out.name)
        if tt.elem_type not in _INTEGER_OUTPUTS or producer is None or producer.op_type != "QuantizeLinear":
            continue
        inner = f"{out.name}__quantized"
        _rename_everywhere(graph, out.name, inner)
        zero_point = list(producer.input[2:3])
        nodes_back.append(helper.make_node("DequantizeLinear", [inner, producer.input[1], *zero_point], [out.name],
                                           name=f"{out.name}__dequantize"))
        tt.elem_type = TensorProto.FLOAT
        changes.append(f"output {out.name!r}: dequantized to FP32 with the model's own scale and zero point")
    if not changes:
        return model, changes
    all_nodes = nodes_front + list(graph.node) + nodes_back
    del graph.node[:]
    graph.node.extend(all_nodes)
    onnx.checker.check_model(model)
    for change in changes:
        logger.info("%s", change)
    return model, changes


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _rename_reads(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    for out in graph.output:
        if out.name == old:
            raise ValueError(f"input {old!r} is also a graph output; nothing to adapt")


def _rename_everywhere(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    for vi in graph.value_info:
        if vi.name == old:
            vi.name = new
