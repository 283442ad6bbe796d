"""Bounded queues between the daemon's stages."""
from __future__ import annotations

import queue


def put_dropping_oldest(q: queue.Queue, item: object, *, keep: object) -> int:
    """Put ``item`` without blocking: when ``q`` is full, drop its oldest entry (never
    ``keep``, the end marker) to make room. Returns how many entries were dropped (a live
    source fell behind); the put itself always happens."""
    dropped = 0
    while True:
        try:
            q.put_nowait(item)
            return dropped
        except queue.Full:
            try:
                old = q.get_nowait()
            except queue.Empty:
                continue
            if old is keep:  # never drop the end marker
                q.put(old)
                continue
            dropped += 1
