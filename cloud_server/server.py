"""Wiring: settings -> registry, sessions, data plane, servicer, health, reflection -> a started grpc.aio server.

`create_server(settings, interceptors=..., server_credentials=..., observer=...)` returns a
`RunningServer` that is already listening. Security (credentials, token interceptor), metrics (an
`Observer`), discovery and signal handling are supplied by the caller (`cloud_server.cli`); this module
only binds `settings.host:settings.port` (port 0 = an ephemeral port, see `RunningServer.port`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Coroutine, Sequence, TypeVar

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from cloud_server.admission import Admission
from cloud_server.dataplane import DataPlane
from cloud_server.errors import ServerStartError
from cloud_server.health import HealthState
from cloud_server.logs import throttle_grpc_logs
from cloud_server.observe import Observer
from cloud_server.registry import ModelRegistry, TailModel, load_registry
from cloud_server.servicer import INFERENCE_SERVICE, InferenceServicer
from cloud_server.sessions import SessionPool
from cloud_server.settings import ServerSettings
from protos._pool import POOL

__all__ = ["create_server", "RunningServer", "ServerStartError", "INFERENCE_SERVICE", "HEALTH_SERVICE"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class _LoopThread:
    """An asyncio event loop running in its own daemon thread (the grpc.aio server lives on it)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="grpc-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run `coro` on the loop and wait for its result from this (another) thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass
class RunningServer:
    """A started server. `port` is the bound port (useful with settings.port == 0)."""

    settings: ServerSettings
    port: int
    grpc_server: grpc.aio.Server
    registry: ModelRegistry
    dataplane: DataPlane
    health: HealthState
    servicer: InferenceServicer
    admission: Admission
    _loop: _LoopThread
    _pool: ThreadPoolExecutor
    _stopped: threading.Event = field(default_factory=threading.Event)
    _terminated: threading.Event = field(default_factory=threading.Event)

    @property
    def address(self) -> str:
        """host:port clients connect to (IPv6 hosts in brackets)."""
        return _bind_address(self.settings.host, self.port)

    @property
    def tls(self) -> bool:
        return self.settings.tls_enabled

    def models(self) -> list[TailModel]:
        """Every model version the server knows (ready or unloaded)."""
        return self.registry.models()

    def set_draining(self) -> None:
        """Health NOT_SERVING (overall and per model), ServerReady/ModelReady false; still serving."""
        logger.info("draining: health set to NOT_SERVING")
        self.health.set_draining()
        self.dataplane.set_draining()

    def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting calls, let in-flight ones finish for up to `grace_s`, then stop the batchers,
        the compute pool and the event loop. Idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        try:
            self._loop.call(self.grpc_server.stop(grace_s), timeout_s=(grace_s or 0.0) + 10.0)
        finally:
            self.servicer.close()
            self.dataplane.close()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._loop.stop()
            self._terminated.set()
        logger.info("server on %s stopped", self.address)

    def wait_for_termination(self, timeout_s: float | None = None) -> bool:
        """Block until the server stops; True if it stopped within `timeout_s`."""
        return self._terminated.wait(timeout_s)


def _bind_address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def create_server(
    settings: ServerSettings,
    *,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    server_credentials: grpc.ServerCredentials | None = None,
    observer: Observer | None = None,
    eager_batching: bool = True,
    preload: bool = True,
) -> RunningServer:
    """Load the models' index, start a grpc.aio server on its own event-loop thread with a bounded
    compute pool, and return it running.

    Open streams and requests waiting for a batch are coroutines, so they hold no thread; decoding,
    validation and response encoding run on `grpc_workers` pool threads; at most `max_inflight`
    inference requests are held at once (RESOURCE_EXHAUSTED beyond). The port is bound without
    SO_REUSEPORT, so an address another server listens on fails here instead of sharing connections.

    `eager_batching=False` makes every batch wait the whole `max_queue_delay_us` (Triton's behaviour);
    the default closes the window early when no other request for the model is arriving. With
    `preload` (default) the models' sessions are created and run once before the port opens, as far as
    `memory_budget_mb` allows (`DataPlane.warm_up`); the rest load on first use. Raises
    `errors.RegistryError` for unusable bundles/repositories and `errors.ServerStartError` naming the
    address when it cannot be bound.
    """
    registry = load_registry(settings.bundles, settings.triton_repository)
    sessions = SessionPool(
        memory_budget_mb=settings.memory_budget_mb,
        intra_op_threads=settings.intra_op_threads,
        inter_op_threads=settings.inter_op_threads,
        execution_providers=settings.execution_providers,
    )
    dataplane = DataPlane(settings, registry, sessions, observer=observer, eager_batching=eager_batching)
    if preload:
        warm_started_s = time.monotonic()
        warmed = dataplane.warm_up()
        logger.info("warmed %d of %d models in %.2f s", len(warmed), len(registry.names()),
                    time.monotonic() - warm_started_s)
    health = HealthState(registry.names())
    from protos.version import package_version

    pool = ThreadPoolExecutor(max_workers=settings.grpc_workers, thread_name_prefix="compute")
    admission = Admission(settings.max_inflight)
    servicer = InferenceServicer(
        dataplane, health, server_version=package_version(), pool=pool, admission=admission,
        stream_window=settings.max_queue_size,
    )
    loop = _LoopThread()
    address = _bind_address(settings.host, settings.port)
    try:
        server, port = loop.call(_start(settings, address, servicer, health, interceptors, server_credentials))
    except BaseException:
        pool.shutdown(wait=False)
        dataplane.close()
        loop.stop()
        raise
    running = RunningServer(
        settings=settings, port=port, grpc_server=server, registry=registry, dataplane=dataplane, health=health,
        servicer=servicer, admission=admission, _loop=loop, _pool=pool,
    )
    logger.info(
        "serving %d models on %s (%s)", len(registry.names()), running.address,
        "TLS" if server_credentials is not None else "plaintext",
    )
    return running


async def _start(
    settings: ServerSettings,
    address: str,
    servicer: InferenceServicer,
    health: HealthState,
    interceptors: Sequence[grpc.aio.ServerInterceptor],
    server_credentials: grpc.ServerCredentials | None,
) -> tuple[grpc.aio.Server, int]:
    throttle_grpc_logs()
    limit = settings.max_message_bytes
    server = grpc.aio.server(
        interceptors=list(interceptors),
        options=[
            ("grpc.max_send_message_length", limit),
            ("grpc.max_receive_message_length", limit),
            ("grpc.so_reuseport", 0),
        ],
    )
    servicer.add_to_server(server)
    health.servicer.add_to_server(server)
    reflection.enable_server_reflection(
        (INFERENCE_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server, pool=POOL
    )
    try:
        if server_credentials is not None:
            port = server.add_secure_port(address, server_credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ServerStartError(
            f"cannot listen on {address}: the address is in use or not local ({exc}); "
            "expected a free port on a local interface"
        ) from exc
    if not port:
        raise ServerStartError(f"cannot listen on {address}; expected a free port on a local interface")
    await server.start()
    return server, port
