"""Battery readers: psutil, Linux ``/sys/class/power_supply``, or a simulated trace file.

Each reader's ``read(now_ms)`` returns a :class:`BatteryReading` or ``None`` when
the device has no battery or the source failed (logged once). ``charging`` means
"on external power": ``True`` while charging, full or plugged-but-not-charging,
``False`` only while discharging, ``None`` when the source cannot tell. The parsing
is pure (``battery_from_psutil``, ``parse_power_supply``, ``parse_battery_trace``);
the classes only fetch the raw values.
"""
from __future__ import annotations

import bisect
import csv
import io
import logging
import math
import pathlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence

from edge_agent.telemetry._common import TelemetryError, WarnOnce

logger = logging.getLogger(__name__)
_warn = WarnOnce(logger)

POWER_SUPPLY_ROOT = pathlib.Path("/sys/class/power_supply")
_SYSFS_ATTRS = ("type", "status", "capacity", "energy_now", "energy_full", "charge_now", "charge_full",
                "online", "present", "scope")


@dataclass(frozen=True)
class BatteryReading:
    battery_pct: Optional[float]
    charging: Optional[bool]
    source: str


class BatteryReader(Protocol):
    def read(self, now_ms: int) -> Optional[BatteryReading]: ...


# --------------------------------------------------------------------------- psutil


def battery_from_psutil(sample: Any) -> Optional[BatteryReading]:
    """Convert ``psutil.sensors_battery()``'s ``sbattery(percent, secsleft, power_plugged)``."""
    if sample is None:
        return None
    percent = getattr(sample, "percent", None)
    pct = None if percent is None else min(max(float(percent), 0.0), 100.0)
    plugged = getattr(sample, "power_plugged", None)
    return BatteryReading(pct, None if plugged is None else bool(plugged), "psutil")


class PsutilBatteryReader:
    """``psutil.sensors_battery`` (laptops, some UPS drivers); ``sensors_battery`` injectable for tests."""

    def __init__(self, sensors_battery: Optional[Callable[[], Any]] = None) -> None:
        if sensors_battery is None:
            import psutil

            sensors_battery = getattr(psutil, "sensors_battery", lambda: None)
        self._sensors_battery = sensors_battery

    def read(self, now_ms: int) -> Optional[BatteryReading]:
        try:
            return battery_from_psutil(self._sensors_battery())
        except (OSError, RuntimeError, ValueError, TypeError) as exc:
            _warn("psutil", "psutil.sensors_battery failed: %s", exc)
            return None


# --------------------------------------------------------------------------- sysfs


def _int_or_none(text: Optional[str]) -> Optional[int]:
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def parse_power_supply(supplies: Mapping[str, Mapping[str, str]]) -> Optional[BatteryReading]:
    """Reduce ``{supply_name: {attribute: file text}}`` to one reading.

    The first battery (``type`` Battery, not ``scope`` Device - that is a mouse or a
    headset) in name order gives the percent: ``capacity``, else ``energy_now /
    energy_full``, else ``charge_now / charge_full``. Its ``status`` gives
    ``charging`` (Charging, Full, Not charging -> True; Discharging -> False);
    when it says Unknown, any online Mains/USB supply means True.
    """
    batteries = [name for name in sorted(supplies)
                 if supplies[name].get("type", "").strip() == "Battery"
                 and supplies[name].get("scope", "").strip() != "Device"
                 and supplies[name].get("present", "1").strip() != "0"]
    if not batteries:
        return None
    name = batteries[0]
    attrs = supplies[name]
    pct: Optional[float] = None
    capacity = _int_or_none(attrs.get("capacity"))
    if capacity is not None:
        pct = float(capacity)
    else:
        for now_key, full_key in (("energy_now", "energy_full"), ("charge_now", "charge_full")):
            now, full = _int_or_none(attrs.get(now_key)), _int_or_none(attrs.get(full_key))
            if now is not None and full:
                pct = 100.0 * now / full
                break
    if pct is not None:
        pct = min(max(pct, 0.0), 100.0)
    status = attrs.get("status", "").strip().lower()
    charging: Optional[bool]
    if status in ("charging", "full", "not charging"):
        charging = True
    elif status == "discharging":
        charging = False
    else:
        online = [_int_or_none(a.get("online")) for a in supplies.values()
                  if a.get("type", "").strip() in ("Mains", "USB", "USB_C", "USB_PD")]
        charging = True if any(o == 1 for o in online) else (False if online else None)
    return BatteryReading(pct, charging, f"sysfs:{name}")


