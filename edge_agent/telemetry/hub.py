"""Combine the readers and trackers into one :class:`~edge_agent.types.Telemetry` value.

:func:`combine_telemetry` is pure. :class:`TelemetryHub` asks each reader at most
once per ``read_interval_ms`` (``vcgencmd`` is a subprocess; sysfs reads are
cheap but not free) and caches the last value, then combines. A reader that is
absent or fails contributes "unknown" (``None``).

``throttled`` comes from the firmware's bitmask when ``vcgencmd`` is available,
otherwise from the temperature: at or above ``throttle_temp_c`` (80 C, where a
Pi 4's firmware starts soft throttling) the CPU is assumed throttled.
"""
from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any, Optional

from edge_agent.telemetry.bandwidth import BandwidthEstimate, BandwidthEstimator
from edge_agent.telemetry.battery import (
    BatteryReader,
    BatteryReading,
    PsutilBatteryReader,
    SysfsBatteryReader,
    TraceBatteryReader,
)
from edge_agent.telemetry.cpu import (
    PsutilLoadReader,
    PsutilTemperatureReader,
    SysfsTemperatureReader,
    ThrottleStatus,
    VcgencmdThrottleReader,
)
from edge_agent.telemetry.trackers import ServerTimes, ServerTimeTracker, SlowdownTracker
from edge_agent.types import Telemetry

__all__ = ["combine_telemetry", "TelemetryHub"]

PI4_SOFT_THROTTLE_C = 80.0

def combine_telemetry(
    now_ms: int,
    *,
    battery: Optional[BatteryReading] = None,
    cpu_temp_c: Optional[float] = None,
    throttle: Optional[ThrottleStatus] = None,
    cpu_load_pct: Optional[float] = None,
    bandwidth: Optional[BandwidthEstimate] = None,
    server: Optional[ServerTimes] = None,
    slowdown_factor: float = 1.0,
    cloud_available: bool = True,
    throttle_temp_c: float = PI4_SOFT_THROTTLE_C,
) -> Telemetry:
    """One Telemetry from the pieces (pure)."""
    if throttle is not None:
        throttled = throttle.slowed_now
    else:
        throttled = cpu_temp_c is not None and cpu_temp_c >= throttle_temp_c
    return Telemetry(
        at_ms=int(now_ms),
        battery_pct=battery.battery_pct if battery else None,
        charging=battery.charging if battery else None,
        cpu_temp_c=cpu_temp_c,
        throttled=throttled,
        cpu_load_pct=cpu_load_pct,
        uplink_kbps=bandwidth.uplink_kbps if bandwidth else None,
        rtt_ms=bandwidth.rtt_ms if bandwidth else None,
        server_queue_ms=server.queue_ms if server else None,
        server_compute_ms=server.compute_ms if server else None,
        slowdown_factor=slowdown_factor,
        cloud_available=cloud_available,
    )

@dataclass
class _Cached:
    value: Any = None
    at_ms: Optional[int] = None

class TelemetryHub:
    """Owns the readers (I/O) and the pure trackers, and produces ``Telemetry`` at ``now_ms``.

    The daemon feeds the trackers directly (``hub.bandwidth.observe_transfer(...)``,
    ``hub.slowdown.observe(...)``, ``hub.server.observe(...)``) and calls
    :meth:`sample` before each policy decision or on a timer.
    """

    def __init__(
        self,
        *,
        battery: Optional[BatteryReader] = None,
        temperature: Optional[Any] = None,  # .read(now_ms) -> Optional[float]
        throttle: Optional[Any] = None,  # .read(now_ms) -> Optional[ThrottleStatus]
        load: Optional[Any] = None,  # .read(now_ms) -> Optional[float]
        bandwidth: Optional[BandwidthEstimator] = None,
        slowdown: Optional[SlowdownTracker] = None,
        server: Optional[ServerTimeTracker] = None,
        read_interval_ms: int = 1_000,
        throttle_temp_c: float = PI4_SOFT_THROTTLE_C,
    ) -> None:
        self._readers = {"battery": battery, "temperature": temperature, "throttle": throttle, "load": load}
        self._cache = {name: _Cached() for name in self._readers}
        self.bandwidth = bandwidth if bandwidth is not None else BandwidthEstimator()
        self.slowdown = slowdown if slowdown is not None else SlowdownTracker()
        self.server = server if server is not None else ServerTimeTracker()
        self._read_interval_ms = read_interval_ms
        self._throttle_temp_c = throttle_temp_c

    @classmethod
    def for_this_machine(cls, *, battery_trace: Optional[pathlib.Path] = None, start_ms: Optional[int] = None,
                         power_supply_root: pathlib.Path = pathlib.Path("/sys/class/power_supply"),
                         thermal_root: pathlib.Path = pathlib.Path("/sys/class/thermal"),
                         **kwargs: Any) -> "TelemetryHub":
        """Pick the readers this machine has: a battery trace if given, else sysfs, else psutil;
        sysfs thermal zones, else psutil; ``vcgencmd`` when on PATH; psutil load."""
        battery: BatteryReader
        if battery_trace is not None:
            battery = TraceBatteryReader(battery_trace, start_ms=start_ms)
        else:
            sysfs = SysfsBatteryReader(power_supply_root)
            battery = sysfs if sysfs.has_battery() else PsutilBatteryReader()
        thermal = SysfsTemperatureReader(thermal_root)
        temperature = thermal if thermal.has_zones() else PsutilTemperatureReader()
        throttle = VcgencmdThrottleReader() if VcgencmdThrottleReader.available() else None
        return cls(battery=battery, temperature=temperature, throttle=throttle, load=PsutilLoadReader(), **kwargs)

    def _read(self, name: str, now_ms: int) -> Any:
        reader = self._readers[name]
        if reader is None:
            return None
        cached = self._cache[name]
        if cached.at_ms is None or now_ms - cached.at_ms >= self._read_interval_ms or now_ms < cached.at_ms:
            cached.value = reader.read(now_ms)
            cached.at_ms = now_ms
        return cached.value

    def sample(self, now_ms: int, *, cloud_available: bool = True, current_cut: Optional[str] = None) -> Telemetry:
        """Telemetry at ``now_ms``; ``current_cut`` selects whose server compute time is reported."""
        return combine_telemetry(
            now_ms,
            battery=self._read("battery", now_ms),
            cpu_temp_c=self._read("temperature", now_ms),
            throttle=self._read("throttle", now_ms),
            cpu_load_pct=self._read("load", now_ms),
            bandwidth=self.bandwidth.estimate(now_ms),
            server=self.server.times(current_cut, now_ms),
            slowdown_factor=self.slowdown.factor,
            cloud_available=cloud_available,
            throttle_temp_c=self._throttle_temp_c,
        )
