"""The problems of a rule set checked before, kept in the rule cache.

Most of a warm start at a thousand rules went into checks whose answer cannot change while
nothing they read does: the warnings of every rule (a regex found in every text, a test that
can never hold, a value of another kind than the field's), the rule set's and the files'.
A rule set that loaded without an error keeps its problems (warnings only, then) and its
number of rules here, under a hash of its files' paths and bytes (their order too), of the
code that checks them (a stamp of its files, see `written`) and of the regex libraries' files
as installed. A later load of the same rule set compiles the rules without those checks and
says the problems kept; anything read back that is not what was written is a miss, and the
rule set is checked in full.
"""

from __future__ import annotations

import functools
import marshal
import os
import sys
from collections.abc import Iterable, Sequence

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
    here = os.path.dirname(os.path.realpath(__file__))
    sources = sorted(entry.path for entry in os.scandir(here) if entry.name.endswith(".py"))
    top = ("document", "durations", "errors", "validation", "deferred_regex", "jsontext", "times", "key_places")
    sources += [os.path.join(os.path.dirname(here), f"{name}.py") for name in top]
    return digest(_libraries(), written(sources))


def _libraries() -> str:
    """The regex libraries as installed. RE2's module has no `__version__`, and what RE2 refuses
    (an error) or finds in every text (a warning) changes with it, so an upgrade in place must
    check the rule set afresh."""
    return installed(os.path.dirname(module.__file__) for module in (re2, hyperscan) if module.__file__ is not None)


def written(sources: Iterable[str]) -> str:
    """What tells an edit of any of the files `sources`, from a stat of each: its inode, size, and
    the times of its last write (mtime) and of its last change (ctime). Any write or rename
    sets the ctime to the clock's time, and no call sets it back (`touch` and `cp -p` set the
    mtime only), so a file whose bytes changed never has its stamp of before. Hashing the
    bytes instead was ~470 KB of SHA-256 at every start (the rules package, the YAML reader
    and the schema: ~14 M instructions, 3% of a warm `replay` at 100 rules). A stamp that
    changed without an edit (a copy of the tree, a `chmod`) is a miss: the cache fills again."""
    parts = []
    for source in sources:
        info = os.stat(source)
        parts.append(f"{source} {info.st_ino} {info.st_size} {info.st_mtime_ns} {info.st_ctime_ns}")
    return "\n".join(parts)


def installed(packages: Iterable[str]) -> str:
    """Each file of the package directories `packages`, stamped as `written` stamps a source (an
    installer that keeps a wheel's times and writes a file of the same size in place still sets
    its ctime): a stat per file costs far less than asking `importlib.metadata` (~25 ms)."""
    parts = []
    for package in packages:
        name = os.path.basename(package)
        for entry in sorted(os.scandir(package), key=lambda e: e.name):
            if entry.is_file():
                stat = entry.stat()
                parts.append(f"{name}/{entry.name} {stat.st_ino} {stat.st_size} {stat.st_mtime_ns} {stat.st_ctime_ns}")
    return "\n".join(parts)


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
