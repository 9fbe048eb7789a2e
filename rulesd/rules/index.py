"""Candidate selection: which rules can possibly match an event.

Every rule's condition implies some cheap necessary tests (`Hints`): a field
must equal one of a few values (`service: payments`), a text pattern (a regex, or
the literal of `contains`, `startswith` or `endswith`) must be found in a field,
or a number must reach a bound. The index is a small tree built on them. At each
node a rule is filed under one such test:

- equality: a dict from the field's value to a child node (the rules that need
  that value, indexed again on their remaining equalities), so an event pays
  one dict lookup per field, however many rules there are; an equality ignoring
  case (`nocase`) is one on the case fold of the field's text (`folded_field`);
- pattern: the field's Hyperscan database (see `patterns`) scans the value once
  for every pattern of every rule on that field, and the rules filed under the
  patterns found become candidates; the rules' predicates ask the same scan (the
  answer for the event's value is remembered), so the index and the predicates
  always agree, and a value is scanned at most once per event;
- lower bound: the rules sorted by their bound, the smallest compared first (most
  values reach none), then the rest compared one by one or bisected; an upper bound
  (`lt`, `lte`) is a lower bound of the negated number (`negated_field`);
- otherwise the rule is a candidate for every event that reaches the node; at the
  root, where that is every event, it is screened by its own predicate instead (see
  `_Plan.screened`).

A node reads as few fields as cover its rules (see `_plan`). The full predicate
still decides; the index only ever skips rules that cannot match. Each enabled
rule sits in one place, or in one per branch of its `any`; `candidates` and the
engine return such a rule once.

Each node of the tree is turned into one Python function of straight-line code
(see `_NodeWriter`), because at a few hundred nanoseconds per event the method
calls, loops and getter calls of a generic walk cost more than the lookups; a node
reached through a table of a single value is written inline into its parent's, and
a node whose only test is a bound is compared by its table's code (`_BoundHit`).
"""

from __future__ import annotations

import bisect
import functools
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from types import FunctionType
from typing import Any, NamedTuple, TypeVar, cast

from rulesd.rules.casefold import fold
from rulesd.rules.conditions import (
    Hints,
    PatternHint,
    behaviour_key,
    folded_getter,
    folded_source,
    generated_function,
    negated_source,
)
from rulesd.rules.fields import MISSING, Event, is_index, make_getter, make_walker, shallow_keys, split_path
from rulesd.rules.model import Rule
from rulesd.rules.patterns import BlockScan, Scan, block_scan_of, memo_of, prime_of
from rulesd.rules.view import INT_MAX, INT_MIN, INVALID, KeyOrder, Layout, NoStruct, Viewer, WholeLine


class RuleIndex:
    """Finds the candidate rules for an event; each enabled rule is in one place (one per
    branch of its `any`), or stood for by a rule whose predicate answers alike (`alike`)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(r for r in rules if r.enabled)
        self.alike = _alike(self.rules)
        stood_for = {r for same in self.alike.values() for r in same[1:]}
        filed = [r for r in self.rules if r not in stood_for]
        entries = [_Entry(r, h) for r in filed for h in _placements(r.hints)]
        # A rule filed once per branch of its `any` may be collected more than once.
        self.may_repeat = len(entries) > len(filed)
        root = _plan(entries, frozenset())
        self._root = root._replace(always=(), screened=root.always)
        self._evaluator: Any = None  # (written once, see `evaluator`)

    def evaluator(self, decide: _Decide[T], out: list[Rule]) -> Callable[[Event, float], T | None]:
        """`evaluate(event, time)`: collects the candidates into `out`, and if there are
        any returns `decide(event, time, out)`, else None.

        Most events have no candidate at all; written into the root's own function,
        they cost one Python call instead of two. It is written once: each engine of the
        index (`rulesd test`'s, one a test) binds its own `decide` and `out` to a copy.
        """
        written = self._evaluator
        if written is None:
            written = self._evaluator = _NodeWriter().evaluator(self._root)
        names = {**written.__globals__, "OUT": out, "DECIDE": decide}
        # A code object of its own for each copy: the interpreter specialises a global's lookup
        # per code object, for one globals dict, and engines taking turns would undo each
        # other's (two copies called in turn: ~0.2 against ~0.3 µs a call sharing one).
        return cast(Callable[[Event, float], "T | None"], FunctionType(written.__code__.replace(), names))

    def viewer(
        self,
        decide: _Decide[T],
        out: list[Rule],
        parse: Callable[[bytes], Any],
        whole: Callable[[bytes, float], Any],
        stamp: tuple[str, str] | None = None,
        *,
        blocks: bool,
        keys: KeyOrder | None = None,
    ) -> Viewer | None:
        """The `evaluator` for JSON lines, reading views of them (see `rulesd.rules.view`):
        only an event with candidates is parsed whole, by `parse`, for `decide`; `whole` judges
        a line its view cannot. None if the root screens rules by their predicates, which need
        the whole event anyway. `stamp` is a top-level field and the text `parse` sets in every
        event, over the line's own (a named source's `source_name`). `blocks`: the viewer
        judges a block of lines per call (`Viewer.evaluate_block`), else one line per call
        (`Viewer.evaluate`: a rule set with timers takes what they fire between lines). `keys`:
        the order the lines hold their keys in, which the view's fields follow (see `key_order`)."""
        if self._root.screened:
            return None
        layout = Layout()
        writer = _NodeWriter(layout)
        evaluate = writer.viewed(self._root, decide, out, parse, whole, blocks=blocks)
        if blocks:
            return layout.viewer(None, evaluate, whole, stamp, keys)
        return layout.viewer(evaluate, None, whole, stamp, keys)

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
        if self.may_repeat:
            found = list(dict.fromkeys(found))
        alike = self.alike
        return [r for rule in found for r in alike.get(rule, (rule,))] if alike else found


