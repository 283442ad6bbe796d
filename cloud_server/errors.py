"""Errors of the cloud server, each carrying the status a client sees.

The tree::

    ServerError                    base; ``status`` says what the client sees
    ├── ModelNotFound              NOT_FOUND: unknown model or version (lists the available ones)
    ├── InvalidInput               INVALID_ARGUMENT: a request that does not match the model's signature
    ├── QueueFull                  RESOURCE_EXHAUSTED: the model's bounded queue is full
    │   └── ServerBusy             RESOURCE_EXHAUSTED: the server's admission limit is reached
    ├── DeadlineExceeded           DEADLINE_EXCEEDED: the client's deadline passed before the answer
    ├── ModelUnavailable           UNAVAILABLE: the model is unloaded, or the server is draining
    ├── Unsupported                UNIMPLEMENTED: a Triton feature this server does not serve
    ├── PermissionDenied           PERMISSION_DENIED: a client certificate not on the allowed list
    ├── ModelLoadFailed            INTERNAL: a model file exists but ONNX Runtime cannot load it
    └── InferenceFailed            INTERNAL: ONNX Runtime failed on a validated request

    Start-up errors (the process never serves; `cli` maps them to exit codes, not statuses):

    SettingsError (ValueError)     a ServerSettings value is out of range        -> exit 2
    └── ConfigError                ... named with its source (flag, env, TOML)   -> exit 2
    TLSConfigError (ValueError)    TLS files incomplete, unreadable or not PEM   -> exit 2
    RegistryError (ValueError)     a bundle or repository cannot be served       -> exit 1
    └── ModelConfigRefused         ... a config.pbtxt field we do not honour (named)
    ServerStartError (RuntimeError) the address cannot be bound                  -> exit 1

`Status` is the transport-agnostic vocabulary; :data:`GRPC_STATUS_CODES` is the one table that maps it
to `grpc.StatusCode` (the servicer and the interceptors use :func:`grpc_status_code`). Every message
quotes the bad value and what was expected; values a client chose (model names, ids) are quoted through
:func:`shorten` so a 10 kB name cannot blow up the trailers.
"""

from __future__ import annotations

import enum

import grpc

__all__ = [
    "Status",
    "ServerError",
    "ModelNotFound",
    "InvalidInput",
    "QueueFull",
    "DeadlineExceeded",
    "ModelUnavailable",
    "ModelLoadFailed",
    "InferenceFailed",
    "ServerBusy",
    "Unsupported",
    "PermissionDenied",
    "ModelConfigRefused",
    "shorten",
    "GRPC_STATUS_CODES",
    "grpc_status_code",
    "SettingsError",
    "ConfigError",
    "TLSConfigError",
    "RegistryError",
    "ServerStartError",
]


class Status(enum.Enum):
    """What kind of failure a client sees, independent of the transport."""

    NOT_FOUND = "not_found"
    INVALID_ARGUMENT = "invalid_argument"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    UNAVAILABLE = "unavailable"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    UNIMPLEMENTED = "unimplemented"
    INTERNAL = "internal"


#: The one table from domain status to gRPC status code.
GRPC_STATUS_CODES: dict[Status, grpc.StatusCode] = {
    Status.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Status.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Status.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Status.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    Status.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Status.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Status.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Status.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    Status.INTERNAL: grpc.StatusCode.INTERNAL,
}


class ServerError(Exception):
    """Base of every error the cloud server raises on purpose."""

    status: Status = Status.INTERNAL
    #: True when the client caused it (logged as one line, never with a stack trace).
    client_error: bool = False


class ModelNotFound(ServerError):
    """An unknown model name or version; the message lists what is available."""

    status = Status.NOT_FOUND
    client_error = True


class InvalidInput(ServerError):
    """A request that does not match the model's signature."""

    status = Status.INVALID_ARGUMENT
    client_error = True


class QueueFull(ServerError):
    """The model's bounded request queue is full."""

    status = Status.RESOURCE_EXHAUSTED
    client_error = True


class ServerBusy(QueueFull):
    """The server admits no more requests at once (`max_inflight`); the client should back off or run
    locally. Not an outage: the server is alive and answering."""


class DeadlineExceeded(ServerError):
    """The client's deadline passed before the result was ready."""

    status = Status.DEADLINE_EXCEEDED
    client_error = True


class ModelUnavailable(ServerError):
    """The model is known but not serving (unloaded, or the server is draining)."""

    status = Status.UNAVAILABLE
    client_error = True


class Unsupported(ServerError):
    """A Triton feature this server does not serve (shared memory, sequences, decoupled models, ...)."""

    status = Status.UNIMPLEMENTED
    client_error = True


class PermissionDenied(ServerError):
    """An authenticated client that is not allowed (its certificate names no listed client)."""

    status = Status.PERMISSION_DENIED
    client_error = True


class ModelLoadFailed(ServerError):
    """ONNX Runtime could not load a model file that the registry lists."""

    status = Status.INTERNAL


class InferenceFailed(ServerError):
    """ONNX Runtime failed while running a validated request."""

    status = Status.INTERNAL


def grpc_status_code(error: BaseException) -> grpc.StatusCode:
    """The gRPC status for any exception: a ServerError's own, INTERNAL for anything else."""
    if isinstance(error, ServerError):
        return GRPC_STATUS_CODES[error.status]
    return grpc.StatusCode.INTERNAL


def shorten(value: object, limit: int = 64) -> str:
    """`repr` of a client-chosen value, cut to about `limit` characters with its full length noted."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = len(value) if isinstance(value, (str, bytes)) else len(text)
    return f"{text[:limit]}... ({size} characters)"


# ---------------------------------------------------------------------- start-up errors


class SettingsError(ValueError):
    """A setting has a value outside its accepted range or shape."""


class ConfigError(SettingsError):
    """A configuration value (from a flag, the environment or the TOML file) is invalid; the message
    names the source, the key, the value (tokens hidden) and what was expected."""


class TLSConfigError(ValueError):
    """The TLS files are incomplete, unreadable or not PEM; the message names the file or setting."""


class RegistryError(ValueError):
    """A bundle or repository cannot be served (start-up configuration error)."""


class ModelConfigRefused(RegistryError):
    """A repository model's config asks for something this server does not honour; names the field."""


class ServerStartError(RuntimeError):
    """The server could not bind its address."""
