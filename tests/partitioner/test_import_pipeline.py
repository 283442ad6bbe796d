"""``partition`` on TensorFlow sources built in the tests: a frozen graph cut between inner
tensors, and a full-integer .tflite that keeps its own quantization (issue 12 parts 1, 2, 5)."""
from __future__ import annotations

import pathlib

import pytest

pytest.importorskip("tensorflow", reason="the TensorFlow import tests need the 'tensorflow' extra")

from partitioner.pipeline import PartitionConfig, run_partition  # noqa: E402
from protos import bundle as bundle_io  # noqa: E402
from protos.source_format import source_format_of  # noqa: E402
from tests.partitioner.tf_models import frozen_graph, tflite_file  # noqa: E402


def _config(model: pathlib.Path, out: pathlib.Path, **overrides) -> PartitionConfig:
    values = dict(model=str(model), out_dir=out, model_name="tf_tiny", calibration_frames=8, fidelity_frames=16,
                  verify_frames=4, profile_runs=2, profile_warmup=1, resize_shorter_px=0, max_cuts=4,
                  input_size=(16, 16))
    values.update(overrides)
    return PartitionConfig(**values)


def _reproduces(bundle: bundle_io.Bundle) -> None:
    """Every shipped cut's FP32 verification passed (recorded by the pipeline)."""
    for cut in bundle.manifest.cuts:
        assert cut.verification.passed, (cut.id, cut.verification)


def test_frozen_graph_partitions_between_inner_tensors(tmp_path: pathlib.Path) -> None:
    _, path = frozen_graph(tmp_path)
    report = run_partition(_config(path, tmp_path / "bundle", inputs=("scaled:0",), outputs=("logits:0",),
                                   pixel_scale=2 / 255, mean=(0.5,), std=(0.5,)))
    manifest = report.bundle.manifest
    record = source_format_of(manifest)
    assert record is not None and record.format == "tensorflow-frozen-graph" and record.converter == "tf2onnx"
    assert list(record.inputs) == ["scaled:0"] and list(record.outputs) == ["logits:0"] and record.converter_version
    assert not record.pre_quantized and manifest.evaluation.quantization
    assert manifest.input.tensor.name == "scaled:0" and list(manifest.input.tensor.shape) == [-1, 16, 16, 3]
    assert "via tf2onnx" in manifest.source
    _reproduces(report.bundle)


def test_pre_quantized_tflite_keeps_its_quantization(tmp_path: pathlib.Path) -> None:
    _, path = tflite_file(tmp_path, quantized=True)
    report = run_partition(_config(path, tmp_path / "bundle", input_size=(0, 0)))
    manifest = report.bundle.manifest
    record = source_format_of(manifest)
    assert record is not None and record.format == "tflite" and record.pre_quantized
    # No second pass: quantize_heads was turned off, so no PTQ method is recorded, and every
    # head is the source's own integer graph (its QuantizeLinear/DequantizeLinear pairs only).
    assert manifest.evaluation.quantization == ""
    assert list(manifest.input.mean) == [0.0] and list(manifest.input.std) == [1.0] and manifest.input.pixel_scale == 1.0
    heads = [cut for cut in manifest.cuts if cut.HasField("head")]
    assert heads and all(cut.head_precision == "int8" for cut in heads)
    import onnx

    source_ops = {n.op_type for n in onnx.load(str(report.bundle.root / manifest.full_model.path)).graph.node}
    for cut in heads:
        head = onnx.load(str(report.bundle.root / cut.head.path))
        assert {n.op_type for n in head.graph.node} <= source_ops | {"QuantizeLinear", "Cast", "Clip"}, cut.id
    _reproduces(report.bundle)
    # The unchanged integer model agrees with itself (judged with the kernels its reference ran with).
    assert next(c for c in manifest.cuts if c.id == "output").fidelity.value == pytest.approx(1.0)
    assert all(cut.fidelity.value > 0.5 for cut in manifest.cuts if cut.id != "input"), [
        (c.id, c.fidelity.value) for c in manifest.cuts]
