"""The learned-bottleneck stage of ``partition`` (issue 13 part 2): ``--bottleneck CUT``.

The named cut joins the candidates (:func:`with_bottleneck_cut`), is split and verified
like every cut, then :func:`bottleneck_variant` trains a bottleneck there
(:mod:`partitioner.bottleneck`) and ships it as a codec cut of its own,
``<cut>_bottleneck``: the head is the cut's FP32 head plus the encoder and a UINT8 low-bit
wire (packed, zstd), the tail the decoder plus the cut's FP32 tail. It goes through the
same fidelity gate as every variant (the held-out footage, the JPEG baseline) and ships
only when it passes; its bytes and its measured encode/decode times reach the profile and
the manifest's ``Cut.codec`` exactly as a training-free codec's do (:mod:`partitioner.codec_stage`).

Training: the frozen cut activations are computed once with ONNX Runtime; the frozen tail
runs in torch through :class:`partitioner.onnx_torch.OnnxModule` for the feature loss at
the first later tensor of another shape and distillation on the outputs (when the tail's
operators allow; otherwise the feature loss at the cut alone, said in the log). Frames are
augmented views of the training sources (:mod:`partitioner.bottleneck_data`); a source that
is also held-out footage is refused.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnx

from partitioner import evaluation, stages
from partitioner.bottleneck_config import BottleneckConfig
from partitioner.codec_fit import CodecSpec
from partitioner.codec_select import CodecResult, FittedCodec, time_codec
from partitioner.codec_stage import WIRE_FRAMES, CodecCut
from partitioner.config import PartitionConfig
from partitioner.cuts import CutCandidate
from partitioner.errors import CalibrationError, UnsupportedModel
from protos import bundle_pb2
from protos.codec import LowBitParams

logger = logging.getLogger(__name__)

__all__ = ["BottleneckConfig", "BottleneckResult", "bottleneck_variant", "with_bottleneck_cut"]

#: Training windows (cut pixels) and held-out frames for the trainer's loss report.
CROP_PX = 32
LOSS_FRAMES = 32
#: Ship unpacked codes when they cost at most this fraction more bytes than packed ones.
UNPACKED_SLACK = 0.05


@dataclass(frozen=True)
class BottleneckResult(CodecResult):
    """A trained bottleneck's CodecResult, with what the manifest adds: the cut's own channel count
    and how it trained (``train`` for the log and the benchmarks)."""

    source_channels: int = 0
    train: dict = dataclasses.field(default_factory=dict)

    def codec_proto(self) -> bundle_pb2.CutCodec:
        proto = super().codec_proto()
        proto.name = f"bottleneck{proto.wire_channels}x{proto.bits}b+{self.fitted.spec.name}"
        proto.source_channels = self.source_channels
        proto.projection = "learned"
        return proto


def with_bottleneck_cut(model: onnx.ModelProto, config: PartitionConfig,
                        candidates: Sequence[CutCandidate]) -> list[CutCandidate]:
    """``candidates`` plus the bottleneck's cut (when asked for and not there yet), in graph order."""
    if not config.bottleneck.cut:
        return list(candidates)
    from partitioner.cut_selection import select_cuts

    (cand,) = select_cuts(model, [config.bottleneck.cut], max_tensors=1)
    if any(c.id == cand.id for c in candidates):
        return list(candidates)
    return sorted([*candidates, cand], key=lambda c: (c.is_end and c.order > 0, c.order))


