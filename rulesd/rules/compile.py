"""Schema-valid rule mappings -> compiled Rule values, with semantic checks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Mapping
from typing import Any

import msgspec

from rulesd.document import Document, JsonPath
from rulesd.durations import parse_duration, unitless
from rulesd.errors import Problem, SourceLocation
from rulesd.rules.conditions import (
    Compiled,
    ConditionError,
    compile_condition,
    necessary_hints,
)
from rulesd.rules.fields import MISSING, event_with, group_getters, group_key, key_text, make_getter
from rulesd.rules.lists import (
    NO_LISTS,
    Lists,
    NamedList,
    equality_problem,
    lists_used,
    operands,
    reference_problems,
)
from rulesd.rules.model import (
    DEFAULT_PRIORITY,
    KIND_KEYS,
    TRIGGERING_RULES,
    Absence,
    AlertSpec,
    Distinct,
    Kind,
    NewValue,
    Responder,
    Rule,
    Sequence,
    Step,
    Threshold,
)
from rulesd.rules.patterns import FieldScanner, Pattern, PatternSet, matches_every_text
from rulesd.rules.templates import Template, TemplateError, literal_fields, not_a_template, parse_template
from rulesd.validation import format_path

_TEMPLATE_KEYS = ("message", "description", "alias", "entity", "note")


# One encoder for every fingerprint: `json.dumps` with these options makes a new one per call
# (a fifth of a fingerprint's cost at 1,000 rules); `encode` keeps no state between calls, and its text is
# exactly what `json.dumps` gives with them, which fingerprints kept in state must stay.
_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str)


def fingerprint(data: Any) -> str:
    """A stable hash of a JSON-like value."""
    text = _ENCODER.encode(data)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Context:
    """Collects problems while compiling one rule, locating each in its document.

    `faulted` holds the paths of schema violations: a part of the rule at or above one
    of them is skipped (its shape is wrong), while the rest is still checked so that
    one run of `rulesd check` reports every problem.

    `checked`: the rule is of a rule set that loaded without an error from the same files and
    code before, whose problems were kept (see `rulesd.rules.checked`): the checks that only
    find problems are skipped, as they would find those again.
    """

    def __init__(
        self, doc: Document, base: JsonPath, faulted: Collection[JsonPath], lists: Lists, *, checked: bool = False
    ) -> None:
        self.doc = doc
        self.checked = checked
        self.base = base
        self.faulted = [v for v in faulted if v[: len(base)] == base]
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []  # (they do not keep the rule from loading)
        self.lists = lists
        self.lists_used: dict[str, NamedList] = {}

    def ok(self, path: JsonPath) -> bool:
        """True when the schema found nothing wrong at or below `path`."""
        if not self.faulted:  # (every rule of a sound file: asked ~6 times per rule)
            return True
        full = (*self.base, *path)
        return not any(v[: len(full)] == full for v in self.faulted)

    def report(self, path: JsonPath, message: str, *, key: bool = False, warning: bool = False) -> None:
        """A problem at `path` of the rule: at its value, or with `key` at its key."""
        full = (*self.base, *path)
        problem = Problem(self.doc.locate(full, key=key), f"{format_path(full)}: {message}")
        if warning:
            self.warnings.append(msgspec.structs.replace(problem, severity="warning"))
        else:
            self.problems.append(problem)

    def never(self, match: dict[str, Any], path: JsonPath, scope: str) -> None:
        """Report the tests of the condition at `path` that can never hold (see
        `contradictions`): an error where the condition then never matches, else a warning
        (a branch of `any`, what `not` negates, an absent step's condition)."""
        if self.checked:
            return
        from rulesd.rules.contradictions import contradictions, messages

        for found, message in messages(contradictions(match, (*self.base, *path), self.lists, scope)):
            self.contradiction(found.path, found.other, message, warning=not found.certain)

    def contradiction(self, path: JsonPath, other: JsonPath | None, message: str, *, warning: bool = False) -> None:
        """A test (at `path` in the document) that no value passes with the others, naming
        the one it contradicts (`other`, if one alone does)."""
        if other is not None:
            message = f"contradicts {format_path(other)} ({self.doc.locate(other)}): {message}"
        self.report(path[len(self.base) :], message, warning=warning)

    def duration(self, value: Any, path: JsonPath, *, positive: bool = False) -> float:
        """The duration at `path` in seconds (0 after reporting why it is none); with
        `positive`, one of 0s is reported too (a window), but only one problem per value."""
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.report(path, str(exc))
            return 0.0
        if positive and seconds <= 0:
            self.report(path, f"the {path[-1]} must be longer than 0s")
        warning = unitless(value) if not self.checked else None  # (kept with the rule set's problems)
        if warning is not None:
            self.report(path, warning, warning=True)
        return seconds

    def where(self, path: JsonPath) -> Written:
        """The place of `path` in the rule."""
        return Written(self.doc, (*self.base, *path))

    def template(self, source: str, path: JsonPath) -> Template:
        try:
            template = parse_template(source)
        except TemplateError as exc:
            self.report(path, f"malformed template: {exc}")
            return parse_template("")
        for written, field in () if self.checked else literal_fields(source):  # (a warning: the braces may be meant)
            message = (
                f"{written!r} is the text {written[1:-1]!r} in the alert, not the value of a field: write "
                f"{{{field}}} for the value of {field} (a doubled brace is a brace)"
            )
            self.report(path, message, warning=True)
        return template


class Written:
    """Where in its document a pattern was written (a `PatternSet` origin): located only if
    Hyperscan refuses the pattern, as its error's place. A warm start, whose databases come from
    the rule cache, never asks: locating a part of a rule reads the document's deeper marks."""

    __slots__ = ("doc", "path")

    def __init__(self, doc: Document, path: JsonPath) -> None:
        self.doc = doc
        self.path = path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Written) and other.doc is self.doc and other.path == self.path

    def __hash__(self) -> int:
        return hash((id(self.doc), self.path))

    def place(self) -> tuple[SourceLocation, str]:
        """Its location and its path as text."""
        return self.doc.locate(self.path), format_path(self.path)


