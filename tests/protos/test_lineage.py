"""protos.lineage: the optimization record round-trips and bad values are named."""
from __future__ import annotations

import re

import pytest

from protos import bundle_pb2
from protos.errors import ManifestError
from protos.lineage import lineage_from_json, lineage_of, lineage_to_json


def _lineage() -> bundle_pb2.Lineage:
    return bundle_pb2.Lineage(
        source_model="mobilenet_v2", source_sha256="ab" * 32, baseline_fidelity=0.95, metric="top1_agreement",
        train_sources=["bikes.mp4"], heldout_sources=["carphone_pristine.mp4"],
        steps=[
            bundle_pb2.OptimizationStep(kind="prune", kept=False, reason="top1 0.4 < 0.93", ratio=0.3,
                                        scope="per-layer", importance="taylor", distill_seconds=60.0,
                                        distill_epochs=3, temperature=4.0, params=2_000_000, macs=150_000_000,
                                        latency_ms=9.5, fidelity=0.4),
            bundle_pb2.OptimizationStep(kind="lowrank", kept=True, energy=0.99, fidelity=0.96,
                                        ranks=[bundle_pb2.LayerRank(layer="classifier.1", rank=400, full_rank=1000)]),
        ],
    )


def test_round_trip_through_json_and_the_manifest() -> None:
    lineage = _lineage()
    again = lineage_from_json(lineage_to_json(lineage))
    assert again == lineage
    manifest = bundle_pb2.Manifest()
    assert lineage_of(manifest) is None
    manifest.lineage.CopyFrom(again)
    assert lineage_of(manifest).steps[1].ranks[0].rank == 400


@pytest.mark.parametrize(("mutate", "field", "quoted"), [
    (lambda x: setattr(x, "source_sha256", "xyz"), "lineage.source_sha256", "'xyz'"),
    (lambda x: setattr(x, "source_model", ""), "lineage.source_model", "is empty"),
    (lambda x: setattr(x.steps[0], "ratio", 1.5), "lineage.steps[0].ratio", "1.5"),
    (lambda x: setattr(x.steps[0], "kind", "quantize"), "lineage.steps[0].kind", "'quantize'"),
    (lambda x: setattr(x.steps[0], "importance", "random"), "lineage.steps[0].importance", "'random'"),
    (lambda x: setattr(x.steps[1].ranks[0], "rank", 1001), "lineage.steps[1].ranks[0]", "rank 1001 of 1000"),
    (lambda x: setattr(x.steps[1], "energy", 0.0), "lineage.steps[1].energy", "0.0"),
    (lambda x: setattr(x.steps[1], "fidelity", 1.2), "lineage.steps[1].fidelity", "1.2"),
])
def test_invalid_values_are_named(mutate, field: str, quoted: str) -> None:
    lineage = _lineage()
    mutate(lineage)
    with pytest.raises(ManifestError, match=re.escape(field) + ": .*" + re.escape(quoted)) as info:
        lineage_to_json(lineage)
    assert info.value.field == field


def test_text_that_is_not_a_lineage_is_rejected() -> None:
    with pytest.raises(ManifestError, match="lineage: is not a valid Lineage"):
        lineage_from_json('{"source_model": 3, "bogus": true}')
