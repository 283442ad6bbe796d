"""A model's optimization lineage (issue 17): reading, checking and carrying ``Manifest.lineage``.

``splitinfer optimize`` records which optimizations a model went through — pruning ratios,
low-rank ranks, distillation budgets, each step's figures and whether the gate kept it —
and from which source model (name and sha256 of its ONNX export). The record travels in
the optimized ONNX file's ``metadata_props`` under :data:`METADATA_KEY` as protobuf JSON,
and ``partition`` copies it into the bundle manifest (field 16), so a bundle says what
model it was cut from.

This module imports neither onnx nor torch: it turns the JSON text into a checked
:class:`~protos.bundle_pb2.Lineage` and back. Every error is a :class:`ManifestError`
naming the field and the value.
"""
from __future__ import annotations

import math
import re

from google.protobuf import json_format

from protos import bundle_pb2
from protos.errors import ManifestError

__all__ = ["METADATA_KEY", "STEP_KINDS", "PRUNE_SCOPES", "IMPORTANCES", "lineage_from_json", "lineage_to_json",
           "validate_lineage", "lineage_of"]

#: The ONNX ``metadata_props`` key that carries the lineage of an optimized model.
METADATA_KEY = "splitinfer.lineage"
STEP_KINDS = ("prune", "lowrank")
PRUNE_SCOPES = ("global", "per-layer")
IMPORTANCES = ("magnitude", "taylor", "reconstruction")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def validate_lineage(lineage: bundle_pb2.Lineage, *, source: str = "manifest.json") -> None:
    """Raise :class:`ManifestError` naming the first field out of range."""

    def bad(field: str, message: str) -> ManifestError:
        return ManifestError(f"lineage.{field}", message, source=source)

    if not lineage.source_model:
        raise bad("source_model", "is empty; expected the name or file name of the model that was optimized")
    if not _SHA256.match(lineage.source_sha256):
        raise bad("source_sha256", f"{lineage.source_sha256!r} is not a lowercase hex sha256 (64 characters)")
    if not 0.0 <= lineage.baseline_fidelity <= 1.0 or math.isnan(lineage.baseline_fidelity):
        raise bad("baseline_fidelity", f"{lineage.baseline_fidelity!r} is not a fraction in [0, 1]")
    for i, step in enumerate(lineage.steps):
        where = f"steps[{i}]"
        if step.kind not in STEP_KINDS:
            raise bad(f"{where}.kind", f"{step.kind!r} is not one of {', '.join(STEP_KINDS)}")
        if step.kind == "prune":
            if not 0.0 < step.ratio < 1.0:
                raise bad(f"{where}.ratio", f"{step.ratio!r} is not a fraction in (0, 1)")
            if step.scope not in PRUNE_SCOPES:
                raise bad(f"{where}.scope", f"{step.scope!r} is not one of {', '.join(PRUNE_SCOPES)}")
            if step.importance not in IMPORTANCES:
                raise bad(f"{where}.importance", f"{step.importance!r} is not one of {', '.join(IMPORTANCES)}")
        else:
            if not 0.0 < step.energy <= 1.0:
                raise bad(f"{where}.energy", f"{step.energy!r} is not a fraction in (0, 1]")
            for k, rank in enumerate(step.ranks):
                if not rank.layer or not 0 < rank.rank <= rank.full_rank:
                    raise bad(f"{where}.ranks[{k}]", f"layer {rank.layer!r} rank {rank.rank} of {rank.full_rank}; "
                                                     "expected a named layer with 0 < rank <= full_rank")
        for name in ("distill_seconds", "temperature", "feature_weight", "latency_ms"):
            value = getattr(step, name)
            if not math.isfinite(value) or value < 0:
                raise bad(f"{where}.{name}", f"{value!r} is not a finite number >= 0")
        if not 0.0 <= step.fidelity <= 1.0:
            raise bad(f"{where}.fidelity", f"{step.fidelity!r} is not a fraction in [0, 1]")
        if step.params < 0 or step.macs < 0:
            raise bad(f"{where}.params", f"params {step.params} / macs {step.macs} must be >= 0")


def lineage_from_json(text: str, *, source: str = "model metadata") -> bundle_pb2.Lineage:
    """The checked lineage in ``text`` (protobuf JSON, as :func:`lineage_to_json` writes it)."""
    lineage = bundle_pb2.Lineage()
    try:
        json_format.Parse(text, lineage)
    except json_format.ParseError as exc:
        raise ManifestError("lineage", f"is not a valid Lineage in protobuf JSON: {exc}", source=source) from exc
    validate_lineage(lineage, source=source)
    return lineage


def lineage_to_json(lineage: bundle_pb2.Lineage) -> str:
    """Protobuf JSON of a checked lineage (compact, field names as in the .proto)."""
    validate_lineage(lineage, source="lineage to write")
    return json_format.MessageToJson(lineage, preserving_proto_field_name=True, indent=None, sort_keys=True)


def lineage_of(manifest: bundle_pb2.Manifest) -> bundle_pb2.Lineage | None:
    """The manifest's checked lineage, or ``None`` when the model was not optimized."""
    if not manifest.HasField("lineage"):
        return None
    validate_lineage(manifest.lineage)
    return manifest.lineage
