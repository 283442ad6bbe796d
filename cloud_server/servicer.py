"""The thin GRPCInferenceService servicer on grpc.aio: bytes -> protobuf -> domain -> data plane -> bytes.

Every method is registered with no (de)serializer, so the event loop only moves bytes: inference
requests are parsed, validated, decoded and their responses serialized on the bounded compute pool
(`pool`), never on the loop, and a message that is not a valid protobuf is answered INVALID_ARGUMENT
naming the message type instead of an INTERNAL with a logged traceback. The small RPCs (liveness,
metadata, ...) parse on the loop: they are a few bytes.

Concurrency: an open `ModelStreamInfer` or a request waiting for its batch is a coroutine, not a
thread, so idle or slow streams cost no worker and `ServerLive` / health keep answering. Each inference
request passes `Admission` on arrival (RESOURCE_EXHAUSTED at the limit, promptly, saying what is full);
each model's scheduler bounds its own queue too.

Domain errors become gRPC statuses through `errors.grpc_status_code` (one table); client mistakes and
server errors are logged as one line at most once per kind per interval (`logs.ThrottledLog`),
anything unexpected with its stack trace (also throttled) and returned as INTERNAL. Deadlines come from
`context.time_remaining()`. In `ModelStreamInfer` a failed request is answered with `error_message` and
the stream goes on (its `infer_response` carries the request's id and the advisory parameter
`splitinfer_status`, the status name a unary call would have got); requests on one stream run concurrently and are answered as they finish (clients
match responses by request id). Methods of Triton's service that we do not serve (shared memory,
trace and log settings) answer UNIMPLEMENTED naming the method.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import CancelledError, Executor
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from cloud_server import convert
from cloud_server.admission import Admission
from cloud_server.dataplane import DataPlane, PendingRequest
from cloud_server.errors import (
    DeadlineExceeded,
    InvalidInput,
    RegistryError,
    ServerError,
    Unsupported,
    grpc_status_code,
    shorten,
)
from cloud_server.health import HealthState
from cloud_server.logs import ThrottledLog
from cloud_server.model_config import repository_config_from_json
from protos import inference_pb2 as pb

__all__ = ["InferenceServicer", "SERVER_NAME", "EXTENSIONS", "INFERENCE_SERVICE", "STREAM_STATUS_PARAMETER"]

logger = logging.getLogger(__name__)

SERVER_NAME = "splitinfer"
EXTENSIONS = ["model_repository", "model_configuration", "statistics", "splitinfer_advisory_parameters"]
INFERENCE_SERVICE = "inference.GRPCInferenceService"
#: Advisory parameter of a stream's error answer: the gRPC status name a unary call would have got.
STREAM_STATUS_PARAMETER = "splitinfer_status"
_PREFIX = f"/{INFERENCE_SERVICE}/"
#: Requests (of tensor models) and responses smaller than this are decoded / serialized on the loop: a
#: hop to the pool costs more than their work (measured: ~0.1-0.2 ms per hop on this machine).
_INLINE_REQUEST_BYTES = 64 * 1024
_INLINE_RESPONSE_BYTES = 64 * 1024

T = TypeVar("T")


def _timeout_s(context: Any) -> float | None:
    remaining = context.time_remaining()
    # grpc reports a huge number (not None) on some versions when no deadline was set
    if remaining is None or remaining > 10 * 365 * 86400:
        return None
    return max(0.0, remaining)


def _parse(message_type: type[Message], raw: bytes) -> Any:
    message = message_type()
    try:
        message.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InvalidInput(
            f"the request is not a valid inference.{message_type.__name__} ({len(raw)} bytes: {exc}); "
            "expected a serialized protobuf message of that type"
        ) from None
    return message


@dataclass(frozen=True)
class _Unary:
    request_type: type[Message]
    run: Callable[[Any, Any], Awaitable[Message]]


class InferenceServicer:
    """All RPCs of protos/inference.proto over one DataPlane, as async handlers for grpc.aio."""

    def __init__(
        self,
        dataplane: DataPlane,
        health: HealthState,
        *,
        server_version: str,
        pool: Executor,
        admission: Admission,
        stream_window: int = 64,
        log_interval_s: float = 60.0,
    ) -> None:
        self.dataplane = dataplane
        self.registry = dataplane.registry
        self.health = health
        self.server_version = server_version
        self.pool = pool
        self.admission = admission
        self.stream_window = stream_window
        self.log = ThrottledLog(logger, interval_s=log_interval_s)
        self._unary: dict[str, _Unary] = {
            "ServerLive": _Unary(pb.ServerLiveRequest, self._server_live),
            "ServerReady": _Unary(pb.ServerReadyRequest, self._server_ready),
            "ServerMetadata": _Unary(pb.ServerMetadataRequest, self._server_metadata),
            "ModelReady": _Unary(pb.ModelReadyRequest, self._model_ready),
            "ModelMetadata": _Unary(pb.ModelMetadataRequest, self._model_metadata),
            "ModelConfig": _Unary(pb.ModelConfigRequest, self._model_config),
            "ModelStatistics": _Unary(pb.ModelStatisticsRequest, self._model_statistics),
            "RepositoryIndex": _Unary(pb.RepositoryIndexRequest, self._repository_index),
            "RepositoryModelLoad": _Unary(pb.RepositoryModelLoadRequest, self._repository_load),
            "RepositoryModelUnload": _Unary(pb.RepositoryModelUnloadRequest, self._repository_unload),
        }

    # ------------------------------------------------------------------ registration

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register this servicer as inference.GRPCInferenceService on an aio `server`."""
        server.add_generic_rpc_handlers((_Handlers(self),))

    def handler(self, method: str) -> grpc.RpcMethodHandler | None:
        """The handler of a full method path, or None for another service."""
        if not method.startswith(_PREFIX):
            return None
        name = method[len(_PREFIX):]
        if name == "ModelInfer":
            return grpc.unary_unary_rpc_method_handler(self.ModelInfer)
        if name == "ModelStreamInfer":
            return grpc.stream_stream_rpc_method_handler(self.ModelStreamInfer)
        unary = self._unary.get(name)
        if unary is None:
            return grpc.unary_unary_rpc_method_handler(self._unimplemented(name))
        return grpc.unary_unary_rpc_method_handler(self._unary_behavior(unary))

    def _unimplemented(self, name: str) -> Callable[[bytes, Any], Awaitable[bytes]]:
        async def refuse(raw: bytes, context: Any) -> bytes:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{INFERENCE_SERVICE}/{shorten(name)[1:-1]} is not served by splitinfer (shared memory, trace and "
                "log settings are Triton features it does not implement); expected one of "
                f"{sorted([*self._unary, 'ModelInfer', 'ModelStreamInfer'])}",
            )
            return b""

        return refuse

    def _unary_behavior(self, unary: _Unary) -> Callable[[bytes, Any], Awaitable[bytes]]:
        async def behavior(raw: bytes, context: Any) -> bytes:
            try:
                response = await unary.run(_parse(unary.request_type, raw), context)
                return response.SerializeToString()
            except Exception as exc:  # noqa: BLE001 - mapped to a status below
                code, message = self.describe(exc)
            await context.abort(code, message)
            return b""  # pragma: no cover - abort raises

        return behavior

    def close(self) -> None:
        """Nothing to release (the pool belongs to the server); kept for the server's stop order."""

    def describe(self, error: BaseException) -> tuple[grpc.StatusCode, str]:
        """Status and message for any failure; logs it once per kind per interval."""
        if isinstance(error, ServerError):
            kind = f"{type(error).__name__}"
            if error.client_error:
                self.log.log(logging.INFO, kind, "client error %s: %s", error.status.name, error)
            else:
                self.log.log(logging.ERROR, kind, "server error %s: %s", error.status.name, error)
            return grpc_status_code(error), str(error)
        self.log.log(logging.ERROR, f"unexpected:{type(error).__name__}", "unexpected failure", exc_info=error)
        return grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {str(error)[:500]}"

    # ------------------------------------------------------------------ server and models

    async def _server_live(self, request: pb.ServerLiveRequest, context: Any) -> Message:
        return pb.ServerLiveResponse(live=True)

    async def _server_ready(self, request: pb.ServerReadyRequest, context: Any) -> Message:
        return pb.ServerReadyResponse(ready=not self.dataplane.draining)

    async def _server_metadata(self, request: pb.ServerMetadataRequest, context: Any) -> Message:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self.server_version, extensions=EXTENSIONS)

    async def _model_ready(self, request: pb.ModelReadyRequest, context: Any) -> Message:
        self.registry.find(request.name, request.version)
        ok = self.registry.is_ready(request.name) and not self.dataplane.draining
        return pb.ModelReadyResponse(ready=ok)

    async def _model_metadata(self, request: pb.ModelMetadataRequest, context: Any) -> Message:
        model = self.registry.find(request.name, request.version)
        return convert.model_metadata_to_proto(model, self.registry.versions(request.name))

    async def _model_config(self, request: pb.ModelConfigRequest, context: Any) -> Message:
        model = self.registry.find(request.name, request.version)
        settings = self.dataplane.settings
        return pb.ModelConfigResponse(
            config=convert.model_config_to_proto(
                model, max_batch_size=self.dataplane.max_batch_size(model),
                max_queue_delay_us=settings.max_queue_delay_us,
            )
        )

    async def _model_statistics(self, request: pb.ModelStatisticsRequest, context: Any) -> Message:
        return convert.statistics_to_proto(self.dataplane.statistics(request.name, request.version))

    # ------------------------------------------------------------------ repository

    async def _repository_index(self, request: pb.RepositoryIndexRequest, context: Any) -> Message:
        return convert.index_to_proto(self.registry.index(ready_only=request.ready))

    async def _repository_load(self, request: pb.RepositoryModelLoadRequest, context: Any) -> Message:
        name = request.model_name
        config = None
        for key in sorted(request.parameters):
            param = request.parameters[key]
            if key == "config" and param.WhichOneof("parameter_choice") == "string_param":
                try:
                    config = repository_config_from_json(param.string_param, source=f"config override of {name!r}")
                except RegistryError as exc:
                    raise InvalidInput(str(exc)) from None
            elif key.startswith("file:"):
                raise Unsupported(
                    f"RepositoryModelLoad parameter {shorten(key)}: loading model files sent in the request is "
                    "not served by splitinfer; expected the files in the repository directory"
                )
            else:
                raise InvalidInput(
                    f"RepositoryModelLoad parameter {shorten(key)} "
                    f"({param.WhichOneof('parameter_choice') or 'empty'}) is not understood; expected only "
                    "'config' holding a JSON ModelConfig string"
                )
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.pool, lambda: self.dataplane.load(name, config))
        except RegistryError as exc:
            raise InvalidInput(f"model {shorten(name)} cannot be loaded: {exc}") from None
        self.health.set_model(name, True)
        logger.info("model %s loaded on request%s", shorten(name), " with a config override" if config else "")
        return pb.RepositoryModelLoadResponse()

    async def _repository_unload(self, request: pb.RepositoryModelUnloadRequest, context: Any) -> Message:
        name = request.model_name
        await asyncio.get_running_loop().run_in_executor(self.pool, self.dataplane.unload, name)
        self.health.set_model(name, False)
        logger.info("model %s unloaded on request", shorten(name))
        return pb.RepositoryModelUnloadResponse()

    # ------------------------------------------------------------------ inference

    def _begin(self, raw: bytes, timeout_s: float | None) -> tuple[PendingRequest, pb.ModelInferRequest]:
        request = _parse(pb.ModelInferRequest, raw)
        return self.dataplane.begin(convert.request_from_proto(request), timeout_s=timeout_s), request

    def _begin_inline(self, raw: bytes, timeout_s: float | None) -> PendingRequest | None:
        """A small request of a tensor model is decoded on the loop (a hop to the pool costs more than
        its decoding); None for JPEG frames, which are decoded on the pool."""
        request = _parse(pb.ModelInferRequest, raw)
        if self.registry.find(request.model_name, request.model_version).input_spec is not None:
            return None
        return self.dataplane.begin(convert.request_from_proto(request), timeout_s=timeout_s)

    def _finish(self, pending: PendingRequest, result: Any) -> bytes:
        return convert.response_to_proto(self.dataplane.complete(pending, result)).SerializeToString()

    async def _infer(self, raw: bytes, context: Any) -> bytes:
        """One admitted request: decode on the pool, await its batch, serialize; raises ServerError."""
        loop = asyncio.get_running_loop()
        self.admission.enter()
        try:
            pending = self._begin_inline(raw, _timeout_s(context)) if len(raw) <= _INLINE_REQUEST_BYTES else None
            if pending is None:
                pending, _ = await loop.run_in_executor(self.pool, self._begin, raw, _timeout_s(context))
            try:
                remaining = None if pending.deadline_s is None else max(0.0, pending.deadline_s - time.monotonic())
                result = await asyncio.wait_for(asyncio.wrap_future(pending.future), remaining)
            except asyncio.TimeoutError:
                pending.future.cancel()
                error: ServerError = self.dataplane.deadline_error(pending)
            except (asyncio.CancelledError, CancelledError):
                pending.future.cancel()
                self.dataplane.fail(pending, DeadlineExceeded("cancelled"))
                raise
            except ServerError as exc:
                error = exc
            else:
                if sum(a.nbytes for a in result.outputs.values()) < _INLINE_RESPONSE_BYTES:
                    return self._finish(pending, result)
                return await loop.run_in_executor(self.pool, self._finish, pending, result)
            self.dataplane.fail(pending, error)
            raise error
        finally:
            self.admission.leave()

    async def ModelInfer(self, raw: bytes, context: Any) -> bytes:
        try:
            return await self._infer(raw, context)
        except Exception as exc:  # noqa: BLE001 - mapped to a status below
            code, message = self.describe(exc)
        await context.abort(code, message)
        return b""  # pragma: no cover - abort raises

    async def ModelStreamInfer(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        """Requests on one stream run concurrently (so the scheduler can batch them) and are answered
        as they finish, possibly out of order: clients match responses by request id, as with Triton.
        At most `stream_window` requests per stream are in flight; reading pauses beyond that."""
        answers: asyncio.Queue[bytes | None] = asyncio.Queue()
        window = asyncio.Semaphore(self.stream_window)
        tasks: set[asyncio.Task[None]] = set()

        async def answer(raw: bytes) -> None:
            try:
                await answers.put(await self._stream_one(raw, context))
            finally:
                window.release()

        async def read() -> None:
            try:
                async for raw in requests:
                    await window.acquire()
                    task = asyncio.ensure_future(answer(raw))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*list(tasks), return_exceptions=True)
            except Exception as exc:  # noqa: BLE001 - the client went away or the stream broke
                logger.debug("stream reader ended: %s", exc)
            finally:
                await answers.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                item = await answers.get()
                if item is None:
                    return
                yield item
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()

    async def _stream_one(self, raw: bytes, context: Any) -> bytes:
        try:
            return _stream_wrap(await self._infer(raw, context))
        except Exception as exc:  # noqa: BLE001 - reported in the stream, which goes on
            code, message = self.describe(exc)
        if len(raw) <= _INLINE_RESPONSE_BYTES:
            header = _request_header(raw)
        else:
            header = await asyncio.get_running_loop().run_in_executor(self.pool, _request_header, raw)
        reply = pb.ModelStreamInferResponse(
            error_message=message,
            infer_response=pb.ModelInferResponse(
                model_name=header.model_name, model_version=header.model_version, id=header.id
            ),
        )
        # the status a unary call would have ended with (a stream's error is only text in Triton's protocol)
        reply.infer_response.parameters[STREAM_STATUS_PARAMETER].string_param = code.name
        return reply.SerializeToString()



def _stream_wrap(response: bytes) -> bytes:
    """A serialized ModelInferResponse as a serialized ModelStreamInferResponse (field 2), no re-parse."""
    return _field_2_header(len(response)) + response


def _field_2_header(size: int) -> bytes:
    out = bytearray([0x12])  # field 2, wire type 2 (length-delimited)
    while True:
        byte = size & 0x7F
        size >>= 7
        out.append(byte | (0x80 if size else 0))
        if not size:
            return bytes(out)


def _request_header(raw: bytes) -> pb.ModelInferRequest:
    """Name, version and id of a request for an error answer ('' when it does not parse), names cut short."""
    header = pb.ModelInferRequest()
    try:
        header.ParseFromString(raw)
    except Exception:  # noqa: BLE001 - an unparsable request is answered without them
        return pb.ModelInferRequest()
    return pb.ModelInferRequest(
        model_name=header.model_name[:256], model_version=header.model_version[:64], id=header.id[:256]
    )


class _Handlers(grpc.GenericRpcHandler):
    def __init__(self, servicer: InferenceServicer) -> None:
        self._servicer = servicer

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._servicer.handler(handler_call_details.method or "")
