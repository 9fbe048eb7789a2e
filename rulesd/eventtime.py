"""Event time: a field of the event, read in a source's `time_format`, as epoch seconds.

    auto       a number: epoch seconds; a string of a number: the same; any other string:
               RFC 3339 / ISO 8601 (as `datetime.fromisoformat` reads it; no zone means UTC)
    epoch_s    a number, or a string of one: epoch seconds
    epoch_ms   a number, or a string of one: epoch milliseconds
    rfc3339    a string: RFC 3339 / ISO 8601, as auto reads one (a lowercase `t` or `z`, and a
               leap second, read as the last microsecond of its minute, included)
    syslog     a string `Dec 10 06:55:46` (RFC 3164; the day may be space-padded, a fraction
               of a second may follow): no year and no zone (see `syslog_time`)
    otherwise  a `strptime` format such as `%d/%b/%Y:%H:%M:%S %z` (nginx `$time_local`);
               without `%z` the time is the host's local time, and without a year directive
               the year is chosen as for syslog

A value that cannot be read gives None; the engine then uses the arrival time and the
reader counts it (`TimeReader.misses`). So does a time more than AHEAD_LIMIT after the arrival
time (the wall clock when the line was read): the engine's clock never goes back, so one such
event would make every timer due at once, and keep them so. Reading is lazy: the engine reads
an event's time only when some rule might match the event, so a slow format costs only those
events.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable
from typing import Any

import msgspec

from rulesd.deferred_regex import when_used
from rulesd.rules.fields import MISSING, Event, make_getter
from rulesd.times import span

AUTO = "auto"
NAMED_FORMATS = (AUTO, "epoch_s", "epoch_ms", "rfc3339", "syslog")
# A host's clock may run minutes ahead; a time further ahead is a wrong clock, a wrong zone
# (at least 30 minutes off) or garbage, and is not believed.
AHEAD_LIMIT = 900.0
FUTURE_SLACK = 86400.0  # a year-less time may lie this far past "now" (zones, clocks) before it is last year's
# A second 60 (`23:59:60`, any fraction), a leap second where it ends a UTC day: RFC 3339
# allows it, datetime has no second 60.
_LEAP_SECOND = when_used(r"(?<=[0-9]{2}:[0-9]{2}:)60(?:[.,][0-9]+)?(?![0-9.,])")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SYSLOG = re.compile(r"([A-Za-z]{3}) {1,2}([0-9]{1,2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6}))?")
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}
_YEAR_DIRECTIVES = ("%Y", "%y", "%G", "%c", "%x", "%s")
_SAMPLE = datetime.datetime(2024, 12, 10, 6, 55, 46, 123456, tzinfo=datetime.UTC)

Convert = Callable[[Any, float], float | None]


class EventTime(msgspec.Struct, frozen=True):
    """Where an event's time is and how it is written: a field path and a time format."""

    field: str
    format: str = AUTO


def check_time_format(fmt: str) -> str | None:
    """Why `fmt` is not a time format, or None if it is one."""
    if fmt in NAMED_FORMATS:
        return None
    if "%" not in fmt:
        return (
            f"unknown time_format {fmt!r}: one of {', '.join(NAMED_FORMATS)}, or a strptime format "
            "with % directives such as '%d/%b/%Y:%H:%M:%S %z'"
        )
    try:  # a format that cannot read back what it writes is no use (`%Q`, a lone `%`)
        read = datetime.datetime.strptime(_SAMPLE.strftime(fmt), fmt)
    except ValueError as exc:
        return f"time_format {fmt!r} is not a usable strptime format: {exc}"
    if (read.month, read.day) != (_SAMPLE.month, _SAMPLE.day):
        # strptime takes 1 January for a missing date: every event months before its arrival,
        # and a day back at each midnight (heartbeats dated a window before the clock: absences
        # paged for hosts still beating)
        return (
            f"time_format {fmt!r} reads no date (a month and a day): every event would be dated 1 January; "
            "add the date's directives (%b %d, %m/%d, %j), or leave out time_field to count events at their "
            "arrival"
        )
    return None


