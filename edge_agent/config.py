"""Typed, frozen configuration of the edge agent, validated once at the entry point.

Sources and precedence (highest first)::

    command-line flags  >  SPLITINFER_* environment  >  edge.toml  >  defaults

Every setting has a dotted key ``section.name`` (``server.address``, ``policy.slo_ms``).
The environment variable for a key is ``SPLITINFER_`` + the key upper-cased with dots
turned into underscores (``SPLITINFER_SERVER_ADDRESS``, ``SPLITINFER_POLICY_SLO_MS``);
flags arrive as a ``{dotted key: value}`` mapping built by :mod:`edge_agent.cli`.
Environment and flag strings are parsed as the key's type. A bad value raises
:class:`~edge_agent.errors.ConfigError` naming the key, the value and what was expected.

Nothing here runs at import time; only :func:`load_config` reads the file and
:func:`validate_paths` looks at the disk.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from edge_agent.errors import ConfigError

try:  # Python >= 3.11
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10 (Raspberry Pi OS bullseye)
    import tomli as tomllib  # type: ignore[no-redef]
from edge_agent.types import Objective

ENV_PREFIX = "SPLITINFER_"

SOURCE_KINDS = ("auto", "camera", "stream", "video", "folder")
SINK_KINDS = ("stdout", "file", "none")
BATTERY_SOURCES = ("auto", "none", "psutil", "sysfs", "trace")
PROVIDERS = ("auto", "cpu", "xnnpack")
CODECS = ("auto", "none", "zlib")


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
    compression: str = "none"  # "zlib" only for our server (stock Triton does not decompress)


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """Where frames come from. ``kind`` "auto" infers it from ``uri``: an integer is a
    camera index, ``rtsp://``/``http(s)://`` a stream, a directory a folder, else a video."""

    kind: str = "auto"
    uri: str = "0"
    fps_cap: Optional[float] = None
    width_px: Optional[int] = None  # resize captured frames; None keeps the source size
    height_px: Optional[int] = None
    loop: bool = False  # replay a video/folder forever (demo)
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    threads: int = 2
    execution_provider: str = "auto"  # XNNPACK when the installed build has it, else CPU
    deadline_ms: float = 500.0  # per-offload budget; a miss completes on the device
    prewarm_neighbours: int = 1  # heads kept ready on each side of the active cut (by order)
    local_tails: bool = False  # load tails found beside the bundle for cheaper fallback
    cpu_mem_arena: bool = False  # ONNX Runtime memory arena: slightly faster, ~25 MB more RSS
    queue_depth: int = 2  # bounded queue between each pipeline stage
    max_in_flight: int = 2  # concurrent offloads (network stage workers)
    max_frames: Optional[int] = None  # stop after this many captured frames
    breaker_failures: int = 3  # consecutive offload failures that open the circuit
    breaker_backoff_ms: int = 500  # first wait before a health probe; doubles per failed probe
    breaker_max_backoff_ms: int = 2_000  # a probe is one tiny ServerReady call: cheap enough to bound recovery at ~2 s
    # > 1 emulates a slower device: every on-device model run is padded with a sleep to
    # this many times its duration (4 ~ a Pi 4 core vs a current x86 core). Demos only.
    emulated_slowdown: float = 1.0


@dataclass(frozen=True, kw_only=True)
class PolicySection:
    objective: Objective = Objective.LATENCY
    slo_ms: Optional[float] = None
    hysteresis_pct: float = 15.0  # a new cut must beat the current one by this much
    min_dwell_ms: int = 3000  # minimum time between two automatic changes
    pinned_cut: Optional[str] = None
    battery_low_pct: float = 20.0  # below this and discharging -> energy objective
    decide_interval_ms: int = 250
    probe_interval_ms: int = 5000  # low-duty bandwidth probes while fully local
    probe_bytes: int = 16384


@dataclass(frozen=True, kw_only=True)
class BatteryConfig:
    source: str = "auto"
    trace_file: Optional[pathlib.Path] = None  # CSV/JSON trace for "trace"
    sysfs_root: pathlib.Path = pathlib.Path("/sys/class/power_supply")


