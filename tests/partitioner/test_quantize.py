"""INT8 head quantization and its remedies, FP16 tails, calibration frames."""
from __future__ import annotations

import pathlib

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto

from partitioner import calibration, codecs, evaluation, fidelity, quantize
from partitioner.errors import CalibrationError
from partitioner.split import split_model
from protos import bundle_pb2
from partitioner import samples
from tests.partitioner.test_pipeline import SIZE, tiny_model

IMAGENET = bundle_pb2.InputSpec(width_px=224, height_px=224, layout="NCHW", color_order="RGB", resize_shorter_px=256,
                                pixel_scale=1 / 255, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], jpeg_quality=90)
TINY = bundle_pb2.InputSpec(width_px=SIZE, height_px=SIZE, layout="NCHW", color_order="RGB", resize_shorter_px=40,
                            pixel_scale=1 / 255, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], jpeg_quality=90)


# --------------------------------------------------------------------------- calibration frames


def test_feed_reader_is_ort_pull_interface() -> None:
    feeds = [{"x": np.full((1, 2), i, np.float32)} for i in range(3)]
    reader = calibration.FeedReader(feeds)
    got = [reader.get_next() for _ in range(4)]
    assert [g["x"][0, 0] for g in got[:3]] == [0, 1, 2] and got[3] is None
    reader.rewind()
    assert reader.get_next()["x"][0, 0] == 0
    with pytest.raises(CalibrationError):
        calibration.FeedReader([])


def test_frames_from_folder_video_and_bad_paths(tmp_path: pathlib.Path) -> None:
    for name in ("chelsea", "coffee"):
        cv2.imwrite(str(tmp_path / f"{name}.png"), cv2.imread(str(samples.image_path(name))))
    (tmp_path / "notes.txt").write_text("not an image")
    folder = calibration.read_frames(tmp_path)
    assert len(folder) == 2 and folder.frames[0].dtype == np.uint8 and folder.frames[0].shape[2] == 3
    video = calibration.read_frames(samples.video_path(), max_frames=10, stride=3)
    assert len(video) == 10
    calib, rest = calibration.read_frames(samples.video_path(), max_frames=20).split(5)
    assert len(calib) == 5 and len(rest) == 15
    with pytest.raises(CalibrationError, match="does not exist"):
        calibration.read_frames(tmp_path / "missing.mp4")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationError, match="holds no images"):
        calibration.read_frames(empty)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    with pytest.raises(CalibrationError, match="no decodable frames"):
        calibration.read_frames(broken)


# --------------------------------------------------------------------------- tiny model: mechanics


@pytest.fixture(scope="module")
def tiny_parts():
    from partitioner.graph import prepare_model

    model = prepare_model(tiny_model())
    head, tail = split_model(model, ["merged"])
    frames = calibration.read_frames(samples.video_path(), max_frames=40, stride=6).frames
    feeds = [{"image": x} for x in calibration.preprocess_frames(frames, TINY)]
    return model, head, tail, feeds[:16], feeds[16:]


def _judge(model, evals, *, gate: fidelity.Gate, baseline: float = 1.0) -> evaluation.Judge:
    ref = evaluation.run_frames(evaluation.Pipeline(model, None), evals)
    return evaluation.Judge("classification", gate, baseline, ref, evals)


