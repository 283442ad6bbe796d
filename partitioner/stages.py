"""The per-cut steps of ``partition``; each takes and returns frozen values::

    CutCandidate --split_and_verify--> VerifiedCut | RejectedCut   FP32 head/tail that reproduce the model
    VerifiedCut  --optimize_cut------> OptimizedCut                INT8 head (with remedies), wire codec, fidelity
    OptimizedCut --profile_cut-------> ProfiledCut                 edge and cloud latency on this machine

Every cut's optimization shares one :class:`CutContext`: the prepared full model, its
input spec, the real frames, and the :class:`~partitioner.evaluation.Judge` that holds the
full model's outputs on the held-out frames, the cloud-only baseline and the gate.

The ``output`` cut's head is the INT8 full model when it passes the gate (else the FP32
one) and sends nothing; the same INT8 model is the edge's local fallback. The ``input``
cut sends a JPEG; its tail is the float full model and the server decodes and
preprocesses as ``manifest.input`` says, so its fidelity is measured through that JPEG
round trip (with an FP32 tail it *is* the baseline).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import onnx

from partitioner import calibration, codecs, evaluation, quantize
from partitioner import profile as profiling
from partitioner import verify
from partitioner.calibration import FrameFeeds
from partitioner.config import PartitionConfig
from partitioner.cuts import CutCandidate
from partitioner.errors import PartitionerError, VerificationFailed
from partitioner.split import split_model
from protos import bundle_pb2
from protos.names import INPUT_CUT, OUTPUT_CUT

logger = logging.getLogger(__name__)

#: The JPEG the ``input`` cut sends, as the manifest names it.
JPEG_TENSOR = "image_jpeg"
#: Evaluation frames whose activations measure bytes on the wire per codec.
WIRE_SAMPLE_FRAMES = 32
_WIRE_DATATYPES = {"int8": "UINT8", "fp16": "FP16", "fp32": "FP32"}


@dataclass(frozen=True)
class RejectedCut:
    """A candidate that does not ship, and why."""

    id: str
    display_name: str
    reason: str


@dataclass(frozen=True)
class VerifiedCut:
    """An FP32 head/tail pair (None on the side an end cut lacks) that reproduces the full model."""

    candidate: CutCandidate
    head: onnx.ModelProto | None
    tail: onnx.ModelProto | None
    verification: bundle_pb2.Verification


@dataclass(frozen=True)
class WireCost:
    """Mean bytes per frame on the wire: by codec as measured on real frames, and what ships."""

    by_codec: Mapping[str, int]
    shipped_bytes: int


@dataclass(frozen=True)
class OptimizedCut:
    """The head and tail that ship, with the wire codec baked in, and their measured fidelity.

    ``attempts`` are the quantization remedies tried, as (remedy, top-1 agreement).
    """

    candidate: CutCandidate
    verification: bundle_pb2.Verification
    head: onnx.ModelProto | None
    head_precision: str  # "int8", "fp32", or "" without a head
    tail: onnx.ModelProto | None
    tail_precision: str  # "fp32", "fp16", or "" without a tail
    fidelity: bundle_pb2.Fidelity
    tensors: tuple[bundle_pb2.TensorSpec, ...]
    wire: WireCost
    attempts: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class ProfiledCut:
    """An optimized cut with its latency measured here."""

    cut: OptimizedCut
    edge_profile: bundle_pb2.LatencyProfile
    cloud_profile: bundle_pb2.LatencyProfile


@dataclass(frozen=True)
class CutContext:
    """What every cut's optimization shares; ``judge.reference`` holds the full model's
    outputs on ``frames.evaluation``."""

    model: onnx.ModelProto
    spec: bundle_pb2.InputSpec
    frames: FrameFeeds
    judge: evaluation.Judge
    exact_int8: bool = False  # run INT8 variants unfused when judging them (evaluation.make_session)
    pre_quantized: bool = False  # the source carried its own quantization: its heads are already INT8


# --------------------------------------------------------------------------- split + verify


def split_and_verify(
    model: onnx.ModelProto,
    candidate: CutCandidate,
    feeds: Sequence[Mapping[str, np.ndarray]],
    reference: Sequence[Mapping[str, np.ndarray]],
    *,
    threads: int,
) -> VerifiedCut | RejectedCut:
    """Split ``model`` at ``candidate`` and verify the pair in FP32 on ``feeds``.

    An inner cut that cannot be split or does not reproduce the model is rejected with
    the reason; an end cut that fails raises, since every bundle needs both ends.
    """
    try:
        head, tail = split_model(model, candidate)
        result = verify.verify_split(model, head, tail, feeds, reference=reference, raise_on_failure=True,
                                     threads=threads)
    except (VerificationFailed, PartitionerError) as exc:
        if candidate.is_end:
            raise
        logger.warning("rejected cut %s (%s): %s", candidate.id, candidate.display_name, exc)
        return RejectedCut(candidate.id, candidate.display_name, str(exc))
    return VerifiedCut(candidate, head, tail, result)


# --------------------------------------------------------------------------- optimize


def float_tensors(candidate: CutCandidate) -> list[str]:
    """Cut tensors the wire codec applies to (FP32 ones; others travel as they are)."""
    return [t for t, dt in zip(candidate.tensors, candidate.datatypes) if dt == "FP32"]


def optimize_cut(
    config: PartitionConfig, context: CutContext, cut: VerifiedCut, quantizer: quantize.Quantizer
) -> OptimizedCut:
    """Quantize the head (when asked), bake the wire codec into both graphs, measure fidelity and wire bytes."""
    tail, tail_precision = cut.tail, ""
    if tail is not None:
        tail, tail_precision = (quantize.convert_tail_fp16(tail), "fp16") if config.tail_fp16 else (tail, "fp32")
    if cut.candidate.id == INPUT_CUT:
        return _optimize_input_cut(config, context, cut, tail, tail_precision)

    cand = cut.candidate
    fp32_head = cut.head
    assert fp32_head is not None, f"cut {cand.id!r} has no head"  # only the input cut lacks one
    is_output = cand.id == OUTPUT_CUT
    codec = "fp32" if is_output else config.wire_codec
    floats = float_tensors(cand)
    params: dict[str, codecs.Int8Params] = {}
    by_codec: dict[str, int] = {}
    if not is_output:
        calib_acts = evaluation.collect_activations(fp32_head, context.frames.calibration, cand.tensors)
        params = {n: codecs.calibrate_int8(calib_acts[n]) for n in floats}
        sample = context.frames.evaluation[:WIRE_SAMPLE_FRAMES]
        by_codec = codecs.wire_bytes_by_codec(evaluation.collect_activations(fp32_head, sample, cand.tensors), params)
    int8_params = params if codec == "int8" else None

    def finish(head: onnx.ModelProto) -> evaluation.Pipeline:
        return evaluation.Pipeline(*codecs.apply_wire_codec(codec, head, tail, floats, int8_params),
                                   exact_int8=context.exact_int8)

    attempts: tuple[tuple[str, float], ...] = ()
    if config.quantize_heads:
        opt = quantize.optimize_head(quantizer, fp32_head, finish, context.judge)
        head, precision, fidelity, attempts = opt.model, opt.precision, opt.fidelity, opt.attempts
    else:
        head, precision = fp32_head, "int8" if context.pre_quantized else "fp32"
        fidelity = context.judge(finish(head))
    final_head, final_tail = codecs.apply_wire_codec(codec, head, tail, floats, int8_params)
    if not fidelity.passed:
        logger.warning(
            "cut %s: %.4f fails the gate (needs %.4f) even with the %s head; the %s wire codec costs the rest "
            "(it ships, with its fidelity recorded)", cand.id, fidelity.value, fidelity.threshold, precision, codec,
        )
    return OptimizedCut(
        candidate=cand, verification=cut.verification, head=final_head, head_precision=precision,
        tail=final_tail, tail_precision=tail_precision, fidelity=fidelity,
        tensors=_wire_tensors(cand, codec, floats, params),
        wire=WireCost(by_codec=by_codec, shipped_bytes=0 if is_output else int(by_codec.get(codec, 0))),
        attempts=attempts,
    )


def _optimize_input_cut(
    config: PartitionConfig, context: CutContext, cut: VerifiedCut, tail: onnx.ModelProto | None, tail_precision: str
) -> OptimizedCut:
    """Full offload: the JPEG the edge sends, decoded and preprocessed on the server."""
    spec = context.spec
    decoded, sizes = calibration.jpeg_roundtrip(context.frames.evaluation_bgr, config.jpeg_quality, spec)
    feeds = [{spec.tensor.name: x} for x in calibration.preprocess_frames(decoded, spec)]
    fidelity = context.judge(evaluation.Pipeline(None, tail), feeds=feeds)
    jpeg_bytes = int(round(float(np.mean(sizes))))
    fp32_bytes = int(np.prod(spec.tensor.shape[1:])) * 4
    jpeg = bundle_pb2.TensorSpec(name=JPEG_TENSOR, datatype="BYTES", shape=[-1],
                                 encoding=bundle_pb2.WireEncoding(codec="jpeg", compression="none"))
    return OptimizedCut(
        candidate=cut.candidate, verification=cut.verification, head=None, head_precision="",
        tail=tail, tail_precision=tail_precision, fidelity=fidelity, tensors=(jpeg,),
        wire=WireCost(by_codec={"jpeg": jpeg_bytes, "fp32": fp32_bytes}, shipped_bytes=jpeg_bytes),
    )


def _wire_tensors(
    cand: CutCandidate, codec: str, floats: Sequence[str], params: Mapping[str, codecs.Int8Params]
) -> tuple[bundle_pb2.TensorSpec, ...]:
    """The manifest's view of each cut tensor: float ones as ``codec`` sends them, others raw."""
    tensors = []
    for name, shape, datatype in zip(cand.tensors, cand.shapes, cand.datatypes):
        if name in floats:
            enc = bundle_pb2.WireEncoding(codec=codec, compression="none")
            if codec == "int8":
                enc.scale, enc.zero_point = params[name].scale, params[name].zero_point
            datatype = _WIRE_DATATYPES[codec]
        else:
            enc = bundle_pb2.WireEncoding(codec="raw", compression="none")
        tensors.append(bundle_pb2.TensorSpec(name=name, datatype=datatype, shape=list(shape), encoding=enc))
    return tuple(tensors)


# --------------------------------------------------------------------------- profile


def profile_cut(config: PartitionConfig, cut: OptimizedCut, frames: FrameFeeds,
                spec: bundle_pb2.InputSpec | None = None) -> ProfiledCut:
    """Time the head (or the JPEG encoding, for the ``input`` cut: of the frame downscaled to ``spec``'s
    input when given, as the agent sends it) and the tail on this machine."""
    timing = profiling.TimingConfig(threads=config.threads, warmup=config.profile_warmup, runs=config.profile_runs)
    feed = frames.evaluation[0]
    edge_extra_ms = 0.0
    tail_feed: Mapping[str, np.ndarray] | None
    if cut.head is None:
        edge_extra_ms = profiling.time_jpeg_encode(frames.evaluation_bgr[0], config.jpeg_quality, timing, spec)
        tail_feed = feed
    else:
        tail_feed = profiling.head_outputs(cut.head, feed) if cut.tail is not None else None
    edge, cloud = profiling.profile_cut(cut.head, cut.tail, feed, tail_feed, timing, edge_ms_without_head=edge_extra_ms)
    return ProfiledCut(cut=cut, edge_profile=edge, cloud_profile=cloud)
