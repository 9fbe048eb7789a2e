"""The walk of a rule directory, and its bound: `rules: ['/']` walked the whole file system
(/proc's ever-changing tree too) and read every *.yaml on the way as rules. Apart from the
loader so that `rulesd check --config` and `rulesd run` can say it at the configuration's line
without importing what compiles rules."""

from __future__ import annotations

import os
from collections.abc import Iterator

from rulesd.errors import Problem, SourceLocation

# The files and directories a rule directory may hold (not counting hidden ones' contents): a
# Sigma rule tree holds about 3,000; a walk of them all stops once past it, in about a second.
MAX_ENTRIES = 100_000


def file_identity(path: str) -> tuple[int, int] | None:
    """The file `path` names (device and inode, links followed); None if it cannot be looked at."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def directories(top: str, problems: list[Problem]) -> Iterator[tuple[str, list[str], list[str]]]:
    """Each directory under `top` (links followed, each searched once, hidden ones skipped) with
    the directories and the other names it holds."""
    searched: dict[tuple[int, int], str] = {}
    for root, dirs, names in os.walk(top, followlinks=True):
        here = file_identity(root)
        if here is not None and here in searched:
            message = f"skipped: the same directory as {searched[here]} (a link to a directory already searched)"
            problems.append(Problem(SourceLocation(root), message, "warning"))
            dirs[:] = []
            continue
        if here is not None:
            searched[here] = root
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield root, dirs, names


class TooManyEntries(Exception):
    """A rule directory holds more than MAX_ENTRIES files and directories (`too_many_entries`)."""


def bounded_directories(top: str, problems: list[Problem]) -> Iterator[tuple[str, list[str], list[str]]]:
    """`directories(top, problems)`, raising TooManyEntries once they have held more than
    MAX_ENTRIES files and directories (the loader's walk and the configuration's check count
    alike)."""
    seen = 0
    for root, dirs, names in directories(top, problems):
        seen += len(dirs) + len(names)
        if seen > MAX_ENTRIES:
            raise TooManyEntries(top)
        yield root, dirs, names


def oversized(top: str) -> bool:
    """Whether the directory `top` holds more than MAX_ENTRIES files and directories."""
    try:
        for _ in bounded_directories(top, []):
            pass
    except TooManyEntries:
        return True
    return False


def too_many_entries(top: str) -> str:
    """Why a rule directory is not searched to its end: it holds a file system, not rules."""
    return (
        f"{top} holds more than {MAX_ENTRIES:,} files and directories: a rule directory is searched to its "
        "depths for *.yaml and *.yml, so it should hold the rule files and little else; name the directory "
        "they are in"
    )
