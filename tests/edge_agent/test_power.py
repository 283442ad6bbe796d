"""The Pi 4 power model: the documented formula, its units and its validation."""
from __future__ import annotations

import math

import pytest

from edge_agent.errors import ConfigError, PolicyError
from edge_agent.power import PI4_DEFAULT, PowerModel, transmit_ms


def test_defaults_are_the_documented_pi4_figures() -> None:
    assert (PI4_DEFAULT.idle_w, PI4_DEFAULT.cpu_active_w, PI4_DEFAULT.radio_tx_w,
            PI4_DEFAULT.radio_wait_w, PI4_DEFAULT.tx_uj_per_byte) == (2.7, 6.4, 0.7, 0.1, 0.01)


def test_transmit_time_in_ms_from_kbps() -> None:
    assert transmit_ms(1_000, 8) == 1_000.0  # 8000 bits at 8 bits/ms
    assert transmit_ms(12_000, 1_000) == pytest.approx(96.0)
    assert transmit_ms(0, 0) == 0.0
    assert transmit_ms(10, 0) == math.inf


def test_energy_formula_by_component() -> None:
    m = PowerModel(idle_w=2.0, cpu_active_w=6.0, radio_tx_w=1.0, radio_wait_w=0.5, tx_uj_per_byte=0.1)
    b = m.breakdown(head_ms=10.0, tx_bytes=1_000, uplink_kbps=800, wait_ms=20.0)
    assert b.compute_mj == pytest.approx(60.0)  # 6 W x 10 ms
    assert b.transmit_mj == pytest.approx(3.0 * 10.0)  # (2 + 1) W x 10 ms on the air
    assert b.per_byte_mj == pytest.approx(0.1)  # 0.1 uJ x 1000 B
    assert b.wait_mj == pytest.approx(2.5 * 20.0)
    assert m.energy_mj(10.0, 1_000, 800, 20.0) == pytest.approx(b.total_mj) == pytest.approx(140.1)


def test_local_only_frame_pays_compute_only() -> None:
    assert PI4_DEFAULT.energy_mj(90.0, 0, 0, 0.0) == pytest.approx(6.4 * 90)


def test_more_bytes_or_less_bandwidth_costs_more() -> None:
    m = PI4_DEFAULT
    assert m.energy_mj(0, 20_000, 1_000, 10) > m.energy_mj(0, 10_000, 1_000, 10)
    assert m.energy_mj(0, 10_000, 500, 10) > m.energy_mj(0, 10_000, 1_000, 10)
    assert m.energy_mj(0, 10, 0, 0) == math.inf


def test_calibration_from_a_toml_table() -> None:
    m = PowerModel.from_mapping({"idle_w": 3.0, "cpu_active_w": 7.5})
    assert (m.idle_w, m.cpu_active_w, m.radio_tx_w) == (3.0, 7.5, 0.7)
    with pytest.raises(ConfigError, match="unknown power key.s. idle_watts; valid keys: idle_w, cpu_active_w"):
        PowerModel.from_mapping({"idle_watts": 3.0})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"idle_w": -1.0}, "power.idle_w = -1.0; expected a finite number >= 0"),
        ({"radio_tx_w": math.nan}, "power.radio_tx_w = nan"),
        ({"tx_uj_per_byte": "0.01"}, "power.tx_uj_per_byte = '0.01'"),
        ({"idle_w": 5.0, "cpu_active_w": 4.0}, "cpu_active_w = 4.0 is below power.idle_w = 5.0"),
    ],
)
def test_bad_constants_raise_config_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        PowerModel(**kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize("args", [(-1.0, 0, 1.0, 0.0), (0.0, -5, 1.0, 0.0), (0.0, 0, -1.0, 0.0),
                                  (0.0, 0, 1.0, math.nan)])
def test_bad_arguments_raise(args: tuple) -> None:
    with pytest.raises(PolicyError):
        PI4_DEFAULT.energy_mj(*args)
