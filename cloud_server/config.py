"""Load :class:`~cloud_server.settings.ServerSettings` for ``splitinfer serve`` through :mod:`protos.settings`.

Precedence, highest first (one order for every key, the loader's)::

    command-line flags  >  SPLITINFER_SERVE_* environment  >  TOML file  >  defaults

* **TOML file**: ``--config PATH`` (or ``SPLITINFER_SERVE_CONFIG``); flat top-level keys named exactly
  as the settings (``port = 8001``, ``bundles = ["bundles/mobilenet_v2"]``). Relative paths in the file
  are relative to the file's own directory. Values must have their TOML type (``port = "8001"`` is an
  error). See ``deploy/cloud/serve.example.toml``.
* **Environment**: ``SPLITINFER_SERVE_`` + the key upper-cased (``SPLITINFER_SERVE_PORT=9001``). The
  ``SERVE_`` part keeps the server's variables apart from the edge agent's ``SPLITINFER_*`` ones when
  both run in one shell. An empty variable counts as unset; an unknown ``SPLITINFER_SERVE_*`` name is an
  error. Lists: ``bundles`` separated by ``os.pathsep`` (``:``), ``execution_providers`` by commas.
* **Flags**: ``--port 9001`` etc., built by :mod:`cloud_server.cli` from :data:`KEYS`; they arrive here
  as strings (``--bundle`` as a list of strings, ``--discovery/--no-discovery`` as a bool).

Types, parsing and the precedence are :mod:`protos.settings`'; this module adds what is particular to
the server: ``metrics_port`` also accepts ``off`` (no endpoint), ``execution_providers``, ``log_format``
and ``log_level`` are choices, and ``auth_token`` may instead come from ``auth_token_file`` (the file's
first line), which keeps it off the command line and out of ``ps``; giving both in one source is an
error, and a higher source's either form replaces a lower source's. The TOML file and the text sources
(environment, flags) are read with two schemas that differ only in how strictly values are typed.

Every error is a :class:`~cloud_server.errors.ConfigError` whose message names the source, the key, the
bad value (tokens hidden) and what was expected. Nothing is read at import time: only
:func:`resolve_settings` looks at the environment mapping and the disk. Defaults live only in
``ServerSettings``; :func:`default_of` reads them for the ``--help`` text.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from cloud_server.errors import ConfigError, SettingsError
from cloud_server.settings import EXECUTION_PROVIDER_CHOICES, LOG_FORMATS, LOG_LEVELS, ServerSettings
from protos import settings as loader

__all__ = ["ENV_PREFIX", "CONFIG_ENV", "KEYS", "ConfigError", "Key", "default_of", "load_settings",
           "resolve_settings"]

ENV_PREFIX = "SPLITINFER_SERVE_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
#: Not a ServerSettings field: folded into ``auth_token`` by :func:`_fold_token_file`.
TOKEN_FILE = "auth_token_file"


@dataclass(frozen=True)
class Key:
    """How one configuration key is presented on the command line (its type is the settings field's)."""

    name: str
    help: str
    metavar: str | None = None
    show_default: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


#: Every key, in --help order. All are ServerSettings fields except ``auth_token_file``.
KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        Key("bundles", "bundle directory whose cloud side (tails) is served; repeat --bundle for more", "DIR",
            show_default=False),
        Key("triton_repository", "also serve a Triton-layout model repository (<name>/config.pbtxt, "
            "<name>/<version>/model.onnx)", "DIR", show_default=False),
        Key("host", "address to listen on; localhost unless told otherwise", "HOST"),
        Key("port", "gRPC port, 0 = any free port", "PORT"),
        Key("max_message_mb", "gRPC message limit in MiB, both directions", "MB"),
        Key("grpc_workers", "threads that decode requests and encode responses (streams hold none)", "N"),
        Key("max_inflight", "inference requests held at once before RESOURCE_EXHAUSTED", "N"),
        Key("intra_op_threads", "ONNX Runtime intra-op threads per session, 0 = ORT default", "N"),
        Key("inter_op_threads", "ONNX Runtime inter-op threads per session", "N"),
        Key("memory_budget_mb", "loaded sessions beyond this are evicted least-recently-used", "MB"),
        Key("execution_providers", f"comma-separated preference from {','.join(EXECUTION_PROVIDER_CHOICES)}; "
            "auto = TensorRT/CUDA when present, else CPU", "LIST"),
        Key("max_batch_size", "dynamic batching: most rows per execution, 1 = no merging", "N"),
        Key("max_queue_delay_us", "dynamic batching: longest wait for companions in microseconds", "US"),
        Key("max_queue_size", "requests waiting per model before RESOURCE_EXHAUSTED", "N"),
        Key("max_queue_wait_ms", "refuse (RESOURCE_EXHAUSTED) a request whose estimated wait for its batch "
            "is longer, 0 = no bound", "MS"),
        Key("tls_cert_file", "server certificate (PEM); needs --tls-key-file", "FILE", show_default=False),
        Key("tls_key_file", "server private key (PEM); needs --tls-cert-file", "FILE", show_default=False),
        Key("tls_client_ca_file", "require client certificates signed by this CA (mutual TLS)", "FILE",
            show_default=False),
        Key("tls_client_names", "with mutual TLS, serve only these client certificate names (CN or SAN), "
            "comma-separated", "LIST", show_default=False),
        Key("auth_token", "bearer token clients must send (prefer the file or the environment: "
            "flags show up in ps)", "TOKEN", show_default=False),
        Key(TOKEN_FILE, "read the bearer token from this file's first line", "FILE", show_default=False),
        Key("metrics_host", "address of the Prometheus /metrics endpoint", "HOST"),
        Key("metrics_port", "port of /metrics, 0 = any free port, off = no endpoint", "PORT|off"),
        Key("discovery", "advertise over zeroconf as _splitinfer._tcp.local."),
        Key("drain_timeout_s", "on SIGTERM/SIGINT, wait this long for in-flight requests", "SECONDS"),
        Key("log_format", "log lines as text or JSON", "FORMAT"),
        Key("log_level", "least severe level logged", "LEVEL"),
    )
}


