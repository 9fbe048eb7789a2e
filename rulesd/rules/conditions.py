"""Conditions compiled once into predicates over events.

A whole condition becomes one generated Python function (see `_Writer`): field
lookups, string equality, membership and number comparisons are written inline,
and the other operators call a closure specialised for the operand's type.
Comparisons never coerce: `"500"` is not `500`, `true` is not `1`, and `1`
equals `1.0`.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import CodeType, FunctionType
from typing import Any

from rulesd.rules.fields import MISSING, Event, make_getter

Predicate = Callable[[Event], bool]
ValueTest = Callable[[Any], bool]
_NUMBER = (int, float)
_MAX_NESTING = 16  # `all`/`any`/`not` levels written into one expression


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


def compile_regex(pattern: str) -> re.Pattern[str]:
    """Compile a rule's regex; ValueError explains a bad one."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        where = f" at position {exc.pos + 1}" if exc.pos is not None else ""
        raise ValueError(f"invalid regex {pattern!r}: {exc.msg}{where}") from None


def _yaml_number(value: float) -> str:
    """How YAML writes a non-finite number."""
    return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")


def _operator(op: str, operand: Any) -> tuple[ValueTest, int]:
    """A test for an operator that `_value_expression` does not write inline, and its cost."""
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
    raise AssertionError(f"operator {op!r} passed the schema but is unknown")


class _Writer:
    """Writes a condition as one Python expression over the event `e`.

    One function per rule, without a call per field or per `all`/`any`, because the
    candidates' predicates are a large part of the work per event. Rule files are
    data: field names, values and compiled tests are bound to generated names
    (`C0`, `C1`, ...) in the function's globals, never written into its source.
    """

    def __init__(self) -> None:
        self.names: dict[str, Any] = {"MISSING": MISSING, "NUMBER": _NUMBER}
        self.values = 0  # locals v0, v1, ... holding field values

    def const(self, value: Any) -> str:
        """A generated name bound to `value`."""
        name = f"C{len(self.names) - 2}"
        self.names[name] = value
        return name

    def local(self) -> str:
        """A fresh local for a field's value."""
        self.values += 1
        return f"v{self.values - 1}"

    def read(self, key: str) -> str:
        """The field's value, MISSING when absent; a top-level key is read inline."""
        if "." in key:
            return f"{self.const(make_getter(key))}(e)"
        return f"e.get({self.const(key)}, MISSING)"

    def function(self, expression: str) -> Predicate:
        """The predicate returning `expression`."""
        test: Predicate = generated_function(f"def run(e):\n    return {expression}\n", self.names)
        return test


def generated_function(source: str, names: dict[str, Any]) -> Any:
    """The function `run` that `source` defines, with `names` as its globals.

    `source` must hold nothing but generated names and fixed code, so functions of the
    same shape are compiled once. Each still gets a copy of the code object: the
    interpreter specialises a global lookup for one globals dict, and code shared between
    functions with different globals would keep losing that on the hot path.
    """
    return FunctionType(_code_for(source).replace(), names)


@functools.lru_cache(maxsize=1024)
def _code_for(source: str) -> CodeType:
    namespace: dict[str, Any] = {}
    exec(compile(source, "<rulesd>", "exec"), namespace)
    code: CodeType = namespace["run"].__code__
    return code


