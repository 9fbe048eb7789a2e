"""Tests for rulesd.logs: one line per record, journal prefixes, JSON, rate limiting."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable

from rulesd.logs import JsonFormatter, LineFormatter, RateLimitedWarning, warning_kind


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
    warn("w5")
    assert ["w0", "w5 (and 4 similar warning(s) suppressed)"] == stream.getvalue().splitlines()


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
        warn(message(i), kind="w")
    now[0] = 11.0
    warn(message(3), kind="w")
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
    warn(lambda: "w1", kind="w#")
    warn(lambda: "w2", kind="w#")
    warn.flush()
    warn.flush()  # nothing left: nothing logged
    assert ["w0", "2 similar warning(s) suppressed, the latest: w2"] == stream.getvalue().splitlines()


def capture(name: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    logger = logging.getLogger(name)
    logger.handlers[:] = [logging.StreamHandler(stream)]
    logger.propagate = False
    return logger, stream


def test_a_flood_of_one_kind_never_hides_a_warning_of_another() -> None:
    """Invalid lines by the thousand, then a one-off truncation: the truncation is written at
    once; each kind keeps its own count, and stop reports both."""
    logger, stream = capture("rulesd-test-rate-kinds")
    now = [0.0]
    warn = RateLimitedWarning(logger, lambda: now[0], interval=10)
    for i in range(1000):
        warn(lambda i=i: f"/log/a.jsonl (offset {i}): skipped: not JSON", kind="/log/a.jsonl: invalid line")
        if i == 500:
            warn("/log/a.jsonl: file was truncated; reading from its start, events may have been lost")
            warn("/log/a.jsonl: skipped a line longer than 100 bytes at offset 7")
            warn("/log/a.jsonl: skipped a line longer than 100 bytes at offset 900")
    warn.flush()
    assert [
        "/log/a.jsonl (offset 0): skipped: not JSON",
        "/log/a.jsonl: file was truncated; reading from its start, events may have been lost",
        "/log/a.jsonl: skipped a line longer than 100 bytes at offset 7",
        "999 similar warning(s) suppressed, the latest: /log/a.jsonl (offset 999): skipped: not JSON",
        "1 similar warning(s) suppressed, the latest: /log/a.jsonl: skipped a line longer than 100 bytes at offset 900",
    ] == stream.getvalue().splitlines()


def test_warning_kinds_ignore_numbers_only() -> None:
    """Messages that differ in numbers are one kind; a different path or event is another."""
    assert warning_kind("/a: skipped a line at offset 7") == warning_kind("/a: skipped a line at offset 90")
    assert warning_kind("/a: file was truncated") != warning_kind("/a: skipped a line at offset 7")
    assert warning_kind("/a: file was truncated") != warning_kind("/b: file was truncated")


def test_the_kinds_remembered_are_bounded_and_none_is_lost() -> None:
    """Past max_kinds the oldest kind is forgotten, its held-back count written first."""
    logger, stream = capture("rulesd-test-rate-bound")
    warn = RateLimitedWarning(logger, lambda: 0.0, interval=10, max_kinds=2)
    for message in ("a", "a", "b", "c"):
        warn(message)
    assert ["a", "b", "c", "1 similar warning(s) suppressed, the latest: a"] == stream.getvalue().splitlines()
