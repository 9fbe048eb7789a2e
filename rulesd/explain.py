"""`rulesd explain`: whether an event matches each rule and, where it does not, the first
condition that fails, in the order the rule file writes them.

The explanation is built from the rule's own parts: every field test is compiled on its own
by the compiler that compiled the rule (`compile_condition`), its regexes found by Hyperscan
as the rule's are, so that the explanation and the rule cannot disagree about an operator.
How each part of a condition fails:

- `field: value` and `field: [values]`: the field, the event's value (or "missing") and what
  was wanted; located at the value.
- `field: {op: operand, ...}`: the operators are tried one by one as written, and the first
  that fails is the one reported, at its operand (`{gte: 500, lt: 600}` on 700 names `lt`);
  `nocase` is not a test: it goes with each text operator it modifies.
- a mapping of several entries and `all: [...]`: its first failing entry, as written; the
  `all` itself is never named, only what fails inside it.
- `any: [...]`: fails when every branch fails. Reported at the `any` key, followed by each
  branch's own first failure, by line number only (the one `path:line:col` printed is the
  failing condition's, the `any`).
- `not: condition`: fails when the condition under it holds. Reported at the `not` key,
  with the event's values of the fields that condition names.

A sequence rule has no top-level match: each step's condition is explained, and the rule
matches the steps whose condition holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
import orjson

from rulesd.document import JsonPath
from rulesd.errors import SourceLocation
from rulesd.jsontext import compact_json
from rulesd.rules.conditions import Predicate, caseless_applies, compile_condition
from rulesd.rules.fields import MISSING, Event, Getter, make_getter
from rulesd.rules.lists import Lists, reference
from rulesd.rules.loader import RuleSource
from rulesd.rules.model import Rule
from rulesd.rules.model import Sequence as SequenceKind
from rulesd.rules.patterns import FieldScanner, Pattern, PatternSet

COMBINATORS = ("all", "any", "not")
MODIFIERS = ("nocase",)  # keys of an operator mapping that change how the others test, not tests
VALUE_CHARS = 120  # an event value or operand longer than this is cut short
NOT_FIELDS = 4  # values shown for a failing `not`


# ---- what a failure is -------------------------------------------------------------------


class Unmet(msgspec.Struct, frozen=True):
    """A field test that fails: where it is written, the field, the event's value (MISSING
    when the event has none) and what the rule wants, as written."""

    location: SourceLocation
    field: str
    value: Any
    wanted: str


class NoBranch(msgspec.Struct, frozen=True):
    """An `any` none of whose branches holds, with each branch's first failure."""

    location: SourceLocation
    branches: tuple[Failure, ...]


class Negated(msgspec.Struct, frozen=True):
    """A `not` whose condition holds, with the event's values of the fields it names."""

    location: SourceLocation
    values: tuple[tuple[str, Any], ...]


Failure = Unmet | NoBranch | Negated


class RuleExplanation(msgspec.Struct, frozen=True):
    """Why an event does or does not match one rule.

    `failure`: the first failing condition of a rule with a `match` (None: it matches);
    `steps`: for a sequence, each step's first failure (None where the step matches).
    """

    rule: Rule
    failure: Failure | None = None
    steps: tuple[Failure | None, ...] = ()

    @property
    def matches(self) -> bool:
        """Whether the event matches the rule (a sequence: any of its steps)."""
        if isinstance(self.rule.kind, SequenceKind):
            return any(step is None for step in self.steps)
        return self.failure is None

    @property
    def matched_steps(self) -> list[int]:
        """The steps of a sequence the event matches, numbered from 1."""
        return [i for i, step in enumerate(self.steps, 1) if step is None]


# ---- conditions compiled part by part -----------------------------------------------------


class _Test(msgspec.Struct, frozen=True):
    location: SourceLocation
    field: str
    read: Getter
    wanted: str
    holds: Predicate


class _All(msgspec.Struct, frozen=True):
    parts: tuple[_Node, ...]


class _Any(msgspec.Struct, frozen=True):
    location: SourceLocation
    branches: tuple[_Node, ...]


class _Not(msgspec.Struct, frozen=True):
    location: SourceLocation
    inner: _Node
    fields: tuple[tuple[str, Getter], ...]


_Node = _Test | _All | _Any | _Not


