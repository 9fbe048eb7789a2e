"""Tests for rulesd.printable: control characters escaped as JSON writes them."""

from __future__ import annotations

import re

from rulesd.printable import escape, lines, one_line

# What `lines` escapes: every control character but the line feed, DEL, C1, and the Unicode
# line and paragraph separators.
CONTROLS_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
TEXTS = [chr(c) for c in range(0x3000)] + ["\ufeff", "\U0001f600", "\udcff", "\U000e0001", ""]


def test_lines_escapes_exactly_the_controls_but_the_line_feed() -> None:
    """Each character alone and between words: escaped as the pattern says, whichever of
    `isprintable()` and the search decided (a text `isprintable()` takes holds none of them)."""
    for char in TEXTS:
        for text in (char, f"a {char} b", f"line\n{char}"):
            assert CONTROLS_BUT_NEWLINE.sub(escape, text) == lines(text), repr(text)


def test_one_line_escapes_line_breaks_too() -> None:
    """`one_line` also escapes the line feed: one line, as printed."""
    assert "a\\nb\\u001b\\u2028" == one_line("a\nb\x1b\u2028")
