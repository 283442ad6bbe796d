"""Wire codecs: graph rewrites run in ONNX Runtime, calibrated int8 parameters, bytes measured on real activations."""
from __future__ import annotations

import zlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from partitioner import calibration, codecs
from partitioner.split import split_model
from protos import bundle_pb2
from tests.partitioner.test_pipeline import SIZE, tiny_model

SPEC = bundle_pb2.InputSpec(width_px=SIZE, height_px=SIZE, layout="NCHW", color_order="RGB", resize_shorter_px=40,
                            pixel_scale=1 / 255, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], jpeg_quality=90)


@pytest.fixture(scope="module")
def split():
    from partitioner.graph import prepare_model

    model = prepare_model(tiny_model())
    head, tail = split_model(model, ["merged"])
    frames = calibration.read_frames(calibration.default_calibration_path(), max_frames=24, stride=10).frames
    feeds = [{"image": x} for x in calibration.preprocess_frames(frames, SPEC)]
    sess = ort.InferenceSession(head.SerializeToString())
    acts = [sess.run(["merged"], f)[0] for f in feeds]
    return model, head, tail, feeds, acts


def _run(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString()).run(None, feed)


def test_calibrate_int8_covers_range_and_keeps_zero_exact() -> None:
    acts = [np.array([[0.0, 1.0, 5.1]], np.float32), np.array([[-0.9, 2.0]], np.float32)]
    p = codecs.calibrate_int8(acts, method="minmax")
    assert p.scale == pytest.approx(6.0 / 255, rel=1e-5)
    assert p.dequantize(p.quantize(np.zeros(3, np.float32))).tolist() == [0.0, 0.0, 0.0]
    x = np.concatenate([a.ravel() for a in acts])
    assert np.max(np.abs(p.dequantize(p.quantize(x)) - x)) <= p.scale / 2 + 1e-6
    relu_only = codecs.calibrate_int8([np.array([0.0, 3.0], np.float32)])
    assert relu_only.zero_point == 0


def test_mse_calibration_clips_rare_outliers() -> None:
    rng = np.random.default_rng(0)
    values = rng.standard_normal(200_000).astype(np.float32)
    values[:3] = [40.0, -35.0, 38.0]
    minmax = codecs.calibrate_int8([values], method="minmax")
    mse = codecs.calibrate_int8([values])
    assert mse.scale < minmax.scale

    def err(p: codecs.Int8Params) -> float:
        return float(np.mean((p.dequantize(p.quantize(values)) - values) ** 2))

    assert err(mse) < err(minmax)
    with pytest.raises(ValueError, match="'median'"):
        codecs.calibrate_int8([values], method="median")


def test_int8_wire_head_emits_uint8_and_tail_reproduces_fp32(split) -> None:
    _, head, tail, feeds, acts = split
    params = {"merged": codecs.calibrate_int8(acts)}
    qhead, qtail = codecs.add_int8_wire(head, tail, params)
    onnx.checker.check_model(qhead)
    onnx.checker.check_model(qtail)
    assert qhead.graph.output[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert qtail.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    # originals untouched
    assert head.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    for feed, act in zip(feeds[:6], acts):
        (wire,) = _run(qhead, feed)
        assert wire.dtype == np.uint8 and wire.shape == act.shape
        np.testing.assert_array_equal(wire, params["merged"].quantize(act))
        want = _run(tail, {"merged": act})[0]
        got = _run(qtail, {"merged": wire})[0]
        cos = float(want.ravel() @ got.ravel() / (np.linalg.norm(want) * np.linalg.norm(got)))
        assert cos > 0.999


def test_fp16_wire_round_trip(split) -> None:
    _, head, tail, feeds, acts = split
    hhead, htail = codecs.add_fp16_wire(head, tail, ["merged"])
    (wire,) = _run(hhead, feeds[0])
    assert wire.dtype == np.float16
    np.testing.assert_allclose(_run(htail, {"merged": wire})[0], _run(tail, {"merged": acts[0]})[0], rtol=2e-3, atol=2e-3)


def test_int8_wire_is_four_times_smaller_on_real_activations(split) -> None:
    *_, acts = split
    params = {"merged": codecs.calibrate_int8(acts)}
    sizes = codecs.wire_bytes_by_codec({"merged": acts}, params)
    assert sizes["fp32"] == acts[0].size * 4
    assert sizes["fp32"] / sizes["int8"] >= 4.0
    assert sizes["fp16"] * 2 == sizes["fp32"]
    expected_zlib = round(np.mean([len(zlib.compress(params["merged"].quantize(a).tobytes(), 6)) for a in acts]))
    assert sizes["int8+zlib"] == expected_zlib


def test_apply_wire_codec_rejects_bad_requests(split) -> None:
    _, head, tail, *_ = split
    with pytest.raises(ValueError, match="'int4' is not one of fp32, fp16, int8"):
        codecs.apply_wire_codec("int4", head, tail, ["merged"])
    with pytest.raises(ValueError, match="calibrated parameters"):
        codecs.apply_wire_codec("int8", head, tail, ["merged"], {})
    with pytest.raises(ValueError, match="head has no graph output named \\['nope'\\]"):
        codecs.add_fp16_wire(head, tail, ["nope"])
    assert codecs.apply_wire_codec("fp32", head, tail, ["merged"]) == (head, tail)
