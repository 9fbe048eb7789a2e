"""The fields a rule groups or counts by, or names in its alert, that none of the events it
matched has.

`group_by: [source.ipx]` (a typo) puts every event in one group, the group of the missing
field, and a rule test whose events all share one address still passes. When a rule matched
events of a test file and none of them has such a field, the field is likely misspelled: the
events are those its author wrote to exercise the rule. So is a field an alert's template
names (`{usr}`), which would be empty in every page.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from rulesd.rules.fields import MISSING, make_getter
from rulesd.rules.model import Absence, Distinct, Kind, NewValue, Rule, Sequence, Threshold
from rulesd.rules.templates import Template

_KEYS: dict[type, str] = {
    Threshold: "threshold",
    Distinct: "distinct",
    Sequence: "sequence",
    Absence: "absence",
    NewValue: "new_value",
}


def _fields(kind: Kind) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Each field `kind` groups or counts by, with its path in the rule."""
    key = _KEYS[type(kind)]
    for i, field in enumerate(kind.group_by):
        yield (key, "group_by", i), field
    if isinstance(kind, Distinct):
        yield (key, "field"), kind.field
    if isinstance(kind, NewValue):
        for i, field in enumerate(kind.fields):
            yield (key, "fields", i), field


def _template_fields(rule: Rule) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Each field the alert's templates name, with the template's path in the rule."""
    alert = rule.alert
    named: list[tuple[tuple[str | int, ...], Template | None]] = [
        (("alert", key), getattr(alert, key)) for key in ("message", "description", "alias", "entity", "note")
    ]
    named += [(("alert", "tags", i), tag) for i, tag in enumerate(alert.tags)]
    named += [(("alert", "details", key), template) for key, template in alert.details]
    for path, template in named:
        for field in template.fields if template is not None else ():
            yield path, field


def unseen_fields(
    rules: Iterable[Rule], events: list[dict[str, Any]]
) -> Iterator[tuple[Rule, tuple[str | int, ...], str, int]]:
    """Each rule (enabled, of a kind) that matched some of `events`, with each field it groups
    or counts by that none of them has: the rule, the field's path in it, the field, and how
    many events it matched."""
    for rule in rules:
        if not rule.enabled:
            continue
        matched = [event for event in events if rule.match(event)]
        if not matched:
            continue
        for path, field in [*(_fields(rule.kind) if rule.kind is not None else ()), *_template_fields(rule)]:
            get = make_getter(field)
            if all(get(event) is MISSING for event in matched):
                yield rule, path, field, len(matched)
