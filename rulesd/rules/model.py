"""Compiled rules and rule sets: immutable values the engine runs."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import msgspec

from rulesd.errors import SourceLocation
from rulesd.rules.conditions import Hints, Predicate
from rulesd.rules.fields import Getter
from rulesd.rules.lists import NamedList
from rulesd.rules.templates import Template

PRIORITIES = ("P1", "P2", "P3", "P4", "P5")

DEFAULT_PRIORITY = "P3"
# The detail of every alert that names the rules that fired (`alerting.payload` writes it, as the
# Sentry OpsGenie plugin does): a rule's own detail of that name is never sent.
TRIGGERING_RULES = "Triggering Rules"


class Threshold(msgspec.Struct, frozen=True):
    """Fire when `count` matching events of one group fall within `window` seconds."""

    count: int
    window: float
    group_by: tuple[str, ...] = ()


class Distinct(msgspec.Struct, frozen=True):
    """Fire when `count` different values of `field` among a group's matching events fall
    within `window` seconds."""

    field: str
    value: Getter  # reads `field`
    count: int
    window: float
    group_by: tuple[str, ...] = ()


class Step(msgspec.Struct, frozen=True):
    """One step of a sequence: `count` events matching `match` (or, for the final absent step,
    no such event for `wait` seconds)."""

    match: Predicate
    count: int = 1
    absent: bool = False
    wait: float = 0.0  # the absent step's `for`
    # What identifies the step a group can have done (its `match` as written, its `count`, the
    # values of the lists the match uses): a group that did it under a rule since edited did it
    # under the edited rule too when its step has the same fingerprint.
    fingerprint: str = ""


class Sequence(msgspec.Struct, frozen=True):
    """Steps that happen in order for the same group, all within `within` seconds (if set)."""

    steps: tuple[Step, ...]
    within: float | None = None
    group_by: tuple[str, ...] = ()

    @property
    def absent(self) -> Step | None:
        """The final absent step, if the sequence ends with one."""
        return self.steps[-1] if self.steps[-1].absent else None


class Absence(msgspec.Struct, frozen=True):
    """Fire when a group seen (or expected) has had no matching event for `window` seconds."""

    window: float
    group_by: tuple[str, ...] = ()
    expect: tuple[str, ...] = ()  # the expected groups' keys, as the engine keys groups (`fields.group_key`)
    expect_events: tuple[dict[str, Any], ...] = ()  # and as events holding their values


class NewValue(msgspec.Struct, frozen=True):
    """Fire when a group's combination of `fields` was not seen before (after `learn` seconds
    of only recording; values unseen for `forget` seconds are forgotten)."""

    fields: tuple[str, ...]
    group_by: tuple[str, ...] = ()
    learn: float = 0.0
    forget: float | None = None
    values: tuple[Getter, ...] = ()  # (not compared)
    # What identifies the values it learns (its `match` as written, the values of the lists it
    # uses, `fields`, `group_by` and `learn`): an edit that keeps it (a message, a throttle,
    # `forget`) keeps what the rule knows, rather than page again for every value it had seen.
    learnt: str = ""  # (not compared)

    # (a struct like the other kinds, not a dataclass, whose class costs every start ~4.7 M
    # instructions to write and compile its methods; compared and hashed as it was, by what it
    # tests alone)
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NewValue):
            return NotImplemented
        return self._compared() == other._compared()

    def __hash__(self) -> int:
        return hash(self._compared())

    def _compared(self) -> tuple[tuple[str, ...], tuple[str, ...], float, float | None]:
        return (self.fields, self.group_by, self.learn, self.forget)


Kind = Threshold | Distinct | Sequence | Absence | NewValue
KIND_KEYS = ("threshold", "distinct", "sequence", "absence", "new_value")  # as written in a rule


class Responder(msgspec.Struct, frozen=True):
    """An OpsGenie responder: `type` plus one identifying key (`name`, `username` or `id`)."""

    type: str
    key: str
    value: str

    def to_json(self) -> dict[str, str]:
        """The responder as OpsGenie's API takes it."""
        return {"type": self.type, self.key: self.value}


class AlertSpec(msgspec.Struct, frozen=True):
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


class Rule(msgspec.Struct, frozen=True, eq=False):
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
    alert: AlertSpec = msgspec.field(default_factory=AlertSpec)
    group_getters: tuple[Getter, ...] = ()
    kind: Kind | None = None  # what besides matching makes it fire (`threshold` is also kept above)
    resolve: float | None = None  # close the group's alert after this long without a firing
    lists: Mapping[str, NamedList] = msgspec.field(default_factory=dict)
    """The named lists its conditions use (`$name`), by name, as they were when it was compiled."""

    @property
    def group_by(self) -> tuple[str, ...]:
        """The field paths that make a group (empty: one group for the whole rule)."""
        return self.kind.group_by if self.kind is not None else ()

    @property
    def timed(self) -> bool:
        """Whether the rule keeps timers (absence, an absent step, resolve)."""
        kind = self.kind
        return (
            self.resolve is not None
            or isinstance(kind, Absence)
            or (isinstance(kind, Sequence) and kind.absent is not None)
        )

    @property
    def priority(self) -> str:
        """The alert priority, P1 (highest) to P5."""
        return self.alert.priority

    @property
    def rank(self) -> tuple[int, str]:
        """Sort key that puts the lead rule first: highest priority, then name."""
        return PRIORITIES.index(self.alert.priority), self.name


class RuleSet(msgspec.Struct, frozen=True):
    """All loaded rules, in definition order, with a fingerprint of the whole set."""

    rules: tuple[Rule, ...]
    files: tuple[str, ...]
    fingerprint: str

    def by_name(self) -> dict[str, Rule]:
        """Rules keyed by name."""
        return {r.name: r for r in self.rules}


def rule_hint(name: str, names: Collection[str]) -> str:
    """What to add to "no rule named `name`": `; did you mean 'y'?`, or how many there are."""
    import difflib  # (only for this message)

    close = difflib.get_close_matches(name, names, n=1)
    return f"; did you mean {close[0]!r}?" if close else f" ({len(names)} rule(s) loaded)"
