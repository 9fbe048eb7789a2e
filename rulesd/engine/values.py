"""What the engine hands out: firings (an alert's worth of rules) and closings (an alert to close)."""

from __future__ import annotations

from typing import Any

import msgspec

from rulesd.rules.fields import Event
from rulesd.rules.model import Rule

GroupKey = str  # a group's values, each as `fields.key_text` writes it, in one string (`fields.group_key`)
NO_GROUP: GroupKey = ""  # the one group of a rule without group_by (and the key of a rule's own state)


class Firing(msgspec.Struct, frozen=True):
    """One alert's worth of firing: the event and the rules that fired on it, lead first.

    A timer's firing (an absence, a sequence's absent step) carries the event that armed it
    and `origin`, where that event came from (None: the event being evaluated).
    """

    event: Event
    time: float
    rules: tuple[Rule, ...]
    origin: Any = None
    # The alias the group's open alert went out with, where an earlier rulesd wrote the group
    # otherwise (`rekey.rekeyed_alias`): its firings fold into it. None: the rules' own alias.
    alias: str | None = None

    @property
    def lead(self) -> Rule:
        """The rule with the highest priority (ties broken by name)."""
        return self.rules[0]


class Matched(msgspec.Struct, frozen=True):
    """An event and the rules whose conditions it meets, each with its group: what the
    engine's stateful step (`Engine.apply`) needs of it. `plain`: more of them, rules that
    fire whenever they match (no kind, throttle, resolve nor group), in runs that need
    nothing done per rule."""

    event: Event
    time: float
    rules: list[Rule]
    groups: list[GroupKey]
    plain: list[tuple[Rule, ...]] = msgspec.field(default_factory=list)

    @property
    def matching(self) -> list[Rule]:
        """Every rule the event matched: those with state, then the plain ones."""
        return self.rules + [rule for run in self.plain for rule in run]


class Closing(msgspec.Struct, frozen=True):
    """Alerts to close (by alias): every group that held them let go, at event time `time`;
    `rules` are the rules of those groups, and `reasons`, if any, say why each let go: its group
    recovered (""), or a reload took away the rule (`rule removed`, `rule disabled`, `rule
    changed`), or the state limits forgot its group (`state limit`)."""

    aliases: tuple[str, ...]
    rules: tuple[str, ...]
    time: float
    reasons: tuple[str, ...] = ()
