"""Real Triton (the server bundled in nvidia-pytriton) for tests/triton.

nvidia-pytriton pins numpy < 2, so it lives in its own virtualenv; ``make test-triton`` creates
``.venv-triton`` and runs these tests with ``SPLITINFER_TRITON_PYTHON`` pointing at its python.
Without that variable the tests are skipped (``make test`` does not start Triton; CI runs
``make test-triton`` after it).
"""
from __future__ import annotations

import os
import pathlib
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import pytest

from edge_agent.results import FrameResult
from partitioner.triton_export import export_triton
from partitioner.triton_launch import TritonServer
from protos.bundle import Bundle
from protos.preprocess import encode_jpeg
from tests.edge_agent.conftest import first_video_frame
from tests.edge_agent.edge_bundle import write_tiny_bundle

TRITON_PYTHON_ENV = "SPLITINFER_TRITON_PYTHON"


def triton_python() -> pathlib.Path:
    value = os.environ.get(TRITON_PYTHON_ENV)
    if not value:
        pytest.skip(f"{TRITON_PYTHON_ENV} is not set: run `make test-triton` (it installs nvidia-pytriton "
                    "into .venv-triton and starts its Triton)")
    return pathlib.Path(value)


@pytest.fixture(scope="module")
def triton_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    jpeg_bytes = len(encode_jpeg(first_video_frame(), 80)) + 4
    return write_tiny_bundle(tmp_path_factory.mktemp("triton") / "tiny", input_wire_bytes=jpeg_bytes)


@pytest.fixture(scope="module")
def triton(triton_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """Triton serving ``export-triton --backend python`` of the tiny bundle."""
    python = triton_python()
    root = tmp_path_factory.mktemp("triton-repo")
    export_triton(triton_bundle.root, root / "repo", backend="python")
    server = TritonServer(root / "repo", python, root / "work").start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class TimedSink:
    """Every result with the monotonic time it arrived."""

    results: list[tuple[float, FrameResult]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def write(self, result: FrameResult) -> None:
        with self._lock:
            self.results.append((time.monotonic(), result))

    def close(self) -> None:
        pass

    def snapshot(self) -> list[tuple[float, FrameResult]]:
        with self._lock:
            return list(self.results)
