"""Bundle format v1: manifest round trip, validation errors that name the field, tamper detection."""
from __future__ import annotations

import json
import pathlib

import pytest

from protos import bundle as bundle_io
from protos.errors import (
    BundleExists,
    BundleFileMissing,
    BundleHashMismatch,
    ManifestError,
    UnknownCut,
    UnsupportedSchemaVersion,
)
from protos import bundle_pb2
from tests.bundles import BundleSpec, CutSpec, InputSpec, Profile, Tensor, build_manifest


def write_sample_bundle(out: pathlib.Path) -> bundle_io.Bundle:
    """Placeholder file contents: the format does not look inside the models."""
    logits = Tensor("logits", "FP32", (-1, 4))
    spec = BundleSpec(
        model_name="tiny_net", full_model=b"full-model-bytes", labels=["a", "b", "c", "d"], top_k=2,
        input=InputSpec(Tensor("input", "FP32", (-1, 3, 8, 8)), 8, 8, resize_shorter_px=10),
        outputs=(logits,),
        verification=bundle_pb2.Verification(frames=8, max_abs_error=1e-6, top1_agreement=1.0, cosine=1.0, passed=True),
        cuts=(
            CutSpec("input", (Tensor("jpeg", "BYTES", (-1,), codec="jpeg"),), tail=b"tail-input", wire_bytes=2048),
            CutSpec("conv1", (Tensor("conv1/Relu_output_0", "UINT8", (-1, 4, 8, 8), codec="int8", scale=0.05),),
                    head=b"head-conv1", tail=b"tail-conv1", display_name="conv1/Relu_output_0", wire_bytes=256,
                    wire_bytes_by_codec={"fp32": 1024, "int8": 256}, edge_profile=Profile(head_ms=1.5)),
            CutSpec("output", (logits,)),
        ),
    )
    with bundle_io.BundleWriter(out) as writer:
        return writer.commit(build_manifest(spec, writer))


@pytest.fixture
def sample(tmp_path: pathlib.Path) -> pathlib.Path:
    write_sample_bundle(tmp_path / "bundle")
    return tmp_path / "bundle"


def _rewrite(root: pathlib.Path, edit) -> None:
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_round_trip(sample: pathlib.Path) -> None:
    b = bundle_io.read_bundle(sample)
    assert b.name == "tiny_net"
    assert b.cut_ids == ["input", "conv1", "output"]
    assert b.cut("conv1").wire_bytes_by_codec["int8"] == 256
    assert b.path(b.cut("conv1").head).read_bytes() == b"head-conv1"
    assert len(b.content_hash) == 64
    again = bundle_io.parse_manifest(bundle_io.manifest_to_json(b.manifest))
    assert again == b.manifest
    assert not list(sample.parent.glob(".bundle.tmp-*")), "staging directory left behind"


def test_unknown_cut_lists_the_valid_ones(sample: pathlib.Path) -> None:
    with pytest.raises(UnknownCut, match="'conv9'.*input, conv1, output"):
        bundle_io.read_bundle(sample).cut("conv9")


def test_each_side_reads_with_only_its_own_files(tmp_path: pathlib.Path, sample: pathlib.Path) -> None:
    import shutil

    edge_copy = tmp_path / "edge_copy"
    edge_copy.mkdir()
    shutil.copy(sample / "manifest.json", edge_copy)
    shutil.copytree(sample / "edge", edge_copy / "edge")
    assert bundle_io.read_bundle(edge_copy, bundle_io.Side.EDGE).content_hash == bundle_io.read_bundle(sample).content_hash
    with pytest.raises(BundleFileMissing, match="cloud/tails/input.onnx"):
        bundle_io.read_bundle(edge_copy, bundle_io.Side.CLOUD)


def test_tampered_file_names_file_and_both_hashes(sample: pathlib.Path) -> None:
    expected = bundle_io.read_bundle(sample).cut("conv1").tail.sha256
    (sample / "cloud" / "tails" / "conv1.onnx").write_bytes(b"evil")
    with pytest.raises(BundleHashMismatch) as info:
        bundle_io.read_bundle(sample, bundle_io.Side.CLOUD)
    assert "conv1.onnx" in str(info.value) and expected in str(info.value) and info.value.actual in str(info.value)
    # The edge side does not hold that file and still reads.
    bundle_io.read_bundle(sample, bundle_io.Side.EDGE)