def _alike(rules: Sequence[Rule]) -> dict[Rule, tuple[Rule, ...]]:
    """The rules whose predicates answer alike (`behaviour_key`), by the first of them, which
    alone is filed in the index and stands for the others: a rule set drawn from a few
    variants (`uri: {startswith: /wp-login}` beside `not: {remote_addr: …}` in dozens of
    rules) has its shared condition evaluated once per event, not once per rule."""
    by_key: dict[Any, list[Rule]] = {}
    for rule in rules:
        by_key.setdefault(behaviour_key(rule.match), []).append(rule)
    return {same[0]: tuple(same) for same in by_key.values() if len(same) > 1}


# The index's tuples are made by `NamedTuple`'s functional form, their fields' types given as
# objects: the class form, whose annotations are text here (`from __future__ import
# annotations`), has typing compile each into a ForwardRef at every start (~0.14 M
# instructions a field); so they have no defaults.

# A rule and the hints it is filed under (its own, or those of one `any` branch).
_Entry = NamedTuple("_Entry", [("rule", Rule), ("hints", Hints)])  # noqa: UP014


def _placements(hints: Hints) -> list[Hints]:
    """Where a rule goes: under its own hints, or, when an `any` offers a hint in each
    branch, once under each branch's hints (merged with its own)."""
    if hints.alternatives:
        return [hints.merged(alt) for alt in hints.alternatives]
    return [hints]


# A node's function: `collect(event, out, *found)`, `found` being what its parent's scans
# found (see `_NodeWriter.child`).
_Collect = Callable[..., None]
T = TypeVar("T")
_Decide = Callable[[Event, float, list[Rule]], T]


# Rules that need a pattern found in a field: the field's scan, and by pattern id the rules
# filed under it or a node indexing them on what else they need; `in_lists`, the `contains`
# rules (a list holding an equal item matches too).
_Scan = NamedTuple(  # noqa: UP014
    "_Scan", [("scan", Scan), ("by_id", dict[int, "_Plan | tuple[Rule, ...]"]), ("in_lists", tuple[Rule, ...])]
)


# Rules that need a field to be a number reaching a bound, sorted by bound.
_Bound = NamedTuple("_Bound", [("bounds", tuple[float, ...]), ("rules", tuple[Rule, ...])])  # noqa: UP014


# Rules that need a field not to be certain texts (and nothing the index can look up): by each
# of those texts, the rules it leaves; any other value leaves them all.
_Exclude = NamedTuple("_Exclude", [("left", dict[str, tuple[Rule, ...]]), ("every", tuple[Rule, ...])])  # noqa: UP014


_Table = dict[Any, "_Plan | tuple[Rule, ...]"]
_Test = tuple[str, "_Scan | _Bound | _Exclude"]


# What one node does: its rules for every event, its tables and its tests.
#
# `screened` are the root's rules with no test to be filed under (`error.code: {exists:
# true}`, a `cidr` alone, `not_equals` of a number, an `any` with such a branch): each is
# a candidate only for an event its own predicate accepts. Sent on with every event, one
# such rule would make the engine read every event's time and run its step: +50% CPU at
# 100 rules. The predicate runs again in the engine's step, but only for an event it
# matched, which few are. (Empty but at the root.)
_Plan = NamedTuple(  # noqa: UP014
    "_Plan",
    [
        ("always", tuple[Rule, ...]),
        ("tables", list[tuple[str, _Table]]),
        ("tests", list[_Test]),
        ("screened", tuple[Rule, ...]),
    ],
)


def _plan(entries: Sequence[_Entry], used: frozenset[str]) -> _Plan:
    """Index `entries` on the tests they require, ignoring the fields in `used`.

    Every field a node tests costs a read for every event that reaches it, so the node
    reads as few fields as will cover its entries (greedily, the field most entries can
    be filed under first; see `_options` for where an entry may go). An entry goes under an
    equality on a field the node reads if it has one, else under a pattern or a bound on one:
    of its patterns on fields the node scans, the longest (a rough measure of how rarely it is
    found; its node indexes the entry on the others, see `_scan_test`).
    """
    shared: dict[str, int] = {}
    for entry in entries:
        for f in entry.hints.equalities:
            if f not in used:
                shared[f] = shared.get(f, 0) + 1
    options = [_options(entry.hints, used, shared) for entry in entries]
    read = _fields_to_read(options)
    by_field: dict[str, dict[Any, list[_Entry]]] = {}
    scanned: dict[str, list[tuple[PatternHint, _Entry]]] = {}
    bounded: dict[str, list[tuple[float, Rule]]] = {}
    excluded: list[_Entry] = []
    always: list[Rule] = []
    for entry, (equal, patterns, bound, _) in zip(entries, options, strict=True):
        rule, hints = entry
        if fields := [f for f in equal if f in read]:
            # The field most rules share: fewer lookups per event.
            field = (
                fields[0] if len(fields) == 1 else max(fields, key=lambda f: (shared[f], -len(hints.equalities[f]), f))
            )
            table = by_field.setdefault(field, {})
            values = hints.equalities[field]
            for value in values if len(values) == 1 else _in_order(values):
                table.setdefault(value, []).append(entry)
            continue
        pattern = (
            max((p for p in patterns if p[0] in read), key=lambda p: p[1].weight, default=None) if patterns else None
        )
        if pattern is not None:
            field, hint = pattern
            scanned.setdefault(field, []).append((hint, _Entry(rule, hints.without(field, hint))))
        elif bound is not None and bound[0] in read:
            bounded.setdefault(bound[0], []).append((bound[1], rule))
        elif hints.exclusions:
            excluded.append(entry)
        else:
            always.append(rule)
    tables = [(f, _tables_children(t, used | {f})) for f, t in by_field.items()]
    tests: list[_Test] = [
        *((f, _scan_test(members, used)) for f, members in scanned.items()),
        *((f, _bound_test(members)) for f, members in bounded.items()),
        *(_exclusion_tests(excluded) if excluded else ()),
    ]
    return _Plan(tuple(always), tables, tests, ())


