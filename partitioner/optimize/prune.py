"""Structured pruning with Torch-Pruning's dependency graph (DepGraph).

Whole output channels are removed from convolutions and fully connected layers, and the
layers coupled to them (BatchNorm, depthwise convolutions, the inputs of the next layer,
both sides of a residual addition) lose the same channels: Torch-Pruning tracks those
couplings, so nothing here does. The result is a smaller dense model whose ONNX export
really has fewer channels — not masked weights.

The model's final classifier (the layer producing the outputs) is never pruned, so the
output shape stays. Importance is the L2 magnitude of a channel's weights, or the first
order Taylor estimate ``|w · dL/dw|`` with ``L`` the cross-entropy of the model against its
own top-1 predictions on real frames (no labels needed).
"""
from __future__ import annotations

import logging

import torch

from partitioner.optimize.steps import Prune

logger = logging.getLogger(__name__)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def output_layers(module: torch.nn.Module, example: torch.Tensor) -> list[torch.nn.Module]:
    """The conv/linear layers whose outputs are the model's outputs (found by tracing a forward pass)."""
    seen: list[torch.nn.Module] = []
    outputs: dict[int, torch.nn.Module] = {}

    def hook(layer: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        outputs[id(output)] = layer

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.no_grad():
            result = module(example)
    finally:
        for h in handles:
            h.remove()
    for out in result if isinstance(result, (tuple, list)) else (result,):
        if id(out) in outputs:
            seen.append(outputs[id(out)])
    return seen


def prune_channels(module: torch.nn.Module, example: torch.Tensor, step: Prune,
                   frames: torch.Tensor | None = None) -> torch.nn.Module:
    """Prune ``module`` in place as ``step`` says and return it (eval mode).

    ``example`` is one input batch (shapes only); ``frames`` are real frames for the Taylor
    importance (required then). Raises ``ValueError`` naming a layer in ``step.layer_ratios``
    that the module does not have.
    """
    import torch_pruning as tp

    module.eval()
    names = dict(module.named_modules())
    unknown = [name for name, _ in step.layer_ratios if name not in names]
    if unknown:
        convs = [n for n, m in names.items() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        raise ValueError(f"layer(s) {', '.join(map(repr, unknown))} not in the model; expected module names such as "
                         f"{', '.join(convs[:4])}")
    ignored = output_layers(module, example)
    if step.importance == "taylor":
        if frames is None or frames.shape[0] == 0:
            raise ValueError("taylor importance needs real frames; got none")
        importance = tp.importance.GroupTaylorImportance()
    else:
        importance = tp.importance.GroupMagnitudeImportance(p=2)
    pruner = tp.pruner.MetaPruner(
        module, example, importance=importance, pruning_ratio=step.ratio,
        pruning_ratio_dict={names[name]: ratio for name, ratio in step.layer_ratios} or None,
        global_pruning=step.scope == "global", ignored_layers=ignored, round_to=step.round_to,
    )
    if step.importance == "taylor":
        assert frames is not None
        _accumulate_self_labelled_gradients(module, frames)
    before = count_parameters(module)
    pruner.step()
    module.zero_grad(set_to_none=True)
    logger.info("%s: parameters %d -> %d", step.label, before, count_parameters(module))
    return module.eval()


def _accumulate_self_labelled_gradients(module: torch.nn.Module, frames: torch.Tensor, batch: int = 8) -> None:
    module.zero_grad(set_to_none=True)
    for first in range(0, int(frames.shape[0]), batch):
        x = frames[first : first + batch]
        logits = module(x)
        labels = logits.detach().argmax(dim=-1)
        torch.nn.functional.cross_entropy(logits, labels).backward()
