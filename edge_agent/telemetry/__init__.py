"""Telemetry: readers that produce one :class:`~edge_agent.types.Telemetry` value.

Thin I/O adapters (psutil, sysfs, ``vcgencmd``, a simulated battery trace) whose
parsing is pure and tested against recorded values, pure estimators fed by the
daemon (uplink bandwidth and RTT from real transfers, probe scheduling, head
slowdown, server times), and a hub that combines them at ``now_ms``.
"""
from __future__ import annotations

from edge_agent.telemetry._common import TelemetryError
from edge_agent.telemetry.bandwidth import BandwidthEstimate, BandwidthEstimator, ProbeScheduler
from edge_agent.telemetry.battery import (
    BatteryReading,
    PsutilBatteryReader,
    SysfsBatteryReader,
    TraceBatteryReader,
    battery_from_psutil,
    parse_battery_trace,
    parse_power_supply,
)
from edge_agent.telemetry.cpu import (
    PsutilLoadReader,
    PsutilTemperatureReader,
    SysfsTemperatureReader,
    ThrottleStatus,
    VcgencmdThrottleReader,
    parse_vcgencmd_throttled,
    temperature_from_psutil,
    temperature_from_zones,
)
from edge_agent.telemetry.hub import TelemetryHub, combine_telemetry
from edge_agent.telemetry.trackers import ServerTimes, ServerTimeTracker, SlowdownTracker

__all__ = [
    "BandwidthEstimate", "BandwidthEstimator", "BatteryReading", "ProbeScheduler", "PsutilBatteryReader",
    "PsutilLoadReader", "PsutilTemperatureReader", "ServerTimeTracker", "ServerTimes", "SlowdownTracker",
    "SysfsBatteryReader", "SysfsTemperatureReader", "TelemetryError", "TelemetryHub", "ThrottleStatus",
    "TraceBatteryReader", "VcgencmdThrottleReader", "battery_from_psutil", "combine_telemetry",
    "parse_battery_trace", "parse_power_supply", "parse_vcgencmd_throttled", "temperature_from_psutil",
    "temperature_from_zones",
]
