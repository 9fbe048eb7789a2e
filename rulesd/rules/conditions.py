"""Conditions (SPEC 4.2) compiled once into predicates over events.

Each matcher becomes a closure specialised for its operand's type, so that the
per-event cost is a few attribute-free Python calls. Comparisons never coerce:
`"500"` is not `500`, `true` is not `1`, and `1` equals `1.0`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rulesd.rules.fields import MISSING, Event, make_getter

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


def _field(key: str, matcher: Any, path: tuple[str | int, ...]) -> Compiled:
    if isinstance(matcher, list):
        return Compiled(_member_predicate(key, matcher), 2)
    if not isinstance(matcher, dict):
        return Compiled(_equals_predicate(key, matcher), 2)
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
    get = make_getter(key)
    if exists is False:
        # Only a missing field satisfies `exists: false`; any other operator then fails.
        return Compiled(lambda e: get(e) is MISSING and not value_tests, 1)
    if exists is True and not value_tests:
        return Compiled(lambda e: get(e) is not MISSING, 1)
    return Compiled(_present_and(key, _all_values(value_tests)), cost)


def _present_and(key: str, value_test: ValueTest) -> Predicate:
    """The field is present and passes `value_test`; a top-level key is read inline."""
    if "." in key:
        get = make_getter(key)

        def nested(e: Event) -> bool:
            v = get(e)
            return v is not MISSING and value_test(v)

        return nested

    def top(e: Event) -> bool:
        v = e.get(key, MISSING)
        return v is not MISSING and value_test(v)

    return top


def _equals_predicate(key: str, expected: Any) -> Predicate:
    """`field: value`, fused with the field lookup: one call per event."""
    if isinstance(expected, str):
        # Neither a missing field (None or MISSING) nor any non-string equals a string.
        if "." in key:
            get = make_getter(key)
            return lambda e: get(e) == expected
        return lambda e: e.get(key) == expected
    return _present_and(key, equals_test(expected))


def _member_predicate(key: str, options: list[Any]) -> Predicate:
    """`field: [a, b]`, fused with the field lookup for the all-strings case."""
    if not all(isinstance(o, str) for o in options) or "." in key:
        return _present_and(key, any_of_test(options))
    strings = frozenset(options)

    def test(e: Event) -> bool:
        v = e.get(key)
        return type(v) is str and v in strings

    return test


def _all_values(tests: list[ValueTest]) -> ValueTest:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda v: a(v) and b(v)
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
    if len(preds) == 4:
        a, b, c, d = preds
        return lambda e: a(e) and b(e) and c(e) and d(e)
    every = tuple(preds)

    def test(e: Event) -> bool:
        # A plain loop: all() over a generator costs a frame per event.
        for p in every:  # noqa: SIM110
            if not p(e):
                return False
        return True

    return test


def any_of(preds: Sequence[Predicate]) -> Predicate:
    """The disjunction of `preds`."""
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda e: a(e) or b(e)
    if len(preds) == 3:
        a, b, c = preds
        return lambda e: a(e) or b(e) or c(e)
    some = tuple(preds)

    def test(e: Event) -> bool:
        for p in some:  # noqa: SIM110
            if p(e):
                return True
        return False

    return test


def _negate(pred: Predicate) -> Predicate:
    return lambda e: not pred(e)


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
            parts.append(Compiled(_negate(inner.test), inner.cost))
        else:
            parts.append(_field(key, value, (*path, key)))
    parts.sort(key=lambda p: p.cost)
    return Compiled(all_of([p.test for p in parts]), sum(p.cost for p in parts))


@dataclass(frozen=True, slots=True)
class Hints:
    """What must hold for a condition to match, usable to skip rules cheaply.

    `equalities`: field -> the string values one of which the field must equal.
    `regexes`: field -> patterns the field must match (each one must).
    `lower_bounds`: field -> a number the field must be a number at least equal to.
    `substrings`: field -> strings the field must contain (if it is a string; a list
    may instead hold an equal item).
    `alternatives`: the hints of each branch of an `any` that must hold, one of which
    then holds too (empty when no branch hint is known for some branch).
    """

    equalities: dict[str, frozenset[str]]
    regexes: dict[str, tuple[str, ...]]
    lower_bounds: dict[str, float] = field(default_factory=dict)
    alternatives: tuple[Hints, ...] = ()
    substrings: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def useful(self) -> bool:
        """Whether these hints say anything an index can use."""
        return bool(self.equalities or self.regexes or self.lower_bounds or self.substrings)

    def merged(self, other: Hints) -> Hints:
        """Hints that hold when both `self` and `other` hold (alternatives dropped)."""
        equalities = dict(self.equalities)
        for key, values in other.equalities.items():
            _narrow(equalities, key, values)
        regexes = dict(self.regexes)
        for key, patterns in other.regexes.items():
            regexes[key] = (*regexes.get(key, ()), *patterns)
        bounds = dict(self.lower_bounds)
        for key, bound in other.lower_bounds.items():
            bounds[key] = max(bound, bounds.get(key, bound))
        substrings = dict(self.substrings)
        for key, needles in other.substrings.items():
            substrings[key] = (*substrings.get(key, ()), *needles)
        return Hints(equalities, regexes, bounds, substrings=substrings)


def necessary_hints(cond: dict[str, Any]) -> Hints:
    """Equality, regex and bound tests that every match of `cond` must pass."""
    equalities: dict[str, frozenset[str]] = {}
    regexes: dict[str, tuple[str, ...]] = {}
    bounds: dict[str, float] = {}
    substrings: dict[str, tuple[str, ...]] = {}
    for key, value in _conjuncts(cond):
        values = _string_options(value)
        if values is not None:
            _narrow(equalities, key, values)
        if isinstance(value, dict):
            if isinstance(value.get("regex"), str):
                regexes[key] = (*regexes.get(key, ()), value["regex"])
            if isinstance(value.get("contains"), str) and value["contains"]:
                substrings[key] = (*substrings.get(key, ()), value["contains"])
            bound = _lower_bound(value)
            if bound is not None:
                bounds[key] = max(bound, bounds.get(key, bound))
    alternatives: tuple[Hints, ...] = ()
    for branches in _disjunctions(cond):
        branch_hints = [necessary_hints(b) for b in branches]
        # A field every branch of an `any` pins to strings is pinned to their union.
        hints = [h.equalities for h in branch_hints]
        for key in set.intersection(*(set(h) for h in hints)) if hints else ():
            _narrow(equalities, key, frozenset().union(*(h[key] for h in hints)))
        if not alternatives and branch_hints and all(h.useful() for h in branch_hints):
            alternatives = tuple(branch_hints)
    return Hints(equalities, regexes, bounds, alternatives, substrings)


def _narrow(equalities: dict[str, frozenset[str]], key: str, values: frozenset[str]) -> None:
    known = equalities.get(key)
    equalities[key] = values if known is None else known & values


def _lower_bound(matcher: dict[str, Any]) -> float | None:
    found: list[float] = [matcher[op] for op in ("gt", "gte") if is_number(matcher.get(op))]
    return max(found) if found else None


def _conjuncts(cond: dict[str, Any]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in cond.items():
        if key == "all":
            for sub in value:
                out.extend(_conjuncts(sub))
        elif key not in ("any", "not"):
            out.append((key, value))
    return out


def _disjunctions(cond: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The `any` lists that must hold, found through `all` like the conjuncts."""
    out: list[list[dict[str, Any]]] = []
    for key, value in cond.items():
        if key == "all":
            for sub in value:
                out.extend(_disjunctions(sub))
        elif key == "any":
            out.append(value)
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
