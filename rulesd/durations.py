"""Durations: an integer of seconds or a string like `30s`, `5m`, `2h`, `1d`, `1h30m`.

Each unit is written at most once, largest first (`1h30m`; `5m5m` and `30m1h` are errors),
so that a duration reads one way only. None is longer than 100 years.
"""

from __future__ import annotations

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


def _seconds(count: int) -> float:
    # YAML and the unit strings take integers of any size (compared before a float would
    # overflow); times are floats.
    if count > MAX_SECONDS:
        raise ValueError("bad duration: longer than 100 years (36500d), the longest a duration may be")
    return float(count)
