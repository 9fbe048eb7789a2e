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
  literals are joined into one trie-shaped pattern, which the `re` engine
  rejects in one pass over the text, so typical noise costs one C call;
- lower bound: the rules sorted by their bound, cut with one bisection;
- otherwise the rule is checked on every event that reaches the node.

The full predicate still decides; the index only ever skips rules that cannot
match, and each enabled rule sits in exactly one place, so no rule is returned
twice for one event.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from rulesd.rules.conditions import Hints
from rulesd.rules.fields import Event, Getter, make_getter
from rulesd.rules.model import Rule

_BACKREF = re.compile(r"\\[1-9]|\(\?P=|\(\?P<")
_LEADING_FLAGS = re.compile(r"\A\(\?([aiLmsux]+)\)")
_SPLIT_AT = 2  # from this many rules a bucket is indexed on their regexes and bounds too


class RuleIndex:
    """Finds the candidate rules for an event; each enabled rule is in exactly one place."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(r for r in rules if r.enabled)
        entries = [_Entry(r, h) for r in self.rules for h in _placements(r.hints)]
        # A rule filed once per branch of its `any` may be collected more than once.
        self.may_repeat = len(entries) > len(self.rules)
        self.root = _build(entries, frozenset())

    def candidates(self, event: Event) -> list[Rule]:
        """Rules that might match `event`, each once, in no particular order."""
        found: list[Rule] = []
        self.root.collect(event, found)
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


class _Node:
    """One level of the tree; `collect` appends the candidates for an event."""

    __slots__ = ("always", "tables", "tests")

    def __init__(
        self,
        always: tuple[Rule, ...],
        tables: tuple[tuple[str, Getter | None, dict[str, _Collect | tuple[Rule, ...]]], ...],
        tests: tuple[_Collect, ...],
    ) -> None:
        self.always = always
        # (top-level key, getter for a dotted path or None, value -> a child's collect or rules)
        self.tables = tables
        self.tests = tests

    def collect(self, event: Event, out: list[Rule]) -> None:
        """Append to `out` the rules under this node that `event` may match."""
        if self.always:
            out.extend(self.always)
        for key, get, table in self.tables:
            value = event.get(key) if get is None else get(event)
            if type(value) is str:
                hit = table.get(value)
                if hit is not None:
                    if type(hit) is tuple:
                        out.extend(hit)
                    else:
                        hit(event, out)  # type: ignore[operator]
        for test in self.tests:
            test(event, out)


def _build(entries: Sequence[_Entry], used: frozenset[str]) -> _Node:
    """Index `entries` on the tests they require, ignoring the fields in `used`."""
    popularity = Counter(f for e in entries for f in e.hints.equalities if f not in used)
    by_field: dict[str, dict[str, list[_Entry]]] = {}
    literal_rules: dict[str, list[tuple[Rule, _Literals]]] = {}
    bounded: dict[str, list[tuple[float, Rule]]] = {}
    combined: dict[str, list[tuple[Rule, str]]] = {}
    always: list[Rule] = []
    for entry in entries:
        rule, hints = entry
        fields = [f for f in hints.equalities if f not in used]
        if fields:
            # The field most rules share: fewer lookups per event.
            field = max(fields, key=lambda f: (popularity[f], -len(hints.equalities[f]), f))
            table = by_field.setdefault(field, {})
            for value in hints.equalities[field]:
                table.setdefault(value, []).append(entry)
        elif (literals := _required_literals(hints)) is not None:
            literal_rules.setdefault(literals[0], []).append((rule, literals[1]))
        elif hints.lower_bounds:
            field, bound = min(hints.lower_bounds.items())
            bounded.setdefault(field, []).append((bound, rule))
        elif scoped := _combinable(hints):
            combined.setdefault(scoped[0], []).append((rule, scoped[1]))
        else:
            always.append(rule)
    tables = tuple(
        (f, make_getter(f) if "." in f else None, {v: _child(rs, used | {f}) for v, rs in t.items()})
        for f, t in by_field.items()
    )
    tests = (
        *(_literal_test(f, members) for f, members in literal_rules.items()),
        *(_bound_test(f, members) for f, members in bounded.items()),
        *(_regex_test(f, members) for f, members in combined.items()),
    )
    return _Node(tuple(always), tables, tests)


def _child(entries: list[_Entry], used: frozenset[str]) -> _Collect | tuple[Rule, ...]:
    if any(set(e.hints.equalities) - used for e in entries):
        return _build(entries, used).collect
    if len(entries) >= _SPLIT_AT and any(
        e.hints.regexes or e.hints.substrings or e.hints.lower_bounds for e in entries
    ):
        return _build(entries, used).collect
    return tuple(e.rule for e in entries)


def _value_getter(field: str) -> Callable[[Event], Any]:
    """A getter whose result only matters when it is a str, list or number."""
    if "." in field:
        return make_getter(field)
    return lambda event: event.get(field)


# ---- regexes: required literals ---------------------------------------------------------

# Any one of these (literal, case-insensitive) must occur in the text for the regex to match.
_Literals = frozenset[tuple[str, bool]]


def _required_literals(hints: Hints) -> tuple[str, _Literals] | None:
    """A field and the literals one of which it must contain, the most selective found."""
    found: list[tuple[str, _Literals]] = [
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


def _strength(literals: _Literals) -> int:
    return min(len(text) for text, _ in literals)


@functools.lru_cache(maxsize=4096)
def required_literals(pattern: str) -> _Literals | None:
    """Literals one of which any text that `pattern` matches must contain; None if unknown.

    Only runs of plain characters in the pattern's main sequence count (and in
    groups and repeats that must match at least once); a top-level `a|b`
    requires a literal from each branch.
    """
    from re import _constants as c  # type: ignore[attr-defined]
    from re import _parser as p  # type: ignore[attr-defined]

    try:
        parsed = p.parse(pattern)
    except re.error:
        return None
    flags = parsed.state.flags
    if flags & ~(c.SRE_FLAG_UNICODE | c.SRE_FLAG_IGNORECASE | c.SRE_FLAG_MULTILINE
                 | c.SRE_FLAG_DOTALL | c.SRE_FLAG_VERBOSE):
        return None  # ASCII or LOCALE change what case-insensitive letters match
    folded = bool(flags & c.SRE_FLAG_IGNORECASE)
    options = _sequence_literals(list(parsed), c)
    if not options:
        return None
    return frozenset((text, folded) for text in options)


def _sequence_literals(items: list[tuple[Any, Any]], c: Any) -> frozenset[str] | None:
    """The best requirement of a sequence: its longest literal run, or one from inside."""
    best: frozenset[str] | None = None

    def consider(found: frozenset[str] | None) -> None:
        nonlocal best
        if found and all(found) and (best is None or min(map(len, found)) > min(map(len, best))):
            best = found

    run: list[str] = []
    for op, arg in items:
        if op is c.LITERAL:
            run.append(chr(arg))
            continue
        consider(frozenset(["".join(run)]) if run else None)
        run = []
        if op is c.SUBPATTERN and not arg[1] and not arg[2]:
            consider(_sequence_literals(list(arg[3]), c))
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT) and arg[0] >= 1:
            consider(_sequence_literals(list(arg[2]), c))
        elif op is c.BRANCH:
            branches = [_sequence_literals(list(b), c) for b in arg[1]]
            if all(branches):
                consider(frozenset().union(*branches))  # type: ignore[arg-type]
    consider(frozenset(["".join(run)]) if run else None)
    return best


def _literal_test(field: str, members: list[tuple[Rule, _Literals]]) -> _Collect:
    """One search for any required literal, then the exact rules whose literals occur."""
    get = _value_getter(field)
    groups: dict[_Literals, list[Rule]] = {}
    for rule, literals in members:
        groups.setdefault(literals, []).append(rule)
    gate = _gate_pattern(lit for literals in groups for lit in literals).search
    checks = tuple((_contains_any(literals), tuple(rules)) for literals, rules in groups.items())
    everyone = tuple(rule for rule, _ in members)

    def test(event: Event, out: list[Rule]) -> None:
        value = get(event)
        if type(value) is str:
            if gate(value) is not None:
                for contains, rules in checks:
                    if contains(value):
                        out.extend(rules)
        elif type(value) is list:
            out.extend(everyone)  # `contains` also looks for an equal item in a list


    return test


def _contains_any(literals: _Literals) -> Callable[[str], bool]:
    exact = tuple(text for text, folded in literals if not folded)
    searches = tuple(re.compile(re.escape(text), re.IGNORECASE).search
                     for text, folded in literals if folded)
    if len(exact) == 1 and not searches:
        text = exact[0]
        return lambda value: text in value
    return lambda value: any(t in value for t in exact) or any(s(value) for s in searches)


def _gate_pattern(literals: Iterable[tuple[str, bool]]) -> re.Pattern[str]:
    """A pattern matching wherever any of the literals occurs, shaped as a trie."""
    unique = set(literals)
    exact = _trie_regex(sorted(t for t, folded in unique if not folded))
    folded = _trie_regex(sorted(t for t, f in unique if f))
    parts = [exact] if exact else []
    if folded:
        parts.append(f"(?i:{folded})")
    return re.compile("|".join(parts))


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


def _bound_test(field: str, members: list[tuple[float, Rule]]) -> _Collect:
    """Rules whose bound the event's number reaches, found by bisection."""
    get = _value_getter(field)
    members.sort(key=lambda m: m[0])
    bounds = [b for b, _ in members]
    rules = tuple(r for _, r in members)

    def test(event: Event, out: list[Rule]) -> None:
        value = get(event)
        if type(value) is int or type(value) is float:
            reached = bisect.bisect_right(bounds, value)
            if reached:
                out.extend(rules[:reached])

    return test


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
    body = f"(?{flags.group(1)}:{pattern[flags.end():]})" if flags else f"(?:{pattern})"
    try:
        re.compile(body)
    except re.error:
        return None
    return body


def _regex_test(field: str, members: list[tuple[Rule, str]]) -> _Collect:
    get = _value_getter(field)
    search = re.compile("|".join(dict.fromkeys(p for _, p in members))).search
    rules = tuple(r for r, _ in members)

    def test(event: Event, out: list[Rule]) -> None:
        value = get(event)
        if type(value) is str and search(value) is not None:
            out.extend(rules)

    return test
