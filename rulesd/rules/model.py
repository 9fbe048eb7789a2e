"""Compiled rules and rule sets: immutable values the engine runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from rulesd.errors import SourceLocation
from rulesd.rules.conditions import Hints, Predicate
from rulesd.rules.fields import Getter
from rulesd.rules.templates import Template

PRIORITIES = ("P1", "P2", "P3", "P4", "P5")
DEFAULT_PRIORITY = "P3"


@dataclass(frozen=True, slots=True)
class Threshold:
    """Fire when `count` matching events of one group fall within `window` seconds."""

    count: int
    window: float
    group_by: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Responder:
    """An OpsGenie responder: `type` plus one identifying key (`name`, `username` or `id`)."""

    type: str
    key: str
    value: str

    def to_json(self) -> dict[str, str]:
        """The responder as OpsGenie's API takes it."""
        return {"type": self.type, self.key: self.value}


@dataclass(frozen=True, slots=True)
class AlertSpec:
    """What a rule contributes to the alert; strings are templates."""

    priority: str = DEFAULT_PRIORITY
    message: Template | None = None
    description: Template | None = None
    alias: Template | None = None
    entity: Template | None = None
    note: Template | None = None
    tags: tuple[Template, ...] = ()
    responders: tuple[Responder, ...] = ()
    details: tuple[tuple[str, Template], ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """One compiled rule. `fingerprint` changes whenever its definition does."""

    name: str
    match: Predicate
    hints: Hints
    location: SourceLocation
    fingerprint: str
    description: str = ""
    enabled: bool = True
    threshold: Threshold | None = None
    throttle: float | None = None
    alert: AlertSpec = field(default_factory=AlertSpec)
    group_getters: tuple[Getter, ...] = ()

    @property
    def priority(self) -> str:
        """The alert priority, P1 (highest) to P5."""
        return self.alert.priority

    @property
    def rank(self) -> tuple[int, str]:
        """Sort key that puts the lead rule first: highest priority, then name."""
        return PRIORITIES.index(self.alert.priority), self.name


@dataclass(frozen=True, slots=True)
class RuleSet:
    """All loaded rules, in definition order, with a fingerprint of the whole set."""

    rules: tuple[Rule, ...]
    files: tuple[str, ...]
    fingerprint: str

    def by_name(self) -> dict[str, Rule]:
        """Rules keyed by name."""
        return {r.name: r for r in self.rules}
