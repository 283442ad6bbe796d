"""Discovery: ranking (pure) and real zeroconf on loopback (fake servers advertised with ServiceInfo)."""
from __future__ import annotations

import threading
import time

import pytest
from zeroconf import IPVersion, ServiceInfo, Zeroconf

from edge_agent.discovery import (
    SERVICE_TYPE,
    DiscoveredService,
    advertise_agent,
    agent_txt,
    browse_all,
    bundle_key,
    discover_agents,
    discover_servers,
    find_server_for,
    parse_txt,
    rank_servers,
)
from edge_agent.errors import ConfigError

LOOPBACK = ["127.0.0.1"]
WANT = bundle_key("mobilenet_v2", "0123456789abcdef")  # "mobilenet_v2@0123456789ab"


def svc(name: str, *, tls: bool, bundles: str = "", role: str = "server", truncated: bool = False,
        port: int = 8001) -> DiscoveredService:
    txt = {"role": role, "proto": "v2", "tls": "1" if tls else "0", "bundles": bundles}
    if truncated:
        txt["models_truncated"] = "1"
    return DiscoveredService(name, ("127.0.0.1",), port, txt)


def test_bundle_key_and_txt_parsing() -> None:
    assert WANT == "mobilenet_v2@0123456789ab"
    assert parse_txt({b"role": b"server", b"tls": None, "x": "y"}) == {"role": "server", "tls": "", "x": "y"}


def test_rank_prefers_our_bundle_then_tls() -> None:
    services = [
        svc("a-plain-other-model", tls=False, bundles="resnet50@aaaaaaaaaaaa"),
        svc("b-tls-other-model", tls=True, bundles="resnet50@aaaaaaaaaaaa"),
        svc("c-plain-ours", tls=False, bundles=f"resnet50@aaaaaaaaaaaa,{WANT}"),
        svc("d-tls-ours", tls=True, bundles=WANT),
        svc("e-tls-old-version", tls=True, bundles="mobilenet_v2@ffffffffffff"),
        svc("f-plain-truncated", tls=False, bundles="resnet50@aaaaaaaaaaaa", truncated=True),
        svc("g-agent", tls=True, bundles=WANT, role="agent"),
    ]
    ranked = [s.name for s in rank_servers(services, WANT)]
    assert ranked == ["d-tls-ours", "c-plain-ours", "f-plain-truncated", "e-tls-old-version",
                      "b-tls-other-model", "a-plain-other-model"]
    # without a bundle to match: TLS first, then name
    assert [s.name for s in rank_servers(services)][:4] == ["b-tls-other-model", "d-tls-ours",
                                                           "e-tls-old-version", "a-plain-other-model"]


def test_address_forms() -> None:
    assert DiscoveredService("x", ("fe80::1", "10.0.0.5"), 8001).address == "10.0.0.5:8001"
    assert DiscoveredService("x", ("fd00::7",), 8001).address == "[fd00::7]:8001"


def test_agent_txt() -> None:
    assert agent_txt("cam-1", "unix:/run/splitinfer/agent.sock", bundles=[WANT]) == {
        "role": "agent", "proto": "control.v1", "tls": "0", "control": "unix:/run/splitinfer/agent.sock",
        "agent_id": "cam-1", "bundles": WANT}
    with pytest.raises(ConfigError, match="control address 'http://x'"):
        agent_txt("cam-1", "http://x")


# --------------------------------------------------------------------------- real zeroconf on loopback


@pytest.fixture(scope="module")
def fake_servers() -> object:
    """Three fake servers on 127.0.0.1, registered concurrently (each registration probes ~1.5 s)."""
    zc = Zeroconf(interfaces=LOOPBACK, ip_version=IPVersion.V4Only)
    specs = [
        ("edge-test-plain-ours", 41001, {"role": "server", "proto": "v2", "tls": "0", "bundles": WANT,
                                         "models": "mobilenet_v2.input,mobilenet_v2.features_6"}),
        ("edge-test-tls-ours", 41002, {"role": "server", "proto": "v2", "tls": "1", "bundles": WANT}),
        ("edge-test-tls-other", 41003, {"role": "server", "proto": "v2", "tls": "1",
                                        "bundles": "resnet50@aaaaaaaaaaaa"}),
    ]
    infos = [ServiceInfo(SERVICE_TYPE, f"{name}.{SERVICE_TYPE}", parsed_addresses=["127.0.0.1"], port=port,
                         properties=props, server=f"{name}.local.") for name, port, props in specs]
    threads = [threading.Thread(target=zc.register_service, args=(info,)) for info in infos]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    yield infos
    for info in infos:
        zc.unregister_service(info)
    zc.close()


@pytest.mark.slow
def test_discover_servers_on_loopback_prefers_tls_and_our_bundle(fake_servers: object) -> None:
    deadline = time.monotonic() + 10
    ranked: list[DiscoveredService] = []
    while time.monotonic() < deadline:
        ranked = [s for s in discover_servers(WANT, timeout_s=3.0, settle_s=0.5, interfaces=LOOPBACK)
                  if s.name.startswith("edge-test-")]
        if len(ranked) == 3:
            break
    assert [s.name for s in ranked] == ["edge-test-tls-ours", "edge-test-plain-ours", "edge-test-tls-other"]
    plain = ranked[1]
    assert (plain.address, plain.tls, plain.bundles) == ("127.0.0.1:41001", False, (WANT,))
    assert plain.models == ("mobilenet_v2.input", "mobilenet_v2.features_6")


@pytest.mark.slow
def test_find_server_for_returns_address_and_tls(fake_servers: object) -> None:
    found = None
    for _ in range(3):
        found = find_server_for("mobilenet_v2", "0123456789abcdef", timeout_s=3.0, interfaces=LOOPBACK)
        if found == ("127.0.0.1:41002", True):
            break
    assert found == ("127.0.0.1:41002", True)


@pytest.mark.slow
def test_advertised_agent_is_listed(fake_servers: object) -> None:
    with advertise_agent("cam-7", "tcp:127.0.0.1:7070", bundles=[WANT], interfaces=LOOPBACK) as ad:
        assert ad.instance_name.startswith("splitinfer-agent-cam-7")
        agents = []
        for _ in range(3):
            agents = [a for a in discover_agents(timeout_s=2.0, interfaces=LOOPBACK) if a.name.startswith(
                "splitinfer-agent-cam-7")]
            if agents:
                break
        assert len(agents) == 1
        agent = agents[0]
        assert (agent.role, agent.control, agent.address, agent.txt["agent_id"]) == \
            ("agent", "tcp:127.0.0.1:7070", "127.0.0.1:7070", "cam-7")
        listing = {d["name"]: d for d in browse_all(2.0, interfaces=LOOPBACK)}
        assert listing[agent.name]["role"] == "agent"
        assert listing["edge-test-tls-ours"]["txt"]["tls"] == "1"
        assert listing["edge-test-tls-ours"]["address"] == "127.0.0.1:41002"
