"""The motion gate: skip frames where nothing moved, before any model runs.

Frame differencing on a downscaled grey frame, in the spirit of Frigate's motion
detector: the frame is turned grey and shrunk by a whole factor to about ``width`` pixels
across (area averaging, which also averages sensor noise away), and compared with the *reference* -- the grey
frame of the last admitted (computed) frame. A pixel has changed when it differs by more
than ``pixel_delta`` grey levels; the frame is admitted when the changed pixels cover at
least ``min_area_fraction`` of the pixels outside the mask polygons (areas that are
ignored: a road, a tree in the wind, a timestamp overlay).

Comparing with the last *computed* frame rather than the previous one is what makes a
gated frame's carried result honest: a frame is gated only when it looks like the frame
whose result it carries, so slow drift accumulates until it is admitted. A scene cut or
a lighting change (most of the frame changes at once) is admitted as ``SCENE_CHANGE`` and
becomes the new reference, so it costs one computation and no flapping. A frame is also
admitted when ``max_gated_s`` passed since the last admitted one (``REFRESH``; 0 = never).

:class:`MotionGate` is a pure state machine over frames: it never reads a clock (time is
the frame's ``capture_mono_s``, or ``now_s`` given to :meth:`MotionGate.decide`), never
logs per frame and touches no I/O. Which sources are gated by default ("auto": live
fixed cameras and streams, not files or folders):
:func:`edge_agent.stages.hooks.configured_gate`.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import cv2
import numpy as np


Polygon = tuple[tuple[float, float], ...]  # vertices (x, y) as fractions of the frame's width and height


class GateFrame(Protocol):
    """What the gate reads of a :class:`edge_agent.frames.Frame`."""

    @property
    def image_bgr(self) -> np.ndarray: ...

    @property
    def capture_mono_s(self) -> float: ...


class Verdict(enum.Enum):
    FIRST = "first"  # nothing to compare with yet
    MOTION = "motion"
    SCENE_CHANGE = "scene_change"  # most of the frame changed: a cut, a light switched
    REFRESH = "refresh"  # max_gated_s passed without an admitted frame
    STILL = "still"  # gated

    @property
    def admitted(self) -> bool:
        return self is not Verdict.STILL


@dataclass(frozen=True)
class Measurement:
    verdict: Verdict
    changed_fraction: float  # of the unmasked pixels; 0 for FIRST and REFRESH without a comparison
    # MOTION only: the changed pixels' bounding box (x0, y0, x1, y1) as fractions of the frame,
    # for the detectors' region-of-interest mode (edge_agent.roi)
    region: Optional[tuple[float, float, float, float]] = None


class MotionGate:
    """Frame differencing against the last admitted frame (see the module docstring).

    ``admit(frame)`` is the :class:`~edge_agent.stages.hooks.FrameGate` hook;
    ``decide(image_bgr, now_s)`` returns the whole :class:`Measurement`.
    """

    def __init__(
        self,
        *,
        width: int = 160,
        pixel_delta: int = 25,
        min_area_fraction: float = 0.002,
        scene_change_fraction: float = 0.5,
        max_gated_s: float = 10.0,
        mask: Sequence[Polygon] = (),
    ) -> None:
        if not 16 <= width <= 1920:
            raise ValueError(f"gate.width = {width!r}: expected pixels in 16..1920")
        if not 1 <= pixel_delta <= 254:
            raise ValueError(f"gate.pixel_delta = {pixel_delta!r}: expected grey levels in 1..254")
        if not 0.0 < min_area_fraction < scene_change_fraction <= 1.0:
            raise ValueError(f"gate.min_area_fraction = {min_area_fraction!r}, gate.scene_change_fraction = "
                             f"{scene_change_fraction!r}: expected 0 < min_area_fraction < scene_change_fraction <= 1")
        if max_gated_s < 0:
            raise ValueError(f"gate.max_gated_s = {max_gated_s!r}: expected seconds >= 0 (0 = never refresh)")
        for poly in mask:
            _check_polygon(poly)
        self.width = width
        self.pixel_delta = pixel_delta
        self.min_area_fraction = min_area_fraction
        self.scene_change_fraction = scene_change_fraction
        self.max_gated_s = max_gated_s
        self.mask = tuple(tuple((float(x), float(y)) for x, y in poly) for poly in mask)
        self._reference: Optional[np.ndarray] = None
        self._keep: Optional[np.ndarray] = None  # 255 where pixels count, 0 under the mask
        self._keep_pixels = 0
        self._admitted_s = 0.0
        self.admitted = 0
        self.gated = 0
        self.last: Optional[Measurement] = None

    def admit(self, frame: GateFrame) -> bool:
        return self.decide(frame.image_bgr, frame.capture_mono_s).verdict.admitted

    def decide(self, image_bgr: np.ndarray, now_s: float) -> Measurement:
        grey = self._small_grey(image_bgr)
        ref = self._reference
        if ref is None or ref.shape != grey.shape:
            self._keep = _keep_mask(grey.shape, self.mask)
            self._keep_pixels = int(cv2.countNonZero(self._keep))
            return self._record(Measurement(Verdict.FIRST, 0.0), grey, now_s)
        changed = cv2.threshold(cv2.absdiff(grey, ref), self.pixel_delta, 255, cv2.THRESH_BINARY)[1]
        if self.mask and self._keep is not None:
            changed = cv2.bitwise_and(changed, self._keep)
        fraction = cv2.countNonZero(changed) / self._keep_pixels if self._keep_pixels else 0.0
        if fraction >= self.scene_change_fraction:
            verdict = Verdict.SCENE_CHANGE
        elif fraction >= self.min_area_fraction:
            x, y, w, h = cv2.boundingRect(changed)
            gh, gw = grey.shape[:2]
            return self._record(Measurement(Verdict.MOTION, fraction, (x / gw, y / gh, (x + w) / gw, (y + h) / gh)),
                                grey, now_s)
        elif self.max_gated_s and now_s - self._admitted_s >= self.max_gated_s:
            verdict = Verdict.REFRESH
        else:
            verdict = Verdict.STILL
        return self._record(Measurement(verdict, fraction), grey, now_s)

    def _record(self, m: Measurement, grey: np.ndarray, now_s: float) -> Measurement:
        if m.verdict.admitted:
            self._reference, self._admitted_s = grey, now_s
            self.admitted += 1
        else:
            self.gated += 1
        self.last = m
        return m

    def _small_grey(self, image_bgr: np.ndarray) -> np.ndarray:
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(f"gate frame of shape {image_bgr.shape} and dtype {image_bgr.dtype}: "
                             "expected an HxWx3 uint8 BGR image")
        h, w = image_bgr.shape[:2]
        # shrink by a whole factor (edge pixels beyond a multiple of it are dropped): OpenCV's area
        # averaging has a fast path for integer factors -- 768x576 to 160 wide (x4.8) took 7.3 ms,
        # to 153 wide (x5) 1.5 ms here; grey first, then shrink one channel (0.36 vs 0.60 ms at 640x480)
        factor = max(1, round(w / self.width))
        small_w, small_h = max(1, w // factor), max(1, h // factor)
        grey = cv2.cvtColor(image_bgr[:small_h * factor, :small_w * factor], cv2.COLOR_BGR2GRAY)
        return cv2.resize(grey, (small_w, small_h), interpolation=cv2.INTER_AREA)


def _check_polygon(poly: Polygon) -> None:
    if len(poly) < 3:
        raise ValueError(f"gate.mask polygon {poly!r}: expected at least 3 (x, y) vertices")
    for vertex in poly:
        if len(vertex) != 2 or not all(0.0 <= float(c) <= 1.0 for c in vertex):
            raise ValueError(f"gate.mask vertex {vertex!r} of {poly!r}: expected (x, y) fractions of the frame "
                             "in 0..1")


def _keep_mask(shape: tuple[int, ...], mask: Sequence[Polygon]) -> np.ndarray:
    h, w = shape[:2]
    keep = np.full((h, w), 255, np.uint8)
    for poly in mask:
        pts = np.array([[round(x * (w - 1)), round(y * (h - 1))] for x, y in poly], np.int32)
        cv2.fillPoly(keep, [pts], 0)
    return keep

