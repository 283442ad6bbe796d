"""partitioner.codec_fit / codec_select: codecs fitted on real activations of a tiny real model,
baked into the head and tail and run by ONNX Runtime: a full-rank projection reproduces the
activation, the low-bit wire matches protos.codec's reference arithmetic, and bytes shrink."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from partitioner import codec_fit, codec_select, evaluation, fidelity
from partitioner.codec_fit import CodecSpec
from protos import bundle_pb2
from protos.codec import decode_tensor, encode_tensor

C = 6


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def pair() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.5, (C, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.5, (5, C, 1, 1)).astype(np.float32), "w2")
    head = _model([helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
                   helper.make_node("Relu", ["c1"], ["mid"])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info("mid", TensorProto.FLOAT, [1, C, 8, 8])], [w1])
    tail = _model([helper.make_node("Conv", ["mid", "w2"], ["c2"]),
                   helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
                   helper.make_node("Flatten", ["p"], ["out"])],
                  [helper.make_tensor_value_info("mid", TensorProto.FLOAT, [1, C, 8, 8])],
                  [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 5])], [w2])
    return head, tail


def _frames(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1, (1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)[0]


def _acts(head: onnx.ModelProto, frames) -> list[np.ndarray]:
    return evaluation.collect_activations(head, frames, ["mid"])["mid"]


def test_full_rank_projection_reproduces_the_model(pair) -> None:
    head, tail = pair
    calib = _acts(head, _frames(8, 1))
    proj = codec_fit.fit_projection(calib, C)
    assert proj.explained == pytest.approx(1.0)
    assert np.allclose(proj.components @ proj.components.T, np.eye(C), atol=1e-5)
    new_head, new_tail = codec_fit.add_projection(head, tail, "mid", proj)
    onnx.checker.check_model(new_head)
    onnx.checker.check_model(new_tail)
    for feed in _frames(4, 2):
        want = _run(tail, {"mid": _run(head, feed)})
        got = _run(new_tail, {"mid": _run(new_head, feed)})
        assert np.allclose(got, want, atol=1e-4)


def test_low_rank_projection_keeps_the_leading_variance(pair) -> None:
    head, _ = pair
    calib = _acts(head, _frames(8, 1))
    explained = [codec_fit.fit_projection(calib, r).explained for r in range(1, C + 1)]
    assert explained == sorted(explained) and explained[0] < explained[-1]
    proj = codec_fit.fit_projection(calib, 3)
    x = calib[0]
    err3 = float(np.mean((proj.reconstruct(proj.project(x)) - x) ** 2))
    assert 0 < err3 < float(np.var(x))


def test_lowbit_wire_in_onnx_matches_the_reference_arithmetic(pair) -> None:
    head, tail = pair
    calib = _acts(head, _frames(8, 1))
    params = codec_fit.calibrate_lowbit(calib, 4)
    new_head, new_tail = codec_fit.add_lowbit_wire(head, tail, "mid", params)
    assert new_head.graph.output[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert new_tail.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    for feed in _frames(3, 5):
        codes = _run(new_head, feed)
        assert codes.dtype == np.uint8 and int(codes.max()) <= 15
        assert np.array_equal(codes, params.quantize(_run(head, feed)))
        want = _run(tail, {"mid": params.dequantize(codes)})
        assert np.allclose(_run(new_tail, {"mid": codes}), want, atol=1e-5)


def test_projection_then_lowbit_compose(pair) -> None:
    head, tail = pair
    calib = _acts(head, _frames(8, 1))
    fitted = codec_select.fit_codec(CodecSpec(bits=8, rank=4, compression="zstd"), "mid", calib)
    new_head, new_tail = fitted.apply(head, tail)
    assert [d.dim_value for d in new_head.graph.output[0].type.tensor_type.shape.dim] == [1, 4, 8, 8]
    feed = _frames(1, 9)[0]
    codes = _run(new_head, feed)
    raw, params = encode_tensor(codes, compression="zstd")
    out = _run(new_tail, {"mid": decode_tensor(raw, params, codes.shape)})
    assert fidelity.cosine(out, _run(tail, {"mid": _run(head, feed)})) > 0.95
    enc = fitted.encoding()
    assert (enc.codec, enc.bits, len(enc.scales), enc.compression) == ("lowbit", 8, 4, "zstd")


def test_codecs_shrink_the_wire_and_are_judged(pair) -> None:
    head, tail = pair
    calib, held = _frames(8, 1), _frames(12, 3)
    reference = evaluation.run_frames(evaluation.Pipeline(head, tail), held)
    judge = evaluation.Judge("other", fidelity.Gate(mode="absolute", threshold=0.99), 0.0, reference, held)
    acts = _acts(head, calib)
    results = [codec_select.measure_codec(codec_select.fit_codec(spec, "mid", acts), head, tail, judge,
                                          wire_frames=held[:4])
               for spec in (CodecSpec(bits=8), CodecSpec(bits=4, packed=True, compression="none"),
                            CodecSpec(bits=2, rank=1, compression="zstd"))]
    fp32_bytes = C * 8 * 8 * 4
    assert [r.raw_code_bytes for r in results] == [C * 64, C * 64, 64]
    assert results[1].wire_bytes == C * 64 / 2  # 4-bit packing halves the codes exactly
    assert all(r.wire_bytes < fp32_bytes / 4 for r in results)
    assert results[0].fidelity.value > results[2].fidelity.value
    chosen = codec_select.choose_codec(results)
    assert chosen is not None and chosen.fidelity.passed
    assert chosen.wire_bytes == min(r.wire_bytes for r in results if r.fidelity.passed)
    proto = chosen.codec_proto()
    assert isinstance(proto, bundle_pb2.CutCodec) and proto.source_channels == C


def test_shared_step_gives_narrow_channels_few_levels_and_centres_the_means() -> None:
    rng = np.random.default_rng(4)
    spreads = np.array([0.1, 1.0, 10.0], np.float32)
    means = np.array([5.0, -3.0, 0.0], np.float32)
    acts = [(rng.normal(0, 1, (1, 3, 16, 16)) * spreads[None, :, None, None] + means[None, :, None, None])
            .astype(np.float32) for _ in range(4)]
    params = codec_fit.calibrate_shared_step(acts, 50)
    rms = float(np.sqrt(np.mean(np.concatenate(acts).var(axis=(0, 2, 3)))))
    assert params.bits == 8 and len(set(params.scales)) == 1
    assert params.scales[0] == pytest.approx(0.5 * rms, rel=1e-5)
    x = np.concatenate(acts)
    codes = params.quantize(x)
    assert abs(float(codes[:, 0].mean()) - codec_fit.STEP_CENTRE_CODE) <= 1  # each mean on code 128
    assert abs(float(codes[:, 1].mean()) - codec_fit.STEP_CENTRE_CODE) <= 1
    levels = [len(np.unique(codes[:, c])) for c in range(3)]
    assert levels[0] <= 2 and levels[0] < levels[1] < levels[2]  # levels follow each channel's spread
    assert float(np.abs(params.dequantize(codes) - x).max()) <= params.scales[0] / 2 + 1e-5  # no clipping


@pytest.mark.parametrize(("step_pct", "match"), [(0, "step_pct 0: expected an integer percentage in 1..1000"),
                                                  (1001, "step_pct 1001"), (True, "step_pct True")])
def test_shared_step_refuses_bad_steps(step_pct, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        codec_fit.calibrate_shared_step([np.ones((1, 2, 4, 4), np.float32)], step_pct)


def test_shared_step_refuses_constant_activations() -> None:
    with pytest.raises(ValueError, match="activations are constant"):
        codec_fit.calibrate_shared_step([np.ones((1, 2, 4, 4), np.float32)], 50)


def test_shared_step_codec_runs_in_onnx_and_round_trips(pair) -> None:
    head, tail = pair
    calib = _acts(head, _frames(8, 1))
    fitted = codec_select.fit_codec(codec_fit.parse_codec("step25+zstd"), "mid", calib)
    assert fitted.params.bits == 8 and len(set(fitted.params.scales)) == 1
    new_head, new_tail = fitted.apply(head, tail)
    feed = _frames(1, 9)[0]
    codes = _run(new_head, feed)
    assert np.array_equal(codes, fitted.params.quantize(_run(head, feed)))
    raw, params = encode_tensor(codes, compression="zstd")
    out = _run(new_tail, {"mid": decode_tensor(raw, params, codes.shape)})
    assert fidelity.cosine(out, _run(tail, {"mid": _run(head, feed)})) > 0.99
    enc = fitted.encoding()
    assert (enc.codec, enc.bits, enc.packed_bits, enc.compression) == ("lowbit", 8, 0, "zstd")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bits": 8, "step_pct": 0}, "codec step_pct 0: expected an integer percentage"),
        ({"bits": 4, "step_pct": 50}, "codec step50 with bits=4, packed=False: .* expected bits=8"),
        ({"bits": 1}, "codec bits 1: expected an integer in 2..8"),
        ({"bits": 4, "rank": 0}, "codec rank 0: expected a channel count >= 1"),
        ({"bits": 4, "compression": "lzma"}, "codec compression 'lzma'"),
    ],
)
def test_codec_spec_refuses_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CodecSpec(**kwargs)


def test_fit_refuses_bad_rank_and_shapes(pair) -> None:
    head, _ = pair
    calib = _acts(head, _frames(2, 1))
    with pytest.raises(ValueError, match=f"projection rank 7 is not in 1..{C}"):
        codec_fit.fit_projection(calib, 7)
    with pytest.raises(ValueError, match="expected one NCHW shape"):
        codec_fit.calibrate_lowbit([np.zeros((1, 4), np.float32)], 4)
    with pytest.raises(ValueError, match="one NCHW float tensor"):
        codec_fit.single_feature_map(["a", "b"], [(-1, 3, 4, 4), (-1, 3, 4, 4)])
