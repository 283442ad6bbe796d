"""partitioner.training: the shared trainer, its losses and the frame loader, on real data."""
from __future__ import annotations

import pathlib
import shutil

import numpy as np
import pytest
import torch

from partitioner import samples
from partitioner.errors import CalibrationError
from partitioner.training import Augment, TrainConfig, augment_frames, feature_loss, frames_tensor, kd_loss, train
from protos import bundle_pb2
from protos.preprocess import preprocess_bgr

SPEC = bundle_pb2.InputSpec(
    tensor=bundle_pb2.TensorSpec(name="input", datatype="FP32", shape=[-1, 3, 32, 32]),
    width_px=32, height_px=32, layout="NCHW", color_order="RGB", resize_shorter_px=36,
    pixel_scale=1 / 255, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], jpeg_quality=90,
)


def _preprocess(frame: np.ndarray) -> np.ndarray:
    return preprocess_bgr(frame, SPEC)


def _teacher() -> torch.nn.Module:
    torch.manual_seed(123)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5),
    ).eval()


def _student(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5),
    )


@pytest.fixture(scope="module")
def video_frames() -> tuple[torch.Tensor, torch.Tensor]:
    """Train frames from bikes.mp4, held-out frames from carphone_pristine.mp4 (different footage)."""
    train_x = frames_tensor(samples.video_path("bikes.mp4"), count=24, size_hw=(32, 32), preprocess=_preprocess,
                            stride=5)
    heldout_x = frames_tensor(samples.video_path("carphone_pristine.mp4"), count=8, size_hw=(32, 32),
                              preprocess=_preprocess, stride=10)
    return train_x, heldout_x


