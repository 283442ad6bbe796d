"""What ``optimize`` is asked to do: one small frozen value per step, checked when it is made.

A plan is a sequence of steps applied in order to a PyTorch model (or, for low-rank
only, to an ONNX graph); each step is followed by distillation when a budget is given,
then measured and gated (:mod:`partitioner.optimize.run`). Invalid values raise
``ValueError`` quoting the field and the value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from protos.lineage import IMPORTANCES, PRUNE_SCOPES


def _fraction(name: str, value: object, *, low_open: bool, high_open: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} {value!r} is invalid; expected a fraction in {lo}0, 1{hi}")


@dataclass(frozen=True)
class Prune:
    """Structured pruning: remove ``ratio`` of the channels of every prunable layer (``scope="per-layer"``,
    the same fraction everywhere) or of the whole network (``"global"``: importances compared across
    layers). ``layer_ratios`` overrides the ratio of named layers (module names, e.g. ``features.3``).
    Channel counts are kept multiples of ``round_to`` (ONNX Runtime's kernels are faster on them).
    ``importance="reconstruction"`` prunes the groups that feed one 1×1 conv / linear layer and refits
    that layer by least squares on calibration frames (:mod:`partitioner.optimize.reconstruct`)."""

    ratio: float
    scope: str = "per-layer"
    importance: str = "magnitude"
    layer_ratios: tuple[tuple[str, float], ...] = ()
    round_to: int = 8

    def __post_init__(self) -> None:
        _fraction("prune ratio", self.ratio, low_open=True, high_open=True)
        if self.scope not in PRUNE_SCOPES:
            raise ValueError(f"prune scope {self.scope!r} is invalid; expected one of {', '.join(PRUNE_SCOPES)}")
        if self.importance not in IMPORTANCES:
            raise ValueError(f"prune importance {self.importance!r} is invalid; expected one of {', '.join(IMPORTANCES)}")
        for name, ratio in self.layer_ratios:
            _fraction(f"prune ratio of layer {name!r}", ratio, low_open=True, high_open=True)
        if self.importance == "reconstruction" and self.scope != "per-layer":
            raise ValueError(f"prune scope {self.scope!r} is invalid with importance 'reconstruction'; expected "
                             "'per-layer' (each consumer is reconstructed with its own ratio)")
        if isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or self.round_to < 1:
            raise ValueError(f"prune round_to {self.round_to!r} is invalid; expected an integer >= 1")

    @property
    def label(self) -> str:
        return f"prune {self.ratio:.0%} {self.scope} {self.importance}"


@dataclass(frozen=True)
class LowRank:
    """Low-rank factorization: each convolution (groups=1) and fully connected layer whose weight
    keeps ``energy`` of its squared singular values at a rank that makes it cheaper becomes two
    thin layers; ``ranks`` fixes the rank of named layers instead (a rank above the layer's full
    rank is an error naming both)."""

    energy: float = 0.95
    ranks: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        _fraction("low-rank energy", self.energy, low_open=True, high_open=False)
        for name, rank in self.ranks:
            if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
                raise ValueError(f"rank {rank!r} of layer {name!r} is invalid; expected an integer >= 1")

    @property
    def label(self) -> str:
        return f"low-rank {self.energy:g} energy" + (f", {len(self.ranks)} fixed ranks" if self.ranks else "")


@dataclass(frozen=True)
class Distill:
    """Distillation after a step: the student mimics the original on unlabelled frames, softened
    outputs at ``temperature`` plus ``feature_weight`` × the normalized feature loss (0 = outputs only)."""

    seconds: float = 600.0
    epochs: int = 30
    temperature: float = 4.0
    feature_weight: float = 0.0
    learning_rate: float = 1e-4
    batch_size: int = 16
    seed: int = 0
    # SGD with momentum: Adam's per-weight steps of ~learning_rate on a nearly converged loss move every
    # weight of a pretrained student (see partitioner.training.TrainConfig.optimizer)
    optimizer: str = "sgd"
    # Random crops, flips and colour jitter of the training frames (the teacher answers each
    # augmented batch afresh): :class:`partitioner.training.Augment` defaults
    augment: bool = False
    # With validation frames: stop after this many epochs without a better validation score (0: run to the
    # cap); the best epoch's weights are kept either way
    patience: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 0:
            raise ValueError(f"distill patience {self.patience!r} is invalid; expected an integer >= 0")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"distill optimizer {self.optimizer!r} is invalid; expected 'sgd' or 'adamw'")
        for name in ("seconds", "temperature", "learning_rate"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"distill {name} {value!r} is invalid; expected a finite number > 0")
        if not (isinstance(self.feature_weight, (int, float)) and math.isfinite(self.feature_weight)
                and self.feature_weight >= 0):
            raise ValueError(f"distill feature_weight {self.feature_weight!r} is invalid; expected a number >= 0")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"distill {name} {value!r} is invalid; expected an integer >= 1")


Step = Prune | LowRank


@dataclass(frozen=True)
class Plan:
    """Steps in order, each followed by ``distill`` (``None`` = no distillation)."""

    steps: tuple[Step, ...]
    distill: Distill | None = field(default_factory=Distill)

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("an optimization plan needs at least one step (prune or low-rank); got none")
