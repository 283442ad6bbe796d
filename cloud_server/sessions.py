"""ONNX Runtime sessions per model, loaded on demand, evicted least-recently-used under a memory budget.

Memory is estimated, not measured: a session costs about `MEMORY_FACTOR` times its model file's size
(weights are held once by the session plus arena buffers for activations, which for small CNN tails at
batch <= 8 stay within roughly twice the weights). When a new session would push the estimated total
above `memory_budget_mb`, the least recently used other sessions are dropped from the cache; a single
model larger than the budget is still loaded (with a warning) so it can be served. A session dropped
while a batch still runs on it stays alive until that batch ends (Python reference counting).

Execution providers: 'auto' = TensorRT, then CUDA, when this onnxruntime build has them, then CPU.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Sequence

import onnxruntime as ort

from cloud_server.errors import ModelLoadFailed
from cloud_server.domain import TailModel

__all__ = ["SessionPool", "resolve_providers", "MEMORY_FACTOR"]

logger = logging.getLogger(__name__)

#: Estimated session memory = file size x this factor (see the module docstring).
MEMORY_FACTOR = 3.0

_PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def resolve_providers(choices: Sequence[str], available: Sequence[str] | None = None) -> list[str]:
    """ONNX Runtime provider names for the configured choices, keeping only available ones; CPU last."""
    available = list(ort.get_available_providers() if available is None else available)
    wanted: list[str] = []
    for choice in choices:
        if choice == "auto":
            wanted += ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
        else:
            wanted.append(_PROVIDER_NAMES[choice])
    resolved = [p for p in dict.fromkeys(wanted) if p in available and p != "CPUExecutionProvider"]
    missing = [p for p in dict.fromkeys(wanted) if p not in available]
    if missing and "auto" not in choices:
        logger.warning("execution providers %s are not available in this onnxruntime build; using %s",
                       missing, resolved + ["CPUExecutionProvider"])
    return resolved + ["CPUExecutionProvider"]


class SessionPool:
    """Thread-safe cache of `ort.InferenceSession`s keyed by (model name, version)."""

    def __init__(
        self,
        *,
        memory_budget_mb: int,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        execution_providers: Sequence[str] = ("auto",),
        memory_factor: float = MEMORY_FACTOR,
    ) -> None:
        self.memory_budget_bytes = memory_budget_mb * 1024 * 1024
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.providers = resolve_providers(execution_providers)
        self.memory_factor = memory_factor
        self._lock = threading.Lock()
        self._load_locks: dict[tuple[str, str], threading.Lock] = {}
        self._sessions: collections.OrderedDict[tuple[str, str], tuple[ort.InferenceSession, int]] = (
            collections.OrderedDict()
        )
        self.loads = 0
        self.evictions = 0

    def estimate_bytes(self, model: TailModel) -> int:
        return int(model.size_bytes * self.memory_factor)

    @property
    def estimated_bytes(self) -> int:
        with self._lock:
            return sum(cost for _, cost in self._sessions.values())

    def loaded(self) -> list[tuple[str, str]]:
        """Keys of loaded sessions, least recently used first."""
        with self._lock:
            return list(self._sessions)

    def get(self, model: TailModel) -> ort.InferenceSession:
        """The model's session, loading it (and evicting others) if needed."""
        key = model.key
        with self._lock:
            hit = self._sessions.get(key)
            if hit is not None:
                self._sessions.move_to_end(key)
                return hit[0]
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:  # one load per model at a time; others wait for it
            with self._lock:
                hit = self._sessions.get(key)
                if hit is not None:
                    self._sessions.move_to_end(key)
                    return hit[0]
            session = self._create(model)
            cost = self.estimate_bytes(model)
            with self._lock:
                self._sessions[key] = (session, cost)
                self._evict_over_budget(keep=key)
                self.loads += 1
            return session

    def evict(self, key: tuple[str, str]) -> bool:
        """Drop a session (e.g. on unload); True if one was loaded."""
        with self._lock:
            return self._sessions.pop(key, None) is not None

    def _evict_over_budget(self, *, keep: tuple[str, str]) -> None:
        total = sum(cost for _, cost in self._sessions.values())
        for key in list(self._sessions):
            if total <= self.memory_budget_bytes:
                break
            if key == keep:
                continue
            _, cost = self._sessions.pop(key)
            total -= cost
            self.evictions += 1
            logger.info("evicted session %s version %s (estimated %.1f MB) to stay within %.0f MB",
                        key[0], key[1], cost / 2**20, self.memory_budget_bytes / 2**20)
        if total > self.memory_budget_bytes:
            logger.warning("model %s alone is estimated at %.1f MB, over the %.0f MB budget; loaded anyway",
                           keep[0], total / 2**20, self.memory_budget_bytes / 2**20)

    def _create(self, model: TailModel) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(model.model_path), sess_options=options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelLoadFailed(f"model {model.name!r} version {model.version!r}: ONNX Runtime cannot load "
                                  f"{model.model_path.name}: {exc}") from exc
        graph_inputs = {i.name for i in session.get_inputs()}
        missing = [f for f in model.feed_names if f not in graph_inputs]
        if missing:
            raise ModelLoadFailed(f"model {model.name!r}: graph inputs {sorted(graph_inputs)} lack {missing}; "
                                  "expected the cut's tensors as graph inputs")
        graph_outputs = {o.name for o in session.get_outputs()}
        missing = [o.name for o in model.outputs if o.name not in graph_outputs]
        if missing:
            raise ModelLoadFailed(f"model {model.name!r}: graph outputs {sorted(graph_outputs)} lack {missing}")
        logger.info("loaded session %s version %s with %s", model.name, model.version, session.get_providers())
        return session
