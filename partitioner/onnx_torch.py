"""Run a (small, convolutional) ONNX graph as a frozen, differentiable torch module.

A learned bottleneck distils through the frozen tail of the model (feature losses at later
tensors, distillation on the outputs), so the tail must pass gradients: :class:`OnnxModule`
interprets the graph node by node with torch operators, its initializers frozen buffers.
Only what CNN classifiers like MobileNetV2 are made of is supported (:data:`SUPPORTED_OPS`);
any other operator raises :class:`~partitioner.errors.UnsupportedModel` naming it, so the
caller can fall back to the feature loss at the cut alone.

Importing this module imports torch.
"""
from __future__ import annotations

from typing import Callable, Sequence

import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from partitioner.errors import UnsupportedModel

__all__ = ["OnnxModule", "SUPPORTED_OPS", "unsupported_ops"]


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _conv(node: onnx.NodeProto, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    a = _attrs(node)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UnsupportedModel(f"Conv {node.name!r}: auto_pad {a['auto_pad']!r} is not supported; expected explicit pads")
    pads = list(a.get("pads", [0] * (2 * (x.ndim - 2))))
    half = len(pads) // 2
    if pads[:half] != pads[half:]:
        x = F.pad(x, [p for i in reversed(range(half)) for p in (pads[i], pads[i + half])])
        pads = [0] * len(pads)
    return F.conv2d(x, w, b, stride=tuple(a.get("strides", [1, 1])), padding=tuple(pads[:half]),
                    dilation=tuple(a.get("dilations", [1, 1])), groups=int(a.get("group", 1)))


def _clip(node: onnx.NodeProto, x: torch.Tensor, low: torch.Tensor | None = None,
          high: torch.Tensor | None = None) -> torch.Tensor:
    a = _attrs(node)
    lo = float(low) if low is not None else a.get("min")
    hi = float(high) if high is not None else a.get("max")
    return torch.clamp(x, min=lo, max=hi)


def _gemm(node: onnx.NodeProto, x: torch.Tensor, w: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    a = _attrs(node)
    if a.get("transA", 0):
        x = x.T
    if a.get("transB", 0):
        w = w.T
    y = float(a.get("alpha", 1.0)) * (x @ w)
    return y + float(a.get("beta", 1.0)) * c if c is not None else y


def _flatten(node: onnx.NodeProto, x: torch.Tensor) -> torch.Tensor:
    axis = int(_attrs(node).get("axis", 1))
    return x.reshape(int(torch.tensor(x.shape[:axis]).prod()) if axis else 1, -1)


def _pool(kind: str) -> Callable[..., torch.Tensor]:
    def run(node: onnx.NodeProto, x: torch.Tensor) -> torch.Tensor:
        a = _attrs(node)
        kernel = tuple(a["kernel_shape"])
        strides = tuple(a.get("strides", [1] * len(kernel)))
        pads = list(a.get("pads", [0] * 2 * len(kernel)))
        if pads[: len(kernel)] != pads[len(kernel):]:
            raise UnsupportedModel(f"{node.op_type} {node.name!r}: asymmetric pads {pads} are not supported")
        if kind == "max":
            return F.max_pool2d(x, kernel, strides, tuple(pads[: len(kernel)]))
        return F.avg_pool2d(x, kernel, strides, tuple(pads[: len(kernel)]),
                            count_include_pad=bool(a.get("count_include_pad", 0)))
    return run


_OPS: dict[str, Callable[..., torch.Tensor]] = {
    "Conv": _conv,
    "Clip": _clip,
    "Relu": lambda node, x: torch.relu(x),
    "Sigmoid": lambda node, x: torch.sigmoid(x),
    "Add": lambda node, x, y: x + y,
    "Sub": lambda node, x, y: x - y,
    "Mul": lambda node, x, y: x * y,
    "Div": lambda node, x, y: x / y,
    "GlobalAveragePool": lambda node, x: x.mean(dim=tuple(range(2, x.ndim)), keepdim=True),
    "AveragePool": _pool("avg"),
    "MaxPool": _pool("max"),
    "Flatten": _flatten,
    "Gemm": _gemm,
    "MatMul": lambda node, x, y: x @ y,
    "Concat": lambda node, *xs: torch.cat(xs, dim=int(_attrs(node)["axis"])),
    "Identity": lambda node, x: x,
    "Constant": lambda node: torch.from_numpy(numpy_helper.to_array(node.attribute[0].t).copy()),
}
#: The operators :class:`OnnxModule` runs.
SUPPORTED_OPS = frozenset(_OPS)


def unsupported_ops(model: onnx.ModelProto) -> list[str]:
    """The operator types of ``model``'s graph that :class:`OnnxModule` cannot run (sorted)."""
    return sorted({n.op_type for n in model.graph.node if n.op_type not in _OPS or n.domain not in ("", "ai.onnx")})


class OnnxModule(torch.nn.Module):
    """``model``'s graph from its (single) graph input to ``outputs`` (default: its graph outputs; the
    first is returned as a tensor, several as a tuple). Initializers are frozen buffers."""

    def __init__(self, model: onnx.ModelProto, outputs: Sequence[str] = ()) -> None:
        super().__init__()
        bad = unsupported_ops(model)
        if bad:
            raise UnsupportedModel(f"operators {bad} cannot run in torch here; expected only {sorted(_OPS)}")
        inits = {i.name for i in model.graph.initializer}
        inputs = [i.name for i in model.graph.input if i.name not in inits]
        if len(inputs) != 1:
            raise UnsupportedModel(f"graph inputs {inputs}: expected exactly one (the cut tensor)")
        self.input_name = inputs[0]
        self.outputs = tuple(outputs) or tuple(o.name for o in model.graph.output)
        self._consts: dict[str, str] = {}
        for k, init in enumerate(model.graph.initializer):
            self.register_buffer(f"c{k}", torch.from_numpy(numpy_helper.to_array(init).copy()))
            self._consts[init.name] = f"c{k}"
        self._nodes = list(model.graph.node)
        produced = {self.input_name, *inits, *(t for n in self._nodes for t in n.output)}
        missing = [t for t in self.outputs if t not in produced]
        if missing:
            raise UnsupportedModel(f"tensors {missing} are not computed by the graph; expected node outputs")
        needed = set(self.outputs)
        keep = []
        for node in reversed(self._nodes):  # only the nodes the wanted outputs depend on
            if needed.intersection(node.output):
                keep.append(node)
                needed.update(i for i in node.input if i)
        self._nodes = list(reversed(keep))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        values: dict[str, torch.Tensor] = {self.input_name: x}
        for node in self._nodes:
            args = [self._value(name, values) if name else None for name in node.input]
            values[node.output[0]] = _OPS[node.op_type](node, *args)
        got = tuple(values[name] for name in self.outputs)
        return got[0] if len(got) == 1 else got

    def _value(self, name: str, values: dict[str, torch.Tensor]) -> torch.Tensor:
        if name in values:
            return values[name]
        return getattr(self, self._consts[name])
