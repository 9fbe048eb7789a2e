"""Durations: an integer of seconds or a string like `30s`, `5m`, `2h`, `1d`, `1h30m`."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"\s*(\d+)\s*([smhd])\s*")
_PLAIN = re.compile(r"\s*(\d+)\s*\Z")


def parse_duration(value: int | str) -> float:
    """Seconds in `value`; ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"bad duration {value!r}: must not be negative")
        return float(value)
    plain = _PLAIN.match(value)
    if plain:
        return float(plain.group(1))
    total, pos = 0, 0
    for m in _PART.finditer(value):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(value) or pos == 0:
        raise ValueError(f"bad duration {value!r}: use seconds or e.g. 30s, 5m, 2h, 1d")
    return float(total)
