"""Early exits trained without labels (issue 16 part 2).

An exit is a small model on a cut's activation that predicts what the full model would
say, so a confident frame can finish on the edge right after the head::

    head outputs --(pool + linear)--> class scores      "classifier" exit
    head outputs --(1x1 conv, relu, 1x1 conv, max)--> P(anything here)   "objectness" exit

Recipe (:func:`partitioner.exit_stage.add_exits` does it for a written bundle; the steps are here):

1. Run the bundle's head of the cut (what the edge computes) and the FP32 full model (the
   teacher) on unlabelled frames: a training source and a held-out source that share no frame.
2. Fit the exit by distillation with the shared trainer (:mod:`partitioner.training`):
   ``kd_loss`` against the teacher's logits (classifier), binary cross-entropy against the
   teacher's top detection score (objectness). Deterministic for a seed.
3. Calibrate the confidence threshold on the held-out frames (:func:`calibrate_threshold`):
   the lowest threshold whose exiting frames agree with FP32 at least as well as the
   target, by default the bundle's JPEG baseline (``manifest.evaluation.baseline``, the
   fidelity gate's metric), so exiting never does worse than sending the frame to the cloud.
4. Build the exit as an ONNX model with ``onnx.helper`` (no exporter), profile it, and
   record it in the cut (``Cut.exit_head`` + ``Cut.early_exit``; :mod:`protos.exits` reads them).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


if TYPE_CHECKING:
    from partitioner.training import TrainReport

__all__ = ["Calibration", "Dequantize", "ExitFit", "build_classifier_exit", "build_objectness_exit",
           "calibrate_threshold", "classifier_confidence", "fit_classifier_exit", "fit_objectness_exit",
           "profile_exit_ms", "run_onnx"]

logger = logging.getLogger(__name__)

OBJECTNESS_WIDTH = 16  # channels of the objectness exit's hidden 1x1 conv


@dataclass(frozen=True)
class Calibration:
    """A threshold and what it does on the held-out frames."""

    threshold: float
    frames: int
    exit_rate: float  # fraction of held-out frames with confidence >= threshold
    agreement: float  # fraction of those that agree with FP32 (1.0 when none exit)
    target: float


def calibrate_threshold(confidence: np.ndarray, agrees: np.ndarray, *, target: float,
                        min_exits: int = 1) -> Calibration:
    """The lowest threshold at which the frames that exit agree with FP32 at least ``target``.

    ``confidence[i]`` is the exit's confidence on held-out frame i, ``agrees[i]`` whether its
    answer matches the FP32 model's. Frames exit when ``confidence >= threshold``; ties exit
    together, so only thresholds equal to an observed confidence are candidates. When no
    threshold reaches ``target`` with at least ``min_exits`` exiting frames, the threshold
    is 1.0 and the exit rate what 1.0 gives (usually 0).
    """
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    agrees = np.asarray(agrees, dtype=bool).ravel()
    if confidence.shape != agrees.shape or confidence.size == 0:
        raise ValueError(f"calibration needs one agreement per confidence; got {confidence.size} confidences "
                         f"and {agrees.size} agreements")
    if not np.all(np.isfinite(confidence)):
        raise ValueError("calibration confidences must be finite numbers")
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target {target!r} is not in [0, 1]")
    order = np.argsort(-confidence, kind="stable")
    conf, ok = confidence[order], agrees[order]
    cum_ok = np.cumsum(ok)
    best = None
    for k in range(1, conf.size + 1):
        if k < conf.size and conf[k] == conf[k - 1]:
            continue  # a threshold cannot split tied confidences
        if k >= min_exits and cum_ok[k - 1] / k >= target:
            best = k
    n = conf.size
    if best is None:
        exiting = confidence >= 1.0
        agreement = float(agrees[exiting].mean()) if exiting.any() else 1.0
        return Calibration(1.0, n, float(exiting.mean()), agreement, target)
    threshold = float(min(max(conf[best - 1], np.nextafter(0.0, 1.0)), 1.0))
    return Calibration(threshold, n, best / n, float(cum_ok[best - 1] / best), target)


# --------------------------------------------------------------------------- ONNX builders


@dataclass(frozen=True)
class Dequantize:
    """The cut tensor travels as 8-bit codes: real = (q - zero_point) * scale (per tensor)."""

    scale: float
    zero_point: int
    datatype: str  # "UINT8" or "INT8"

    def apply(self, q: np.ndarray) -> np.ndarray:
        return ((np.asarray(q, dtype=np.float32) - self.zero_point) * self.scale).astype(np.float32)


def build_classifier_exit(weight: np.ndarray, bias: np.ndarray, *, input_name: str, input_shape: Sequence[int],
                          output_name: str, probabilities: bool, dequantize: Dequantize | None = None,
                          opset: int = 13) -> onnx.ModelProto:
    """[DequantizeLinear] -> GlobalAveragePool (4-D inputs) -> Flatten -> Gemm -> [Softmax when the
    model outputs probabilities]."""
    weight = np.asarray(weight, dtype=np.float32)
    bias = np.asarray(bias, dtype=np.float32)
    if weight.ndim != 2 or bias.shape != (weight.shape[0],):
        raise ValueError(f"exit weight {weight.shape} and bias {bias.shape}; expected (classes, channels) and (classes,)")
    shape = ["batch", *(int(d) if int(d) > 0 else f"d{i}" for i, d in enumerate(input_shape[1:], 1))]
    nodes, current = [], input_name
    inits = [numpy_helper.from_array(weight, "exit_weight"), numpy_helper.from_array(bias, "exit_bias")]
    elem = TensorProto.FLOAT
    if dequantize is not None:
        elem = TensorProto.UINT8 if dequantize.datatype == "UINT8" else TensorProto.INT8
        zp_dtype = np.uint8 if elem == TensorProto.UINT8 else np.int8
        inits += [numpy_helper.from_array(np.array(dequantize.scale, dtype=np.float32), "exit_q_scale"),
                  numpy_helper.from_array(np.array(dequantize.zero_point, dtype=zp_dtype), "exit_q_zp")]
        nodes.append(helper.make_node("DequantizeLinear", [current, "exit_q_scale", "exit_q_zp"], ["exit_real"]))
        current = "exit_real"
    if len(shape) == 4:
        nodes.append(helper.make_node("GlobalAveragePool", [current], ["exit_pooled"]))
        current = "exit_pooled"
    elif len(shape) != 2:
        raise ValueError(f"exit input {input_name!r} has shape {list(input_shape)}; expected NCHW or N x C")
    nodes.append(helper.make_node("Flatten", [current], ["exit_flat"], axis=1))
    logits = output_name if not probabilities else "exit_logits"
    nodes.append(helper.make_node("Gemm", ["exit_flat", "exit_weight", "exit_bias"], [logits], transB=1))
    if probabilities:
        nodes.append(helper.make_node("Softmax", [logits], [output_name], axis=1))
    graph = helper.make_graph(
        nodes, "classifier_exit",
        [helper.make_tensor_value_info(input_name, elem, shape)],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", weight.shape[0]])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="splitinfer-exits")
    onnx.checker.check_model(model)
    return model


def build_objectness_exit(params: dict[str, np.ndarray], *, input_name: str, input_shape: Sequence[int],
                          output_name: str = "exit_objectness", opset: int = 13) -> onnx.ModelProto:
    """Conv1x1 -> Relu -> Conv1x1 -> GlobalMaxPool -> Sigmoid -> [N, 1] probability of anything in the frame."""
    shape = ["batch", *(int(d) if int(d) > 0 else f"d{i}" for i, d in enumerate(input_shape[1:], 1))]
    if len(shape) != 4:
        raise ValueError(f"objectness exit input {input_name!r} has shape {list(input_shape)}; expected NCHW")
    nodes = [
        helper.make_node("Conv", [input_name, "obj_w1", "obj_b1"], ["obj_h"]),
        helper.make_node("Relu", ["obj_h"], ["obj_r"]),
        helper.make_node("Conv", ["obj_r", "obj_w2", "obj_b2"], ["obj_map"]),
        helper.make_node("GlobalMaxPool", ["obj_map"], ["obj_max"]),
        helper.make_node("Flatten", ["obj_max"], ["obj_flat"], axis=1),
        helper.make_node("Sigmoid", ["obj_flat"], [output_name]),
    ]
    inits = [numpy_helper.from_array(np.asarray(params[k], dtype=np.float32), f"obj_{k}")
             for k in ("w1", "b1", "w2", "b2")]
    graph = helper.make_graph(nodes, "objectness_exit",
                              [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", 1])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="splitinfer-exits")
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class ExitFit:
    """A trained exit: its ONNX model and the trainer's report."""

    model: onnx.ModelProto
    report: TrainReport


