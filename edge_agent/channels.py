"""How the agent's gRPC channel reaches one server or several (issue 15).

``server.address`` names one of:

* one server, ``host:port``: gRPC's default ``pick_first``;
* several servers, ``host1:port,host2:port,...``: one ``ipv4:``/``ipv6:`` target (gRPC's static
  list); host names in the list are resolved once, when the channel is built;
* a DNS target, ``dns:///name:port`` (e.g. a Kubernetes headless Service): every address the name
  resolves to, re-resolved by gRPC when a connection drops.

With several servers (a list, or any ``dns:`` target) the channel balances with gRPC's own
``round_robin`` over every ready server and retries a call that failed with ``UNAVAILABLE``
(the server went away before answering) on another server: gRPC's transparent retry, so a
server killed mid-run costs no frame. A long-lived stream is bound to one server, so the
transport uses unary ``ModelInfer`` calls then (each picks the next ready server).

Limit: the transport checks the bundle (ModelConfig's ``splitinfer_bundle_hash``) once per model
over the channel, i.e. on whichever server answers; the servers behind one address are expected
to serve the same bundle (one Deployment, one exported repository).

Every channel uses its own subchannel pool, so a channel the transport recreates opens new
connections instead of inheriting a stale one from the process-wide pool.
"""
from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass

INFERENCE_SERVICE = "inference.GRPCInferenceService"


@dataclass(frozen=True)
class ChannelTarget:
    """The gRPC target string, whether it balances over several servers, and the servers named."""

    target: str
    balanced: bool
    servers: tuple[str, ...]


def _literal(host: str) -> str | None:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return "ipv6" if ip.version == 6 else "ipv4"


def _split_host_port(entry: str) -> tuple[str, str]:
    host, sep, port = entry.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"server address {entry!r}; expected host:port")
    return host, port


def channel_target(address: str) -> ChannelTarget:
    """The target for ``address`` (one ``host:port``, a comma-separated list, or ``dns:...``)."""
    address = address.strip()
    if address.startswith("dns:"):
        return ChannelTarget(address, True, (address,))
    entries = [e.strip() for e in address.split(",") if e.strip()]
    if not entries:
        raise ValueError(f"server address {address!r}; expected host:port or host:port,host:port,...")
    if len(entries) == 1:
        _split_host_port(entries[0])
        return ChannelTarget(entries[0], False, (entries[0],))
    resolved: list[str] = []
    families = set()
    for host, port in [_split_host_port(entry) for entry in entries]:
        family = _literal(host)
        if family is None:  # a name: its addresses now (a list target takes literal addresses only)
            try:
                infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
            except OSError as exc:
                raise ValueError(f"server address {address!r}: cannot resolve {host!r} ({exc})") from exc
            for info in infos:
                ip = str(info[4][0])
                family = _literal(ip)
                resolved.append(f"[{ip}]:{port}" if family == "ipv6" else f"{ip}:{port}")
                families.add(family)
        else:
            resolved.append(f"{host}:{port}")
            families.add(family)
    if len(families) != 1:
        raise ValueError(f"server address {address!r} mixes IPv4 and IPv6 servers; expected one family")
    return ChannelTarget(f"{families.pop()}:{','.join(dict.fromkeys(resolved))}", True, tuple(entries))


def service_config(balanced: bool, *, max_attempts: int = 3) -> str:
    """gRPC service config: ``round_robin`` and a retry of ``UNAVAILABLE`` unary inference calls
    when ``balanced`` (the retry picks the next ready server); an empty config otherwise."""
    if not balanced:
        return "{}"
    return json.dumps({
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{
            "name": [{"service": INFERENCE_SERVICE, "method": "ModelInfer"},
                     {"service": INFERENCE_SERVICE, "method": "ServerReady"}],
            "retryPolicy": {"maxAttempts": max_attempts, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
                            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
        }],
    })
