"""Cut enumeration on the DAG of a prepared model (pure: ``ModelProto`` in, values out).

A *cut* is a set of tensors. Its *head* is every node needed to compute those tensors
from the graph inputs; its *tail* is every other node. A set is a valid cut when no
tail node reads a value computed in the head other than through the cut tensors, every
graph output is computed in the tail or is itself a cut tensor, and every cut tensor is
needed by the tail. Values that do not depend on a graph input (initializers and
constant subgraphs) are not activations: either side may recompute them.

Enumeration is exact when it can be: every cut is the boundary of a *down-closed* node
set (an ideal: a set holding every producer its nodes read), so a breadth-first walk over
the ideals, adding one ready node at a time and updating the boundary incrementally,
finds every valid cut with at most ``max_tensors`` tensors, whatever order the file lists
its nodes in. Series-parallel CNNs have few ideals (InceptionV2: ~4,300, ResNet50: 143).
When a graph has more than ``max_states`` ideals (default 100,000; wide, highly parallel
graphs; about 2 s and 230 MB to find out) the walk stops and enumeration falls back to
*topological frontiers*: for a topological order and
a position ``i``, the dynamic values produced at or before ``i`` and still needed after
it form a valid cut; frontiers are taken over a few orders (the file's order, a greedy
order that finishes branches before opening new ones, and an as-late-as-possible order)
and deduplicated. Single-tensor cuts are found either way (every topological order
finishes a single-tensor cut's head before anything after it). The ``input`` (full
offload) and ``output`` (all local) ends are always included.
Ids come from :mod:`partitioner.cut_names`; ranking and resolving user-requested cuts
is :mod:`partitioner.cut_selection`.

Cost model (documented approximation): FLOPs count 2 per multiply-accumulate of Conv,
ConvTranspose, Gemm and MatMul only, per frame (batch 1); element-wise ops, pooling and
normalisation are ignored. Parameters are the elements of the initializers a side
reads. ``activation_bytes`` is the fp32-equivalent size per frame of the cut tensors
at their own element type (float tensors count 4 bytes per element).
"""
from __future__ import annotations

import heapq
import logging
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np
import onnx
from onnx import helper

from partitioner.cut_names import assign_ids, common_prefix
from partitioner.errors import UnsupportedModel
from partitioner.graph import constant_values, graph_inputs, oip_datatype, tensor_shape, value_infos
from partitioner.subgraphs import node_inputs
from protos.names import INPUT_CUT, OUTPUT_CUT

logger = logging.getLogger(__name__)

_MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
MAX_STATES = 100_000


@dataclass(frozen=True)
class CutCandidate:
    """One place to split the model.

    ``tensors`` are the names crossing the cut, graph inputs first, then by depth from the
    input and by name (stable whatever order the file lists its nodes in);
    ``shapes`` are their shapes with ``-1`` for the batch dim and ``datatypes`` their Open
    Inference Protocol datatypes. ``order`` sorts candidates from the input (0) to the
    output (last). FLOPs and parameters follow the module's cost model, per frame.
    """

    id: str
    display_name: str
    tensors: tuple[str, ...]
    order: int
    activation_bytes: int
    head_flops: int
    head_params: int
    tail_flops: int
    tail_params: int
    shapes: tuple[tuple[int, ...], ...] = field(default=())
    datatypes: tuple[str, ...] = field(default=())
    head_nodes: int = 0

    @property
    def is_end(self) -> bool:
        return self.id in (INPUT_CUT, OUTPUT_CUT)

    @property
    def kind(self) -> str:
        """``input``, ``output``, ``single`` or ``multi``."""
        if self.is_end:
            return self.id
        return "single" if len(self.tensors) == 1 else "multi"


# --------------------------------------------------------------------------- graph index


