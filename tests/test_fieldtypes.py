"""Tests for rulesd.fieldtypes: exactly what converts to int, float and bool."""

from __future__ import annotations

from typing import Any

import pytest

from rulesd.fieldtypes import CONVERTERS


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("int", "503", 503),
        ("int", "-1", -1),
        ("int", "+7", 7),
        ("int", "007", 7),
        ("int", "9223372036854775807", 9223372036854775807),
        ("int", "-9223372036854775808", -9223372036854775808),
        ("int", "9223372036854775808", None),  # beyond 64 bits, as a JSON event could not hold
        ("int", "1" * 5000, None),  # refused before int() reads it
        ("int", "", None),
        ("int", " 5", None),
        ("int", "5 ", None),
        ("int", "1_000", None),
        ("int", "٣", None),  # an Arabic-Indic digit: int() would take it
        ("int", "5.0", None),
        ("int", "0x1f", None),
        ("float", "0.25", 0.25),
        ("float", "-3", -3.0),
        ("float", "1e3", 1000.0),
        ("float", ".5", 0.5),
        ("float", "5.", 5.0),
        ("float", "+2.5E-3", 0.0025),
        ("float", "1e999", None),  # not finite
        ("float", "inf", None),
        ("float", "nan", None),
        ("float", "1_0.5", None),
        ("float", "0x1p3", None),
        ("float", ".", None),
        ("float", "", None),
        ("float", "1e", None),
        ("bool", "true", True),
        ("bool", "TRUE", True),
        ("bool", "Yes", True),
        ("bool", "on", True),
        ("bool", "1", True),
        ("bool", "false", False),
        ("bool", "No", False),
        ("bool", "OFF", False),
        ("bool", "0", False),
        ("bool", "t", None),
        ("bool", "2", None),
        ("bool", "", None),
        ("bool", "yes please", None),
    ],
)
def test_what_converts_and_what_does_not(kind: str, text: str, expected: Any) -> None:
    """Each type's accepted spellings give the value; anything else gives None (left out, counted)."""
    value = CONVERTERS[kind](text)
    assert (expected, type(expected)) == (value, type(value))
