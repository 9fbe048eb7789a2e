"""A document read from a file (YAML), as rulesd keeps it: its value, and where each part of
it was written, to point an error at its line.

Kept apart from `rulesd.yamldoc`, which reads YAML: a start that finds every rule file in its
cache reads no YAML, and does not import PyYAML (~12 ms) to name this type.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable

import msgspec

from rulesd.errors import InvalidInputError, Problem, SourceLocation

JsonPath = tuple[str | int, ...]
Marks = dict[JsonPath, tuple[int, int]]  # (line, column) by path


class Document(msgspec.Struct):
    """A parsed YAML file: its value and where each part of it was written."""

    path: str
    value: object
    value_marks: dict[JsonPath, tuple[int, int]] = msgspec.field(default_factory=dict)
    key_marks: dict[JsonPath, tuple[int, int]] = msgspec.field(default_factory=dict)
    problems: list[Problem] = msgspec.field(default_factory=list)
    """Duplicate keys of a document read with `keep_going=True` (the first value is kept)."""
    boolean_words: dict[JsonPath, str] = msgspec.field(default_factory=dict)
    """The values written as an unquoted yes, no, on or off (YAML 1.1 reads them as true or
    false), or as a number YAML 1.1 reads otherwise than written (`0123` is octal 83), by
    path, with the word as written: a user may have meant the text."""
    deeper: Callable[[], tuple[Marks, Marks]] | None = None
    """What reads the marks (of values, of keys) of the paths longer than `SHALLOW`, when the
    marks above hold only the others (a document read from the rule cache; see `marks`)."""

    def locate(self, path: Iterable[str | int], *, key: bool = False) -> SourceLocation:
        """The location of the value (or of its key) at `path`, else of its nearest parent."""
        parts = tuple(path)
        if len(parts) > SHALLOW and self.deeper is not None:
            self.marks()
        if key and parts in self.key_marks:
            return SourceLocation(self.path, *self.key_marks[parts])
        while parts:
            if parts in self.value_marks:
                return SourceLocation(self.path, *self.value_marks[parts])
            parts = parts[:-1]
        line, col = self.value_marks.get((), (1, 1))
        return SourceLocation(self.path, line, col)

    def marks(self) -> tuple[dict[JsonPath, tuple[int, int]], dict[JsonPath, tuple[int, int]]]:
        """Every mark of values and of keys, the deeper ones read first if they are not yet."""
        if self.deeper is not None:
            deeper_values, deeper_keys = self.deeper()
            self.value_marks.update(deeper_values)
            self.key_marks.update(deeper_keys)
            self.deeper = None
        return self.value_marks, self.key_marks


# A warm start locates each rule and its name (`rules[3]`, `rules[3].name`: paths of 3 parts at
# most), and the parts of a rule only for a problem: the marks of longer paths, three quarters
# of a cached document's and most of the time reading it back, are read when first asked for.
SHALLOW = 3


def split_marks(
    marks: dict[JsonPath, tuple[int, int]],
) -> tuple[dict[JsonPath, tuple[int, int]], dict[JsonPath, tuple[int, int]]]:
    """`marks` of paths of `SHALLOW` parts at most, and the others."""
    shallow: dict[JsonPath, tuple[int, int]] = {}
    deeper: dict[JsonPath, tuple[int, int]] = {}
    for path, mark in marks.items():
        (shallow if len(path) <= SHALLOW else deeper)[path] = mark
    return shallow, deeper


def missing(path: str) -> str | None:
    """Why `path` names nothing (`check`'s words: "no such file or directory", a link whose target
    is gone, a loop of links, a directory that may not be searched); None if it names something."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return _gone(path) or "no such file or directory"
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return reason[:1].lower() + reason[1:]
    except ValueError:  # (a NUL byte: no file is named so)
        return "no such file or directory"
    return None


def _gone(path: str) -> str | None:
    return f"it is a link to {os.readlink(path)}, which does not exist" if os.path.islink(path) else None


def read_file(path: str) -> bytes:
    """The bytes of the file `path`, read once (a pipe, as `<(...)` names one, has them only
    once); InvalidInputError saying why it cannot be read."""
    try:
        with open(path, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            # A device has no end (/dev/zero, /dev/urandom: read until memory ran out) or is no file.
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                device = "a character device" if stat.S_ISCHR(mode) else "a block device"
                raise InvalidInputError([Problem(SourceLocation(path), f"cannot read: it is {device}, not a file")])
            return fh.read()
    except OSError as exc:
        reason = (isinstance(exc, FileNotFoundError) and _gone(path)) or exc.strerror or str(exc)
        raise InvalidInputError([Problem(SourceLocation(path), f"cannot read: {reason}")]) from None
    except MemoryError:  # (a file larger than the memory rulesd may take)
        raise InvalidInputError([Problem(SourceLocation(path), "cannot read: too large to hold in memory")]) from None
