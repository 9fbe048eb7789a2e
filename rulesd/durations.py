"""Durations: an integer of seconds or a string like `30s`, `5m`, `2h`, `1d`, `1h30m`.

Each unit is written at most once, largest first (`1h30m`; `5m5m` and `30m1h` are errors),
so that a duration reads one way only. None is longer than 100 years. A number without a unit
is seconds, but draws a warning (`unitless`): Prometheus refuses `for: 5` and ElastAlert writes
`minutes: 5`, so a user of either who writes `window: 5` may well mean five minutes.
"""

from __future__ import annotations

import functools
import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The longest duration a rule, a rule test or a config may give: none a user means is longer,
# and a longer one (`9999999999999999999999d`) is a typo that would otherwise be accepted.
MAX_SECONDS = 36500 * 86400  # 100 years
_PART = re.compile(r"\s*(\d+)\s*([smhd])\s*")
_PLAIN = re.compile(r"\s*(\d+)\s*\Z")


def parse_duration(value: int | str) -> float:
    """Seconds in `value`; ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"bad duration {value!r}: must not be negative")
        return _seconds(value)
    return _known_text(value) if type(value) is str else _text_seconds(value)


def _text_seconds(value: str) -> float:
    plain = _PLAIN.match(value)
    if plain:
        return _seconds(int(plain.group(1)))
    total, pos, smallest = 0, 0, float("inf")
    for m in _PART.finditer(value):
        if m.start() != pos:
            break
        unit = _UNITS[m.group(2)]
        if unit >= smallest:
            raise ValueError(f"bad duration {value!r}: each unit at most once, largest first (e.g. 1h30m)")
        total, pos, smallest = total + int(m.group(1)) * unit, m.end(), unit
    if pos != len(value) or pos == 0:
        raise ValueError(f"bad duration {value!r}: use seconds or e.g. 30s, 5m, 2h, 1d, 1h30m")
    return _seconds(total)


# A rule set repeats its few durations (`5m` in hundreds of rules), read again at every start:
# each text is parsed once per process. (A text that is no duration raises each time.)
_known_text = functools.lru_cache(maxsize=1024)(_text_seconds)


def _seconds(count: int) -> float:
    # YAML and the unit strings take integers of any size (compared before a float would
    # overflow); times are floats.
    if count > MAX_SECONDS:
        raise ValueError("bad duration: longer than 100 years (36500d), the longest a duration may be")
    return float(count)


def unitless(value: object) -> str | None:
    """The warning for a duration written as a number without a unit (other than 0, which
    is 0 in any unit), if `value` is one: it is seconds, which may not be what was meant."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    plain = _PLAIN.match(value) if isinstance(value, str) else None
    count = int(plain.group(1)) if plain else value if isinstance(value, int) else 0
    if not count:
        return None
    message = f"{count} has no unit, so it is {count} seconds: write {count}s to say so"
    return message + (f" ({count}m if minutes were meant)" if count < 60 else "")
