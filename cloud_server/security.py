"""Transport security of the cloud server: TLS / mutual TLS credentials and a bearer-token check.

Two independent layers, both optional:

* **TLS** (:func:`load_server_credentials`): the server certificate and key are PEM files. When a client
  CA file is given too, the server asks for and *requires* a client certificate that chains to that CA
  (mutual TLS); a client without one fails the handshake (the client sees ``UNAVAILABLE``, the server
  never sees a request).
* **Bearer token** (:class:`TokenAuthInterceptor`): every call must carry the metadata
  ``authorization: Bearer <token>``. The comparison uses :func:`hmac.compare_digest` on bytes, so its time
  does not depend on how many leading characters are right. A missing header, a header that is not
  ``Bearer ...``, or a wrong token aborts the call with ``UNAUTHENTICATED`` before the servicer runs.
  A token without TLS travels in clear text; the CLI warns when it listens beyond loopback without TLS.

Policy for the auxiliary services when a token is set:

* ``grpc.health.v1.Health`` (``Check`` and ``Watch``) is **exempt**: load balancers, kubelets and
  ``grpc_health_probe`` probe without application credentials, and health reveals only SERVING /
  NOT_SERVING per service name, no model data.
* Server reflection (``grpc.reflection.v1alpha`` and ``v1``) **requires the token**: it lists the
  services and their message types, which is not needed by clients that already know the protocol.
* Everything else (the whole ``inference.GRPCInferenceService``) requires the token.

Mutual TLS accepts any certificate the CA signed unless ``tls_client_names`` lists the names allowed
(:class:`ClientNameInterceptor`: common name or subject alternative name, else PERMISSION_DENIED).

The first token rejection is logged as one WARNING line, later ones at DEBUG, so a scanner cannot
flood the log; the token itself never appears in a log line or a status message.
"""
from __future__ import annotations

import hmac
import logging
import pathlib
from typing import Any, Awaitable, Callable, Iterable, Mapping

import grpc

from cloud_server.aio_handlers import refusing_handler, wrap_handler
from cloud_server.errors import TLSConfigError

__all__ = [
    "HEALTH_SERVICE_PREFIX",
    "REFLECTION_SERVICE_PREFIXES",
    "TLSConfigError",
    "TokenAuthInterceptor",
    "ClientNameInterceptor",
    "peer_names",
    "load_server_credentials",
    "bearer_metadata",
]

logger = logging.getLogger(__name__)

HEALTH_SERVICE_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_SERVICE_PREFIXES = (
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
_BEARER = "bearer "


# --------------------------------------------------------------------------- TLS


def _read_pem(setting: str, path: pathlib.Path, marker: bytes) -> bytes:
    try:
        data = pathlib.Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"{setting} {str(path)!r} cannot be read: {exc.strerror or exc}") from exc
    if marker not in data:
        raise TLSConfigError(
            f"{setting} {str(path)!r} is not a PEM file containing {marker.decode()}...; "
            "expected PEM text (-----BEGIN ...-----)"
        )
    return data


def load_server_credentials(
    cert_file: pathlib.Path | None,
    key_file: pathlib.Path | None,
    client_ca_file: pathlib.Path | None = None,
) -> grpc.ServerCredentials | None:
    """Server credentials from PEM files, or None when TLS is off (neither cert nor key given).

    ``client_ca_file`` turns on mutual TLS: client certificates are required and must chain to it.
    Raises :class:`TLSConfigError` naming the missing half when only one of cert/key is given, when a
    client CA is given without a server certificate, or when a file is unreadable or not PEM. The key is
    not checked against the certificate here; gRPC rejects a mismatched pair when the server starts.
    """
    if cert_file is None and key_file is None:
        if client_ca_file is not None:
            raise TLSConfigError(
                f"tls_client_ca_file {str(client_ca_file)!r} was given without tls_cert_file and tls_key_file; "
                "mutual TLS needs the server's own certificate and key too"
            )
        return None
    if cert_file is None:
        raise TLSConfigError(
            f"tls_key_file {str(key_file)!r} was given but tls_cert_file is missing; TLS needs both"
        )
    if key_file is None:
        raise TLSConfigError(
            f"tls_cert_file {str(cert_file)!r} was given but tls_key_file is missing; TLS needs both"
        )
    cert = _read_pem("tls_cert_file", cert_file, b"-----BEGIN CERTIFICATE-----")
    key = _read_pem("tls_key_file", key_file, b"PRIVATE KEY-----")
    root = None
    if client_ca_file is not None:
        root = _read_pem("tls_client_ca_file", client_ca_file, b"-----BEGIN CERTIFICATE-----")
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=root,
        require_client_auth=root is not None,
    )


