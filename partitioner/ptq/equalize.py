"""Cross-layer equalization (Nagel et al., "Data-Free Quantization", 2019) of ONNX graphs.

For a pair ``Conv1 -> act -> Conv2`` where Conv1's output reaches only Conv2, output
channel ``i`` of Conv1 is divided by ``s_i`` and input channel ``i`` of Conv2 multiplied
by it, with ``s_i = sqrt(r1_i / r2_i)`` (``r`` the channel's largest absolute weight), so
both channels end with the same range ``sqrt(r1_i * r2_i)`` and per-tensor or per-channel
INT8 weights lose less. Sweeps over all pairs repeat until no channel moves by more
than :data:`TOLERANCE`.

The FP32 function is kept up to float error because ``act`` is positively homogeneous:
none, ``Relu``, ``Clip(0, m)`` (which becomes ``Relu`` then ``Min`` with the per-channel
bound ``m / s_i``, since a scalar Clip cannot hold one bound per channel), or an already
rewritten ``Relu -> Min``. Conv2 may be a plain or a depthwise convolution, so the
MobileNet triplet expand -> depthwise -> project equalizes as two pairs. Anything
else (shared weights, several consumers, other activations, grouped non-depthwise
convolutions) is left as it is. A model with no pair to move comes back unchanged.
Pure ModelProto -> ModelProto; nothing runs a model.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

logger = logging.getLogger(__name__)

#: A pair is rescaled when some channel's factor differs from 1 by more than this.
TOLERANCE = 1e-3
#: Most sweeps over all pairs.
MAX_SWEEPS = 200


@dataclass(frozen=True)
class _Pair:
    first: int  # node index of Conv1
    second: int  # node index of Conv2
    acts: tuple[int, ...]  # node indices between them (Relu | Clip | Relu, Min)


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def _conv_kind(node: onnx.NodeProto, inits: dict[str, np.ndarray]) -> str | None:
    """'dense' or 'depthwise' for a Conv with initializer weights (and bias), else None."""
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
        return None
    if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
        return None
    w = inits[node.input[1]]
    group = _attr(node, "group", 1)
    if group == 1:
        return "dense"
    if w.shape[1] == 1 and group == w.shape[0]:
        return "depthwise"
    return None


def _scalar(name: str, inits: dict[str, np.ndarray]) -> float | None:
    if name not in inits or inits[name].size != 1:
        return None
    return float(inits[name].reshape(()))


def _find_pairs(model: onnx.ModelProto, inits: dict[str, np.ndarray]) -> list[_Pair]:
    nodes = list(model.graph.node)
    outputs = {o.name for o in model.graph.output}
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    weight_uses: dict[str, int] = {}
    for node in nodes:
        for name in node.input[1:]:
            weight_uses[name] = weight_uses.get(name, 0) + 1

    def only_consumer(tensor: str) -> int | None:
        users = consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in outputs else None

    def owns_params(node: onnx.NodeProto) -> bool:
        return all(weight_uses.get(n, 0) == 1 for n in node.input[1:3] if n)

    pairs = []
    for i, node in enumerate(nodes):
        if _conv_kind(node, inits) is None or not owns_params(node):
            continue
        acts: list[int] = []
        nxt = only_consumer(node.output[0])
        while nxt is not None and nodes[nxt].op_type != "Conv":
            act = nodes[nxt]
            if act.op_type == "Relu" and not acts:
                pass
            elif act.op_type == "Clip" and not acts:
                low = _scalar(act.input[1], inits) if len(act.input) > 1 and act.input[1] else None
                high_ok = len(act.input) < 3 or not act.input[2] or (_scalar(act.input[2], inits) or -1.0) >= 0.0
                if low != 0.0 or not high_ok:
                    break
            elif act.op_type == "Min" and [nodes[a].op_type for a in acts] == ["Relu"]:
                bound = act.input[1] if act.input[0] == nodes[acts[-1]].output[0] else act.input[0]
                if bound not in inits or weight_uses.get(bound, 0) != 1 or inits[bound].ndim != 4:
                    break
            else:
                break
            acts.append(nxt)
            nxt = only_consumer(act.output[0])
        if nxt is None or nodes[nxt].op_type != "Conv" or nodes[nxt].input[0] != (nodes[acts[-1]] if acts else node).output[0]:
            continue
        if _conv_kind(nodes[nxt], inits) is None or not owns_params(nodes[nxt]):
            continue
        out_channels = inits[node.input[1]].shape[0]
        second = inits[nodes[nxt].input[1]]
        in_channels = second.shape[0] if _conv_kind(nodes[nxt], inits) == "depthwise" else second.shape[1]
        if out_channels == in_channels:
            pairs.append(_Pair(i, nxt, tuple(acts)))
    return pairs


def _scales(pair: _Pair, nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray]) -> np.ndarray:
    w1 = inits[nodes[pair.first].input[1]]
    w2 = inits[nodes[pair.second].input[1]]
    r1 = np.abs(w1.reshape(w1.shape[0], -1)).max(axis=1)
    if _conv_kind(nodes[pair.second], inits) == "depthwise":
        r2 = np.abs(w2.reshape(w2.shape[0], -1)).max(axis=1)
    else:
        r2 = np.abs(np.moveaxis(w2, 1, 0).reshape(w2.shape[1], -1)).max(axis=1)
    s = np.ones_like(r1)
    ok = (r1 > 0) & (r2 > 0)
    s[ok] = np.sqrt(r1[ok] / r2[ok])
    return s


def _apply(pair: _Pair, s: np.ndarray, nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray]) -> None:
    """Rescale the pair in ``inits`` (float64 working copies), its Min bound included."""
    first, second = nodes[pair.first], nodes[pair.second]
    w1 = inits[first.input[1]]
    inits[first.input[1]] = w1 / s.reshape((-1,) + (1,) * (w1.ndim - 1))
    if len(first.input) > 2 and first.input[2]:
        inits[first.input[2]] = inits[first.input[2]] / s
    w2 = inits[second.input[1]]
    if _conv_kind(second, inits) == "depthwise":
        inits[second.input[1]] = w2 * s.reshape((-1,) + (1,) * (w2.ndim - 1))
    else:
        inits[second.input[1]] = w2 * s.reshape((1, -1) + (1,) * (w2.ndim - 2))
    if len(pair.acts) == 2:
        bound = _min_bound(nodes[pair.acts[0]], nodes[pair.acts[1]])
        inits[bound] = inits[bound] / s.reshape(1, -1, 1, 1)


def _min_bound(relu: onnx.NodeProto, minimum: onnx.NodeProto) -> str:
    return minimum.input[1] if minimum.input[0] == relu.output[0] else minimum.input[0]


def _unfold_clips(model: onnx.ModelProto, pairs: list[_Pair], inits: dict[str, np.ndarray]) -> None:
    """Each pair's Clip(0, m) becomes Relu -> Min(m per channel); Clip(0) becomes Relu."""
    nodes = model.graph.node
    for pair in sorted(pairs, key=lambda p: -p.first):  # from the end, so earlier indices hold
        if len(pair.acts) != 1 or nodes[pair.acts[0]].op_type != "Clip":
            continue
        act = nodes[pair.acts[0]]
        high = _scalar(act.input[2], inits) if len(act.input) > 2 and act.input[2] else None
        if high is None:
            act.CopyFrom(helper.make_node("Relu", [act.input[0]], [act.output[0]], name=act.name))
            continue
        channels = inits[nodes[pair.first].input[1]].shape[0]
        bound, relu_out = f"{act.name}/per_channel_max", f"{act.output[0]}/relu"
        inits[bound] = np.full((1, channels, 1, 1), high, np.float64)
        minimum = helper.make_node("Min", [relu_out, bound], [act.output[0]], name=f"{act.name}/min")
        act.CopyFrom(helper.make_node("Relu", [act.input[0]], [relu_out], name=act.name))
        nodes.insert(pair.acts[0] + 1, minimum)


