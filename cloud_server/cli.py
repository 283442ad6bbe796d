"""``splitinfer serve``: serve bundle tails over the Open Inference Protocol (KServe v2 / Triton gRPC).

This module owns the process: it reads the configuration once (:mod:`cloud_server.config`), sets up
logging, TLS credentials, the bearer-token interceptor, the Prometheus endpoint and the zeroconf
advertisement, starts :func:`cloud_server.server.create_server`, and handles the lifecycle:

1. SIGTERM or SIGINT: health flips to NOT_SERVING for every service name, new inference requests are
   answered UNAVAILABLE, the zeroconf advertisement is withdrawn;
2. requests already in flight get up to ``drain_timeout_s`` to finish;
3. the gRPC server stops (anything still running after the drain is cancelled), the metrics endpoint
   closes, and the process exits 0. A second signal during the drain skips the rest of the wait.

Exit codes: 0 after a clean drain, 2 for a configuration error (message on stderr naming the key),
1 when the server cannot start (e.g. port in use, unreadable bundle).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import typing
from typing import Any, Sequence

from cloud_server.config import CONFIG_ENV, ENV_PREFIX, KEYS, default_of, resolve_settings
from cloud_server.errors import SettingsError, TLSConfigError
from cloud_server.settings import ServerSettings

__all__ = ["build_parser", "main"]

logger = logging.getLogger("cloud_server.cli")

_EPILOG = f"""\
configuration: every option can also be set in a TOML file (--config; keys named like the
options with '_' for '-', e.g. max_batch_size = 8, and `bundles` = [...] for --bundle) or in
the environment as {ENV_PREFIX}<KEY> (e.g. {ENV_PREFIX}MAX_BATCH_SIZE=8;
{ENV_PREFIX}BUNDLES is a '{os.pathsep}'-separated list). Precedence, highest first:
    flags > {ENV_PREFIX}* environment > TOML file > defaults
See deploy/cloud/serve.example.toml.

models: one per (bundle, cut with a tail), named <model_name>.<cut_id>, version = the first
12 hex digits of the bundle's content hash.

security: --tls-cert-file/--tls-key-file turn on TLS, --tls-client-ca-file mutual TLS;
a bearer token (--auth-token-file or {ENV_PREFIX}AUTH_TOKEN) is then required on every call
except grpc.health.v1 health checks; missing or wrong credentials get UNAUTHENTICATED.

