"""Where a key that is unknown in one mapping belongs instead, read from the schema.

A key indented under the wrong parent (`throttle` under `threshold`, `group_by` beside an
absence instead of in it, `for` beside an absent step) is spelled right: "unknown key" with a
list of the keys taken here does not say what to do. The schema knows every place a key is
taken; the one nearest to where it was written is where it was meant.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

from rulesd.document import JsonPath

ITEM = "[]"  # in a place, any item of a list
Place = tuple[str, ...]


@cache
def _places(schema_name: str) -> dict[str, tuple[Place, ...]]:
    """Every key the schema `schema_name` names, with the places (paths, ITEM for a list's
    items) of the mappings that take it."""
    from rulesd.validation import load_schema

    root = load_schema(schema_name)
    found: dict[str, list[Place]] = {}
    for key, place in _walk(root, root, (), ()):
        if place not in found.setdefault(key, []):
            found[key].append(place)
    return {key: tuple(places) for key, places in found.items()}


def _walk(root: dict[str, Any], node: Any, place: Place, refs: tuple[str, ...]) -> Iterator[tuple[str, Place]]:
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/") and ref not in refs:  # (a condition nests)
        yield from _walk(root, root["$defs"][ref.removeprefix("#/$defs/")], place, (*refs, ref))
    for key in ("if", "then", "else", "not"):
        yield from _walk(root, node.get(key), place, refs)
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in node.get(key, ()):
            yield from _walk(root, sub, place, refs)
    yield from _walk(root, node.get("items"), (*place, ITEM), refs)
    for key, sub in node.get("properties", {}).items():
        yield key, place
        yield from _walk(root, sub, (*place, key), refs)


def _pattern(path: JsonPath) -> Place:
    return tuple(ITEM if isinstance(part, int) else part for part in path)


def _concrete(place: Place, path: JsonPath) -> JsonPath | None:
    """`place` with the list indexes of `path` where the two agree; None where it names an
    item of a list that `path` does not go through."""
    out: list[str | int] = []
    for i, part in enumerate(place):
        if part != ITEM:
            out.append(part)
        elif i < len(path) and isinstance(path[i], int) and _pattern(path[:i]) == place[:i]:
            out.append(path[i])
        else:
            return None
    return tuple(out)


def _common(a: Place, b: Place) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def meant_places(
    schema_name: str, key: str, path: JsonPath, value: Any, *, in_items: bool = False
) -> tuple[list[JsonPath], list[Place]]:
    """Where `key`, unknown in the mapping at `path` of the document `value`, is taken: the
    mappings of the document that would take it and are nearest to `path` (first), else the
    nearest places of the schema that the document does not have (inside list items none
    wrote only if `in_items`)."""
    here = _pattern(path)
    written: list[tuple[int, JsonPath]] = []
    absent: list[tuple[int, Place]] = []
    for place in _places(schema_name).get(key, ()):
        if place == here:  # (the same place by another branch of the schema: a rule file's root)
            continue
        concrete = _concrete(place, path)
        if concrete is not None and concrete != path and isinstance(value_at(value, concrete), dict):
            written.append((_common(place, here), concrete))
        elif in_items or ITEM not in place[_common(place, here) :]:  # (a place inside list items none wrote)
            absent.append((_common(place, here), place))
    if written:
        best = max(n for n, _ in written)
        return [p for n, p in written if n == best], []
    best = max((n for n, _ in absent), default=0)
    return [], [p for n, p in absent if n == best]


@cache
def rule_keys() -> frozenset[str]:
    """The keys of a rule (in a file's list of rules)."""
    return frozenset(key for key, places in _places("rule").items() if ("rules", ITEM) in places)


def keys_of_rule_key(parent: str) -> frozenset[str]:
    """The keys the rule schema takes in a mapping written under the key `parent`."""
    return frozenset(key for key, places in _places("rule").items() if any(p[-1:] == (parent,) for p in places))


def value_at(value: Any, path: JsonPath) -> Any:
    """The part of the document `value` at `path` (None if it has none)."""
    for part in path:
        if isinstance(value, dict) and isinstance(part, str):
            value = value.get(part)
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            return None
    return value
