"""Shared fixtures of the edge agent tests. Each helper appends its own section."""
from __future__ import annotations

# --------------------------------------------------------------------------- daemon (agent, head, transport)

import time
from typing import Any, Callable, Mapping

import numpy as np
import pytest

from edge_agent.config import EdgeConfig, build_config
from edge_agent.frames import Frame
from edge_agent.types import OffloadRequest
from protos.bundle import Bundle, Side, read_bundle
from protos.preprocess import decode_jpeg, encode_jpeg, preprocess_bgr
from protos import datatypes
from partitioner import samples
from tests.edge_agent.edge_bundle import write_tiny_bundle

FRAME_W, FRAME_H = 160, 120


class ReplaySource:
    """A finite frame source over ``self.images`` (set by a subclass before use); ``on_frame(i)``
    is called as frame ``i`` is read, so a test can act at a chosen frame."""

    name = "replay"
    live = False

    def __init__(self, on_frame: Callable[[int], None] | None = None) -> None:
        self.images: list[np.ndarray] = []
        self.next_id = 0
        self.on_frame = on_frame

    def read(self) -> Frame | None:
        if self.next_id >= len(self.images):
            return None
        i, self.next_id = self.next_id, self.next_id + 1
        if self.on_frame is not None:
            self.on_frame(i)
        return Frame(i, self.images[i], int(time.time() * 1000), time.monotonic(), self.name)

    def close(self) -> None:
        self.next_id = len(self.images)


def first_video_frame() -> np.ndarray:
    import cv2

    cap = cv2.VideoCapture(str(samples.video_path("bikes.mp4")))
    ok, img = cap.read()
    cap.release()
    assert ok
    return cv2.resize(img, (FRAME_W, FRAME_H), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The tiny real bundle (input / conv1 fp32 / conv2 int8 / output); the input cut's
    wire bytes are the JPEG size of a real 160x120 video frame."""
    jpeg_bytes = len(encode_jpeg(first_video_frame(), 80)) + 4
    return write_tiny_bundle(tmp_path_factory.mktemp("edge") / "tiny", input_wire_bytes=jpeg_bytes)


def agent_config(bundle: Bundle, **values: Any) -> EdgeConfig:
    """A test config: the sample video at 160x120, no control socket, no metrics, fast control loop."""
    base = {
        "bundle": str(bundle.root),
        "source.uri": str(samples.video_path("bikes.mp4")),
        "source.width_px": FRAME_W,
        "source.height_px": FRAME_H,
        "runtime.threads": 1,
        "control.enabled": False,
        "results.sink": "none",
        "battery.source": "none",
        "policy.decide_interval_ms": 20,
        "policy.min_dwell_ms": 200,
        "agent.agent_id": "test-agent",
    }
    base.update({k.replace("__", "."): v for k, v in values.items()})
    return build_config(base)


class TailServer:
    """What a server does with an OffloadRequest, with real ONNX Runtime tails from the bundle."""

    def __init__(self, bundle: Bundle) -> None:
        import onnxruntime as ort

        self.bundle = read_bundle(bundle.root, Side.CLOUD)
        self.sessions = {}
        for cut in self.bundle.manifest.cuts:
            if cut.HasField("tail"):
                self.sessions[f"{self.bundle.name}.{cut.id}"] = ort.InferenceSession(
                    str(self.bundle.path(cut.tail)), providers=["CPUExecutionProvider"])
        self.requests: list[OffloadRequest] = []

    def __call__(self, request: OffloadRequest) -> Mapping[str, np.ndarray]:
        self.requests.append(request)
        session = self.sessions[request.model_name]
        feeds = {}
        for t in request.inputs:
            if t.datatype == "BYTES":
                frames = [preprocess_bgr(decode_jpeg(b), self.bundle.manifest.input)
                          for b in datatypes.deserialize_bytes_tensor(t.raw)]
                feeds[session.get_inputs()[0].name] = np.concatenate(frames)
            else:
                arr = np.frombuffer(t.raw, dtype=datatypes.to_numpy_dtype(t.datatype)).reshape(t.shape)
                feeds[t.name] = arr
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(None, feeds)))


@pytest.fixture(scope="session")
def tail_server(tiny_bundle: Bundle) -> TailServer:
    return TailServer(tiny_bundle)
