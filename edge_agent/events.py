"""Event streams of the control endpoint: Telemetry and Decision values as they happen."""
from __future__ import annotations

import queue
import threading
from typing import Iterator


class Subscription:
    """An :class:`~edge_agent.types.EventStream`; a stalled subscriber loses events rather
    than blocking the agent."""

    def __init__(self, hub: "EventHub") -> None:
        self._hub = hub
        self._queue: queue.Queue = queue.Queue(maxsize=1000)
        self._closed = threading.Event()

    def push(self, event: object) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            pass

    def __iter__(self) -> Iterator[object]:
        while not self._closed.is_set():
            try:
                yield self._queue.get(timeout=0.1)
            except queue.Empty:
                continue

    def close(self) -> None:
        self._closed.set()
        self._hub.discard(self)


class EventHub:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()

    def subscribe(self) -> Subscription:
        sub = Subscription(self)
        with self._lock:
            self._subs.add(sub)
        return sub

    def discard(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    def push(self, event: object) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.push(event)

    def close(self) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.close()
