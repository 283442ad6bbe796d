"""Telemetry readers against recorded sysfs trees, psutil values and vcgencmd output; the hub."""
from __future__ import annotations

import collections
import logging
import pathlib
import shutil

import pytest

from edge_agent.telemetry import (
    BatteryReading,
    PsutilBatteryReader,
    PsutilLoadReader,
    PsutilTemperatureReader,
    SlowdownTracker,
    ServerTimes,
    ServerTimeTracker,
    SysfsBatteryReader,
    SysfsTemperatureReader,
    TelemetryError,
    TelemetryHub,
    ThrottleStatus,
    TraceBatteryReader,
    VcgencmdThrottleReader,
    combine_telemetry,
    parse_battery_trace,
    parse_power_supply,
    parse_vcgencmd_throttled,
)
from edge_agent.telemetry.bandwidth import BandwidthEstimator

DATA = pathlib.Path(__file__).parent / "data"

# psutil's own named tuples, recorded from a laptop and from a Raspberry Pi 4 (Raspberry Pi OS)
sbattery = collections.namedtuple("sbattery", ["percent", "secsleft", "power_plugged"])
shwtemp = collections.namedtuple("shwtemp", ["label", "current", "high", "critical"])
LAPTOP_TEMPS = {
    "acpitz": [shwtemp("", 27.8, None, None)],
    "coretemp": [shwtemp("Package id 0", 54.0, 100.0, 100.0), shwtemp("Core 0", 51.0, 100.0, 100.0),
                 shwtemp("Core 1", 57.0, 100.0, 100.0)],
    "nvme": [shwtemp("Composite", 38.85, 84.85, 84.85)],
}
PI4_TEMPS = {"cpu_thermal": [shwtemp("", 61.835, None, None)]}


# --------------------------------------------------------------------------- battery


@pytest.mark.parametrize(
    "tree, expected",
    [
        ("power_supply_laptop", BatteryReading(87.0, False, "sysfs:BAT0")),
        ("power_supply_pi_ups", BatteryReading(45.0, True, "sysfs:battery")),  # charge_now/charge_full, USB online
        ("power_supply_pi_ups_discharging", BatteryReading(14.0, False, "sysfs:max17040_battery")),
        ("power_supply_mains_only", None),
    ],
)
def test_sysfs_battery_reader_on_recorded_trees(tree: str, expected: BatteryReading) -> None:
    reader = SysfsBatteryReader(DATA / tree)
    assert reader.read(0) == expected
    assert reader.has_battery() is (expected is not None)


def test_power_supply_ignores_device_batteries_and_reads_status_words() -> None:
    mouse_only = {"hid-00:1f-battery": {"type": "Battery\n", "scope": "Device\n", "capacity": "5\n",
                                        "status": "Discharging\n"},
                  "AC": {"type": "Mains\n", "online": "1\n"}}
    assert parse_power_supply(mouse_only) is None
    for status, charging in (("Charging", True), ("Full", True), ("Not charging", True), ("Discharging", False)):
        reading = parse_power_supply({"BAT1": {"type": "Battery", "status": status, "capacity": "50"}})
        assert reading == BatteryReading(50.0, charging, "sysfs:BAT1")
    # status Unknown and no external supply listed: cannot tell
    assert parse_power_supply({"BAT1": {"type": "Battery", "status": "Unknown", "capacity": "50"}}).charging is None
    # status Unknown and the mains adapter offline: on battery
    unknown = {"BAT1": {"type": "Battery", "status": "Unknown", "energy_now": "10", "energy_full": "40"},
               "AC": {"type": "Mains", "online": "0"}}
    assert parse_power_supply(unknown) == BatteryReading(25.0, False, "sysfs:BAT1")


def test_sysfs_battery_reader_missing_root_is_unknown(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    reader = SysfsBatteryReader(tmp_path / "absent")
    with caplog.at_level(logging.DEBUG, logger="edge_agent.telemetry.battery"):
        assert reader.read(0) is None
        assert reader.read(1) is None
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.WARNING, logging.DEBUG]  # warn once, then debug


def test_psutil_battery_reader_on_recorded_values() -> None:
    assert PsutilBatteryReader(lambda: sbattery(93.4, 14_000, False)).read(0) == BatteryReading(93.4, False, "psutil")
    assert PsutilBatteryReader(lambda: sbattery(100, -2, True)).read(0) == BatteryReading(100.0, True, "psutil")
    assert PsutilBatteryReader(lambda: sbattery(40, -1, None)).read(0) == BatteryReading(40.0, None, "psutil")
    assert PsutilBatteryReader(lambda: None).read(0) is None  # no battery

    def broken() -> None:
        raise OSError("EIO")

    assert PsutilBatteryReader(broken).read(0) is None


