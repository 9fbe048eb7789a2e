"""The stdin source: lines from a file descriptor until EOF.

`LineSplitter`, the byte stream -> lines part, is shared with the journald source.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable

from rulesd.sources.file import Line, Position

CHUNK = 1 << 18


class LineSplitter:
    """Splits a byte stream into newline-terminated `Line`s, CR stripped.

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

    def feed(self, chunk: bytes) -> list[Line]:
        """The lines that `chunk` completes."""
        out: list[Line] = []
        if self._discarding:
            end = chunk.find(b"\n")
            if end < 0:
                self._offset += len(chunk)
                return out
            self._discarding = False
            self._offset += end + 1
            chunk = chunk[end + 1 :]
        data = self.pending + chunk
        parts = data.split(b"\n")
        self.pending = parts.pop()
        self._emit_all(parts, out, strip_cr=b"\r" in data)
        if len(self.pending) > self.max_line_bytes:
            self._skip_long()
        return out

    def _emit_all(self, parts: list[bytes], out: list[Line], *, strip_cr: bool) -> None:
        # The per-event hot path of stdin and journald: kept to a few operations per line.
        name, limit, offset = self.name, self.max_line_bytes, self._offset
        append = out.append
        for raw in parts:
            size = len(raw)
            line = raw[:-1] if strip_cr and raw.endswith(b"\r") else raw
            if len(line) > limit:
                self._offset = offset
                self._skip_long(size + 1)
                offset = self._offset
                continue
            append(Line(line, name, offset))
            offset += size + 1
        self._offset = offset

    def finish(self) -> list[Line]:
        """At end of stream: the last line if it had no newline."""
        out: list[Line] = []
        if self.pending and not self._discarding:
            self._emit_all([self.pending], out, strip_cr=True)
        self.pending = b""
        return out

    def _skip_long(self, consumed: int | None = None) -> None:
        self.skipped_long += 1
        self.warn(f"{self.name}: skipped a line longer than {self.max_line_bytes} bytes at offset {self._offset}")
        if consumed is None:  # still unterminated: drop what we have and the rest up to the newline
            self._offset += len(self.pending)
            self.pending = b""
            self._discarding = True
        else:
            self._offset += consumed


class StdinSource:
    """Reads newline-terminated lines from `fd` without blocking the main loop.

    `select` tells when data is there, so signals and reloads are handled while
    waiting; a final line without a newline is delivered at EOF.
    """

    def __init__(self, fd: int = 0, *, max_line_bytes: int = 1_048_576,
                 warn: Callable[[str], None] = lambda message: None, name: str = "<stdin>") -> None:
        self.fd = fd
        self.name = name
        self.eof = False
        self._splitter = LineSplitter(name, max_line_bytes, warn)
        self._ready: list[Line] = []

    @property
    def skipped_long(self) -> int:
        """How many over-long lines were skipped."""
        return self._splitter.skipped_long

    def read(self, max_lines: int) -> list[Line]:
        """Complete lines available now, at most `max_lines`."""
        # Fill up to a whole batch when data is waiting: fewer, larger transactions downstream.
        while len(self._ready) < max_lines and not self.eof and self._readable(0):
            self._fill()
        out, self._ready = self._ready[:max_lines], self._ready[max_lines:]
        return out

    def wait(self, timeout: float) -> None:
        """Block until input may be there or `timeout` seconds pass."""
        if not self._ready and not self.eof:
            self._readable(timeout)

    def checkpoint(self) -> dict[str, Position]:
        """stdin cannot be resumed: no positions."""
        return {}

    def lag_bytes(self) -> int:
        """Unknown for a pipe; what is buffered here."""
        return len(self._splitter.pending)

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
