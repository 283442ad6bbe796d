"""Find splitinfer servers (and agents) on the LAN with zeroconf, and advertise an agent.

Service type ``_splitinfer._tcp.local.``; TXT keys (the wire conventions):
``role`` (``server`` | ``agent``), ``proto`` (``v2`` | ``control.v1``), ``tls``
(``1``/``0``), ``bundles`` (``<model_name>@<bundle hash>,...``), ``models``; agents
add ``control`` (``unix:/path`` or ``tcp:host:port``) and ``agent_id``.

Servers are ranked (:func:`rank_servers`, pure): first those whose ``bundles``
holds our ``<model_name>@<bundle hash>`` (:func:`protos.bundle.bundle_hash`), then those holding
another bundle of our model, then the rest; within each group TLS before plaintext; then by
name. A server whose TXT ``bundles`` was truncated (``models_truncated=1``)
and does not list ours counts as "maybe" (after the exact matches).

Browsing waits up to ``timeout_s`` but returns ``settle_s`` after the last new
service once at least one was resolved, so a daemon does not always pay the
whole timeout. Registration (``advertise_agent``) probes for name conflicts,
which blocks about 1.5 s.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

from edge_agent.errors import ConfigError

__all__ = [
    "SERVICE_TYPE",
    "DiscoveredService",
    "AgentAdvertisement",
    "advertise_agent",
    "agent_txt",
    "bundle_key",
    "browse",
    "browse_all",
    "discover_agents",
    "discover_servers",
    "find_server_for",
    "parse_txt",
    "rank_servers",
]

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_splitinfer._tcp.local."


def bundle_key(model_name: str, bundle_id: str) -> str:
    """``<model_name>@<bundle hash>`` as servers list it in TXT ``bundles`` (``bundle_id`` is
    :func:`protos.bundle.bundle_hash`: every tail's version is ``1``, so the version names no bundle;
    the transport checks the same hash again through ModelConfig at the first offload)."""
    return f"{model_name}@{bundle_id[:12]}"


def parse_txt(properties: Mapping[Any, Any]) -> dict[str, str]:
    """TXT properties (bytes keys and values, values may be None) as a str dict."""
    out: dict[str, str] = {}
    for key, value in properties.items():
        k = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        if value is None:
            v = ""
        elif isinstance(value, bytes):
            v = value.decode("utf-8", "replace")
        else:
            v = str(value)
        out[k] = v
    return out


def _split(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(",") if x.strip())


@dataclass(frozen=True)
class DiscoveredService:
    """One resolved ``_splitinfer._tcp`` service (a server or an agent)."""

    name: str  # instance name without the service type
    addresses: tuple[str, ...]
    port: int
    txt: Mapping[str, str] = field(default_factory=dict)

    @property
    def role(self) -> str:
        return self.txt.get("role", "")

    @property
    def proto(self) -> str:
        return self.txt.get("proto", "")

    @property
    def tls(self) -> bool:
        return self.txt.get("tls", "0") == "1"

    @property
    def bundles(self) -> tuple[str, ...]:
        return _split(self.txt.get("bundles", ""))

    @property
    def models(self) -> tuple[str, ...]:
        return _split(self.txt.get("models", ""))

    @property
    def truncated(self) -> bool:
        return self.txt.get("models_truncated", "0") == "1"

    @property
    def control(self) -> str:
        return self.txt.get("control", "")

    @property
    def address(self) -> str:
        """``host:port`` for a gRPC target (IPv6 in brackets; IPv4 preferred)."""
        if not self.addresses:
            return f"?:{self.port}"
        v4 = [a for a in self.addresses if ":" not in a]
        host = v4[0] if v4 else self.addresses[0]
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (what ``splitctl discover --json`` prints)."""
        return {"name": self.name, "role": self.role or "?", "address": self.address,
                "addresses": list(self.addresses), "port": self.port, "txt": dict(self.txt)}


def _bundle_rank(service: DiscoveredService, want: Optional[str]) -> int:
    """0 exact bundle version, 1 maybe (truncated list), 2 same model other version, 3 other."""
    if want is None:
        return 0
    bundles = service.bundles
    if want in bundles:
        return 0
    if service.truncated:
        return 1
    model = want.split("@", 1)[0]
    if any(b.split("@", 1)[0] == model for b in bundles):
        return 2
    return 3


