"""Latency profiling with real ONNX Runtime sessions (no timing assertions beyond sanity)."""
from __future__ import annotations

import pytest

from partitioner import calibration, profile
from partitioner.graph import prepare_model
from partitioner.split import split_model
from protos import bundle_pb2
from partitioner import samples
from tests.partitioner.test_pipeline import tiny_model
from tests.partitioner.test_quantize import TINY


@pytest.fixture(scope="module")
def parts():
    model = prepare_model(tiny_model())
    head, tail = split_model(model, ["merged"])
    frame = calibration.read_frames(samples.video_path(), max_frames=1).frames[0]
    feed = {"image": calibration.preprocess_frames([frame], TINY)[0]}
    return model, head, tail, frame, feed


def test_time_model_reports_a_positive_median(parts) -> None:
    model, _, _, _, feed = parts
    ms = profile.time_model(model, feed, profile.TimingConfig(threads=1, warmup=1, runs=5))
    assert 0.0 < ms < 5000.0
    with pytest.raises(ValueError, match="feed lacks model inputs \\['image'\\]"):
        profile.time_model(model, {"other": feed["image"]})


def test_profile_cut_splits_edge_and_cloud(parts) -> None:
    _, head, tail, frame, feed = parts
    timing = profile.TimingConfig(threads=1, warmup=1, runs=3)
    tail_feed = profile.head_outputs(head, feed)
    assert set(tail_feed) == {"merged"}
    edge, cloud = profile.profile_cut(head, tail, feed, tail_feed, timing, device="test-device")
    assert edge.head_ms > 0 and edge.tail_ms == 0 and cloud.tail_ms > 0 and cloud.head_ms == 0
    assert edge.device == "test-device" and edge.threads == 1 and edge.runs == 3
    assert edge.onnxruntime_version and edge.measured_at.endswith("Z")
    jpeg_edge, jpeg_cloud = profile.profile_cut(None, tail, feed, tail_feed, timing,
                                                edge_ms_without_head=profile.time_jpeg_encode(frame, 90, timing))
    assert jpeg_edge.head_ms > 0


def test_timing_config_and_device() -> None:
    with pytest.raises(ValueError):
        profile.TimingConfig(runs=0)
    desc = profile.describe_device()
    assert "cores" in desc and desc.split()[0]


def test_upsert_replaces_same_device_and_threads() -> None:
    cut = bundle_pb2.Cut(id="x")
    profile.upsert_profile(cut.edge_profiles, bundle_pb2.LatencyProfile(device="pi", threads=1, head_ms=9.0))
    profile.upsert_profile(cut.edge_profiles, bundle_pb2.LatencyProfile(device="pi", threads=4, head_ms=4.0))
    profile.upsert_profile(cut.edge_profiles, bundle_pb2.LatencyProfile(device="pi", threads=1, head_ms=8.0))
    assert [(p.threads, p.head_ms) for p in cut.edge_profiles] == [(1, 8.0), (4, 4.0)]
