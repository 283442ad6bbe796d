"""Documented extension points of the frame path, with no-op defaults.

* :class:`FrameGate` runs before preprocessing: a frame it rejects costs no model run
  and yields no result (motion gating: skip frames where nothing moved).
* :class:`ExitCheck` runs after the head: outputs it returns finish the frame on the
  device without an offload (early exit: a confident intermediate classifier).

Both are called from one thread (the head stage) and must be quick and side-effect free
beyond their own state.
"""
from __future__ import annotations

from typing import Mapping, Optional, Protocol

import numpy as np

from edge_agent.head import HeadOutput
from edge_agent.sources import Frame


class FrameGate(Protocol):
    def admit(self, frame: Frame) -> bool:
        """True to compute this frame; False drops it before preprocessing (counted as gated)."""
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
