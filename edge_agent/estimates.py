"""Per-cut predictions of the split policy, the checks of its inputs, and how its reasons
quote numbers. Pure functions: no clock, no I/O (see :mod:`edge_agent.policy` for the
formulas and the state machine that uses them).

Feature codecs (issue 13) need no term of their own: a codec variant is a cut of its own
(``<cut>_<codec>``) whose ``wire_bytes`` are the measured bytes after packing and entropy
coding, whose ``head_ms`` includes the measured encode time and whose ``tail_ms`` includes
the server's decode time (:mod:`partitioner.codec_stage` writes them into the profiles), so
``head + wire + rtt + server`` already weighs bytes against codec cost."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from edge_agent.errors import PolicyError
from edge_agent.power import PowerModel
from edge_agent.residuals import CorrectedEstimate
from edge_agent.residuals import Residuals as Residuals  # the policy's measured corrections (issue 19)
from edge_agent.types import CutEstimate, CutProfile, Telemetry
from protos.names import OUTPUT_CUT


@dataclass(frozen=True)
class Choice:
    """What the objective picks among the available estimates."""

    best: CutEstimate
    metric: str  # "latency" or "energy"
    ranked: tuple[CutEstimate, ...]  # candidates in the metric's order
    note: str  # objective context for the reason
    meets_slo: frozenset[str]  # ids meeting the SLO (SLO objective only)


def estimate_cuts(cuts: Sequence[CutProfile], t: Telemetry, *, uplink_kbps: float, rtt_ms: float,
                  server_scale: float, cloud_available: bool, power: PowerModel,
                  busy_ms: float = 0.0) -> list[CutEstimate]:
    """Predicted latency and energy of every cut under telemetry ``t`` (formulas in :mod:`edge_agent.policy`);
    ``busy_ms`` is added to every offloading cut's server time while the server says it is busy."""
    queue = (t.server_queue_ms or 0.0) + busy_ms
    out = []
    for cut in cuts:
        head = cut.head_ms * t.slowdown_factor
        if cut.is_output:
            out.append(CutEstimate(cut.cut_id, head, 0.0, 0.0, head, power.energy_mj(head, 0, uplink_kbps, 0.0)))
            continue
        server = queue + cut.tail_ms * server_scale
        wire = cut.wire_bytes * 8.0 / uplink_kbps if uplink_kbps > 0 else math.inf
        latency = head + wire + rtt_ms + server
        energy = power.energy_mj(head, cut.wire_bytes, uplink_kbps, rtt_ms + server)
        why = ""
        if not cloud_available:
            why = "cloud unavailable"
        elif uplink_kbps <= 0:
            why = "uplink 0 kbps"
        out.append(CutEstimate(cut.cut_id, head, wire, server, latency, energy, available=not why,
                               unavailable_reason=why))
    return out


def is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and not math.isnan(value)


def is_positive(value: object) -> bool:
    return is_number(value) and math.isfinite(value) and value > 0  # type: ignore[operator,arg-type]


def check_cuts(cuts: Sequence[CutProfile]) -> None:
    if not cuts:
        raise PolicyError("no cuts given; expected the bundle's cuts including 'output'")
    seen: set[str] = set()
    for cut in cuts:
        if not isinstance(cut, CutProfile):
            raise PolicyError(f"{cut!r} is not a CutProfile")
        if cut.cut_id in seen:
            raise PolicyError(f"cut {cut.cut_id!r} appears twice")
        seen.add(cut.cut_id)
        for name in ("head_ms", "tail_ms", "wire_bytes"):
            value = getattr(cut, name)
            if not is_number(value) or value < 0 or math.isinf(value):
                raise PolicyError(f"cut {cut.cut_id!r}: {name} = {value!r}; expected a finite number >= 0")
    if OUTPUT_CUT not in seen:
        raise PolicyError(f"no {OUTPUT_CUT!r} cut (have {sorted(seen)}); the policy needs it for local fallback")


def check_telemetry(t: Telemetry) -> None:
    if not isinstance(t, Telemetry):
        raise PolicyError(f"{t!r} is not a Telemetry value")

    def bad(name: str, expected: str) -> PolicyError:
        return PolicyError(f"telemetry.{name} = {getattr(t, name)!r}; expected {expected}")

    if t.battery_pct is not None and (not is_number(t.battery_pct) or not 0 <= t.battery_pct <= 100):
        raise bad("battery_pct", "a percentage in [0, 100] or None")
    for name in ("uplink_kbps", "rtt_ms", "server_queue_ms", "server_compute_ms"):
        value = getattr(t, name)
        if value is not None and (not is_number(value) or value < 0 or math.isinf(value)):
            raise bad(name, "a finite number >= 0 or None")
    if not is_positive(t.slowdown_factor):
        raise bad("slowdown_factor", "a finite number > 0")
    if t.cpu_load_pct is not None and not is_number(t.cpu_load_pct):
        raise bad("cpu_load_pct", "a number or None")
    if t.cpu_temp_c is not None and not is_number(t.cpu_temp_c):
        raise bad("cpu_temp_c", "a number or None")


def metric_of(e: CutEstimate, metric: str) -> float:
    return e.latency_ms if metric == "latency" else e.energy_mj


def runner_up(choice: Choice) -> Optional[CutEstimate]:
    for e in choice.ranked:
        if e.cut_id != choice.best.cut_id:
            return e
    return None


def gain_pct(cur: CutEstimate, best: CutEstimate, choice: Choice) -> float:
    """How much better best is than the current cut, in percent of the current value."""
    if choice.meets_slo and cur.cut_id not in choice.meets_slo:
        return math.inf
    old, new = metric_of(cur, choice.metric), metric_of(best, choice.metric)
    if math.isinf(old):
        return math.inf
    if old <= 0:
        return 0.0
    return (old - new) / old * 100.0


def compare(best: CutEstimate, other: Optional[CutEstimate], metric: str) -> str:
    fmt = fmt_ms if metric == "latency" else fmt_mj
    a = metric_of(best, metric)
    if other is None:
        return f"{best.cut_id} {fmt(a)}{corrected(best, metric)} (only available cut)"
    b = metric_of(other, metric)
    rel = "<" if a < b else ("=" if a == b else ">")
    pct = ""
    if math.isfinite(b) and b > 0:
        pct = f" ({(a - b) / b * 100:+.0f}%)"
    first, second = f"{best.cut_id} {fmt(a)}{corrected(best, metric)}", f"{other.cut_id} {fmt(b)}"
    return f"{first} {rel} {second}{corrected(other, metric)}{pct}"


def corrected(e: CutEstimate, metric: str) -> str:
    """" (model 74, measured -18)" when a latency carries a measured correction (:mod:`edge_agent.residuals`)."""
    if metric != "latency" or not isinstance(e, CorrectedEstimate) or abs(e.correction_ms) < 0.5:
        return ""  # none, or one that would read "measured -0"
    return f" (model {e.model_ms:.0f}, measured {e.correction_ms:+.0f})"


def bound(slo: Optional[float]) -> str:
    return "none" if slo is None else f"{slo:g} ms"


def fmt_ms(value: float) -> str:
    if math.isinf(value):
        return "inf ms"
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def fmt_mj(value: float) -> str:
    if math.isinf(value):
        return "inf mJ"
    return f"{value:.1f} mJ" if value < 10 else f"{value:.0f} mJ"
