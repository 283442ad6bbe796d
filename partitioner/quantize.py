"""INT8 static quantization of heads with fidelity remedies, and FP16 tails.

Heads are quantized with ONNX Runtime's own tools (``quantize_static``, QDQ format,
per-channel INT8 weights, UINT8 activations), calibrated on real frames. Ranges are
calibrated once per recipe on the full model and reused for every head through
ORT's calibration cache (the head keeps the full model's tensor names), so adding a
cut costs one quantization pass, not one calibration pass.

Each quantized head is judged by the fidelity of the pipeline that ships (head, wire
codec, tail) against the FP32 full model, as :mod:`partitioner.evaluation` measures it
(top-1 agreement and mean cosine). When agreement falls below the threshold the
remedies of :data:`REMEDIES` are tried in order and the first that reaches it is
kept; if none does, the head ships in FP32 (remedy ``"fp32_head"``). "Sensitive"
nodes are the weight nodes whose INT8 weights alone cost the full model's outputs
the most SQNR (measured once by fake-quantizing one node at a time).

Models below opset 13 are converted (ONNX version converter) first, because
per-channel QDQ needs DequantizeLinear's ``axis``.

ONNX Runtime's quantizer only works on files, so this module writes its models in a
private temporary directory that it removes; callers get ``ModelProto`` values.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import logging
import pathlib
import tempfile
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

import numpy as np
import onnx

from partitioner.calibration import FeedReader
from partitioner.evaluation import DEFAULT_THRESHOLD, Pipeline, measure_fidelity, run_frames
from partitioner.graph import opset_version
from protos import bundle_pb2

logger = logging.getLogger(__name__)

QUANTIZABLE_WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_FUSED_ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish"})


@dataclass(frozen=True)
class QuantRecipe:
    """One way to quantize a head: calibration method, frames, and nodes kept in FP32."""

    remedy: str = "none"
    method: str = "minmax"  # "minmax" | "percentile" | "entropy"
    calibration_frames: int = 32
    keep_fp32: str = "none"  # "none" | "first_last" | "sensitive"
    percentile: float = 99.999


def remedy_recipes(base_frames: int, max_frames: int) -> list[QuantRecipe]:
    """The attempts in order: plain MinMax, more frames, percentile, entropy, FP32 first/last, FP32 sensitive.

    Histogram calibration (percentile, entropy) runs in Python over every tensor and
    costs about 0.3 s per frame on MobileNetV2, so it uses at most 16 frames; MinMax
    uses up to four times ``base_frames`` when that is the remedy.
    """
    more = max(base_frames, min(max_frames, base_frames * 4))
    hist = min(base_frames, 16)
    return [
        QuantRecipe("none", "minmax", base_frames),
        QuantRecipe("more_calibration_frames", "minmax", more),
        QuantRecipe("percentile", "percentile", hist),
        QuantRecipe("entropy", "entropy", hist),
        QuantRecipe("fp32_first_last", "minmax", more, keep_fp32="first_last"),
        QuantRecipe("fp32_sensitive", "minmax", more, keep_fp32="sensitive"),
    ]


REMEDIES = tuple(r.remedy for r in remedy_recipes(32, 128)) + ("fp32_head",)


# --------------------------------------------------------------------------- ORT plumbing


def _ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    table = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    try:
        return table[method]
    except KeyError:
        raise ValueError(f"calibration method {method!r} is not one of {sorted(table)}") from None


def _supports_cache() -> bool:
    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def first_last_weight_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the first and last Conv/Gemm/MatMul nodes in graph order (the usual FP32 keep-outs)."""
    named = [n.name for n in model.graph.node if n.op_type in QUANTIZABLE_WEIGHT_OPS and n.name]
    if not named:
        return []
    return sorted({named[0], named[-1]}, key=named.index)


MIN_QDQ_OPSET = 13  # per-channel DequantizeLinear (the ``axis`` attribute) needs opset 13


