"""What an optimization step is judged by: size, work, speed and fidelity of the whole model.

* parameters: elements of the graph's float initializers;
* MACs: multiply-accumulates per frame of every Conv, Gemm and MatMul, from ONNX shape
  inference at batch 1 (FLOPs ≈ 2 × MACs);
* latency: single-thread ONNX Runtime, median of timed runs, every variant timed in the
  same round-robin so a busy machine slows them all alike (ratios stay comparable);
* fidelity: the task's metric against the original FP32 model on held-out frames, next to
  the cloud-only JPEG baseline on the same frames (:mod:`partitioner.fidelity`), and the gate.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from partitioner import calibration, evaluation, fidelity
from protos import bundle_pb2


def count_parameters(model: onnx.ModelProto) -> int:
    """Elements of the graph's floating-point initializers."""
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type in floats)


def _dims(value_info: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else 1 for d in value_info.type.tensor_type.shape.dim]


def count_macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of one frame (symbolic dimensions count as 1) in Conv, Gemm and MatMul nodes."""
    inferred = shape_inference.infer_shapes(model)
    shapes = {vi.name: _dims(vi) for vi in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    total = 0
    for node in inferred.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        w = shapes.get(node.input[1]) if len(node.input) > 1 else None
        if not out or not w:
            continue
        if node.op_type == "Conv":  # weight: out x in/groups x kh x kw
            total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type == "Gemm":
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            total += int(np.prod(out)) * int(w[1] if trans_b else w[0])
        elif node.op_type == "MatMul":
            total += int(np.prod(out)) * int(w[-2] if len(w) > 1 else w[0])
    return total


def time_models(models: Mapping[str, onnx.ModelProto], feed: Mapping[str, np.ndarray], *, threads: int = 1,
                warmup: int = 3, runs: int = 20) -> dict[str, float]:
    """Median ms of one run of each model on ``feed``, timed round-robin (one run of each per round)."""
    sessions = {name: evaluation.make_session(m, threads=threads) for name, m in models.items()}
    calls = {}
    for name, sess in sessions.items():
        inputs = {i.name: feed[i.name] for i in sess.get_inputs()}
        outputs = [o.name for o in sess.get_outputs()]
        calls[name] = (sess, outputs, inputs)
    samples: dict[str, list[float]] = {name: [] for name in models}
    for rnd in range(warmup + runs):
        for name, (sess, outputs, inputs) in calls.items():
            start = time.perf_counter()
            sess.run(outputs, inputs)
            if rnd >= warmup:
                samples[name].append((time.perf_counter() - start) * 1000.0)
    return {name: float(statistics.median(values)) for name, values in samples.items()}


@dataclass(frozen=True)
class HeldOut:
    """The original model's outputs on held-out frames, the JPEG baseline's score and the gate."""

    judge: evaluation.Judge
    baseline: fidelity.Score
    sources: tuple[str, ...]

    @property
    def feeds(self) -> Sequence[Mapping[str, np.ndarray]]:
        return self.judge.feeds

    def score(self, model: onnx.ModelProto) -> tuple[fidelity.Score, bool, str]:
        """(score, passes the gate, reason quoting the figures) of a full model on the held-out frames."""
        score = self.judge.score(evaluation.Pipeline(model, None))
        passed, reason = self.judge.gate.judge(score, self.baseline.value)
        return score, passed, reason


def held_out(model: onnx.ModelProto, spec: bundle_pb2.InputSpec, frames: calibration.FrameFeeds, gate: fidelity.Gate,
             task: str = "") -> HeldOut:
    """Score the cloud-only JPEG pipeline (frames JPEG-encoded at the spec's quality, FP32 model) against the
    FP32 model on the raw held-out frames, as ``partition`` does; the judge of every variant."""
    reference = tuple(evaluation.run_frames(evaluation.Pipeline(model, None), frames.evaluation))
    task = task or evaluation.infer_task(reference[0])
    decoded, _ = calibration.jpeg_roundtrip(frames.evaluation_bgr, int(spec.jpeg_quality) or 90, spec)
    jpeg_feeds = [{spec.tensor.name: x} for x in calibration.preprocess_frames(decoded, spec)]
    scorer = evaluation.Judge(task, gate, 0.0, reference, frames.evaluation)
    baseline = scorer.score(evaluation.Pipeline(model, None), jpeg_feeds)
    judge = evaluation.Judge(task, gate, baseline.value, reference, frames.evaluation)
    return HeldOut(judge=judge, baseline=baseline, sources=frames.evaluation_sources)


def model_from_bytes(data: bytes) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.ParseFromString(data)
    return model


def initializer_array(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)
