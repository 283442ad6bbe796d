"""The frame-path stages on their own: encode codecs, result assembly to a list of sinks, the hooks."""
from __future__ import annotations

import zlib

import numpy as np

from edge_agent.head import HeadOutput
from edge_agent.metrics import EdgeMetrics
from edge_agent.queues import put_dropping_oldest
from edge_agent.results import MemorySink
from edge_agent.sources import Frame
from edge_agent.stages import AdmitAll, FrameJob, NeverExit, ResultStage, WireEncoder, assemble_result
from edge_agent.transport_fake import FakeTransport
from edge_agent.types import Decision, Mode, Objective, Path, WireTensor


def _head(cut_id: str, tensors: tuple[WireTensor, ...]) -> HeadOutput:
    return HeadOutput(cut_id, tensors, {}, None, None, 1.0, 2.0)


def test_encoder_compresses_per_setting_and_never_bytes(tiny_bundle) -> None:
    raw = np.arange(64, dtype=np.float32).tobytes()
    conv = _head("conv1", (WireTensor("conv1_out", "FP32", (1, 64), raw),))
    jpeg = _head("input", (WireTensor("jpeg", "BYTES", (1,), b"\x03\0\0\0abc"),))
    assert WireEncoder("none", tiny_bundle).encode(conv) == conv
    z = WireEncoder("zlib", tiny_bundle).encode(conv).tensors[0]
    assert z.parameters == {"compression": "zlib"} and zlib.decompress(z.raw) == raw
    assert WireEncoder("zlib", tiny_bundle).encode(jpeg) == jpeg
    assert WireEncoder("auto", tiny_bundle).method_for("conv1", conv.tensors[0]) in ("none", "zlib")


def test_result_goes_to_every_sink_even_when_one_fails() -> None:
    class Broken:
        def write(self, result: object) -> None:
            raise OSError("disk full")

        def close(self) -> None:
            pass

    frame = Frame(7, np.zeros((2, 2, 3), np.uint8), 1_000, 10.0, "test")
    job = FrameJob(frame=frame, decision=Decision("output", Mode.AUTO, "r", Objective.LATENCY, 0), head_start_s=10.5,
                   local_outputs={"logits": np.zeros((1, 3), np.float32)})
    first, second = MemorySink(), MemorySink()
    stage = ResultStage(lambda outputs, frame_hw=None: {"ok": sorted(outputs)}, [first, Broken(), second], clock=lambda: 11.0)
    result = stage.emit(job)
    assert first.results == second.results == [result]
    assert result.payload == {"ok": ["logits"]} and result.path is Path.LOCAL
    assert result.latency_ms["queue"] == 500.0 and result.latency_ms["total"] == 1000.0
    assert assemble_result(job, {}, 0.0, 12.0).latency_ms["total"] == 2000.0


def test_default_hooks_and_metrics_are_no_ops() -> None:
    frame = Frame(0, np.zeros((2, 2, 3), np.uint8), 0, 0.0, "test")
    assert AdmitAll().admit(frame) and NeverExit().check(_head("conv1", ())) is None
    metrics = EdgeMetrics.disabled()
    metrics.frame_captured()
    metrics.result("local", 3.0)
    assert not metrics.enabled and metrics.port is None


def test_put_dropping_oldest_keeps_the_end_marker() -> None:
    import queue

    end = object()
    q: queue.Queue = queue.Queue(maxsize=2)
    assert put_dropping_oldest(q, 1, keep=end) == 0
    assert put_dropping_oldest(q, 2, keep=end) == 0
    assert put_dropping_oldest(q, 3, keep=end) == 1
    assert [q.get_nowait(), q.get_nowait()] == [2, 3]


def test_fake_transport_model_ready() -> None:
    fake = FakeTransport(lambda request: {})
    assert fake.model_ready("b.conv1", "1", 0.1)
    fake.model_ready_names = {"b.conv2"}
    assert not fake.model_ready("b.conv1", "1", 0.1) and fake.model_ready("b.conv2", "1", 0.1)
    fake.down = True
    assert not fake.model_ready("b.conv2", "1", 0.1)