def time_converter(fmt: str, tz: datetime.tzinfo | None = None) -> Convert:
    """`convert(value, now)`: the epoch seconds `value` stands for in format `fmt`, or None.

    `now` (the arrival time) decides the year of a year-less time; `tz` is the zone of a
    zone-less one for syslog and strptime formats (None: the host's).
    """
    if fmt == AUTO:
        return _auto
    if fmt == "epoch_s":
        return _epoch_seconds
    if fmt == "epoch_ms":
        return _epoch_milliseconds
    if fmt == "rfc3339":
        return lambda value, now: _iso(value) if type(value) is str else None
    if fmt == "syslog":
        return _remembering(lambda value, now: syslog_time(value, now, tz) if type(value) is str else None)
    return _remembering(_strptime_converter(fmt, tz))


def _auto(value: Any, now: float) -> float | None:
    if type(value) is str:
        # A date first (most times: no number looks so), without trying it as a number.
        if (value[4:5] == "-" and value[:4].isdigit()) or _NUMBER.fullmatch(value) is None:
            return _iso(value)
        return _finite(float(value))
    return _number(value)


def _epoch_seconds(value: Any, now: float) -> float | None:
    return _number(value)


def _epoch_milliseconds(value: Any, now: float) -> float | None:
    seconds = _number(value)
    return None if seconds is None else seconds / 1000.0


def _number(value: Any) -> float | None:
    kind = type(value)
    if kind is str:
        if _NUMBER.fullmatch(value) is None:
            return None
        value = float(value)
    elif kind is not int and kind is not float:  # bool is not a time
        return None
    return _finite(float(value))


def _finite(number: float) -> float | None:
    return number if math.isfinite(number) else None


# The last RFC 3339 text read and its time: consecutive events often share a timestamp (a
# second's resolution, a burst); one tuple, replaced whole, so threads never see half of one.
_last_iso: tuple[str, float | None] = ("", None)


def _iso(value: str) -> float | None:
    global _last_iso
    last = _last_iso
    if last[0] == value:
        return last[1]
    try:
        parsed: datetime.datetime | None = datetime.datetime.fromisoformat(value)
    except ValueError:
        parsed = _rfc3339_rest(value)
    if parsed is None:
        seconds = None
    else:
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.UTC)
        seconds = parsed.timestamp()
    _last_iso = (value, seconds)
    return seconds


def _rfc3339_rest(value: str) -> datetime.datetime | None:
    """What RFC 3339 allows and `fromisoformat` refuses (so only refused values pay for it): a
    lowercase `z` (a lowercase `t` it takes), and a leap second, read as the last microsecond
    of its minute (the event keeps its place before the next second's, and is not lost).
    A second 60 is a leap second only at 23:59 UTC (RFC 3339 5.7: it ends a UTC day, so at
    15:59:60-08:00); elsewhere it is a wrong time, not read as the minute's end."""
    lowered = value[:-1] + "Z" if value.endswith("z") else value
    text = _LEAP_SECOND().sub("59.999999", lowered, count=1)
    if text == value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    utc = parsed.astimezone(datetime.UTC) if parsed.tzinfo is not None else parsed  # no zone: UTC
    if text != lowered and (utc.hour, utc.minute) != (23, 59):
        return None
    return parsed


def syslog_time(text: str, now: float, tz: datetime.tzinfo | None = None) -> float | None:
    """`Dec 10 06:55:46` as epoch seconds, or None.

    RFC 3164 times have no year and no zone. As rsyslog and fail2ban read them, the zone is
    the host's (`tz`, None: the host's) and the year is the latest one that does not put the
    time after `now` by more than FUTURE_SLACK (so a line of 31 December read on 1 January is
    last year's; Feb 29 goes back to the latest leap year).
    """
    found = _SYSLOG.fullmatch(text)
    if found is None:
        return None
    month = _MONTHS.get(found.group(1).lower())
    if month is None:
        return None
    fraction = found.group(6) or "0"
    fields = (month, int(found.group(2)), int(found.group(3)), int(found.group(4)), int(found.group(5)))
    return _in_latest_year(fields, int(fraction.ljust(6, "0")), now, tz)