def _in_order(values: frozenset[Any]) -> list[Any]:
    """A rule's values of a field in an order that is the same in every process. A table's
    order is the order of the code written for it, and that code's text keys the code kept in
    the rule cache (see `generated_code`); a set's order is its process's hash seed's: a later
    replay found up to 152 of the ~220 functions of the estate benchmark's index at 1,000 rules
    written otherwise, and compiled them again. (Across rules a table keeps the rules' order,
    so that an edited value leaves the code's text as it was.)"""
    try:
        return sorted(values)
    except TypeError:  # (texts beside numbers or booleans: `_is_scalar` lets nothing else in)
        return sorted(values, key=lambda v: (type(v).__name__, repr(v)))


def _tables_children(table: dict[Any, list[_Entry]], used: frozenset[str]) -> _Table:
    """The nodes beneath a table, by value: each value's entries indexed on what is left (`used`
    made once per table, not once per value)."""
    return {value: _child(entries, used) for value, entries in table.items()}


def _exclusion_tests(entries: list[_Entry]) -> list[tuple[str, _Exclude]]:
    """Rules with nothing to look up but a `not` of an equality (`not: {level: [debug, info]}`),
    which would otherwise be sent on to the engine with every event: each under one field it
    must not equal (the field most of them share), so an event whose field is one of those texts
    skips them for one lookup."""
    shared = Counter(f for e in entries for f in e.hints.exclusions)
    by_field: dict[str, list[_Entry]] = {}
    for entry in entries:
        field = max(entry.hints.exclusions, key=lambda f: (shared[f], len(entry.hints.exclusions[f]), f))
        by_field.setdefault(field, []).append(entry)
    tests = []
    for field, members in by_field.items():
        texts = {t for e in members for t in e.hints.exclusions[field]}
        left = {t: tuple(e.rule for e in members if t not in e.hints.exclusions[field]) for t in texts}
        tests.append((field, _Exclude(left, tuple(e.rule for e in members))))
    return tests


# The tests an entry could be filed under (equality fields, patterns, a bound), and the fields
# of them that decide which fields the node reads (`_Kind`). Plain tuples: they are made once
# per entry per node, ~3,900 times for an index of 1,000 rules, at every start.
_Kind = tuple[tuple[str, ...], tuple[str, ...], "str | None"]  # equality, pattern, bound fields
_Options = tuple[tuple[str, ...], list[tuple[str, PatternHint]], "tuple[str, float] | None", _Kind]


def _options(hints: Hints, used: frozenset[str], shared: dict[str, int]) -> _Options:
    """Where an entry may be filed. One with an equality on a field other entries here test
    too goes under an equality: that field is read anyway, and a pattern that many rules
    share may be in many texts. One whose equalities are its own may go under a pattern or
    a bound on a field the node reads anyway, rather than add a read of its own."""
    equal = tuple([f for f in hints.equalities if f not in used]) if used else tuple(hints.equalities)
    for f in equal:
        if shared[f] > 1:
            return equal, [], None, (equal, (), None)
    bound = min(hints.lower_bounds.items()) if hints.lower_bounds else None  # that of the first field by name
    found = sorted(hints.patterns.items())
    patterns = [(field, p) for field, hints_found in found for p in hints_found]
    kind = (equal, tuple(field for field, hints_found in found if hints_found), bound[0] if bound else None)
    return equal, patterns, bound, kind


def _fields_to_read(options: list[_Options]) -> set[str]:
    """A small set of fields under which every entry that has a test can be filed.

    Greedily the field that covers most of the entries left; of fields covering as many, the
    one that is an equality for most of them, then a bound: those tests cost a lookup or a
    comparison, a pattern a scan of the text. Entries that offer the same fields are counted
    as one kind, weighed by their number (the root's ~1,000 entries of 1,000 rules are 4 to 11
    kinds): the choice is the same, and each round walks the kinds, not the entries.
    """
    weights: dict[_Kind, int] = {}
    for *_, kind in options:
        weights[kind] = weights.get(kind, 0) + 1
    left = []
    for kind, weight in weights.items():
        equal, patterns, bound = kind
        fields = {*equal, *patterns}
        if bound is not None:
            fields.add(bound)
        if fields:
            left.append((fields, equal, bound, weight))
    read: set[str] = set()
    while left:
        covers: dict[str, int] = {}
        equals: dict[str, int] = {}
        bounds: dict[str, int] = {}
        for fields, equal, bound, weight in left:
            for f in fields:
                covers[f] = covers.get(f, 0) + weight
            for f in equal:
                equals[f] = equals.get(f, 0) + weight
            if bound is not None:
                bounds[bound] = bounds.get(bound, 0) + weight
        best = max(covers, key=lambda f: (covers[f], equals.get(f, 0), bounds.get(f, 0), f))
        read.add(best)
        left = [kind for kind in left if best not in kind[0]]
    return read


def _child(entries: list[_Entry], used: frozenset[str]) -> _Plan | tuple[Rule, ...]:
    """A node for `entries`, or just the rules when no test is left to tell them apart.

    Even a single rule gets a node for its pattern or bound: that test costs less than
    sending the event on to the engine and running the rule's whole predicate.
    """
    for _, hints in entries:
        if hints.patterns or hints.lower_bounds or hints.exclusions or not used.issuperset(hints.equalities):
            plan = _plan(entries, used)
            if plan.tables or plan.tests:
                return plan  # (else no test applies after all: a call to a node would only add them)
            break
    return tuple([e.rule for e in entries])


def _scan_test(members: list[tuple[PatternHint, _Entry]], used: frozenset[str]) -> _Scan:
    """The entries by the id of the pattern each is filed under (all of a field share its
    scan), each id's indexed again on what else they need.

    Rules that need more patterns (`Image` ends with `\\cmd.exe` and `CommandLine` contains
    ` /c `) are indexed on the next one under the first: a common pattern found alone
    (`\\cmd.exe`) then costs a membership test in a scan the event pays at most once per
    field, and sends no rule on to the engine.
    """
    scans = {hint.scan for hint, _ in members}
    assert len(scans) == 1, "one field, one scanner"
    by_id: dict[int, list[_Entry]] = {}
    for hint, entry in members:
        by_id.setdefault(hint.id, []).append(entry)
    in_lists = tuple(entry.rule for hint, entry in members if hint.in_lists)
    return _Scan(scans.pop(), {i: _child(entries, used) for i, entries in by_id.items()}, in_lists)


