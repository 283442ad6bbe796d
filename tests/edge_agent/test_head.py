"""Head execution: real ONNX Runtime sessions on the tiny bundle and a real video frame."""
from __future__ import annotations

import zlib

import numpy as np
import onnxruntime as ort
import pytest

from edge_agent.errors import UnknownCutError
from edge_agent.head import HeadRunner, choose_providers, complete_locally, cut_profiles
from edge_agent.stages.encode import WireEncoder
from protos.preprocess import decode_jpeg, preprocess_bgr
from protos import datatypes
from tests.edge_agent.conftest import first_video_frame


def test_providers_prefer_xnnpack_when_built_in() -> None:
    providers, intra = choose_providers("auto", 4)
    if "XnnpackExecutionProvider" in ort.get_available_providers():
        assert providers[0][0] == "XnnpackExecutionProvider" and intra == 1
    else:
        assert providers == ["CPUExecutionProvider"] and intra == 4
    assert choose_providers("cpu", 3) == (["CPUExecutionProvider"], 3)


def test_prewarm_neighbours_and_release(tiny_bundle) -> None:
    runner = HeadRunner(tiny_bundle, threads=1, prewarm_neighbours=1)
    assert runner.loaded_heads() == []  # only the full model until a cut is chosen
    runner.activate("input")
    assert runner.loaded_heads() == ["conv1"]  # "input" has no head; its neighbour is prewarmed
    runner.activate("output")
    assert runner.loaded_heads() == ["conv2"]  # conv1 released, conv2 (the neighbour) kept ready
    assert runner.neighbours("conv1") == ["input", "conv1", "conv2"]
    with pytest.raises(UnknownCutError, match="valid cuts: input, conv1, conv2, output"):
        runner.activate("conv7")
    # a cut far from the active one still runs (loaded on demand)
    out = runner.run_head("conv1", first_video_frame())
    assert out.tensors[0].shape == (1, 4, 16, 16)
    assert "output" in runner.measured_head_ms()


def test_head_outputs_follow_the_manifest(tiny_bundle) -> None:
    runner = HeadRunner(tiny_bundle, threads=1, prewarm_neighbours=3)
    runner.activate("conv1")
    frame = first_video_frame()
    x = preprocess_bgr(frame, tiny_bundle.manifest.input)
    full, _ = runner.run_full(frame)
    c1 = runner.run_head("conv1", frame)
    assert c1.tensors[0].datatype == "FP32" and len(c1.tensors[0].raw) == c1.wire_bytes == 4096
    np.testing.assert_array_equal(c1.model_input, x)
    c2 = runner.run_head("conv2", frame)
    t = c2.tensors[0]
    assert (t.name, t.datatype, t.shape, len(t.raw)) == ("conv2_q", "UINT8", (1, 8, 8, 8), 512)
    jp = runner.run_head("input", frame)
    assert jp.tensors[0].datatype == "BYTES" and jp.model_input is None
    jpeg = datatypes.deserialize_bytes_tensor(jp.tensors[0].raw)
    spec = tiny_bundle.manifest.input
    sent = decode_jpeg(jpeg[0])  # downscaled to the model's input: the server's preprocessing sees the same
    assert len(jpeg) == 1 and sent.shape == (spec.height_px, spec.width_px, 3) and sent.shape != frame.shape
    assert np.abs(preprocess_bgr(sent, spec) - x).mean() < 0.2 * np.abs(x).mean()  # JPEG loss on 16x16 px
    out = runner.run_head("output", frame)
    np.testing.assert_allclose(out.local_outputs["logits"], full["logits"], rtol=1e-6)
    # fallback without local tails: the full model on the preprocessed frame
    outputs, _, what = complete_locally(runner, c2, frame)
    assert what == "full"
    np.testing.assert_allclose(outputs["logits"], full["logits"], rtol=1e-6)


def test_local_tails_and_zlib(tiny_bundle) -> None:
    runner = HeadRunner(tiny_bundle, threads=1, local_tails=True)
    runner.activate("conv1")
    assert runner.loaded_tails() == ["conv1", "conv2"]
    frame = first_video_frame()
    plain = runner.run_head("conv1", frame)
    assert plain.tensors[0].parameters == {}  # the head never compresses: the encode stage does
    c1 = WireEncoder("zlib", tiny_bundle).encode(plain)
    assert c1.tensors[0].parameters == {"compression": "zlib"}
    raw = zlib.decompress(c1.tensors[0].raw)
    assert raw == np.ascontiguousarray(c1.arrays["conv1_out"]).tobytes()
    outputs, _, what = complete_locally(runner, c1, frame)
    full, _ = runner.run_full(frame)
    assert what == "tail"
    np.testing.assert_allclose(outputs["logits"], full["logits"], atol=1e-4)


