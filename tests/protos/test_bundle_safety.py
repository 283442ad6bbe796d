"""Bundles from untrusted places: a listed file that is a symlink out of the bundle is refused, and a
manifest that is not UTF-8 raises a ManifestError naming the file (not a UnicodeDecodeError)."""
from __future__ import annotations

import pathlib
import shutil

import pytest

from protos import bundle as bundle_io
from protos.errors import ManifestError
from tests.protos.test_bundle import write_sample_bundle


@pytest.fixture
def sample(tmp_path: pathlib.Path) -> pathlib.Path:
    write_sample_bundle(tmp_path / "bundle")
    return tmp_path / "bundle"


def _tail(root: pathlib.Path) -> tuple[str, pathlib.Path]:
    bundle = bundle_io.read_bundle(root)
    ref = bundle.cut("conv1").tail
    return ref.path, bundle.path(ref)


def test_symlink_to_a_file_outside_the_bundle_is_refused(sample: pathlib.Path, tmp_path: pathlib.Path) -> None:
    rel, tail = _tail(sample)
    outside = tmp_path / "elsewhere.onnx"
    shutil.copyfile(tail, outside)  # same bytes, so only the location can refuse it
    tail.unlink()
    tail.symlink_to(outside)
    with pytest.raises(ManifestError) as info:
        bundle_io.read_bundle(sample)
    message = str(info.value)
    assert "manifest.json" in message and repr(rel) in message and "outside the bundle" in message
    assert str(outside) in message


def test_symlinked_folder_leading_out_is_refused(sample: pathlib.Path, tmp_path: pathlib.Path) -> None:
    _, tail = _tail(sample)
    moved = tmp_path / "moved_cloud"
    shutil.move(str(tail.parent), moved)
    tail.parent.symlink_to(moved, target_is_directory=True)
    with pytest.raises(ManifestError, match="outside the bundle"):
        bundle_io.read_bundle(sample)


def test_symlink_inside_the_bundle_is_accepted(sample: pathlib.Path) -> None:
    _, tail = _tail(sample)
    kept = tail.with_name("kept_copy.onnx")
    shutil.copyfile(tail, kept)
    tail.unlink()
    tail.symlink_to(kept.name)
    assert bundle_io.read_bundle(sample).cut("conv1").tail.path


def test_bundle_root_reached_through_a_symlink_is_accepted(sample: pathlib.Path, tmp_path: pathlib.Path) -> None:
    link = tmp_path / "current"
    link.symlink_to(sample, target_is_directory=True)
    assert bundle_io.read_bundle(link).name == bundle_io.read_bundle(sample).name


def test_non_utf8_manifest_names_the_file(sample: pathlib.Path) -> None:
    manifest = sample / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"tiny_net"', b'"tiny_\xff\xfenet"', 1))
    with pytest.raises(ManifestError) as info:
        bundle_io.read_bundle(sample)
    assert str(manifest) in str(info.value) and "not UTF-8" in str(info.value)
