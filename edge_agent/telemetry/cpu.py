"""CPU readers: temperature (psutil or ``/sys/class/thermal``), throttling (``vcgencmd
get_throttled`` on a Raspberry Pi) and load (psutil).

``read(now_ms)`` returns the value or ``None`` (unknown; failures logged once).
Parsing is pure and separate (``temperature_from_psutil``, ``temperature_from_zones``,
``parse_vcgencmd_throttled``) so tests feed it recorded values.
"""
from __future__ import annotations

import logging
import pathlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from edge_agent.telemetry._common import TelemetryError, WarnOnce

logger = logging.getLogger(__name__)
_warn = WarnOnce(logger)

THERMAL_ROOT = pathlib.Path("/sys/class/thermal")

# psutil sensor names / sysfs zone types that measure the CPU, best first.
_CPU_SENSORS = ("cpu_thermal", "cpu-thermal", "coretemp", "k10temp", "zenpower", "soc_thermal", "cpu0_thermal",
                "acpitz")
_CPU_ZONES = ("cpu-thermal", "cpu_thermal", "x86_pkg_temp", "soc-thermal", "soc_thermal", "cpu0-thermal", "acpitz")
_PACKAGE_LABELS = ("package id 0", "tctl", "tdie", "cpu")


# --------------------------------------------------------------------------- temperature


def temperature_from_psutil(temps: Mapping[str, Sequence[Any]]) -> Optional[float]:
    """CPU temperature from ``psutil.sensors_temperatures()`` ({name: [shwtemp(label, current, ...)]}).

    Prefers the known CPU sensors (Pi ``cpu_thermal``, Intel ``coretemp`` package,
    AMD ``k10temp`` Tctl); else the hottest reading of any sensor.
    """
    for name in _CPU_SENSORS:
        entries = [e for e in temps.get(name, ()) if getattr(e, "current", None) is not None]
        if not entries:
            continue
        for label in _PACKAGE_LABELS:
            for e in entries:
                if (getattr(e, "label", "") or "").lower() == label:
                    return float(e.current)
        return float(max(e.current for e in entries))
    currents = [float(e.current) for entries in temps.values() for e in entries
                if getattr(e, "current", None) is not None]
    return max(currents) if currents else None


class PsutilTemperatureReader:
    def __init__(self, sensors_temperatures: Optional[Callable[[], Mapping[str, Sequence[Any]]]] = None) -> None:
        if sensors_temperatures is None:
            import psutil

            sensors_temperatures = getattr(psutil, "sensors_temperatures", lambda: {})
        self._sensors_temperatures = sensors_temperatures

    def read(self, now_ms: int) -> Optional[float]:
        try:
            return temperature_from_psutil(self._sensors_temperatures() or {})
        except (OSError, RuntimeError, ValueError, TypeError) as exc:
            _warn("psutil", "psutil.sensors_temperatures failed: %s", exc)
            return None


def temperature_from_zones(zones: Mapping[str, tuple[str, str]]) -> Optional[float]:
    """CPU temperature from ``{zone_dir: (type text, temp text in millidegrees C)}``.

    Prefers the CPU zone types (Pi ``cpu-thermal``, Intel ``x86_pkg_temp``); else the
    lowest-numbered zone that parses.
    """
    parsed: dict[str, tuple[str, float]] = {}
    for zone in sorted(zones, key=_zone_number):
        kind, temp = zones[zone]
        try:
            parsed[zone] = (kind.strip(), int(temp.strip()) / 1000.0)
        except ValueError:
            continue
    for wanted in _CPU_ZONES:
        for kind, celsius in parsed.values():
            if kind == wanted:
                return celsius
    return next(iter(parsed.values()))[1] if parsed else None


def _zone_number(name: str) -> tuple[int, str]:
    m = re.search(r"(\d+)$", name)
    return (int(m.group(1)) if m else 1 << 30, name)


class SysfsTemperatureReader:
    def __init__(self, root: pathlib.Path = THERMAL_ROOT) -> None:
        self._root = pathlib.Path(root)

    def has_zones(self) -> bool:
        return any(self._root.glob("thermal_zone*/temp"))

    def read(self, now_ms: int) -> Optional[float]:
        zones: dict[str, tuple[str, str]] = {}
        for zone in self._root.glob("thermal_zone*"):
            try:
                zones[zone.name] = ((zone / "type").read_text(), (zone / "temp").read_text())
            except OSError:  # some zones refuse to read (ENODATA) while their device sleeps
                continue
        if not zones:
            _warn(f"sysfs:{self._root}", "no readable thermal zone under %s", self._root)
        return temperature_from_zones(zones)


