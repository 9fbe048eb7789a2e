"""The lines of an events file in the blocks `rulesd replay` and `rulesd explain --events`
evaluate at a time, a line longer than `max_line_bytes` never held whole.

A block is what `readlines(BLOCK_BYTES)` returns: the lines up to and including the one that
crosses BLOCK_BYTES (about 60 events of 200 bytes; one long line alone). It is made here from
reads of at most READ_BYTES instead, since `readlines` reads a line whole however long it is:
a file holding a 2 GB line without a newline ended replay in a MemoryError. The blocks, and
so where the engine's clock moves between them, are those `readlines` made: the complete
lines read are split by `BytesIO.readlines`, in C as before. A line too long stands in its
block as a blank line, its length kept beside it, so that the lines after it keep their
numbers. One longer than BLOCK_BYTES too is skipped as it is read, never held: it ends its
block, as it crossed BLOCK_BYTES alone. So what is held is at most the larger of
`max_line_bytes` and BLOCK_BYTES of a line's start, and READ_BYTES of lines after it.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from io import BytesIO
from typing import BinaryIO

BLOCK_BYTES = 12 * 1024  # a byte count, not the daemon's BLOCK_LINES: long lines do not make a block large
# At most this much is read at a time: with read1, what a pipe holds then, so that its lines
# are judged as they come; a file's, in a few reads per block's worth of lines.
READ_BYTES = 1 << 18


# Consecutive lines, each with its newline, a line longer than the limit blank among them; and
# the index of each such line -> its length (its newline not counted). (A tuple: a NamedTuple's
# class costs each run of replay ~1M instructions to make.)
Block = tuple[list[bytes], dict[int, int]]


def blocks(stream: BinaryIO, limit: int) -> Iterator[Block]:
    """The lines of `stream` a block at a time; a line longer than `limit` bytes (its newline
    not counted, as the sources count) is skipped, one longer than BLOCK_BYTES too as it is
    read."""
    read = getattr(stream, "read1", stream.read)
    held = b""  # complete lines read, short of a block, then the start of a line without its newline yet
    skipped = -1  # the bytes read so far of a line too long, until its newline (-1: none)
    most = max(limit, BLOCK_BYTES)  # a line's start held before it is skipped as it is read
    while chunk := read(READ_BYTES):
        if skipped >= 0:
            end = chunk.find(b"\n")
            if end < 0:
                skipped += len(chunk)
                continue
            yield _ended_by(held, skipped + end, limit)
            held, skipped, chunk = b"", -1, chunk[end + 1 :]
        held = yield from _complete(held, chunk, limit)
        start = held.rfind(b"\n") + 1  # where the line being read starts
        if len(held) - start > most:
            held, skipped = held[:start], len(held) - start
    if skipped >= 0:
        yield _ended_by(held, skipped, limit)
    elif held:
        yield from _complete(b"", held, limit, final=True)


def _complete(held: bytes, chunk: bytes, limit: int, final: bool = False) -> Generator[Block, None, bytes]:
    """The blocks of `held` then `chunk`; the bytes after the last block, short of one or
    its last line without its newline yet (none, `final`: the end of the stream). The chunk
    is not copied whole: `held`, short, is joined to its first line alone."""
    data = BytesIO(chunk)
    prefix = held + data.readline() if held else b""  # (the block's bytes before `data`'s, from `pos`)
    lines = BytesIO(prefix).readlines() if prefix else []
    pos = data.tell()
    while True:
        size = len(prefix) + data.tell() - pos
        if size <= BLOCK_BYTES:  # (a BytesIO stops at the line taking it to the hint: readlines' past it)
            lines += data.readlines(BLOCK_BYTES + 1 - size)
            size = len(prefix) + data.tell() - pos
        if not lines:
            return b""
        if not final and (size <= BLOCK_BYTES or lines[-1][-1:] != b"\n"):
            return prefix + chunk[pos:]
        yield _block(lines, size, limit)
        prefix, lines, pos = b"", [], data.tell()


def _block(lines: list[bytes], size: int, limit: int) -> Block:
    """`lines` as a Block, each longer than `limit` made blank."""
    if size <= limit or max(map(len, lines)) <= limit:  # the usual case: no line is near it
        return lines, {}
    long = {i: len(line) - line.endswith(b"\n") for i, line in enumerate(lines)}
    long = {i: length for i, length in long.items() if length > limit}
    return [b"\n" if i in long else line for i, line in enumerate(lines)], long


def _ended_by(held: bytes, length: int, limit: int) -> Block:
    """The block ended by a line of `length` bytes skipped as it was read, after the complete
    lines `held` (short of a block): that line crosses BLOCK_BYTES alone."""
    lines = BytesIO(held).readlines() if held else []
    kept, long = _block(lines, len(held), limit)
    return [*kept, b"\n"], {**long, len(lines): length}