def first_failure(node: _Node, event: Event) -> Failure | None:
    """The first part of a compiled condition that `event` fails, as written; None if it holds."""
    if isinstance(node, _Test):
        return None if node.holds(event) else Unmet(node.location, node.field, node.read(event), node.wanted)
    if isinstance(node, _All):
        for part in node.parts:
            failure = first_failure(part, event)
            if failure is not None:
                return failure
        return None
    if isinstance(node, _Any):
        failures: list[Failure] = []
        for branch in node.branches:
            failure = first_failure(branch, event)
            if failure is None:
                return None
            failures.append(failure)
        return NoBranch(node.location, tuple(failures))
    if first_failure(node.inner, event) is not None:
        return None
    return Negated(node.location, tuple((name, read(event)) for name, read in node.fields))


class _SharedPatterns:
    """The patterns of every part compiled, in one set, built once they all are."""

    def __init__(self) -> None:
        self.set = PatternSet()

    def add(self, field: str, pattern: Pattern, path: JsonPath) -> tuple[FieldScanner, int]:
        return self.set.add(field, pattern, path)


class _Compiler:
    """Compiles the conditions of one rule as written, each field test on its own."""

    def __init__(self, source: RuleSource, patterns: _SharedPatterns, lists: Lists) -> None:
        self.source = source
        self.patterns = patterns
        self.lists = lists  # the named lists the rule was compiled with

    def locate(self, path: JsonPath, *, key: bool = False) -> SourceLocation:
        return self.source.doc.locate((*self.source.base, *path), key=key)

    def condition(self, cond: dict[str, Any], path: JsonPath) -> _Node:
        """The condition mapping written at `path` of the rule."""
        parts: list[_Node] = []
        for key, value in cond.items():
            where = (*path, key)
            if key == "all":
                parts.append(_All(tuple(self.condition(c, (*where, i)) for i, c in enumerate(value))))
            elif key == "any":
                branches = tuple(self.condition(c, (*where, i)) for i, c in enumerate(value))
                parts.append(_Any(self.locate(where, key=True), branches))
            elif key == "not":
                fields = tuple((name, make_getter(name)) for name in fields_named(value))
                parts.append(_Not(self.locate(where, key=True), self.condition(value, where), fields))
            else:
                parts.extend(self.field(key, value, where))
        return parts[0] if len(parts) == 1 else _All(tuple(parts))

    def field(self, name: str, matcher: Any, path: JsonPath) -> list[_Test]:
        """The tests of `name: matcher`: one, or one per operator of an operator mapping."""
        read = make_getter(name)
        if not isinstance(matcher, dict):
            many = isinstance(matcher, list) or reference(matcher) is not None
            wanted = f"one of {self.show(matcher)}" if many else self.show(matcher)
            return [_Test(self.locate(path), name, read, wanted, self.compiled({name: matcher}, path))]
        modifiers = {k: v for k, v in matcher.items() if k in MODIFIERS}
        note = ", ".join(k if v is True else f"{k}: {show(v)}" for k, v in modifiers.items())
        tests = []
        for op, operand in matcher.items():
            if op in MODIFIERS:
                continue
            # `nocase` changes only a text operator with a text (and is refused beside no such one).
            modified = bool(modifiers) and caseless_applies(op, operand, self.lists)
            tests.append(
                _Test(
                    self.locate((*path, op)),
                    name,
                    read,
                    f"{op}: {self.show(operand, op)}" + (f" ({note})" if note and modified else ""),
                    self.compiled({name: {op: operand, **(modifiers if modified else {})}}, path),
                )
            )
        if not tests:  # modifiers alone: the mapping is its own test
            tests = [_Test(self.locate(path), name, read, show(matcher), self.compiled({name: matcher}, path))]
        return tests

    def compiled(self, cond: dict[str, Any], path: JsonPath) -> Predicate:
        """`cond`, one field's test written at `path`, compiled as the rule's condition is."""
        return compile_condition(cond, (*self.source.base, *path[:-1]), self.patterns, self.lists).test

    def show(self, operand: Any, op: str | None = None) -> str:
        """An operand as written, a named list followed by its values (`$admins ["ann","bob"]`)."""
        name = reference(operand) if op != "regex" else None
        if name is not None and name in self.lists:
            return f"${name} {show(list(self.lists[name].values))}"
        return show(operand)


def fields_named(cond: dict[str, Any]) -> list[str]:
    """The field paths a condition tests, in the order written, each once."""
    names: list[str] = []
    for key, value in cond.items():
        if key in ("all", "any"):
            inner = [n for c in value for n in fields_named(c)]
        elif key == "not":
            inner = fields_named(value)
        else:
            inner = [key]
        names.extend(n for n in inner if n not in names)
    return names


