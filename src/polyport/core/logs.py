"""Structured logs: one JSON object per line on stderr (or plain text for humans)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", …extra fields, "exc"}`` per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Send polyport's logs to stderr in ``fmt`` ('json' or 'text') at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger("polyport")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class Outage:
    """Says once that a loop's work fails, and once that it works again.

    A loop that retries every second through an engine outage would otherwise
    log a traceback a second: a minute away fills the log, and a node whose
    stderr is a pipe nobody reads blocks writing it. The first failure is
    logged with its traceback unless it is the world's fault (``quiet``, such
    as :class:`~polyport.core.errors.Unavailable`); the rest are counted.
    """

    __slots__ = ("_failures", "_log", "_what")

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self._failures = 0

    def failed(self, exc: BaseException, *, quiet: type[BaseException] | None = None) -> None:
        self._failures += 1
        if self._failures == 1:
            self._log.warning(
                "%s failed (%s); retrying, and saying so once it works again",
                self._what,
                exc,
                exc_info=quiet is None or not isinstance(exc, quiet),
            )

    def worked(self) -> None:
        if self._failures:
            self._log.warning("%s works again, after %d failed tries", self._what, self._failures)
            self._failures = 0
