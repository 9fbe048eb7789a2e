"""Candidate selection: which rules can possibly match an event.

Most rules require a field to equal one of a few strings (`service: payments`)
or a regex to match (`message: {regex: ...}`). Rules are bucketed on one such
necessary test so that an event is only checked against rules whose bucket it
hits: a dict lookup per indexed field, and one combined regex search per field
for the regex-only rules. The full predicate still decides; the index only
skips rules that cannot match.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from rulesd.rules.fields import Event, Getter, make_getter
from rulesd.rules.model import Rule

_BACKREF = re.compile(r"\\[1-9]|\(\?P=|\(\?P<")
_LEADING_FLAGS = re.compile(r"\A\(\?([aiLmsux]+)\)")


@dataclass(frozen=True, slots=True)
class _Bucketed:
    get: Getter
    table: dict[str, tuple[Rule, ...]]


@dataclass(frozen=True, slots=True)
class _RegexGroup:
    get: Getter
    search: re.Pattern[str]
    rules: tuple[Rule, ...]


class RuleIndex:
    """Finds the candidate rules for an event; each enabled rule is in exactly one place."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        enabled = [r for r in rules if r.enabled]
        popularity = Counter(f for r in enabled for f in r.hints.equalities)
        tables: dict[str, dict[str, list[Rule]]] = {}
        by_regex: dict[str, list[tuple[Rule, str]]] = {}
        always: list[Rule] = []
        for rule in enabled:
            eq = rule.hints.equalities
            if eq:
                # Index on the field most rules share: fewer lookups per event.
                field = max(eq, key=lambda f: (popularity[f], -len(eq[f]), f))
                table = tables.setdefault(field, {})
                for value in eq[field]:
                    table.setdefault(value, []).append(rule)
                continue
            combinable = _combinable(rule)
            if combinable:
                by_regex.setdefault(combinable[0], []).append((rule, combinable[1]))
            else:
                always.append(rule)
        self.buckets = tuple(
            _Bucketed(make_getter(f), {v: tuple(rs) for v, rs in t.items()}) for f, t in tables.items()
        )
        self.regex_groups = tuple(_regex_group(f, members) for f, members in by_regex.items())
        self.always = tuple(always)

    def candidates(self, event: Event) -> list[Rule]:
        """Rules that might match `event`, in no particular order."""
        found = list(self.always)
        for bucket in self.buckets:
            value = bucket.get(event)
            if type(value) is str:
                hit = bucket.table.get(value)
                if hit:
                    found.extend(hit)
        for group in self.regex_groups:
            value = group.get(event)
            if type(value) is str and group.search.search(value) is not None:
                found.extend(group.rules)
        return found


def _combinable(rule: Rule) -> tuple[str, str] | None:
    """A (field, pattern) whose match the rule requires, if it can join a combined regex."""
    for field, patterns in sorted(rule.hints.regexes.items()):
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


def _regex_group(field: str, members: list[tuple[Rule, str]]) -> _RegexGroup:
    combined = re.compile("|".join(dict.fromkeys(p for _, p in members)))
    return _RegexGroup(make_getter(field), combined, tuple(r for r, _ in members))
