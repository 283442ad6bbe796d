"""Rewrites of a QDQ graph into the shapes ONNX Runtime's CPU kernels fuse, without
changing what the quantized model computes.

* :func:`fold_channel_scales` — NNCF quantizes the input of a depthwise convolution per
  channel (``QuantizeLinear`` with ``axis=1``). ORT's ``QLinearConv`` takes one input
  scale, so such a convolution runs in float on dequantized values (MobileNetV2: 2.2x
  slower than FP32). Channel ``c``'s scale ``s_c`` can move into the weights around it:
  the producing Conv's output channel is multiplied by ``a_c = max(s) / s_c`` (its
  per-channel weight scale and its bias grow by ``a_c``; the INT8 weights stay the same
  integers), the depthwise weights' scale shrinks by ``a_c``, and one scale ``max(s)``
  then quantizes every channel to the same integers as before. A ``Clip(0, m)`` between
  the Conv and the quantizer becomes ``Relu`` when ``m`` is above every channel's largest
  representable value (the quantizer already saturates there); otherwise that tensor
  is left per channel.
* :func:`quantize_float_biases` — a Conv whose inputs are dequantized but whose bias is
  float gets an INT32 bias with scale ``input_scale * weight_scale`` (ORT's fused
  kernels take the bias that way); the rounding is below half a bias step.

Pure ModelProto -> ModelProto; anything that does not match exactly is left as it is.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

logger = logging.getLogger(__name__)

_QMAX = {np.dtype(np.uint8): 255, np.dtype(np.int8): 127}


class _Graph:
    """Index of one graph: initializer arrays, producers, consumers (rebuilt on demand)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.uses: dict[str, int] = {}
        for n in model.graph.node:
            for name in n.input:
                self.consumers.setdefault(name, []).append(n)
                self.uses[name] = self.uses.get(name, 0) + 1
        self.graph_outputs = {o.name for o in model.graph.output}
        # Outputs of Constant nodes (read-only: exporters give Clip its bounds this way)
        self.constants = {n.output[0]: numpy_helper.to_array(a.t) for n in model.graph.node
                          if n.op_type == "Constant" for a in n.attribute if a.name == "value"}

    def value(self, name: str) -> np.ndarray | None:
        """The array of an initializer or a Constant node's output named ``name``, else None."""
        return self.inits[name] if name in self.inits else self.constants.get(name)

    def only_consumer(self, tensor: str) -> onnx.NodeProto | None:
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in self.graph_outputs else None

    def set(self, name: str, value: np.ndarray) -> None:
        self.inits[name] = value

    def write(self) -> None:
        known = set()
        for tensor in self.model.graph.initializer:
            known.add(tensor.name)
            tensor.CopyFrom(numpy_helper.from_array(self.inits[tensor.name], tensor.name))
        for name, value in self.inits.items():
            if name not in known:
                self.model.graph.initializer.append(numpy_helper.from_array(value, name))


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _weight_dq(g: _Graph, conv: onnx.NodeProto) -> onnx.NodeProto | None:
    """The per-channel (axis 0) DequantizeLinear feeding ``conv``'s weight, if it owns its scale."""
    dq = g.producer.get(conv.input[1]) if len(conv.input) > 1 else None
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[1] not in g.inits or g.uses.get(dq.input[1]) != 1:
        return None
    if g.inits[dq.input[1]].ndim != 1 or _axis(dq) != 0 or g.uses.get(conv.input[1]) != 1:
        return None
    return dq


def _is_depthwise(g: _Graph, conv: onnx.NodeProto, channels: int) -> bool:
    group = next((a.i for a in conv.attribute if a.name == "group"), 1)
    dq = _weight_dq(g, conv)
    return conv.op_type == "Conv" and group == channels and dq is not None and g.inits[dq.input[1]].shape == (channels,)


def _fold_one(g: _Graph, q: onnx.NodeProto) -> bool:
    scale_name = q.input[1]
    s = g.inits.get(scale_name)
    zp_name = q.input[2] if len(q.input) > 2 else ""
    zp = g.inits.get(zp_name)
    if s is None or s.ndim != 1 or s.size < 2 or _axis(q) != 1 or zp is None or np.any(zp != zp.flat[0]):
        return False
    channels = s.size
    dqs = g.consumers.get(q.output[0], [])
    if len(dqs) != 1 or dqs[0].op_type != "DequantizeLinear" or list(dqs[0].input[1:]) != list(q.input[1:]):
        return False
    dq = dqs[0]
    targets = g.consumers.get(dq.output[0], [])
    if not targets or dq.output[0] in g.graph_outputs or not all(_is_depthwise(g, t, channels) for t in targets):
        return False
    act = g.producer.get(q.input[0])
    conv = act
    if act is not None and act.op_type in ("Relu", "Clip"):
        if g.only_consumer(act.output[0]) is not q:
            return False
        conv = g.producer.get(act.input[0])
    else:
        act = None
    if conv is None or conv.op_type != "Conv" or g.only_consumer(conv.output[0]) is not (act or q):
        return False
    conv_dq = _weight_dq(g, conv)
    if conv_dq is None or g.inits[conv_dq.input[1]].shape != (channels,):
        return False
    bias = conv.input[2] if len(conv.input) > 2 and conv.input[2] else ""
    bias_dq = g.producer.get(bias) if bias else None
    if bias and not (bias in g.inits and g.uses.get(bias) == 1) and not (
        bias_dq is not None and bias_dq.op_type == "DequantizeLinear" and g.uses.get(bias_dq.input[1]) == 1
    ):
        return False
    qmax = _QMAX.get(np.dtype(zp.dtype))
    if qmax is None:
        return False
    if act is not None and act.op_type == "Clip":
        low = g.value(act.input[1]) if len(act.input) > 1 and act.input[1] else None
        high = g.value(act.input[2]) if len(act.input) > 2 and act.input[2] else None
        if low is None or float(low) != 0.0:
            return False
        top = (qmax - float(zp.flat[0])) * s.astype(np.float64)
        if high is not None and np.any(top > float(high) * (1 + 1e-6)):
            return False
    a = float(s.max()) / s.astype(np.float64)
    g.set(conv_dq.input[1], (g.inits[conv_dq.input[1]] * a).astype(np.float32))
    if bias and bias in g.inits:
        g.set(bias, (g.inits[bias] * a).astype(g.inits[bias].dtype))
    elif bias_dq is not None:
        g.set(bias_dq.input[1], (g.inits[bias_dq.input[1]] * a).astype(np.float32))
    for target in targets:
        w_dq = _weight_dq(g, target)
        assert w_dq is not None
        g.set(w_dq.input[1], (g.inits[w_dq.input[1]] / a).astype(np.float32))
    if act is not None and act.op_type == "Clip":
        act.CopyFrom(helper.make_node("Relu", [act.input[0]], [act.output[0]], name=act.name))
    new_scale, new_zp = f"{scale_name}/per_tensor", f"{zp_name}/per_tensor"
    g.set(new_scale, np.array(s.max(), np.float32))
    g.set(new_zp, np.array(zp.flat[0], zp.dtype))
    for node in (q, dq):
        node.input[1], node.input[2] = new_scale, new_zp
        for attr in [x for x in node.attribute if x.name == "axis"]:
            node.attribute.remove(attr)
    return True


