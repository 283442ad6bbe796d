"""Typed, frozen configuration of the edge agent, validated on construction.

Sources and precedence (highest first), read by the one settings loader
(:mod:`protos.settings`)::

    command-line flags  >  SPLITINFER_* environment  >  edge.toml  >  defaults

Every setting has a dotted key ``section.name`` (``server.address``, ``policy.slo_ms``).
The environment variable for a key is ``SPLITINFER_`` + the key upper-cased with dots
turned into underscores (``SPLITINFER_SERVER_ADDRESS``, ``SPLITINFER_POLICY_SLO_MS``);
flags arrive as a ``{dotted key: value}`` mapping built by :mod:`edge_agent.cli`.
A value that cannot be parsed raises :class:`~edge_agent.errors.ConfigError` naming the
source, the key, the value and what was expected; each section checks its ranges in
``__post_init__``, so no config object is ever invalid.

Each default is defined once: the policy's in :class:`edge_agent.policy.PolicyConfig`,
the breaker's in :class:`edge_agent.breaker.BreakerConfig`; the sections below refer to
them. Nothing here runs at import time; only :func:`load_config` reads the file and
:func:`validate_paths` looks at the disk.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any, Mapping, NoReturn, Optional

from edge_agent.breaker import BreakerConfig
from edge_agent.config_owner import ExitsConfig, LiveViewConfig, MqttConfig, is_loopback
from edge_agent.errors import ConfigError
from edge_agent.gate import MotionGate
from edge_agent.policy import PolicyConfig
from edge_agent.types import Objective
from protos import settings

ENV_PREFIX = "SPLITINFER_"

SOURCE_KINDS = ("auto", "camera", "stream", "video", "folder", "pipe", "picamera2")
SINK_KINDS = ("stdout", "file", "none")
BATTERY_SOURCES = ("auto", "none", "psutil", "sysfs", "trace")
PROVIDERS = ("auto", "cpu", "xnnpack")
CODECS = ("auto", "none", "zlib")
GATE_MODES = ("auto", "on", "off")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _fail(key: str, value: Any, expected: str) -> NoReturn:
    raise ConfigError(f"{key} = {value!r}: expected {expected}")


def _check_host_port(key: str, value: Optional[str], expected: str = "host:port") -> None:
    if value is not None and (":" not in value or not value.rsplit(":", 1)[1].isdigit()):
        _fail(key, value, expected)


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Where the tails are served. ``address`` None means: find one with zeroconf
    (``discovery`` true) or run fully local."""

    address: Optional[str] = None
    discovery: bool = True
    discovery_timeout_s: float = 3.0
    tls: bool = False
    ca_file: Optional[pathlib.Path] = None
    cert_file: Optional[pathlib.Path] = None  # client certificate (mutual TLS)
    key_file: Optional[pathlib.Path] = None
    server_name: Optional[str] = None  # TLS name override
    token: Optional[str] = field(default=None, repr=False)
    max_message_mb: int = 64
    streaming: bool = True  # ModelStreamInfer; falls back to ModelInfer when unimplemented
    compression: str = "none"  # wire codec; "zlib" only for our server (stock Triton does not decompress)
    jpeg_size: str = "model"  # cloud-only JPEG: "model" = downscaled to what the model uses; "frame" = full frame

    def __post_init__(self) -> None:
        _check_host_port("server.address", self.address, "host:port, e.g. 'cloud.example.com:8001' (several: "
                         "'h1:8001,h2:8001' or 'dns:///name:8001', balanced round_robin, see edge_agent.channels)")
        if self.discovery_timeout_s <= 0:
            _fail("server.discovery_timeout_s", self.discovery_timeout_s, "a number > 0")
        if (self.cert_file is None) != (self.key_file is None):
            _fail("server.cert_file", self.cert_file, "server.cert_file and server.key_file given together (mutual TLS)")
        if (self.cert_file is not None or self.ca_file is not None) and not self.tls:
            _fail("server.tls", self.tls, "true when server.ca_file/cert_file are set")
        if self.token is not None and self.token == "":
            _fail("server.token", self.token, "a non-empty token or no token")
        if not 1 <= self.max_message_mb <= 2047:
            _fail("server.max_message_mb", self.max_message_mb, "an integer in 1..2047")
        if self.compression not in CODECS:
            _fail("server.compression", self.compression, f"one of {list(CODECS)}")
        if self.jpeg_size not in ("model", "frame"):
            _fail("server.jpeg_size", self.jpeg_size, "'model' (downscaled to the model's input) or 'frame'")


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """Where frames come from. ``kind`` "auto" infers it from ``uri``: an integer is a
    camera index, ``rtsp://``/``http(s)://`` a stream, a directory a folder, ``-`` (stdin)
    or a FIFO an MJPEG pipe (``rpicam-vid --codec mjpeg -o -``), else a video.
    "picamera2" (never inferred) reads a Raspberry Pi camera module through libcamera."""

    kind: str = "auto"
    uri: str = "0"
    fps_cap: Optional[float] = None
    width_px: Optional[int] = None  # resize captured frames; None keeps the source size
    height_px: Optional[int] = None
    loop: bool = False  # replay a video/folder forever (demo)
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            _fail("source.kind", self.kind, f"one of {list(SOURCE_KINDS)}")
        if not self.uri:
            _fail("source.uri", self.uri, "a camera index, rtsp/http URL, video file or image folder")
        if self.kind in ("camera", "picamera2") and not self.uri.isdigit():
            _fail("source.uri", self.uri, f"a camera index (0, 1, ...) for source.kind = {self.kind!r}")
        if self.fps_cap is not None and self.fps_cap <= 0:
            _fail("source.fps_cap", self.fps_cap, "a number > 0 or no cap")
        for key in ("width_px", "height_px"):
            v = getattr(self, key)
            if v is not None and not 8 <= v <= 8192:
                _fail(f"source.{key}", v, "pixels in 8..8192")
        if (self.width_px is None) != (self.height_px is None):
            _fail("source.width_px", self.width_px, "source.width_px and source.height_px given together")
        if not 0 < self.reconnect_initial_s <= self.reconnect_max_s:
            _fail("source.reconnect_initial_s", self.reconnect_initial_s,
                  f"0 < value <= source.reconnect_max_s ({self.reconnect_max_s})")


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    threads: int = 2
    execution_provider: str = "auto"  # XNNPACK when the installed build has it, else CPU
    deadline_ms: float = 500.0  # per-offload budget; a miss completes on the device
    # heads kept ready on each side of the active cut (by order). 0: a switch loads the new head
    # first (frames keep running on the old cut meanwhile); measured on MobileNetV2 at
    # features_14_conv_2 the neighbours cost ~23 MB of RSS while running (edge_bench)
    prewarm_neighbours: int = 0
    local_tails: bool = False  # load tails found beside the bundle for cheaper fallback
    cpu_mem_arena: bool = False  # ONNX Runtime memory arena: slightly faster, ~25 MB more RSS
    # glibc: blocks of at least this many KiB get their own mapping, returned on free (None: glibc's
    # dynamic default). 1024 on MobileNetV2/x86: RSS median 144 vs 162-185 MB, for slower heads
    heap_mmap_threshold_kb: Optional[int] = None
    queue_depth: int = 2  # bounded queue between each pipeline stage
    max_in_flight: int = 2  # concurrent offloads (network stage workers)
    max_frames: Optional[int] = None  # stop after this many captured frames
    # the circuit breaker; defaults and meaning in edge_agent.breaker.BreakerConfig
    breaker_failures: int = BreakerConfig.failure_threshold
    breaker_backoff_ms: int = BreakerConfig.initial_backoff_ms
    breaker_max_backoff_ms: int = BreakerConfig.max_backoff_ms
    # > 1 emulates a slower device: every on-device model run is padded with a sleep to
    # this many times its duration (4 ~ a Pi 4 core vs a current x86 core). Demos only.
    emulated_slowdown: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.threads <= 64:
            _fail("runtime.threads", self.threads, "an integer in 1..64")
        if self.execution_provider not in PROVIDERS:
            _fail("runtime.execution_provider", self.execution_provider, f"one of {list(PROVIDERS)}")
        if not 1 <= self.deadline_ms <= 600_000:
            _fail("runtime.deadline_ms", self.deadline_ms, "milliseconds in 1..600000")
        if not 0 <= self.prewarm_neighbours <= 16:
            _fail("runtime.prewarm_neighbours", self.prewarm_neighbours, "an integer in 0..16")
        if self.heap_mmap_threshold_kb is not None and not 4 <= self.heap_mmap_threshold_kb <= 32768:
            _fail("runtime.heap_mmap_threshold_kb", self.heap_mmap_threshold_kb, "KiB in 4..32768 or none")
        if not 1 <= self.queue_depth <= 1024:
            _fail("runtime.queue_depth", self.queue_depth, "an integer in 1..1024")
        if not 1 <= self.max_in_flight <= 64:
            _fail("runtime.max_in_flight", self.max_in_flight, "an integer in 1..64")
        if self.breaker_failures < 1:
            _fail("runtime.breaker_failures", self.breaker_failures, "an integer >= 1")
        if not 1 <= self.breaker_backoff_ms <= self.breaker_max_backoff_ms:
            _fail("runtime.breaker_backoff_ms", self.breaker_backoff_ms,
                  f"milliseconds in 1..runtime.breaker_max_backoff_ms ({self.breaker_max_backoff_ms})")
        if self.max_frames is not None and self.max_frames < 1:
            _fail("runtime.max_frames", self.max_frames, "an integer >= 1 or no limit")
        if not 1.0 <= self.emulated_slowdown <= 100.0:
            _fail("runtime.emulated_slowdown", self.emulated_slowdown, "a factor in 1..100 (1 = off)")

    def breaker_config(self) -> BreakerConfig:
        return BreakerConfig(failure_threshold=self.breaker_failures, initial_backoff_ms=self.breaker_backoff_ms,
                             max_backoff_ms=self.breaker_max_backoff_ms)


