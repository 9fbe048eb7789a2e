"""Why a regex is refused, in the user's terms: the engines' complaints rewritten to say what
is wrong and where (a 1-based position in the pattern), and why where the reason is not plain
syntax.

Only constructs refused because they need backtracking say that regexes must run in time
linear in the text; a plain syntax error (an unbalanced parenthesis, a bad group name) says
what is wrong and nothing more, so that the user is not sent looking for a construct that is
not there.
"""

from __future__ import annotations

import re

from rulesd.deferred_regex import when_used

MAX_REPEAT = 1000  # RE2's limit on a counted repetition

_LINEAR = "regexes must run in time linear in the text (the syntax RE2 and Hyperscan share)"
_NOT_SHARED = "it is not in the syntax RE2 and Hyperscan share"
# RE2's complaint (its words, then the construct) -> the construct, refused as it needs backtracking.
_BACKTRACKING = (
    *((f"invalid escape sequence: \\{c}", "backreferences") for c in "123456789kg"),
    ("invalid perl operator: (?P=", "backreferences"),
    ("invalid perl operator: (?=", "look-ahead assertions"),
    ("invalid perl operator: (?!", "look-ahead assertions"),
    ("invalid perl operator: (?<=", "look-behind assertions"),
    ("invalid perl operator: (?<!", "look-behind assertions"),
    ("invalid perl operator: (?>", "atomic groups"),
    ("invalid perl operator: (?(", "conditional groups"),
    ("invalid perl operator: (?R", "recursive patterns"),
    ("invalid perl operator: (?P>", "recursive patterns"),
    ("bad repetition operator: *+", "possessive quantifiers"),
    ("bad repetition operator: ++", "possessive quantifiers"),
    ("bad repetition operator: ?+", "possessive quantifiers"),
)
# Hyperscan's complaints about a pattern RE2 took that are plain syntax errors.
_HYPERSCAN_SYNTAX = ("Group name", "Two named subpatterns")
_AT_INDEX = when_used(r"\s+at index (\d+)\.?\Z")


def explain_re2(pattern: str, error: str) -> str:
    """RE2's complaint `error` about `pattern` in our words, with the position it concerns."""
    what, _, fragment = error.partition(": ")
    named = re.search(r"\(\?P(?!<)", pattern) if fragment == "(?P" else None
    if named:  # RE2 quotes only `(?P` of `(?P=name)` and `(?P>name)`
        fragment = pattern[named.start() : named.end() + 1]
        error = f"{what}: {fragment}"
    where = _unbalanced(pattern) if what in ("missing )", "unexpected )") else pattern.find(fragment)
    at = f" at position {where + 1}" if fragment and where >= 0 else ""
    for words, construct in _BACKTRACKING:
        if error.startswith(words):
            return f"regex {pattern!r} is refused: {construct} are not supported{at}; {_LINEAR}"
    if what == "invalid repetition size":
        counts = [int(n) for n in re.findall(r"\d+", fragment)]
        if any(n > MAX_REPEAT for n in counts):
            limit = f"repetition counts above {MAX_REPEAT}"
            return f"regex {pattern!r} is refused: {limit} are not supported{at} (RE2's limit)"
        what = f"invalid repetition {fragment} (the least count is above the most)"
    elif fragment.startswith("(?P"):
        what = "invalid named group (write (?P<name>...))"
    return f"invalid regex {pattern!r}: {what}{at}"


def explain_hyperscan(pattern: str, error: str) -> str:
    """Hyperscan's complaint about a pattern that RE2 took, in our words."""
    if error.startswith("Pattern can never match"):
        return f"regex {pattern!r} can never match anything"
    index = _AT_INDEX().search(error)
    what = error[: index.start()] if index else error.rstrip(".")
    at = f" at position {int(index.group(1)) + 1}" if index else ""
    what = what[0].lower() + what[1:] if what[:2].istitle() else what
    if error.startswith(_HYPERSCAN_SYNTAX):
        return f"invalid regex {pattern!r}: {what}{at}"
    return f"regex {pattern!r} is refused: {what}{at}; {_NOT_SHARED}"


def _unbalanced(pattern: str) -> int:
    """The index of the first `)` that closes nothing, else of the last `(` left open; -1 if
    all are balanced. Escapes, `\\Q...\\E` and character classes hold no groups."""
    opened: list[int] = []
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            end = pattern.find("\\E", i + 2) if pattern.startswith("\\Q", i) else i + 1
            i = (len(pattern) if end < 0 else end + 1) + 1
            continue
        if in_class:
            class_name = pattern.find(":]", i + 2) if pattern.startswith("[:", i) else -1
            in_class = c != "]"
            i = class_name + 2 if class_name >= 0 else i + 1  # `[:alpha:]` inside a class
            continue
        if c == "[":  # a `]` first in a class (after an optional `^`) is literal
            i += 1
            i += pattern.startswith("^", i)
            i += pattern.startswith("]", i)
            in_class = True
            continue
        if c == "(":
            opened.append(i)
        elif c == ")":
            if not opened:
                return i
            opened.pop()
        i += 1
    return opened[-1] if opened else -1
