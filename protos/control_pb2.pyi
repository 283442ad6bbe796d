from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_AUTO: _ClassVar[Mode]
    MODE_PINNED: _ClassVar[Mode]
    MODE_LOCAL_FALLBACK: _ClassVar[Mode]

class Objective(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OBJECTIVE_UNSPECIFIED: _ClassVar[Objective]
    OBJECTIVE_LATENCY: _ClassVar[Objective]
    OBJECTIVE_ENERGY: _ClassVar[Objective]
    OBJECTIVE_SLO: _ClassVar[Objective]
MODE_UNSPECIFIED: Mode
MODE_AUTO: Mode
MODE_PINNED: Mode
MODE_LOCAL_FALLBACK: Mode
OBJECTIVE_UNSPECIFIED: Objective
OBJECTIVE_LATENCY: Objective
OBJECTIVE_ENERGY: Objective
OBJECTIVE_SLO: Objective

class Telemetry(_message.Message):
    __slots__ = ("at_unix_ms", "has_battery", "battery_pct", "charging", "cpu_temp_c", "throttled", "cpu_load_pct", "uplink_kbps", "rtt_ms", "server_queue_ms", "server_compute_ms", "slowdown_factor")
    AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    HAS_BATTERY_FIELD_NUMBER: _ClassVar[int]
    BATTERY_PCT_FIELD_NUMBER: _ClassVar[int]
    CHARGING_FIELD_NUMBER: _ClassVar[int]
    CPU_TEMP_C_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_FIELD_NUMBER: _ClassVar[int]
    CPU_LOAD_PCT_FIELD_NUMBER: _ClassVar[int]
    UPLINK_KBPS_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    SERVER_QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    SERVER_COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    SLOWDOWN_FACTOR_FIELD_NUMBER: _ClassVar[int]
    at_unix_ms: int
    has_battery: bool
    battery_pct: float
    charging: bool
    cpu_temp_c: float
    throttled: bool
    cpu_load_pct: float
    uplink_kbps: float
    rtt_ms: float
    server_queue_ms: float
    server_compute_ms: float
    slowdown_factor: float
    def __init__(self, at_unix_ms: _Optional[int] = ..., has_battery: _Optional[bool] = ..., battery_pct: _Optional[float] = ..., charging: _Optional[bool] = ..., cpu_temp_c: _Optional[float] = ..., throttled: _Optional[bool] = ..., cpu_load_pct: _Optional[float] = ..., uplink_kbps: _Optional[float] = ..., rtt_ms: _Optional[float] = ..., server_queue_ms: _Optional[float] = ..., server_compute_ms: _Optional[float] = ..., slowdown_factor: _Optional[float] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("at_unix_ms", "cut_id", "mode", "reason", "objective")
    AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    CUT_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    at_unix_ms: int
    cut_id: str
    mode: Mode
    reason: str
    objective: Objective
    def __init__(self, at_unix_ms: _Optional[int] = ..., cut_id: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., reason: _Optional[str] = ..., objective: _Optional[_Union[Objective, str]] = ...) -> None: ...

class PathCount(_message.Message):
    __slots__ = ("path", "results")
    PATH_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    path: str
    results: int
    def __init__(self, path: _Optional[str] = ..., results: _Optional[int] = ...) -> None: ...

class AgentStatus(_message.Message):
    __slots__ = ("agent_id", "bundle_name", "bundle_version", "server_address", "current", "objective", "slo_ms", "telemetry", "frames_captured", "frames_dropped", "results", "results_by_path", "circuit_state", "uptime_s", "mean_latency_ms", "gate_enabled", "gate_ms", "exits")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_NAME_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    SLO_MS_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    FRAMES_CAPTURED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_BY_PATH_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_STATE_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    MEAN_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    GATE_ENABLED_FIELD_NUMBER: _ClassVar[int]
    GATE_MS_FIELD_NUMBER: _ClassVar[int]
    EXITS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    bundle_name: str
    bundle_version: str
    server_address: str
    current: Decision
    objective: Objective
    slo_ms: float
    telemetry: Telemetry
    frames_captured: int
    frames_dropped: int
    results: int
    results_by_path: _containers.RepeatedCompositeFieldContainer[PathCount]
    circuit_state: str
    uptime_s: float
    mean_latency_ms: float
    gate_enabled: bool
    gate_ms: float
    exits: _containers.RepeatedCompositeFieldContainer[ExitStatus]
    def __init__(self, agent_id: _Optional[str] = ..., bundle_name: _Optional[str] = ..., bundle_version: _Optional[str] = ..., server_address: _Optional[str] = ..., current: _Optional[_Union[Decision, _Mapping]] = ..., objective: _Optional[_Union[Objective, str]] = ..., slo_ms: _Optional[float] = ..., telemetry: _Optional[_Union[Telemetry, _Mapping]] = ..., frames_captured: _Optional[int] = ..., frames_dropped: _Optional[int] = ..., results: _Optional[int] = ..., results_by_path: _Optional[_Iterable[_Union[PathCount, _Mapping]]] = ..., circuit_state: _Optional[str] = ..., uptime_s: _Optional[float] = ..., mean_latency_ms: _Optional[float] = ..., gate_enabled: _Optional[bool] = ..., gate_ms: _Optional[float] = ..., exits: _Optional[_Iterable[_Union[ExitStatus, _Mapping]]] = ...) -> None: ...

class ExitStatus(_message.Message):
    __slots__ = ("cut_id", "checked", "exited", "threshold", "exit_ms")
    CUT_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKED_FIELD_NUMBER: _ClassVar[int]
    EXITED_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    EXIT_MS_FIELD_NUMBER: _ClassVar[int]
    cut_id: str
    checked: int
    exited: int
    threshold: float
    exit_ms: float
    def __init__(self, cut_id: _Optional[str] = ..., checked: _Optional[int] = ..., exited: _Optional[int] = ..., threshold: _Optional[float] = ..., exit_ms: _Optional[float] = ...) -> None: ...

class CutCost(_message.Message):
    __slots__ = ("cut_id", "tensors", "wire_bytes", "head_ms", "wire_ms", "server_ms", "predicted_latency_ms", "predicted_energy_mj", "current", "available", "unavailable_reason")
    CUT_ID_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    WIRE_BYTES_FIELD_NUMBER: _ClassVar[int]
    HEAD_MS_FIELD_NUMBER: _ClassVar[int]
    WIRE_MS_FIELD_NUMBER: _ClassVar[int]
    SERVER_MS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_ENERGY_MJ_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    cut_id: str
    tensors: _containers.RepeatedScalarFieldContainer[str]
    wire_bytes: int
    head_ms: float
    wire_ms: float
    server_ms: float
    predicted_latency_ms: float
    predicted_energy_mj: float
    current: bool
    available: bool
    unavailable_reason: str
    def __init__(self, cut_id: _Optional[str] = ..., tensors: _Optional[_Iterable[str]] = ..., wire_bytes: _Optional[int] = ..., head_ms: _Optional[float] = ..., wire_ms: _Optional[float] = ..., server_ms: _Optional[float] = ..., predicted_latency_ms: _Optional[float] = ..., predicted_energy_mj: _Optional[float] = ..., current: _Optional[bool] = ..., available: _Optional[bool] = ..., unavailable_reason: _Optional[str] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCutsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCutsResponse(_message.Message):
    __slots__ = ("cuts",)
    CUTS_FIELD_NUMBER: _ClassVar[int]
    cuts: _containers.RepeatedCompositeFieldContainer[CutCost]
    def __init__(self, cuts: _Optional[_Iterable[_Union[CutCost, _Mapping]]] = ...) -> None: ...

class SetSplitRequest(_message.Message):
    __slots__ = ("cut_id",)
    CUT_ID_FIELD_NUMBER: _ClassVar[int]
    cut_id: str
    def __init__(self, cut_id: _Optional[str] = ...) -> None: ...

class SetSplitResponse(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ...) -> None: ...

class SetAutoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetAutoResponse(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ...) -> None: ...

class SetPolicyRequest(_message.Message):
    __slots__ = ("objective", "slo_ms")
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    SLO_MS_FIELD_NUMBER: _ClassVar[int]
    objective: Objective
    slo_ms: float
    def __init__(self, objective: _Optional[_Union[Objective, str]] = ..., slo_ms: _Optional[float] = ...) -> None: ...

class SetPolicyResponse(_message.Message):
    __slots__ = ("objective", "slo_ms")
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    SLO_MS_FIELD_NUMBER: _ClassVar[int]
    objective: Objective
    slo_ms: float
    def __init__(self, objective: _Optional[_Union[Objective, str]] = ..., slo_ms: _Optional[float] = ...) -> None: ...

class SetGateRequest(_message.Message):
    __slots__ = ("enabled",)
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    def __init__(self, enabled: _Optional[bool] = ...) -> None: ...

class SetGateResponse(_message.Message):
    __slots__ = ("enabled",)
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    def __init__(self, enabled: _Optional[bool] = ...) -> None: ...

class SetExitThresholdRequest(_message.Message):
    __slots__ = ("threshold", "cut_id")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CUT_ID_FIELD_NUMBER: _ClassVar[int]
    threshold: float
    cut_id: str
    def __init__(self, threshold: _Optional[float] = ..., cut_id: _Optional[str] = ...) -> None: ...

class SetExitThresholdResponse(_message.Message):
    __slots__ = ("exits",)
    EXITS_FIELD_NUMBER: _ClassVar[int]
    exits: _containers.RepeatedCompositeFieldContainer[ExitStatus]
    def __init__(self, exits: _Optional[_Iterable[_Union[ExitStatus, _Mapping]]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("interval_ms",)
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    interval_ms: int
    def __init__(self, interval_ms: _Optional[int] = ...) -> None: ...

class AgentEvent(_message.Message):
    __slots__ = ("status", "telemetry", "decision")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    status: AgentStatus
    telemetry: Telemetry
    decision: Decision
    def __init__(self, status: _Optional[_Union[AgentStatus, _Mapping]] = ..., telemetry: _Optional[_Union[Telemetry, _Mapping]] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ...) -> None: ...
