"""Times as commands show them: RFC 3339 in UTC, and relative to a clock ("in 4m", "3m ago")."""

from __future__ import annotations

import math
import time

_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


_FIRST, _LAST = -62135596800, 253402300800  # 0001-01-01 and 10000-01-01, in epoch seconds


def rfc3339(epoch: float) -> str:
    """`2026-12-04T10:00:00Z`: UTC, to the second. A time RFC 3339 cannot write (years 1 to
    9999; an event's time field may hold any number, and a duration add to it) is shown as
    epoch seconds instead."""
    if not _FIRST <= epoch < _LAST:
        return f"{epoch:.15g} (epoch seconds)"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def span(seconds: float) -> str:
    """A length of time in its two largest units, as durations are written: `45s`, `4m`,
    `1h30m`, `2d3h` (rounded to the second)."""
    left = round(seconds)
    if left <= 0:
        return "0s"
    parts: list[str] = []
    for unit, size in _UNITS:
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
        elif parts:  # `1h0m5s` is `1h`, not `1h5s`: two neighbouring units at most
            break
        if len(parts) == 2:
            break
    return "".join(parts)


def relative(epoch: float, clock: float) -> str:
    """`in 4m`, `3m ago` or `now`: `epoch` seen from `clock`."""
    delta = epoch - clock
    if not math.isfinite(delta) or abs(delta) < 0.5:
        return "now"
    return f"in {span(delta)}" if delta > 0 else f"{span(-delta)} ago"


def when(epoch: float, clock: float) -> str:
    """`2026-12-04T10:04:00Z (in 4m)`: the time and how far it is from `clock`."""
    return f"{rfc3339(epoch)} ({relative(epoch, clock)})"
