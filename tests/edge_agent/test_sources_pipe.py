"""MJPEG from a pipe or stdin (what `rpicam-vid --codec mjpeg -o -` writes), and picamera2's absence.

The streams are real JPEG frames of the shipped street video, encoded by OpenCV and
concatenated as rpicam-vid does; the CLI runs as a subprocess reading its stdin.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import cv2
import pytest

from edge_agent.config import SourceConfig, build_config, resolved_source_kind
from edge_agent.errors import SourceError
from edge_agent.sources import open_source
from edge_agent.sources_pipe import MjpegSplitter, Picamera2Source, PipeSource
from partitioner import samples


def video_jpegs(n: int, size: tuple[int, int] = (160, 120), quality: int = 80) -> list[bytes]:
    cap = cv2.VideoCapture(str(samples.video_path("bikes.mp4")))
    out = []
    while len(out) < n:
        ok, img = cap.read()
        assert ok
        ok, buf = cv2.imencode(".jpg", cv2.resize(img, size), [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        out.append(buf.tobytes())
    cap.release()
    return out


def with_thumbnail(jpeg: bytes, thumb: bytes) -> bytes:
    """An APP1 (Exif) segment holding a whole JPEG thumbnail, end marker included."""
    body = b"Exif\x00\x00" + thumb
    return jpeg[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


def test_splitter_returns_exact_frames_whatever_the_chunking() -> None:
    frames = video_jpegs(12)
    frames[3] = with_thumbnail(frames[3], video_jpegs(1, (32, 24))[0])  # its FF D9 must not end frame 3
    stream = b"".join(frames)
    rng = random.Random(7)
    for _ in range(5):
        splitter, got, pos = MjpegSplitter(), [], 0
        while pos < len(stream):
            step = rng.randint(1, 5000)
            got += splitter.feed(stream[pos:pos + step])
            pos += step
        assert got == frames
        assert splitter.pending_bytes == 0 and splitter.corrupt == 0


def test_splitter_skips_junk_between_frames_and_holds_an_incomplete_frame() -> None:
    a, b = video_jpegs(2)
    splitter = MjpegSplitter()
    assert splitter.feed(b"junk" + a + b"\x00\x01 noise" + b[: len(b) // 2]) == [a]
    assert splitter.pending_bytes == len(b) // 2
    assert splitter.feed(b[len(b) // 2:]) == [b]


def test_splitter_rejects_a_stream_that_is_not_mjpeg() -> None:
    splitter = MjpegSplitter(max_garbage_bytes=4096)
    with pytest.raises(SourceError, match=r"not an MJPEG stream: \d+ bytes without a JPEG start marker"):
        for _ in range(10):
            splitter.feed(os.urandom(1024).replace(b"\xff", b"\x00"))


def test_dash_and_fifo_resolve_to_pipe(tmp_path) -> None:
    fifo = tmp_path / "cam.mjpeg"
    os.mkfifo(fifo)
    assert resolved_source_kind(SourceConfig(uri="-")) == "pipe"
    assert resolved_source_kind(SourceConfig(uri=str(fifo))) == "pipe"
    with pytest.raises(SourceError, match="expected '-' \\(stdin\\) or an existing FIFO"):
        open_source(SourceConfig(kind="pipe", uri=str(tmp_path / "missing")))


def test_stdin_on_a_terminal_is_a_clear_error() -> None:
    master, slave = os.openpty()
    try:
        with pytest.raises(SourceError, match="stdin is a terminal; expected a pipe"):
            PipeSource(SourceConfig(uri="-"), stdin_fd=slave)
    finally:
        os.close(master)
        os.close(slave)


def test_fifo_source_reads_frames_and_reconnects_when_the_writer_comes_back(tmp_path) -> None:
    fifo = tmp_path / "cam.mjpeg"
    os.mkfifo(fifo)
    frames = video_jpegs(10)

    def writer() -> None:
        for part in (frames[:4], frames[4:]):  # rpicam-vid stopped and started again
            with open(fifo, "wb") as f:
                for jpeg in part:
                    f.write(jpeg)
                    f.flush()
                    time.sleep(0.01)
            time.sleep(0.3)

    source = open_source(SourceConfig(uri=str(fifo), reconnect_initial_s=0.05, reconnect_max_s=0.2))
    assert isinstance(source, PipeSource) and source.live and source.is_fifo
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    got = []
    while len(got) < 10:
        frame = source.read()
        assert frame is not None
        got.append(frame)
    t.join(5.0)
    assert [f.frame_id for f in got] == list(range(10))
    expected = cv2.imdecode(__import__("numpy").frombuffer(frames[7], "uint8"), cv2.IMREAD_COLOR)
    assert (got[7].image_bgr == expected).all()
    assert source.reconnects >= 1

    # a silent FIFO: close() from another thread ends a blocked read promptly
    threading.Timer(0.3, source.close).start()
    start = time.monotonic()
    assert source.read() is None
    assert time.monotonic() - start < 3.0


def test_picamera2_missing_gives_a_clear_error() -> None:
    # picamera2 only exists on Raspberry Pi OS (libcamera); here it must be absent
    if "picamera2" in sys.modules or _importable("picamera2"):
        pytest.skip("picamera2 is installed here")
    with pytest.raises(SourceError, match="needs the picamera2 library.*python3-picamera2"):
        Picamera2Source(SourceConfig(kind="picamera2", uri="0"))
    assert build_config({"bundle": ".", "source.kind": "picamera2", "source.uri": "0"}).source.kind == "picamera2"


class SimulatedPicamera2:
    """Stands in for the camera hardware (as the battery and thermal tests use recorded
    sysfs): the calls Picamera2Source makes, returning frames of the real video as
    libcamera's "RGB888" (B, G, R in memory) plus an unused alpha byte (XRGB8888 layout)."""

    def __init__(self, index: int) -> None:
        self.index, self.calls, self.config = index, [], None
        self._frames = [cv2.imdecode(__import__("numpy").frombuffer(j, "uint8"), cv2.IMREAD_COLOR)
                        for j in video_jpegs(3)]

    def create_video_configuration(self, main: dict) -> dict:
        return {"main": main}

    def configure(self, config: dict) -> None:
        self.config = config

    def start(self) -> None:
        self.calls.append("start")

    def capture_array(self, stream: str):
        import numpy as np

        img = self._frames[len([c for c in self.calls if c == "capture"]) % 3]
        self.calls.append("capture")
        return np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=2)

    def stop(self) -> None:
        self.calls.append("stop")

    def close(self) -> None:
        self.calls.append("close")