lifecycle: SIGTERM/SIGINT -> health NOT_SERVING, new requests UNAVAILABLE, in-flight requests
finish within --drain-timeout-s, exit 0. Exit 2 = configuration error, 1 = cannot start.
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``splitinfer serve`` parser: one option per configuration key, all defaulting to "not given"."""
    parser = argparse.ArgumentParser(
        prog="splitinfer serve",
        description="Serve the tails of split-inference bundles over the Open Inference Protocol\n"
        "(KServe v2 / Triton gRPC), so tritonclient and the splitinfer edge agent can use them.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", metavar="FILE", default=None,
        help=f"TOML configuration file (also {CONFIG_ENV}); flags and environment override it",
    )
    hints = typing.get_type_hints(ServerSettings)
    for key in KEYS.values():
        text = f"{key.help} (default {default_of(key.name)})" if key.show_default else key.help
        if key.name == "bundles":
            parser.add_argument("--bundle", dest="bundles", action="append", metavar=key.metavar, help=text)
        elif hints.get(key.name) is bool:
            parser.add_argument(key.flag, dest=key.name, action=argparse.BooleanOptionalAction, default=None,
                                help=text)
        else:
            parser.add_argument(key.flag, dest=key.name, metavar=key.metavar, default=None, help=text)
    return parser


class _Signals:
    """Records SIGTERM/SIGINT from the main thread's handlers; the main loop waits on it."""

    def __init__(self) -> None:
        self.first = threading.Event()
        self.second = threading.Event()
        self.name = ""

    def handle(self, signum: int, frame: object) -> None:
        if self.first.is_set():
            self.second.set()
            return
        self.name = signal.Signals(signum).name
        self.first.set()

    def install(self) -> dict[int, Any]:
        """Install the handlers; returns the previous ones (for :meth:`restore`)."""
        previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, self.handle)
        return previous

    @staticmethod
    def restore(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _models_of(running: Any) -> list[tuple[str, str]]:
    """(name, version) of every served model, from the running server's registry when it exposes one."""
    registry = getattr(running, "registry", None)
    if registry is None:
        dataplane = getattr(running, "dataplane", None)
        registry = getattr(dataplane, "registry", None)
    if registry is None:
        return []
    return [(m.name, m.version) for m in registry.models()]


def _bundle_labels(settings: ServerSettings) -> list[str]:
    """``<model_name>@<bundle hash>`` of every served bundle (for the zeroconf TXT record): the
    identity the agent looks for (``protos.bundle.bundle_hash``; every tail's version is ``1``)."""
    from protos.bundle import Side, bundle_hash, read_bundle

    labels = []
    for root in settings.bundles:
        bundle = read_bundle(root, Side.CLOUD, check_hashes=False)
        labels.append(f"{bundle.manifest.model_name}@{bundle_hash(bundle.manifest)}")
    return labels


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``splitinfer serve`` until SIGTERM/SIGINT; returns the exit code."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    flags = {name: getattr(args, name) for name in KEYS}
    try:
        settings, sources = resolve_settings(flags, os.environ, args.config)
        settings.validate_paths()
        from cloud_server.security import load_server_credentials

        try:
            credentials = load_server_credentials(
                settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
            )
        except TLSConfigError as exc:
            raise SettingsError(str(exc)) from exc
    except SettingsError as exc:
        print(f"splitinfer serve: {exc}", file=sys.stderr)
        return 2
    if not settings.bundles and settings.triton_repository is None:
        print(
            "splitinfer serve: nothing to serve; give --bundle DIR (repeatable) or --triton-repository DIR",
            file=sys.stderr,
        )
        return 2

    from cloud_server.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    for key, source in sorted(sources.items()):
        logger.debug("setting %s from %s", key, source)
    return _serve(settings, credentials)


def _serve(settings: ServerSettings, credentials: Any) -> int:
    signals = _Signals()
    previous = signals.install() if threading.current_thread() is threading.main_thread() else {}
    try:
        return _run(settings, credentials, signals)
    finally:
        _Signals.restore(previous)


def _run(settings: ServerSettings, credentials: Any, signals: _Signals) -> int:
    from cloud_server.metrics import InflightInterceptor, PrometheusObserver, start_metrics_server
    from cloud_server.security import ClientNameInterceptor, TokenAuthInterceptor
    from cloud_server.server import create_server

    observer = None
    metrics_server = None
    if settings.metrics_port is not None:
        observer = PrometheusObserver()
        try:
            metrics_server = start_metrics_server(observer.registry, settings.metrics_host, settings.metrics_port)
        except OSError as exc:
            logger.error("cannot start: %s", exc)
            return 1
    inflight = InflightInterceptor(on_change=observer.inflight.set if observer is not None else None)
    interceptors: list[Any] = []
    if settings.auth_token is not None:
        interceptors.append(TokenAuthInterceptor(settings.auth_token))
    if settings.tls_client_names:
        interceptors.append(ClientNameInterceptor(settings.tls_client_names))
    interceptors.append(inflight)

    try:
        running = create_server(settings, interceptors=interceptors, server_credentials=credentials, observer=observer)
    except Exception as exc:  # registry, port in use, ONNX Runtime: one line, no stack trace
        logger.error("cannot start: %s", exc, extra={"error": type(exc).__name__})
        if metrics_server is not None:
            metrics_server.stop()
        return 1

    models = _models_of(running)
    address = _address(settings.host, running.port)
    logger.info(
        "listening on %s (%d models%s%s)", address, len(models),
        ", TLS" + (" with client certificates" if settings.mtls_enabled else "") if settings.tls_enabled else "",
        ", bearer token required" if settings.auth_token else "",
        extra={
            "address": address,
            "port": running.port,
            "tls": settings.tls_enabled,
            "mtls": settings.mtls_enabled,
            "auth": settings.auth_token is not None,
            "models": [f"{name}@{version}" for name, version in models],
            "metrics_url": metrics_server.url if metrics_server is not None else None,
        },
    )
    if metrics_server is not None:
        logger.info("metrics at %s", metrics_server.url, extra={"metrics_url": metrics_server.url})
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.tls_enabled:
        logger.warning("listening on %s without TLS: frames and tokens travel in clear text", address)

    advertiser = None
    if settings.discovery:
        advertiser = _advertise(settings, running.port, [name for name, _ in models])

    signals.first.wait()
    return _drain(settings, running, inflight, signals, advertiser, metrics_server)


def _advertise(settings: ServerSettings, port: int, model_names: list[str]) -> Any:
    """Start the zeroconf advertisement; a failure is a WARNING, never fatal."""
    from cloud_server.discovery import Advertisement, ServiceAdvertiser

    try:
        ad = Advertisement(
            port=port,
            tls=settings.tls_enabled,
            auth=settings.auth_token is not None,
            bundles=tuple(_bundle_labels(settings)),
            models=tuple(model_names),
        )
        advertiser = ServiceAdvertiser(ad, host=settings.host)
        advertiser.start()
        return advertiser
    except Exception as exc:
        logger.warning("zeroconf advertisement failed, serving without it: %s", exc)
        return None


def _drain(
    settings: ServerSettings, running: Any, inflight: Any, signals: _Signals, advertiser: Any, metrics_server: Any
) -> int:
    started = time.monotonic()
    logger.info(
        "%s received: draining (health NOT_SERVING, %d requests in flight, up to %.1f s)",
        signals.name, inflight.count, settings.drain_timeout_s,
        extra={"signal": signals.name, "inflight": inflight.count},
    )
    inflight.start_draining()
    running.set_draining()
    if advertiser is not None:
        try:
            advertiser.close()
        except Exception as exc:
            logger.warning("withdrawing the zeroconf advertisement failed: %s", exc)
    deadline = started + settings.drain_timeout_s
    while not signals.second.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0 or inflight.wait_idle(min(remaining, 0.1)):
            break
    left = inflight.count
    if left:
        reason = "second signal" if signals.second.is_set() else f"drain timeout {settings.drain_timeout_s} s"
        logger.warning("%s: cancelling %d requests still in flight", reason, left, extra={"inflight": left})
    running.stop(0.0 if left else 1.0)
    if metrics_server is not None:
        metrics_server.stop()
    logger.info("stopped after draining for %.2f s", time.monotonic() - started,
                extra={"drain_s": round(time.monotonic() - started, 3)})
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
