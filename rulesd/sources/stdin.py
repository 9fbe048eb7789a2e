"""The stdin source: lines from a file descriptor until EOF."""

from __future__ import annotations

import os
import select
from collections.abc import Callable

from rulesd.events import JSON_PARSER, Parser
from rulesd.sources.base import CHUNK, MAX_LINE_BYTES, Checkpoint
from rulesd.sources.lines import MAX_CHUNKS_PER_READ, LineQueue, Lines, LineSplitter


class StdinSource:
    """Reads newline-terminated lines from `fd` without blocking the main loop.

    `select` tells when data is there, so signals and reloads are handled while
    waiting; a final line without a newline is delivered at EOF.
    """

    def __init__(
        self,
        fd: int = 0,
        *,
        max_line_bytes: int = MAX_LINE_BYTES,
        warn: Callable[[str], None] = lambda message: None,
        name: str = "<stdin>",
        parser: Parser = JSON_PARSER,
    ) -> None:
        self.fd = fd
        self.parser = parser
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

    def checkpoint(self) -> dict[str, Checkpoint]:
        """stdin cannot be resumed: no positions."""
        return {}

    def exhausted(self) -> bool:
        """True at the end of input, once every line has been handed out."""
        return self.eof and not self._ready

    def names(self) -> list[str]:
        """The one name its lines carry."""
        return [self.name]

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
