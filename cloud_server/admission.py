"""Bounded admission: how many inference requests the server holds at once, across all clients.

A request is admitted when it arrives (before it is decoded) and released when it is answered, so the
count covers requests waiting for a decoding thread, waiting in a model's batch queue and running. When
`limit` requests are held, the next one is refused at once with `ServerBusy` (RESOURCE_EXHAUSTED) whose
message says what is full, instead of waiting in an unbounded queue: a camera then runs the frame
locally (its cost model counts the server as busy, not down). Open streams and idle connections are not
requests and cost nothing here.

Thread-safe and clock-free; `peak` is the highest count seen (for benchmarks and tests).
"""

from __future__ import annotations

import threading

from cloud_server.errors import ServerBusy

__all__ = ["Admission"]


class Admission:
    """A counter with a hard limit; `enter()` raises `ServerBusy` at the limit, `leave()` releases."""

    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"admission limit must be an integer >= 1, got {limit!r}")
        self.limit = limit
        self._held = 0
        self._lock = threading.Lock()
        self.peak = 0
        self.refused = 0

    @property
    def held(self) -> int:
        with self._lock:
            return self._held

    def enter(self) -> None:
        """Hold one slot or raise ServerBusy naming the limit."""
        with self._lock:
            if self._held >= self.limit:
                self.refused += 1
                raise ServerBusy(
                    f"server is full: {self._held} inference requests in progress (max_inflight={self.limit}); "
                    "expected fewer at once, retry later or run locally"
                )
            self._held += 1
            self.peak = max(self.peak, self._held)

    def leave(self) -> None:
        """Release one slot (after the request was answered or failed)."""
        with self._lock:
            assert self._held > 0, "Admission.leave() without enter()"
            self._held -= 1
