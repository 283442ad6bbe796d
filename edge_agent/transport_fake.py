"""An in-memory :class:`~edge_agent.types.Transport` that runs a plain function.

``handler(request) -> {output name: array}`` does the "server" work (tests pass real ONNX
Runtime tail sessions). ``delay_s(request)`` adds wall time per request (e.g. proportional
to ``request.wire_bytes`` to emulate a slow uplink); ``down`` makes every call fail like
an unreachable server. Exceptions from the handler become ``OffloadUnavailable``.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Mapping, Optional

import numpy as np

from edge_agent.errors import OffloadUnavailable
from edge_agent.types import OffloadRequest, OffloadResponse


class FakeTransport:
    def __init__(
        self,
        handler: Callable[[OffloadRequest], Mapping[str, np.ndarray]],
        *,
        delay_s: Optional[Callable[[OffloadRequest], float]] = None,
    ) -> None:
        self.handler = handler
        self.delay_s = delay_s
        self.down = False
        self.model_ready_names: Optional[set[str]] = None
        self.calls = 0
        self.bytes_sent = 0
        self._closed = threading.Event()

    def infer(self, request: OffloadRequest, timeout_s: float) -> OffloadResponse:
        self.calls += 1
        if self.down or self._closed.is_set():
            raise OffloadUnavailable("fake server is down", code="UNAVAILABLE")
        start = time.monotonic()
        delay = self.delay_s(request) if self.delay_s else 0.0
        if delay > timeout_s:
            time.sleep(timeout_s)
            raise OffloadUnavailable(f"deadline of {timeout_s * 1000:.0f} ms exceeded", code="DEADLINE_EXCEEDED")
        if delay:
            time.sleep(delay)
        try:
            outputs = dict(self.handler(request))
        except Exception as exc:
            raise OffloadUnavailable(f"fake server failed: {exc}", code="INTERNAL") from exc
        self.bytes_sent += request.wire_bytes
        return OffloadResponse(request.request_id, outputs, round_trip_ms=(time.monotonic() - start) * 1000)

    def healthy(self, timeout_s: float) -> bool:
        return not self.down and not self._closed.is_set()

    def model_ready(self, name: str, version: str, timeout_s: float) -> bool:
        """Ready when up and ``model_ready_names`` (None = every model) holds ``name``."""
        return self.healthy(timeout_s) and (self.model_ready_names is None or name in self.model_ready_names)

    def close(self) -> None:
        self._closed.set()
