"""What every source hands the main loop: runs of consecutive complete lines, and the
splitting of a byte stream (stdin, journalctl's output) into such runs.

A run (`Lines`) is one split of what was read, not an object per line: at a million
lines a second, building a tuple for each line costs as much as evaluating it. A line's
offset is only needed for the rare line that alerts or is invalid, so it is worked out
from the lengths then (`Offsets`).

Lines keep their newline (and a CR before it), so that the lengths add up to the bytes
read: the split is `BytesIO.readlines`, which finds each newline with memchr, where
`bytes.split(b"\n")` compares byte by byte (~5 instructions a byte, ~1,400 per ops event).
Every event parser ignores the line ending (JSON counts it as whitespace, the text
parsers strip it); what shows a line or a parser's complaint about it takes the text
without it (`line_text`), as it was before lines kept it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from io import BytesIO
from typing import NamedTuple

# Defaults shared by the sources, the configuration and replay.
MAX_LINE_BYTES = 1_048_576  # longer lines are skipped and counted, never held whole
# A batch also stops growing at this size, since a line may be up to `max_line_bytes` long.
BATCH_BYTES = 8 << 20
# Reads of a pipe per read() at most: an over-long line being skipped adds no lines, so the
# batch alone would not bound the time spent draining it.
MAX_CHUNKS_PER_READ = 64


# Consecutive complete lines of one source, read from the bytes `start` to `end` (the first line
# starts at `start`). Each keeps its newline but the last line of a stream that ended without
# one: their lengths add up to `end - start`. (`NamedTuple`'s functional form, the types given
# as objects: the class form's annotations are text here, which typing compiles at every start.)
Lines = NamedTuple("Lines", [("path", str), ("start", int), ("data", list[bytes]), ("end", int)])  # noqa: UP014


class Offsets:
    """The offsets of a run's lines, asked for in increasing order: one pass over the run
    however many are asked for (every line of a batch may alert or be invalid)."""

    def __init__(self, run: Lines) -> None:
        self._run = run
        self._index, self._offset = 0, run.start

    def __call__(self, index: int) -> int:
        if index < self._index:  # asked out of order: count again from the start
            self._index, self._offset = 0, self._run.start
        data = self._run.data
        self._offset += sum(map(len, data[self._index : index]))
        self._index = index
        return self._offset


def split_lines(data: bytes) -> list[bytes]:
    """`data`'s lines, each with its newline; the last one without if `data` does not end
    in one. Only `\n` ends a line (`bytes.splitlines` would end one at a lone CR too)."""
    return BytesIO(data).readlines()


def line_text(line: bytes) -> bytes:
    """A line without its newline: what it said before the split kept newlines, for the
    rare line shown or explained (orjson's complaint about a cut line counts the newline)."""
    return line[:-1] if line[-1:] == b"\n" else line


def count_lines(runs: Iterable[Lines]) -> int:
    """How many lines `runs` hold."""
    return sum(len(run.data) for run in runs)


def size_of(runs: Iterable[Lines]) -> int:
    """How many bytes `runs` were read from, newlines included."""
    return sum(run.end - run.start for run in runs)


def runs_of(
    path: str, start: int, lines: list[bytes], end: int, limit: int, on_long: Callable[[int], None]
) -> list[Lines]:
    """`lines`, read from the bytes `start` to `end`, as runs without the lines longer than
    `limit` (see `split_long`). Almost always one run: no line can be too long when the
    bytes read are not, and `max(map(len, ...))` is cheap next to building runs (it counts
    a newline, which `limit` does not: a line of just `limit` bytes takes the slow way)."""
    if not lines:
        return []
    if end - start <= limit or max(map(len, lines)) <= limit:
        return [Lines(path, start, lines, end)]
    return split_long(path, start, lines, limit, on_long)


def split_long(path: str, start: int, lines: list[bytes], limit: int, on_long: Callable[[int], None]) -> list[Lines]:
    """`lines` (the first at byte `start`) as runs without the lines longer than `limit`,
    each of which is reported by its offset to `on_long` (its newline is not counted);
    `runs_of` is the fast way in."""
    runs: list[Lines] = []
    kept: list[bytes] = []
    kept_start = offset = start
    for line in lines:
        size = len(line)
        if size - (line[-1:] == b"\n") > limit:
            if kept:
                runs.append(Lines(path, kept_start, kept, offset))
                kept = []
            on_long(offset)
            kept_start = offset + size
        else:
            kept.append(line)
        offset += size
    if kept:
        runs.append(Lines(path, kept_start, kept, offset))
    return runs


class LineQueue:
    """Runs read ahead and not yet handed out, handed out at most so many lines at a time."""

    def __init__(self) -> None:
        self._runs: deque[Lines] = deque()
        self.lines = 0  # how many lines are queued
        self.size = 0  # and how many bytes they were read from

    def __len__(self) -> int:
        return self.lines

    def filled(self, max_lines: int) -> bool:
        """Whether a batch is ready: `max_lines` lines, or BATCH_BYTES of them."""
        return self.lines >= max_lines or self.size >= BATCH_BYTES

    def extend(self, runs: Iterable[Lines]) -> None:
        """Queue `runs` after those already here."""
        for run in runs:
            self._runs.append(run)
            self.lines += len(run.data)
            self.size += run.end - run.start

    def take(self, max_lines: int) -> list[Lines]:
        """The oldest runs, at most `max_lines` lines; a run is split if need be."""
        out: list[Lines] = []
        want = max_lines
        while want > 0 and self._runs:
            run = self._runs.popleft()
            if len(run.data) > want:
                head, tail = run.data[:want], run.data[want:]
                middle = run.start + sum(map(len, head))
                self._runs.appendleft(Lines(run.path, middle, tail, run.end))
                run = Lines(run.path, run.start, head, middle)
            out.append(run)
            want -= len(run.data)
            self.size -= run.end - run.start
        self.lines -= max_lines - want
        return out


class LineSplitter:
    """Splits a byte stream into runs of newline-terminated lines (see `Lines`).

    Lines longer than `max_line_bytes` are skipped (with a warning) and counted, and an
    unterminated one is dropped as soon as it is too long, never held in memory whole.
    Offsets count bytes from the start of the stream.
    """

    def __init__(self, name: str, max_line_bytes: int, warn: Callable[[str], None]) -> None:
        self.name = name
        self.max_line_bytes = max_line_bytes
        self.warn = warn
        self.skipped_long = 0
        self.pending = b""  # the start of a line whose newline has not come yet
        self._discarding = False  # inside an over-long line, until its newline
        self._offset = 0  # byte offset of pending's start

    def feed(self, chunk: bytes) -> list[Lines]:
        """The lines that `chunk` completes."""
        if self._discarding:
            end = chunk.find(b"\n")
            if end < 0:
                self._offset += len(chunk)
                return []
            self._discarding = False
            self._offset += end + 1
            chunk = chunk[end + 1 :]
        if not chunk:
            return []
        lines = split_lines(chunk)
        size = len(self.pending) + len(chunk)
        if self.pending:  # only the short unfinished line is copied, not the whole chunk
            lines[0] = self.pending + lines[0]
        self.pending = b"" if lines[-1][-1:] == b"\n" else lines.pop()
        out = self._runs(lines, size - len(self.pending))
        if len(self.pending) > self.max_line_bytes:
            self._on_long(self._offset)
            self._offset += len(self.pending)  # drop what we have and the rest up to the newline
            self.pending = b""
            self._discarding = True
        return out

    def finish(self) -> list[Lines]:
        """At end of stream: the last line if it had no newline."""
        out = []
        if self.pending and not self._discarding:
            out = self._runs([self.pending], len(self.pending))
        self.pending = b""
        return out

    def _runs(self, lines: list[bytes], size: int) -> list[Lines]:
        start = self._offset
        self._offset += size
        return runs_of(self.name, start, lines, self._offset, self.max_line_bytes, self._on_long)

    def _on_long(self, offset: int) -> None:
        self.skipped_long += 1
        self.warn(f"{self.name}: skipped a line longer than {self.max_line_bytes} bytes at offset {offset}")
