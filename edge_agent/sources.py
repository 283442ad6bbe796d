"""Frame sources (OpenCV): V4L2 camera index, RTSP/HTTP stream, video file, image folder
(MJPEG pipes and picamera2: :mod:`edge_agent.sources_pipe`).

A source yields :class:`Frame` values from :meth:`FrameSource.read` until it returns
``None`` (end of file/folder, or ``close()``). Live sources (camera, stream) reconnect
with exponential backoff when the device or stream drops; the capture loop in the agent
drops their oldest unprocessed frame when the pipeline is behind. Video files and
folders are never dropped and end cleanly. ``fps_cap`` paces reads with the clock and
sleep the caller passes in (tests pass fakes).
"""
from __future__ import annotations

import logging
import pathlib
import threading
import time
from typing import Any, Callable, Optional

import numpy as np

from edge_agent.config import SourceConfig, resolved_source_kind
from edge_agent.errors import SourceError
from edge_agent.frames import Backoff, Frame, FrameSource, Pacer, resize_frame

__all__ = ["Backoff", "CaptureSource", "FolderSource", "Frame", "FrameSource", "TeeSource", "open_source"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class CaptureSource:
    """A ``cv2.VideoCapture``: camera index, stream URL or video file.

    ``open_capture(target)`` returns an opened capture (``cv2.VideoCapture`` by default;
    tests inject one that fails). For live sources a failed open or read reconnects with
    backoff until ``close()``; for a video file the first failure ends the source.
    """

    def __init__(
        self,
        cfg: SourceConfig,
        *,
        kind: Optional[str] = None,
        open_capture: Optional[Callable[[Any], Any]] = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Optional[Callable[[float], None]] = None,
    ) -> None:
        self.cfg = cfg
        self.kind = kind or resolved_source_kind(cfg)
        self.live = self.kind in ("camera", "stream")
        self.name = cfg.uri if self.kind != "video" else pathlib.Path(cfg.uri).name
        self._target: Any = int(cfg.uri) if self.kind == "camera" else cfg.uri
        self._open_capture = open_capture or self._default_open
        self._clock = clock
        self._stop = threading.Event()
        self._sleep = sleep or (lambda s: self._stop.wait(s))
        self._pacer = Pacer(cfg.fps_cap, clock, self._sleep)
        self._backoff = Backoff(cfg.reconnect_initial_s, cfg.reconnect_max_s)
        self._cap: Any = None
        self._lock = threading.Lock()
        self._reading = False
        self._next_id = 0
        self.reconnects = 0
        self.reconnect_delays_s: list[float] = []
        if not self.live:
            self._cap = self._open_once()
            if self._cap is None:
                raise SourceError(f"cannot open video file {cfg.uri!r}; expected a file OpenCV can decode")

    def _default_open(self, target: Any) -> Any:
        import cv2

        cap = cv2.VideoCapture(target, cv2.CAP_V4L2) if isinstance(target, int) else cv2.VideoCapture(target)
        if isinstance(target, int) and self.cfg.width_px and self.cfg.height_px:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width_px)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height_px)
        return cap

    def _open_once(self) -> Any:
        try:
            cap = self._open_capture(self._target)
        except Exception as exc:  # noqa: BLE001 - any backend failure is "not open"
            log.debug("opening %r failed: %s", self._target, exc)
            return None
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            return None
        return cap

    def _reconnect(self) -> bool:
        """Reopen a live source with backoff; False once closed."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        while not self._stop.is_set():
            delay = self._backoff.next_delay_s()
            self.reconnect_delays_s.append(delay)
            if self.reconnects == 0:
                log.warning("source %s unavailable; reconnecting with backoff (first retry in %.1f s)", self.name, delay)
            else:
                log.debug("source %s still unavailable; retry in %.1f s", self.name, delay)
            self.reconnects += 1
            self._sleep(delay)
            if self._stop.is_set():
                return False
            self._cap = self._open_once()
            if self._cap is not None:
                log.info("source %s reconnected after %d attempts", self.name, self.reconnects)
                return True
        return False

    def read(self) -> Optional[Frame]:
        """The next frame; None at the end of a file or after ``close()``. One reader thread at a time."""
        with self._lock:
            if self._stop.is_set():
                self._release()
                return None
            self._reading = True
        try:
            return self._read()
        finally:
            with self._lock:
                self._reading = False
                if self._stop.is_set():  # closed while we were reading: release here, not under our feet
                    self._release()

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _read(self) -> Optional[Frame]:
        while not self._stop.is_set():
            if self._cap is None:
                if not self.live or not self._reconnect():
                    return None
            self._pacer.wait()
            ok, img = self._cap.read()
            if ok and img is not None:
                self._backoff.reset()
                if img.ndim == 2:
                    img = np.repeat(img[:, :, None], 3, axis=2)
                frame = Frame(self._next_id, resize_frame(img, self.cfg), int(time.time() * 1000), self._clock(), self.name)
                self._next_id += 1
                return frame
            if not self.live:
                if self.cfg.loop and self._next_id > 0:
                    self._cap.release()
                    self._cap = self._open_once()
                    continue
                return None
            self._cap.release()
            self._cap = None
        return None

    def close(self) -> None:
        """Stop: a blocked ``read`` returns None (after its current frame); safe from any thread."""
        self._stop.set()
        with self._lock:
            if not self._reading:
                self._release()


class FolderSource:
    """Every image in a folder (sorted by name), once (or forever with ``loop``)."""

    live = False

    def __init__(self, cfg: SourceConfig, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.cfg = cfg
        folder = pathlib.Path(cfg.uri)
        if not folder.is_dir():
            raise SourceError(f"image folder {cfg.uri!r} does not exist")
        self.paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise SourceError(f"image folder {cfg.uri!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.name = folder.name
        self._clock = clock
        self._pacer = Pacer(cfg.fps_cap, clock, sleep)
        self._pos = 0
        self._next_id = 0
        self._closed = False
        self.unreadable: list[str] = []

    def read(self) -> Optional[Frame]:
        import cv2

        while not self._closed:
            if self._pos >= len(self.paths):
                if not self.cfg.loop:
                    return None
                self._pos = 0
            path = self.paths[self._pos]
            self._pos += 1
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                log.warning("skipping %s: not a readable image", path)
                self.unreadable.append(str(path))
                if len(self.unreadable) >= len(self.paths):
                    raise SourceError(f"no image in {self.cfg.uri!r} is readable")
                continue
            self._pacer.wait()
            frame = Frame(self._next_id, resize_frame(img, self.cfg), int(time.time() * 1000), self._clock(), path.name)
            self._next_id += 1
            return frame
        return None

    def close(self) -> None:
        self._closed = True


class TeeSource:
    """Wraps a source: hands every frame to ``tap`` too (when given), and makes ``close``
    safe while another thread is inside ``read``.

    Releasing an OpenCV capture while another thread is inside its ``read`` aborts the
    process, so ``close`` marks the source closed, waits for a read in progress, then
    closes the inner source; later reads return None.
    """

    def __init__(self, inner: FrameSource, tap: Optional[Callable[[Frame], None]] = None) -> None:
        self.inner = inner
        self.tap = tap
        self.live = inner.live
        self.name = inner.name
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def read(self) -> Optional[Frame]:
        with self._lock:
            if self._closed.is_set():
                return None
            frame = self.inner.read()
        if frame is not None and self.tap is not None:
            self.tap(frame)
        return frame

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self.inner.close()


def open_source(cfg: SourceConfig, **kwargs: Any) -> FrameSource:
    """The source ``cfg`` describes; :class:`SourceError` when a file/folder cannot be opened."""
    kind = resolved_source_kind(cfg)
    if kind == "folder":
        return FolderSource(cfg)
    if kind in ("pipe", "picamera2"):
        from edge_agent.sources_pipe import open_pipe_or_picamera2

        return open_pipe_or_picamera2(cfg, kind)
    return CaptureSource(cfg, kind=kind, **kwargs)
