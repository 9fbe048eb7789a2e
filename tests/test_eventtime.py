"""Tests for rulesd.eventtime: reading an event's time in each time_format."""

from __future__ import annotations

import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from rulesd.eventtime import EventTime, TimeReader, check_time_format, syslog_time, time_converter

ARRIVAL = 1_800_000_000.0  # 2027-01-15T08:00:00Z
BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str) -> float:
    """Epoch seconds of an ISO 8601 time with its zone."""
    return datetime.datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize(
    ("fmt", "value", "expected"),
    [
        ("auto", 1_700_000_000, 1_700_000_000.0),
        ("auto", 1_700_000_000.5, 1_700_000_000.5),
        ("auto", "1700000000.5", 1_700_000_000.5),  # a captured number: epoch seconds
        ("auto", "2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("auto", "2023-11-14T23:13:20+01:00", 1_700_000_000.0),
        ("auto", "2023-11-14T22:13:20", 1_700_000_000.0),  # no zone: UTC
        ("auto", "yesterday", None),
        ("auto", None, None),
        ("auto", True, None),
        ("auto", [1_700_000_000], None),
        ("auto", "nan", None),
        ("epoch_s", "1700000000", 1_700_000_000.0),
        ("epoch_s", 1e999, None),  # not finite
        ("epoch_s", "2023-11-14T22:13:20Z", None),
        ("epoch_ms", 1_700_000_000_123, 1_700_000_000.123),
        ("epoch_ms", "1700000000123", 1_700_000_000.123),
        ("epoch_ms", "x", None),
        ("rfc3339", "2023-11-14T22:13:20.250Z", 1_700_000_000.25),
        ("rfc3339", 1_700_000_000, None),  # a number is not RFC 3339
        ("%d/%b/%Y:%H:%M:%S %z", "14/Nov/2023:23:13:20 +0100", 1_700_000_000.0),  # nginx $time_local
        ("%d/%b/%Y:%H:%M:%S %z", "14/Nov/2023:23:13:20", None),
        ("%Y-%m-%d %H:%M:%S", "2023-11-14 23:13:20", at("2023-11-14T23:13:20+01:00")),  # no %z: the host's zone
    ],
)
def test_each_time_format_reads_what_it_says_and_nothing_else(fmt: str, value: Any, expected: float | None) -> None:
    """Every format's accepted and refused values; None means the arrival time is used."""
    assert expected == time_converter(fmt, BERLIN)(value, ARRIVAL)


@pytest.mark.parametrize("fmt", ["auto", "rfc3339"])
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-11-14t22:13:20z", 1_700_000_000.0),  # RFC 3339 5.6: `T` and `Z` may be lowercase
        ("2023-11-14T22:13:20.25z", 1_700_000_000.25),
        ("2023-11-14t23:13:20+01:00", 1_700_000_000.0),
        # A leap second: the last microsecond of its minute, before the next second's events.
        ("2016-12-31T23:59:60Z", 1_483_228_799.999999),
        ("2016-12-31t23:59:60.5z", 1_483_228_799.999999),
        ("2016-12-31T15:59:60-08:00", 1_483_228_799.999999),
        ("2016-12-31T23:59:60", 1_483_228_799.999999),  # no zone: UTC
        ("2016-12-31T15:59:60.25-08:00", 1_483_228_799.999999),
        # A second 60 anywhere but at the end of a UTC day is no leap second: unreadable.
        ("2016-12-31T12:30:60Z", None),
        ("2016-12-31T23:30:60Z", None),
        ("2016-12-31T23:59:60-08:00", None),  # 07:59:60 UTC
        ("2016-12-31T23:59:60+01:00", None),  # 22:59:60 UTC
        ("2016-12-31T12:30:60.5z", None),
        ("2016-12-31T23:59:61Z", None),
        ("2016-12-31T23:60:00Z", None),
        ("2016-12-31T23:59:600Z", None),
        ("2016-12-31T23:59:60.5.5Z", None),
    ],
)
def test_rfc3339_takes_lowercase_t_and_z_and_a_leap_second(fmt: str, text: str, expected: float | None) -> None:
    assert expected == time_converter(fmt)(text, ARRIVAL)