def _bound_test(members: list[tuple[float, Rule]]) -> _Bound:
    """Rules whose bound the event's number reaches, sorted for a bisection."""
    members.sort(key=lambda m: m[0])
    return _Bound(tuple(b for b, _ in members), tuple(r for _, r in members))


# A table's hit standing for a node whose only test is one bound (see `_lone_bound`), where
# every node of the table is such a node on one field: the table's code compares the number
# itself, a call less for each event it sends there (at 1,000 rules, a rule's equalities often
# leave a latency or status bound alone). `low`: the smallest bound, as `_exact_float` gives it.
_BoundHit = NamedTuple("_BoundHit", [("low", float), ("bounds", tuple[float, ...]), ("rules", tuple[Rule, ...])])  # noqa: UP014


def _lone_bound(plan: _Plan) -> str | None:
    """The field of the plan's one test if that is a bound and the plan does nothing else."""
    if plan.always or plan.tables or plan.screened or len(plan.tests) != 1:
        return None
    ((field, test),) = plan.tests
    return field if isinstance(test, _Bound) else None


def _lone_bound_field(hits: Iterable[_Plan | tuple[Rule, ...]]) -> str | None:
    """The field that every node of a table bounds alone, if there is one. A node of any other
    kind left beside them would pay a type test on each of its calls for what the others save
    (ops at 100 rules: +0.7% instructions, with one table of nodes mostly called)."""
    fields = {_lone_bound(hit) for hit in hits if isinstance(hit, _Plan)}
    return fields.pop() if len(fields) == 1 else None


# ---- code generation --------------------------------------------------------------------

_SHORT_BOUNDS = 4  # up to this many bounds are compared one by one, not bisected
_INLINE_DEPTH = 8  # nodes written inline within one another in one function, at most
# A table of up to this many values is compared value by value (see `_NodeWriter.table`);
# 4 and 2 each counted more instructions per event than 3 on most benchmark shapes.
_CHAINED = 3


def _lone_scan(plan: _Plan) -> str | None:
    """The field of the plan's one test if that is a scan whose every pattern leads to rules
    (no node beneath it, no list to look in) and the plan does nothing else."""
    if plan.always or plan.tables or plan.screened or len(plan.tests) != 1:
        return None
    ((field, test),) = plan.tests
    if not isinstance(test, _Scan) or test.in_lists or any(isinstance(hit, _Plan) for hit in test.by_id.values()):
        return None
    return field


def _lone_scan_field(hits: Iterable[_Plan | tuple[Rule, ...]], found: dict[str, str]) -> str | None:
    """The field, scanned already (`found`), that every node among a scan's hits looks up alone
    in that scan's answer, if there is one; as for `_lone_bound_field`, a node of any other kind
    beside them keeps every node called."""
    fields = {_lone_scan(hit) for hit in hits if isinstance(hit, _Plan)}
    field = fields.pop() if len(fields) == 1 else None
    return field if field in found else None


def _arguments(found: dict[str, str]) -> str:
    """The locals holding scans' answers, as the trailing arguments of a node's call."""
    return "".join(f", {local}" for local in found.values())