def _refold_clips(model: onnx.ModelProto, inits: dict[str, np.ndarray]) -> None:
    """Relu -> Min whose bound is the same for every channel becomes Clip(0, m) again."""
    nodes = model.graph.node
    producers = {out: i for i, n in enumerate(nodes) for out in n.output}
    for i in range(len(nodes) - 1, -1, -1):
        minimum = nodes[i]
        if minimum.op_type != "Min" or not minimum.name.endswith("/min"):
            continue
        relu_i = producers.get(minimum.input[0])
        if relu_i is None or nodes[relu_i].op_type != "Relu":
            continue
        bound = minimum.input[1]
        values = inits.get(bound)
        if values is None or not np.all(values == values.flat[0]):
            continue
        relu = nodes[relu_i]
        low, high = f"{relu.name}/clip_min", f"{relu.name}/clip_max"
        inits[low], inits[high] = np.array(0.0), np.array(float(values.flat[0]))
        relu.CopyFrom(helper.make_node("Clip", [relu.input[0], low, high], [minimum.output[0]], name=relu.name))
        del inits[bound]
        del nodes[i]


def equalize(model: onnx.ModelProto, *, tolerance: float = TOLERANCE, max_sweeps: int = MAX_SWEEPS) -> onnx.ModelProto:
    """A copy of ``model`` with every equalizable Conv pair's channel ranges balanced
    (see the module docstring); ``model`` itself is not modified, and a model where no
    channel would move by more than ``tolerance`` comes back unchanged."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    floats = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    inits = {name: a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) else a for name, a in floats.items()}
    pairs = _find_pairs(out, inits)
    nodes = list(out.graph.node)
    if all(np.max(np.abs(_scales(p, nodes, inits) - 1.0)) <= tolerance for p in pairs):
        return out
    _unfold_clips(out, pairs, inits)
    pairs = _find_pairs(out, inits)
    nodes = list(out.graph.node)
    worst, sweeps = float("inf"), 0
    while sweeps < max_sweeps and worst > tolerance:
        sweeps += 1
        worst = 0.0
        for pair in pairs:
            s = _scales(pair, nodes, inits)
            worst = max(worst, float(np.max(np.abs(s - 1.0))))
            _apply(pair, s, nodes, inits)
    if worst > tolerance:
        logger.warning("equalization stopped after %d sweeps with a channel still moving by %.2g", max_sweeps, worst)
    _refold_clips(out, inits)
    _write_initializers(out, inits, floats)
    logger.info("equalized %d conv pairs in %d sweeps", len(pairs), sweeps)
    return out


def _write_initializers(model: onnx.ModelProto, inits: dict[str, np.ndarray], originals: dict[str, np.ndarray]) -> None:
    kept = []
    for tensor in model.graph.initializer:
        if tensor.name not in inits:
            continue  # a bound the refold dropped
        value, original = inits[tensor.name], originals.get(tensor.name)
        dtype = original.dtype if original is not None else np.float32
        kept.append(numpy_helper.from_array(np.asarray(value).astype(dtype), tensor.name))
    names = {t.name for t in kept}
    kept += [numpy_helper.from_array(np.asarray(v).astype(np.float32), n) for n, v in inits.items() if n not in names]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
