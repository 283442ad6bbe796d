"""The edge daemon: the one module that owns loops, threads and wiring.

Pipeline (one thread per stage, bounded queues between them)::

    capture ──q──> gate, preprocess + head, exit, encode ──q──> offload (max_in_flight workers) ──q──> result
       │                 │  "output" cut / cloud down: completes locally ──────────────────────^
       │                 └ the cut is read from the current Decision when the frame
       │                   enters this stage and never changes for that frame
       └ live sources: drop the OLDEST queued frame when behind (counted);
         files/folders: block, never drop

The per-frame work lives in :mod:`edge_agent.stages`; measurements flow back through
:class:`~edge_agent.feedback.Feedback`; the probes are :mod:`edge_agent.probes`; the
server connection :mod:`edge_agent.connect`; metrics :mod:`edge_agent.metrics`. This
module only owns the threads, the queues and the published Decision.

    control loop (every policy.decide_interval_ms): telemetry -> policy.observe/decide,
    prewarm the new cut's head before publishing the decision, half-open breaker
    health probes, low-duty bandwidth probes while fully local, events to subscribers.

Guarantees: every frame that enters the head stage gets exactly one result (a frame the
gate skips gets a ``gated`` one repeating the last computed frame's payload). An offload
that fails or misses ``runtime.deadline_ms`` completes on the device (local tail if
loaded, else the full model) with path ``fallback``; the circuit breaker
(:mod:`edge_agent.breaker`) stops offloading after repeated failures, and the control
loop's health probe brings it back. ``stop()`` closes the source and lets queued and
in-flight frames finish (SIGTERM in the CLI calls it).

The agent implements :class:`~edge_agent.types.ControlTarget`; control changes go
through the policy under one lock and reach frames only via the published Decision.
"""
from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections import Counter, deque
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edge_agent.breaker import BreakerState, CircuitBreaker
from edge_agent.config import EdgeConfig
from edge_agent.connect import Connector, advertise_in_background, build_hub
from edge_agent.errors import EdgeAgentError
from edge_agent.events import EventHub, Subscription
from edge_agent.feedback import Feedback
from edge_agent.gate_exits import GateExitMixin
from edge_agent.head import HeadRunner, cut_profiles, release_free_memory
from edge_agent.metrics import EdgeMetrics, serve_metrics
from edge_agent.policy import SplitPolicy
from edge_agent.queues import put_dropping_oldest
from edge_agent.postprocess import Postprocessor, load_labels
from edge_agent.probes import Prober
from edge_agent.results import ResultSink, make_sink
from edge_agent.sinks import configured_sinks
from edge_agent.sources import Frame, FrameSource, open_source
from edge_agent.stages import (ExitCheck, FrameGate, FrameJob, HeadStage, Offloader, ResultStage,
                               WireEncoder, complete_on_device)
from edge_agent.stages.result import GatedFrame
from edge_agent.telemetry import ProbeScheduler, TelemetryHub
from edge_agent.types import AgentSnapshot, CutEstimate, Decision, Objective, Transport
from protos.bundle import Side, bundle_hash, read_bundle, tail_model_version

__all__ = ["EdgeAgent"]

log = logging.getLogger(__name__)

_END = object()
TRIM_INTERVAL_S = 1.0  # return freed heap pages to the OS this often (glibc keeps ~60 MB of churn otherwise)


