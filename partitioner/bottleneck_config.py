"""What ``partition --bottleneck CUT`` trains: one frozen value (PartitionConfig.bottleneck).

Kept apart from :mod:`partitioner.bottleneck` so that reading the configuration never
imports torch.
"""
from __future__ import annotations

import pathlib
from dataclasses import dataclass

__all__ = ["BottleneckConfig"]


@dataclass(frozen=True)
class BottleneckConfig:
    """A learned bottleneck at ``cut`` ("" = none): ``channels`` code maps at half the cut's
    resolution, ``bits`` bits each, trained for at most ``seconds`` / ``epochs`` on ``views``
    augmented views of ``train_source`` (a video, an image or a folder; None = bikes.mp4,
    vtest.avi and the sample photos -- never the held-out fidelity footage). Invalid values
    raise ``ValueError`` naming the field and the value."""

    cut: str = ""
    channels: int = 12
    bits: int = 3
    seconds: float = 1200.0
    epochs: int = 60
    views: int = 1200
    train_source: pathlib.Path | None = None
    kd: bool = True  # distillation on the outputs through the frozen tail (when the tail runs in torch)
    temperature: float = 2.0  # of the distillation on the outputs (T=2: top-1 0.63; T=4 0.615, T=1 0.48; codecs.json)
    seed: int = 0
    # torch threads while training: 1 on a shared machine (2 threads per job on 2 busy cores ran 5x slower)
    threads: int = 1

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"bottleneck.{name}={getattr(self, name)!r} is invalid; expected {expected}")

        if not isinstance(self.cut, str):
            raise bad("cut", "a cut id or tensor name, or '' for none")
        for name, low, high in (("channels", 1, 1024), ("bits", 2, 8), ("epochs", 1, 100000),
                                ("views", 8, 1000000), ("seed", 0, 2**31),
                                ("threads", 1, 256)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise bad(name, f"an integer in {low}..{high}")
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, (int, float)) or not 0 < self.seconds <= 86400:
            raise bad("seconds", "a number of seconds in (0, 86400]")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not 0 < self.temperature <= 100:
            raise bad("temperature", "a number in (0, 100]")
        if self.train_source is not None and not isinstance(self.train_source, pathlib.Path):
            raise bad("train_source", "a pathlib.Path or None")
