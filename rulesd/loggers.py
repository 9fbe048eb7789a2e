"""rulesd's loggers, and when logging is set up.

`rulesd replay` and `rulesd check` seldom write a log record (a skipped line, a cache file
not private): for them logging (with traceback, string, threading and the patterns they
compile, ~3 ms of a 0.09 s start) is imported, and set up as the command line asked, when
the first logger is asked for. Every other command sets it up at once: the daemon always
logs, and the libraries it uses log through logging directly.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import logging

# The set-up asked for and not yet made: (level, format, stream). One process, one set-up.
_deferred: tuple[str, str, TextIO] | None = None


def configure(level: str, fmt: str, *, deferred: bool = False) -> None:
    """Write rulesd's log records to standard error as `rulesd.logs.configure` does: now, or
    with `deferred` when `logger` is first called."""
    global _deferred
    _deferred = (level, fmt, sys.stderr) if deferred else None
    if not deferred:
        _set_up(level, fmt, sys.stderr)


def drop_deferred() -> None:
    """Forget a deferred set-up not yet made: its command has returned. (A process that runs
    commands one after another, as an embedding program or a test does, must not have a later
    logger set up to a stream an earlier command was given, and closed since.)"""
    global _deferred
    _deferred = None


def logger(name: str) -> logging.Logger:
    """The logger `name`, logging set up first if that was deferred."""
    global _deferred
    if _deferred is not None:
        asked, _deferred = _deferred, None
        _set_up(*asked)
    import logging

    return logging.getLogger(name)


def _set_up(level: str, fmt: str, stream: TextIO) -> None:
    from rulesd.logs import configure as set_up

    set_up(level, fmt, stream)
