"""Candidate selection: which rules can possibly match an event.

Every rule's condition implies some cheap necessary tests (`Hints`): a field
must equal one of a few strings (`service: payments`), a regex must match a
field, or a number must reach a bound. The index is a small tree built on
them. At each node a rule is filed under one such test:

- equality: a dict from the field's value to a child node (the rules that need
  that value, indexed again on their remaining equalities), so an event pays
  one dict lookup per field, however many rules there are;
- regex or `contains`: one search per field for literals that each requires (a
  `timeout|refused` pattern cannot match a text holding neither word); the
  literals are joined into trie-shaped patterns (one for the exact and one for
  the case-insensitive literals), which the `re` engine rejects in one pass over
  the text each, so typical noise costs one or two C calls; where a literal
  occurs, the rules' regexes on the field are checked before they are returned;
- lower bound: the rules sorted by their bound, the smallest compared first (most
  values reach none), then the rest compared one by one or bisected;
- otherwise the rule is checked on every event that reaches the node.

A node reads as few fields as cover its rules (see `_plan`). The full predicate
still decides; the index only ever skips rules that cannot match. Each enabled
rule sits in one place, or in one per branch of its `any`; `candidates` and the
engine return such a rule once.

Each node of the tree is turned into one Python function of straight-line code
(see `_NodeWriter`), because at a few hundred nanoseconds per event the method
calls, loops and getter calls of a generic walk cost more than the lookups; a node
reached through a table of a single value is written inline into its parent's.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

from rulesd.rules.conditions import Hints, compile_regex, generated_function
from rulesd.rules.fields import Event, make_getter, shallow_keys
from rulesd.rules.literals import Literals, required_literals
from rulesd.rules.model import Rule

_BACKREF = re.compile(r"\\[1-9]|\(\?P=|\(\?P<")
_LEADING_FLAGS = re.compile(r"\A\(\?([aiLmsux]+)\)")


class RuleIndex:
    """Finds the candidate rules for an event; each enabled rule is in one place (one per
    branch of its `any`)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(r for r in rules if r.enabled)
        entries = [_Entry(r, h) for r in self.rules for h in _placements(r.hints)]
        # A rule filed once per branch of its `any` may be collected more than once.
        self.may_repeat = len(entries) > len(self.rules)
        self._root = _plan(entries, frozenset())

    def evaluator(self, decide: _Decide[T], out: list[Rule]) -> Callable[[Event, float], T | None]:
        """`evaluate(event, time)`: collects the candidates into `out`, and if there are
        any returns `decide(event, time, out)`, else None.

        Most events have no candidate at all; written into the root's own function,
        they cost one Python call instead of two.
        """
        return _NodeWriter().evaluator(self._root, decide, out)

    @functools.cached_property
    def collect(self) -> _Collect:
        """`collect(event, out)` appends the candidates for `event` to `out`.

        Written on first use: the engine runs the `evaluator`, so most indexes never need it.
        """
        return _NodeWriter().node(self._root)

    def candidates(self, event: Event) -> list[Rule]:
        """Rules that might match `event`, each once, in no particular order."""
        found: list[Rule] = []
        self.collect(event, found)
        return list(dict.fromkeys(found)) if self.may_repeat else found


class _Entry(NamedTuple):
    """A rule and the hints it is filed under (its own, or those of one `any` branch)."""

    rule: Rule
    hints: Hints


def _placements(hints: Hints) -> list[Hints]:
    """Where a rule goes: under its own hints, or, when an `any` offers a hint in each
    branch, once under each branch's hints (merged with its own)."""
    if hints.alternatives:
        return [hints.merged(alt) for alt in hints.alternatives]
    return [hints]


_Collect = Callable[[Event, list[Rule]], None]
T = TypeVar("T")
_Decide = Callable[[Event, float, list[Rule]], T]


class _Literal(NamedTuple):
    """Rules that need a field to contain one of some literals (see `_literal_test`)."""

    gates: tuple[Callable[[str], object], ...]  # searches for any literal of any rule here
    # Rules grouped by their literals and the regexes they need the field to match.
    checks: tuple[_Check, ...]
    in_lists: tuple[Rule, ...]  # `contains` rules without a regex here: a list may hold the text


class _Bound(NamedTuple):
    """Rules that need a field to be a number reaching a bound, sorted by bound."""

    bounds: tuple[float, ...]
    rules: tuple[Rule, ...]


