"""The lines of an events file in the blocks `rulesd replay` and `rulesd explain --events`
evaluate at a time, a line longer than `max_line_bytes` never held whole.

A block is what `readlines(BLOCK_BYTES)` returns: the lines up to and including the one that
crosses BLOCK_BYTES (about 60 events of 200 bytes; one long line alone). It is made here from
reads of at most BLOCK_BYTES instead, since `readlines` reads a line whole however long it
is: a file holding a 2 GB line without a newline ended replay in a MemoryError. A line too
long stands in its block as a blank line, its length kept beside it, so that the lines after
it keep their numbers; it counts its whole length towards its block, so that the blocks, and
where the engine's clock moves between them, are those `readlines` made. What is held is at
most `limit` bytes of a line's start and READ_BYTES of lines after it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from itertools import accumulate
from typing import BinaryIO, NamedTuple

from rulesd.sources.lines import split_lines

BLOCK_BYTES = 12 * 1024  # a byte count, not the daemon's BLOCK_LINES: long lines do not make a block large


# At most this much is read at a time: with read1, what a pipe holds then, so that its lines
# are judged as they come; a file's, in a few reads per block's worth of lines.
READ_BYTES = 1 << 18


class Block(NamedTuple):
    """Consecutive lines, each with its newline; a line longer than the limit is blank here."""

    lines: list[bytes]
    long: dict[int, int]  # index in `lines` of each line too long -> its length (its newline not counted)


def blocks(stream: BinaryIO, limit: int) -> Iterator[Block]:
    """The lines of `stream` a block at a time; a line longer than `limit` bytes (its newline
    not counted, as the sources count) is skipped as it is read, never held whole."""
    reader = _Reader(limit)
    read = getattr(stream, "read1", stream.read)
    while chunk := read(READ_BYTES):
        reader.feed(chunk)
        yield from reader.take(final=False)
    reader.finish()
    yield from reader.take(final=True)


class _Reader:
    """Complete lines read and not yet handed out in a block."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lines: list[bytes] = []
        self.long: dict[int, int] = {}  # as in Block
        self.pending = b""  # the start of a line whose newline has not come yet (at most `limit` bytes)
        self.skipped = -1  # the bytes read so far of a line too long, until its newline (-1: none)

    def feed(self, chunk: bytes) -> None:
        if self.skipped >= 0:
            end = chunk.find(b"\n")
            if end < 0:
                self.skipped += len(chunk)
                return
            self._add_long(self.skipped + end)
            self.skipped, chunk = -1, chunk[end + 1 :]
            if not chunk:
                return
        lines = split_lines(chunk)
        if self.pending:  # only the short unfinished line is copied, not the whole chunk
            lines[0] = self.pending + lines[0]
        self.pending = b"" if lines[-1][-1:] == b"\n" else lines.pop()
        if lines and max(map(len, lines)) > self.limit + 1:  # (each complete line ends in a newline)
            for line in lines:
                if len(line) > self.limit + 1:
                    self._add_long(len(line) - 1)
                else:
                    self.lines.append(line)
        else:
            self.lines += lines
        if len(self.pending) > self.limit:
            self.skipped, self.pending = len(self.pending), b""

    def finish(self) -> None:
        """At the end of the stream: its last line, if it had no newline."""
        if self.skipped >= 0:
            self._add_long(self.skipped)
        elif self.pending:
            self.lines.append(self.pending)
        self.skipped, self.pending = -1, b""

    def take(self, final: bool) -> Iterator[Block]:
        """The blocks complete by now; with `final`, the last one too."""
        lines, long = self.lines, self.long
        ends = list(accumulate(map(len, lines)))
        for index, length in long.items():  # (rare) a line too long counts as read
            for i in range(index, len(ends)):
                ends[i] += length
        start = 0
        while start < len(lines):
            end = (
                bisect_right(ends, (ends[start - 1] if start else 0) + BLOCK_BYTES, start) + 1
            )  # its crossing line too
            if end > len(lines):
                if not final:
                    break
                end = len(lines)
            yield Block(lines[start:end], {i - start: n for i, n in long.items() if start <= i < end} if long else {})
            start = end
        self.lines = lines[start:]
        self.long = {i - start: n for i, n in long.items() if i >= start}

    def _add_long(self, length: int) -> None:
        self.long[len(self.lines)] = length
        self.lines.append(b"\n")