class _RulePatterns:
    """The rule set's patterns, each registered with the place in this rule it comes from:
    `place` turns a path within the condition being compiled into the rule's path."""

    def __init__(self, patterns: PatternSet, ctx: _Context, place: Callable[[JsonPath], JsonPath]) -> None:
        self.patterns = patterns
        self.ctx = ctx
        self.place = place

    def add(self, field: str, pattern: Pattern, path: JsonPath) -> tuple[FieldScanner, int]:
        return self.patterns.add(field, pattern, self.ctx.where(self.place(path)))

    @classmethod
    def at(cls, patterns: PatternSet, ctx: _Context, prefix: JsonPath) -> _RulePatterns:
        """For a condition written at `prefix` in the rule."""
        return cls(patterns, ctx, lambda path: (*prefix, *path))


def compile_rule(
    raw: dict[str, Any],
    doc: Document,
    base: JsonPath,
    faulted: Collection[JsonPath] = (),
    *,
    patterns: PatternSet,
    lists: Lists = NO_LISTS,
    checked: bool = False,
) -> tuple[Rule | None, list[Problem]]:
    """Compile one rule mapping; the problems say why it could not be.

    `faulted` are the paths of the document's schema violations: the rule is not
    compiled if one lies within it, but its other parts are still checked. Its regexes and
    literals go into `patterns` (the rule set's), which must be built before it matches;
    `$name` operands are the rule set's named `lists`. `checked`: see `_Context`.
    """
    ctx = _Context(doc, base, faulted, lists, checked=checked)
    kinds = [key for key in KIND_KEYS if key in raw]
    for extra in kinds[1:]:
        message = f"a rule has at most one of {', '.join(KIND_KEYS)} (this one also has {kinds[0]})"
        ctx.report((extra,), message, key=True)
    match, rule_patterns = _rule_match(raw, ctx, patterns)
    before = len(ctx.problems)
    compiled = _condition(match, ("match",), ctx, rule_patterns) if "sequence" not in raw else None
    sound_match = compiled is not None and len(ctx.problems) == before
    # A kind's own parts are checked even when the schema faulted another of its parts (or
    # another part of the rule), so that one run says every problem; it is built only if sound.
    kind = _kind(raw, kinds[0], ctx, patterns, sound_match) if kinds else None
    if isinstance(kind, Sequence) and match is not None:
        compiled = _sequence_condition(match, rule_patterns, lists, checked=checked)
    throttle = _optional_duration(raw, "throttle", ctx)
    resolve = _optional_duration(raw, "resolve", ctx, "after")
    if "resolve" in raw and (not kinds or kinds[0] not in ("threshold", "distinct")):
        why = "an absence rule closes its alert by itself" if kinds[:1] == ["absence"] else "what recovers is a group"
        ctx.report(("resolve",), f"resolve is for threshold and distinct rules ({why})", key=True)
    alert = _alert(raw.get("alert", {}), ctx)
    if kind is not None and sound_match and not ctx.problems and not checked:  # (how its sound parts meet)
        from rulesd.rules.kind_checks import kind_mistakes

        for path, message, warning in kind_mistakes(raw, kinds[0], kind, throttle, resolve, lists):
            ctx.report(path, message, warning=warning)
    if ctx.problems or ctx.faulted or compiled is None or match is None:
        return None, [*ctx.problems, *ctx.warnings]
    rule = Rule(
        name=raw["name"],
        description=raw.get("description", ""),
        enabled=raw.get("enabled", True),
        match=compiled.test,
        hints=necessary_hints(match, rule_patterns, lists=lists),
        location=doc.locate(base),
        fingerprint=rule_fingerprint(raw, ctx.lists_used),
        threshold=kind if isinstance(kind, Threshold) else None,
        throttle=throttle,
        alert=alert,
        group_getters=group_getters(kind.group_by) if kind is not None else (),
        kind=kind,
        resolve=resolve,
        lists=ctx.lists_used,
    )
    return rule, ctx.warnings


