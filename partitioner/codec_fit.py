"""Training-free feature codecs at a cut, fitted on calibration activations (issue 13).

A codec at a single NCHW float cut tensor is up to three steps, each optional:

* **channel projection** (PCA over channels, :func:`fit_projection`): a 1x1 Conv
  ``y = W (x - mean)`` ends the head, its transpose ``x' = W^T y + mean`` starts the
  tail; at full rank it reproduces the activation (W is orthonormal);
* **per-channel low-bit quantization** (:func:`calibrate_lowbit`, 2..8 bits): the
  head ends with QuantizeLinear (per channel) + Clip to ``0 .. 2**bits - 1`` and sends
  UINT8 codes; the tail starts with the matching DequantizeLinear;
* or **shared-step quantization** (:func:`calibrate_shared_step`, ``step<pct>``): the same
  graph and wire (8-bit codes), but one step for every channel, ``pct`` % of the cut's RMS
  channel deviation, and each channel's mean on code 128. A channel then takes as many
  levels as its spread needs instead of ``2**bits`` each, so the codes' entropy, not a
  fixed bit width, sets the bytes: the entropy-coded uniform quantizer of transform coding.
  On SSD's conv_708 it carries ~10 % fewer zstd bytes than ``q3`` at 0.6x its squared error
  (benchmarks/results/codec_int8_heads_ssd.json);
* **packing and entropy coding** of the codes on the wire (:mod:`protos.codec`), which
  the edge does after the head and splitinfer's server undoes before the tail.

Both graph steps are plain ONNX, so a Triton-exported tail holds them; only packing and
entropy coding need splitinfer's server. Rewrites take and return ``ModelProto`` copies.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from partitioner.codecs import _drop_value_info, _rename_uses
from protos.codec import MAX_BITS, MIN_BITS, LowBitParams
from protos.wire import COMPRESSIONS

__all__ = ["CodecSpec", "Projection", "add_lowbit_wire", "add_projection", "apply_codec", "calibrate_lowbit",
           "calibrate_shared_step", "fit_projection", "parse_codec", "single_feature_map"]

CLIP_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)
_CODEC = re.compile(r"^(?:pca(?P<rank>\d+)\+)?(?:q(?P<bits>\d)(?P<packed>p?)|step(?P<step>\d+))"
                    r"(?:\+(?P<compression>zlib|zstd))?$")
#: Code of a channel's calibration mean under shared-step quantization (the middle of UINT8).
STEP_CENTRE_CODE = 128
MAX_STEP_PCT = 1000


@dataclass(frozen=True)
class CodecSpec:
    """One codec configuration: ``rank`` channels kept by the projection (None: no projection),
    ``bits`` per code, and how codes travel (``packed``: ``bits`` bits each; ``compression``).
    ``step_pct`` (None: per-channel ranges) quantizes every channel with one step, that percentage
    of the RMS channel deviation, into 8-bit codes (``bits`` must be 8, no packing)."""

    bits: int
    rank: int | None = None
    compression: str = "zstd"
    packed: bool = False
    level: int = 1  # zstd-1: smaller and 2-3x faster than zstd-3 on feature codes (benchmarks/results/codecs.json)
    step_pct: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(f"codec bits {self.bits!r}: expected an integer in {MIN_BITS}..{MAX_BITS}")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1):
            raise ValueError(f"codec rank {self.rank!r}: expected a channel count >= 1 or None (no projection)")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"codec compression {self.compression!r}: expected one of {list(COMPRESSIONS[1:])}")
        if self.step_pct is not None:
            if isinstance(self.step_pct, bool) or not isinstance(self.step_pct, int) or \
                    not 1 <= self.step_pct <= MAX_STEP_PCT:
                raise ValueError(f"codec step_pct {self.step_pct!r}: expected an integer percentage in 1..{MAX_STEP_PCT}")
            if self.bits != 8 or self.packed:
                raise ValueError(f"codec step{self.step_pct} with bits={self.bits}, packed={self.packed}: shared-step "
                                 "codes are 8-bit and unpacked; expected bits=8, packed=False")

    @property
    def name(self) -> str:
        parts = [f"pca{self.rank}"] if self.rank is not None else []
        if self.step_pct is not None:
            parts.append(f"step{self.step_pct}")
        else:
            parts.append(f"q{self.bits}" + ("p" if self.packed and self.bits < 8 else ""))
        if self.compression not in ("", "none"):
            parts.append(self.compression)
        return "+".join(parts)

    @property
    def packed_bits(self) -> int:
        return self.bits if self.packed else 8

    @property
    def needs_splitinfer_server(self) -> bool:
        return self.packed_bits != 8 or self.compression not in ("", "none")


def parse_codec(name: str) -> CodecSpec:
    """``[pca<rank>+](q<bits>[p]|step<pct>)[+zstd|+zlib]`` -> CodecSpec (``p``: codes packed ``bits``
    bits each; ``step<pct>``: shared-step quantization, :func:`calibrate_shared_step`)."""
    m = _CODEC.match(name)
    if not m:
        raise ValueError(f"feature codec {name!r}: expected [pca<rank>+](q<bits>[p]|step<pct>)[+zstd|+zlib], "
                         "e.g. 'q4+zstd', 'pca16+q4p' or 'step70+zstd'")
    rank = int(m["rank"]) if m["rank"] else None
    compression = m["compression"] or "none"
    if m["step"] is not None:
        return CodecSpec(bits=8, rank=rank, compression=compression, step_pct=int(m["step"]))
    return CodecSpec(bits=int(m["bits"]), rank=rank, compression=compression, packed=bool(m["packed"]))



# --------------------------------------------------------------------------- fitting


def single_feature_map(names: Sequence[str], shapes: Sequence[Sequence[int]]) -> tuple[str, int]:
    """(name, channels) of the one NCHW tensor a codec applies to; ValueError otherwise."""
    if len(names) != 1 or len(shapes[0]) != 4 or shapes[0][1] <= 0:
        raise ValueError(f"feature codecs take one NCHW float tensor with known channels; the cut has "
                         f"{list(zip(names, [list(s) for s in shapes]))}")
    return names[0], int(shapes[0][1])


def _rows(activations: Sequence[np.ndarray], max_rows: int) -> np.ndarray:
    if not activations:
        raise ValueError("no activations to fit the codec on; expected calibration activations")
    shapes = {tuple(a.shape[1:]) for a in activations}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"activations have shapes {sorted(shapes)}; expected one NCHW shape")
    rows = np.concatenate([np.moveaxis(np.asarray(a, np.float32), 1, -1).reshape(-1, a.shape[1]) for a in activations])
    if rows.shape[0] > max_rows:
        rows = rows[:: rows.shape[0] // max_rows + 1]
    return rows


@dataclass(frozen=True)
class Projection:
    """``y = components @ (x - mean)`` over channels; ``components`` is (rank, channels), orthonormal rows."""

    mean: np.ndarray
    components: np.ndarray
    explained: float  # fraction of the calibration variance the kept components hold

    @property
    def rank(self) -> int:
        return int(self.components.shape[0])

    @property
    def channels(self) -> int:
        return int(self.components.shape[1])

    def project(self, x: np.ndarray) -> np.ndarray:
        return np.einsum("rc,nchw->nrhw", self.components, x - self.mean[None, :, None, None]).astype(np.float32)

    def reconstruct(self, y: np.ndarray) -> np.ndarray:
        return (np.einsum("rc,nrhw->nchw", self.components, y) + self.mean[None, :, None, None]).astype(np.float32)


def fit_projection(activations: Sequence[np.ndarray], rank: int, *, max_rows: int = 400_000) -> Projection:
    """PCA over the channels of NCHW activations (every pixel of every frame is a sample)."""
    rows = _rows(activations, max_rows).astype(np.float64)
    channels = rows.shape[1]
    if not 1 <= rank <= channels:
        raise ValueError(f"projection rank {rank} is not in 1..{channels} (the cut's channels)")
    mean = rows.mean(axis=0)
    centred = rows - mean
    values, vectors = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0, None), vectors[:, order]
    total = float(values.sum()) or 1.0
    return Projection(mean=mean.astype(np.float32), components=vectors[:, :rank].T.astype(np.float32),
                      explained=float(values[:rank].sum() / total))


def calibrate_lowbit(activations: Sequence[np.ndarray], bits: int, *, max_rows: int = 400_000) -> LowBitParams:
    """Per-channel asymmetric ``bits``-bit parameters: each channel's observed range (widened to
    include zero) shrunk by the :data:`CLIP_FRACTIONS` value with the least squared error."""
    rows = _rows(activations, max_rows)
    levels = (1 << bits) - 1
    lo, hi = np.minimum(rows.min(axis=0), 0.0), np.maximum(rows.max(axis=0), 0.0)
    best_err = np.full(rows.shape[1], np.inf)
    best_scale = np.ones(rows.shape[1], np.float32)
    best_zero = np.zeros(rows.shape[1], np.int64)
    for fraction in CLIP_FRACTIONS:
        span = np.maximum((hi - lo) * fraction, 1e-8)
        scale = (span / levels).astype(np.float32)
        zero = np.clip(np.rint(-lo * fraction / scale), 0, levels).astype(np.int64)
        q = np.clip(np.rint(rows / scale) + zero, 0, levels)
        err = (((q - zero) * scale - rows) ** 2).mean(axis=0)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_scale = np.where(better, scale, best_scale)
        best_zero = np.where(better, zero, best_zero)
    return LowBitParams(bits=bits, scales=tuple(float(s) for s in best_scale),
                        zero_points=tuple(int(z) for z in best_zero), axis=1)


def calibrate_shared_step(activations: Sequence[np.ndarray], step_pct: int, *,
                          max_rows: int = 400_000) -> LowBitParams:
    """8-bit parameters with one step for all channels, ``step_pct`` % of the RMS of the channels'
    standard deviations, and each channel's calibration mean on code :data:`STEP_CENTRE_CODE` (to the
    nearest step): ``code = round(x / step) + zero_point[c]``, saturating at 0 and 255. Centring puts
    every channel's codes on one shared histogram, which the byte-wise entropy coder sees."""
    if isinstance(step_pct, bool) or not isinstance(step_pct, int) or not 1 <= step_pct <= MAX_STEP_PCT:
        raise ValueError(f"step_pct {step_pct!r}: expected an integer percentage in 1..{MAX_STEP_PCT}")
    rows = _rows(activations, max_rows).astype(np.float64)
    rms_std = float(np.sqrt(rows.var(axis=0).mean()))
    if not rms_std > 0:
        raise ValueError(f"the activations are constant (RMS channel deviation {rms_std}); a shared step needs spread")
    step = rms_std * step_pct / 100.0
    zero = np.clip(STEP_CENTRE_CODE - np.rint(rows.mean(axis=0) / step), 0, 255).astype(np.int64)
    return LowBitParams(bits=8, scales=(float(np.float32(step)),) * rows.shape[1],
                        zero_points=tuple(int(z) for z in zero), axis=1)


