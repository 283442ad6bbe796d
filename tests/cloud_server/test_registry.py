"""The model registry (bundles + Triton repository) and the session pool's LRU budget."""

from __future__ import annotations

import pathlib
import shutil

import numpy as np
import pytest

from cloud_server.errors import ModelNotFound, ModelUnavailable
from cloud_server.registry import RegistryError, load_registry
from cloud_server.sessions import SessionPool, resolve_providers
from protos import bundle as bundle_io

from .conftest import FC_B, FC_W, MODEL_NAME, REPO_MODEL, write_tiny_repository


def test_one_model_per_cut_with_a_tail(tiny_bundle: bundle_io.Bundle, tiny_repository: pathlib.Path) -> None:
    registry = load_registry((tiny_bundle.root,), tiny_repository)
    version = "1"  # integer, as Triton and export-triton; the bundle is named by bundle_hash
    assert registry.names() == [f"{MODEL_NAME}.feat", f"{MODEL_NAME}.input", f"{MODEL_NAME}.pool", REPO_MODEL]
    pool = registry.get(f"{MODEL_NAME}.pool")
    assert pool.version == version and pool.batched
    assert pool.bundle_hash == tiny_bundle.content_hash[:12] == bundle_io.bundle_hash(tiny_bundle.manifest)
    assert [(s.name, s.datatype, s.shape) for s in pool.inputs] == [("pooled", "FP32", (-1, 8))]
    assert [(s.name, s.shape) for s in pool.outputs] == [("logits", (-1, 5))]
    inp = registry.get(f"{MODEL_NAME}.input")
    assert inp.feed_names == ("image",) and inp.input_spec is not None
    assert inp.inputs[0].datatype == "BYTES"
    repo = registry.get(REPO_MODEL, "1")
    assert repo.inputs[0].shape == (-1, 8) and repo.outputs[0].shape == (-1, 5)
    assert repo.bundle_hash == ""  # a plain Triton model carries none


def test_unknown_model_and_version_name_the_available_ones(tiny_bundle: bundle_io.Bundle) -> None:
    registry = load_registry((tiny_bundle.root,))
    with pytest.raises(ModelNotFound, match=r"'resnet\.feat' is not served; available models: tiny_net\.feat, tiny_net\.input"):
        registry.get("resnet.feat")
    with pytest.raises(ModelNotFound, match=r"no version 'abc'; available versions: 1$"):
        registry.get(f"{MODEL_NAME}.pool", "abc")


def test_two_bundles_of_one_model_are_refused_naming_both(tiny_bundle: bundle_io.Bundle,
                                                          tmp_path: pathlib.Path) -> None:
    """Every bundle's tails are version 1, so a second bundle of the same model would be ambiguous."""
    copy = pathlib.Path(shutil.copytree(tiny_bundle.root, tmp_path / "copy"))
    with pytest.raises(RegistryError, match=r"model 'tiny_net\.\w+' version '1' is served twice") as info:
        load_registry((tiny_bundle.root, copy))
    assert str(tiny_bundle.root) in str(info.value) and str(copy) in str(info.value)


@pytest.mark.parametrize("name", ["../tiny_net", "tiny_net.feat/../../etc", "/etc/passwd", "tiny_net.feat\x00"])
def test_model_names_are_never_paths(tiny_bundle: bundle_io.Bundle, tiny_repository: pathlib.Path, name: str) -> None:
    registry = load_registry((tiny_bundle.root,), tiny_repository)
    with pytest.raises(ModelNotFound):
        registry.get(name)
    with pytest.raises(ModelNotFound):
        registry.load(name)


def test_load_and_unload(tiny_bundle: bundle_io.Bundle, tmp_path: pathlib.Path) -> None:
    repo = write_tiny_repository(tmp_path / "repo")
    registry = load_registry((tiny_bundle.root,), repo)
    registry.unload(REPO_MODEL)
    with pytest.raises(ModelUnavailable, match="unloaded"):
        registry.get(REPO_MODEL)
    assert (REPO_MODEL, "1", "UNAVAILABLE", "unloaded") in registry.index()
    assert all(row[0] != REPO_MODEL for row in registry.index(ready_only=True))
    # a model copied into the repository after start-up appears on load
    shutil.copytree(repo / REPO_MODEL, repo / "copy")
    (repo / "copy" / "config.pbtxt").write_text(
        (repo / REPO_MODEL / "config.pbtxt").read_text().replace(f'"{REPO_MODEL}"', '"copy"')
    )
    registry.load("copy")
    assert registry.get("copy").version == "1"
    registry.load(REPO_MODEL)
    assert registry.get(REPO_MODEL).name == REPO_MODEL


