"""Per-model statistics in Triton's fields, kept thread-safe for the data plane and the schedulers.

`StatsBook` accumulates one `ModelStats` per (model, version): whole-request durations of successes
and failures, per-request queue and compute times, and per-execution batch statistics. It never reads
a clock: durations and the wall-clock `now_ms` of the last inference are arguments. Readers get deep
copies (`snapshot`), so a response is never built from numbers that change under it.
"""

from __future__ import annotations

import threading

from cloud_server.domain import BatchStat, ModelStats, TailModel

__all__ = ["StatsBook"]


class StatsBook:
    """Thread-safe `ModelStats` per model key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, str], ModelStats] = {}

    def _entry(self, model: TailModel) -> ModelStats:  # call with the lock held
        stats = self._stats.get(model.key)
        if stats is None:
            stats = self._stats[model.key] = ModelStats(name=model.name, version=model.version)
        return stats

    def snapshot(self, model: TailModel) -> ModelStats:
        """A copy of the model's statistics (zeros if it never ran)."""
        with self._lock:
            return self._entry(model).snapshot()

    def record_success(
        self,
        model: TailModel,
        *,
        elapsed_ns: int,
        rows: int,
        queue_ns: int,
        compute_input_ns: int,
        compute_infer_ns: int,
        compute_output_ns: int,
        now_ms: int,
    ) -> None:
        """One request answered: `rows` batch items, its share of the batch's compute times."""
        with self._lock:
            stats = self._entry(model)
            stats.success.add(elapsed_ns)
            stats.queue.add(queue_ns)
            stats.compute_input.add(compute_input_ns)
            stats.compute_infer.add(compute_infer_ns)
            stats.compute_output.add(compute_output_ns)
            stats.inference_count += rows
            stats.last_inference_ms = now_ms

    def record_failure(self, model: TailModel, *, elapsed_ns: int) -> None:
        with self._lock:
            self._entry(model).fail.add(elapsed_ns)

    def record_batch(self, model: TailModel, rows: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One model execution of `rows` rows (merge, run and split times of the whole batch)."""
        with self._lock:
            stats = self._entry(model)
            stats.execution_count += 1
            batch = stats.batch_stats.setdefault(rows, BatchStat())
            batch.compute_input.add(input_ns)
            batch.compute_infer.add(infer_ns)
            batch.compute_output.add(output_ns)
