"""Standard `grpc.health.v1` health checking: overall ('') and one entry per model name.

Every served model name starts SERVING; unloading a model sets its entry NOT_SERVING, loading sets it
SERVING again. `set_draining()` flips every entry (and any later one) to NOT_SERVING, for SIGTERM.
"""

from __future__ import annotations

from typing import Iterable

from grpc_health.v1 import health, health_pb2

__all__ = ["HealthState", "OVERALL"]

#: The service name that stands for the whole server.
OVERALL = ""

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthState:
    """Owns the health servicer and the status of each service name."""

    def __init__(self, model_names: Iterable[str] = ()) -> None:
        self.servicer = health.HealthServicer()
        self._draining = False
        self.servicer.set(OVERALL, _SERVING)
        for name in model_names:
            self.servicer.set(name, _SERVING)

    @property
    def draining(self) -> bool:
        return self._draining

    def set_model(self, name: str, serving: bool) -> None:
        """Mark one model name SERVING or NOT_SERVING (always NOT_SERVING once draining)."""
        self.servicer.set(name, _SERVING if serving and not self._draining else _NOT_SERVING)

    def set_draining(self) -> None:
        """Every name NOT_SERVING from now on (Watch streams are told too)."""
        self._draining = True
        self.servicer.enter_graceful_shutdown()