# --------------------------------------------------------------------------- bearer token


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata a client sends to pass :class:`TokenAuthInterceptor`."""
    return (("authorization", f"Bearer {token}"),)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer <token>`` with UNAUTHENTICATED.

    ``exempt`` decides which method paths skip the check; the default exempts only the standard health
    service (see the module docstring for the policy). The token itself never appears in a log line or
    an error message.
    """

    def __init__(self, token: str, *, exempt: Callable[[str], bool] | None = None) -> None:
        if not isinstance(token, str) or not token:
            raise ValueError(f"auth token must be a non-empty string, got {type(token).__name__}")
        self._expected = token.encode("utf-8")
        self._exempt = exempt if exempt is not None else (lambda method: method.startswith(HEALTH_SERVICE_PREFIX))
        self._warned = False

    def _rejection(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
        """None when the metadata carries the right token; otherwise the reason (never the token)."""
        values = [v for k, v in (metadata or ()) if k.lower() == "authorization"]
        if not values:
            return "missing 'authorization' metadata; expected 'authorization: Bearer <token>'"
        value = values[0]
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if not value[: len(_BEARER)].lower() == _BEARER:
            # never echo any of it: a token sent without the scheme would otherwise leak into logs
            return f"authorization metadata ({len(value)} characters) does not start with 'Bearer '; " \
                "expected 'Bearer <token>'"
        offered = value[len(_BEARER):].strip().encode("utf-8")
        # compare_digest on equal-type bytes: time independent of the matching prefix length.
        if not hmac.compare_digest(offered, self._expected):
            return "bearer token is not valid"
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method or ""
        if self._exempt(method):
            return await continuation(handler_call_details)
        reason = self._rejection(handler_call_details.invocation_metadata)
        if reason is None:
            return await continuation(handler_call_details)
        log = logger.debug if self._warned else logger.warning
        self._warned = True
        log("rejected %s: %s (UNAUTHENTICATED)", method[:128], reason)
        return refusing_handler(await continuation(handler_call_details), grpc.StatusCode.UNAUTHENTICATED, reason)


# --------------------------------------------------------------------------- mTLS client names


def peer_names(auth_context: Mapping[str, Iterable[bytes]]) -> set[str]:
    """The common name and subject alternative names of a verified client certificate."""
    names = set()
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth_context.get(key, ()):
            names.add(value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))
    return names


class ClientNameInterceptor(grpc.aio.ServerInterceptor):
    """With mutual TLS, serve only clients whose certificate names (CN or a SAN) one of `allowed`;
    others get PERMISSION_DENIED before the servicer runs. Health stays exempt, as for the token. The
    first refusal is a WARNING (with the names the certificate carries), later ones DEBUG."""

    def __init__(self, allowed: Iterable[str], *, exempt: Callable[[str], bool] | None = None) -> None:
        self.allowed = frozenset(allowed)
        if not self.allowed:
            raise ValueError("ClientNameInterceptor needs at least one allowed client name")
        self._exempt = exempt if exempt is not None else (lambda method: method.startswith(HEALTH_SERVICE_PREFIX))
        self._warned = False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None or self._exempt(method):
            return handler

        async def check(context: Any) -> None:
            names = peer_names(context.auth_context())
            if names & self.allowed:
                return
            shown = sorted(n[:64] for n in names)[:4]
            log = logger.debug if self._warned else logger.warning
            self._warned = True
            log("refused client certificate %s for %s (PERMISSION_DENIED)", shown, method[:128])
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"client certificate names {shown} are not allowed; expected one of tls_client_names",
            )

        return wrap_handler(handler, before=check)
