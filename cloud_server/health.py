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
from grpc_health.v1 import health_pb2

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


async def _parse(raw: bytes, context: Any) -> health_pb2.HealthCheckRequest:
    request = health_pb2.HealthCheckRequest()
    try:
        request.ParseFromString(raw)
    except Exception:  # noqa: BLE001 - DecodeError and friends: the client sent garbage
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"the request is not a valid grpc.health.v1.HealthCheckRequest ({len(raw)} bytes)")
    return request


class _HealthServicer(grpc.GenericRpcHandler):
    """grpc.health.v1.Health with raw-bytes handlers: garbage is INVALID_ARGUMENT, not a logged traceback."""

    def __init__(self, state: HealthState) -> None:
        self._state = state
        self._handlers = {
            "/grpc.health.v1.Health/Check": grpc.unary_unary_rpc_method_handler(self.Check),
            "/grpc.health.v1.Health/Watch": grpc.unary_stream_rpc_method_handler(self.Watch),
        }

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method or "")

    def add_to_server(self, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((self,))

    async def Check(self, raw: bytes, context: Any) -> bytes:
        request = await _parse(raw, context)
        status = self._state.status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service[:64]!r}")
        return health_pb2.HealthCheckResponse(status=status).SerializeToString()

    async def Watch(self, raw: bytes, context: Any) -> AsyncIterator[bytes]:
        request = await _parse(raw, context)
        queue = self._state._watch(request.service, asyncio.get_running_loop())
        try:
            last = None
            while True:
                status = await queue.get()
                if status != last:
                    last = status
                    yield health_pb2.HealthCheckResponse(status=status).SerializeToString()
        finally:
            self._state._unwatch(request.service, queue)
