"""Frame sources: real video file and image folder, reconnect with backoff, fps cap."""
from __future__ import annotations

import pathlib
import shutil

import cv2
import numpy as np
import pytest

from edge_agent.config import SourceConfig
from edge_agent.errors import SourceError
from edge_agent.sources import Backoff, CaptureSource, FolderSource, TeeSource, open_source
from partitioner import samples


def test_video_file_yields_every_frame() -> None:
    path = samples.video_path("bikes.mp4")
    cap = cv2.VideoCapture(str(path))
    expected = 0
    while cap.read()[0]:
        expected += 1
    cap.release()
    src = open_source(SourceConfig(uri=str(path), width_px=64, height_px=48))
    assert not src.live
    frames = []
    while (frame := src.read()) is not None:
        frames.append(frame)
    assert expected > 100 and len(frames) == expected
    assert [f.frame_id for f in frames] == list(range(expected))
    assert frames[0].image_bgr.shape == (48, 64, 3) and frames[0].image_bgr.dtype == np.uint8
    assert frames[0].source == "bikes.mp4"


def test_missing_video_is_a_source_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(SourceError, match="nope.mp4"):
        open_source(SourceConfig(uri=str(tmp_path / "nope.mp4"), kind="video"))


def test_folder_in_name_order_skipping_unreadable(tmp_path: pathlib.Path) -> None:
    images = samples.available_images()[:3]
    assert images
    for i, img in enumerate(images):
        shutil.copy(img, tmp_path / f"{i:02d}{img.suffix}")
    (tmp_path / "99.jpg").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    src = open_source(SourceConfig(uri=str(tmp_path)))
    assert isinstance(src, FolderSource)
    frames = []
    while (frame := src.read()) is not None:
        frames.append(frame)
    assert [f.source for f in frames] == [f"{i:02d}{img.suffix}" for i, img in enumerate(images)]
    assert src.unreadable == [str(tmp_path / "99.jpg")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        FolderSource(SourceConfig(uri=str(tmp_path / "empty")))
    with pytest.raises(SourceError, match="does not exist"):
        FolderSource(SourceConfig(uri=str(tmp_path / "missing")))


class FlakyOpener:
    """Opens the real sample video as if it were a stream, after ``fail_opens`` failures;
    the opened capture dies after ``frames_per_connection`` frames."""

    def __init__(self, fail_opens: int, frames_per_connection: int) -> None:
        self.fail_opens = fail_opens
        self.frames_per_connection = frames_per_connection
        self.opens = 0

    def __call__(self, target: object) -> object:
        self.opens += 1
        if self.opens <= self.fail_opens:
            raise OSError("connection refused")
        return _Dying(cv2.VideoCapture(str(samples.video_path("bikes.mp4"))), self.frames_per_connection)


class _Dying:
    def __init__(self, cap: cv2.VideoCapture, budget: int) -> None:
        self.cap, self.budget = cap, budget

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.cap.isOpened()

    def read(self):
        if self.budget <= 0:
            return False, None
        self.budget -= 1
        return self.cap.read()

    def release(self) -> None:
        self.cap.release()


def test_live_source_reconnects_with_exponential_backoff() -> None:
    sleeps: list[float] = []
    opener = FlakyOpener(fail_opens=3, frames_per_connection=2)
    cfg = SourceConfig(uri="rtsp://camera.invalid/stream", reconnect_initial_s=0.1, reconnect_max_s=0.3)
    src = CaptureSource(cfg, open_capture=opener, sleep=sleeps.append)
    assert src.live
    frames = [src.read() for _ in range(4)]
    assert all(f is not None for f in frames)
    assert [f.frame_id for f in frames] == [0, 1, 2, 3]
    # 3 failed opens: 0.1, 0.2, 0.3 (capped), 4th open works; after 2 frames the stream
    # dies and the backoff starts again from the initial delay.
    assert sleeps == [0.1, 0.2, 0.3, 0.3, 0.1]
    assert src.reconnects == 5 and opener.opens == 5
    src.close()
    assert src.read() is None


def test_backoff_sequence() -> None:
    b = Backoff(0.5, 4.0)
    assert [b.next_delay_s() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next_delay_s() == 0.5


def test_fps_cap_paces_reads(tmp_path: pathlib.Path) -> None:
    now = [100.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(round(s, 6))
        now[0] += s

    cfg = SourceConfig(uri=str(samples.video_path("bikes.mp4")), fps_cap=10)
    src = CaptureSource(cfg, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        assert src.read() is not None
    assert sleeps == [0.1, 0.1, 0.1]


def test_tee_source_taps_every_frame_and_reads_nothing_after_close() -> None:
    src = open_source(SourceConfig(uri=str(samples.video_path("bikes.mp4")), width_px=64, height_px=48))
    tapped: list[int] = []
    tee = TeeSource(src, tap=lambda frame: tapped.append(frame.frame_id))
    assert tee.live is src.live and tee.name == src.name
    read = [tee.read().frame_id for _ in range(3)]  # type: ignore[union-attr]
    assert read == tapped == [0, 1, 2]
    tee.close()
    assert tee.read() is None and tapped == [0, 1, 2]