def step_conditions(source: RuleSource) -> list[tuple[dict[str, Any], JsonPath]]:
    """Each step's condition of a sequence rule, and where it is written."""
    found: list[tuple[dict[str, Any], JsonPath]] = []
    for i, step in enumerate(source.raw["sequence"]["steps"]):
        if "match" in step:
            found.append((step["match"], ("sequence", "steps", i, "match")))
        else:
            found.append((step["absent"]["match"], ("sequence", "steps", i, "absent", "match")))
    return found


class Explainer:
    """Explains events against rules, from their written form (`RuleSource`)."""

    def __init__(self, rules: Sequence[Rule], sources: Mapping[str, RuleSource]) -> None:
        patterns = _SharedPatterns()
        self._rules: list[tuple[Rule, _Node | None, tuple[_Node, ...]]] = []
        for rule in rules:
            compiler = _Compiler(sources[rule.name], patterns, rule.lists)
            if isinstance(rule.kind, SequenceKind):
                steps = tuple(compiler.condition(c, where) for c, where in step_conditions(compiler.source))
                self._rules.append((rule, None, steps))
            else:
                self._rules.append((rule, compiler.condition(compiler.source.raw["match"], ("match",)), ()))
        patterns.set.build()  # the rules compiled, so do their patterns

    def explain(self, event: Event) -> list[RuleExplanation]:
        """Each rule's explanation of `event`, in the rules' order."""
        explained: list[RuleExplanation] = []
        for rule, match, steps in self._rules:
            if match is not None:
                explained.append(RuleExplanation(rule, first_failure(match, event)))
            else:
                explained.append(RuleExplanation(rule, steps=tuple(first_failure(s, event) for s in steps)))
        return explained


# ---- as text ----------------------------------------------------------------------------


def show(value: Any) -> str:
    """A value as compact JSON (`missing` for a field the event lacks), cut short if long."""
    if value is MISSING:
        return "missing"
    try:
        text = orjson.dumps(value, default=str).decode()
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (an event may nest 1,024 levels)
        text = compact_json(value)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def verdict(explanation: RuleExplanation) -> str:
    """`matches`, `does not match`; for a sequence, which steps it matches."""
    steps = len(explanation.steps)
    if isinstance(explanation.rule.kind, SequenceKind):
        matched = explanation.matched_steps
        if not matched:
            return f"matches none of its {steps} steps"
        listed = ", ".join(str(i) for i in matched)
        return f"matches step{'s' if len(matched) > 1 else ''} {listed} of {steps}"
    return "matches" if explanation.matches else "does not match"


def explanation_lines(explanation: RuleExplanation, outcome: str | None = None) -> list[str]:
    """A rule's explanation as text: `NAME: verdict[; outcome]`, then, if it does not match,
    its failing condition (for a sequence, each step's), indented."""
    rule = explanation.rule
    head = f"{rule.name}: {verdict(explanation)}"
    if explanation.matches and not rule.enabled:
        head += " (disabled: it never fires)"
    elif outcome:
        head += f", {outcome}" if outcome.startswith("group ") else f"; {outcome}"
    lines = [head]
    if explanation.matches:
        return lines
    if explanation.failure is not None:
        lines += failure_lines(explanation.failure, "  ")
    for i, failure in enumerate(explanation.steps, 1):
        if failure is not None:
            lines += failure_lines(failure, "  ", f"step {i}: ")
    return lines


def failure_lines(failure: Failure, indent: str, prefix: str = "") -> list[str]:
    """A failing condition at its `path:line:col`; an `any`'s branches below it, by line."""
    return [f"{indent}{failure.location}: {prefix}{_what(failure)}", *_branch_lines(failure, indent + "  ")]


def _what(failure: Failure) -> str:
    if isinstance(failure, Unmet):
        return f"{failure.field}: {show(failure.value)}, wanted {failure.wanted}"
    if isinstance(failure, NoBranch):
        return f"any: none of its {len(failure.branches)} conditions holds"
    values = ", ".join(f"{name}: {show(value)}" for name, value in failure.values[:NOT_FIELDS])
    more = ", …" if len(failure.values) > NOT_FIELDS else ""
    return f"not: the condition under it holds ({values}{more})"


def _branch_lines(failure: Failure, indent: str) -> list[str]:
    if not isinstance(failure, NoBranch):
        return []
    lines: list[str] = []
    for i, branch in enumerate(failure.branches, 1):
        lines.append(f"{indent}{i}. line {branch.location.line}: {_what(branch)}")
        lines += _branch_lines(branch, indent + "   ")
    return lines


def select(rules: Iterable[Rule], name: str | None) -> list[Rule]:
    """All `rules`, or only the one named (none if there is no such rule)."""
    return [r for r in rules if name is None or r.name == name]
