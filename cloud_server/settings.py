"""Typed, validated settings of the cloud server.

`ServerSettings` is a frozen value built once at the entry point (`cloud_server.config` merges the TOML
file, `SPLITINFER_SERVE_*` environment variables and CLI flags through `protos.settings`) and then passed
down unchanged. Its field defaults are the only definition of each default. Every field is keyword-only
and checked in `__post_init__`; a bad value raises `errors.SettingsError` (a `ValueError`) whose message
quotes the bad value and what was expected.

Nothing here reads the environment or the disk except `validate_paths()`, which the entry point may call
to check that the files named exist.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from cloud_server.errors import SettingsError

__all__ = ["ServerSettings", "SettingsError", "EXECUTION_PROVIDER_CHOICES", "LOG_FORMATS", "LOG_LEVELS"]

#: Accepted values for `execution_providers` entries. 'auto' = CUDA/TensorRT when present, else CPU.
EXECUTION_PROVIDER_CHOICES = ("auto", "cpu", "cuda", "tensorrt")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _check_int(name: str, value: object, *, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"{name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise SettingsError(f"{name} must be >= {minimum}{upper}, got {value!r}")


def _check_optional_path(name: str, value: object) -> None:
    if value is not None and not isinstance(value, Path):
        raise SettingsError(f"{name} must be a pathlib.Path or None, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Everything the cloud server needs to start. Units are in the names.

    Fields:
        host, port: where the gRPC server listens (localhost unless told otherwise; port 0 = ephemeral).
        bundles: bundle directories whose CLOUD side (tails) is served; one model per (bundle, cut).
        triton_repository: optional Triton-layout model repository (`<name>/config.pbtxt`,
            `<name>/<version>/model.onnx`) served alongside the bundles.
        max_message_mb: gRPC send and receive message limit, both directions.
        intra_op_threads, inter_op_threads: ONNX Runtime thread pools per session.
        memory_budget_mb: budget for loaded sessions; least recently used ones are evicted beyond it.
        execution_providers: ordered preference; ('auto',) = TensorRT/CUDA when present, else CPU.
        max_batch_size: dynamic batching upper bound in rows (1 disables merging).
        max_queue_delay_us: how long the first queued request may wait for companions.
        max_queue_size: requests waiting per model before RESOURCE_EXHAUSTED.
        max_queue_wait_ms: a request that would wait longer than this for its batch (estimated from the
            batches ahead and the measured batch time) is refused with RESOURCE_EXHAUSTED; 0 = no bound.
        max_inflight: inference requests the server holds at once (decoding, queued, running) before it
            answers RESOURCE_EXHAUSTED; open streams and idle connections do not count.
        grpc_workers: threads that decode requests and encode responses (open streams and requests waiting
            for their batch hold none).
        tls_cert_file, tls_key_file: server certificate and key (PEM); both or neither.
        tls_client_ca_file: CA that client certificates must chain to (mutual TLS); needs cert+key.
        tls_client_names: with mutual TLS, only certificates whose common name or a subject alternative
            name is listed are served (PERMISSION_DENIED otherwise); empty = any the CA signed.
        auth_token: optional bearer token clients must send (checked in constant time by the interceptor).
        metrics_host, metrics_port: Prometheus /metrics endpoint; metrics_port None disables it.
        discovery: advertise over zeroconf as `_splitinfer._tcp.local.`.
        drain_timeout_s: how long SIGTERM waits for in-flight requests.
        log_format: 'text' or 'json'; log_level: standard logging level name.
    """

    host: str = "127.0.0.1"
    port: int = 8001
    bundles: tuple[Path, ...] = ()
    triton_repository: Path | None = None
    max_message_mb: int = 128
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    memory_budget_mb: int = 2048
    execution_providers: tuple[str, ...] = ("auto",)
    max_batch_size: int = 8
    max_queue_delay_us: int = 2000
    max_queue_size: int = 64
    max_queue_wait_ms: int = 500
    max_inflight: int = 128
    grpc_workers: int = 16
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    tls_client_names: tuple[str, ...] = ()
    auth_token: str | None = field(default=None, repr=False)
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 8002
    discovery: bool = True
    drain_timeout_s: float = 10.0
    log_format: str = "text"
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise SettingsError(f"host must be a non-empty string, got {self.host!r}")
        _check_int("port", self.port, minimum=0, maximum=65535)
        if not isinstance(self.bundles, tuple) or not all(isinstance(p, Path) for p in self.bundles):
            raise SettingsError(f"bundles must be a tuple of pathlib.Path, got {self.bundles!r}")
        _check_optional_path("triton_repository", self.triton_repository)
        _check_int("max_message_mb", self.max_message_mb, minimum=1, maximum=2047)
        _check_int("intra_op_threads", self.intra_op_threads, minimum=0)
        _check_int("inter_op_threads", self.inter_op_threads, minimum=0)
        _check_int("memory_budget_mb", self.memory_budget_mb, minimum=1)
        if (
            not isinstance(self.execution_providers, tuple)
            or not self.execution_providers
            or any(p not in EXECUTION_PROVIDER_CHOICES for p in self.execution_providers)
        ):
            raise SettingsError(
                f"execution_providers must be a non-empty tuple of {EXECUTION_PROVIDER_CHOICES}, "
                f"got {self.execution_providers!r}"
            )
        _check_int("max_batch_size", self.max_batch_size, minimum=1)
        _check_int("max_queue_delay_us", self.max_queue_delay_us, minimum=0)
        _check_int("max_queue_size", self.max_queue_size, minimum=1)
        _check_int("max_queue_wait_ms", self.max_queue_wait_ms, minimum=0)
        _check_int("max_inflight", self.max_inflight, minimum=1)
        _check_int("grpc_workers", self.grpc_workers, minimum=1)
        for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            _check_optional_path(name, getattr(self, name))
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise SettingsError(
                "tls_cert_file and tls_key_file must be given together, got "
                f"tls_cert_file={self.tls_cert_file!r}, tls_key_file={self.tls_key_file!r}"
            )
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise SettingsError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        if not isinstance(self.tls_client_names, tuple) or not all(
            isinstance(n, str) and n for n in self.tls_client_names
        ):
            raise SettingsError(f"tls_client_names must be a tuple of non-empty strings, got {self.tls_client_names!r}")
        if self.tls_client_names and self.tls_client_ca_file is None:
            raise SettingsError(
                f"tls_client_names {list(self.tls_client_names)} needs tls_client_ca_file (mutual TLS) to be set"
            )
        if self.auth_token is not None and (not isinstance(self.auth_token, str) or not self.auth_token):
            raise SettingsError("auth_token must be a non-empty string or None")
        if not isinstance(self.metrics_host, str) or not self.metrics_host:
            raise SettingsError(f"metrics_host must be a non-empty string, got {self.metrics_host!r}")
        if self.metrics_port is not None:
            _check_int("metrics_port", self.metrics_port, minimum=0, maximum=65535)
        if not isinstance(self.discovery, bool):
            raise SettingsError(f"discovery must be a bool, got {self.discovery!r}")
        if (
            isinstance(self.drain_timeout_s, bool)
            or not isinstance(self.drain_timeout_s, (int, float))
            or self.drain_timeout_s < 0
        ):
            raise SettingsError(f"drain_timeout_s must be a number >= 0, got {self.drain_timeout_s!r}")
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(f"log_format must be one of {LOG_FORMATS}, got {self.log_format!r}")
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"log_level must be one of {LOG_LEVELS}, got {self.log_level!r}")

    @property
    def max_message_bytes(self) -> int:
        """The gRPC message limit in bytes (both directions)."""
        return self.max_message_mb * 1024 * 1024

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def mtls_enabled(self) -> bool:
        return self.tls_client_ca_file is not None

    def replace(self, **changes: object) -> ServerSettings:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def validate_paths(self) -> None:
        """Raise SettingsError if a named bundle, repository or TLS file does not exist."""
        for bundle in self.bundles:
            if not bundle.is_dir():
                raise SettingsError(f"bundle directory {str(bundle)!r} does not exist")
        if self.triton_repository is not None and not self.triton_repository.is_dir():
            raise SettingsError(f"triton_repository {str(self.triton_repository)!r} is not a directory")
        for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise SettingsError(f"{name} {str(path)!r} does not exist")
