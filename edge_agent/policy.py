"""The split policy: a pure state machine that picks the cut for the next frames.

It must never read a clock, sleep, log, start threads or touch files, sockets or
devices. The caller (the daemon) feeds observations with the time they happen at
(``now_ms``, from ``time.monotonic()``) and asks for decisions; the same inputs
always give the same decisions, so tests are tables of events.

Predictions, per cut (``CutEstimate``)::

    head_ms    = profiled head_ms x telemetry.slowdown_factor
    wire_ms    = wire_bytes x 8 / uplink_kbps             (0 for "output")
    server_ms  = server_queue_ms + busy_ms + tail_ms x server_scale (0 for "output")
    latency_ms = head_ms + wire_ms + rtt_ms + server_ms   (no rtt for "output") + measured residual (residuals.py)
    energy_mj  = PowerModel.energy_mj(head_ms, wire_bytes, uplink_kbps, wait_ms=rtt_ms + server_ms)

``busy_ms`` is the hold of the last ``note_server_busy`` (RESOURCE_EXHAUSTED) while it lasts,
else 0: a full server makes offloading dearer, it does not make the cloud unavailable.
``server_scale`` is measured server compute / profiled tail time of the cut in
use when the server reports ``server_compute_ms`` (so for that cut
``server_ms = server_queue_ms + server_compute_ms`` exactly), else 1: the
profiled ``tail_ms``. Before any bandwidth/RTT measurement the policy assumes
the priors ``PolicyConfig.prior_uplink_kbps`` / ``prior_rtt_ms`` and says so in
the reason ("(prior)"). While the cloud is unavailable every cut but "output"
is unavailable; a measured uplink of 0 kbps makes them unavailable too.

Objectives (``Objective``): LATENCY picks the smallest predicted latency;
ENERGY the smallest predicted energy; SLO the smallest energy among cuts whose
latency <= ``slo_ms``, or, when none meets it, the smallest latency (the reason
says so). The battery rule overrides the objective with ENERGY while the
battery is below ``battery_low_pct`` and discharging, until it charges or
reaches ``battery_resume_pct``.

Transitions (mode x event -> mode, cut). "best" is the objective's choice;
"forced" means no dwell and no hysteresis::

    mode            event                                    -> mode            cut
    --------------  ---------------------------------------  -  --------------  ----------------------------
    (none)          first decide                             -> AUTO            best (forced)
    AUTO            decide, best == current                  -> AUTO            current
    AUTO            decide, dwell not over                   -> AUTO            current
    AUTO            decide, gain <= hysteresis_pct           -> AUTO            current
    AUTO            decide, gain >  hysteresis_pct           -> AUTO            best
    AUTO            decide, first measurements after priors  -> AUTO            best (forced)
    AUTO            decide, current cut became unavailable   -> AUTO            best (forced)
    AUTO            note_server_busy, best != current        -> AUTO            best (forced)
    AUTO            objective/SLO/battery rule changed       -> AUTO            best (forced)
    AUTO, PINNED    cloud down (telemetry or note_*)         -> LOCAL_FALLBACK  "output" (forced)
    PINNED(output)  cloud down                               -> PINNED          "output"
    LOCAL_FALLBACK  cloud up again, not pinned               -> AUTO            best (forced)
    LOCAL_FALLBACK  cloud up again, pinned                   -> PINNED          pinned cut
    any             pin(c), cloud up or c == "output"        -> PINNED          c
    any             pin(c), cloud down                       -> LOCAL_FALLBACK  "output" (pin kept)
    PINNED          unpin                                    -> AUTO            best (forced)
    any             illegal input (time going backwards,     -> unchanged       unchanged (raises
                    bad telemetry, unknown cut, bad SLO)                          PolicyError / UnknownCutError)

``gain`` is how much better best is than the current cut, in percent of the
current cut's value of the objective's metric (infinite when the current cut
misses the SLO and best meets it). Dwell counts from the last cut change.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence

from edge_agent.errors import ConfigError, PolicyError, UnknownCutError
from edge_agent.estimates import (
    Choice, bound, check_cuts, check_telemetry, compare, estimate_cuts, fmt_mj, fmt_ms, gain_pct, is_number,
    Residuals, is_positive, runner_up,
)
from edge_agent.power import PI4_DEFAULT, PowerModel
from edge_agent.rates import NO_RATES, apply_rates
from protos.names import INPUT_CUT, OUTPUT_CUT
from edge_agent.types import CutEstimate, CutProfile, Decision, Mode, Objective, Telemetry

__all__ = ["PolicyConfig", "SplitPolicy", "OUTPUT_CUT", "INPUT_CUT"]

WIRE_BYTES_ALPHA = 0.3  # smoothing of the measured bytes per offload (see note_wire_bytes)
_SERVER_SCALE_RANGE = (0.1, 50.0)


@dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    """How the policy chooses; validated on construction (``ConfigError`` names the key).

    objective           what to minimise at start (latency | energy | slo); default latency
    slo_ms              latency bound for the ``slo`` objective (required for it); default none
    hysteresis_pct      switch only when the new cut is better by more than this; default 15 %
    min_dwell_ms        stay at least this long on a cut before an unforced switch; default 3000
    battery_rule        apply the low-battery rule at all; default on
    battery_low_pct     below this and discharging -> energy objective; default 20 %
    battery_resume_pct  the rule lifts at or above this (or when charging); default 25 %
    prior_uplink_kbps   uplink assumed before any measurement; default 5000 kbps
    prior_rtt_ms        RTT assumed before any measurement; default 30 ms
    """

    objective: Objective = Objective.LATENCY
    slo_ms: Optional[float] = None
    hysteresis_pct: float = 15.0
    min_dwell_ms: int = 3_000
    battery_rule: bool = True
    battery_low_pct: float = 20.0
    battery_resume_pct: float = 25.0
    prior_uplink_kbps: float = 5_000.0
    prior_rtt_ms: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.objective, Objective):
            raise ConfigError(
                f"policy.objective = {self.objective!r}; expected one of {', '.join(o.value for o in Objective)}"
            )
        if self.slo_ms is not None and not is_positive(self.slo_ms):
            raise ConfigError(f"policy.slo_ms = {self.slo_ms!r}; expected a number of milliseconds > 0")
        if self.objective is Objective.SLO and self.slo_ms is None:
            raise ConfigError("policy.objective = 'slo' needs policy.slo_ms (a latency bound in ms > 0)")
        checks = (
            ("hysteresis_pct", self.hysteresis_pct, 0.0, 100.0),
            ("min_dwell_ms", self.min_dwell_ms, 0.0, math.inf),
            ("battery_low_pct", self.battery_low_pct, 0.0, 100.0),
            ("battery_resume_pct", self.battery_resume_pct, 0.0, 100.0),
        )
        for name, value, low, high in checks:
            if not is_number(value) or not low <= value <= high:
                raise ConfigError(f"policy.{name} = {value!r}; expected a number in [{low:g}, {high:g}]")
        if self.battery_resume_pct < self.battery_low_pct:
            raise ConfigError(
                f"policy.battery_resume_pct = {self.battery_resume_pct} is below policy.battery_low_pct = "
                f"{self.battery_low_pct}; expected resume >= low"
            )
        for name in ("prior_uplink_kbps", "prior_rtt_ms"):
            value = getattr(self, name)
            if not is_number(value) or value <= 0 or math.isinf(value):
                raise ConfigError(f"policy.{name} = {value!r}; expected a finite number > 0")


class SplitPolicy:
    """Chooses the cut for the next frames from telemetry; see the module docstring.

    Not thread-safe: the daemon owns one instance and calls it from one place
    (or under its own lock).
    """

    def __init__(self, cuts: Sequence[CutProfile], config: Optional[PolicyConfig] = None,
                 power: PowerModel = PI4_DEFAULT) -> None:
        check_cuts(cuts)
        config = config if config is not None else PolicyConfig()
        self._cuts = tuple(sorted(cuts, key=lambda c: (c.order, c.cut_id)))
        self._by_id = {c.cut_id: c for c in self._cuts}
        self._config = config
        self._power = power
        self._objective = config.objective
        self._slo_ms = config.slo_ms
        self._telemetry = Telemetry(at_ms=0)
        self._cloud_available = True
        self._battery_low = False
        self._pinned: Optional[str] = None
        self._cut_id: Optional[str] = None
        self._since_ms = 0
        self._now_ms: Optional[int] = None
        self._last: Optional[Decision] = None
        self._last_slo: Optional[float] = None
        self._measured_wire: set[str] = set()  # cuts whose wire_bytes come from real offloads
        self._last_on_priors = False  # the last decision rested on prior uplink/RTT, not measurements
        self._busy_until_ms = 0  # the server answered RESOURCE_EXHAUSTED: offloading costs more until then
        self._busy_ms = 0.0
        self._busy_news = False  # a busy answer arrived since the last decision (forces a re-choice)
        self._problem = ""  # a configuration problem keeping the cloud unavailable (e.g. version mismatch)
        self.rates, self.residuals = NO_RATES, Residuals()  # measured rates, set by the caller; latency residuals

    # ------------------------------------------------------------------ read-only state

    @property
    def config(self) -> PolicyConfig:
        return self._config

    @property
    def cut_ids(self) -> list[str]:
        """Cut ids in order from "input" to "output"."""
        return [c.cut_id for c in self._cuts]

    @property
    def cut_id(self) -> Optional[str]:
        """The cut in use since the last decision (None before the first)."""
        return self._cut_id

    @property
    def current(self) -> Optional[Decision]:
        """The last decision (None before the first)."""
        return self._last

    @property
    def mode(self) -> Mode:
        if not self._cloud_available and self._pinned != OUTPUT_CUT:
            return Mode.LOCAL_FALLBACK
        return Mode.PINNED if self._pinned is not None else Mode.AUTO

    @property
    def objective(self) -> Objective:
        """The operator's objective (the battery rule may override it; see ``effective_objective``)."""
        return self._objective

    @property
    def slo_ms(self) -> Optional[float]:
        return self._slo_ms

    @property
    def effective_objective(self) -> Objective:
        return Objective.ENERGY if self._battery_low else self._objective

    @property
    def battery_rule_active(self) -> bool:
        return self._battery_low

    @property
    def pinned_cut(self) -> Optional[str]:
        return self._pinned

    @property
    def cloud_available(self) -> bool:
        return self._cloud_available

    @property
    def telemetry(self) -> Telemetry:
        """The last telemetry observed."""
        return self._telemetry

    # ------------------------------------------------------------------ events

    def observe(self, telemetry: Telemetry, now_ms: int) -> None:
        """Take a new telemetry sample (replaces the previous one); illegal values raise ``PolicyError``."""
        self._check_time(now_ms)
        check_telemetry(telemetry)
        self._now_ms = now_ms
        self._telemetry = telemetry
        self._cloud_available = telemetry.cloud_available
        self._battery_low = self._battery_rule(telemetry)

    def note_cloud_available(self, available: bool, now_ms: int, *, problem: str = "") -> Decision:
        """The circuit breaker closed (True) or opened (False); returns the new decision. `problem`
        names a configuration problem behind an opening (quoted in the reason until the cloud is back)."""
        self._check_time(now_ms)
        self._problem = "" if available else str(problem)
        self._cloud_available = bool(available)
        self._telemetry = replace(self._telemetry, cloud_available=bool(available))
        return self.decide(now_ms)

    def note_wire_bytes(self, cut_id: str, wire_bytes: int, now_ms: int) -> None:
        """Bytes a real offload of ``cut_id`` just sent.

        The bundle's figure is a partition-time estimate; the "input" cut's JPEG size
        in particular depends on the camera's resolution and scene, which the
        partitioner cannot know. The first real sample replaces the bundle's figure,
        later ones are smoothed (EWMA, weight ``WIRE_BYTES_ALPHA``). Unknown cut or a
        non-positive size raises and leaves the state unchanged.
        """
        self._check_time(now_ms)
        if cut_id not in self._by_id:
            raise UnknownCutError(cut_id, self.cut_ids)
        if isinstance(wire_bytes, bool) or not isinstance(wire_bytes, int) or wire_bytes <= 0:
            raise PolicyError(f"wire_bytes = {wire_bytes!r} for cut {cut_id!r}; expected a positive integer")
        self._now_ms = now_ms
        cut = self._by_id[cut_id]
        if cut_id in self._measured_wire:
            wire_bytes = round(cut.wire_bytes + WIRE_BYTES_ALPHA * (wire_bytes - cut.wire_bytes))
        self._measured_wire.add(cut_id)
        updated = replace(cut, wire_bytes=int(wire_bytes))
        self._by_id[cut_id] = updated
        self._cuts = tuple(updated if c.cut_id == cut_id else c for c in self._cuts)

    def note_server_busy(self, hold_ms: float, now_ms: int) -> Decision:
        """The server refused a request as busy (RESOURCE_EXHAUSTED): for `hold_ms` every offloading
        cut's predicted server time grows by `hold_ms` (a cost, not an outage); re-decides at once."""
        self._check_time(now_ms)
        if not is_positive(hold_ms):
            raise PolicyError(f"hold_ms = {hold_ms!r}; expected a number of milliseconds > 0")
        self._busy_until_ms = max(self._busy_until_ms, now_ms + int(hold_ms))
        self._busy_ms = float(hold_ms)
        self._busy_news = True
        return self.decide(now_ms)

    def note_offload_failed(self, now_ms: int) -> Decision:
        """The server is gone (breaker opened): same as ``note_cloud_available(False, now_ms)``."""
        return self.note_cloud_available(False, now_ms)

    def pin(self, cut_id: str, now_ms: int) -> Decision:
        """Use ``cut_id`` until ``unpin``; unknown ids raise ``UnknownCutError`` listing the valid ones."""
        self._check_time(now_ms)
        if cut_id not in self._by_id:
            raise UnknownCutError(cut_id, self.cut_ids)
        self._pinned = cut_id
        return self.decide(now_ms)

    def unpin(self, now_ms: int) -> Decision:
        """Back to automatic choice, immediately (no dwell, no hysteresis)."""
        self._check_time(now_ms)
        self._pinned = None
        return self.decide(now_ms)

    def set_objective(self, objective: Objective, slo_ms: Optional[float], now_ms: int) -> Decision:
        """Change what the policy minimises; a bad objective or SLO raises ``PolicyError``, state unchanged.

        ``slo_ms`` is required (> 0) for ``Objective.SLO`` and may be None otherwise.
        The new objective applies at once (forced, no dwell).
        """
        self._check_time(now_ms)
        if not isinstance(objective, Objective):
            raise PolicyError(
                f"objective {objective!r} is not one of {', '.join(o.value for o in Objective)}"
            )
        if slo_ms is not None and not is_positive(slo_ms):
            raise PolicyError(f"slo_ms = {slo_ms!r}; expected a number of milliseconds > 0")
        if objective is Objective.SLO and slo_ms is None:
            raise PolicyError("the 'slo' objective needs slo_ms (a latency bound in ms > 0); got none")
        self._objective = objective
        self._slo_ms = float(slo_ms) if slo_ms is not None else None
        return self.decide(now_ms)

    # ------------------------------------------------------------------ queries

    def estimates(self, now_ms: int) -> list[CutEstimate]:
        """Predicted latency and energy of every cut under the current telemetry (no state change)."""
        self._check_time(now_ms)
        return self._estimate_all(now_ms)

    def decide(self, now_ms: int) -> Decision:
        """The cut for the next frames, with the mode and a reason quoting the numbers."""
        self._check_time(now_ms)
        self._now_ms = now_ms
        objective = self.effective_objective
        slo = self._slo_ms if objective is Objective.SLO else None
        ests = {e.cut_id: e for e in self._estimate_all(now_ms)}
        mode = self.mode
        if mode is Mode.LOCAL_FALLBACK:
            cut, reason = self._fallback(ests)
        elif mode is Mode.PINNED:
            cut, reason = self._pinned_choice(ests, objective, slo)
        else:
            cut, reason = self._auto_choice(ests, objective, slo, now_ms)
        if cut != self._cut_id:
            self._since_ms = now_ms
            self._cut_id = cut
        decision = Decision(cut_id=cut, mode=mode, reason=reason, objective=objective, at_ms=now_ms)
        self._busy_news = False
        self._last = decision
        self._last_slo = slo
        self._last_on_priors = self._on_priors()
        return decision

    # ------------------------------------------------------------------ internals

    def _check_time(self, now_ms: int) -> None:
        if isinstance(now_ms, bool) or not isinstance(now_ms, (int, float)) or not math.isfinite(now_ms):
            raise PolicyError(f"now_ms = {now_ms!r}; expected a finite number of milliseconds")
        if self._now_ms is not None and now_ms < self._now_ms:
            raise PolicyError(
                f"now_ms = {now_ms} is before the last time the policy saw ({self._now_ms}); "
                "expected a monotonic clock"
            )

    def _battery_rule(self, t: Telemetry) -> bool:
        cfg = self._config
        if not cfg.battery_rule or t.battery_pct is None or t.charging is True:
            return False
        if t.charging is False and t.battery_pct < cfg.battery_low_pct:
            return True
        if t.battery_pct >= cfg.battery_resume_pct:
            return False
        return self._battery_low

    def _network(self) -> tuple[float, bool, float, bool]:
        t, cfg = self._telemetry, self._config
        uplink = cfg.prior_uplink_kbps if t.uplink_kbps is None else t.uplink_kbps
        rtt = cfg.prior_rtt_ms if t.rtt_ms is None else t.rtt_ms
        return float(uplink), t.uplink_kbps is None, float(rtt), t.rtt_ms is None

    def _server_scale(self) -> float:
        t = self._telemetry
        current = self._by_id.get(self._cut_id or "")
        if t.server_compute_ms is None or current is None or current.tail_ms <= 0:
            return 1.0
        low, high = _SERVER_SCALE_RANGE
        return min(max(t.server_compute_ms / current.tail_ms, low), high)

    def _estimate_all(self, now_ms: int) -> list[CutEstimate]:  # per frame: gate and exit rates (edge_agent.rates)
        uplink, _, rtt, _ = self._network()
        return self.residuals.apply(apply_rates(estimate_cuts(self._cuts, self._telemetry, uplink_kbps=uplink,
            rtt_ms=rtt, server_scale=self._server_scale(), cloud_available=self._cloud_available, power=self._power,
            busy_ms=self._busy_penalty_ms(now_ms)), self.rates, self._power,  # then corrections (edge_agent.residuals)
            wire_bytes={c.cut_id: c.wire_bytes for c in self._cuts}, uplink_kbps=uplink), now_ms)

    def _busy_penalty_ms(self, now_ms: int) -> float:
        return self._busy_ms if now_ms < self._busy_until_ms else 0.0

    def _select(self, ests: dict[str, CutEstimate], objective: Objective, slo: Optional[float]) -> Choice:
        avail = [e for e in ests.values() if e.available]
        order = {c.cut_id: c.order for c in self._cuts}
        by_latency = sorted(avail, key=lambda e: (e.latency_ms, e.energy_mj, order[e.cut_id]))
        by_energy = sorted(avail, key=lambda e: (e.energy_mj, e.latency_ms, order[e.cut_id]))
        if objective is Objective.LATENCY:
            return Choice(by_latency[0], "latency", tuple(by_latency), "objective latency", frozenset())
        if objective is Objective.ENERGY:
            note = "objective energy"
            if self._battery_low:
                t = self._telemetry
                note = (f"battery {t.battery_pct:.0f}% discharging (< {self._config.battery_low_pct:g}%): "
                        "objective energy")
            return Choice(by_energy[0], "energy", tuple(by_energy), note, frozenset())
        assert slo is not None
        feasible = [e for e in by_energy if e.latency_ms <= slo]
        meets = frozenset(e.cut_id for e in feasible)
        if feasible:
            note = f"objective energy within SLO {slo:g} ms ({len(feasible)}/{len(avail)} cuts meet it)"
            return Choice(feasible[0], "energy", tuple(feasible), note, meets)
        fastest = by_latency[0]
        note = (f"no cut meets SLO {slo:g} ms (fastest {fastest.cut_id} {fmt_ms(fastest.latency_ms)}): "
                "minimum latency instead")
        return Choice(fastest, "latency", tuple(by_latency), note, meets)

    def _on_priors(self) -> bool:
        """True while the uplink or the RTT is still the configured prior, not a measurement."""
        _, uplink_prior, _, rtt_prior = self._network()
        return uplink_prior or rtt_prior

    def _context(self) -> tuple[str, str]:
        uplink, uplink_prior, rtt, rtt_prior = self._network()
        return (f"uplink {uplink:.0f} kbps{' (prior)' if uplink_prior else ''}",
                f"rtt {rtt:.0f} ms{' (prior)' if rtt_prior else ''}")

    def _auto_choice(self, ests: dict[str, CutEstimate], objective: Objective,
                     slo: Optional[float], now_ms: int) -> tuple[str, str]:
        choice = self._select(ests, objective, slo)
        best = choice.best
        uplink_txt, rtt_txt = self._context()
        tail = f"; {rtt_txt}; {choice.note}"
        if self._busy_penalty_ms(now_ms):
            tail += (f"; server busy (RESOURCE_EXHAUSTED): +{self._busy_ms:.0f} ms server time for "
                     f"{self._busy_until_ms - now_ms:.0f} ms more")
        cur_id = self._cut_id
        cur = ests.get(cur_id) if cur_id is not None else None
        last = self._last
        forced_why = ""
        if cur is None:
            forced_why = "initial choice"
        elif last is not None and last.mode is Mode.LOCAL_FALLBACK:
            forced_why = "cloud available again"
        elif last is not None and last.mode is Mode.PINNED:
            forced_why = "unpinned"
        elif last is not None and last.objective is not objective:
            forced_why = f"objective {last.objective.value} -> {objective.value}"
        elif last is not None and self._last_slo != slo:
            forced_why = f"SLO {bound(self._last_slo)} -> {bound(slo)}"
        elif not cur.available:
            forced_why = f"{cur_id} unavailable ({cur.unavailable_reason})"
        elif self._last_on_priors and not self._on_priors():
            forced_why = "first measurements replace the priors"
        elif self._busy_news and best.cut_id != cur_id:
            forced_why = "server busy"

        if forced_why or best.cut_id == cur_id:
            other = cur if (cur is not None and cur.cut_id != best.cut_id) else runner_up(choice)
            cmp = compare(best, other, choice.metric)
            prefix = f"{forced_why}: " if forced_why else ""
            return best.cut_id, f"{prefix}{uplink_txt}: {cmp}{tail}"

        assert cur is not None and cur_id is not None
        gain = gain_pct(cur, best, choice)
        cmp = compare(best, cur, choice.metric)
        dwell_left = self._since_ms + self._config.min_dwell_ms - now_ms
        if dwell_left > 0:
            return cur_id, f"{uplink_txt}: {cmp}{tail}; keeping {cur_id}, dwell {dwell_left:.0f} ms left"
        if gain <= self._config.hysteresis_pct:
            return cur_id, (f"{uplink_txt}: {cmp}{tail}; keeping {cur_id}, gain {gain:.0f}% "
                            f"within hysteresis {self._config.hysteresis_pct:g}%")
        if math.isinf(gain) and choice.meets_slo:
            return best.cut_id, f"{uplink_txt}: {cmp}{tail}; {cur_id} misses the SLO"
        return best.cut_id, f"{uplink_txt}: {cmp}{tail}"

    def _pinned_choice(self, ests: dict[str, CutEstimate], objective: Objective,
                       slo: Optional[float]) -> tuple[str, str]:
        assert self._pinned is not None
        pinned = ests[self._pinned]
        best = self._select(ests, objective, slo).best
        text = f"pinned to {pinned.cut_id} by operator ({fmt_ms(pinned.latency_ms)}, {fmt_mj(pinned.energy_mj)})"
        if best.cut_id != pinned.cut_id:
            text += f"; auto would choose {best.cut_id} ({fmt_ms(best.latency_ms)}, {fmt_mj(best.energy_mj)})"
        return pinned.cut_id, text

    def _fallback(self, ests: dict[str, CutEstimate]) -> tuple[str, str]:
        local = ests[OUTPUT_CUT]
        text = f"cloud unavailable: running {OUTPUT_CUT} locally ({fmt_ms(local.latency_ms)})"
        if self._problem:
            text = f"configuration: {self._problem}; running {OUTPUT_CUT} locally ({fmt_ms(local.latency_ms)})"
        if self._pinned is not None:
            text = (f"cloud unavailable: pinned {self._pinned} needs the server; running {OUTPUT_CUT} locally "
                    f"({fmt_ms(local.latency_ms)})")
        return OUTPUT_CUT, text


# ---------------------------------------------------------------------------- helpers