def _pooled(activations: np.ndarray) -> np.ndarray:
    a = np.asarray(activations, dtype=np.float32)
    return a.mean(axis=(2, 3)) if a.ndim == 4 else a.reshape(a.shape[0], -1)


def fit_classifier_exit(train_act: np.ndarray, train_logits: np.ndarray, heldout_act: np.ndarray,
                        heldout_logits: np.ndarray, config: object, *, input_name: str, output_name: str,
                        probabilities: bool, temperature: float = 4.0, dequantize: Dequantize | None = None) -> ExitFit:
    """Distil the teacher's class scores into pooling + a linear layer on the cut activation.

    ``*_act`` are activations ``[N, C, H, W]`` (or ``[N, C]``), ``*_logits`` the teacher's
    scores ``[N, K]`` on the same frames (logits; pass log-probabilities for a model that
    outputs probabilities). ``config`` is a :class:`partitioner.training.TrainConfig`.
    """
    import torch

    from partitioner import training

    real = dequantize.apply if dequantize is not None else (lambda a: a)
    x_train, x_held = _pooled(real(train_act)), _pooled(real(heldout_act))
    t_train = np.asarray(train_logits, dtype=np.float32).reshape(len(x_train), -1)
    t_held = np.asarray(heldout_logits, dtype=np.float32).reshape(len(x_held), -1)
    channels, classes = x_train.shape[1], t_train.shape[1]
    torch.manual_seed(getattr(config, "seed", 0))
    linear = torch.nn.Linear(channels, classes)

    def loss_fn(rows: torch.Tensor) -> torch.Tensor:  # one row = pooled features | teacher logits
        return training.kd_loss(linear(rows[:, :channels]), rows[:, channels:], temperature)

    report = training.train(linear, loss_fn, torch.from_numpy(np.concatenate([x_train, t_train], axis=1)),
                            torch.from_numpy(np.concatenate([x_held, t_held], axis=1)), config,  # type: ignore[arg-type]
                            description=f"exit at {input_name}")
    weight = linear.weight.detach().numpy().copy()
    bias = linear.bias.detach().numpy().copy()
    model = build_classifier_exit(weight, bias, input_name=input_name, input_shape=np.shape(train_act),
                                  output_name=output_name, probabilities=probabilities, dequantize=dequantize)
    return ExitFit(model, report)