def bottleneck_variant(config: PartitionConfig, context: stages.CutContext,
                       verified: Sequence[stages.VerifiedCut]) -> CodecCut | None:
    """Train, export and judge the bottleneck; the shippable cut when it passes the gate, else None."""
    options = config.bottleneck
    if not options.cut:
        return None
    from partitioner.cut_selection import select_cuts

    (cand,) = select_cuts(context.model, [options.cut], max_tensors=1)
    cut = next((v for v in verified if v.candidate.id == cand.id), None)
    if cut is None or cut.head is None or cut.tail is None:
        raise UnsupportedModel(f"bottleneck cut {options.cut!r} ({cand.id}) did not verify; "
                               f"verified cuts: {[v.candidate.id for v in verified]}")
    result = train_and_judge(options, cut, context)
    logger.info("bottleneck at %s: %s %.4f (%s), %.0f bytes/frame, trained %.0f s", cand.id,
                result.fidelity.remedy, result.fidelity.value, "passes" if result.fidelity.passed else "fails",
                result.wire_bytes, result.train.get("seconds", 0.0))
    if not result.fidelity.passed:
        logger.warning("bottleneck at %s fails the gate (top-1 %.4f, required %.4f): not shipped", cand.id,
                       result.fidelity.value, result.fidelity.threshold)
        return None
    return CodecCut(_as_cut(cut, result), cand.id, result)


def train_and_judge(options: BottleneckConfig, cut: stages.VerifiedCut, context: stages.CutContext) -> BottleneckResult:
    """Train the bottleneck between ``cut``'s FP32 head and tail and judge the exported pair."""
    import torch
    from torch import nn

    from partitioner import bottleneck, bottleneck_data, training
    from partitioner.onnx_torch import OnnxModule, unsupported_ops

    assert cut.head is not None and cut.tail is not None
    cand = cut.candidate
    tensor = cand.tensors[0]
    shape = tuple(int(d) if int(d) > 0 else 1 for d in cand.shapes[0])
    if len(shape) != 4:
        raise UnsupportedModel(f"bottleneck cut {cand.id}: tensor shape {list(cand.shapes[0])}; expected NCHW")
    sources = _train_sources(options, context)
    views = bottleneck_data.training_views(sources, options.views, context.spec, seed=options.seed)
    name = context.spec.tensor.name
    feats = _activations(cut.head, [{name: views[i:i + 1]} for i in range(len(views))], tensor)
    held = _activations(cut.head, context.frames.evaluation[:LOSS_FRAMES], tensor)
    bad = unsupported_ops(cut.tail)
    kd = options.kd and not bad
    tail: nn.Module = nn.Identity()
    later = None
    if not bad:
        tail = OnnxModule(cut.tail)
        later_tensor = _later_tensor(cut.tail, tensor, shape)
        later = OnnxModule(cut.tail, outputs=[later_tensor]) if later_tensor else None
    else:
        logger.warning("bottleneck: tail operators %s do not run in torch: feature loss at the cut only", bad)
    crop = CROP_PX if min(shape[2:]) > CROP_PX else None
    config = training.TrainConfig(seed=options.seed, max_epochs=options.epochs, max_seconds=options.seconds,
                                  batch_size=16, learning_rate=2e-3, threads=options.threads, progress=True)
    t0 = time.monotonic()
    bn, report = bottleneck.train_bottleneck(
        nn.Identity(), tail, torch.from_numpy(feats), torch.from_numpy(held), channels=options.channels,
        bits=options.bits, config=config, later=later, kd=kd, kd_frames=False, crop=crop,
        temperature=options.temperature)
    seconds = time.monotonic() - t0
    head_m, tail_m = bottleneck.attach_bottleneck(cut.head, cut.tail, bn, shape)
    label = f"bottleneck {options.channels}x{options.bits}b"
    fid = context.judge(evaluation.Pipeline(head_m, tail_m), remedy=label)
    codes = evaluation.collect_activations(head_m, context.frames.evaluation[:WIRE_FRAMES],
                                           [bottleneck.WIRE_TENSOR])[bottleneck.WIRE_TENSOR]
    spec, encode_ms, sizes, decode_ms = _choose_wire(codes, options.bits)
    wire_channels = int(codes[0].shape[1])
    params = LowBitParams(bits=options.bits, scales=(1.0,) * wire_channels, zero_points=(0,) * wire_channels)
    fitted = FittedCodec(spec, bottleneck.WIRE_TENSOR, wire_channels, None, params)
    train = {"seconds": seconds, "steps": report.report.steps, "epochs": report.report.epochs,
             "stopped_by": report.report.stopped_by, "train_loss": report.report.train_loss,
             "heldout_loss": report.report.heldout_loss, "views": len(views),
             "sources": [pathlib.Path(s).name for s in sources], "kd": kd, "temperature": options.temperature, "later": later is not None,
             "crop": crop, "wire_shape": list(codes[0].shape)}
    return BottleneckResult(fitted, fid, float(np.mean(sizes)), int(codes[0].size), encode_ms, decode_ms,
                            head_m, tail_m, source_channels=shape[1], train=train)


