"""Standard `grpc.health.v1` health checking: overall ('') and one entry per model name.

Every served model name starts SERVING; unloading a model sets its entry NOT_SERVING, loading sets it
SERVING again. `set_draining()` flips every entry (and any later one) to NOT_SERVING, for SIGTERM.

The statuses live in a plain dict behind a lock, so any thread may change them; `servicer` answers
`Check` and `Watch` as coroutines on the grpc.aio server's event loop (an open `Watch` costs no
thread). A change is pushed to each watcher's queue with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["HealthState", "OVERALL"]

#: The service name that stands for the whole server.
OVERALL = ""

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthState:
    """Owns the status of each service name and the aio health servicer that reports them."""

    def __init__(self, model_names: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._status: dict[str, int] = {OVERALL: _SERVING}
        self._watchers: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[int]]]] = {}
        self._draining = False
        for name in model_names:
            self._status[name] = _SERVING
        self.servicer = _HealthServicer(self)

    @property
    def draining(self) -> bool:
        return self._draining

    def status(self, name: str) -> int | None:
        """The status of one service name, None when unknown."""
        with self._lock:
            return self._status.get(name)

    def set_model(self, name: str, serving: bool) -> None:
        """Mark one model name SERVING or NOT_SERVING (always NOT_SERVING once draining)."""
        self._set(name, _SERVING if serving and not self._draining else _NOT_SERVING)

    def set_draining(self) -> None:
        """Every name NOT_SERVING from now on (Watch streams are told too)."""
        self._draining = True
        with self._lock:
            names = list(self._status)
        for name in names:
            self._set(name, _NOT_SERVING)

    def _set(self, name: str, status: int) -> None:
        with self._lock:
            self._status[name] = status
            watchers = list(self._watchers.get(name, ()))
        for loop, queue in watchers:
            loop.call_soon_threadsafe(queue.put_nowait, status)

    def _watch(self, name: str, loop: asyncio.AbstractEventLoop) -> asyncio.Queue[int]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        with self._lock:
            self._watchers.setdefault(name, []).append((loop, queue))
            queue.put_nowait(self._status.get(name, _UNKNOWN))
        return queue

    def _unwatch(self, name: str, queue: asyncio.Queue[int]) -> None:
        with self._lock:
            self._watchers[name] = [w for w in self._watchers.get(name, []) if w[1] is not queue]


class _HealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(self, state: HealthState) -> None:
        self._state = state

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> health_pb2.HealthCheckResponse:
        status = self._state.status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service[:64]!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        queue = self._state._watch(request.service, asyncio.get_running_loop())
        try:
            last = None
            while True:
                status = await queue.get()
                if status != last:
                    last = status
                    yield health_pb2.HealthCheckResponse(status=status)
        finally:
            self._state._unwatch(request.service, queue)
