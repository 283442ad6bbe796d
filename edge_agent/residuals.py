"""What frames really took, fed back into the policy's predictions (issue 19). Pure: no clock, no I/O.

The cost model (:mod:`edge_agent.policy`) predicts a frame's latency on each cut from
profiles and telemetry. It misses whatever it has no term for: time a frame waits on a
CPU quota, pre/postprocessing, JPEG encoding of the "input" cut, a server's decode time it
does not report. Per cut we keep a *residual*::

    residual  <- residual + w x ((measured - queue) - model)     (w = 1/n for the first
                                                                 min_frames frames, then alpha)
    corrected  = max(model + clamp(residual x fade(age), +-max_ms), 0)

``model`` is the uncorrected prediction for the cut when the frame finished (the one the
policy is using right then); ``measured - queue`` is the frame's recorded total latency
without its wait in the capture queue (back-pressure that grows with the camera's frame
rate on whatever path is the bottleneck, bounded by the queue depth; the wait for a network
worker is counted). Frames that fell back, were gated or failed measure nothing of their cut.

Bounded and never stale for long: each frame's error and the correction are clamped to
``+-max_ms``; a cut that has not finished a frame for ``hold_ms`` keeps its residual, then
the residual shrinks linearly to 0 over ``fade_ms`` (so a cut the agent left long ago is
judged by the model again, and revisited if the model says so). A correction counts from
``min_frames`` frames on. The link needs no reset: wire time and RTT are terms of the model,
so a link change moves ``model`` and the residual keeps only what the model misses; a
residual that no longer fits fades or is re-learned at ``alpha`` per frame. Energy is left alone (no
per-frame energy is measured).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

from edge_agent.errors import ConfigError, PolicyError
from edge_agent.types import CutEstimate

__all__ = ["CorrectedEstimate", "ResidualConfig", "Residuals", "frame_latency_ms", "MEASURED_PATHS"]

#: Result paths whose latency measures the cut the frame ran (``edge_agent.types.Path`` values).
MEASURED_PATHS = frozenset({"split", "cloud", "local", "exited"})


@dataclass(frozen=True, kw_only=True)
class ResidualConfig:
    """How residuals learn and fade; validated on construction (``ConfigError`` names the field).

    alpha       EWMA weight of a new frame; default 0.2
    max_ms      bound of a correction either way; default 250 ms
    hold_ms     a cut not run for this long keeps its residual ...; default 20 s
    fade_ms     ... then it shrinks linearly to 0 over this; default 20 s
    min_frames  frames measured on a cut before its correction counts; default 3
    """

    alpha: float = 0.2
    max_ms: float = 250.0
    hold_ms: float = 20_000.0
    fade_ms: float = 20_000.0
    min_frames: int = 3

    def __post_init__(self) -> None:
        checks = (("alpha", self.alpha, 0.0, 1.0), ("max_ms", self.max_ms, 0.0, math.inf),
                  ("hold_ms", self.hold_ms, 0.0, math.inf), ("fade_ms", self.fade_ms, 0.0, math.inf),
                  ("min_frames", self.min_frames, 1, math.inf))
        for name, value, low, high in checks:
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            if not ok or not low <= value <= high or (name == "alpha" and value == 0):
                raise ConfigError(f"residuals.{name} = {value!r}; expected a finite number in "
                                  f"{'(' if name == 'alpha' else '['}{low:g}, {high:g}]")


@dataclass(frozen=True)
class CorrectedEstimate(CutEstimate):
    """A cut estimate whose latency carries a residual: ``latency_ms = model_ms + correction_ms``
    (floored at 0). Only estimates with a non-zero correction are of this type."""

    model_ms: float = 0.0
    correction_ms: float = 0.0


@dataclass
class _Residual:
    value_ms: float
    frames: int
    at_ms: float


def frame_latency_ms(latency_ms: dict[str, float]) -> float:
    """A result's measured latency as the residuals compare it: total minus the capture-queue wait."""
    return float(latency_ms.get("total", 0.0)) - float(latency_ms.get("queue", 0.0))


