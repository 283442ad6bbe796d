"""Finding and connecting to the tail server: the configured address, or zeroconf discovery,
optionally behind the link emulator; plus the telemetry readers this machine offers.

:class:`Connector` builds the :class:`~edge_agent.types.Transport` the daemon uses (None
means fully local) and, while there is none, looks again every ``REDISCOVER_MS``
(browsing blocks, so in a thread).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Any, Callable, Optional

from edge_agent.config import BatteryConfig, EdgeConfig
from edge_agent.telemetry import TelemetryHub
from edge_agent.types import Transport

log = logging.getLogger(__name__)

REDISCOVER_MS = 30_000  # how often a daemon without a server browses zeroconf again


class Connector:
    def __init__(self, config: EdgeConfig, bundle_name: str, bundle_id: str) -> None:
        """``bundle_id``: :func:`protos.bundle.bundle_hash`, what servers advertise over zeroconf."""
        self.config = config
        self.bundle_name = bundle_name
        self.bundle_id = bundle_id
        self.address = config.server.address or ""
        self._discovering = threading.Event()
        self._next_discovery_ms = REDISCOVER_MS

    def connect(self) -> Optional[Transport]:
        """A transport to the configured or discovered server (emulated link when asked); None if none."""
        from edge_agent.transport_grpc import GrpcTransport, options_from_config

        server = self.config.server
        address = server.address
        options = options_from_config(server)
        if address is None and server.discovery:
            found = self._discover()
            if found is None:
                return None
            address, tls = found
            if tls and not server.tls:
                options = replace(options, tls=True)
        if address is None:
            return None
        self.address = address
        return self.emulate(GrpcTransport(address, options))

    def emulate(self, transport: Optional[Transport]) -> Optional[Transport]:
        if transport is None or not self.config.link.enabled:
            return transport
        from edge_agent.link import wrap_transport_from_config

        return wrap_transport_from_config(transport, self.config.link)

    def _discover(self) -> Optional[tuple[str, bool]]:
        from edge_agent import discovery

        try:
            return discovery.find_server_for(self.bundle_name, self.bundle_id,
                                             timeout_s=self.config.server.discovery_timeout_s)
        except Exception as exc:  # noqa: BLE001 - discovery is best effort
            log.warning("zeroconf discovery failed: %s", exc)
            return None

    def maybe_rediscover(self, now_ms: int, on_found: Callable[[Transport], None]) -> None:
        """Without a configured server, browse again every ``REDISCOVER_MS`` in a thread."""
        server = self.config.server
        if server.address is not None or not server.discovery:
            return
        if now_ms < self._next_discovery_ms or self._discovering.is_set():
            return
        self._next_discovery_ms = now_ms + REDISCOVER_MS
        self._discovering.set()

        def run() -> None:
            try:
                transport = self.connect()
                if transport is not None:
                    on_found(transport)
                    log.info("server %s discovered; offloading can resume", self.address)
            finally:
                self._discovering.clear()

        threading.Thread(target=run, name="edge-discovery", daemon=True).start()


def advertise_in_background(agent_id: str, advertised: Any, bundle_name: str, bundle_id: str,
                            on_done: Callable[[Any], None]) -> None:
    """Announce this agent over zeroconf for ``splitctl discover`` (registration blocks ~1.5 s,
    hence a thread); ``on_done`` receives the advertisement to close at shutdown."""
    def run() -> None:
        from edge_agent import discovery

        try:
            on_done(discovery.advertise_agent(agent_id, advertised,
                                              bundles=[discovery.bundle_key(bundle_name, bundle_id)]))
        except Exception as exc:  # noqa: BLE001 - advertising is best effort
            log.warning("zeroconf: cannot advertise the agent: %s", exc)

    threading.Thread(target=run, name="edge-advertise", daemon=True).start()


def build_hub(battery: BatteryConfig) -> TelemetryHub:
    """The telemetry readers ``[battery]`` asks for, on this machine ("auto": a battery
    in sysfs, else psutil); temperature, throttling and load as the hub picks them."""
    from edge_agent import telemetry as t

    b = battery
    if b.source == "auto":
        return TelemetryHub.for_this_machine(power_supply_root=b.sysfs_root)
    if b.source == "trace":
        assert b.trace_file is not None  # validated by the config
        return TelemetryHub.for_this_machine(battery_trace=b.trace_file)
    readers = {"none": None, "psutil": t.PsutilBatteryReader, "sysfs": lambda: t.SysfsBatteryReader(b.sysfs_root)}
    make_battery = readers[b.source]
    thermal = t.SysfsTemperatureReader()
    return TelemetryHub(
        battery=make_battery() if make_battery else None,
        temperature=thermal if thermal.has_zones() else t.PsutilTemperatureReader(),
        throttle=t.VcgencmdThrottleReader() if t.VcgencmdThrottleReader.available() else None,
        load=t.PsutilLoadReader(),
    )
