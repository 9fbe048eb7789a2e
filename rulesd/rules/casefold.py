"""Unicode simple case folding, exactly as Hyperscan's caseless matching has it.

`nocase: true` makes `contains`, `startswith`, `endswith` and `regex` ignore case through
Hyperscan (caseless patterns), and `equals` and `in` through `fold`: a text equals another
ignoring case when their folds are equal, which lets the index look them up in a table of
folded values. The two must agree on every character, so `fold` is what Hyperscan does:

- simple case folding, one character for one (`É` -> `é`, the Kelvin sign -> `k`, `Σ` and `ς`
  -> `σ`, `ẞ` -> `ß`), never full folding (`ß` stays `ß`, not `ss`), and no Turkish rules (`İ`
  and `ı` fold only to themselves);
- of Unicode 7.0, the version of Hyperscan's tables: the letters given a case mapping later
  (`_LATER`: Cherokee lowercase, Georgian Mtavruli, Osage, Adlam, …) fold to themselves.

The table is derived from Python's Unicode data (a character's one-character case fold, else
its one-character lowercase, which is its simple fold), and `tests/test_casefold.py` holds it to
Hyperscan's answer for every character that has a case.
"""

from __future__ import annotations

import functools

# Characters whose case mapping Unicode gave after 7.0, as ranges of code points (both ends in).
_LATER = (
    (0x13F8, 0x13FD),
    (0x1C80, 0x1C88),
    (0x1C90, 0x1CBA),
    (0x1CBD, 0x1CBF),
    (0x2C2F, 0x2C2F),
    (0xA7AE, 0xA7AE),
    (0xA7B2, 0xA7B4),
    (0xA7B6, 0xA7B6),
    (0xA7B8, 0xA7B8),
    (0xA7BA, 0xA7BA),
    (0xA7BC, 0xA7BC),
    (0xA7BE, 0xA7BE),
    (0xA7C0, 0xA7C0),
    (0xA7C2, 0xA7C2),
    (0xA7C4, 0xA7C7),
    (0xA7C9, 0xA7C9),
    (0xA7D0, 0xA7D0),
    (0xA7D6, 0xA7D6),
    (0xA7D8, 0xA7D8),
    (0xA7F5, 0xA7F5),
    (0xAB70, 0xABBF),
    (0x104B0, 0x104D3),
    (0x10570, 0x1057A),
    (0x1057C, 0x1058A),
    (0x1058C, 0x10592),
    (0x10594, 0x10595),
    (0x10C80, 0x10CB2),
    (0x16E40, 0x16E5F),
    (0x1E900, 0x1E921),
)
_CASED_PLANES = 0x20000  # every character with a case is in the first two planes


def simple_fold(char: str) -> str:
    """The simple case fold of one character, as Hyperscan folds it."""
    code = ord(char)
    if any(low <= code <= high for low, high in _LATER):
        return char
    folded = char.casefold()
    if len(folded) == 1:
        return folded
    lower = char.lower()  # (full folding differs: the simple fold, if any, is the lowercase)
    return lower if len(lower) == 1 else char


# Global state: the folding table, built once (about 20 ms) when a rule first needs it.
@functools.cache
def _table() -> dict[int, str]:
    # A character with a fold changes under lower() or upper(): only those are looked at.
    cased = (c for c in map(chr, range(_CASED_PLANES)) if c.lower() != c or c.upper() != c)
    return {ord(c): folded for c in cased if (folded := simple_fold(c)) != c}


def fold(text: str) -> str:
    """`text` with every character replaced by its simple case fold."""
    if text.isascii():
        return text.lower()  # (A-Z are the only ASCII characters that fold)
    return text.translate(_table())


def prepare() -> None:
    """Build the folding table now, while rules compile, so that no event waits for it."""
    _table()
