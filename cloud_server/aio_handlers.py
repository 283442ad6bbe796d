"""Helpers for grpc.aio interceptors: wrap a method handler's behavior, or replace it by a refusal.

A handler keeps its kind (unary/streaming on each side) and its (de)serializers; only the behavior
changes. Behaviors are coroutines (unary responses) or async generators (streamed responses), as the
grpc.aio server runs them on its event loop.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable

import grpc

__all__ = ["wrap_handler", "refusing_handler"]

#: Called before the behavior runs, with its context; may abort the call.
Before = Callable[[Any], Awaitable[None]]
#: Called once when the behavior finished (returned, raised or its stream ended).
After = Callable[[], None]


def _build(handler: grpc.RpcMethodHandler, unary: Any, stream: Any) -> grpc.RpcMethodHandler:
    des, ser = handler.request_deserializer, handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(stream, des, ser)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, des, ser)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(stream, des, ser)
    return grpc.unary_unary_rpc_method_handler(unary, des, ser)


def _behavior(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    return (handler.unary_unary or handler.unary_stream or handler.stream_unary  # type: ignore[return-value]
            or handler.stream_stream)


def wrap_handler(
    handler: grpc.RpcMethodHandler, *, before: Before | None = None, after: After | None = None
) -> grpc.RpcMethodHandler:
    """`handler` with `before(context)` awaited first and `after()` called when it is done."""
    behavior = _behavior(handler)

    async def unary(request: Any, context: Any) -> Any:
        try:
            if before is not None:
                await before(context)
            return await behavior(request, context)
        finally:
            if after is not None:
                after()

    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            if before is not None:
                await before(context)
            async for item in behavior(request, context):
                yield item
        finally:
            if after is not None:
                after()

    return _build(handler, unary, stream)


def refusing_handler(
    handler: grpc.RpcMethodHandler | None, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` (unary-unary when None) that aborts with `code`."""

    async def unary(request: Any, context: Any) -> Any:
        await context.abort(code, message)

    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield  # pragma: no cover - abort raises

    if handler is None:
        return grpc.unary_unary_rpc_method_handler(unary)
    return _build(handler, unary, stream)
