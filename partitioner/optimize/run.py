"""Apply an optimization plan step by step, measuring and gating each step.

For each step of the plan: a copy of the current model is pruned or factorized,
distilled from the original (when the plan says so), exported to ONNX and measured
(:mod:`partitioner.optimize.measure`). A step whose model fails the fidelity gate is not
kept: the next step starts from the model before it. The result holds every step's
figures, the final model and its lineage record (:mod:`protos.lineage`).

A PyTorch source takes every step; an ONNX-only source (a file without its PyTorch code)
takes low-rank steps only, rewritten in the graph, without distillation.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import pathlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx

from partitioner import calibration, fidelity
from partitioner.optimize import measure
from partitioner.optimize.steps import LowRank, Plan, Prune, Step
from protos import bundle_pb2
from protos.lineage import METADATA_KEY, lineage_to_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """The model to optimize: its name, its ONNX export, and how to build it in PyTorch (if we can)."""

    name: str
    model: onnx.ModelProto
    build: Callable[[], object] | None = None  # () -> torch.nn.Module in eval mode
    input_shape: tuple[int, ...] = (1, 3, 224, 224)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.model.SerializeToString()).hexdigest()


@dataclass(frozen=True)
class Footage:
    """Preprocessed training frames (PyTorch, N × C × H × W) and the held-out frames they never include;
    optionally validation frames (neither trained on nor held out: early stopping's judge)."""

    spec: bundle_pb2.InputSpec
    train: object  # torch.Tensor
    train_sources: tuple[str, ...]
    heldout: calibration.FrameFeeds
    validation: object | None = None  # torch.Tensor
    validation_sources: tuple[str, ...] = ()

    def heldout_tensor(self):  # noqa: ANN201 - torch.Tensor
        import torch

        name = self.spec.tensor.name
        return torch.from_numpy(np.concatenate([feed[name] for feed in self.heldout.evaluation]))


@dataclass(frozen=True)
class StepResult:
    """One model's figures: the original, or the model after one step (kept or not)."""

    label: str
    kept: bool
    reason: str
    params: int
    macs: int
    latency_ms: float
    speedup: float  # the original's latency / this latency, timed in the same rounds
    score: fidelity.Score
    record: bundle_pb2.OptimizationStep
    model: onnx.ModelProto

    @property
    def fidelity(self) -> float:
        return self.score.value


@dataclass(frozen=True)
class OptimizeResult:
    source: Source
    original: StepResult
    steps: tuple[StepResult, ...]
    baseline: fidelity.Score
    lineage: bundle_pb2.Lineage
    model: onnx.ModelProto  # the last kept model (the original when no step was kept), lineage in metadata

    @property
    def kept(self) -> tuple[StepResult, ...]:
        return tuple(s for s in self.steps if s.kept)


def export(module, input_shape: tuple[int, ...]) -> onnx.ModelProto:  # noqa: ANN001 - torch.nn.Module
    from partitioner.loading import export_torch_module

    return export_torch_module(module, input_shape, 17)


def optimize(source: Source, plan: Plan, footage: Footage, *, gate: fidelity.Gate = fidelity.Gate(),
             task: str = "", threads: int = 1, timing_runs: int = 20, progress: bool = True) -> OptimizeResult:
    """Run ``plan`` on ``source``; see the module docstring. Raises ``ValueError`` before any work when the
    plan prunes an ONNX-only source."""
    if source.build is None and any(isinstance(step, Prune) for step in plan.steps):
        raise ValueError(f"{source.name!r} is an ONNX model without its PyTorch source; pruning needs PyTorch "
                         "(only low-rank steps apply to ONNX graphs)")
    heldout = measure.held_out(source.model, footage.spec, footage.heldout, gate, task)
    logger.info("cloud-only JPEG baseline: %s %.4f over %d held-out frames", heldout.baseline.metric,
                heldout.baseline.value, heldout.baseline.frames)
    feed = dict(footage.heldout.evaluation[0])
    original = _measure("original", source.model, source.model, heldout, feed, threads, timing_runs,
                        bundle_pb2.OptimizationStep(), kept=True)
    teacher = source.build() if source.build is not None else None
    current_module = teacher
    current_model = source.model
    results: list[StepResult] = []
    for k, step in enumerate(plan.steps):
        record = bundle_pb2.OptimizationStep(kind="prune" if isinstance(step, Prune) else "lowrank")
        description = f"step {k + 1}/{len(plan.steps)}: {step.label}"
        if current_module is None:
            assert isinstance(step, LowRank)
            from partitioner.optimize.lowrank_onnx import factorize_onnx

            candidate_model, ranks = factorize_onnx(current_model, step)
            _describe(record, step, ranks)
            candidate_module = None
        else:
            candidate_module = copy.deepcopy(current_module)
            _apply(candidate_module, step, record, footage, source.input_shape)
            candidate_model = export(candidate_module, source.input_shape)
            if plan.distill is not None:
                candidate_module, candidate_model = _distill_if_better(
                    candidate_module, candidate_model, teacher, plan, footage, heldout, record, source.input_shape,
                    threads=threads, progress=progress, description=description)
        result = _measure(step.label, candidate_model, source.model, heldout, feed, threads, timing_runs, record)
        results.append(result)
        logger.info("%s: %s (%s)", description, "kept" if result.kept else "not kept", result.reason)
        if result.kept:
            current_module, current_model = candidate_module, candidate_model
    lineage = bundle_pb2.Lineage(source_model=source.name, source_sha256=source.sha256,
                                 steps=[r.record for r in results], baseline_fidelity=heldout.baseline.value,
                                 metric=heldout.baseline.metric)
    lineage.train_sources.extend(pathlib.Path(s).name for s in footage.train_sources)
    lineage.heldout_sources.extend(pathlib.Path(s).name for s in heldout.sources)
    final = onnx.ModelProto()
    final.CopyFrom(current_model)
    set_lineage(final, lineage)
    return OptimizeResult(source=source, original=original, steps=tuple(results), baseline=heldout.baseline,
                          lineage=lineage, model=final)


def _distill_if_better(module, model: onnx.ModelProto, teacher, plan: Plan, footage: Footage,  # noqa: ANN001
                       heldout: measure.HeldOut, record: bundle_pb2.OptimizationStep, input_shape: tuple[int, ...],
                       *, threads: int, progress: bool, description: str) -> tuple[object, onnx.ModelProto]:
    """The distilled model, or the step's model as it was when distillation lowered its held-out fidelity
    (distilling on one scene's frames can pull a nearly intact model towards that scene)."""
    from partitioner.optimize.distill import distill

    assert plan.distill is not None
    before, _, _ = heldout.score(model)
    student = copy.deepcopy(module)
    report = distill(student, teacher, footage.train, footage.heldout_tensor(), plan.distill, threads=threads,
                     progress=progress, description=description)
    distilled = export(student, input_shape)
    after, _, _ = heldout.score(distilled)
    if after.value < before.value:
        logger.info("%s: distillation lowered %s from %.4f to %.4f; keeping the undistilled model", description,
                    after.metric, before.value, after.value)
        return module, model
    d = plan.distill
    record.distill_seconds, record.distill_epochs = report.seconds, report.epochs
    record.temperature, record.feature_weight, record.seed = d.temperature, d.feature_weight, d.seed
    return student, distilled


def set_lineage(model: onnx.ModelProto, lineage: bundle_pb2.Lineage) -> None:
    """Store ``lineage`` in ``model.metadata_props`` (replacing an older record)."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=METADATA_KEY, value=lineage_to_json(lineage))


def _apply(module, step: Step, record: bundle_pb2.OptimizationStep, footage: Footage,  # noqa: ANN001
           input_shape: tuple[int, ...]) -> None:
    import torch

    if isinstance(step, Prune) and step.importance == "reconstruction":
        from partitioner.optimize.reconstruct import prune_reconstructed

        prune_reconstructed(module, footage.train[::2][:75], step.ratio, round_to=step.round_to,
                            layer_ratios=dict(step.layer_ratios))
        _describe(record, step, [])
    elif isinstance(step, Prune):
        from partitioner.optimize.prune import prune_channels

        frames = footage.train[:32] if step.importance == "taylor" else None
        prune_channels(module, torch.zeros(input_shape), step, frames)
        _describe(record, step, [])
    else:
        from partitioner.optimize.lowrank import factorize_model

        _, ranks = factorize_model(module, step)
        _describe(record, step, ranks)


def _describe(record: bundle_pb2.OptimizationStep, step: Step, ranks: list) -> None:
    if isinstance(step, Prune):
        record.ratio, record.scope, record.importance = step.ratio, step.scope, step.importance
    else:
        record.energy = step.energy
        record.ranks.extend(ranks)


def _measure(label: str, model: onnx.ModelProto, original: onnx.ModelProto, heldout: measure.HeldOut, feed: dict,
             threads: int, runs: int, record: bundle_pb2.OptimizationStep, kept: bool | None = None) -> StepResult:
    score, passed, reason = heldout.score(model)
    latency = measure.time_models({"original": original, "candidate": model}, feed, threads=threads, runs=runs)
    record.params, record.macs = measure.count_parameters(model), measure.count_macs(model)
    record.latency_ms, record.fidelity = latency["candidate"], score.value
    record.kept = passed if kept is None else kept
    record.reason = reason
    return StepResult(label=label, kept=record.kept, reason=reason, params=record.params, macs=record.macs,
                      latency_ms=latency["candidate"], speedup=latency["original"] / latency["candidate"],
                      score=score, record=record, model=model)
