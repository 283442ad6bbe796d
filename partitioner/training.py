"""One small trainer for everything the partitioner fine-tunes on unlabelled frames.

Bottlenecks at a cut, early-exit heads and distilled (pruned or factorized) students
all learn the same way: a student mimics a frozen teacher on camera frames that carry
no labels. :func:`train` owns the loop — seeded shuffling, AdamW, an epoch cap and a
wall-clock cap checked after every step, a progress bar with ETA on stderr — and the
caller owns what is learned, through ``loss_fn(batch) -> scalar`` (which runs the
student and whatever teacher it needs). :func:`kd_loss` and :func:`feature_loss` are
the two losses they combine; :func:`frames_tensor` turns a video or an image folder
into the batch of preprocessed frames the loop draws from.

Train and held-out frames are meant to come from different footage: the held-out loss
in :class:`TrainReport` is only honest if the student never saw those frames.

Nothing here reads configuration or writes files. Importing this module imports torch:
import it only where something is trained (like :mod:`partitioner.models.mobilenet_v2`).
"""
from __future__ import annotations

import logging
import math
import pathlib
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from partitioner.calibration import read_frames
from partitioner.errors import CalibrationError

logger = logging.getLogger(__name__)

STOPPED_BY = ("epochs", "time", "patience")


OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class TrainConfig:
    """How long and how to train; invalid values raise ``ValueError`` naming the field and value."""

    seed: int = 0
    max_epochs: int = 20
    max_seconds: float = 600.0  # wall-clock cap; training stops after the step that crosses it
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    threads: int = 1  # torch.set_num_threads while training (restored afterwards)
    progress: bool = True  # progress bar with ETA on stderr (tqdm when installed, else one log line per epoch)
    # Keep BatchNorm layers in eval mode (running statistics frozen) while the rest trains:
    # fine-tuning on a few hundred frames of one scene otherwise drags the statistics towards it.
    freeze_batchnorm: bool = False
    # Keep Dropout layers in eval mode too: when fine-tuning a student to copy a teacher, dropout's noise
    # is all the loss there is at the start.
    freeze_dropout: bool = False
    # "adamw", or "sgd" (with ``momentum``). Adam scales every step to about ``learning_rate`` whatever the
    # gradient's size, so the float noise of a near-zero loss moves every weight: a copy of MobileNetV2
    # distilled from itself fell from 1.00 to 0.65 held-out top-1 agreement in 45 steps at 1e-4.
    # SGD's step is proportional to the gradient and left the copy intact. Fine-tune with "sgd".
    optimizer: str = "adamw"
    momentum: float = 0.9
    # With a ``validate`` callable given to :func:`train`: stop after this many epochs in a row without a
    # better validation score (0: never stop early; the best epoch's weights are restored either way).
    patience: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed {self.seed!r} must be an integer >= 0")
        if isinstance(self.max_epochs, bool) or not isinstance(self.max_epochs, int) or self.max_epochs < 1:
            raise ValueError(f"max_epochs {self.max_epochs!r} must be an integer >= 1")
        if not _positive_finite(self.max_seconds):
            raise ValueError(f"max_seconds {self.max_seconds!r} must be a finite number > 0")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size {self.batch_size!r} must be an integer >= 1")
        if not _positive_finite(self.learning_rate):
            raise ValueError(f"learning_rate {self.learning_rate!r} must be a finite number > 0")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise ValueError(f"weight_decay {self.weight_decay!r} must be a finite number >= 0")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise ValueError(f"threads {self.threads!r} must be an integer >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} must be one of {list(OPTIMIZERS)}")
        if not (isinstance(self.momentum, (int, float)) and 0.0 <= self.momentum < 1.0):
            raise ValueError(f"momentum {self.momentum!r} must be a number in [0, 1)")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 0:
            raise ValueError(f"patience {self.patience!r} must be an integer >= 0")


