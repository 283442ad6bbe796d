"""The agent's control endpoint: ``splitinfer.control.v1.AgentControl`` over a :class:`ControlTarget`.

A thin servicer (protobuf -> edge types -> target -> protobuf). All conversion between
``protos.control_pb2`` and :mod:`edge_agent.types` lives in this module, in the
``*_to_pb`` / ``*_from_pb`` functions; ``splitctl`` only reads the protobuf side.

Where it listens (see :func:`start_control_server`):

* a Unix socket, by default, at :func:`default_socket_path`. The file is chmod-ed to
  ``0600`` right after the bind and the mode is checked; a parent directory this module
  creates is ``0700``, which also covers the instant between bind and chmod (an existing
  directory is left as it is). Anyone who can open the socket is trusted (file
  permissions are the access control). A stale socket from a crashed agent is replaced;
  a live one (another agent answering) is not.
* optionally TCP (``host:port``), which then **requires** a bearer token: every call must
  carry ``authorization: Bearer <token>`` metadata, compared with
  :func:`hmac.compare_digest`. The TCP listener is a separate gRPC server so the token
  never applies to the socket and never can be skipped on TCP. Given only a TCP address,
  no socket is created.

Status mapping: an unknown cut is ``NOT_FOUND`` (the message lists the valid cuts), a
bad objective or SLO is ``INVALID_ARGUMENT``, a bad token ``UNAUTHENTICATED``.
"""
from __future__ import annotations

import contextlib
import hmac
import logging
import math
import os
import pathlib
import queue
import socket
import stat
import threading
import time
from concurrent import futures
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

import grpc

from edge_agent.errors import ConfigError, PolicyError, UnknownCutError
from edge_agent.types import (
    AgentSnapshot,
    ControlTarget,
    CutEstimate,
    CutProfile,
    Decision,
    Mode,
    Objective,
    Telemetry,
)
from edge_agent import control_exits
from protos import control_pb2, control_pb2_grpc

log = logging.getLogger(__name__)

SOCKET_ENV = "SPLITINFER_CONTROL_SOCKET"
ADDRESS_ENV = "SPLITINFER_CONTROL_ADDRESS"
TOKEN_ENV = "SPLITINFER_CONTROL_TOKEN"
SOCKET_MODE = 0o600
SERVICE_NAME = "splitinfer.control.v1.AgentControl"


def default_socket_path() -> str:
    """``$SPLITINFER_CONTROL_SOCKET``, else ``$XDG_RUNTIME_DIR/splitinfer/control.sock``,
    else ``/tmp/splitinfer-<uid>/control.sock``."""
    env = os.environ.get(SOCKET_ENV)
    if env:
        return env
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = pathlib.Path(runtime) / "splitinfer" if runtime else pathlib.Path(f"/tmp/splitinfer-{os.getuid()}")
    return str(base / "control.sock")


# --------------------------------------------------------------------------- conversion (the one place)

_MODE_TO_PB = {
    Mode.AUTO: control_pb2.MODE_AUTO,
    Mode.PINNED: control_pb2.MODE_PINNED,
    Mode.LOCAL_FALLBACK: control_pb2.MODE_LOCAL_FALLBACK,
}
_OBJECTIVE_TO_PB = {
    Objective.LATENCY: control_pb2.OBJECTIVE_LATENCY,
    Objective.ENERGY: control_pb2.OBJECTIVE_ENERGY,
    Objective.SLO: control_pb2.OBJECTIVE_SLO,
}
_OBJECTIVE_FROM_PB = {v: k for k, v in _OBJECTIVE_TO_PB.items()}
_MODE_FROM_PB = {v: k for k, v in _MODE_TO_PB.items()}


def mode_to_pb(mode: Mode) -> int:
    return _MODE_TO_PB[mode]


