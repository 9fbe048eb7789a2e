"""JSON of any value an event holds, written and read back however deeply nested.

json and orjson write values recursively: orjson refuses nesting deeper than 254 and integers
beyond 64 bits, and json runs out of the interpreter's recursion limit before the 1,024 levels
that orjson reads. A template, a group key or an alias of such a value must still be written:
refused, the event's evaluation raised, and the daemon stopped at the line (and again at it
after each restart). So json is given room to recurse (one thread at a time) for such a value:
`compact_json` writes it, `read_json` reads back the state that holds it, and `indented_json`
shows it.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import orjson

# Levels json's recursion may go here: saved state holds an event (orjson reads 1,024
# levels) inside a group's value, and the callers' own frames come on top.
_READ_DEPTH = 4096
_limit_lock = threading.Lock()


def compact_json(value: Any, *, sort_keys: bool = False) -> str:
    """`value` as `json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)`
    writes it (`sort_keys` as json's), nested as deep as events and saved state go."""
    return _written(value, separators=(",", ":"), sort_keys=sort_keys)


def read_json(text: str | bytes) -> Any:
    """`text` as orjson reads it, and what orjson refuses as json does, nested up to one level
    more than orjson reads: an absence's group saves the event it last saw (a line nested 1,024
    levels deep is an event) one level down. Unread, a state that holds one stopped the daemon
    at each start, and an instance of a fleet as it caught up."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    with _room_to_recurse():
        return json.loads(text)


def indented_json(value: Any) -> str:
    """`value` as `json.dumps(value, indent=2, ensure_ascii=False, default=str)` writes it,
    nested as deep as saved state holds (a group keyed by an event's value 1,023 levels deep):
    `rulesd state --format json` ended in a traceback on one."""
    return _written(value, indent=2)


def deep(function: Callable[[Any], Any], value: Any) -> Any:
    """`function(value)` for a function that recurses into the value, with room to recurse as
    deep as events go (asked only for a value deeper than the interpreter's limit)."""
    try:
        return function(value)
    except RecursionError:
        pass
    with _room_to_recurse():
        return function(value)


def _written(value: Any, **how: Any) -> str:
    """json's text of `value`, with room to recurse for a value deeper than its recursion goes
    (asked only then: most values are shallow)."""
    text: str = deep(partial(json.dumps, ensure_ascii=False, default=str, **how), value)
    return text


@contextmanager
def _room_to_recurse() -> Iterator[None]:
    with _limit_lock:  # (the limit is the interpreter's: set back once done, by one thread at a time)
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, _READ_DEPTH))
        try:
            yield
        finally:
            sys.setrecursionlimit(limit)