def rule_fingerprint(raw: dict[str, Any], lists: Mapping[str, NamedList]) -> str:
    """What identifies a rule's definition: its mapping and the values of the named lists it
    uses (a rule whose list changed is a changed rule)."""
    if not lists:
        return fingerprint(raw)
    return fingerprint([raw, {name: list(named.values) for name, named in sorted(lists.items())}])


def _rule_match(
    raw: dict[str, Any], ctx: _Context, patterns: PatternSet
) -> tuple[dict[str, Any] | None, _RulePatterns]:
    """The condition that decides whether an event concerns the rule at all, and where its
    parts are written: its `match`, or for a sequence, any of its steps' (the engine then
    tells the steps apart)."""
    if "sequence" not in raw:
        if "match" not in raw and "match" not in _stands_for(raw):  # (`filter:` is said as ElastAlert's)
            ctx.report((), "missing required key 'match'")
        match = raw.get("match")
        return (match if isinstance(match, dict) else None), _RulePatterns.at(patterns, ctx, ("match",))
    if "match" in raw:
        ctx.report(("match",), "a sequence rule has no top-level match: each step has its own", key=True)
    steps = raw["sequence"].get("steps") if isinstance(raw["sequence"], dict) else None
    conditions: list[dict[str, Any]] = []
    places: list[JsonPath] = []
    for i, step in enumerate(steps if isinstance(steps, list) else ()):
        for where in (("match",), ("absent", "match")):
            found: Any = step
            for key in where:
                found = found.get(key) if isinstance(found, dict) else None
            if isinstance(found, dict):
                conditions.append(found)
                places.append(("sequence", "steps", i, *where))

    # Written as `any` of the steps' conditions: a path `any[i]...` is in step condition i.
    def place(path: JsonPath) -> JsonPath:
        return (*places[int(path[1])], *path[2:]) if len(path) >= 2 and path[0] == "any" else path

    return ({"any": conditions} if conditions else None), _RulePatterns(patterns, ctx, place)


def _stands_for(raw: dict[str, Any]) -> set[str | None]:
    from rulesd.rules.foreign import stands_for  # (only a rule without `match` asks)

    return stands_for(raw)