def fit_objectness_exit(train_act: np.ndarray, train_target: np.ndarray, heldout_act: np.ndarray,
                        heldout_target: np.ndarray, config: object, *, input_name: str) -> ExitFit:
    """Distil "is anything here" (the teacher's top detection score, in [0, 1]) into a tiny conv."""
    import torch

    from partitioner import training

    a_train = np.asarray(train_act, dtype=np.float32)
    a_held = np.asarray(heldout_act, dtype=np.float32)
    if a_train.ndim != 4:
        raise ValueError(f"objectness exit needs NCHW activations; got shape {a_train.shape}")
    chw = a_train.shape[1:]
    size = int(np.prod(chw))
    torch.manual_seed(getattr(config, "seed", 0))
    net = torch.nn.Sequential(torch.nn.Conv2d(chw[0], OBJECTNESS_WIDTH, 1), torch.nn.ReLU(),
                              torch.nn.Conv2d(OBJECTNESS_WIDTH, 1, 1))

    def loss_fn(rows: torch.Tensor) -> torch.Tensor:  # one row = flattened activation | target
        x = rows[:, :size].reshape(-1, *chw)
        score = net(x).amax(dim=(1, 2, 3))
        return torch.nn.functional.binary_cross_entropy_with_logits(score, rows[:, size])

    def rows(a: np.ndarray, t: np.ndarray) -> torch.Tensor:
        target = np.clip(np.asarray(t, dtype=np.float32).reshape(-1, 1), 0.0, 1.0)
        return torch.from_numpy(np.concatenate([a.reshape(len(a), -1), target], axis=1))

    report = training.train(net, loss_fn, rows(a_train, train_target), rows(a_held, heldout_target),
                            config, description=f"objectness exit at {input_name}")  # type: ignore[arg-type]
    state = net.state_dict()
    params = {name: state[key].detach().numpy() for name, key in
              (("w1", "0.weight"), ("b1", "0.bias"), ("w2", "2.weight"), ("b2", "2.bias"))}
    model = build_objectness_exit(params, input_name=input_name, input_shape=a_train.shape)
    return ExitFit(model, report)


# --------------------------------------------------------------------------- running


def run_onnx(model: onnx.ModelProto | str, feeds: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """Every output of ``model`` on each feed (one run per feed, one thread)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    data = model if isinstance(model, str) else model.SerializeToString()
    session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    inputs = [i.name for i in session.get_inputs()]
    return [session.run(names, {n: feed[n] for n in inputs}) for feed in feeds]


def softmax_rows(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def classifier_confidence(scores: np.ndarray, *, probabilities: bool) -> np.ndarray:
    """Top probability per row (softmax first unless the scores already are probabilities)."""
    p = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1) if probabilities else softmax_rows(scores)
    return p.max(axis=1)


def profile_exit_ms(model: onnx.ModelProto, feed: dict[str, np.ndarray], runs: int = 20) -> float:
    """Median time of one exit run (ms), one thread, after a warm-up."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    inputs = {i.name: feed[i.name] for i in session.get_inputs()}
    session.run(names, inputs)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(names, inputs)
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.median(times))
