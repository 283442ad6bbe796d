"""Training views for a learned bottleneck: many varied frames from a few unlabelled sources.

A bottleneck distilled on one video learns that video (issue 13: 250 bikes.mp4 frames gave a
train loss of 0.46 against 1.14 on other footage). :func:`training_views` draws ``count``
views from several sources (videos, image folders, single photos), the sources taking turns
so a long video does not drown a few photos, each view a random crop (``min_area`` .. 1 of
the frame, aspect 3:4 .. 4:3) resized straight to the model's input size, mirrored half of
the time, with brightness, contrast and saturation jitter -- then the bundle's own
preprocessing (:func:`protos.preprocess.preprocess_bgr`, without its resize, as the crop
already has the input size).

Deterministic for a seed. Held-out footage must not be among the sources: the caller keeps
train and held-out apart (:func:`default_sources` never names the fidelity videos).
"""
from __future__ import annotations

import logging
import pathlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from partitioner.calibration import IMAGE_SUFFIXES, read_frames
from protos import bundle_pb2
from protos.preprocess import preprocess_bgr

logger = logging.getLogger(__name__)

__all__ = ["Augment", "default_sources", "random_view", "training_views"]

#: Frames are kept with their shorter side at most this long.
MAX_SIDE_PX = 400


@dataclass(frozen=True)
class Augment:
    """How far a view may stray from the frame; invalid values raise ``ValueError`` naming field and value."""

    min_area: float = 0.3  # smallest crop, as a fraction of the frame's area
    jitter: float = 0.25  # brightness, contrast and saturation factors in 1 +- jitter
    flip: bool = True

    def __post_init__(self) -> None:
        if not 0.05 <= self.min_area <= 1.0:
            raise ValueError(f"min_area {self.min_area!r} must be in [0.05, 1]")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"jitter {self.jitter!r} must be in [0, 1)")


def default_sources() -> list[pathlib.Path]:
    """bikes.mp4, OpenCV's vtest.avi (when present) and the installed sample photos: never the
    held-out fidelity videos (bigbuckbunny.mp4, carphone_pristine.mp4)."""
    from partitioner import samples

    sources = [samples.video_path("bikes.mp4")]
    try:
        sources.append(samples.vtest_path())
    except samples.SampleNotFound:
        logger.info("vtest.avi not found: training views without it")
    return sources + samples.available_images()


def random_view(frame_bgr: np.ndarray, size_hw: tuple[int, int], rng: np.random.Generator,
                augment: Augment) -> np.ndarray:
    """One augmented ``size_hw`` uint8 BGR view of ``frame_bgr`` (see the module docstring)."""
    import cv2

    h, w = frame_bgr.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(augment.min_area, 1.0)
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if 8 <= cw <= w and 8 <= ch <= h:
            break
    else:
        side = min(h, w)
        cw = ch = side
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = frame_bgr[top:top + ch, left:left + cw]
    height, width = size_hw
    interp = cv2.INTER_AREA if cw > width else cv2.INTER_LINEAR
    view = cv2.resize(crop, (width, height), interpolation=interp).astype(np.float32)
    if augment.flip and rng.random() < 0.5:
        view = view[:, ::-1]
    if augment.jitter > 0:
        j = augment.jitter
        grey = view.mean(axis=2, keepdims=True)
        view = grey + (view - grey) * rng.uniform(1 - j, 1 + j)  # saturation
        view = view.mean() + (view - view.mean()) * rng.uniform(1 - j, 1 + j)  # contrast
        view = view * rng.uniform(1 - j, 1 + j)  # brightness
    return np.clip(np.rint(view), 0, 255).astype(np.uint8)


def _frames(source: pathlib.Path, most: int) -> list[np.ndarray]:
    """Up to ``most`` frames spread over a video (every frame of a folder up to ``most``), the
    shorter side reduced to at most :data:`MAX_SIDE_PX` (views are at most that sharp anyway)."""
    import cv2

    stride = 1
    if source.is_file() and source.suffix.lower() not in IMAGE_SUFFIXES:
        capture = cv2.VideoCapture(str(source))
        stride = max(1, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) // most)
        capture.release()
    out = []
    for frame in read_frames(source, max_frames=most, stride=stride).frames:
        scale = MAX_SIDE_PX / min(frame.shape[:2])
        if scale < 1:
            frame = cv2.resize(frame, (round(frame.shape[1] * scale), round(frame.shape[0] * scale)),
                               interpolation=cv2.INTER_AREA)
        out.append(frame)
    return out


def training_views(sources: Sequence[str | pathlib.Path], count: int, spec: bundle_pb2.InputSpec, *, seed: int = 0,
                   augment: Augment | None = None, max_frames_per_source: int = 250) -> np.ndarray:
    """``count`` preprocessed views (N x the model's input, float32) drawn from ``sources`` in turn
    (a video gives up to ``max_frames_per_source`` frames spread over it)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count {count!r} must be an integer >= 1")
    if not sources:
        raise ValueError("no training sources; expected at least one video, image folder or image")
    augment = augment or Augment()
    pools = [_frames(pathlib.Path(s), max_frames_per_source) for s in sources]
    rng = np.random.default_rng(seed)
    size_hw = (int(spec.height_px), int(spec.width_px))
    straight = bundle_pb2.InputSpec()
    straight.CopyFrom(spec)
    straight.resize_shorter_px = 0  # the view already has the input size: resize is the identity
    out = []
    for k in range(count):
        pool = pools[k % len(pools)]
        frame = pool[int(rng.integers(0, len(pool)))]
        out.append(preprocess_bgr(random_view(frame, size_hw, rng, augment), straight)[0])
    logger.info("%d training views from %d sources (%s)", count, len(sources),
                ", ".join(pathlib.Path(s).name for s in sources))
    return np.stack(out)
