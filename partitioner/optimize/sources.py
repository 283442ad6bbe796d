"""Where ``optimize`` gets its model and its footage.

A model is a built-in name (:data:`BUILTIN_MODELS`: built in PyTorch, every step applies)
or an ONNX file (low-rank steps only). Training frames come from one source (default: the
sample video bikes.mp4) and held-out frames from other footage (default: the other sample
videos), both preprocessed as ``partition`` would for the model (ImageNet defaults of
:class:`~partitioner.config.PartitionConfig`). :func:`same_camera_footage` instead splits one
video in time: an early stretch trains, a later disjoint stretch (after a gap) is held out.
"""
from __future__ import annotations

import os
import pathlib
from typing import Callable

from partitioner import calibration
from partitioner.optimize.run import Footage, Source
from protos import bundle_pb2


def _mobilenet_v2():  # noqa: ANN202 - torch.nn.Module
    from partitioner import samples
    from partitioner.models.mobilenet_v2 import mobilenet_v2

    return mobilenet_v2(samples.mobilenet_v2_weights_path())


#: Built-in models by name: a builder returning the module in eval mode, and its input shape.
BUILTIN_MODELS: dict[str, tuple[Callable[[], object], tuple[int, ...]]] = {
    "mobilenet_v2": (_mobilenet_v2, (1, 3, 224, 224)),
}


def load_source(model: str) -> Source:
    """A built-in model by name, or an ONNX file by path (raises naming the value otherwise)."""
    if model in BUILTIN_MODELS:
        from partitioner.optimize.run import export

        build, shape = BUILTIN_MODELS[model]
        return Source(name=model, model=export(build(), shape), build=build, input_shape=shape)
    path = pathlib.Path(model)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        raise ValueError(f"model {model!r} is neither a built-in model ({', '.join(BUILTIN_MODELS)}) "
                         "nor an existing .onnx file")
    from partitioner.loading import load_model

    return Source(name=path.name, model=load_model(path))


def input_spec(source: Source) -> bundle_pb2.InputSpec:
    """The preprocessing ``partition`` would record for this model with its defaults."""
    from partitioner import assemble
    from partitioner.config import PartitionConfig

    return assemble.input_spec(source.model, PartitionConfig(model=source.name, out_dir=pathlib.Path("unused")))


def gather_footage(spec: bundle_pb2.InputSpec, *, train_source: str | os.PathLike[str] | None = None,
                   train_frames: int = 250, heldout_source: str | os.PathLike[str] | None = None,
                   heldout_frames: int = 100) -> Footage:
    """Training frames from ``train_source`` (default bikes.mp4) and held-out frames from ``heldout_source``
    (default: the other sample videos); raises :class:`CalibrationError` when they are the same file."""
    from partitioner.training import frames_tensor
    from protos.preprocess import preprocess_bgr

    train_path = pathlib.Path(train_source) if train_source is not None else calibration.default_calibration_path()
    train = frames_tensor(train_path, count=train_frames, size_hw=(int(spec.height_px), int(spec.width_px)),
                          preprocess=lambda frame: preprocess_bgr(frame, spec))
    heldout = calibration.gather_frames(train_path, spec, calibration_frames=1, evaluation_frames=heldout_frames,
                                        evaluation_source=heldout_source)
    return Footage(spec=spec, train=train, train_sources=(str(train_path),), heldout=heldout)


def same_camera_footage(spec: bundle_pb2.InputSpec, video: str | os.PathLike[str], *, train_fraction: float = 0.6,
                        gap_fraction: float = 0.1, heldout_frames: int = 100) -> Footage:
    """Training and held-out frames from one camera: the first ``train_fraction`` of ``video``'s frames
    train, the ``gap_fraction`` after them is skipped (so neighbouring frames are not near-copies across the
    split), and up to ``heldout_frames`` frames spread evenly over the rest are held out. The skipped
    stretch is returned as the validation frames (early stopping may judge on them: they neither train
    nor are held out). Raises
    ``ValueError`` naming the fractions when they leave no frame on either side."""
    import numpy as np
    import torch

    if not (0.0 < train_fraction < 1.0 and 0.0 <= gap_fraction and train_fraction + gap_fraction < 1.0):
        raise ValueError(f"train_fraction {train_fraction!r} and gap_fraction {gap_fraction!r} must satisfy "
                         "0 < train_fraction < 1, gap_fraction >= 0 and train_fraction + gap_fraction < 1")
    path = pathlib.Path(video)
    frames = calibration.read_frames(path).frames
    n = len(frames)
    train_end, heldout_start = int(n * train_fraction), int(n * (train_fraction + gap_fraction))
    if train_end < 1 or heldout_start >= n:
        raise ValueError(f"{str(path)!r} has {n} frames: train_fraction {train_fraction!r} and gap_fraction "
                         f"{gap_fraction!r} leave no training or held-out frame")
    train = torch.from_numpy(np.concatenate(calibration.preprocess_frames(frames[:train_end], spec)))
    rest = frames[heldout_start:]
    heldout_bgr = [rest[i] for i in sorted(set(np.linspace(0, len(rest) - 1, min(heldout_frames, len(rest)))
                                               .round().astype(int)))]
    name = spec.tensor.name
    heldout = calibration.FrameFeeds(
        calibration=(), evaluation=tuple({name: x} for x in calibration.preprocess_frames(heldout_bgr, spec)),
        evaluation_bgr=tuple(heldout_bgr), calibration_sources=(f"{path} frames 0-{train_end - 1}",),
        evaluation_sources=(f"{path} frames {heldout_start}-{n - 1} (same camera, {len(heldout_bgr)} spread evenly)",))
    validation, validation_sources = None, ()
    if heldout_start > train_end:
        validation = torch.from_numpy(np.concatenate(calibration.preprocess_frames(frames[train_end:heldout_start],
                                                                                   spec)))
        validation_sources = (f"{path} frames {train_end}-{heldout_start - 1}",)
    return Footage(spec=spec, train=train, train_sources=(f"{path} frames 0-{train_end - 1}",), heldout=heldout,
                   validation=validation, validation_sources=validation_sources)