def _field(key: str, matcher: Any, path: tuple[str | int, ...], w: _Writer) -> tuple[str, int]:
    """The expression for `field: matcher`, and its rough cost."""
    if isinstance(matcher, list):
        if all(isinstance(o, str) for o in matcher) and "." not in key:
            v = w.local()
            return f"(type({v} := e.get({w.const(key)})) is str and {v} in {w.const(frozenset(matcher))})", 2
        return _present_and(key, [f"{w.const(any_of_test(matcher))}({{v}})"], w), 2
    if not isinstance(matcher, dict):
        if isinstance(matcher, str):
            # Neither a missing field (MISSING) nor any non-string equals a string.
            return f"({w.read(key)} == {w.const(matcher)})", 2
        return _present_and(key, [f"{w.const(equals_test(matcher))}({{v}})"], w), 2
    exists = matcher.get("exists")
    tests: list[tuple[str, int]] = []
    for op, operand in matcher.items():
        if op == "exists":
            continue
        try:
            tests.append(_value_expression(op, operand, w))
        except ValueError as exc:
            raise ConditionError((*path, op), str(exc)) from None
    tests.sort(key=lambda t: t[1])
    cost = 1 + sum(c for _, c in tests)
    if exists is False:
        # Only a missing field satisfies `exists: false`; any other operator then fails.
        return ("False" if tests else f"({w.read(key)} is MISSING)"), 1
    if exists is True and not tests:
        return f"({w.read(key)} is not MISSING)", 1
    return _present_and(key, [t for t, _ in tests], w), cost


_ORDERING = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _value_expression(op: str, operand: Any, w: _Writer) -> tuple[str, int]:
    """`op` applied to the value `{v}`, and its rough cost: the common cheap operators are
    written inline, the others call a compiled test."""
    if op in _ORDERING:
        if not math.isfinite(operand):  # NaN compares false with everything: a rule that never fires
            raise ValueError(f"expected a finite number, got {_yaml_number(operand)}")
        return f"(type({{v}}) in NUMBER and {{v}} {_ORDERING[op]} {w.const(operand)})", 1
    if op == "equals" and isinstance(operand, str):
        return f"({{v}} == {w.const(operand)})", 1
    test, cost = _operator(op, operand)
    return f"{w.const(test)}({{v}})", cost


def _present_and(key: str, value_tests: list[str], w: _Writer) -> str:
    """The field is present and passes every test (each a template over `{v}`)."""
    v = w.local()
    tests = " and ".join(t.format(v=v) for t in value_tests)
    return f"(({v} := {w.read(key)}) is not MISSING and {tests})"


def _condition(cond: dict[str, Any], path: tuple[str | int, ...], w: _Writer, depth: int = 0) -> tuple[str, int]:
    """The expression for a condition mapping, cheap parts first, and its cost."""
    parts: list[tuple[str, int]] = []
    for key, value in cond.items():
        if key in ("all", "any"):
            subs = [_nested(c, (*path, key, i), w, depth) for i, c in enumerate(value)]
            joined = f" {'and' if key == 'all' else 'or'} ".join(e for e, _ in subs)
            empty = "True" if key == "all" else "False"
            parts.append((f"({joined})" if subs else empty, sum(c for _, c in subs)))
        elif key == "not":
            inner, cost = _nested(value, (*path, key), w, depth)
            parts.append((f"(not {inner})", cost))
        else:
            parts.append(_field(key, value, (*path, key), w))
    parts.sort(key=lambda p: p[1])
    expression = " and ".join(e for e, _ in parts)
    return (f"({expression})" if parts else "True"), sum(c for _, c in parts)


def _nested(cond: dict[str, Any], path: tuple[str | int, ...], w: _Writer, depth: int) -> tuple[str, int]:
    """A sub-condition: inline, or deeply nested, a function of its own, because the
    Python parser refuses expressions nested beyond about a hundred levels."""
    if depth < _MAX_NESTING:
        return _condition(cond, path, w, depth + 1)
    sub = compile_condition(cond, path)
    return f"{w.const(sub.test)}(e)", sub.cost


def compile_condition(cond: dict[str, Any], path: tuple[str | int, ...] = ()) -> Compiled:
    """Compile a schema-valid condition mapping into one predicate."""
    writer = _Writer()
    expression, cost = _condition(cond, path, writer)
    return Compiled(writer.function(expression), cost)


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
    found: list[float] = [
        matcher[op] for op in ("gt", "gte") if is_number(matcher.get(op)) and math.isfinite(matcher[op])
    ]
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