# --------------------------------------------------------------------------- graph rewrites


def _copy(model: onnx.ModelProto | None) -> onnx.ModelProto | None:
    if model is None:
        return None
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _value(graph_values, name: str, where: str):  # noqa: ANN001, ANN202 - repeated ValueInfoProto field
    for v in graph_values:
        if v.name == name:
            return v
    raise ValueError(f"{where} has no tensor {name!r}; it has {[v.name for v in graph_values]}")


def _rewire_head(head: onnx.ModelProto, name: str, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
                 elem_type: int, channels: int, inner: str) -> None:
    g = head.graph
    out = _value(g.output, name, "head outputs")
    _rename_uses(g, name, inner, inputs=True, outputs=True)
    _drop_value_info(g, {name})
    g.node.extend(nodes)
    g.initializer.extend(inits)
    out.type.tensor_type.elem_type = elem_type
    out.type.tensor_type.shape.dim[1].dim_value = channels


def _rewire_tail(tail: onnx.ModelProto, name: str, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
                 elem_type: int, channels: int, inner: str) -> None:
    g = tail.graph
    inp = _value(g.input, name, "tail inputs")
    _rename_uses(g, name, inner, inputs=True, outputs=False)
    _drop_value_info(g, {name})
    rest = list(g.node)
    del g.node[:]
    g.node.extend(nodes + rest)
    g.initializer.extend(inits)
    inp.type.tensor_type.elem_type = elem_type
    inp.type.tensor_type.shape.dim[1].dim_value = channels