def rank_servers(services: Iterable[DiscoveredService], want_bundle: Optional[str] = None) -> list[DiscoveredService]:
    """Servers only (``role=server``, ``proto=v2``), best first (see the module docstring). Pure."""
    servers = [s for s in services if s.role == "server" and s.proto in ("v2", "")]
    return sorted(servers, key=lambda s: (_bundle_rank(s, want_bundle), not s.tls, s.name, s.address))


# --------------------------------------------------------------------------- browsing (I/O)


def _zeroconf(interfaces: Optional[Sequence[str]]) -> Any:
    from zeroconf import InterfaceChoice, IPVersion, Zeroconf

    if interfaces is None:
        return Zeroconf(interfaces=InterfaceChoice.All)
    versions = {ipaddress.ip_address(i).version for i in interfaces}
    ip_version = IPVersion.All if versions == {4, 6} else (IPVersion.V6Only if versions == {6} else IPVersion.V4Only)
    return Zeroconf(interfaces=list(interfaces), ip_version=ip_version)


def browse(timeout_s: float = 3.0, *, settle_s: float = 0.5, interfaces: Optional[Sequence[str]] = None,
           zc: Any = None) -> list[DiscoveredService]:
    """Every ``_splitinfer._tcp`` service seen within ``timeout_s`` (returns early once settled).

    ``interfaces`` is passed to :class:`zeroconf.Zeroconf` (``["127.0.0.1"]`` in tests);
    ``zc`` reuses an existing instance (not closed here).
    """
    from zeroconf import ServiceBrowser, ServiceInfo, ServiceStateChange

    own = zc is None
    zc = _zeroconf(interfaces) if own else zc
    names: dict[str, float] = {}
    lock = threading.Lock()
    changed = threading.Event()

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            with lock:
                names.setdefault(name, time.monotonic())
            changed.set()

    resolved: dict[str, DiscoveredService] = {}
    browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            with lock:
                pending = [n for n in names if n not in resolved]
                last_new = max(names.values(), default=None)
            for name in pending:
                info = ServiceInfo(SERVICE_TYPE, name)
                wait_ms = int(max(0.2, min(1.5, deadline - now + 0.5)) * 1000)
                if info.request(zc, wait_ms):
                    resolved[name] = DiscoveredService(
                        name=name.removesuffix("." + SERVICE_TYPE),
                        addresses=tuple(info.parsed_addresses()),
                        port=int(info.port or 0),
                        txt=parse_txt(info.properties or {}),
                    )
                else:
                    logger.debug("could not resolve %s", name)
            now = time.monotonic()
            if now >= deadline:
                break
            if resolved and last_new is not None and now - last_new >= settle_s:
                break
            changed.clear()
            changed.wait(min(0.1, max(0.0, deadline - now)))
    finally:
        browser.cancel()
        if own:
            zc.close()
    return sorted(resolved.values(), key=lambda s: s.name)


def browse_all(timeout_s: float = 3.0, **kwargs: Any) -> list[dict[str, Any]]:
    """Servers and agents as plain dicts (``name, role, address, addresses, port, txt``) for ``splitctl discover``.

    Waits the whole ``timeout_s`` (a listing should be complete).
    """
    kwargs.setdefault("settle_s", timeout_s)
    return [s.as_dict() for s in browse(timeout_s, **kwargs)]


def discover_servers(want_bundle: Optional[str] = None, *, timeout_s: float = 3.0, settle_s: float = 0.5,
                     interfaces: Optional[Sequence[str]] = None, zc: Any = None) -> list[DiscoveredService]:
    """Servers on the LAN, best first for ``want_bundle`` (``<model_name>@<version>``)."""
    return rank_servers(browse(timeout_s, settle_s=settle_s, interfaces=interfaces, zc=zc), want_bundle)


def discover_agents(*, timeout_s: float = 3.0, interfaces: Optional[Sequence[str]] = None,
                    zc: Any = None) -> list[DiscoveredService]:
    """Agents (``role=agent``) on the LAN; ``.control`` is their control address."""
    found = browse(timeout_s, settle_s=timeout_s, interfaces=interfaces, zc=zc)
    return [s for s in found if s.role == "agent"]