def model_ms(est: CutEstimate) -> float:
    """The uncorrected prediction behind an estimate."""
    return est.model_ms if isinstance(est, CorrectedEstimate) else est.latency_ms


@dataclass
class Residuals:
    """Per-cut latency residuals (module docstring). Not thread-safe: the policy's owner locks it."""

    config: ResidualConfig = field(default_factory=ResidualConfig)
    enabled: bool = True
    _by_cut: dict[str, _Residual] = field(default_factory=dict)

    def observe(self, cut_id: str, model_ms: float, measured_ms: float, now_ms: float) -> None:
        """A frame that ran ``cut_id`` took ``measured_ms``; the model predicted ``model_ms``.
        A non-finite or negative value raises ``PolicyError`` and leaves the state unchanged."""
        for name, value in (("model_ms", model_ms), ("measured_ms", measured_ms), ("now_ms", now_ms)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise PolicyError(f"{name} = {value!r} for cut {cut_id!r}; expected a finite number >= 0")
        bound = self.config.max_ms  # one odd frame (a page-fault storm) moves the state by at most this
        error = min(max(float(measured_ms) - float(model_ms), -bound), bound)
        old = self._by_cut.get(cut_id)
        if old is None:
            self._by_cut[cut_id] = _Residual(error, 1, float(now_ms))
            return
        if self._fade(now_ms - old.at_ms) < 1.0:  # fading: re-learned from this frame on
            self._by_cut[cut_id] = _Residual(error, 1, float(now_ms))
            return
        frames = old.frames + 1
        # the mean of the first min_frames frames, then the EWMA (one odd first frame weighs less)
        weight = 1.0 / frames if frames <= self.config.min_frames else self.config.alpha
        self._by_cut[cut_id] = _Residual(old.value_ms + weight * (error - old.value_ms), frames, float(now_ms))

    def correction_ms(self, cut_id: str, now_ms: float) -> float:
        """The correction added to the cut's predicted latency at ``now_ms`` (0 when none applies)."""
        r = self._by_cut.get(cut_id)
        if not self.enabled or r is None or r.frames < self.config.min_frames:
            return 0.0
        bound = self.config.max_ms
        return min(max(r.value_ms * self._fade(now_ms - r.at_ms), -bound), bound)

    def apply(self, estimates: Sequence[CutEstimate], now_ms: float) -> list[CutEstimate]:
        """Estimates with each cut's correction added to its latency (unavailable ones unchanged)."""
        out: list[CutEstimate] = []
        for est in estimates:
            c = self.correction_ms(est.cut_id, now_ms) if est.available else 0.0
            if c == 0.0 or not math.isfinite(est.latency_ms):
                out.append(est)
                continue
            latency = max(est.latency_ms + c, 0.0)
            fields = {f: getattr(est, f) for f in est.__dataclass_fields__ if f in CutEstimate.__dataclass_fields__}
            out.append(CorrectedEstimate(**{**fields, "latency_ms": latency}, model_ms=est.latency_ms,
                                         correction_ms=latency - est.latency_ms))
        return out

    def observe_frame(self, estimates: Sequence[CutEstimate], cut_id: str, path: str, measured_ms: float,
                      now_ms: float) -> Optional[float]:
        """A finished frame against the policy's current ``estimates`` (corrected or not); returns the
        model prediction it was compared with, or None when the frame measures nothing (its path)."""
        est = next((e for e in estimates if e.cut_id == cut_id), None)
        if path not in MEASURED_PATHS or est is None or not math.isfinite(model_ms(est)):
            return None
        self.observe(cut_id, model_ms(est), max(float(measured_ms), 0.0), now_ms)
        return model_ms(est)

    def _fade(self, age_ms: float) -> float:
        cfg = self.config
        if age_ms <= cfg.hold_ms:
            return 1.0
        if cfg.fade_ms <= 0:
            return 0.0
        return max(0.0, 1.0 - (age_ms - cfg.hold_ms) / cfg.fade_ms)

