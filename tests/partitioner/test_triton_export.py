"""Triton model repository export: every config.pbtxt parses as tritonclient's ModelConfig."""
from __future__ import annotations

import pathlib

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from protos import bundle as bundle_io
from partitioner.triton_export import INPUT_CUT_NOTE, export_triton
from tests.partitioner.test_pipeline import build_tiny_bundle


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("triton")
    report, _ = build_tiny_bundle(root)
    out = root / "repo"
    written = export_triton(report.bundle.root, out)
    return report.bundle, out, written


def _config(path: pathlib.Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_one_model_per_tail_with_parsable_config(repo) -> None:
    bundle, out, written = repo
    with_tail = [c for c in bundle.manifest.cuts if c.HasField("tail")]
    assert sorted(p.name for p in written) == sorted(bundle_io.tail_model_name(bundle.manifest, c.id) for c in with_tail)
    for cut in with_tail:
        name = bundle_io.tail_model_name(bundle.manifest, cut.id)
        cfg = _config(out / name / "config.pbtxt")
        assert cfg.name == name and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 8
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 2000
        # an integer version, the one the edge agent asks for; the bundle is named by its hash parameter
        assert sorted(p.name for p in (out / name).iterdir() if p.is_dir()) == ["1"]
        assert bundle_io.tail_model_version(bundle.manifest) == "1"
        assert (out / name / "1" / "model.onnx").read_bytes() == bundle.path(cut.tail).read_bytes()
        assert cfg.parameters["splitinfer_bundle_hash"].string_value == bundle.manifest.content_hash[:12]
        assert len(cfg.parameters["splitinfer_bundle_hash"].string_value) == 12
        assert [o.name for o in cfg.output] == [t.name for t in bundle.manifest.output.tensors]
        assert list(cfg.output[0].dims) == [5]
        if cut.id != "input":
            assert [i.name for i in cfg.input] == [t.name for t in cut.tensors]
            assert cfg.input[0].data_type == model_config_pb2.TYPE_UINT8
            assert list(cfg.input[0].dims) == list(cut.tensors[0].shape[1:])
    assert (out / "README.md").is_file()


def test_input_cut_exports_the_float_model_and_says_so(repo) -> None:
    bundle, out, _ = repo
    cfg = _config(out / bundle_io.tail_model_name(bundle.manifest, "input") / "config.pbtxt")
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [("image", model_config_pb2.TYPE_FP32, [3, 32, 32])]
    assert cfg.parameters["splitinfer_note"].string_value == INPUT_CUT_NOTE
    assert "cannot decode the JPEG" in (out / "README.md").read_text()


def test_existing_repo_needs_overwrite(repo, tmp_path: pathlib.Path) -> None:
    bundle, _, _ = repo
    target = tmp_path / "repo"
    target.mkdir()
    with pytest.raises(FileExistsError):
        export_triton(bundle.root, target)
    export_triton(bundle.root, target, overwrite=True)
    assert (target / "README.md").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]


def test_python_backend_layout_runs_the_tail_and_decodes_the_jpeg(repo, tmp_path: pathlib.Path) -> None:
    """`--backend python`: every model is Triton's Python backend with model.py + splitinfer.json; the
    'input' model takes the edge's JPEG. model.py's decode step gives exactly the tensor our own
    preprocessing gives, and its tail matches the bundle's (run here outside Triton; tests/triton
    runs the same repository in a real Triton)."""
    import json

    import numpy as np
    import onnxruntime as ort

    from partitioner import triton_python_model
    from partitioner.samples import available_images
    from protos.preprocess import decode_jpeg, encode_jpeg, preprocess_bgr

    bundle, _, _ = repo
    out = tmp_path / "py"
    written = export_triton(bundle.root, out, backend="python", threads=2)
    assert len(written) == len([c for c in bundle.manifest.cuts if c.HasField("tail")])
    for path in written:
        cfg = _config(path / "config.pbtxt")
        assert cfg.backend == "python" and not cfg.platform
        assert (path / "1" / "model.py").read_bytes() == pathlib.Path(triton_python_model.__file__).read_bytes()
        assert cfg.parameters["splitinfer_bundle_hash"].string_value == bundle_io.bundle_hash(bundle.manifest)
    name = bundle_io.tail_model_name(bundle.manifest, "input")
    cfg = _config(out / name / "config.pbtxt")
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [("image_jpeg", model_config_pb2.TYPE_STRING, [-1])]
    assert "splitinfer_note" not in cfg.parameters
    spec = json.loads((out / name / "1" / "splitinfer.json").read_text())
    assert spec["threads"] == 2 and [s["kind"] for s in spec["decode"]] == ["jpeg"]

    import cv2

    jpeg = encode_jpeg(cv2.imread(str(available_images()[0])), 90)
    feeds = triton_python_model.feeds_of({"image_jpeg": np.array([jpeg, jpeg], dtype=object)}, spec)
    expected = preprocess_bgr(decode_jpeg(jpeg), bundle.manifest.input)
    assert list(feeds) == ["image"] and feeds["image"].shape == (2, *expected.shape[1:])
    np.testing.assert_array_equal(feeds["image"][1:], expected)
    tail = ort.InferenceSession(str(out / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    full = ort.InferenceSession(str(bundle.path(bundle.manifest.full_model)), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(tail.run(None, feeds)[0][:1], full.run(None, {"image": expected})[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="not a decodable JPEG"):
        triton_python_model.feeds_of({"image_jpeg": np.array([b"nope"], dtype=object)}, spec)


def test_unknown_backend_is_named(repo, tmp_path: pathlib.Path) -> None:
    bundle, _, _ = repo
    with pytest.raises(ValueError, match="backend 'tensorrt'; expected one of"):
        export_triton(bundle.root, tmp_path / "x", backend="tensorrt")
    assert not (tmp_path / "x").exists()
