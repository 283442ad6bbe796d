"""Post-training static quantization of ONNX models to QDQ INT8 that ONNX Runtime CPU runs.

One entry point, :func:`quantize_static`, over small ModelProto -> ModelProto passes:

* :mod:`.ort_qdq` — ONNX Runtime's static quantizer (MinMax ranges, INT8 weights per
  channel, UINT8 activations).
* :mod:`.equalize` — cross-layer equalization of Conv -> (Relu | Clip | none) -> Conv
  pairs, depthwise pairs included; the FP32 function is kept up to float error
  (a Clip(0, m) between rescaled channels becomes Relu then a per-channel Min).
* :mod:`.bias_correction` — empirical bias correction: the mean error of each quantized
  Conv/Gemm output against the FP32 model on the calibration feeds is removed from its
  INT32 bias, layer by layer in graph order.
* :mod:`.nncf_ptq` — NNCF's ONNX post-training quantization (MinMax + bias
  correction), imported only when asked for.
* :mod:`.fold` — exact rewrites so ORT fuses every Conv of an NNCF model into
  ``QLinearConv`` (per-channel activation scales folded into weight scales, INT8
  activations as UINT8, INT32 biases).
* :mod:`.qdq` — facts about QDQ graphs: already quantized?, an output's scale, and the
  outputs with their last Q/DQ pair removed ("quantize once" with the wire codec).

Methods (:data:`METHODS`), passes joined by ``+`` in the order they run:

* ``ort``: ORT's quantizer; ``cle+ort``: equalize first; ``ort+bc``: then bias
  correction; ``cle+bc``: both;
* ``nncf``: NNCF with full bias correction, rewritten for ORT's fused kernels;
  ``nncf-fast``: with NNCF's fast bias correction; ``nncf-7bit``: 7-bit weights
  against the UINT8 x INT8 saturation of x86 CPUs without VNNI; ``nncf-raw``: NNCF's
  model as written (per-channel activation scales: depthwise convolutions run in
  float); ``cle+nncf``: equalize first.

:data:`DEFAULT_METHOD` is the one ``benchmarks/ptq_bench.py`` measured best (see
``benchmarks/results/ptq.json``).
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import onnx

from partitioner.ptq.qdq import output_quantization, refuse_quantized, strip_output_qdq

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_METHOD", "METHODS", "MIN_QDQ_OPSET", "output_quantization", "quantize_static", "strip_output_qdq",
    "upgrade_for_qdq",
]

MIN_QDQ_OPSET = 13  # per-channel DequantizeLinear (the ``axis`` attribute) needs opset 13

Feeds = Sequence[dict[str, np.ndarray]]


def _ort(model: onnx.ModelProto, calibration: Feeds, per_channel: bool, exclude: Sequence[str]) -> onnx.ModelProto:
    from partitioner.ptq.ort_qdq import quantize_ort

    return quantize_ort(model, calibration, per_channel=per_channel, nodes_to_exclude=exclude)


def _cle_ort(model: onnx.ModelProto, calibration: Feeds, per_channel: bool, exclude: Sequence[str]) -> onnx.ModelProto:
    from partitioner.ptq.equalize import equalize

    return _ort(equalize(model), calibration, per_channel, exclude)


def _ort_bc(model: onnx.ModelProto, calibration: Feeds, per_channel: bool, exclude: Sequence[str]) -> onnx.ModelProto:
    from partitioner.ptq.bias_correction import correct_biases

    return correct_biases(model, _ort(model, calibration, per_channel, exclude), calibration)


def _cle_bc(model: onnx.ModelProto, calibration: Feeds, per_channel: bool, exclude: Sequence[str]) -> onnx.ModelProto:
    from partitioner.ptq.equalize import equalize

    return _ort_bc(equalize(model), calibration, per_channel, exclude)


def _for_ort_kernels(model: onnx.ModelProto) -> onnx.ModelProto:
    from partitioner.ptq.fold import activations_to_uint8, fold_channel_scales, quantize_float_biases

    return quantize_float_biases(activations_to_uint8(fold_channel_scales(model)))


def _nncf_raw(model: onnx.ModelProto, calibration: Feeds, per_channel: bool, exclude: Sequence[str]) -> onnx.ModelProto:
    from partitioner.ptq.nncf_ptq import quantize_nncf

    return quantize_nncf(model, calibration, per_channel=per_channel, nodes_to_exclude=exclude)


def _nncf(model: onnx.ModelProto, calibration: Feeds, per_channel: bool, exclude: Sequence[str]) -> onnx.ModelProto:
    return _for_ort_kernels(_nncf_raw(model, calibration, per_channel, exclude))


def _nncf_fast(model: onnx.ModelProto, calibration: Feeds, per_channel: bool, exclude: Sequence[str]) -> onnx.ModelProto:
    from partitioner.ptq.nncf_ptq import quantize_nncf

    return _for_ort_kernels(quantize_nncf(model, calibration, per_channel=per_channel, nodes_to_exclude=exclude,
                                          fast_bias_correction=True))


def _nncf_7bit(model: onnx.ModelProto, calibration: Feeds, per_channel: bool, exclude: Sequence[str]) -> onnx.ModelProto:
    from partitioner.ptq.nncf_ptq import quantize_nncf

    return _for_ort_kernels(quantize_nncf(model, calibration, per_channel=per_channel, nodes_to_exclude=exclude,
                                          seven_bit_weights=True))


def _cle_nncf(model: onnx.ModelProto, calibration: Feeds, per_channel: bool, exclude: Sequence[str]) -> onnx.ModelProto:
    from partitioner.ptq.equalize import equalize

    return _nncf(equalize(model), calibration, per_channel, exclude)


_RECIPES: dict[str, Callable[[onnx.ModelProto, Feeds, bool, Sequence[str]], onnx.ModelProto]] = {
    "ort": _ort,
    "cle+ort": _cle_ort,
    "ort+bc": _ort_bc,
    "cle+bc": _cle_bc,
    "nncf": _nncf,
    "nncf-fast": _nncf_fast,
    "nncf-7bit": _nncf_7bit,
    "nncf-raw": _nncf_raw,
    "cle+nncf": _cle_nncf,
}

#: Every accepted ``method`` value.
METHODS: tuple[str, ...] = tuple(_RECIPES)
#: The method :func:`quantize_static` callers should use. Measured by benchmarks/ptq_bench.py
#: (MobileNetV2, 32 bikes.mp4 calibration frames, 120 held-out bikes frames + 120 frames of
#: two other videos): the lowest KL to FP32 of the fully fused, fast-to-make models (8.5 s;
#: exact QDQ arithmetic 1.69x / 1.04x the q90 JPEG baseline's KL; no confident frame lost on
#: either set). ``ort+bc`` is closer in exact arithmetic (1.13x / 0.84x) but takes ~200 s per
#: model and collapses under x86 AVX2 UINT8 x INT8 saturation; ``nncf`` (full bias
#: correction) over-fits the calibration scene (1.04x on bikes, 1.80x on the other videos).
DEFAULT_METHOD = "nncf-fast"


def upgrade_for_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` at opset >= 13 (ONNX's version converter) so per-channel QDQ is valid."""
    version = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if version >= MIN_QDQ_OPSET:
        return model
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, MIN_QDQ_OPSET)
    except Exception as exc:  # noqa: BLE001 - the converter raises assorted errors per op
        raise ValueError(f"cannot convert opset {version} to {MIN_QDQ_OPSET} for INT8 QDQ: {exc}") from exc