def _sequence_condition(
    match: dict[str, Any], patterns: _RulePatterns, lists: Lists, *, checked: bool = False
) -> Compiled | None:
    """A sequence's match: any of its steps' conditions (their problems were reported with the steps)."""
    try:
        return compile_condition(match, (), patterns, lists, checked=checked)
    except ConditionError:
        return None


def _condition(match: Any, path: JsonPath, ctx: _Context, patterns: _RulePatterns, scope: str = "") -> Compiled | None:
    """Compile the condition written at `path` of the rule; its problems are reported there
    (a test that can never hold too, see `_Context.never`; `scope` "absent": an absent step's)."""
    if not isinstance(match, dict):
        return None
    if not ctx.checked:
        _found_everywhere(match, path, ctx)
    ctx.lists_used.update(lists_used(match, ctx.lists))
    misused = reference_problems(match, ctx.lists) if not ctx.checked else []
    for where, message in misused:  # every one, not only the first the compiler would meet
        if ctx.ok((*path, *where)):  # (else the schema's message says what is wrong there)
            ctx.report((*path, *where), message)
    if misused:  # still find the other problems of the sound entries
        for key, value in match.items():
            if ctx.ok((*path, key)) and not any(where[:1] == (key,) for where, _ in misused):
                _compile_match({key: value}, path, ctx, _RulePatterns.at(PatternSet(), ctx, path))
        return None
    if ctx.ok(path):
        compiled = _compile_match(match, path, ctx, patterns)
        if compiled is not None:
            ctx.never(match, path, scope)
        return compiled
    for key, value in match.items():  # still find the bad regexes of the sound entries
        if ctx.ok((*path, key)):
            _compile_match({key: value}, path, ctx, _RulePatterns.at(PatternSet(), ctx, path))
    return None


def _found_everywhere(match: dict[str, Any], path: JsonPath, ctx: _Context) -> None:
    """A warning at each regex of the condition that is found in every text (`(timeout)?`):
    its test holds for any text, almost certainly not what was meant (a warning, since
    "the field is a text" is a condition, and the rule loaded before this was said)."""
    for where, op, operand in operands(match, path):
        if op == "regex" and isinstance(operand, str) and ctx.ok(where) and matches_every_text(operand):
            message = (
                f"the regex {operand!r} is found in every text (it matches an empty text), so this test holds "
                "for any text value: was a part of it meant not to be optional?"
            )
            ctx.report(where, message, warning=True)
        elif op in ("contains", "startswith", "endswith") and operand == "" and ctx.ok(where):
            message = f"{op} of an empty text holds for any text value, as if it were not written: was a text left out?"
            ctx.report(where, message, warning=True)
        elif (
            op in (None, "equals", "contains", "startswith", "endswith") and isinstance(operand, str) and ctx.ok(where)
        ):
            advice = _wildcard_advice(op or "equals", operand)
            if advice is not None:
                ctx.report(where, f"{operand!r} is compared as the text written: {advice}", warning=True)


def _wildcard_advice(op: str, text: str) -> str | None:
    """What to write for a text test whose `text` reads as a glob (`web-*`) or a regex (`a.*b`):
    '*' is no wildcard there, so the test would likely never hold."""
    core = text.strip("*")
    # A glob's '*' is one star against the text it stands beside; a run of them or one beside a
    # space is the text's own (`*** FATAL ***`, `**bold**`, `SELECT *`).
    if core and "*" not in core and core != text and core == core.strip() and "**" not in (text[:2], text[-2:]):
        starts, ends = text.startswith("*"), text.endswith("*")
        meant = "contains" if op == "contains" or (starts and ends) else "endswith" if starts else "startswith"
        if op in ("equals", "contains", meant):
            return f"'*' is no wildcard in {op}: write {meant}: {core!r} for texts that {_verb(meant)} it"
    for pattern in (".*", ".+"):
        if pattern in text:
            return f"{pattern!r} is no pattern in {op}: write regex: {text!r} for a regex"
    return None


