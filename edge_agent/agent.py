"""The edge daemon: the one module that owns loops, threads and wiring.

Pipeline (one thread per stage, bounded queues between them)::

    capture ──q──> preprocess + head ──q──> network (max_in_flight workers) ──q──> results
       │                 │  "output" cut / cloud down: completes locally ───────────^
       │                 └ the cut is read from the current Decision when the frame
       │                   enters this stage and never changes for that frame
       └ live sources: drop the OLDEST queued frame when behind (counted);
         files/folders: block, never drop

    control loop (every policy.decide_interval_ms): telemetry -> policy.observe/decide,
    prewarm the new cut's head before publishing the decision, half-open breaker
    health probes, low-duty bandwidth probes while fully local, events to subscribers.

Guarantees: every frame that enters the head stage gets exactly one result. An offload
that fails or misses ``runtime.deadline_ms`` completes on the device (local tail if
loaded, else the full model) with path ``fallback``; the circuit breaker
(:mod:`edge_agent.breaker`) stops offloading after repeated failures, and the control
loop's health probe brings it back. ``stop()`` closes the source and lets queued and
in-flight frames finish (SIGTERM in the CLI calls it).

The agent implements :class:`~edge_agent.types.ControlTarget`; control changes go
through the policy under one lock and reach frames only via the published Decision.
"""
from __future__ import annotations

import itertools
import logging
import queue
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Optional

import numpy as np

from edge_agent.breaker import BreakerState, CircuitBreaker
from edge_agent.config import EdgeConfig
from edge_agent.errors import ConfigError, OffloadUnavailable
from edge_agent.head import HeadOutput, HeadRunner, complete_locally, cut_profiles, release_free_memory
from edge_agent.policy import SplitPolicy
from edge_agent.postprocess import Postprocessor, load_labels
from edge_agent.results import FrameResult, ResultSink, make_sink
from edge_agent.sources import Frame, FrameSource, open_source
from edge_agent.telemetry import ProbeScheduler, TelemetryHub
from edge_agent.types import (
    AgentSnapshot,
    CutEstimate,
    Decision,
    Mode,
    Objective,
    OffloadRequest,
    Path,
    Telemetry,
    Transport,
    WireTensor,
)
from protos.bundle import Side, read_bundle, tail_model_name, tail_model_version
from protos.names import INPUT_CUT, OUTPUT_CUT
from protos.preprocess import encode_jpeg
from protos import datatypes

log = logging.getLogger(__name__)

_END = object()
REDISCOVER_MS = 30_000  # how often a daemon without a server browses zeroconf again
TRIM_INTERVAL_S = 1.0  # return freed heap pages to the OS this often (glibc keeps ~60 MB of churn otherwise)


@dataclass
class _Job:
    frame: Frame
    decision: Decision
    head_start_s: float
    head: Optional[HeadOutput] = None
    local_outputs: Optional[dict] = None
    local_ms: float = 0.0
    path: Path = Path.LOCAL
    fallback_reason: Optional[str] = None
    round_trip_ms: float = 0.0
    server_ms: float = 0.0
    wire_bytes: int = 0
    tail_where: str = "skipped"


class _Subscription:
    """An EventStream: Telemetry and Decision values as they happen."""

    def __init__(self, owner: "EdgeAgent") -> None:
        self._owner = owner
        self._queue: queue.Queue = queue.Queue(maxsize=1000)
        self._closed = threading.Event()

    def push(self, event: object) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:  # a stalled subscriber loses events rather than blocking the agent
            pass

    def __iter__(self) -> Iterator[object]:
        while not self._closed.is_set():
            try:
                yield self._queue.get(timeout=0.1)
            except queue.Empty:
                continue

    def close(self) -> None:
        self._closed.set()
        self._owner._unsubscribe(self)


