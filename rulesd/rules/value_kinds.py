"""Values compared for equality with a field that its events carry as another kind of value.

Comparisons never coerce (`"500"` is not `500`), so `http.status: "500"` never matches an
event whose status is the number 500, and nothing says so. What a field holds is known only
from events, or from how the rest of the rule set tests it: a rule test's events carry it,
and an ordering operator (`gte: 500`) is false for anything but a number, as `startswith`,
`endswith` and `regex` are for anything but a text. Only a value that reads as the same value
of the other kind (the text "500" and the number 500, the text "true" and the boolean) is
warned about, since only then is it sure what to write instead; a rule may be meant for events
of other sources than the ones seen, so it is a warning, not an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from rulesd.document import Document, JsonPath
from rulesd.errors import Problem
from rulesd.rules.boolean_words import expected_value_paths, rule_conditions
from rulesd.rules.lists import operands
from rulesd.validation import exponent, format_path

_EQUALITY = frozenset({None, "equals", "not_equals", "in", "not_in"})
# What an operator holds for: a number (the orderings), a text (the text-only operators)
_IMPLIED = {"gt": "number", "gte": "number", "lt": "number", "lte": "number"}
_IMPLIED |= {"startswith": "text", "endswith": "text", "regex": "text"}
_NUMBER_TEXT = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?\Z")  # as JSON writes a number


def kind_of(value: Any) -> str | None:
    """ "number", "text" or "boolean" (the kinds an equality never crosses); None otherwise."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "text" if isinstance(value, str) else None


def as_kind(value: Any, kind: str) -> Any:
    """`value` written as the same value of `kind` (the text "500" as the number 500, the
    number 500 as the text "500"); None when it reads as no such value."""
    if isinstance(value, str):
        if kind == "number" and _NUMBER_TEXT.match(value):
            return json.loads(value)
        return {"true": True, "false": False}.get(value) if kind == "boolean" else None
    if kind == "text" and kind_of(value) in ("number", "boolean"):
        return json.dumps(value)
    return None


def show(value: Any) -> str:
    """`value` as a rule would write it, with what kind it is: `the text "500"`, `the number 500`."""
    return f"the {kind_of(value)} {json.dumps(value)}"


def written(value: Any) -> str:
    """How to write `value` in a rule so that YAML reads it as that kind of value."""
    return f"{json.dumps(value)} unquoted" if not isinstance(value, str) else f'"{value}" in quotes'


def compared_values(raw: dict[str, Any], base: JsonPath) -> Iterator[tuple[JsonPath, str, Any]]:
    """Each value a rule compares a field with for equality (a matcher, `equals`, `in`, …, an
    item of a list, an absence's expected group's value): its path, the field, the value.
    A named list (`$name`) is not looked into."""
    for path, op, operand in _tests(raw, base):
        if op in _EQUALITY:
            yield from _values(path, op, operand)


def _tests(raw: dict[str, Any], base: JsonPath) -> Iterator[tuple[JsonPath, str | None, Any]]:
    """Each test of a rule's conditions (path, operator or None, operand), and each value of an
    absence's expected group as a matcher."""
    for condition, where in rule_conditions(raw, base):
        yield from operands(condition, where)
    for path in expected_value_paths(raw, base):
        yield path, None, raw["absence"]["expect"][path[-2]][path[-1]]


def _values(path: JsonPath, op: str | None, operand: Any) -> Iterator[tuple[JsonPath, str, Any]]:
    """The values of an equality test (`operand`, or the items of a list), with their paths."""
    field = str(path[-1] if op is None else path[-2])
    items = enumerate(operand) if isinstance(operand, list) else [(None, operand)]
    for i, item in items:
        if kind_of(item) is not None and not (isinstance(item, str) and item.startswith("$")):
            yield (path if i is None else (*path, i)), field, item