# --------------------------------------------------------------------------- throttling


@dataclass(frozen=True)
class ThrottleStatus:
    """The Raspberry Pi firmware's ``get_throttled`` bitmask.

    Bits (Raspberry Pi documentation, "vcgencmd get_throttled"): 0 under-voltage now,
    1 ARM frequency capped now, 2 throttled now, 3 soft temperature limit now;
    16-19 the same conditions "has occurred since boot".
    """

    flags: int

    UNDER_VOLTAGE = 1 << 0
    FREQ_CAPPED = 1 << 1
    THROTTLED = 1 << 2
    SOFT_TEMP_LIMIT = 1 << 3
    OCCURRED_SHIFT = 16

    @property
    def under_voltage(self) -> bool:
        return bool(self.flags & self.UNDER_VOLTAGE)

    @property
    def freq_capped(self) -> bool:
        return bool(self.flags & self.FREQ_CAPPED)

    @property
    def throttled(self) -> bool:
        return bool(self.flags & self.THROTTLED)

    @property
    def soft_temp_limit(self) -> bool:
        return bool(self.flags & self.SOFT_TEMP_LIMIT)

    @property
    def slowed_now(self) -> bool:
        """The CPU runs below its nominal clock right now (capped, throttled or soft-limited)."""
        return bool(self.flags & (self.FREQ_CAPPED | self.THROTTLED | self.SOFT_TEMP_LIMIT))

    @property
    def occurred_since_boot(self) -> int:
        return (self.flags >> self.OCCURRED_SHIFT) & 0xF

    def describe(self) -> str:
        names = [n for n, on in (("under-voltage", self.under_voltage), ("frequency capped", self.freq_capped),
                                 ("throttled", self.throttled), ("soft temperature limit", self.soft_temp_limit))
                 if on]
        return ", ".join(names) if names else "not throttled"


_THROTTLED = re.compile(r"^\s*throttled=(0x[0-9a-fA-F]+|\d+)\s*$")


def parse_vcgencmd_throttled(text: str) -> ThrottleStatus:
    """Parse ``vcgencmd get_throttled`` output, e.g. ``throttled=0x50005``."""
    m = _THROTTLED.match(text)
    if not m:
        raise TelemetryError(f"vcgencmd output {text.strip()!r}; expected 'throttled=0x<hex>'")
    return ThrottleStatus(int(m.group(1), 0))


def _run_vcgencmd() -> str:
    done = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=2.0, check=True)
    return done.stdout


class VcgencmdThrottleReader:
    """Runs ``vcgencmd get_throttled`` (a Pi only); ``run`` injectable for tests."""

    def __init__(self, run: Optional[Callable[[], str]] = None) -> None:
        self._run = run or _run_vcgencmd

    @staticmethod
    def available() -> bool:
        return shutil.which("vcgencmd") is not None

    def read(self, now_ms: int) -> Optional[ThrottleStatus]:
        try:
            return parse_vcgencmd_throttled(self._run())
        except (OSError, subprocess.SubprocessError, TelemetryError) as exc:
            _warn("vcgencmd", "vcgencmd get_throttled failed: %s", exc)
            return None


# --------------------------------------------------------------------------- load


class PsutilLoadReader:
    """System-wide CPU utilisation since the previous call (``psutil.cpu_percent(None)``).

    The first call has no previous sample and reports 0; the hub's first sample
    therefore says little about load. ``cpu_percent`` injectable for tests.
    """

    def __init__(self, cpu_percent: Optional[Callable[[], float]] = None) -> None:
        if cpu_percent is None:
            import psutil

            cpu_percent = lambda: psutil.cpu_percent(interval=None)  # noqa: E731
        self._cpu_percent = cpu_percent

    def read(self, now_ms: int) -> Optional[float]:
        try:
            return min(max(float(self._cpu_percent()), 0.0), 100.0)
        except (OSError, RuntimeError, ValueError, TypeError) as exc:
            _warn("psutil", "psutil.cpu_percent failed: %s", exc)
            return None
