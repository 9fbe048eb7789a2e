"""Literals a regex requires: any text the pattern matches must contain one of them.

The index uses them to skip rules whose regex cannot match a text cheaply (one search for
all literals of a field instead of a regex per rule). They are read from the pattern's parse
tree, which only CPython's private `re._parser` exposes: that dependency on a private API is
kept to this module, so that a Python upgrade that changes it breaks one place.
"""

from __future__ import annotations

import functools
import re
from typing import Any

# Any one of these (literal, case-insensitive) must occur in the text for the regex to match.
Literals = frozenset[tuple[str, bool]]


@functools.lru_cache(maxsize=4096)
def required_literals(pattern: str) -> Literals | None:
    """Literals one of which any text that `pattern` matches must contain; None if unknown.

    Only runs of plain characters in the pattern's main sequence count (and in
    groups and repeats that must match at least once); a top-level `a|b`
    requires a literal from each branch.
    """
    from re import _constants as c  # type: ignore[attr-defined]
    from re import _parser as p  # type: ignore[attr-defined]

    try:
        parsed = p.parse(pattern)
    except re.error:
        return None
    flags = parsed.state.flags
    if flags & ~(
        c.SRE_FLAG_UNICODE | c.SRE_FLAG_IGNORECASE | c.SRE_FLAG_MULTILINE | c.SRE_FLAG_DOTALL | c.SRE_FLAG_VERBOSE
    ):
        return None  # ASCII or LOCALE change what case-insensitive letters match
    folded = bool(flags & c.SRE_FLAG_IGNORECASE)
    options = _sequence_literals(list(parsed), c)
    if not options:
        return None
    return frozenset((text, folded) for text in options)


def _sequence_literals(items: list[tuple[Any, Any]], c: Any) -> frozenset[str] | None:
    """The best requirement of a sequence: its longest literal run, or one from inside."""
    best: frozenset[str] | None = None

    def consider(found: frozenset[str] | None) -> None:
        nonlocal best
        if found and all(found) and (best is None or min(map(len, found)) > min(map(len, best))):
            best = found

    run: list[str] = []
    for op, arg in items:
        if op is c.LITERAL:
            run.append(chr(arg))
            continue
        consider(frozenset(["".join(run)]) if run else None)
        run = []
        if op is c.SUBPATTERN and not arg[1] and not arg[2]:
            consider(_sequence_literals(list(arg[3]), c))
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT) and arg[0] >= 1:
            consider(_sequence_literals(list(arg[2]), c))
        elif op is c.BRANCH:
            branches = [_sequence_literals(list(b), c) for b in arg[1]]
            if all(branches):
                consider(frozenset().union(*branches))  # type: ignore[arg-type]
    consider(frozenset(["".join(run)]) if run else None)
    return best
