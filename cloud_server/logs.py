"""Structured logging for ``splitinfer serve``: human text lines or one JSON object per line.

Only the entry point calls :func:`configure_logging`; library modules just use
``logging.getLogger(__name__)`` and pass structured fields with ``extra={...}``::

    logger.info("listening", extra={"address": "127.0.0.1:8001", "tls": False})

Text format (default)::

    2026-11-21T11:05:00.123Z INFO cloud_server.cli: listening address=127.0.0.1:8001 tls=False

JSON format (``log_format = "json"``), one object per line, keys ``ts`` (UTC, ISO 8601 with
milliseconds), ``level``, ``logger``, ``msg``, then every ``extra`` field, and ``exc`` with the formatted
traceback when there is one. Values that JSON cannot represent are written with ``str()``.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import IO, Any, Callable

__all__ = ["JsonFormatter", "TextFormatter", "ThrottledLog", "ThrottleFilter", "throttle_grpc_logs", "configure_logging", "record_fields"]

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a caller attached with ``extra=``, in insertion order."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


def _utc_timestamp(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int((created % 1) * 1000):03d}Z"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (JSON Lines)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            out.setdefault(key, _jsonable(value))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``<ts> <LEVEL> <logger>: <message> key=value ...`` on one line (tracebacks follow)."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_utc_timestamp(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        fields = record_fields(record)
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


def configure_logging(log_format: str = "text", log_level: str = "INFO", *, stream: IO[str] | None = None) -> None:
    """Send every log record to ``stream`` (stderr) in ``log_format`` ('text' or 'json') at ``log_level``.

    Replaces the root logger's handlers, so calling it twice does not duplicate lines.
    """
    if log_format not in ("text", "json"):
        raise ValueError(f"log_format {log_format!r} is not 'text' or 'json'")
    level = logging.getLevelName(log_level)
    if not isinstance(level, int):
        raise ValueError(f"log_level {log_level!r} is not a logging level name (DEBUG, INFO, WARNING, ERROR)")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter stays at WARNING unless the user asked for DEBUG.
    if level > logging.DEBUG:
        for noisy in ("zeroconf", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


class ThrottledLog:
    """Logs each kind of event at most once per `interval_s` (monotonic clock): a fuzzer or a broken
    client cannot flood the log. The first line of a kind is written at its level; repeats within the
    interval go to DEBUG, and the next line written after the interval says how many were suppressed."""

    def __init__(
        self, logger: logging.Logger, *, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, kind: str, msg: str, *args: Any, exc_info: BaseException | None = None) -> bool:
        """Log `msg % args` for `kind`; True when written at `level`, False when demoted to DEBUG."""
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval_s:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                suppressed = -1
            else:
                self._last[kind] = now
                suppressed = self._suppressed.pop(kind, 0)
        if suppressed < 0:
            self._logger.debug(msg, *args)
            return False
        if suppressed:
            msg += f" (and {suppressed} more like it in the last {self.interval_s:g} s, not logged)"
        self._logger.log(level, msg, *args, exc_info=exc_info)
        return True


class ThrottleFilter(logging.Filter):
    """Lets each kind of record (logger + message template) through at most once per `interval_s`;
    for gRPC's own loggers, which log a traceback for every message a servicer fails to handle
    (e.g. a reflection request that does not parse)."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:120])
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self.suppressed += 1
                return False
            self._last[key] = now
        return True


_GRPC_LOGGERS = ("grpc._cython.cygrpc", "grpc._server", "grpc.aio._server")


def throttle_grpc_logs(interval_s: float = 60.0) -> None:
    """Install one ThrottleFilter on gRPC's server-side loggers (idempotent)."""
    for name in _GRPC_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, ThrottleFilter) for f in target.filters):
            target.addFilter(ThrottleFilter(interval_s))