class _Regex(NamedTuple):
    """Rules without a usable literal, whose patterns are joined into one search."""

    search: Callable[[str], object]
    rules: tuple[Rule, ...]


_Searches = tuple[Callable[[str], object], ...]  # searches that must all find a match


class _Check(NamedTuple):
    """The rules of a gate that need one set of literals: those without a regex on the field,
    and those with, grouped by their regexes, after an optional search for any of them."""

    literals: Literals
    plain: tuple[Rule, ...]
    any_regex: Callable[[str], object] | None
    by_searches: tuple[tuple[_Searches, tuple[Rule, ...]], ...]


_Table = dict[str, "_Plan | tuple[Rule, ...]"]
_Test = tuple[str, "_Literal | _Bound | _Regex"]


class _Plan(NamedTuple):
    """What one node does: its rules for every event, its tables and its tests."""

    always: tuple[Rule, ...]
    tables: list[tuple[str, _Table]]
    tests: list[_Test]


def _plan(entries: Sequence[_Entry], used: frozenset[str]) -> _Plan:
    """Index `entries` on the tests they require, ignoring the fields in `used`.

    Every field a node tests costs a read for every event that reaches it, so the node
    reads as few fields as will cover its entries (greedily, the field most entries can
    be filed under first; see `_options` for where an entry may go). An entry goes under an
    equality on a field the node reads if it has one, else under a literal, a bound or a
    regex on one.
    """
    shared = Counter(f for e in entries for f in e.hints.equalities if f not in used)
    options = [_options(entry.hints, used, shared) for entry in entries]
    read = _fields_to_read(options)
    by_field: dict[str, dict[str, list[_Entry]]] = {}
    literal_rules: dict[str, list[tuple[Rule, Literals, tuple[str, ...]]]] = {}
    bounded: dict[str, list[tuple[float, Rule]]] = {}
    combined: dict[str, list[tuple[Rule, str]]] = {}
    always: list[Rule] = []
    for entry, (equal, literals, bound, scoped) in zip(entries, options, strict=True):
        rule, hints = entry
        if fields := [f for f in equal if f in read]:
            # The field most rules share: fewer lookups per event.
            field = max(fields, key=lambda f: (shared[f], -len(hints.equalities[f]), f))
            table = by_field.setdefault(field, {})
            for value in hints.equalities[field]:
                table.setdefault(value, []).append(entry)
        elif literals is not None and literals[0] in read:
            field = literals[0]
            literal_rules.setdefault(field, []).append((rule, literals[1], hints.regexes.get(field, ())))
        elif bound is not None and bound[0] in read:
            bounded.setdefault(bound[0], []).append((bound[1], rule))
        elif scoped is not None and scoped[0] in read:
            combined.setdefault(scoped[0], []).append((rule, scoped[1]))
        else:
            always.append(rule)
    tables = [(f, {v: _child(rs, used | {f}) for v, rs in t.items()}) for f, t in by_field.items()]
    tests: list[_Test] = [
        *((f, _literal_test(members)) for f, members in literal_rules.items()),
        *((f, _bound_test(members)) for f, members in bounded.items()),
        *((f, _regex_test(members)) for f, members in combined.items()),
    ]
    return _Plan(tuple(always), tables, tests)


class _Options(NamedTuple):
    """The tests an entry could be filed under: equality fields, a literal, a bound, a regex."""

    equal: list[str]
    literals: tuple[str, Literals] | None
    bound: tuple[str, float] | None
    scoped: tuple[str, str] | None

    @property
    def fields(self) -> set[str]:
        """Every field the entry could be filed under."""
        return {*self.equal, *(t[0] for t in (self.literals, self.bound, self.scoped) if t is not None)}


def _options(hints: Hints, used: frozenset[str], shared: Counter[str]) -> _Options:
    """Where an entry may be filed. One with an equality on a field other entries here test
    too goes under an equality: that field is read anyway, and a literal that many rules
    share may be in many texts. One whose equalities are its own may go under a literal, a
    bound or a regex on a field the node reads anyway, rather than add a read of its own."""
    equal = [f for f in hints.equalities if f not in used]
    if any(shared[f] > 1 for f in equal):
        return _Options(equal, None, None, None)
    bounds = sorted(hints.lower_bounds.items())
    return _Options(equal, _required_literals(hints), bounds[0] if bounds else None, _combinable(hints))


