"""NNCF's post-training quantization of ONNX models (``nncf.quantize`` on a ModelProto):
MinMax ranges over the calibration feeds, INT8 weights per channel, then bias
correction — NNCF's full one (layer by layer) or its fast one (one pass) — giving a
QDQ model that ONNX Runtime runs. NNCF places quantizers on the inputs of the ops it
quantizes, so a graph output is left in float for the wire codec to quantize once.

NNCF is imported only when this runs. Its telemetry is switched off through NNCF's
own switch (the ``NNCF_CI`` environment variable) before the import, and its progress
bars and INFO logs are kept off the caller's console.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
from typing import Sequence

import numpy as np
import onnx

logger = logging.getLogger(__name__)


def _import_nncf():  # -> module
    os.environ.setdefault("NNCF_CI", "1")  # NNCF's documented way to disable its telemetry
    try:
        import nncf
    except ImportError as exc:
        raise ImportError(f"NNCF quantization needs the nncf package (pip install 'nncf>=3.0'): {exc}") from exc
    nncf.set_log_level(logging.WARNING)
    return nncf


def quantize_nncf(
    model: onnx.ModelProto,
    calibration: Sequence[dict[str, np.ndarray]],
    *,
    per_channel: bool = True,
    nodes_to_exclude: Sequence[str] = (),
    fast_bias_correction: bool = False,
    seven_bit_weights: bool = False,
) -> onnx.ModelProto:
    """``model`` as a QDQ model quantized by ``nncf.quantize`` over every calibration feed.

    ``seven_bit_weights`` is NNCF's overflow fix for every layer: weights use 7 of the 8
    bits so x86 CPUs without VNNI (whose UINT8 x INT8 kernels add pairs of products in
    16 bits and can saturate) compute exactly; it costs accuracy everywhere else. Otherwise NNCF's default
    applies (7 bits for the first layer only)."""
    from partitioner.ptq.ort_qdq import model_feeds

    nncf = _import_nncf()
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
        QuantizationParameters,
    )

    feeds = model_feeds(model, calibration)
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE if seven_bit_weights else None)
    if not per_channel:
        advanced.weights_quantization_params = QuantizationParameters(per_channel=False)
    ignored = nncf.IgnoredScope(names=list(nodes_to_exclude)) if nodes_to_exclude else None
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            quantized = nncf.quantize(
                model, nncf.Dataset(feeds), subset_size=len(feeds), fast_bias_correction=fast_bias_correction,
                ignored_scope=ignored, advanced_parameters=advanced,
            )
    except Exception as exc:  # noqa: BLE001 - NNCF and the ORT sessions it builds raise assorted types
        detail = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
        hint = ("; NNCF's full bias correction builds sub-models that fail on some graphs (a tensor read by "
                "two convolutions, as in SqueezeNet's fire modules): method 'nncf-fast' quantizes them"
                if not fast_bias_correction else "")
        raise ValueError(f"NNCF could not quantize model {model.graph.name!r}: {detail}{hint}") from exc
    return quantized
