"""Wire codecs at a cut: how the activation crossing it travels, and what that costs in bytes.

* ``fp32``: the tensor as the head computes it.
* ``fp16``: a Cast to FLOAT16 ends the head, a Cast back to FLOAT starts the tail.
* ``int8``: a QuantizeLinear with a calibrated per-tensor scale and zero point ends the
  head (output UINT8) and the matching DequantizeLinear starts the tail, so the wire
  carries one byte per element and both graphs hold the same constants; the same
  values are recorded in ``TensorSpec.encoding`` (real = (q - zero_point) * scale).

Graph rewrites take and return ``ModelProto`` (copies; inputs are not changed) and
touch no files. :func:`wire_bytes_by_codec` measures the bytes per frame of every
codec, with and without zlib, on real activations.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from partitioner.subgraphs import rename_outer_reads

WIRE_CODECS = ("fp32", "fp16", "int8")
ZLIB_LEVEL = 6
_SUFFIX = "__wire_fp32"


@dataclass(frozen=True)
class Int8Params:
    """Affine uint8 quantization of one tensor: real = (q - zero_point) * scale."""

    scale: float
    zero_point: int

    def quantize(self, x: np.ndarray) -> np.ndarray:
        q = np.rint(x.astype(np.float32) / np.float32(self.scale)) + self.zero_point
        return np.clip(q, 0, 255).astype(np.uint8)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return ((q.astype(np.float32) - self.zero_point) * np.float32(self.scale)).astype(np.float32)


CLIP_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)


def _params_for(lo: float, hi: float) -> Int8Params:
    lo, hi = min(0.0, lo), max(0.0, hi)
    if hi - lo < 1e-12:
        return Int8Params(scale=1.0, zero_point=0)
    scale = (hi - lo) / 255.0
    zero_point = int(np.clip(round(-lo / scale), 0, 255))
    return Int8Params(scale=float(np.float32(scale)), zero_point=zero_point)


def calibrate_int8(activations: Sequence[np.ndarray], *, method: str = "mse", max_samples: int = 1 << 20) -> Int8Params:
    """Asymmetric uint8 parameters for the wire, from real activations.

    ``"minmax"`` covers the observed range (widened to include zero, so zero is exact).
    ``"mse"`` (default) shrinks that range by each of :data:`CLIP_FRACTIONS` and keeps
    the one with the least mean squared quantization error over the activations (at
    most ``max_samples`` values, evenly strided): clipping a few outliers buys a finer
    step for everything else.
    """
    if not activations:
        raise ValueError("no activations to calibrate the int8 wire codec on")
    if method not in ("mse", "minmax"):
        raise ValueError(f"int8 calibration method {method!r} is not 'mse' or 'minmax'")
    lo = min(float(np.min(a)) for a in activations)
    hi = max(float(np.max(a)) for a in activations)
    if method == "minmax":
        return _params_for(lo, hi)
    values = np.concatenate([np.asarray(a, np.float32).ravel() for a in activations])
    if values.size > max_samples:
        values = values[:: values.size // max_samples + 1]
    best, best_err = _params_for(lo, hi), float("inf")
    for fraction in CLIP_FRACTIONS:
        params = _params_for(lo * fraction, hi * fraction)
        err = float(np.mean((params.dequantize(params.quantize(values)) - values) ** 2))
        if err < best_err:
            best, best_err = params, err
    return best


# --------------------------------------------------------------------------- graph rewrites


def _rename_uses(graph: onnx.GraphProto, old: str, new: str, *, inputs: bool, outputs: bool) -> None:
    for node in graph.node:
        if inputs:
            node.input[:] = [new if n == old else n for n in node.input]
            rename_outer_reads(node, old, new)  # an If/Loop body reading the value from the outer scope
        if outputs:
            node.output[:] = [new if n == old else n for n in node.output]


def _drop_value_info(graph: onnx.GraphProto, names: set[str]) -> None:
    keep = [vi for vi in graph.value_info if vi.name not in names]
    del graph.value_info[:]
    graph.value_info.extend(keep)


def _check_names(graph: onnx.GraphProto, names: Sequence[str], where: str, attr: str) -> None:
    have = {v.name for v in getattr(graph, attr)}
    missing = [n for n in names if n not in have]
    if missing:
        raise ValueError(f"{where} has no graph {attr} named {missing}; it has {sorted(have)}")


def _with_wire_ops(
    head: onnx.ModelProto | None,
    tail: onnx.ModelProto | None,
    names: Sequence[str],
    head_node: Callable[[str, str], tuple[list[onnx.NodeProto], list[onnx.TensorProto]]],
    tail_node: Callable[[str, str], tuple[list[onnx.NodeProto], list[onnx.TensorProto]]],
    wire_elem_type: int,
) -> tuple[onnx.ModelProto | None, onnx.ModelProto | None]:
    new_head = new_tail = None
    if head is not None:
        new_head = onnx.ModelProto()
        new_head.CopyFrom(head)
        g = new_head.graph
        _check_names(g, names, "head", "output")
        _drop_value_info(g, set(names))
        for name in names:
            inner = name + _SUFFIX
            _rename_uses(g, name, inner, inputs=True, outputs=True)
            nodes, inits = head_node(name, inner)
            g.node.extend(nodes)
            g.initializer.extend(inits)
            for out in g.output:
                if out.name == name:
                    out.type.tensor_type.elem_type = wire_elem_type
    if tail is not None:
        new_tail = onnx.ModelProto()
        new_tail.CopyFrom(tail)
        g = new_tail.graph
        _check_names(g, names, "tail", "input")
        _drop_value_info(g, set(names))
        front: list[onnx.NodeProto] = []
        for name in names:
            inner = name + _SUFFIX
            _rename_uses(g, name, inner, inputs=True, outputs=False)
            nodes, inits = tail_node(name, inner)
            front.extend(nodes)
            g.initializer.extend(inits)
            for inp in g.input:
                if inp.name == name:
                    inp.type.tensor_type.elem_type = wire_elem_type
        rest = list(g.node)
        del g.node[:]
        g.node.extend(front + rest)
    return new_head, new_tail


def add_int8_wire(
    head: onnx.ModelProto | None,
    tail: onnx.ModelProto | None,
    params: Mapping[str, Int8Params],
) -> tuple[onnx.ModelProto | None, onnx.ModelProto | None]:
    """Head ends with QuantizeLinear(scale, zp) per cut tensor (UINT8 out); tail starts with DequantizeLinear."""

    def consts(name: str) -> tuple[onnx.TensorProto, onnx.TensorProto]:
        p = params[name]
        return (
            numpy_helper.from_array(np.array(p.scale, dtype=np.float32), name + "__wire_scale"),
            numpy_helper.from_array(np.array(p.zero_point, dtype=np.uint8), name + "__wire_zero_point"),
        )

    def head_node(name: str, inner: str):
        s, z = consts(name)
        node = helper.make_node("QuantizeLinear", [inner, s.name, z.name], [name], name=name + "__wire_quantize")
        return [node], [s, z]

    def tail_node(name: str, inner: str):
        s, z = consts(name)
        node = helper.make_node("DequantizeLinear", [name, s.name, z.name], [inner], name=name + "__wire_dequantize")
        return [node], [s, z]

    return _with_wire_ops(head, tail, list(params), head_node, tail_node, TensorProto.UINT8)


def add_fp16_wire(
    head: onnx.ModelProto | None, tail: onnx.ModelProto | None, names: Sequence[str]
) -> tuple[onnx.ModelProto | None, onnx.ModelProto | None]:
    """Head ends with Cast to FLOAT16 per cut tensor; tail starts with Cast back to FLOAT."""

    def head_node(name: str, inner: str):
        return [helper.make_node("Cast", [inner], [name], to=TensorProto.FLOAT16, name=name + "__wire_to_fp16")], []

    def tail_node(name: str, inner: str):
        return [helper.make_node("Cast", [name], [inner], to=TensorProto.FLOAT, name=name + "__wire_to_fp32")], []

    return _with_wire_ops(head, tail, list(names), head_node, tail_node, TensorProto.FLOAT16)


def apply_wire_codec(
    codec: str,
    head: onnx.ModelProto | None,
    tail: onnx.ModelProto | None,
    names: Sequence[str],
    int8_params: Mapping[str, Int8Params] | None = None,
) -> tuple[onnx.ModelProto | None, onnx.ModelProto | None]:
    """Rewrite a head/tail pair for ``codec`` ('fp32' returns them unchanged)."""
    if codec == "fp32":
        return head, tail
    if codec == "fp16":
        return add_fp16_wire(head, tail, names)
    if codec == "int8":
        if int8_params is None or set(int8_params) != set(names):
            raise ValueError(f"int8 codec needs calibrated parameters for {list(names)}; got {sorted(int8_params or {})}")
        return add_int8_wire(head, tail, {n: int8_params[n] for n in names})
    raise ValueError(f"wire codec {codec!r} is not one of {', '.join(WIRE_CODECS)}")


# --------------------------------------------------------------------------- measurement


def encode_activation(codec: str, x: np.ndarray, params: Int8Params | None = None) -> bytes:
    """The raw little-endian bytes of ``x`` as ``codec`` puts them on the wire.

    Codecs apply to floating-point tensors only; any other tensor travels as it is.
    """
    if not np.issubdtype(np.asarray(x).dtype, np.floating):
        return np.ascontiguousarray(x).tobytes()
    if codec == "fp32":
        return np.ascontiguousarray(x, dtype="<f4").tobytes()
    if codec == "fp16":
        return np.ascontiguousarray(x, dtype="<f2").tobytes()
    if codec == "int8":
        if params is None:
            raise ValueError("int8 encoding needs Int8Params")
        return params.quantize(x).tobytes()
    raise ValueError(f"wire codec {codec!r} is not one of {', '.join(WIRE_CODECS)}")


def wire_bytes_by_codec(
    activations: Mapping[str, Sequence[np.ndarray]],
    int8_params: Mapping[str, Int8Params],
) -> dict[str, int]:
    """Mean bytes per frame for every codec, and with zlib (``"<codec>+zlib"``), over real activations.

    ``activations`` maps each cut tensor to its per-frame arrays (batch of one); the
    bytes of all cut tensors of a frame add up. zlib is measured per tensor at level 6.
    """
    names = list(activations)
    if not names:
        raise ValueError("no cut tensors to measure")
    frames = len(activations[names[0]])
    if frames == 0:
        raise ValueError("no frames to measure wire bytes on")
    totals: dict[str, int] = {}
    for codec in WIRE_CODECS:
        raw_total = zip_total = 0
        for name in names:
            for x in activations[name]:
                data = encode_activation(codec, x, int8_params.get(name) if codec == "int8" else None)
                raw_total += len(data)
                zip_total += len(zlib.compress(data, ZLIB_LEVEL))
        totals[codec] = int(round(raw_total / frames))
        totals[f"{codec}+zlib"] = int(round(zip_total / frames))
    return totals
