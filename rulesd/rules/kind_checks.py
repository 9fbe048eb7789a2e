"""Correlation rules whose parts, each valid alone, make the rule never fire or page less
than it seems to.

The schema checks each key of a kind; what it cannot see is how the kind's fields meet the
rule's `match` and its throttle. A distinct rule counting a field its match lets have only two
values never reaches `count: 3`; a field the match requires to be missing (`exists: false`)
has no value to count, to learn as new, or to group by (every event falls in the group of the
missing field); and an alert that `resolve` closes sooner than the throttle lets the rule page
again leaves a problem that comes back meanwhile unpaged. Where the rule can then never fire it
is an error, else a warning, at the part to change, saying what to write.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from rulesd.document import JsonPath
from rulesd.rules.conditions import ConditionError, conjunct_items, resolved_matcher
from rulesd.rules.fields import key_text
from rulesd.rules.lists import Lists
from rulesd.rules.model import Absence, Distinct, Kind, NewValue
from rulesd.rules.value_kinds import kind_of
from rulesd.times import span

Mistake = tuple[JsonPath, str, bool]  # (its path in the rule, the message, whether only a warning)


def kind_mistakes(
    raw: dict[str, Any], key: str, kind: Kind, throttle: float | None, resolve: float | None, lists: Lists
) -> Iterator[Mistake]:
    """The mistakes of the compiled rule `raw` whose kind, written under `key`, is `kind`."""
    match = raw.get("match")
    if isinstance(match, dict):
        yield from _against_match(match, key, kind, lists)
    if resolve is not None and throttle is not None and resolve < throttle:
        yield (
            ("resolve", "after"),
            f"the alert closes {span(resolve)} after the group's last firing, but the throttle holds the group's "
            f"firings back for {span(throttle)} after the one paged, and a firing held back while no alert is open "
            f"opens none: a problem that comes back after the close and within the throttle is not paged. Write "
            f"after: {span(throttle)} (at least the throttle), or a shorter throttle",
            True,
        )


def _against_match(match: dict[str, Any], key: str, kind: Kind, lists: Lists) -> Iterator[Mistake]:
    items = conjunct_items(match, ("match",))
    missing = {field for field, value, _ in items if isinstance(value, dict) and value.get("exists") is False}
    for i, field in enumerate(kind.group_by):
        if field in missing:
            yield (
                (key, "group_by", i),
                f"the match requires {field!r} to be missing (exists: false), so every event falls in one group, "
                f"that of the missing field: group by a field the matched events have, or leave {field!r} out",
                True,
            )
    counted: list[tuple[JsonPath, str]] = []
    if isinstance(kind, Distinct):
        counted.append(((key, "field"), kind.field))
    if isinstance(kind, NewValue):
        counted.extend(((key, "fields", i), field) for i, field in enumerate(kind.fields))
    for path, field in counted:
        if field in missing:
            yield (
                path,
                f"the match requires {field!r} to be missing (exists: false), so no matched event has a value of "
                f"it and the rule never fires: {_what(kind)} a field the matched events have",
                False,
            )
    if isinstance(kind, Absence):
        yield from _unexpected_groups(items, key, kind, lists)
    if isinstance(kind, Distinct) and kind.field not in missing:
        allowed = _allowed_values(items, kind.field, lists)
        if allowed is not None and len(allowed) < kind.count:
            shown = ", ".join(sorted(str(v) for _, v in allowed))
            yield (
                (key, "count"),
                f"the match lets {kind.field!r} have only {len(allowed)} value(s) ({shown}), so {kind.count} "
                f"different values are never counted and the rule never fires: write count: {len(allowed)} or "
                f"less, or count another field",
                False,
            )


def _unexpected_groups(
    items: list[tuple[str, Any, JsonPath]], key: str, kind: Absence, lists: Lists
) -> Iterator[Mistake]:
    """A warning when the match names the only groups the absence can have (`host: [web-1,
    web-2]`, grouped by host) and `expect` leaves some out: a group never seen is never watched,
    so one silent from the start (down before rulesd started) is never paged."""
    if len(kind.group_by) != 1:
        return
    field = kind.group_by[0]
    allowed = sorted(_allowed_values(items, field, lists) or (), key=str)
    # Each value as the engine keys its group: the expected events nest a dotted field
    # (`labels.host` under `labels`), so their keys, not a lookup in them, say what is expected.
    expected = set(kind.expect)
    left = [json.dumps(v) for _, v in allowed if key_text(v) not in expected]
    if left:
        groups = ", ".join(f"{{{field}: {json.dumps(v)}}}" for _, v in allowed)
        unexpected = f"{', '.join(left)} {'is' if len(left) == 1 else 'are'} not expected"
        if len(left) == len(allowed) > 1:  # (rather than the same values listed again)
            unexpected = "none of them is expected"
        yield (
            (key, "group_by", 0),
            f"the match lets {field!r} be only {', '.join(json.dumps(v) for _, v in allowed)}, and {unexpected}: "
            "a group is watched only once seen or expected, so one silent since rulesd "
            f"started is never paged. Write expect: [{groups}]",
            True,
        )


def _what(kind: Kind) -> str:
    return "count" if isinstance(kind, Distinct) else "learn the values of"


def _allowed_values(items: list[tuple[str, Any, JsonPath]], field: str, lists: Lists) -> set[tuple[str, Any]] | None:
    """The values (each with its kind: 1 and true are two values) that the match's tests of
    `field` that must hold let it have, if one of them lists them: a value, a list, `equals`
    or `in` (not ignoring case, which lets more texts through); None if none does."""
    allowed: set[tuple[str, Any]] | None = None
    for name, written, where in items:
        if name != field:
            continue
        try:
            matcher = resolved_matcher(written, where, lists)
        except ConditionError:  # (said where the condition is compiled)
            return None
        values = _listed(matcher)
        if values is not None:
            mine = {(str(kind_of(v)), v) for v in values}
            allowed = mine if allowed is None else allowed & mine
    return allowed


def _listed(matcher: Any) -> list[Any] | None:
    if isinstance(matcher, list):
        return matcher
    if not isinstance(matcher, dict):
        return [matcher]
    if matcher.get("nocase") is True:
        return None
    if "equals" in matcher:
        return [matcher["equals"]]
    options = matcher.get("in")
    return options if isinstance(options, list) else None