class SysfsBatteryReader:
    """Linux ``power_supply`` class (laptops, UPS HATs with a kernel fuel-gauge driver)."""

    def __init__(self, root: pathlib.Path = POWER_SUPPLY_ROOT) -> None:
        self._root = pathlib.Path(root)

    def has_battery(self) -> bool:
        try:
            return any((d / "type").is_file() and (d / "type").read_text().strip() == "Battery"
                       for d in self._root.iterdir())
        except OSError:
            return False

    def read(self, now_ms: int) -> Optional[BatteryReading]:
        try:
            supplies = {}
            for entry in sorted(self._root.iterdir()):
                attrs = {}
                for attr in _SYSFS_ATTRS:
                    try:
                        attrs[attr] = (entry / attr).read_text()
                    except OSError:  # absent attribute, or the driver refuses (ENODATA)
                        continue
                supplies[entry.name] = attrs
        except OSError as exc:
            _warn(f"sysfs:{self._root}", "cannot read %s: %s", self._root, exc)
            return None
        return parse_power_supply(supplies)


# --------------------------------------------------------------------------- simulated trace


@dataclass(frozen=True)
class TraceRow:
    time_s: float
    battery_pct: float
    charging: bool


_TRUE = {"1", "true", "yes", "charging"}
_FALSE = {"0", "false", "no", "discharging"}


def parse_battery_trace(text: str, *, source: str = "trace") -> tuple[TraceRow, ...]:
    """Parse ``time_s,battery_pct,charging`` CSV (header required, time strictly increasing)."""
    reader = csv.reader(io.StringIO(text))
    rows: list[TraceRow] = []
    header_seen = False
    for lineno, fields in enumerate(reader, start=1):
        if not fields or not "".join(fields).strip() or fields[0].lstrip().startswith("#"):
            continue
        cells = [f.strip() for f in fields]
        if not header_seen:
            if cells != ["time_s", "battery_pct", "charging"]:
                raise TelemetryError(f"{source}:{lineno}: header {','.join(cells)!r}; "
                                     "expected 'time_s,battery_pct,charging'")
            header_seen = True
            continue
        if len(cells) != 3:
            raise TelemetryError(f"{source}:{lineno}: {len(cells)} fields {cells!r}; expected 3")
        try:
            time_s, pct = float(cells[0]), float(cells[1])
        except ValueError as exc:
            raise TelemetryError(f"{source}:{lineno}: {cells[:2]!r} are not numbers") from exc
        if not math.isfinite(time_s) or time_s < 0 or (rows and time_s <= rows[-1].time_s):
            raise TelemetryError(f"{source}:{lineno}: time_s {cells[0]!r}; expected >= 0 and increasing")
        if not 0 <= pct <= 100:
            raise TelemetryError(f"{source}:{lineno}: battery_pct {cells[1]!r}; expected 0..100")
        flag = cells[2].lower()
        if flag not in _TRUE | _FALSE:
            raise TelemetryError(f"{source}:{lineno}: charging {cells[2]!r}; expected 1/0, true/false")
        rows.append(TraceRow(time_s, pct, flag in _TRUE))
    if not rows:
        raise TelemetryError(f"{source}: no rows; expected a header and at least one row")
    return tuple(rows)


def trace_value(rows: Sequence[TraceRow], t_s: float) -> Optional[BatteryReading]:
    """The trace at ``t_s``: percent interpolated linearly, charging from the row before; held after the end."""
    times = [r.time_s for r in rows]
    i = bisect.bisect_right(times, t_s) - 1
    if i < 0:
        return None
    row = rows[i]
    pct = row.battery_pct
    if i + 1 < len(rows):
        nxt = rows[i + 1]
        pct += (nxt.battery_pct - row.battery_pct) * (t_s - row.time_s) / (nxt.time_s - row.time_s)
    return BatteryReading(pct, row.charging, "trace")


class TraceBatteryReader:
    """A simulated battery from a CSV trace; ``time_s`` counts from ``start_ms`` on the caller's clock
    (``None``: from the first ``read``)."""

    def __init__(self, path: pathlib.Path, *, start_ms: Optional[int] = None) -> None:
        self._path = pathlib.Path(path)
        try:
            text = self._path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TelemetryError(f"cannot read battery trace {str(self._path)!r}: {exc}") from exc
        self._rows = parse_battery_trace(text, source=str(self._path))
        self._start_ms = start_ms

    def read(self, now_ms: int) -> Optional[BatteryReading]:
        if self._start_ms is None:
            self._start_ms = now_ms
        return trace_value(self._rows, (now_ms - self._start_ms) / 1000.0)