def _verb(op: str) -> str:
    return {"contains": "contain", "startswith": "start with", "endswith": "end with"}[op]


def _compile_match(match: dict[str, Any], path: JsonPath, ctx: _Context, patterns: _RulePatterns) -> Compiled | None:
    try:
        return compile_condition(match, (), patterns, ctx.lists, checked=ctx.checked)
    except ConditionError as exc:
        ctx.report((*path, *exc.path), str(exc))
    return None


def _optional_duration(raw: dict[str, Any], key: str, ctx: _Context, inner: str | None = None) -> float | None:
    """The duration at `key` (or `key.inner`), if given and sound."""
    value = raw.get(key)
    path: JsonPath = (key,)
    if inner is not None:
        value = value.get(inner) if isinstance(value, dict) else None
        path = (key, inner)
    if value is None or not ctx.ok(path):
        return None
    return ctx.duration(value, path)


def _kind(raw: dict[str, Any], key: str, ctx: _Context, patterns: PatternSet, sound_match: bool) -> Kind | None:
    """The rule's kind (threshold, distinct, sequence, absence or new_value); None when the
    schema faulted a part of it, after checking the parts it did not fault."""
    spec = raw[key]
    if not isinstance(spec, dict):
        return None
    sound = ctx.ok((key,))
    group_by = tuple(spec.get("group_by", ())) if ctx.ok((key, "group_by")) else ()
    if key == "sequence":
        return _sequence(spec, group_by, ctx, patterns, sound)
    if key == "absence":
        if sound_match and ctx.ok((key, "expect")) and not ctx.checked:
            _expected_never_matching(spec, raw["match"], ctx)
        return _absence(spec, group_by, ctx, sound)
    if key == "new_value":
        learn = ctx.duration(spec["learn"], (key, "learn")) if _given(spec, key, "learn", ctx) else 0.0
        forget = _period(spec, key, ctx, "forget")
        if not sound:
            return None
        fields = tuple(spec["fields"])
        match = raw.get("match")
        learns = {"match": match, "fields": list(fields), "group_by": list(group_by), "learn": learn}
        learnt = rule_fingerprint(learns, lists_used(match, ctx.lists))
        return NewValue(fields, group_by, learn, forget, tuple(make_getter(f) for f in fields), learnt)
    window = _period(spec, key, ctx)
    if key == "distinct" and _given(spec, key, "field", ctx) and _given(spec, key, "count", ctx) and not ctx.checked:
        _counted_in_groups(spec, group_by, ctx)
    if not sound or window is None:
        return None
    if key == "threshold":
        return Threshold(spec["count"], window, group_by)
    return Distinct(spec["field"], make_getter(spec["field"]), spec["count"], window, group_by)


def _given(spec: dict[str, Any], key: str, part: str, ctx: _Context) -> bool:
    """Whether the kind `key`'s `part` is written and the schema found it sound."""
    return part in spec and ctx.ok((key, part))


def _period(spec: dict[str, Any], key: str, ctx: _Context, part: str = "window") -> float | None:
    """The kind's duration `part` (longer than 0s), if written and sound; checked."""
    return ctx.duration(spec[part], (key, part), positive=True) if _given(spec, key, part, ctx) else None


def _counted_in_groups(spec: dict[str, Any], group_by: tuple[str, ...], ctx: _Context) -> None:
    """An error at a group_by field that holds the distinct rule's counted field: a group's
    events all have one value of it, so more than one is never counted and the rule never
    fires (`field: user` grouped by `user`, or `user.name` grouped by `user`)."""
    field, count = spec["field"], spec["count"]
    for i, path in enumerate(group_by):
        if count > 1 and (field == path or field.startswith(path + ".")):
            where = "is" if field == path else "lies within"
            message = (
                f"the counted field {field!r} {where} the group_by field {path!r}: each group has one value "
                f"of it, so it never counts {count} different values and the rule never fires"
            )
            ctx.report(("distinct", "group_by", i), message)


