"""Conditions (SPEC 4.2) compiled once into predicates over events.

Each matcher becomes a closure specialised for its operand's type, so that the
per-event cost is a few attribute-free Python calls. Comparisons never coerce:
`"500"` is not `500`, `true` is not `1`, and `1` equals `1.0`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rulesd.rules.fields import MISSING, Event, Getter, make_getter

Predicate = Callable[[Event], bool]
ValueTest = Callable[[Any], bool]
_NUMBER = (int, float)


class ConditionError(ValueError):
    """A matcher that cannot be compiled (a bad regex); `path` locates it in the rule."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True, slots=True)
class Compiled:
    """A predicate with its rough cost, so cheap tests run before expensive ones."""

    test: Predicate
    cost: int


def is_number(value: Any) -> bool:
    """JSON numbers, excluding booleans (which Python counts as ints)."""
    return type(value) in _NUMBER


def equals_test(expected: Any) -> ValueTest:
    """Equality without coercion, specialised on the expected value's type."""
    if isinstance(expected, bool) or expected is None:
        return lambda v: v is expected
    if isinstance(expected, str):
        return lambda v: v == expected  # a str only ever equals a str
    return lambda v: type(v) in _NUMBER and v == expected


def any_of_test(options: Sequence[Any]) -> ValueTest:
    """Equal to one of `options`; a set lookup when they are all strings."""
    if all(isinstance(o, str) for o in options):
        strings = frozenset(options)
        return lambda v: type(v) is str and v in strings
    tests = [equals_test(o) for o in options]
    return lambda v: any(t(v) for t in tests)


def _contains(needle: Any) -> ValueTest:
    eq = equals_test(needle)

    def test(v: Any) -> bool:
        if type(v) is str:
            return isinstance(needle, str) and needle in v
        if type(v) is list:
            return any(eq(item) for item in v)
        return False

    return test


def _ordering(op: str, bound: float) -> ValueTest:
    if op == "gt":
        return lambda v: type(v) in _NUMBER and v > bound
    if op == "gte":
        return lambda v: type(v) in _NUMBER and v >= bound
    if op == "lt":
        return lambda v: type(v) in _NUMBER and v < bound
    return lambda v: type(v) in _NUMBER and v <= bound


