"""The daemon's motion gate and early exits: wiring, run-time control and measured rates.

A mixin of :class:`edge_agent.agent.EdgeAgent` (which keeps only loops, threads and
wiring): it builds the exit check from the bundle (:class:`edge_agent.exits.EarlyExits`,
as ``[exits]`` says), turns the gate and the exit thresholds at run time (the control
endpoint's ``SetGate`` / ``SetExitThreshold``, ``splitctl gate on|off`` and
``splitctl exit-threshold``), and feeds the measured gate and exit rates to the policy's
cost model (:mod:`edge_agent.rates`) and to ``/metrics`` every time telemetry is sampled.
With ``[gate] roi = true`` it hands the head stage the gate's motion region
(:class:`~edge_agent.stages.hooks.MotionRoi`); a bundle that is not a detector refuses it.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from edge_agent.errors import ConfigError
from edge_agent.exits import EarlyExits, ExitCount
from edge_agent.rates import observed_rates
from edge_agent.roi import roi_unsupported
from edge_agent.stages.hooks import ExitCheck, FrameGate, MotionRoi, NeverExit, SwitchableGate, configured_gate
from edge_agent.types import Telemetry
from protos.exits import exits_of

if TYPE_CHECKING:
    from edge_agent.config import EdgeConfig
    from edge_agent.feedback import Feedback
    from edge_agent.metrics import EdgeMetrics
    from edge_agent.policy import SplitPolicy
    from edge_agent.stages import HeadStage
    from protos.bundle import Bundle

__all__ = ["GateExitMixin", "GateExitStatus"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateExitStatus:
    """What ``splitctl status`` shows about the gate and the exits."""

    gate_enabled: bool
    gate_ms: float  # mean gate time per checked frame
    frames_gated: int
    frames_captured: int
    exits_enabled: bool
    exits: tuple[ExitCount, ...]


class GateExitMixin:
    """Gate and exit wiring of the daemon; the attributes below are the agent's."""

    config: "EdgeConfig"
    bundle: "Bundle"
    policy: "SplitPolicy"
    feedback: "Feedback"
    metrics: "EdgeMetrics"
    head_stage: "HeadStage"
    gate: Any
    transport: Any
    frames_gated: int
    frames_captured: int
    _lock: threading.RLock
    _decision: Any

    def _configured_exits(self) -> ExitCheck:
        """The bundle's early exits as ``[exits]`` says, or :class:`NeverExit` when off or none."""
        specs = exits_of(self.bundle)
        self._exit_priors = {c: s.exit_rate for c, s in specs.items()}
        if not self.config.exits.enabled or not specs:
            return NeverExit()
        exits = EarlyExits(specs, self.bundle.manifest.output, threads=self.config.runtime.threads)
        if self.config.exits.threshold > 0:
            exits.set_threshold(self.config.exits.threshold)
        log.info("early exits at %s (thresholds %s)", ", ".join(exits.cuts),
                 ", ".join(f"{c.threshold:.3f}" for c in exits.counts()))
        return exits

    def _configured_gate(self, *, live_source: bool, injected: Optional[FrameGate]) -> SwitchableGate:
        """The gate as ``[gate]`` says (:func:`configured_gate`) and, with ``roi = true``, ROI mode
        in the head stage; ConfigError when the bundle cannot use ROI mode."""
        gate = configured_gate(self.config.gate, live_source=live_source, injected=injected)
        if self.config.gate.roi:
            why = roi_unsupported(self.bundle.manifest.output)
            if why is not None:
                raise ConfigError(f"gate.roi = true needs a detector bundle: {why}; set gate.roi = false")
            spec = self.bundle.manifest.input
            self.head_stage.roi = MotionRoi(gate, input_w=int(spec.width_px), input_h=int(spec.height_px))
            log.info("ROI mode: detectors run on the motion region (gate %s)", "on" if gate.enabled else "off")
        return gate

    def _early_exits(self) -> Optional[EarlyExits]:
        check = self.head_stage.exit_check
        return check if isinstance(check, EarlyExits) else None

    def _sample_telemetry(self, now_ms: int) -> Telemetry:
        """Telemetry for the policy (called under the agent lock), after refreshing its measured rates."""
        exits = self._early_exits()
        gate = self.gate if isinstance(self.gate, SwitchableGate) else None
        self.policy.rates = observed_rates(exits.counts() if exits else [],
                                           prior_rates=getattr(self, "_exit_priors", {}), gated=self.frames_gated,
                                           captured=self.frames_captured, gate_ms=gate.mean_ms if gate else 0.0)
        self.metrics.rates_sampled(self.policy.rates, exits.counts() if exits else [],
                                   gate_enabled=bool(gate and gate.enabled))
        current = self._decision.cut_id if self._decision is not None else None
        return self.feedback.sample(now_ms, has_transport=self.transport is not None, current_cut=current)

    # ------------------------------------------------------------------ ControlTarget (issue 16)

    def set_gate(self, enabled: bool) -> bool:
        """Turn the motion gate on or off; returns the new state."""
        gate = self.gate
        if not isinstance(gate, SwitchableGate):
            raise ConfigError("the gate is not running yet (the agent has not started)")
        gate.set_enabled(enabled)
        log.info("motion gate %s by control", "on" if enabled else "off")
        return gate.enabled

    def set_exit_threshold(self, value: float, cut_id: str = "") -> dict[str, float]:
        """Set one exit's threshold (``cut_id``) or all of them; returns the thresholds in force."""
        exits = self._early_exits()
        if exits is None:
            why = "exits.enabled = false" if not self.config.exits.enabled else "the bundle has no early exit"
            raise ConfigError(f"no early exit to set a threshold on ({why})")
        return exits.set_threshold(value, cut_id)

    def gate_exit_status(self) -> GateExitStatus:
        exits = self._early_exits()
        gate = self.gate if isinstance(self.gate, SwitchableGate) else None
        with self._lock:
            gated, captured = self.frames_gated, self.frames_captured
        return GateExitStatus(gate_enabled=bool(gate and gate.enabled), gate_ms=gate.mean_ms if gate else 0.0,
                              frames_gated=gated, frames_captured=captured, exits_enabled=exits is not None,
                              exits=tuple(exits.counts()) if exits else ())
