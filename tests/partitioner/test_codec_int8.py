"""Feature codecs on INT8 heads (issue 13): the wire step comes off the shipped INT8 head, the codec
goes on, and ``partition --feature-codecs`` ships the variant with an INT8 head whose codes decode
back to that head's float output within the codec's step."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from partitioner import codecs, evaluation, quantize
from partitioner.codec_fit import parse_codec
from partitioner.codec_int8 import (codec_input_head, dequantized_output_head, float_output_head,
                                    unfused_lowbit_quantize, wire_step)
from partitioner.codec_select import fit_codec
from protos import bundle as bundle_io
from tests.edge_agent.conftest import first_video_frame
from tests.partitioner.test_pipeline import build_tiny_bundle


def _float_head(relu: bool = True) -> onnx.ModelProto:
    """x -> Conv(1x1, 4 channels) [-> Relu] -> y, opset 17."""
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w")
    nodes = ([helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), helper.make_node("Relu", ["c"], ["y"], name="relu")]
             if relu else [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")])
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("wire", ["int8", "fp16", "fp32"])
def test_the_wire_step_comes_off_and_the_head_computes_its_floats_again(wire: str) -> None:
    head = _float_head()
    params = {"y": codecs.Int8Params(scale=0.02, zero_point=3)}
    wired, _ = codecs.apply_wire_codec(wire, head, None, ["y"], params if wire == "int8" else None)
    assert wired is not None
    assert (wire_step(wired, "y") is None) == (wire == "fp32")
    back = float_output_head(wired, ["y"])
    onnx.checker.check_model(back)
    assert [n.name for n in back.graph.node] == ["conv", "relu"]
    assert {t.name for t in back.graph.initializer} == {"w"}
    assert back.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    x = np.random.default_rng(0).standard_normal((1, 3, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(_run(back, x), _run(head, x))
    assert wired.graph.output[0].type.tensor_type.elem_type == (TensorProto.FLOAT if wire == "fp32" else
                                                                 {"int8": TensorProto.UINT8,
                                                                  "fp16": TensorProto.FLOAT16}[wire])  # input intact


def test_a_head_output_that_is_not_float_nor_a_wire_step_is_refused_by_name() -> None:
    head = _float_head()
    head.graph.node.append(helper.make_node("Cast", ["y"], ["codes"], to=TensorProto.UINT8, name="my_cast"))
    head.graph.output.append(helper.make_tensor_value_info("codes", TensorProto.UINT8, [1, 4, 5, 5]))
    with pytest.raises(ValueError, match="'codes' is UINT8"):
        float_output_head(head, ["codes"])
    with pytest.raises(ValueError, match=r"no output 'nope'; its outputs are \['y', 'codes'\]"):
        float_output_head(head, ["nope"])


def test_an_int8_wire_step_is_dequantized_for_the_codec() -> None:
    head = _float_head()
    params = codecs.Int8Params(scale=0.02, zero_point=3)
    wired, _ = codecs.add_int8_wire(head, None, {"y": params})
    assert wired is not None
    deq = dequantized_output_head(wired, ["y"])
    onnx.checker.check_model(deq)
    assert [n.op_type for n in deq.graph.node][-2:] == ["QuantizeLinear", "DequantizeLinear"]
    assert deq.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    x = np.random.default_rng(0).standard_normal((1, 3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(_run(deq, x), params.dequantize(params.quantize(_run(head, x))), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="'y' is not made by an INT8 wire step"):
        dequantized_output_head(head, ["y"])


@pytest.mark.parametrize("codec", ["q3", "pca2+q3"])
def test_an_int8_head_ending_in_a_conv_runs_fused_with_the_codec(codec: str) -> None:
    """ORT's default optimizations fuse DequantizeLinear -> Conv -> QuantizeLinear (the wire's); the codec's
    codes equal the low-bit quantization of the float the codec sees. (Without the wire's QuantizeLinear, ORT
    fuses the codec's per-channel one into a QLinearConv it cannot run: codec_stage then falls back to FP32.)"""
    head = _float_head(relu=False)
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 3, 5, 5)).astype(np.float32)} for _ in range(8)]
    int8 = quantize.Quantizer(head, feeds, calibration_frames=8).quantize(head)
    params = {"y": codecs.calibrate_int8(evaluation.collect_activations(int8, feeds, ["y"])["y"])}
    wired, _ = codecs.apply_wire_codec("int8", int8, None, ["y"], params)
    assert wired is not None
    seen = codec_input_head(wired, ["y"])
    assert [n.op_type for n in seen.graph.node][-2:] == ["QuantizeLinear", "DequantizeLinear"]
    floats = evaluation.collect_activations(seen, feeds, ["y"])["y"]
    fitted = fit_codec(parse_codec(codec), "y", floats)
    coded, _ = fitted.apply(seen, None)
    assert coded is not None
    if fitted.projection is not None:  # a projection Conv right after the dequantized wire: ORT would fuse it
        coded = unfused_lowbit_quantize(coded, "y")
        assert [n.op_type for n in coded.graph.node][-4:] == ["Div", "Add", "QuantizeLinear", "Clip"]
    codes = evaluation.collect_activations(coded, feeds, ["y"])["y"]  # default (fused) ORT optimizations
    scale = np.asarray(fitted.params.scales, np.float32)[None, :, None, None]
    zero = np.asarray(fitted.params.zero_points, np.float32)[None, :, None, None]
    for q, f in zip(codes, floats):
        if fitted.projection is not None:
            f = fitted.projection.project(f)
        want = np.clip(np.rint(f / scale) + zero, 0, 7)
        assert q.dtype == np.uint8 and np.abs(q.astype(np.int64) - want).max() <= 1
        assert np.mean(q == want) >= 0.98