def _fields_to_read(options: list[_Options]) -> set[str]:
    """A small set of fields under which every entry that has a test can be filed.

    Greedily the field that covers most of the entries left; of fields covering as many, the
    one that is an equality for most of them, then a bound: those tests cost a lookup or a
    comparison, a literal gate or a regex a search of the text.
    """
    left = [(o, fields) for o in options if (fields := o.fields)]
    read: set[str] = set()
    while left:
        covers: Counter[str] = Counter()
        equal: Counter[str] = Counter()
        bound: Counter[str] = Counter()
        for o, fields in left:
            covers.update(fields)
            equal.update(o.equal)
            if o.bound:
                bound[o.bound[0]] += 1
        best = max(covers, key=lambda f: (covers[f], equal[f], bound[f], f))
        read.add(best)
        left = [(o, fields) for o, fields in left if best not in fields]
    return read


def _child(entries: list[_Entry], used: frozenset[str]) -> _Plan | tuple[Rule, ...]:
    """A node for `entries`, or just the rules when no test is left to tell them apart.

    Even a single rule gets a node for its regex or bound: that test costs less than
    sending the event on to the engine and running the rule's whole predicate.
    """
    if any(
        set(e.hints.equalities) - used or e.hints.regexes or e.hints.substrings or e.hints.lower_bounds for e in entries
    ):
        plan = _plan(entries, used)
        if plan.tables or plan.tests:
            return plan  # (else no test applies after all: a call to a node would only add them)
    return tuple(e.rule for e in entries)


# ---- regexes: required literals ---------------------------------------------------------


def _required_literals(hints: Hints) -> tuple[str, Literals] | None:
    """A field and the literals one of which it must contain, the most selective found."""
    found: list[tuple[str, Literals]] = [
        (field, frozenset([(needle, False)]))
        for field, needles in sorted(hints.substrings.items())
        for needle in needles
    ]
    for field, patterns in sorted(hints.regexes.items()):
        for pattern in patterns:
            literals = required_literals(pattern)
            if literals:
                found.append((field, literals))
    return max(found, key=lambda f: _strength(f[1]), default=None)


def _strength(literals: Literals) -> int:
    return min(len(text) for text, _ in literals)


def _literal_test(members: list[tuple[Rule, Literals, tuple[str, ...]]]) -> _Literal:
    """One search for any required literal, then the exact rules whose literals occur and
    whose regexes on the field match.

    A literal only says that a regex may match (`timeout after \\d{4,}ms` needs more than
    `timeout after `); checking the regex here, for the few texts that hold the literal,
    costs less than sending the event on to the engine for a rule that then does not match.
    """
    groups: dict[Literals, dict[tuple[str, ...], list[Rule]]] = {}
    for rule, literals, patterns in members:
        groups.setdefault(literals, {}).setdefault(patterns, []).append(rule)
    gates = _gate_patterns(lit for literals in groups for lit in literals)
    checks = tuple(_check(literals, by_patterns) for literals, by_patterns in groups.items())
    return _Literal(tuple(g.search for g in gates), checks, tuple(r for check in checks for r in check.plain))


_ANY_REGEX_MIN = 3  # regex groups behind one literal set from which one search for any of them pays


def _check(literals: Literals, by_patterns: dict[tuple[str, ...], list[Rule]]) -> _Check:
    """Many rules may share a literal (`timeout after ` in `timeout after \\d+ms on host-1`,
    `… host-2`, …): one search for any of their regexes then spares a text that holds the
    literal but matches none of them a search per rule."""
    plain = tuple(r for patterns, rules in by_patterns.items() if not patterns for r in rules)
    with_regex = [(patterns, rules) for patterns, rules in by_patterns.items() if patterns]
    any_regex = None
    if len(with_regex) >= _ANY_REGEX_MIN:
        scoped = [next((s for p in patterns if (s := _scoped(p)) is not None), None) for patterns, _ in with_regex]
        if all(scoped):
            any_regex = re.compile("|".join(dict.fromkeys(s for s in scoped if s))).search
    by_searches = tuple(
        (tuple(compile_regex(p).search for p in patterns), tuple(rules)) for patterns, rules in with_regex
    )
    return _Check(literals, plain, any_regex, by_searches)


