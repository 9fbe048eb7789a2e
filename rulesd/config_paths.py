"""What the configuration's paths name on disk now, for the commands that are about to use
them (`rulesd check --config`, `run`, `forward`): the read-only commands (`outbox`, `state`)
must work whatever became of a source's file meanwhile.

Each finding is (keys, severity, message), reported by `config` at the keys' line.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Callable, Iterator
from typing import Any

from rulesd.rules.rule_directories import oversized, too_many_entries
from rulesd.sources.file import expand_patterns
from rulesd.sources.tail import SIZELESS, NotRegularFile, file_kind, open_regular

Keys = tuple[str | int, ...]
Finding = tuple[Keys, str, str]


def source_places(raw: dict[str, Any]) -> list[tuple[Keys, dict[str, Any]]]:
    """The sources as written: `source`, or each of `sources`, with their keys."""
    places = [(("source",), raw.get("source"))] + [(("sources", i), s) for i, s in enumerate(raw.get("sources") or ())]
    return [(keys, source) for keys, source in places if isinstance(source, dict)]


def path_findings(
    raw: dict[str, Any], absolute: Callable[[str], str], rule_paths: tuple[str, ...]
) -> Iterator[Finding]:
    """Rule paths that do not exist, or name a directory too large to search (a file system's
    root); file sources' paths that name no file yet (a warning: they
    are waited for), or something that is not a regular file (an error); a state_dir that is
    not a directory."""
    given = raw.get("rules")
    for i, path in enumerate(rule_paths if given is not None else ()):
        rule_keys: Keys = ("rules",) if isinstance(given, str) else ("rules", i)
        if not os.path.lexists(path):
            yield rule_keys, "error", f"{path}: no such file or directory"
        elif os.path.isdir(path) and oversized(path):
            yield rule_keys, "error", too_many_entries(path)
    read_by: dict[str, Keys] = {}  # each file a source reads now, and the first source reading it
    for where, source in source_places(raw):
        if source.get("type") != "file":
            continue
        paths = source.get("path", [])
        for i, path in enumerate([paths] if isinstance(paths, str) else paths):
            keys = (*where, "path") if isinstance(paths, str) else (*where, "path", i)
            problem, missing = _not_followable(absolute(path)), _nothing_there(absolute(path))
            if problem is not None:
                yield keys, "error", problem
            elif missing is not None:
                yield keys, "warning", missing
            for file in expand_patterns([absolute(path)]):
                other = read_by.setdefault(os.path.realpath(file), where)
                if other != where:
                    yield keys, "warning", _read_twice(file, other)
    state_dir = raw.get("state_dir")
    if state_dir and _exists_but_not_dir(absolute(state_dir)):
        yield ("state_dir",), "error", f"{absolute(state_dir)} exists and is not a directory"
    elif state_dir and (missing := _parent_missing(absolute(state_dir))) is not None:
        yield ("state_dir",), "error", missing


def _parent_missing(path: str) -> str | None:
    """Why the state directory `path` will not be made: rulesd makes only the directory itself,
    as systemd's StateDirectory= does, so that a misspelt parent (/var/lib/rulesdd/state) is an
    error rather than a new tree that nothing else looks at."""
    if os.path.lexists(path):
        return None
    parent = os.path.dirname(os.path.normpath(path))
    if os.path.isdir(parent):
        return None
    what = "is not a directory" if os.path.lexists(parent) else "does not exist"
    return f"{path}: the directory it would be made in, {parent}, {what} (only the state directory itself is made)"


def _read_twice(file: str, other: Keys) -> str:
    """Two sources reading one file evaluate each line twice: counts double, pages repeat."""
    source = "".join(f"[{key}]" if isinstance(key, int) else key for key in other)
    return (
        f"{file} is read by {source} too: each of its lines is evaluated once per source, so a rule that does "
        "not match on source_name counts it twice and pages twice"
    )


def _not_followable(path: str) -> str | None:
    """Why a literal path that names something other than a regular file cannot be followed:
    a FIFO has no offset to save, so a restart would lose what it held, and skipping it (as a
    file that becomes one while rulesd runs is) would read nothing, for good."""
    if glob.has_magic(path):
        return None  # a glob only ever matches regular files
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # missing: waited for; unreadable: warned about by the source
    if stat.S_ISREG(mode):
        return _sizeless(path)
    if stat.S_ISDIR(mode):
        return f"{path} is a directory; to follow the files in it give a glob, e.g. {os.path.join(path, '*.log')}"
    hint = "; to read a pipe, use source: {type: stdin} and run: rulesd run < " + path if stat.S_ISFIFO(mode) else ""
    return f"{path} is {file_kind(mode)}, not a regular file: a file source follows regular files{hint}"


def _sizeless(path: str) -> str | None:
    """Why a regular file whose size reads 0 though it holds data (`tail.sizeless`: a file of
    /proc or /sys) cannot be followed: it has no end, and lines appended are what a file
    source reads; skipped while running, it would read nothing, for good."""
    try:
        opened = open_regular(path)  # (what the source does: `NotRegularFile` for such a file)
    except NotRegularFile:
        pass
    except OSError:
        return None  # unreadable: warned about by the source
    else:
        if opened is not None:
            os.close(opened[0])
        return None
    return (
        f"{path} is {SIZELESS}: a file source follows files that lines are appended to, and this one "
        f"has no end to follow; to read its lines once, use source: {{type: stdin}} and run: rulesd run < {path}"
    )


def _nothing_there(path: str) -> str | None:
    """The warning for a path or glob that names no file now: it is waited for, but a typo
    (a wrong directory, a stray space) would read nothing, for good, without a word."""
    if glob.has_magic(path):
        if expand_patterns([path]):
            return None
        return f"{path!r} matches no regular file yet: nothing is read until one appears"
    if os.path.exists(path):
        return None
    return f"{path!r} does not exist yet: nothing is read until it appears"


def _exists_but_not_dir(path: str) -> bool:
    try:
        return not stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False  # missing: made at start; unreadable: said then, with what to do
