"""A small, real ControlTarget (no agent behind it) for control-endpoint unit tests."""
from __future__ import annotations

import queue
import threading
from typing import Iterator, Optional

from edge_agent.errors import PolicyError, UnknownCutError
from edge_agent.types import AgentSnapshot, CutEstimate, Decision, Mode, Objective, Telemetry

CUTS = ("input", "features_6", "features_13", "output")


class _Stream:
    def __init__(self, owner: "TableTarget") -> None:
        self._owner = owner
        self._queue: queue.Queue[object] = queue.Queue()
        self.closed = threading.Event()

    def push(self, event: object) -> None:
        self._queue.put(event)

    def __iter__(self) -> Iterator[object]:
        while not self.closed.is_set():
            try:
                event = self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            yield event

    def close(self) -> None:
        self.closed.set()
        self._owner.streams.discard(self)


class TableTarget:
    """Holds a current decision and objective; publishes decisions to subscribers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.decision = Decision("features_6", Mode.AUTO, "initial", Objective.LATENCY, 1_000)
        self.objective = Objective.LATENCY
        self.slo_ms: Optional[float] = None
        self.streams: set[_Stream] = set()
        self.now_ms = 1_000

    def _publish(self, event: object) -> None:
        for stream in list(self.streams):
            stream.push(event)

    def snapshot(self) -> AgentSnapshot:
        with self.lock:
            return AgentSnapshot(
                agent_id="table",
                bundle_name="tiny",
                bundle_version="0123456789ab",
                server_address="127.0.0.1:1",
                decision=self.decision,
                objective=self.objective,
                slo_ms=self.slo_ms,
                telemetry=Telemetry(at_ms=self.now_ms, uplink_kbps=850.0, rtt_ms=4.5, battery_pct=77.0, charging=False),
                frames_captured=10,
                frames_dropped=1,
                results=9,
                results_by_path={"split": 7, "fallback": 2},
                circuit_state="closed",
                uptime_s=12.5,
                mean_latency_ms=33.0,
            )

    def cut_estimates(self) -> list[CutEstimate]:
        return [
            CutEstimate(cut, head_ms=i * 2.0, wire_ms=10.0 - i, server_ms=3.0, latency_ms=20.0 + i, energy_mj=5.0 * i,
                        available=cut != "input", unavailable_reason="" if cut != "input" else "cloud unreachable")
            for i, cut in enumerate(CUTS)
        ]

    def pin_split(self, cut_id: str) -> Decision:
        if cut_id not in CUTS:
            raise UnknownCutError(cut_id, list(CUTS))
        with self.lock:
            self.now_ms += 1
            self.decision = Decision(cut_id, Mode.PINNED, "pinned by operator", self.objective, self.now_ms)
        self._publish(self.decision)
        return self.decision

    def set_auto(self) -> Decision:
        with self.lock:
            self.now_ms += 1
            self.decision = Decision(self.decision.cut_id, Mode.AUTO, "policy resumed", self.objective, self.now_ms)
        self._publish(self.decision)
        return self.decision

    def set_policy(self, objective: Objective, slo_ms: Optional[float]) -> None:
        if slo_ms is not None and slo_ms <= 0:
            raise PolicyError(f"slo_ms {slo_ms} must be > 0")
        with self.lock:
            self.objective, self.slo_ms = objective, slo_ms

    def publish_telemetry(self) -> None:
        self._publish(Telemetry(at_ms=self.now_ms, uplink_kbps=123.0))

    def subscribe(self) -> _Stream:
        stream = _Stream(self)
        self.streams.add(stream)
        return stream
