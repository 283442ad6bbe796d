"""Documented extension points of the frame path, with no-op defaults.

* :class:`FrameGate` runs before preprocessing: a frame it rejects costs no model run;
  its result (path ``gated``) repeats the last computed frame's. The configured gate is
  :func:`configured_gate`: the motion gate of :mod:`edge_agent.gate` in a
  :class:`SwitchableGate` that ``splitctl gate on|off`` turns on and off and that times itself.
* :class:`ExitCheck` runs after the head: outputs it returns finish the frame on the
  device without an offload (path ``exited``); the bundle's early exits are
  :class:`edge_agent.exits.EarlyExits`.
* :class:`MotionRoi` (``[gate] roi = true``, detector bundles) tells the head stage which
  part of an admitted frame the model sees: the motion gate's region (:mod:`edge_agent.roi`).

Both are called from one thread (the head stage) and must be quick and side-effect free
beyond their own state.
"""
from __future__ import annotations

import time
from typing import Callable, Mapping, Optional, Protocol

import numpy as np

from edge_agent.config import GateConfig
from edge_agent.head import HeadOutput
from edge_agent.roi import Roi, roi_for
from edge_agent.sources import Frame


class FrameGate(Protocol):
    def admit(self, frame: Frame) -> bool:
        """True to compute this frame; False skips it before preprocessing (counted as gated)."""
        ...


class ExitCheck(Protocol):
    def check(self, head: HeadOutput) -> Optional[Mapping[str, np.ndarray]]:
        """Final outputs to finish the frame here, or None to go on (encode, offload)."""
        ...


class AdmitAll:
    """The default gate: every frame is computed."""

    def admit(self, frame: Frame) -> bool:
        return True


class NeverExit:
    """The default exit check: every offloadable frame is offloaded."""

    def check(self, head: HeadOutput) -> Optional[Mapping[str, np.ndarray]]:
        return None


class SwitchableGate:
    """A gate that can be turned on and off at run time (``splitctl gate on|off``) and
    times itself (the gate cost per frame that the policy's energy model and the status show).

    While off it admits every frame without running the inner gate; turning it on again
    starts the inner gate afresh (its reference frame would be stale).
    """

    def __init__(self, make_inner: Callable[[], FrameGate], *, enabled: bool) -> None:
        self._make_inner = make_inner
        self._inner: Optional[FrameGate] = make_inner() if enabled else None
        self._enabled = enabled
        self._runs = 0
        self._total_s = 0.0

    @property
    def enabled(self) -> bool:
        return self._enabled

    def set_enabled(self, enabled: bool) -> None:
        if enabled and not self._enabled:
            self._inner = self._make_inner()
        self._enabled = bool(enabled)

    @property
    def mean_ms(self) -> float:
        """Mean time of one gate check so far (0 before the first)."""
        return 1000.0 * self._total_s / self._runs if self._runs else 0.0

    def admit(self, frame: Frame) -> bool:
        inner = self._inner
        if not self._enabled or inner is None:
            return True
        t0 = time.perf_counter()
        admitted = inner.admit(frame)
        self._total_s += time.perf_counter() - t0
        self._runs += 1
        return admitted

    def motion_region(self) -> Optional[tuple[float, float, float, float]]:
        """The changed pixels' box (frame fractions) of the frame just admitted, when the inner
        gate measured motion there; None when off, for a first frame, a scene change or a refresh."""
        last = getattr(self._inner, "last", None) if self._enabled else None
        return getattr(last, "region", None)


def configured_gate(cfg: GateConfig, *, live_source: bool, injected: Optional[FrameGate] = None) -> SwitchableGate:
    """``gate.mode`` "on": the motion gate; "off": none (every frame admitted); "auto": the
    motion gate for live sources (fixed cameras, streams, live pipes) and none for files and
    folders. ``injected`` replaces the motion gate (tests, embedding programs) and starts on.
    Either way it can be switched at run time."""
    if injected is not None:
        return SwitchableGate(lambda: injected, enabled=True)
    return SwitchableGate(cfg.motion_gate, enabled=cfg.mode == "on" or (cfg.mode == "auto" and live_source))


class MotionRoi:
    """Region-of-interest mode: the crop of each admitted frame the model runs on.

    The gate's motion region grown to the model input's aspect ratio (:func:`edge_agent.roi.roi_for`),
    or the whole frame when the gate saw no localised motion (first frame, scene change,
    refresh, gate off). Called by the head stage right after the gate admitted the frame.
    """

    def __init__(self, gate: SwitchableGate, *, input_w: int, input_h: int) -> None:
        self.gate = gate
        self.input_w = input_w
        self.input_h = input_h

    def roi_of(self, frame: Frame) -> Roi:
        h, w = frame.image_bgr.shape[:2]
        return roi_for(self.gate.motion_region(), w, h, input_w=self.input_w, input_h=self.input_h)
