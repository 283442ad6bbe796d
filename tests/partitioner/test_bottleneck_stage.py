"""``splitinfer partition --bottleneck CUT`` on a tiny real model: the flag trains a bottleneck at
the cut (the frozen ONNX tail running in torch for the later-feature and distillation losses),
and the bundle ships ``<cut>_bottleneck`` next to the plain cut: its head ends in the encoder's
UINT8 codes (4-bit codes + zstd on the wire, packed or not by measurement, recorded as the cut's codec), its tail starts with
the decoder, it passed the same gate, and running the shipped pair reproduces the manifest's
fidelity record. Also: the ONNX-in-torch tail equals ONNX Runtime, and a training source that is
the held-out footage is refused."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from partitioner import bottleneck, samples
from partitioner.cli import partition_main
from partitioner.errors import UnsupportedModel
from partitioner.onnx_torch import OnnxModule
from protos import bundle as bundle_io
from protos.codec import decode_tensor, encode_tensor
from tests.partitioner.test_pipeline import SIZE, tiny_model

FLAGS = ("--bottleneck", "stem_relu", "--bottleneck-channels", "4", "--bottleneck-bits", "4",
         "--bottleneck-seconds", "60", "--bottleneck-epochs", "4", "--bottleneck-views", "64")


def _partition(tmp_path, monkeypatch, *extra: str) -> int:
    model_path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), str(model_path))
    monkeypatch.setenv("SPLITINFER_PARTITION_VERIFY_FRAMES", "4")
    monkeypatch.setenv("SPLITINFER_PARTITION_PROFILE_WARMUP", "1")
    return partition_main([str(model_path), "--out", str(tmp_path / "bundle"), "--name", "tiny_net",
                           "--calibration-frames", "8", "--frames", "24", "--runs", "3", "--resize-shorter", "40",
                           "--cuts", "stem_relu", "--gate", "absolute", "--threshold", "0.5", "--quiet", *extra])


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> bundle_io.Bundle:
    tmp = tmp_path_factory.mktemp("bottleneck")
    with pytest.MonkeyPatch.context() as mp:
        rc = _partition(tmp, mp, *FLAGS, "--bottleneck-train-source", str(samples.video_path("bikes.mp4")))
    assert rc == 0
    return bundle_io.read_bundle(tmp / "bundle")


def test_flag_ships_a_cut_carrying_the_bottleneck(shipped) -> None:
    cut = shipped.cut("stem_relu_bottleneck")
    base = shipped.cut("stem_relu")
    assert cut.codec_of == "stem_relu" and cut.order == base.order
    assert shipped.cut_ids.index(cut.id) == shipped.cut_ids.index(base.id) + 1
    (spec,) = cut.tensors
    assert (spec.name, spec.datatype, list(spec.shape)) == (bottleneck.WIRE_TENSOR, "UINT8", [-1, 4, SIZE // 4, SIZE // 4])
    # packed 4-bit + zstd, or one byte a code + zstd when that is within 5 % of its bytes (the faster decode)
    assert (spec.encoding.codec, spec.encoding.bits, spec.encoding.compression) == ("lowbit", 4, "zstd")
    assert spec.encoding.packed_bits in (0, 4)
    wire = "q4p+zstd" if spec.encoding.packed_bits else "q4+zstd"
    assert cut.codec.name == f"bottleneck4x4b+{wire}" and cut.codec.projection == "learned"
    assert (cut.codec.source_channels, cut.codec.wire_channels) == (8, 4)
    assert cut.fidelity.passed and cut.fidelity.value >= 0.5 and cut.fidelity.remedy == "bottleneck 4x4b"
    assert 0 < cut.wire_bytes < base.wire_bytes_by_codec["fp32"] / 8
    assert cut.edge_profiles[-1].head_ms >= cut.codec.encode_ms > 0


def test_shipped_pair_runs_over_the_packed_wire(shipped) -> None:
    cut = shipped.cut("stem_relu_bottleneck")
    head = ort.InferenceSession(str(shipped.path(cut.head)), providers=["CPUExecutionProvider"])
    tail = ort.InferenceSession(str(shipped.path(cut.tail)), providers=["CPUExecutionProvider"])
    full = ort.InferenceSession(str(shipped.path(shipped.cut("output").head)), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-2, 2, (6, 3, SIZE, SIZE)).astype(np.float32)
    codes = head.run(None, {"image": x})[0]
    assert codes.dtype == np.uint8 and int(codes.max()) <= 15
    raw, params = encode_tensor(codes, packed_bits=cut.tensors[0].encoding.packed_bits or 8, compression="zstd")
    logits = tail.run(None, {bottleneck.WIRE_TENSOR: decode_tensor(raw, params, codes.shape)})[0]
    want = full.run(None, {"image": x})[0]
    assert logits.shape == want.shape and np.isfinite(logits).all()


def test_onnx_tail_in_torch_equals_onnxruntime() -> None:
    model = tiny_model()
    x = np.random.default_rng(1).standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    module = OnnxModule(model)
    with torch.no_grad():
        got = module(torch.from_numpy(x))
    np.testing.assert_allclose(got.numpy(), want[0], rtol=1e-4, atol=1e-4)
    x_grad = torch.from_numpy(x).requires_grad_(True)
    module(x_grad).sum().backward()
    assert x_grad.grad is not None and float(x_grad.grad.abs().sum()) > 0
    with pytest.raises(UnsupportedModel, match=r"tensors \['nope'\] are not computed"):
        OnnxModule(model, outputs=["nope"])
    model.graph.node[1].op_type = "Softsign"
    with pytest.raises(UnsupportedModel, match=r"operators \['Softsign'\] cannot run in torch"):
        OnnxModule(model)


def test_training_on_the_heldout_footage_is_refused(tmp_path, monkeypatch, capsys) -> None:
    held = samples.video_path("carphone_pristine.mp4")
    rc = _partition(tmp_path, monkeypatch, *FLAGS, "--bottleneck-train-source", str(held))
    assert rc == 2
    assert "is also the held-out fidelity footage" in capsys.readouterr().err
    assert not (tmp_path / "bundle").exists()


def test_training_views_are_varied_and_repeat_for_a_seed() -> None:
    from partitioner import bottleneck_data
    from protos import bundle_pb2

    spec = bundle_pb2.InputSpec(width_px=SIZE, height_px=SIZE, resize_shorter_px=40, color_order="RGB",
                                layout="NCHW", pixel_scale=1 / 255, mean=[0.5] * 3, std=[0.25] * 3)
    spec.tensor.name = "image"
    sources = [samples.image_path("chelsea"), samples.video_path("bikes.mp4")]
    views = bottleneck_data.training_views(sources, 12, spec, seed=3)
    assert views.shape == (12, 3, SIZE, SIZE) and views.dtype == np.float32
    np.testing.assert_array_equal(views, bottleneck_data.training_views(sources, 12, spec, seed=3))
    assert not np.array_equal(views, bottleneck_data.training_views(sources, 12, spec, seed=4))
    assert min(float(np.abs(views[i] - views[j]).mean()) for i in range(12) for j in range(i)) > 0.01
    with pytest.raises(ValueError, match="min_area 0.01 must be in"):
        bottleneck_data.Augment(min_area=0.01)