def quantize_static(
    model: onnx.ModelProto,
    calibration: Sequence[dict[str, np.ndarray]],
    *,
    method: str,
    per_channel: bool = True,
    nodes_to_exclude: Sequence[str] = (),
    quantize_outputs: bool = True,
) -> onnx.ModelProto:
    """``model`` as a QDQ INT8 model calibrated on ``calibration`` (feeds by input name,
    real frames preprocessed exactly as the edge will), made by ``method`` (one of
    :data:`METHODS`).

    ``nodes_to_exclude`` stay in FP32. With ``quantize_outputs=False`` the graph outputs
    are left in float (their trailing Q/DQ removed) so that a wire codec quantizes them
    once; otherwise :func:`output_quantization` gives the scale a codec should reuse.
    Raises ``ValueError`` for an unknown method, no calibration feeds, unknown node
    names, or a model that is already quantized.
    """
    if method not in _RECIPES:
        raise ValueError(f"quantization method {method!r} is not one of {', '.join(METHODS)}")
    if not calibration:
        raise ValueError("no calibration feeds; expected at least one preprocessed frame")
    refuse_quantized(model)
    names = {n.name for n in model.graph.node}
    unknown = [n for n in nodes_to_exclude if n not in names]
    if unknown:
        raise ValueError(f"nodes_to_exclude names {unknown} that are not nodes of the model")
    quantized = _RECIPES[method](upgrade_for_qdq(model), calibration, per_channel, tuple(nodes_to_exclude))
    return quantized if quantize_outputs else strip_output_qdq(quantized)
