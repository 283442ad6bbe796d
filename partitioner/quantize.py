"""INT8 heads that ship under the fidelity gate, their remedies, and FP16 tails.

Heads (and the full model, for the ``output`` cut and the edge's local fallback) are
quantized by :func:`partitioner.ptq.quantize_static` — QDQ INT8, per-channel weights,
calibrated on real frames preprocessed exactly as the edge will — with the method the
config names (default :data:`partitioner.ptq.DEFAULT_METHOD`, the one its benchmark
measured best). Quantize once: the head's outputs (the cut tensors) leave the head in
float (``quantize_outputs=False``), so the wire codec's QuantizeLinear is the only
quantization of the tensor that crosses the cut.

Each quantized head is judged on the pipeline that ships (head, wire codec, tail) by an
:class:`~partitioner.evaluation.Judge` (task-aware fidelity against the FP32 model,
gated relative to the cloud-only JPEG baseline). Only when the INT8 head fails the gate
are the remedies of :data:`REMEDIES` tried in order: the most sensitive weight layers
kept in FP32 (the Conv/Gemm/MatMul nodes whose INT8 weights alone cost the full model's
outputs the most SQNR, measured once), then the FP32 head.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import onnx

from partitioner import ptq
from partitioner.evaluation import Judge, Pipeline, run_frames
from protos import bundle_pb2

logger = logging.getLogger(__name__)

QUANTIZABLE_WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
MIN_QDQ_OPSET = ptq.MIN_QDQ_OPSET
#: Weight nodes the ``fp32_sensitive`` remedy keeps in FP32.
SENSITIVE_COUNT = 4


@dataclass(frozen=True)
class QuantRecipe:
    """One way to quantize a head: the remedy's name and the nodes kept in FP32."""

    remedy: str = "none"
    keep_fp32: str = "none"  # "none" | "sensitive"


def remedy_recipes() -> list[QuantRecipe]:
    """The INT8 attempts in order: the PTQ method as is, then with the sensitive layers in FP32."""
    return [QuantRecipe("none"), QuantRecipe("fp32_sensitive", keep_fp32="sensitive")]


REMEDIES = tuple(r.remedy for r in remedy_recipes()) + ("fp32_head",)


