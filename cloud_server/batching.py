"""Pure merge and split of requests for dynamic batching (no I/O, no clocks, no threads).

A request is a mapping from input name to a numpy array whose first dimension is the batch. Requests
can share an execution when they have the same input names, the same dtypes and the same shape after
the batch dimension (`batch_key`). `select_batch` decides how many queued requests go together,
`merge_inputs` concatenates them along the batch dimension and `split_outputs` cuts the outputs back
into one mapping per request, in order. The scheduler owns the queue, the window and the futures.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import numpy as np

__all__ = ["batch_key", "batch_rows", "select_batch", "merge_inputs", "split_outputs"]

Tensors = Mapping[str, np.ndarray]


def batch_key(inputs: Tensors) -> Hashable:
    """What must be equal for two requests to share one execution: names, dtypes, non-batch shapes."""
    return tuple(sorted((name, arr.dtype.str, arr.shape[1:]) for name, arr in inputs.items()))


def batch_rows(inputs: Tensors) -> int:
    """The batch size (first dimension) of a request; all inputs must agree."""
    rows = {arr.shape[0] for arr in inputs.values()}
    if len(rows) != 1:
        raise ValueError(f"inputs disagree on the batch dimension: {sorted(rows)}; expected one size")
    return rows.pop()


def select_batch(rows: Sequence[int], keys: Sequence[Hashable], max_batch_size: int) -> int:
    """How many leading queued requests to run together.

    Takes the longest prefix whose requests share the first one's key and whose rows add up to at
    most `max_batch_size`. Always takes at least one request (a request larger than the limit runs
    alone), and 0 only when the queue is empty.
    """
    if len(rows) != len(keys):
        raise ValueError(f"rows ({len(rows)}) and keys ({len(keys)}) must have the same length")
    if not rows:
        return 0
    taken, total = 1, rows[0]
    for row, key in zip(rows[1:], keys[1:]):
        if key != keys[0] or total + row > max_batch_size:
            break
        taken += 1
        total += row
    return taken


def merge_inputs(requests: Sequence[Tensors]) -> tuple[dict[str, np.ndarray], list[int]]:
    """Concatenate requests along the batch dimension; returns the merged inputs and each one's rows."""
    if not requests:
        raise ValueError("no requests to merge; expected at least one")
    first = requests[0]
    key = batch_key(first)
    for i, req in enumerate(requests[1:], start=1):
        if batch_key(req) != key:
            raise ValueError(f"request {i} has signature {batch_key(req)}; expected {key} like request 0")
    sizes = [batch_rows(req) for req in requests]
    if len(requests) == 1:
        return dict(first), sizes
    merged = {name: np.concatenate([req[name] for req in requests], axis=0) for name in first}
    return merged, sizes


def split_outputs(outputs: Tensors, sizes: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Cut merged outputs back into one mapping per request, `sizes[i]` rows each, in order."""
    total = sum(sizes)
    for name, arr in outputs.items():
        if arr.ndim == 0 or arr.shape[0] != total:
            raise ValueError(
                f"output {name!r} has shape {list(arr.shape)}; expected {total} rows (the merged batch)"
            )
    if len(sizes) == 1:
        return [dict(outputs)]
    bounds = np.cumsum([0, *sizes])
    return [
        {name: arr[bounds[i] : bounds[i + 1]] for name, arr in outputs.items()} for i in range(len(sizes))
    ]
