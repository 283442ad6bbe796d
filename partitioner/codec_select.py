"""Choose a feature codec per cut under the fidelity gate (issue 13).

:func:`measure_codec` fits one :class:`~partitioner.codec_fit.CodecSpec` at a cut on the
calibration activations, bakes it into the FP32 (or INT8) head and the tail, judges the
pipeline on the held-out frames (the same :class:`~partitioner.evaluation.Judge` and JPEG
baseline as every other variant) and measures what the wire carries: mean bytes per frame
of the codes as :mod:`protos.codec` sends them, and the encode (pack + entropy coding) and
decode milliseconds per frame on this host, one thread.

:func:`choose_codec` keeps the variant with the fewest bytes among those that pass the gate.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import onnx

from partitioner import evaluation
from partitioner.codec_fit import (CodecSpec, Projection, apply_codec, calibrate_lowbit, calibrate_shared_step,
                                   fit_projection)
from protos import bundle_pb2
from protos.codec import LowBitParams, decode_tensor, encode_tensor

logger = logging.getLogger(__name__)

__all__ = ["CodecResult", "FittedCodec", "choose_codec", "fit_codec", "measure_codec", "time_codec"]


@dataclass(frozen=True)
class FittedCodec:
    """A codec fitted at cut tensor ``tensor``: the projection (None without one) and the low-bit parameters."""

    spec: CodecSpec
    tensor: str
    channels: int
    projection: Projection | None
    params: LowBitParams

    def apply(self, head: onnx.ModelProto | None, tail: onnx.ModelProto | None):  # noqa: ANN201 - pair of models
        return apply_codec(head, tail, self.tensor, self.projection, self.params)

    def encoding(self) -> bundle_pb2.WireEncoding:
        """The manifest's WireEncoding of the wire tensor."""
        return bundle_pb2.WireEncoding(
            codec="lowbit", compression=self.spec.compression or "none", bits=self.spec.bits,
            scales=list(self.params.scales), zero_points=list(self.params.zero_points), axis=self.params.axis,
            packed_bits=self.spec.bits if self.spec.packed and self.spec.bits < 8 else 0,
            compression_level=self.spec.level if self.spec.compression not in ("", "none") else 0,
        )


@dataclass(frozen=True)
class CodecResult:
    """One codec at one cut: its fidelity record (gate verdict included) and its wire costs."""

    fitted: FittedCodec
    fidelity: bundle_pb2.Fidelity
    wire_bytes: float
    raw_code_bytes: int  # one byte per code, before packing and entropy coding
    encode_ms: float
    decode_ms: float
    head: onnx.ModelProto
    tail: onnx.ModelProto

    def codec_proto(self) -> bundle_pb2.CutCodec:
        spec = self.fitted.spec
        proj = self.fitted.projection
        return bundle_pb2.CutCodec(
            name=spec.name, source_channels=self.fitted.channels,
            wire_channels=proj.rank if proj is not None else self.fitted.channels, bits=spec.bits,
            compression=spec.compression or "none", packed_bits=spec.bits if spec.packed and spec.bits < 8 else 0,
            needs_splitinfer_server=spec.needs_splitinfer_server, encode_ms=self.encode_ms, decode_ms=self.decode_ms,
            wire_bytes=int(round(self.wire_bytes)), projection="pca" if proj is not None else "",
        )


def fit_codec(spec: CodecSpec, tensor: str, calibration: Sequence[np.ndarray]) -> FittedCodec:
    """Fit ``spec`` on the FP32 activations of ``tensor`` (NCHW, one array per calibration frame)."""
    channels = int(np.asarray(calibration[0]).shape[1])
    projection = None
    acts = list(calibration)
    if spec.rank is not None and spec.rank < channels:
        projection = fit_projection(acts, spec.rank)
        acts = [projection.project(a) for a in acts]
    params = calibrate_shared_step(acts, spec.step_pct) if spec.step_pct is not None else \
        calibrate_lowbit(acts, spec.bits)
    return FittedCodec(spec, tensor, channels, projection, params)


def time_codec(codes: Sequence[np.ndarray], spec: CodecSpec, *, repeats: int = 3) -> tuple[float, list[int], float]:
    """(median encode ms, bytes per frame, median decode ms) of the codes on the wire; checks the round trip."""
    sizes, enc, dec = [], [], []
    for q in codes:
        best_e = best_d = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            raw, params = encode_tensor(q, packed_bits=spec.packed_bits, compression=spec.compression,
                                        level=spec.level)
            t1 = time.perf_counter()
            back = decode_tensor(raw, params, q.shape)
            t2 = time.perf_counter()
            best_e, best_d = min(best_e, t1 - t0), min(best_d, t2 - t1)
        if not np.array_equal(back, q):
            raise AssertionError(f"codec {spec.name} does not round-trip its codes")
        sizes.append(len(raw))
        enc.append(best_e * 1e3)
        dec.append(best_d * 1e3)
    return float(np.median(enc)), sizes, float(np.median(dec))


def measure_codec(
    fitted: FittedCodec, head: onnx.ModelProto, tail: onnx.ModelProto, judge: evaluation.Judge,
    *, wire_frames: Sequence[Mapping[str, np.ndarray]], exact_int8: bool = True,
    finish_head: Callable[[onnx.ModelProto, FittedCodec], onnx.ModelProto] | None = None,
) -> CodecResult:
    """Judge the codec's pipeline on the held-out frames and measure its wire on ``wire_frames``;
    ``finish_head`` rewrites the head with the codec baked in before that (the INT8 heads' hook)."""
    new_head, new_tail = fitted.apply(head, tail)
    assert new_head is not None and new_tail is not None
    if finish_head is not None:
        new_head = finish_head(new_head, fitted)
    fidelity = judge(evaluation.Pipeline(new_head, new_tail, exact_int8=exact_int8), remedy=fitted.spec.name)
    codes = evaluation.collect_activations(new_head, wire_frames, [fitted.tensor])[fitted.tensor]
    encode_ms, sizes, decode_ms = time_codec(codes, fitted.spec)
    return CodecResult(fitted, fidelity, float(np.mean(sizes)), int(codes[0].size), encode_ms, decode_ms,
                       new_head, new_tail)


def choose_codec(results: Sequence[CodecResult]) -> CodecResult | None:
    """The passing variant with the fewest bytes per frame (ties: higher fidelity), or None."""
    passing = [r for r in results if r.fidelity.passed]
    if not passing:
        return None
    return min(passing, key=lambda r: (r.wire_bytes, -r.fidelity.value))
