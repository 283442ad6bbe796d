"""Split a prepared model at a cut into a head and a tail (in memory, ``ModelProto`` only).

The head holds every node needed to compute the cut tensors from the graph inputs and
returns the cut tensors, in the cut's order. The tail takes exactly the cut tensors as
its graph inputs (batch dim symbolic, i.e. -1 for a server) and returns the full model's
outputs. Constant subgraphs (nodes that depend only on initializers) are copied to
whichever side reads them; each side carries only the initializers it uses. A cut
tensor that is also a graph output is passed straight through the tail (its graph
output names its graph input), so the tail always returns every model output.

The ``input`` end has no head (the tail is the full model); the ``output`` end has no
tail (the head is the full model).
"""
from __future__ import annotations

import logging
from typing import Iterable, Sequence

import onnx
from onnx import helper

from partitioner.cuts import CutCandidate
from protos.names import INPUT_CUT, OUTPUT_CUT
from partitioner.errors import CutNotFound, UnsupportedModel
from partitioner.graph import BATCH_DIM, graph_inputs, value_infos
from partitioner.subgraphs import node_inputs

logger = logging.getLogger(__name__)


def split_model(
    model: onnx.ModelProto, cut: CutCandidate | Sequence[str]
) -> tuple[onnx.ModelProto | None, onnx.ModelProto | None]:
    """(head, tail) for ``cut`` (a :class:`CutCandidate` or tensor names); both pass the ONNX checker.

    Raises :class:`CutNotFound` when a tensor is not in the graph or the tensors do not
    separate the graph (a tail node would need a value computed before the cut).
    """
    if isinstance(cut, CutCandidate):
        if cut.id == INPUT_CUT:
            return None, _copy(model)
        if cut.id == OUTPUT_CUT:
            return _copy(model), None
        tensors = list(cut.tensors)
    else:
        tensors = list(cut)
    graph = model.graph
    infos = value_infos(model)
    known = set(infos) | {out for node in graph.node for out in node.output}
    missing = [t for t in tensors if t not in known]
    if missing:
        raise CutNotFound(f"cut tensors {missing} are not in the graph")
    if not tensors:
        raise CutNotFound("a cut needs at least one tensor")

    inits = {t.name for t in graph.initializer}
    input_names = [vi.name for vi in graph_inputs(graph)]
    head_idx = _ancestors(graph, tensors, stop=set(input_names) | inits)
    tail_idx = _ancestors(graph, [o.name for o in graph.output], stop=set(tensors) | inits)
    _check_tail(graph, tail_idx, tensors, input_names)

    head_used_inputs = _inputs_read(graph, head_idx) | set(tensors)
    head_inputs = [_batched(vi) for vi in graph_inputs(graph) if vi.name in head_used_inputs]
    head_outputs = [_batched(_info_for(t, infos)) for t in tensors]
    head = _build(model, f"{graph.name or 'model'}_head", head_idx, head_inputs, head_outputs, infos)

    tail_inputs = [_batched(_info_for(t, infos)) for t in tensors]
    tail = _build(model, f"{graph.name or 'model'}_tail", tail_idx, tail_inputs, list(graph.output), infos)
    for side, part in (("head", head), ("tail", tail)):
        try:
            onnx.checker.check_model(part)
        except onnx.checker.ValidationError as exc:
            raise UnsupportedModel(f"the {side} of a split at {list(tensors)} is not a valid ONNX model: {exc}") from exc
    logger.debug("split at %s: head %d nodes, tail %d nodes", tensors, len(head_idx), len(tail_idx))
    return head, tail


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _ancestors(graph: onnx.GraphProto, targets: Iterable[str], stop: set[str]) -> list[int]:
    """Node indices (file order) needed to compute ``targets``, not looking past ``stop``."""
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    seen: set[int] = set()
    stack = [producer[t] for t in targets if t not in stop and t in producer]
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        for name in node_inputs(graph.node[i]):  # a Loop/If body's outer-scope reads too
            if name and name not in stop and name in producer:
                stack.append(producer[name])
    return sorted(seen)


def _inputs_read(graph: onnx.GraphProto, idx: Iterable[int]) -> set[str]:
    return {name for i in idx for name in node_inputs(graph.node[i])}


def _check_tail(graph: onnx.GraphProto, tail_idx: list[int], tensors: list[str], input_names: list[str]) -> None:
    reads = _inputs_read(graph, tail_idx) | {o.name for o in graph.output}
    leaked = [name for name in input_names if name in reads and name not in tensors]
    if leaked:
        raise CutNotFound(
            f"{'+'.join(tensors)!r} does not separate the graph: the part after it still reads graph inputs {leaked}"
        )
    produced = {out for i in tail_idx for out in graph.node[i].output}
    unused = [t for t in tensors if t not in reads or t in produced]
    if unused:
        raise CutNotFound(f"cut tensors {unused} are not needed after the cut (or are computed after it)")


def _info_for(name: str, infos: dict[str, onnx.ValueInfoProto]) -> onnx.ValueInfoProto:
    if name in infos:
        return infos[name]
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)


def _batched(vi: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    """Copy of ``vi`` whose first dim is the symbolic batch."""
    out = onnx.ValueInfoProto()
    out.CopyFrom(vi)
    tt = out.type.tensor_type
    if out.type.HasField("tensor_type") and tt.HasField("shape") and len(tt.shape.dim) >= 1:
        tt.shape.dim[0].Clear()
        tt.shape.dim[0].dim_param = BATCH_DIM
    return out


def _build(
    model: onnx.ModelProto,
    name: str,
    idx: list[int],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    infos: dict[str, onnx.ValueInfoProto],
) -> onnx.ModelProto:
    graph = model.graph
    nodes = [graph.node[i] for i in idx]
    reads = _inputs_read(graph, idx) | {o.name for o in outputs}
    initializers = [t for t in graph.initializer if t.name in reads]
    boundary = {vi.name for vi in inputs} | {vi.name for vi in outputs}
    produced = {out for node in nodes for out in node.output if out}
    value_info = [vi for vi in graph.value_info if vi.name in produced and vi.name not in boundary]
    new_graph = helper.make_graph(
        nodes, name, inputs, outputs, initializer=initializers, value_info=value_info, doc_string=graph.doc_string
    )
    part = onnx.ModelProto()
    part.ir_version = model.ir_version
    part.producer_name = "splitinfer.partitioner"
    part.producer_version = model.producer_version
    part.domain = model.domain
    part.model_version = model.model_version
    part.opset_import.extend(model.opset_import)
    part.functions.extend(model.functions)
    part.graph.CopyFrom(new_graph)
    return part
