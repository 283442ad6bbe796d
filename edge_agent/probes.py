"""The control loop's two probes: the half-open breaker's health probe and the low-duty
bandwidth probe while fully local. Both report through :class:`~edge_agent.feedback.Feedback`.

After a health probe finds the server back, the next bandwidth probe is due at once (not at the
scheduler's next slot, which after probes that hung on a dead link can be tens of seconds away):
the link estimates predate the outage (timeouts taught the estimator a collapsed uplink), so a
policy that fell back to "output" would otherwise stay local until the schedule allows a probe.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np

from edge_agent.errors import OffloadUnavailable
from edge_agent.feedback import Feedback
from edge_agent.stages.offload import Offloader
from edge_agent.telemetry import ProbeScheduler
from edge_agent.types import Decision, Mode, Transport, WireTensor
from protos import datatypes
from protos.bundle import Bundle
from protos.names import INPUT_CUT, OUTPUT_CUT
from protos.preprocess import encode_jpeg


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
    ) -> None:
        self.bundle = bundle
        self.feedback = feedback
        self.offloader = offloader
        self.scheduler = scheduler
        self.deadline_s = deadline_ms / 1000.0
        self._clock = clock
        self._has_input_cut = INPUT_CUT in bundle.cut_ids
        self._measure_now = False  # the server just came back: the next bandwidth probe is due at once

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
        """A real, small transfer while fully local: the latest frame as JPEG to the 'input' tail.

        It is exactly what the "input" cut would send, so it measures the link with a
        representative payload (a JPEG below the estimator's ``min_sample_bytes`` counts as
        an RTT sample). The scheduler keeps probes under its duty cycle.
        """
        self._measure_now = False
        if not self._has_input_cut:
            return
        jpeg = encode_jpeg(image, int(self.bundle.manifest.input.jpeg_quality))
        spec = self.bundle.cut(INPUT_CUT).tensors[0]
        tensor = WireTensor(spec.name, "BYTES", (1,), datatypes.serialize_bytes_tensor([jpeg]))
        request = self.offloader.request_for(INPUT_CUT, (tensor,), -1)
        with self.feedback.lock:
            self.scheduler.note_started(self.feedback.now_ms())
        # An empty round trip first: while fully local nothing else measures the RTT, and
        # the bandwidth sample below subtracts it from the transfer time.
        # The first call may open the connection (TCP + HTTP/2 handshakes, more than one RTT): the
        # sample is the second, warm one (a cold first probe kept an adaptive agent local for 10 s).
        if transport.healthy(timeout_s=self.deadline_s):
            start = self._clock()
            if transport.healthy(timeout_s=self.deadline_s):
                self.feedback.rtt_measured((self._clock() - start) * 1000.0)
        try:
            self.offloader.send(request, transport, probe=True)
        except OffloadUnavailable:
            pass  # reported to the feedback already
        finally:
            with self.feedback.lock:
                self.scheduler.note_finished(self.feedback.now_ms())
