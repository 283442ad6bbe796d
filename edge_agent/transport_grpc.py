"""Open Inference Protocol (KServe v2 / Triton) gRPC client: the agent's network seam.

:class:`GrpcTransport` sends :class:`~edge_agent.types.OffloadRequest` values over one
long-lived ``ModelStreamInfer`` bidirectional stream and waits for the response with
the request's id, at most ``timeout_s`` (the per-frame deadline). A late response is
dropped. When the server does not implement streaming (``UNIMPLEMENTED``) the client
switches to unary ``ModelInfer`` for good. A broken stream fails every pending request
and is reopened by the next call; so is a stream after a per-request failure other than
busy / too large / model not served (a deadline, a server error: it may be bound to a server
that was replaced, e.g. behind a proxy), and the stream in use when a health probe succeeds
after failures (the circuit is about to close). A dropped stream is half-closed and cancelled
after ``RETIRED_STREAM_GRACE_S``. The channel itself is replaced (new connections, see
:mod:`edge_agent.channels`) after a failure that says the server is gone or broken (not busy, not
a deadline) and after every failed health probe that follows one, so neither the next request nor
the next probe waits on a connection bound to a server or proxy that was replaced.

Works against our server and stock Triton: requests use ``raw_input_contents``,
responses may carry ``raw_output_contents`` or typed ``contents``; the advisory
response parameters ``server_queue_us`` / ``server_compute_us`` are read when present.
Model versions are integers (``protos.bundle.TAIL_MODEL_VERSION``, as Triton requires); which
bundle a server holds is checked once per model (and again after a failure that may mean a
restart) through ``ModelConfig``: its ``splitinfer_bundle_hash`` parameter must equal the
request's, or the call fails with ``MODEL_NOT_SERVED`` (configuration, not an outage).

Every failure leaves as :class:`~edge_agent.errors.OffloadUnavailable` (``code`` is the
gRPC status name, or ``SERVER_BUSY`` / ``MODEL_NOT_SERVED`` / ``MESSAGE_TOO_LARGE`` /
``STREAM_ERROR`` / ``BAD_RESPONSE``), chained ``from`` the cause. A stream's error answer is
mapped by the status our server names in its ``splitinfer_status`` parameter (Triton's protocol
carries only text there; without it the code is ``SERVER_ERROR``).
This module and ``cloud_server`` are the only users of the generated stubs here.
"""
from __future__ import annotations

import logging
import pathlib
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Optional

import grpc

from edge_agent.channels import channel_target, service_config
from edge_agent.errors import MODEL_NOT_SERVED, SERVER_BUSY, OffloadUnavailable
from edge_agent.oip import advisory_ms, request_to_proto, response_to_outputs
from edge_agent.types import OffloadRequest, OffloadResponse
from protos import inference_pb2, inference_pb2_grpc
from protos.bundle import BUNDLE_HASH_PARAMETER
from protos.errors import ContractError

if TYPE_CHECKING:
    from edge_agent.config import ServerConfig

#: Advisory parameter of our server's stream error answers: the status a unary call would have got
#: (the same name as cloud_server.servicer.STREAM_STATUS_PARAMETER; the products share no module).
STREAM_STATUS_PARAMETER = "splitinfer_status"

log = logging.getLogger(__name__)

# Status codes after which retrying the same request cannot help.
_PERMANENT = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
}


@dataclass(frozen=True, kw_only=True)
class GrpcOptions:
    """Connection settings; TLS when ``tls`` (``ca_file`` None = system roots), mutual TLS
    with ``cert_file`` + ``key_file``, a bearer ``token`` in the ``authorization`` metadata."""

    tls: bool = False
    ca_file: Optional[pathlib.Path] = None
    cert_file: Optional[pathlib.Path] = None
    key_file: Optional[pathlib.Path] = None
    server_name: Optional[str] = None
    token: Optional[str] = field(default=None, repr=False)
    max_message_bytes: int = 64 * 1024 * 1024
    streaming: bool = True