def fold_channel_scales(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with per-channel activation quantizers before depthwise
    convolutions turned per-tensor (see the module docstring)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = _Graph(out)
    folded = sum(_fold_one(g, q) for q in list(out.graph.node) if q.op_type == "QuantizeLinear")
    if folded:
        g.write()
        _drop_unused_initializers(out)
    logger.info("folded %d per-channel activation scales into weight scales", folded)
    return out


def quantize_float_biases(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` where each Conv with a per-tensor dequantized input, a
    dequantized weight and a float bias initializer gets an INT32 dequantized bias."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = _Graph(out)
    changed = 0
    for conv in out.graph.node:
        if conv.op_type != "Conv" or len(conv.input) < 3 or conv.input[2] not in g.inits or g.uses.get(conv.input[2]) != 1:
            continue
        x_dq, w_dq = g.producer.get(conv.input[0]), g.producer.get(conv.input[1])
        if x_dq is None or w_dq is None or x_dq.op_type != "DequantizeLinear" or w_dq.op_type != "DequantizeLinear":
            continue
        s_x, s_w = g.inits.get(x_dq.input[1]), g.inits.get(w_dq.input[1])
        if s_x is None or s_w is None or s_x.size != 1:
            continue
        bias = g.inits[conv.input[2]].astype(np.float64)
        scale = (float(s_x.reshape(())) * s_w.astype(np.float64)).reshape(-1) * np.ones_like(bias)
        if np.any(scale <= 0):
            continue
        info = np.iinfo(np.int32)
        q = np.clip(np.round(bias / scale), info.min, info.max).astype(np.int32)
        name = conv.input[2]
        g.set(f"{name}/int32", q)
        g.set(f"{name}/int32_scale", scale.astype(np.float32))
        g.set(f"{name}/int32_zero_point", np.zeros_like(q))
        out.graph.node.append(helper.make_node(
            "DequantizeLinear", [f"{name}/int32", f"{name}/int32_scale", f"{name}/int32_zero_point"],
            [f"{name}/dequantized"], name=f"{name}/DequantizeLinear", axis=0))
        conv.input[2] = f"{name}/dequantized"
        changed += 1
    if changed:
        g.write()
        _drop_unused_initializers(out)
        _sort_topologically(out)
    logger.info("gave %d float Conv biases an INT32 quantization", changed)
    return out


def activations_to_uint8(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose INT8 activation quantizers are UINT8 with the zero point
    moved by 128 (the same real values, bit for bit): ORT fuses a Conv only when its input
    and output quantizers share a type, and NNCF writes INT8 for signed tensors next to
    UINT8 after a Relu. Weight quantizers (an initializer as input) are not touched."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = _Graph(out)
    moved: dict[str, str] = {}
    retyped: set[str] = set()
    for node in out.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        if node.op_type == "DequantizeLinear" and node.input[0] in g.inits:
            continue  # a weight
        zp_name = node.input[2]
        zp = g.inits.get(zp_name)
        if zp is None or zp.dtype != np.int8:
            continue
        if zp_name not in moved:
            moved[zp_name] = f"{zp_name}/uint8"
            g.set(moved[zp_name], (zp.astype(np.int16) + 128).astype(np.uint8))
        node.input[2] = moved[zp_name]
        if node.op_type == "QuantizeLinear":
            retyped.add(node.output[0])
    stale = [vi for vi in out.graph.value_info if vi.name in retyped]
    for vi in stale:  # the quantized tensor's declared type was INT8
        out.graph.value_info.remove(vi)
    if moved:
        g.write()
        _drop_unused_initializers(out)
    logger.info("moved %d INT8 activation zero points to UINT8", len(moved))
    return out


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def _sort_topologically(model: onnx.ModelProto) -> None:
    available = {t.name for t in model.graph.initializer} | {i.name for i in model.graph.input} | {""}
    pending, ordered = list(model.graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError(f"graph has a cycle or a missing input near node {pending[0].name!r}")
        ready_ids = {id(n) for n in ready}
        for n in ready:
            ordered.append(n)
            available.update(n.output)
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [onnx.NodeProto() for _ in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del model.graph.node[:]
    model.graph.node.extend(copies)
