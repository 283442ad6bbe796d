"""One bandwidth probe's samples combined into what it says about the link (pure; no I/O, no clock).

A probe while fully local sends a few warm pings and a few real transfers (see
:mod:`edge_agent.probes`). On a small device busy with local inference (a throttled core,
a CPU quota) any one sample can be stretched by the device's own CPU stalls; a stall only
ever *adds* time, so the link is what the fastest samples show:

* the RTT is the minimum of the warm pings (``rtt_floor_ms``);
* the uplink is measured on the transfer with the shortest network time (round trip minus
  the server's reported time): :func:`fastest_transfer`;
* the link time the probe occupied, charged against the probe duty cycle, is its transfers
  at the fastest one's pace (``link_ms``), not its wall time.

Limits: with every sample stretched (a device stalled throughout) the floor is still too
high; it is never too low, so the estimate errs on the side of staying local.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from edge_agent.telemetry._common import MIN_TX_FRACTION, TelemetryError

__all__ = ["ProbeResult", "ProbeTransfer", "combine_probe", "fastest_transfer"]


@dataclass(frozen=True)
class ProbeTransfer:
    """One completed probe transfer: ``sent_bytes`` up, the answer after ``duration_ms``,
    of which the server reported ``server_ms`` (queue + compute)."""

    sent_bytes: int
    duration_ms: float
    server_ms: float = 0.0

    def __post_init__(self) -> None:
        for name in ("sent_bytes", "duration_ms", "server_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise TelemetryError(f"probe transfer {name} = {value!r}; expected a finite number >= 0")

    @property
    def network_ms(self) -> float:
        """The round trip without the server's time (never below 0)."""
        return max(0.0, self.duration_ms - min(self.server_ms, self.duration_ms))


@dataclass(frozen=True)
class ProbeResult:
    rtt_floor_ms: Optional[float]  # the fastest warm ping; None without one
    fastest: Optional[ProbeTransfer]  # the transfer to measure the uplink on; None without one
    link_ms: Optional[float]  # the link time its transfers occupied; None when none completed
    uplink_kbps: Optional[float]  # the fastest transfer's uplink after the RTT floor; None without it


def fastest_transfer(transfers: Sequence[ProbeTransfer]) -> Optional[ProbeTransfer]:
    """The transfer with the shortest network time per byte (the least stretched); None if none."""
    if not transfers:
        return None
    return min(transfers, key=lambda t: t.network_ms / max(t.sent_bytes, 1))


def combine_probe(pings_ms: Sequence[float], transfers: Sequence[ProbeTransfer]) -> ProbeResult:
    """What one probe's warm pings and completed transfers say about the link.

    ``uplink_kbps`` is ``bytes * 8 / (network_ms - rtt_floor_ms)`` of the fastest transfer,
    the wire time floored at ``MIN_TX_FRACTION`` of the network time (a payload within the link's
    burst), as :class:`~edge_agent.telemetry.bandwidth.BandwidthEstimator` does.
    """
    for ping in pings_ms:
        if isinstance(ping, bool) or not isinstance(ping, (int, float)) or not math.isfinite(ping) or ping < 0:
            raise TelemetryError(f"probe ping {ping!r} ms; expected a finite number >= 0")
    floor = min(pings_ms) if pings_ms else None
    fastest = fastest_transfer(transfers)
    if fastest is None:  # no transfer completed: the wall time counts (see probe_gap_ms)
        return ProbeResult(floor, None, None, None)
    net_ms = fastest.network_ms
    tx_ms = max(net_ms - (floor or 0.0), MIN_TX_FRACTION * net_ms)
    uplink = fastest.sent_bytes * 8.0 / tx_ms if tx_ms > 0 else None
    pace_ms_per_byte = net_ms / max(fastest.sent_bytes, 1)
    link_ms = sum(pace_ms_per_byte * max(t.sent_bytes, 1) for t in transfers)
    return ProbeResult(floor, fastest, link_ms, uplink)
