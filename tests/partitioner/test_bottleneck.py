"""partitioner.bottleneck: a bottleneck distilled between a frozen head and tail on real video frames
(toy 32x32 frames and a toy network, so the file runs in seconds) learns (its loss falls, also on
random windows of the cached cut with mirrored frames), is deterministic for a seed, starts from a
PCA fit that already beats predicting the mean, and exports to ONNX head/tail pairs whose wire is
the lowbit codec and whose output equals the torch pipeline's."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from partitioner import bottleneck, samples, training
from protos.codec import decode_tensor, encode_tensor

SIZE = 32


def _preprocess(frame: np.ndarray) -> np.ndarray:
    import cv2

    x = cv2.resize(frame, (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return x.transpose(2, 0, 1)[None]


@pytest.fixture(scope="module")
def frames() -> tuple[torch.Tensor, torch.Tensor]:
    train_x = training.frames_tensor(samples.video_path("bikes.mp4"), count=32, size_hw=(SIZE, SIZE),
                                     preprocess=_preprocess, stride=4)
    held_x = training.frames_tensor(samples.video_path("carphone_pristine.mp4"), count=12, size_hw=(SIZE, SIZE),
                                    preprocess=_preprocess, stride=6)
    return train_x, held_x


def _net() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(3)
    head = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 12, 3, padding=1)).eval()
    tail = nn.Sequential(nn.ReLU(), nn.Conv2d(12, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(16, 5)).eval()
    return head, tail


def _train(frames, seed: int = 0, epochs: int = 4, **kwargs):
    head, tail = _net()
    config = training.TrainConfig(seed=seed, max_epochs=epochs, max_seconds=120, batch_size=8, learning_rate=5e-3,
                                  progress=False)
    later = nn.Sequential(*list(tail.children())[:2])
    bn, report = bottleneck.train_bottleneck(head, tail, *frames, channels=4, bits=4, config=config, later=later,
                                             **kwargs)
    return head, tail, bn, report


def test_bottleneck_learns_and_is_deterministic(frames) -> None:
    _, _, _, first = _train(frames)
    _, _, _, again = _train(frames)
    history = first.report.loss_history
    assert len(history) == 4 and first.report.steps == 16  # 3 epochs at the learning rate, 1 at a tenth of it
    assert history[-1] < history[0]
    assert again.report.loss_history == history
    assert (first.train_frames, first.heldout_frames, first.channels, first.bits) == (32, 12, 4, 4)


def test_windows_and_mirrored_frames_learn_and_repeat(frames) -> None:
    _, _, _, first = _train(frames, epochs=3, flip=True, crop=16, kd=False)
    _, _, _, again = _train(frames, epochs=3, flip=True, crop=16, kd=False)
    assert first.train_frames == 64  # the 32 frames and their mirror images
    assert first.report.loss_history[-1] < first.report.loss_history[0]
    assert again.report.loss_history == first.report.loss_history
    assert again.report.heldout_loss == first.report.heldout_loss
    with pytest.raises(ValueError, match="crop 15 must be an even number of cut pixels in 2..32"):
        _train(frames, epochs=1, crop=15)


def test_pca_start_reconstructs_better_than_the_mean(frames) -> None:
    head, _ = _net()
    with torch.no_grad():
        feats = head(frames[0])
    bn = bottleneck.Bottleneck(12, 4, 4)
    explained = bn.init_from(feats)
    assert 0.5 < explained <= 1.0
    with torch.no_grad():
        held = head(frames[1])
        pca_error = training.feature_loss(bn(held), held)
        mean_error = training.feature_loss(held.mean(dim=(0, 2, 3), keepdim=True).expand_as(held), held)
    assert float(pca_error) < float(mean_error)


def test_exported_pair_carries_lowbit_codes_and_matches_torch(frames) -> None:
    head, tail, bn, _ = _train(frames, epochs=2)
    head_m, tail_m = bottleneck.export_bottleneck(head, tail, bn, (1, 3, SIZE, SIZE), input_name="image",
                                                  output_name="logits")
    h = ort.InferenceSession(head_m.SerializeToString(), providers=["CPUExecutionProvider"])
    t = ort.InferenceSession(tail_m.SerializeToString(), providers=["CPUExecutionProvider"])
    held = frames[1]
    for i in range(4):
        x = held[i:i + 1].numpy()
        codes = h.run(None, {"image": x})[0]
        assert codes.dtype == np.uint8 and codes.shape == (1, 4, SIZE // 2, SIZE // 2) and int(codes.max()) <= 15
        raw, params = encode_tensor(codes, packed_bits=4, compression="zstd")
        assert len(raw) <= codes.size // 2 + 16
        logits = t.run(None, {bottleneck.WIRE_TENSOR: decode_tensor(raw, params, codes.shape)})[0]
        with torch.no_grad():
            want = tail(bn.decoder(bn.encode(head(held[i:i + 1])))).numpy()
        np.testing.assert_allclose(logits, want, rtol=1e-3, atol=1e-3)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="bottleneck bits 9 not in 2..8"):
        bottleneck.Bottleneck(12, 4, 9)
    with pytest.raises(ValueError, match="bottleneck channels 0 not in 1..48"):
        bottleneck.Bottleneck(12, 0, 4)
