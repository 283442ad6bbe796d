"""Graph preparation: turn any loaded ONNX model into a clean, shaped, topologically
ordered graph on which cut points are real (in memory: ``ModelProto`` in, ``ModelProto`` out).

The recipe (:func:`prepare_model`):

1. reject what cannot run: operators ONNX Runtime's CPU provider has no kernel for (inside
   If/Loop/Scan bodies too). Control flow itself is kept: a node with a subgraph is one
   node of the outer graph, and the names its body reads from the outer scope count as
   its inputs (:func:`node_inputs`), so cuts never pass through a body and each body lies
   wholly in the head or wholly in the tail;
2. drop initializers listed as graph inputs (old IR 3 exports) so they can be folded;
   fix the batch dimension of every graph input as the symbolic ``batch``;
3. ONNX shape inference, then ONNX Runtime's *basic* graph optimizations (constant
   folding, BatchNorm folded into Conv, Identity/Dropout removal, Constant nodes turned
   into initializers); these only use ONNX operators and keep node output names, so
   a user still recognises ``/features/features.6/Add_output_0``;
4. remove dead nodes, sort topologically, make the batch dim symbolic on inputs and
   outputs, re-run shape inference; values inference leaves without a full shape get
   the shape observed by running the model once on zeros (batch dim made symbolic).

Limits: models over 2 GiB are written with external data to a temporary directory for
ONNX Runtime; a batch dimension hard-coded inside the graph (e.g. ``Reshape`` to
``[1, -1]``) stays hard-coded, so such a model only runs with batch 1.
"""
from __future__ import annotations

import functools
import logging
import os
import pathlib
import re
import tempfile
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from partitioner.errors import UnsupportedModel
from partitioner.subgraphs import node_inputs, nodes_with_bodies
from protos.datatypes import from_numpy_dtype, numpy_dtype_for_ort_type

logger = logging.getLogger(__name__)

BATCH_DIM = "batch"
CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})
_ONNX_DOMAINS = ("", "ai.onnx")
_TWO_GIB = 2**31 - 1
# Ops ONNX Runtime resolves while loading the graph rather than through a kernel.
_GRAPH_LEVEL_OPS = frozenset({("", "Constant"), ("", "ConstantOfShape")})


# --------------------------------------------------------------------------- public


