"""End-to-end partition of a tiny inline model on real frames, and the no-half-written-bundle rule."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from partitioner import ptq
from protos import bundle as bundle_io
from partitioner.errors import CutNotFound
from protos.errors import BundleExists
from partitioner.pipeline import PartitionConfig, run_partition

SIZE = 32


def tiny_model(opset: int = 17) -> onnx.ModelProto:
    """conv -> relu -> conv -> relu (+ skip) -> global pool -> gemm: 5 classes, dynamic batch."""
    rng = np.random.default_rng(7)

    def init(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["stem"], name="stem_conv", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["stem"], ["stem_relu"], name="stem_relu"),
        helper.make_node("Conv", ["stem_relu", "w2", "b2"], ["body"], name="body_conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["body"], ["body_relu"], name="body_relu"),
        helper.make_node("Add", ["body_relu", "stem_relu"], ["merged"], name="skip_add"),
        helper.make_node("GlobalAveragePool", ["merged"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wfc", "bfc"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])],
        [init("w1", 8, 3, 3, 3), init("b1", 8, scale=0.1), init("w2", 8, 8, 3, 3, scale=0.2), init("b2", 8, scale=0.1),
         init("wfc", 5, 8, scale=1.0), init("bfc", 5, scale=0.1)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests")
    model.ir_version = 8 if opset >= 13 else 4
    onnx.checker.check_model(model)
    return model


def tiny_config(model_path: pathlib.Path, out: pathlib.Path, **overrides) -> PartitionConfig:
    values = dict(
        model=str(model_path), out_dir=out, model_name="tiny_net", calibration_frames=8, fidelity_frames=24,
        verify_frames=4, threshold=0.5, profile_runs=3, profile_warmup=1, resize_shorter_px=40, max_cuts=6,
    )
    values.update(overrides)
    return PartitionConfig(**values)


def build_tiny_bundle(root: pathlib.Path, **overrides):
    """(report, model path) for a partition of the tiny model into ``root/bundle``."""
    root.mkdir(parents=True, exist_ok=True)
    model_path = root / "tiny.onnx"
    onnx.save(tiny_model(), str(model_path))
    return run_partition(tiny_config(model_path, root / "bundle", **overrides)), model_path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny"))


def test_bundle_is_valid_and_holds_both_ends(tiny) -> None:
    report, _ = tiny
    bundle = bundle_io.read_bundle(report.bundle.root)
    ids = bundle.cut_ids
    assert ids[0] == "input" and ids[-1] == "output" and len(ids) >= 3
    assert bundle.manifest.output.classification.output_tensor == "logits"
    labels = json.loads(bundle.path(bundle.manifest.output.classification.labels).read_text())
    assert labels == ["0", "1", "2", "3", "4"]
    for cut in bundle.manifest.cuts:
        assert cut.verification.passed, cut.id
        assert cut.HasField("fidelity") and cut.fidelity.frames > 0
        assert cut.edge_profiles and cut.edge_profiles[0].head_ms > 0
    inp = bundle.cut("input")
    assert [(t.name, t.datatype, list(t.shape), t.encoding.codec) for t in inp.tensors] == [("image_jpeg", "BYTES", [-1], "jpeg")]
    assert inp.wire_bytes == inp.wire_bytes_by_codec["jpeg"] > 0


def test_inner_cut_int8_wire_is_baked_into_both_graphs(tiny) -> None:
    report, _ = tiny
    bundle = report.bundle
    inner = [c for c in bundle.manifest.cuts if c.id not in ("input", "output")]
    assert inner
    for cut in inner:
        head = onnx.load(str(bundle.path(cut.head)))
        tail = onnx.load(str(bundle.path(cut.tail)))
        spec = cut.tensors[0]
        assert spec.datatype == "UINT8" and spec.encoding.codec == "int8" and spec.encoding.scale > 0
        out = {o.name: o for o in head.graph.output}[spec.name]
        assert out.type.tensor_type.elem_type == TensorProto.UINT8
        inp = {i.name: i for i in tail.graph.input}[spec.name]
        assert inp.type.tensor_type.elem_type == TensorProto.UINT8
        assert head.graph.node[-1].op_type == "QuantizeLinear"
        assert tail.graph.node[0].op_type == "DequantizeLinear"
        inits = {t.name: numpy_helper.to_array(t) for t in tail.graph.initializer}
        assert float(inits[tail.graph.node[0].input[1]]) == pytest.approx(spec.encoding.scale, rel=1e-6)
        assert int(inits[tail.graph.node[0].input[2]]) == spec.encoding.zero_point
        assert cut.wire_bytes == cut.wire_bytes_by_codec["int8"]
        assert cut.wire_bytes_by_codec["fp32"] == 4 * cut.wire_bytes_by_codec["int8"]


def test_shipped_pipeline_matches_full_model_on_real_frames(tiny) -> None:
    import onnxruntime as ort

    from partitioner import calibration
    from protos.preprocess import preprocess_bgr

    report, _ = tiny
    bundle = report.bundle
    frames = calibration.read_frames(calibration.default_calibration_path(), max_frames=60, stride=4).frames[-6:]
    full = ort.InferenceSession(str(bundle.path(bundle.manifest.full_model)))
    cut = [c for c in bundle.manifest.cuts if c.id not in ("input", "output")][-1]
    head = ort.InferenceSession(str(bundle.path(cut.head)))
    tail = ort.InferenceSession(str(bundle.path(cut.tail)))
    for frame in frames:
        x = preprocess_bgr(frame, bundle.manifest.input)
        want = full.run(None, {"image": x})[0]
        wire = head.run(None, {"image": x})
        assert wire[0].dtype == np.uint8
        got = tail.run(None, dict(zip([o.name for o in head.get_outputs()], wire)))[0]
        cos = float(np.dot(want.ravel(), got.ravel()) / (np.linalg.norm(want) * np.linalg.norm(got)))
        assert cos > 0.98


def test_unknown_cut_tensor_leaves_nothing_behind(tmp_path: pathlib.Path) -> None:
    model_path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), str(model_path))
    out = tmp_path / "bundle"
    with pytest.raises(CutNotFound, match="body_rleu.*nearest candidates: .*body_relu"):
        run_partition(tiny_config(model_path, out, cuts=("body_rleu",)))
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]


def test_requested_cut_ships_with_both_ends(tmp_path: pathlib.Path) -> None:
    report, _ = build_tiny_bundle(tmp_path, cuts=("body_relu,stem_relu",), wire_codec="fp16", quantize_heads=False,
                                  fidelity_frames=8)
    bundle = bundle_io.read_bundle(report.bundle.root)
    assert len(bundle.cut_ids) == 3 and bundle.cut_ids[0] == "input" and bundle.cut_ids[-1] == "output"
    multi = bundle.manifest.cuts[1]
    assert sorted(t.name for t in multi.tensors) == ["body_relu", "stem_relu"]
    assert {t.datatype for t in multi.tensors} == {"FP16"}
    assert multi.head_precision == "fp32" and multi.fidelity.top1_agreement == pytest.approx(1.0)


def test_existing_output_is_not_replaced_without_overwrite(tmp_path: pathlib.Path) -> None:
    model_path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), str(model_path))
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(BundleExists):
        run_partition(tiny_config(model_path, out))
    assert (out / "keep.txt").read_text() == "mine"


def test_cut_failing_verification_is_rejected_with_reason(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real verifier runs; for one cut its result is replaced by a failure to exercise the rejection path."""
    from partitioner import verify
    from partitioner.errors import VerificationFailed

    real = verify.verify_split

    def failing_for_stem(full, head, tail, frames, **kwargs):
        result = real(full, head, tail, frames, **kwargs)
        if head is not None and [o.name for o in head.graph.output] == ["stem_relu"]:
            raise VerificationFailed("split does not reproduce the full fp32 model: injected for the test")
        return result

    monkeypatch.setattr(verify, "verify_split", failing_for_stem)
    report, _ = build_tiny_bundle(tmp_path, cuts=("stem_relu", "flat"), fidelity_frames=8)
    assert [r.id for r in report.rejected] == ["stem_relu"]
    assert "injected for the test" in report.rejected[0].reason
    assert report.bundle.cut_ids == ["input", "flat", "output"]