def _in_latest_year(
    fields: tuple[int, int, int, int, int], micros: int, now: float, tz: datetime.tzinfo | None
) -> float | None:
    """Epoch seconds of month-day-hour-minute-second in the latest fitting year (see `syslog_time`)."""
    month, day, hour, minute, second = fields
    year = datetime.datetime.fromtimestamp(now, tz).year
    for candidate in range(year + 1, year - 8, -1):  # 8 years back: the latest Feb 29 is in there
        try:
            moment = datetime.datetime(candidate, month, day, hour, minute, second, micros, tzinfo=tz)
        except ValueError:
            if candidate == year + 1 and not (1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
                return None  # not a date in any year
            continue
        seconds = moment.timestamp()
        if seconds <= now + FUTURE_SLACK:
            return seconds
    return None


def _strptime_converter(fmt: str, tz: datetime.tzinfo | None) -> Convert:
    has_year = any(directive in fmt for directive in _YEAR_DIRECTIVES)
    # Without a year strptime takes 1900, which has no 29 February: read a leap year instead
    # (the year is then chosen as for syslog).
    year, parse_fmt = ("", fmt) if has_year else (" 2000", fmt + " %Y")

    def convert(value: Any, now: float) -> float | None:
        if type(value) is not str:
            return None
        try:
            parsed = datetime.datetime.strptime(value + year, parse_fmt)
        except ValueError:
            return None
        if not has_year:
            fields = (parsed.month, parsed.day, parsed.hour, parsed.minute, parsed.second)
            return _in_latest_year(fields, parsed.microsecond, now, parsed.tzinfo or tz)
        if parsed.tzinfo is not None:
            return parsed.timestamp()
        return parsed.replace(tzinfo=tz).timestamp() if tz is not None else parsed.timestamp()

    return convert


def _remembering(convert: Convert) -> Convert:
    """`convert` with its last answer kept: a burst of lines often shares one timestamp, and
    these formats are the slow ones."""
    last: list[Any] = [None, None, None]  # value, now, result

    def remembered(value: Any, now: float) -> float | None:
        if value == last[0] and now == last[1] and value is not None:
            result: float | None = last[2]
            return result
        result = convert(value, now)
        last[:] = [value, now, result]
        return result

    return remembered


class TimeReader:
    """Reads one source's event time: its `EventTime` made into the parts the engine inlines,
    and a count of the events whose time could not be read (those use the arrival time)."""

    def __init__(self, spec: EventTime, tz: datetime.tzinfo | None = None) -> None:
        self.spec = spec
        # A top-level field is read with `event.get`, cheaper than calling a getter.
        self.key = spec.field
        self.getter: Callable[[Event], Any] | None = make_getter(spec.field) if "." in spec.field else None
        # A float in these formats is the time itself: the engine takes it without a call.
        self.floats_are_seconds = spec.format in (AUTO, "epoch_s")
        self.misses = 0
        self.latest_miss: Any = MISSING
        self.latest_ahead = False  # the latest miss was a time too far ahead, not unreadable
        # Where a miss counts, given its arrival: there (None), or elsewhere (replay: the clock).
        self.untimed: Callable[[float], float] | None = None
        self._convert = time_converter(spec.format, tz)

    def convert(self, value: Any, arrival: float) -> float:
        """The time `value` stands for; the arrival time (counted as a miss; see `untimed`) if
        it has none, or one more than AHEAD_LIMIT after `arrival`."""
        seconds = self._convert(value, arrival)
        if seconds is None or seconds > arrival + AHEAD_LIMIT:
            self.misses += 1
            self.latest_miss, self.latest_ahead = value, seconds is not None
            return arrival if self.untimed is None else self.untimed(arrival)
        return seconds

    def peek(self, event: Event, arrival: float) -> float:
        """The event's time, without counting it as a miss if it has none (a second look at
        an event the engine has read, or one it had no reason to)."""
        value = event.get(self.key) if self.getter is None else self.getter(event)
        seconds = value if type(value) is float and self.floats_are_seconds else self._convert(value, arrival)
        if seconds is None or seconds > arrival + AHEAD_LIMIT:
            return arrival if self.untimed is None else self.untimed(arrival)
        return seconds

    def read(self, event: Event, arrival: float) -> float:
        """The event's time (the engine inlines this; other callers use it as it is)."""
        value = event.get(self.key) if self.getter is None else self.getter(event)
        if type(value) is float and self.floats_are_seconds and value <= arrival + AHEAD_LIMIT:
            return value
        return self.convert(value, arrival)

    def describe_miss(self) -> str:
        """The latest value not taken, for a warning: `missing`, or why and its repr."""
        value = self.latest_miss
        if value is None or value is MISSING:
            return "missing"
        if self.latest_ahead:
            return f"more than {span(AHEAD_LIMIT)} ahead of the clock: {value!r:.80}"
        return f"unreadable: {value!r:.80}"