@pytest.mark.parametrize(
    ("text", "now", "expected"),
    [
        ("Jan 15 07:30:00", "2027-01-15T08:00:00+01:00", "2027-01-15T07:30:00+01:00"),
        ("Jan  5 07:30:00", "2027-01-15T08:00:00+01:00", "2027-01-05T07:30:00+01:00"),  # space-padded day
        ("Dec 31 23:59:59", "2027-01-01T00:00:05+01:00", "2026-12-31T23:59:59+01:00"),  # last year's
        ("Jan 16 07:30:00", "2027-01-15T08:00:00+01:00", "2027-01-16T07:30:00+01:00"),  # within a day ahead
        ("Jan 17 07:30:00", "2027-01-15T08:00:00+01:00", "2026-01-17T07:30:00+01:00"),  # further: last year
        ("Jul 10 06:55:46", "2027-01-15T08:00:00+01:00", "2026-07-10T06:55:46+02:00"),  # summer time
        ("Feb 29 12:00:00", "2027-03-01T00:00:00+01:00", "2024-02-29T12:00:00+01:00"),  # the latest leap year
        ("Dec 10 06:55:46.25", "2027-01-15T08:00:00+01:00", "2026-12-10T06:55:46.25+01:00"),
        ("dec 10 06:55:46", "2027-01-15T08:00:00+01:00", "2026-12-10T06:55:46+01:00"),
    ],
)
def test_syslog_times_take_the_latest_year_not_in_the_future_and_the_host_zone(
    text: str, now: str, expected: str
) -> None:
    """RFC 3164 times: the year that does not put them more than a day ahead, in the host's zone."""
    assert at(expected) == syslog_time(text, at(now), BERLIN)


@pytest.mark.parametrize("text", ["Foo 10 06:55:46", "Dec 32 06:55:46", "Dec 10 25:00:00", "Dec 10 06:55", "", "x"])
def test_what_is_not_a_syslog_time(text: str) -> None:
    """Unknown months, impossible dates and other shapes are not times."""
    assert syslog_time(text, ARRIVAL, BERLIN) is None


def test_a_strptime_format_without_a_year_takes_the_year_as_syslog_does() -> None:
    """`%b %d %H:%M:%S` has no year: strptime's 1900 would be decades off."""
    convert = time_converter("%b %d %H:%M:%S", BERLIN)
    assert at("2026-12-10T06:55:46+01:00") == convert("Dec 10 06:55:46", ARRIVAL)


def test_a_strptime_format_without_a_year_reads_29_february_in_the_latest_leap_year() -> None:
    """As `syslog` does: strptime's own year, 1900, has no 29 February."""
    convert = time_converter("%b %d %H:%M:%S", BERLIN)
    assert at("2024-02-29T12:00:00+01:00") == convert("Feb 29 12:00:00", at("2027-03-01T00:00:00+01:00"))
    assert convert("Feb 30 12:00:00", ARRIVAL) is None


def test_a_strptime_format_with_a_zone_and_no_year_takes_the_year_as_syslog_does() -> None:
    """`%z` gives the zone, not the year: still not strptime's 1900."""
    convert = time_converter("%b %d %H:%M:%S %z", BERLIN)
    assert at("2026-12-10T06:55:46-05:00") == convert("Dec 10 06:55:46 -0500", ARRIVAL)
    assert at("2026-12-31T23:30:00-05:00") == convert("Dec 31 23:30:00 -0500", at("2027-01-01T05:00:00Z"))


@pytest.mark.parametrize(
    ("fmt", "problem"),
    [
        ("auto", None),
        ("syslog", None),
        ("%d/%b/%Y:%H:%M:%S %z", None),
        ("epoch", "unknown time_format 'epoch': one of auto, epoch_s, epoch_ms, rfc3339, syslog, or a strptime"),
        ("%Y-%Q", "time_format '%Y-%Q' is not a usable strptime format: 'Q' is a bad directive"),
        ("%b %d %H:%M:%S", None),
        ("%Y %j %H:%M", None),
        ("%H:%M:%S", "time_format '%H:%M:%S' reads no date (a month and a day): every event would be dated 1 Jan"),
        ("%Y-%m %H:%M", "time_format '%Y-%m %H:%M' reads no date (a month and a day)"),
        ("%z", "time_format '%z' reads no date"),
        ("%%", "time_format '%%' reads no date"),
    ],
)
def test_time_formats_are_checked(fmt: str, problem: str | None) -> None:
    """Named formats and strptime formats pass; an unknown name or a bad directive says why, and
    so does a format that reads no date (strptime takes 1 January: `%H:%M:%S` dated every event
    months before its arrival, and a day back at each midnight)."""
    found = check_time_format(fmt)
    assert (problem is None and found is None) or (problem is not None and found is not None and problem in found)