def test_symbolic_image_size_gets_a_documented_default(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 12 part 8: no --input-size for a symbolic image size -> 224x224 for a one-output model
    (a multiple of its stride 2), said in the output; --input-size still chooses."""
    model = tiny_model()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    path = tmp_path / "sym.onnx"
    onnx.save(model, str(path))
    with caplog.at_level("WARNING", logger="partitioner.source_defaults"):
        report = run_partition(tiny_config(path, tmp_path / "a", fidelity_frames=8, max_cuts=3, resize_shorter_px=0))
    assert list(report.bundle.manifest.input.tensor.shape) == [-1, 3, 224, 224]
    assert "image size is symbolic; using 224x224" in caplog.text and "--input-size" in caplog.text
    report = run_partition(tiny_config(path, tmp_path / "b", input_size=(SIZE, SIZE), fidelity_frames=8, max_cuts=3))
    assert list(report.bundle.manifest.input.tensor.shape) == [-1, 3, SIZE, SIZE]


def test_old_opset_model_is_upgraded_for_int8(tmp_path: pathlib.Path) -> None:
    """Opset 9 has no QuantizeLinear: the prepared model is converted to opset 13 first."""
    path = tmp_path / "old.onnx"
    onnx.save(tiny_model(opset=9), str(path))
    report = run_partition(tiny_config(path, tmp_path / "bundle", fidelity_frames=8, max_cuts=3))
    bundle = bundle_io.read_bundle(report.bundle.root)
    assert bundle.manifest.opset == 13
    inner = [c for c in bundle.manifest.cuts if c.id not in ("input", "output")]
    assert inner and inner[0].tensors[0].datatype == "UINT8"


def test_fp16_tails(tmp_path: pathlib.Path) -> None:
    report, _ = build_tiny_bundle(tmp_path, tail_fp16=True, fidelity_frames=8, max_cuts=3)
    bundle = report.bundle
    for cut in bundle.manifest.cuts:
        if not cut.HasField("tail"):
            continue
        assert cut.tail_precision == "fp16"
        tail = onnx.load(str(bundle.path(cut.tail)))
        assert any(t.data_type == TensorProto.FLOAT16 for t in tail.graph.initializer)
        assert tail.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
        assert cut.fidelity.cosine > 0.99


def test_manifest_records_the_gate_and_held_out_sources(tiny) -> None:
    report, _ = tiny
    manifest = bundle_io.read_bundle(report.bundle.root).manifest
    ev = manifest.evaluation
    assert (ev.task, ev.metric, ev.gate, ev.margin, ev.confident_at) == (
        "classification", "top1_agreement", "baseline", pytest.approx(0.02), pytest.approx(0.8))
    assert list(ev.calibration_sources) == ["bikes.mp4"] and ev.calibration_frames == 8
    assert set(ev.evaluation_sources) == {"bigbuckbunny.mp4", "carphone_pristine.mp4"} and ev.evaluation_frames == 24
    assert 0.0 < ev.baseline <= 1.0 and ev.baseline_fidelity.frames == 24 and ev.quantization == ptq.DEFAULT_METHOD
    for cut in manifest.cuts:
        fid = cut.fidelity
        assert fid.threshold == pytest.approx(ev.baseline - ev.margin), cut.id
        assert fid.passed == (fid.value >= fid.threshold and fid.confident_agreement == 1.0), cut.id
        if cut.head_precision == "int8":
            assert fid.passed and fid.remedy in ("none", "fp32_sensitive"), cut.id
    # with an FP32 tail the input cut is the cloud-only pipeline itself
    assert manifest.cuts[0].fidelity.value == pytest.approx(ev.baseline)


def test_int8_full_model_ships_when_the_output_cut_passes(tiny) -> None:
    import onnxruntime as ort

    report, _ = tiny
    bundle = bundle_io.read_bundle(report.bundle.root)
    output = bundle.cut("output")
    if output.head_precision != "int8":
        assert not bundle.manifest.HasField("full_model_int8")
        pytest.fail(f"the tiny model's INT8 full model failed the gate: {output.fidelity}")
    path = bundle.path(bundle.manifest.full_model_int8)
    assert path.read_bytes() == bundle.path(output.head).read_bytes()
    model = onnx.load(str(path))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
    logits = ort.InferenceSession(str(path)).run(None, {"image": np.zeros((1, 3, SIZE, SIZE), np.float32)})[0]
    assert logits.shape == (1, 5) and logits.dtype == np.float32


def test_preprocessing_flags_reach_the_manifest(tmp_path: pathlib.Path) -> None:
    from partitioner import cli

    model_path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), str(model_path))
    config, _, _ = cli.build_partition_config(
        [str(model_path), "--out", str(tmp_path / "b"), "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25",
         "--pixel-scale", "1/127.5", "--color-order", "BGR", "--layout", "NCHW", "--resize-shorter", "0",
         "--input-size", "32x32", "--task", "other", "--gate", "absolute", "--threshold", "0.9", "--jpeg-quality", "75",
         "--calibration-frames", "4", "--frames", "6", "--max-cuts", "3", "--runs", "2", "--no-quantize"], environ={})
    report = run_partition(config)
    manifest = bundle_io.read_bundle(report.bundle.root).manifest
    spec = manifest.input
    assert list(spec.mean) == [0.5] * 3 and list(spec.std) == [0.25] * 3
    assert spec.pixel_scale == pytest.approx(1 / 127.5)
    assert (spec.color_order, spec.layout, spec.resize_shorter_px, spec.jpeg_quality) == ("BGR", "NCHW", 0, 75)
    assert (spec.width_px, spec.height_px) == (SIZE, SIZE)
    ev = manifest.evaluation
    assert (ev.task, ev.metric, ev.gate, ev.quantization) == ("other", "min_output_cosine", "absolute", "")
    assert all(c.fidelity.threshold == pytest.approx(0.9) for c in manifest.cuts)
    assert not manifest.HasField("full_model_int8")  # --no-quantize: nothing INT8 to fall back on


def test_fidelity_source_must_differ_from_calibration(tmp_path: pathlib.Path) -> None:
    from partitioner import samples
    from partitioner.errors import CalibrationError

    model_path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), str(model_path))
    video = samples.video_path("carphone_pristine.mp4")
    with pytest.raises(CalibrationError, match="is the calibration source"):
        run_partition(tiny_config(model_path, tmp_path / "a", calibration=video, fidelity_source=video))
    report = run_partition(tiny_config(model_path, tmp_path / "b", calibration=video, max_cuts=3, fidelity_frames=8,
                                       fidelity_source=samples.video_path("bikes.mp4")))
    ev = report.bundle.manifest.evaluation
    assert (list(ev.calibration_sources), list(ev.evaluation_sources)) == (["carphone_pristine.mp4"], ["bikes.mp4"])


def test_report_shows_fidelity_next_to_the_baseline(tiny, tmp_path: pathlib.Path) -> None:
    from partitioner import report as reporting

    report, _ = tiny
    manifest = report.bundle.manifest
    text = reporting.format_table(manifest)
    ev = manifest.evaluation
    assert "top1_agreement" in text.splitlines()[1] and "gate" in text.splitlines()[1]
    assert f"cloud-only JPEG q90 baseline {ev.baseline:.3f}" in text
    assert f"calibrated on 8 frames of bikes.mp4 ({ptq.DEFAULT_METHOD} PTQ)" in text
    int8_line = "INT8 full model for local fallback: " + (
        "edge/full_model_int8.onnx" if manifest.HasField("full_model_int8") else "none")
    assert int8_line in text
    for cut in manifest.cuts:
        row = next(line for line in text.splitlines() if line.startswith(cut.id + " "))
        assert f"{cut.fidelity.value:.3f}" in row and ("pass" if cut.fidelity.passed else "FAIL") in row
    png = tmp_path / "report.png"
    reporting.plot_report(manifest, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
