"""Knowledge distillation: an optimized student learns to answer like the original teacher.

The student is fine-tuned with the shared trainer (:mod:`partitioner.training`) on
unlabelled frames: the loss is :func:`~partitioner.training.kd_loss` between the softened
outputs, plus ``feature_weight`` × :func:`~partitioner.training.feature_loss` between the
inputs of the two models' output layers (the penultimate features). When pruning changed
their width, a linear adapter (trained alongside, then dropped) maps the student's to the
teacher's, as in FitNets. Every frame is also used mirrored left-right, and the teacher's
answers are computed once, up front — unless ``settings.augment``: then every training batch is
randomly cropped, flipped and colour-jittered (:func:`~partitioner.training.augment_frames`) and the
teacher answers it afresh. With ``validation_frames`` (a stretch of the training camera's footage
that neither trains nor is held out), the student is scored after every epoch by its top-1
disagreement with the teacher there (mean KL / 100 breaks ties) and the best epoch's weights are
kept (early stopping, ``settings.patience``).
"""
from __future__ import annotations

import logging

import torch

from partitioner.optimize.prune import output_layers
from partitioner.optimize.steps import Distill
from partitioner.training import Augment, TrainConfig, TrainReport, augment_frames, feature_loss, kd_loss, train

logger = logging.getLogger(__name__)


class _Penultimate:
    """Captures the input of a model's output layer on every forward pass."""

    def __init__(self, model: torch.nn.Module, example: torch.Tensor) -> None:
        layers = output_layers(model, example)
        if len(layers) != 1:
            raise ValueError(f"feature distillation needs one output layer; found {len(layers)}")
        self.value: torch.Tensor | None = None
        self._handle = layers[0].register_forward_pre_hook(self._keep)

    def _keep(self, _layer: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self.value = inputs[0].flatten(1)

    def close(self) -> None:
        self._handle.remove()


@torch.no_grad()
def _answers(model: torch.nn.Module, frames: torch.Tensor, hook: _Penultimate | None,
             batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    logits, features = [], []
    for first in range(0, int(frames.shape[0]), batch):
        logits.append(model(frames[first : first + batch]))
        if hook is not None and hook.value is not None:
            features.append(hook.value)
    return torch.cat(logits), (torch.cat(features) if features else None)


def teacher_targets(teacher: torch.nn.Module, train_frames: torch.Tensor, heldout_frames: torch.Tensor,
                    settings: Distill, *, threads: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The teacher's logits (and penultimate features when ``settings.feature_weight``) on the frames
    :func:`distill` trains and checks on, to compute once when several students learn from one teacher."""
    teacher.eval()
    hook = _Penultimate(teacher, train_frames[:1]) if settings.feature_weight else None
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _answers(teacher, _all_frames(train_frames, heldout_frames), hook, settings.batch_size)
    finally:
        torch.set_num_threads(old_threads)
        if hook is not None:
            hook.close()


def _all_frames(train_frames: torch.Tensor, heldout_frames: torch.Tensor) -> torch.Tensor:
    return torch.cat([train_frames, train_frames.flip(-1), heldout_frames])


def distill(student: torch.nn.Module, teacher: torch.nn.Module, train_frames: torch.Tensor,
            heldout_frames: torch.Tensor, settings: Distill, *, threads: int = 1, progress: bool = True,
            description: str = "distillation",
            targets: tuple[torch.Tensor, torch.Tensor | None] | None = None,
            validation_frames: torch.Tensor | None = None) -> TrainReport:
    """Fine-tune ``student`` in place to mimic ``teacher`` (frozen) on ``train_frames``; the held-out
    loss in the report is on ``heldout_frames`` (different footage). BatchNorm statistics stay the original's (estimated on
    ImageNet): one scene's frames are too uniform to re-estimate them from. Dropout is off (the student copies
    answers; dropout's noise would be the only loss of a copy), and the optimizer is ``settings.optimizer``."""
    example = train_frames[:1]
    frames = _all_frames(train_frames, heldout_frames)
    n_train = 2 * int(train_frames.shape[0])
    if targets is None:
        targets = teacher_targets(teacher, train_frames, heldout_frames, settings, threads=threads)
    target_logits, target_features = targets
    if target_logits.shape[0] != frames.shape[0] or (settings.feature_weight and target_features is None):
        raise ValueError(f"targets hold {target_logits.shape[0]} frames (features: {target_features is not None}); "
                         f"expected {frames.shape[0]} from teacher_targets with the same settings")
    student_hook = _Penultimate(student, example) if settings.feature_weight else None
    teacher_hook = _Penultimate(teacher, example) if settings.feature_weight and settings.augment else None
    teacher.eval()
    augment, generator = Augment(), torch.Generator().manual_seed(settings.seed)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        adapter = None
        parameters = list(student.parameters())
        if student_hook is not None and target_features is not None:
            with torch.no_grad():
                student.eval()
                student(example)
            assert student_hook.value is not None
            width, target_width = student_hook.value.shape[1], target_features.shape[1]
            if width != target_width:
                torch.manual_seed(settings.seed)
                adapter = torch.nn.Linear(width, target_width, bias=False)
                parameters += list(adapter.parameters())

        def loss_fn(index: torch.Tensor) -> torch.Tensor:
            x, want, want_features = frames[index], target_logits[index], None
            if target_features is not None:
                want_features = target_features[index]
            if settings.augment and student.training:
                x = augment_frames(x, augment, generator)
                with torch.no_grad():
                    want = teacher(x)
                    if teacher_hook is not None:
                        want_features = teacher_hook.value
            logits = student(x)
            loss = kd_loss(logits, want, settings.temperature)
            if student_hook is not None and want_features is not None:
                assert student_hook.value is not None
                feats = student_hook.value if adapter is None else adapter(student_hook.value)
                loss = loss + settings.feature_weight * feature_loss(feats, want_features)
            return loss

        validate = None
        if validation_frames is not None:
            validate = _validator(student, _answers(teacher, validation_frames, None, settings.batch_size)[0],
                                  validation_frames, settings.batch_size)

        config = TrainConfig(seed=settings.seed, max_epochs=settings.epochs, max_seconds=settings.seconds,
                             batch_size=settings.batch_size, learning_rate=settings.learning_rate, threads=threads,
                             progress=progress, freeze_batchnorm=True, freeze_dropout=True,
                             optimizer=settings.optimizer, patience=settings.patience)
        report = train(student, loss_fn, torch.arange(n_train), torch.arange(n_train, int(frames.shape[0])), config,
                       parameters=parameters, description=description, validate=validate)
    finally:
        torch.set_num_threads(old_threads)
        for hook in (student_hook, teacher_hook):
            if hook is not None:
                hook.close()
    logger.info("%s: held-out KD loss %.4g after %d epochs (%s)", description, report.heldout_loss, report.epochs,
                report.stopped_by)
    return report


def _validator(student: torch.nn.Module, teacher_logits: torch.Tensor, frames: torch.Tensor, batch: int):  # noqa: ANN202
    """A score of ``student`` on ``frames`` (lower is better): the fraction of frames whose top-1 class differs
    from the teacher's, plus the mean KL(teacher ‖ student) / 100 to break ties."""
    teacher_log_p = teacher_logits.log_softmax(-1)

    def score() -> float:
        logits = _answers(student, frames, None, batch)[0]
        log_p = logits.log_softmax(-1)
        disagree = float((log_p.argmax(-1) != teacher_log_p.argmax(-1)).float().mean())
        kl = float((teacher_log_p.exp() * (teacher_log_p - log_p)).sum(-1).mean())
        return disagree + kl / 100.0

    return score
