"""Bandwidth probes between frames: the probe and local frame computation take turns.

On a small device (one throttled core, a CPU quota) a probe that runs while the head stage
computes a frame measures the device's stalls, not the link: the testbed's emulated Pi
measured a 140 ms RTT and 918 kbit/s on a 10 ms, 4 Mbit/s link. :class:`ProbeWindow` lets
the probe wait for the frame in progress to end and holds the next frame back while it
measures, so the probe's samples are taken on an otherwise idle CPU.

Both waits are bounded, so neither side can stall the other for long: a probe that cannot
get a quiet window within ``probe_wait_s`` measures anyway (its fastest samples still count,
see :mod:`edge_agent.telemetry.probe_samples`), and a frame waits at most ``frame_wait_s``
for a probe (one that hangs on a dead link, or a long transfer on a slow one) before it runs
regardless. That bound is short (150 ms: the cold and warm pings and a JPEG transfer at a few
Mbit/s fit in it): on a slow link a transfer takes seconds, the device's stalls are a small
part of it, and holding frames for it cost the testbed's adaptive agent 3x the edge-only
latency at 0.25 Mbit/s (SSD on vtest, one core / 10: a frame held up to 1 s per probe). Only the frame path's
head stage and the control loop's probe use it; waits use the monotonic clock of
:class:`threading.Condition`.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from edge_agent.errors import ConfigError

__all__ = ["ProbeWindow"]


class ProbeWindow:
    def __init__(self, *, probe_wait_s: float = 2.0, frame_wait_s: float = 0.15) -> None:
        if not probe_wait_s >= 0 or not frame_wait_s >= 0:
            raise ConfigError(f"probe_wait_s = {probe_wait_s!r}, frame_wait_s = {frame_wait_s!r}; expected >= 0")
        self.probe_wait_s = probe_wait_s
        self.frame_wait_s = frame_wait_s
        self._cond = threading.Condition()
        self._frames = 0  # frames being computed (one head stage: 0 or 1)
        self._probing = False  # a probe waits for its window or measures
        self.frames_held = 0  # frames that waited for a probe
        self.probes_overlapped = 0  # probes that gave up waiting and measured beside a frame

    @contextmanager
    def frame(self) -> Iterator[None]:
        """Compute one frame: waits (bounded) while a probe measures."""
        with self._cond:
            if self._probing:
                self.frames_held += 1
                self._cond.wait_for(lambda: not self._probing, timeout=self.frame_wait_s)
            self._frames += 1
        try:
            yield
        finally:
            with self._cond:
                self._frames -= 1
                self._cond.notify_all()

    @contextmanager
    def probe(self) -> Iterator[bool]:
        """Measure between frames; yields whether the window was quiet (no frame running)."""
        with self._cond:
            self._probing = True  # no new frame starts from here on (for at most frame_wait_s)
            quiet = self._cond.wait_for(lambda: self._frames == 0, timeout=self.probe_wait_s)
            if not quiet:
                self.probes_overlapped += 1
        try:
            yield quiet
        finally:
            with self._cond:
                self._probing = False
                self._cond.notify_all()
