"""Running real frames through models and measuring how faithfully a split pipeline
reproduces the FP32 full model (pure measurement: nothing here changes a model).

* :func:`make_session`, :class:`Pipeline`, :func:`run_frames`, :func:`run_model` and
  :func:`collect_activations` run ONNX Runtime CPU sessions on in-memory models.
  ``run_frames`` batches frames when the models allow it and falls back to one frame
  at a time when they do not, so results never depend on batching beyond float rounding.
* :class:`Judge` runs a shipped pipeline (head, wire codec, tail) on the held-out
  frames and scores it against the full model's outputs with the task-aware measures of
  :mod:`partitioner.fidelity`, then applies the gate; :func:`infer_task` guesses the task
  from the outputs. :func:`compare_outputs` is the plain top-1/cosine/max-error summary.
* :func:`cosine`, :func:`is_classifier_like` and :func:`top1_agrees` are the per-output
  measures the FP32 verification (:mod:`partitioner.verify`) builds its verdict on.
"""
from __future__ import annotations

import logging
import pathlib
from dataclasses import dataclass, field
from typing import Mapping, Sequence, Union

import numpy as np
import onnx

from partitioner import fidelity
from protos import bundle_pb2

logger = logging.getLogger(__name__)

#: The absolute gate's minimum fidelity (``--gate absolute``).
DEFAULT_THRESHOLD = 0.99
#: Frames per batched run.
BATCH = 16

#: One model input: an array for a single-input model, or arrays by input name.
Frame = Union[np.ndarray, Mapping[str, np.ndarray]]
#: Per frame, the outputs of a model or pipeline in graph output order.
Outputs = Sequence[Sequence[np.ndarray]]


# --------------------------------------------------------------------------- running


INT8_ARITHMETIC = ("auto", "exact", "fused")
_QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger",
                            "ConvInteger"})


def host_int8_saturates(cpuinfo: str, machine: str) -> bool:
    """True on an x86 CPU without VNNI: ONNX Runtime's fused u8s8 kernels there add pairs of
    8-bit products in 16 bits (vpmaddubsw), which saturates, so a fused INT8 model computes
    something else than it does on a Pi (ARM kernels accumulate in 32 bits) or with VNNI."""
    if machine.lower() not in ("x86_64", "amd64", "i686", "i386"):
        return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return not ({"avx512_vnni", "avx_vnni"} & flags)


def resolve_int8_arithmetic(setting: str) -> str:
    """How fidelity runs INT8 models: "exact" (the quantized graph op by op, what the edge
    computes) or "fused" (ONNX Runtime's default kernels on this host); "auto" is exact
    where this host's fused kernels saturate (see :func:`host_int8_saturates`)."""
    if setting not in INT8_ARITHMETIC:
        raise ValueError(f"int8_arithmetic {setting!r} is not one of {', '.join(INT8_ARITHMETIC)}")
    if setting != "auto":
        return setting
    import platform

    try:
        cpuinfo = pathlib.Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        cpuinfo = ""
    return "exact" if host_int8_saturates(cpuinfo, platform.machine()) else "fused"


def make_session(model: onnx.ModelProto, *, threads: int = 0, exact_int8: bool = False):  # -> InferenceSession
    """An ONNX Runtime CPU session for an in-memory model (default optimizations);
    ``threads`` intra-op threads, 0 for ONNX Runtime's default. With ``exact_int8`` a model
    holding quantization ops runs without graph optimizations, so no fused INT8 kernel
    replaces the quantized arithmetic (see :func:`resolve_int8_arithmetic`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if exact_int8 and any(node.op_type in _QUANTIZED_OPS for node in model.graph.node):
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@dataclass
class Pipeline:
    """An ONNX Runtime head then tail (either may be None); the tail reads the head's outputs by name."""

    head: onnx.ModelProto | None
    tail: onnx.ModelProto | None
    threads: int = 0
    batchable: bool | None = None  # learned on the first batched run
    exact_int8: bool = False  # run quantization ops unfused (see make_session)
    _sessions: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._sessions = [make_session(m, threads=self.threads, exact_int8=self.exact_int8)
                          for m in (self.head, self.tail) if m is not None]

    def run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        values = dict(feed)
        outputs: list[np.ndarray] = []
        for sess in self._sessions:
            names = [i.name for i in sess.get_inputs()]
            missing = [n for n in names if n not in values]
            if missing:
                raise ValueError(f"pipeline stage needs inputs {missing}; have {sorted(values)}")
            out_names = [o.name for o in sess.get_outputs()]
            outputs = sess.run(out_names, {n: values[n] for n in names})
            values.update(zip(out_names, outputs))
        return outputs


