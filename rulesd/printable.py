"""Text from events made safe to print on an operator's terminal.

Event text is written by whoever can put a line into a log (a user name in a failed login, a
request path). Printed as it is, an escape sequence in it is obeyed by the terminal: it can
recolour, clear or retitle the screen, or, with a line break, forge a line of the output. The
human-readable outputs of the commands therefore write every control character as the escape
JSON uses for it (`\\u001b`, `\\n`): C0, DEL and C1 (a terminal takes U+009B as ESC [), and the
Unicode line and paragraph separators.

File names are the other text that may not be printable as it is: one that is not UTF-8 is
written with those bytes escaped (`path_text`), wherever rulesd names it.
"""

from __future__ import annotations

import os
import re

from rulesd.deferred_regex import when_used

_CONTROLS = when_used("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROLS_BUT_NEWLINE = when_used("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_SHORT = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def escape(found: re.Match[str]) -> str:
    """The matched character as JSON writes it escaped (`\\n`, `\\u001b`)."""
    char = found.group()
    return _SHORT.get(char) or f"\\u{ord(char):04x}"


def one_line(text: str) -> str:
    """`text` with every control character escaped, line breaks too: one line, as printed."""
    # Most text holds none, and every character escaped is one that isprintable() refuses: it
    # answers in a fraction of the substitution's time (every alert's fields come through here).
    return text if text.isprintable() else _CONTROLS().sub(escape, text)


def lines(text: str) -> str:
    """`text` with every control character but the line feed escaped, for output of several
    lines (inside JSON strings only C1 and DEL can be left, and their escapes are JSON's)."""
    # (isprintable() first, as in `one_line`: a text it takes holds none of them)
    if text.isprintable() or _CONTROLS_BUT_NEWLINE().search(text) is None:
        return text
    return _CONTROLS_BUT_NEWLINE().sub(escape, text)


def path_text(path: str) -> str:
    """A file name as text that UTF-8 can hold: the bytes of a name that is not UTF-8 (which
    Python holds as lone surrogates, and JSON, SQLite and HTTP refuse) escaped, `app-\\xff.jsonl`."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