@dataclass(frozen=True, kw_only=True)
class PolicySection:
    """The ``[policy]`` table; the choice's defaults and meaning are in :class:`PolicyConfig`."""

    objective: Objective = PolicyConfig.objective
    slo_ms: Optional[float] = PolicyConfig.slo_ms
    hysteresis_pct: float = PolicyConfig.hysteresis_pct  # a new cut must beat the current one by this much
    min_dwell_ms: int = PolicyConfig.min_dwell_ms  # minimum time between two automatic changes
    pinned_cut: Optional[str] = None
    battery_low_pct: float = PolicyConfig.battery_low_pct  # below this and discharging -> energy objective
    decide_interval_ms: int = 250
    probe_interval_ms: int = 5000  # low-duty bandwidth probes while fully local
    probe_bytes: int = 16384

    def __post_init__(self) -> None:
        if self.slo_ms is not None and self.slo_ms <= 0:
            _fail("policy.slo_ms", self.slo_ms, "milliseconds > 0")
        if self.objective is Objective.SLO and self.slo_ms is None:
            _fail("policy.slo_ms", self.slo_ms, "a latency SLO in milliseconds when policy.objective = 'slo'")
        if not 0 <= self.hysteresis_pct < 100:
            _fail("policy.hysteresis_pct", self.hysteresis_pct, "a percentage in 0..100")
        if self.min_dwell_ms < 0:
            _fail("policy.min_dwell_ms", self.min_dwell_ms, "milliseconds >= 0")
        if not 0 <= self.battery_low_pct <= 100:
            _fail("policy.battery_low_pct", self.battery_low_pct, "a percentage in 0..100")
        if self.decide_interval_ms < 10:
            _fail("policy.decide_interval_ms", self.decide_interval_ms, "milliseconds >= 10")
        if self.probe_interval_ms < 100:
            _fail("policy.probe_interval_ms", self.probe_interval_ms, "milliseconds >= 100")
        if not 0 < self.probe_bytes <= 16 * 1024 * 1024:
            _fail("policy.probe_bytes", self.probe_bytes, "bytes in 1..16777216")

    def policy_config(self) -> PolicyConfig:
        """The pure policy's config; the battery rule lifts 5 points above ``battery_low_pct``."""
        return PolicyConfig(
            objective=self.objective, slo_ms=self.slo_ms, hysteresis_pct=self.hysteresis_pct,
            min_dwell_ms=self.min_dwell_ms, battery_low_pct=self.battery_low_pct,
            battery_resume_pct=max(self.battery_low_pct, min(100.0, self.battery_low_pct + 5)),
        )


