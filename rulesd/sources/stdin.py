"""The stdin source: lines from a file descriptor until EOF.

`LineSplitter`, the byte stream -> lines part, is shared with the journald source.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable

from rulesd.sources.file import Position
from rulesd.sources.lines import MAX_CHUNKS_PER_READ, LineQueue, Lines, runs_of

CHUNK = 1 << 18


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
        lines = chunk.split(b"\n")
        size = len(self.pending) + len(chunk)
        if self.pending:  # only the short unfinished line is copied, not the whole chunk
            lines[0] = self.pending + lines[0]
        self.pending = lines.pop()
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


class StdinSource:
    """Reads newline-terminated lines from `fd` without blocking the main loop.

    `select` tells when data is there, so signals and reloads are handled while
    waiting; a final line without a newline is delivered at EOF.
    """

    def __init__(
        self,
        fd: int = 0,
        *,
        max_line_bytes: int = 1_048_576,
        warn: Callable[[str], None] = lambda message: None,
        name: str = "<stdin>",
    ) -> None:
        self.fd = fd
        self.name = name
        self.eof = False
        self._splitter = LineSplitter(name, max_line_bytes, warn)
        self._ready = LineQueue()

    @property
    def skipped_long(self) -> int:
        """How many over-long lines were skipped."""
        return self._splitter.skipped_long

    def read(self, max_lines: int) -> list[Lines]:
        """Complete lines available now, at most `max_lines`."""
        # Fill up to a whole batch when data is waiting: fewer, larger transactions downstream.
        for _ in range(MAX_CHUNKS_PER_READ):
            if self._ready.filled(max_lines) or self.eof or not self._readable(0):
                break
            self._fill()
        return self._ready.take(max_lines)

    def wait(self, timeout: float) -> None:
        """Block until input may be there or `timeout` seconds pass."""
        if not self._ready and not self.eof:
            self._readable(timeout)

    def checkpoint(self) -> dict[str, Position]:
        """stdin cannot be resumed: no positions."""
        return {}

    def lag_bytes(self) -> int:
        """Unknown for a pipe; what is buffered here."""
        return len(self._splitter.pending) + self._ready.size

    def close(self) -> None:
        """Nothing to release: the descriptor belongs to the process."""

    def _readable(self, timeout: float) -> bool:
        try:
            ready, _, _ = select.select([self.fd], [], [], timeout)
        except InterruptedError:
            return False
        return bool(ready)

    def _fill(self) -> None:
        chunk = os.read(self.fd, CHUNK)
        if chunk:
            self._ready.extend(self._splitter.feed(chunk))
        else:
            self.eof = True
            self._ready.extend(self._splitter.finish())
