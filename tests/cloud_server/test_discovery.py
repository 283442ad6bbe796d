"""zeroconf advertisement: advertise and browse on loopback; TXT record contents and truncation."""
from __future__ import annotations

import threading
import time

import pytest
from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

from cloud_server.discovery import (
    SERVICE_TYPE,
    TXT_VALUE_MAX_BYTES,
    Advertisement,
    ServiceAdvertiser,
    fit_names,
    txt_properties,
)
from protos import bundle as bundle_io


def test_fit_names_cuts_at_a_name_boundary() -> None:
    names = [f"model_{i:03d}.features_{i}" for i in range(40)]
    value, cut = fit_names("models", names)
    assert cut
    assert len(f"models={value}".encode()) <= TXT_VALUE_MAX_BYTES
    kept = value.split(",")
    assert kept == names[: len(kept)]  # whole names, in order
    assert fit_names("models", ["a", "b"]) == ("a,b", False)
    assert fit_names("models", []) == ("", False)


def test_txt_properties_follow_the_wire_convention() -> None:
    ad = Advertisement(port=8001, tls=True, auth=False, bundles=("mobilenet_v2@0123456789ab",),
                       models=("mobilenet_v2.input", "mobilenet_v2.features_6"))
    assert txt_properties(ad) == {
        "role": "server", "proto": "v2", "tls": "1", "auth": "0",
        "bundles": "mobilenet_v2@0123456789ab",
        "models": "mobilenet_v2.input,mobilenet_v2.features_6",
    }
    many = Advertisement(port=1, tls=False, models=tuple(f"m{i:04d}.cut" for i in range(100)))
    props = txt_properties(many)
    assert props["tls"] == "0" and props["models_truncated"] == "1"


def _browse(timeout_s: float) -> dict[str, dict[bytes, bytes | None]]:
    """Browse _splitinfer._tcp.local. on loopback; {instance name: TXT properties} of what was resolved."""
    found: dict[str, dict[bytes, bytes | None]] = {}
    seen = threading.Event()
    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    names: list[str] = []

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Added:
            names.append(name)
            seen.set()

    browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
    try:
        seen.wait(timeout_s)
        for name in list(names):
            info = zc.get_service_info(SERVICE_TYPE, name, timeout=3000)
            if info is not None:
                found[name] = dict(info.properties)
                found[name][b"__port"] = str(info.port).encode()
                found[name][b"__addresses"] = ",".join(info.parsed_addresses()).encode()
    finally:
        browser.cancel()
        zc.close()
    return found


@pytest.mark.slow
def test_advertise_then_browse_on_loopback() -> None:
    ad = Advertisement(port=45678, tls=False, auth=True, bundles=("tiny_net@56a3c72dd909",),
                       models=("tiny_net.input", "tiny_net.pool"))
    advertiser = ServiceAdvertiser(ad, host="127.0.0.1", interfaces=["127.0.0.1"])
    advertiser.start()
    try:
        deadline = time.monotonic() + 10
        found: dict[str, dict[bytes, bytes | None]] = {}
        while time.monotonic() < deadline and advertiser.instance_name not in found:
            found = _browse(timeout_s=3)
        assert advertiser.instance_name in found, f"browsed {list(found)}"
        props = found[advertiser.instance_name]
        assert props[b"role"] == b"server"
        assert props[b"proto"] == b"v2"
        assert props[b"tls"] == b"0"
        assert props[b"auth"] == b"1"
        assert props[b"bundles"] == b"tiny_net@56a3c72dd909"
        assert props[b"models"] == b"tiny_net.input,tiny_net.pool"
        assert props[b"__port"] == b"45678"
        assert props[b"__addresses"] == b"127.0.0.1"
    finally:
        advertiser.close()
    # withdrawn: a fresh resolver (empty cache) gets no answer for the instance any more
    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        assert zc.get_service_info(SERVICE_TYPE, advertiser.instance_name, timeout=1500) is None
    finally:
        zc.close()


@pytest.mark.slow
def test_splitinfer_serve_advertises_its_models_and_withdraws_on_sigterm(tiny_bundle) -> None:  # type: ignore[no-untyped-def]
    import signal

    from tests.cloud_server.test_cli_lifecycle import ServeProcess

    proc = ServeProcess(["--bundle", str(tiny_bundle.root), "--port", "0", "--metrics-port", "off",
                         "--discovery", "--log-format", "json"])
    try:
        listening = proc.wait_for_log("listening on")
        proc.wait_for_log("advertising", timeout_s=20)
        deadline = time.monotonic() + 10
        mine: dict[bytes, bytes | None] = {}
        while time.monotonic() < deadline and not mine:
            mine = next((props for props in _browse(timeout_s=3).values()
                         if props.get(b"__port") == str(listening["port"]).encode()), {})
        assert mine, "the server's advertisement was not found on loopback"
        assert mine[b"role"] == b"server" and mine[b"proto"] == b"v2" and mine[b"tls"] == b"0"
        # the key the agent looks for: the model and the bundle's hash (every tail is version 1)
        assert mine[b"bundles"] == f"tiny_net@{bundle_io.bundle_hash(tiny_bundle.manifest)}".encode()
        assert len(mine[b"bundles"]) == len(b"tiny_net@") + 12
        assert set(mine[b"models"].split(b",")) == {b"tiny_net.input", b"tiny_net.feat", b"tiny_net.pool"}
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(timeout=20) == 0
    finally:
        proc.kill()