def find_server_for(model_name: str, bundle_id: str, *, timeout_s: float = 3.0,
                    interfaces: Optional[Sequence[str]] = None) -> Optional[tuple[str, bool]]:
    """``(host:port, tls)`` of the best server for this bundle, or None when none answered.

    A server that lists neither this model nor a truncated list is still returned
    when it is the only one (it may hold the tails under a stock Triton), with a warning.
    """
    want = bundle_key(model_name, bundle_id)
    servers = discover_servers(want, timeout_s=timeout_s, interfaces=interfaces)
    if not servers:
        logger.info("zeroconf: no %s server found within %.1f s", SERVICE_TYPE, timeout_s)
        return None
    best = servers[0]
    if _bundle_rank(best, want) >= 2:
        logger.warning("zeroconf: no server advertises %s; trying %s (%s) anyway", want, best.name, best.address)
    else:
        logger.info("zeroconf: using %s at %s (tls=%s)", best.name, best.address, best.tls)
    return best.address, best.tls


# --------------------------------------------------------------------------- advertising an agent


def agent_txt(agent_id: str, control: str, *, bundles: Sequence[str] = (), tls: bool = False) -> dict[str, str]:
    """TXT properties of an agent (pure)."""
    if not (control.startswith("unix:") or control.startswith("tcp:")):
        raise ConfigError(f"control address {control!r}; expected 'unix:/path' or 'tcp:host:port'")
    txt = {"role": "agent", "proto": "control.v1", "tls": "1" if tls else "0", "control": control,
           "agent_id": agent_id}
    if bundles:
        txt["bundles"] = ",".join(bundles)
    return txt


def _control_port(control: str) -> int:
    if control.startswith("tcp:"):
        try:
            return int(control.rsplit(":", 1)[1])
        except ValueError:
            raise ConfigError(f"control address {control!r}; expected 'tcp:host:port'") from None
    return 0  # a unix socket has no port; the TXT "control" key says where it is


def _label(text: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in text)
    return cleaned.strip("-")[:50] or "agent"


class AgentAdvertisement:
    """A registered agent service; :meth:`close` withdraws it (also as a context manager)."""

    def __init__(self, zc: Any, info: Any, own_zc: bool) -> None:
        self._zc, self._info, self._own = zc, info, own_zc
        self.instance_name: str = info.name

    def close(self) -> None:
        zc, self._zc = self._zc, None
        if zc is None:
            return
        try:
            zc.unregister_service(self._info)
        finally:
            if self._own:
                zc.close()

    def __enter__(self) -> "AgentAdvertisement":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def advertise_agent(agent_id: str, control: str, *, bundles: Sequence[str] = (), tls: bool = False,
                    addresses: Optional[Sequence[str]] = None, interfaces: Optional[Sequence[str]] = None,
                    zc: Any = None) -> AgentAdvertisement:
    """Register ``splitinfer-agent-<agent_id>`` so ``splitctl discover`` lists it (blocks ~1.5 s).

    ``addresses`` default: the control host for ``tcp:`` addresses that name an IP,
    else 127.0.0.1 (a unix socket is reachable on this machine only).
    """
    from zeroconf import ServiceInfo

    txt = agent_txt(agent_id, control, bundles=bundles, tls=tls)
    port = _control_port(control)
    if addresses is None:
        addresses = ["127.0.0.1"]
        if control.startswith("tcp:"):
            host = control[4:].rsplit(":", 1)[0].strip("[]")
            try:
                if not ipaddress.ip_address(host).is_unspecified:
                    addresses = [host]
            except ValueError:
                pass
    host_label = _label(socket.gethostname().split(".")[0])
    info = ServiceInfo(SERVICE_TYPE, f"splitinfer-agent-{_label(agent_id)}.{SERVICE_TYPE}",
                       parsed_addresses=list(addresses), port=port, properties=txt,
                       server=f"{host_label}.local.")
    own = zc is None
    zc = _zeroconf(interfaces) if own else zc
    try:
        zc.register_service(info, allow_name_change=True)
    except Exception:
        if own:
            zc.close()
        raise
    logger.info("advertising agent %s (control %s)", info.name, control)
    return AgentAdvertisement(zc, info, own)