class CutIndex:
    """Producer/consumer tables of a prepared graph (dynamic values only), and the cost
    model's per-node FLOPs and parameter sources."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.nodes = list(graph.node)
        self.constants = constant_values(graph)
        self.inputs = [vi.name for vi in graph_inputs(graph)]
        self.outputs = [o.name for o in graph.output]
        self.infos = value_infos(model)
        dynamic = set(self.inputs)
        self.producer: dict[str, int] = {}
        self.dyn_inputs: list[list[str]] = []
        is_dynamic: list[bool] = []
        for i, node in enumerate(self.nodes):
            ins = [x for x in node_inputs(node) if x in dynamic]
            self.dyn_inputs.append(list(dict.fromkeys(ins)))
            is_dynamic.append(bool(ins))
            for out in node.output:
                if out:
                    self.producer[out] = i
                    if ins:
                        dynamic.add(out)
        self.dynamic = dynamic
        self.is_dynamic = is_dynamic
        self.depth: dict[str, int] = {x: 0 for x in self.inputs}
        for i, node in enumerate(self.nodes):
            if is_dynamic[i]:
                d = 1 + max(self.depth.get(x, 0) for x in self.dyn_inputs[i])
                self.depth.update({out: d for out in node.output if out})
        self.consumers: dict[str, list[int]] = defaultdict(list)
        for i, ins in enumerate(self.dyn_inputs):
            for x in ins:
                self.consumers[x].append(i)
        shapes: dict[str, list[int | str]] = {t.name: [int(d) for d in t.dims] for t in graph.initializer}
        shapes.update({name: tensor_shape(vi) for name, vi in self.infos.items()})
        self.flops = [_node_flops(n, shapes) for n in self.nodes]
        self.param_sources = self._param_sources(graph)
        self.sizes = {t.name: int(np.prod(t.dims, dtype=np.int64)) for t in graph.initializer}

    def _param_sources(self, graph: onnx.GraphProto) -> list[frozenset[str]]:
        """For each node, the initializers it reads, directly or through constant nodes."""
        inits = {t.name for t in graph.initializer if t.data_type in _FLOAT_TYPES}
        memo: dict[str, frozenset[str]] = {}

        def sources(name: str) -> frozenset[str]:
            if name in memo:
                return memo[name]
            if name in inits:
                result = frozenset({name})
            elif name in self.constants and name in self.producer:
                node = self.nodes[self.producer[name]]
                reads = node_inputs(node)
                result = frozenset().union(*(sources(x) for x in reads)) if reads else frozenset()
            else:
                result = frozenset()
            memo[name] = result
            return result

        return [
            frozenset().union(*(sources(x) for x in node_inputs(n) if x not in self.dynamic)) if self.is_dynamic[i]
            else frozenset()
            for i, n in enumerate(self.nodes)
        ]

    def head_of(self, tensors: Iterable[str]) -> set[int]:
        """Indices of the dynamic nodes needed to compute ``tensors`` from the graph inputs."""
        head: set[int] = set()
        stack = [self.producer[t] for t in tensors if t in self.producer and t in self.dynamic]
        while stack:
            i = stack.pop()
            if i in head:
                continue
            head.add(i)
            stack.extend(self.producer[x] for x in self.dyn_inputs[i] if x in self.producer)
        return head

    def problem_with(self, tensors: Sequence[str]) -> str | None:
        """Why ``tensors`` is not a valid cut, or None when it is."""
        cut = set(tensors)
        head = self.head_of(cut)
        tail = [i for i in range(len(self.nodes)) if self.is_dynamic[i] and i not in head]
        tail_set = set(tail)
        needed: set[str] = set()
        for i in tail:
            for x in self.dyn_inputs[i]:
                needed.add(x)
                if x not in cut and self.producer.get(x) not in tail_set:
                    return (
                        f"node {self.nodes[i].name or self.nodes[i].op_type!r} after the cut reads {x!r}, "
                        "which is computed before the cut and does not cross it"
                    )
        for out in self.outputs:
            if out in self.dynamic and out not in cut and self.producer.get(out) not in tail_set:
                return f"graph output {out!r} is computed before the cut and does not cross it"
            needed.add(out)
        unused = [t for t in tensors if t not in needed]
        if unused:
            return f"tensors {unused} are not needed after the cut"
        return None

    def tensor_bytes(self, name: str) -> int:
        shape, elem = self.shape_of(name), self.elem_type(name)
        count = int(np.prod([d for d in shape if d > 0], dtype=np.int64)) if shape else 1
        return count * _element_bytes(elem)

    def shape_of(self, name: str) -> tuple[int, ...]:
        """Shape with -1 for the batch dim (and for any dim still unknown)."""
        vi = self.infos.get(name)
        if vi is None:
            return ()
        return tuple(d if isinstance(d, int) and d > 0 else -1 for d in tensor_shape(vi))

    def elem_type(self, name: str) -> int:
        vi = self.infos.get(name)
        return int(vi.type.tensor_type.elem_type) if vi is not None else onnx.TensorProto.FLOAT

    def position(self, name: str) -> tuple[int, int, str]:
        """Sort key that does not depend on the file's node order: graph inputs first (in
        input order), then by depth (longest path from an input), then by name."""
        if name in self.inputs:
            return (-1, self.inputs.index(name), name)
        return (self.depth.get(name, 0), 0, name)


_FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16})


def _element_bytes(elem_type: int) -> int:
    if elem_type in _FLOAT_TYPES:
        return 4  # fp32-equivalent
    try:
        return int(helper.tensor_dtype_to_np_dtype(elem_type).itemsize)
    except (KeyError, TypeError):
        return 4


def _datatype(elem_type: int) -> str:
    try:
        return oip_datatype(elem_type)
    except Exception:  # noqa: BLE001 - unusual element types
        return "FP32"


def _per_frame(shape: Sequence[int | str]) -> int:
    dims = [d if isinstance(d, int) and d > 0 else 1 for d in shape[1:]]
    return int(np.prod(dims, dtype=np.int64))


def _node_flops(node: onnx.NodeProto, shapes: dict[str, list[int | str]]) -> int:
    """2 x multiply-accumulates for Conv/ConvTranspose/Gemm/MatMul, per frame; 0 otherwise."""
    if node.op_type not in _MAC_OPS or node.domain not in ("", "ai.onnx"):
        return 0
    try:
        out = shapes[node.output[0]]
        if node.op_type == "Conv":
            return 2 * _per_frame(out) * _prod(shapes[node.input[1]][1:])
        if node.op_type == "ConvTranspose":
            return 2 * _per_frame(shapes[node.input[0]]) * _prod(shapes[node.input[1]][1:])
        a = shapes[node.input[0]]
        if node.op_type == "Gemm":
            trans_a = any(att.name == "transA" and att.i for att in node.attribute)
            k = a[0] if trans_a else a[-1]
            return 2 * _per_frame(out) * (k if isinstance(k, int) else 1)
        k = a[-1]
        return 2 * _per_frame(out) * (k if isinstance(k, int) else 1)
    except (KeyError, IndexError):
        return 0


def _prod(dims: Sequence[int | str]) -> int:
    return int(np.prod([d if isinstance(d, int) and d > 0 else 1 for d in dims], dtype=np.int64))


# --------------------------------------------------------------------------- orders


def _orders(index: CutIndex) -> list[list[int]]:
    """A few topological orders of the dynamic nodes (see the module docstring)."""
    dyn = [i for i in range(len(index.nodes)) if index.is_dynamic[i]]
    return [dyn, _greedy_order(index, dyn), _late_order(index, dyn)]


def _greedy_order(index: CutIndex, dyn: list[int]) -> list[int]:
    """Kahn's sort preferring the ready node that frees the most live values (finishes branches)."""
    deps = {i: {index.producer[x] for x in index.dyn_inputs[i] if x in index.producer} for i in dyn}
    users: dict[int, list[int]] = defaultdict(list)
    for i, ds in deps.items():
        for d in ds:
            users[d].append(i)
    remaining = {i: len(ds) for i, ds in deps.items()}
    pending_uses = {x: len(c) for x, c in index.consumers.items()}
    ready: list[tuple[int, int]] = []

    def score(i: int) -> int:
        frees = sum(1 for x in index.dyn_inputs[i] if pending_uses.get(x, 0) == 1 and x not in index.outputs)
        return -frees

    for i in dyn:
        if remaining[i] == 0:
            heapq.heappush(ready, (score(i), i))
    order: list[int] = []
    while ready:
        # scores change as values are consumed: re-score lazily
        s, i = heapq.heappop(ready)
        if s != score(i):
            heapq.heappush(ready, (score(i), i))
            continue
        order.append(i)
        for x in index.dyn_inputs[i]:
            pending_uses[x] = pending_uses.get(x, 0) - 1
        for u in users[i]:
            remaining[u] -= 1
            if remaining[u] == 0:
                heapq.heappush(ready, (score(u), u))
    return order if len(order) == len(dyn) else dyn