def test_missing_file_is_named(sample: pathlib.Path) -> None:
    (sample / "edge" / "full_model.onnx").unlink()
    with pytest.raises(BundleFileMissing, match=r"full_model\.onnx.*full_model"):
        bundle_io.read_bundle(sample)


def test_manifest_hash_edit_is_caught(sample: pathlib.Path) -> None:
    _rewrite(sample, lambda d: d["cuts"][1]["head"].__setitem__("sha256", "0" * 64))
    with pytest.raises(BundleHashMismatch, match="content_hash"):
        bundle_io.read_bundle(sample)


@pytest.mark.parametrize(
    ("edit", "exc", "field"),
    [
        (lambda d: d.__setitem__("schema_version", 2), UnsupportedSchemaVersion, "schema_version"),
        (lambda d: d.pop("schema_version"), ManifestError, "schema_version"),
        (lambda d: d.__setitem__("surprise", 1), ManifestError, "surprise"),
        (lambda d: d["cuts"][1].__setitem__("bogus_field", 1), ManifestError, "bogus_field"),
        (lambda d: d["input"].__setitem__("layout", "CHWN"), ManifestError, "input.layout"),
        (lambda d: d["input"].__setitem__("std", [0.2, 0.0, 0.2]), ManifestError, "input.std"),
        (lambda d: d["input"]["tensor"].__setitem__("datatype", "FLOAT"), ManifestError, "input.tensor.datatype"),
        (lambda d: d["cuts"][1].__setitem__("id", "Conv 1"), ManifestError, "cuts[1].id"),
        (lambda d: d["cuts"][1]["verification"].__setitem__("passed", False), ManifestError, "cuts[1].verification.passed"),
        (lambda d: d["cuts"][1]["tensors"][0]["encoding"].__setitem__("codec", "bf8"), ManifestError, "cuts[1].tensors[0].encoding.codec"),
        (lambda d: d["cuts"][1]["tail"].__setitem__("path", "../../etc/passwd"), ManifestError, "cuts[1].tail.path"),
        (lambda d: d["cuts"][1]["tail"].__setitem__("path", "edge/heads/conv1.onnx"), ManifestError, "cuts[1].tail.path"),
        (lambda d: d["cuts"].pop(2), ManifestError, "cuts"),
        (lambda d: d["output"]["classification"].__setitem__("output_tensor", "probs"), ManifestError, "output.classification.output_tensor"),
        (lambda d: d.__setitem__("model_name", "../x"), ManifestError, "model_name"),
        (lambda d: d["cuts"][1].__setitem__("wire_bytes", "many"), ManifestError, "wire_bytes"),
    ],
)
def test_bad_manifest_names_the_field(sample: pathlib.Path, edit, exc, field: str) -> None:
    _rewrite(sample, edit)
    with pytest.raises(exc) as info:
        bundle_io.read_bundle(sample)
    assert field in str(info.value)
    assert "manifest.json" in str(info.value)


