"""What every frame source shares: the :class:`Frame` value, the :class:`FrameSource`
protocol, reconnect backoff, frame-rate pacing and the optional resize.

Sources live in :mod:`edge_agent.sources` (OpenCV: cameras, streams, files, folders) and
:mod:`edge_agent.sources_pipe` (MJPEG from a pipe or stdin, picamera2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import numpy as np

from edge_agent.config import SourceConfig


@dataclass(frozen=True)
class Frame:
    frame_id: int
    image_bgr: np.ndarray  # HxWx3 uint8
    capture_unix_ms: int
    capture_mono_s: float  # time.monotonic() at capture, for latency
    source: str


class FrameSource(Protocol):
    live: bool
    name: str

    def read(self) -> Optional[Frame]: ...

    def close(self) -> None: ...


class Backoff:
    """Exponential backoff delays: initial, x2, ... capped at ``max_s``; ``reset`` after success."""

    def __init__(self, initial_s: float, max_s: float, multiplier: float = 2.0) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.multiplier = multiplier
        self._next = initial_s

    def next_delay_s(self) -> float:
        delay = self._next
        self._next = min(self._next * self.multiplier, self.max_s)
        return delay

    def reset(self) -> None:
        self._next = self.initial_s


class Pacer:
    """Keeps reads at or below ``fps_cap``."""

    def __init__(self, fps_cap: Optional[float], clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self.period_s = 1.0 / fps_cap if fps_cap else 0.0
        self.clock = clock
        self.sleep = sleep
        self._next_s: Optional[float] = None

    def wait(self) -> None:
        if not self.period_s:
            return
        now = self.clock()
        if self._next_s is not None and now < self._next_s:
            self.sleep(self._next_s - now)
            now = self._next_s
        self._next_s = max(now, self._next_s or now) + self.period_s


def resize_frame(img: np.ndarray, cfg: SourceConfig) -> np.ndarray:
    if cfg.width_px is None or cfg.height_px is None:
        return img
    if img.shape[1] == cfg.width_px and img.shape[0] == cfg.height_px:
        return img
    import cv2

    return cv2.resize(img, (cfg.width_px, cfg.height_px), interpolation=cv2.INTER_AREA)