def run_frames(
    pipeline: Pipeline, feeds: Sequence[Mapping[str, np.ndarray]], *, batch: int = BATCH
) -> list[list[np.ndarray]]:
    """Per-frame outputs of ``pipeline`` for batch-of-one ``feeds``.

    Frames run ``batch`` at a time (concatenated on dim 0) and are split again; a model
    that only accepts batch 1 (a hard-coded reshape, say) falls back to one at a time.
    """
    feeds = list(feeds)
    if batch > 1 and len(feeds) > 1 and pipeline.batchable is not False:
        try:
            out = _run_batched(pipeline, feeds, batch)
            pipeline.batchable = True
            return out
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types for shape errors
            if pipeline.batchable:
                raise
            logger.debug("batched run failed (%s); running frame by frame", exc)
            pipeline.batchable = False
    return [pipeline.run(feed) for feed in feeds]


def _run_batched(pipeline: Pipeline, feeds: list[Mapping[str, np.ndarray]], batch: int) -> list[list[np.ndarray]]:
    results: list[list[np.ndarray]] = []
    for start in range(0, len(feeds), batch):
        chunk = feeds[start : start + batch]
        if any(next(iter(f.values())).shape[0] != 1 for f in chunk):
            raise ValueError("batched runs need batch-of-one feeds")
        merged = {k: np.concatenate([f[k] for f in chunk], axis=0) for k in chunk[0]}
        outs = pipeline.run(merged)
        if any(o.shape[:1] != (len(chunk),) for o in outs):
            raise ValueError(f"outputs {[o.shape for o in outs]} do not carry the batch of {len(chunk)} on dim 0")
        results.extend([[o[i : i + 1] for o in outs] for i in range(len(chunk))])
    return results


def run_model(model: onnx.ModelProto, frames: Sequence[Frame], *, threads: int = 1) -> list[dict[str, np.ndarray]]:
    """Outputs of ``model`` for each frame (any batch), by output name, one run per frame."""
    session = make_session(model, threads=threads)
    return [run_session(session, frame) for frame in frames]


def run_session(session, frame: Frame) -> dict[str, np.ndarray]:
    """One run of an ONNX Runtime session: its outputs by name. Extra feeds are ignored."""
    if isinstance(frame, Mapping):
        feeds = {i.name: np.asarray(frame[i.name]) for i in session.get_inputs()}
    else:
        inputs = session.get_inputs()
        if len(inputs) != 1:
            names = [i.name for i in inputs]
            raise ValueError(f"the model has inputs {names}; pass each frame as a dict by input name")
        feeds = {inputs[0].name: np.asarray(frame)}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def collect_activations(
    head: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]], names: Sequence[str]
) -> dict[str, list[np.ndarray]]:
    """The values of the head outputs ``names`` on each feed (what would cross the cut)."""
    out_names = [o.name for o in head.graph.output]
    missing = [n for n in names if n not in out_names]
    if missing:
        raise ValueError(f"the head has no outputs {missing}; its outputs are {out_names}")
    acts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for outs in run_frames(Pipeline(head, None), feeds):
        values = dict(zip(out_names, outs))
        for n in names:
            acts[n].append(values[n])
    return acts


# --------------------------------------------------------------------------- measures


def is_classifier_like(value: np.ndarray) -> bool:
    """Per frame a vector of C > 1 float scores: ``[B, C]`` or ``[B, C, 1, 1]``."""
    if value.ndim < 2 or not np.issubdtype(value.dtype, np.floating):
        return False
    per_frame = value.shape[1:]
    return per_frame[0] > 1 and all(d == 1 for d in per_frame[1:])


