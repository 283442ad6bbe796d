"""The thin GRPCInferenceService servicer: protobuf -> domain -> data plane -> protobuf.

Domain errors become gRPC statuses through `errors.grpc_status_code` (one table); client mistakes are
logged as one line, anything unexpected with its stack trace and returned as INTERNAL. Deadlines come
from `context.time_remaining()`. In `ModelStreamInfer` a failed request is answered with
`error_message` and the stream goes on; requests on one stream run concurrently and are answered as
they finish (clients match responses by request id).
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, TypeVar

import grpc

from cloud_server import convert
from cloud_server.dataplane import DataPlane
from cloud_server.errors import ServerError, grpc_status_code
from cloud_server.health import HealthState
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc

__all__ = ["InferenceServicer", "SERVER_NAME", "EXTENSIONS"]

logger = logging.getLogger(__name__)

SERVER_NAME = "splitinfer"
EXTENSIONS = ["model_repository", "model_configuration", "statistics", "splitinfer_advisory_parameters"]

T = TypeVar("T")


def _timeout_s(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    # grpc reports a huge number (not None) on some versions when no deadline was set
    if remaining is None or remaining > 10 * 365 * 86400:
        return None
    return max(0.0, remaining)


def _describe(error: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(error, ServerError):
        if error.client_error:
            logger.info("client error %s: %s", error.status.name, error)
        else:
            logger.error("server error %s: %s", error.status.name, error)
        return grpc_status_code(error), str(error)
    logger.error("unexpected failure", exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}"


class InferenceServicer(inference_pb2_grpc.GRPCInferenceServiceServicer):
    """All RPCs of protos/inference.proto over one DataPlane."""

    def __init__(
        self,
        dataplane: DataPlane,
        health: HealthState,
        *,
        server_version: str,
        stream_workers: int = 16,
        stream_window: int = 64,
    ) -> None:
        self.dataplane = dataplane
        self.stream_window = stream_window
        self._stream_pool = ThreadPoolExecutor(max_workers=stream_workers, thread_name_prefix="stream")
        self.registry = dataplane.registry
        self.health = health
        self.server_version = server_version

    def _call(self, context: grpc.ServicerContext, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - mapped to a status below
            code, message = _describe(exc)
        context.abort(code, message)
        raise AssertionError("unreachable")  # context.abort raises

    def add_to_server(self, server: grpc.Server) -> None:
        """Register this servicer as inference.GRPCInferenceService on `server`."""
        inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self, server)

    def close(self) -> None:
        """Stop the stream workers (after the gRPC server stopped)."""
        self._stream_pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ server

    def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=not self.dataplane.draining)

    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self.server_version, extensions=EXTENSIONS)

    # ------------------------------------------------------------------ models

    def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.ServicerContext) -> pb.ModelReadyResponse:
        def ready() -> pb.ModelReadyResponse:
            self.registry.find(request.name, request.version)
            ok = self.registry.is_ready(request.name) and not self.dataplane.draining
            return pb.ModelReadyResponse(ready=ok)

        return self._call(context, ready)

    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ModelMetadataResponse:
        def metadata() -> pb.ModelMetadataResponse:
            model = self.registry.find(request.name, request.version)
            return convert.model_metadata_to_proto(model, self.registry.versions(request.name))

        return self._call(context, metadata)

    def ModelConfig(self, request: pb.ModelConfigRequest, context: grpc.ServicerContext) -> pb.ModelConfigResponse:
        def config() -> pb.ModelConfigResponse:
            model = self.registry.find(request.name, request.version)
            settings = self.dataplane.settings
            return pb.ModelConfigResponse(
                config=convert.model_config_to_proto(
                    model, max_batch_size=settings.max_batch_size, max_queue_delay_us=settings.max_queue_delay_us
                )
            )

        return self._call(context, config)

    def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        return self._call(
            context,
            lambda: convert.statistics_to_proto(self.dataplane.statistics(request.name, request.version)),
        )

    # ------------------------------------------------------------------ inference

    def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> pb.ModelInferResponse:
        def infer() -> pb.ModelInferResponse:
            domain = convert.request_from_proto(request)
            return convert.response_to_proto(self.dataplane.infer(domain, timeout_s=_timeout_s(context)))

        return self._call(context, infer)

    def ModelStreamInfer(
        self, request_iterator: Iterator[pb.ModelInferRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ModelStreamInferResponse]:
        """Requests on one stream run concurrently (so the scheduler can batch them) and are answered
        as they finish, possibly out of order: clients match responses by request id, as with Triton.
        At most `stream_window` requests per stream are in flight; reading pauses beyond that."""
        answers: queue.Queue = queue.Queue()
        window = threading.Semaphore(self.stream_window)
        done = object()

        def answer(request: pb.ModelInferRequest) -> None:
            try:
                answers.put(self._stream_one(request, context))
            finally:
                window.release()

        def read() -> None:
            pending = []
            try:
                for request in request_iterator:
                    window.acquire()
                    pending.append(self._stream_pool.submit(answer, request))
                    pending = [f for f in pending if not f.done()]
            except Exception as exc:  # noqa: BLE001 - the client went away or the stream broke
                logger.debug("stream reader ended: %s", exc)
            finally:
                for future in pending:
                    future.result()
                answers.put(done)

        threading.Thread(target=read, name="stream-reader", daemon=True).start()
        while True:
            item = answers.get()
            if item is done:
                return
            yield item

    def _stream_one(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> pb.ModelStreamInferResponse:
        try:
            domain = convert.request_from_proto(request)
            response = self.dataplane.infer(domain, timeout_s=_timeout_s(context))
        except Exception as exc:  # noqa: BLE001 - reported in the stream, which goes on
            _, message = _describe(exc)
            return pb.ModelStreamInferResponse(
                error_message=message,
                infer_response=pb.ModelInferResponse(
                    model_name=request.model_name, model_version=request.model_version, id=request.id
                ),
            )
        return pb.ModelStreamInferResponse(infer_response=convert.response_to_proto(response))

    # ------------------------------------------------------------------ repository

    def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        return self._call(context, lambda: convert.index_to_proto(self.registry.index(ready_only=request.ready)))

    def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        def load() -> pb.RepositoryModelLoadResponse:
            self.dataplane.load(request.model_name)
            self.health.set_model(request.model_name, True)
            logger.info("model %s loaded on request", request.model_name)
            return pb.RepositoryModelLoadResponse()

        return self._call(context, load)

    def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        def unload() -> pb.RepositoryModelUnloadResponse:
            self.dataplane.unload(request.model_name)
            self.health.set_model(request.model_name, False)
            logger.info("model %s unloaded on request", request.model_name)
            return pb.RepositoryModelUnloadResponse()

        return self._call(context, unload)
