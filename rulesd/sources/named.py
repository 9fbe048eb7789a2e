"""Sources with a name: their saved positions are kept under it, so that two sources of one
kind (two journald sources, two file sources tailing the same path) never share one.

A named source saves each position under `NAME:KEY` (`sshd:journald`,
`nginx:/var/log/nginx/access.log`); a single `source:` without a name keeps the bare keys it
always had. On the first start with named sources (no position saved under any name yet),
the bare positions are offered to every named source, each taking those that are its own
(a file source by path or inode, a journald source its cursor): naming a source, or moving it
into `sources:`, keeps its place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from rulesd.events import Parser
from rulesd.sources.base import Checkpoint, Saved, Source
from rulesd.sources.lines import Lines

SEPARATOR = ":"
# Source names are letters, digits, '_', '.', '-' (the configuration's schema says so), so
# a key with such a prefix is a named one; bare keys are absolute paths or plain names.
_NAMED_KEY = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]*):(.*)", re.DOTALL)


def own_positions(name: str | None, saved: Saved) -> Saved:
    """The saved positions that belong to the source `name` (None: a single unnamed source),
    with the name taken off their keys."""
    bare = {key: value for key, value in saved.items() if _NAMED_KEY.fullmatch(key) is None}
    if name is None:
        return bare
    prefix = name + SEPARATOR
    own = {key[len(prefix) :]: value for key, value in saved.items() if key.startswith(prefix)}
    if own or any(_NAMED_KEY.fullmatch(key) for key in saved):
        return own
    return bare  # the first start with names: the positions of the unnamed source before


class NamedSource:
    """A source whose positions are saved under its name; everything else is the source's."""

    def __init__(self, name: str, source: Source) -> None:
        self.name = name
        self.source = source
        self.parser: Parser = source.parser

    def read(self, max_lines: int) -> list[Lines]:
        """The source's lines."""
        return self.source.read(max_lines)

    def wait(self, timeout: float) -> None:
        """The source's wait."""
        self.source.wait(timeout)

    def checkpoint(self) -> Mapping[str, Checkpoint]:
        """The source's positions, each under `NAME:KEY`."""
        return {named_key(self.name, key): value for key, value in self.source.checkpoint().items()}

    def exhausted(self) -> bool:
        """Whether the source has ended."""
        return self.source.exhausted()

    def names(self) -> list[str]:
        """The source's names (the daemon counts them under `NAME:` itself)."""
        return self.source.names()

    def lag_bytes(self) -> int:
        """The source's lag."""
        return self.source.lag_bytes()

    @property
    def skipped_long(self) -> int:
        """The source's count of over-long lines."""
        return self.source.skipped_long

    def close(self) -> None:
        """Close the source."""
        self.source.close()


def named_key(name: str, key: str) -> str:
    """The key a position of source `name` is saved under."""
    return f"{name}{SEPARATOR}{key}"