def add_projection(head: onnx.ModelProto | None, tail: onnx.ModelProto | None, name: str,
                   projection: Projection) -> tuple[onnx.ModelProto | None, onnx.ModelProto | None]:
    """Head ends with a 1x1 Conv to ``projection.rank`` channels; tail starts with its transpose."""
    head, tail = _copy(head), _copy(tail)
    w = projection.components
    inner = name + "__pca_in"
    if head is not None:
        weight = numpy_helper.from_array(w[:, :, None, None].copy(), name + "__pca_w")
        bias = numpy_helper.from_array((-(w @ projection.mean)).astype(np.float32), name + "__pca_b")
        node = helper.make_node("Conv", [inner, weight.name, bias.name], [name], name=name + "__pca_project")
        _rewire_head(head, name, [node], [weight, bias], TensorProto.FLOAT, projection.rank, inner)
    if tail is not None:
        weight = numpy_helper.from_array(w.T[:, :, None, None].copy(), name + "__pca_wt")
        bias = numpy_helper.from_array(projection.mean.astype(np.float32), name + "__pca_mean")
        node = helper.make_node("Conv", [name, weight.name, bias.name], [inner], name=name + "__pca_reconstruct")
        _rewire_tail(tail, name, [node], [weight, bias], TensorProto.FLOAT, projection.channels, inner)
    return head, tail


