"""Which groups hold each open alert's alias: an alias is closed only when the last one lets go.

Several groups may hold one alias: the rules that fired together on an event share one alert
(its alias names them all), and an `alert.alias` template may give several groups, or rules,
the same text. A group that lets go of an alias another group still holds leaves a note of it
(`released`: alias -> [[rule, why], ...]) in that group's state, so that the close, when the
last holder lets go, names every rule that resolved it. The notes are state like any other:
saved in the same transaction as the closes and the groups, and shared through Redis.
"""

from __future__ import annotations

from typing import Any

from rulesd.engine.state import ABSENCE, OPEN
from rulesd.engine.values import GroupKey

Holder = tuple[str, str, GroupKey]  # (kind, rule, group): an open group or an absence's silent one
Note = list[str]  # [rule, why] ("" for a group that recovered)
RELEASED = "released"  # a holder's notes of those that let go of its aliases before it


def held(value: Any) -> list[str]:
    """The aliases a group's state holds: an open group's, or a silent absence's that paged."""
    if type(value) is not dict or not value.get("open", True):
        return []
    aliases: list[str] = value.get("aliases", [])
    return aliases


def merged(notes: list[Note], more: list[Note]) -> list[Note]:
    """`notes` and then those of `more` not in it already."""
    out = list(notes)
    for note in more:
        if note not in out:
            out.append(note)
    return out


class Holders:
    """An index of the groups holding each alias, built from the state when first asked and
    then kept up to date; an entry the state no longer bears out is dropped when met."""

    __slots__ = ("_by_alias",)

    def __init__(self) -> None:
        self._by_alias: dict[str, set[Holder]] | None = None

    def forget(self) -> None:
        """The state was replaced: built again when next asked."""
        self._by_alias = None

    def add(self, alias: str, holder: Holder) -> None:
        if self._by_alias is not None:
            self._by_alias.setdefault(alias, set()).add(holder)

    def replaced(self, holder: Holder, old: Any, new: Any) -> None:
        """A group's state changed from `old` to `new` (another process committed it)."""
        if self._by_alias is None:
            return
        for alias in held(old):
            self._discard(alias, holder)
        for alias in held(new):
            self.add(alias, holder)

    def other(self, alias: str, holder: Holder, tables: dict[str, Any]) -> Holder | None:
        """A group other than `holder` that still holds `alias`, if any."""
        by_alias = self._built(tables)
        self._discard(alias, holder)
        found = by_alias.get(alias)
        while found:
            candidate = next(iter(found))
            kind, rule, key = candidate
            if alias in held(tables.get(kind, {}).get(rule, {}).get(key)):
                return candidate
            found.discard(candidate)  # it let go meanwhile (a state replaced, an alias dropped)
        by_alias.pop(alias, None)
        return None

    def _discard(self, alias: str, holder: Holder) -> None:
        assert self._by_alias is not None
        found = self._by_alias.get(alias)
        if found is not None:
            found.discard(holder)
            if not found:
                del self._by_alias[alias]

    def _built(self, tables: dict[str, Any]) -> dict[str, set[Holder]]:
        if self._by_alias is None:
            self._by_alias = {}
            for kind in (OPEN, ABSENCE):
                for rule, groups in tables.get(kind, {}).items():
                    for key, value in groups.items():
                        for alias in held(value):
                            self._by_alias.setdefault(alias, set()).add((kind, rule, key))
        return self._by_alias