def prepare_model(
    model: onnx.ModelProto,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> onnx.ModelProto:
    """A cleaned copy of ``model`` ready for cut enumeration (see the module docstring).

    ``input_shapes`` fixes graph inputs whose non-batch dims are symbolic (e.g. an image
    size); dim 0 is always made the symbolic batch. Raises :class:`UnsupportedModel`
    naming the node and op for control flow or operators ONNX Runtime cannot run.
    """
    model = _copy(model)
    check_supported(model)
    _drop_initializer_inputs(model)
    _set_input_shapes(model, input_shapes or {})
    model = _infer_shapes(model)
    model = optimize_basic(model)
    _remove_dead_nodes(model.graph)
    _sort_topologically(model.graph)
    _make_batch_symbolic(model.graph)
    _prune_opsets(model)
    del model.graph.value_info[:]
    model = _infer_shapes(model)
    _fill_missing_shapes(model)
    if model.ByteSize() <= _TWO_GIB:
        onnx.checker.check_model(model)
    logger.info(
        "prepared model: %d nodes, %d initializers, inputs %s, outputs %s",
        len(model.graph.node), len(model.graph.initializer),
        [i.name for i in graph_inputs(model.graph)], [o.name for o in model.graph.output],
    )
    return model


def check_supported(model: onnx.ModelProto) -> None:
    """Raise :class:`UnsupportedModel` for control flow or ops ONNX Runtime (CPU) cannot run."""
    local_functions = {(f.domain, f.name) for f in model.functions}
    kernels = _cpu_kernels()
    for index, node, where in nodes_with_bodies(model.graph):
        where = f"node {node.name or '#' + str(index)!r} (op {_op_label(node)}){where}"
        domain = "" if node.domain == "ai.onnx" else node.domain
        if (domain, node.op_type) in local_functions:
            continue
        if (domain, node.op_type) in kernels or (domain, node.op_type) in _GRAPH_LEVEL_OPS or _is_onnx_function(domain, node.op_type):
            continue
        raise UnsupportedModel(
            f"{where} has no ONNX Runtime CPU kernel; expected a standard ONNX operator "
            "(or com.microsoft contrib op) that onnxruntime can run"
        )


def optimize_basic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run ONNX Runtime's basic optimizations and return the optimized model it saves.

    Basic level = constant folding and semantics-preserving rewrites that only use ONNX
    operators (BatchNorm into Conv, Identity/Dropout removal, Constant -> initializer).
    Raises :class:`UnsupportedModel` with ONNX Runtime's reason when it rejects the graph.
    """
    try:
        return _optimize_with_ort(model)
    except UnsupportedModel as exc:
        # onnx may be newer than onnxruntime: retry at the newest IR version it supports
        match = re.search(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)", str(exc))
        if not match or int(match.group(2)) < onnx.helper.find_min_ir_version_for(list(model.opset_import)):
            raise
        downgraded = _copy(model)
        downgraded.ir_version = int(match.group(2))
        logger.info("IR version %s -> %s for ONNX Runtime", match.group(1), match.group(2))
        return _optimize_with_ort(downgraded)


def _optimize_with_ort(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="splitinfer-prepare-") as tmp:
        src = pathlib.Path(tmp) / "in.onnx"
        dst = pathlib.Path(tmp) / "out.onnx"
        large = model.ByteSize() > _TWO_GIB // 2
        onnx.save_model(model, os.fspath(src), save_as_external_data=large, location="in.data")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = os.fspath(dst)
        options.log_severity_level = 3
        if large:
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "out.data")
            options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        try:
            ort.InferenceSession(os.fspath(src), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise UnsupportedModel(f"ONNX Runtime cannot load the model: {_ort_reason(exc)}") from exc
        optimized = onnx.load(os.fspath(dst), load_external_data=True)
    return optimized


def _ort_reason(exc: BaseException) -> str:
    """ONNX Runtime's message without its temporary path and C++ signature noise."""
    text = _first_line(exc)
    text = re.sub(r"Load model from \S+ failed:", "", text)
    text = re.sub(r"/onnxruntime_src/\S+ onnxruntime::[^)]*\)\s*", "", text)
    return text.strip()


def supports_batching(model: onnx.ModelProto) -> bool:
    """True when every output of a prepared model keeps the symbolic batch dim of the inputs.

    False means the graph hard-codes the batch somewhere (e.g. ``Reshape`` to ``[1, -1]``)
    and its tails must be served with batch 1 only.
    """
    dims = [tensor_shape(vi)[:1] for vi in model.graph.output]
    return bool(dims) and all(d == [BATCH_DIM] for d in dims)


def opset_version(model: onnx.ModelProto) -> int:
    """The model's default-domain (``ai.onnx``) opset; 0 when it imports none."""
    return next((int(o.version) for o in model.opset_import if o.domain in _ONNX_DOMAINS), 0)


def oip_datatype(elem_type: int) -> str:
    """The Open Inference Protocol datatype (``FP32``, ``INT64``...) of an ONNX element type;
    :class:`~protos.errors.DatatypeError` for types the protocol has no name for."""
    return from_numpy_dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def graph_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are real inputs (not initializers)."""
    inits = {t.name for t in graph.initializer}
    return [vi for vi in graph.input if vi.name not in inits]


def value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Every typed value in the graph by name: inputs, intermediates and outputs."""
    graph = model.graph
    out: dict[str, onnx.ValueInfoProto] = {}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        out[vi.name] = vi
    return out


def tensor_shape(vi: onnx.ValueInfoProto) -> list[int | str]:
    """Dims of a value: ints, dim_param strings, or ``"?"`` when unknown."""
    dims: list[int | str] = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append("?")
    return dims


def has_full_shape(vi: onnx.ValueInfoProto) -> bool:
    """True for a typed tensor of known rank whose dims are all known (dim 0 may be symbolic)."""
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not tt.HasField("shape") or tt.elem_type == 0:
        return False
    dims = tensor_shape(vi)
    if dims and dims[0] == "?":
        return False
    return all(isinstance(d, int) for d in dims[1:])


# --------------------------------------------------------------------------- steps


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _op_label(node: onnx.NodeProto) -> str:
    return f"{node.domain}::{node.op_type}" if node.domain not in _ONNX_DOMAINS else node.op_type


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@functools.lru_cache(maxsize=1)
def _cpu_kernels() -> frozenset[tuple[str, str]]:
    from onnxruntime.capi import onnxruntime_pybind11_state as C

    pairs = set()
    for kdef in C.get_all_opkernel_def():
        if kdef.provider == "CPUExecutionProvider":
            pairs.add(("" if kdef.domain == "ai.onnx" else kdef.domain, kdef.op_name))
    return frozenset(pairs)


def _is_onnx_function(domain: str, op_type: str) -> bool:
    """True for ONNX ops defined as functions (ONNX Runtime inlines them)."""
    try:
        schema = onnx.defs.get_schema(op_type, domain=domain)
    except onnx.defs.SchemaError:
        return False
    return bool(schema.has_function or schema.has_context_dependent_function)


def _drop_initializer_inputs(model: onnx.ModelProto) -> None:
    """IR 3 lists weights as graph inputs, which blocks constant folding: drop them."""
    inits = {t.name for t in model.graph.initializer}
    keep = [vi for vi in model.graph.input if vi.name not in inits]
    if len(keep) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(keep)
        model.ir_version = max(model.ir_version, 4)


def _set_input_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> None:
    inputs = {vi.name: vi for vi in graph_inputs(model.graph)}
    unknown = sorted(set(input_shapes) - set(inputs))
    if unknown:
        raise UnsupportedModel(f"input_shapes names {unknown} that are not graph inputs; inputs are {sorted(inputs)}")
    for name, shape in input_shapes.items():
        tt = inputs[name].type.tensor_type
        tt.shape.Clear()
        for d in shape:
            tt.shape.dim.add().dim_value = int(d)
    for vi in inputs.values():
        _set_batch_dim(vi)
        missing = [i for i, d in enumerate(tensor_shape(vi)) if i > 0 and not isinstance(d, int)]
        if missing or not vi.type.tensor_type.HasField("shape"):
            logger.warning(
                "graph input %r has shape %s with symbolic dims %s; activation sizes use the shape "
                "observed on a probe run (pass input_shapes to fix them)", vi.name, tensor_shape(vi), missing,
            )


def _set_batch_dim(vi: onnx.ValueInfoProto) -> None:
    tt = vi.type.tensor_type
    if vi.type.HasField("tensor_type") and tt.HasField("shape") and len(tt.shape.dim) >= 1:
        dim = tt.shape.dim[0]
        if not dim.HasField("dim_value") or dim.dim_value in (1, 0, -1) or dim.HasField("dim_param"):
            dim.Clear()
            dim.dim_param = BATCH_DIM


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    if model.ByteSize() > _TWO_GIB:
        logger.warning("model is over 2 GiB; skipping in-memory ONNX shape inference")
        return model
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError or RuntimeError on odd graphs
        logger.warning("ONNX shape inference failed (%s); shapes come from a probe run", _first_line(exc))
        return model


def _remove_dead_nodes(graph: onnx.GraphProto) -> None:
    """Drop nodes whose outputs never reach a graph output, and unused initializers."""
    producer = {out: node for node in graph.node for out in node.output if out}
    needed = {o.name for o in graph.output}
    live: set[int] = set()
    stack = [producer[n] for n in needed if n in producer]
    while stack:
        node = stack.pop()
        if id(node) in live:
            continue
        live.add(id(node))
        for name in node_inputs(node):
            if name in producer and id(producer[name]) not in live:
                stack.append(producer[name])
    kept = [n for n in graph.node if id(n) in live]
    if len(kept) != len(graph.node):
        logger.debug("removed %d dead nodes", len(graph.node) - len(kept))
        del graph.node[:]
        graph.node.extend(kept)
    used = {name for node in graph.node for name in node_inputs(node)} | {o.name for o in graph.output}
    inits = [t for t in graph.initializer if t.name in used]
    if len(inits) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(inits)


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """Stable Kahn sort: keeps the file's order wherever it is already valid."""
    nodes = list(graph.node)
    producer_index = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    deps: list[set[int]] = [
        {producer_index[n] for n in node_inputs(node) if n in producer_index and producer_index[n] != i}
        for i, node in enumerate(nodes)
    ]
    users: dict[int, list[int]] = defaultdict(list)
    for i, ds in enumerate(deps):
        for d in ds:
            users[d].append(i)
    remaining = [len(ds) for ds in deps]
    import heapq

    ready = [i for i, r in enumerate(remaining) if r == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            remaining[u] -= 1
            if remaining[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        stuck = [nodes[i].name or nodes[i].op_type for i in range(len(nodes)) if remaining[i] > 0][:5]
        raise UnsupportedModel(f"the graph has a cycle through nodes {stuck}; expected a DAG")
    if order != list(range(len(nodes))):
        del graph.node[:]
        graph.node.extend(nodes[i] for i in order)


def _prune_opsets(model: onnx.ModelProto) -> None:
    """Keep only the operator domains the nodes use (ONNX Runtime declares all it knows)."""
    used = {n.domain for n in model.graph.node} | {"", "ai.onnx"} | {f.domain for f in model.functions}
    keep = [o for o in model.opset_import if o.domain in used]
    if len(keep) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(keep)


def _make_batch_symbolic(graph: onnx.GraphProto) -> None:
    for vi in graph_inputs(graph):
        _set_batch_dim(vi)
    for vi in graph.output:
        _set_batch_dim(vi)


def _fill_missing_shapes(model: onnx.ModelProto) -> None:
    """Give every dynamic value a type and shape; run the model once when inference left holes."""
    graph = model.graph
    known = value_infos(model)
    constants = constant_values(graph)
    wanted = [
        out for node in graph.node for out in node.output
        if out and out not in constants and not (out in known and has_full_shape(known[out]))
    ]
    if not wanted:
        return
    logger.info("shape inference left %d values without a full shape; probing with one run", len(wanted))
    observed = _probe_shapes(model, wanted)
    outputs = {o.name for o in graph.output}
    for name in wanted:
        if name not in observed:
            continue
        elem_type, shape = observed[name]
        dims: list[int | str] = list(shape)
        if dims and dims[0] == 1:
            dims[0] = BATCH_DIM
        vi = helper.make_tensor_value_info(name, elem_type, dims)
        if name in outputs:
            for out in graph.output:
                if out.name == name:
                    out.CopyFrom(vi)
        else:
            for existing in list(graph.value_info):
                if existing.name == name:
                    graph.value_info.remove(existing)
            graph.value_info.append(vi)


def _probe_shapes(model: onnx.ModelProto, names: Iterable[str]) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Run the model on zeros (batch 1) exposing ``names`` as outputs; shapes and types seen."""
    import onnxruntime as ort

    probe = _copy(model)
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {}
    for vi in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in vi.shape]
        dtype = numpy_dtype_for_ort_type(vi.type)
        feeds[vi.name] = np.zeros(shape, dtype=np.float32 if dtype is None else dtype)
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, feeds)
    result = {}
    for name, value in zip(names, values):
        arr = np.asarray(value)
        result[name] = (helper.np_dtype_to_tensor_dtype(arr.dtype), tuple(int(d) for d in arr.shape))
    return result


def constant_values(graph: onnx.GraphProto) -> set[str]:
    """Names whose value does not depend on any graph input (initializers and what they feed)."""
    dynamic = {vi.name for vi in graph_inputs(graph)}
    for node in graph.node:
        if any(name in dynamic for name in node_inputs(node)):
            dynamic.update(out for out in node.output if out)
    produced = {out for node in graph.node for out in node.output if out}
    inits = {t.name for t in graph.initializer}
    return (produced | inits) - dynamic


def elem_type_of(vi: onnx.ValueInfoProto) -> int:
    return int(vi.type.tensor_type.elem_type) if vi.type.HasField("tensor_type") else TensorProto.UNDEFINED
