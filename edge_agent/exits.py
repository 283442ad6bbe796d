"""The early-exit check (issue 16 part 3): the bundle's exit heads on ONNX Runtime.

:class:`EarlyExits` implements :class:`~edge_agent.stages.hooks.ExitCheck`. After the
head of a cut that has an exit (:mod:`protos.exits`), it runs the exit head on the head's
outputs; when the exit is confident enough the frame completes on the device (path
``exited``) with the exit's outputs, named like the full model's so the postprocessor
reads them unchanged:

* ``classifier``: confidence = top probability of the exit's class scores (softmax first
  when the manifest says the model outputs logits); exits when it is >= the threshold.
* ``objectness``: the exit gives P(anything in the frame); confidence of "nothing here" is
  ``1 - P``; exits with no detections (empty boxes/scores/labels) when it is >= the threshold.

Thresholds start at the bundle's calibrated ones; :meth:`EarlyExits.set_threshold` changes
them at run time (``splitctl exit-threshold``). Counts of frames checked and exited per cut
feed the policy's rates (:mod:`edge_agent.rates`), ``/metrics`` and ``splitctl status``.
Called from the head stage's thread; the counters and thresholds are read from others under
a small lock.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from edge_agent.errors import ConfigError
from edge_agent.head import HeadOutput
from protos import bundle_pb2
from protos.bundle import Bundle
from protos.exits import ExitSpec, exits_of

__all__ = ["EarlyExits", "ExitCount", "empty_detections"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExitCount:
    """Frames that reached a cut's exit check, how many exited, and the threshold in force."""

    cut_id: str
    checked: int
    exited: int
    threshold: float
    exit_ms: float  # mean measured exit-head time (the profiled one before the first run)

    @property
    def rate(self) -> Optional[float]:
        return self.exited / self.checked if self.checked else None


def empty_detections(spec: bundle_pb2.OutputSpec) -> dict[str, np.ndarray]:
    """A detector's outputs with no detection (``boxes_scores_labels``: [1,0,4], [1,0], [1,0])."""
    det = spec.detection
    names = list(det.output_tensors) or [t.name for t in spec.tensors[:3]]
    if len(names) < 3:
        raise ConfigError(f"objectness exit needs the detector's three outputs (boxes, scores, labels); got {names}")
    shapes = ((1, 0, 4), (1, 0), (1, 0))
    dtypes = (np.float32, np.float32, np.int64)
    return {n: np.zeros(s, dtype=d) for n, s, d in zip(names[:3], shapes, dtypes)}


class EarlyExits:
    """The exit heads of a bundle, run after the head of their cut."""

    def __init__(self, specs: Mapping[str, ExitSpec], output: bundle_pb2.OutputSpec, *, threads: int = 1,
                 provider: str = "CPUExecutionProvider") -> None:
        import onnxruntime as ort

        self._specs = dict(specs)
        self._output = output
        self._softmax = output.classification.softmax if output.WhichOneof("postprocess") == "classification" else False
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self._sessions = {}
        for cut_id, spec in self._specs.items():
            session = ort.InferenceSession(spec.model_path, sess_options=opts, providers=[provider])
            self._sessions[cut_id] = (session, [i.name for i in session.get_inputs()],
                                      [o.name for o in session.get_outputs()])
        self._lock = threading.Lock()
        self._thresholds = {c: s.threshold for c, s in self._specs.items()}
        self._checked = {c: 0 for c in self._specs}
        self._exited = {c: 0 for c in self._specs}
        self._ms_total = {c: 0.0 for c in self._specs}
        self._enabled = True

    @classmethod
    def from_bundle(cls, bundle: Bundle, *, threads: int = 1) -> "EarlyExits":
        return cls(exits_of(bundle), bundle.manifest.output, threads=threads)

    @property
    def cuts(self) -> list[str]:
        return sorted(self._specs)

    # ------------------------------------------------------------------ the hook

    def check(self, head: HeadOutput) -> Optional[Mapping[str, np.ndarray]]:
        entry = self._sessions.get(head.cut_id)
        if entry is None or not self._enabled:
            return None
        session, inputs, outputs = entry
        spec = self._specs[head.cut_id]
        missing = [n for n in inputs if n not in head.arrays]
        if missing:
            raise ConfigError(f"exit at {head.cut_id!r} reads {missing}; the head gives {sorted(head.arrays)}")
        t0 = time.perf_counter()
        values = dict(zip(outputs, session.run(outputs, {n: head.arrays[n] for n in inputs})))
        ms = (time.perf_counter() - t0) * 1000.0
        confidence = self.confidence(spec, values)
        with self._lock:
            threshold = self._thresholds[head.cut_id]
            self._checked[head.cut_id] += 1
            self._ms_total[head.cut_id] += ms
            exits = confidence >= threshold
            if exits:
                self._exited[head.cut_id] += 1
        if not exits:
            return None
        if spec.kind == "objectness":
            return empty_detections(self._output)
        return {name: values[name] for name in spec.outputs if name in values}

    def confidence(self, spec: ExitSpec, values: Mapping[str, np.ndarray]) -> float:
        """The exit's confidence for one frame (see the module docstring)."""
        first = np.asarray(values[spec.outputs[0]], dtype=np.float64).reshape(-1)
        if spec.kind == "objectness":
            return 1.0 - float(first[0])
        if self._softmax:
            e = np.exp(first - first.max())
            return float((e / e.sum()).max())
        return float(first.max())

    # ------------------------------------------------------------------ run-time control and counts

    def set_threshold(self, value: float, cut_id: str = "") -> dict[str, float]:
        """Set the threshold of one cut's exit ("" = every exit); returns the thresholds in force."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0.0 < value <= 1.0:
            raise ConfigError(f"exit threshold {value!r}; expected a number in (0, 1]")
        if cut_id and cut_id not in self._specs:
            raise ConfigError(f"cut {cut_id!r} has no early exit; cuts with exits: {self.cuts or '(none)'}")
        with self._lock:
            for c in ([cut_id] if cut_id else list(self._thresholds)):
                self._thresholds[c] = float(value)
            log.info("exit thresholds now %s", self._thresholds)
            return dict(self._thresholds)

    def set_enabled(self, enabled: bool) -> None:
        self._enabled = bool(enabled)

    @property
    def enabled(self) -> bool:
        return self._enabled

    def counts(self) -> list[ExitCount]:
        with self._lock:
            return [ExitCount(c, self._checked[c], self._exited[c], self._thresholds[c],
                              self._ms_total[c] / self._checked[c] if self._checked[c] else self._specs[c].exit_ms)
                    for c in self.cuts]
