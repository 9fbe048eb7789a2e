"""Keys of a rule written inside one of its conditions, where they mean something else.

A condition takes any field name as a key, so `throttle: 10m` indented under `match:` is
valid YAML and a valid condition (the event's field `throttle` must equal "10m"), and the rule
silently never fires; an operator written beside the fields (`equals: 2` under `match:`, the
line meant under the empty `status:` above it) likewise tests a field named `equals`. Such a
key is an error at its line when its value has the shape the misplaced key takes (a duration,
a list of field paths, a mapping of a rule kind, a list of steps or expected groups): no event
field plausibly has that name and value. A field of that name is still tested when written
with an operator (`throttle: {equals: 10m}`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rulesd.deferred_regex import when_used
from rulesd.document import Document, JsonPath
from rulesd.errors import Problem
from rulesd.validation import either, format_path, load_schema, pattern_name, place_name

_DURATION = when_used(r"\s*(\d+\s*[dhms]\s*)+\Z")
_DURATIONS = frozenset({"throttle", "window", "within", "for", "learn", "forget"})
_FIELD_LISTS = frozenset({"group_by", "fields"})
_MAPPINGS = frozenset({"threshold", "distinct", "sequence", "absence", "new_value", "resolve", "alert"})
_LISTS_OF_MAPPINGS = frozenset({"steps", "expect"})
_COMBINERS = ("all", "any", "not")


def operators() -> frozenset[str]:
    """The operators a field's mapping takes."""
    return frozenset(load_schema("rule")["$defs"]["operators"]["properties"])


def _has_its_shape(key: str, value: Any) -> bool:
    """Whether `value` is what `key` takes where it belongs (so it was likely meant there)."""
    if key in _DURATIONS:
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and _DURATION().match(value) is not None
        )
    if key in _FIELD_LISTS:
        return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)
    if key in _MAPPINGS:  # (a mapping of operators only is a field's test, as written)
        return isinstance(value, dict) and not set(value) <= operators()
    return key in _LISTS_OF_MAPPINGS and isinstance(value, list) and any(isinstance(v, dict) for v in value)


def misplaced_keys(doc: Document, rules: Iterator[tuple[dict[str, Any], JsonPath]]) -> list[tuple[JsonPath, Problem]]:
    """Each rule key written as a field of a condition of `rules` (the rule mappings of `doc`
    and their paths), and each operator written so after an empty field, with its problem."""
    from rulesd.key_places import keys_of_rule_key as keys_of

    taken = operators()
    found: list[tuple[JsonPath, Problem]] = []
    for raw, base in rules:
        for path, condition in conditions(raw, base):
            keys = list(condition)
            for i, key in enumerate(keys):
                value, where = condition[key], (*path, key)
                if key in taken and not isinstance(value, dict) and i and condition[keys[i - 1]] is None:
                    line = doc.locate((*path, keys[i - 1]), key=True).line
                    message = (
                        f"'{key}' is an operator: it belongs under '{keys[i - 1]}' (line {line}), which is empty: "
                        f"indent this line under that ({keys[i - 1]}: {{{key}: …}})"
                    )
                elif key in taken and not isinstance(value, dict) and i and _tested(condition[keys[i - 1]], taken):
                    # `message: {contains: err}, nocase: true`: it tests a field `nocase`, which no event has
                    line = doc.locate((*path, keys[i - 1]), key=True).line
                    shown = str(value).lower() if isinstance(value, bool) else "…"
                    message = (
                        f"'{key}' is an operator, written beside the fields: it belongs in the mapping of "
                        f"'{keys[i - 1]}' (line {line}): {keys[i - 1]}: {{…, {key}: {shown}}} (as written, it tests "
                        f"an event field named {key!r}: write {key}: {{equals: …}} if meant)"
                    )
                elif value is None and key in _MAPPINGS and (own := [k for k in keys[i + 1 :] if k in keys_of(key)]):
                    # `alert:` and its block indented one level too deep: its keys became fields too
                    message = (
                        f"'{key}' belongs {_belongs(doc, key, path)}, not under '{_name(path)}', with its keys after "
                        f"it ({', '.join(repr(k) for k in own)}) under it: as written, they test event fields"
                    )
                elif _has_its_shape(key, value):
                    message = f"'{key}' belongs {_belongs(doc, key, path)}, not under '{_name(path)}'"
                    if not isinstance(value, dict | list):
                        message += (
                            f" (as written, it tests an event field named {key!r}: write {key}: {{equals: …}} if meant)"
                        )
                else:
                    continue
                found.append((where, Problem(doc.locate(where, key=True), f"{format_path(where)}: {message}")))
    return found


def _tested(value: Any, taken: frozenset[str]) -> bool:
    """Whether a field's `value` is a mapping of operators (where another operator would go)."""
    return isinstance(value, dict) and bool(value) and set(value) <= taken


def _belongs(doc: Document, key: str, path: JsonPath) -> str:
    """Where the rule key `key`, written in the condition at `path`, belongs: the places named."""
    from rulesd.key_places import meant_places

    # (a rule key's shape written as a field is said whatever is written: `for` is a key of a
    # sequence step's `absent` alone, which a rule without steps has nowhere)
    written, elsewhere = meant_places("rule", key, path, doc.value, in_items=True)
    places = [place_name("rule", doc, p, line=True) for p in written]
    return either(places or [pattern_name("rule", p) for p in elsewhere])


def _name(path: JsonPath) -> str:
    """The key a condition is written under (`match`, or `all` for a branch of it)."""
    return next(part for part in reversed(path) if isinstance(part, str))


def conditions(raw: dict[str, Any], base: JsonPath) -> Iterator[tuple[JsonPath, dict[str, Any]]]:
    """The conditions of a rule (its match, its steps' and absent steps'), nested ones too."""
    tops: list[tuple[JsonPath, Any]] = [((*base, "match"), raw.get("match"))]
    sequence = raw.get("sequence")
    steps = sequence.get("steps") if isinstance(sequence, dict) else None
    for i, step in enumerate(steps if isinstance(steps, list) else ()):
        if isinstance(step, dict):
            tops.append(((*base, "sequence", "steps", i, "match"), step.get("match")))
            absent = step.get("absent")
            if isinstance(absent, dict):
                tops.append(((*base, "sequence", "steps", i, "absent", "match"), absent.get("match")))
    for path, condition in tops:
        yield from _nested(path, condition)


def _nested(path: JsonPath, condition: Any) -> Iterator[tuple[JsonPath, dict[str, Any]]]:
    if not isinstance(condition, dict):
        return
    yield path, condition
    for key in _COMBINERS:
        inner = condition.get(key)
        if key == "not":
            yield from _nested((*path, key), inner)
        elif isinstance(inner, list):
            for i, item in enumerate(inner):
                yield from _nested((*path, key, i), item)
