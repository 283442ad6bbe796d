"""The control loop's probes: the half-open breaker's health probe, the low-duty bandwidth probe
while fully local, and the RTT refresh while offloading. All report through
:class:`~edge_agent.feedback.Feedback`; :meth:`Prober.measure_due` is the control tick's entry.

The RTT refresh: while the agent offloads steadily with payloads of at least the estimator's
``min_sample_bytes`` no transfer is an RTT sample, and the RTT learnt on a slow link (+40 ms)
was subtracted from every transfer on the next, nearer one (the demo's agent read 8 Mbit/s as
11-16 Mbit/s). Every ``rtt_refresh_ms`` (while transfers keep coming,
:func:`~edge_agent.telemetry.bandwidth.rtt_refresh_due`) it sends ``pings`` empty round trips
between frames and reports their fastest as a floor, which the estimator's RTT is clamped to.
It costs ``pings`` empty calls per ``rtt_refresh_ms`` (a few ms of link time on a near link).
Limits: on a real link a ping queues behind a transfer still in flight (the emulated link does
not queue them), which lengthens it; the fastest of three is taken, and an RTT read too long errs
the old way (the uplink read too high, by at most 2x: ``MIN_TX_FRACTION``).

The bandwidth probe measures the link, not the device: it runs between frames (local
inference on a throttled core stretched a probe's samples to a 140 ms RTT and 918 kbit/s on a
10 ms, 4 Mbit/s link), takes the minimum of a few warm pings as the RTT and the fastest of a
few transfers for the uplink (:mod:`edge_agent.telemetry.probe_samples`), and the scheduler
charges it the link time it measured, not its wall time.

After a health probe finds the server back, the next bandwidth probe is due at once (not at the
scheduler's next slot, which after probes that hung on a dead link can be tens of seconds away):
the link estimates predate the outage (timeouts taught the estimator a collapsed uplink), so a
policy that fell back to "output" would otherwise stay local until the schedule allows a probe.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from edge_agent.errors import ConfigError, OffloadUnavailable
from edge_agent.feedback import Feedback
from edge_agent.probe_window import ProbeWindow
from edge_agent.stages.offload import SERVER_GONE_CODES, Offloader
from edge_agent.telemetry import ProbeScheduler
from edge_agent.telemetry.bandwidth import RTT_REFRESH_MS
from edge_agent.telemetry.probe_samples import ProbeResult, ProbeTransfer, combine_probe
from edge_agent.types import Decision, Mode, OffloadRequest, OffloadResponse, Transport, WireTensor
from protos import datatypes
from protos.bundle import Bundle
from protos.names import INPUT_CUT, OUTPUT_CUT


class Prober:
    def __init__(
        self,
        bundle: Bundle,
        feedback: Feedback,
        offloader: Offloader,
        scheduler: ProbeScheduler,
        *,
        deadline_ms: float,
        clock: Callable[[], float] = time.monotonic,
        pings: int = 3,
        transfers: int = 2,
        window: Optional[ProbeWindow] = None,
        rtt_refresh_ms: int = RTT_REFRESH_MS,
    ) -> None:
        if pings < 1 or transfers < 1:
            raise ConfigError(f"a bandwidth probe needs pings >= 1 and transfers >= 1, not {pings} and {transfers}")
        self.bundle = bundle
        self.feedback = feedback
        self.offloader = offloader
        self.scheduler = scheduler
        self.deadline_s = deadline_ms / 1000.0
        self._clock = clock
        self.pings, self.transfers = pings, transfers
        self.window = window if window is not None else ProbeWindow()  # the head stage computes frames in it
        self._has_input_cut = INPUT_CUT in bundle.cut_ids
        self._measure_now = False  # the server just came back: the next bandwidth probe is due at once
        self.rtt_refresh_ms = rtt_refresh_ms
        self._rtt_attempt_ms: Optional[int] = None  # the last RTT refresh's start

    def health_probe(self, transport: Transport, server: str) -> None:
        """Is the server back (and, after a failure naming our tail, does it hold it again)?"""
        timeout_s = min(1.0, self.deadline_s * 2)
        start = self._clock()
        ok = transport.healthy(timeout_s=timeout_s)
        failed = self.feedback.last_failed_model
        if ok and failed is not None:  # the server is up, but does it hold our tail?
            ok = transport.model_ready(failed[0], failed[1], timeout_s)
        if ok:  # the calls above may have paid for a new connection (TCP, HTTP/2, TLS): the RTT the policy
            start = self._clock()  # gets is that of a second, warm call (a cold one kept it local for seconds)
            ok = transport.healthy(timeout_s=timeout_s)
        self.feedback.health_checked(ok, (self._clock() - start) * 1000.0, server)
        self._measure_now = ok

    def measure_due(self, transport: Transport, decision: Decision, now_ms: int,
                    latest_image: Optional[np.ndarray]) -> None:
        """The control tick's link measurement, if one is due: a bandwidth probe while fully local,
        an RTT refresh while offloading."""
        if latest_image is not None and self.bandwidth_probe_due(decision, now_ms, latest_image):
            self.bandwidth_probe(transport, latest_image)
        elif self.rtt_refresh_due(decision, now_ms):
            self.rtt_refresh(transport)

    def rtt_refresh_due(self, decision: Decision, now_ms: int) -> bool:
        """Offloading, and the RTT sample (and the last refresh) at least ``rtt_refresh_ms`` old."""
        if decision.cut_id == OUTPUT_CUT or not self.feedback.offload_allowed():
            return False
        with self.feedback.lock:
            return self.feedback.telemetry.bandwidth.rtt_refresh_due(
                now_ms, last_attempt_ms=self._rtt_attempt_ms, refresh_after_ms=self.rtt_refresh_ms)

    def rtt_refresh(self, transport: Transport) -> None:
        """``pings`` empty round trips between frames (the connection is warm: transfers keep it
        busy); the fastest is reported as an RTT floor. None answering measures nothing: the
        offloads' own failures tell the breaker."""
        self._rtt_attempt_ms = self.feedback.now_ms()
        pings: list[float] = []
        with self.window.probe():
            for _ in range(self.pings):
                start = self._clock()
                if not transport.healthy(timeout_s=self.deadline_s):
                    break
                pings.append((self._clock() - start) * 1000.0)
        if pings:
            self.feedback.rtt_measured(min(pings))

    def bandwidth_probe_due(self, decision: Decision, now_ms: int, latest_image: Optional[np.ndarray]) -> bool:
        if decision.cut_id != OUTPUT_CUT:
            self._measure_now = False  # offloading again: real transfers measure the link
            return False
        if decision.mode is not Mode.AUTO:
            return False
        if latest_image is None or not self.feedback.offload_allowed():
            return False
        if self._measure_now:
            return True
        with self.feedback.lock:
            return self.scheduler.due(now_ms, self.feedback.telemetry.bandwidth.last_sample_ms)

    def bandwidth_probe(self, transport: Transport, image: np.ndarray) -> None:
        """Real, small transfers while fully local: the latest frame as JPEG to the 'input' tail.

        It is exactly what the "input" cut would send, so it measures the link with a
        representative payload (a JPEG below the estimator's ``min_sample_bytes`` counts as
        an RTT sample). It runs between frames (:class:`~edge_agent.probe_window.ProbeWindow`):
        a cold ping (it may open the connection), ``pings`` warm ones whose minimum is the RTT,
        then ``transfers`` JPEG requests of which the fastest is reported (a CPU stall only
        stretches a sample; :func:`~edge_agent.telemetry.probe_samples.combine_probe`). The
        scheduler charges the link time the probe measured against its duty cycle.
        """
        self._measure_now = False
        if not self._has_input_cut:
            return
        jpeg = self.offloader.runner.input_jpeg(image)  # as the input cut sends it; before the window: CPU work
        spec = self.bundle.cut(INPUT_CUT).tensors[0]
        tensor = WireTensor(spec.name, "BYTES", (1,), datatypes.serialize_bytes_tensor([jpeg]))
        with self.feedback.lock:
            self.scheduler.note_started(self.feedback.now_ms())
        result = combine_probe((), ())
        try:
            with self.window.probe():
                pings = self._warm_pings_ms(transport)
                done, failure = self._transfers(transport, tensor)
            result = combine_probe(pings, [transfer for transfer, _ in done])
            self._report(result, done, failure)
        finally:
            with self.feedback.lock:
                self.scheduler.note_finished(self.feedback.now_ms(), link_ms=result.link_ms,
                                             uplink_kbps=result.uplink_kbps)

    def _warm_pings_ms(self, transport: Transport) -> list[float]:
        """Round trips of empty calls: while fully local nothing else measures the RTT. The first
        call may open the connection (TCP + HTTP/2 handshakes, more than one RTT) and is not a
        sample (a cold first probe kept an adaptive agent local for 10 s)."""
        if not transport.healthy(timeout_s=self.deadline_s):
            return []
        pings: list[float] = []
        for _ in range(self.pings):
            start = self._clock()
            if not transport.healthy(timeout_s=self.deadline_s):
                break
            pings.append((self._clock() - start) * 1000.0)
        return pings

    def _transfers(self, transport: Transport, tensor: WireTensor) -> tuple[list[_Done], Optional[_Failed]]:
        """Up to ``transfers`` requests, stopping at the first failure."""
        done: list[_Done] = []
        for _ in range(self.transfers):
            request = self.offloader.request_for(INPUT_CUT, (tensor,), -1)
            start = self._clock()
            try:
                response = transport.infer(request, self.deadline_s)
            except OffloadUnavailable as exc:
                return done, _Failed(request, exc, (self._clock() - start) * 1000.0)
            duration_ms = response.round_trip_ms
            if duration_ms is None:
                duration_ms = (self._clock() - start) * 1000.0
            server_ms = (response.server_queue_ms or 0.0) + (response.server_compute_ms or 0.0)
            done.append((ProbeTransfer(request.wire_bytes, float(duration_ms), min(server_ms, duration_ms)), response))
        return done, None

    def _report(self, result: ProbeResult, done: list[_Done], failure: Optional[_Failed]) -> None:
        """The RTT floor, the fastest transfer, then a failure (if any) to the feedback.

        A probe that finds the server gone (``UNAVAILABLE``, ``STREAM_CLOSED``) reports a failure
        retrying cannot fix, which opens the circuit at once: no offloads follow a probe to count
        up to the threshold, and the breaker's cheap health probes watch for the server's return."""
        if result.rtt_floor_ms is not None:
            self.feedback.rtt_measured(result.rtt_floor_ms)
        for transfer, response in done:
            if transfer is result.fastest:
                self.feedback.offload_succeeded(INPUT_CUT, transfer.sent_bytes, transfer.duration_ms,
                                                response.server_queue_ms, response.server_compute_ms)
                break
        if failure is not None:
            exc = failure.error
            if exc.code in SERVER_GONE_CODES and exc.retryable:
                exc = OffloadUnavailable(f"bandwidth probe: {exc}", code=exc.code, retryable=False)
            request = failure.request
            self.feedback.offload_failed(exc, (request.model_name, request.model_version),
                                         sent_bytes=request.wire_bytes, waited_ms=failure.waited_ms)


_Done = tuple[ProbeTransfer, OffloadResponse]


@dataclass(frozen=True)
class _Failed:
    request: OffloadRequest
    error: OffloadUnavailable
    waited_ms: float