@dataclass(frozen=True, kw_only=True)
class ResultsConfig:
    sink: str = "stdout"
    path: Optional[pathlib.Path] = None  # for sink = "file"
    top_k: Optional[int] = None  # None: the manifest's top_k


@dataclass(frozen=True, kw_only=True)
class MetricsConfig:
    port: Optional[int] = None  # Prometheus /metrics; None disables it
    host: str = "127.0.0.1"


@dataclass(frozen=True, kw_only=True)
class ControlConfig:
    """The control endpoint (``splitctl``): a unix socket, a TCP address, or neither."""

    enabled: bool = True  # the daemon (CLI) serves it; programmatic EdgeAgent only with serve_control=True
    socket_path: Optional[pathlib.Path] = None  # None = the control module's default path
    advertise: bool = True  # announce the agent over zeroconf (role=agent) for `splitctl discover`
    tcp_address: Optional[str] = None  # host:port; requires a token
    token: Optional[str] = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True)
class LinkConfig:
    """Link emulation between the agent and the server (off by default; used by the demo)."""

    enabled: bool = False
    uplink_kbps: Optional[float] = None  # token-bucket rate; None = unshaped
    burst_bytes: int = 65536
    delay_ms: float = 0.0  # one-way added delay
    jitter_ms: float = 0.0
    outages: tuple[tuple[float, float], ...] = ()  # (start_s, duration_s) after agent start
    trace_file: Optional[pathlib.Path] = None  # time-varying uplink trace


@dataclass(frozen=True, kw_only=True)
class AgentSection:
    agent_id: str = ""  # "" = hostname
    log_level: str = "INFO"


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
    agent: AgentSection = AgentSection()

    def replace(self, **sections: Any) -> "EdgeConfig":
        """A copy with whole sections or fields changed, e.g. ``replace(runtime=...)``."""
        cfg = dataclasses.replace(self, **sections)
        validate_config(cfg)
        return cfg


SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "source": SourceConfig,
    "runtime": RuntimeConfig,
    "policy": PolicySection,
    "battery": BatteryConfig,
    "results": ResultsConfig,
    "metrics": MetricsConfig,
    "control": ControlConfig,
    "link": LinkConfig,
    "agent": AgentSection,
}


def known_keys() -> list[str]:
    """Every dotted key, e.g. ``["bundle", "server.address", ...]``."""
    keys = ["bundle"]
    for section, cls in SECTIONS.items():
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper().replace(".", "_")


# --------------------------------------------------------------------------- loading


