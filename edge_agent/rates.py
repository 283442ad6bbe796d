"""Measured gate and exit rates in the policy's cost model (issue 16 part 3). Pure arithmetic.

The split policy predicts each cut's latency and energy for a frame that computes
(:func:`edge_agent.estimates.estimate_cuts`). With an early exit at a cut and a motion gate
in front, the expected cost *per captured frame* is::

    r = measured exit rate at the cut (exited / checked), e = exit head time (ms)
    latency_ms = head_ms + e + (1 - r) x (wire_ms + rtt_ms + server_ms)
    energy_mj  = r x E(head_ms + e, nothing sent)
               + (1 - r) x E(head_ms + e, wire_bytes sent, waiting rtt_ms + server_ms)
    then, with g = measured share of frames gated and c = gate time per frame (ms):
    energy_mj  = g x E(c, nothing sent) + (1 - g) x energy_mj + (1 - g) x E(c, nothing sent)

``E`` is the documented power model (:mod:`edge_agent.power`). Latency stays a per-computed-
frame figure (a gated frame computes nothing, and the SLO is about frames that compute),
so the gate changes the energy per frame and not the ranking by latency; a high exit rate
lowers both latency and energy of its cut, so it can favour a cut that has an exit. A cut
without an exit, or one whose exit has not checked a frame yet, is unchanged (the rate the
partitioner measured on held-out frames is the prior until ``min_checked`` frames ran).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from edge_agent.power import PowerModel
from edge_agent.types import CutEstimate

__all__ = ["FrameRates", "NO_RATES", "apply_rates", "observed_rates"]


@dataclass(frozen=True)
class FrameRates:
    """What the frame path measured: per-cut exit rates and times, the gated share and gate cost."""

    exit_rates: Mapping[str, float] = field(default_factory=dict)  # cut -> exited / checked
    exit_ms: Mapping[str, float] = field(default_factory=dict)  # cut -> exit head time per check
    gate_rate: float = 0.0  # share of captured frames the gate skipped
    gate_ms: float = 0.0  # gate time per frame

    def __post_init__(self) -> None:
        for name, value in (("gate_rate", self.gate_rate), ("gate_ms", self.gate_ms)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} = {value!r}; expected a finite number >= 0")
        if self.gate_rate > 1:
            raise ValueError(f"gate_rate = {self.gate_rate!r}; expected a share in [0, 1]")
        for cut, rate in self.exit_rates.items():
            if not (isinstance(rate, (int, float)) and 0.0 <= rate <= 1.0):
                raise ValueError(f"exit rate of {cut!r} = {rate!r}; expected a share in [0, 1]")


NO_RATES = FrameRates()


def observed_rates(exits: Sequence[object], *, prior_rates: Mapping[str, float], gated: int, captured: int,
                   gate_ms: float, min_checked: int = 20) -> FrameRates:
    """Rates from counters: ``exits`` are :class:`edge_agent.exits.ExitCount`-like (cut_id,
    checked, exited, exit_ms); until ``min_checked`` frames reached an exit its held-out prior counts."""
    rates, times = {}, {}
    for count in exits:
        cut, checked, exited = count.cut_id, count.checked, count.exited  # type: ignore[attr-defined]
        if checked >= min_checked:
            rates[cut] = exited / checked
        elif cut in prior_rates:
            rates[cut] = prior_rates[cut]
        times[cut] = float(count.exit_ms)  # type: ignore[attr-defined]
    share = gated / captured if captured > 0 else 0.0
    return FrameRates(rates, times, min(max(share, 0.0), 1.0), gate_ms)


def apply_rates(estimates: Sequence[CutEstimate], rates: FrameRates, power: PowerModel, *,
                wire_bytes: Mapping[str, int], uplink_kbps: float) -> list[CutEstimate]:
    """Expected per-frame latency and energy of every cut (formulas in the module docstring)."""
    gate_mj = power.energy_mj(rates.gate_ms, 0, uplink_kbps, 0.0) if rates.gate_ms > 0 else 0.0
    out = []
    for est in estimates:
        r: Optional[float] = rates.exit_rates.get(est.cut_id)
        if r is not None and est.cut_id in rates.exit_ms:
            e = rates.exit_ms[est.cut_id]
            head = est.head_ms + e
            rest = est.wire_ms + max(est.latency_ms - est.head_ms - est.wire_ms - est.server_ms, 0.0) + est.server_ms
            wait = max(est.latency_ms - est.head_ms - est.wire_ms, 0.0)  # rtt + server
            local = power.energy_mj(head, 0, uplink_kbps, 0.0)
            offload = power.energy_mj(head, wire_bytes.get(est.cut_id, 0), uplink_kbps, wait) \
                if math.isfinite(est.wire_ms) else math.inf
            est = dataclasses.replace(est, head_ms=head, wire_ms=_share(1 - r, est.wire_ms),
                                      server_ms=_share(1 - r, est.server_ms), latency_ms=head + _share(1 - r, rest),
                                      energy_mj=r * local + _share(1 - r, offload))
        if rates.gate_rate > 0 or gate_mj > 0:
            g = rates.gate_rate
            est = dataclasses.replace(est, energy_mj=g * gate_mj + (1 - g) * (est.energy_mj + gate_mj))
        out.append(est)
    return out


def _share(weight: float, value: float) -> float:
    """``weight x value`` where a zero weight makes even an infinite value vanish."""
    return 0.0 if weight <= 0 else weight * value