@dataclass(frozen=True, kw_only=True)
class BatteryConfig:
    source: str = "auto"
    trace_file: Optional[pathlib.Path] = None  # CSV/JSON trace for "trace"
    sysfs_root: pathlib.Path = pathlib.Path("/sys/class/power_supply")

    def __post_init__(self) -> None:
        if self.source not in BATTERY_SOURCES:
            _fail("battery.source", self.source, f"one of {list(BATTERY_SOURCES)}")
        if self.source == "trace" and self.trace_file is None:
            _fail("battery.trace_file", self.trace_file, "a trace file when battery.source = 'trace'")


@dataclass(frozen=True, kw_only=True)
class ResultsConfig:
    sink: str = "stdout"
    path: Optional[pathlib.Path] = None  # for sink = "file"
    top_k: Optional[int] = None  # None: the manifest's top_k

    def __post_init__(self) -> None:
        if self.sink not in SINK_KINDS:
            _fail("results.sink", self.sink, f"one of {list(SINK_KINDS)}")
        if self.sink == "file" and self.path is None:
            _fail("results.path", self.path, "a file path when results.sink = 'file'")
        if self.top_k is not None and not 1 <= self.top_k <= 1000:
            _fail("results.top_k", self.top_k, "an integer in 1..1000")


@dataclass(frozen=True, kw_only=True)
class MetricsConfig:
    port: Optional[int] = None  # Prometheus /metrics; None disables it
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.port is not None and not 0 <= self.port <= 65535:
            _fail("metrics.port", self.port, "a TCP port in 0..65535 (0 = any free port)")