def mode_from_pb(value: int) -> Mode:
    try:
        return _MODE_FROM_PB[value]
    except KeyError:
        raise ValueError(f"mode {value} is not one of MODE_AUTO, MODE_PINNED, MODE_LOCAL_FALLBACK") from None


def objective_to_pb(objective: Objective) -> int:
    return _OBJECTIVE_TO_PB[objective]


def objective_from_pb(value: int) -> Objective:
    try:
        return _OBJECTIVE_FROM_PB[value]
    except KeyError:
        raise ValueError(
            f"objective {value} is not one of OBJECTIVE_LATENCY, OBJECTIVE_ENERGY, OBJECTIVE_SLO"
        ) from None


class UptimeClock:
    """Turns the target's ``at_ms`` (milliseconds on the agent's own clock, which starts at
    0 when the agent starts, as :attr:`AgentSnapshot.uptime_s` does) into wall time for
    display. Re-anchored at every snapshot: ``unix_ms = now_unix_ms - uptime_ms + at_ms``."""

    def __init__(self, wall_ms: Callable[[], float] = lambda: time.time() * 1000.0) -> None:
        self._wall_ms = wall_ms
        self._start_unix_ms: Optional[float] = None
        self._lock = threading.Lock()

    def sync(self, snapshot: AgentSnapshot) -> None:
        with self._lock:
            self._start_unix_ms = self._wall_ms() - snapshot.uptime_s * 1000.0

    def __call__(self, at_ms: int) -> int:
        with self._lock:
            start = self._start_unix_ms if self._start_unix_ms is not None else self._wall_ms() - at_ms
        return int(start + at_ms)


def _or0(value: Optional[float]) -> float:
    return 0.0 if value is None or not math.isfinite(value) else float(value)


def telemetry_to_pb(t: Telemetry, to_unix: Callable[[int], int]) -> control_pb2.Telemetry:
    return control_pb2.Telemetry(
        at_unix_ms=to_unix(t.at_ms),
        has_battery=t.battery_pct is not None,
        battery_pct=_or0(t.battery_pct),
        charging=bool(t.charging),
        cpu_temp_c=_or0(t.cpu_temp_c),
        throttled=t.throttled,
        cpu_load_pct=_or0(t.cpu_load_pct),
        uplink_kbps=_or0(t.uplink_kbps),
        rtt_ms=_or0(t.rtt_ms),
        server_queue_ms=_or0(t.server_queue_ms),
        server_compute_ms=_or0(t.server_compute_ms),
        slowdown_factor=_or0(t.slowdown_factor),
    )


def decision_to_pb(d: Decision, to_unix: Callable[[int], int]) -> control_pb2.Decision:
    return control_pb2.Decision(
        at_unix_ms=to_unix(d.at_ms),
        cut_id=d.cut_id,
        mode=mode_to_pb(d.mode),
        reason=d.reason,
        objective=objective_to_pb(d.objective),
    )


def snapshot_to_pb(s: AgentSnapshot, to_unix: Callable[[int], int]) -> control_pb2.AgentStatus:
    return control_pb2.AgentStatus(
        agent_id=s.agent_id,
        bundle_name=s.bundle_name,
        bundle_version=s.bundle_version,
        server_address=s.server_address,
        current=decision_to_pb(s.decision, to_unix),
        objective=objective_to_pb(s.objective),
        slo_ms=_or0(s.slo_ms),
        telemetry=telemetry_to_pb(s.telemetry, to_unix),
        frames_captured=s.frames_captured,
        frames_dropped=s.frames_dropped,
        results=s.results,
        results_by_path=[
            control_pb2.PathCount(path=path, results=count) for path, count in sorted(s.results_by_path.items())
        ],
        circuit_state=s.circuit_state,
        uptime_s=s.uptime_s,
        mean_latency_ms=_or0(s.mean_latency_ms),
    ) if s.gate_exits is None else control_exits.add_gate_exits(snapshot_to_pb(replace(s, gate_exits=None), to_unix),
                                                               s.gate_exits)


