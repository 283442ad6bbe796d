"""partitioner.optimize.reconstruct (pruning with least-squares reconstruction of the consumer) and
partitioner.optimize.variants (optimized built-in models by name in ``partition``), on the real
MobileNetV2 and real frames of the sample video."""
from __future__ import annotations

import pathlib

import numpy as np
import onnxruntime as ort
import pytest
import torch

from partitioner import samples
from partitioner.cli import build_partition_config
from partitioner.loading import load_model
from partitioner.optimize import measure, variants
from partitioner.optimize.reconstruct import prune_reconstructed, removal_count, select_and_solve
from partitioner.optimize.run import export
from partitioner.optimize.sources import load_source
from partitioner.optimize.sources import BUILTIN_MODELS
from partitioner.pipeline import run_partition
from partitioner.training import frames_tensor
from protos import bundle as bundle_io
from protos import bundle_pb2
from protos.lineage import lineage_of
from protos.preprocess import preprocess_bgr

SHAPE = (1, 3, 224, 224)


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    spec = bundle_pb2.InputSpec(width_px=224, height_px=224, layout="NCHW", color_order="RGB", resize_shorter_px=256,
                                pixel_scale=1 / 255, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    return frames_tensor(samples.video_path("bikes.mp4"), count=8, size_hw=(224, 224), stride=12,
                         preprocess=lambda f: preprocess_bgr(f, spec))


@pytest.mark.parametrize(("channels", "ratio", "round_to", "expected"), [
    (96, 0.3, 8, 24),    # 28.8 -> 24, a multiple of 8 kept: 72
    (16, 0.05, 8, 0),    # 0.8 channels: nothing (magnitude pruning's round_to turned this into 8 of 16)
    (16, 0.05, 1, 0),
    (960, 0.3, 8, 288),
    (4, 0.99, 1, 3),     # at least one channel kept
])
def test_removal_counts_round_down_to_multiples(channels: int, ratio: float, round_to: int, expected: int) -> None:
    assert removal_count(channels, ratio, round_to) == expected


def test_obs_removes_a_redundant_channel_at_no_cost_and_refits_the_rest() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    x = np.concatenate([x, x[:, :1] * 2.0 - x[:, 1:2]], axis=1)  # channel 4 = 2 x0 - x1: redundant
    w_true = rng.normal(size=(5, 3))
    y = x @ w_true + 0.5  # with a bias
    xb = np.concatenate([x, np.ones((400, 1))], axis=1)
    gram, cross = torch.from_numpy(xb.T @ xb), torch.from_numpy(xb.T @ y)
    removed, w = select_and_solve(gram, cross, 1, damping=1e-9)
    assert len(removed) == 1 and removed[0] in (0, 1, 4)  # any one of the three dependent channels
    kept = [i for i in range(5) if i not in removed] + [5]
    fit = xb[:, kept] @ w[kept].numpy()
    np.testing.assert_allclose(fit, y, atol=1e-5)
    assert np.all(w[removed[0]].numpy() == 0.0)
    with pytest.raises(ValueError, match="cannot remove 5 of 5 channels"):
        select_and_solve(gram, cross, 5)


@pytest.mark.slow
def test_reconstruction_removes_channels_and_its_refit_keeps_the_outputs(frames: torch.Tensor) -> None:
    build, _ = BUILTIN_MODELS["mobilenet_v2"]
    original = build()
    small = torch.nn.functional.interpolate(frames, size=(112, 112), mode="bilinear", align_corners=False)
    calibration, check = small[:6], small[6:]
    refitted, removed_only = build(), build()
    reports = prune_reconstructed(refitted, calibration, 0.3)
    assert [r.consumer for r in reports][:2] == ["features.1.conv.1", "features.2.conv.2"]
    assert len(reports) >= 6 and all(r.kept == r.channels - removal_count(r.channels, 0.3, 8) for r in reports)
    prune_reconstructed(removed_only, calibration, 0.3, refit=False)

    def kl_to_original(model: torch.nn.Module, x: torch.Tensor) -> float:
        with torch.no_grad():
            p, q = original(x).log_softmax(1), model(x).log_softmax(1)
        return float((p.exp() * (p - q)).sum(1).mean())

    # on frames it never saw, the same channels removed with the refit stay far closer to the original
    assert kl_to_original(refitted, check) < 0.5 * kl_to_original(removed_only, check)
    model, original_model = export(refitted, SHAPE), export(original, SHAPE)
    assert measure.count_parameters(model) < measure.count_parameters(original_model)
    assert measure.count_macs(model) < 0.9 * measure.count_macs(original_model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = frames[6:7].numpy()
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0],
                                   refitted(frames[6:7]).numpy(), atol=1e-3)  # the export is the model


@pytest.mark.slow
def test_a_named_variant_resolves_is_cached_and_partitions(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: pathlib.Path) -> None:
    # the registered recipe refits on 75 frames (minutes); the same name with 4 frames builds in seconds
    cheap = variants.Variant(base="mobilenet_v2", prune_ratio=0.3, calibration_frames=4, distill_epochs=1,
                             heldout_frames=8, augment=True, validate=True)
    monkeypatch.setitem(variants.VARIANTS, "mobilenet_v2-p30r", cheap)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="model variant 'mobilenet_v2-p99' is unknown; expected one of"):
        variants.variant_model("mobilenet_v2-p99")

    config, _, _ = build_partition_config(["mobilenet_v2-p30r", "--out", str(tmp_path / "bundle"), "--max-cuts", "2",
                                           "--calibration-frames", "4", "--fidelity-frames", "8",
                                           "--profile-runs", "2", "--no-quantize"])
    report = run_partition(config)
    cached = list((tmp_path / "cache" / "splitinfer" / "variants").glob("mobilenet_v2-p30r-*.onnx"))
    assert len(cached) == 1
    again = variants.variant_model("mobilenet_v2-p30r")  # read back from the cache, not rebuilt
    assert again.SerializeToString() == load_model(cached[0]).SerializeToString()

    manifest = bundle_io.read_bundle(report.bundle.root).manifest
    lineage = lineage_of(manifest)
    assert lineage is not None and lineage.source_model == "mobilenet_v2"
    (step,) = lineage.steps
    assert (step.kind, step.ratio, step.importance) == ("prune", pytest.approx(0.3), "reconstruction")
    original = load_source("mobilenet_v2").model
    assert step.macs < 0.9 * measure.count_macs(original) and step.params < measure.count_parameters(original)
    assert 0.0 <= step.fidelity <= 1.0 and "held-out" in step.reason and step.latency_ms > 0
    assert step.distill_epochs == 1 and step.distill_seconds > 0  # distilled, by epochs
    assert lineage.train_sources == ["bikes.mp4 frames 0-149"]


def test_reconstruction_is_per_layer_only_and_needs_frames() -> None:
    from partitioner.optimize.steps import Prune

    with pytest.raises(ValueError, match="prune scope 'global' is invalid with importance 'reconstruction'"):
        Prune(0.3, scope="global", importance="reconstruction")
    assert Prune(0.3, importance="reconstruction").scope == "per-layer"
    with pytest.raises(ValueError, match=r"calibration frames N x C x H x W; got shape \(0, 3, 8, 8\)"):
        prune_reconstructed(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1)), torch.zeros(0, 3, 8, 8), 0.3)
