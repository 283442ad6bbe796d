"""A learned bottleneck at a cut, by head-network distillation (issue 13 part 2).

A small encoder is appended to a frozen torch head and a small decoder prepended to the
frozen tail: the encoder maps the cut activation (C x H x W) to ``channels`` maps at half
the resolution, squashed to ``0 .. 2**bits - 1`` and rounded (straight-through in
training), so the wire carries ``channels x H/2 x W/2`` codes of ``bits`` bits; the decoder
upsamples back to C x H x W. Only the encoder and decoder learn, with the shared trainer
(:mod:`partitioner.training`) on unlabelled frames: distillation on the outputs (KL at
T=4) and normalized feature losses at the cut and after a few later layers, the original
model frozen as the teacher (the distillation term is optional: it runs the whole tail
forward and backward every step, four times the cost on this machine's CPU).

:func:`export_bottleneck` writes the head (original head + encoder + QuantizeLinear/Clip)
and the tail (DequantizeLinear + decoder + original tail) as ONNX through
:func:`partitioner.codec_fit.add_lowbit_wire` -- the wire is the ``lowbit`` codec with
scale 1 and zero point 0, so the edge, the server, the manifest and the fidelity gate
treat it like every other codec. Importing this module imports torch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from torch import nn

from partitioner import training
from partitioner.codec_fit import add_lowbit_wire
from protos.codec import LowBitParams

logger = logging.getLogger(__name__)

__all__ = ["Bottleneck", "BottleneckReport", "export_bottleneck", "train_bottleneck"]

WIRE_TENSOR = "bottleneck_codes"


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: ANN001, ANN205 - autograd signature
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        return grad


class Bottleneck(nn.Module):
    """Encoder (stride-2 3x3 conv -> ``channels`` maps in [0, levels-1]) and decoder (back to the cut)."""

    def __init__(self, cut_channels: int, channels: int, bits: int, hidden: int = 48) -> None:
        super().__init__()
        if not 1 <= channels <= cut_channels * 4:
            raise ValueError(f"bottleneck channels {channels} not in 1..{cut_channels * 4}")
        if not 2 <= bits <= 8:
            raise ValueError(f"bottleneck bits {bits} not in 2..8")
        self.levels = float((1 << bits) - 1)
        self.encoder = nn.Sequential(
            nn.Conv2d(cut_channels, hidden, 3, stride=2, padding=1), nn.ReLU6(),
            nn.Conv2d(hidden, channels, 1),
        )
        self.decoder = nn.Sequential(  # the 3x3 conv at the coded resolution: 4x cheaper to train than after
            nn.Conv2d(channels, hidden, 1), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU6(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(hidden, cut_channels, 3, padding=1),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes as floats in 0..levels (rounded; gradients pass straight through the rounding)."""
        return _RoundSTE.apply(torch.sigmoid(self.encoder(x)) * self.levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x))


class _Head(nn.Module):
    def __init__(self, head: nn.Module, bn: Bottleneck) -> None:
        super().__init__()
        self.head, self.bn = head, bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.bn.encoder(self.head(x))) * self.bn.levels  # QuantizeLinear rounds in ONNX


class _Tail(nn.Module):
    def __init__(self, bn: Bottleneck, tail: nn.Module) -> None:
        super().__init__()
        self.bn, self.tail = bn, tail

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.tail(self.bn.decoder(codes))


@dataclass(frozen=True)
class BottleneckReport:
    """How the bottleneck trained, on which frames."""

    channels: int
    bits: int
    train_frames: int
    heldout_frames: int
    report: training.TrainReport


def train_bottleneck(
    head: nn.Module, tail: nn.Module, train_frames: torch.Tensor, heldout_frames: torch.Tensor, *,
    channels: int = 8, bits: int = 4, config: training.TrainConfig | None = None, later: nn.Module | None = None,
    kd: bool = True, feature_weight: float = 1.0,
) -> tuple[Bottleneck, BottleneckReport]:
    """Distil a bottleneck between the frozen ``head`` and ``tail`` (``tail(head(x))`` = the model's logits).

    The loss is the normalized feature loss at the cut, plus the same after ``later`` (the first
    layers of the tail) when given, plus distillation on the outputs when ``kd`` (the costliest
    term: the whole tail runs forward and backward every step)."""
    config = config or training.TrainConfig()
    if later is None and not kd:
        logger.info("bottleneck: feature loss at the cut only (no later layer, no distillation)")
    for module in (head, tail, later):
        if module is None:
            continue
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
    with torch.no_grad():
        train_feats = torch.cat([head(train_frames[i:i + 32]) for i in range(0, len(train_frames), 32)])
        held_feats = torch.cat([head(heldout_frames[i:i + 32]) for i in range(0, len(heldout_frames), 32)])
    torch.manual_seed(config.seed)
    bn = Bottleneck(int(train_feats.shape[1]), channels, bits)

    def loss_fn(feats: torch.Tensor) -> torch.Tensor:
        rebuilt = bn(feats)
        loss = feature_weight * training.feature_loss(rebuilt, feats)
        if later is not None:
            with torch.no_grad():
                want = later(feats)
            loss = loss + training.feature_loss(later(rebuilt), want)
        if kd:
            with torch.no_grad():
                teacher = tail(feats)
            loss = loss + training.kd_loss(tail(rebuilt), teacher)
        return loss

    report = training.train(bn, loss_fn, train_feats, held_feats, config, parameters=bn.parameters(),
                            description=f"bottleneck {channels}x{bits}b")
    return bn, BottleneckReport(channels, bits, len(train_frames), len(heldout_frames), report)


def export_bottleneck(head: nn.Module, tail: nn.Module, bn: Bottleneck, input_shape: tuple[int, ...],
                      *, input_name: str, output_name: str, opset: int = 17) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(head, tail) ONNX models with the bottleneck and its UINT8 ``lowbit`` wire (scale 1, zero point 0)."""
    from partitioner.loading import export_torch_module

    head_m = export_torch_module(_Head(head, bn).eval(), input_shape, opset, input_name=input_name,
                                 output_names=[WIRE_TENSOR])
    with torch.no_grad():
        codes_shape = tuple(_Head(head, bn).eval()(torch.zeros(input_shape)).shape)
    tail_m = export_torch_module(_Tail(bn, tail).eval(), codes_shape, opset, input_name=WIRE_TENSOR,
                                 output_names=[output_name])
    channels = codes_shape[1]
    params = LowBitParams(bits=int(np.log2(bn.levels + 1)), scales=(1.0,) * channels, zero_points=(0,) * channels)
    new_head, new_tail = add_lowbit_wire(head_m, tail_m, WIRE_TENSOR, params)
    assert new_head is not None and new_tail is not None
    return new_head, new_tail
