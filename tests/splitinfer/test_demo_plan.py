"""The demo's link-story plan: the agent's cost model per phase, as a table of cuts and links."""
from __future__ import annotations

import pytest

from edge_agent.types import CutProfile
from splitinfer.demo_plan import best_link_for_split, plan_phase, plan_story, render

# a toy bundle: the JPEG (24 kB, 1 ms to encode), a codec cut (head half the model, 3 kB), the device (10 ms)
CUTS = [
    CutProfile("input", 0, 24_000, 1.0, 5.0),
    CutProfile("mid_q3", 50, 3_000, 5.0, 2.0),
    CutProfile("output", 100, 0, 10.0, 0.0),
]


@pytest.mark.parametrize(
    "uplink_kbps, rtt_ms, slowdown, winner, best_mid, best_end",
    [
        (400.0, 81.0, 4.0, "output", "mid_q3", "output"),  # slow: everything on the device
        (100_000.0, 5.0, 4.0, "input", "mid_q3", "input"),  # fast: the JPEG
        (2_000.0, 3.0, 10.0, "mid_q3", "mid_q3", "input"),  # a slow device on a 2 Mbit/s link: the split
        (None, 5.0, 4.0, "output", None, "output"),  # link down: only the device is available
    ],
)
def test_plan_phase_table(uplink_kbps, rtt_ms, slowdown, winner, best_mid, best_end):
    plan = plan_phase(CUTS, phase="p", uplink_kbps=uplink_kbps, rtt_ms=rtt_ms, slowdown=slowdown)
    assert (plan.winner, plan.best_mid, plan.best_end) == (winner, best_mid, best_end)
    if best_mid is not None:
        assert plan.mid_vs_end == pytest.approx(plan.values[best_mid] / plan.values[best_end])
        assert (plan.mid_vs_end < 1) == (winner == best_mid)


def test_plan_phase_energy_is_the_power_models_arithmetic():
    # device: 6.4 W x 10 ms x 4; split at 8 Mbit/s: 6.4 W x 5 ms x 4 + 3.4 W x 3 ms + 0.01 uJ/B x 3 kB + 2.8 W x (3 + 2) ms
    plan = plan_phase(CUTS, phase="p", uplink_kbps=8_000.0, rtt_ms=3.0, slowdown=4.0)
    assert plan.values["output"] == pytest.approx(256.0)
    assert plan.values["mid_q3"] == pytest.approx(128.0 + 10.2 + 0.03 + 14.0)
    latency = plan_phase(CUTS, phase="p", uplink_kbps=8_000.0, rtt_ms=3.0, slowdown=4.0, objective="latency")
    assert latency.values["mid_q3"] == pytest.approx(20.0 + 3.0 + 3.0 + 2.0)


def test_plan_story_rtt_is_twice_the_delay_plus_loopback_and_renders():
    plans = plan_story(CUTS, [("fast", 100_000.0, 2.0), ("outage", None, 0.0)], slowdowns=(4.0, 10.0),
                       loopback_rtt_ms=1.0)
    assert [(p.phase, p.slowdown, p.rtt_ms) for p in plans] == [
        ("fast", 4.0, 5.0), ("fast", 10.0, 5.0), ("outage", 4.0, 1.0), ("outage", 10.0, 1.0)]
    text = render(plans)
    assert "fast" in text and "down" in text and "mid/end" in text


@pytest.mark.parametrize("kwargs, match", [
    ({"objective": "cost"}, "objective 'cost'"), ({"uplink_kbps": 0.0}, "uplink_kbps 0.0"),
    ({"slowdown": 0.0}, "slowdown 0.0")])
def test_plan_phase_rejects_bad_input(kwargs, match):
    args = {"phase": "p", "uplink_kbps": 1000.0, "rtt_ms": 3.0, "slowdown": 4.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        plan_phase(CUTS, **args)


def test_best_link_for_split_is_the_grid_point_with_the_smallest_ratio():
    best = best_link_for_split(CUTS, slowdown=10.0, kbps=(400.0, 2000.0, 100_000.0), delays_ms=(1.0, 40.0))
    everything = [plan_phase(CUTS, phase="p", uplink_kbps=k, rtt_ms=2.0 * d + 1.0, slowdown=10.0)
                  for k in (400.0, 2000.0, 100_000.0) for d in (1.0, 40.0)]
    assert best.mid_vs_end == min(p.mid_vs_end for p in everything)
    assert (best.uplink_kbps, best.rtt_ms, best.winner) == (400.0, 3.0, "mid_q3")  # 538 vs the device 640 mJ