def _positive_finite(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


@dataclass(frozen=True)
class TrainReport:
    """What a run did. ``train_loss`` is the mean loss of the last (possibly partial) epoch as
    trained; ``heldout_loss`` the mean loss on the held-out frames afterwards, in eval mode;
    ``loss_history`` one mean training loss per epoch run. With validation: ``validation_history``
    the score before training, then one per epoch (lower is better), and ``best_epoch`` whose weights the
    module kept (1-based; 0: no epoch beat the weights as given, which were restored)."""

    epochs: int
    steps: int
    seconds: float
    stopped_by: str  # "epochs" | "time" | "patience"
    train_loss: float
    heldout_loss: float
    loss_history: tuple[float, ...]
    validation_history: tuple[float, ...] = ()
    best_epoch: int = 0


def train(
    module: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    train_inputs: torch.Tensor,
    heldout_inputs: torch.Tensor,
    config: TrainConfig,
    *,
    parameters: Iterable[torch.nn.Parameter] | None = None,
    description: str = "training",
    clock: Callable[[], float] = time.monotonic,
    validate: Callable[[], float] | None = None,
) -> TrainReport:
    """Fine-tune ``parameters`` (default: every parameter of ``module`` that requires grad) to
    minimise ``loss_fn`` over ``train_inputs`` (first dimension = samples) with AdamW.

    Deterministic for a seed: ``torch.manual_seed(config.seed)`` is set first and the order of
    samples comes from a generator of that seed (seed before building the module too if its
    initialisation should repeat). Stops after ``max_epochs`` or after the step at which
    ``clock() - start >= max_seconds``, whichever comes first. ``module`` is left in eval mode.

    ``validate`` (optional): called after every epoch with ``module`` in eval mode and gradients off,
    returns a score on validation data (lower is better; never the held-out data), and once before
    training. The weights of the best-scoring epoch (or the initial ones, if no epoch beats them) are
    restored at the end (early stopping), and training stops after
    ``config.patience`` epochs without improvement when that is > 0.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config is a {type(config).__name__}; expected a TrainConfig")
    _check_inputs("train_inputs", train_inputs)
    _check_inputs("heldout_inputs", heldout_inputs)
    params = [p for p in (module.parameters() if parameters is None else parameters) if p.requires_grad]
    if not params:
        raise ValueError(f"{description}: no trainable parameters (none requires grad); expected at least one")

    old_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    order_rng = torch.Generator().manual_seed(config.seed)
    optimizer: torch.optim.Optimizer
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=config.learning_rate, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    n = int(train_inputs.shape[0])
    steps_per_epoch = math.ceil(n / config.batch_size)
    bar = _progress_bar(config, total=config.max_epochs * steps_per_epoch, description=description)
    history: list[float] = []
    validation: list[float] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    steps = 0
    stopped_by = "epochs"
    start = clock()
    try:
        if validate is not None:  # the weights as given are a candidate too: training must beat them
            validation.append(_validation_score(module, validate, description, -1))
            best = (validation[-1], 0, _copy_state(module))
        _set_train_mode(module, config.freeze_batchnorm, config.freeze_dropout)
        for epoch in range(config.max_epochs):
            order = torch.randperm(n, generator=order_rng)
            total, seen = 0.0, 0
            for first in range(0, n, config.batch_size):
                batch = train_inputs[order[first : first + config.batch_size]]
                loss = loss_fn(batch)
                _check_loss(loss, description, steps)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
                total += float(loss.detach()) * batch.shape[0]
                seen += batch.shape[0]
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{total / seen:.4g}")
                if clock() - start >= config.max_seconds:
                    stopped_by = "time"
                    break
            history.append(total / seen)
            if bar is None and config.progress:
                logger.info("%s: epoch %d/%d, loss %.4g, %.1f s", description, epoch + 1, config.max_epochs,
                            history[-1], clock() - start)
            if validate is not None:
                validation.append(_validation_score(module, validate, description, epoch))
                if best is None or validation[-1] < best[0]:
                    best = (validation[-1], epoch + 1, _copy_state(module))
                _set_train_mode(module, config.freeze_batchnorm, config.freeze_dropout)
                if stopped_by != "time" and 0 < config.patience <= epoch + 1 - best[1]:
                    stopped_by = "patience"
            if stopped_by in ("time", "patience"):
                break
        module.eval()
        if best is not None:
            module.load_state_dict(best[2])
        heldout = _mean_loss(loss_fn, heldout_inputs, config.batch_size)
    finally:
        module.eval()
        if bar is not None:
            bar.close()
        torch.set_num_threads(old_threads)
    seconds = clock() - start
    logger.info("%s: %d epochs, %d steps in %.1f s (stopped by %s); train loss %.4g, held-out loss %.4g",
                description, len(history), steps, seconds, stopped_by, history[-1], heldout)
    return TrainReport(epochs=len(history), steps=steps, seconds=seconds, stopped_by=stopped_by,
                       train_loss=history[-1], heldout_loss=heldout, loss_history=tuple(history),
                       validation_history=tuple(validation), best_epoch=best[1] if best is not None else 0)


def _copy_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _validation_score(module: torch.nn.Module, validate: Callable[[], float], description: str, epoch: int) -> float:
    module.eval()
    with torch.no_grad():
        score = validate()
    if not (isinstance(score, (int, float)) and math.isfinite(score)):
        raise ValueError(f"{description}: validation score {score!r} after epoch {epoch + 1}; "
                         "expected a finite number")
    logger.info("%s: validation score %.4g after epoch %d", description, score, epoch + 1)
    return float(score)


def _check_inputs(name: str, inputs: object) -> None:
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"{name} is a {type(inputs).__name__}; expected a torch.Tensor of samples")
    if inputs.ndim < 1 or inputs.shape[0] == 0:
        raise ValueError(f"{name} has shape {tuple(inputs.shape)}; expected at least one sample in dimension 0")


def _check_loss(loss: object, description: str, step: int) -> None:
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"{description}: loss_fn returned {shape} at step {step}; expected a scalar tensor")
    if not torch.isfinite(loss.detach()):
        raise ValueError(f"{description}: loss is {float(loss.detach())} at step {step}; "
                         "expected a finite value (try a lower learning_rate)")


def _set_train_mode(module: torch.nn.Module, freeze_batchnorm: bool, freeze_dropout: bool = False) -> None:
    module.train()
    for layer in module.modules():
        if freeze_batchnorm and isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.eval()
        if freeze_dropout and isinstance(layer, torch.nn.modules.dropout._DropoutNd):
            layer.eval()


@torch.no_grad()
def _mean_loss(loss_fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, batch_size: int) -> float:
    total = 0.0
    for first in range(0, int(inputs.shape[0]), batch_size):
        batch = inputs[first : first + batch_size]
        total += float(loss_fn(batch)) * batch.shape[0]
    return total / int(inputs.shape[0])


def _progress_bar(config: TrainConfig, *, total: int, description: str):  # noqa: ANN202 - tqdm or None
    if not config.progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=description, unit="step", file=sys.stderr, dynamic_ncols=True, leave=False)


@dataclass(frozen=True)
class Augment:
    """Random changes to a batch of preprocessed frames (N × C × H × W) so a few hundred frames of one
    camera do not teach a student their exact pixels: a crop of ``min_scale``-1 of the frame's area
    (aspect ratio 1/``max_aspect``-``max_aspect`` of the frame's) resized back to the frame's size, a left-right flip half of the time, and a
    contrast/brightness change of up to ``jitter`` (x · (1 ± jitter) ± jitter, in the preprocessed units)."""

    min_scale: float = 0.6
    max_aspect: float = 4 / 3
    flip: bool = True
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not (isinstance(self.min_scale, (int, float)) and 0.0 < self.min_scale <= 1.0):
            raise ValueError(f"augment min_scale {self.min_scale!r} must be a number in (0, 1]")
        if not (isinstance(self.max_aspect, (int, float)) and 1.0 <= self.max_aspect < 10.0):
            raise ValueError(f"augment max_aspect {self.max_aspect!r} must be a number in [1, 10)")
        if not (isinstance(self.jitter, (int, float)) and 0.0 <= self.jitter < 1.0):
            raise ValueError(f"augment jitter {self.jitter!r} must be a number in [0, 1)")


def augment_frames(frames: torch.Tensor, augment: Augment, generator: torch.Generator) -> torch.Tensor:
    """``frames`` changed as ``augment`` says, each frame its own draw from ``generator`` (deterministic
    for a seeded generator); the shape stays."""
    if frames.dim() != 4:
        raise ValueError(f"frames have shape {tuple(frames.shape)}; expected N x C x H x W")
    height, width = int(frames.shape[2]), int(frames.shape[3])
    out = []
    for frame in frames:
        u = torch.rand(7, generator=generator).tolist()
        area = (augment.min_scale + (1.0 - augment.min_scale) * u[0]) * height * width
        aspect = augment.max_aspect ** (2 * u[1] - 1)
        h = min(height, max(1, round(math.sqrt(area / aspect))))
        w = min(width, max(1, round(math.sqrt(area * aspect))))
        top, left = int(u[2] * (height - h + 1)), int(u[3] * (width - w + 1))
        x = frame[None, :, top : top + h, left : left + w]
        if (h, w) != (height, width):
            x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        if augment.flip and u[4] < 0.5:
            x = x.flip(-1)
        if augment.jitter:
            x = x * (1.0 + augment.jitter * (2 * u[5] - 1)) + augment.jitter * (2 * u[6] - 1)
        out.append(x[0])
    return torch.stack(out)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton's distillation loss: KL(teacher ‖ student) of the softened class distributions
    (softmax over the last dimension at ``temperature``), scaled by T² so gradients keep their
    size across temperatures; mean over the other dimensions' samples."""
    if not _positive_finite(temperature):
        raise ValueError(f"temperature {temperature!r} must be a finite number > 0")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits have shape {tuple(student_logits.shape)} but the teacher's are "
                         f"{tuple(teacher_logits.shape)}; expected the same shape")
    classes = student_logits.shape[-1]
    log_p_student = F.log_softmax(student_logits.reshape(-1, classes) / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach().reshape(-1, classes) / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * (temperature * temperature)


def feature_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Mean squared error divided by the teacher features' mean square: 0 is a perfect copy,
    1 is as far off as predicting zeros, whatever the features' scale."""
    if student_features.shape != teacher_features.shape:
        raise ValueError(f"student features have shape {tuple(student_features.shape)} but the teacher's are "
                         f"{tuple(teacher_features.shape)}; expected the same shape")
    target = teacher_features.detach()
    return F.mse_loss(student_features, target) / target.pow(2).mean().clamp_min(1e-12)


def frames_tensor(
    source: str | pathlib.Path,
    *,
    count: int,
    size_hw: tuple[int, int],
    preprocess: Callable[[np.ndarray], np.ndarray],
    stride: int = 1,
    start: int = 0,
) -> torch.Tensor:
    """Up to ``count`` unlabelled frames of a video file or an image folder (sorted by name):
    frames ``start``, ``start + stride``, ... each passed through ``preprocess`` (an HxWx3 uint8
    BGR frame -> the model's input, with or without a batch dimension of one — e.g. the
    bundle's :func:`protos.preprocess.preprocess_bgr`), stacked on dimension 0.

    ``size_hw`` is the model's input height and width; a preprocessed frame of any other size
    raises ``ValueError`` naming its shape. Fewer frames than ``count`` are returned (with a
    warning) when the source runs out; none at all raises :class:`CalibrationError`.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count {count!r} must be an integer >= 1")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride {stride!r} must be an integer >= 1")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"start {start!r} must be an integer >= 0")
    if len(size_hw) != 2 or not all(isinstance(v, int) and v > 0 for v in size_hw):
        raise ValueError(f"size_hw {size_hw!r} must be (height, width) in pixels, both > 0")
    read = read_frames(source, max_frames=start + (count - 1) * stride + 1)
    picked = read.frames[start::stride][:count]
    if not picked:
        raise CalibrationError(f"{str(source)!r} has {len(read.frames)} frames; expected more than start={start}")
    if len(picked) < count:
        logger.warning("%s: only %d frames from start=%d stride=%d (asked for %d)", source, len(picked), start,
                       stride, count)
    tensors = [_sample(preprocess(frame), size_hw, source) for frame in picked]
    return torch.from_numpy(np.stack(tensors))


def _sample(x: np.ndarray, size_hw: tuple[int, int], source: str | pathlib.Path) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    height, width = size_hw
    if x.ndim != 3 or not (x.shape[1:] == (height, width) or x.shape[:2] == (height, width)):
        raise ValueError(f"a preprocessed frame of {str(source)!r} has shape {x.shape}; expected CxHxW or HxWxC "
                         f"with H, W = {height}, {width}")
    return x
