"""The control endpoint's gate and early-exit part (issue 16): status fields and two RPCs.

``SetGate`` turns the motion gate on or off and ``SetExitThreshold`` sets one exit's
confidence threshold (or every exit's); both go to the target's ``set_gate`` /
``set_exit_threshold`` (:class:`edge_agent.gate_exits.GateExitMixin`). A target without
them (an agent from before issue 16, a test double) answers UNIMPLEMENTED.
"""
from __future__ import annotations

import logging
from typing import Any

import grpc

from edge_agent.errors import ConfigError
from protos import control_pb2

__all__ = ["add_gate_exits", "set_exit_threshold", "set_gate"]

log = logging.getLogger(__name__)


def _exit_pb(count: Any) -> control_pb2.ExitStatus:
    return control_pb2.ExitStatus(cut_id=count.cut_id, checked=count.checked, exited=count.exited,
                                  threshold=count.threshold, exit_ms=count.exit_ms)


def add_gate_exits(status: control_pb2.AgentStatus, gate_exits: Any) -> control_pb2.AgentStatus:
    """Fill the gate and exit fields from a :class:`~edge_agent.gate_exits.GateExitStatus` (None: leave them)."""
    if gate_exits is not None:
        status.gate_enabled = gate_exits.gate_enabled
        status.gate_ms = gate_exits.gate_ms
        status.exits.extend(_exit_pb(c) for c in gate_exits.exits)
    return status


def _method(target: Any, name: str, context: Any) -> Any:
    method = getattr(target, name, None)
    if method is None:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"this agent has no {name.replace('_', ' ')}")
    return method


def set_gate(target: Any, request: control_pb2.SetGateRequest, context: Any) -> control_pb2.SetGateResponse:
    try:
        enabled = _method(target, "set_gate", context)(bool(request.enabled))
    except ConfigError as exc:
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    log.info("control: motion gate %s", "on" if enabled else "off")
    return control_pb2.SetGateResponse(enabled=enabled)


def set_exit_threshold(target: Any, request: control_pb2.SetExitThresholdRequest,
                       context: Any) -> control_pb2.SetExitThresholdResponse:
    setter = _method(target, "set_exit_threshold", context)
    try:
        setter(float(request.threshold), request.cut_id)
    except ConfigError as exc:
        log.info("control: rejected exit threshold %r at %r: %s", request.threshold, request.cut_id or "*", exc)
        code = grpc.StatusCode.INVALID_ARGUMENT if "threshold" in str(exc).split(";")[0] or request.cut_id \
            else grpc.StatusCode.FAILED_PRECONDITION
        context.abort(code, str(exc))
    status = target.gate_exit_status()
    return control_pb2.SetExitThresholdResponse(exits=[_exit_pb(c) for c in status.exits])