@dataclass(frozen=True, kw_only=True)
class ControlConfig:
    """The control endpoint (``splitctl``): a unix socket, a TCP address, or neither."""

    enabled: bool = True  # the daemon (CLI) serves it; programmatic EdgeAgent only with serve_control=True
    socket_path: Optional[pathlib.Path] = None  # None = the control module's default path
    advertise: bool = True  # announce the agent over zeroconf (role=agent) for `splitctl discover`
    tcp_address: Optional[str] = None  # host:port; requires a token
    token: Optional[str] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.tcp_address is not None:
            _check_host_port("control.tcp_address", self.tcp_address)
            if not self.token:
                _fail("control.token", self.token, "a token when control.tcp_address is set (TCP control needs auth)")


@dataclass(frozen=True, kw_only=True)
class LinkConfig:
    """Link emulation between the agent and the server (off by default; used by the demo)."""

    enabled: bool = False
    uplink_kbps: Optional[float] = None  # token-bucket rate; None = unshaped
    burst_bytes: Optional[int] = None  # None = 4 ms of the rate (edge_agent.link.DEFAULT_BURST_MS)
    delay_ms: float = 0.0  # one-way added delay
    jitter_ms: float = 0.0
    outages: tuple[tuple[float, float], ...] = ()  # (start_s, duration_s) after agent start
    trace_file: Optional[pathlib.Path] = None  # time-varying uplink trace

    def __post_init__(self) -> None:
        if self.uplink_kbps is not None and self.uplink_kbps <= 0:
            _fail("link.uplink_kbps", self.uplink_kbps, "kbit/s > 0 or unshaped")
        if self.burst_bytes is not None and self.burst_bytes < 1:
            _fail("link.burst_bytes", self.burst_bytes, "bytes >= 1 (or unset: 4 ms of the rate)")
        if self.delay_ms < 0 or self.jitter_ms < 0:
            _fail("link.delay_ms", (self.delay_ms, self.jitter_ms), "delay_ms and jitter_ms >= 0")
        for start, dur in self.outages:
            if start < 0 or dur <= 0:
                _fail("link.outages", self.outages, "pairs [start_s >= 0, duration_s > 0]")