def _late_order(index: CutIndex, dyn: list[int]) -> list[int]:
    """As-late-as-possible order: reverse Kahn from the outputs, newest file position first."""
    dyn_set = set(dyn)
    deps = {i: {index.producer[x] for x in index.dyn_inputs[i] if x in index.producer} for i in dyn}
    users: dict[int, set[int]] = defaultdict(set)
    for i, ds in deps.items():
        for d in ds:
            users[d].add(i)
    remaining = {i: len(users[i] & dyn_set) for i in dyn}
    ready = [-i for i in dyn if remaining[i] == 0]
    heapq.heapify(ready)
    reverse: list[int] = []
    while ready:
        i = -heapq.heappop(ready)
        reverse.append(i)
        for d in deps[i]:
            remaining[d] -= 1
            if remaining[d] == 0:
                heapq.heappush(ready, -d)
    return reverse[::-1] if len(reverse) == len(dyn) else dyn


def _frontiers(index: CutIndex, order: list[int], max_tensors: int) -> list[tuple[str, ...]]:
    """Cut sets (<= max_tensors) at every position of ``order``, excluding the two ends."""
    position = {i: p for p, i in enumerate(order)}
    n = len(order)
    last_use: dict[str, int] = {}
    for x, users in index.consumers.items():
        last_use[x] = max(position[u] for u in users if u in position)
    for out in index.outputs:
        last_use[out] = n
    live: dict[str, None] = {x: None for x in index.inputs if last_use.get(x, -1) > -1}
    found: list[tuple[str, ...]] = []
    for p, i in enumerate(order[:-1]):
        for x in index.dyn_inputs[i]:
            if last_use.get(x, -1) <= p:
                live.pop(x, None)
        for out in index.nodes[i].output:
            if out and out in index.dynamic and last_use.get(out, -1) > p:
                live[out] = None
        if 0 < len(live) <= max_tensors:
            found.append(tuple(live))
    return found