def map_rpc_error(exc: grpc.RpcError, what: str) -> OffloadUnavailable:
    """A gRPC error -> OffloadUnavailable with the status name as ``code`` (most specific first)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return map_status(code, details or "", what)


def map_status(code: Optional[grpc.StatusCode], details: str, what: str) -> OffloadUnavailable:
    """A status (of a unary call, or named in a stream's error answer) -> OffloadUnavailable.

    RESOURCE_EXHAUSTED from the server's admission or queue is ``SERVER_BUSY`` (the server is up
    but full: a cost, not an outage); gRPC's own message-size refusal is ``MESSAGE_TOO_LARGE``;
    NOT_FOUND is ``MODEL_NOT_SERVED`` (the server lacks this bundle version: configuration)."""
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return OffloadUnavailable(f"{what}: deadline exceeded", code="DEADLINE_EXCEEDED")
    if code is grpc.StatusCode.UNAVAILABLE:
        return OffloadUnavailable(f"{what}: server unavailable ({details})", code="UNAVAILABLE")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return OffloadUnavailable(f"{what}: not authorized ({details}); check server.token / client certificate",
                                  code=code.name, retryable=False)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        if "larger than max" in details:
            return OffloadUnavailable(f"{what}: message too large ({details})", code="MESSAGE_TOO_LARGE")
        return OffloadUnavailable(f"{what}: RESOURCE_EXHAUSTED: server busy ({details})", code=SERVER_BUSY)
    if code is grpc.StatusCode.NOT_FOUND:
        return OffloadUnavailable(
            f"{what}: NOT_FOUND: the server does not serve this model ({details}); the server's bundles differ from this "
            "agent's (bundle version mismatch?)", code=MODEL_NOT_SERVED, retryable=False)
    if code is not None:
        return OffloadUnavailable(f"{what}: {code.name}: {details}", code=code.name, retryable=code not in _PERMANENT)
    return OffloadUnavailable(f"{what}: {details}", code="UNKNOWN")


# failures that say the server is up and unchanged: the bundle it was checked to serve still holds
_SERVER_UP_CODES = frozenset({SERVER_BUSY, "DEADLINE_EXCEEDED", "MESSAGE_TOO_LARGE", "DUPLICATE_ID"})
# per-request answers a working stream gives; after any other failure the stream is dropped (issue 15)
_STREAM_KEEP_CODES = frozenset({SERVER_BUSY, "MESSAGE_TOO_LARGE", "DUPLICATE_ID", MODEL_NOT_SERVED})
RETIRED_STREAM_GRACE_S = 5.0


def _status_named(name: str) -> Optional[grpc.StatusCode]:
    return next((c for c in grpc.StatusCode if c.name == name), None)


# --------------------------------------------------------------------------- the stream


class _Stream:
    """One ModelStreamInfer call: a request queue feeding the call and a reader thread
    resolving futures by request id."""

    _END = object()

    def __init__(self, stub: inference_pb2_grpc.GRPCInferenceServiceStub, metadata: list[tuple[str, str]]) -> None:
        self._requests: queue.Queue = queue.Queue()
        self._pending: dict[str, Future] = {}
        self._lock = threading.Lock()
        self.broken: Optional[OffloadUnavailable] = None
        self.unimplemented = False
        self._call = stub.ModelStreamInfer(self._iter_requests(), metadata=metadata)
        self._reader = threading.Thread(target=self._read, name="oip-stream-reader", daemon=True)
        self._reader.start()

    def _iter_requests(self) -> Iterator[inference_pb2.ModelInferRequest]:
        while True:
            item = self._requests.get()
            if item is self._END:
                return
            yield item

    def submit(self, msg: inference_pb2.ModelInferRequest) -> Future:
        fut: Future = Future()
        with self._lock:
            if self.broken is not None:
                raise self.broken
            if msg.id in self._pending:
                raise OffloadUnavailable(f"request id {msg.id!r} is already in flight", code="DUPLICATE_ID",
                                         retryable=False)
            self._pending[msg.id] = fut
        self._requests.put(msg)
        return fut

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._pending.pop(request_id, None)

    def _read(self) -> None:
        try:
            for msg in self._call:
                self._dispatch(msg)
            error = OffloadUnavailable("stream closed by the server", code="STREAM_CLOSED")
        except grpc.RpcError as exc:
            if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                self.unimplemented = True
            error = map_rpc_error(exc, "ModelStreamInfer")
            error.__cause__ = exc
        except Exception as exc:  # noqa: BLE001 - anything else breaks the stream too
            error = OffloadUnavailable(f"stream failed: {exc}", code="STREAM_ERROR")
            error.__cause__ = exc
        with self._lock:
            self.broken = error
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(error)

    def _dispatch(self, msg: inference_pb2.ModelStreamInferResponse) -> None:
        rid = msg.infer_response.id
        with self._lock:
            fut = self._pending.pop(rid, None)
            if fut is None and not rid and len(self._pending) == 1:
                # a response or error without an id (some servers): it can only be the one pending request
                rid, fut = self._pending.popitem()
        if fut is None:
            log.debug("dropping a late or unknown stream response id=%r", rid)
            return
        if msg.error_message:
            status = msg.infer_response.parameters.get(STREAM_STATUS_PARAMETER)
            code = _status_named(status.string_param) if status is not None else None
            if code is None:  # a server that does not name the status (e.g. Triton)
                fut.set_exception(OffloadUnavailable(f"server error: {msg.error_message}", code="SERVER_ERROR"))
            else:
                fut.set_exception(map_status(code, msg.error_message, msg.infer_response.model_name or "stream"))
        else:
            fut.set_result(msg.infer_response)

    def close(self) -> None:
        self._requests.put(self._END)
        self._call.cancel()

    def retire(self, grace_s: float) -> None:
        """Take no more requests: half-close now (a live server still answers what is pending) and
        cancel the call after ``grace_s`` (a stale connection never answers)."""
        self._requests.put(self._END)
        timer = threading.Timer(grace_s, self._call.cancel)
        timer.daemon = True
        timer.start()


class GrpcTransport:
    """Thread-safe Transport over one channel (to one server, or balanced over several: see
    :mod:`edge_agent.channels`). ``infer`` may be called from several threads."""

    def __init__(self, address: str, options: GrpcOptions = GrpcOptions()) -> None:
        self.address = address
        self.options = options
        self._target = channel_target(address)
        self._metadata = [("authorization", f"Bearer {options.token}")] if options.token else []
        self._channel_options = [
            ("grpc.max_send_message_length", options.max_message_bytes),
            ("grpc.max_receive_message_length", options.max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.initial_reconnect_backoff_ms", 200),
            # recovery is detected by the breaker's health probes (at most every 2 s): the
            # channel's own reconnect backoff must not be longer, or a probe meets a
            # channel still waiting out its backoff and the server looks dead for longer
            ("grpc.max_reconnect_backoff_ms", 1_000),
            # a recreated channel must open new connections, not reuse the process-wide pool's
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.service_config", service_config(self._target.balanced)),
        ]
        if options.tls and options.server_name:
            self._channel_options.append(("grpc.ssl_target_name_override", options.server_name))
        self._lock = threading.Lock()
        self._channel, self._stub = self._open_channel()
        # a stream is bound to one server: balanced over several, every request is a unary call
        self._streaming = options.streaming and not self._target.balanced
        self._stream: Optional[_Stream] = None
        self._closed = False
        self._suspect = False  # an offload failed since the last good health probe
        self._verified: set[tuple[str, str]] = set()  # (model, bundle hash) the server's ModelConfig confirmed
        self._expected: dict[tuple[str, str], str] = {}  # (model, version) -> the bundle hash requests carry
        self.channels_opened = 1

    def _open_channel(self) -> tuple[grpc.Channel, inference_pb2_grpc.GRPCInferenceServiceStub]:
        if self.options.tls:
            o = self.options
            creds = grpc.ssl_channel_credentials(
                root_certificates=o.ca_file.read_bytes() if o.ca_file else None,
                private_key=o.key_file.read_bytes() if o.key_file else None,
                certificate_chain=o.cert_file.read_bytes() if o.cert_file else None,
            )
            channel = grpc.secure_channel(self._target.target, creds, options=self._channel_options)
        else:
            channel = grpc.insecure_channel(self._target.target, options=self._channel_options)
        return channel, inference_pb2_grpc.GRPCInferenceServiceStub(channel)

    def _reset_channel(self) -> None:
        """A new channel (new connections) for the next call; the old one and its stream are closed
        after ``RETIRED_STREAM_GRACE_S`` (a live server still answers what is in flight)."""
        channel, stub = self._open_channel()
        with self._lock:
            if self._closed:
                channel.close()
                return
            old_channel, old_stream = self._channel, self._stream
            self._channel, self._stub, self._stream = channel, stub, None
            self.channels_opened += 1
        log.debug("new channel to %s (the old one may be bound to a replaced server)", self.address)
        if old_stream is not None:
            old_stream.retire(RETIRED_STREAM_GRACE_S)
        timer = threading.Timer(RETIRED_STREAM_GRACE_S, old_channel.close)
        timer.daemon = True
        timer.start()

    @property
    def streaming(self) -> bool:
        return self._streaming

    def _get_stream(self) -> _Stream:
        with self._lock:
            if self._closed:
                raise OffloadUnavailable("transport is closed", code="CLOSED", retryable=False)
            if self._stream is None or self._stream.broken is not None:
                if self._stream is not None:
                    self._stream.close()
                self._stream = _Stream(self._stub, self._metadata)
            return self._stream

    def _check_bundle(self, name: str, version: str, expected: str, timeout_s: float) -> None:
        """Once per (model, bundle) while the server stays up: does the server's ModelConfig name our
        bundle (parameter ``splitinfer_bundle_hash``)? A different hash is ``MODEL_NOT_SERVED``
        (configuration, like NOT_FOUND); a server whose config carries no hash (a repository not
        written by ``export-triton``) or that has no ModelConfig cannot be checked and is trusted."""
        if not expected or (name, expected) in self._verified:
            return
        self._expected[(name, version)] = expected
        try:
            reply = self._stub.ModelConfig(inference_pb2.ModelConfigRequest(name=name, version=version),
                                           timeout=timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.UNIMPLEMENTED:
                raise map_rpc_error(exc, f"ModelConfig {name}") from exc
            log.info("server at %s has no ModelConfig; bundle of %s not checked", self.address, name)
        else:
            served = reply.config.parameters.get(BUNDLE_HASH_PARAMETER)
            if served is None:
                log.info("server at %s names no bundle for %s (no %s parameter); not checked",
                         self.address, name, BUNDLE_HASH_PARAMETER)
            elif served.string_value != expected:
                raise OffloadUnavailable(
                    f"{name} version {version}: the server at {self.address} serves bundle "
                    f"{served.string_value[:64]!r}; this agent runs bundle {expected!r} (ModelConfig parameter "
                    f"{BUNDLE_HASH_PARAMETER}); expected the same bundle on both sides",
                    code=MODEL_NOT_SERVED, retryable=False)
        self._verified.add((name, expected))

    def infer(self, request: OffloadRequest, timeout_s: float) -> OffloadResponse:
        msg = request_to_proto(request)
        check_start = time.monotonic()
        try:
            self._check_bundle(request.model_name, request.model_version,
                               str(request.parameters.get(BUNDLE_HASH_PARAMETER, "")), timeout_s)
        except OffloadUnavailable:
            self._verified.clear()
            raise
        timeout_s = max(0.001, timeout_s - (time.monotonic() - check_start))
        # Triton's request parameter (microseconds): a stream carries no per-request deadline, and a
        # server that knows it refuses at once (RESOURCE_EXHAUSTED) what it could only answer too late
        msg.parameters["timeout"].int64_param = max(1, int(timeout_s * 1e6))
        try:
            return self._infer_checked(request, msg, timeout_s)
        except OffloadUnavailable as exc:
            if exc.code not in _SERVER_UP_CODES:
                self._verified.clear()  # the server may have restarted with another bundle: check again
            if exc.code not in _STREAM_KEEP_CODES:
                self._suspect = True
                if exc.code not in _SERVER_UP_CODES:  # gone, reset, failed: its connection may be stale
                    self._reset_channel()
            raise

    def _infer_checked(self, request: OffloadRequest, msg: inference_pb2.ModelInferRequest,
                       timeout_s: float) -> OffloadResponse:
        start = time.monotonic()
        if self._streaming:
            try:
                response = self._infer_stream(msg, timeout_s)
            except OffloadUnavailable as exc:
                stream = self._stream
                if stream is not None and stream.unimplemented:
                    log.info("server at %s does not implement ModelStreamInfer; using unary ModelInfer", self.address)
                    self._streaming = False
                    remaining = timeout_s - (time.monotonic() - start)
                    if remaining <= 0:
                        raise
                    response = self._infer_unary(msg, remaining)
                else:
                    raise exc
        else:
            response = self._infer_unary(msg, timeout_s)
        round_trip_ms = (time.monotonic() - start) * 1000.0
        try:
            outputs = response_to_outputs(response)
        except (ContractError, ValueError) as exc:
            raise OffloadUnavailable(f"malformed response for {request.model_name}: {exc}", code="BAD_RESPONSE") from exc
        return OffloadResponse(
            request_id=request.request_id,
            outputs=outputs,
            server_queue_ms=advisory_ms(response, "server_queue_us"),
            server_compute_ms=advisory_ms(response, "server_compute_us"),
            round_trip_ms=round_trip_ms,
        )

    def _infer_stream(self, msg: inference_pb2.ModelInferRequest, timeout_s: float) -> inference_pb2.ModelInferResponse:
        stream = self._get_stream()
        try:
            fut = stream.submit(msg)
            try:
                return fut.result(timeout=timeout_s)
            except FutureTimeout as exc:
                stream.forget(msg.id)
                raise OffloadUnavailable(f"{msg.model_name}: deadline of {timeout_s * 1000:.0f} ms exceeded",
                                         code="DEADLINE_EXCEEDED") from exc
        except OffloadUnavailable as exc:
            if exc.code not in _STREAM_KEEP_CODES and not stream.unimplemented:
                self._retire_stream(stream)  # a stale stream (old server, proxy) must not take the next request
            raise

    def _retire_stream(self, stream: Optional[_Stream] = None) -> None:
        """Stop sending on ``stream`` (default: the current one); the next call opens a fresh stream."""
        with self._lock:
            current = self._stream
            if current is None or (stream is not None and current is not stream):
                return
            self._stream = None
        log.debug("dropping the offload stream to %s; the next request opens a new one", self.address)
        current.retire(RETIRED_STREAM_GRACE_S)

    def _infer_unary(self, msg: inference_pb2.ModelInferRequest, timeout_s: float) -> inference_pb2.ModelInferResponse:
        try:
            return self._stub.ModelInfer(msg, timeout=timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, f"ModelInfer {msg.model_name}") from exc

    def healthy(self, timeout_s: float) -> bool:
        """ServerReady within ``timeout_s``; False on any error."""
        try:
            reply = self._stub.ServerReady(inference_pb2.ServerReadyRequest(), timeout=timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            log.debug("health probe of %s failed: %s", self.address, exc.code() if hasattr(exc, "code") else exc)
            if self._suspect:  # the next probe must not wait on a connection bound to a dead server or proxy
                self._reset_channel()
            return False
        if reply.ready and self._suspect:  # the server is back after failures: do not reuse the old stream
            self._suspect = False
            self._retire_stream()
        return bool(reply.ready)

    def model_ready(self, name: str, version: str, timeout_s: float) -> bool:
        """ModelReady, and (when requests for it carried a bundle hash) the server's ModelConfig
        names that bundle: a server holding another bundle under the same name is not ready for us."""
        try:
            reply = self._stub.ModelReady(inference_pb2.ModelReadyRequest(name=name, version=version),
                                          timeout=timeout_s, metadata=self._metadata)
        except grpc.RpcError:
            return False
        expected = self._expected.get((name, version))
        if not reply.ready or expected is None:
            return bool(reply.ready)
        self._verified.discard((name, expected))
        try:
            self._check_bundle(name, version, expected, timeout_s)
        except OffloadUnavailable as exc:
            log.debug("model %s at %s is not ours: %s", name, self.address, exc)
            return False
        return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._stream is not None:
                self._stream.close()
                self._stream = None
        self._channel.close()


def options_from_config(server: "ServerConfig") -> GrpcOptions:
    """GrpcOptions from the ``[server]`` section of the agent's config."""
    return GrpcOptions(
        tls=server.tls, ca_file=server.ca_file, cert_file=server.cert_file, key_file=server.key_file,
        server_name=server.server_name, token=server.token,
        max_message_bytes=server.max_message_mb * 1024 * 1024, streaming=server.streaming,
    )
