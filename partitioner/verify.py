"""Verify a head/tail pair against the full model with real ONNX Runtime sessions.

For each frame the full model runs once; the head runs, its outputs feed the tail by
name, and the tail's outputs are compared with the full model's, output by output:

- ``max_abs_error``: the largest absolute difference over every output and frame;
- ``cosine``: the smallest cosine similarity between flattened per-frame outputs;
- ``top1_agreement``: for classifier-like outputs (per frame a vector ``[C]``,
  ``[C, 1, 1]`` with ``C > 1``) the fraction of frames whose argmax matches; an argmax
  that differs only between classes the full model scores equally (within
  ``tie_tolerance``) counts as agreement. Without a classifier-like output it is the
  fraction of frames whose outputs are all within the error tolerance.

Default tolerances (:class:`Tolerances`): an FP32 split runs the same kernels as the
full model except for fusions across the cut, so differences are float rounding:
``max_abs_error <= 1e-4 + 1e-4 * max|full output|`` per output, cosine >= 0.9999 and
top-1 agreement 1.0.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import numpy as np
import onnx

from partitioner.errors import VerificationFailed
from protos import bundle_pb2

logger = logging.getLogger(__name__)

Frame = Union[np.ndarray, Mapping[str, np.ndarray]]
REFERENCE = "full fp32 model"


@dataclass(frozen=True)
class Tolerances:
    """When a split counts as reproducing the full model."""

    atol: float = 1e-4
    rtol: float = 1e-4
    min_cosine: float = 0.9999
    min_top1_agreement: float = 1.0
    tie_tolerance: float = 1e-5


def make_session(model: onnx.ModelProto, *, threads: int = 1):  # -> onnxruntime.InferenceSession
    """An ONNX Runtime CPU session for an in-memory model (default optimizations)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_model(model: onnx.ModelProto, frames: Sequence[Frame], *, threads: int = 1) -> list[dict[str, np.ndarray]]:
    """Outputs of ``model`` for each frame, by output name (reuse as ``reference``)."""
    session = make_session(model, threads=threads)
    return [_run(session, frame) for frame in frames]


def _feeds(session, frame: Frame) -> dict[str, np.ndarray]:
    if isinstance(frame, Mapping):
        return {i.name: np.asarray(frame[i.name]) for i in session.get_inputs()}
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise ValueError(f"the model has inputs {names}; pass each frame as a dict by input name")
    return {inputs[0].name: np.asarray(frame)}


def _run(session, feeds_or_frame: Frame) -> dict[str, np.ndarray]:
    feeds = _feeds(session, feeds_or_frame)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def verify_split(
    full: onnx.ModelProto,
    head: onnx.ModelProto | None,
    tail: onnx.ModelProto | None,
    frames: Sequence[Frame],
    *,
    reference: Sequence[Mapping[str, np.ndarray]] | None = None,
    tolerances: Tolerances = Tolerances(),
    raise_on_failure: bool = False,
    threads: int = 1,
) -> bundle_pb2.Verification:
    """Run head then tail on ``frames`` and compare with the full model (see module docstring).

    ``frames`` are model inputs with a batch dim (an array for a single-input model or a
    dict by input name). ``reference`` holds the full model's outputs from
    :func:`run_model` to avoid recomputing them per cut. With ``raise_on_failure`` a
    failing comparison raises :class:`VerificationFailed` stating which check failed.
    """
    if not frames:
        raise ValueError("verify_split needs at least one frame; got none")
    if head is None and tail is None:
        raise ValueError("head and tail are both None; expected at least one side of the split")
    ref = list(reference) if reference is not None else run_model(full, frames, threads=threads)
    if len(ref) != len(frames):
        raise ValueError(f"reference holds {len(ref)} results for {len(frames)} frames")
    head_session = make_session(head, threads=threads) if head is not None else None
    tail_session = make_session(tail, threads=threads) if tail is not None else None

    max_err, min_cos, agree, reasons = 0.0, 1.0, 0, []
    for k, frame in enumerate(frames):
        values: Frame = frame
        if head_session is not None:
            values = _run(head_session, frame)
        got = _run(tail_session, values) if tail_session is not None else dict(values)
        expected = ref[k]
        missing = sorted(set(expected) - set(got))
        if missing:
            reasons.append(f"frame {k}: split did not produce outputs {missing}")
            continue
        frame_ok, frame_agree = True, None
        for name, want in expected.items():
            have = np.asarray(got[name])
            want = np.asarray(want)
            if have.shape != want.shape:
                reasons.append(f"frame {k}: output {name!r} has shape {have.shape}, full model {want.shape}")
                frame_ok = False
                continue
            a, b = have.astype(np.float64).ravel(), want.astype(np.float64).ravel()
            err = float(np.max(np.abs(a - b))) if a.size else 0.0
            max_err = max(max_err, err)
            limit = tolerances.atol + tolerances.rtol * (float(np.max(np.abs(b))) if b.size else 0.0)
            if err > limit or not np.all(np.isfinite(a)):
                frame_ok = False
                reasons.append(f"frame {k}: output {name!r} max abs error {err:.3g} > {limit:.3g}")
            min_cos = min(min_cos, _cosine(a, b))
            if frame_agree is None and _classifier_like(want):
                frame_agree = _top1_agrees(have, want, tolerances.tie_tolerance)
        agree += int(frame_ok if frame_agree is None else frame_agree)
    n = len(frames)
    top1 = agree / n
    if min_cos < tolerances.min_cosine:
        reasons.append(f"cosine {min_cos:.6f} < {tolerances.min_cosine}")
    if top1 < tolerances.min_top1_agreement:
        reasons.append(f"top-1 agreement {top1:.4f} < {tolerances.min_top1_agreement}")
    result = bundle_pb2.Verification(
        frames=n, max_abs_error=max_err, top1_agreement=top1, cosine=min_cos, passed=not reasons, reference=REFERENCE
    )
    if reasons:
        message = "; ".join(reasons[:3]) + (f" (+{len(reasons) - 3} more)" if len(reasons) > 3 else "")
        logger.info("verification failed: %s", message)
        if raise_on_failure:
            raise VerificationFailed(f"split does not reproduce the {REFERENCE}: {message}")
    return result


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _classifier_like(value: np.ndarray) -> bool:
    """Per frame a vector of C > 1 scores: [B, C] or [B, C, 1, 1]."""
    if value.ndim < 2 or not np.issubdtype(value.dtype, np.floating):
        return False
    per_frame = value.shape[1:]
    return per_frame[0] > 1 and all(d == 1 for d in per_frame[1:])


def _top1_agrees(have: np.ndarray, want: np.ndarray, tie_tolerance: float) -> bool:
    """Every batch row's argmax matches, or lands on a class tied for the top in ``want``."""
    h = have.reshape(have.shape[0], -1).astype(np.float64)
    w = want.reshape(want.shape[0], -1).astype(np.float64)
    for row_h, row_w in zip(h, w):
        top = float(row_w.max())
        if row_w[int(row_h.argmax())] < top - tie_tolerance * max(1.0, abs(top)):
            return False
    return True