def _ideal_cuts(index: CutIndex, max_tensors: int, max_states: int) -> list[tuple[str, ...]] | None:
    """Every boundary of <= max_tensors values over all ideals, or None past max_states ideals."""
    dyn = [i for i in range(len(index.nodes)) if index.is_dynamic[i]]
    bit = {i: 1 << j for j, i in enumerate(dyn)}
    full = (1 << len(dyn)) - 1
    pred_mask = {i: 0 for i in dyn}
    for i in dyn:
        for x in index.dyn_inputs[i]:
            if x in index.producer:
                pred_mask[i] |= bit[index.producer[x]]
    successors: dict[int, set[int]] = defaultdict(set)
    for x, users in index.consumers.items():
        if x in index.producer:
            successors[index.producer[x]].update(users)
    user_mask = {x: sum(bit[u] for u in set(users)) for x, users in index.consumers.items()}
    outputs = set(index.outputs)
    made = {i: [o for o in index.nodes[i].output if o and o in index.dynamic] for i in dyn}

    def live(x: str, mask: int) -> bool:
        return x in outputs or bool(user_mask.get(x, 0) & ~mask)

    start_boundary = tuple(x for x in index.inputs if live(x, 0))
    level = {0: (start_boundary, frozenset(i for i in dyn if pred_mask[i] == 0))}
    found: dict[frozenset[str], tuple[str, ...]] = {}
    states = 0
    while level:
        following: dict[int, tuple[tuple[str, ...], frozenset[int]]] = {}
        for mask, (boundary, ready) in level.items():
            for j in ready:
                grown = mask | bit[j]
                if grown in following:
                    continue
                states += 1
                if states > max_states:
                    return None
                kept = tuple(x for x in boundary if live(x, grown))
                new_boundary = kept + tuple(o for o in made[j] if live(o, grown))
                new_ready = (ready - {j}) | {s for s in successors[j] if pred_mask[s] & ~grown == 0}
                following[grown] = (new_boundary, frozenset(new_ready))
                if grown != full and 0 < len(new_boundary) <= max_tensors:
                    found.setdefault(frozenset(new_boundary), new_boundary)
        level = following
    return list(found.values())


# --------------------------------------------------------------------------- public