def default_of(name: str) -> str:
    """The default of a ServerSettings field as --help shows it (read from the dataclass, never repeated)."""
    value = next(f.default for f in dataclasses.fields(ServerSettings) if f.name == name)
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return "off" if value is None else str(value)


# --------------------------------------------------------------------------- per-key parsers

_OFF = frozenset({"off", "none", "disabled", "false"})
#: What a TOML value of a plain key must already be (bool is not an int here).
_TOML_TYPES: dict[Any, tuple[type, ...]] = {int: (int,), float: (int, float), bool: (bool,), str: (str,)}
_TOML_EXPECTED = {int: "an integer", float: "a finite number", bool: "true or false", str: "a non-empty string"}


def _bad(source: str, key: str, value: Any, expected: str) -> ConfigError:
    shown = "<hidden>" if key == "auth_token" else repr(value)
    return ConfigError(f"{source}: {key} = {shown}: expected {expected}")


def _as_path(key: str, value: Any, source: str, base_dir: pathlib.Path) -> pathlib.Path:
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise _bad(source, key, value, "a path string")
    path = pathlib.Path(os.path.expanduser(str(value).strip()))
    return path if path.is_absolute() else base_dir / path


def _bundles(from_file: bool) -> loader.Parser:
    def parse(value: Any, source: str, base_dir: pathlib.Path) -> tuple[pathlib.Path, ...]:
        if isinstance(value, str):
            items = [value] if from_file else [p for p in value.split(os.pathsep) if p.strip()]
            if not items:
                raise _bad(source, "bundles", value, f"paths separated by {os.pathsep!r}")
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise _bad(source, "bundles", value, "a list of path strings")
        if from_file and not all(isinstance(v, str) for v in items):
            raise _bad(source, "bundles", value, "a list of path strings")
        return tuple(_as_path("bundles", v, source, base_dir) for v in items)

    return parse


def _execution_providers(value: Any, source: str, base_dir: pathlib.Path) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    expected = f"a non-empty list from {', '.join(EXECUTION_PROVIDER_CHOICES)}"
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise _bad(source, "execution_providers", value, expected)
    values = tuple(v.strip().lower() for v in items if v.strip())
    if not values or any(v not in EXECUTION_PROVIDER_CHOICES for v in values):
        raise _bad(source, "execution_providers", value, expected)
    return values


def _client_names(value: Any, source: str, base_dir: pathlib.Path) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    expected = "a list of certificate names (common name or subject alternative name)"
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise _bad(source, "tls_client_names", value, expected)
    return tuple(v.strip() for v in items if v.strip())


