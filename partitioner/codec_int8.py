"""Feature codecs on INT8 heads (issue 13): the shipped INT8 head with its wire step taken off.

A plain cut's optimized head ends with the wire codec's step, added by
:func:`partitioner.codecs.apply_wire_codec` after the head was quantized: a per-tensor
``QuantizeLinear`` named ``<tensor>__wire_quantize`` producing the UINT8 wire codes (or a
``Cast`` named ``<tensor>__wire_to_fp16``). The INT8 head itself leaves its cut tensors in
float (:class:`partitioner.quantize.Quantizer` quantizes with ``quantize_outputs=False``).
A feature codec must see floats: :func:`codec_input_head` gives back the INT8 head with
float outputs that the codec is then fitted on and appended to (:mod:`partitioner.codec_fit`).
An INT8 wire step is kept and followed by its DequantizeLinear (the codec sees the 8-bit wire
values, dequantized): ONNX Runtime then still fuses the head's last DequantizeLinear -> Conv ->
QuantizeLinear into one INT8 QLinearConv, and it must, because with the codec's per-channel
QuantizeLinear right after the Conv ORT 1.x fuses that instead into a QLinearConv it cannot
run ("result zero point must be a scalar"). Other wire steps (FP16 casts) are removed
(:func:`float_output_head`); an INT8 head that ends in a Conv then meets that ORT failure,
and :func:`partitioner.codec_stage.codec_variants` falls back to the FP32 head. A codec with a
channel projection puts a Conv right after the dequantized wire, which ORT fuses the same way;
:func:`unfused_lowbit_quantize` writes the codec's per-channel quantization as Div + Add + a
per-tensor QuantizeLinear, which no QDQ fusion takes.

This is what makes a codec cut able to pay: on FP32 heads the codec variant of
MobileNetV2's ``features_14_conv_2`` cost more on the device than the whole INT8 model.
Rewrites take and return ``ModelProto`` copies and touch no files.
"""
from __future__ import annotations

from typing import Sequence

import onnx
import numpy as np
from onnx import TensorProto, helper, numpy_helper

__all__ = ["WIRE_STEP_SUFFIXES", "codec_input_head", "dequantized_output_head", "float_output_head",
           "unfused_lowbit_quantize", "wire_step"]

#: Node-name suffixes of the wire steps :mod:`partitioner.codecs` appends to a head, per cut tensor.
WIRE_STEP_SUFFIXES = ("__wire_quantize", "__wire_to_fp16")


def wire_step(head: onnx.ModelProto, name: str) -> onnx.NodeProto | None:
    """The wire-codec node that produces head output ``name``, or None when the output is the head's own value."""
    outputs = [o.name for o in head.graph.output]
    if name not in outputs:
        raise ValueError(f"the head has no output {name!r}; its outputs are {outputs}")
    for node in head.graph.node:
        if name in node.output:
            return node if node.name in {name + s for s in WIRE_STEP_SUFFIXES} else None
    return None