@dataclass(frozen=True, kw_only=True)
class GateConfig:
    """The motion gate (:mod:`edge_agent.gate`). ``mode`` "auto" gates live sources (camera,
    stream, pipe, picamera2: fixed cameras) and not video files or folders; ``mask`` lists
    polygons of (x, y) frame fractions whose pixels are ignored."""

    mode: str = "auto"
    width: int = 160  # pixels across of the grey frame that is compared
    pixel_delta: int = 25  # grey levels a pixel must change by to count
    min_area_fraction: float = 0.002  # changed fraction of the unmasked pixels that admits a frame
    scene_change_fraction: float = 0.5  # above it: a scene cut or lighting change
    max_gated_s: float = 10.0  # admit at least this often (0 = never)
    mask: tuple[tuple[tuple[float, float], ...], ...] = ()
    roi: bool = False  # detectors: run the model on the motion region (edge_agent.roi); a classifier bundle refuses it

    def __post_init__(self) -> None:
        if self.mode not in GATE_MODES:
            _fail("gate.mode", self.mode, f"one of {list(GATE_MODES)}")
        self.motion_gate()  # checks every threshold and polygon

    def motion_gate(self) -> MotionGate:
        try:
            return MotionGate(width=self.width, pixel_delta=self.pixel_delta, min_area_fraction=self.min_area_fraction,
                              scene_change_fraction=self.scene_change_fraction, max_gated_s=self.max_gated_s,
                              mask=self.mask)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc


@dataclass(frozen=True, kw_only=True)
class AgentSection:
    agent_id: str = ""  # "" = hostname
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.log_level.upper() not in LOG_LEVELS:
            _fail("agent.log_level", self.log_level, "DEBUG, INFO, WARNING, ERROR or CRITICAL")


@dataclass(frozen=True, kw_only=True)
class EdgeConfig:
    """The whole validated configuration; pass it down unchanged."""

    bundle: pathlib.Path
    server: ServerConfig = ServerConfig()
    source: SourceConfig = SourceConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    policy: PolicySection = PolicySection()
    battery: BatteryConfig = BatteryConfig()
    results: ResultsConfig = ResultsConfig()
    metrics: MetricsConfig = MetricsConfig()
    control: ControlConfig = ControlConfig()
    link: LinkConfig = LinkConfig()
    gate: GateConfig = GateConfig()
    exits: ExitsConfig = ExitsConfig()
    agent: AgentSection = AgentSection()
    mqtt: MqttConfig = MqttConfig()
    liveview: LiveViewConfig = LiveViewConfig()

    def __post_init__(self) -> None:
        lv = self.liveview
        if lv.enabled and not is_loopback(lv.host) and not self.control.token:
            _fail("control.token", self.control.token,
                  f"a token when the live view is bound to {lv.host!r} (only localhost goes without one)")

    def replace(self, **sections: Any) -> "EdgeConfig":
        """A copy with whole sections changed, e.g. ``replace(runtime=...)`` (validated like any other)."""
        return dataclasses.replace(self, **sections)


# --------------------------------------------------------------------------- loading


def _parse_outages(value: Any, source: str, base_dir: pathlib.Path) -> tuple[tuple[float, float], ...]:
    """``link.outages``: TOML ``[[start_s, duration_s], ...]`` or text ``start:duration,...``."""
    expected = "a list of [start_s, duration_s] pairs, or 'start:duration,...'"
    items: Any = value
    if isinstance(value, str):
        items = [part.strip().partition(":")[::2] for part in value.split(",") if part.strip()]
    try:
        return tuple((float(a), float(b)) for a, b in items)
    except (TypeError, ValueError):
        raise settings.SettingsError(f"{source}: link.outages = {value!r}: expected {expected}") from None


def _parse_mask(value: Any, source: str, base_dir: pathlib.Path) -> tuple[tuple[tuple[float, float], ...], ...]:
    """``gate.mask``: TOML ``[[[x, y], ...], ...]`` or text ``x,y x,y x,y; x,y ...`` (frame fractions)."""
    expected = "polygons of (x, y) frame fractions: [[[x, y], ...], ...] or 'x,y x,y x,y; ...'"
    items: Any = value
    if isinstance(value, str):
        items = [[pt.split(",") for pt in poly.split()] for poly in value.split(";") if poly.strip()]
    try:
        return tuple(tuple((float(x), float(y)) for x, y in poly) for poly in items)
    except (TypeError, ValueError):
        raise settings.SettingsError(f"{source}: gate.mask = {value!r}: expected {expected}") from None