def test_cut_profiles_from_manifest(tiny_bundle) -> None:
    profiles = {p.cut_id: p for p in cut_profiles(tiny_bundle)}
    assert [p.order for p in profiles.values()] == [0, 1, 2, 3]
    assert profiles["conv1"].head_ms == 20.0 and profiles["conv1"].tail_ms == 1.5
    assert profiles["output"].wire_bytes == 0 and profiles["output"].head_ms == 80.0
    assert profiles["input"].head_ms == 0.0 and profiles["conv2"].wire_bytes == 512


def test_a_frame_on_a_released_cut_does_not_move_the_active_set(tiny_bundle) -> None:
    runner = HeadRunner(tiny_bundle, threads=1, prewarm_neighbours=0)
    runner.activate("conv2")
    assert runner.loaded_heads() == ["conv2"]
    runner.run_head("conv1", first_video_frame())  # a frame that entered the head stage before the switch
    assert runner.active_cut == "conv2" and runner.loaded_heads() == ["conv1", "conv2"]
    runner.activate("conv2")  # the next activation releases the stray head
    assert runner.loaded_heads() == ["conv2"]


def test_the_daemon_never_imports_torch_or_onnx() -> None:
    import subprocess
    import sys

    code = ("import sys, edge_agent.cli, edge_agent.agent, edge_agent.transport_grpc, edge_agent.head, "
            "edge_agent.sources; bad = sorted(m for m in ('torch', 'onnx') if m in sys.modules); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_int8_full_model_is_preferred_when_the_bundle_ships_one(tiny_bundle, tmp_path) -> None:
    import hashlib
    import shutil

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from protos import bundle as bundle_io
    from protos import bundle_pb2

    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.root, root)
    fp32_runner = HeadRunner(bundle_io.read_bundle(root, bundle_io.Side.EDGE), threads=1)
    assert fp32_runner.full_precision == "fp32"
    int8_path = root / "edge" / "full_model_int8.onnx"
    quantize_dynamic(str(root / tiny_bundle.manifest.full_model.path), str(int8_path), weight_type=QuantType.QUInt8)
    manifest = bundle_io.read_bundle(root).manifest
    data = int8_path.read_bytes()
    manifest.full_model_int8.CopyFrom(bundle_pb2.FileRef(path="edge/full_model_int8.onnx",
                                                         sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data)))
    manifest.content_hash = bundle_io.compute_content_hash(manifest)
    (root / "manifest.json").write_text(bundle_io.manifest_to_json(manifest))

    runner = HeadRunner(bundle_io.read_bundle(root, bundle_io.Side.EDGE), threads=1)
    assert runner.full_precision == "int8"
    image = first_video_frame()
    outputs, _ = runner.run_full(image)
    direct = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
    x = preprocess_bgr(image, tiny_bundle.manifest.input)
    expected = direct.run(None, {direct.get_inputs()[0].name: x})
    np.testing.assert_array_equal(list(outputs.values())[0], expected[0])  # the INT8 file is what runs
    fp32_out, _ = fp32_runner.run_full(image)
    assert not np.array_equal(list(fp32_out.values())[0], expected[0])


def test_heap_mmap_threshold_is_set_in_a_fresh_process(tiny_bundle) -> None:
    import subprocess
    import sys

    from edge_agent.config import RuntimeConfig
    from edge_agent.errors import ConfigError
    from edge_agent.head import set_heap_mmap_threshold

    with pytest.raises(ValueError, match="threshold_bytes 100: expected >= 4096"):
        set_heap_mmap_threshold(100)
    with pytest.raises(ConfigError, match="runtime.heap_mmap_threshold_kb = 2: expected KiB in 4..32768"):
        RuntimeConfig(heap_mmap_threshold_kb=2)
    # process-wide, so in a child: the runner applies it and still runs frames
    code = (f"import pathlib; from edge_agent.head import HeadRunner; from protos.bundle import read_bundle, Side; "
            f"from tests.edge_agent.conftest import first_video_frame; "
            f"r = HeadRunner(read_bundle(pathlib.Path({str(tiny_bundle.root)!r}), Side.EDGE), threads=1, "
            f"heap_mmap_threshold_kb=1024); out, ms = r.run_full(first_video_frame()); assert out; "
            f"from edge_agent.head import set_heap_mmap_threshold; assert set_heap_mmap_threshold(1 << 20)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_cloud_only_jpeg_carries_the_frame_when_configured(tiny_bundle) -> None:
    frame = first_video_frame()
    sizes = {}
    for jpeg_size in ("model", "frame"):
        runner = HeadRunner(tiny_bundle, threads=1, jpeg_size=jpeg_size)
        jpeg = datatypes.deserialize_bytes_tensor(runner.run_head("input", frame).tensors[0].raw)[0]
        sizes[jpeg_size] = (decode_jpeg(jpeg).shape, len(jpeg))
    assert sizes["frame"][0] == frame.shape
    assert sizes["model"][1] < sizes["frame"][1]
    with pytest.raises(ValueError, match="jpeg_size 'full': expected 'model' or 'frame'"):
        HeadRunner(tiny_bundle, threads=1, jpeg_size="full")