def _sequence(
    spec: dict[str, Any], group_by: tuple[str, ...], ctx: _Context, patterns: PatternSet, sound: bool
) -> Sequence | None:
    steps: list[Step] = []
    found = spec.get("steps") if ctx.ok(("sequence", "steps")) else None
    raw_steps: list[Any] = found if isinstance(found, list) else []
    sound_steps = bool(raw_steps)
    for i, step in enumerate(raw_steps):
        path: JsonPath = ("sequence", "steps", i)
        before = len(ctx.problems)
        built = _step(step, path, i == len(raw_steps) - 1, ctx, patterns)
        sound_steps = sound_steps and built is not None and len(ctx.problems) == before
        if built is not None:
            steps.append(built)
    within = _period(spec, "sequence", ctx, "within")
    if not sound_steps:
        return None
    if group_by and not ctx.checked:  # (steps whose own conditions are wrong would only add follow-on errors)
        _steps_of_one_group(raw_steps, group_by, ctx)
    return Sequence(tuple(steps), within, group_by) if sound else None


def _step(step: Any, path: JsonPath, last: bool, ctx: _Context, patterns: PatternSet) -> Step | None:
    """One step of a sequence, checked where the schema found it sound (None if it is not)."""
    if not isinstance(step, dict) or not ctx.ok(path):
        return None
    has_match, absent = "match" in step, step.get("absent")
    if has_match == (absent is not None):
        ctx.report(path, "a step has either match (and an optional count) or, as the last step, absent")
        return None
    if absent is None:
        where: JsonPath = (*path, "match")
        compiled = _condition(step["match"], where, ctx, _RulePatterns.at(patterns, ctx, where))
        if compiled is None:
            return None
        count = step.get("count", 1)
        used = lists_used(step["match"], ctx.lists)
        return Step(compiled.test, count, fingerprint=rule_fingerprint({"match": step["match"], "count": count}, used))
    if not last:
        ctx.report((*path, "absent"), "absent may only be the last step (it waits after the step before it)", key=True)
    if "count" in step:
        ctx.report((*path, "count"), "an absent step takes no count: its for says how long to wait")
    where = (*path, "absent", "match")
    # (an absent step's condition that never holds: the rule fires after every step before it)
    compiled = _condition(absent["match"], where, ctx, _RulePatterns.at(patterns, ctx, where), "absent")
    wait = ctx.duration(absent["for"], (*path, "absent", "for"), positive=True)
    return Step(compiled.test, 1, True, wait) if compiled is not None else None


def _steps_of_one_group(raw_steps: list[dict[str, Any]], group_by: tuple[str, ...], ctx: _Context) -> None:
    """An error where the steps' tests of a group_by field contradict each other: the events
    of a sequence are those of one group, with one value of each group_by field, so steps that
    need different values (`host: a`, then `host: b`, grouped by host) never follow each other."""
    from rulesd.rules.contradictions import shared_field_clash

    where = [(*ctx.base, "sequence", "steps", i, "match") for i in range(len(raw_steps))]
    matches = [(step["match"], at) for step, at in zip(raw_steps, where, strict=True) if "match" in step]
    for field in group_by:
        clash = shared_field_clash(matches, field, ctx.lists)
        if clash is not None:
            why = f"{clash[2]}; the events of a sequence are of one group (one {field!r}), so it can never complete"
            ctx.contradiction(clash[0], clash[1], why)


def _expected_never_matching(spec: dict[str, Any], match: dict[str, Any], ctx: _Context) -> None:
    """An error at a value of an expected group that the rule's match rules out (`host: [web-1,
    web-2]` expecting `{host: db-1}`): no event of that group ever matches, so its absence is
    paged every time and never closes."""
    from rulesd.rules.contradictions import shared_field_clash

    where: JsonPath = (*ctx.base, "match")
    for i, expected in enumerate(spec.get("expect", ())):
        for field, value in expected.items() if isinstance(expected, dict) else ():
            if not isinstance(value, str | int | float | bool | None):
                continue
            group = ({field: value}, (*ctx.base, "absence", "expect", i))
            clash = shared_field_clash([(match, where), group], field, ctx.lists)
            if clash is not None:
                why = f"{clash[2]}; no event of this expected group can match the rule, so its absence is always paged"
                ctx.contradiction(clash[0], clash[1], why)


