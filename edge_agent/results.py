"""Per-frame results as JSON lines, and the small sink interface they go through.

One line per frame (schema ``splitinfer.edge.result/1``)::

    {"schema": "splitinfer.edge.result/1", "frame_id": 17, "capture_unix_ms": 1763722800123,
     "source": "bikes.mp4", "cut": "features_6", "path": "split",
     "stages": {"preprocess": "edge", "head": "edge", "tail": "cloud"},
     "latency_ms": {"queue": 0.4, "preprocess": 1.2, "head": 6.3, "wire": 3.1, "server": 2.0,
                    "tail_local": 0.0, "postprocess": 0.1, "total": 14.2},
     "wire_bytes": 12544, "fallback_reason": null,
     "top_k": [{"index": 671, "label": "mountain bike", "score": 0.83}, ...]}

``path`` is :class:`edge_agent.types.Path` (split / cloud / local / fallback / gated / exited). A
frame the motion gate skipped has ``"path": "gated"``, every stage "skipped", and carries
the payload of the last computed frame, named by ``"source_frame_id"`` (a key only gated
results have). Detection
bundles carry ``"detections"`` instead of ``"top_k"``: each ``{"box_xyxy", "score", "index",
"label"}``, best first, with ``"box_units": "source_px"`` (boxes in the camera frame's pixels,
the model's resize and crop undone) next to them. ``stages`` says where each stage
ran ("edge", "cloud" or "skipped"). A user adds MQTT or a webhook by writing a class with
``write(result)`` and ``close()``.
"""
from __future__ import annotations

import io
import json
import pathlib
import sys
import threading
from dataclasses import dataclass, field
from typing import Optional, Protocol, TextIO

from edge_agent.types import Path

SCHEMA = "splitinfer.edge.result/1"
LATENCY_KEYS = ("queue", "preprocess", "head", "wire", "server", "tail_local", "postprocess", "total")


@dataclass(frozen=True)
class FrameResult:
    frame_id: int
    capture_unix_ms: int
    source: str
    cut: str
    path: Path
    stages: dict[str, str]
    latency_ms: dict[str, float]
    payload: dict  # {"top_k": [...]} or {"detections": [...]} or {"error": "..."}
    wire_bytes: int = 0
    fallback_reason: Optional[str] = None
    source_frame_id: Optional[int] = None  # gated results: the computed frame whose payload this repeats

    def to_json(self) -> dict:
        line = {
            "schema": SCHEMA,
            "frame_id": self.frame_id,
            "capture_unix_ms": self.capture_unix_ms,
            "source": self.source,
            "cut": self.cut,
            "path": self.path.value,
            "stages": dict(self.stages),
            "latency_ms": {k: round(float(self.latency_ms.get(k, 0.0)), 3) for k in LATENCY_KEYS},
            "wire_bytes": self.wire_bytes,
            "fallback_reason": self.fallback_reason,
        }
        if self.source_frame_id is not None:
            line["source_frame_id"] = self.source_frame_id
        line.update(self.payload)
        return line

    def to_line(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False)


class ResultSink(Protocol):
    """Where results go. ``write`` is called from one thread, in completion order."""

    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...


class StreamSink:
    """JSON lines on a text stream (stdout by default); flushed per line."""

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, result: FrameResult) -> None:
        stream = self._stream or sys.stdout
        with self._lock:
            stream.write(result.to_line() + "\n")
            stream.flush()

    def close(self) -> None:
        stream = self._stream or sys.stdout
        stream.flush()


class FileSink:
    """JSON lines appended to a file (created with its parent directory)."""

    def __init__(self, path: pathlib.Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh: io.TextIOWrapper = open(path, "a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()

    def write(self, result: FrameResult) -> None:
        with self._lock:
            self._fh.write(result.to_line() + "\n")

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()


@dataclass
class MemorySink:
    """Keeps every result in a list (tests, the demo and the benchmark read it)."""

    results: list[FrameResult] = field(default_factory=list)
    closed: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def write(self, result: FrameResult) -> None:
        with self._lock:
            self.results.append(result)

    def close(self) -> None:
        self.closed = True


class NullSink:
    def write(self, result: FrameResult) -> None:
        pass

    def close(self) -> None:
        pass


def make_sink(kind: str, path: Optional[pathlib.Path] = None) -> ResultSink:
    """The sink the config names: "stdout", "file" (needs ``path``) or "none"."""
    if kind == "stdout":
        return StreamSink()
    if kind == "file":
        if path is None:
            raise ValueError("results.sink = 'file' needs results.path")
        return FileSink(path)
    if kind == "none":
        return NullSink()
    raise ValueError(f"results.sink {kind!r} is not one of 'stdout', 'file', 'none'")
