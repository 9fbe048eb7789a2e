"""Logging setup: one line per record on stderr; syslog `<N>` priority prefixes when
stderr is the journal (systemd sets JOURNAL_STREAM); JSON lines for log shippers."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import TextIO

# syslog priorities, as sd-daemon(3) prefixes expect them
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def stderr_is_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """True when `stream` is the journal stream systemd connected (JOURNAL_STREAM=dev:ino)."""
    expected = environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


class LineFormatter(logging.Formatter):
    """`rulesd: LEVEL: message`, folded onto one line; with `<N>` prefixes for the journal."""

    def __init__(self, journal: bool) -> None:
        super().__init__("%(message)s")
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = _one_line(super().format(record))
        if self.journal:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{text}"
        return f"rulesd: {record.levelname.lower()}: {text}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, message."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": round(record.created, 3),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": super().format(record),
            },
            ensure_ascii=False,
        )


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def configure(
    level: str, fmt: str = "text", stream: TextIO = sys.stderr, environ: Mapping[str, str] = os.environ
) -> None:
    """Send rulesd's log records to `stream`, one line each."""
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(LineFormatter(stderr_is_journal(stream, environ)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries stay quiet unless asked: their debug output may echo request details.
    for noisy in ("urllib3", "watchdog"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class RateLimitedWarning:
    """Logs at most one warning per `interval` seconds, saying how many were suppressed.

    The message may be a function that builds it: a flood of bad lines then costs one
    build per interval, not one per line. `flush` (at stop) reports what is still
    suppressed, so that the log accounts for every warning.
    """

    def __init__(self, logger: logging.Logger, clock: Callable[[], float], interval: float = 10.0) -> None:
        self.logger = logger
        self.clock = clock
        self.interval = interval
        self._last = float("-inf")
        self._suppressed = 0
        self._latest: str | Callable[[], str] = ""

    def __call__(self, message: str | Callable[[], str]) -> None:
        now = self.clock()
        if now - self._last < self.interval:
            self._suppressed += 1
            self._latest = message
            return
        if callable(message):
            message = message()
        if self._suppressed:
            message += f" (and {self._suppressed} similar warning(s) suppressed)"
        self.logger.warning("%s", message)
        self._last, self._suppressed = now, 0

    def flush(self) -> None:
        """Log the warnings suppressed since the last one written, naming the latest of them."""
        if self._suppressed:
            latest = self._latest() if callable(self._latest) else self._latest
            self.logger.warning("%d similar warning(s) suppressed, the latest: %s", self._suppressed, latest)
            self._suppressed = 0