class EdgeAgent:
    """The daemon. ``EdgeAgent(config).start(); agent.run_until_done()``.

    ``transport`` replaces the gRPC client (tests and the demo pass fakes or emulated
    links); None builds one from ``config.server`` (or discovery; fully local when no
    server is found). ``sink`` replaces the configured results sink; ``source`` the
    configured frame source; ``clock`` returns monotonic seconds; ``telemetry`` replaces
    the hub of readers. ``serve_control`` starts the control endpoint (and its zeroconf
    advertisement) as ``config.control`` says; the CLI daemon sets it, while programs that
    embed the agent (tests, the demo) serve control themselves if they want it.
    """

    def __init__(
        self,
        config: EdgeConfig,
        *,
        transport: Optional[Transport] = None,
        sink: Optional[ResultSink] = None,
        source: Optional[FrameSource] = None,
        clock: Callable[[], float] = time.monotonic,
        telemetry: Optional[TelemetryHub] = None,
        serve_control: bool = False,
    ) -> None:
        self.config = config
        self._clock = clock
        self._t0 = clock()
        self.agent_id = config.agent.agent_id or socket.gethostname()
        self.bundle = read_bundle(config.bundle, Side.EDGE)
        m = self.bundle.manifest
        self.model_version = tail_model_version(m)
        rt = config.runtime
        self.head = HeadRunner(
            self.bundle, threads=rt.threads, provider=rt.execution_provider,
            prewarm_neighbours=rt.prewarm_neighbours, local_tails=rt.local_tails,
            compression=config.server.compression, cpu_mem_arena=rt.cpu_mem_arena,
            emulated_slowdown=rt.emulated_slowdown,
        )
        labels: list[str] = []
        post = m.output.WhichOneof("postprocess")
        if post is not None and getattr(m.output, post).HasField("labels"):
            labels = load_labels(self.bundle.path(getattr(m.output, post).labels))
        self.postprocess = Postprocessor(m.output, labels, top_k_override=config.results.top_k)
        self.profiles = cut_profiles(self.bundle, self.head.measured_head_ms())
        self._profile_by_id = {p.cut_id: p for p in self.profiles}
        self.policy = SplitPolicy(self.profiles, config.policy.policy_config())
        self.breaker = CircuitBreaker(rt.breaker_config())
        self.server_address = config.server.address or ""
        self._own_transport = transport is None
        self.transport: Optional[Transport] = transport
        self.sink: ResultSink = sink if sink is not None else make_sink(config.results.sink, config.results.path)
        self._source = source
        self.telemetry = telemetry if telemetry is not None else build_hub(config)
        self.probes = ProbeScheduler(interval_ms=config.policy.probe_interval_ms, probe_bytes=config.policy.probe_bytes)
        # state
        self._lock = threading.RLock()  # policy, decision, counters
        self._decision: Optional[Decision] = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._subs: set[_Subscription] = set()
        self._req_seq = itertools.count()
        self.frames_captured = 0
        self.frames_dropped = 0
        self.results = 0
        self.results_by_path: Counter[str] = Counter()
        self.offload_failures: Counter[str] = Counter()
        self._latencies_ms: deque[float] = deque(maxlen=500)
        self._last_image: Optional[np.ndarray] = None
        self._metrics: Optional[Any] = None
        self._metrics_server: Optional[Any] = None
        self.control_server: Optional[Any] = None
        self._serve_control = serve_control and config.control.enabled
        self._advertisement: Optional[Any] = None
        self._discovering = threading.Event()
        self._last_failed_model: Optional[tuple[str, str]] = None  # (name, version) the health probe checks
        self._next_discovery_ms = REDISCOVER_MS
        self.errors: list[str] = []
        self._started = False
        self._shut_down = False

    # ------------------------------------------------------------------ clocks

    def _now_ms(self) -> int:
        return int((self._clock() - self._t0) * 1000)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "EdgeAgent":
        """Connect, decide the first cut, prewarm it, start every stage."""
        if self._started:
            raise RuntimeError("agent already started")
        self._started = True
        if self.transport is None:
            self.transport = self._connect()
        if self.transport is None:
            log.warning("no server configured or discovered: running fully local")
        self.transport = self._maybe_emulate(self.transport)
        if self._source is None:
            self._source = open_source(self.config.source)
        with self._lock:
            now = self._now_ms()
            self.policy.observe(self._sample_telemetry(now), now)
            if self.config.policy.pinned_cut:
                decision = self.policy.pin(self.config.policy.pinned_cut, now)
            else:
                decision = self.policy.decide(now)
        self.head.activate(decision.cut_id)
        self._start_metrics()
        self._publish(decision)
        self._start_control()
        q = self.config.runtime.queue_depth
        self._capture_q: queue.Queue = queue.Queue(maxsize=q)
        self._net_q: queue.Queue = queue.Queue(maxsize=q)
        self._result_q: queue.Queue = queue.Queue(maxsize=max(q, 4) * 4)
        self._net_workers_left = self.config.runtime.max_in_flight
        targets: list[tuple[str, Callable[[], None]]] = [("capture", self._capture_loop), ("head", self._head_loop)]
        targets += [(f"net-{i}", self._net_loop) for i in range(self.config.runtime.max_in_flight)]
        targets += [("results", self._result_loop), ("control", self._control_loop)]
        for name, fn in targets:
            t = threading.Thread(target=self._guard(fn, name), name=f"edge-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("edge agent %s started: bundle %s@%s, source %s, server %s, cut %s (%s)", self.agent_id,
                 self.bundle.name, self.model_version, getattr(self._source, "name", "?"),
                 self.server_address or "(none)", decision.cut_id, decision.reason)
        return self

    def _connect(self) -> Optional[Transport]:
        from edge_agent.transport_grpc import GrpcTransport, options_from_config

        server = self.config.server
        address = server.address
        options = options_from_config(server)
        if address is None and server.discovery:
            found = self._discover()
            if found is None:
                return None
            address, tls = found
            if tls and not server.tls:
                options = replace(options, tls=True)
        if address is None:
            return None
        self.server_address = address
        return GrpcTransport(address, options)

    def _discover(self) -> Optional[tuple[str, bool]]:
        try:
            from edge_agent import discovery
        except ImportError:  # pragma: no cover - discovery is part of the package
            return None
        try:
            return discovery.find_server_for(self.bundle.name, self.model_version,
                                             timeout_s=self.config.server.discovery_timeout_s)
        except Exception as exc:  # noqa: BLE001 - discovery is best effort
            log.warning("zeroconf discovery failed: %s", exc)
            return None

    def _maybe_emulate(self, transport: Optional[Transport]) -> Optional[Transport]:
        if transport is None or not self.config.link.enabled:
            return transport
        from edge_agent.link import wrap_transport_from_config

        return wrap_transport_from_config(transport, self.config.link)

    def _guard(self, fn: Callable[[], None], name: str) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - a stage must never die silently
                log.exception("stage %s crashed", name)
                self.errors.append(f"{name}: {exc!r}")
                self._stop.set()
                if name == "results":
                    self._done.set()
        return run

    def run_until_done(self, timeout_s: Optional[float] = None) -> bool:
        """Block until the source ends (or ``stop``) and every frame has its result; True if done."""
        finished = self._done.wait(timeout_s)
        if finished:
            self._shutdown()
        return finished

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop capturing, finish in-flight frames, release everything; True if drained in time."""
        self._stop.set()
        if self._source is not None:
            self._source.close()
        finished = self._done.wait(timeout_s) if self._started else True
        self._shutdown()
        return finished

    def _shutdown(self) -> None:
        """Release everything once (idempotent)."""
        self._stop.set()
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=2.0)
        if self._advertisement is not None:
            self._advertisement.close()
            self._advertisement = None
        if self.control_server is not None:
            self.control_server.stop()
            self.control_server = None
        for sub in list(self._subs):
            sub.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server = None
        if self.transport is not None and self._own_transport:
            self.transport.close()
        self.sink.close()
        if self._source is not None:
            self._source.close()

    # ------------------------------------------------------------------ stages

    def _capture_loop(self) -> None:
        src = self._source
        assert src is not None
        limit = self.config.runtime.max_frames
        try:
            while not self._stop.is_set():
                if limit is not None and self.frames_captured >= limit:
                    break
                frame = src.read()
                if frame is None:
                    break
                with self._lock:
                    self.frames_captured += 1
                if self._metrics:
                    self._metrics["captured"].inc()
                if src.live:
                    self._put_dropping_oldest(frame)
                else:
                    self._capture_q.put(frame)  # files and folders never drop: wait for the pipeline
        finally:
            self._capture_q.put(_END)

    def _put_dropping_oldest(self, frame: Frame) -> None:
        while True:
            try:
                self._capture_q.put_nowait(frame)
                return
            except queue.Full:
                try:
                    old = self._capture_q.get_nowait()
                except queue.Empty:
                    continue
                if old is _END:  # never drop the end marker
                    self._capture_q.put(old)
                    continue
                with self._lock:
                    self.frames_dropped += 1
                if self._metrics:
                    self._metrics["dropped"].inc()

    def _head_loop(self) -> None:
        try:
            while True:
                item = self._capture_q.get()
                if item is _END:
                    break
                frame: Frame = item
                with self._lock:
                    decision = self._decision
                assert decision is not None
                job = _Job(frame=frame, decision=decision, head_start_s=self._clock())
                self._last_image = frame.image_bgr
                try:
                    self._run_head_stage(job)
                except Exception as exc:  # noqa: BLE001 - the frame still gets its result
                    log.exception("frame %d failed in the head stage", frame.frame_id)
                    job.head, job.fallback_reason = None, f"head stage error: {exc}"
                    self._complete_on_device(job, guard=True)
                    self._result_q.put(job)
                    continue
                if job.local_outputs is not None:
                    self._result_q.put(job)
                else:
                    self._net_q.put(job)  # blocks when the network is behind: back-pressure to capture
        finally:
            for _ in range(self.config.runtime.max_in_flight):
                self._net_q.put(_END)

    def _run_head_stage(self, job: _Job) -> None:
        cut = job.decision.cut_id
        image = job.frame.image_bgr
        needs_cloud = cut != OUTPUT_CUT
        if needs_cloud and (self.transport is None or not self._offload_allowed()):
            outputs, ms = self.head.run_full(image)
            job.local_outputs, job.local_ms = outputs, ms
            job.path, job.fallback_reason = Path.FALLBACK, "cloud unavailable (circuit open)"
            job.decision = replace(job.decision, cut_id=OUTPUT_CUT)
            return
        job.head = self.head.run_head(cut, image)
        profiled_ms = self._profile_by_id[cut].head_ms
        # The "input" cut runs no model (its HeadOutput carries the JPEG time as pre_ms and a
        # head_ms of 0): feeding it would drag the factor to its floor and make every local
        # estimate look several times cheaper than it is, which made the policy flap.
        if profiled_ms > 0 and cut != INPUT_CUT:
            with self._lock:
                self.telemetry.slowdown.observe(job.head.head_ms, profiled_ms, self._now_ms())
        if cut == OUTPUT_CUT:
            job.local_outputs = dict(job.head.local_outputs or {})
            # fully local by choice, or because the server is down (no server at all is a choice)
            fallback = job.decision.mode is Mode.LOCAL_FALLBACK and self.transport is not None
            job.path = Path.FALLBACK if fallback else Path.LOCAL
            job.fallback_reason = f"cloud unavailable (circuit {self.breaker.state.value})" if fallback else None

    def _offload_allowed(self) -> bool:
        with self._lock:
            return self.breaker.allows_offload(self._now_ms())

    def _net_loop(self) -> None:
        try:
            while True:
                item = self._net_q.get()
                if item is _END:
                    break
                job: _Job = item
                try:
                    self._offload(job)
                except Exception as exc:  # noqa: BLE001 - the frame still gets its result
                    log.exception("frame %d failed in the network stage", job.frame.frame_id)
                    job.fallback_reason = f"network stage error: {exc}"
                    self._complete_on_device(job, guard=True)
                self._result_q.put(job)
        finally:
            with self._lock:
                self._net_workers_left -= 1
                last = self._net_workers_left == 0
            if last:
                self._result_q.put(_END)

    def _request_for(self, cut_id: str, tensors: tuple[WireTensor, ...], frame_id: int) -> OffloadRequest:
        m = self.bundle.manifest
        return OffloadRequest(
            model_name=tail_model_name(m, cut_id),
            model_version=self.model_version,
            request_id=f"{self.agent_id}-{frame_id}-{next(self._req_seq)}",
            inputs=tensors,
            output_names=tuple(self.head.output_names),
            parameters={"splitinfer_cut": cut_id, "edge_sent_unix_us": int(time.time() * 1_000_000)},
        )

    def _offload(self, job: _Job) -> None:
        head = job.head
        assert head is not None
        if self.transport is None or not self._offload_allowed():
            job.fallback_reason = "cloud unavailable (circuit open)"
            self._complete_on_device(job)
            return
        request = self._request_for(head.cut_id, head.tensors, job.frame.frame_id)
        job.wire_bytes = request.wire_bytes
        timeout_s = self.config.runtime.deadline_ms / 1000.0
        start = self._clock()
        try:
            response = self.transport.infer(request, timeout_s)
        except OffloadUnavailable as exc:
            self._on_offload_failure(exc, (request.model_name, request.model_version),
                                     sent_bytes=request.wire_bytes, waited_ms=(self._clock() - start) * 1000.0)
            job.fallback_reason = f"{exc.code}: {exc}"
            self._complete_on_device(job)
            return
        rtt_ms = response.round_trip_ms if response.round_trip_ms is not None else (self._clock() - start) * 1000
        server_ms = (response.server_queue_ms or 0.0) + (response.server_compute_ms or 0.0)
        job.round_trip_ms, job.server_ms = rtt_ms, server_ms
        job.local_outputs = dict(response.outputs)
        job.path = Path.CLOUD if head.cut_id == INPUT_CUT else Path.SPLIT
        job.tail_where = "cloud"
        self._on_offload_success(head.cut_id, request.wire_bytes, rtt_ms, response.server_queue_ms,
                                 response.server_compute_ms)

    def _complete_on_device(self, job: _Job, *, guard: bool = False) -> None:
        """Finish the frame locally (tail if loaded, else the full model); with ``guard`` a
        failure here too leaves an ``error`` payload instead of raising."""
        if guard:
            try:
                self._complete_on_device(job)
            except Exception as exc:  # noqa: BLE001 - the one result of this frame says what failed
                log.exception("frame %d could not complete on the device either", job.frame.frame_id)
                job.local_outputs, job.path = None, Path.FALLBACK
                job.fallback_reason = f"{job.fallback_reason}; local completion failed: {exc}"
            return
        image = job.frame.image_bgr
        if job.head is not None:
            outputs, ms, what = complete_locally(self.head, job.head, image)
        else:
            outputs, ms = self.head.run_full(image)
            what = "full"
        job.local_outputs, job.local_ms = outputs, ms
        job.path = Path.FALLBACK
        job.tail_where = "edge" if what == "tail" else "skipped"
        job.fallback_reason = f"{job.fallback_reason}; completed with the local {'tail' if what == 'tail' else 'full model'}"

    def _on_offload_success(self, cut_id: str, wire_bytes: int, rtt_ms: float, queue_ms: Optional[float],
                            compute_ms: Optional[float]) -> None:
        """A real transfer completed: feed bandwidth/RTT and server times, close the breaker."""
        with self._lock:
            now = self._now_ms()
            before = self.breaker.state
            self.breaker.record_success(now)
            server_ms = (queue_ms or 0.0) + (compute_ms or 0.0)
            self.telemetry.bandwidth.observe_transfer(wire_bytes, rtt_ms, now, server_ms=min(server_ms, rtt_ms))
            self.telemetry.server.observe(cut_id, queue_ms, compute_ms, now)
            self.policy.note_wire_bytes(cut_id, wire_bytes, now)  # the bundle's size is an estimate
            recovered = before is not BreakerState.CLOSED and self.breaker.state is BreakerState.CLOSED
            decision = self.policy.note_cloud_available(True, now) if recovered else None
        if decision is not None:
            self._apply(decision)

    def _on_offload_failure(self, exc: OffloadUnavailable, model: Optional[tuple[str, str]] = None, *,
                            sent_bytes: int = 0, waited_ms: float = 0.0) -> None:
        with self._lock:
            if model is not None:
                self._last_failed_model = model
            now = self._now_ms()
            if exc.code == "DEADLINE_EXCEEDED" and sent_bytes > 0 and waited_ms > 0:
                # the link may have collapsed: no completed transfer will ever say so
                self.telemetry.bandwidth.observe_timeout(sent_bytes, waited_ms, now)
            self.offload_failures[exc.code] += 1
            before = self.breaker.state
            if exc.retryable:
                self.breaker.record_failure(now)
            else:  # e.g. the server lacks this bundle version or rejects our token: stop at once
                self.breaker.trip(now)
            opened = before is BreakerState.CLOSED and self.breaker.state is BreakerState.OPEN
            decision = self.policy.note_cloud_available(False, now) if opened else None
        if decision is not None:
            log.warning("offload failing (%s: %s); circuit open, completing frames on the device, retry in %d ms",
                        exc.code, exc, self.breaker.backoff_ms)
            self._apply(decision)
        else:
            log.debug("offload failed: %s: %s", exc.code, exc)
        if self._metrics:
            self._metrics["offload_failures"].labels(code=exc.code).inc()

    def _result_loop(self) -> None:
        try:
            while True:
                item = self._result_q.get()
                if item is _END:
                    break
                self._emit(item)
        finally:
            self._done.set()

    def _emit(self, job: _Job) -> None:
        t_post = self._clock()
        head = job.head
        try:
            payload = self.postprocess(job.local_outputs) if job.local_outputs is not None else {"error": job.fallback_reason}
        except Exception as exc:  # noqa: BLE001 - a malformed response still yields one result line
            payload = {"error": f"postprocess failed: {exc}"}
        end = self._clock()
        cut = job.decision.cut_id if head is None else head.cut_id
        preprocess_where = "edge"
        head_where = "edge"
        if job.path is Path.CLOUD:
            preprocess_where, head_where = "cloud", "cloud"
        tail_where = job.tail_where
        if job.path is Path.LOCAL or (job.path is Path.FALLBACK and tail_where == "skipped"):
            tail_where = "skipped"
        latency = {
            "queue": max(0.0, (job.head_start_s - job.frame.capture_mono_s) * 1000.0),
            "preprocess": head.preprocess_ms if head else 0.0,
            "head": head.head_ms if head else 0.0,
            "wire": max(0.0, job.round_trip_ms - job.server_ms),
            "server": job.server_ms,
            "tail_local": job.local_ms,
            "postprocess": (end - t_post) * 1000.0,
            "total": (end - job.frame.capture_mono_s) * 1000.0,
        }
        result = FrameResult(
            frame_id=job.frame.frame_id,
            capture_unix_ms=job.frame.capture_unix_ms,
            source=job.frame.source,
            cut=cut,
            path=job.path,
            stages={"preprocess": preprocess_where, "head": head_where, "tail": tail_where},
            latency_ms=latency,
            payload=payload,
            wire_bytes=job.wire_bytes,
            fallback_reason=job.fallback_reason,
        )
        self.sink.write(result)
        with self._lock:
            self.results += 1
            self.results_by_path[job.path.value] += 1
            self._latencies_ms.append(latency["total"])
        if self._metrics:
            self._metrics["results"].labels(path=job.path.value).inc()
            self._metrics["latency"].observe(latency["total"] / 1000.0)

    # ------------------------------------------------------------------ control loop

    def _sample_telemetry(self, now_ms: int) -> Telemetry:
        # HALF_OPEN counts as unavailable until the health probe closes the breaker
        available = self.transport is not None and self.breaker.poll(now_ms) is BreakerState.CLOSED
        current = self._decision.cut_id if self._decision is not None else None
        return self.telemetry.sample(now_ms, cloud_available=available, current_cut=current)

    def _control_loop(self) -> None:
        interval_s = self.config.policy.decide_interval_ms / 1000.0
        next_trim_s = self._clock() + TRIM_INTERVAL_S
        while not self._stop.wait(interval_s):
            self.tick()
            if self._clock() >= next_trim_s:  # months unattended: give freed heap pages back now and then
                release_free_memory()
                next_trim_s = self._clock() + TRIM_INTERVAL_S

    def tick(self) -> Decision:
        """One control step (the control thread calls it; tests may too)."""
        now = self._now_ms()
        if self.transport is not None and self.breaker.begin_probe(now):
            self._health_probe()
        elif self.transport is None:
            self._maybe_rediscover(now)
        with self._lock:
            now = self._now_ms()
            sample = self._sample_telemetry(now)
            self.policy.observe(sample, now)
            decision = self.policy.decide(now)
        self._apply(decision)
        self._push(sample)
        self._update_gauges(sample)
        if self._should_probe(decision, now):
            self._bandwidth_probe()
        return decision

    def _maybe_rediscover(self, now_ms: int) -> None:
        """Without a server, look for one again every ``REDISCOVER_MS`` (in a thread: browsing blocks)."""
        server = self.config.server
        if not self._own_transport or server.address is not None or not server.discovery:
            return
        if now_ms < self._next_discovery_ms or self._discovering.is_set():
            return
        self._next_discovery_ms = now_ms + REDISCOVER_MS
        self._discovering.set()

        def run() -> None:
            try:
                transport = self._connect()
                if transport is not None:
                    self.transport = self._maybe_emulate(transport)
                    log.info("server %s discovered; offloading can resume", self.server_address)
            finally:
                self._discovering.clear()

        threading.Thread(target=run, name="edge-discovery", daemon=True).start()

    def _apply(self, decision: Decision) -> None:
        """Prewarm the decision's head (and neighbours), then publish it to the head stage.

        Called without the agent lock held: loading a session may take a while and frames
        keep flowing on the previous decision meanwhile.
        """
        if decision.cut_id != self.head.active_cut:
            self.head.activate(decision.cut_id)
        self._publish(decision)

    def _publish(self, decision: Decision) -> None:
        with self._lock:
            previous = self._decision
            self._decision = decision
        if previous is None or previous.cut_id != decision.cut_id or previous.mode is not decision.mode:
            log.info("split -> %s (%s): %s", decision.cut_id, decision.mode.value, decision.reason)
            self._push(decision)
            if self._metrics:
                order = self._profile_by_id[decision.cut_id].order
                self._metrics["cut_order"].set(order)
                for p in self.profiles:
                    self._metrics["cut"].labels(cut=p.cut_id).set(1 if p.cut_id == decision.cut_id else 0)

    def _health_probe(self) -> None:
        assert self.transport is not None
        timeout_s = min(1.0, self.config.runtime.deadline_ms / 1000.0 * 2)
        start = self._clock()
        ok = self.transport.healthy(timeout_s=timeout_s)
        failed = self._last_failed_model
        if ok and failed is not None:  # the server is up, but does it hold our tail?
            ok = self.transport.model_ready(failed[0], failed[1], timeout_s)
        with self._lock:
            now = self._now_ms()
            if ok:
                self._last_failed_model = None
                self.telemetry.bandwidth.observe_rtt((self._clock() - start) * 1000.0, now)
                self.breaker.record_success(now)
                log.info("server %s healthy again; circuit closed", self.server_address or "(injected)")
                decision = self.policy.note_cloud_available(True, now)
            else:
                self.breaker.record_failure(now)
                log.debug("health probe failed; next in %d ms", self.breaker.backoff_ms)
                decision = None
        if decision is not None:
            self._apply(decision)

    def _should_probe(self, decision: Decision, now_ms: int) -> bool:
        if self.transport is None or decision.cut_id != OUTPUT_CUT or decision.mode is not Mode.AUTO:
            return False
        if self._last_image is None or not self._offload_allowed():
            return False
        with self._lock:
            return self.probes.due(now_ms, self.telemetry.bandwidth.last_sample_ms)

    def _bandwidth_probe(self) -> None:
        """A real, small transfer while fully local: the latest frame as JPEG to the 'input' tail.

        It is exactly what the "input" cut would send, so it measures the link with a
        representative payload (a JPEG below the estimator's ``min_sample_bytes`` counts as
        an RTT sample). The scheduler keeps probes under its duty cycle.
        """
        image = self._last_image
        if image is None or INPUT_CUT not in self._profile_by_id:
            return
        jpeg = encode_jpeg(image, int(self.bundle.manifest.input.jpeg_quality))
        spec = self.bundle.cut(INPUT_CUT).tensors[0]
        tensor = WireTensor(spec.name, "BYTES", (1,), datatypes.serialize_bytes_tensor([jpeg]))
        request = self._request_for(INPUT_CUT, (tensor,), -1)
        assert self.transport is not None
        with self._lock:
            self.probes.note_started(self._now_ms())
        # An empty round trip first: while fully local nothing else measures the RTT, and
        # the bandwidth sample below subtracts it from the transfer time.
        start = self._clock()
        if self.transport.healthy(timeout_s=self.config.runtime.deadline_ms / 1000.0):
            with self._lock:
                self.telemetry.bandwidth.observe_rtt((self._clock() - start) * 1000.0, self._now_ms())
        start = self._clock()
        try:
            response = self.transport.infer(request, self.config.runtime.deadline_ms / 1000.0)
        except OffloadUnavailable as exc:
            self._on_offload_failure(exc, sent_bytes=request.wire_bytes, waited_ms=(self._clock() - start) * 1000.0)
            return
        finally:
            with self._lock:
                self.probes.note_finished(self._now_ms())
        rtt = response.round_trip_ms if response.round_trip_ms is not None else (self._clock() - start) * 1000.0
        self._on_offload_success(INPUT_CUT, request.wire_bytes, rtt, response.server_queue_ms,
                                 response.server_compute_ms)

    # ------------------------------------------------------------------ events and metrics

    def _push(self, event: object) -> None:
        for sub in list(self._subs):
            sub.push(event)

    def _unsubscribe(self, sub: _Subscription) -> None:
        self._subs.discard(sub)

    def _start_metrics(self) -> None:
        port = self.config.metrics.port
        if port is None:
            return
        from prometheus_client import CollectorRegistry, Counter as PCounter, Gauge, Histogram, start_http_server

        reg = CollectorRegistry()
        self._metrics = {
            "registry": reg,
            "captured": PCounter("splitinfer_edge_frames_captured", "Frames read from the source", registry=reg),
            "dropped": PCounter("splitinfer_edge_frames_dropped", "Live frames dropped because the pipeline was behind", registry=reg),
            "results": PCounter("splitinfer_edge_results", "Results by path", ["path"], registry=reg),
            "offload_failures": PCounter("splitinfer_edge_offload_failures", "Failed offloads by code", ["code"], registry=reg),
            "cut": Gauge("splitinfer_edge_chosen_cut", "1 for the cut in use", ["cut"], registry=reg),
            "cut_order": Gauge("splitinfer_edge_chosen_cut_order", "Order of the cut in use (0 = input)", registry=reg),
            "uplink": Gauge("splitinfer_edge_uplink_kbps", "Estimated uplink bandwidth", registry=reg),
            "rtt": Gauge("splitinfer_edge_rtt_ms", "Estimated round-trip time", registry=reg),
            "battery": Gauge("splitinfer_edge_battery_pct", "Battery charge (NaN when unknown)", registry=reg),
            "circuit": Gauge("splitinfer_edge_circuit_open", "1 while the circuit breaker is not closed", registry=reg),
            "latency": Histogram("splitinfer_edge_latency_seconds", "Capture-to-result latency", registry=reg,
                                 buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)),
        }
        server, _thread = start_http_server(port, addr=self.config.metrics.host, registry=reg)
        self._metrics_server = server
        self.metrics_port = server.server_address[1]
        log.info("metrics on http://%s:%d/metrics", self.config.metrics.host, self.metrics_port)

    def _start_control(self) -> None:
        ctl = self.config.control
        if not self._serve_control:
            return
        from edge_agent.control import start_control_server

        self.control_server = start_control_server(
            self, socket_path=str(ctl.socket_path) if ctl.socket_path else None,
            tcp_address=ctl.tcp_address, token=ctl.token, profiles=self.profiles,
        )
        if ctl.advertise:
            threading.Thread(target=self._advertise, name="edge-advertise", daemon=True).start()

    def _advertise(self) -> None:
        """Announce this agent over zeroconf (registration blocks ~1.5 s, hence a thread)."""
        from edge_agent import discovery

        try:
            self._advertisement = discovery.advertise_agent(
                self.agent_id, self.control_server.advertised,
                bundles=[discovery.bundle_key(self.bundle.name, self.model_version)],
            )
        except Exception as exc:  # noqa: BLE001 - advertising is best effort
            log.warning("zeroconf: cannot advertise the agent: %s", exc)

    def _update_gauges(self, t: Telemetry) -> None:
        if not self._metrics:
            return
        nan = float("nan")
        self._metrics["uplink"].set(t.uplink_kbps if t.uplink_kbps is not None else nan)
        self._metrics["rtt"].set(t.rtt_ms if t.rtt_ms is not None else nan)
        self._metrics["battery"].set(t.battery_pct if t.battery_pct is not None else nan)
        self._metrics["circuit"].set(0 if self.breaker.state is BreakerState.CLOSED else 1)

    # ------------------------------------------------------------------ ControlTarget

    @property
    def decision(self) -> Decision:
        with self._lock:
            assert self._decision is not None, "agent not started"
            return self._decision

    def snapshot(self) -> AgentSnapshot:
        with self._lock:
            lat = list(self._latencies_ms)
            return AgentSnapshot(
                agent_id=self.agent_id,
                bundle_name=self.bundle.name,
                bundle_version=self.model_version,
                server_address=self.server_address,
                decision=self.decision,
                objective=self.policy.objective,
                slo_ms=self.policy.slo_ms,
                telemetry=self.policy.telemetry,
                frames_captured=self.frames_captured,
                frames_dropped=self.frames_dropped,
                results=self.results,
                results_by_path=dict(self.results_by_path),
                circuit_state=self.breaker.state.value,
                uptime_s=self._clock() - self._t0,
                mean_latency_ms=float(np.mean(lat)) if lat else None,
            )

    def cut_estimates(self) -> list[CutEstimate]:
        with self._lock:
            return self.policy.estimates(self._now_ms())

    def pin_split(self, cut_id: str) -> Decision:
        with self._lock:
            decision = self.policy.pin(cut_id, self._now_ms())
        self._apply(decision)
        return decision

    def set_auto(self) -> Decision:
        with self._lock:
            decision = self.policy.unpin(self._now_ms())
        self._apply(decision)
        return decision

    def set_policy(self, objective: Objective, slo_ms: Optional[float]) -> None:
        with self._lock:
            decision = self.policy.set_objective(objective, slo_ms, self._now_ms())
        self._apply(decision)

    def subscribe(self) -> _Subscription:
        sub = _Subscription(self)
        self._subs.add(sub)
        return sub


def build_hub(config: EdgeConfig) -> TelemetryHub:
    """The telemetry readers ``config.battery`` asks for, on this machine ("auto": a battery
    in sysfs, else psutil); temperature, throttling and load as the hub picks them."""
    from edge_agent import telemetry as t

    b = config.battery
    if b.source == "auto":
        return TelemetryHub.for_this_machine(power_supply_root=b.sysfs_root)
    if b.source == "trace":
        assert b.trace_file is not None  # validated by the config
        return TelemetryHub.for_this_machine(battery_trace=b.trace_file)
    battery = {"none": None, "psutil": t.PsutilBatteryReader, "sysfs": lambda: t.SysfsBatteryReader(b.sysfs_root)}[b.source]
    thermal = t.SysfsTemperatureReader()
    return TelemetryHub(
        battery=battery() if battery else None,
        temperature=thermal if thermal.has_zones() else t.PsutilTemperatureReader(),
        throttle=t.VcgencmdThrottleReader() if t.VcgencmdThrottleReader.available() else None,
        load=t.PsutilLoadReader(),
    )


def check_config_for_agent(config: EdgeConfig) -> None:
    """Checks that need the bundle: a pinned cut must exist."""
    bundle = read_bundle(config.bundle, Side.EDGE, check_hashes=False)
    if config.policy.pinned_cut and config.policy.pinned_cut not in bundle.cut_ids:
        raise ConfigError(f"policy.pinned_cut = {config.policy.pinned_cut!r}: expected one of {', '.join(bundle.cut_ids)}")