def add_lowbit_wire(head: onnx.ModelProto | None, tail: onnx.ModelProto | None, name: str,
                    params: LowBitParams) -> tuple[onnx.ModelProto | None, onnx.ModelProto | None]:
    """Head ends with per-channel QuantizeLinear + Clip to ``params.bits`` bits (UINT8 out); tail starts
    with the matching DequantizeLinear. Opset >= 13 (per-axis QDQ)."""
    head, tail = _copy(head), _copy(tail)
    channels = len(params.scales)
    inner = name + "__lowbit_in"

    def consts(prefix: str) -> list[onnx.TensorProto]:
        return [numpy_helper.from_array(np.asarray(params.scales, np.float32), prefix + "__lowbit_scale"),
                numpy_helper.from_array(np.asarray(params.zero_points, np.uint8), prefix + "__lowbit_zero_point")]

    for model in (head, tail):
        if model is not None and max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                                     default=0) < 13:
            raise ValueError(f"the lowbit codec needs opset >= 13 (per-channel QuantizeLinear); {name!r}'s model "
                             "has an older one: upgrade it first (partitioner.quantize.upgrade_for_qdq)")
    if head is not None:
        s, z = consts(name)
        lo = numpy_helper.from_array(np.array(0, np.uint8), name + "__lowbit_min")
        hi = numpy_helper.from_array(np.array(params.levels - 1, np.uint8), name + "__lowbit_max")
        quant = name + "__lowbit_q"
        nodes = [helper.make_node("QuantizeLinear", [inner, s.name, z.name], [quant], axis=params.axis,
                                  name=name + "__lowbit_quantize"),
                 helper.make_node("Clip", [quant, lo.name, hi.name], [name], name=name + "__lowbit_clip")]
        _rewire_head(head, name, nodes, [s, z, lo, hi], TensorProto.UINT8, channels, inner)
    if tail is not None:
        s, z = consts(name)
        node = helper.make_node("DequantizeLinear", [name, s.name, z.name], [inner], axis=params.axis,
                                name=name + "__lowbit_dequantize")
        _rewire_tail(tail, name, [node], [s, z], TensorProto.UINT8, channels, inner)
    return head, tail


def apply_codec(head: onnx.ModelProto | None, tail: onnx.ModelProto | None, name: str,
                projection: Projection | None, params: LowBitParams) -> tuple[onnx.ModelProto | None,
                                                                              onnx.ModelProto | None]:
    """The head/tail pair with the projection (when given) and the low-bit wire baked in."""
    if projection is not None:
        head, tail = add_projection(head, tail, name, projection)
    return add_lowbit_wire(head, tail, name, params)