class EdgeAgent(GateExitMixin):
    """The daemon. ``EdgeAgent(config).start(); agent.run_until_done()``.

    ``transport`` replaces the gRPC client (tests and the demo pass fakes or emulated
    links); None builds one from ``config.server`` (or discovery; fully local when no
    server is found). ``sink`` replaces the configured results sink and ``sinks`` adds
    more (every result goes to each, in order); ``source`` the configured frame source;
    ``clock`` returns monotonic seconds; ``telemetry`` replaces the hub of readers.
    ``gate`` and ``exit_check`` are the frame path's hooks (:mod:`edge_agent.stages.hooks`).
    ``serve_control`` starts the control endpoint (and its zeroconf advertisement) as
    ``config.control`` says; the CLI daemon sets it, while programs that embed the agent
    (tests, the demo) serve control themselves if they want it.
    """

    def __init__(
        self,
        config: EdgeConfig,
        *,
        transport: Optional[Transport] = None,
        sink: Optional[ResultSink] = None,
        sinks: Sequence[ResultSink] = (),
        source: Optional[FrameSource] = None,
        clock: Callable[[], float] = time.monotonic,
        telemetry: Optional[TelemetryHub] = None,
        gate: Optional[FrameGate] = None,  # None: config.gate's motion gate, per source kind
        exit_check: Optional[ExitCheck] = None,  # None: the bundle's early exits as config.exits says
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
            cpu_mem_arena=rt.cpu_mem_arena, emulated_slowdown=rt.emulated_slowdown,
            heap_mmap_threshold_kb=rt.heap_mmap_threshold_kb, jpeg_size=config.server.jpeg_size)
        labels: list[str] = []
        post = m.output.WhichOneof("postprocess")
        if post is not None and getattr(m.output, post).HasField("labels"):
            labels = load_labels(self.bundle.path(getattr(m.output, post).labels))
        self.postprocess = Postprocessor(m.output, labels, top_k_override=config.results.top_k, input_spec=m.input)
        self.profiles = cut_profiles(self.bundle, self.head.measured_head_ms())
        self._profile_by_id = {p.cut_id: p for p in self.profiles}
        self.policy = SplitPolicy(self.profiles, config.policy.policy_config())
        self.breaker = CircuitBreaker(rt.breaker_config())
        self.connector = Connector(config, self.bundle.name, bundle_hash(m))
        self._own_transport = transport is None
        self.transport: Optional[Transport] = transport
        first = sink if sink is not None else make_sink(config.results.sink, config.results.path)
        extra = configured_sinks(config, agent_id=self.agent_id, model=self.bundle.name,  # MQTT, live view
                                 cuts=[p.cut_id for p in sorted(self.profiles, key=lambda p: p.order)])
        self.sinks: list[ResultSink] = [first, *extra, *sinks]
        self._source = source
        self.telemetry = telemetry if telemetry is not None else build_hub(config.battery)
        self.probes = ProbeScheduler(interval_ms=config.policy.probe_interval_ms, probe_bytes=config.policy.probe_bytes)
        self.metrics = EdgeMetrics.disabled()
        self._lock = threading.RLock()  # policy, breaker, telemetry, decision, counters
        self.feedback = Feedback(policy=self.policy, breaker=self.breaker, telemetry=self.telemetry,
                                 metrics=self.metrics, now_ms=self._now_ms, on_decision=self._apply, lock=self._lock)
        self.gate = gate
        self.head_stage = HeadStage(self.head, WireEncoder(config.server.compression, self.bundle),
                                    self._profile_by_id, self.feedback, has_server=lambda: self.transport is not None,
                                    exit_check=exit_check if exit_check is not None else self._configured_exits())
        self.offloader = Offloader(self.bundle, self.head, self.feedback, agent_id=self.agent_id,
                                   deadline_ms=rt.deadline_ms, clock=clock)
        self.prober = Prober(self.bundle, self.feedback, self.offloader, self.probes, deadline_ms=rt.deadline_ms,
                             clock=clock)
        self.result_stage = ResultStage(self.postprocess, self.sinks, clock)
        self.events = EventHub()
        self._decision: Optional[Decision] = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._threads: list[threading.Thread] = []
        self.frames_captured = 0
        self.frames_dropped = 0
        self.frames_gated = 0
        self.results = 0
        self.results_by_path: Counter[str] = Counter()
        self._latencies_ms: deque[float] = deque(maxlen=500)
        self._last_image: Optional[np.ndarray] = None
        self.control_server: Optional[Any] = None
        self._serve_control = serve_control and config.control.enabled
        self._advertisement: Optional[Any] = None
        self.errors: list[str] = []
        self._started = False
        self._shut_down = False

    # ------------------------------------------------------------------ public state

    @property
    def sink(self) -> ResultSink:
        return self.sinks[0]

    @property
    def server_address(self) -> str:
        return self.connector.address

    @property
    def offload_failures(self) -> Counter[str]:
        return self.feedback.offload_failures

    @property
    def metrics_port(self) -> Optional[int]:
        return self.metrics.port

    def _now_ms(self) -> int:
        return int((self._clock() - self._t0) * 1000)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "EdgeAgent":
        """Connect, decide the first cut, prewarm it, start every stage."""
        if self._started:
            raise RuntimeError("agent already started")
        self._started = True
        if self.transport is None:
            self.transport = self.connector.connect()
        else:
            self.transport = self.connector.emulate(self.transport)
        if self.transport is None:
            log.warning("no server configured or discovered: running fully local")
        if self._source is None:
            self._source = open_source(self.config.source)
        self.gate = self._configured_gate(live_source=self._source.live, injected=self.gate)
        with self._lock:
            now = self._now_ms()
            self.policy.observe(self._sample_telemetry(now), now)
            if self.config.policy.pinned_cut:
                decision = self.policy.pin(self.config.policy.pinned_cut, now)
            else:
                decision = self.policy.decide(now)
        self.head.activate(decision.cut_id)
        if self.config.metrics.port is not None:
            self.metrics = self.feedback.metrics = serve_metrics(self.config.metrics.port, self.config.metrics.host)
        self._publish(decision)
        self._start_control()
        for extra in self.sinks:  # the live view serves this agent: control operations and the latest frame
            getattr(extra, "attach", lambda *_: None)(self, lambda: self._last_image)
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

    def _guard(self, fn: Callable[[], None], name: str) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - a stage must never die silently
                # a domain error (e.g. a source that is not MJPEG) is one line; anything else gets its trace
                log.error("stage %s stopped: %s", name, exc, exc_info=not isinstance(exc, EdgeAgentError))
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
        self.events.close()
        self.metrics.close()
        if self.transport is not None and self._own_transport:
            self.transport.close()
        self.result_stage.close()
        if self._source is not None:
            self._source.close()

    # ------------------------------------------------------------------ stage threads

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
                self.metrics.frame_captured()
                if not src.live:
                    self._capture_q.put(frame)  # files and folders never drop: wait for the pipeline
                    continue
                for _ in range(put_dropping_oldest(self._capture_q, frame, keep=_END)):
                    with self._lock:
                        self.frames_dropped += 1
                    self.metrics.frame_dropped()
        finally:
            self._capture_q.put(_END)

    def _head_loop(self) -> None:
        gate, admitted = self.gate, -1
        assert gate is not None, "start() sets the gate"
        try:
            while True:
                item = self._capture_q.get()
                if item is _END:
                    break
                frame: Frame = item
                self._last_image = frame.image_bgr
                if not gate.admit(frame) and admitted >= 0:  # the first frame is always computed
                    with self._lock:
                        self.frames_gated += 1
                    self.metrics.frame_gated()
                    self._result_q.put(GatedFrame(frame, admitted))  # repeats the last computed frame's result
                    continue
                admitted = frame.frame_id
                job = FrameJob(frame=frame, decision=self.decision, head_start_s=self._clock())
                try:
                    with self.prober.window.frame():  # bandwidth probes measure between frames
                        self.head_stage.run(job)
                except Exception as exc:  # noqa: BLE001 - the frame still gets its result
                    log.exception("frame %d failed in the head stage", frame.frame_id)
                    job.head, job.fallback_reason = None, f"head stage error: {exc}"
                    complete_on_device(job, self.head, guard=True)
                    self._result_q.put(job)
                    continue
                # blocks when the network is behind: back-pressure to capture
                (self._result_q if job.finished else self._net_q).put(job)
        finally:
            for _ in range(self.config.runtime.max_in_flight):
                self._net_q.put(_END)

    def _net_loop(self) -> None:
        try:
            while True:
                item = self._net_q.get()
                if item is _END:
                    break
                job: FrameJob = item
                try:
                    self.offloader.run(job, self.transport)
                except Exception as exc:  # noqa: BLE001 - the frame still gets its result
                    log.exception("frame %d failed in the network stage", job.frame.frame_id)
                    job.fallback_reason = f"network stage error: {exc}"
                    complete_on_device(job, self.head, guard=True)
                self._result_q.put(job)
        finally:
            with self._lock:
                self._net_workers_left -= 1
                last = self._net_workers_left == 0
            if last:
                self._result_q.put(_END)

    def _result_loop(self) -> None:
        try:
            while True:
                item = self._result_q.get()
                if item is _END:
                    break
                for result in self.result_stage.emit_all(item):
                    total_ms = result.latency_ms["total"]
                    with self._lock:
                        self.results += 1
                        self.results_by_path[result.path.value] += 1
                        self._latencies_ms.append(total_ms)
                    self.metrics.result(result.path.value, total_ms)
                    self.feedback.frame_finished(result)  # corrects its cut's predicted latency
        finally:
            self._done.set()

    # ------------------------------------------------------------------ control loop

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
        transport = self.transport
        if transport is not None and self.feedback.begin_health_probe(now):
            self.prober.health_probe(transport, self.server_address or "(injected)")
        elif transport is None and self._own_transport:
            self.connector.maybe_rediscover(now, lambda found: setattr(self, "transport", found))
        with self._lock:
            now = self._now_ms()
            sample = self._sample_telemetry(now)
            self.policy.observe(sample, now)
            decision = self.policy.decide(now)
        self._apply(decision)
        self.events.push(sample)
        self.metrics.telemetry_sampled(sample, circuit_open=self.breaker.state is not BreakerState.CLOSED)
        image = self._last_image
        if transport is not None:  # a bandwidth probe while local, an RTT refresh while offloading
            self.prober.measure_due(transport, decision, now, image)
        return decision

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
            self.events.push(decision)
            self.metrics.cut_chosen(decision.cut_id, self._profile_by_id[decision.cut_id].order,
                                    [p.cut_id for p in self.profiles])

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
            advertise_in_background(self.agent_id, self.control_server.advertised, self.bundle.name,
                                    bundle_hash(self.bundle.manifest), self._advertised)

    def _advertised(self, advertisement: Any) -> None:
        self._advertisement = advertisement

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
                agent_id=self.agent_id, bundle_name=self.bundle.name, bundle_version=self.model_version,
                server_address=self.server_address, decision=self.decision, objective=self.policy.objective,
                slo_ms=self.policy.slo_ms, telemetry=self.policy.telemetry,
                frames_captured=self.frames_captured, frames_dropped=self.frames_dropped,
                frames_gated=self.frames_gated, results=self.results, results_by_path=dict(self.results_by_path),
                circuit_state=self.breaker.state.value, uptime_s=self._clock() - self._t0,
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

    def subscribe(self) -> Subscription:
        return self.events.subscribe()
