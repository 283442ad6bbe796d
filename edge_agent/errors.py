"""Errors of the edge agent.

The tree::

    EdgeAgentError
    ├── ConfigError            edge.toml / environment / flags invalid (names the key and value)
    ├── SourceError            a camera, stream, file or folder cannot be opened or read
    ├── OffloadUnavailable     any transport failure: unreachable, deadline, server error;
    │                          the agent answers it by completing the frame on the device.
    │                          ``code`` SERVER_BUSY (RESOURCE_EXHAUSTED): the server is up but full,
    │                          a cost for the policy, not an outage (no breaker trip);
    │                          MODEL_NOT_SERVED (NOT_FOUND): the server lacks this bundle version,
    │                          a configuration problem (logged once, rechecked slowly)
    ├── UnknownCutError        a cut id not in the bundle (lists the valid ones)
    └── PolicyError            an illegal policy input (bad objective/SLO); state unchanged
"""
from __future__ import annotations


#: OffloadUnavailable codes with a meaning of their own (see the tree above).
SERVER_BUSY = "SERVER_BUSY"
MODEL_NOT_SERVED = "MODEL_NOT_SERVED"


class EdgeAgentError(Exception):
    """Base of every error this package raises."""


class ConfigError(EdgeAgentError):
    """Invalid configuration."""


class SourceError(EdgeAgentError):
    """A frame source cannot be opened or read."""


class OffloadUnavailable(EdgeAgentError):
    """The offload did not complete (unreachable, deadline exceeded, server error)."""

    def __init__(self, message: str, *, code: str = "UNAVAILABLE", retryable: bool = True) -> None:
        self.code = code
        self.retryable = retryable
        super().__init__(message)


class UnknownCutError(EdgeAgentError):
    def __init__(self, cut_id: str, valid: list[str]) -> None:
        self.cut_id = cut_id
        self.valid = valid
        super().__init__(f"cut {cut_id!r} is not in the bundle; valid cuts: {', '.join(valid)}")


class PolicyError(EdgeAgentError):
    """An illegal policy input; the policy state is unchanged."""
