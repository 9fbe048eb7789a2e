"""What the daemon asks of every event source, and what all sources share.

A source hands out runs of complete lines (`Lines`) and says where it stands as checkpoints
that the daemon saves in the same transaction as the alerts those lines caused. The daemon
never looks at a source's type: it asks the source instead (`exhausted()`), builds it with
every saved position (`saved`, from which each source takes its own), and parses its lines
with the source's own `parser`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from rulesd.events import Parser
from rulesd.sources.lines import MAX_LINE_BYTES as MAX_LINE_BYTES  # (defined beside the line splitting)
from rulesd.sources.lines import Lines

# Defaults shared by the sources and the configuration.
START_AT = "end"  # where a source with no saved position starts: "beginning" or "end"
START_AT_CHOICES = ("beginning", "end")
CHUNK = 1 << 18  # bytes per read of a pipe (stdin, journalctl)

# Saved positions, as the state database returns them: key -> the JSON of a checkpoint.
Saved = Mapping[str, Mapping[str, Any]]


class Checkpoint(Protocol):
    """A source position that can be saved as JSON and given back through `Saved`."""

    def to_json(self) -> dict[str, Any]:
        """The position as a JSON-ready mapping."""
        ...


class _Forgotten:
    """The checkpoint of a key the source no longer reads (a glob's file deleted): saved as an
    empty mapping, which the state backends take as "delete this key"."""

    def to_json(self) -> dict[str, Any]:
        return {}


FORGOTTEN: Checkpoint = _Forgotten()


class Source(Protocol):
    """An event source as the main loop uses it."""

    parser: Parser
    """How this source's lines become events."""

    def read(self, max_lines: int) -> list[Lines]:
        """Complete lines available now, at most `max_lines`; never blocks."""
        ...

    def wait(self, timeout: float) -> None:
        """Block until lines may be there, or `timeout` seconds pass."""
        ...

    def checkpoint(self) -> Mapping[str, Checkpoint]:
        """Positions covering exactly the lines handed out so far, by key: at least those that
        moved since the last call (at the first call, all; a key left out stays as saved), so
        that a source of many quiet files builds few; FORGOTTEN for a key saved before that the
        source will never read again. Every caller saves what it is given."""
        ...

    def exhausted(self) -> bool:
        """True once no more lines will ever come (stdin at its end); the daemon then stops."""
        ...

    def lag_bytes(self) -> int:
        """Bytes the source knows of but has not handed out."""
        ...

    def names(self) -> list[str]:
        """What its lines are counted under (`Lines.path`) now: every file it follows, even
        one that has had no line yet, so that its counters are there from 0."""
        ...

    @property
    def skipped_long(self) -> int:
        """How many lines longer than `max_line_bytes` were skipped."""
        ...

    def close(self) -> None:
        """Release files, watches and child processes."""
        ...