def _distill(seed: int, frames: tuple[torch.Tensor, torch.Tensor], **config):
    teacher, student = _teacher(), _student(seed)

    def loss_fn(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(batch)
        return kd_loss(student(batch), target, temperature=2.0)

    cfg = TrainConfig(seed=seed, progress=False, **{"max_epochs": 15, "batch_size": 8, "learning_rate": 1e-2,
                                                      **config})
    report = train(student, loss_fn, frames[0], frames[1], cfg, description="toy distillation")
    return student, report


def test_distillation_converges_and_repeats_exactly_for_a_seed(video_frames) -> None:
    student_a, report_a = _distill(7, video_frames)
    student_b, report_b = _distill(7, video_frames)
    assert report_a.stopped_by == "epochs" and report_a.epochs == 15 and report_a.steps == 15 * 3
    assert report_a.loss_history[-1] < 0.5 * report_a.loss_history[0]  # it learned something
    assert report_a.train_loss == report_a.loss_history[-1]
    assert np.isfinite(report_a.heldout_loss)
    assert report_a.loss_history == report_b.loss_history
    assert report_a.heldout_loss == report_b.heldout_loss
    for a, b in zip(student_a.state_dict().values(), student_b.state_dict().values()):
        assert torch.equal(a, b)
    assert not student_a.training  # left in eval mode

    _, report_c = _distill(8, video_frames)
    assert report_c.loss_history != report_a.loss_history


def test_time_cap_stops_after_the_step_that_crosses_it(video_frames) -> None:
    ticks = iter(range(1000))  # a clock that advances one second per reading

    teacher, student = _teacher(), _student(0)

    def loss_fn(batch: torch.Tensor) -> torch.Tensor:
        return kd_loss(student(batch), teacher(batch))

    cfg = TrainConfig(max_epochs=50, max_seconds=4.5, batch_size=8, progress=False)
    report = train(student, loss_fn, video_frames[0], video_frames[1], cfg, clock=lambda: float(next(ticks)))
    # start reads 0; the checks after steps 1..5 read 1..5, and 5 >= 4.5 stops it.
    assert report.stopped_by == "time"
    assert report.steps == 5
    assert report.epochs == 2  # 3 steps per epoch: one full epoch and a partial one
    assert len(report.loss_history) == 2


def test_only_the_given_parameters_train_and_batchnorm_can_stay_frozen(video_frames) -> None:
    teacher, student = _teacher(), _student(1)
    before = {k: v.clone() for k, v in student.state_dict().items()}

    def loss_fn(batch: torch.Tensor) -> torch.Tensor:
        return kd_loss(student(batch), teacher(batch))

    cfg = TrainConfig(max_epochs=2, batch_size=8, progress=False, freeze_batchnorm=True)
    train(student, loss_fn, video_frames[0], video_frames[1], cfg, parameters=student[5].parameters())
    after = student.state_dict()
    assert not torch.equal(before["5.weight"], after["5.weight"])
    for name in ("0.weight", "1.weight", "1.running_mean", "1.running_var"):
        assert torch.equal(before[name], after[name]), name


@pytest.mark.parametrize(("field", "value"), [
    ("seed", -1), ("max_epochs", 0), ("max_seconds", 0.0), ("max_seconds", float("nan")), ("batch_size", 0),
    ("learning_rate", -1e-3), ("weight_decay", -0.1), ("threads", 0), ("max_epochs", 2.5), ("patience", -1),
])
def test_bad_config_values_are_rejected_naming_them(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"{field} {value!r}"):
        TrainConfig(**{field: value})


def test_bad_training_inputs_are_rejected(video_frames) -> None:
    student = _student(0)
    cfg = TrainConfig(max_epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"heldout_inputs has shape \(0, 3, 32, 32\)"):
        train(student, lambda b: student(b).sum(), video_frames[0], video_frames[0][:0], cfg)
    with pytest.raises(ValueError, match=r"loss_fn returned \(16, 5\) at step 0"):
        train(student, lambda b: student(b), video_frames[0], video_frames[1], cfg)
    frozen = _student(0).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(frozen, lambda b: frozen(b).sum(), video_frames[0], video_frames[1], cfg)


def test_losses() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    assert float(kd_loss(logits, logits)) == pytest.approx(0.0, abs=1e-7)
    assert float(kd_loss(logits, logits.flip(1))) > 0.1
    with pytest.raises(ValueError, match="temperature 0"):
        kd_loss(logits, logits, temperature=0)
    with pytest.raises(ValueError, match=r"shape \(2, 3\) but the teacher's are \(2, 2\)"):
        kd_loss(logits, logits[:, :2])
    features = torch.randn(2, 4, 3, 3)
    assert float(feature_loss(features, features)) == 0.0
    assert float(feature_loss(torch.zeros_like(features), features)) == pytest.approx(1.0)
    assert float(feature_loss(torch.zeros_like(features), features * 100)) == pytest.approx(1.0)


def test_frames_tensor_reads_a_video_with_stride_and_start() -> None:
    video = samples.video_path("bikes.mp4")
    every = frames_tensor(video, count=6, size_hw=(32, 32), preprocess=_preprocess)
    strided = frames_tensor(video, count=2, size_hw=(32, 32), preprocess=_preprocess, stride=2, start=1)
    assert every.shape == (6, 3, 32, 32) and every.dtype == torch.float32
    assert torch.equal(strided[0], every[1]) and torch.equal(strided[1], every[3])
    assert not torch.equal(every[0], every[5])


def test_frames_tensor_reads_an_image_folder(tmp_path: pathlib.Path) -> None:
    for name in ("chelsea", "coffee", "astronaut"):
        shutil.copy(samples.image_path(name), tmp_path / f"{name}.png")
    x = frames_tensor(tmp_path, count=10, size_hw=(32, 32), preprocess=_preprocess)
    assert x.shape == (3, 3, 32, 32)  # the folder runs out: all three photos, in name order
    astronaut = frames_tensor(tmp_path, count=1, size_hw=(32, 32), preprocess=_preprocess)
    assert torch.equal(astronaut[0], x[0])


def test_frames_tensor_rejects_bad_arguments(tmp_path: pathlib.Path) -> None:
    video = samples.video_path("bikes.mp4")
    with pytest.raises(ValueError, match=r"shape \(3, 32, 32\); expected CxHxW or HxWxC with H, W = 64, 64"):
        frames_tensor(video, count=1, size_hw=(64, 64), preprocess=_preprocess)
    with pytest.raises(ValueError, match="count 0"):
        frames_tensor(video, count=0, size_hw=(32, 32), preprocess=_preprocess)
    with pytest.raises(ValueError, match="stride -2"):
        frames_tensor(video, count=1, size_hw=(32, 32), preprocess=_preprocess, stride=-2)
    with pytest.raises(CalibrationError, match="holds no images"):
        frames_tensor(tmp_path, count=1, size_hw=(32, 32), preprocess=_preprocess)


def test_validation_keeps_the_best_epoch_and_patience_stops(video_frames) -> None:
    """The validation score is scripted: before training 0, then epoch 1 best (-1), then worse: patience 2
    stops after epoch 3 with epoch 1's weights restored. When no epoch beats the start, the start is kept."""
    teacher, student = _teacher(), _student(0)
    snapshots: list[torch.Tensor] = []

    def loss_fn(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(batch)
        return kd_loss(student(batch), target, temperature=2.0)

    def validate() -> float:
        assert not student.training and not torch.is_grad_enabled()
        snapshots.append(student[5].weight.detach().clone())
        return [0.0, -1.0, 4.0, 9.0][len(snapshots) - 1]

    cfg = TrainConfig(seed=0, max_epochs=10, batch_size=8, learning_rate=1e-2, progress=False, patience=2)
    report = train(student, loss_fn, video_frames[0], video_frames[1], cfg, validate=validate)
    assert report.stopped_by == "patience" and report.epochs == 3 and report.best_epoch == 1
    assert report.validation_history == (0.0, -1.0, 4.0, 9.0)
    assert torch.equal(student[5].weight, snapshots[1]) and not torch.equal(snapshots[1], snapshots[3])

    start = _student(0)
    student = _student(0)
    report = train(student, loss_fn, video_frames[0], video_frames[1], cfg, validate=lambda: 1.0)
    assert report.best_epoch == 0 and report.epochs == 2 and report.validation_history == (1.0, 1.0, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), student.state_dict().values()))
    with pytest.raises(ValueError, match="validation score nan after epoch 0"):
        train(_student(0), loss_fn, video_frames[0], video_frames[1], cfg, validate=lambda: float("nan"))


def test_augment_frames_is_seeded_and_changes_frames(video_frames) -> None:
    frames = video_frames[0][:6]
    a = augment_frames(frames, Augment(), torch.Generator().manual_seed(1))
    b = augment_frames(frames, Augment(), torch.Generator().manual_seed(1))
    c = augment_frames(frames, Augment(), torch.Generator().manual_seed(2))
    assert a.shape == frames.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert all(not torch.equal(a[i], frames[i]) for i in range(6))
    same = augment_frames(frames, Augment(min_scale=1.0, max_aspect=1.0, flip=False, jitter=0.0), torch.Generator().manual_seed(1))
    assert torch.equal(same, frames)
    with pytest.raises(ValueError, match="min_scale 0"):
        Augment(min_scale=0)
    with pytest.raises(ValueError, match=r"shape \(3, 32, 32\)"):
        augment_frames(frames[0], Augment(), torch.Generator())