def _gate_patterns(literals: Iterable[tuple[str, bool]]) -> list[re.Pattern[str]]:
    """Patterns, each shaped as a trie, one of which matches wherever a literal occurs.

    The exact and the case-insensitive literals get a pattern each: joined, the
    `re` engine can no longer skip ahead to the characters that start an exact
    literal, and the one search costs about twice the two.
    """
    unique = {(_anchor(text), folded) for text, folded in literals}
    exact = _trie_regex(sorted(t for t, folded in unique if not folded))
    folded = _trie_regex(sorted(t for t, f in unique if f))
    patterns = [re.compile(exact)] if exact else []
    if folded:
        patterns.append(re.compile(f"(?i:{folded})"))
    return patterns


# Characters from the most to the least frequent in typical log text; any other character
# (capitals, most punctuation) counts as rarer than all of these.
_FREQUENT = " etaoinsrhldcumfpgwybvk0123456789.-/:_=xjqz"
_RANK = {ch: rank for rank, ch in enumerate(_FREQUENT)}
_ANCHOR_MIN = 4  # characters: shorter anchors would let too much text through


def _anchor(literal: str) -> str:
    """The part of `literal` the gate looks for: its end, from its rarest character on.

    The `re` engine tries a match at every character that can start one, so anchors
    that start with rare characters make it skip most of the text (a text holding the
    literal holds its end too; the exact checks after the gate still decide).
    """
    if len(literal) <= _ANCHOR_MIN:
        return literal
    start = min(range(len(literal) - _ANCHOR_MIN + 1), key=lambda i: (-_RANK.get(literal[i], len(_FREQUENT)), i))
    return literal[start:]


def _trie_regex(words: list[str]) -> str:
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}
    return _trie_node(trie) if words else ""


def _trie_node(node: dict[str, Any]) -> str:
    branches = [re.escape(ch) + _trie_node(child) for ch, child in sorted(node.items()) if ch]
    if "" in node:
        # A literal ends here: any longer one with this prefix contains it, so stop.
        return ""
    if len(branches) == 1:
        return branches[0]
    return "(?:" + "|".join(branches) + ")"


# ---- numbers: lower bounds --------------------------------------------------------------


def _bound_test(members: list[tuple[float, Rule]]) -> _Bound:
    """Rules whose bound the event's number reaches, sorted for a bisection."""
    members.sort(key=lambda m: m[0])
    return _Bound(tuple(b for b, _ in members), tuple(r for _, r in members))


# ---- regexes without a usable literal ---------------------------------------------------


def _combinable(hints: Hints) -> tuple[str, str] | None:
    """A (field, pattern) whose match the rule requires, if it can join a combined regex."""
    for field, patterns in sorted(hints.regexes.items()):
        for pattern in patterns:
            scoped = _scoped(pattern)
            if scoped is not None:
                return field, scoped
    return None


def _scoped(pattern: str) -> str | None:
    """`pattern` as a self-contained alternative, or None where joining would change it."""
    if _BACKREF.search(pattern):
        return None  # group numbers and names would clash once joined
    flags = _LEADING_FLAGS.match(pattern)
    body = f"(?{flags.group(1)}:{pattern[flags.end() :]})" if flags else f"(?:{pattern})"
    try:
        re.compile(body)
    except re.error:
        return None
    return body


def _regex_test(members: list[tuple[Rule, str]]) -> _Regex:
    search = re.compile("|".join(dict.fromkeys(p for _, p in members))).search
    return _Regex(search, tuple(r for r, _ in members))


# ---- code generation --------------------------------------------------------------------

_SHORT_BOUNDS = 4  # up to this many bounds are compared one by one, not bisected
_INLINE_DEPTH = 8  # nodes written inline within one another in one function, at most


