"""Advertise a running server over zeroconf (mDNS/DNS-SD) as ``_splitinfer._tcp.local.``.

TXT record (see the wire conventions): ``role=server``, ``proto=v2`` (the Open Inference Protocol),
``tls=1|0``, ``auth=1|0`` (a bearer token is required), ``bundles=<model_name>@<bundle hash>,...``
(``protos.bundle.bundle_hash``, the same identity ModelConfig's ``splitinfer_bundle_hash`` carries and the
agent checks at the first offload; every tail's version is ``1``, so a version names no bundle) and
``models=<served model>,...``. A TXT string holds at most 255 bytes, so ``bundles`` and ``models`` are
cut at a name boundary to fit and ``models_truncated=1`` is added when they were cut; a client that needs
the full list asks the server (``RepositoryIndex``).

The instance name is ``splitinfer-server-<hostname>-<port>``. When the server listens on a wildcard
address (``0.0.0.0`` / ``::``) every non-loopback address of the machine is advertised; otherwise only
the listening address. Registration probes the network for name conflicts, which takes about 1.5 s;
:meth:`ServiceAdvertiser.start` blocks for that long.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = [
    "SERVICE_TYPE",
    "TXT_VALUE_MAX_BYTES",
    "Advertisement",
    "ServiceAdvertiser",
    "fit_names",
    "txt_properties",
]

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_splitinfer._tcp.local."
#: One TXT string is a length byte plus at most 255 bytes of "key=value".
TXT_VALUE_MAX_BYTES = 255
_WILDCARDS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class Advertisement:
    """What the server tells the network about itself."""

    port: int
    tls: bool
    auth: bool = False
    bundles: tuple[str, ...] = ()  # "<model_name>@<bundle hash>"
    models: tuple[str, ...] = ()  # served model names, e.g. "mobilenet_v2.features_6"


def fit_names(key: str, names: Sequence[str], max_bytes: int = TXT_VALUE_MAX_BYTES) -> tuple[str, bool]:
    """Comma-join ``names`` so that ``key=value`` fits in ``max_bytes``; cut at a name boundary.

    Returns the value and whether names were left out. Pure.
    """
    budget = max_bytes - len(key.encode()) - 1
    kept: list[str] = []
    used = 0
    for name in names:
        cost = len(name.encode()) + (1 if kept else 0)
        if used + cost > budget:
            return ",".join(kept), True
        kept.append(name)
        used += cost
    return ",".join(kept), False


def txt_properties(ad: Advertisement) -> dict[str, str]:
    """The TXT key/values for ``ad`` (pure)."""
    props = {"role": "server", "proto": "v2", "tls": "1" if ad.tls else "0", "auth": "1" if ad.auth else "0"}
    bundles, bundles_cut = fit_names("bundles", ad.bundles)
    models, models_cut = fit_names("models", ad.models)
    props["bundles"] = bundles
    props["models"] = models
    if bundles_cut or models_cut:
        props["models_truncated"] = "1"
    return props


def _advertised_addresses(host: str) -> list[str]:
    """The IP addresses to publish for a server listening on ``host``."""
    if host in _WILDCARDS:
        import ifaddr  # a dependency of zeroconf

        found: list[str] = []
        for adapter in ifaddr.get_adapters():
            for ip in adapter.ips:
                addr = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
                parsed = ipaddress.ip_address(addr.split("%")[0])
                if parsed.is_loopback or parsed.is_link_local:
                    continue
                if host == "0.0.0.0" and parsed.version != 4:
                    continue
                found.append(str(parsed))
        return found or ["127.0.0.1"]
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        # a host name: publish what it resolves to
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        return sorted({info[4][0] for info in infos})


class ServiceAdvertiser:
    """Registers one ``_splitinfer._tcp.local.`` service; :meth:`close` withdraws it.

    ``interfaces`` is passed to :class:`zeroconf.Zeroconf` (e.g. ``["127.0.0.1"]`` in tests); the
    default is every interface.
    """

    def __init__(self, ad: Advertisement, *, host: str = "127.0.0.1", interfaces: Iterable[str] | None = None) -> None:
        self.ad = ad
        self.host = host
        self.interfaces = list(interfaces) if interfaces is not None else None
        self.instance_name = f"splitinfer-server-{_label(socket.gethostname())}-{ad.port}.{SERVICE_TYPE}"
        self._zc = None
        self._info = None

    def start(self) -> None:
        """Register the service (blocks ~1.5 s while probing). Idempotent."""
        if self._zc is not None:
            return
        from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, Zeroconf

        addresses = _advertised_addresses(self.host)
        versions = {ipaddress.ip_address(a).version for a in addresses}
        ip_version = IPVersion.All if versions == {4, 6} else (IPVersion.V6Only if versions == {6} else IPVersion.V4Only)
        self._info = ServiceInfo(
            SERVICE_TYPE,
            self.instance_name,
            parsed_addresses=addresses,
            port=self.ad.port,
            properties=txt_properties(self.ad),
            server=f"{_label(socket.gethostname())}.local.",
        )
        self._zc = Zeroconf(
            interfaces=self.interfaces if self.interfaces is not None else InterfaceChoice.All,
            ip_version=ip_version,
        )
        try:
            self._zc.register_service(self._info, allow_name_change=True)
        except Exception:
            self._zc.close()
            self._zc = None
            raise
        logger.info(
            "advertising %s on %s",
            self._info.name,
            ",".join(f"{a}:{self.ad.port}" for a in addresses),
            extra={"service_type": SERVICE_TYPE},
        )

    def close(self) -> None:
        """Withdraw the advertisement (sends goodbye packets) and release the sockets. Idempotent."""
        zc, info = self._zc, self._info
        self._zc = None
        if zc is None:
            return
        try:
            if info is not None:
                zc.unregister_service(info)
        finally:
            zc.close()

    def __enter__(self) -> "ServiceAdvertiser":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _label(name: str) -> str:
    """A DNS label from a host name: first component, letters/digits/'-' only, at most 40 chars."""
    first = name.split(".")[0] or "host"
    cleaned = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in first)
    return cleaned[:40] or "host"
