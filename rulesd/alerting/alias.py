"""The alias of an alert: what OpsGenie folds repeats by, and what closing an alert names.

Pure, and apart from the payload, because the engine needs it too: a rule that closes its
alerts later (resolve, absence) remembers the aliases they went out with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from rulesd.interned import Memo
from rulesd.printable import one_line
from rulesd.rules.fields import MISSING, Event, key_text
from rulesd.rules.model import Rule

ALIAS_MAX = 512  # OpsGenie's limit, in characters
# Aliases a close cannot name: it puts the alias in its URL as a path segment, and an HTTP stack
# takes these for the directory itself or its parent (percent-encoded too, as RFC 3986 says);
# the close then went to another path, its 404 counted as done, and the alert stayed open.
_DOT_SEGMENTS = frozenset((".", ".."))


def alert_alias(rules: tuple[Rule, ...], event: Event) -> str:
    """The alias of the alert for `rules` (lead first) firing on `event`: the lead rule's
    `alert.alias` rendered, else `default_alias`; a stable hash beyond ALIAS_MAX characters."""
    lead = rules[0]  # (once: CPython 3.11 specialises no subscript of a tuple subclass, `Interned`)
    spec = lead.alert
    # (`group_getters`, a field, is empty when `group_by`, a property, a call per alert, is)
    if not spec.alias and not lead.group_getters:  # the rules' names alone, whatever the event
        return _names_alias(rules)
    alias = spec.alias.render(event).strip() if spec.alias else ""
    if alias in _DOT_SEGMENTS:
        alias = ""  # no alias: a close names it as a path segment, and `/v2/alerts/../close` is `/v2/close`
    return bounded(alias or default_alias(rules, event))


def bounded(alias: str) -> str:
    """`alias` on one line, hashed beyond ALIAS_MAX characters."""
    # Control characters escaped (see `rulesd.alerting.payload`): in the default alias JSON has
    # escaped C0 already, not DEL, C1 or the line separators.
    alias = one_line(alias)
    if len(alias) > ALIAS_MAX:
        alias = "rulesd-sha256: " + hashlib.sha256(alias.encode()).hexdigest()
    return alias


def default_alias(rules: tuple[Rule, ...], event: Event, text: Callable[[Any], str] = key_text) -> str:
    """`rulesd: <names, sorted>` then, when the lead rule groups, `: <group as compact JSON>`.

    The group is a JSON object of the lead rule's `group_by` fields (in their order) and
    values, a missing field left out. JSON keeps apart what a joined text would not:
    (`user="a, b"`, `src="c"`) and (`user="a"`, `src="b, c"`), `"1"` and `1`, `""`, `null` and
    a missing field, so two groups of the engine never share an alias. `text` writes a value
    (an earlier rulesd's way: `rekey.earlier_alias`).
    """
    alias = _names_text(rules)
    lead = rules[0]
    if lead.group_getters:  # (as `alert_alias`: a field, not the property `group_by`)
        fields = [
            key_text(path) + ":" + text(value)
            for path, get in zip(lead.group_by, lead.group_getters, strict=True)
            if (value := get(event)) is not MISSING
        ]
        alias += ": {" + ",".join(fields) + "}"
    return alias


# Keyed by the rules tuple, which the engine shares between firings of the same rules: dozens
# of rules alike fire together again and again, and their names need sorting and joining once.
NAMES_KEPT = 1024


def _names(rules: tuple[Rule, ...]) -> tuple[str, ...]:
    # One plain tuple per tuple of rules (the collector stops tracking a tuple of texts alone,
    # and would walk an `Interned` at every collection).
    return tuple([rule.name for rule in rules])


def _sorted_names(rules: tuple[Rule, ...]) -> str:
    return "rulesd: " + ", ".join(sorted(rule_names(rules)))


def _names_only(rules: tuple[Rule, ...]) -> str:
    return bounded(_names_text(rules))


def _joined(rules: tuple[Rule, ...]) -> str:
    return ", ".join(rule_names(rules))


_MEMOS = (
    Memo(_names, NAMES_KEPT),
    Memo(_sorted_names, NAMES_KEPT),
    Memo(_names_only, NAMES_KEPT),
    Memo(_joined, NAMES_KEPT),
)
# `rule_names(rules)`: the names of `rules`, in their order.
rule_names = _MEMOS[0].__getitem__
_names_text = _MEMOS[1].__getitem__
# The alias of `rules` whose lead has neither an alias nor a group: its names (hashed, beyond
# ALIAS_MAX, as they are once dozens of rules alike fire together).
_names_alias = _MEMOS[2].__getitem__
# `joined_names(rules)`: the names of `rules`, in their order, joined by ", " (replay's text
# line): keyed by the rules' tuple, hashed by its identity, not by the names' (a tuple of texts
# hashes every name at each lookup).
joined_names = _MEMOS[3].__getitem__


def forget() -> None:
    """Let go of every tuple of rules remembered here (see `payload.forget_rules`)."""
    for memo in _MEMOS:
        memo.clear()
