"""The tests' view of the runs of lines sources hand out: one line at a time, with its offset."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import accumulate
from typing import NamedTuple

from rulesd.sources.lines import Lines


class Line(NamedTuple):
    """One line and where it was read."""

    data: bytes
    path: str
    offset: int


def offsets(run: Lines) -> list[int]:
    """The byte offset of each line of `run` (each line keeps its newline)."""
    if not run.data:
        return []
    return list(accumulate(map(len, run.data[:-1]), initial=run.start))


def each_line(runs: Iterable[Lines]) -> Iterator[Line]:
    """The lines of `runs`, one by one, with their offsets; each line's data without its
    newline, which only the last line of a stream may lack."""
    for run in runs:
        for data, offset in zip(run.data, offsets(run), strict=True):
            yield Line(data[:-1] if data.endswith(b"\n") else data, run.path, offset)


# Bytes that other line splitters end a line at (`bytes.splitlines`: CR; `str.splitlines`: VT,
# FF, the separators 0x1c-0x1e, NEL, U+2028 and U+2029), a NUL, bytes that are not UTF-8, and
# a JSON line: only `\n` ends a line.
JUNK = [b"a", b"\n", b"\n", b"\r", b"\r\n", b"\x0b", b"\x0c", b"\x1c\x1d\x1e", b"\x85", b"\xc2\x85"]
JUNK += [b"\xe2\x80\xa8", b"\xe2\x80\xa9", b"\x00", b"\xff\xfe", b'{"a": 1}', b"xxxxxxx"]


def split_as_before(stream: bytes, limit: int, ended: bool, path: str = "p") -> tuple[list[Line], list[int]]:
    """The lines of `stream` and the offsets of those too long, as the sources gave them when
    they split with `bytes.split(b"\\n")`: a line ends at `\\n` only, its data is the bytes before
    it, and the last line without one comes only at the stream's end (`ended`)."""
    lines, long, offset = [], [], 0
    pieces = stream.split(b"\n")
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        if len(piece) > limit:
            long.append(offset)
        elif not last or (ended and piece):
            lines.append(Line(piece, path, offset))
        offset += len(piece) + 1
    return lines, long