def estimates_to_pb(
    estimates: Sequence[CutEstimate], current_cut: str, profiles: Sequence[CutProfile] = ()
) -> control_pb2.ListCutsResponse:
    by_id = {p.cut_id: p for p in profiles}
    cuts = []
    for e in estimates:
        profile = by_id.get(e.cut_id)
        cuts.append(
            control_pb2.CutCost(
                cut_id=e.cut_id,
                tensors=list(profile.tensors) if profile else [],
                wire_bytes=profile.wire_bytes if profile else 0,
                head_ms=_or0(e.head_ms),
                wire_ms=_or0(e.wire_ms),
                server_ms=_or0(e.server_ms),
                predicted_latency_ms=_or0(e.latency_ms),
                predicted_energy_mj=_or0(e.energy_mj),
                current=e.cut_id == current_cut,
                available=e.available,
                unavailable_reason=e.unavailable_reason,
            )
        )
    return control_pb2.ListCutsResponse(cuts=cuts)


def policy_from_pb(request: control_pb2.SetPolicyRequest) -> tuple[Objective, Optional[float]]:
    """Validate a SetPolicy request; ValueError says what is wrong."""
    objective = objective_from_pb(request.objective)
    slo_ms: Optional[float] = float(request.slo_ms) if request.slo_ms else None
    if slo_ms is not None and not (math.isfinite(slo_ms) and slo_ms > 0):
        raise ValueError(f"slo_ms {request.slo_ms} must be a finite number > 0")
    if objective is Objective.SLO and slo_ms is None:
        raise ValueError("objective 'slo' needs slo_ms > 0")
    return objective, slo_ms


# --------------------------------------------------------------------------- servicer


