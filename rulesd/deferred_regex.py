"""Regular expressions compiled when first used, for patterns only a rare input or a mistake
needs (a name that is not printable, a misplaced key, a leap second, a refused regex): each
`re.compile` costs 0.1–0.5 ms, and every command's start compiled them all (~3 ms)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import AnyStr


def when_used(pattern: AnyStr, flags: int = 0) -> Callable[[], re.Pattern[AnyStr]]:
    """A function that returns `pattern` compiled, compiling it at its first call."""
    return functools.cache(lambda: re.compile(pattern, flags))
