"""Choosing cuts: drop dominated ones (:func:`rank_cuts`) or resolve the ones a user asked
for by tensor name or id (:func:`select_cuts`), with the nearest valid candidates in
every error.
"""
from __future__ import annotations

import difflib
from dataclasses import replace
from typing import Sequence

import onnx

from partitioner.cut_names import assign_ids, common_prefix
from partitioner.cuts import CutCandidate, CutIndex, enumerate_cuts, make_candidate
from partitioner.errors import CutNotFound
from protos.names import INPUT_CUT, OUTPUT_CUT


def rank_cuts(candidates: Sequence[CutCandidate], *, max_cuts: int | None = None) -> list[CutCandidate]:
    """Drop dominated cuts, keep both ends; sorted by ``order``.

    A cut is dominated when another has no more wire bytes and no more head FLOPs and is
    strictly better in one of them; among exact ties the one nearest the output is kept
    (it leaves less to the tail). ``max_cuts`` then keeps the ends plus inner cuts spread
    evenly along the graph.
    """
    ends = [c for c in candidates if c.is_end]
    ordered = sorted(candidates, key=lambda c: (c.activation_bytes, c.head_flops, -c.order))
    kept: list[CutCandidate] = []
    best_flops: int | None = None
    for c in ordered:  # by bytes ascending: c survives only if its FLOPs beat every cut with fewer bytes
        if best_flops is None or c.head_flops < best_flops:
            if not c.is_end:
                kept.append(c)
            best_flops = c.head_flops
    kept.sort(key=lambda c: c.order)
    if max_cuts is not None and len(kept) > max(0, max_cuts - len(ends)):
        room = max(0, max_cuts - len(ends))
        picks = sorted({round(k * (len(kept) - 1) / max(1, room - 1)) for k in range(room)}) if room else []
        kept = [kept[p] for p in picks]
    return sorted(ends + kept, key=lambda c: c.order)


def select_cuts(model: onnx.ModelProto, names: Sequence[str], *, max_tensors: int = 3) -> list[CutCandidate]:
    """Resolve user-requested cuts: each entry is a tensor name, comma-separated tensor
    names (a multi-tensor cut; a candidate's ``display_name`` joined by ``+`` works too),
    a candidate id, ``input`` or ``output``.

    Raises :class:`CutNotFound` naming the tensor that is not in the graph, or the set
    that is not a valid cut and why, with the nearest valid candidates.
    """
    candidates = enumerate_cuts(model, max_tensors=max_tensors)
    by_set = {frozenset(c.tensors): c for c in candidates if not c.is_end}
    by_id = {c.id: c for c in candidates}
    index = CutIndex(model)
    all_names = sorted(index.dynamic)
    chosen: list[CutCandidate] = []
    for request in names:
        request = request.strip()
        if request in by_id:
            chosen.append(by_id[request])
            continue
        separator = "+" if "," not in request and "+" in request and request not in index.infos else ","
        tensors = tuple(t.strip() for t in request.split(separator) if t.strip())
        if not tensors:
            raise CutNotFound(f"empty cut request {request!r}; expected tensor names separated by commas")
        for t in tensors:
            if t not in index.infos and t not in index.dynamic and t not in index.sizes and t not in index.producer:
                near = difflib.get_close_matches(t, all_names + list(by_id), n=5, cutoff=0.4)
                raise CutNotFound(
                    f"cut tensor {t!r} is not in the graph; nearest candidates: {', '.join(near) or '(none)'}"
                )
            if t not in index.dynamic:
                raise CutNotFound(
                    f"cut tensor {t!r} is a constant (it does not depend on the graph inputs); "
                    f"nearest candidates: {', '.join(_nearest(request, candidates))}"
                )
        key = frozenset(tensors)
        if key in by_set:
            chosen.append(by_set[key])
            continue
        if key == frozenset(index.inputs):
            chosen.append(by_id[INPUT_CUT])
            continue
        if key == frozenset(index.outputs):
            chosen.append(by_id[OUTPUT_CUT])
            continue
        problem = index.problem_with(tensors)
        if problem is not None:
            raise CutNotFound(
                f"{'+'.join(tensors)!r} is not a valid cut: {problem}; "
                f"nearest candidates: {', '.join(_nearest(request, candidates))}"
            )
        ordered = tuple(sorted(tensors, key=index.position))
        (cid,) = assign_ids([ordered], prefix=common_prefix(index.producer), taken=by_id)
        cand = make_candidate(index, cid, ordered, "+".join(ordered))
        order = max((c.order for c in candidates if c.head_nodes <= cand.head_nodes and c.id != OUTPUT_CUT), default=0)
        chosen.append(replace(cand, order=order))
        by_id[cid] = cand
    return chosen


def _nearest(request: str, candidates: Sequence[CutCandidate], n: int = 5) -> list[str]:
    """Valid cuts that contain a requested tensor (fewest extra tensors first), then the
    cuts whose names are most similar."""
    wanted = {t.strip() for t in request.split(",") if t.strip()}
    containing = sorted(
        (c for c in candidates if wanted & set(c.tensors)), key=lambda c: (len(set(c.tensors) - wanted), c.order)
    )
    keys = {c.display_name: c for c in candidates}
    keys.update({c.id: c for c in candidates})
    similar = [keys[k] for k in difflib.get_close_matches(request.replace(",", "+"), list(keys), n=n, cutoff=0.0)]
    picked: dict[str, CutCandidate] = {}
    for c in containing + similar:
        if len(picked) < n:
            picked.setdefault(c.id, c)
    return [f"{c.display_name} (id {c.id})" for c in picked.values()]
