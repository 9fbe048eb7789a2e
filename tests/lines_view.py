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
    """The byte offset of each line of `run`."""
    if not run.data:
        return []
    return list(accumulate((len(line) + 1 for line in run.data[:-1]), initial=run.start))


def each_line(runs: Iterable[Lines]) -> Iterator[Line]:
    """The lines of `runs`, one by one, with their offsets."""
    for run in runs:
        for data, offset in zip(run.data, offsets(run), strict=True):
            yield Line(data, run.path, offset)
