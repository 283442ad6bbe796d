"""Early exits in a bundle (issue 16): reading and checking ``Cut.exit_head`` / ``Cut.early_exit``.

An early exit is a small ONNX model on a cut's activation (the head's outputs) that the
partitioner trained by distillation (:mod:`partitioner.exits`). The edge runs it right
after the head; a frame whose confidence reaches ``threshold`` completes on the device.

* ``classifier``: the exit gives the model's class scores under the model's output name
  (so the edge postprocesses them like the full model's); confidence = top softmax
  probability of those scores.
* ``objectness``: the exit gives one probability that anything is in the frame; a frame
  exits ("nothing here", no detections) when ``1 - probability >= threshold``.

Both fields are present together or not at all; the bundle reader already checks the
file's place (``edge/``) and hash, because ``exit_head`` is one of the manifest's file refs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from protos import bundle_pb2
from protos.bundle import Bundle
from protos.errors import ManifestError

__all__ = ["EXIT_KINDS", "EXITS_DIR", "ExitSpec", "exit_of", "exits_of", "validate_exit"]

EXIT_KINDS = ("classifier", "objectness")
EXITS_DIR = "edge/exits"


@dataclass(frozen=True)
class ExitSpec:
    """One cut's early exit as the edge needs it."""

    cut_id: str
    kind: str
    threshold: float
    model_path: str  # absolute path of the exit head's ONNX file
    outputs: tuple[str, ...]
    exit_rate: float  # held-out fraction of frames that exited at ``threshold``
    exit_ms: float  # profiled exit head time on the partitioning host


def validate_exit(cut: bundle_pb2.Cut, *, field: str = "cut", source: str = "manifest.json") -> None:
    """Raise :class:`ManifestError` naming the field when the cut's early exit is malformed."""
    has_file, has_spec = cut.HasField("exit_head"), cut.HasField("early_exit")
    if has_file != has_spec:
        missing = "early_exit" if has_file else "exit_head"
        raise ManifestError(f"{field}.{missing}", f"cut {cut.id!r} has only one of exit_head/early_exit; "
                            "expected both or neither", source=source)
    if not has_spec:
        return
    spec = cut.early_exit
    if spec.kind not in EXIT_KINDS:
        raise ManifestError(f"{field}.early_exit.kind", f"{spec.kind!r} is not one of {list(EXIT_KINDS)}",
                            source=source)
    if not (math.isfinite(spec.threshold) and 0.0 < spec.threshold <= 1.0):
        raise ManifestError(f"{field}.early_exit.threshold", f"{spec.threshold!r} is not in (0, 1]", source=source)
    if not spec.outputs:
        raise ManifestError(f"{field}.early_exit.outputs", "empty; expected the exit head's output names",
                            source=source)
    if not cut.exit_head.path.startswith(EXITS_DIR + "/"):
        raise ManifestError(f"{field}.exit_head.path", f"{cut.exit_head.path!r} must live under {EXITS_DIR}/",
                            source=source)
    for name in ("exit_rate", "exit_agreement"):
        value = getattr(spec, name)
        if not 0.0 <= value <= 1.0:
            raise ManifestError(f"{field}.early_exit.{name}", f"{value!r} is not in [0, 1]", source=source)


def exit_of(bundle: Bundle, cut_id: str) -> Optional[ExitSpec]:
    """The early exit at ``cut_id`` (checked), or None when the cut has none."""
    cut = bundle.cut(cut_id)
    index = bundle.cut_ids.index(cut_id)
    validate_exit(cut, field=f"cuts[{index}]", source=str(bundle.root / "manifest.json"))
    if not cut.HasField("early_exit"):
        return None
    spec = cut.early_exit
    return ExitSpec(cut_id=cut.id, kind=spec.kind, threshold=spec.threshold,
                    model_path=str(bundle.path(cut.exit_head)), outputs=tuple(spec.outputs),
                    exit_rate=spec.exit_rate, exit_ms=spec.exit_ms)


def exits_of(bundle: Bundle) -> dict[str, ExitSpec]:
    """Every cut's early exit, by cut id."""
    found = {}
    for cut_id in bundle.cut_ids:
        spec = exit_of(bundle, cut_id)
        if spec is not None:
            found[cut_id] = spec
    return found
