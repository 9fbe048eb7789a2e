"""Conditions compiled once into predicates over events.

A whole condition becomes one generated Python function (see `_Writer`): field
lookups, string equality, membership and number comparisons are written inline,
and the other operators call a closure specialised for the operand's type.
Comparisons never coerce: `"500"` is not `500`, `true` is not `1`, and `1`
equals `1.0`.

A regex is answered by its field's Hyperscan scan (see `patterns`): the patterns of a
whole rule set are registered in one `PatternSet` while its rules compile, and each
field's database is built once they all have. So are `contains`, `startswith`, `endswith`
and `regex` under `nocase: true` (caseless patterns); `equals` and `in` under it compare case
folds (`casefold`, held to Hyperscan's folding), which the index looks up in a table of folded
values. Operands are resolved first: `$name` is a named list, `$$` a literal `$` (`lists`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import CodeType, FunctionType
from typing import Any, Protocol

import msgspec

from rulesd.rules import casefold
from rulesd.rules.casefold import fold
from rulesd.rules.fields import MISSING, Event, make_getter
from rulesd.rules.generated_code import code_for
from rulesd.rules.lists import NO_LISTS, ListError, Lists, NamedList, equality_problem, reference, resolve_operand
from rulesd.rules.networks import NetworkError, Networks, networks_of
from rulesd.rules.patterns import (
    FieldScanner,
    Pattern,
    PatternError,
    PatternSet,
    Scan,
    literal_pattern,
    regex_problem,
)
from rulesd.rules.view import INT_MAX, INT_MIN

Predicate = Callable[[Event], bool]
ValueTest = Callable[[Any], bool]
_NUMBER = (int, float)
_MAX_NESTING = 16  # `all`/`any`/`not` levels written into one expression


class ConditionError(ValueError):
    """A matcher that cannot be compiled (a bad regex); `path` locates it in the rule."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


class Compiled(msgspec.Struct, frozen=True):
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


class Patterns(Protocol):
    """Where a condition registers the patterns it looks for (see `PatternSet`)."""

    def add(self, field: str, pattern: Pattern, path: tuple[str | int, ...]) -> tuple[FieldScanner, int]:
        """The scanner of `field` and the id of `pattern` in it; `path` locates the operand."""
        ...


class _Unplaced:
    """Patterns of a condition compiled on its own: a `PatternSet` of its own, built at once."""

    def __init__(self) -> None:
        self.set = PatternSet()

    def add(self, field: str, pattern: Pattern, path: tuple[str | int, ...]) -> tuple[FieldScanner, int]:
        return self.set.add(field, pattern, path)


def _yaml_number(value: float) -> str:
    """How YAML writes a non-finite number (an integer beyond a double: how many digits)."""
    if isinstance(value, int):
        return f"an integer of {len(str(abs(value)))} digits, beyond a double's range"
    return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")


