"""Group keys saved by an earlier rulesd, made again as this one makes them.

Up to this version a group key wrote a whole float as JSON writes it (`1.0`, `-0.0`, `1e+20`),
so `1` and `1.0`, which every condition finds equal, made two groups (`fields.key_text` now
writes both `1`). A saved state is read with each group's key, and each value a distinct or
new_value group keeps as key text, written again by `key_text`; groups that then share a key
are merged (`merged_state`), so that an upgrade neither pages again for them nor loses one.
Pure: it takes and returns saved values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from rulesd.alerting.alias import bounded, default_alias
from rulesd.engine.holders import RELEASED, merged
from rulesd.engine.state import (
    ABSENCE,
    DISTINCT,
    NEW_VALUE,
    OPEN,
    SEQUENCE,
    THROTTLE,
    WINDOW,
    restored_value,
    saved_value,
)
from rulesd.jsontext import deep
from rulesd.rules.fields import MISSING, Event, group_key, integer_text, key_text, sorted_json
from rulesd.rules.model import Rule

# The first characters of a key text that may be written otherwise now: a number, a list or an
# object (a text, a boolean, null and a missing field are written as they always were).
_NUMBERS_FIRST = frozenset("-0123456789[{")


def rekeyed_text(text: str) -> str:
    """A key text (a part of a group key, or a value kept as key text) as `key_text` writes
    its value now: the same text unless it holds a number written otherwise before."""
    if text[:1] not in _NUMBERS_FIRST or integer_text(text):
        return text  # (an integer is written as it was)
    # json, not orjson: an integer beyond 64 bits stays exact (orjson reads it as a float)
    return key_text(deep(json.loads, text))


def rekeyed_parts(parts: list[str]) -> list[str]:
    """A saved key's parts as `key_text` writes them now (`parts` itself if none changes)."""
    new = [rekeyed_text(part) for part in parts]
    return parts if new == parts else new


def rekeyed_alias(alias: str) -> str:
    """A default alias (`rulesd: <names>: <group as JSON>`) with its group's values as
    `key_text` writes them now; any other alias as it is. (No rule name holds `: {`, so the
    first one begins the group.)"""
    at = alias.find(": {")
    if at < 0 or not alias.startswith("rulesd: ") or not alias.endswith("}"):
        return alias
    try:
        group = deep(json.loads, alias[at + 2 :])
    except ValueError:  # (a hash, or a value `bounded` escaped)
        return alias
    if type(group) is not dict:
        return alias
    # (bounded as the alias is made: its characters escaped again, hashed if it grew too long)
    return bounded(alias[: at + 2] + "{" + ",".join(key_text(k) + ":" + key_text(v) for k, v in group.items()) + "}")


def earlier_text(value: Any) -> str:
    """A value as an earlier rulesd wrote it in a key or a default alias: its compact JSON,
    a whole float as JSON writes it (`1.0`, `1e+20`)."""
    return key_text(MISSING) if value is MISSING else sorted_json(value)


def earlier_alias(rules: tuple[Rule, ...], event: Event) -> str | None:
    """The default alias an earlier rulesd gave the alert of `rules` firing on `event` (None
    where the lead rule has an alias of its own, rendered as before): the one an alert open
    since before the upgrade went out with where `rekeyed_alias` cannot read it back, hashed
    beyond ALIAS_MAX characters, when the event writes its values as the one that opened it."""
    if rules[0].alert.alias:
        return None
    return bounded(default_alias(rules, event, earlier_text))


def rekeyed_values(value: Any) -> Any:
    """A distinct or new_value group's saved values (key text -> when last seen) with their
    texts as `key_text` writes them now; two that become one keep the later time."""
    if type(value) is not dict or all(rekeyed_text(text) == text for text in value):
        return value
    out: dict[str, float] = {}
    for text, seen in value.items():
        new = rekeyed_text(text)
        out[new] = max(seen, out.get(new, seen))
    return out


def merged_state(kind: str, kept: Any, other: Any) -> Any:
    """The saved state of two groups that an earlier rulesd kept apart and this one makes one,
    each in its saved form: what both counted, and every alert either holds, kept."""
    if kind == THROTTLE:
        return max(kept, other)  # throttled from the later page
    if kind == WINDOW:
        return sorted([*kept, *other])  # the events of both count
    if kind in (DISTINCT, NEW_VALUE):
        out = dict(kept)
        for text, seen in other.items():
            out[text] = max(seen, out.get(text, seen))
        return out
    if kind == OPEN:
        later, earlier = (kept, other) if kept["last"] >= other["last"] else (other, kept)
        return _with_aliases(later, earlier)
    if kind == ABSENCE:
        # A silence that paged is kept (the group's next event closes its alert, as a silence
        # ends); of two, or of none, the group seen last.
        ranked = sorted([kept, other], key=lambda st: (bool(st["open"] and st["aliases"]), st["last"]))
        return _with_aliases(ranked[1], ranked[0]) if ranked[0]["open"] else ranked[1]
    if kind == SEQUENCE:
        return max(kept, other, key=lambda st: (st["step"], st["count"], st["start"]))  # the further on
    return kept


def _with_aliases(st: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """`st` holding `other`'s aliases too, and its notes of the rules that let go of them."""
    out = dict(st)
    out["aliases"] = _union(st.get("aliases", []), other.get("aliases", []))
    notes = dict(st.get(RELEASED, {}))
    for alias, more in other.get(RELEASED, {}).items():
        notes[alias] = merged(notes.get(alias, []), more)
    if notes:
        out[RELEASED] = notes
    return out


def _union(first: list[str], more: Iterable[str]) -> list[str]:
    return [*first, *(alias for alias in more if alias not in first)]


def restored_groups(kind: str, rows: Iterable[list[Any]]) -> tuple[dict[str, Any], bool]:
    """A rule's saved groups of `kind` ([key parts, saved value] each) as the engine keeps them,
    and whether any key or kept value text was written otherwise before."""
    rows = list(rows)
    groups = {group_key(parts): restored_value(kind, value) for parts, value in rows}
    if not _written_otherwise(groups, kind):  # (a state this rulesd saved: read as fast as before)
        return groups, False
    groups = {}
    changed = False
    for parts, saved in rows:
        new = rekeyed_parts(parts)
        value = rekeyed_values(saved) if kind in (DISTINCT, NEW_VALUE) else saved
        changed |= new is not parts or value is not saved
        key = group_key(new)
        if key in groups:  # (only a key made again can meet another)
            value = merged_state(kind, saved_value(kind, groups[key]), value)
        groups[key] = restored_value(kind, value)
    return groups, changed


# A key text that may be written otherwise now (`rekeyed_text`), after a line break or
# KEY_SEPARATOR: a number that is not an integer, a list or an object. (JSON escapes a line
# break or a control character inside a text, so neither stands inside a part.) Begun with a
# character class, which the search looks for fast: ~130 ns a key, a tenth of reading it.
_OTHERWISE = re.compile(r"[\n\x1f](?!-?[0-9]+[\x1f\n])[-0-9\[{]")


def _written_otherwise(groups: dict[str, Any], kind: str) -> bool:
    """Whether a key of `groups`, or a value text a distinct or new_value group keeps, may be
    written otherwise now: one search of them all, in lines, rather than a call per text."""
    if _OTHERWISE.search("\n" + "\n".join(groups) + "\n"):
        return True
    if kind not in (DISTINCT, NEW_VALUE):
        return False
    texts = [v[0] if type(v) is tuple else "\n".join(v) for v in groups.values()]
    return _OTHERWISE.search("\n" + "\n".join(texts) + "\n") is not None
