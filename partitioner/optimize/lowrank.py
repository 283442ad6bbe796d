"""Low-rank factorization of PyTorch layers by truncated SVD: one layer becomes two thin ones.

A fully connected layer ``W`` (out × in) becomes ``Linear(in, r)`` then ``Linear(r, out)``;
a convolution (groups = 1) with weight out × in × kh × kw becomes a ``kh × kw`` convolution
to ``r`` channels (same stride, padding, dilation) then a ``1 × 1`` convolution to ``out``.
The singular values are split evenly (√S on each side). At full rank the pair computes
the original layer (up to float rounding).

The rank of a layer is the smallest that keeps ``energy`` of its squared singular values;
a layer is factorized only when that rank makes it cheaper (fewer multiply-accumulates),
unless its rank is fixed by name. :func:`choose_rank` is shared with the ONNX rewrite
(:mod:`partitioner.optimize.lowrank_onnx`).
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from partitioner.optimize.steps import LowRank
from protos import bundle_pb2

logger = logging.getLogger(__name__)


def choose_rank(singular_values: np.ndarray, energy: float) -> int:
    """The smallest rank whose singular values hold ``energy`` of the sum of squares (>= 1)."""
    squares = np.asarray(singular_values, dtype=np.float64) ** 2
    total = float(squares.sum())
    if total == 0.0:
        return 1
    kept = np.cumsum(squares) / total
    return int(min(np.searchsorted(kept, energy - 1e-12) + 1, len(squares)))


def is_cheaper(rank: int, fan_in: int, fan_out: int) -> bool:
    """Whether ``rank × (fan_in + fan_out)`` multiply-accumulates beat ``fan_in × fan_out``."""
    return rank * (fan_in + fan_out) < fan_in * fan_out


def split_matrix(weight: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(left out × r, right r × in) with ``left @ right`` the best rank-``rank`` approximation of ``weight``."""
    u, s, vh = np.linalg.svd(np.asarray(weight, dtype=np.float64), full_matrices=False)
    root = np.sqrt(s[:rank])
    return (u[:, :rank] * root).astype(np.float32), (root[:, None] * vh[:rank]).astype(np.float32)


def factorize_layer(layer: torch.nn.Module, rank: int) -> torch.nn.Sequential:
    """The two-layer replacement of ``layer`` (a ``Linear`` or a ``Conv2d`` with groups = 1) at ``rank``."""
    weight = layer.weight.detach().cpu().numpy()
    out_features = weight.shape[0]
    matrix = weight.reshape(out_features, -1)
    full = min(matrix.shape)
    if not 1 <= rank <= full:
        raise ValueError(f"rank {rank} is invalid for a {tuple(weight.shape)} weight; expected 1..{full}")
    left, right = split_matrix(matrix, rank)
    bias = layer.bias is not None
    if isinstance(layer, torch.nn.Linear):
        first = torch.nn.Linear(layer.in_features, rank, bias=False)
        second = torch.nn.Linear(rank, out_features, bias=bias)
        first.weight.data = torch.from_numpy(right)
        second.weight.data = torch.from_numpy(left)
    elif isinstance(layer, torch.nn.Conv2d) and layer.groups == 1:
        first = torch.nn.Conv2d(layer.in_channels, rank, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                                dilation=layer.dilation, bias=False, padding_mode=layer.padding_mode)
        second = torch.nn.Conv2d(rank, out_features, 1, bias=bias)
        first.weight.data = torch.from_numpy(right.reshape(rank, *weight.shape[1:]))
        second.weight.data = torch.from_numpy(left.reshape(out_features, rank, 1, 1))
    else:
        raise ValueError(f"cannot factorize {type(layer).__name__}; expected Linear or Conv2d with groups=1")
    if bias:
        second.bias.data = layer.bias.detach().clone()
    return torch.nn.Sequential(first, second)


def factorizable_layers(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: m for name, m in module.named_modules()
            if isinstance(m, torch.nn.Linear) or (isinstance(m, torch.nn.Conv2d) and m.groups == 1)}


def factorize_model(module: torch.nn.Module, step: LowRank) -> tuple[torch.nn.Module, list[bundle_pb2.LayerRank]]:
    """Factorize ``module``'s layers in place as ``step`` says; the ranks chosen, one per factorized layer.

    Raises ``ValueError`` naming a fixed-rank layer that is missing or a rank above its full rank.
    """
    layers = factorizable_layers(module)
    fixed = dict(step.ranks)
    for name, rank in fixed.items():
        if name not in layers:
            raise ValueError(f"layer {name!r} is not a Linear or Conv2d (groups=1) of the model; expected one of "
                             f"{', '.join(list(layers)[:6])}, ...")
        full = min(layers[name].weight.shape[0], layers[name].weight[0].numel())
        if rank > full:
            raise ValueError(f"rank {rank} of layer {name!r} is above its full rank {full}")
    chosen: list[bundle_pb2.LayerRank] = []
    for name, layer in layers.items():
        matrix = layer.weight.detach().cpu().numpy().reshape(layer.weight.shape[0], -1)
        full = min(matrix.shape)
        if name in fixed:
            rank = fixed[name]
        else:
            rank = choose_rank(np.linalg.svd(matrix.astype(np.float64), compute_uv=False), step.energy)
            if not is_cheaper(rank, matrix.shape[1], matrix.shape[0]):
                continue
        _replace(module, name, factorize_layer(layer, rank))
        chosen.append(bundle_pb2.LayerRank(layer=name, rank=rank, full_rank=full))
    logger.info("%s: factorized %d of %d layers", step.label, len(chosen), len(layers))
    return module.eval(), chosen


def _replace(module: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, child, new)
