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

import dataclasses
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


class _Sum(nn.Module):
    """A linear path plus a nonlinear branch (its last layer starts at zero, so at first the sum is linear)."""

    def __init__(self, linear: nn.Conv2d | nn.ConvTranspose2d, branch: nn.Sequential) -> None:
        super().__init__()
        self.linear: nn.Conv2d | nn.ConvTranspose2d = linear
        self.branch = branch
        last = branch[-1]
        assert isinstance(last, (nn.Conv2d, nn.ConvTranspose2d)) and last.bias is not None
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.branch(x)


class Bottleneck(nn.Module):
    """Encoder (cut -> ``channels`` maps at half the resolution, squashed to [0, levels]) and decoder
    (back to the cut), each a linear 2x2/stride-2 path (see :meth:`init_from`) plus a small conv branch."""

    def __init__(self, cut_channels: int, channels: int, bits: int, hidden: int = 48) -> None:
        super().__init__()
        if not 1 <= channels <= cut_channels * 4:
            raise ValueError(f"bottleneck channels {channels} not in 1..{cut_channels * 4}")
        if not 2 <= bits <= 8:
            raise ValueError(f"bottleneck bits {bits} not in 2..8")
        self.levels = float((1 << bits) - 1)
        self.encoder: _Sum = _Sum(nn.Conv2d(cut_channels, channels, 2, stride=2), nn.Sequential(
            nn.Conv2d(cut_channels, hidden, 3, stride=2, padding=1), nn.ReLU6(),
            nn.Conv2d(hidden, channels, 1),
        ))
        self.decoder: _Sum = _Sum(nn.ConvTranspose2d(channels, cut_channels, 2, stride=2), nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU6(),
            nn.ConvTranspose2d(hidden, cut_channels, 2, stride=2),  # 2x2 per code position: cheap at HxW
        ))

    @torch.no_grad()
    def init_from(self, feats: torch.Tensor, spread: float = 1.5) -> float:
        """Start the linear paths at PCA over the cut's channels of 2x2-pooled activations
        ``feats`` (N x C x H x W): code k is principal component k scaled so that ``spread``
        standard deviations reach the sigmoid's +-1, the decoder the (linearised) inverse.
        Returns the fraction of the pooled activations' variance the kept components explain."""
        cut_channels = feats.shape[1]
        pooled = torch.nn.functional.avg_pool2d(feats, 2).permute(0, 2, 3, 1).reshape(-1, cut_channels).double()
        mean = pooled.mean(0)
        cov = (pooled - mean).T @ (pooled - mean) / max(1, len(pooled) - 1)
        values, vectors = torch.linalg.eigh(cov)
        enc, dec = self.encoder.linear, self.decoder.linear
        k = min(int(enc.out_channels), cut_channels)
        top = vectors[:, -k:].flip(1)  # C x k, largest first
        std = values[-k:].flip(0).clamp_min(1e-12).sqrt()
        enc_w = (top / (spread * std)).T / 4.0  # k x C, averaged over the 2x2 taps
        enc.weight.zero_()
        assert enc.bias is not None and dec.bias is not None
        enc.bias.zero_()
        enc.weight[:k] = enc_w[:, :, None, None].float().expand(-1, -1, 2, 2)
        enc.bias[:k] = (-(top.T @ mean) / (spread * std)).float()
        # sigmoid(z) * levels ~ levels * (0.5 + z / 4) near 0, so z ~ (4 / levels) * u - 2
        dec_w = top * (spread * std) * (4.0 / self.levels)  # C x k
        dec.weight.zero_()
        dec.weight[:k] = dec_w.T[:, :, None, None].float().expand(-1, -1, 2, 2)
        dec.bias.copy_((mean - 2.0 * (top * (spread * std)).sum(1)).float())
        return float(values[-k:].sum() / values.sum().clamp_min(1e-12))

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
    kd: bool = True, feature_weight: float = 1.0, flip: bool = False, final_fraction: float = 0.25,
    crop: int | None = None, kd_frames: bool = False, kd_weight: float = 1.0, temperature: float = 4.0,
    kd_warmup_steps: int = 0,
) -> tuple[Bottleneck, BottleneckReport]:
    """Distil a bottleneck between the frozen ``head`` and ``tail`` (``tail(head(x))`` = the model's logits).

    The loss is the normalized feature loss at the cut, plus the same after ``later`` (the first
    layers of the tail) when given, plus distillation on the outputs when ``kd`` (the costliest
    term: the whole tail runs forward and backward every step).

    The frozen parts run once per frame, before training: the cut activations, ``later``'s
    targets and the teacher's logits are cached, and the trainer draws sample indices into that
    cache, so a step costs only the bottleneck (plus ``later``/``tail`` on the rebuilt activation).
    ``flip`` adds the mirrored training frames. ``crop`` (even, in cut pixels) trains on random
    ``crop x crop`` windows of the cached activations (the teachers then run on the window, without
    gradients): several times cheaper per step at 56x56 cuts; the held-out loss uses whole frames.
    With ``kd_frames`` the distillation term runs on the whole cached frame (teacher logits
    cached, the tail on the whole rebuilt cut: the issue's objective, the image's class) while
    the feature terms stay on the window; else on the window (the teacher runs on it).
    ``kd_weight`` scales it and ``temperature`` softens it; ``kd_warmup_steps`` starts it only
    after that many feature-loss steps (a warm-up). The last ``final_fraction`` of
    the epoch and time budgets runs at a tenth of the learning rate (a step decay; the report
    merges both phases)."""
    config = config or training.TrainConfig()
    if not 0.0 <= final_fraction < 1.0:
        raise ValueError(f"final_fraction {final_fraction!r} must be in [0, 1)")
    if later is None and not kd:
        logger.info("bottleneck: feature loss at the cut only (no later layer, no distillation)")
    for module in (head, tail, later):
        if module is None:
            continue
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
    parts = [train_frames] + ([torch.flip(train_frames, dims=(-1,))] if flip else []) + [heldout_frames]
    n_train = sum(len(x) for x in parts[:-1])
    old_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        feats = _batched(head, torch.cat(parts))
        later_want = _batched(later, feats) if later is not None else None
        logits_want = _batched(tail, feats) if kd else None
    finally:
        torch.set_num_threads(old_threads)
    torch.manual_seed(config.seed)
    bn = Bottleneck(int(feats.shape[1]), channels, bits)
    explained = bn.init_from(feats[:n_train])
    logger.info("bottleneck: linear paths start at PCA of the pooled cut (%.1f%% of its variance)", 100 * explained)

    height, width = int(feats.shape[2]), int(feats.shape[3])
    if crop is not None and (crop < 2 or crop % 2 or crop > min(height, width)):
        raise ValueError(f"crop {crop!r} must be an even number of cut pixels in 2..{min(height, width)}")
    crop_rng = torch.Generator().manual_seed(config.seed)
    steps_seen = [0]

    def loss_fn(index: torch.Tensor) -> torch.Tensor:
        x = feats[index]
        windowed = crop is not None and crop < min(height, width) and torch.is_grad_enabled()
        if windowed:
            assert crop is not None
            top, left = (2 * int(torch.randint(0, (n - crop) // 2 + 1, (1,), generator=crop_rng)) for n in (height, width))
            x = x[:, :, top:top + crop, left:left + crop]
        rebuilt = bn(x)
        loss = feature_weight * training.feature_loss(rebuilt, x)
        if later is not None:
            want = _batched(later, x) if windowed else later_want[index]  # type: ignore[index]
            loss = loss + training.feature_loss(later(rebuilt), want)
        if torch.is_grad_enabled():
            steps_seen[0] += 1
        if kd and (not torch.is_grad_enabled() or steps_seen[0] > kd_warmup_steps):
            if kd_frames and windowed:
                student = tail(bn(feats[index]))
                teacher = logits_want[index]  # type: ignore[index]
            else:
                student = tail(rebuilt)
                teacher = _batched(tail, x) if windowed else logits_want[index]  # type: ignore[index]
            loss = loss + kd_weight * training.kd_loss(student, teacher, temperature)
        return loss

    train_index = torch.arange(n_train)
    held_index = torch.arange(n_train, len(feats))
    description = f"bottleneck {channels}x{bits}b"
    first, second = _phases(config, final_fraction)
    report = training.train(bn, loss_fn, train_index, held_index, first, parameters=bn.parameters(),
                            description=description)
    if second is not None:  # the main phase ran its epochs or its share of the time: the rest at lr/10
        second = dataclasses.replace(second, max_seconds=max(1e-3, config.max_seconds - report.seconds))
        late = training.train(bn, loss_fn, train_index, held_index, second, parameters=bn.parameters(),
                              description=description + " (lr/10)")
        report = training.TrainReport(
            epochs=report.epochs + late.epochs, steps=report.steps + late.steps, seconds=report.seconds + late.seconds,
            stopped_by=late.stopped_by, train_loss=late.train_loss, heldout_loss=late.heldout_loss,
            loss_history=report.loss_history + late.loss_history)
    return bn, BottleneckReport(channels, bits, n_train, len(heldout_frames), report)


def _phases(config: training.TrainConfig,
            final_fraction: float) -> tuple[training.TrainConfig, training.TrainConfig | None]:
    """The main phase at the configured learning rate and the final one at a tenth of it."""
    late_epochs = int(round(config.max_epochs * final_fraction))
    if late_epochs < 1 or late_epochs >= config.max_epochs:
        return config, None
    first = dataclasses.replace(config, max_epochs=config.max_epochs - late_epochs,
                                max_seconds=config.max_seconds * (1.0 - final_fraction))
    return first, dataclasses.replace(config, max_epochs=late_epochs, learning_rate=config.learning_rate / 10)


@torch.no_grad()
def _batched(module: nn.Module, x: torch.Tensor, size: int = 32) -> torch.Tensor:
    return torch.cat([module(x[i:i + size]) for i in range(0, len(x), size)])


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


class _Encoder(nn.Module):
    def __init__(self, bn: Bottleneck) -> None:
        super().__init__()
        self.bn = bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.bn.encoder(x)) * self.bn.levels  # QuantizeLinear rounds in ONNX


def attach_bottleneck(head: onnx.ModelProto, tail: onnx.ModelProto, bn: Bottleneck,
                      cut_shape: tuple[int, ...]) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The ONNX ``head`` with the encoder and the UINT8 ``lowbit`` wire appended (codes named
    :data:`WIRE_TENSOR`, scale 1, zero point 0), and ``tail`` with the decoder prepended; both
    graphs otherwise untouched. ``cut_shape`` is the cut tensor's (N, C, H, W)."""
    from onnx import compose

    from partitioner.loading import export_torch_module

    cut = head.graph.output[0].name
    if len(head.graph.output) != 1 or tail.graph.input[0].name != cut:
        raise ValueError(f"head outputs {[o.name for o in head.graph.output]} and tail inputs "
                         f"{[i.name for i in tail.graph.input]}: expected one cut tensor between them")
    opset = max(o.version for o in head.opset_import if o.domain in ("", "ai.onnx"))
    shape = (1, *cut_shape[1:])
    with torch.no_grad():
        codes_shape = tuple(_Encoder(bn).eval()(torch.zeros(shape)).shape)
    enc = export_torch_module(_Encoder(bn).eval(), shape, opset, input_name="bottleneck_in",
                              output_names=[WIRE_TENSOR])
    dec = export_torch_module(bn.decoder.eval(), codes_shape, opset, input_name=WIRE_TENSOR,
                              output_names=["bottleneck_out"])
    for part in (enc, dec):
        part.ir_version = head.ir_version
    new_head = compose.merge_models(head, enc, io_map=[(cut, "bottleneck_in")], prefix2="bottleneck_enc/")
    new_tail = compose.merge_models(dec, tail, io_map=[("bottleneck_out", cut)], prefix1="bottleneck_dec/")
    _rename_io(new_head, "bottleneck_enc/" + WIRE_TENSOR, WIRE_TENSOR)
    _rename_io(new_tail, "bottleneck_dec/" + WIRE_TENSOR, WIRE_TENSOR)
    channels = codes_shape[1]
    params = LowBitParams(bits=int(np.log2(bn.levels + 1)), scales=(1.0,) * channels, zero_points=(0,) * channels)
    out_head, out_tail = add_lowbit_wire(new_head, new_tail, WIRE_TENSOR, params)
    assert out_head is not None and out_tail is not None
    return out_head, out_tail


def _rename_io(model: onnx.ModelProto, old: str, new: str) -> None:
    from partitioner.codecs import _rename_uses

    for value in (*model.graph.input, *model.graph.output):
        if value.name == old:
            value.name = new
    _rename_uses(model.graph, old, new, inputs=True, outputs=True)
