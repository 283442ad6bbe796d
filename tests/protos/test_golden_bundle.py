"""The committed golden bundle pins the bundle format (regenerate with ``python -m tests.make_golden_bundle``)."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from protos.bundle import Side, read_bundle
from protos.preprocess import preprocess_bgr
from tests.make_golden_bundle import GOLDEN_DIR, differing_files, write_golden_bundle


def test_committed_golden_bundle_reads_on_every_side() -> None:
    for side in (Side.ALL, Side.EDGE, Side.CLOUD):
        bundle = read_bundle(GOLDEN_DIR, side)
        assert bundle.cut_ids == ["input", "feat", "pooled", "output"]
        assert bundle.name == "golden_net"


def test_a_fresh_build_matches_the_committed_copy_byte_for_byte(tmp_path: pathlib.Path) -> None:
    fresh = write_golden_bundle(tmp_path / "golden_bundle")
    assert differing_files(GOLDEN_DIR, fresh.root) == [], "run: python -m tests.make_golden_bundle"
    assert fresh.content_hash == read_bundle(GOLDEN_DIR).content_hash


@pytest.mark.parametrize("cut_id", ["feat", "pooled"])
def test_golden_heads_and_tails_reproduce_the_full_model_on_a_real_photo(cut_id: str) -> None:
    import cv2
    import onnxruntime as ort

    from partitioner import samples

    bundle = read_bundle(GOLDEN_DIR)
    image = cv2.imread(str(samples.available_images()[0]), cv2.IMREAD_COLOR)
    x = preprocess_bgr(image, bundle.manifest.input)

    def session(ref):  # type: ignore[no-untyped-def]
        return ort.InferenceSession(str(bundle.path(ref)), providers=["CPUExecutionProvider"])

    full = session(bundle.manifest.full_model).run(None, {"image": x})[0]
    cut = bundle.cut(cut_id)
    activation = session(cut.head).run(None, {"image": x})[0]
    split = session(cut.tail).run(None, {cut.tensors[0].name: activation})[0]
    assert activation.shape[1:] == tuple(cut.tensors[0].shape[1:])
    np.testing.assert_allclose(split, full, rtol=1e-5, atol=1e-5)