class AgentControlServicer(control_pb2_grpc.AgentControlServicer):
    """Convert, delegate to the :class:`ControlTarget`, map errors to status codes.

    ``profiles`` (optional) adds each cut's crossing tensors and wire bytes to ``ListCuts``.
    """

    def __init__(
        self,
        target: ControlTarget,
        *,
        profiles: Sequence[CutProfile] = (),
        to_unix: Optional[Callable[[int], int]] = None,
    ) -> None:
        self.target = target
        self.profiles = tuple(profiles)
        self.to_unix = to_unix or UptimeClock()
        self._stopping = threading.Event()

    def _snapshot(self) -> AgentSnapshot:
        snapshot = self.target.snapshot()
        if hasattr(self.target, "gate_exit_status"):  # issue 16: gate and exit status
            snapshot = replace(snapshot, gate_exits=self.target.gate_exit_status())
        sync = getattr(self.to_unix, "sync", None)
        if sync is not None:
            sync(snapshot)
        return snapshot

    def GetStatus(self, request, context):  # noqa: N802 - RPC name
        return snapshot_to_pb(self._snapshot(), self.to_unix)

    def ListCuts(self, request, context):  # noqa: N802
        current = self._snapshot().decision.cut_id
        return estimates_to_pb(self.target.cut_estimates(), current, self.profiles)

    def SetSplit(self, request, context):  # noqa: N802
        if not request.cut_id:
            valid = [e.cut_id for e in self.target.cut_estimates()]
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cut_id is empty; valid cuts: {', '.join(valid)}")
        try:
            decision = self.target.pin_split(request.cut_id)
        except UnknownCutError as exc:
            log.info("control: rejected pin of unknown cut %r", request.cut_id)
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        log.info("control: split pinned to %s", decision.cut_id)
        return control_pb2.SetSplitResponse(decision=decision_to_pb(decision, self.to_unix))

    def SetAuto(self, request, context):  # noqa: N802
        decision = self.target.set_auto()
        log.info("control: back to automatic split selection (%s)", decision.cut_id)
        return control_pb2.SetAutoResponse(decision=decision_to_pb(decision, self.to_unix))

    def SetPolicy(self, request, context):  # noqa: N802
        try:
            objective, slo_ms = policy_from_pb(request)
            self.target.set_policy(objective, slo_ms)
        except (ValueError, PolicyError) as exc:
            log.info("control: rejected policy change: %s", exc)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        log.info("control: policy set to %s (slo %s ms)", objective.value, slo_ms)
        return control_pb2.SetPolicyResponse(objective=objective_to_pb(objective), slo_ms=slo_ms or 0.0)

    def Watch(self, request, context):  # noqa: N802
        """A status snapshot first; then every decision, telemetry at most every
        ``interval_ms`` (default 1000), and a fresh status whenever that interval passes."""
        interval_s = (request.interval_ms or 1000) / 1000.0
        stream = self.target.subscribe()
        events: queue.Queue[object] = queue.Queue(maxsize=1024)
        done = threading.Event()

        def close() -> None:
            done.set()
            with contextlib.suppress(Exception):
                stream.close()

        context.add_callback(close)

        def pump() -> None:
            try:
                for event in stream:
                    if done.is_set():
                        break
                    with contextlib.suppress(queue.Full):
                        events.put_nowait(event)
            finally:
                done.set()

        threading.Thread(target=pump, name="control-watch", daemon=True).start()
        try:
            yield control_pb2.AgentEvent(status=snapshot_to_pb(self._snapshot(), self.to_unix))
            last_telemetry = last_status = time.monotonic()
            while context.is_active() and not self._stopping.is_set():
                try:
                    event = events.get(timeout=min(interval_s, 0.25))
                except queue.Empty:
                    event = None
                    if done.is_set():
                        break
                now = time.monotonic()
                if isinstance(event, Decision):
                    yield control_pb2.AgentEvent(decision=decision_to_pb(event, self.to_unix))
                elif isinstance(event, Telemetry) and now - last_telemetry >= interval_s:
                    last_telemetry = now
                    yield control_pb2.AgentEvent(telemetry=telemetry_to_pb(event, self.to_unix))
                if now - last_status >= interval_s:
                    last_status = now
                    yield control_pb2.AgentEvent(status=snapshot_to_pb(self._snapshot(), self.to_unix))
        finally:
            close()

    def SetGate(self, request, context):  # noqa: N802
        return control_exits.set_gate(self.target, request, context)

    def SetExitThreshold(self, request, context):  # noqa: N802
        return control_exits.set_exit_threshold(self.target, request, context)

    def stop_streams(self) -> None:
        self._stopping.set()


# --------------------------------------------------------------------------- serving


class _BearerTokenInterceptor(grpc.ServerInterceptor):
    """Rejects every call whose ``authorization`` metadata is not ``Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, handler_call_details):
        supplied = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                supplied = value if isinstance(value, str) else value.decode("latin-1")
        if hmac.compare_digest(supplied.encode(), self._expected):
            return continuation(handler_call_details)
        log.info("control: rejected %s without a valid bearer token", handler_call_details.method)
        handler = continuation(handler_call_details)
        if handler is None:
            return None

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                deny, handler.request_deserializer, handler.response_serializer
            )
        return grpc.unary_unary_rpc_method_handler(deny, handler.request_deserializer, handler.response_serializer)


@dataclass
class ControlServer:
    """The running control endpoint; ``addresses`` are what ``splitctl`` connects to
    (``unix:/path`` and/or ``host:port``)."""

    servicer: AgentControlServicer
    servers: list[grpc.Server]
    addresses: list[str]
    socket_path: Optional[str] = None
    tcp_port: Optional[int] = None

    @property
    def advertised(self) -> str:
        """The address for zeroconf's ``control`` TXT key: ``unix:/path`` or ``tcp:host:port``."""
        if self.socket_path:
            return f"unix:{self.socket_path}"
        return f"tcp:{self.addresses[0]}"

    def stop(self, grace_s: float = 0.5) -> None:
        self.servicer.stop_streams()
        for server in self.servers:
            server.stop(grace_s).wait()
        if self.socket_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)


