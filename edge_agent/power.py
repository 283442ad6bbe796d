"""A documented Raspberry Pi 4 power model: energy the device spends on one frame.

Pure arithmetic, no I/O. The model follows the structure used by Neurosurgeon
(Kang et al., "Neurosurgeon: Collaborative Intelligence Between the Cloud and
Mobile Edge", ASPLOS 2017) and most split-inference papers since: the device's
energy for one frame is compute power x head time, plus radio transmit power x
transmit time, plus idle power x the time spent waiting for the server's answer.

    tx_ms     = tx_bytes * 8 / uplink_kbps             (1 kbps = 1 bit per ms)
    energy_mJ = cpu_active_w * head_ms
              + (idle_w + radio_tx_w) * tx_ms
              + tx_uj_per_byte * tx_bytes / 1000
              + (idle_w + radio_wait_w) * wait_ms

(W x ms = mJ.) Powers are *whole-board* figures at the 5 V input, so the result
is what a battery actually pays, idle floor included.

Default constants and where they come from (approximate; calibrate your own
board with a USB power meter and pass a :class:`PowerModel`):

* ``idle_w = 2.7`` - Raspberry Pi 4 Model B idle, 540 mA at 5 V.
  Jeff Geerling's Pi power benchmarks
  (pidramble.com/wiki/benchmarks/power-consumption) and the Raspberry Pi
  documentation's "typical bare-board active current consumption" table
  (600 mA) roughly agree.
* ``cpu_active_w = 6.4`` - the same source's ``stress --cpu 4`` figure,
  1280 mA (6.4 W). ONNX Runtime with 4 intra-op threads keeps all four
  Cortex-A72 cores busy, so a head run is close to this; with 1 thread use
  about 3.6 W (one core ~ 0.9 W above idle).
* ``radio_tx_w = 0.7`` - extra board power while the CYW43455 Wi-Fi radio
  transmits. The CYW43455 datasheet (Infineon/Cypress) lists transmit currents
  of a few hundred mA at 3.3 V during a burst (~1 W peak); averaged over a
  saturated upload we assume 0.7 W above idle. This is an estimate, not a
  measurement on a Pi - it is the constant most worth calibrating.
* ``radio_wait_w = 0.1`` - extra power while the radio stays awake for the
  reply (receiving, power save off); an estimate of the same kind.
* ``tx_uj_per_byte = 0.01`` - CPU cost per byte sent that does not depend on
  the link rate (serialization, copies, the kernel's TCP stack). Derived, not
  measured: one Cortex-A72 core (~0.9 W above idle) pushing ~100 MB/s through
  gRPC gives ~10 nJ per byte. The linear-in-bytes term follows the Wi-Fi
  energy model of Balasubramanian et al. ("Energy consumption in mobile
  phones: a measurement study and implications for network applications",
  IMC 2009).

Limits: the model ignores overlap (pipelining hides waiting behind the next
frame's head; the model charges it to the frame that waits), JPEG encoding
time, DVFS (a throttled CPU draws less power for longer - the caller passes the
slowed-down head time), and Wi-Fi power-save tail energy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

from edge_agent.errors import ConfigError, PolicyError

__all__ = ["EnergyBreakdown", "PowerModel", "PI4_DEFAULT", "transmit_ms"]


def transmit_ms(tx_bytes: float, uplink_kbps: float) -> float:
    """Time to push ``tx_bytes`` through an uplink of ``uplink_kbps``; ``inf`` when it is 0."""
    if tx_bytes <= 0:
        return 0.0
    if uplink_kbps <= 0:
        return math.inf
    return tx_bytes * 8.0 / uplink_kbps


@dataclass(frozen=True)
class EnergyBreakdown:
    """Energy of one frame by component, in millijoules."""

    compute_mj: float
    transmit_mj: float
    per_byte_mj: float
    wait_mj: float

    @property
    def total_mj(self) -> float:
        return self.compute_mj + self.transmit_mj + self.per_byte_mj + self.wait_mj


@dataclass(frozen=True, kw_only=True)
class PowerModel:
    """Whole-board power constants (watts, microjoules per byte); see the module docstring."""

    idle_w: float = 2.7
    cpu_active_w: float = 6.4
    radio_tx_w: float = 0.7
    radio_wait_w: float = 0.1
    tx_uj_per_byte: float = 0.01

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"power.{f.name} = {value!r}; expected a finite number >= 0")
        if self.cpu_active_w < self.idle_w:
            raise ConfigError(
                f"power.cpu_active_w = {self.cpu_active_w} is below power.idle_w = {self.idle_w}; "
                "expected whole-board power while computing >= idle power"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "PowerModel":
        """Build from a TOML table (``[power]``); unknown keys raise :class:`ConfigError` naming the valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ConfigError(f"unknown power key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
        return cls(**dict(values))

    def breakdown(self, head_ms: float, tx_bytes: float, uplink_kbps: float, wait_ms: float) -> EnergyBreakdown:
        """Energy of one frame by component; see the module docstring for the formula."""
        for name, value in (("head_ms", head_ms), ("tx_bytes", tx_bytes), ("wait_ms", wait_ms)):
            if math.isnan(value) or value < 0:
                raise PolicyError(f"{name} = {value!r}; expected a number >= 0")
        if math.isnan(uplink_kbps) or uplink_kbps < 0:
            raise PolicyError(f"uplink_kbps = {uplink_kbps!r}; expected a number >= 0")
        tx_ms = transmit_ms(tx_bytes, uplink_kbps)
        return EnergyBreakdown(
            compute_mj=self.cpu_active_w * head_ms,
            transmit_mj=(self.idle_w + self.radio_tx_w) * tx_ms if tx_ms else 0.0,
            per_byte_mj=self.tx_uj_per_byte * tx_bytes / 1000.0,
            wait_mj=(self.idle_w + self.radio_wait_w) * wait_ms,
        )

    def energy_mj(self, head_ms: float, tx_bytes: float, uplink_kbps: float, wait_ms: float) -> float:
        """Device energy for one frame in millijoules (``inf`` if bytes must cross a 0 kbps link)."""
        return self.breakdown(head_ms, tx_bytes, uplink_kbps, wait_ms).total_mj


PI4_DEFAULT = PowerModel()
"""The documented Raspberry Pi 4 Model B defaults."""
