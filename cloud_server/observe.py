"""The observer the data plane reports to (metrics live elsewhere).

The data plane calls these hooks from request and worker threads; implementations must be thread-safe
and cheap (no I/O). `NullObserver` is the default. H2b's Prometheus observer implements the same three
methods; any object with them works (structural typing via `Observer`).
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

__all__ = ["Observer", "NullObserver", "SafeObserver"]

logger = logging.getLogger(__name__)


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


class SafeObserver:
    """Wraps an observer so that a failing hook is logged (once at WARNING, then at DEBUG) and never
    breaks a request or a batch worker."""

    def __init__(self, inner: Observer) -> None:
        self.inner = inner
        self._warned = False

    def _failed(self, hook: str, exc: Exception) -> None:
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        logger.log(level, "observer %s.%s failed: %s", type(self.inner).__name__, hook, exc)

    def on_request(self, model: str, ok: bool, latency_s: float) -> None:
        try:
            self.inner.on_request(model, ok, latency_s)
        except Exception as exc:  # noqa: BLE001
            self._failed("on_request", exc)

    def on_batch(self, model: str, size: int) -> None:
        try:
            self.inner.on_batch(model, size)
        except Exception as exc:  # noqa: BLE001
            self._failed("on_batch", exc)

    def on_queue_depth(self, model: str, depth: int) -> None:
        try:
            self.inner.on_queue_depth(model, depth)
        except Exception as exc:  # noqa: BLE001
            self._failed("on_queue_depth", exc)