class _NodeWriter:
    """Writes the function for one node: straight-line code, no loops over its parts.

    Rule files are data, so nothing from them is ever written into the source:
    field names, values, tables, patterns and rules are bound to generated names
    (`C0`, `C1`, ...) in the function's globals, and the source holds only those
    names and fixed code (see `generated_function`).
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {"bisect_right": bisect.bisect_right}
        self.locals: dict[str, str] = {}  # field -> the local holding its value
        self.base = 0  # indentation of the node being written (inlined nodes sit deeper)

    def const(self, value: Any) -> str:
        """A generated name bound to `value`."""
        name = f"C{len(self.names) - 1}"
        self.names[name] = value
        return name

    def emit(self, depth: int, line: str) -> None:
        """Add a line of source, indented `depth` levels."""
        self.lines.append("    " * (self.base + depth) + line)

    def node(self, plan: _Plan) -> _Collect:
        """The collect function of a node."""
        self.lines.append("def run(event, out):")
        self.body(plan)
        collect: _Collect = self.function()
        return collect

    def evaluator(self, plan: _Plan, decide: _Decide[T], out: list[Rule]) -> Callable[[Event, float], T | None]:
        """The root's function fused with the engine's step (see `RuleIndex.evaluator`)."""
        self.lines.append("def run(event, time):")
        self.emit(1, f"out = {self.const(out)}")
        self.body(plan)
        self.emit(1, "if out:")
        self.emit(2, f"return {self.const(decide)}(event, time, out)")
        self.emit(1, "return None")
        evaluate: Callable[[Event, float], T | None] = self.function()
        return evaluate

    def function(self) -> Any:
        """The function written so far, with the generated names bound."""
        if len(self.lines) == 1:
            self.emit(1, "pass")
        return generated_function("\n".join(self.lines), self.names)

    def body(self, plan: _Plan) -> None:
        """The node's tests, in the order its rules, tables and tests were planned."""
        always, tables, tests = plan
        if always:
            self.add_rules(1, always)
        for field, table in tables:
            self.table(self.read(field), table)
        for field, test in tests:
            if isinstance(test, _Bound):
                self.bound(field, test)
                continue
            value = self.read(field)
            if isinstance(test, _Literal):
                self.literal(value, test)
            else:
                self.emit(1, f"if type({value}) is str and {self.const(test.search)}({value}) is not None:")
                self.add_rules(2, test.rules)

    def read(self, field: str) -> str:
        """The local holding the event's value of `field`, read once per node.

        A missing field reads as None or MISSING, neither of which any test accepts.
        """
        if field in self.locals:
            return self.locals[field]
        value = self.locals[field] = f"v{len(self.locals)}"
        match shallow_keys(field):
            case (key,):
                self.emit(1, f"{value} = event.get({self.const(key)})")
            case (outer, inner):
                self.emit(1, f"{value} = event.get({self.const(outer)})")
                self.emit(1, f"{value} = {value}.get({self.const(inner)}) if type({value}) is dict else None")
            case _:
                self.emit(1, f"{value} = {self.const(make_getter(field))}(event)")
        return value

    def add_rules(self, depth: int, rules: tuple[Rule, ...]) -> None:
        """Code that appends `rules` to the candidates."""
        if len(rules) == 1:
            self.emit(depth, f"out.append({self.const(rules[0])})")
        else:
            self.emit(depth, f"out.extend({self.const(rules)})")

    def table(self, value: str, table: _Table) -> None:
        """One dict lookup: the hit is either the rules or a child node's function.

        A table of one value is a comparison instead, with its child node written inline,
        so that a chain such as `service: api` -> `type: http_access` -> a bound costs one
        call, not three.
        """
        if len(table) == 1 and self.base < _INLINE_DEPTH:
            ((key, only),) = table.items()
            self.emit(1, f"if {value} == {self.const(key)}:")
            if isinstance(only, _Plan):
                self.inline(only)
            else:
                self.add_rules(2, only)
            return
        lookup = {k: _NodeWriter().node(hit) if isinstance(hit, _Plan) else hit for k, hit in table.items()}
        # The keys are strings, which no other JSON value equals; only a list or an
        # object cannot be looked up, rare enough to pay for an exception instead of a
        # type check on every event.
        self.emit(1, "try:")
        self.emit(2, f"hit = {self.const(lookup)}.get({value})")
        self.emit(1, "except TypeError:")
        self.emit(2, "hit = None")
        self.emit(1, "if hit is not None:")
        kinds = {type(hit) is tuple for hit in lookup.values()}
        if kinds == {True}:
            self.emit(2, "out.extend(hit)")
        elif kinds == {False}:
            self.emit(2, "hit(event, out)")
        else:
            self.emit(2, "if type(hit) is tuple:")
            self.emit(3, "out.extend(hit)")
            self.emit(2, "else:")
            self.emit(3, "hit(event, out)")

    def inline(self, plan: _Plan) -> None:
        """`plan`'s code one level deeper; the fields it reads are known only inside it."""
        base, known = self.base, dict(self.locals)
        self.base += 1
        self.body(plan)
        self.base, self.locals = base, known

    def literal(self, value: str, test: _Literal) -> None:
        """The gate searches, then each group's literals checked with `in` or a search."""
        self.emit(1, f"if (kind := type({value})) is str:")
        gates = [f"{self.const(gate)}({value}) is not None" for gate in test.gates]
        self.emit(2, f"if {' or '.join(gates)}:")
        for check in test.checks:
            found = [
                f"{self.const(re.compile(re.escape(text), re.IGNORECASE).search)}({value}) is not None"
                if folded
                else f"{self.const(text)} in {value}"
                for text, folded in sorted(check.literals, key=lambda lit: lit[1])
            ]
            self.emit(3, f"if {' or '.join(found)}:")
            if check.plain:
                self.add_rules(4, check.plain)
            depth = 4
            if check.any_regex is not None:
                self.emit(4, f"if {self.const(check.any_regex)}({value}) is not None:")
                depth = 5
            for searches, rules in check.by_searches:
                matched = " and ".join(f"{self.const(search)}({value}) is not None" for search in searches)
                self.emit(depth, f"if {matched}:")
                self.add_rules(depth + 1, rules)
        if test.in_lists:  # `contains` also looks for an equal item in a list; a regex never matches one
            self.emit(1, "elif kind is list:")
            self.add_rules(2, test.in_lists)

    def bound(self, field: str, test: _Bound) -> None:
        """The rules whose bound the field's number reaches.

        Most values reach no bound, so the smallest is compared first and the rest only
        after it: one comparison for a typical event. A missing field reads as -inf; any
        other value that is not a number (a null, a text) makes the comparison raise
        TypeError, which skips the test (a getter for a deeper path reads it as -inf).
        Booleans compare as numbers here: the full predicate, which rejects them, still
        decides.
        """
        number = self.number(field)
        if number is None:  # a deep path: read it with its getter, then check the type
            value, number = self.read(field), f"n{len(self.lines)}"
            self.emit(
                1, f"{number} = {value} if type({value}) is int or type({value}) is float else {self.const(_NO_NUMBER)}"
            )
        distinct = sorted(set(test.bounds))
        # How many rules (sorted by bound) each distinct bound lets in.
        reached = [bisect.bisect_right(test.bounds, b) for b in distinct]
        self.emit(1, "try:")
        if len(distinct) <= _SHORT_BOUNDS:
            self._nested_bounds(2, number, [_exact_float(b) for b in distinct], reached, test.rules)
        else:
            self.emit(2, f"if {number} >= {self.const(_exact_float(distinct[0]))}:")
            self.emit(3, f"out.extend({self.const(test.rules)}[:bisect_right({self.const(test.bounds)}, {number})])")
        self.emit(1, "except TypeError:")
        self.emit(2, "pass")

    def _nested_bounds(
        self, depth: int, number: str, bounds: list[float], reached: list[int], rules: tuple[Rule, ...]
    ) -> None:
        self.emit(depth, f"if {number} >= {self.const(bounds[0])}:")
        if len(bounds) == 1:
            self.add_rules(depth + 1, rules[: reached[0]])
            return
        self._nested_bounds(depth + 1, number, bounds[1:], reached[1:], rules)
        self.emit(depth + 1, "else:")
        self.add_rules(depth + 2, rules[: reached[0]])

    def number(self, field: str) -> str | None:
        """A local holding the field's value, -inf if it is missing; None for deep paths."""
        keys = shallow_keys(field)
        if keys is None:
            return None
        local = f"n{len(self.lines)}"
        missing = self.const(_NO_NUMBER)
        if len(keys) == 1:
            self.emit(1, f"{local} = event.get({self.const(keys[0])}, {missing})")
        else:
            self.emit(1, f"{local} = event.get({self.const(keys[0])})")
            self.emit(
                1, f"{local} = {local}.get({self.const(keys[1])}, {missing}) if type({local}) is dict else {missing}"
            )
        return local


_NO_NUMBER = float("-inf")  # what a missing number reads as: it reaches no bound


def _exact_float(bound: float) -> float:
    """The bound as a float if that changes nothing (so float values compare quickly)."""
    try:
        return float(bound) if float(bound) == bound else bound
    except OverflowError:
        return bound