def rule_set_warnings(docs: Iterable[tuple[Document, list[tuple[dict[str, Any], JsonPath]]]]) -> list[Problem]:
    """A warning at each value a rule compares a field with for equality that is of another
    kind than a test elsewhere in the rule set takes (`http.status: "500"` where another rule
    has `http.status: {gte: 500}`), and reads as the same value of that kind."""
    implied: dict[str, tuple[Document, JsonPath, str, Any]] = {}
    # (one walk of every test: the values are looked at only for the fields found implied)
    equalities: list[tuple[Document, JsonPath, JsonPath, str | None, Any]] = []
    for doc, rules in docs:
        for raw, base in rules:
            for path, op, operand in _tests(raw, base):
                if op in _EQUALITY:
                    equalities.append((doc, base, path, op, operand))
                else:
                    kind = _IMPLIED.get(op or "")
                    if kind is not None and kind_of(operand) == kind:
                        implied.setdefault(str(path[-2]), (doc, path, kind, operand))
    warnings: list[Problem] = []
    written_by: dict[tuple[int, JsonPath], set[tuple[str, str | None, Any]]] = {}
    for doc, base, test_path, op, operand in equalities if implied else ():
        written_by.setdefault((id(doc), base), set()).update(_compared(_values(test_path, op, operand)))
    for doc, base, test_path, op, operand in equalities if implied else ():
        if str(test_path[-1] if op is None else test_path[-2]) not in implied:
            continue
        for path, field, value in _values(test_path, op, operand):
            there, where, kind, bound = implied[field]
            meant = _other_kind(value, kind)
            if meant is None or (there is doc and where[: len(base)] == base):
                continue  # (in one rule, contradictions.py says when the two can never hold together)
            if (field, kind, meant) in written_by[id(doc), base]:
                continue  # both written (`[500, "500"]`): meant for events of either kind
            clause = (
                f"{field} is compared with {show(value)}, but {format_path(where)} ({there.locate(where)}: "
                f"{where[-1]}: {json.dumps(bound)}) holds only for a {kind}: if {field} is a {kind}, write"
            )
            warnings.append(_warning(doc, path, clause, meant))
    return warnings


def _compared(values: Iterable[tuple[JsonPath, str, Any]]) -> set[tuple[str, str | None, Any]]:
    """Each field with each value it is compared with, and that value's kind (1 and true, equal
    in Python, are two values)."""
    return {(field, kind_of(value), value) for _, field, value in values}


def _other_kind(value: Any, kind: str) -> Any:
    """`value` as the same value of `kind`, if it is of another kind (None if it is not, or
    reads as no value of `kind`)."""
    return None if kind_of(value) == kind else as_kind(value, kind)


def _warning(doc: Document, path: JsonPath, clause: str, meant: Any) -> Problem:
    """The warning at `path`: `clause` (ending in "write"), then how to write `meant`."""
    return Problem(doc.locate(path), f"{format_path(path)}: {clause} {written(meant)}", "warning")


def event_kinds(events: Iterable[dict[str, Any]], field: str, getter: Any) -> dict[str, Any]:
    """The kinds of value `events` carry in `field` (read by `getter`), each with the first
    value of that kind. A text that is a number with an exponent (`1e3`, which YAML 1.1 reads as
    text) is of no kind: the event is warned about as likely meant a number, and the rule's
    1000 is not to be written as the text "1000" for it."""
    found: dict[str, Any] = {}
    for event in events:
        value = getter(event)
        kind = kind_of(value)
        if kind is not None and not (kind == "text" and exponent(value)):
            found.setdefault(kind, value)
    return found


def event_warnings(
    rules: Iterable[tuple[Document, dict[str, Any], JsonPath]], events: list[dict[str, Any]], events_path: str
) -> list[Problem]:
    """A warning at each value a rule compares a field with for equality where every one of
    `events` (a rule test's, read from `events_path`) that has the field carries it as another
    kind of value, and the rule's value reads as the same value of that kind: `http.status:
    "500"` where the events carry numbers."""
    from rulesd.rules.fields import make_getter  # (only where a rule test runs)

    warnings: list[Problem] = []
    seen: dict[str, dict[str, Any]] = {}  # each field's kinds in the events: a field is compared in many rules
    for doc, raw, base in rules:
        compared = list(compared_values(raw, base))
        both = _compared(compared)  # (a value the rule also writes as the other kind is meant so)
        for path, field, value in compared:
            kinds = seen.get(field)
            if kinds is None:
                kinds = seen[field] = event_kinds(events, field, make_getter(field))
            ((kind, example),) = kinds.items() if len(kinds) == 1 else [("", None)]
            meant = _other_kind(value, kind) if kind else None
            if meant is not None and (field, kind, meant) not in both:
                clause = (
                    f"{raw.get('name')!r} compares {field} with {show(value)}, but the events of {events_path} "
                    f"carry it as a {kind} ({json.dumps(example)}), which is never equal to it: write"
                )
                warnings.append(_warning(doc, path, clause, meant))
    return warnings