def load_config(
    path: Optional[os.PathLike[str] | str] = None,
    *,
    env: Optional[Mapping[str, str]] = None,
    flags: Optional[Mapping[str, Any]] = None,
) -> EdgeConfig:
    """Merge defaults, the TOML file, the environment and flags; validate; return the config.

    ``env`` defaults to ``os.environ``; ``flags`` maps dotted keys to values (strings are parsed).
    """
    env = os.environ if env is None else env
    merged: dict[str, tuple[Any, str]] = {}  # key -> (value, where it came from)
    base_dir = pathlib.Path(".")
    if path is not None:
        toml_path = pathlib.Path(path)
        try:
            data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {str(toml_path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{toml_path}: not valid TOML: {exc}") from exc
        base_dir = toml_path.resolve().parent
        for key, value in _flatten(data, str(toml_path)).items():
            merged[key] = (value, str(toml_path))
    keys = known_keys()
    for key in keys:
        name = env_name(key)
        if name in env:
            merged[key] = (env[name], name)
    for key, value in (flags or {}).items():
        if value is None:
            continue
        if key not in keys:
            raise ConfigError(f"flag {key!r} is not a setting; expected one of {', '.join(keys)}")
        merged[key] = (value, "flag")
    return build_config({k: v for k, (v, _) in merged.items()}, origins={k: o for k, (_, o) in merged.items()}, base_dir=base_dir)


def _flatten(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key == "bundle":
            flat["bundle"] = value
        elif key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [{key}] must be a table, got {value!r}")
            names = {f.name for f in dataclasses.fields(SECTIONS[key])}
            for name, inner in value.items():
                if name not in names:
                    raise ConfigError(
                        f"{source}: unknown key {key}.{name!s}; expected one of {', '.join(sorted(names))}"
                    )
                flat[f"{key}.{name}"] = inner
        else:
            raise ConfigError(
                f"{source}: unknown key {key!r}; expected 'bundle' or a table among {', '.join(SECTIONS)}"
            )
    return flat


def build_config(
    values: Mapping[str, Any],
    *,
    origins: Optional[Mapping[str, str]] = None,
    base_dir: pathlib.Path = pathlib.Path("."),
) -> EdgeConfig:
    """Build an :class:`EdgeConfig` from dotted keys; relative paths resolve against ``base_dir``."""
    origins = origins or {}
    if "bundle" not in values or values["bundle"] in (None, ""):
        raise ConfigError(f"bundle is required (the bundle directory); set it in edge.toml, {env_name('bundle')} or --bundle")
    bundle = _coerce("bundle", values["bundle"], pathlib.Path, origins, base_dir)
    sections: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        kwargs = {}
        hints = _field_types(cls)
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            if key in values:
                kwargs[f.name] = _coerce(key, values[key], hints[f.name], origins, base_dir)
        sections[section] = cls(**kwargs)
    cfg = EdgeConfig(bundle=bundle, **sections)
    validate_config(cfg)
    return cfg


def _field_types(cls: type) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(cls)


def _where(key: str, origins: Mapping[str, str]) -> str:
    origin = origins.get(key)
    return f" (from {origin})" if origin else ""


def _coerce(key: str, value: Any, hint: Any, origins: Mapping[str, str], base_dir: pathlib.Path) -> Any:
    """Turn a TOML/env/flag value into the field's type or raise ConfigError naming the key."""
    import typing

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{key} = {value!r}{_where(key, origins)}: expected {expected}")

    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        inner = [a for a in args if a is not type(None)]
        hint = inner[0]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            return None
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise bad("true or false")
    if hint is int:
        if isinstance(value, bool):
            raise bad("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise bad("an integer")
    if hint is float:
        if isinstance(value, bool):
            raise bad("a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise bad("a number")
    if hint is str:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
        raise bad("a string")
    if hint is pathlib.Path:
        if not isinstance(value, (str, os.PathLike)) or str(value) == "":
            raise bad("a path")
        path = pathlib.Path(os.path.expanduser(str(value)))
        return path if path.is_absolute() else (base_dir / path)
    if hint is Objective:
        if isinstance(value, Objective):
            return value
        try:
            return Objective(str(value).strip().lower())
        except ValueError:
            raise bad(f"one of {[o.value for o in Objective]}") from None
    if typing.get_origin(hint) is tuple:  # link.outages: [[start_s, duration_s], ...]
        items = value
        if isinstance(value, str):
            items = []
            for part in filter(None, (p.strip() for p in value.split(","))):
                start, _, dur = part.partition(":")
                try:
                    items.append((float(start), float(dur)))
                except ValueError:
                    raise bad("a list of [start_s, duration_s] pairs, or 'start:duration,...'") from None
        try:
            pairs = tuple((float(a), float(b)) for a, b in items)
        except (TypeError, ValueError):
            raise bad("a list of [start_s, duration_s] pairs") from None
        return pairs
    raise bad(str(hint))  # pragma: no cover - every field type is handled above


# --------------------------------------------------------------------------- validation


def _fail(key: str, value: Any, expected: str) -> None:
    raise ConfigError(f"{key} = {value!r}: expected {expected}")


def validate_config(cfg: EdgeConfig) -> None:
    """Range and consistency checks; raise ConfigError naming the key, value and expectation."""
    s = cfg.server
    if s.address is not None and (":" not in s.address or not s.address.rsplit(":", 1)[1].isdigit()):
        _fail("server.address", s.address, "host:port, e.g. 'cloud.example.com:8001'")
    if s.discovery_timeout_s <= 0:
        _fail("server.discovery_timeout_s", s.discovery_timeout_s, "a number > 0")
    if (s.cert_file is None) != (s.key_file is None):
        _fail("server.cert_file", s.cert_file, "server.cert_file and server.key_file given together (mutual TLS)")
    if (s.cert_file is not None or s.ca_file is not None) and not s.tls:
        _fail("server.tls", s.tls, "true when server.ca_file/cert_file are set")
    if s.token is not None and s.token == "":
        _fail("server.token", s.token, "a non-empty token or no token")
    if not 1 <= s.max_message_mb <= 2047:
        _fail("server.max_message_mb", s.max_message_mb, "an integer in 1..2047")
    if s.compression not in CODECS:
        _fail("server.compression", s.compression, f"one of {list(CODECS)}")
    src = cfg.source
    if src.kind not in SOURCE_KINDS:
        _fail("source.kind", src.kind, f"one of {list(SOURCE_KINDS)}")
    if not src.uri:
        _fail("source.uri", src.uri, "a camera index, rtsp/http URL, video file or image folder")
    if src.kind == "camera" and not src.uri.isdigit():
        _fail("source.uri", src.uri, "a camera index (0, 1, ...) for source.kind = 'camera'")
    if src.fps_cap is not None and src.fps_cap <= 0:
        _fail("source.fps_cap", src.fps_cap, "a number > 0 or no cap")
    for key in ("width_px", "height_px"):
        v = getattr(src, key)
        if v is not None and not 8 <= v <= 8192:
            _fail(f"source.{key}", v, "pixels in 8..8192")
    if (src.width_px is None) != (src.height_px is None):
        _fail("source.width_px", src.width_px, "source.width_px and source.height_px given together")
    if not 0 < src.reconnect_initial_s <= src.reconnect_max_s:
        _fail("source.reconnect_initial_s", src.reconnect_initial_s, f"0 < value <= source.reconnect_max_s ({src.reconnect_max_s})")
    rt = cfg.runtime
    if not 1 <= rt.threads <= 64:
        _fail("runtime.threads", rt.threads, "an integer in 1..64")
    if rt.execution_provider not in PROVIDERS:
        _fail("runtime.execution_provider", rt.execution_provider, f"one of {list(PROVIDERS)}")
    if not 1 <= rt.deadline_ms <= 600_000:
        _fail("runtime.deadline_ms", rt.deadline_ms, "milliseconds in 1..600000")
    if not 0 <= rt.prewarm_neighbours <= 16:
        _fail("runtime.prewarm_neighbours", rt.prewarm_neighbours, "an integer in 0..16")
    if not 1 <= rt.queue_depth <= 1024:
        _fail("runtime.queue_depth", rt.queue_depth, "an integer in 1..1024")
    if not 1 <= rt.max_in_flight <= 64:
        _fail("runtime.max_in_flight", rt.max_in_flight, "an integer in 1..64")
    if rt.breaker_failures < 1:
        _fail("runtime.breaker_failures", rt.breaker_failures, "an integer >= 1")
    if not 1 <= rt.breaker_backoff_ms <= rt.breaker_max_backoff_ms:
        _fail("runtime.breaker_backoff_ms", rt.breaker_backoff_ms,
              f"milliseconds in 1..runtime.breaker_max_backoff_ms ({rt.breaker_max_backoff_ms})")
    if rt.max_frames is not None and rt.max_frames < 1:
        _fail("runtime.max_frames", rt.max_frames, "an integer >= 1 or no limit")
    if not 1.0 <= rt.emulated_slowdown <= 100.0:
        _fail("runtime.emulated_slowdown", rt.emulated_slowdown, "a factor in 1..100 (1 = off)")
    p = cfg.policy
    if p.slo_ms is not None and p.slo_ms <= 0:
        _fail("policy.slo_ms", p.slo_ms, "milliseconds > 0")
    if p.objective is Objective.SLO and p.slo_ms is None:
        _fail("policy.slo_ms", p.slo_ms, "a latency SLO in milliseconds when policy.objective = 'slo'")
    if not 0 <= p.hysteresis_pct < 100:
        _fail("policy.hysteresis_pct", p.hysteresis_pct, "a percentage in 0..100")
    if p.min_dwell_ms < 0:
        _fail("policy.min_dwell_ms", p.min_dwell_ms, "milliseconds >= 0")
    if not 0 <= p.battery_low_pct <= 100:
        _fail("policy.battery_low_pct", p.battery_low_pct, "a percentage in 0..100")
    if p.decide_interval_ms < 10:
        _fail("policy.decide_interval_ms", p.decide_interval_ms, "milliseconds >= 10")
    if p.probe_interval_ms < 100:
        _fail("policy.probe_interval_ms", p.probe_interval_ms, "milliseconds >= 100")
    if not 0 < p.probe_bytes <= 16 * 1024 * 1024:
        _fail("policy.probe_bytes", p.probe_bytes, "bytes in 1..16777216")
    b = cfg.battery
    if b.source not in BATTERY_SOURCES:
        _fail("battery.source", b.source, f"one of {list(BATTERY_SOURCES)}")
    if b.source == "trace" and b.trace_file is None:
        _fail("battery.trace_file", b.trace_file, "a trace file when battery.source = 'trace'")
    r = cfg.results
    if r.sink not in SINK_KINDS:
        _fail("results.sink", r.sink, f"one of {list(SINK_KINDS)}")
    if r.sink == "file" and r.path is None:
        _fail("results.path", r.path, "a file path when results.sink = 'file'")
    if r.top_k is not None and not 1 <= r.top_k <= 1000:
        _fail("results.top_k", r.top_k, "an integer in 1..1000")
    m = cfg.metrics
    if m.port is not None and not 0 <= m.port <= 65535:
        _fail("metrics.port", m.port, "a TCP port in 0..65535 (0 = any free port)")
    c = cfg.control
    if c.tcp_address is not None:
        if ":" not in c.tcp_address or not c.tcp_address.rsplit(":", 1)[1].isdigit():
            _fail("control.tcp_address", c.tcp_address, "host:port")
        if not c.token:
            _fail("control.token", c.token, "a token when control.tcp_address is set (TCP control needs auth)")
    lk = cfg.link
    if lk.uplink_kbps is not None and lk.uplink_kbps <= 0:
        _fail("link.uplink_kbps", lk.uplink_kbps, "kbit/s > 0 or unshaped")
    if lk.burst_bytes < 1:
        _fail("link.burst_bytes", lk.burst_bytes, "bytes >= 1")
    if lk.delay_ms < 0 or lk.jitter_ms < 0:
        _fail("link.delay_ms", (lk.delay_ms, lk.jitter_ms), "delay_ms and jitter_ms >= 0")
    for start, dur in lk.outages:
        if start < 0 or dur <= 0:
            _fail("link.outages", lk.outages, "pairs [start_s >= 0, duration_s > 0]")
    if cfg.agent.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        _fail("agent.log_level", cfg.agent.log_level, "DEBUG, INFO, WARNING, ERROR or CRITICAL")


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
    if cfg.source.kind == "video" and not pathlib.Path(cfg.source.uri).is_file():
        _fail("source.uri", cfg.source.uri, "an existing video file")


def resolved_source_kind(src: SourceConfig) -> str:
    """The source kind with "auto" resolved from the URI."""
    if src.kind != "auto":
        return src.kind
    uri = src.uri.strip()
    if uri.isdigit():
        return "camera"
    if uri.split("://", 1)[0].lower() in ("rtsp", "rtsps", "http", "https", "rtmp", "udp", "tcp"):
        return "stream"
    if pathlib.Path(uri).is_dir():
        return "folder"
    return "video"
