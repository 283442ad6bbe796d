"""Documented extension points of the frame path, with no-op defaults.

* :class:`FrameGate` runs before preprocessing: a frame it rejects costs no model run;
  its result (path ``gated``) repeats the last computed frame's. The configured gate is
  :func:`configured_gate` (the motion gate of :mod:`edge_agent.gate`, or :class:`AdmitAll`).
* :class:`ExitCheck` runs after the head: outputs it returns finish the frame on the
  device without an offload (early exit: a confident intermediate classifier).

Both are called from one thread (the head stage) and must be quick and side-effect free
beyond their own state.
"""
from __future__ import annotations

from typing import Mapping, Optional, Protocol

import numpy as np

from edge_agent.config import GateConfig
from edge_agent.head import HeadOutput
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


def configured_gate(cfg: GateConfig, *, live_source: bool) -> FrameGate:
    """``gate.mode`` "on": the motion gate; "off": :class:`AdmitAll`; "auto": the motion
    gate for live sources (fixed cameras, streams, live pipes) and none for files and folders."""
    if cfg.mode == "on" or (cfg.mode == "auto" and live_source):
        return cfg.motion_gate()
    return AdmitAll()
