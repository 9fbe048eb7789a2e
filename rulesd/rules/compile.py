"""Schema-valid rule mappings -> compiled Rule values, with semantic checks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from rulesd.durations import parse_duration
from rulesd.errors import Problem
from rulesd.rules.conditions import ConditionError, compile_condition, necessary_hints
from rulesd.rules.fields import make_getter
from rulesd.rules.model import DEFAULT_PRIORITY, AlertSpec, Responder, Rule, Threshold
from rulesd.rules.templates import Template, TemplateError, parse_template
from rulesd.validation import format_path
from rulesd.yamldoc import Document, JsonPath

_TEMPLATE_KEYS = ("message", "description", "alias", "entity", "note")


def fingerprint(data: Any) -> str:
    """A stable hash of a JSON-like value."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Context:
    """Collects problems while compiling one rule, locating each in its document."""

    def __init__(self, doc: Document, base: JsonPath) -> None:
        self.doc = doc
        self.base = base
        self.problems: list[Problem] = []

    def report(self, path: JsonPath, message: str) -> None:
        full = (*self.base, *path)
        self.problems.append(Problem(self.doc.locate(full), f"{format_path(full)}: {message}"))

    def duration(self, value: Any, path: JsonPath) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.report(path, str(exc))
            return 0.0

    def template(self, source: str, path: JsonPath) -> Template:
        try:
            return parse_template(source)
        except TemplateError as exc:
            self.report(path, f"malformed template: {exc}")
            return parse_template("")


def compile_rule(raw: dict[str, Any], doc: Document, base: JsonPath) -> tuple[Rule | None, list[Problem]]:
    """Compile one schema-valid rule mapping; the problems say why it could not be."""
    ctx = _Context(doc, base)
    try:
        compiled = compile_condition(raw["match"])
    except ConditionError as exc:
        ctx.report(("match", *exc.path), str(exc))
        compiled = None
    threshold = _threshold(raw.get("threshold"), ctx)
    throttle = ctx.duration(raw["throttle"], ("throttle",)) if "throttle" in raw else None
    alert = _alert(raw.get("alert", {}), ctx)
    if ctx.problems or compiled is None:
        return None, ctx.problems
    rule = Rule(
        name=raw["name"],
        description=raw.get("description", ""),
        enabled=raw.get("enabled", True),
        match=compiled.test,
        hints=necessary_hints(raw["match"]),
        location=doc.locate(base),
        fingerprint=fingerprint(raw),
        threshold=threshold,
        throttle=throttle,
        alert=alert,
        group_getters=tuple(make_getter(p) for p in threshold.group_by) if threshold else (),
    )
    return rule, []


def _threshold(raw: dict[str, Any] | None, ctx: _Context) -> Threshold | None:
    if raw is None:
        return None
    window = ctx.duration(raw["window"], ("threshold", "window"))
    if window <= 0:
        ctx.report(("threshold", "window"), "the window must be longer than 0s")
    return Threshold(raw["count"], window, tuple(raw.get("group_by", ())))


def _alert(raw: dict[str, Any], ctx: _Context) -> AlertSpec:
    def tmpl(key: str) -> Template | None:
        return ctx.template(raw[key], ("alert", key)) if key in raw else None

    each: Callable[[str], tuple[Template, ...]] = lambda key: tuple(  # noqa: E731
        ctx.template(s, ("alert", key, i)) for i, s in enumerate(raw.get(key, ()))
    )
    responders = tuple(_responder(r) for r in raw.get("responders", ()))
    details = tuple(
        (k, ctx.template(v, ("alert", "details", k))) for k, v in raw.get("details", {}).items()
    )
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
