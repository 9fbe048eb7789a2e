"""A field's texts of a block of events scanned as one text, to find the few that hold a pattern.

Most texts of a free-text field (an application's `message`, a command line) hold none of the
rules' patterns, and a scan through the Hyperscan binding costs mostly its call: ~0.5 us for a
60-byte message, of which the bytes are ~0.03 us. So a block's texts are joined by newlines and
the joined text is scanned once, by a database of the field's patterns that reports every
match (not only the first of each pattern, as the field's own); a text holding the end of a
match reported is scanned alone for its answer, every other text holds no pattern.

That is so because wherever a pattern is found in a text alone, it is found in the joined text
at a match within that text's bytes, which the database reports. Each pattern is written for
the joined text (`joined_expression`) so that it is found there wherever it was in a text:
- `^` matches at the start of every text (the database is multi-line), and `\\A` is written `^`;
- `$`, `\\z` and `\\Z` are left out: a zero-width assertion left out only widens where a
  pattern is found (this also keeps clear of Hyperscan's misses of a `$` after a repeat);
- a repeat that ends a pattern is cut to its least: a match of the pattern holds one of the
  pattern so cut, ending inside it (and `error.*` no longer reports a match at every byte);
- `\\b` and `\\B` see a newline at a text's edge where they saw the edge: alike (neither is an
  ASCII word character); every other item matches the same bytes inside a text.
A pattern found in more places than in the texts alone costs only the scan of a text flagged. A
regex that RE2 answers for too stands in by its body, as in the field's own database. An empty
match ends where it starts: it is the text's before it and the text's after it (`flagged`). A
pattern whose anchors cannot be so written (a flags group clearing `m`, or the extended syntax
of `(?x)`, where a comment may hide an anchor), or that is found in an empty text, keeps its
field scanned text by text.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate

import hyperscan

from rulesd.rules import regex_text

SEPARATOR = "\n"
# UTF-8 and empty matches like the field's own database, every match reported (no
# HS_FLAG_SINGLEMATCH), `^` after every newline.
FLAGS = hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_ALLOWEMPTY | hyperscan.HS_FLAG_MULTILINE
# What each absolute anchor is written as.
_ANCHORS = {"\\A": "^", "\\z": "", "\\Z": ""}


def joined_expression(expression: str) -> str | None:
    """`expression` for the database of joined texts (see the module's text); None if it
    cannot be written so. A repeat that ends it is cut to its least (`a.*` is written `a`,
    `\\d+` `\\d`, `x{2,}` `x{2}`), where no `|` may hold it: a match found ends where a
    match of the whole pattern may start its repeat, which is reported at every byte it
    takes (`error.*` at each byte after `error`), each report a call into Python."""
    written: list[tuple[str, str]] = []
    for kind, text in regex_text.pieces(expression):
        if kind == regex_text.FLAGS and ("x" in text or "m" in text.partition("-")[2]):
            return None
        if kind == regex_text.DOLLAR:
            continue
        written.append((kind, _ANCHORS.get(text, text) if kind == regex_text.ESCAPE else text))
    if (regex_text.OTHER, "|") not in written:
        while _least_repeat(written):
            pass
    return "".join(text for _, text in written)


def _least_repeat(written: list[tuple[str, str]]) -> bool:
    """Cut the repeat that ends `written` (an atom: a character, an escape or a class) to its
    least; whether there was one to cut."""
    if not written or written[-1][0] != regex_text.OTHER or written[-1][1] not in "*+?}":
        return False
    end = len(written) - 1
    least, start = 0, end  # the repeat's least count, and where its quantifier starts
    if written[end][1] == "}":
        start = next((j for j in range(end - 1, -1, -1) if written[j][1] == "{"), -1)
        inside = "".join(text for _, text in written[start + 1 : end]) if start > 0 else ""
        low = inside.partition(",")[0]
        if not low.isdigit() or not all(c.isdigit() or c == "," for c in inside):
            return False  # (not a count: `\x{24}`, `\p{L}`)
        least = int(low)
    elif written[end][1] == "+":
        least = 1
    atom = _atom_start(written, start)
    if atom < 0:
        return False
    if least == 0:
        del written[atom:]
    else:
        written[start:] = [] if least == 1 else [(regex_text.OTHER, f"{{{least}}}")]
    return True


def _atom_start(written: list[tuple[str, str]], end: int) -> int:
    """Where the atom before `end` starts: a character, an escape or a class; -1 for any
    other (a group, a quoted text, another repeat, nothing)."""
    if end == 0:
        return -1
    kind, text = written[end - 1]
    if kind == regex_text.ESCAPE or (kind == regex_text.OTHER and text not in "()|*+?{}^"):
        return end - 1
    if kind == regex_text.CLASS and text == "]":
        return next(
            (j for j in range(end - 1, -1, -1) if written[j][0] == regex_text.CLASS and written[j][1].startswith("[")),
            -1,
        )
    return -1


def flagged(reported: list[int], texts: list[str], data: bytes, text: str) -> set[int]:
    """The indexes of the `texts` (joined by SEPARATOR as `text`, whose UTF-8 is `data`)
    holding the ends of the matches `reported` (end offsets in `data`): the text holding a
    match's last byte (or whose separator it is: no text alone holds that match, it is flagged
    in vain), and, for a match that may be empty, the text starting at its end (an empty match
    there is that text's, at its start)."""
    last = len(texts) - 1
    if data.count(b"\n") == last:  # (no text holds a newline: a text's index is the separators before it)
        # The ends in order, each counting on from the one before: the bytes are read once,
        # not once per match (a block with many matches read them as often).
        count = data.count
        found: set[int] = set()
        at = separators = 0  # the separators in data[:at]
        for end in sorted(set(reported)):
            if not end:
                found.add(0)  # (an empty match at the start: the first text's)
                continue
            separators += count(b"\n", at, end - 1)
            at = end - 1
            found.add(separators)  # the text holding the match's last byte (or its separator)
            if data[at] == 10:  # (an empty match may follow that separator: the next text's)
                found.add(min(separators + 1, last))
        return found
    after = _ends(texts, data, text)
    found = {min(bisect_right(after, end - 1), last) for end in reported}
    found.update(min(bisect_right(after, end), last) for end in reported)
    return found


def _ends(texts: list[str], data: bytes, text: str) -> list[int]:
    """For each of `texts`, the offset in `data` just past the separator after it."""
    lengths = map(len, texts) if len(data) == len(text) else (len(t.encode()) for t in texts)
    return [end + i for i, end in enumerate(accumulate(lengths), 1)]