def test_battery_trace_interpolates_and_holds(tmp_path: pathlib.Path) -> None:
    reader = TraceBatteryReader(DATA / "battery_trace.csv", start_ms=1_000)
    assert reader.read(0) is None  # before the trace starts
    assert reader.read(1_000) == BatteryReading(30.0, False, "trace")
    assert reader.read(31_000) == BatteryReading(24.0, False, "trace")  # halfway 30 -> 18
    assert reader.read(121_000) == BatteryReading(15.0, True, "trace")
    assert reader.read(10_000_000) == BatteryReading(40.0, True, "trace")  # held after the end


@pytest.mark.parametrize(
    "text, message",
    [
        ("t,pct,charging\n0,1,0\n", "header 't,pct,charging'"),
        ("time_s,battery_pct,charging\n0,50,maybe\n", "trace:2: charging 'maybe'"),
        ("time_s,battery_pct,charging\n0,150,1\n", "trace:2: battery_pct '150'"),
        ("time_s,battery_pct,charging\n5,50,1\n5,40,1\n", "trace:3: time_s '5'"),
        ("time_s,battery_pct,charging\nx,50,1\n", "are not numbers"),
        ("time_s,battery_pct,charging\n", "no rows"),
    ],
)
def test_battery_trace_errors_quote_the_line(text: str, message: str) -> None:
    with pytest.raises(TelemetryError) as info:
        parse_battery_trace(text)
    assert message in str(info.value)


def test_missing_trace_file_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(TelemetryError, match="cannot read battery trace"):
        TraceBatteryReader(tmp_path / "nope.csv")


# --------------------------------------------------------------------------- temperature, throttling, load


def test_sysfs_thermal_zones() -> None:
    assert SysfsTemperatureReader(DATA / "thermal_pi4").read(0) == pytest.approx(61.835)
    assert SysfsTemperatureReader(DATA / "thermal_laptop").read(0) == pytest.approx(54.0)  # x86_pkg_temp wins
    assert SysfsTemperatureReader(DATA / "no_such_dir").read(0) is None


def test_psutil_temperatures_prefer_the_cpu_sensor() -> None:
    assert PsutilTemperatureReader(lambda: PI4_TEMPS).read(0) == pytest.approx(61.835)
    assert PsutilTemperatureReader(lambda: LAPTOP_TEMPS).read(0) == pytest.approx(54.0)  # coretemp package
    assert PsutilTemperatureReader(lambda: {"nvme": [shwtemp("Composite", 38.85, 84.85, 84.85)]}).read(0) == 38.85
    assert PsutilTemperatureReader(lambda: {}).read(0) is None


@pytest.mark.parametrize(
    "output, flags, slowed, description",
    [
        ("throttled=0x0\n", 0, False, "not throttled"),
        ("throttled=0x50000\n", 0x50000, False, "not throttled"),  # happened since boot, fine now
        ("throttled=0x50005\n", 0x50005, True, "under-voltage, throttled"),
        ("throttled=0x80008\n", 0x80008, True, "soft temperature limit"),
        ("throttled=0x20002", 0x20002, True, "frequency capped"),
    ],
)
def test_vcgencmd_get_throttled_bitmask(output: str, flags: int, slowed: bool, description: str) -> None:
    status = parse_vcgencmd_throttled(output)
    assert status == ThrottleStatus(flags)
    assert status.slowed_now is slowed
    assert status.describe() == description
    assert VcgencmdThrottleReader(lambda: output).read(0) == status


def test_vcgencmd_bits_and_history() -> None:
    s = parse_vcgencmd_throttled("throttled=0x50005")
    assert (s.under_voltage, s.freq_capped, s.throttled, s.soft_temp_limit) == (True, False, True, False)
    assert s.occurred_since_boot == 0b0101


def test_vcgencmd_garbage_is_unknown() -> None:
    with pytest.raises(TelemetryError, match="vcgencmd output 'VCHI initialization failed'"):
        parse_vcgencmd_throttled("VCHI initialization failed")
    assert VcgencmdThrottleReader(lambda: "VCHI initialization failed").read(0) is None


def test_load_reader_clamps_and_survives_errors() -> None:
    assert PsutilLoadReader(lambda: 37.5).read(0) == 37.5
    assert PsutilLoadReader(lambda: 100.4).read(0) == 100.0

    def broken() -> float:
        raise RuntimeError("no /proc")

    assert PsutilLoadReader(broken).read(0) is None


# --------------------------------------------------------------------------- trackers and the hub


def test_slowdown_tracker_follows_measured_head_times() -> None:
    t = SlowdownTracker(alpha=0.5)
    assert t.factor == 1.0
    t.observe(60.0, 30.0, 0)
    assert t.factor == 2.0  # the first sample sets it
    t.observe(90.0, 30.0, 100)
    assert t.factor == pytest.approx(2.5)
    t.observe(5.0, 0.0, 200)  # "input" cut: no head, nothing learned
    assert t.factor == pytest.approx(2.5) and t.samples == 2
    t.observe(10_000.0, 1.0, 300)  # clamped at 50
    assert t.factor == pytest.approx(2.5 + 0.5 * (50 - 2.5))
    with pytest.raises(TelemetryError, match="measured_head_ms = -1"):
        t.observe(-1.0, 30.0, 400)


