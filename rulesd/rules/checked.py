"""The problems of a rule set checked before, kept in the rule cache.

Most of a warm start at a thousand rules went into checks whose answer cannot change while
nothing they read does: the warnings of every rule (a regex found in every text, a test that
can never hold, a value of another kind than the field's), the rule set's and the files'.
A rule set that loaded without an error keeps its problems (warnings only, then) and its
number of rules here, under a hash of its files' paths and bytes (their order too), of the
code that checks them and of the regex libraries' versions. A later load of the same rule
set compiles the rules without those checks and says the problems kept; anything read back
that is not what was written is a miss, and the rule set is checked in full.
"""

from __future__ import annotations

import functools
import marshal
import sys
from collections.abc import Sequence
from pathlib import Path

import hyperscan
import re2

from rulesd.errors import Problem, SourceLocation
from rulesd.rules.cache import RuleCache, digest

KIND = "checked"


def checked_key(files: Sequence[tuple[str, str]]) -> str:
    """The key of the rule set of `files` (each its path and its document's cache key)."""
    return digest(KIND, sys.version, _code_fingerprint(), *(part for file in files for part in file))


@functools.cache
def _code_fingerprint() -> str:
    # Every module a rule's compiling and checking reads: the rules package and what it imports.
    here = Path(__file__).resolve().parent
    sources = sorted(here.glob("*.py"))
    top = ("document", "durations", "errors", "validation", "deferred_regex", "jsontext", "times", "key_places")
    sources += [here.parent / f"{name}.py" for name in top]
    versions = f"{getattr(hyperscan, '__version__', '')}\n{getattr(re2, '__version__', '')}"
    return digest(versions, *(p.read_bytes() for p in sources))


def known_problems(cache: RuleCache, key: str) -> tuple[int, list[Problem]] | None:
    """The number of rules and the problems kept under `key`; None on a miss (or anything
    else than what `keep` writes)."""
    blob = cache.get(KIND, key)
    if blob is None:
        return None
    try:
        count, rows = marshal.loads(blob)
        problems = [
            Problem(SourceLocation(path, line, col), message, severity) for path, line, col, message, severity in rows
        ]
    except (EOFError, ValueError, TypeError):
        return None
    if type(count) is not int or not all(_sound(p) for p in problems):
        return None
    return count, problems


def _sound(problem: Problem) -> bool:
    where = problem.location
    fields = (where.path, where.line, where.col, problem.message, problem.severity)
    return tuple(map(type, fields)) == (str, int, int, str, str) and problem.severity == "warning"


def keep(cache: RuleCache, key: str, count: int, problems: Sequence[Problem]) -> None:
    """Keep the problems of a rule set of `count` rules that loaded without an error."""
    rows = [(p.location.path, p.location.line, p.location.col, p.message, p.severity) for p in problems]
    cache.put(KIND, key, marshal.dumps((count, rows)))
