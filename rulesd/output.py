"""Writing to standard output, which a full disk or a gone reader can refuse.

A reader that went away (`rulesd replay … | head`) ends the command quietly, as other tools
do; a write refused otherwise (`> out.txt` on a full disk) is an error that says what failed,
not a traceback. Either way, what the stream still buffers is sent to /dev/null, so that the
interpreter's flush at exit cannot fail again (Python's documented remedy).
"""

from __future__ import annotations

import os
from typing import TextIO

from rulesd.errors import RulesdError

CLOSED = "cannot write to standard output: it is closed"


class OutputError(RulesdError):
    """Standard output refused a write (a full disk, an I/O error); the message says why."""


def write(stream: TextIO | None, text: str) -> None:
    """`stream.write(text)`; BrokenPipeError as it is, any other refusal as OutputError (None:
    the process was started with its standard output closed)."""
    if stream is None:
        raise OutputError(CLOSED)
    try:
        stream.write(text)
    except BrokenPipeError:
        raise
    except OSError as exc:
        discard(stream)
        raise OutputError(f"cannot write to standard output: {exc.strerror or exc}") from None


def flush_or_discard(stream: TextIO | None) -> None:
    """Flush `stream`; if it cannot be written, discard what it buffers (see `discard`)."""
    if stream is None:  # closed at start: nothing buffered
        return
    try:
        stream.flush()
    except OSError:
        discard(stream)


def discard(stream: TextIO | None) -> None:
    """Point `stream`'s descriptor at /dev/null: nothing it buffers can fail at exit."""
    if stream is None:  # closed at start: nothing buffered
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a file (a test's StringIO): nothing to flush later
        pass