def top1_agrees(have: np.ndarray, want: np.ndarray, tie_tolerance: float) -> bool:
    """Every batch row's argmax matches, or lands on a class tied for the top in ``want``
    (within ``tie_tolerance``, relative to the top score when that exceeds 1)."""
    h = have.reshape(have.shape[0], -1).astype(np.float64)
    w = want.reshape(want.shape[0], -1).astype(np.float64)
    for row_h, row_w in zip(h, w):
        top = float(row_w.max())
        if row_w[int(row_h.argmax())] < top - tie_tolerance * max(1.0, abs(top)):
            return False
    return True


def compare_outputs(reference: Outputs, candidate: Outputs) -> tuple[float, float, float]:
    """(top-1 agreement, mean cosine, max abs error) of per-frame outputs against a reference.

    Top-1 is the argmax over the last axis of every output, compared element by element;
    cosine is over each output flattened, averaged over frames and outputs.
    """
    if len(reference) != len(candidate) or not reference:
        raise ValueError(f"compare {len(candidate)} frames against {len(reference)} reference frames")
    agree = total = 0
    cosines: list[float] = []
    max_abs = 0.0
    for ref_outs, got_outs in zip(reference, candidate):
        for ref, got in zip(ref_outs, got_outs):
            ref = np.asarray(ref, dtype=np.float32)
            got = np.asarray(got, dtype=np.float32)
            if ref.shape != got.shape:
                raise ValueError(f"output shape {got.shape} differs from the reference {ref.shape}")
            if ref.ndim >= 1 and ref.shape[-1] > 1:
                a, b = ref.argmax(axis=-1), got.argmax(axis=-1)
                agree += int(np.sum(a == b))
                total += int(a.size)
            r, g = ref.ravel().astype(np.float64), got.ravel().astype(np.float64)
            denom = np.linalg.norm(r) * np.linalg.norm(g)
            cosines.append(float(r @ g / denom) if denom > 0 else float(np.array_equal(r, g)))
            if r.size:
                max_abs = max(max_abs, float(np.max(np.abs(r - g))))
    top1 = agree / total if total else 1.0
    return top1, float(np.mean(cosines)), max_abs


@dataclass(frozen=True)
class Judge:
    """Measures a pipeline on the held-out frames and applies the gate.

    ``reference`` holds the FP32 full model's outputs on ``feeds``; ``baseline`` is the
    cloud-only JPEG pipeline's value of the task's metric on the same frames (see
    :mod:`partitioner.fidelity`).
    """

    task: str
    gate: fidelity.Gate
    baseline: float
    reference: Outputs
    feeds: Sequence[Mapping[str, np.ndarray]]

    def score(self, pipeline: Pipeline, feeds: Sequence[Mapping[str, np.ndarray]] | None = None) -> fidelity.Score:
        """The pipeline's task-aware fidelity (on ``feeds`` when given: the same frames, decoded from a JPEG, say)."""
        got = run_frames(pipeline, self.feeds if feeds is None else feeds)
        return fidelity.score_outputs(self.task, self.reference, got, confident_at=self.gate.confident_at)

    def __call__(self, pipeline: Pipeline, *, remedy: str = "none",
                 feeds: Sequence[Mapping[str, np.ndarray]] | None = None) -> bundle_pb2.Fidelity:
        """The manifest's fidelity record of ``pipeline``, with the gate's verdict in ``passed``."""
        score = self.score(pipeline, feeds)
        passed, reason = self.gate.judge(score, self.baseline)
        logger.info("%s: %s", remedy, reason)
        return fidelity.to_proto(score, passed=passed, remedy=remedy, threshold=self.gate.required(self.baseline))


def infer_task(outputs: Sequence[np.ndarray]) -> str:
    """"classification" for one output of C > 1 float scores per frame, else "other"
    (detectors are named on the command line: their outputs vary too much to guess)."""
    if len(outputs) == 1 and is_classifier_like(np.asarray(outputs[0])):
        return "classification"
    return "other"
