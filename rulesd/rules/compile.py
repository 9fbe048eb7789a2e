"""Schema-valid rule mappings -> compiled Rule values, with semantic checks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from typing import Any

from rulesd.durations import parse_duration
from rulesd.errors import Problem, SourceLocation
from rulesd.rules.conditions import (
    Compiled,
    ConditionError,
    compile_condition,
    necessary_hints,
)
from rulesd.rules.fields import make_getter
from rulesd.rules.model import DEFAULT_PRIORITY, AlertSpec, Responder, Rule, Threshold
from rulesd.rules.patterns import FieldScanner, Pattern, PatternSet
from rulesd.rules.templates import Template, TemplateError, parse_template
from rulesd.validation import format_path
from rulesd.yamldoc import Document, JsonPath

_TEMPLATE_KEYS = ("message", "description", "alias", "entity", "note")


def fingerprint(data: Any) -> str:
    """A stable hash of a JSON-like value."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Context:
    """Collects problems while compiling one rule, locating each in its document.

    `faulted` holds the paths of schema violations: a part of the rule at or above one
    of them is skipped (its shape is wrong), while the rest is still checked so that
    one run of `rulesd check` reports every problem.
    """

    def __init__(self, doc: Document, base: JsonPath, faulted: Collection[JsonPath]) -> None:
        self.doc = doc
        self.base = base
        self.faulted = [v for v in faulted if v[: len(base)] == base]
        self.problems: list[Problem] = []

    def ok(self, path: JsonPath) -> bool:
        """True when the schema found nothing wrong at or below `path`."""
        full = (*self.base, *path)
        return not any(v[: len(full)] == full for v in self.faulted)

    def report(self, path: JsonPath, message: str) -> None:
        full = (*self.base, *path)
        self.problems.append(Problem(self.doc.locate(full), f"{format_path(full)}: {message}"))

    def duration(self, value: Any, path: JsonPath) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.report(path, str(exc))
            return 0.0

    def where(self, path: JsonPath) -> tuple[SourceLocation, str]:
        """The place of `path` in the rule: its location and its path as text."""
        full = (*self.base, *path)
        return self.doc.locate(full), format_path(full)

    def template(self, source: str, path: JsonPath) -> Template:
        try:
            return parse_template(source)
        except TemplateError as exc:
            self.report(path, f"malformed template: {exc}")
            return parse_template("")


class _RulePatterns:
    """The rule set's patterns, each registered with the place in this rule it comes from."""

    def __init__(self, patterns: PatternSet, ctx: _Context) -> None:
        self.patterns = patterns
        self.ctx = ctx

    def add(self, field: str, pattern: Pattern, path: JsonPath) -> tuple[FieldScanner, int]:
        return self.patterns.add(field, pattern, self.ctx.where(("match", *path)))


def compile_rule(
    raw: dict[str, Any],
    doc: Document,
    base: JsonPath,
    faulted: Collection[JsonPath] = (),
    *,
    patterns: PatternSet,
) -> tuple[Rule | None, list[Problem]]:
    """Compile one rule mapping; the problems say why it could not be.

    `faulted` are the paths of the document's schema violations: the rule is not
    compiled if one lies within it, but its other parts are still checked. Its regexes and
    literals go into `patterns` (the rule set's), which must be built before it matches.
    """
    ctx = _Context(doc, base, faulted)
    rule_patterns = _RulePatterns(patterns, ctx)
    compiled = _condition(raw.get("match"), ctx, rule_patterns)
    threshold = _threshold(raw.get("threshold"), ctx) if ctx.ok(("threshold",)) else None
    throttle = None
    if "throttle" in raw and ctx.ok(("throttle",)):
        throttle = ctx.duration(raw["throttle"], ("throttle",))
    alert = _alert(raw.get("alert", {}), ctx)
    if ctx.problems or ctx.faulted or compiled is None:
        return None, ctx.problems
    rule = Rule(
        name=raw["name"],
        description=raw.get("description", ""),
        enabled=raw.get("enabled", True),
        match=compiled.test,
        hints=necessary_hints(raw["match"], rule_patterns),
        location=doc.locate(base),
        fingerprint=fingerprint(raw),
        threshold=threshold,
        throttle=throttle,
        alert=alert,
        group_getters=tuple(make_getter(p) for p in threshold.group_by) if threshold else (),
    )
    return rule, []


def _condition(match: Any, ctx: _Context, patterns: _RulePatterns) -> Compiled | None:
    if not isinstance(match, dict):
        return None
    if ctx.ok(("match",)):
        return _compile_match(match, ctx, patterns)
    for key, value in match.items():  # still find the bad regexes of the sound entries
        if ctx.ok(("match", key)):
            _compile_match({key: value}, ctx, _RulePatterns(PatternSet(), ctx))
    return None


def _compile_match(match: dict[str, Any], ctx: _Context, patterns: _RulePatterns) -> Compiled | None:
    try:
        return compile_condition(match, (), patterns)
    except ConditionError as exc:
        ctx.report(("match", *exc.path), str(exc))
    return None


def _threshold(raw: Any, ctx: _Context) -> Threshold | None:
    if not isinstance(raw, dict):
        return None
    window = ctx.duration(raw["window"], ("threshold", "window"))
    if window <= 0:
        ctx.report(("threshold", "window"), "the window must be longer than 0s")
    return Threshold(raw["count"], window, tuple(raw.get("group_by", ())))


def _alert(raw: Any, ctx: _Context) -> AlertSpec:
    if not isinstance(raw, dict):
        return AlertSpec()

    def tmpl(key: str) -> Template | None:
        value = raw.get(key)
        if isinstance(value, str) and ctx.ok(("alert", key)):
            return ctx.template(value, ("alert", key))
        return None

    def each(key: str) -> tuple[Template, ...]:
        items = raw.get(key)
        if not isinstance(items, list):
            return ()
        return tuple(
            ctx.template(s, ("alert", key, i))
            for i, s in enumerate(items)
            if isinstance(s, str) and ctx.ok(("alert", key, i))
        )

    details_raw = raw.get("details")
    details = tuple(
        (k, ctx.template(v, ("alert", "details", k)))
        for k, v in (details_raw.items() if isinstance(details_raw, dict) else ())
        if isinstance(v, str) and ctx.ok(("alert", "details", k))
    )
    responders: tuple[Responder, ...] = ()
    if ctx.ok(("alert", "responders")):
        responders = tuple(_responder(r) for r in raw.get("responders", ()))
    templates = {key: tmpl(key) for key in _TEMPLATE_KEYS}
    return AlertSpec(
        priority=raw.get("priority", DEFAULT_PRIORITY),
        tags=each("tags"),
        responders=responders,
        details=details,
        **templates,
    )


def _responder(raw: dict[str, str]) -> Responder:
    key = next(k for k in ("name", "username", "id") if k in raw)
    return Responder(raw["type"], key, raw[key])
