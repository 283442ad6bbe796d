"""Shared bits of the telemetry readers: their error and the warn-once logging rule."""
from __future__ import annotations

import logging

from edge_agent.errors import EdgeAgentError


class TelemetryError(EdgeAgentError):
    """A telemetry source gave something that cannot be parsed (quotes the text and the source).

    Readers never let it escape ``read``: a failed reading is ``None`` (unknown).
    Parsers (trace files, ``vcgencmd`` output) and the pure estimators raise it for
    illegal arguments.
    """


class WarnOnce:
    """Log a repeating failure once at WARNING, then at DEBUG (as python-zeroconf does)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._warned: set[str] = set()

    def __call__(self, key: str, message: str, *args: object) -> None:
        level = logging.DEBUG if key in self._warned else logging.WARNING
        self._warned.add(key)
        self._logger.log(level, message, *args)


#: A transfer's time on the wire is at least this share of its network time. A payload that fits in
#: the link's burst (a token bucket's, or a Wi-Fi queue's) arrives in about one RTT whatever the rate;
#: with the RTT subtracted, a 10 % floor read up to 10x the link (the testbed's agent saw 98-156 Mbit/s
#: on 30 Mbit/s and sent a 75 kB cut). Half bounds the error at 2x, on the side of caution.
MIN_TX_FRACTION = 0.5
