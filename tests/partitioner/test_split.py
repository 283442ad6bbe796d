"""Splitting a prepared model into head and tail."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from partitioner.cut_selection import select_cuts
from partitioner.cuts import enumerate_cuts
from partitioner.errors import CutNotFound
from partitioner.graph import prepare_model, tensor_shape
from partitioner.split import split_model
from partitioner.evaluation import make_session, run_model


def _initializer_names(model: onnx.ModelProto) -> set[str]:
    return {t.name for t in model.graph.initializer}


def _reads(model: onnx.ModelProto) -> set[str]:
    return {x for n in model.graph.node for x in n.input}


def test_head_outputs_and_tail_inputs_are_the_cut_tensors(prepared_mobilenet_v2) -> None:
    (cut,) = select_cuts(prepared_mobilenet_v2, ["/features/features.5/Add_output_0,/features/features.6/conv/conv.2/Conv_output_0"])
    head, tail = split_model(prepared_mobilenet_v2, cut)
    assert [o.name for o in head.graph.output] == list(cut.tensors)
    assert [i.name for i in tail.graph.input] == list(cut.tensors)
    assert [i.name for i in head.graph.input] == ["input"]
    assert [o.name for o in tail.graph.output] == ["output"]
    for vi in list(head.graph.output) + list(tail.graph.input):
        assert tensor_shape(vi) == ["batch", 32, 28, 28]
    onnx.checker.check_model(head, full_check=True)
    onnx.checker.check_model(tail, full_check=True)


def test_every_node_lands_on_exactly_one_side(prepared_mobilenet_v2) -> None:
    full_nodes = [tuple(n.output) for n in prepared_mobilenet_v2.graph.node]
    for cut in enumerate_cuts(prepared_mobilenet_v2)[1:-1:7]:
        head, tail = split_model(prepared_mobilenet_v2, cut)
        head_nodes = [tuple(n.output) for n in head.graph.node]
        tail_nodes = [tuple(n.output) for n in tail.graph.node]
        assert not set(head_nodes) & set(tail_nodes), cut.id
        assert sorted(head_nodes + tail_nodes) == sorted(full_nodes), cut.id


def test_initializers_go_only_where_used(prepared_mobilenet_v2) -> None:
    cands = {c.id: c for c in enumerate_cuts(prepared_mobilenet_v2)}
    head, tail = split_model(prepared_mobilenet_v2, cands["features_6"])
    for part in (head, tail):
        assert _initializer_names(part) <= _reads(part)
    shared = _initializer_names(head) & _initializer_names(tail)
    sizes = {t.name: int(np.prod(t.dims)) for t in prepared_mobilenet_v2.graph.initializer}
    assert all(sizes[name] <= 1 for name in shared), f"weights on both sides: {shared}"  # Clip bounds only
    assert _initializer_names(head) | _initializer_names(tail) == _initializer_names(prepared_mobilenet_v2)
    assert "classifier.1.weight" in _initializer_names(tail) and "classifier.1.weight" not in _initializer_names(head)
    assert head.ByteSize() < tail.ByteSize()


def test_tail_accepts_any_batch_size(prepared_mobilenet_v2, imagenet_frames) -> None:
    cands = {c.id: c for c in enumerate_cuts(prepared_mobilenet_v2)}
    head, tail = split_model(prepared_mobilenet_v2, cands["features_13"])
    batch = np.concatenate(imagenet_frames)
    (act,) = make_session(head).run(None, {"input": batch})
    assert act.shape == (3, 96, 14, 14)
    (logits,) = make_session(tail).run(None, {cands["features_13"].tensors[0]: act})
    (want,) = make_session(prepared_mobilenet_v2).run(None, {"input": batch})
    np.testing.assert_allclose(logits, want, atol=1e-4, rtol=1e-4)


def test_input_and_output_ends(prepared_mobilenet_v2) -> None:
    cands = enumerate_cuts(prepared_mobilenet_v2)
    head, tail = split_model(prepared_mobilenet_v2, cands[0])
    assert head is None and tail.SerializeToString() == prepared_mobilenet_v2.SerializeToString()
    head, tail = split_model(prepared_mobilenet_v2, cands[-1])
    assert tail is None and head.SerializeToString() == prepared_mobilenet_v2.SerializeToString()


def test_graph_output_inside_the_head_passes_through_the_tail(fpn_model, fpn_frames) -> None:
    model = prepare_model(fpn_model)
    (cut,) = select_cuts(model, ["logits,p3,backbone/c2,backbone/c1"])
    head, tail = split_model(model, cut)
    assert "logits" in [i.name for i in tail.graph.input]
    assert [o.name for o in tail.graph.output] == ["logits", "p3", "p2", "seg"]
    head_out = dict(zip(cut.tensors, make_session(head).run(list(cut.tensors), {"images": fpn_frames[0]})))
    got = dict(zip(["logits", "p3", "p2", "seg"], make_session(tail).run(None, head_out)))
    (want,) = run_model(model, fpn_frames[:1])
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, atol=1e-5, rtol=1e-5)


def test_constant_subgraphs_are_copied_to_the_side_that_reads_them(fpn_model) -> None:
    model = prepare_model(fpn_model)
    cut = [c for c in enumerate_cuts(model) if c.tensors == ("backbone/c1",)][0]
    head, tail = split_model(model, cut)
    assert "up.scales" in _initializer_names(tail) and "up.scales" not in _initializer_names(head)


def test_tensors_that_do_not_separate_the_graph_are_refused(prepared_mobilenet_v2) -> None:
    with pytest.raises(CutNotFound, match=r"does not separate the graph|not needed after the cut"):
        split_model(prepared_mobilenet_v2, ["/features/features.6/conv/conv.2/Conv_output_0"])
    with pytest.raises(CutNotFound, match=r"\['no/such/tensor'\] are not in the graph"):
        split_model(prepared_mobilenet_v2, ["no/such/tensor"])


def test_a_split_onnx_rejects_is_an_unsupported_cut_not_a_crash() -> None:
    """The onnx package's light SqueezeNet: the two-tensor cut before its softmax yields a head
    the ONNX checker rejects (a tensor without a shape); the error names the cut so the
    pipeline rejects that cut and ships the others."""
    import pathlib

    from partitioner.config import PartitionConfig
    from partitioner.errors import UnsupportedModel
    from partitioner.pipeline import choose_candidates, prepare_source_model

    path = pathlib.Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_squeezenet.onnx"
    config = PartitionConfig(model=str(path), out_dir=pathlib.Path("unused"), task="other")
    model = prepare_source_model(onnx.load(str(path)), config)
    cut = next(c for c in choose_candidates(model, config) if "softmaxout_1_intermediate" in c.tensors)
    with pytest.raises(UnsupportedModel, match=r"the head of a split at \['_v_103', 'softmaxout_1_intermediate'\]"):
        split_model(model, cut)
