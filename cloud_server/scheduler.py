"""A small dynamic batcher per model: a bounded queue, a batching window and one worker thread.

`submit()` enqueues one request (a mapping of input arrays with a batch dimension) and returns a
`concurrent.futures.Future` that resolves to a `BatchResult`. The worker waits for the first request,
then up to `max_queue_delay_us` (measured with `time.monotonic()`) for companions, until
`max_batch_size` rows are queued; it merges what `batching.select_batch` picks, runs the model once,
splits the outputs and resolves the futures.

With `eager=True` (the default) the worker stops waiting as soon as no other request for the model is
on its way: callers announce a request with `expect()` when it enters the data plane (before JPEG
decoding and validation) and `submit(..., expected=True)` or `forget()` ends the announcement. At low
load a lone request then runs at once instead of paying the whole window; under load requests pile up
while a batch runs and the next batch takes them together. `eager=False` always waits the whole window
(Triton's behaviour), which makes merging deterministic in tests. `preferred_batch_sizes` (a
Triton config's) close the window as soon as the queued rows equal one of them. A full queue raises `QueueFull` at once (memory stays
bounded), and so does a request that would wait longer than `max_queue_wait_ms` or past its own
deadline, estimated from the batches ahead of it and the smoothed run time of a batch; a request whose deadline passed while queued fails with `DeadlineExceeded` without running;
a cancelled future is skipped.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from cloud_server.batching import batch_key, batch_rows, merge_inputs, select_batch, split_outputs
from cloud_server.errors import DeadlineExceeded, InferenceFailed, ModelUnavailable, QueueFull, ServerError
from cloud_server.observe import NullObserver, Observer

__all__ = ["BatchResult", "BatchScheduler"]

logger = logging.getLogger(__name__)

RunBatch = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class BatchResult:
    """One request's outputs and what it cost.

    queue_ns: from submit to the start of its batch; compute_input_ns / compute_infer_ns /
    compute_output_ns: merge, model run and split of the whole batch it ran in; batch_size: rows in
    that batch.
    """

    outputs: dict[str, np.ndarray]
    queue_ns: int
    compute_input_ns: int
    compute_infer_ns: int
    compute_output_ns: int
    batch_size: int


@dataclass
class _Pending:
    inputs: Mapping[str, np.ndarray]
    rows: int
    key: object
    enqueued_s: float
    deadline_s: float | None
    future: Future


class BatchScheduler:
    """Queue + window + worker for one model. `run_batch` runs merged inputs and returns outputs."""

    def __init__(
        self,
        model: str,
        run_batch: RunBatch,
        *,
        max_batch_size: int,
        max_queue_delay_us: int,
        max_queue_size: int,
        observer: Observer | None = None,
        batched: bool = True,
        eager: bool = True,
        on_batch_done: Callable[[int, int, int, int], None] | None = None,
        preferred_batch_sizes: tuple[int, ...] = (),
        max_queue_wait_ms: float | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue_size < 1 or max_queue_delay_us < 0:
            raise ValueError(
                f"bad scheduler limits: max_batch_size={max_batch_size}, max_queue_size={max_queue_size}, "
                f"max_queue_delay_us={max_queue_delay_us}; expected >= 1, >= 1, >= 0"
            )
        self.model = model
        self.batched = batched
        self.eager = eager
        self._arriving = 0
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_us / 1e6
        self.max_queue_size = max_queue_size
        self.preferred_batch_sizes = frozenset(preferred_batch_sizes)
        self.max_queue_wait_s = None if max_queue_wait_ms is None else max_queue_wait_ms / 1e3
        self._batch_s: float | None = None  # smoothed run time of one batch (EWMA, weight 0.2)
        self._running = 0  # batches running now (0 or 1: one worker)
        self._wait_s = 0.0  # smoothed queue wait of the requests that started lately (EWMA, weight 0.2)
        self._observer = observer or NullObserver()
        self._on_batch_done = on_batch_done
        self._queue: collections.deque[_Pending] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"batcher-{model}", daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        with self._cond:
            return len(self._queue)

    def expect(self) -> None:
        """Announce a request that will be submitted soon (keeps an eager batch window open)."""
        with self._cond:
            self._arriving += 1

    def forget(self) -> None:
        """Withdraw an announcement (the request failed before `submit`)."""
        with self._cond:
            self._arriving = max(0, self._arriving - 1)
            self._cond.notify()

    def submit(
        self, inputs: Mapping[str, np.ndarray], *, deadline_s: float | None = None, expected: bool = False
    ) -> Future:
        """Enqueue one request; `deadline_s` is a `time.monotonic()` instant or None; `expected` says
        the request was announced with `expect()`."""
        pending = _Pending(
            inputs=inputs,
            rows=batch_rows(inputs) if self.batched else 1,
            key=batch_key(inputs) if self.batched else object(),  # unbatched requests never merge
            enqueued_s=time.monotonic(),
            deadline_s=deadline_s,
            future=Future(),
        )
        with self._cond:
            if expected:
                self._arriving = max(0, self._arriving - 1)
            if self._closed:
                raise ModelUnavailable(f"model {self.model!r} is being unloaded or the server is stopping")
            if len(self._queue) >= self.max_queue_size:
                raise QueueFull(
                    f"model {self.model!r} queue is full ({len(self._queue)} requests waiting); "
                    f"expected fewer than max_queue_size={self.max_queue_size}, retry later"
                )
            self._refuse_long_wait(pending.rows, pending.enqueued_s, pending.deadline_s)
            self._queue.append(pending)
            # reported under the lock: otherwise a stale depth can land after the batcher's newer one
            self._observer.on_queue_depth(self.model, len(self._queue))
            self._cond.notify()
        return pending.future

    def estimated_wait_s(self, rows: int = 1) -> float:
        """How long a request of `rows` rows would wait now: the batches ahead of it (those queued and
        the one running) times the smoothed batch run time; 0 before any batch ran."""
        if self._batch_s is None:
            return 0.0
        ahead = -(-(self._queued_rows() + rows) // self.max_batch_size) - 1 + self._running
        # what requests really waited lately corrects the estimate when the CPU is contended (the batch
        # time alone then lags); it decays as soon as the queue is empty again
        observed = self._wait_s if self._queue or self._running else 0.0
        return max(ahead * self._batch_s, observed)

    def check_admission(self, *, deadline_s: float | None = None, rows: int = 1) -> None:
        """Raise QueueFull now when a request would be refused by `submit` for its expected wait or a
        full queue: called before decoding, so a refused request costs no decoding work."""
        now = time.monotonic()
        with self._cond:
            if len(self._queue) >= self.max_queue_size:
                raise QueueFull(
                    f"model {self.model!r} queue is full ({len(self._queue)} requests waiting); "
                    f"expected fewer than max_queue_size={self.max_queue_size}, retry later"
                )
            self._refuse_long_wait(rows, now, deadline_s)

    def _refuse_long_wait(self, rows: int, now_s: float, deadline_s: float | None) -> None:
        """Admission by expected wait (called under the lock): a request that would wait longer than
        `max_queue_wait_ms`, or past its own deadline, is refused now rather than answered too late."""
        wait_s = self.estimated_wait_s(rows)
        # the batch window is a wait the operator chose: it never counts against max_queue_wait_ms
        if self.max_queue_wait_s is not None and wait_s > self.max_queue_wait_s + self.max_queue_delay_s:
            raise QueueFull(
                f"model {self.model!r} is saturated: estimated wait {wait_s * 1e3:.0f} ms behind "
                f"{len(self._queue)} queued requests; expected at most max_queue_wait_ms="
                f"{self.max_queue_wait_s * 1e3:.0f}, retry later or run locally"
            )
        done_s = wait_s + (self._batch_s or 0.0)  # its own batch must run too before the answer
        if deadline_s is not None and now_s + done_s > deadline_s:
            left_ms = (deadline_s - now_s) * 1e3
            raise QueueFull(
                f"model {self.model!r} is saturated: estimated wait {wait_s * 1e3:.0f} ms plus "
                f"{(done_s - wait_s) * 1e3:.0f} ms to run exceeds the {left_ms:.0f} ms left of the request's "
                "deadline; retry later or run locally"
            )

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop accepting work, finish what is queued, stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout_s)

    # ------------------------------------------------------------------ worker

    def _queued_rows(self) -> int:
        return sum(p.rows for p in self._queue)

    def _take_batch(self) -> list[_Pending] | None:
        """Block until a batch is due; None when closed and empty."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            window_end = self._queue[0].enqueued_s + self.max_queue_delay_s
            while not self._closed and self._queued_rows() < self.max_batch_size:
                if self._queued_rows() in self.preferred_batch_sizes:
                    break
                remaining = window_end - time.monotonic()
                if remaining <= 0 or (self.eager and self._arriving == 0):
                    break
                self._cond.wait(remaining)
            count = select_batch([p.rows for p in self._queue], [p.key for p in self._queue], self.max_batch_size)
            batch = [self._queue.popleft() for _ in range(count)]
            self._running = 1
            now = time.monotonic()
            for p in batch:
                self._wait_s += 0.2 * ((now - p.enqueued_s) - self._wait_s)
            self._observer.on_queue_depth(self.model, len(self._queue))
        return batch

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            started_s = time.monotonic()
            try:
                self._run(batch)
            except Exception:  # never let the worker die; _run already failed the futures
                logger.exception("model %r: batch worker failed", self.model)
            with self._cond:
                took_s = time.monotonic() - started_s
                self._batch_s = took_s if self._batch_s is None else self._batch_s + 0.2 * (took_s - self._batch_s)
                self._running = 0

    def _run(self, batch: list[_Pending]) -> None:
        start_s = time.monotonic()
        live: list[_Pending] = []
        for p in batch:
            if not p.future.set_running_or_notify_cancel():
                continue  # the caller gave up
            if p.deadline_s is not None and start_s >= p.deadline_s:
                waited_ms = (start_s - p.enqueued_s) * 1e3
                p.future.set_exception(
                    DeadlineExceeded(
                        f"model {self.model!r}: the deadline passed after {waited_ms:.1f} ms in the queue; "
                        "expected a longer deadline or a less loaded server"
                    )
                )
                continue
            live.append(p)
        if not live:
            return
        try:
            t0 = time.monotonic_ns()
            if self.batched:
                merged, sizes = merge_inputs([p.inputs for p in live])
            else:
                merged, sizes = dict(live[0].inputs), [1]
            t1 = time.monotonic_ns()
            outputs = self._run_batch(merged)
            t2 = time.monotonic_ns()
            parts = split_outputs(outputs, sizes) if len(live) > 1 else [dict(outputs)]
            t3 = time.monotonic_ns()
        except ServerError as exc:
            for p in live:
                p.future.set_exception(exc)
            return
        except Exception as exc:
            logger.exception("model %r: running a batch of %d requests failed", self.model, len(live))
            error = InferenceFailed(f"model {self.model!r} failed to run: {exc}")
            for p in live:
                p.future.set_exception(error)
            return
        rows = sum(sizes)
        self._observer.on_batch(self.model, rows)
        if self._on_batch_done is not None:
            self._on_batch_done(rows, t1 - t0, t2 - t1, t3 - t2)
        start_ns = int(start_s * 1e9)
        for p, out in zip(live, parts):
            p.future.set_result(
                BatchResult(
                    outputs=out,
                    queue_ns=max(0, start_ns - int(p.enqueued_s * 1e9)),
                    compute_input_ns=t1 - t0,
                    compute_infer_ns=t2 - t1,
                    compute_output_ns=t3 - t2,
                    batch_size=rows,
                )
            )
