"""Load :class:`~cloud_server.settings.ServerSettings` for ``splitinfer serve`` from three sources.

Precedence, highest first (one order for every key)::

    command-line flags  >  SPLITINFER_SERVE_* environment  >  TOML file  >  defaults

* **TOML file**: ``--config PATH`` (or ``SPLITINFER_SERVE_CONFIG``); flat top-level keys named exactly
  as the settings (``port = 8001``, ``bundles = ["bundles/mobilenet_v2"]``). Relative paths in the file
  are relative to the file's own directory. See ``deploy/cloud/serve.example.toml``.
* **Environment**: ``SPLITINFER_SERVE_`` + the key upper-cased (``SPLITINFER_SERVE_PORT=9001``). The
  ``SERVE_`` part keeps the server's variables apart from the edge agent's ``SPLITINFER_*`` ones when
  both run in one shell. An empty variable counts as unset. Lists: ``bundles`` separated by ``os.pathsep``
  (``:``), ``execution_providers`` by commas. An unknown ``SPLITINFER_SERVE_*`` name is an error.
* **Flags**: ``--port 9001`` etc., built by :mod:`cloud_server.cli` from :data:`KEYS`; they arrive here
  as strings (``--bundle`` as a list of strings, ``--discovery/--no-discovery`` as a bool).

Text values (environment and flags) are parsed by one parser per kind: integers, numbers, booleans
(``1/0/true/false/yes/no/on/off``), paths, lists. ``metrics_port`` also accepts ``off`` (no endpoint).
``auth_token`` may instead come from ``auth_token_file`` (the file's first line), which keeps it off
the command line and out of ``ps``; giving both in one source is an error, and a higher source's either
form replaces a lower source's.

Every error is a :class:`ConfigError` whose message names the source, the key, the bad value and what
was expected. Nothing is read at import time: only :func:`load_settings` looks at the environment
mapping and the disk.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import pathlib
from dataclasses import dataclass
from typing import Any, Mapping

try:  # Python >= 3.11
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10 (tomli is a cloud-extra dependency there)
    import tomli as tomllib  # type: ignore[no-redef]

from cloud_server.settings import EXECUTION_PROVIDER_CHOICES, LOG_FORMATS, LOG_LEVELS, ServerSettings, SettingsError

__all__ = ["ENV_PREFIX", "CONFIG_ENV", "KEYS", "ConfigError", "Key", "load_settings", "resolve_settings"]

ENV_PREFIX = "SPLITINFER_SERVE_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"


class ConfigError(SettingsError):
    """A configuration value (from a flag, the environment or the TOML file) is invalid."""


@dataclass(frozen=True)
class Key:
    """One configuration key: its value kind, help text and flag metavar."""

    name: str
    kind: str  # str | int | float | bool | path | paths | strs | port_or_off | choice
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


_D = ServerSettings()
#: Every key, in --help order. All are ServerSettings fields except ``auth_token_file``.
KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        Key("bundles", "paths", "bundle directory whose cloud side (tails) is served; repeat --bundle for more",
            "DIR"),
        Key("triton_repository", "path", "also serve a Triton-layout model repository (<name>/config.pbtxt, "
            "<name>/<version>/model.onnx)", "DIR"),
        Key("host", "str", f"address to listen on; localhost unless told otherwise (default {_D.host})", "HOST"),
        Key("port", "int", f"gRPC port, 0 = any free port (default {_D.port})", "PORT"),
        Key("max_message_mb", "int", f"gRPC message limit in MiB, both directions (default {_D.max_message_mb})",
            "MB"),
        Key("grpc_workers", "int", f"threads of the gRPC server (default {_D.grpc_workers})", "N"),
        Key("intra_op_threads", "int", f"ONNX Runtime intra-op threads per session, 0 = ORT default "
            f"(default {_D.intra_op_threads})", "N"),
        Key("inter_op_threads", "int", f"ONNX Runtime inter-op threads per session (default {_D.inter_op_threads})",
            "N"),
        Key("memory_budget_mb", "int", f"loaded sessions beyond this are evicted least-recently-used "
            f"(default {_D.memory_budget_mb})", "MB"),
        Key("execution_providers", "strs", f"comma-separated preference from {','.join(EXECUTION_PROVIDER_CHOICES)}; "
            "auto = TensorRT/CUDA when present, else CPU (default auto)", "LIST", EXECUTION_PROVIDER_CHOICES),
        Key("max_batch_size", "int", f"dynamic batching: most rows per execution, 1 = no merging "
            f"(default {_D.max_batch_size})", "N"),
        Key("max_queue_delay_us", "int", f"dynamic batching: longest wait for companions in microseconds "
            f"(default {_D.max_queue_delay_us})", "US"),
        Key("max_queue_size", "int", f"requests waiting per model before RESOURCE_EXHAUSTED "
            f"(default {_D.max_queue_size})", "N"),
        Key("tls_cert_file", "path", "server certificate (PEM); needs --tls-key-file", "FILE"),
        Key("tls_key_file", "path", "server private key (PEM); needs --tls-cert-file", "FILE"),
        Key("tls_client_ca_file", "path", "require client certificates signed by this CA (mutual TLS)", "FILE"),
        Key("auth_token", "str", "bearer token clients must send (prefer the file or the environment: "
            "flags show up in ps)", "TOKEN"),
        Key("auth_token_file", "path", "read the bearer token from this file's first line", "FILE"),
        Key("metrics_host", "str", f"address of the Prometheus /metrics endpoint (default {_D.metrics_host})",
            "HOST"),
        Key("metrics_port", "port_or_off", f"port of /metrics, 0 = any free port, off = no endpoint "
            f"(default {_D.metrics_port})", "PORT|off"),
        Key("discovery", "bool", "advertise over zeroconf as _splitinfer._tcp.local. (default on)"),
        Key("drain_timeout_s", "float", f"on SIGTERM/SIGINT, wait this long for in-flight requests "
            f"(default {_D.drain_timeout_s})", "SECONDS"),
        Key("log_format", "choice", f"log lines as text or JSON (default {_D.log_format})", "FORMAT", LOG_FORMATS),
        Key("log_level", "choice", f"least severe level logged (default {_D.log_level})", "LEVEL", LOG_LEVELS),
    )
}

_EXPECTED = {
    "str": "a non-empty string",
    "int": "an integer",
    "float": "a finite number",
    "bool": "a boolean (true/false, 1/0, yes/no, on/off)",
    "path": "a path",
    "paths": "a list of paths",
    "strs": "a list of strings",
    "port_or_off": "a port number 0..65535 or 'off'",
    "choice": "one of",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_OFF = {"off", "none", "disabled", "false"}


def _fail(source: str, key: Key, value: object, expected: str | None = None) -> ConfigError:
    want = expected or _EXPECTED[key.kind]
    if key.kind == "choice" and expected is None:
        want = f"one of {', '.join(key.choices)}"
    return ConfigError(f"{source}: {key.name} = {value!r} is not valid; expected {want}")


# --------------------------------------------------------------------------- parsing one value


def _parse_text(key: Key, text: str, source: str) -> Any:
    """A value from an environment variable or a flag (always text)."""
    raw = text.strip()
    kind = key.kind
    if kind == "str":
        if not raw:
            raise _fail(source, key, text)
        return raw
    if kind == "int":
        try:
            return int(raw, 10)
        except ValueError:
            raise _fail(source, key, text) from None
    if kind == "port_or_off":
        if raw.lower() in _OFF:
            return None
        try:
            return int(raw, 10)
        except ValueError:
            raise _fail(source, key, text) from None
    if kind == "float":
        try:
            value = float(raw)
        except ValueError:
            raise _fail(source, key, text) from None
        if not math.isfinite(value):
            raise _fail(source, key, text)
        return value
    if kind == "bool":
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise _fail(source, key, text)
    if kind == "path":
        if not raw:
            raise _fail(source, key, text)
        return pathlib.Path(raw).expanduser()
    if kind == "paths":
        parts = [p for p in raw.split(os.pathsep) if p.strip()]
        if not parts:
            raise _fail(source, key, text, f"paths separated by {os.pathsep!r}")
        return tuple(pathlib.Path(p.strip()).expanduser() for p in parts)
    if kind == "strs":
        return _parse_choices(key, [p for p in raw.split(",")], source, text)
    if kind == "choice":
        return _parse_choice(key, raw, source)
    raise AssertionError(f"unknown key kind {kind!r}")  # pragma: no cover


def _parse_choice(key: Key, raw: str, source: str) -> str:
    value = raw.strip().upper() if key.name == "log_level" else raw.strip().lower()
    if value not in key.choices:
        raise _fail(source, key, raw)
    return value


def _parse_choices(key: Key, items: list[str], source: str, shown: object) -> tuple[str, ...]:
    values = tuple(i.strip().lower() for i in items if i.strip())
    bad = [v for v in values if v not in key.choices]
    if not values or bad:
        raise _fail(source, key, shown, f"a non-empty list from {', '.join(key.choices)}")
    return values


def _parse_toml(key: Key, value: Any, source: str, base_dir: pathlib.Path) -> Any:
    """A value from the TOML file (already typed by TOML; paths are relative to the file)."""
    kind = key.kind

    def as_path(v: Any) -> pathlib.Path:
        if not isinstance(v, str) or not v.strip():
            raise _fail(source, key, value, "a path string" if kind == "path" else "a list of path strings")
        path = pathlib.Path(v).expanduser()
        return path if path.is_absolute() else base_dir / path

    if kind in ("str", "choice"):
        if not isinstance(value, str) or not value.strip():
            raise _fail(source, key, value)
        return _parse_choice(key, value, source) if kind == "choice" else value.strip()
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(source, key, value)
        return value
    if kind == "port_or_off":
        if value is False or (isinstance(value, str) and value.strip().lower() in _OFF):
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(source, key, value)
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _fail(source, key, value)
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise _fail(source, key, value, "true or false")
        return value
    if kind == "path":
        return as_path(value)
    if kind == "paths":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise _fail(source, key, value, "a list of path strings")
        return tuple(as_path(v) for v in items)
    if kind == "strs":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise _fail(source, key, value, f"a list of strings from {', '.join(key.choices)}")
        return _parse_choices(key, items, source, value)
    raise AssertionError(f"unknown key kind {kind!r}")  # pragma: no cover


def _unknown(name: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(name, list(KEYS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{where}: unknown key {name!r}{hint} Valid keys: {', '.join(KEYS)}")


# --------------------------------------------------------------------------- the sources


def _read_toml(path: pathlib.Path) -> dict[str, tuple[Any, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror or exc}") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
    base_dir = path.resolve().parent
    out: dict[str, tuple[Any, str]] = {}
    for name, value in doc.items():
        source = f"{path} key {name!r}"
        if name not in KEYS:
            if isinstance(value, dict):
                raise ConfigError(
                    f"{path}: table [{name}] is not expected; the serve config uses flat top-level keys "
                    f"({', '.join(KEYS)})"
                )
            raise _unknown(name, str(path))
        out[name] = (_parse_toml(KEYS[name], value, source, base_dir), source)
    return out


def _read_env(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    out: dict[str, tuple[Any, str]] = {}
    for var, text in sorted(env.items()):
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
            continue
        name = var[len(ENV_PREFIX):].lower()
        if name not in KEYS:
            raise _unknown(name, f"environment variable {var}")
        if text.strip() == "":
            continue  # an empty variable counts as unset
        source = f"environment {var}"
        out[name] = (_parse_text(KEYS[name], text, source), source)
    return out


def _read_flags(flags: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    out: dict[str, tuple[Any, str]] = {}
    for name, raw in flags.items():
        if raw is None:
            continue  # flag not given
        if name not in KEYS:
            raise _unknown(name, "flags")
        key = KEYS[name]
        source = f"flag {key.flag}"
        if key.kind == "bool" and isinstance(raw, bool):
            value: Any = raw
        elif key.kind == "paths" and isinstance(raw, (list, tuple)):
            if not raw:
                continue
            value = tuple(_parse_text(Key(name, "path", ""), str(r), source) for r in raw)
        else:
            value = _parse_text(key, str(raw), source)
        out[name] = (value, source)
    return out


def _fold_token_file(layer: dict[str, tuple[Any, str]]) -> None:
    """Replace ``auth_token_file`` in one source layer by ``auth_token`` read from that file."""
    if "auth_token_file" not in layer:
        return
    path, source = layer.pop("auth_token_file")
    if "auth_token" in layer:
        raise ConfigError(
            f"{source} and {layer['auth_token'][1]} both set the bearer token; give auth_token or auth_token_file, "
            "not both"
        )
    try:
        lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{source}: auth_token_file {str(path)!r} cannot be read: {exc.strerror or exc}") from exc
    token = lines[0].strip() if lines else ""
    if not token:
        raise ConfigError(f"{source}: auth_token_file {str(path)!r} is empty; expected the token on its first line")
    layer["auth_token"] = (token, f"{source} ({path})")


def resolve_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> tuple[ServerSettings, dict[str, str]]:
    """The settings and, per key that is not a default, where its value came from.

    ``flags`` maps key names to raw flag values (None = not given); ``env`` defaults to an empty mapping
    (the CLI passes ``os.environ``); ``config_file`` overrides ``SPLITINFER_SERVE_CONFIG``.
    """
    env = env if env is not None else {}
    if config_file is None and env.get(CONFIG_ENV, "").strip():
        config_file = env[CONFIG_ENV].strip()
    layers: list[dict[str, tuple[Any, str]]] = []
    if config_file is not None:
        path = pathlib.Path(config_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist; expected a TOML file")
        layers.append(_read_toml(path))
    layers.append(_read_env(env))
    layers.append(_read_flags(flags or {}))
    merged: dict[str, tuple[Any, str]] = {}
    for layer in layers:  # lowest precedence first
        _fold_token_file(layer)
        merged.update(layer)

    values = {name: value for name, (value, _) in merged.items()}
    sources = {name: source for name, (_, source) in merged.items()}
    _check_each(values, sources)
    _check_tls_pair(values, sources)
    try:
        settings = ServerSettings(**values)
    except SettingsError as exc:
        involved = ", ".join(f"{k} from {s}" for k, s in sources.items()) or "defaults only"
        raise ConfigError(f"{exc} ({involved})") from exc
    return settings, sources


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> ServerSettings:
    """:func:`resolve_settings` without the provenance."""
    return resolve_settings(flags, env, config_file)[0]


_CROSS_FIELD = frozenset({"tls_cert_file", "tls_key_file", "tls_client_ca_file"})


def _check_each(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """Validate each value alone through ServerSettings, so the error names its source."""
    for name, value in values.items():
        if name in _CROSS_FIELD:
            continue
        try:
            ServerSettings(**{name: value})
        except SettingsError as exc:
            raise ConfigError(f"{sources[name]}: {name} = {_shown(name, value)} is not valid: {exc}") from exc


def _shown(name: str, value: Any) -> str:
    if name == "auth_token":
        return "<hidden>"
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return repr(str(value) if isinstance(value, pathlib.Path) else value)


def _check_tls_pair(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    cert, key = values.get("tls_cert_file"), values.get("tls_key_file")
    if cert is not None and key is None:
        raise ConfigError(
            f"{sources['tls_cert_file']}: tls_cert_file = {str(cert)!r} is set but tls_key_file is missing; "
            "TLS needs both the certificate and its private key"
        )
    if key is not None and cert is None:
        raise ConfigError(
            f"{sources['tls_key_file']}: tls_key_file = {str(key)!r} is set but tls_cert_file is missing; "
            "TLS needs both the certificate and its private key"
        )
    ca = values.get("tls_client_ca_file")
    if ca is not None and cert is None:
        raise ConfigError(
            f"{sources['tls_client_ca_file']}: tls_client_ca_file = {str(ca)!r} needs tls_cert_file and "
            "tls_key_file; mutual TLS also needs the server's own certificate"
        )


def settings_fields() -> set[str]:
    """Names of the ServerSettings fields (KEYS minus auth_token_file must equal this)."""
    return {f.name for f in dataclasses.fields(ServerSettings)}