def float_output_head(head: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``head`` whose outputs ``names`` leave as the float values the head computes:
    each output's wire step (see the module docstring) is removed with its constants. An output
    without a wire step must already be FLOAT; anything else raises ValueError naming it."""
    out = onnx.ModelProto()
    out.CopyFrom(head)
    g = out.graph
    for name in names:
        step = wire_step(out, name)
        value = next(o for o in g.output if o.name == name)
        if step is None:
            if value.type.tensor_type.elem_type != TensorProto.FLOAT:
                raise ValueError(f"head output {name!r} is {TensorProto.DataType.Name(value.type.tensor_type.elem_type)}"
                                 f" and not made by a wire step ({list(WIRE_STEP_SUFFIXES)}); expected a FLOAT output")
            continue
        inner, constants = step.input[0], set(step.input[1:])
        kept = [n for n in g.node if not (n.name == step.name and name in n.output)]
        del g.node[:]
        g.node.extend(kept)
        for node in g.node:
            node.output[:] = [name if o == inner else o for o in node.output]
            node.input[:] = [name if i == inner else i for i in node.input]
        used = {i for n in g.node for i in n.input}
        inits = [t for t in g.initializer if t.name not in constants or t.name in used]
        del g.initializer[:]
        g.initializer.extend(inits)
        infos = [v for v in g.value_info if v.name not in (name, inner)]
        del g.value_info[:]
        g.value_info.extend(infos)
        value.type.tensor_type.elem_type = TensorProto.FLOAT
    return out


def dequantized_output_head(head: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``head`` where each output of ``names`` made by an INT8 wire step (QuantizeLinear
    ``<name>__wire_quantize``) is followed by the matching DequantizeLinear, so it leaves as the float
    value of the wire codes. Any other output raises ValueError naming it."""
    out = onnx.ModelProto()
    out.CopyFrom(head)
    g = out.graph
    for name in names:
        step = wire_step(out, name)
        if step is None or step.op_type != "QuantizeLinear":
            raise ValueError(f"head output {name!r} is not made by an INT8 wire step (QuantizeLinear "
                             f"{name + '__wire_quantize'!r}); it is made by {step.name if step else 'the head itself'!r}")
        codes = name + "__wire_codes"
        for node in g.node:
            node.output[:] = [codes if o == name else o for o in node.output]
        g.node.append(helper.make_node("DequantizeLinear", [codes, *step.input[1:]], [name],
                                       name=name + "__wire_dequantize"))
        infos = [v for v in g.value_info if v.name != name]
        del g.value_info[:]
        g.value_info.extend(infos)
        next(o for o in g.output if o.name == name).type.tensor_type.elem_type = TensorProto.FLOAT
    return out


def codec_input_head(head: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """The INT8 head with float outputs ``names`` as a feature codec should see them (module docstring):
    INT8 wire steps dequantized, other wire steps removed."""
    out = head
    for name in names:
        step = wire_step(out, name)
        is_int8 = step is not None and step.op_type == "QuantizeLinear"
        out = dequantized_output_head(out, [name]) if is_int8 else float_output_head(out, [name])
    return out


def unfused_lowbit_quantize(head: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """A copy of a codec head (:func:`partitioner.codec_fit.add_lowbit_wire`) whose per-channel
    ``QuantizeLinear(x, scale, zero_point)`` named ``<name>__lowbit_quantize`` is written as
    ``QuantizeLinear(x / scale + zero_point, 1, 0)``: the same codes (up to the rounding of exact
    halves when the zero point is odd), but no Conv -> QuantizeLinear pair for ONNX Runtime to fuse."""
    out = onnx.ModelProto()
    out.CopyFrom(head)
    g = out.graph
    index = next((i for i, n in enumerate(g.node) if n.name == name + "__lowbit_quantize"), None)
    if index is None:
        raise ValueError(f"the head has no low-bit quantization of {name!r} (node {name + '__lowbit_quantize'!r})")
    node = g.node[index]
    inits = {t.name: t for t in g.initializer}
    scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
    zero = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
    shape = (1, -1, 1, 1)
    consts = [numpy_helper.from_array(scale.reshape(shape), name + "__lowbit_div"),
              numpy_helper.from_array(zero.reshape(shape), name + "__lowbit_add"),
              numpy_helper.from_array(np.array(1.0, np.float32), name + "__lowbit_unit_scale"),
              numpy_helper.from_array(np.array(0, np.uint8), name + "__lowbit_unit_zero_point")]
    scaled, shifted = name + "__lowbit_scaled", name + "__lowbit_shifted"
    nodes = [helper.make_node("Div", [node.input[0], consts[0].name], [scaled], name=name + "__lowbit_divide"),
             helper.make_node("Add", [scaled, consts[1].name], [shifted], name=name + "__lowbit_shift"),
             helper.make_node("QuantizeLinear", [shifted, consts[2].name, consts[3].name], list(node.output),
                              name=node.name)]
    rest = [n for i, n in enumerate(g.node) if i != index]
    del g.node[:]
    g.node.extend(rest[:index] + nodes + rest[index:])
    g.initializer.extend(consts)
    return out
