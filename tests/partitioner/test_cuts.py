"""Cut enumeration on real topologies: the property test at the heart of the partitioner.

Every enumerated cut is checked to separate the graph with an oracle written here
(independent of partitioner.cuts), on every model. Numerically (head then tail in ONNX
Runtime against the full model on real photos) every cut is verified on MobileNetV2,
the feature pyramid and the TensorFlow-style export; on the onnx package's light_*
models a spread subset is verified (all would take minutes: ResNet50 is 8 GFLOPs per
frame with 142 cuts, InceptionV2 has 775) -- at least 10 cuts along the graph, including
multi-tensor cuts and every cut that survives ranking.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

import numpy as np
import onnx
import pytest

from partitioner import cut_names
from partitioner.cut_selection import rank_cuts, select_cuts
from partitioner.cuts import CutCandidate, enumerate_cuts
from partitioner.errors import CutNotFound
from partitioner.graph import constant_values, graph_inputs, prepare_model
from partitioner.split import split_model
from partitioner.evaluation import run_model
from partitioner.verify import verify_split

logger = logging.getLogger(__name__)
CUT_ID = re.compile(r"^[a-z0-9][a-z0-9_]*$")


@dataclass
class Topology:
    name: str
    model: onnx.ModelProto
    frames: list
    max_tensors: int = 3
    verify_subset: int | None = None  # None: verify every cut numerically


@pytest.fixture(scope="module")
def topologies(prepared_mobilenet_v2, prepared_light_models, fpn_model, fpn_frames, odd_names_model,
               odd_names_frames, imagenet_frames) -> dict[str, Topology]:
    both = [np.concatenate(imagenet_frames[:2])]  # one batch of two real photos: also checks batching
    return {
        "mobilenet_v2": Topology("mobilenet_v2", prepared_mobilenet_v2, both),
        # light_resnet50 and light_inception_v2 hard-code batch 1 (Reshape to [1, N])
        "light_resnet50": Topology("light_resnet50", prepared_light_models["light_resnet50"], imagenet_frames[:1],
                                   verify_subset=10),
        "light_densenet121": Topology("light_densenet121", prepared_light_models["light_densenet121"], both,
                                      verify_subset=12),
        "light_inception_v2": Topology("light_inception_v2", prepared_light_models["light_inception_v2"],
                                       imagenet_frames[1:2], verify_subset=12),
        # four outputs, three of them also feeding later nodes: allow 5-tensor cuts to pass the backbone
        "fpn": Topology("fpn", prepare_model(fpn_model), [np.concatenate(fpn_frames)], max_tensors=5),
        "tf_style_torch": Topology("tf_style_torch", prepare_model(odd_names_model), odd_names_frames),
    }


TOPOLOGIES = ["mobilenet_v2", "light_resnet50", "light_densenet121", "light_inception_v2", "fpn", "tf_style_torch"]


# --------------------------------------------------------------------------- oracle


def separation_problem(model: onnx.ModelProto, tensors: tuple[str, ...]) -> str | None:
    """Independent check that ``tensors`` split the graph into disjoint head and tail."""
    graph = model.graph
    producer = {out: i for i, n in enumerate(graph.node) for out in n.output if out}
    constants = constant_values(graph)
    dynamic_nodes = {i for i, n in enumerate(graph.node) if any(o not in constants for o in n.output if o)}

    def backward(targets, stop):
        seen, stack = set(), [producer[t] for t in targets if t in producer and t not in stop]
        while stack:
            i = stack.pop()
            if i not in seen:
                seen.add(i)
                stack += [producer[x] for x in graph.node[i].input if x in producer and x not in stop]
        return seen & dynamic_nodes

    inputs = {vi.name for vi in graph_inputs(graph)}
    head = backward(tensors, stop=inputs)
    tail = backward([o.name for o in graph.output], stop=set(tensors))
    if head & tail:
        return f"nodes on both sides: {sorted(head & tail)[:5]}"
    if head | tail != dynamic_nodes:
        return f"nodes on neither side: {sorted(dynamic_nodes - head - tail)[:5]}"
    tail_reads = {x for i in tail for x in graph.node[i].input} | {o.name for o in graph.output}
    if (inputs & tail_reads) - set(tensors):
        return f"tail reads graph inputs {sorted((inputs & tail_reads) - set(tensors))}"
    if set(tensors) - tail_reads:
        return f"cut tensors {sorted(set(tensors) - tail_reads)} unused by the tail"
    return None


def spread_subset(cands: list[CutCandidate], k: int) -> list[CutCandidate]:
    """Both ends, every ranked cut, >= 3 multi-tensor cuts, the rest evenly along the order."""
    chosen = {c.id: c for c in rank_cuts(cands)}
    multi = [c for c in cands if c.kind == "multi"]
    for j in range(min(3, len(multi))):
        c = multi[round(j * (len(multi) - 1) / 2)]
        chosen[c.id] = c
    rest = [c for c in cands if c.id not in chosen]
    need = max(0, k - len(chosen))
    for j in range(min(need, len(rest))):
        c = rest[round(j * (len(rest) - 1) / max(1, need - 1))]
        chosen[c.id] = c
    return sorted(chosen.values(), key=lambda c: c.order)


# --------------------------------------------------------------------------- property tests


@pytest.mark.slow
@pytest.mark.parametrize("name", TOPOLOGIES)
def test_every_enumerated_cut_reproduces_the_full_model(topologies, name: str) -> None:
    topo = topologies[name]
    start = time.monotonic()
    cands = enumerate_cuts(topo.model, max_tensors=topo.max_tensors)
    enumerate_s = time.monotonic() - start
    singles = sum(c.kind == "single" for c in cands)
    multis = sum(c.kind == "multi" for c in cands)
    logger.warning("%s: %d cuts (%d single, %d multi + 2 ends) enumerated in %.3f s",
                   name, len(cands), singles, multis, enumerate_s)
    assert cands[0].id == "input" and cands[-1].id == "output"
    assert singles >= 2 and multis >= 1, f"{name}: expected single- and multi-tensor cuts"
    assert [c.order for c in cands] == list(range(len(cands)))
    ids = [c.id for c in cands]
    assert len(set(ids)) == len(ids) and all(CUT_ID.match(i) for i in ids)
    assert len({frozenset(c.tensors) for c in cands}) == len(cands)
    for c in cands:
        assert 1 <= len(c.tensors) <= max(topo.max_tensors, len(topo.model.graph.output))
        assert c.is_end or separation_problem(topo.model, c.tensors) is None, (c.id, separation_problem(topo.model, c.tensors))
        assert c.activation_bytes > 0 and c.head_flops >= 0 and c.tail_flops >= 0
        assert c.head_flops + c.tail_flops == cands[-1].head_flops
        assert len(c.shapes) == len(c.datatypes) == len(c.tensors) and all(s[0] == -1 for s in c.shapes)

    to_verify = cands if topo.verify_subset is None else spread_subset(cands, topo.verify_subset)
    assert len(to_verify) >= min(10, len(cands))
    reference = run_model(topo.model, topo.frames)
    failures = []
    for c in to_verify:
        head, tail = split_model(topo.model, c)
        if head is not None:
            assert [o.name for o in head.graph.output] == list(c.tensors)
        if tail is not None:
            assert [i.name for i in tail.graph.input] == list(c.tensors)
        result = verify_split(topo.model, head, tail, topo.frames, reference=reference)
        if not (result.passed and result.top1_agreement == 1.0):
            failures.append((c.id, result))
    assert not failures, failures
    logger.warning("%s: verified %d/%d cuts numerically in %.1f s", name, len(to_verify), len(cands),
                   time.monotonic() - start)


def test_mobilenet_v2_ids_follow_torch_names(prepared_mobilenet_v2) -> None:
    cands = {c.id: c for c in enumerate_cuts(prepared_mobilenet_v2)}
    assert cands["features_6"].tensors == ("/features/features.6/Add_output_0",)
    assert cands["features_6"].shapes == ((-1, 32, 28, 28),) and cands["features_6"].datatypes == ("FP32",)
    assert cands["features_6"].activation_bytes == 32 * 28 * 28 * 4
    # the residual inside block 7 needs both the block input and the branch: a 2-tensor cut
    assert any(c.kind == "multi" and "/features/features.5/Add_output_0" in c.tensors for c in cands.values())


def test_mobilenet_v2_cost_model(prepared_mobilenet_v2) -> None:
    cands = enumerate_cuts(prepared_mobilenet_v2)
    full = cands[-1]
    assert 595e6 <= full.head_flops <= 610e6  # ~300M multiply-adds
    assert full.head_params == cands[0].tail_params == 3_504_872 - 17_054  # BN folded into conv biases
    assert cands[0].head_flops == 0 and cands[0].activation_bytes == 3 * 224 * 224 * 4
    assert full.activation_bytes == 1000 * 4


def test_rank_drops_dominated_and_keeps_ends(prepared_mobilenet_v2) -> None:
    cands = enumerate_cuts(prepared_mobilenet_v2)
    ranked = rank_cuts(cands)
    assert ranked[0].id == "input" and ranked[-1].id == "output"
    assert [c.order for c in ranked] == sorted(c.order for c in ranked)
    kept = {c.id for c in ranked}
    for c in ranked:
        if c.is_end:
            continue
        dominators = [o for o in cands if o.activation_bytes < c.activation_bytes and o.head_flops < c.head_flops]
        assert not dominators, f"{c.id} is dominated by {dominators[0].id}"
    for c in cands:
        if c.id not in kept:
            assert any(o.activation_bytes <= c.activation_bytes and o.head_flops <= c.head_flops
                       for o in ranked if o.id != c.id), c.id
    # a cut that sends more than the input frame after doing work is never worth it
    assert "features_0_2" not in kept
    limited = rank_cuts(cands, max_cuts=4)
    assert len(limited) == 4 and limited[0].id == "input" and limited[-1].id == "output"


def test_rank_keeps_a_pareto_cut_and_drops_its_dominated_twin() -> None:
    def cand(cid: str, order: int, bytes_: int, flops: int) -> CutCandidate:
        return CutCandidate(cid, cid, (cid,), order, bytes_, flops, 0, 0, 0)

    cands = [cand("input", 0, 600, 0), cand("a", 1, 1000, 10), cand("b", 2, 300, 20), cand("c", 3, 400, 30),
             cand("d", 4, 300, 20), cand("output", 5, 4, 100)]
    assert [c.id for c in rank_cuts(cands)] == ["input", "d", "output"]


# --------------------------------------------------------------------------- user-requested cuts


def test_select_cuts_by_tensor_name_id_and_multi_tensor(prepared_mobilenet_v2) -> None:
    chosen = select_cuts(prepared_mobilenet_v2, [
        "/features/features.6/Add_output_0",
        "features_14_conv_2",
        "/features/features.5/Add_output_0,/features/features.6/conv/conv.2/Conv_output_0",
        "input", "output",
    ])
    assert [c.id for c in chosen][:2] == ["features_6", "features_14_conv_2"]
    assert chosen[2].tensors == ("/features/features.5/Add_output_0", "/features/features.6/conv/conv.2/Conv_output_0")
    assert [c.id for c in chosen][3:] == ["input", "output"]
    (again,) = select_cuts(prepared_mobilenet_v2, [chosen[2].display_name])  # "a+b" as the report shows it
    assert again == chosen[2]


def test_select_cut_beyond_max_tensors_is_validated_and_splits(fpn_model, fpn_frames) -> None:
    model = prepare_model(fpn_model)
    (cut,) = select_cuts(model, ["logits,p3,backbone/c2,backbone/c1"])
    assert cut.kind == "multi" and len(cut.tensors) == 4 and CUT_ID.match(cut.id)
    head, tail = split_model(model, cut)
    assert verify_split(model, head, tail, fpn_frames).passed


def test_unknown_tensor_lists_nearest_candidates(prepared_mobilenet_v2) -> None:
    with pytest.raises(CutNotFound) as info:
        select_cuts(prepared_mobilenet_v2, ["/features/features.6/Add_output_9"])
    message = str(info.value)
    assert "'/features/features.6/Add_output_9' is not in the graph" in message
    assert "/features/features.6/Add_output_0" in message.split("nearest candidates:")[1]


def test_tensor_that_does_not_separate_the_graph_is_explained(prepared_mobilenet_v2) -> None:
    # inside the residual block 6 the skip connection (features.5's output) bypasses this tensor
    with pytest.raises(CutNotFound) as info:
        select_cuts(prepared_mobilenet_v2, ["/features/features.6/conv/conv.2/Conv_output_0"])
    message = str(info.value)
    assert "is not a valid cut" in message and "/features/features.5/Add_output_0" in message
    assert "nearest candidates:" in message and "features_5__features_6_conv_2" in message


def test_constant_and_redundant_tensors_are_refused(prepared_mobilenet_v2) -> None:
    weight = prepared_mobilenet_v2.graph.initializer[0].name
    with pytest.raises(CutNotFound, match="is a constant"):
        select_cuts(prepared_mobilenet_v2, [weight])
    with pytest.raises(CutNotFound, match="not needed after the cut"):
        select_cuts(prepared_mobilenet_v2, ["/features/features.6/Add_output_0,/features/features.3/Add_output_0"])


def test_tf_style_names_get_short_ids(topologies) -> None:
    cands = enumerate_cuts(topologies["tf_style_torch"].model)
    assert cut_names.common_prefix(c.tensors[0] for c in cands if not c.is_end) == ("StatefulPartitionedCall", "small_net")
    assert all(not c.id.startswith("statefulpartitionedcall") for c in cands)
    assert "identity_1" in {c.id for c in cands}  # the embedding output also feeds the classifier


def test_max_tensors_must_be_positive(prepared_mobilenet_v2) -> None:
    with pytest.raises(ValueError, match="max_tensors=0"):
        enumerate_cuts(prepared_mobilenet_v2, max_tensors=0)


def _two_input_model() -> onnx.ModelProto:
    """image -> Conv -> Relu -> GAP -> Flatten -> Gemm, then * temperature (a second input
    read only at the very end, so inner cuts must carry it across)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.normal(size=(6, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(6, 4)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["image", "w"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("GlobalAveragePool", ["relu"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["flat"]),
             helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
             helper.make_node("Mul", ["logits", "temperature"], ["scores"])]
    g = helper.make_graph(nodes, "two_inputs",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", 3, 16, 16]),
                           helper.make_tensor_value_info("temperature", TensorProto.FLOAT, ["B", 1])],
                          [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["B", 4])], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_a_second_input_read_late_travels_with_every_inner_cut(imagenet_frames) -> None:
    model = prepare_model(_two_input_model())
    cands = enumerate_cuts(model)
    assert cands[0].tensors == ("image", "temperature")
    inner = [c for c in cands if not c.is_end]
    assert inner and all("temperature" in c.tensors for c in inner)
    rng = np.random.default_rng(0)
    frames = [{"image": imagenet_frames[0][:, :, :16, :16], "temperature": rng.uniform(0.5, 2, (1, 1)).astype(np.float32)}]
    for c in cands:
        head, tail = split_model(model, c)
        assert verify_split(model, head, tail, frames).passed, c.id


def test_a_model_whose_output_ignores_the_input_cannot_be_split() -> None:
    from onnx import TensorProto, helper, numpy_helper

    from partitioner.errors import UnsupportedModel

    g = helper.make_graph(
        [helper.make_node("Relu", ["c"], ["y"]), helper.make_node("Relu", ["x"], ["unused"])], "const",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        initializer=[numpy_helper.from_array(np.array([1.0, -1.0], dtype=np.float32), "c")],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedModel, match="no node depends on a graph input"):
        enumerate_cuts(prepare_model(model))


def _shuffled_topologically(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """The same graph with its nodes listed in another (random) topological order."""
    import random

    rnd = random.Random(seed)
    nodes = list(model.graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    deps = [{producer[x] for x in n.input if x in producer} for n in nodes]
    done: set[int] = set()
    order: list[int] = []
    while len(order) < len(nodes):
        i = rnd.choice([k for k in range(len(nodes)) if k not in done and deps[k] <= done])
        done.add(i)
        order.append(i)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes[i] for i in order)
    return out


def test_enumeration_does_not_depend_on_the_files_node_order(prepared_light_models) -> None:
    model = prepared_light_models["light_inception_v2"]
    shuffled = _shuffled_topologically(model, seed=1)
    assert [n.output[0] for n in shuffled.graph.node] != [n.output[0] for n in model.graph.node]
    a = [(c.id, c.tensors, c.head_flops) for c in enumerate_cuts(model)]
    b = [(c.id, c.tensors, c.head_flops) for c in enumerate_cuts(shuffled)]
    assert a == b
    assert sum(len(t) > 1 for _, t, _ in a) > 500  # inception blocks: many small multi-tensor cuts


def test_frontier_fallback_finds_a_valid_subset(prepared_light_models) -> None:
    model = prepared_light_models["light_inception_v2"]
    exact = {frozenset(c.tensors) for c in enumerate_cuts(model)}
    fallback = enumerate_cuts(model, max_states=100)
    found = {frozenset(c.tensors) for c in fallback}
    assert found < exact and len(found) >= 100
    singles = {s for s in exact if len(s) == 1}
    assert singles <= found  # single-tensor cuts do not depend on the order
    for c in fallback[1:-1]:
        assert separation_problem(model, c.tensors) is None, c.id
