"""Readable, stable cut ids from tensor names (pure string functions).

A cut's id is built from its tensors' names: path components (``/`` separated, as
PyTorch and TensorFlow exporters write them) with a common graph prefix left out,
runs like ``features`` / ``features.6`` collapsed, the exporter's op suffix
(``Add_output_0``) dropped unless two cuts would then collide, lower-cased to
``[a-z0-9_]``, tensors of a multi-tensor cut joined by ``__``. Ids longer than
:data:`MAX_ID_LENGTH` end in a short hash of the full names. The end cuts' names
(``input``, ``output``) are reserved.
"""
from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from typing import Iterable, Sequence

from protos.names import INPUT_CUT, OUTPUT_CUT

MAX_ID_LENGTH = 60

_TORCH_OP = re.compile(r"^[A-Z][A-Za-z0-9]*(_\d+)?_output_\d+$")
_OP_LIKE = re.compile(r"^[A-Z][A-Za-z0-9]*(_\d+)?$")


def _path(name: str) -> list[str]:
    return [re.sub(r":\d+$", "", p) for p in re.split(r"[/\\]", name) if p]


def common_prefix(names: Iterable[str]) -> tuple[str, ...]:
    """Leading path components shared by every ``/``-separated name (e.g. TensorFlow's
    ``StatefulPartitionedCall/model``), which ids leave out."""
    paths = [_path(n)[:-1] for n in names if "/" in n.strip("/")]
    if not paths:
        return ()
    prefix = paths[0]
    for path in paths[1:]:
        k = 0
        while k < min(len(prefix), len(path)) and prefix[k] == path[k]:
            k += 1
        prefix = prefix[:k]
    return tuple(prefix)


def _name_parts(name: str, prefix: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(short parts, detail parts) of a tensor name for readable ids."""
    parts = _path(name)
    if prefix and len(parts) > len(prefix) and tuple(parts[: len(prefix)]) == prefix:
        parts = parts[len(prefix):]
    if not parts:
        return [name], []
    detail: list[str] = []
    if len(parts) > 1 and (_TORCH_OP.match(parts[-1]) or _OP_LIKE.match(parts[-1])):
        detail = [re.sub(r"_output_\d+$", "", parts[-1])]
        parts = parts[:-1]
    collapsed: list[str] = []
    for p in parts:
        if collapsed and (p.startswith(collapsed[-1] + ".") or p.startswith(collapsed[-1] + "_")):
            collapsed[-1] = p
        else:
            collapsed.append(p)
    return collapsed, detail


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug or "t"


def _clip(slug: str, full: str) -> str:
    if not slug[0].isalnum():
        slug = "t_" + slug
    if len(slug) > MAX_ID_LENGTH:
        digest = hashlib.sha1(full.encode()).hexdigest()[:6]
        slug = slug[: MAX_ID_LENGTH - 7].rstrip("_") + "_" + digest
    return slug


def _cut_id(tensors: Sequence[str], detailed: bool, prefix: tuple[str, ...] = ()) -> str:
    pieces = []
    for t in tensors:
        short, detail = _name_parts(t, prefix)
        pieces.append(_slug("_".join(short + (detail if detailed else []))))
    return _clip("__".join(pieces), "+".join(tensors))


def assign_ids(
    cut_sets: list[tuple[str, ...]], prefix: tuple[str, ...] = (), taken: Iterable[str] = ()
) -> list[str]:
    """Readable unique ids: short form, the op-detailed form on collision, then _2, _3..."""
    reserved = {INPUT_CUT, OUTPUT_CUT, *taken}
    short = [_cut_id(c, detailed=False, prefix=prefix) for c in cut_sets]
    counts: dict[str, int] = defaultdict(int)
    for s in short:
        counts[s] += 1
    ids = [
        s if counts[s] == 1 and s not in reserved else _cut_id(c, detailed=True, prefix=prefix)
        for s, c in zip(short, cut_sets)
    ]
    seen = set(reserved)
    result = []
    for candidate in ids:
        unique, k = candidate, 2
        while unique in seen:
            unique = f"{candidate}_{k}"
            k += 1
        seen.add(unique)
        result.append(unique)
    return result
