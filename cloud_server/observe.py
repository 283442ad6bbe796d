"""The observer the data plane reports to (metrics live elsewhere).

The data plane calls these hooks from request and worker threads; implementations must be thread-safe
and cheap (no I/O). `NullObserver` is the default. H2b's Prometheus observer implements the same three
methods; any object with them works (structural typing via `Observer`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Observer", "NullObserver"]


@runtime_checkable
class Observer(Protocol):
    """Hooks called by the data plane.

    on_request: once per inference request that reached a known model, after it finished;
        `ok` is False for any failure (validation, queue full, deadline, runtime); `latency_s`
        is the time from receipt to answer.
    on_batch: once per execution of the model, with the number of rows (batch size) it ran.
    on_queue_depth: whenever a model's queue length changes (requests waiting, not running).
    """

    def on_request(self, model: str, ok: bool, latency_s: float) -> None: ...

    def on_batch(self, model: str, size: int) -> None: ...

    def on_queue_depth(self, model: str, depth: int) -> None: ...


class NullObserver:
    """Observes nothing."""

    def on_request(self, model: str, ok: bool, latency_s: float) -> None:
        return None

    def on_batch(self, model: str, size: int) -> None:
        return None

    def on_queue_depth(self, model: str, depth: int) -> None:
        return None
