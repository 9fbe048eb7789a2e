"""Typed fields: captured text -> int, float or bool (`fields: {status: int}` of a source).

What converts is written out so that a rule's `gte: 500` means the same on every host:

- int: an optional sign and ASCII digits (`503`, `-1`, `+7`, `007`), within the signed 64-bit
  range (what a JSON event can hold); no spaces, underscores, other digits or fractions.
- float: what a JSON number allows, plus a leading or trailing point and a sign (`0.25`,
  `-3`, `1e3`, `.5`, `5.`, `+2.5E-3`); no `inf`, `nan`, hex or underscores, and the value
  must be finite (`1e999` does not convert).
- bool: `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`, in any case.

A value that does not convert gives None: the source leaves the field out and counts it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 63) - 1
_INT_DIGITS_MAX = 20  # more digits than any 64-bit integer: refused before int() reads them
_BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def to_int(text: str) -> int | None:
    """`text` as an integer, or None (see the module docstring)."""
    if len(text) > _INT_DIGITS_MAX + 1 or _INT.fullmatch(text) is None:
        return None
    value = int(text)
    return value if _INT_MIN <= value <= _INT_MAX else None


def to_float(text: str) -> float | None:
    """`text` as a finite float, or None (see the module docstring)."""
    if _FLOAT.fullmatch(text) is None:
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def to_bool(text: str) -> bool | None:
    """`text` as a boolean, or None (see the module docstring)."""
    return _BOOLS.get(text.lower()) if len(text) <= 5 else None


CONVERTERS: dict[str, Callable[[str], Any]] = {"int": to_int, "float": to_float, "bool": to_bool}
"""Each field type a source's `fields` may name, with its conversion."""
