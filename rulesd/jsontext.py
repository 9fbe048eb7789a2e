"""Compact JSON of any value an event holds, never refused.

json and orjson write values recursively: orjson refuses nesting deeper than 254 and integers
beyond 64 bits, and json runs out of the interpreter's recursion limit before the 1,024 levels
that orjson reads. A template, a group key or an alias of such a value must still be written:
refused, the event's evaluation raised, and the daemon stopped at the line (and again at it
after each restart). So `compact_json` writes what json cannot with an explicit stack, and
`read_json` reads back the state that holds such a value (and `indented_json` shows it).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

# Levels `read_json` lets json's recursion go: saved state holds an event (orjson reads 1,024
# levels) inside a group's value, and the callers' own frames come on top.
_READ_DEPTH = 4096
_limit_lock = threading.Lock()


def compact_json(value: Any, *, sort_keys: bool = False) -> str:
    """`value` as `json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)`
    writes it (`sort_keys` as json's), however deeply nested."""
    try:
        return _dumps(value, sort_keys)
    except RecursionError:
        return _deep(value, sort_keys)


def _dumps(value: Any, sort_keys: bool) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys, default=str)


class _Written(str):
    """Text already written, on `_deep`'s stack among the values still to write."""


def _deep(value: Any, sort_keys: bool) -> str:
    out: list[str] = []
    todo: list[Any] = [value]
    while todo:
        item = todo.pop()
        if type(item) is _Written:
            out.append(item)
        elif isinstance(item, dict):
            pairs = sorted(item.items(), key=lambda kv: kv[0]) if sort_keys else list(item.items())
            todo.append(_Written("}"))
            for n, (key, inner) in enumerate(reversed(pairs)):
                todo.append(inner)
                # json's own text of the key and its colon (it writes 1, None and True as "1", "null", "true").
                todo.append(_Written(_dumps({key: 0}, False)[1:-2]))
                if n < len(pairs) - 1:
                    todo.append(_Written(","))
            todo.append(_Written("{"))
        elif isinstance(item, list | tuple):
            todo.append(_Written("]"))
            for n, inner in enumerate(reversed(item)):
                todo.append(inner)
                if n < len(item) - 1:
                    todo.append(_Written(","))
            todo.append(_Written("["))
        else:
            out.append(_dumps(item, sort_keys))
    return "".join(out)


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
    """`value` as `json.dumps(value, indent=2, ensure_ascii=False)` writes it, nested as deep as
    saved state holds (a group keyed by an event's value 1,023 levels deep): `rulesd state
    --format json` ended in a traceback on one."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False)
    except RecursionError:
        pass
    with _room_to_recurse():
        return json.dumps(value, indent=2, ensure_ascii=False)


@contextmanager
def _room_to_recurse() -> Iterator[None]:
    with _limit_lock:  # (the limit is the interpreter's: set back once done, by one thread at a time)
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, _READ_DEPTH))
        try:
            yield
        finally:
            sys.setrecursionlimit(limit)