def upgrade_for_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` at opset >= 13 (ONNX's version converter) so per-channel QDQ is valid; unchanged if already."""
    if opset_version(model) >= MIN_QDQ_OPSET:
        return model
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, MIN_QDQ_OPSET)
    except Exception as exc:  # noqa: BLE001 - the converter raises assorted errors per op
        raise ValueError(f"cannot convert opset {opset_version(model)} to {MIN_QDQ_OPSET} for INT8 QDQ: {exc}") from exc
    return upgraded


class Quantizer:
    """Quantizes heads of one prepared model with calibration shared between heads.

    ``feeds`` are full-model input feeds (dicts) of real calibration frames, at least
    as many as the largest recipe asks for. Use as a context manager; the work
    directory (ORT needs files) is removed on exit.
    """

    def __init__(self, full_model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        if not feeds:
            raise ValueError("no calibration feeds")
        self.full_model = upgrade_for_qdq(full_model)
        self.feeds = list(feeds)
        self._tmp = tempfile.TemporaryDirectory(prefix="splitinfer-quant-")
        self.workdir = pathlib.Path(self._tmp.name)
        self._caches: dict[tuple[str, int, float], pathlib.Path] = {}
        self._use_cache = _supports_cache()
        self._counter = 0
        self._sensitivity: list[tuple[float, str]] | None = None
        self._full_quantized: dict[tuple[str, int, float], pathlib.Path] = {}
        self._full_digest: str | None = None

    def __enter__(self) -> "Quantizer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._tmp.cleanup()

    def _path(self, stem: str) -> pathlib.Path:
        self._counter += 1
        return self.workdir / f"{self._counter:04d}_{stem}.onnx"

    def _save(self, model: onnx.ModelProto, stem: str) -> pathlib.Path:
        """ORT's quantizer reads files: write ``model`` (weights inline) into the work directory."""
        path = self._path(stem)
        onnx.save(model, str(path))
        return path

    def _feeds_for(self, model: onnx.ModelProto, frames: int) -> list[dict[str, np.ndarray]]:
        names = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
        chosen = self.feeds[: max(1, frames)]
        return [{k: v for k, v in feed.items() if k in names} for feed in chosen]

    def _extra_options(self, recipe: QuantRecipe) -> dict:
        extra: dict = {}
        if recipe.method == "percentile":
            extra["CalibPercentile"] = recipe.percentile
        return extra

    def _calibration_cache(self, recipe: QuantRecipe) -> pathlib.Path | None:
        """Ranges of every tensor of the full model for this recipe (computed once)."""
        if not self._use_cache:
            return None
        key = (recipe.method, recipe.calibration_frames, recipe.percentile)
        if key not in self._caches:
            from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

            cache = self.workdir / f"ranges_{recipe.method}_{recipe.calibration_frames}_{len(self._caches)}.json"
            reader = FeedReader(self._feeds_for(self.full_model, recipe.calibration_frames))
            out = self._path("full_calibrated")
            src = self._save(self.full_model, "full_fp32")
            with _quiet_ort_quantization():
                quantize_static(
                    str(src), str(out), reader,
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=_ort_method(recipe.method),
                    extra_options=self._extra_options(recipe),
                    calibration_cache_path=str(cache),
                )
            self._caches[key] = cache
            self._full_quantized[key] = out
        return self._caches[key]

    def _is_full_model(self, model: onnx.ModelProto) -> bool:
        if len(model.graph.node) != len(self.full_model.graph.node):
            return False
        if self._full_digest is None:
            self._full_digest = hashlib.sha256(self.full_model.SerializeToString()).hexdigest()
        return hashlib.sha256(model.SerializeToString()).hexdigest() == self._full_digest

    def quantize(self, model: onnx.ModelProto, recipe: QuantRecipe, *, sensitive_count: int = 4) -> onnx.ModelProto:
        """``model`` (a head or the full model) as an INT8 QDQ model following ``recipe``."""
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        model = upgrade_for_qdq(model)
        exclude: list[str] = []
        if recipe.keep_fp32 == "first_last":
            exclude = first_last_weight_nodes(model)
        elif recipe.keep_fp32 == "sensitive":
            exclude = self.sensitive_nodes(model, count=sensitive_count)
        cache = self._calibration_cache(recipe)
        key = (recipe.method, recipe.calibration_frames, recipe.percentile)
        if cache is not None and not exclude and key in self._full_quantized and self._is_full_model(model):
            return onnx.load(str(self._full_quantized[key]))  # calibrating produced exactly this model
        out = self._path("quantized")
        kwargs = dict(
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude, calibrate_method=_ort_method(recipe.method),
            extra_options=self._extra_options(recipe),
        )
        src = self._save(model, "fp32")
        with _quiet_ort_quantization():
            if cache is not None:
                quantize_static(str(src), str(out), None, calibration_cache_path=str(cache), **kwargs)
            else:
                reader = FeedReader(self._feeds_for(model, recipe.calibration_frames))
                quantize_static(str(src), str(out), reader, **kwargs)
        quantized = onnx.load(str(out))
        if exclude:
            quantized.doc_string = f"kept in FP32: {', '.join(exclude)}"
        return quantized

    def sensitive_nodes(self, model: onnx.ModelProto, *, count: int = 4, frames: int = 8) -> list[str]:
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


@contextlib.contextmanager
def _quiet_ort_quantization() -> Iterator[None]:
    """ORT's quantizer logs advice ("consider pre-processing") at WARNING on the root
    logger; raise the root level to ERROR for the duration of the call only."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(max(old, logging.ERROR))
    try:
        # the histogram calibrators also print progress to stdout
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(old)


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
    attempts: tuple[tuple[str, float], ...]  # (remedy, top-1 agreement) in the order tried


def optimize_head(
    quantizer: Quantizer,
    head: onnx.ModelProto,
    finish: Callable[[onnx.ModelProto], Pipeline],
    reference: Sequence[Sequence[np.ndarray]],
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    base_frames: int = 32,
    recipes: Sequence[QuantRecipe] | None = None,
) -> OptimizedHead:
    """Quantize ``head`` with the first recipe whose pipeline reaches ``threshold``.

    ``finish`` turns a (quantized) head into the shipped pipeline (wire codec and
    tail added), so fidelity is measured on exactly what ships. Falls back to the FP32
    head when no recipe reaches the threshold.
    """
    recipes = list(recipes) if recipes is not None else remedy_recipes(base_frames, len(quantizer.feeds))
    attempts: list[tuple[str, float]] = []
    seen: set[QuantRecipe] = set()
    for recipe in recipes:
        if replace(recipe, remedy="") in seen:
            continue
        seen.add(replace(recipe, remedy=""))
        try:
            quantized = quantizer.quantize(head, recipe)
            fid = measure_fidelity(
                reference, finish(quantized), feeds, remedy=recipe.remedy, threshold=threshold, stop_below=threshold
            )
        except Exception as exc:  # noqa: BLE001 - a remedy ORT cannot apply or run is skipped, not fatal
            logger.warning("quantization remedy %r failed: %s", recipe.remedy, _first_line(exc))
            attempts.append((recipe.remedy, float("nan")))
            continue
        attempts.append((recipe.remedy, fid.top1_agreement))
        logger.info(
            "quantized head with %s: top-1 agreement %.4f over %d frames", recipe.remedy, fid.top1_agreement, fid.frames
        )
        if fid.top1_agreement >= threshold:
            return OptimizedHead(quantized, "int8", recipe, fid, tuple(attempts))
    fid = measure_fidelity(reference, finish(head), feeds, remedy="fp32_head", threshold=threshold)
    attempts.append(("fp32_head", fid.top1_agreement))
    logger.warning("no INT8 recipe reached %.3f top-1 agreement; shipping the FP32 head", threshold)
    return OptimizedHead(head, "fp32", None, fid, tuple(attempts))