_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes on Linux, NUL included


def _prepare_socket_path(path: str) -> None:
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise ConfigError(
            f"control socket path {path!r} is {len(os.fsencode(path))} bytes; Unix sockets allow at most "
            f"{_SUN_PATH_MAX}: pick a shorter path"
        )
    parent = pathlib.Path(path).parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True)
    if os.path.lexists(path):
        mode = os.lstat(path).st_mode
        if not stat.S_ISSOCK(mode):
            raise ConfigError(f"control socket path {path!r} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(0.5)
            probe.connect(path)
        except OSError:
            os.unlink(path)  # a stale socket from an earlier run: nobody listens
        else:
            raise ConfigError(f"another process is serving the control socket {path!r}; stop it or pick another path")
        finally:
            probe.close()


def _secure_socket(path: str, mode: int) -> None:
    os.chmod(path, mode)
    actual = stat.S_IMODE(os.stat(path).st_mode)
    if actual != mode:
        raise ConfigError(f"control socket {path!r} has mode {actual:04o} after chmod; expected {mode:04o}")


def start_control_server(
    target: ControlTarget,
    *,
    socket_path: Optional[str] = None,
    tcp_address: Optional[str] = None,
    token: Optional[str] = None,
    socket_mode: int = SOCKET_MODE,
    profiles: Sequence[CutProfile] = (),
    to_unix: Optional[Callable[[int], int]] = None,
    max_workers: int = 8,
) -> ControlServer:
    """Serve the control API over ``target`` on a Unix socket and/or TCP.

    With neither address given, listens on :func:`default_socket_path`. ``tcp_address``
    (``host:port``, port 0 picks one) requires a non-empty ``token``. ``profiles`` adds
    wire bytes and tensor names to ``ListCuts`` (pass ``agent.profiles``); ``to_unix`` maps
    the target's ``at_ms`` to wall time (default :class:`UptimeClock`).
    """
    if tcp_address and not token:
        raise ConfigError(f"control TCP address {tcp_address!r} needs a bearer token; set control.token")
    if socket_path is None and not tcp_address:
        socket_path = default_socket_path()
    servicer = AgentControlServicer(target, profiles=profiles, to_unix=to_unix)
    servers: list[grpc.Server] = []
    addresses: list[str] = []
    tcp_port: Optional[int] = None
    try:
        if socket_path:
            socket_path = os.path.abspath(socket_path)
            _prepare_socket_path(socket_path)
            server = grpc.server(futures.ThreadPoolExecutor(max_workers, thread_name_prefix="control"))
            control_pb2_grpc.add_AgentControlServicer_to_server(servicer, server)
            server.add_insecure_port(f"unix:{socket_path}")
            server.start()
            servers.append(server)
            _secure_socket(socket_path, socket_mode)
            addresses.append(f"unix:{socket_path}")
        if tcp_address:
            server = grpc.server(
                futures.ThreadPoolExecutor(max_workers, thread_name_prefix="control-tcp"),
                interceptors=[_BearerTokenInterceptor(token or "")],
            )
            control_pb2_grpc.add_AgentControlServicer_to_server(servicer, server)
            tcp_port = server.add_insecure_port(tcp_address)
            if tcp_port == 0:
                raise ConfigError(f"cannot bind control TCP address {tcp_address!r}")
            server.start()
            servers.append(server)
            host = tcp_address.rsplit(":", 1)[0] or "127.0.0.1"
            addresses.append(f"{host}:{tcp_port}")
    except BaseException:
        for server in servers:
            server.stop(None)
        raise
    log.info("control endpoint listening on %s", ", ".join(addresses))
    return ControlServer(servicer, servers, addresses, socket_path=socket_path, tcp_port=tcp_port)