def _is_finite(value: float) -> bool:
    """A number that a double holds, other than an infinity or NaN. An integer beyond a double's
    range is not (`math.isfinite` would raise): no JSON number an event holds can reach it."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class _Writer:
    """Writes a condition as one Python expression over the event `e`.

    One function per rule, without a call per field or per `all`/`any`, because the
    candidates' predicates are a large part of the work per event. Rule files are
    data: field names, values and compiled tests are bound to generated names
    (`C0`, `C1`, ...) in the function's globals, never written into its source.
    """

    def __init__(self, patterns: Patterns, lists: Lists, *, checked: bool = False) -> None:
        self.names: dict[str, Any] = {"MISSING": MISSING, "NUMBER": _NUMBER, "TEXT_OR_LIST": (str, list)}
        self.values = 0  # locals v0, v1, ... holding field values
        self.patterns = patterns
        self.lists = lists
        self.checked = checked  # (its regexes were found sound by a load of the same rule set)

    def const(self, value: Any) -> str:
        """A generated name bound to `value`."""
        name = f"C{len(self.names) - 3}"
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
    return FunctionType(code_for(source).replace(), names)


def behaviour_key(test: Predicate) -> Any:
    """What decides a generated predicate's answers: its code and the values of the names it
    reads, each with its type (`1`, `1.0` and `True` are equal values, not equal keys).
    Predicates with equal keys answer alike for every event, so one call can stand for them
    all; any other predicate is only its own key."""
    code = getattr(test, "__code__", None)
    names = getattr(test, "__globals__", None)
    if code is None or names is None or getattr(test, "__closure__", None):
        return test
    if CodeType in map(type, code.co_consts):  # (no type derives from CodeType)
        return test  # names read by nested code are not in `co_names`: not keyed here
    key = (code, tuple((n, type(names[n]), names[n]) for n in code.co_names if n in names))
    try:
        hash(key)
    except TypeError:  # a value compared by contents that cannot be hashed: not shared
        return test
    return key


def resolved_matcher(matcher: Any, path: tuple[str | int, ...], lists: Lists) -> Any:
    """A field's matcher with its operands as the tests take them: `$name` as the named list's
    values (`cidr`: its compiled networks), `$$text` as `$text`; ConditionError at a misused `$`."""
    if not isinstance(matcher, dict):
        return _operand(None, matcher, path, lists)
    return {op: v if op in _MODIFIERS else _operand(op, v, path, lists) for op, v in matcher.items()}


_RESOLVED = (str, list)  # the operands that `resolve_operand` may change


def _operand(op: str | None, operand: Any, path: tuple[str | int, ...], lists: Lists) -> Any:
    """The operand of `op` resolved (None: the field's matcher itself, written at `path`; else
    the operator's, at `path` + `op`)."""
    # (most operands: a number, a boolean, or a text not starting with `$` where a text is
    # taken, which `resolve_operand` would give back as they are, after the calls finding so)
    if not isinstance(operand, _RESOLVED):
        return operand
    if isinstance(operand, str) and operand[:1] != "$" and op != "in" and op != "not_in":
        return operand
    try:
        value = resolve_operand(op, operand, lists)
    except ListError as exc:
        raise ConditionError((*path, *((op,) if op is not None else ()), *exc.path), str(exc)) from None
    if isinstance(value, NamedList):
        return value.networks if op in ("cidr", "not_cidr") else list(value.values)
    return value


_EQUALITY = ("equals", "not_equals", "contains", "in", "not_in")  # the operators that compare values for equality


def _refuse_unequalled(matcher: Any, path: tuple[str | int, ...]) -> None:
    """ConditionError at a value that an equality would compare with and no event's value
    equals (NaN, an integer beyond 64 bits: `equality_problem`): a test that could never hold
    (or, negated, always would)."""
    places = [(matcher, path)]
    if isinstance(matcher, dict):
        places = [(matcher[op], (*path, op)) for op in _EQUALITY if op in matcher]
    for operand, where in places:
        items = enumerate(operand) if isinstance(operand, list) else [(None, operand)]
        for i, item in items:
            # (no call for the usual operand: it runs for every rule of every start, warm ones too)
            if (type(item) is float and item != item) or (type(item) is int and not INT_MIN <= item <= INT_MAX):
                why = equality_problem(item)
                if why is not None:
                    raise ConditionError(where if i is None else (*where, i), why)


def _field(key: str, written: Any, path: tuple[str | int, ...], w: _Writer) -> tuple[str, int]:
    """The expression for `field: matcher`, and its rough cost."""
    matcher = resolved_matcher(written, path, w.lists)
    if not w.checked:  # (an error: a rule set checked before has none)
        _refuse_unequalled(matcher, path)
    if isinstance(matcher, list):
        if all(isinstance(o, str) for o in matcher) and "." not in key:
            v = w.local()
            return f"(type({v} := e.get({w.const(key)})) is str and {v} in {w.const(frozenset(matcher))})", 2
        return _present_and(key, [_member(matcher, w)], w), 2
    if not isinstance(matcher, dict):
        if isinstance(matcher, str):
            # Neither a missing field (MISSING) nor any non-string equals a string.
            return f"({w.read(key)} == {w.const(matcher)})", 2
        return _present_and(key, [_equal(matcher, w)], w), 2
    exists = matcher.get("exists")
    caseless = _caseless(matcher, path)
    tests: list[tuple[str, int]] = []
    for op, operand in matcher.items():
        if op in _MODIFIERS:
            continue
        try:
            tests.append(_value_expression(key, op, operand, (*path, op), w, caseless))
        except ConditionError:
            raise
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


_MODIFIERS = ("exists", "nocase")  # keys of an operator mapping handled apart from the tests
TEXT_OPERATORS = ("equals", "in", "contains", "startswith", "endswith", "regex")
"""The operators that `nocase: true` makes ignore case."""


def _caseless(matcher: dict[str, Any], path: tuple[str | int, ...]) -> bool:
    """Whether the operator mapping says `nocase: true`; ConditionError where it would be
    meaningless (no text operator with a text to compare beside it) or misread (beside
    `not_equals` or `not_in`, which it does not change)."""
    if "nocase" not in matcher:
        return False
    negated = [op for op in ("not_equals", "not_in") if op in matcher]
    if negated:
        message = (
            f"nocase does not apply to {negated[0]}: it makes only {', '.join(TEXT_OPERATORS)} ignore case "
            f"(write not: {{{path[-1]}: {{{negated[0][4:]}: …, nocase: true}}}})"
        )
        raise ConditionError((*path, "nocase"), message)
    if not any(caseless_applies(op, operand) for op, operand in matcher.items()):
        message = f"nocase needs a text operator beside it with a text to compare ({', '.join(TEXT_OPERATORS)})"
        raise ConditionError((*path, "nocase"), message)
    return bool(matcher["nocase"])


def caseless_applies(op: str, operand: Any, lists: Lists = NO_LISTS) -> bool:
    """Whether `nocase` changes what `op` with this operand tests (a `$name` is looked up in
    `lists`): a text operator with a text."""
    if op not in TEXT_OPERATORS:
        return False
    named = lists.get(reference(operand) or "") if op == "in" else None
    if named is not None:
        operand = list(named.values)
    if op == "in":
        return isinstance(operand, list) and any(isinstance(o, str) for o in operand)
    return isinstance(operand, str)


_ORDERING = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _value_expression(
    key: str, op: str, operand: Any, path: tuple[str | int, ...], w: _Writer, caseless: bool = False
) -> tuple[str, int]:
    """`op` applied to the value `{v}` of field `key`, and its rough cost: the common cheap
    operators are written inline, the others call a compiled test; with `caseless`, the text
    operators ask the field's scan."""
    if op == "regex":
        # (Hyperscan's own check: when the set is built; none for a rule set checked before)
        problem = regex_problem(operand, hyperscan=False) if not w.checked else None
        if problem is not None:
            raise ValueError(problem)
        scanner, pattern_id = w.patterns.add(key, Pattern(operand, caseless), path)
        return _found(scanner.scan, pattern_id, w), 3
    if op in _ORDERING:
        if not _is_finite(operand):  # NaN compares false with everything: a rule that never fires
            raise ValueError(f"expected a finite number, got {_yaml_number(operand)}")
        return f"(type({{v}}) in NUMBER and {{v}} {_ORDERING[op]} {w.const(operand)})", 1
    if op in ("cidr", "not_cidr"):
        lookup = _networks(operand, path).lookup
        return f"(type({{v}}) is str and {w.const(lookup)}({{v}}) is {op == 'cidr'})", 2
    if caseless and caseless_applies(op, operand):
        return _caseless_expression(key, op, operand, path, w)
    if op in ("equals", "not_equals"):
        return (_equal(operand, w) if op == "equals" else f"(not {_equal(operand, w)})"), 1
    if op in ("in", "not_in"):
        return (_member(operand, w) if op == "in" else f"(not {_member(operand, w)})"), 1
    if op in ("startswith", "endswith"):
        return f"(type({{v}}) is str and {{v}}.{op}({w.const(operand)}))", 2
    if op == "contains" and isinstance(operand, str):
        # A substring of a text, or an item of a list (which only a text equals).
        return f"(type({{v}}) in TEXT_OR_LIST and {w.const(operand)} in {{v}})", 2
    if op == "contains":
        return f"{w.const(_contains(operand))}({{v}})", 2
    raise AssertionError(f"operator {op!r} passed the schema but is unknown")


def _equal(operand: Any, w: _Writer) -> str:
    """`equals_test(operand)` written inline over `{v}`: no call, and rules comparing with equal
    operands of one type have equal predicates (`behaviour_key`)."""
    if isinstance(operand, bool) or operand is None:
        return f"({{v}} is {w.const(operand)})"
    if isinstance(operand, str):
        return f"({{v}} == {w.const(operand)})"
    return f"(type({{v}}) in NUMBER and {{v}} == {w.const(operand)})"


def _member(options: list[Any], w: _Writer) -> str:
    """`any_of_test(options)` over `{v}`: written inline when they are all strings."""
    if all(isinstance(o, str) for o in options):
        return f"(type({{v}}) is str and {{v}} in {w.const(frozenset(options))})"
    return f"{w.const(any_of_test(options))}({{v}})"


def _networks(operand: str | list[str] | Networks, path: tuple[str | int, ...]) -> Networks:
    """The compiled networks of a `cidr` operand (one, a list, or a named list's), parsed once."""
    if isinstance(operand, Networks):
        return operand
    written = (operand,) if isinstance(operand, str) else tuple(operand)
    try:
        return networks_of(written)
    except NetworkError as exc:
        raise ConditionError(path if isinstance(operand, str) else (*path, exc.index), str(exc)) from None


def _caseless_expression(key: str, op: str, operand: Any, path: tuple[str | int, ...], w: _Writer) -> tuple[str, int]:
    """A text operator ignoring case: `equals` and `in` compare the texts' case folds
    (`casefold.fold`, which the index looks up in a table of folded values), the others are
    decided by the field's Hyperscan scan for a caseless pattern (under which the index files
    the rule). Both fold as Hyperscan does, so every operator and the index agree."""
    if op in ("equals", "in"):
        casefold.prepare()
        texts = [o for o in operand if isinstance(o, str)] if op == "in" else [operand]
        # (`fold(v) in set` holds only for a text: `fold` is applied to texts alone)
        parts = [f"(type({{v}}) is str and {w.const(fold)}({{v}}) in {w.const(frozenset(map(fold, texts)))})"]
        others = [o for o in operand if not isinstance(o, str)] if op == "in" else []
        if others:
            parts.append(f"{w.const(any_of_test(others))}({{v}})")
        return (f"({' or '.join(parts)})" if len(parts) > 1 else parts[0]), 2
    pattern = caseless_pattern(op, operand)
    if pattern is None:
        if operand:
            raise ValueError("nocase cannot compare a text holding a lone surrogate")
        return _value_expression(key, op, operand, path, w)  # the empty text has no case
    scanner, pattern_id = w.patterns.add(key, pattern, path)
    expression = _found(scanner.scan, pattern_id, w)
    if op == "contains":  # or a list holding an item equal to the text, ignoring case
        casefold.prepare()
        expression = f"({expression} or (type({{v}}) is list and {w.const(_any_item_folded(fold(operand)))}({{v}})))"
    return expression, 3


def caseless_pattern(op: str, operand: Any) -> Pattern | None:
    """The caseless pattern by which `contains`, `startswith`, `endswith` or `regex` under
    `nocase: true` is found in a text; None for the empty text or a lone surrogate."""
    if op == "regex":
        return Pattern(operand, caseless=True)
    return literal_pattern(operand, op, caseless=True)


def _any_item_folded(folded: str) -> ValueTest:
    """A list with a text item whose case fold is `folded`."""
    return lambda items: any(type(item) is str and fold(item) == folded for item in items)


def folded_field(path: str) -> str:
    """The name under which `Hints.equalities` holds the case folds a field's text must have
    (`user: {in: [Alice], nocase: true}` -> the fold of `user` is `alice`)."""
    return FOLDED + path


def folded_source(field: str) -> str | None:
    """The field path whose fold `field` names (see `folded_field`), or None."""
    return field[len(FOLDED) :] if field.startswith(FOLDED) else None


def folded_getter(path: str) -> Callable[[Event], str | None]:
    """Reads the case fold of the field's text (None if it is not a text)."""
    get = make_getter(path)
    return lambda event: fold(value) if type(value := get(event)) is str else None


FOLDED = "{casefold}"  # a prefix no field path has (braces are refused in field paths)


def negated_field(path: str) -> str:
    """The name under which `Hints.lower_bounds` holds an upper bound of a field, negated
    (`size: {lt: 5}` -> the negated `size` is at least -5)."""
    return NEGATED + path


def negated_source(field: str) -> str | None:
    """The field path whose negation `field` names (see `negated_field`), or None."""
    return field[len(NEGATED) :] if field.startswith(NEGATED) else None


NEGATED = "{negated}"


def _found(scan: Scan, pattern_id: int, w: _Writer) -> str:
    """The pattern is found in the value `{v}`, a text: one membership test in the scan's
    answer, which the index has usually asked for already."""
    return f"(type({{v}}) is str and {w.const(pattern_id)} in {w.const(scan)}({{v}}))"


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
    sub = compile_condition(cond, path, w.patterns, w.lists, checked=w.checked)
    return f"{w.const(sub.test)}(e)", sub.cost


def compile_condition(
    cond: dict[str, Any],
    path: tuple[str | int, ...] = (),
    patterns: Patterns | None = None,
    lists: Lists = NO_LISTS,
    *,
    checked: bool = False,
) -> Compiled:
    """Compile a schema-valid condition mapping into one predicate.

    Its patterns go into `patterns`, whose owner builds them before the predicate runs;
    without one, the condition gets patterns of its own, built here. `$name` operands are
    the named `lists` (see `rulesd.rules.lists`). `checked`: of a rule set that loaded without
    an error from the same files and code before, whose regexes RE2 need not be asked about.
    """
    own = _Unplaced() if patterns is None else None
    writer = _Writer(own or patterns, lists, checked=checked)  # type: ignore[arg-type]
    expression, cost = _condition(cond, path, writer)
    if own is not None:
        try:
            own.set.build()
        except PatternError as exc:
            where, message = exc.refused[0]
            raise ConditionError(where, message) from None
    return Compiled(writer.function(expression), cost)


class PatternHint(msgspec.Struct, frozen=True):
    """A pattern that must be found in a field: its scan, its id, and whether a list value
    may match instead (`contains` also finds an equal item in a list)."""

    scan: Scan
    id: int
    pattern: Pattern
    in_lists: bool = False
    weight: int = 0  # the operand's length: of two patterns, the longer is likely the rarer


class Hints(msgspec.Struct, frozen=True):
    """What must hold for a condition to match, usable to skip rules cheaply.

    `equalities`: field -> the values (strings, numbers, booleans) one of which the field
    must equal (a superset: `true` and `1` share a table slot; the predicate decides); under
    `folded_field(field)`, the case folds one of which the field's text must have.
    `patterns`: field -> patterns that must each be found in the field's text.
    `lower_bounds`: field -> a number the field must be a number at least equal to; under
    `negated_field(field)`, the negation of a number the field must be at most (`lt`, `lte`).
    `alternatives`: the hints of each branch of an `any` that must hold, one of which
    then holds too (empty when no branch hint is known for some branch).
    `exclusions`: field -> texts the field's text must not be (a `not` of an equality,
    `not_equals`, `not_in`): an event whose field is one of them cannot match (exact: a text
    equals only itself).
    `present`: fields that must be present (every field tested outside `any` and `not`, but
    for `exists: false`: a missing field meets no other test).
    """

    equalities: dict[str, frozenset[Any]]
    patterns: dict[str, tuple[PatternHint, ...]] = msgspec.field(default_factory=dict)
    lower_bounds: dict[str, float] = msgspec.field(default_factory=dict)
    alternatives: tuple[Hints, ...] = ()
    exclusions: dict[str, frozenset[str]] = msgspec.field(default_factory=dict)
    present: frozenset[str] = frozenset()

    def useful(self) -> bool:
        """Whether these hints say anything an index can use."""
        return bool(self.equalities or self.patterns or self.lower_bounds or self.exclusions)

    def without(self, field: str, hint: PatternHint) -> Hints:
        """These hints less one pattern (that a node has tested already)."""
        patterns = dict(self.patterns)
        left = tuple(p for p in patterns.pop(field, ()) if p is not hint)
        if left:
            patterns[field] = left
        return Hints(self.equalities, patterns, self.lower_bounds, exclusions=self.exclusions, present=self.present)

    def merged(self, other: Hints) -> Hints:
        """Hints that hold when both `self` and `other` hold (alternatives dropped)."""
        equalities = dict(self.equalities)
        for key, values in other.equalities.items():
            _narrow(equalities, key, values)
        patterns = dict(self.patterns)
        for key, found in other.patterns.items():
            patterns[key] = (*patterns.get(key, ()), *found)
        bounds = dict(self.lower_bounds)
        for key, bound in other.lower_bounds.items():
            bounds[key] = max(bound, bounds.get(key, bound))
        exclusions = dict(self.exclusions)
        for key, texts in other.exclusions.items():
            exclusions[key] = exclusions.get(key, frozenset()) | texts
        return Hints(equalities, patterns, bounds, exclusions=exclusions, present=self.present | other.present)


_LITERAL_OPERATORS = ("contains", "startswith", "endswith")
_LITERAL_MAX = 1000  # characters: longer literals are not worth a place in the databases


def necessary_hints(
    cond: dict[str, Any], patterns: Patterns, path: tuple[str | int, ...] = (), lists: Lists = NO_LISTS
) -> Hints:
    """Equality, pattern and bound tests that every match of `cond` must pass.

    The literals of `contains`, `startswith` and `endswith` are registered in `patterns`
    (their predicates compare in Python; the index finds them with the field's scan); a
    regex was registered when the condition was compiled, and is found again here.
    """
    equalities: dict[str, frozenset[Any]] = {}
    found: dict[str, tuple[PatternHint, ...]] = {}
    bounds: dict[str, float] = {}
    negated: list[tuple[str, frozenset[str] | None]] = []
    present: set[str] = set()
    items = conjunct_items(cond, path)  # one walk through `all` serves every part below
    for key, written, where in items:
        if key in ("any", "not"):
            continue
        value = resolved_matcher(written, where, lists)
        if type(value) is str:  # (`field: text`, the commonest test: an equality alone)
            present.add(key)
            _narrow(equalities, key, frozenset((value,)))
            continue
        if not (isinstance(value, dict) and value.get("exists") is False):
            present.add(key)
        values = _value_options(value)
        if values is not None:
            _narrow(equalities, key, values)
        folded = _folded_options(value)
        if folded is not None:
            _narrow(equalities, folded_field(key), folded)
        if isinstance(value, dict):
            for hint in _pattern_hints(key, value, where, patterns):
                found[key] = (*found.get(key, ()), hint)
            for name, bound in ((key, _lower_bound(value)), (negated_field(key), _upper_bound(value))):
                if bound is not None:
                    bounds[name] = max(bound, bounds.get(name, bound))
            # `not_equals` / `not_in` texts (beside any other operator: all must hold)
            negated += [(key, _equal_texts(value[op])) for op in ("not_equals", "not_in") if op in value]
    alternatives: tuple[Hints, ...] = ()
    for branches, where in ((value, where) for key, value, where in items if key == "any"):
        branch_hints = [necessary_hints(b, patterns, (*where, i), lists) for i, b in enumerate(branches)]
        # A field every branch of an `any` pins to values is pinned to their union.
        hints = [h.equalities for h in branch_hints]
        for key in set.intersection(*(set(h) for h in hints)) if hints else ():
            _narrow(equalities, key, frozenset().union(*(h[key] for h in hints)))
        if not alternatives and branch_hints and all(h.useful() for h in branch_hints):
            alternatives = tuple(branch_hints)
    negated += [(key, _equal_texts(resolved_matcher(w, at, lists))) for key, w, at in _negated_equalities(items)]
    exclusions: dict[str, frozenset[str]] = {}
    for key, texts in negated:
        if texts:
            exclusions[key] = exclusions.get(key, frozenset()) | texts
    return Hints(equalities, found, bounds, alternatives, exclusions, frozenset(present))


def _equal_texts(matcher: Any) -> frozenset[str] | None:
    """The texts a field's condition holds for by equality alone (a text, a list, `equals` or
    `in` on their own, exact case): a field whose text is one of them meets the condition."""
    if isinstance(matcher, dict):
        if len(matcher) != 1:  # another operator or `nocase` beside it: more than equality decides
            return None
        ((op, matcher),) = matcher.items()
        if op not in ("equals", "in") or isinstance(matcher, list) != (op == "in"):
            return None
    if isinstance(matcher, str):
        return frozenset([matcher])
    if isinstance(matcher, list):
        return frozenset(v for v in matcher if isinstance(v, str)) or None
    return None


def _pattern_hints(
    key: str, matcher: dict[str, Any], path: tuple[str | int, ...], patterns: Patterns
) -> list[PatternHint]:
    hints = []
    caseless = matcher.get("nocase") is True
    regex = matcher.get("regex")
    if isinstance(regex, str):
        pattern = Pattern(regex, caseless)
        scanner, pattern_id = patterns.add(key, pattern, (*path, "regex"))
        hints.append(PatternHint(scanner.scan, pattern_id, pattern, weight=len(regex)))
    for op in _LITERAL_OPERATORS:
        text = matcher.get(op)
        # (a caseless literal is in the scan anyway: its predicate asks for it)
        if not isinstance(text, str) or (len(text) > _LITERAL_MAX and not caseless):
            continue
        literal = literal_pattern(text, op, caseless)
        if literal is not None:
            scanner, pattern_id = patterns.add(key, literal, (*path, op))
            hints.append(PatternHint(scanner.scan, pattern_id, literal, in_lists=op == "contains", weight=len(text)))
    return hints


def _narrow(equalities: dict[str, frozenset[Any]], key: str, values: frozenset[Any]) -> None:
    known = equalities.get(key)
    equalities[key] = values if known is None else known & values


def _lower_bound(matcher: dict[str, Any]) -> float | None:
    """The largest bound of `gt`/`gte`: a number the value must reach."""
    found = [_reached(matcher[op], op == "gt") for op in ("gt", "gte") if _finite_operand(matcher.get(op))]
    return max(found) if found else None


def _upper_bound(matcher: dict[str, Any]) -> float | None:
    """The negation of the smallest bound of `lt`/`lte`: a number the negated value must reach."""
    found = [_reached(-matcher[op], op == "lt") for op in ("lt", "lte") if _finite_operand(matcher.get(op))]
    return max(found) if found else None


def _finite_operand(value: Any) -> bool:
    """A number other than an infinity or NaN (those bound nothing the index can use)."""
    return is_number(value) and _is_finite(value)


def _reached(bound: float, strict: bool) -> float:
    """What a number must be at least to be above `bound` (`strict`) or at it: above a float,
    a number is at least the next float (no number lies between two adjacent floats smaller
    than 2**53, where they are less than 1 apart; beyond, an integer can, and the bound stays
    as it is: the index then lets through a little more than needed, never less)."""
    if strict and abs(bound) < 2**53:
        return math.nextafter(bound, math.inf)
    return bound


def conjunct_items(cond: dict[str, Any], path: tuple[str | int, ...]) -> list[tuple[str, Any, tuple[str | int, ...]]]:
    """Every key of `cond` that must hold, with its value and path, found through `all`."""
    out: list[tuple[str, Any, tuple[str | int, ...]]] = []
    for key, value in cond.items():
        if key == "all":
            for i, sub in enumerate(value):
                out.extend(conjunct_items(sub, (*path, key, i)))
        else:
            out.append((key, value, (*path, key)))
    return out


def _negated_equalities(
    items: list[tuple[str, Any, tuple[str | int, ...]]],
) -> list[tuple[str, Any, tuple[str | int, ...]]]:
    """The field conditions that must each fail, among a condition's `items` (see
    `conjunct_items`): a `not` of one field's condition, and every branch of a `not` of an
    `any` that is one field's condition."""
    out: list[tuple[str, Any, tuple[str | int, ...]]] = []
    for key, value, where in items:
        if key != "not" or not isinstance(value, dict) or len(value) != 1:
            continue
        ((inner, written),) = value.items()
        if inner == "any":
            for i, branch in enumerate(written):
                if isinstance(branch, dict) and len(branch) == 1:
                    ((name, matcher),) = branch.items()
                    if name not in ("all", "any", "not"):
                        out.append((name, matcher, (*where, inner, i, name)))
        elif inner not in ("all", "not"):
            out.append((inner, written, (*where, inner)))
    return out


def _is_scalar(value: Any) -> bool:
    """A value an equality table can hold: a string, a finite number or a boolean."""
    return isinstance(value, str | bool | int) or (isinstance(value, float) and math.isfinite(value))


def _folded_options(matcher: Any) -> frozenset[str] | None:
    """The case folds one of which the field's text must have: `equals` or `in` with
    `nocase: true` and texts only (a number may match too, and would not be in the table)."""
    if not isinstance(matcher, dict) or matcher.get("nocase") is not True:
        return None
    for op in ("equals", "in"):
        operand = matcher.get(op)
        texts = [operand] if op == "equals" else operand if isinstance(operand, list) else []
        if texts and all(isinstance(t, str) for t in texts):
            return frozenset(map(fold, texts))
    return None


def _value_options(matcher: Any) -> frozenset[Any] | None:
    if _is_scalar(matcher):
        return frozenset([matcher])
    if isinstance(matcher, list) and all(_is_scalar(v) for v in matcher):
        return frozenset(matcher)
    if isinstance(matcher, dict):
        # Ignoring case, a text equals more than itself: no exact table holds what it matches.
        caseless = matcher.get("nocase") is True
        equal = matcher.get("equals")
        if "equals" in matcher and _is_scalar(equal) and not (caseless and isinstance(equal, str)):
            return frozenset([equal])
        options = matcher.get("in")
        if (
            isinstance(options, list)
            and all(_is_scalar(v) for v in options)
            and not (caseless and any(isinstance(v, str) for v in options))
        ):
            return frozenset(options)
    return None
