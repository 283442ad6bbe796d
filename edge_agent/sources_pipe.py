"""Raspberry Pi camera modules: MJPEG from a pipe or stdin, and picamera2.

On current Raspberry Pi OS a camera module goes through libcamera, which OpenCV's V4L2
backend does not see. Two ways in:

* ``source.uri = "-"`` (stdin) or a FIFO/file path (``source.kind = "pipe"``) reading
  concatenated JPEG frames, as ``rpicam-vid -t 0 --codec mjpeg -o -`` writes them::

      rpicam-vid -t 0 --codec mjpeg --width 640 --height 480 -o - | splitinfer edge --source - ...

  :class:`MjpegSplitter` cuts the byte stream into frames by walking the JPEG markers
  (segment lengths, then the entropy-coded data up to the next real marker), so an
  embedded thumbnail's end marker does not end a frame early. A stream that does not
  start with JPEG data within ``MAX_GARBAGE_BYTES`` raises :class:`SourceError` quoting
  its first bytes; a stream that ends mid-frame logs how many bytes were cut off. At
  the end of stdin or a file the source ends; a FIFO whose writer went away is reopened
  with backoff (``rpicam-vid`` restarted). Reads poll with a timeout, so ``close()``
  never waits on a silent pipe.
* ``source.kind = "picamera2"`` (``source.uri`` the camera index): the picamera2 library,
  imported only here and only then (on Raspberry Pi OS: ``apt install python3-picamera2``
  and a venv made with ``--system-site-packages``); a clear error when it is missing.
"""
from __future__ import annotations

import logging
import os
import select
import stat
import sys
import threading
import time
from typing import Any, Callable, Optional

import numpy as np

from edge_agent.config import SourceConfig
from edge_agent.errors import SourceError
from edge_agent.frames import Backoff, Frame, FrameSource, Pacer, resize_frame

log = logging.getLogger(__name__)

SOI = b"\xff\xd8"
MAX_GARBAGE_BYTES = 1 << 20  # bytes before the first frame (or between frames) before we call it "not MJPEG"
MAX_FRAME_BYTES = 32 << 20
MAX_BAD_FRAMES = 10  # consecutive frames that do not decode before the source gives up
READ_CHUNK = 1 << 16
POLL_MS = 200
# markers without a length field: TEM, RST0..7, SOI, EOI
_STANDALONE = {0x01, *range(0xD0, 0xD8), 0xD8, 0xD9}


