"""Where a group stands, read from the engine's state without changing it: for `rulesd state`
(`group_facts`: what a saved group holds, as plain values) and `rulesd explain --events`
(`outcome`: what one event did to its group, from the group's state before and after).

Pure: the state values are those `core` keeps (see `state` for the kinds), times are event
times, and `clock` is the engine's clock they are seen from.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson

from rulesd.engine.core import EXPECTED, GroupKeys
from rulesd.engine.state import (
    ABSENCE,
    DISTINCT,
    NEW_VALUE,
    OPEN,
    RULE,
    SEQUENCE,
    THROTTLE,
    WINDOW,
    EngineState,
    seen_values,
    window_times,
)
from rulesd.engine.values import NO_GROUP, GroupKey
from rulesd.jsontext import deep
from rulesd.rules.fields import MISSING, Event, integer_text, key_parts, key_text
from rulesd.rules.model import Absence, Distinct, NewValue, Rule, Sequence, Threshold
from rulesd.times import span, when

Snapshot = dict[str, Any]  # kind of state -> the group's value (RULE: the rule's own)


def snapshot(state: EngineState, rule: str, group: GroupKey) -> Snapshot:
    """A copy of everything the state holds for one group of a rule, by kind."""
    found: Snapshot = {}
    for kind, by_rule in state.tables.items():
        value = by_rule.get(rule, {}).get(NO_GROUP if kind == RULE else group)
        if value is not None:
            found[kind] = copy.deepcopy(value)
    return found


# ---- what one event did -------------------------------------------------------------------


def outcome(rule: Rule, event: Event, time: float, before: Snapshot, after: Snapshot, fired: bool) -> str:
    """What the event (matching `rule`, at event `time`) did to its group: whether it fired
    and, if not, how far the group is (`not yet: 2 of 3 in 5m`) or what held it back.
    `before` and `after` are the group's snapshots around the engine's evaluation of it;
    `fired`, whether the engine fired the rule on it. Times are shown from `time`."""
    kind = rule.kind
    if isinstance(kind, Threshold):
        return _threshold(rule, kind, time, after, fired)
    if isinstance(kind, Distinct):
        return _distinct(rule, kind, event, time, after, fired)
    if isinstance(kind, Sequence):
        return _sequence(rule, kind, event, time, before, after, fired)
    if isinstance(kind, Absence):
        return _absence(kind, time, before, after)
    if isinstance(kind, NewValue):
        return _new_value(rule, kind, event, time, before, after, fired)
    return "fires" if fired else _held(rule, time, after, "")


def _held(rule: Rule, time: float, after: Snapshot, reached: str) -> str:
    """A group whose kind would have fired, held back by the throttle."""
    last = after.get(THROTTLE)
    until = when(last + rule.throttle, time) if last is not None and rule.throttle else "?"
    return f"{reached}, but throttled until {until}" if reached else f"throttled until {until}"


def _threshold(rule: Rule, kind: Threshold, time: float, after: Snapshot, fired: bool) -> str:
    reached = f"threshold reached, {kind.count} of {kind.count}"
    if fired:
        return f"fires: {reached}"
    times = after.get(WINDOW)
    if times is not None:  # still counting; else it reached its count, which started again
        return f"not yet: {len(window_times(times))} of {kind.count} in {span(kind.window)}"
    return _held(rule, time, after, reached)


def _distinct(rule: Rule, kind: Distinct, event: Event, time: float, after: Snapshot, fired: bool) -> str:
    reached = f"{kind.count} of {kind.count} different {kind.field}"
    if kind.value(event) is MISSING:
        return f"not counted: the event has no {kind.field}"
    if fired:
        return f"fires: {reached}"
    values = after.get(DISTINCT)
    if values is not None:
        seen = seen_values(values).values()
        cutoff = max(time, *seen) - kind.window  # (a late event: the window ends at the latest time)
        different = sum(1 for last in seen if last > cutoff)
        return f"not yet: {different} of {kind.count} different {kind.field} in {span(kind.window)}"
    return _held(rule, time, after, reached)


def _sequence(
    rule: Rule, kind: Sequence, event: Event, time: float, before: Snapshot, after: Snapshot, fired: bool
) -> str:
    steps = len(kind.steps)
    if fired:
        return f"fires: step {steps} of {steps}"
    was, now = before.get(SEQUENCE), after.get(SEQUENCE)
    if was is not None and was.get("due") is not None and now is None:
        return "ends the wait: the absent step's event came, so the group starts again"
    if now is None:
        return _held(rule, time, after, f"step {steps} of {steps}")
    if was is not None and int(was["step"]) > 0 and kind.steps[int(was["step"])].match(event):
        done = was.get("after", was["start"])
        if time < done:  # a late line: it happened before the step it would follow
            step = int(was["step"])
            return f"not counted for step {step + 1}: dated before step {step} was done ({when(done, time)}); " + (
                sequence_text(kind, now, time)
            )
    return "not yet: " + sequence_text(kind, now, time)


def sequence_text(kind: Sequence, st: dict[str, Any], clock: float) -> str:
    """`at step 2 of 3`, with the events counted for a counted step, or the wait of an
    absent step (`step 1 of 2 done; fires at … unless its event comes`)."""
    steps = len(kind.steps)
    if st.get("due") is not None:
        due = when(st["due"], clock)
        return f"step {steps - 1} of {steps} done; fires at {due} unless the absent step's event comes"
    step = int(st["step"])
    got = len(st["firsts"]) if step == 0 else int(st["count"])
    need = kind.steps[step].count
    return f"at step {step + 1} of {steps}" + (f", {got} of {need} events" if need > 1 else "")


def _absence(kind: Absence, time: float, before: Snapshot, after: Snapshot) -> str:
    st = after.get(ABSENCE)
    last = st["last"] if st is not None else time
    due = when(last + kind.window, time)
    was = before.get(ABSENCE)
    if was is not None and was["open"]:
        if st is not None and st["open"]:  # a late line: dated a window or more before the clock
            late = f"dated {span(kind.window)} or more before the clock"
            return f"seen late: {late}, so still silent (its alert stays open)"
        return f"seen: ends the silence (its alert closes); fires again if silent until {due}"
    if time < last:  # a late line, older than what the group saw last
        return f"seen late: dated before the group's last event ({when(last, time)}), so it changes nothing"
    return f"seen: its silence timer starts again (fires if silent until {due})"


def _new_value(
    rule: Rule, kind: NewValue, event: Event, time: float, before: Snapshot, after: Snapshot, fired: bool
) -> str:
    parts = [read(event) for read in kind.values]
    if MISSING in parts:
        lacking = ", ".join(f for f, v in zip(kind.fields, parts, strict=True) if v is MISSING)
        return f"not counted: the event has no {lacking}"
    if fired:
        return "fires: new value"
    last = seen_values(before.get(NEW_VALUE)).get(value_text(parts))
    if last is not None and (kind.forget is None or time - last < kind.forget):
        return f"seen before (last {when(last, time)})"
    since = (after.get(RULE) or {}).get("since", time)
    if time - since < kind.learn:
        return f"new value, but learning until {when(since + kind.learn, time)}"
    return _held(rule, time, after, "new value")


def value_text(parts: list[Any]) -> str:
    """A combination of values as the engine keeps it in a new_value group."""
    return GroupKeys().text(parts[0]) if len(parts) == 1 else key_text(parts)


# ---- what a saved group holds -------------------------------------------------------------


def group_facts(rule: Rule | None, kind: str, value: Any, clock: float) -> dict[str, Any]:
    """What one kind of a group's saved state says, as plain values: times are event times in
    epoch seconds, values are key texts (JSON), None is unknown. `rule` is the rule as loaded
    now, None when it is not (the facts then say only what the state holds). Counts in a
    window count what is still in it at `clock`."""
    spec = rule.kind if rule is not None else None
    if kind == WINDOW:
        window = spec.window if isinstance(spec, Threshold) else None
        live = [t for t in window_times(value) if window is None or t > clock - window]
        needed = spec.count if isinstance(spec, Threshold) else None
        return {"count": len(live), "needed": needed, "window_seconds": window, "oldest": live[0] if live else None}
    if kind == DISTINCT:
        window = spec.window if isinstance(spec, Distinct) else None
        seen = {v: t for v, t in seen_values(value).items() if window is None or t > clock - window}
        return {
            "field": spec.field if isinstance(spec, Distinct) else None,
            "distinct": len(seen),
            "needed": spec.count if isinstance(spec, Distinct) else None,
            "window_seconds": window,
            "values": _by_recency(seen),
        }
    if kind == SEQUENCE:
        return _sequence_facts(spec if isinstance(spec, Sequence) else None, value)
    if kind == ABSENCE:
        window = spec.window if isinstance(spec, Absence) else None
        fires = value["last"] + window if window is not None and not value["open"] else None
        # An expected group no event has come for: its time is when it was first watched, not
        # an event's (shown as one, it said that a host that never spoke had been seen).
        never = bool(value.get(EXPECTED))
        return {
            "last_seen": None if never else value["last"],
            "expected_since": value["last"] if never else None,
            "silent": value["open"],
            "fires_at": fires,
            "open_alerts": value["aliases"],
        }
    if kind == NEW_VALUE:
        known = seen_values(value)
        return {"known": len(known), "values": _by_recency(known)}
    if kind == THROTTLE:
        until = value + rule.throttle if rule is not None and rule.throttle else None
        return {"last_fired": value, "throttled_until": until if until is not None and until > clock else None}
    if kind == OPEN:
        closes = value["last"] + rule.resolve if rule is not None and rule.resolve is not None else None
        return {"open_alerts": value["aliases"], "last_fired": value["last"], "closes_at": closes}
    return {}


def _sequence_facts(kind: Sequence | None, st: dict[str, Any]) -> dict[str, Any]:
    step = int(st["step"])
    started = st["start"] if step > 0 else (st["firsts"] or [None])[0]
    within = kind.within if kind is not None else None
    return {
        "step": step + 1,
        "steps": len(kind.steps) if kind is not None else None,
        "events": len(st["firsts"]) if step == 0 else int(st["count"]),
        "needed": kind.steps[step].count if kind is not None and step < len(kind.steps) else None,
        "started": started,
        # From then on the next event counts for the first step again (`within` is over).
        "expires_at": started + within if within is not None and started is not None and not st.get("due") else None,
        "fires_at": st.get("due"),
    }


def _by_recency(values: dict[str, float]) -> list[tuple[str, float]]:
    """Values (as key texts) with when each was last seen, the most recent first."""
    return sorted(values.items(), key=lambda item: (-item[1], item[0]))


def learning_until(rule: Rule, rule_state: dict[str, Any] | None) -> float | None:
    """When a new_value rule stops only learning (None: not a new_value rule, or unknown)."""
    kind = rule.kind
    if not isinstance(kind, NewValue) or rule_state is None or "since" not in rule_state:
        return None
    return float(rule_state["since"]) + kind.learn


def key_value(text: str) -> Any:
    """A part of a group key (or a value kept as key text) as the value it stands for: an
    integer beyond 64 bits (a whole float's key, `1e20`) exactly, as the alias writes it, not
    as the float orjson reads it as, inside a list or an object too."""
    if text == key_text(MISSING):
        return MISSING
    if text[:1] in ("[", "{"):  # (json keeps an integer in it exact; nested as deep as events go)
        return deep(json.loads, text)
    value = orjson.loads(text)
    if type(value) is float and integer_text(text):
        return int(text)
    return value


def group_text(paths: tuple[str, ...], key: GroupKey) -> str:
    """`host="pay-1", user=missing`: a group by its group_by values (by position if the
    paths are unknown)."""
    parts = key_parts(key)
    shown = ["missing" if part == key_text(MISSING) else part for part in parts]
    if len(paths) != len(parts):
        return "[" + ", ".join(shown) + "]"
    return ", ".join(f"{path}={text}" for path, text in zip(paths, shown, strict=True))
