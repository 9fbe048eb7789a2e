"""Dotted field paths into events, compiled once into fast getters."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, Final

import orjson

from rulesd.jsontext import compact_json, deep

Event = dict[str, Any]


class _Missing:
    """The value of a path that is not in the event (distinct from JSON null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
Getter = Callable[[Event], Any]


def split_path(path: str) -> tuple[str, ...]:
    """`http.status` -> `('http', 'status')`."""
    return tuple(path.split("."))


def is_index(part: str) -> bool:
    """A part of a path that may index a list: ASCII digits (`str.isdigit` also takes `²`)."""
    return part.isascii() and part.isdigit()


def shallow_keys(path: str) -> tuple[str, ...] | None:
    """The keys of a path that `dict.get` alone reads (one key, or two that index no list),
    which callers may read inline; None for any other path."""
    parts = split_path(path)
    if len(parts) == 1 or (len(parts) == 2 and not any(map(is_index, parts))):
        return parts
    return None


def make_getter(path: str) -> Getter:
    """A function that returns the event's value at `path`, or MISSING.

    A numeric segment also indexes into a list (`items.0.name`).
    """
    match shallow_keys(path):
        case (key,):
            return lambda event: event.get(key, MISSING)
        case (outer, inner):

            def get_nested(event: Event) -> Any:
                value = event.get(outer, MISSING)
                return value.get(inner, MISSING) if type(value) is dict else MISSING

            return get_nested
    return make_walker(split_path(path))


@functools.lru_cache(maxsize=4096)
def group_getters(paths: tuple[str, ...]) -> tuple[Getter, ...]:
    """The getters of a rule's `group_by` paths: one tuple for equal paths, so that the engine
    makes an event's group key once for all the rules that matched it and group alike (rules
    drawn from a few variants do: a thousand of them group by a handful of paths)."""
    return tuple(make_getter(path) for path in paths)


def make_walker(parts: tuple[str, ...]) -> Callable[[Any], Any]:
    """A function that returns the value at `parts` inside a value (an object, or a list
    for a numeric part), or MISSING: `make_getter` of a deeper path walks the event."""

    def walk(value: Any) -> Any:
        for part in parts:
            if type(value) is dict:
                value = value.get(part, MISSING)
                if value is MISSING:
                    return MISSING
            elif type(value) is list and is_index(part) and int(part) < len(value):
                value = value[int(part)]
            else:
                return MISSING
        return value

    return walk


def key_text(value: Any) -> str:
    """A value as a part of a group key: its compact JSON (objects with sorted keys), so that
    values of different types never share a key; a missing field is a key of its own.

    Values the conditions find equal share a key: a number that is whole is written as the
    integer it equals (`1.0` and `-0.0` as `1` and `0`, `1e20` as `100000000000000000000`),
    inside lists and objects too, as `equals` finds `1.0` equal to `1`. A boolean stays
    apart from a number (`true` is not `1`), as it does for the conditions."""
    if value is MISSING:
        return "\x00missing"
    kind = type(value)
    if kind is float:
        return number_text(value)
    if kind is list or kind is dict:
        value = whole_numbers(value)
    try:  # (`sorted_json` written out: a call less for each key made on the event path)
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:
        return compact_json(value, sort_keys=True)


def sorted_json(value: Any) -> str:
    """`value`'s compact JSON, objects with sorted keys (what a key part was before whole
    numbers were written as integers: see `rulesd.engine.rekey`)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:  # nested deeper than 254, an integer beyond 64 bits: json's text
        return compact_json(value, sort_keys=True)


def integer_text(text: str) -> bool:
    """Whether a key text is an integer's (`12`, `-3`): written alike before and now, and read
    exactly only by `int` when beyond 64 bits. (JSON numbers are ASCII: `isdigit` suffices.)"""
    return text.isdigit() or (text[:1] == "-" and text[1:].isdigit())


def number_text(value: float) -> str:
    """A float as a part of a group key: a whole one as the integer it equals (`int` of a whole
    float is exact, however large), any other as its JSON."""
    if value.is_integer():
        return str(int(value))
    return orjson.dumps(value).decode()


_NUMBER_HOLDERS = (float, list, dict)  # what may be or hold a whole float


def whole_numbers(value: Any) -> Any:
    """`value` with every whole float in it, however deep, as the integer it equals (a copy
    only of the lists and objects that may hold one), so that their JSON is what `key_text`
    keys; nested deeper than the interpreter recurses, as deep as events go (`jsontext.deep`)."""
    return deep(_whole_numbers, value)


def _whole_numbers(value: Any) -> Any:
    kind = type(value)
    if kind is float:
        return int(value) if value.is_integer() else value
    if kind is list:
        if not any(type(item) in _NUMBER_HOLDERS for item in value):
            return value
        return [_whole_numbers(item) for item in value]
    if kind is dict:
        if not any(type(item) in _NUMBER_HOLDERS for item in value.values()):
            return value
        return {key: _whole_numbers(item) for key, item in value.items()}
    return value


# Between the parts of a group key. JSON writes a control character inside a string as an
# escape, and the missing field's text has none, so no part holds it: the parts split back exactly.
KEY_SEPARATOR = "\x1f"


def group_key(parts: Iterable[str]) -> str:
    """A group's key from its parts (`key_text` of each group_by value): one string, the parts
    joined by `KEY_SEPARATOR` (a single part is its own key; no part, the empty string).
    One string per group instead of a tuple of them: a tuple costs ~56 bytes more per group."""
    return KEY_SEPARATOR.join(parts)


def key_parts(key: str) -> list[str]:
    """The parts of a group's key (`group_key`'s inverse; none for the empty key)."""
    return key.split(KEY_SEPARATOR) if key else []


def event_with(values: dict[str, Any]) -> Event:
    """An event holding `values` at their dotted paths (`{"a.b": 1}` -> `{"a": {"b": 1}}`)."""
    event: Event = {}
    for path, value in values.items():
        *outer, last = split_path(path)
        node = event
        for part in outer:
            node = node.setdefault(part, {})
        node[last] = value
    return event