class _NodeWriter:
    """Writes the function for one node: straight-line code, no loops over its parts.

    Rule files are data, so nothing from them is ever written into the source:
    field names, values, tables, patterns and rules are bound to generated names
    (`C0`, `C1`, ...) in the function's globals, and the source holds only those
    names and fixed code (see `generated_function`).
    """

    def __init__(self, layout: Layout | None = None) -> None:
        self.layout = layout  # the view's, if the event is one (else a dict)
        self.lines: list[str] = []
        self.names: dict[str, Any] = {"bisect_right": bisect.bisect_right}
        self.locals: dict[str, str] = {}  # field -> the local holding its value
        self.found: dict[str, str] = {}  # field -> the local holding the ids its scan found
        self.exact: set[str] = set()  # the locals a view's code has checked for integers beyond 64 bits
        self.base = 0  # indentation of the node being written (inlined nodes sit deeper)
        self.margin = 0  # the part of `base` that is not inlining (a view's loop and try block)
        # The lines before a block's loop that scan its views' texts of a field (`block_scanned`);
        # None where the function judges no block.
        self.block_scans: list[str] | None = None
        # field -> the local of its answer, its block scan, the local of the block's answers
        self.block_fields: dict[str, tuple[str, BlockScan, str]] = {}

    def const(self, value: Any) -> str:
        """A generated name bound to `value`."""
        name = f"C{len(self.names) - 1}"
        self.names[name] = value
        return name

    def _lookup(self, table: dict[Any, Any]) -> str:
        """A generated name bound to `table.get`: a call of it is one step fewer for the
        interpreter than a method call on the table (its `get` looked up on every call), ~36
        instructions of each lookup, which every event pays at every table it reaches."""
        return self.const(table.get)

    def emit(self, depth: int, line: str) -> None:
        """Add a line of source, indented `depth` levels."""
        self.lines.append("    " * (self.base + depth) + line)

    def node(self, plan: _Plan, found: dict[str, str] | None = None) -> _Collect:
        """The collect function of a node; `found`: the fields its parent scanned, by the local
        holding their answers, which the function takes as arguments of those names."""
        self.found = dict(found or {})
        self.lines.append(f"def run(event, out{_arguments(self.found)}):")
        self.body(plan)
        collect: _Collect = self.function()
        return collect

    def evaluator(self, plan: _Plan) -> Any:
        """The root's function fused with an engine's step (see `RuleIndex.evaluator`), the
        engine's list of candidates and its step the globals OUT and DECIDE, unbound here."""
        self.names.update(OUT=None, DECIDE=None)
        self.lines.append("def run(event, time):")
        self.emit(1, "out = OUT")
        self.body(plan)
        self.emit(1, "if out:")
        self.emit(2, "return DECIDE(event, time, out)")
        self.emit(1, "return None")
        return self.function()

    def viewed(
        self,
        plan: _Plan,
        decide: _Decide[T],
        out: list[Rule],
        parse: Callable[[bytes], Any],
        whole: Callable[[bytes, float], Any],
        *,
        blocks: bool,
    ) -> Any:
        """`evaluator`'s function for views of JSON lines (see `RuleIndex.viewer`): of a block
        of lines, the loop inside it, a Python call less per line, which most lines cost little
        more than (`Viewer.evaluate_block`; `at` is the line's index, as the body's own locals
        are v0, s0, n0, hit and i); or of one line (`Viewer.evaluate`). A block's loop takes
        each view with its index alone, and its line only where the line is parsed (a line
        without a view, or with candidates): most lines are neither."""
        self.lines.append(
            "def run(views, lines, start, time, invalid, firings):" if blocks else "def run(event, line, time):"
        )
        self.emit(1, f"out = {self.const(out)}")
        if not blocks:
            self.judge_view(1, plan, decide, parse, whole, "return", "return None", "line")
            return self.function()
        loop = len(self.lines)
        self.block_scans, self.block_fields = [], {}
        self.emit(1, "for at, event in enumerate(views, start):")
        self.emit(2, "if event is None:")
        self.emit(3, f"firing = {self.const(whole)}(lines[at - start], time)")
        self.emit(2, "else:")
        self.judge_view(3, plan, decide, parse, whole, "firing =", "continue", "lines[at - start]")
        self.emit(2, "if firing is not None:")
        self.emit(3, f"if firing is {self.const(INVALID)}:")
        self.emit(4, "invalid.append(at)")
        self.emit(3, "else:")
        self.emit(4, "firings.append((at, firing, False))")
        self.lines[loop:loop] = self.block_scans
        self.block_scans, self.block_fields = None, {}
        return self.function()

    def judge_view(
        self,
        depth: int,
        plan: _Plan,
        decide: _Decide[T],
        parse: Callable[[bytes], Any],
        whole: Callable[[bytes, float], Any],
        give: str,
        skip: str,
        line: str,
    ) -> None:
        """The index's tests on the view `event`, then what the line (the expression `line`)
        gives (`give` the firing, None or INVALID), or `skip` when it has no candidate."""
        self.emit(depth, "try:")
        tests = len(self.lines)
        self.base += depth
        self.margin = depth
        self.body(plan)
        if len(self.lines) == tests:  # no rule, so no test: the block still needs a statement
            self.emit(1, "pass")
        self.base -= depth
        self.margin = 0
        self.emit(depth, f"except {self.const(WholeLine)}:")
        self.emit(depth + 1, "out.clear()")
        self.emit(depth + 1, f"{give} {self.const(whole)}({line}, time)")
        self.emit(depth, "else:")
        self.emit(depth + 1, "if not out:")
        self.emit(depth + 2, skip)
        for field, (scanned, block, answers) in self.block_fields.items():  # (see `block_scanned`)
            self.emit(depth + 1, f"if {answers} is not None:")
            self.emit(depth + 2, f"{self.const(prime_of(block))}({self.locals[field]}, {scanned})")
        self.emit(depth + 1, "try:")
        self.emit(depth + 2, f"parsed = {self.const(parse)}({line})")
        self.emit(depth + 1, "except ValueError:")  # a field no rule reads holds what JSON cannot
        self.emit(depth + 2, "out.clear()")
        self.emit(depth + 2, f"{give} {self.const(INVALID)}")
        self.emit(depth + 1, "else:")
        self.emit(depth + 2, f"{give} {self.const(decide)}(parsed, time, out)")

    def function(self) -> Any:
        """The function written so far, with the generated names bound."""
        if len(self.lines) == 1:
            self.emit(1, "pass")
        return generated_function("\n".join(self.lines), self.names)

    def body(self, plan: _Plan) -> None:
        """The node's tests, in the order its rules, tables and tests were planned.

        The fields it looks up and scans are read, and scanned, first: every event that
        reaches the node pays for them anyway, and a node written inline further down then
        finds them done (a root that scans `message` for regex-only rules and has
        `env: prod` -> `message` contains `panic` beneath it scans once, not twice).
        """
        always, tables, tests, screened = plan
        for field, _ in tables:
            self.read(field)
        for field, test in tests:
            if isinstance(test, _Scan):
                self.scanned(field, test.scan)
        if always:
            self.add_rules(1, always)
        if screened:
            self.screen(screened)
        for field, table in tables:
            self.table(self.read(field), table)
        for field, test in tests:
            if isinstance(test, _Bound):
                self.bound(field, test)
            elif isinstance(test, _Exclude):
                self.exclude(field, test)
            else:
                self.scan(field, test)

    def screen(self, rules: tuple[Rule, ...]) -> None:
        """Each rule if its predicate holds; those that need a field present (most, see
        `Hints.present`) are grouped under one such field, the one most of them need, so that
        an event without it (`error.code: {exists: true}`, a `cidr` on a field only some events
        carry) costs one test for the group instead of a call per rule."""
        assert self.layout is None, "a view has no predicates to screen by"
        shared = Counter(f for r in rules for f in r.hints.present)
        by_field: dict[str | None, list[Rule]] = {}
        for rule in rules:
            needed = max(rule.hints.present, key=lambda f: (shared[f], f), default=None)
            by_field.setdefault(needed, []).append(rule)
        for needed, members in by_field.items():
            depth = 1
            if needed is not None:
                self.emit(1, f"if {self.present(needed)}:")
                depth = 2
            for rule in members:
                self.emit(depth, f"if {self.const(rule.match)}(event):")
                self.add_rules(depth + 1, (rule,))

    def present(self, field: str) -> str:
        """An expression: the event has the field (with any value, null included)."""
        match shallow_keys(field):
            case (key,):
                return f"{self.const(key)} in event"
            case (outer, inner):
                return f"(type(p := event.get({self.const(outer)})) is dict and {self.const(inner)} in p)"
        return f"{self.const(make_getter(field))}(event) is not {self.const(MISSING)}"

    def scanned(self, field: str, scan: Scan) -> str:
        """The local holding the ids of the patterns found in the field (None if not a text)."""
        if field not in self.found:
            value = self.read(field)
            found = self.found[field] = f"s{len(self.found)}"
            block = self.block_scanned(field, scan, found)
            # The block's answer; else the text's answer remembered, else its scan.
            memo = memo_of(scan)
            first = "if"
            if block is not None:
                self.emit(1, f"if {block} is not None: {found} = {block}[at - start]")
                first = "elif"
            self.emit(1, f"{first} type({value}) is not str: {found} = None")
            remembered = f"({found} := {self.const(memo.get)}({value})) is None"
            self.emit(1, f"elif not {self.const(memo)} or {remembered}: {found} = {self.const(scan)}({value})")
        return self.found[field]

    def block_scanned(self, field: str, scan: Scan, found: str) -> str | None:
        """The local holding the answers of the scan of the field's texts of a whole block of
        views, by index in the block (see `patterns.BlockScan`), for a field that the root
        scans and a view holds at the top level; None for any other. An event with candidates
        gives the field's scan its answer (`prime_of`): their predicates ask the scan, which
        has not scanned the text alone."""
        block = block_scan_of(scan)
        if self.block_scans is None or self.base != self.margin or block is None or folded_source(field):
            return None
        key, *rest = split_path(field)
        if rest or self.layout is None:
            return None
        answers = f"b{len(self.block_scans)}"
        value_of = operator.attrgetter(self.layout.attribute(key))
        self.block_scans.append(f"    {answers} = {self.const(block)}(views, {self.const(value_of)})")
        self.block_fields[field] = (found, block, answers)
        return answers

    def read(self, field: str) -> str:
        """The local holding the event's value of `field`, read once per node.

        A missing field reads as None or MISSING, neither of which any test accepts.
        """
        if field in self.locals:
            return self.locals[field]
        value = self.locals[field] = f"v{len(self.locals)}"
        source = folded_source(field)
        if source is not None:  # the case fold of the field's text (an equality ignoring case)
            if self.layout is None:
                self.emit(1, f"{value} = {self.const(folded_getter(source))}(event)")
            else:
                text = self.read(source)
                self.emit(1, f"{value} = {self.const(fold)}({text}) if type({text}) is str else None")
            return value
        if self.layout is not None:
            self._read_view(value, field)
            return value
        match shallow_keys(field):
            case (key,):
                self.emit(1, f"{value} = event.get({self.const(key)})")
            case (outer, inner):
                self.emit(1, f"{value} = event.get({self.const(outer)})")
                self.emit(1, f"{value} = {value}.get({self.const(inner)}) if type({value}) is dict else None")
            case _:
                self.emit(1, f"{value} = {self.const(make_getter(field))}(event)")
        return value

    def _read_view(self, value: str, field: str) -> None:
        """`read` from a view: the top-level key is an attribute, a deeper path is walked from
        its value (MISSING where the view's walk ends, None where a dict's `get` would)."""
        assert self.layout is not None
        key, *rest = split_path(field)
        match rest:
            case [inner] if not is_index(inner):
                self.member(value, key, inner, "None")
            case []:
                self.emit(1, f"{value} = event.{self.layout.attribute(key)}")
            case _:
                self.emit(1, f"{value} = event.{self.layout.attribute(key)}")
                self.emit(1, f"{value} = {self.const(make_walker(tuple(rest)))}({value})")

    def member(self, local: str, key: str, inner: str, default: str) -> None:
        """Read `key.inner` from a view into `local`: the top-level value is a dict if the
        whole value is read too, else a struct of the inner keys read if it is an object
        (MISSING for a key it lacks), else a value that holds no key (see `Layout.member`)."""
        assert self.layout is not None
        outer, attribute = self.layout.member(key, inner)
        struct = self.const(NoStruct)  # the struct's class, once the layout has made it
        self.layout.struct_name(self.names, struct, key)
        self.emit(1, f"{local} = event.{outer}")
        self.emit(
            1,
            f"{local} = {local}.{attribute} if type({local}) is {struct} else {local}.get({self.const(inner)}, "
            f"{default}) if type({local}) is dict else {default}",
        )

    def add_rules(self, depth: int, rules: tuple[Rule, ...]) -> None:
        """Code that appends `rules` to the candidates."""
        if len(rules) == 1:
            self.emit(depth, f"out.append({self.const(rules[0])})")
        else:
            self.emit(depth, f"out.extend({self.const(rules)})")

    def table(self, value: str, table: _Table) -> None:
        """One dict lookup: the hit is either the rules or a child node's function.

        A table of up to _CHAINED values is comparisons instead, each value's child node
        written inline, so that a chain such as `service: api` -> `type: http_access` -> a
        bound costs one call, not three. A value equals a key exactly when a dict would find
        it under that key (JSON values of equal value hash alike, and a list or an object
        equals no key), so the comparisons find what the lookup finds; and they cost less
        than the lookup, which hashes the event's text (a new string per view) and calls the
        table's `get`, and than the call of a child's function.
        """
        if any(type(key) is int or type(key) is float for key in table):
            self.check_exact(value)
        if len(table) <= _CHAINED and self.base - self.margin < _INLINE_DEPTH:
            for n, (key, hit) in enumerate(table.items()):
                self.emit(1, f"{'elif' if n else 'if'} {value} == {self.const(key)}:")
                if isinstance(hit, _Plan):
                    self.inline(hit)
                else:
                    self.add_rules(2, hit)
            return
        bounded = _lone_bound_field(table.values())
        lookup = {k: self.child(hit, bounded) for k, hit in table.items()}
        safe = bounded is not None and all(
            _safe_bounds(hit.bounds) for hit in lookup.values() if type(hit) is _BoundHit
        )
        # The keys are strings, which no other JSON value equals; only a list or an
        # object cannot be looked up, rare enough to pay for an exception instead of a
        # type check on every event. The table's `get` is bound once (`_lookup`).
        self.emit(1, "try:")
        self.emit(2, f"hit = {self._lookup(lookup)}({value})")
        self.emit(1, "except TypeError:")
        self.emit(2, "hit = None")
        self.emit(1, "if hit is not None:")
        kinds = {type(hit) is tuple for hit in lookup.values() if type(hit) is not _BoundHit}
        if bounded is not None and not kinds:
            self.bound_hit(bounded, 0, safe)
        elif bounded is not None:
            self.emit(2, "if type(hit) is tuple:")
            self.emit(3, "out.extend(hit)")
            self.emit(2, "else:")
            self.bound_hit(bounded, 1, safe)
        elif kinds == {True}:
            self.emit(2, "out.extend(hit)")
        elif kinds == {False}:
            self.emit(2, f"hit(event, out{_arguments(self.found)})")
        else:  # both, or an empty table
            self.emit(2, "if type(hit) is tuple:")
            self.emit(3, "out.extend(hit)")
            self.emit(2, "else:")
            self.emit(3, f"hit(event, out{_arguments(self.found)})")

    def bound_hit(self, field: str, deeper: int, safe: bool) -> None:
        """The test of a `_BoundHit` in `hit` on the field's number, written where the table
        took it (`deeper` levels inside its `if hit`): the child's call saved, its code alike
        but for the bounds, read from the hit. The number read there is not known after it.
        `safe`: every hit's bounds are `_safe_bounds`."""
        known, found, exact = dict(self.locals), dict(self.found), set(self.exact)
        self.base += 1 + deeper
        number, late = self.bound_number(field, safe)
        self.emit(1, "try:")
        self.emit(2, f"if {number} >= hit[0]:")
        if late:
            self.check_integer(3, number)
        self.emit(3, f"out.extend(hit[2][:bisect_right(hit[1], {number})])")
        self.emit(1, "except TypeError:")
        self.emit(2, "pass")
        self.base -= 1 + deeper
        self.locals, self.found, self.exact = known, found, exact

    def child(
        self, hit: _Plan | tuple[Rule, ...], bounded: str | None = None, scanned: str | None = None
    ) -> _Collect | tuple[Rule, ...] | _BoundHit | dict[int, tuple[Rule, ...]]:
        """A table's or a scan's hit as the generated code takes it: a node's function, or the
        rules, or (a node of one bound on the field `bounded`) its bounds and rules, or (a node
        looking up the answer of the field `scanned` alone) its rules by pattern id."""
        if not isinstance(hit, _Plan):
            return hit
        if scanned is not None and _lone_scan(hit) == scanned:
            (_, test), *_ = hit.tests
            assert isinstance(test, _Scan)
            return cast(dict[int, tuple[Rule, ...]], test.by_id)
        if bounded is not None and _lone_bound(hit) == bounded:
            (_, test), *_ = hit.tests
            assert isinstance(test, _Bound)
            return _BoundHit(_exact_float(min(test.bounds)), test.bounds, test.rules)
        # The answers of the scans done here are handed down: a node beneath that scans the
        # same field (a pattern's rules indexed again on their other patterns, on the same
        # text) takes the answer instead of calling the scan again for the same value.
        return _NodeWriter(self.layout).node(hit, self.found)

    def inline(self, plan: _Plan) -> None:
        """`plan`'s code one level deeper; the fields it reads are known only inside it."""
        base, known, found, exact = self.base, dict(self.locals), dict(self.found), set(self.exact)
        self.base += 1
        self.body(plan)
        self.base, self.locals, self.found, self.exact = base, known, found, exact

    def check_exact(self, value: str) -> None:
        """In a view's code, before `value` is compared as a number: an integer that orjson
        would read as a rounded float (or refuse) sends the line to be parsed whole, so that
        the index compares what the predicates will."""
        if self.layout is None or value in self.exact:
            return
        self.exact.add(value)
        self.check_integer(1, value)

    def check_integer(self, depth: int, value: str) -> None:
        """`check_exact`'s test, written at `depth`."""
        self.emit(depth, f"if type({value}) is int and not {self.const(INT_MIN)} <= {value} <= {self.const(INT_MAX)}:")
        self.emit(depth + 1, f"raise {self.const(WholeLine)}")

    def scan(self, field: str, test: _Scan) -> None:
        """The rules filed under the patterns found in the field's text.

        Few texts hold any pattern, so the common path is the scan (done when the node
        started) and one truth test of its empty answer.
        """
        found = self.scanned(field, test.scan)
        # (the value itself is read again only to look for a list item: a node beneath that
        # was handed the answer has not read it)
        value = self.read(field) if test.in_lists else ""
        self.emit(1, f"if {found}:")
        alone = _lone_scan_field(test.by_id.values(), self.found)
        lookup = {k: self.child(hit, scanned=alone) for k, hit in test.by_id.items()}
        kinds = {type(hit) is tuple for hit in lookup.values()}
        if len(lookup) == 1 and kinds == {True}:
            ((pattern_id, rules),) = lookup.items()
            self.emit(2, f"if {self.const(pattern_id)} in {found}:")
            self.add_rules(3, rules)  # type: ignore[arg-type]
        else:
            self.emit(2, f"for i in {found}:")
            self.emit(3, f"if (hit := {self._lookup(lookup)}(i)) is not None:")
            if alone is not None:
                self.scan_hit(alone, found, kinds)
            elif kinds == {True}:
                self.emit(4, "out.extend(hit)")
            elif kinds == {False}:
                self.emit(4, f"hit(event, out{_arguments(self.found)})")
            else:
                self.emit(4, "if type(hit) is tuple:")
                self.emit(5, "out.extend(hit)")
                self.emit(4, "else:")
                self.emit(5, f"hit(event, out{_arguments(self.found)})")
        if test.in_lists:  # `contains` also looks for an equal item in a list; other patterns never match one
            # (the answer is None only where the value is not a text: a text in which the scan
            # found nothing, the common case, skips the list's type test)
            self.emit(1, f"elif {found} is None and type({value}) is list:")
            self.add_rules(2, test.in_lists)

    def scan_hit(self, field: str, outer: str, kinds: set[bool]) -> None:
        """The test of a node that looks up the answer of the field's scan alone, written where
        the scan above took its hit (a dict: the node's rules by pattern id), the node's call
        saved (a Sigma rule's parent image found, then its command line's patterns looked up).
        `outer`: the answer the scan above loops over."""
        found, depth = self.found[field], 5
        if True in kinds:  # rules filed under the pattern itself, beside such nodes
            self.emit(4, "if type(hit) is tuple:")
            self.emit(5, "out.extend(hit)")
            self.emit(4, f"elif {found}:")
        elif found != outer:
            self.emit(4, f"if {found}:")
        else:  # the answer the loop is over: found something already
            depth = 4
        self.emit(depth, f"for k in {found}:")
        self.emit(depth + 1, "if (got := hit.get(k)) is not None:")
        self.emit(depth + 2, "out.extend(got)")

    def bound(self, field: str, test: _Bound) -> None:
        """The rules whose bound the field's number reaches.

        Most values reach no bound, so the smallest is compared first and the rest only
        after it: one comparison for a typical event. A missing field reads as -inf; any
        other value that is not a number (a null, a text) makes the comparison raise
        TypeError, which skips the test (a getter for a deeper path reads it as -inf).
        Booleans compare as numbers here: the full predicate, which rejects them, still
        decides. An upper bound compares the negated number, read with a type check (any
        value that is not a number, booleans included, reads as -inf).
        """
        number, late = self.bound_number(field, _safe_bounds(test.bounds))
        distinct = sorted(set(test.bounds))
        # How many rules (sorted by bound) each distinct bound lets in.
        reached = [bisect.bisect_right(test.bounds, b) for b in distinct]
        self.emit(1, "try:")
        if len(distinct) <= _SHORT_BOUNDS:
            self._nested_bounds(2, number, [_exact_float(b) for b in distinct], reached, test.rules, late)
        else:
            self.emit(2, f"if {number} >= {self.const(_exact_float(distinct[0]))}:")
            if late:
                self.check_integer(3, number)
            self.emit(3, f"out.extend({self.const(test.rules)}[:bisect_right({self.const(test.bounds)}, {number})])")
        self.emit(1, "except TypeError:")
        self.emit(2, "pass")

    def bound_number(self, field: str, safe: bool) -> tuple[str, bool]:
        """A local holding the number a bound on `field` compares (see `bound`), and whether the
        view's test of an integer beyond 64 bits (`check_exact`) is still to be written, after
        the smallest bound is reached: so where the bounds are `safe` and the field is read
        as it is from a view (most numbers reach no bound, and pay the comparison alone)."""
        source = negated_source(field)
        number = self.number(field, checked=not safe) if source is None else None
        if number is not None:
            return number, safe and self.layout is not None
        if number is None:  # a deep path or an upper bound: read the value, then check the type
            value, number = self.read(source or field), f"n{len(self.lines)}"
            self.check_exact(value)
            sign = "" if source is None else "-"
            self.emit(
                1,
                f"{number} = {sign}{value} if type({value}) is int or type({value}) is float "
                f"else {self.const(_NO_NUMBER)}",
            )
        return number, False

    def exclude(self, field: str, test: _Exclude) -> None:
        """The rules the field's text leaves: all of them unless it is one they exclude (a
        missing field, or any other value, is none of those texts)."""
        value = self.read(field)
        self.emit(1, f"hit = {self._lookup(test.left)}({value}) if type({value}) is str else None")
        self.emit(1, "if hit is None:")
        self.add_rules(2, test.every)
        self.emit(1, "else:")
        self.emit(2, "out.extend(hit)")

    def _nested_bounds(
        self, depth: int, number: str, bounds: list[float], reached: list[int], rules: tuple[Rule, ...], late: bool
    ) -> None:
        self.emit(depth, f"if {number} >= {self.const(bounds[0])}:")
        if late:
            self.check_integer(depth + 1, number)
        if len(bounds) == 1:
            self.add_rules(depth + 1, rules[: reached[0]])
            return
        self._nested_bounds(depth + 1, number, bounds[1:], reached[1:], rules, False)
        self.emit(depth + 1, "else:")
        self.add_rules(depth + 2, rules[: reached[0]])

    def number(self, field: str, *, checked: bool) -> str | None:
        """A local holding the field's value, -inf if it is missing; None for deep paths. In a
        view's code, `checked`: tested for an integer beyond 64 bits here (`check_exact`)."""
        keys = shallow_keys(field)
        if keys is None:
            return None
        local = f"n{len(self.lines)}"
        missing = self.const(_NO_NUMBER)
        if self.layout is not None:
            if len(keys) == 1:
                self.emit(1, f"{local} = event.{self.layout.attribute(keys[0])}")
            else:
                self.member(local, keys[0], keys[1], missing)
            self.emit(1, f"{local} = {missing} if {local} is {self.const(MISSING)} else {local}")
            if checked:
                self.check_exact(local)
            return local
        if len(keys) == 1:
            self.emit(1, f"{local} = event.get({self.const(keys[0])}, {missing})")
        else:
            self.emit(1, f"{local} = event.get({self.const(keys[0])})")
            self.emit(
                1, f"{local} = {local}.get({self.const(keys[1])}, {missing}) if type({local}) is dict else {missing}"
            )
        return local


_NO_NUMBER = float("-inf")  # what a missing number reads as: it reaches no bound


def _safe_bounds(bounds: Sequence[float]) -> bool:
    """Whether an integer beyond INT_MIN..INT_MAX reaches each of `bounds` exactly when the
    float orjson reads it as does (within 2**63 either way: beyond INT_MAX both are at least
    2**64; below INT_MIN the float is at most -2**63, which rounding never passes, and still
    below). An integer of a view that reaches no such bound then need not be told apart: the
    line parsed whole would reach none either, so the test is made only once one is reached."""
    return min(bounds) > -(2**63) and max(bounds) < 2**63


def _exact_float(bound: float) -> float:
    """The bound as a float if that changes nothing (so float values compare quickly)."""
    try:
        return float(bound) if float(bound) == bound else bound
    except OverflowError:
        return bound