def upgrade_for_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` at opset >= 13 (ONNX's version converter) so per-channel QDQ is valid; unchanged if already."""
    return ptq.upgrade_for_qdq(model)


class Quantizer:
    """Quantizes heads of one prepared model on shared calibration feeds.

    ``feeds`` are full-model input feeds (dicts) of real calibration frames; the first
    ``calibration_frames`` are used. The full model's INT8 version is made once and
    reused (the ``output`` cut's head is the edge's INT8 fallback model). A context
    manager for symmetry with the callers; it holds no files.
    """

    def __init__(self, full_model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]], *,
                 method: str = "", calibration_frames: int = 32) -> None:
        if not feeds:
            raise ValueError("no calibration feeds; expected at least one preprocessed frame")
        self.method = method or ptq.DEFAULT_METHOD
        if self.method not in ptq.METHODS:
            raise ValueError(f"quantization method {self.method!r} is not one of {', '.join(ptq.METHODS)}")
        if calibration_frames < 1:
            raise ValueError(f"calibration_frames={calibration_frames} is invalid; expected >= 1")
        self.full_model = upgrade_for_qdq(full_model)
        self.feeds = list(feeds)
        self.calibration_frames = calibration_frames
        self._sensitivity: list[tuple[float, str]] | None = None
        self._done: dict[tuple[str, QuantRecipe], onnx.ModelProto] = {}

    def __enter__(self) -> "Quantizer":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def quantize(self, model: onnx.ModelProto, recipe: QuantRecipe = QuantRecipe()) -> onnx.ModelProto:
        """``model`` (a head or the full model) as an INT8 QDQ model with float outputs, following ``recipe``."""
        model = upgrade_for_qdq(model)
        key = (hashlib.sha256(model.SerializeToString()).hexdigest(), recipe)
        if key not in self._done:
            exclude = self.sensitive_nodes(model) if recipe.keep_fp32 == "sensitive" else []
            quantized = ptq.quantize_static(model, self.feeds[: self.calibration_frames], method=self.method,
                                            nodes_to_exclude=exclude, quantize_outputs=False)
            if exclude:
                quantized.doc_string = f"kept in FP32: {', '.join(exclude)}"
            self._done[key] = quantized
        return self._done[key]

    def sensitive_nodes(self, model: onnx.ModelProto, *, count: int = SENSITIVE_COUNT, frames: int = 8) -> list[str]:
        """The ``count`` weight nodes of ``model`` whose INT8 weights hurt the full model's outputs most.

        Sensitivity is measured once on the full model: each Conv/Gemm/MatMul's weights
        alone are fake-quantized (per-channel symmetric INT8) and the SQNR of the model
        outputs over ``frames`` calibration frames is recorded; lowest SQNR first.
        """
        if self._sensitivity is None:
            self._sensitivity = weight_sensitivity(self.full_model, self.feeds[:frames])
            logger.info("weight sensitivity (output SQNR dB): %s", self._sensitivity[:6])
        present = {n.name for n in model.graph.node}
        return [name for _, name in self._sensitivity if name in present][:count]


def _fake_quantize_weight(w: np.ndarray) -> np.ndarray:
    flat = w.reshape(w.shape[0], -1) if w.ndim > 1 else w.reshape(1, -1)
    scale = np.abs(flat).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    return (np.clip(np.round(flat / scale), -127, 127) * scale).reshape(w.shape).astype(w.dtype)


def weight_sensitivity(model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]]) -> list[tuple[float, str]]:
    """(output SQNR in dB, node name) for every weight node, most sensitive (lowest SQNR) first."""
    from onnx import numpy_helper

    inits = {t.name: i for i, t in enumerate(model.graph.initializer)}
    reference = run_frames(Pipeline(model, None), feeds)
    results: list[tuple[float, str]] = []
    # each trial runs once on all frames as one batch
    for node in model.graph.node:
        if node.op_type not in QUANTIZABLE_WEIGHT_OPS or not node.name or len(node.input) < 2:
            continue
        weight = node.input[1]
        if weight not in inits:
            continue
        trial = onnx.ModelProto()
        trial.CopyFrom(model)
        tensor = trial.graph.initializer[inits[weight]]
        w = numpy_helper.to_array(tensor)
        if not np.issubdtype(w.dtype, np.floating):
            continue
        tensor.CopyFrom(numpy_helper.from_array(_fake_quantize_weight(w), weight))
        got = run_frames(Pipeline(trial, None), feeds, batch=len(feeds))
        signal = noise = 0.0
        for ref_outs, got_outs in zip(reference, got):
            for r, g in zip(ref_outs, got_outs):
                r64, g64 = np.asarray(r, np.float64), np.asarray(g, np.float64)
                signal += float(np.sum(r64 ** 2))
                noise += float(np.sum((r64 - g64) ** 2))
        sqnr = 10.0 * np.log10(signal / noise) if noise > 0 else float("inf")
        results.append((sqnr, node.name))
    results.sort()
    return results


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


# --------------------------------------------------------------------------- tails


def convert_tail_fp16(tail: onnx.ModelProto) -> onnx.ModelProto:
    """The tail with FP16 weights and compute, keeping FP32 inputs/outputs (ORT's float16 converter)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    copy = onnx.ModelProto()
    copy.CopyFrom(tail)
    return convert_float_to_float16(copy, keep_io_types=True, disable_shape_infer=False)


# --------------------------------------------------------------------------- remedies


@dataclass(frozen=True)
class OptimizedHead:
    """The head that ships, how it was made, and its measured fidelity."""

    model: onnx.ModelProto
    precision: str  # "int8" or "fp32"
    recipe: QuantRecipe | None
    fidelity: bundle_pb2.Fidelity
    attempts: tuple[tuple[str, float], ...]  # (remedy, gate metric value) in the order tried


def optimize_head(
    quantizer: Quantizer,
    head: onnx.ModelProto,
    finish: Callable[[onnx.ModelProto], Pipeline],
    judge: Judge,
    *,
    recipes: Sequence[QuantRecipe] | None = None,
) -> OptimizedHead:
    """Quantize ``head`` with the first recipe whose shipped pipeline passes ``judge``'s gate.

    ``finish`` turns a (quantized) head into the shipped pipeline (wire codec and tail
    added), so fidelity is measured on exactly what ships. Falls back to the FP32 head
    when no INT8 recipe passes; its fidelity is recorded either way.
    """
    attempts: list[tuple[str, float]] = []
    for recipe in remedy_recipes() if recipes is None else recipes:
        try:
            quantized = quantizer.quantize(head, recipe)
            fid = judge(finish(quantized), remedy=recipe.remedy)
        except Exception as exc:  # noqa: BLE001 - a remedy ORT cannot apply or run is skipped, not fatal
            logger.warning("quantization remedy %r failed: %s", recipe.remedy, _first_line(exc))
            attempts.append((recipe.remedy, float("nan")))
            continue
        attempts.append((recipe.remedy, fid.value))
        if fid.passed:
            return OptimizedHead(quantized, "int8", recipe, fid, tuple(attempts))
    fid = judge(finish(head), remedy="fp32_head")
    attempts.append(("fp32_head", fid.value))
    logger.warning("no INT8 recipe passed the gate (%s); shipping the FP32 head", attempts)
    return OptimizedHead(head, "fp32", None, fid, tuple(attempts))