def test_bad_repository_config_is_named(tmp_path: pathlib.Path) -> None:
    repo = write_tiny_repository(tmp_path / "repo")
    config = repo / REPO_MODEL / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size", "max_bach_size"))
    with pytest.raises(RegistryError, match="config.pbtxt.*max_bach_size"):
        load_registry((), repo)


def test_full_triton_config_fields_are_accepted(tmp_path: pathlib.Path) -> None:
    repo = write_tiny_repository(tmp_path / "repo")
    config = repo / REPO_MODEL / "config.pbtxt"
    config.write_text(config.read_text() + "version_policy { latest { num_versions: 1 } }\n")
    registry = load_registry((), repo)
    assert registry.get(REPO_MODEL).inputs[0].shape == (-1, 8)


def test_broken_bundle_is_refused(tiny_bundle: bundle_io.Bundle, tmp_path: pathlib.Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle.root, copy)
    (copy / "cloud" / "tails" / "pool.onnx").write_bytes(b"tampered")
    with pytest.raises(RegistryError, match="pool.onnx.*sha256 mismatch"):
        load_registry((copy,))


def test_sessions_load_on_demand_and_evict_lru(tiny_bundle: bundle_io.Bundle, tiny_repository: pathlib.Path) -> None:
    registry = load_registry((tiny_bundle.root,), tiny_repository)
    pool_model = registry.get(f"{MODEL_NAME}.pool")
    repo_model = registry.get(REPO_MODEL)
    feat_model = registry.get(f"{MODEL_NAME}.feat")
    # budget for about two of these small tails
    budget_bytes = int((pool_model.size_bytes + feat_model.size_bytes) * 3.0) + 16
    sessions = SessionPool(memory_budget_mb=1, memory_factor=3.0)
    sessions.memory_budget_bytes = budget_bytes  # sub-megabyte budget for tiny models
    assert sessions.loaded() == []
    s1 = sessions.get(pool_model)
    assert sessions.get(pool_model) is s1, "second get must hit the cache"
    sessions.get(repo_model)
    assert sessions.loaded() == [pool_model.key, repo_model.key]
    sessions.get(pool_model)  # pool is now the most recently used
    sessions.get(feat_model)
    assert repo_model.key not in sessions.loaded(), "the least recently used session is evicted"
    assert pool_model.key in sessions.loaded() and feat_model.key in sessions.loaded()
    assert sessions.evictions >= 1
    x = np.ones((1, 8), np.float32)
    np.testing.assert_allclose(s1.run(["logits"], {"pooled": x})[0], x @ FC_W.T + FC_B, rtol=1e-5)


def test_auto_providers_prefer_gpu_when_present() -> None:
    assert resolve_providers(("auto",), ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert resolve_providers(("auto",), ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(("auto",), ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(("cpu",), ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_partitioner_triton_export_is_servable(tiny_bundle: bundle_io.Bundle, tmp_path: pathlib.Path) -> None:
    """`splitinfer export-triton` output loads as a repository: same signatures, version '1'."""
    triton_export = pytest.importorskip("partitioner.triton_export")
    triton_export.export_triton(tiny_bundle.root, tmp_path / "repo")
    registry = load_registry((), tmp_path / "repo")
    bundle_registry = load_registry((tiny_bundle.root,))
    for cut in ("feat", "pool"):
        exported = registry.get(f"{MODEL_NAME}.{cut}", "1")
        served = bundle_registry.get(f"{MODEL_NAME}.{cut}")
        assert exported.inputs == served.inputs and exported.outputs == served.outputs
        # the hash export-triton writes into config.pbtxt is the one our server reports for it
        assert exported.bundle_hash == served.bundle_hash == bundle_io.bundle_hash(tiny_bundle.manifest)
    sessions = SessionPool(memory_budget_mb=64)
    x = np.ones((2, 8), np.float32)
    got = sessions.get(registry.get(f"{MODEL_NAME}.pool")).run(["logits"], {"pooled": x})[0]
    np.testing.assert_allclose(got, x @ FC_W.T + FC_B, rtol=1e-5)