class MjpegSplitter:
    """Cuts a byte stream of concatenated JPEGs into whole frames (incremental, pure).

    ``feed(data)`` returns the frames completed by ``data``. :attr:`pending_bytes` is the
    incomplete frame held back. A malformed frame is dropped (counted in :attr:`corrupt`)
    and the splitter resynchronises on the next start-of-image marker.
    """

    def __init__(self, *, max_garbage_bytes: int = MAX_GARBAGE_BYTES, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_garbage_bytes = max_garbage_bytes
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._pos = 0  # where parsing resumes inside _buf (the frame starts at 0 once in_frame)
        self._in_frame = False
        self._in_entropy = False
        self._skipped = 0  # bytes discarded while looking for a frame start
        self.frames = 0
        self.corrupt = 0

    @property
    def pending_bytes(self) -> int:
        return len(self._buf) if self._in_frame else 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while True:
            if not self._in_frame and not self._find_start():
                return out
            end = self._scan()
            if end is None:
                if len(self._buf) > self.max_frame_bytes:
                    raise SourceError(f"MJPEG frame larger than {self.max_frame_bytes} bytes without an end marker; "
                                      "expected JPEG frames (FF D8 ... FF D9)")
                return out
            if end < 0:  # malformed: resync after this frame's start marker
                self.corrupt += 1
                del self._buf[:2]
            else:
                out.append(bytes(self._buf[:end]))
                self.frames += 1
                del self._buf[:end]
            self._in_frame = self._in_entropy = False
            self._pos = 0

    def _find_start(self) -> bool:
        i = self._buf.find(SOI)
        if i < 0:
            keep = 1 if self._buf.endswith(b"\xff") else 0
            self._skipped += len(self._buf) - keep
            del self._buf[: len(self._buf) - keep]
            self._check_garbage()
            return False
        self._skipped += i
        self._check_garbage()
        del self._buf[:i]
        self._skipped = 0
        self._in_frame, self._pos = True, 2
        return True

    def _check_garbage(self) -> None:
        if self._skipped > self.max_garbage_bytes:
            raise SourceError(f"not an MJPEG stream: {self._skipped} bytes without a JPEG start marker (FF D8); "
                              "expected concatenated JPEG frames, e.g. from `rpicam-vid --codec mjpeg -o -`")

    def _scan(self) -> Optional[int]:
        """End offset of the frame at the buffer's start; None if incomplete; -1 if malformed."""
        buf, pos, n = self._buf, self._pos, len(self._buf)
        while True:
            if self._in_entropy:
                while True:
                    j = buf.find(b"\xff", pos)
                    if j < 0 or j + 1 >= n:
                        self._pos = n if j < 0 else j
                        return None
                    nxt = buf[j + 1]
                    if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                        pos = j + 1 if nxt == 0xFF else j + 2
                        continue
                    self._in_entropy = False
                    pos = j
                    break
            if pos + 1 >= n:
                self._pos = pos
                return None
            if buf[pos] != 0xFF:
                return -1
            marker = buf[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker == 0xD9:
                return pos + 2
            if marker in _STANDALONE:
                if marker == 0xD8:
                    return -1  # a new image before this one ended
                pos += 2
                continue
            if pos + 3 >= n:
                self._pos = pos
                return None
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            if length < 2:
                return -1
            if pos + 2 + length > n:
                self._pos = pos
                return None
            pos += 2 + length
            if marker == 0xDA:  # start of scan: entropy-coded data follows
                self._in_entropy = True


def _decode(jpeg: bytes) -> Optional[np.ndarray]:
    import cv2

    return cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)


class PipeSource:
    """MJPEG frames from stdin (``uri`` "-"), a FIFO or a file (see the module doc)."""

    def __init__(self, cfg: SourceConfig, *, clock: Callable[[], float] = time.monotonic,
                 stdin_fd: Optional[int] = None) -> None:
        self.cfg = cfg
        self.is_stdin = cfg.uri == "-"
        self.name = "stdin" if self.is_stdin else os.path.basename(cfg.uri)
        self._stdin_fd = sys.stdin.fileno() if stdin_fd is None and self.is_stdin else stdin_fd
        if self._stdin_fd is not None and os.isatty(self._stdin_fd):
            raise SourceError("source '-' reads MJPEG from stdin, but stdin is a terminal; expected a pipe, e.g. "
                              "`rpicam-vid -t 0 --codec mjpeg -o - | splitinfer edge --source -`")
        mode = os.fstat(self._stdin_fd).st_mode if self._stdin_fd is not None else os.stat(cfg.uri).st_mode
        self.is_fifo = not self.is_stdin and stat.S_ISFIFO(mode)
        # a recording (stdin redirected from a file) is read whole, never dropped; a pipe is a live camera
        self.live = not stat.S_ISREG(mode)
        self._clock = clock
        self._stop = threading.Event()
        self._pacer = Pacer(cfg.fps_cap, clock, lambda s: self._stop.wait(s))
        self._backoff = Backoff(cfg.reconnect_initial_s, cfg.reconnect_max_s)
        self._splitter = MjpegSplitter()
        self._ready: list[bytes] = []
        self._fd: Optional[int] = None
        self._got_data = False
        self._next_id = 0
        self._bad_in_a_row = 0
        self.truncated_bytes = 0
        self.reconnects = 0
        self.undecodable = 0

    def _open(self) -> int:
        if self.is_stdin:
            assert self._stdin_fd is not None
            return self._stdin_fd
        # non-blocking open: a FIFO without a writer must not block close()
        return os.open(self.cfg.uri, os.O_RDONLY | os.O_NONBLOCK)

    def _read_chunk(self) -> Optional[bytes]:
        """Bytes from the pipe; b"" at the end of the stream; None when closed."""
        if self._fd is None:
            self._fd = self._open()
        poller = select.poll()
        poller.register(self._fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while not self._stop.is_set():
            if not poller.poll(POLL_MS):
                continue
            try:
                return os.read(self._fd, READ_CHUNK)
            except BlockingIOError:
                continue
        return None

    def _end_of_stream(self) -> bool:
        """Handle EOF; True when the source goes on (a FIFO reopened), False when it ends."""
        pending = self._splitter.pending_bytes
        if pending:
            self.truncated_bytes += pending
            log.warning("source %s: stream ended mid-frame; %d bytes of an incomplete JPEG discarded",
                        self.name, pending)
            self._splitter = MjpegSplitter()
        if not self.is_fifo:
            if not self._got_data:
                raise SourceError(f"source {self.cfg.uri!r} is empty; expected an MJPEG stream "
                                  "(e.g. `rpicam-vid -t 0 --codec mjpeg -o - | splitinfer edge --source -`)")
            return False
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        delay = self._backoff.next_delay_s()
        if self._got_data:
            log.warning("source %s: writer closed the FIFO; waiting for it to come back (retry in %.1f s)",
                        self.name, delay)
        self.reconnects += 1
        self._got_data = False
        return not self._stop.wait(delay)

    def _next_jpeg(self) -> Optional[bytes]:
        while not self._ready:
            chunk = self._read_chunk()
            if chunk is None:
                return None
            if not chunk:
                if not self._end_of_stream():
                    return None
                continue
            self._got_data = True
            self._ready.extend(self._splitter.feed(chunk))
        return self._ready.pop(0)

    def read(self) -> Optional[Frame]:
        while not self._stop.is_set():
            jpeg = self._next_jpeg()
            if jpeg is None:
                return None
            img = _decode(jpeg)
            if img is None:
                self.undecodable += 1
                self._bad_in_a_row += 1
                log.log(logging.WARNING if self.undecodable == 1 else logging.DEBUG,
                        "source %s: a %d-byte frame does not decode as JPEG (%d so far)", self.name, len(jpeg),
                        self.undecodable)
                if self._bad_in_a_row >= MAX_BAD_FRAMES:
                    raise SourceError(f"source {self.cfg.uri!r}: {MAX_BAD_FRAMES} frames in a row do not decode; "
                                      "expected an MJPEG stream (rpicam-vid --codec mjpeg)")
                continue
            self._bad_in_a_row = 0
            self._backoff.reset()
            self._pacer.wait()
            frame = Frame(self._next_id, resize_frame(img, self.cfg), int(time.time() * 1000), self._clock(),
                          self.name)
            self._next_id += 1
            return frame
        return None

    def close(self) -> None:
        """Stop; a read blocked on a silent pipe returns None within ``POLL_MS``."""
        self._stop.set()


class Picamera2Source:
    """A Raspberry Pi camera module through picamera2 (libcamera); BGR frames for OpenCV."""

    live = True

    def __init__(self, cfg: SourceConfig, *, clock: Callable[[], float] = time.monotonic,
                 module: Any = None) -> None:
        if module is None:
            try:
                import picamera2 as module  # type: ignore[import-not-found,no-redef]
            except ImportError as exc:
                raise SourceError(
                    "source.kind = 'picamera2' needs the picamera2 library: on Raspberry Pi OS run "
                    "`sudo apt install python3-picamera2` and create the venv with --system-site-packages, "
                    "or pipe rpicam-vid instead: `rpicam-vid -t 0 --codec mjpeg -o - | splitinfer edge --source -`"
                ) from exc
        self.cfg = cfg
        self.name = f"picamera2:{cfg.uri}"
        self._clock = clock
        self._stop = threading.Event()
        self._pacer = Pacer(cfg.fps_cap, clock, lambda s: self._stop.wait(s))
        size = (cfg.width_px or 640, cfg.height_px or 480)
        self._camera = module.Picamera2(int(cfg.uri))
        # libcamera's "RGB888" is B, G, R in memory: what OpenCV calls BGR
        self._camera.configure(self._camera.create_video_configuration(main={"size": size, "format": "RGB888"}))
        self._camera.start()
        self._lock = threading.Lock()
        self._next_id = 0

    def read(self) -> Optional[Frame]:
        with self._lock:
            if self._stop.is_set():
                return None
            self._pacer.wait()
            img = np.ascontiguousarray(self._camera.capture_array("main")[:, :, :3])
            frame = Frame(self._next_id, resize_frame(img, self.cfg), int(time.time() * 1000), self._clock(),
                          self.name)
            self._next_id += 1
            return frame

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._camera.stop()
            self._camera.close()


def open_pipe_or_picamera2(cfg: SourceConfig, kind: str) -> FrameSource:
    if kind == "picamera2":
        return Picamera2Source(cfg)
    if cfg.uri != "-" and not os.path.exists(cfg.uri):
        raise SourceError(f"source.uri = {cfg.uri!r}: expected '-' (stdin) or an existing FIFO/file holding MJPEG")
    return PipeSource(cfg)
