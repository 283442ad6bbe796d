"""Polling until a condition holds, for tests that watch a running agent, server or browser."""
from __future__ import annotations

import time
from typing import Callable


def wait_for(pred: Callable[[], object], timeout_s: float = 10.0, *, interval_s: float = 0.02) -> bool:
    """True as soon as ``pred()`` is truthy, checking every ``interval_s``; after ``timeout_s``
    the last check's answer."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval_s)
    return bool(pred())