def _absence(spec: dict[str, Any], group_by: tuple[str, ...], ctx: _Context, sound: bool) -> Absence | None:
    keys: list[str] = []
    events: list[dict[str, Any]] = []
    window = _period(spec, "absence", ctx)
    expect = spec.get("expect", ()) if ctx.ok(("absence", "expect")) and ctx.ok(("absence", "group_by")) else ()
    for i, expected in enumerate(expect):
        unknown = [p for p in expected if p not in group_by]
        if unknown or not group_by:
            where = f"group_by is [{', '.join(group_by)}]" if group_by else "the rule has no group_by"
            ctx.report(("absence", "expect", i), f"an expected group names the group_by fields ({where})")
            continue
        # NaN (a group key would even read it as null), an integer beyond 64 bits (an event's is a
        # float, a group of its own): no event is ever in this group, which is paged as never seen
        unequalled = [(p, why) for p, v in expected.items() if (why := equality_problem(v)) is not None]
        if unequalled:
            ctx.report(("absence", "expect", i, unequalled[0][0]), unequalled[0][1])
            continue
        left = [p for p in group_by if p not in expected]
        if left and not ctx.checked:  # (a warning: events without the field may be what is watched)
            message = (
                f"names no {left[0]} (group_by is [{', '.join(group_by)}]): it expects the group of events without "
                f"{left[0]}, and an event with one is in another group, so this group is paged as never seen "
                f"unless events without {left[0]} come; give {left[0]}'s value"
            )
            ctx.report(("absence", "expect", i), message, warning=True)
        keys.append(group_key(key_text(expected[p]) if p in expected else key_text(MISSING) for p in group_by))
        events.append(event_with(expected))
    if not sound or window is None:
        return None
    return Absence(window, group_by, tuple(keys), tuple(events))


def _alert(raw: Any, ctx: _Context) -> AlertSpec:
    # (written as plain loops, not closures and generators: it runs for every rule of every start,
    # warm ones too; its parts are read in the order their problems were always said)
    if not isinstance(raw, dict):
        return AlertSpec()
    details = []
    details_raw = raw.get("details")
    for k, v in details_raw.items() if isinstance(details_raw, dict) else ():
        if isinstance(v, str) and ctx.ok(("alert", "details", k)):
            details.append((k, ctx.template(v, ("alert", "details", k))))
            if k == TRIGGERING_RULES and not ctx.checked:  # (its value may be meant, for another tool)
                said = (
                    f"'{k}' is the detail rulesd writes itself, the names of the rules that fired: this value is "
                    "never sent; give the detail another name"
                )
                ctx.report(("alert", "details", k), said, key=True, warning=True)
    responders: tuple[Responder, ...] = ()
    if ctx.ok(("alert", "responders")):
        responders = tuple(_responder(r) for r in raw.get("responders", ()))
        for i, responder in enumerate(() if ctx.checked else responders):  # (a warning: braces may be in a name)
            mistake = not_a_template(responder.value, "a responder")
            if mistake is not None:
                ctx.report(("alert", "responders", i, responder.key), mistake, warning=True)
    templates: list[Template | None] = []
    for key in _TEMPLATE_KEYS:
        value = raw.get(key)
        templates.append(
            ctx.template(value, ("alert", key)) if isinstance(value, str) and ctx.ok(("alert", key)) else None
        )
    tags = []
    items = raw.get("tags")
    for i, s in enumerate(items) if isinstance(items, list) else ():
        if isinstance(s, str) and ctx.ok(("alert", "tags", i)):
            tags.append(ctx.template(s, ("alert", "tags", i)))
    message, description, alias, entity, note = templates
    priority = raw.get("priority", DEFAULT_PRIORITY)
    return AlertSpec(priority, message, description, alias, entity, note, tuple(tags), responders, tuple(details))


def _responder(raw: dict[str, str]) -> Responder:
    key = next(k for k in ("name", "username", "id") if k in raw)
    return Responder(raw["type"], key, raw[key])