def _choice(key: str, choices: tuple[str, ...], normalize: Callable[[str], str]) -> loader.Parser:
    def parse(value: Any, source: str, base_dir: pathlib.Path) -> str:
        if isinstance(value, str) and normalize(value.strip()) in choices:
            return normalize(value.strip())
        raise _bad(source, key, value, f"one of {', '.join(choices)}")

    return parse


def _metrics_port(from_file: bool) -> loader.Parser:
    def parse(value: Any, source: str, base_dir: pathlib.Path) -> int | None:
        if value is False or (isinstance(value, str) and value.strip().lower() in _OFF):
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and not from_file:
            try:
                return int(value.strip(), 10)
            except ValueError:
                pass
        raise _bad(source, "metrics_port", value, "a port number 0..65535 or 'off'")

    return parse


def _typed_scalar(plain: loader.Schema, key: str, hint: Any) -> loader.Parser:
    """A TOML value must already have the key's TOML type; then the loader parses it as usual.
    Strings are stripped and must not be empty."""

    def parse(value: Any, source: str, base_dir: pathlib.Path) -> Any:
        allowed = _TOML_TYPES[hint]
        if not isinstance(value, allowed) or (hint is not bool and isinstance(value, bool)):
            raise _bad(source, key, value, _TOML_EXPECTED[hint])
        return _text(plain, key, hint)(value, source, base_dir)

    return parse


def _text(plain: loader.Schema, key: str, hint: Any) -> loader.Parser:
    def parse(value: Any, source: str, base_dir: pathlib.Path) -> Any:
        if hint is str:
            if not isinstance(value, str) or not value.strip():
                raise _bad(source, key, value, _TOML_EXPECTED[str])
            return value.strip()
        return loader.parse_value(plain, key, value, source, base_dir)

    return parse


def _schema(*, from_file: bool) -> loader.Schema:
    """The serve schema for the TOML file (`from_file`) or for the text sources (environment, flags)."""
    common: dict[str, Any] = dict(env_prefix=ENV_PREFIX, strict_env=True, extra={TOKEN_FILE: Optional[pathlib.Path]},
                                  secrets=("auth_token",))
    plain = loader.schema_of(ServerSettings, **common)
    parsers: dict[str, loader.Parser] = {
        "bundles": _bundles(from_file),
        "execution_providers": _execution_providers,
        "tls_client_names": _client_names,
        "metrics_port": _metrics_port(from_file),
        "log_format": _choice("log_format", LOG_FORMATS, str.lower),
        "log_level": _choice("log_level", LOG_LEVELS, str.upper),
        "auth_token": _text(plain, "auth_token", str),  # "none" is a token here, not None
    }
    for key, hint in plain.keys.items():
        if key not in parsers and hint in _TOML_TYPES:
            parsers[key] = _typed_scalar(plain, key, hint) if from_file else _text(plain, key, hint)
    return loader.schema_of(ServerSettings, parsers=parsers, **common)


# --------------------------------------------------------------------------- loading


def _fold_token_file(values: dict[str, Any], origins: dict[str, str]) -> None:
    """Replace ``auth_token_file`` in one source's layer by ``auth_token`` read from that file."""
    if TOKEN_FILE not in values:
        return
    path, source = values.pop(TOKEN_FILE), origins.pop(TOKEN_FILE)
    if path is None:
        return
    if "auth_token" in values:
        raise ConfigError(
            f"{source} and {origins['auth_token']} both set the bearer token; give auth_token or auth_token_file, "
            "not both"
        )
    try:
        lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{source}: auth_token_file {str(path)!r} cannot be read: {exc.strerror or exc}") from exc
    token = lines[0].strip() if lines else ""
    if not token:
        raise ConfigError(f"{source}: auth_token_file {str(path)!r} is empty; expected the token on its first line")
    values["auth_token"] = token
    origins["auth_token"] = f"{source} ({path})"


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
    try:
        layers = []  # lowest precedence first
        if config_file is not None:
            layers.append(loader.resolve(_schema(from_file=True), toml_path=config_file, fold=_fold_token_file))
        layers.append(loader.resolve(_schema(from_file=False), env=env, flags=dict(flags or {}),
                                     env_skip=(CONFIG_ENV,), fold=_fold_token_file))
    except loader.SettingsError as exc:
        raise ConfigError(str(exc)) from exc
    values = {key: value for layer in layers for key, value in layer.values.items()}
    sources = {key: origin for layer in layers for key, origin in layer.origins.items()}
    _check_each(values, sources)
    _check_tls_pair(values, sources)
    try:
        settings = loader.build(ServerSettings, values)
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