def _choose_wire(codes: Sequence[np.ndarray], bits: int) -> tuple[CodecSpec, float, list[int], float]:
    """Packed + zstd, or one byte a code + zstd when that is within :data:`UNPACKED_SLACK` of its
    bytes: on learned 3-bit codes zstd takes back most of what packing saves (3337 vs 3268 B a
    frame) while unpacking costs 3x (codec 5 % vs 16 % of the head's time, codecs.json)."""
    packed = CodecSpec(bits=bits, compression="zstd", packed=True)
    timed = {packed: time_codec(codes, packed)}
    if bits < 8:
        plain = CodecSpec(bits=bits, compression="zstd", packed=False)
        timed[plain] = time_codec(codes, plain)
        if np.mean(timed[plain][1]) <= (1 + UNPACKED_SLACK) * np.mean(timed[packed][1]):
            return (plain, *timed[plain])
    return (packed, *timed[packed])


def _train_sources(options: BottleneckConfig, context: stages.CutContext) -> list[pathlib.Path]:
    from partitioner import bottleneck_data

    sources = [options.train_source] if options.train_source is not None else bottleneck_data.default_sources()
    held = {pathlib.Path(s).resolve() for s in context.frames.evaluation_sources if pathlib.Path(s).exists()}
    overlap = [str(s) for s in sources if pathlib.Path(s).resolve() in held]
    if overlap:
        raise CalibrationError(f"bottleneck training source {overlap} is also the held-out fidelity footage; "
                               "expected footage the fidelity measurement never sees")
    return [pathlib.Path(s) for s in sources]


def _activations(head: onnx.ModelProto, feeds: Sequence[dict], tensor: str) -> np.ndarray:
    return np.concatenate(evaluation.collect_activations(head, feeds, [tensor])[tensor]).astype(np.float32)


def _later_tensor(tail: onnx.ModelProto, cut_tensor: str, shape: tuple[int, ...]) -> str:
    """The first tensor after the cut with another shape that everything downstream goes through
    (MobileNetV2 at features_2_conv_2: features_4_conv_2, 32x28x28), or "" when none is found."""
    from partitioner.cuts import enumerate_cuts

    inferred = onnx.shape_inference.infer_shapes(tail)
    for cand in enumerate_cuts(inferred, max_tensors=1):
        if cand.is_end or cand.tensors[0] == cut_tensor:
            continue
        got = tuple(int(d) for d in cand.shapes[0])
        if len(got) == 4 and got[1:] != shape[1:]:
            return cand.tensors[0]
    return ""


def _as_cut(cut: stages.VerifiedCut, result: BottleneckResult) -> stages.OptimizedCut:
    cand = cut.candidate
    from partitioner import bottleneck

    wire_shape = [-1, *result.train["wire_shape"][1:]]
    tensor = bundle_pb2.TensorSpec(name=bottleneck.WIRE_TENSOR, datatype="UINT8", shape=wire_shape,
                                   encoding=result.fitted.encoding())
    variant = dataclasses.replace(cand, id=f"{cand.id}_bottleneck",
                                  display_name=f"{cand.display_name} [bottleneck {result.fitted.channels}x"
                                               f"{result.fitted.spec.bits}b]")
    return stages.OptimizedCut(
        candidate=variant, verification=cut.verification, head=result.head, head_precision="fp32",
        tail=result.tail, tail_precision="fp32", fidelity=result.fidelity, tensors=(tensor,),
        wire=stages.WireCost(by_codec={result.fitted.spec.name: int(round(result.wire_bytes))},
                             shipped_bytes=int(round(result.wire_bytes))),
    )