# --------------------------------------------------------------------------- through partition


@pytest.fixture(scope="module")
def coded(tmp_path_factory: pytest.TempPathFactory) -> bundle_io.Bundle:
    report, _ = build_tiny_bundle(tmp_path_factory.mktemp("codec_int8"), feature_codecs=("q3+zstd",),
                                  gate="absolute", threshold=0.6)
    return bundle_io.read_bundle(report.bundle.root)


def _session(path) -> ort.InferenceSession:  # noqa: ANN001 - a pathlib.Path
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_a_cut_with_an_int8_head_ships_its_codec_variant_on_that_int8_head(coded: bundle_io.Bundle) -> None:
    variants = [c for c in coded.manifest.cuts if c.codec_of]
    assert variants, f"no codec variant; cuts {coded.cut_ids}"
    for cut in variants:
        base = coded.cut(cut.codec_of)
        assert base.head_precision == "int8" and cut.head_precision == "int8", (cut.id, base.head_precision)
        assert cut.fidelity.passed
        head = onnx.load(str(coded.path(cut.head)))
        ops = [n.op_type for n in head.graph.node]
        # the INT8 head's own QDQ pairs are there, its wire codes are dequantized; the codec ends the head
        assert "DequantizeLinear" in ops and ops[-2:] == ["QuantizeLinear", "Clip"]
        assert any(n.name.endswith("__wire_dequantize") for n in head.graph.node)


def test_the_int8_codec_round_trip_matches_the_int8_head_within_the_codec_step(coded: bundle_io.Bundle) -> None:
    from protos.preprocess import preprocess_bgr

    cut = next(c for c in coded.manifest.cuts if c.codec_of)
    base = coded.cut(cut.codec_of)
    name = cut.tensors[0].name
    enc = cut.tensors[0].encoding
    x = preprocess_bgr(first_video_frame(), coded.manifest.input)
    feed = {coded.manifest.input.tensor.name: x}
    # the float the codec sees: the plain cut's shipped INT8 head, its wire codes dequantized
    plain = codec_input_head(onnx.load(str(coded.path(base.head))), [name])
    floats = ort.InferenceSession(plain.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    codes = _session(coded.path(cut.head)).run(None, feed)[0]
    assert codes.dtype == np.uint8 and codes.shape == floats.shape
    levels = (1 << enc.bits) - 1
    assert int(codes.max()) <= levels
    scale = np.asarray(enc.scales, np.float32)[None, :, None, None]
    zero = np.asarray(enc.zero_points, np.float32)[None, :, None, None]
    decoded = (codes.astype(np.float32) - zero) * scale
    # within the channel's range the codec's error is half a step; outside it the code saturates
    clipped = np.clip(floats, (0 - zero) * scale, (levels - zero) * scale)
    err = np.abs(decoded - clipped)
    assert float(np.max(err / scale)) <= 0.5 + 1e-3, float(np.max(err / scale))
    assert float(np.mean(decoded != floats)) > 0  # the codec does quantize: 3 bits are not the float
    # the tail starts with the codec's dequantization: it takes the codes as they cross the wire
    tail = onnx.load(str(coded.path(cut.tail)))
    assert tail.graph.node[0].op_type == "DequantizeLinear" and tail.graph.input[0].name == name


def test_an_int8_codec_head_onnx_runtime_cannot_run_falls_back_to_the_fp32_head(
        tmp_path, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001 - tmp_path
    """With an FP32 wire there is no wire QuantizeLinear to keep: the codec's per-channel QuantizeLinear
    follows the INT8 head's last Conv ('stem'), ORT (the pinned 1.x) fuses them into a QLinearConv it
    cannot run, and the variant ships on the FP32 head, with the reason logged."""
    import logging

    with caplog.at_level(logging.WARNING, logger="partitioner.codec_stage"):
        report, _ = build_tiny_bundle(tmp_path, feature_codecs=("q4+zstd",), gate="absolute", threshold=0.6,
                                      wire_codec="fp32", cuts=("stem",))
    bundle = bundle_io.read_bundle(report.bundle.root)
    assert bundle.cut("stem").head_precision == "int8"
    variant = bundle.cut("stem_q4_zstd")
    assert variant.codec_of == "stem" and variant.head_precision == "fp32" and variant.fidelity.passed
    assert not any(n.op_type == "DequantizeLinear" for n in onnx.load(str(bundle.path(variant.head))).graph.node)
    reasons = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cut stem")]
    assert len(reasons) == 2, reasons
    assert "q4+zstd on the int8 head does not run" in reasons[0] and "QLinearConv" in reasons[0]
    assert "passes the gate (or runs) on the INT8 head; trying the FP32 head" in reasons[1]