def test_server_time_tracker_keeps_compute_per_cut_and_forgets() -> None:
    s = ServerTimeTracker(alpha=0.5, forget_after_ms=10_000)
    s.observe("input", 2.0, 20.0, 0)
    s.observe("input", 4.0, 30.0, 100)
    s.observe("features_13", None, 3.0, 200)
    assert s.times("input", 300) == ServerTimes(3.0, 25.0)
    assert s.times("features_13", 300).compute_ms == 3.0
    assert s.times("features_6", 300).compute_ms is None
    assert s.times("input", 20_000) == ServerTimes(None, None)


def test_combine_telemetry_is_pure_and_complete() -> None:
    bw = BandwidthEstimator()
    bw.observe_rtt(12.0, 0)
    bw.observe_transfer(100_000, 112.0, 0)
    t = combine_telemetry(
        500, battery=BatteryReading(15.0, False, "x"), cpu_temp_c=70.0, throttle=ThrottleStatus(0x4),
        cpu_load_pct=40.0, bandwidth=bw.estimate(500), server=ServerTimeTracker().times(None, 0),
        slowdown_factor=1.7, cloud_available=False)
    assert (t.at_ms, t.battery_pct, t.charging, t.cpu_temp_c, t.throttled, t.cpu_load_pct) == \
        (500, 15.0, False, 70.0, True, 40.0)
    assert t.uplink_kbps == pytest.approx(100_000 * 8 / 100.0) and t.rtt_ms == 12.0
    assert (t.slowdown_factor, t.cloud_available) == (1.7, False)
    # without the firmware bitmask, 80 C or more counts as throttled
    assert combine_telemetry(0, cpu_temp_c=81.0).throttled is True
    assert combine_telemetry(0, cpu_temp_c=79.0).throttled is False
    assert combine_telemetry(0, cpu_temp_c=81.0, throttle=ThrottleStatus(0)).throttled is False


class CountingReader:
    def __init__(self, values: list) -> None:
        self.values = values
        self.calls = 0

    def read(self, now_ms: int) -> object:
        self.calls += 1
        return self.values[min(self.calls - 1, len(self.values) - 1)]


def test_hub_reads_each_source_at_most_once_per_interval() -> None:
    temp = CountingReader([50.0, 60.0])
    hub = TelemetryHub(battery=SysfsBatteryReader(DATA / "power_supply_pi_ups_discharging"), temperature=temp,
                       throttle=VcgencmdThrottleReader(lambda: "throttled=0x0"), load=PsutilLoadReader(lambda: 12.0),
                       read_interval_ms=1_000)
    hub.slowdown.observe(45.0, 30.0, 0)
    hub.server.observe("features_13", 1.0, 4.0, 0)
    t0 = hub.sample(0, current_cut="features_13")
    t1 = hub.sample(999, current_cut="features_13")
    t2 = hub.sample(1_000, cloud_available=False)
    assert (t0.cpu_temp_c, t1.cpu_temp_c, t2.cpu_temp_c, temp.calls) == (50.0, 50.0, 60.0, 2)
    assert (t0.battery_pct, t0.charging, t0.cpu_load_pct, t0.throttled) == (14.0, False, 12.0, False)
    assert (t0.slowdown_factor, t0.server_queue_ms, t0.server_compute_ms) == (1.5, 1.0, 4.0)
    assert t2.server_compute_ms is None and t2.cloud_available is False
    assert (t0.uplink_kbps, t0.rtt_ms) == (None, None)


def test_hub_for_this_machine_with_a_trace(tmp_path: pathlib.Path) -> None:
    hub = TelemetryHub.for_this_machine(battery_trace=DATA / "battery_trace.csv", start_ms=0,
                                        power_supply_root=tmp_path, thermal_root=DATA / "thermal_pi4")
    t = hub.sample(60_000)
    assert (t.battery_pct, t.charging, t.cpu_temp_c) == (18.0, False, pytest.approx(61.835))
    if shutil.which("vcgencmd") is None:  # 61.8 C is below the 80 C soft limit
        assert t.throttled is False


def test_hub_for_this_machine_picks_sysfs_battery() -> None:
    hub = TelemetryHub.for_this_machine(power_supply_root=DATA / "power_supply_laptop",
                                        thermal_root=DATA / "thermal_laptop")
    t = hub.sample(0)
    assert (t.battery_pct, t.charging, t.cpu_temp_c) == (87.0, False, 54.0)
    assert t.cpu_load_pct is not None and 0.0 <= t.cpu_load_pct <= 100.0  # the real psutil


def test_battery_trace_starts_at_the_first_read_by_default() -> None:
    reader = TraceBatteryReader(DATA / "battery_trace.csv")
    assert reader.read(5_000_000) == BatteryReading(30.0, False, "trace")  # a monotonic clock far from 0
    assert reader.read(5_060_000) == BatteryReading(18.0, False, "trace")