def schema() -> settings.Schema:
    """Every key of the edge agent, as the settings loader reads them."""
    return settings.schema_of(EdgeConfig, env_prefix=ENV_PREFIX, parsers={"link.outages": _parse_outages, "gate.mask": _parse_mask},
                              secrets=("server.token", "control.token", "mqtt.password"))


def known_keys() -> list[str]:
    """Every dotted key, e.g. ``["bundle", "server.address", ...]``."""
    return list(schema().keys)


def env_name(key: str) -> str:
    return schema().env_name(key)


def load_config(
    path: Optional[os.PathLike[str] | str] = None,
    *,
    env: Optional[Mapping[str, str]] = None,
    flags: Optional[Mapping[str, Any]] = None,
) -> EdgeConfig:
    """Merge defaults, the TOML file, the environment and flags; return the validated config.

    ``env`` defaults to ``os.environ``; ``flags`` maps dotted keys to values (strings are
    parsed, None means not given). Relative paths in the TOML file are relative to it.
    """
    try:
        resolved = settings.resolve(schema(), toml_path=path, env=os.environ if env is None else env, flags=flags)
    except settings.SettingsError as exc:
        raise ConfigError(str(exc)) from exc
    return _build(resolved.values)


def build_config(values: Mapping[str, Any], *, base_dir: pathlib.Path = pathlib.Path(".")) -> EdgeConfig:
    """An :class:`EdgeConfig` from dotted keys (typed values or text; relative paths
    resolve against ``base_dir``). Programs that embed the agent use it."""
    s = schema()
    parsed: dict[str, Any] = {}
    try:
        for key, value in values.items():
            if key not in s.keys:
                raise settings.SettingsError(f"value: unknown key {key!r}; expected one of {', '.join(s.keys)}")
            parsed[key] = settings.parse_value(s, key, value, "value", base_dir)
    except settings.SettingsError as exc:
        raise ConfigError(str(exc)) from exc
    return _build(parsed)


def _build(values: Mapping[str, Any]) -> EdgeConfig:
    if values.get("bundle") is None:
        raise ConfigError(f"bundle is required (the bundle directory); set it in edge.toml, {env_name('bundle')} "
                          "or --bundle")
    config: EdgeConfig = settings.build(EdgeConfig, values)
    return config


def validate_paths(cfg: EdgeConfig) -> None:
    """Check that the files the config names exist (the entry point calls this once)."""
    if not (cfg.bundle / "manifest.json").is_file():
        _fail("bundle", str(cfg.bundle), "a bundle directory containing manifest.json")
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(cfg.server, key)
        if path is not None and not path.is_file():
            _fail(f"server.{key}", str(path), "an existing PEM file")
    if cfg.battery.trace_file is not None and not cfg.battery.trace_file.is_file():
        _fail("battery.trace_file", str(cfg.battery.trace_file), "an existing trace file")
    if cfg.source.kind == "folder" and not pathlib.Path(cfg.source.uri).is_dir():
        _fail("source.uri", cfg.source.uri, "an existing image folder")
    if cfg.source.kind == "pipe" and cfg.source.uri != "-" and not pathlib.Path(cfg.source.uri).exists():
        _fail("source.uri", cfg.source.uri, "'-' (stdin) or an existing FIFO/file holding MJPEG")
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(cfg.mqtt, key)
        if path is not None and not path.is_file():
            _fail(f"mqtt.{key}", str(path), "an existing PEM file")
    if cfg.source.kind == "video" and not pathlib.Path(cfg.source.uri).is_file():
        _fail("source.uri", cfg.source.uri, "an existing video file")


def resolved_source_kind(src: SourceConfig) -> str:
    """The source kind with "auto" resolved from the URI."""
    if src.kind != "auto":
        return src.kind
    uri = src.uri.strip()
    if uri.isdigit():
        return "camera"
    if uri == "-" or pathlib.Path(uri).is_fifo():
        return "pipe"
    if uri.split("://", 1)[0].lower() in ("rtsp", "rtsps", "http", "https", "rtmp", "udp", "tcp"):
        return "stream"
    if pathlib.Path(uri).is_dir():
        return "folder"
    return "video"
