"""Verify a head/tail pair against the full model with real ONNX Runtime sessions: the
FP32 exactness check every cut passes before it may ship (the measures themselves are
:mod:`partitioner.evaluation`'s).

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
from typing import Mapping, Sequence

import numpy as np
import onnx

from partitioner.errors import VerificationFailed
from partitioner.evaluation import Frame, is_classifier_like, make_session, run_model, run_session, top1_agrees
from partitioner.fidelity import cosine
from protos import bundle_pb2

logger = logging.getLogger(__name__)

REFERENCE = "full fp32 model"


@dataclass(frozen=True)
class Tolerances:
    """When a split counts as reproducing the full model."""

    atol: float = 1e-4
    rtol: float = 1e-4
    min_cosine: float = 0.9999
    min_top1_agreement: float = 1.0
    tie_tolerance: float = 1e-5


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
    head_session = make_session(head, threads=max(1, threads)) if head is not None else None
    tail_session = make_session(tail, threads=max(1, threads)) if tail is not None else None

    max_err, min_cos, agree, reasons = 0.0, 1.0, 0, []
    for k, frame in enumerate(frames):
        values: Frame = frame
        if head_session is not None:
            values = run_session(head_session, frame)
        got = run_session(tail_session, values) if tail_session is not None else dict(values)
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
            min_cos = min(min_cos, cosine(a, b))
            if frame_agree is None and is_classifier_like(want):
                frame_agree = top1_agrees(have, want, tolerances.tie_tolerance)
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