def test_a_reader_counts_the_events_whose_time_it_could_not_read() -> None:
    """A missing or unreadable value gives the arrival time and is counted, with the latest kept."""
    reader = TimeReader(EventTime("meta.ts", "epoch_ms"))
    assert 1.5 == reader.read({"meta": {"ts": 1500}}, ARRIVAL)
    assert ARRIVAL == reader.read({"meta": {}}, ARRIVAL)
    assert "missing" == reader.describe_miss()
    assert ARRIVAL == reader.read({"meta": {"ts": "soon"}}, ARRIVAL)
    assert (2, "unreadable: 'soon'") == (reader.misses, reader.describe_miss())


@pytest.mark.parametrize(
    ("fmt", "value", "believed"),
    [
        ("auto", ARRIVAL + 900, ARRIVAL + 900),  # a clock up to 15 minutes ahead is believed
        ("auto", ARRIVAL + 901, None),
        ("auto", 1e308, None),
        ("auto", ARRIVAL - 86400 * 365, ARRIVAL - 86400 * 365),  # the past is not bounded
        ("epoch_s", str(ARRIVAL + 3600), None),
        ("epoch_ms", 1e308, None),
        ("epoch_ms", (ARRIVAL + 60) * 1000, ARRIVAL + 60),
        ("rfc3339", "9999-12-31T23:59:59Z", None),
        ("rfc3339", "2027-01-15T09:00:00+01:00", ARRIVAL),  # 08:00 UTC: the arrival itself
        ("rfc3339", "2027-01-15T09:00:00Z", None),  # the same, its zone read wrong: an hour ahead
        ("%Y-%m-%d %H:%M:%S %z", "2028-01-15 08:00:00 +0000", None),
    ],
)
def test_a_time_more_than_15_minutes_after_the_arrival_is_not_believed(
    fmt: str, value: Any, believed: float | None
) -> None:
    """It would move the clock (which never goes back) far ahead, making every timer due: it
    counts as a miss (None), and its event is evaluated at its arrival time. A second look
    (`peek`) agrees without counting."""
    reader = TimeReader(EventTime("ts", fmt))
    expected = ARRIVAL if believed is None else believed
    assert expected == reader.read({"ts": value}, ARRIVAL) == reader.peek({"ts": value}, ARRIVAL)
    assert (believed is None) == (reader.misses == 1)


def test_a_time_too_far_ahead_is_described_as_such() -> None:
    reader = TimeReader(EventTime("ts"))
    reader.read({"ts": 1e308}, ARRIVAL)
    assert "more than 15m ahead of the clock: 1e+308" == reader.describe_miss()
    reader.read({"ts": "soon"}, ARRIVAL)
    assert "unreadable: 'soon'" == reader.describe_miss()


@pytest.mark.parametrize("fmt", ["auto", "rfc3339"])
def test_a_run_of_times_reads_each_as_it_reads_alone(fmt: str) -> None:
    """The last RFC 3339 text is remembered (events often share a timestamp): repeated,
    alternating, unreadable and number-like values in a row each still read as on their own."""
    convert = time_converter(fmt)
    values = [
        "2024-06-11T10:00:00+00:00",
        "2024-06-11T10:00:00+00:00",
        "2024-06-11T12:00:00+02:00",
        "2024-06-11T10:00:00+00:00",
        "2024-06-11T10:00:00.046Z",
        "2024-13-11T10:00:00Z",  # no 13th month
        "2024-13-11T10:00:00Z",
        "2024-06-11",
        "2024",  # a number (auto), not a year
        "1.2e-3",
        "-100",
        "2024-06-11T10:00:00+00:00",
        "",
    ]
    expected = {
        "2024-06-11T10:00:00+00:00": 1_718_100_000.0,
        "2024-06-11T12:00:00+02:00": 1_718_100_000.0,
        "2024-06-11T10:00:00.046Z": 1_718_100_000.046,
        "2024-13-11T10:00:00Z": None,
        "2024-06-11": 1_718_064_000.0,
        "2024": 2024.0 if fmt == "auto" else None,
        "1.2e-3": 0.0012 if fmt == "auto" else None,
        "-100": -100.0 if fmt == "auto" else None,
        "": None,
    }
    assert [expected[v] for v in values] == [convert(v, ARRIVAL) for v in values]