def test_quantized_head_is_qdq_int8_close_and_quantized_once(tiny_parts) -> None:
    model, head, tail, calib, evals = tiny_parts
    with quantize.Quantizer(model, calib, calibration_frames=8) as quantizer:
        qhead = quantizer.quantize(head)
        assert quantizer.quantize(head) is qhead  # made once per model and recipe
    ops = {n.op_type for n in qhead.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = [t for t in qhead.graph.initializer if t.data_type == TensorProto.INT8]
    assert weights, "weights should be stored as INT8"
    # quantize once: the cut tensor leaves the head in float, so only the wire codec quantizes it
    producer = {o: n for n in qhead.graph.node for o in n.output}[qhead.graph.output[0].name]
    assert producer.op_type not in ("QuantizeLinear", "DequantizeLinear")
    params = {"merged": codecs.Int8Params(scale=0.05, zero_point=0)}
    wired, _ = codecs.add_int8_wire(qhead, tail, params)
    out = wired.graph.output[0].name
    chain = {o: n for n in wired.graph.node for o in n.output}
    assert chain[out].op_type == "QuantizeLinear" and chain[chain[out].input[0]].op_type != "DequantizeLinear"
    record = _judge(model, evals, gate=fidelity.Gate(mode="absolute", threshold=0.5))(evaluation.Pipeline(qhead, tail))
    assert record.frames == len(evals) and record.cosine > 0.95 and record.remedy == "none"


def test_optimize_head_keeps_first_recipe_that_passes_the_gate(tiny_parts) -> None:
    model, head, tail, calib, evals = tiny_parts
    with quantize.Quantizer(model, calib, calibration_frames=8) as quantizer:
        kept = quantize.optimize_head(quantizer, head, lambda h: evaluation.Pipeline(h, tail),
                                      _judge(model, evals, gate=fidelity.Gate(margin=1.0)))
        assert kept.precision == "int8" and kept.fidelity.remedy == "none" and len(kept.attempts) == 1
        assert kept.fidelity.passed
        fallback = quantize.optimize_head(quantizer, head, lambda h: evaluation.Pipeline(h, tail),
                                          _judge(model, evals, gate=fidelity.Gate(margin=0.0)), recipes=[])
    assert fallback.precision == "fp32" and fallback.fidelity.remedy == "fp32_head"
    assert fallback.fidelity.top1_agreement == pytest.approx(1.0) and fallback.fidelity.passed
    assert fallback.model is head


def test_remedies_are_tried_in_documented_order(tiny_parts) -> None:
    model, head, tail, calib, evals = tiny_parts
    recipes = quantize.remedy_recipes()
    assert [r.remedy for r in recipes] == ["none", "fp32_sensitive"]
    assert quantize.REMEDIES == ("none", "fp32_sensitive", "fp32_head")

    # a pipeline that always disagrees fails every INT8 recipe, then the FP32 fallback is recorded
    def finish(h: onnx.ModelProto) -> evaluation.Pipeline:
        return _Wrong(h, tail)

    with quantize.Quantizer(model, calib, calibration_frames=8) as quantizer:
        result = quantize.optimize_head(quantizer, head, finish, _judge(model, evals, gate=fidelity.Gate()))
        sensitive = quantizer.sensitive_nodes(head, count=1)
        assert sensitive[0] in ("stem_conv", "body_conv")
        kept_fp32 = quantizer.quantize(head, recipes[1])
    assert [a[0] for a in result.attempts] == ["none", "fp32_sensitive", "fp32_head"]
    assert result.precision == "fp32" and not result.fidelity.passed
    assert kept_fp32.doc_string.startswith("kept in FP32: ")
    float_weights = {t.name for t in kept_fp32.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) == 4}
    assert float_weights, "the sensitive convolutions keep FP32 weights"


class _Wrong(evaluation.Pipeline):
    """A real pipeline whose class scores come out reversed (argmax always changes)."""

    def run(self, feed):
        return [-o for o in super().run(feed)]


def test_fp16_tail_keeps_io_and_matches(tiny_parts) -> None:
    model, head, tail, calib, evals = tiny_parts
    half = quantize.convert_tail_fp16(tail)
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert any(t.data_type == TensorProto.FLOAT16 for t in half.graph.initializer)
    a = evaluation.run_frames(evaluation.Pipeline(head, tail), evals[:4])
    b = evaluation.run_frames(evaluation.Pipeline(head, half), evals[:4])
    for x, y in zip(a, b):
        np.testing.assert_allclose(x[0], y[0], rtol=1e-2, atol=1e-2)


# --------------------------------------------------------------------------- MobileNetV2 on real photos


@pytest.fixture(scope="module")
def mobilenet():
    from partitioner.graph import prepare_model
    from partitioner.pipeline import load_source_model

    source, _ = load_source_model("mobilenet_v2")
    return prepare_model(source)


def test_quantized_pipeline_keeps_top1_on_high_confidence_photos(mobilenet) -> None:
    """INT8 head + INT8 wire + FP32 tail at features.7, calibrated on the sample video only."""
    from partitioner.cut_selection import select_cuts

    cut = select_cuts(mobilenet, ["/features/features.7/conv/conv.2/Conv_output_0"])[0]
    head, tail = split_model(mobilenet, cut)
    video = calibration.read_frames(samples.video_path(), max_frames=16, stride=15).frames
    calib = [{"input": x} for x in calibration.preprocess_frames(video, IMAGENET)]
    photos = [cv2.imread(str(p)) for p in samples.available_images()]
    feeds = [{"input": x} for x in calibration.preprocess_frames(photos, IMAGENET)]
    ref = evaluation.run_frames(evaluation.Pipeline(mobilenet, None), feeds)
    confident = [i for i, r in enumerate(ref) if _softmax(r[0][0]).max() >= 0.5]
    assert len(confident) >= 3, "the sample photos should include several confident predictions"

    name = cut.tensors[0]
    acts = evaluation.run_frames(evaluation.Pipeline(head, None), calib)
    params = {name: codecs.calibrate_int8([a[0] for a in acts])}
    with quantize.Quantizer(mobilenet, calib, calibration_frames=16) as quantizer:
        qhead = quantizer.quantize(head)
    final_head, final_tail = codecs.add_int8_wire(qhead, tail, params)
    got = evaluation.run_frames(evaluation.Pipeline(final_head, final_tail), [feeds[i] for i in confident])
    assert [int(g[0].argmax()) for g in got] == [int(ref[i][0].argmax()) for i in confident]
    float_weights = [t.name for t in qhead.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) >= 2]
    assert float_weights == []
    assert qhead.ByteSize() < 0.55 * head.ByteSize()


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()
