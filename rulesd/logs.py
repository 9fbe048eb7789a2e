"""Logging setup: one line per record on stderr; syslog `<N>` priority prefixes when
stderr is the journal (systemd sets JOURNAL_STREAM); JSON lines for log shippers."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import TextIO

import msgspec

from rulesd.deferred_regex import when_used

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
    for noisy in ("watchdog",):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


# Warnings that differ only in numbers (offsets, sizes, counts) are one kind; past these many
# characters the rest of a message does not make another kind.
_KIND_CHARS = 120
_DIGITS = when_used(r"\d+")


def warning_kind(message: str) -> str:
    """The kind a warning is rate-limited under: its text with every number made alike, cut to
    its first characters (where the path and what happened to it are)."""
    return _DIGITS().sub("#", message[: _KIND_CHARS * 2])[:_KIND_CHARS]


class _Held(msgspec.Struct):
    """What the limiter remembers of one kind of warning."""

    last: float  # when it was last written
    suppressed: int = 0  # held back since then
    latest: str | Callable[[], str] = ""  # the latest held back


class RateLimitedWarning:
    """Logs at most one warning of each kind per `interval` seconds, saying how many of that
    kind were held back, so that a flood of one kind (invalid lines) never hides a one-off
    warning of another (a truncated file).

    The kind is given, or taken from the text (`warning_kind`). The message may be a function
    that builds it: a flood of bad lines then costs one build per interval, not one per line;
    such a message needs its `kind`. `flush` (at stop) reports what is still held back of every
    kind, so that the log accounts for every warning. At most `max_kinds` kinds are remembered
    (the oldest is reported and forgotten first).
    """

    def __init__(
        self, logger: logging.Logger, clock: Callable[[], float], interval: float = 10.0, max_kinds: int = 256
    ) -> None:
        self.logger = logger
        self.clock = clock
        self.interval = interval
        self.max_kinds = max_kinds
        self._kinds: dict[str, _Held] = {}

    def __call__(self, message: str | Callable[[], str], kind: str | None = None) -> None:
        if kind is None:
            kind = warning_kind(message) if isinstance(message, str) else ""
        now = self.clock()
        held = self._kinds.get(kind)
        if held is not None and now - held.last < self.interval:
            held.suppressed += 1
            held.latest = message
            return
        text = message() if callable(message) else message
        if held is not None and held.suppressed:
            text += f" (and {held.suppressed} similar warning(s) suppressed)"
        self.logger.warning("%s", text)
        self._kinds.pop(kind, None)  # re-inserted last: the dict stays ordered by last use
        self._kinds[kind] = _Held(now)
        if len(self._kinds) > self.max_kinds:
            oldest = next(iter(self._kinds))
            self._report(self._kinds.pop(oldest))

    def flush(self) -> None:
        """Log, for every kind, the warnings held back since the last one written, naming the
        latest of them."""
        for held in self._kinds.values():
            self._report(held)

    def _report(self, held: _Held) -> None:
        if held.suppressed:
            latest = held.latest() if callable(held.latest) else held.latest
            self.logger.warning("%d similar warning(s) suppressed, the latest: %s", held.suppressed, latest)
            held.suppressed = 0


def failure_kind(detail: str) -> str:
    """What a failure is, without what varies between its repeats (a body's request id, the
    attempt count, the delay): `HTTP 503`, `connection error`, `timeout`."""
    return detail.split(":", 1)[0].split(";", 1)[0]


class FailureRun:
    """A run of failures of one thing (the heartbeat's pings, the sender's requests): the first,
    and each of another kind, is logged at `level`; its repeats only at debug, so that an outage
    is one line, not one per attempt."""

    def __init__(self, level: int = logging.WARNING) -> None:
        self._level = level
        self._kind: str | None = None

    def failed(self, detail: str) -> int:
        """The level to log this failure at."""
        kind, before = failure_kind(detail), self._kind
        self._kind = kind
        return logging.DEBUG if kind == before else self._level

    def ended(self) -> bool:
        """A success: True if it ends a run of failures (which is worth saying)."""
        ended, self._kind = self._kind is not None, None
        return ended
