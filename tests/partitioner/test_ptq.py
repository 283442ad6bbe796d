"""partitioner.ptq: every method returns a QDQ model ORT runs; the passes keep the FP32
function (equalization) or reduce the error they target (bias correction); bad input
is refused with the value named. Calibration feeds are real sample photos."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from partitioner import ptq
from partitioner.evaluation import make_session
from protos import bundle_pb2

SIZE = 32


def _conv(name: str, x: str, w: np.ndarray, b: np.ndarray, *, group: int = 1) -> tuple[onnx.NodeProto, list]:
    k = w.shape[-1]
    node = helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.out"], name=name,
                            group=group, kernel_shape=[k, k], pads=[k // 2] * 4)
    return node, [numpy_helper.from_array(w.astype(np.float32), f"{name}.w"),
                  numpy_helper.from_array(b.astype(np.float32), f"{name}.b")]


def small_conv_net(seed: int = 0, *, clip_bounds: str = "initializers") -> onnx.ModelProto:
    """stem 3x3 -> Relu -> expand 1x1 -> Clip(0,6) -> depthwise 3x3 -> Clip(0,6) -> project 1x1
    -> GAP -> Gemm, with per-channel weight ranges spread over two decades (what equalization fixes).
    ``clip_bounds="constants"``: the Clip bounds are Constant nodes, as torch's exporter writes them."""
    rng = np.random.default_rng(seed)

    def spread(shape: tuple[int, ...]) -> np.ndarray:
        scale = 10.0 ** rng.uniform(-1.0, 1.0, size=(shape[0],) + (1,) * (len(shape) - 1))
        return rng.standard_normal(shape) * scale / np.sqrt(np.prod(shape[1:]))

    nodes, inits = [], [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                        numpy_helper.from_array(np.array(6.0, np.float32), "six")]
    for name, x, w, group in (("stem", "input", spread((8, 3, 3, 3)), 1), ("expand", "stem.act", spread((16, 8, 1, 1)), 1),
                              ("dw", "expand.act", spread((16, 1, 3, 3)), 16), ("project", "dw.act", spread((8, 16, 1, 1)), 1)):
        node, params = _conv(name, x, w, rng.standard_normal(w.shape[0]) * 0.1, group=group)
        nodes.append(node)
        inits += params
    nodes.insert(1, helper.make_node("Relu", ["stem.out"], ["stem.act"], name="stem.relu"))
    nodes.insert(3, helper.make_node("Clip", ["expand.out", "zero", "six"], ["expand.act"], name="expand.clip"))
    nodes.insert(5, helper.make_node("Clip", ["dw.out", "zero", "six"], ["dw.act"], name="dw.clip"))
    if clip_bounds == "constants":
        bounds = [init for init in inits if init.name in ("zero", "six")]
        inits = [init for init in inits if init.name not in ("zero", "six")]
        nodes[:0] = [helper.make_node("Constant", [], [b.name], name=f"{b.name}.const", value=b) for b in bounds]
    nodes += [helper.make_node("GlobalAveragePool", ["project.out"], ["pooled"], name="gap"),
              helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1)]
    inits += [numpy_helper.from_array((rng.standard_normal((10, 8)) * 0.5).astype(np.float32), "fc.w"),
              numpy_helper.from_array(np.zeros(10, np.float32), "fc.b")]
    graph = helper.make_graph(
        nodes, "small_conv_net",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def photo_feeds() -> list[dict[str, np.ndarray]]:
    """Real sample photos, each as four crops, ImageNet-normalised at 32x32: 12 feeds."""
    import cv2

    from partitioner import samples
    from protos.preprocess import preprocess_bgr

    spec = bundle_pb2.InputSpec(width_px=SIZE, height_px=SIZE, layout="NCHW", color_order="RGB",
                                resize_shorter_px=SIZE, pixel_scale=1 / 255, mean=[0.485, 0.456, 0.406],
                                std=[0.229, 0.224, 0.225], jpeg_quality=90)
    feeds = []
    for name in ("chelsea", "coffee", "astronaut"):
        img = cv2.imread(str(samples.image_path(name)), cv2.IMREAD_COLOR)
        h, w = img.shape[:2]
        for top, left in ((0, 0), (0, w // 2), (h // 2, 0), (h // 2, w // 2)):
            feeds.append({"input": preprocess_bgr(img[top:top + h // 2, left:left + w // 2], spec)})
    return feeds


def run(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    session = make_session(model)
    return np.concatenate([session.run(None, feed)[0] for feed in feeds])


@pytest.mark.parametrize("method", ptq.METHODS)
def test_every_method_returns_a_qdq_model_ort_runs(method: str, photo_feeds) -> None:
    model = small_conv_net()
    quantized = ptq.quantize_static(model, photo_feeds[:8], method=method)
    ops = {n.op_type for n in quantized.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    fp32, int8 = run(model, photo_feeds), run(quantized, photo_feeds)
    assert int8.shape == fp32.shape
    cos = np.sum(fp32 * int8) / (np.linalg.norm(fp32) * np.linalg.norm(int8))
    assert cos > 0.95, f"{method}: cosine {cos:.4f} of INT8 vs FP32 logits"


def test_bad_method_names_the_value_and_the_choices(photo_feeds) -> None:
    with pytest.raises(ValueError, match=r"'adaround-ish' is not one of ort") as info:
        ptq.quantize_static(small_conv_net(), photo_feeds, method="adaround-ish")
    assert all(m in str(info.value) for m in ptq.METHODS)


def test_bad_arguments_are_refused_with_the_value(photo_feeds) -> None:
    with pytest.raises(ValueError, match="no calibration feeds"):
        ptq.quantize_static(small_conv_net(), [], method="ort")
    with pytest.raises(ValueError, match=r"\['nope'\]"):
        ptq.quantize_static(small_conv_net(), photo_feeds, method="ort", nodes_to_exclude=["stem", "nope"])
    with pytest.raises(ValueError, match=r"feed 0 lacks inputs \['input'\]"):
        ptq.quantize_static(small_conv_net(), [{"image": photo_feeds[0]["input"]}], method="ort")


def test_a_quantized_model_is_refused(photo_feeds) -> None:
    quantized = ptq.quantize_static(small_conv_net(), photo_feeds, method="ort")
    with pytest.raises(ValueError, match=r"already quantized \(.*DequantizeLinear"):
        ptq.quantize_static(quantized, photo_feeds, method="ort")


def test_excluded_nodes_stay_float(photo_feeds) -> None:
    quantized = ptq.quantize_static(small_conv_net(), photo_feeds, method="ort", nodes_to_exclude=["stem"])
    stem = next(n for n in quantized.graph.node if n.name == "stem")
    assert "stem.w" in stem.input  # the FP32 weight, not a DequantizeLinear output


def test_outputs_quantized_once(photo_feeds) -> None:
    """The output's scale is exposed for the codec to reuse, or the output is left float."""
    model = small_conv_net()
    quantized = ptq.quantize_static(model, photo_feeds, method="ort")
    scales = ptq.output_quantization(quantized)
    assert list(scales) == ["logits"] and scales["logits"].scale > 0 and scales["logits"].dtype == "uint8"
    fp_out = ptq.quantize_static(model, photo_feeds, method="ort", quantize_outputs=False)
    onnx.checker.check_model(fp_out)
    assert ptq.output_quantization(fp_out) == {}
    producer = next(n for n in fp_out.graph.node if "logits" in n.output)
    assert producer.op_type == "Gemm"
    # Dropping the output's own rounding changes it by at most half a step inside the uint8 range, and
    # clips it at the range's ends: the quantized model's logits can pass the FP32-calibrated range
    # (here -14.35 against its floor -14.28). Run as the graphs are written: a fused QGemm rounds its
    # own way, which differs by CPU.
    with_qdq, without = run_exact(quantized, photo_feeds), run_exact(fp_out, photo_feeds)
    step = scales["logits"].scale
    low, high = -scales["logits"].zero_point * step, (255 - scales["logits"].zero_point) * step
    assert np.max(np.abs(with_qdq - np.clip(without, low, high))) <= step * 0.5 + 1e-5


# --------------------------------------------------------------------------- equalization


def _weight(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def test_equalization_keeps_the_fp32_function(photo_feeds) -> None:
    from partitioner.ptq.equalize import equalize

    model = small_conv_net()
    equalized = equalize(model)
    onnx.checker.check_model(equalized)
    assert equalized.SerializeToString() != model.SerializeToString()
    before, after = run(model, photo_feeds), run(equalized, photo_feeds)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * float(np.abs(before).max()))
    # expand -> dw: every channel now has the same range on both sides of the pair
    r1 = np.abs(_weight(equalized, "expand.w")).reshape(16, -1).max(axis=1)
    r2 = np.abs(_weight(equalized, "dw.w")).reshape(16, -1).max(axis=1)
    np.testing.assert_allclose(r1, r2, rtol=1e-2)
    spread_before = np.abs(_weight(model, "expand.w")).reshape(16, -1).max(axis=1)
    assert np.ptp(np.log(r1)) < np.ptp(np.log(spread_before))
    # the Clip(0, 6) between rescaled channels became Relu -> per-channel Min
    assert [n.op_type for n in equalized.graph.node].count("Min") == 2


def test_equalization_is_idempotent_and_leaves_other_models_alone() -> None:
    from partitioner.ptq.equalize import equalize

    once = equalize(small_conv_net())
    assert equalize(once).SerializeToString() == once.SerializeToString()
    # nothing to equalize: a lone conv and the classifier
    rng = np.random.default_rng(1)
    node, params = _conv("only", "input", rng.standard_normal((4, 3, 3, 3)), np.zeros(4))
    graph = helper.make_graph([node], "lone", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("only.out", TensorProto.FLOAT, None)], params)
    lone = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert equalize(lone).SerializeToString() == lone.SerializeToString()


def test_equalization_skips_activations_that_are_not_homogeneous(photo_feeds) -> None:
    """Clip(-1, 1) does not commute with a positive scale: that pair must not move."""
    from partitioner.ptq.equalize import equalize

    model = small_conv_net()
    clip = next(n for n in model.graph.node if n.name == "dw.clip")
    model.graph.initializer.append(numpy_helper.from_array(np.array(-1.0, np.float32), "minus_one"))
    clip.input[1] = "minus_one"
    equalized = equalize(model)
    np.testing.assert_array_equal(_weight(equalized, "project.w"), _weight(model, "project.w"))
    before, after = run(model, photo_feeds), run(equalized, photo_feeds)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * float(np.abs(before).max()))


# --------------------------------------------------------------------------- bias correction


def _mean_errors(fp32: onnx.ModelProto, qdq: onnx.ModelProto, feeds, nodes: list[str]) -> list[float]:
    """Per node, the mean over channels of |mean(quantized output) - mean(FP32 output)|."""
    import onnxruntime as ort

    def means(model: onnx.ModelProto) -> list[np.ndarray]:
        exposed = onnx.ModelProto()
        exposed.CopyFrom(model)
        names = [next(n.output[0] for n in model.graph.node if n.name == node) for node in nodes]
        exposed.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
        batch = np.concatenate([f["input"] for f in feeds])
        return [v.mean(axis=(0, 2, 3)) for v in session.run(names, {"input": batch})]

    return [float(np.mean(np.abs(q - f))) for q, f in zip(means(qdq), means(fp32))]


def test_bias_correction_reduces_the_mean_activation_error(photo_feeds) -> None:
    from partitioner.ptq.bias_correction import correct_biases
    from partitioner.ptq.ort_qdq import quantize_ort

    model = small_conv_net()
    quantized = quantize_ort(model, photo_feeds)
    corrected = correct_biases(model, quantized, photo_feeds)
    convs = ["stem", "expand", "dw", "project"]
    before = _mean_errors(model, quantized, photo_feeds, convs)
    after = _mean_errors(model, corrected, photo_feeds, convs)
    assert sum(after) < 0.5 * sum(before), f"mean errors {before} -> {after}"
    # only the INT32 biases changed
    changed = {t.name for t, u in zip(quantized.graph.initializer, corrected.graph.initializer) if t != u}
    assert changed and all(name.endswith(".b_quantized") for name in changed), changed


# --------------------------------------------------------------------------- rewrites for ORT's fused kernels


def run_exact(model: onnx.ModelProto, feeds) -> np.ndarray:
    """Outputs with graph optimizations off: every QDQ op computed as written (no fused kernel)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, feed)[0] for feed in feeds])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def nncf_raw(photo_feeds) -> onnx.ModelProto:
    return ptq.quantize_static(small_conv_net(), photo_feeds, method="nncf-raw")


def test_per_channel_activation_scales_fold_into_the_weights(nncf_raw, photo_feeds) -> None:
    from partitioner.ptq.fold import fold_channel_scales

    def per_channel_activation_quantizers(model: onnx.ModelProto) -> list[str]:
        inits = {t.name: t for t in model.graph.initializer}
        return [n.name for n in model.graph.node if n.op_type == "QuantizeLinear" and len(inits[n.input[1]].dims) == 1]

    assert per_channel_activation_quantizers(nncf_raw), "NNCF no longer quantizes the depthwise input per channel"
    folded = fold_channel_scales(nncf_raw)
    onnx.checker.check_model(folded)
    assert per_channel_activation_quantizers(folded) == []
    # the same integers up to float rounding at exact ties
    assert _cosine(run_exact(nncf_raw, photo_feeds), run_exact(folded, photo_feeds)) > 0.9999


def test_int8_activations_become_uint8_bit_for_bit(nncf_raw, photo_feeds) -> None:
    from partitioner.ptq.fold import activations_to_uint8

    moved = activations_to_uint8(nncf_raw)
    inits = {t.name: numpy_helper.to_array(t) for t in moved.graph.initializer}
    activation_zero_points = [inits[n.input[2]] for n in moved.graph.node if n.op_type == "QuantizeLinear"]
    assert activation_zero_points and all(z.dtype == np.uint8 for z in activation_zero_points)
    np.testing.assert_array_equal(run_exact(moved, photo_feeds), run_exact(nncf_raw, photo_feeds))


def test_float_biases_get_int32_quantization(nncf_raw, photo_feeds) -> None:
    from partitioner.ptq.fold import fold_channel_scales, quantize_float_biases

    folded = fold_channel_scales(nncf_raw)  # every Conv input now has one scale
    biased = quantize_float_biases(folded)
    onnx.checker.check_model(biased)
    inits = {t.name for t in folded.graph.initializer}
    assert sum(n.input[2] in inits for n in folded.graph.node if n.op_type == "Conv") == 4
    inits = {t.name for t in biased.graph.initializer}
    assert all(n.input[2] not in inits for n in biased.graph.node if n.op_type == "Conv")
    assert _cosine(run_exact(folded, photo_feeds), run_exact(biased, photo_feeds)) > 0.9999


@pytest.mark.parametrize("method", ["nncf", "nncf-fast"])
@pytest.mark.parametrize("clip_bounds", ["initializers", "constants"])
def test_ort_fuses_every_conv_of_the_nncf_method(method: str, clip_bounds: str, photo_feeds, tmp_path) -> None:
    """Also when the Clip bounds are Constant nodes (a raw torch export; partition's graph preparation makes
    them initializers): the depthwise input's per-channel scales must still fold, else that Conv runs in float
    between Q/DQ (MobileNetV2 quantized straight from its export: 2.6x slower than FP32)."""
    import onnxruntime as ort

    quantized = ptq.quantize_static(small_conv_net(clip_bounds=clip_bounds), photo_feeds, method=method)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(quantized.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    assert ops.count("QLinearConv") == 4 and "Conv" not in ops, ops


def test_nncf_failures_are_reported_with_the_way_out(photo_feeds) -> None:
    """NNCF's full bias correction fails on a tensor read by two convolutions (SqueezeNet's
    fire module): the error says so and names the method that works; nncf-fast quantizes it."""
    rng = np.random.default_rng(3)
    nodes, inits = [], []
    for name, x, w in (("squeeze", "input", rng.standard_normal((4, 3, 1, 1))),
                       ("e1", "squeeze.act", rng.standard_normal((4, 4, 1, 1))),
                       ("e3", "squeeze.act", rng.standard_normal((4, 4, 3, 3)))):
        node, params = _conv(name, x, w * 0.3, np.zeros(w.shape[0]))
        nodes.append(node)
        inits += params
    nodes.insert(1, helper.make_node("Relu", ["squeeze.out"], ["squeeze.act"], name="squeeze.relu"))
    nodes.append(helper.make_node("Concat", ["e1.out", "e3.out"], ["fire"], name="concat", axis=1))
    graph = helper.make_graph(nodes, "fire", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("fire", TensorProto.FLOAT, None)], inits)
    fire = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ValueError, match=r"NNCF could not quantize model 'fire'.*'nncf-fast' quantizes them"):
        ptq.quantize_static(fire, photo_feeds, method="nncf")
    quantized = ptq.quantize_static(fire, photo_feeds, method="nncf-fast")
    assert run(quantized, photo_feeds).shape == (len(photo_feeds), 8, SIZE, SIZE)