def compile_regex(pattern: str) -> re.Pattern[str]:
    """Compile a rule's regex; ValueError explains a bad one."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        where = f" at position {exc.pos + 1}" if exc.pos is not None else ""
        raise ValueError(f"invalid regex {pattern!r}: {exc.msg}{where}") from None


def _operator(op: str, operand: Any) -> tuple[ValueTest, int]:
    match op:
        case "equals":
            return equals_test(operand), 1
        case "not_equals":
            eq = equals_test(operand)
            return (lambda v: not eq(v)), 1
        case "in":
            return any_of_test(operand), 1
        case "not_in":
            member = any_of_test(operand)
            return (lambda v: not member(v)), 1
        case "contains":
            return _contains(operand), 2
        case "startswith":
            return (lambda v: type(v) is str and v.startswith(operand)), 2
        case "endswith":
            return (lambda v: type(v) is str and v.endswith(operand)), 2
        case "regex":
            search = compile_regex(operand).search
            return (lambda v: type(v) is str and search(v) is not None), 10
        case "gt" | "gte" | "lt" | "lte":
            return _ordering(op, operand), 1
    raise AssertionError(f"operator {op!r} passed the schema but is unknown")


def _field(get: Getter, matcher: Any, path: tuple[str | int, ...]) -> Compiled:
    if isinstance(matcher, list):
        member = any_of_test(matcher)
        return Compiled(lambda e: member(get(e)), 2)
    if not isinstance(matcher, dict):
        eq = equals_test(matcher)
        return Compiled(lambda e: eq(get(e)), 2)
    exists = matcher.get("exists")
    tests: list[tuple[ValueTest, int]] = []
    for op, operand in matcher.items():
        if op == "exists":
            continue
        try:
            tests.append(_operator(op, operand))
        except ValueError as exc:
            raise ConditionError((*path, op), str(exc)) from None
    tests.sort(key=lambda t: t[1])
    value_tests = [t for t, _ in tests]
    cost = 1 + sum(c for _, c in tests)
    if exists is False:
        # Only a missing field satisfies `exists: false`; any other operator then fails.
        return Compiled(lambda e: get(e) is MISSING and not value_tests, 1)
    value_test = _all_values(value_tests)
    if exists is True and not value_tests:
        return Compiled(lambda e: get(e) is not MISSING, 1)

    def test(e: Event) -> bool:
        v = get(e)
        return v is not MISSING and value_test(v)

    return Compiled(test, cost)


def _all_values(tests: list[ValueTest]) -> ValueTest:
    if len(tests) == 1:
        return tests[0]
    return lambda v: all(t(v) for t in tests)


def all_of(preds: Sequence[Predicate]) -> Predicate:
    """The conjunction of `preds`, unrolled for the common short cases."""
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda e: a(e) and b(e)
    if len(preds) == 3:
        a, b, c = preds
        return lambda e: a(e) and b(e) and c(e)
    return lambda e: all(p(e) for p in preds)


def any_of(preds: Sequence[Predicate]) -> Predicate:
    """The disjunction of `preds`."""
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda e: a(e) or b(e)
    return lambda e: any(p(e) for p in preds)


def compile_condition(cond: dict[str, Any], path: tuple[str | int, ...] = ()) -> Compiled:
    """Compile a schema-valid condition mapping into one predicate."""
    parts: list[Compiled] = []
    for key, value in cond.items():
        if key == "all":
            subs = [compile_condition(c, (*path, key, i)) for i, c in enumerate(value)]
            parts.append(Compiled(all_of([s.test for s in subs]), sum(s.cost for s in subs)))
        elif key == "any":
            subs = [compile_condition(c, (*path, key, i)) for i, c in enumerate(value)]
            parts.append(Compiled(any_of([s.test for s in subs]), sum(s.cost for s in subs)))
        elif key == "not":
            inner = compile_condition(value, (*path, key))
            parts.append(Compiled(lambda e, t=inner.test: not t(e), inner.cost))
        else:
            parts.append(_field(make_getter(key), value, (*path, key)))
    parts.sort(key=lambda p: p.cost)
    return Compiled(all_of([p.test for p in parts]), sum(p.cost for p in parts))


@dataclass(frozen=True, slots=True)
class Hints:
    """What must hold for a condition to match, usable to skip rules cheaply.

    `equalities`: field -> the string values one of which the field must equal.
    `regexes`: field -> patterns the field must match (each one must).
    """

    equalities: dict[str, frozenset[str]]
    regexes: dict[str, tuple[str, ...]]


def necessary_hints(cond: dict[str, Any]) -> Hints:
    """Equality and regex tests that every match of `cond` must pass (from its conjunction)."""
    equalities: dict[str, frozenset[str]] = {}
    regexes: dict[str, tuple[str, ...]] = {}
    for key, value in _conjuncts(cond):
        values = _string_options(value)
        if values is not None:
            known = equalities.get(key)
            equalities[key] = values if known is None else known & values
        if isinstance(value, dict) and isinstance(value.get("regex"), str):
            regexes[key] = (*regexes.get(key, ()), value["regex"])
    return Hints(equalities, regexes)


def _conjuncts(cond: dict[str, Any]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in cond.items():
        if key == "all":
            for sub in value:
                out.extend(_conjuncts(sub))
        elif key not in ("any", "not"):
            out.append((key, value))
    return out


def _string_options(matcher: Any) -> frozenset[str] | None:
    if isinstance(matcher, str):
        return frozenset([matcher])
    if isinstance(matcher, list) and all(isinstance(v, str) for v in matcher):
        return frozenset(matcher)
    if isinstance(matcher, dict):
        if isinstance(matcher.get("equals"), str):
            return frozenset([matcher["equals"]])
        options = matcher.get("in")
        if isinstance(options, list) and all(isinstance(v, str) for v in options):
            return frozenset(options)
    return None
