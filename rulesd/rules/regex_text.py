"""A rule regex read as a run of its pieces, for what the second engine needs to know of it.

Hyperscan misses some matches of a regex holding a repeat and `$` (see `patterns`), which RE2
is asked about too. Two texts are made from such a regex here, both of them by reading where
its escapes, `\\Q...\\E` quotes and character classes are, so that a `$` or `\\s` inside them is
left as written:

- `body`: the regex without its `$` assertions, a prefilter. Removing a zero-width assertion
  only widens what a regex is found in (found anywhere), so wherever the regex is found, so is
  its body; RE2 is asked only of a text where Hyperscan finds a body.
- `for_re2`: the regex as RE2 must be given it to mean what Hyperscan means: RE2's `\\s` has no
  vertical tab, Hyperscan's and Python's have.

`multiline_start` says whether a regex may hold a `^` of `(?m)`, which RE2 finds after a text's
final newline and Hyperscan does not.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

# The kinds of piece.
ESCAPE = "escape"  # `\\x` outside a class (`\\x{24}` is the escape `\\x` then its text)
IN_CLASS = "in-class"  # an escape inside a class
CLASS = "class"  # the rest of a class: brackets, characters, ranges, `[:alpha:]`
QUOTED = "quoted"  # `\\Q...\\E`, every character literal
DOLLAR = "dollar"  # `$`, an assertion
CARET = "caret"  # `^`, an assertion
FLAGS = "flags"  # `(?ims)` or `(?ims:`, flags set or cleared
OTHER = "other"  # any other character

_SPACE = "\\t\\n\\v\\f\\r "  # ASCII `\\s`, as Hyperscan and Python's `re` mean it
_NOT_SPACE = "\\x00-\\x08\\x0e-\\x1f!-\\x{10ffff}"
_FOR_RE2 = {
    (ESCAPE, "\\s"): f"[{_SPACE}]",
    (ESCAPE, "\\S"): f"[^{_SPACE}]",
    (IN_CLASS, "\\s"): _SPACE,
    (IN_CLASS, "\\S"): _NOT_SPACE,
}
_SPACE_ESCAPES = frozenset({(IN_CLASS, "\\s"), (IN_CLASS, "\\S")})


def pieces(expression: str) -> Iterator[tuple[str, str]]:
    """The pieces of `expression` in order, each as (kind, text); their texts make it whole."""
    i, end = 0, len(expression)
    while i < end:
        ch = expression[i]
        if expression.startswith("\\Q", i):
            stop = expression.find("\\E", i + 2)
            j = end if stop < 0 else stop + 2
            yield QUOTED, expression[i:j]
        elif ch == "\\":
            j = i + 2
            yield ESCAPE, expression[i:j]
        elif ch == "[":
            j = yield from _class(expression, i)
        elif expression.startswith("(?", i) and (j := _flags_end(expression, i + 2)) > 0:
            yield FLAGS, expression[i:j]
        else:
            j = i + 1
            yield (DOLLAR if ch == "$" else CARET if ch == "^" else OTHER), ch
        i = j


def _class(expression: str, start: int) -> Generator[tuple[str, str], None, int]:
    """The pieces of the class at `start`; returns where it ends. A `]` first (after `^`) is a
    character, as is every character but `\\` and `]` before the closing `]`."""
    j = start + 1
    j += expression.startswith("^", j)
    j += expression.startswith("]", j)
    yield CLASS, expression[start:j]
    end = len(expression)
    while j < end and expression[j] != "]":
        if expression[j] == "\\":
            yield IN_CLASS, expression[j : j + 2]
            j += 2
            continue
        posix = expression.find(":]", j + 2) if expression.startswith("[:", j) else -1
        k = posix + 2 if posix >= 0 else j + 1
        yield CLASS, expression[j:k]
        j = k
    yield CLASS, expression[j : j + 1]
    return j + 1


def _flags_end(expression: str, at: int) -> int:
    """Where the flags group `(?flags)` or `(?flags:` whose letters start at `at` ends, or 0
    if none does (`(?P<`, `(?=`)."""
    j = at
    while j < len(expression) and (expression[j].isalpha() or expression[j] == "-"):
        j += 1
    return j + 1 if j > at and j < len(expression) and expression[j] in "):" else 0


def dollar_and_repeat(expression: str) -> bool:
    """Whether `expression` holds a `$` assertion and a repeat (`*`, `+`, `?`, `{`, outside
    escapes, classes and quotes; not the `?` of a flags group `(?i)`, which repeats nothing)."""
    kinds = {kind if kind != OTHER or text not in "*+?{" else "repeat" for kind, text in pieces(expression)}
    return DOLLAR in kinds and "repeat" in kinds


def body(expression: str) -> str:
    """`expression` without its `$` assertions: found in every text where it is found."""
    return "".join(text for kind, text in pieces(expression) if kind != DOLLAR)


def for_re2(expression: str) -> str:
    """`expression` as RE2 is to be given it to find what Hyperscan finds (`\\s` with `\\v`)."""
    written = list(pieces(expression))
    texts = [_FOR_RE2.get(piece, piece[1]) for piece in written]
    # A `-` beside `\\s` or `\\S` in a class is a character (`[\\s-x]` is a blank, `-` or `x`):
    # beside their characters written out it would join one of them in a range (`[ -x]`).
    for k, piece in enumerate(written):
        if piece == (CLASS, "-") and any(written[j] in _SPACE_ESCAPES for j in (k - 1, k + 1) if 0 <= j < len(written)):
            texts[k] = "\\-"
    return "".join(texts)


def multiline_start(expression: str) -> bool:
    """Whether `expression` may hold a `^` of `(?m)` (one matching after a newline): a flags
    group with `m`, and a `^` assertion."""
    found = [kind for kind, text in pieces(expression) if kind == CARET or (kind == FLAGS and "m" in text)]
    return CARET in found and FLAGS in found
