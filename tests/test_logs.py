"""Tests for rulesd.logs: one line per record, journal prefixes, JSON, rate limiting."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable

from rulesd.logs import JsonFormatter, LineFormatter, RateLimitedWarning


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("rulesd", level, __file__, 1, message, None, None)


def test_plain_lines_fold_newlines() -> None:
    """A multi-line message stays one line (newlines escaped), with the level."""
    assert "rulesd: error: a\\nb" == LineFormatter(journal=False).format(record(logging.ERROR, "a\nb"))


def test_journal_lines_carry_syslog_priorities() -> None:
    """<3> error, <4> warning, <6> info, <7> debug."""
    fmt = LineFormatter(journal=True)
    levels = [logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG]
    assert ["<3>x", "<4>x", "<6>x", "<7>x"] == [fmt.format(record(lv, "x")) for lv in levels]


def test_json_lines() -> None:
    """--log-format json: one object per record with level and message."""
    data = json.loads(JsonFormatter().format(record(logging.WARNING, "bad line\nhere")))
    assert ("warning", "bad line\nhere", "rulesd") == (data["level"], data["message"], data["logger"])


def test_rate_limited_warning_counts_what_it_suppresses() -> None:
    """At most one warning per interval; the next one says how many were held back."""
    stream = io.StringIO()
    logger = logging.getLogger("rulesd-test-rate")
    logger.handlers[:] = [logging.StreamHandler(stream)]
    logger.propagate = False
    now = [0.0]
    warn = RateLimitedWarning(logger, lambda: now[0], interval=10)
    for i in range(5):
        warn(f"w{i}")
    now[0] = 11.0
    warn("later")
    assert ["w0", "later (and 4 similar warning(s) suppressed)"] == stream.getvalue().splitlines()


def test_a_suppressed_warning_is_not_built() -> None:
    """A message given as a function is built only when it is logged."""
    stream = io.StringIO()
    logger = logging.getLogger("rulesd-test-rate-lazy")
    logger.handlers[:] = [logging.StreamHandler(stream)]
    logger.propagate = False
    built: list[int] = []

    def message(i: int) -> Callable[[], str]:
        return lambda: built.append(i) or f"w{i}"

    now = [0.0]
    warn = RateLimitedWarning(logger, lambda: now[0], interval=10)
    for i in range(3):
        warn(message(i))
    now[0] = 11.0
    warn(message(3))
    assert [0, 3] == built
    assert ["w0", "w3 (and 2 similar warning(s) suppressed)"] == stream.getvalue().splitlines()


def test_flush_reports_what_is_still_suppressed() -> None:
    """At stop, suppressed warnings are counted and the latest is shown (built only then)."""
    stream = io.StringIO()
    logger = logging.getLogger("rulesd-test-rate-flush")
    logger.handlers[:] = [logging.StreamHandler(stream)]
    logger.propagate = False
    warn = RateLimitedWarning(logger, lambda: 0.0, interval=10)
    warn("w0")
    warn(lambda: "w1")
    warn(lambda: "w2")
    warn.flush()
    warn.flush()  # nothing left: nothing logged
    assert ["w0", "2 similar warning(s) suppressed, the latest: w2"] == stream.getvalue().splitlines()