def test_picamera2_source_with_a_simulated_camera() -> None:
    import types

    cams: list[SimulatedPicamera2] = []
    module = types.SimpleNamespace(Picamera2=lambda i: cams.append(SimulatedPicamera2(i)) or cams[-1])
    source = Picamera2Source(SourceConfig(kind="picamera2", uri="1", width_px=160, height_px=120), module=module)
    frames = [source.read() for _ in range(3)]
    source.close()
    assert source.read() is None
    cam = cams[0]
    assert cam.index == 1 and cam.config == {"main": {"size": (160, 120), "format": "RGB888"}}
    assert cam.calls == ["start", "capture", "capture", "capture", "stop", "close"]
    assert [f.frame_id for f in frames] == [0, 1, 2]
    assert all(f.image_bgr.shape == (120, 160, 3) and f.image_bgr.flags.c_contiguous for f in frames)
    assert (frames[1].image_bgr == cam._frames[1]).all()


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# --------------------------------------------------------------------------- the CLI reading stdin


def _edge(tiny_bundle, tmp_path, stdin, *extra: str) -> subprocess.Popen:
    results = tmp_path / "results.jsonl"
    cmd = [sys.executable, "-m", "splitinfer.cli", "edge", "--bundle", str(tiny_bundle.root), "--source", "-",
           "--results", "file", "--results-path", str(results), "--threads", "1",
           "--set", "server.discovery=false", "--set", "control.enabled=false", "--set", "battery.source=none",
           *extra]
    return subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=False)


def _results(tmp_path) -> list[dict]:
    path = tmp_path / "results.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _run(tiny_bundle, tmp_path, data: bytes) -> tuple[int, str]:
    """The CLI with stdin redirected from a recording (read whole: a file is not a live camera)."""
    recording = tmp_path / "recording.mjpeg"
    recording.write_bytes(data)
    with open(recording, "rb") as stdin:
        proc = _edge(tiny_bundle, tmp_path, stdin)
        try:
            _, err = proc.communicate(timeout=60)  # never a hang
        finally:
            if proc.poll() is None:
                proc.kill()
    return proc.returncode, err.decode(errors="replace")


def test_cli_source_dash_runs_every_frame_of_an_mjpeg_stream(tiny_bundle, tmp_path) -> None:
    code, err = _run(tiny_bundle, tmp_path, b"".join(video_jpegs(8)))
    assert code == 0, err[-2000:]
    lines = _results(tmp_path)
    assert sorted(x["frame_id"] for x in lines) == list(range(8))
    assert {x["source"] for x in lines} == {"stdin"}


def test_cli_truncated_stream_keeps_whole_frames_and_says_so(tiny_bundle, tmp_path) -> None:
    frames = video_jpegs(6)
    code, err = _run(tiny_bundle, tmp_path, b"".join(frames[:5]) + frames[5][: len(frames[5]) // 2])
    assert code == 0, err[-2000:]
    assert sorted(x["frame_id"] for x in _results(tmp_path)) == list(range(5))
    assert f"stream ended mid-frame; {len(frames[5]) // 2} bytes of an incomplete JPEG discarded" in err


@pytest.mark.parametrize("data,message", [
    (b"\x00" * (2 << 20), "not an MJPEG stream"),
    (b"", "is empty; expected an MJPEG stream"),
])
def test_cli_bad_stdin_is_a_clear_error_not_a_hang(tiny_bundle, tmp_path, data, message) -> None:
    code, err = _run(tiny_bundle, tmp_path, data)
    assert code == 1
    assert message in err
    assert "Traceback" not in err  # one line, not a stack trace


def test_cli_silent_stdin_stops_on_sigterm(tiny_bundle, tmp_path) -> None:
    proc = _edge(tiny_bundle, tmp_path, subprocess.PIPE)
    try:
        assert proc.stdin is not None
        # a slow live camera: each frame once the previous one has its result (a pipe is live, so
        # frames that arrive while the agent is busy may be dropped, oldest first)
        for i, jpeg in enumerate(video_jpegs(3)):
            proc.stdin.write(jpeg)
            proc.stdin.flush()
            end = time.monotonic() + 60
            while len(_results(tmp_path)) < i + 1 and time.monotonic() < end:
                time.sleep(0.05)
            assert len(_results(tmp_path)) == i + 1
        # then nothing more: the camera stalls, stdin stays open
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
