"""Caseless patterns of ASCII that Hyperscan can compile as bytes, with the same answers.

In UTF-8 mode Hyperscan folds case as Unicode does, and two characters outside ASCII fold to
ASCII letters: the Kelvin sign to `k` and the long s to `s`. Each `k` and `s` of a caseless
pattern is then an alternation of byte sequences, which breaks up the literals Hyperscan
builds its matcher from: 29 caseless regexes of one field took 0.12 s to compile together,
against 0.01 s as bytes (where case folds in ASCII only).

A pattern `byte_caseless` accepts is compiled as bytes, and answers as in UTF-8 mode for
every text: each of its atoms matches ASCII characters only (no `.`, no negated class, no
`\\w`, `\\b` and the like, no escape beyond ASCII), and it has no `$` (Hyperscan's byte mode
misses some matches before a final newline that caseless UTF-8 mode finds), so on valid
UTF-8 a byte-mode match is a UTF-8 match, but for the two characters. A text holding one
(the database's `TRAP` finds it) is scanned again with them written `k` and `s`
(`ascii_folded`), for those patterns alone:
every atom matches the Kelvin sign where it matches `k` (`(?i)k`, `(?i)[j-l]`) and the long
s where it matches `s`, as Hyperscan's own folding does, and no atom tells the character
from its letter (`\\w` would: it takes `k` and not the Kelvin sign). The tests hold the two
modes to the same answers on random patterns and texts full of both characters.
"""

from __future__ import annotations

_HEX = frozenset("0123456789abcdefABCDEF")
# Escapes of ASCII characters (a digit, a space, controls) and the anchors; `\b`, `\w` and
# their kin are left out (see above), as are references and octal escapes.
_ESCAPES = frozenset("dsnrtfae")
_ANCHORS = frozenset("AzZ")

# The characters outside ASCII that Unicode case folding takes to ASCII letters.
FOLDED_TO_ASCII = {0x212A: "k", 0x17F: "s"}
# A database holding patterns compiled as bytes also holds this one, under an id no rule's
# pattern has: a text it is found in is scanned again (`ascii_folded`). The scan asks for it
# only where something was found, so a text where nothing is pays nothing for it (a check of
# every text cost ~500 instructions a scan, +0.2-0.9% of a replay at 100 rules).
TRAP = "[\\x{212a}\\x{17f}]"
FOLD_TRAP = 2**31 - 1


def byte_caseless(expression: str, caseless: bool) -> bool:
    """Whether a pattern can be compiled as bytes with ASCII case folding and answer, with
    `ascii_folded`, exactly as in UTF-8 mode: all of it ignores case (the flag, or a leading
    `(?i)` with no other flag group after it), and every atom matches ASCII characters only."""
    if expression.startswith("(?i)"):
        expression, caseless = expression[4:], True
    if not caseless or not expression.isascii():
        return False
    at, end = 0, len(expression)
    while at < end:
        char = expression[at]
        if char == "\\":
            at = _escape_end(expression, at, in_class=False)
        elif char == "[":
            at = _class_end(expression, at)
        elif char == "." or char == "$":
            # `$` before a final newline: Hyperscan misses `ks*$` in a text of 17 bytes or more
            # ending "k\n" in byte mode (and case-sensitive UTF-8 mode), not in caseless UTF-8
            return False
        elif char == "(" and expression.startswith("(?", at):
            # a plain group only: a flag group could turn case folding off (`(?-i)`) or read
            # `#` as a comment (`(?x)`), and look-arounds are refused anyway
            at = at + 3 if expression.startswith("(?:", at) else -1
        else:
            at += 1
        if at < 0:
            return False
    return True


def _escape_end(expression: str, at: int, *, in_class: bool) -> int:
    """Where the escape at `at` ends, or -1 if it may match a character beyond ASCII."""
    if at + 1 >= len(expression):
        return -1
    char = expression[at + 1]
    if not char.isalnum() or char in _ESCAPES or (char in _ANCHORS and not in_class):
        return at + 2
    if char != "x":
        return -1
    if expression.startswith("{", at + 2):
        close = expression.find("}", at + 3)
        digits, after = (expression[at + 3 : close], close + 1) if close > 0 else ("", -1)
    else:
        after = at + 2
        while after < len(expression) and after < at + 4 and expression[after] in _HEX:
            after += 1
        digits = expression[at + 2 : after]
    if not digits or not _HEX.issuperset(digits) or int(digits, 16) >= 0x80:
        return -1
    return after


def _class_end(expression: str, at: int) -> int:
    """Where the class at `at` ends, or -1 if it is negated or may match beyond ASCII."""
    end = len(expression)
    at += 1
    if expression.startswith("^", at):
        return -1
    if expression.startswith("]", at):  # a `]` first is one of the class's characters
        at += 1
    while at < end:
        char = expression[at]
        if char == "]":
            return at + 1
        if char == "\\":
            at = _escape_end(expression, at, in_class=True)
            if at < 0:
                return -1
        elif char == "[" and expression[at + 1 : at + 2] in (":", ".", "="):  # POSIX classes
            return -1
        else:
            at += 1
    return -1


def ascii_folded(value: str) -> str:
    """`value` with the Kelvin sign written `k` and the long s `s`."""
    return value.translate(FOLDED_TO_ASCII)