def test_not_json_is_rejected(sample: pathlib.Path) -> None:
    (sample / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        bundle_io.read_bundle(sample)


def test_writer_never_leaves_a_half_written_bundle(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "b"
    with pytest.raises(RuntimeError):
        with bundle_io.BundleWriter(out) as writer:
            writer.add_bytes("edge/full_model.onnx", b"x")
            raise RuntimeError("stage failed")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_existing_dir_unless_overwrite(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "b"
    write_sample_bundle(out)
    with pytest.raises(BundleExists, match=str(out.name)):
        bundle_io.BundleWriter(out)
    write_sample_bundle_overwrite = bundle_io.BundleWriter(out, overwrite=True)
    write_sample_bundle_overwrite.abort()
    assert bundle_io.read_bundle(out).name == "tiny_net"


def test_update_manifest_keeps_content_hash(sample: pathlib.Path) -> None:
    before = bundle_io.read_bundle(sample).content_hash

    def add_profile(m: bundle_pb2.Manifest) -> None:
        m.cuts[1].edge_profiles.add(device="raspberry-pi-4", threads=4, runs=20, head_ms=7.5)

    bundle_io.update_manifest(sample, add_profile)
    after = bundle_io.read_bundle(sample)
    assert after.content_hash == before
    assert [p.device for p in after.cut("conv1").edge_profiles] == ["test", "raspberry-pi-4"]


def test_reader_needs_no_torch_or_onnx() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import protos.bundle, protos.preprocess; "
        "bad = [m for m in ('torch', 'onnx') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bundle_is_readable_by_other_users_under_the_usual_umask(tmp_path: pathlib.Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        b = write_sample_bundle(tmp_path / "shared")
    finally:
        os.umask(old)
    assert stat.S_IMODE(b.root.stat().st_mode) == 0o755
    assert stat.S_IMODE((b.root / "manifest.json").stat().st_mode) == 0o644


def test_update_manifest_on_an_edge_only_copy(tmp_path: pathlib.Path, sample: pathlib.Path) -> None:
    import shutil

    edge = tmp_path / "pi"
    edge.mkdir()
    shutil.copy(sample / "manifest.json", edge)
    shutil.copytree(sample / "edge", edge / "edge")
    with pytest.raises(BundleFileMissing):
        bundle_io.update_manifest(edge, lambda m: None)  # all sides by default
    updated = bundle_io.update_manifest(
        edge, lambda m: m.cuts[1].edge_profiles.add(device="pi", head_ms=9.0), bundle_io.Side.EDGE
    )
    assert [p.device for p in updated.cut("conv1").edge_profiles] == ["test", "pi"]
    assert bundle_io.read_bundle(edge, bundle_io.Side.EDGE).cut("conv1").edge_profiles[-1].head_ms == 9.0


def _with_evaluation(tmp_path: pathlib.Path) -> pathlib.Path:
    """The sample bundle plus the gate's record and an INT8 full model."""
    root = tmp_path / "gated"
    write_sample_bundle(root)

    def add(m: bundle_pb2.Manifest) -> None:
        ev = m.evaluation
        ev.task, ev.metric, ev.gate, ev.margin, ev.confident_at, ev.baseline = (
            "classification", "top1_agreement", "baseline", 0.02, 0.5, 0.836)
        ev.calibration_sources.append("bikes.mp4")
        ev.evaluation_sources.extend(["carphone_pristine.mp4", "bigbuckbunny.mp4"])
        m.cuts[1].fidelity.value, m.cuts[1].fidelity.passed = 0.91, True

    bundle_io.update_manifest(root, add)
    manifest = bundle_io.read_bundle(root).manifest
    data = b"int8-full-model"
    (root / "edge" / "full_model_int8.onnx").write_bytes(data)
    import hashlib

    manifest.full_model_int8.CopyFrom(bundle_pb2.FileRef(path="edge/full_model_int8.onnx",
                                                         sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data)))
    manifest.content_hash = bundle_io.compute_content_hash(manifest)
    (root / "manifest.json").write_text(bundle_io.manifest_to_json(manifest))
    return root


def test_gate_record_and_int8_full_model_round_trip(tmp_path: pathlib.Path, sample: pathlib.Path) -> None:
    root = _with_evaluation(tmp_path)
    b = bundle_io.read_bundle(root)
    assert b.manifest.evaluation.baseline == pytest.approx(0.836)
    assert list(b.manifest.evaluation.evaluation_sources) == ["carphone_pristine.mp4", "bigbuckbunny.mp4"]
    assert b.path(b.manifest.full_model_int8).read_bytes() == b"int8-full-model"
    assert b.content_hash != bundle_io.read_bundle(sample).content_hash  # the INT8 model is part of the version
    (root / "edge" / "full_model_int8.onnx").write_bytes(b"evil")
    with pytest.raises(BundleHashMismatch, match="full_model_int8"):
        bundle_io.read_bundle(root)


def test_manifest_without_the_gate_record_still_reads(sample: pathlib.Path) -> None:
    manifest = bundle_io.read_bundle(sample).manifest
    assert not manifest.HasField("evaluation") and not manifest.HasField("full_model_int8")


@pytest.mark.parametrize(("edit", "field"), [
    (lambda d: d["evaluation"].__setitem__("task", "segmentation"), "evaluation.task"),
    (lambda d: d["evaluation"].__setitem__("gate", "vibes"), "evaluation.gate"),
    (lambda d: d["evaluation"].__setitem__("margin", 1.5), "evaluation.margin"),
    (lambda d: d["evaluation"].__setitem__("confident_at", -0.1), "evaluation.confident_at"),
    (lambda d: d["full_model_int8"].__setitem__("path", "cloud/full.onnx"), "full_model_int8.path"),
])
def test_bad_gate_record_names_the_field(tmp_path: pathlib.Path, edit, field: str) -> None:
    root = _with_evaluation(tmp_path)
    _rewrite(root, edit)
    with pytest.raises(ManifestError, match=field.replace("[", r"\[")):
        bundle_io.read_bundle(root)