def enumerate_cuts(
    model: onnx.ModelProto, max_tensors: int = 3, *, max_states: int = MAX_STATES
) -> list[CutCandidate]:
    """Every valid cut of a prepared model with at most ``max_tensors`` tensors, plus both ends.

    ``model`` should come from :func:`partitioner.graph.prepare_model` (shapes known,
    topologically sorted). Past ``max_states`` ideals the result is the frontier subset
    (see the module docstring). The result is sorted from the input to the output;
    ``order`` is the position in that list.
    """
    if max_tensors < 1:
        raise ValueError(f"max_tensors={max_tensors} must be >= 1")
    index = CutIndex(model)
    if not index.inputs:
        raise UnsupportedModel("the graph has no inputs (only initializers); nothing to split")
    if not any(index.is_dynamic):
        raise UnsupportedModel("no node depends on a graph input; there is nothing to split")
    exact = _ideal_cuts(index, max_tensors, max_states)
    if exact is None:
        logger.info("more than %d ideals: enumerating cuts on topological frontiers instead", max_states)
        raw = [cut for order in _orders(index) for cut in _frontiers(index, order, max_tensors)]
    else:
        raw = exact
    ends = {frozenset(index.inputs), frozenset(index.outputs)}
    sets: dict[frozenset[str], tuple[str, ...]] = {}
    for cut in raw:
        key = frozenset(cut)
        if key not in ends and key not in sets:
            sets[key] = tuple(sorted(cut, key=index.position))
    heads = {key: len(index.head_of(cut)) for key, cut in sets.items()}
    inner = sorted(sets.values(), key=lambda cut: (heads[frozenset(cut)], [index.position(t) for t in cut]))
    ids = assign_ids(inner, prefix=common_prefix(index.producer))
    candidates = [make_candidate(index, INPUT_CUT, tuple(index.inputs), INPUT_CUT)]
    candidates += [make_candidate(index, cid, cut, "+".join(cut)) for cid, cut in zip(ids, inner)]
    candidates.append(make_candidate(index, OUTPUT_CUT, tuple(index.outputs), OUTPUT_CUT))
    candidates.sort(key=lambda c: (c.is_end and c.id == OUTPUT_CUT, c.head_nodes, c.head_flops, c.id))
    if candidates[0].id != INPUT_CUT:
        candidates.sort(key=lambda c: c.id != INPUT_CUT)
    result = [_with_order(c, k) for k, c in enumerate(candidates)]
    logger.info(
        "enumerated %d cuts (%d single-tensor, %d multi-tensor, plus input/output)",
        len(result), sum(c.kind == "single" for c in result), sum(c.kind == "multi" for c in result),
    )
    return result


def _with_order(cand: CutCandidate, order: int) -> CutCandidate:
    return replace(cand, order=order)


def make_candidate(index: CutIndex, cut_id: str, tensors: tuple[str, ...], display: str) -> CutCandidate:
    """The candidate whose cut tensors are ``tensors`` (not checked: see :meth:`CutIndex.problem_with`), ``order`` 0."""
    if cut_id == INPUT_CUT:
        head: set[int] = set()
    elif cut_id == OUTPUT_CUT:
        head = {i for i in range(len(index.nodes)) if index.is_dynamic[i]}
    else:
        head = index.head_of(tensors)
    dyn = [i for i in range(len(index.nodes)) if index.is_dynamic[i]]
    tail = [i for i in dyn if i not in head]
    head_params = frozenset().union(*(index.param_sources[i] for i in head)) if head else frozenset()
    tail_params = frozenset().union(*(index.param_sources[i] for i in tail)) if tail else frozenset()
    return CutCandidate(
        id=cut_id,
        display_name=display,
        tensors=tensors,
        order=0,
        activation_bytes=sum(index.tensor_bytes(t) for t in tensors),
        head_flops=sum(index.flops[i] for i in head),
        head_params=sum(index.sizes[p] for p in head_params),
        tail_flops=sum(index.flops[i] for i in tail),
        tail_params=sum(index.sizes[p] for p in tail_params),
        shapes=tuple(_batched(index.shape_of(t)) for t in tensors),
        datatypes=tuple(_datatype(index.elem_type(t)) for t in tensors),
        head_nodes=len(head),
    )


def _batched(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (-1,) + shape[1:] if shape else shape
