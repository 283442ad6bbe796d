"""Value types shared by the edge agent's policy, daemon, transport and control endpoint.

Pure data: no I/O, no clocks. Times are integers in milliseconds given by the caller
(``now_ms``, from ``time.monotonic()`` in the daemon); ``at_unix_ms`` fields are wall
time for display only.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional, Protocol, Sequence

import numpy as np


class Objective(enum.Enum):
    LATENCY = "latency"
    ENERGY = "energy"
    SLO = "slo"  # minimum energy subject to a latency SLO


class Mode(enum.Enum):
    AUTO = "auto"
    PINNED = "pinned"
    LOCAL_FALLBACK = "local_fallback"


class Path(enum.Enum):
    """Where a frame completed."""

    SPLIT = "split"  # head on the device, tail on the server
    CLOUD = "cloud"  # JPEG sent, everything on the server ("input" cut)
    LOCAL = "local"  # everything on the device by choice ("output" cut)
    FALLBACK = "fallback"  # offload failed or missed its deadline; completed on the device
    GATED = "gated"  # nothing moved: no model ran, the result repeats the last computed frame's
    EXITED = "exited"  # the head's early exit was confident: finished on the device, nothing offloaded


@dataclass(frozen=True)
class Telemetry:
    """One sample of everything the policy looks at; ``None`` means unknown."""

    at_ms: int
    battery_pct: Optional[float] = None
    charging: Optional[bool] = None
    cpu_temp_c: Optional[float] = None
    throttled: bool = False
    cpu_load_pct: Optional[float] = None
    uplink_kbps: Optional[float] = None
    rtt_ms: Optional[float] = None
    server_queue_ms: Optional[float] = None
    server_compute_ms: Optional[float] = None
    # measured head time / profiled head time; follows thermal throttling and load
    slowdown_factor: float = 1.0
    # False while the circuit breaker is open (server unreachable)
    cloud_available: bool = True


@dataclass(frozen=True)
class CutProfile:
    """What the bundle says about one cut, as the policy needs it."""

    cut_id: str
    order: int
    wire_bytes: int
    head_ms: float  # profiled edge time of the head (0 for "input"; full model for "output")
    tail_ms: float  # profiled server time of the tail (0 for "output")
    tensors: tuple[str, ...] = ()

    @property
    def is_input(self) -> bool:
        return self.cut_id == "input"

    @property
    def is_output(self) -> bool:
        return self.cut_id == "output"


@dataclass(frozen=True)
class CutEstimate:
    cut_id: str
    head_ms: float
    wire_ms: float
    server_ms: float
    latency_ms: float
    energy_mj: float
    available: bool = True
    unavailable_reason: str = ""


@dataclass(frozen=True)
class Decision:
    cut_id: str
    mode: Mode
    reason: str
    objective: Objective
    at_ms: int


@dataclass(frozen=True)
class AgentSnapshot:
    """What ``splitctl status`` shows."""

    agent_id: str
    bundle_name: str
    bundle_version: str
    server_address: str
    decision: Decision
    objective: Objective
    slo_ms: Optional[float]
    telemetry: Telemetry
    frames_captured: int
    frames_dropped: int
    results: int
    results_by_path: Mapping[str, int]
    circuit_state: str
    uptime_s: float
    mean_latency_ms: Optional[float]
    frames_gated: int = 0  # skipped by the frame gate before any model ran
    gate_exits: Optional[Any] = None  # edge_agent.gate_exits.GateExitStatus (the control endpoint adds it)


# --------------------------------------------------------------------------- transport seam


@dataclass(frozen=True)
class WireTensor:
    name: str
    datatype: str  # Open Inference Protocol datatype, e.g. "UINT8", "BYTES"
    shape: tuple[int, ...]
    raw: bytes  # little-endian row-major; BYTES elements length-prefixed
    parameters: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class OffloadRequest:
    model_name: str
    model_version: str
    request_id: str
    inputs: Sequence[WireTensor]
    output_names: Sequence[str] = ()
    parameters: Mapping[str, object] = field(default_factory=dict)

    @property
    def wire_bytes(self) -> int:
        return sum(len(t.raw) for t in self.inputs)


@dataclass(frozen=True)
class OffloadResponse:
    request_id: str
    outputs: Mapping[str, np.ndarray]
    # advisory, only when the server sends them (a stock Triton does not)
    server_queue_ms: Optional[float] = None
    server_compute_ms: Optional[float] = None
    round_trip_ms: Optional[float] = None


class Transport(Protocol):
    """The one seam where bytes meet the network; every call the daemon makes.

    ``infer`` raises :class:`edge_agent.errors.OffloadUnavailable` for every transport
    failure; ``healthy`` (the server answers) and ``model_ready`` (it also holds this tail
    version) return False instead of raising.
    """

    def infer(self, request: OffloadRequest, timeout_s: float) -> OffloadResponse: ...

    def healthy(self, timeout_s: float) -> bool: ...

    def model_ready(self, name: str, version: str, timeout_s: float) -> bool: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- control seam


class EventStream(Protocol):
    """Telemetry and Decision values as they happen; ``close`` ends the iteration."""

    def __iter__(self) -> Iterator[object]: ...

    def close(self) -> None: ...


class ControlTarget(Protocol):
    """What the control endpoint drives; the daemon implements it.

    Changes are atomic with respect to frames: a frame already past the split
    decision finishes on the cut it started with.
    """

    def snapshot(self) -> AgentSnapshot: ...

    def cut_estimates(self) -> list[CutEstimate]: ...

    def pin_split(self, cut_id: str) -> Decision: ...  # UnknownCutError lists the valid ids

    def set_auto(self) -> Decision: ...

    def set_policy(self, objective: Objective, slo_ms: Optional[float]) -> None: ...  # ValueError on bad SLO

    def subscribe(self) -> EventStream: ...
