"""Pure merge/split of requests (tables on numpy arrays) and the scheduler's window and bounds."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from cloud_server.batching import batch_key, batch_rows, merge_inputs, select_batch, split_outputs
from cloud_server.errors import DeadlineExceeded, InferenceFailed, QueueFull
from cloud_server.scheduler import BatchScheduler


def _req(rows: int, width: int = 4, dtype: str = "float32", fill: float = 0.0) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, width), fill, dtype=dtype)}


SELECT_CASES = [
    # rows, keys, max_batch_size, expected count
    ([], [], 8, 0),
    ([1], ["a"], 8, 1),
    ([1, 1, 1], ["a", "a", "a"], 8, 3),
    ([4, 4, 1], ["a", "a", "a"], 8, 2),  # third would make 9 rows
    ([3, 3, 3], ["a", "a", "a"], 8, 2),
    ([1, 1, 1], ["a", "b", "a"], 8, 1),  # stops at the first incompatible request
    ([12, 1], ["a", "a"], 8, 1),  # oversize request runs alone
    ([1, 1], ["a", "a"], 1, 1),  # batching disabled
    ([2, 2, 2, 2], ["a"] * 4, 8, 4),
]


@pytest.mark.parametrize("rows,keys,max_batch_size,expected", SELECT_CASES)
def test_select_batch_table(rows: list[int], keys: list[str], max_batch_size: int, expected: int) -> None:
    assert select_batch(rows, keys, max_batch_size) == expected


def test_select_batch_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        select_batch([1, 2], ["a"], 8)


KEY_CASES = [
    # a, b, mergeable
    (_req(1), _req(3), True),
    (_req(1, width=4), _req(1, width=5), False),
    (_req(1, dtype="float32"), _req(1, dtype="float16"), False),
    (_req(1), {"y": np.zeros((1, 4), np.float32)}, False),
]


@pytest.mark.parametrize("a,b,mergeable", KEY_CASES)
def test_batch_key_table(a: dict, b: dict, mergeable: bool) -> None:
    assert (batch_key(a) == batch_key(b)) is mergeable


def test_batch_rows_requires_agreement() -> None:
    assert batch_rows({"a": np.zeros((3, 2)), "b": np.zeros((3,))}) == 3
    with pytest.raises(ValueError, match=r"\[2, 3\]"):
        batch_rows({"a": np.zeros((3, 2)), "b": np.zeros((2,))})


@pytest.mark.parametrize("sizes", [[1], [1, 1], [2, 1, 3], [5, 3]])
def test_merge_then_split_returns_each_request(sizes: list[int]) -> None:
    rng = np.random.default_rng(len(sizes))
    requests = [{"x": rng.normal(size=(n, 3)).astype(np.float32), "y": rng.integers(0, 9, (n,))} for n in sizes]
    merged, got_sizes = merge_inputs(requests)
    assert got_sizes == sizes
    assert merged["x"].shape == (sum(sizes), 3)
    # a fake "model" that works row by row: output = 2x + y
    outputs = {"z": merged["x"] * 2 + merged["y"][:, None]}
    parts = split_outputs(outputs, got_sizes)
    assert len(parts) == len(sizes)
    for req, part in zip(requests, parts):
        np.testing.assert_array_equal(part["z"], req["x"] * 2 + req["y"][:, None])


def test_merge_refuses_incompatible_requests() -> None:
    with pytest.raises(ValueError, match="request 1 has signature"):
        merge_inputs([_req(1, width=4), _req(1, width=5)])
    with pytest.raises(ValueError, match="at least one"):
        merge_inputs([])


def test_split_checks_row_count() -> None:
    with pytest.raises(ValueError, match=r"output 'z' has shape \[3, 2\]; expected 4 rows"):
        split_outputs({"z": np.zeros((3, 2))}, [2, 2])


# ---------------------------------------------------------------------- scheduler


def _echo_scheduler(**kwargs: object) -> tuple[BatchScheduler, list[int]]:
    seen: list[int] = []

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(feeds["x"].shape[0])
        return {"y": feeds["x"] + 1}

    defaults = dict(max_batch_size=8, max_queue_delay_us=200_000, max_queue_size=16, eager=False)
    defaults.update(kwargs)
    return BatchScheduler("echo", run, **defaults), seen  # type: ignore[arg-type]


def test_scheduler_merges_concurrent_requests_and_splits_results() -> None:
    scheduler, seen = _echo_scheduler()
    try:
        futures = [scheduler.submit(_req(1, fill=i)) for i in range(4)]
        results = [f.result(timeout=5) for f in futures]
    finally:
        scheduler.close()
    assert seen == [4]
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result.outputs["y"], np.full((1, 4), i + 1, np.float32))
        assert result.batch_size == 4
        assert result.queue_ns > 0


def test_scheduler_runs_at_once_when_the_batch_is_full() -> None:
    scheduler, seen = _echo_scheduler(max_batch_size=2, max_queue_delay_us=5_000_000)
    try:
        start = time.monotonic()
        futures = [scheduler.submit(_req(1)) for _ in range(2)]
        for f in futures:
            f.result(timeout=5)
        elapsed_s = time.monotonic() - start
    finally:
        scheduler.close()
    assert seen == [2]
    assert elapsed_s < 4.0, "a full batch must not wait for the whole window"


def test_scheduler_queue_is_bounded() -> None:
    scheduler, _ = _echo_scheduler(max_queue_size=2, max_queue_delay_us=300_000)
    try:
        first = [scheduler.submit(_req(1)) for _ in range(2)]
        with pytest.raises(QueueFull, match="max_queue_size=2"):
            scheduler.submit(_req(1))
        for f in first:
            f.result(timeout=5)
    finally:
        scheduler.close()


def test_scheduler_fails_requests_whose_deadline_passed_in_the_queue() -> None:
    scheduler, seen = _echo_scheduler(max_queue_delay_us=200_000)
    try:
        late = scheduler.submit(_req(1), deadline_s=time.monotonic() + 0.01)
        ok = scheduler.submit(_req(1))
        with pytest.raises(DeadlineExceeded, match="deadline passed"):
            late.result(timeout=5)
        assert ok.result(timeout=5).batch_size == 1
    finally:
        scheduler.close()
    assert seen == [1]


def test_scheduler_survives_a_failing_model() -> None:
    calls = threading.Event()

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not calls.is_set():
            calls.set()
            raise RuntimeError("boom")
        return {"y": feeds["x"]}

    scheduler = BatchScheduler("flaky", run, max_batch_size=4, max_queue_delay_us=0, max_queue_size=4, eager=False)
    try:
        with pytest.raises(InferenceFailed, match="boom"):
            scheduler.submit(_req(1)).result(timeout=5)
        assert scheduler.submit(_req(1)).result(timeout=5).outputs["y"].shape == (1, 4)
    finally:
        scheduler.close()


def test_eager_scheduler_runs_a_lone_request_at_once_and_waits_for_announced_ones() -> None:
    scheduler, seen = _echo_scheduler(eager=True, max_queue_delay_us=2_000_000)
    try:
        start = time.monotonic()
        scheduler.submit(_req(1)).result(timeout=5)
        assert time.monotonic() - start < 1.0, "a lone request must not wait for the 2 s window"
        # an announced request keeps the window open: both run together
        scheduler.expect()
        first = scheduler.submit(_req(1))
        time.sleep(0.05)
        second = scheduler.submit(_req(1), expected=True)
        assert first.result(timeout=5).batch_size == 2 and second.result(timeout=5).batch_size == 2
        # a withdrawn announcement closes the window
        scheduler.expect()
        third = scheduler.submit(_req(1))
        time.sleep(0.05)
        scheduler.forget()
        assert third.result(timeout=1).batch_size == 1
    finally:
        scheduler.close()
    assert seen == [1, 2, 1]


def test_requests_that_would_wait_too_long_are_refused_at_once() -> None:
    """Admission by expected wait: after a batch took ~100 ms, a request behind a running and a queued
    batch (~200 ms) exceeds max_queue_wait_ms=150 and is refused without queueing; so is one whose own
    deadline is nearer than the estimated wait."""
    gate = threading.Event()

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        gate.wait(5)
        time.sleep(0.1)
        return {"y": feeds["x"]}

    sched = BatchScheduler("m", run, max_batch_size=1, max_queue_delay_us=0, max_queue_size=16,
                           max_queue_wait_ms=150, batched=True, eager=True)
    try:
        gate.set()
        sched.submit(_req(1)).result(5)  # teaches it a batch takes ~100 ms
        gate.clear()
        running = sched.submit(_req(1))
        deadline = time.monotonic() + 5
        while sched.queue_depth and time.monotonic() < deadline:  # the worker took it: one batch running
            time.sleep(0.005)
        with pytest.raises(QueueFull, match="left of the request's deadline"):  # ~100 ms > its 10 ms
            sched.submit(_req(1), deadline_s=time.monotonic() + 0.01)
        queued = sched.submit(_req(1))  # waits ~100 ms: admitted
        with pytest.raises(QueueFull, match=r"estimated wait \d+ ms behind 1 queued requests; expected at most "
                                            r"max_queue_wait_ms=150"):
            sched.submit(_req(1))
        assert sched.estimated_wait_s() >= 0.15
        assert sched.queue_depth == 1  # the refused ones never queued
        gate.set()
        assert running.result(5).outputs["y"].shape == (1, 4) and queued.result(5).batch_size == 1
    finally:
        gate.set()
        sched.close()
