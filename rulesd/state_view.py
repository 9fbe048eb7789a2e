"""What `rulesd state` prints: the engine's saved per-group state, rule by rule, as text or
JSON. Pure: it takes the saved state (`StateBackend.load_engine_state`), the rules as loaded
now and the wall clock, and returns values.

Times are seen from the engine's clock: the latest event time the daemon saved, advanced by
the wall clock since it was saved (as the daemon's clock runs on while no event comes); with
no clock saved, the wall clock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import msgspec

from rulesd.engine.holders import held
from rulesd.engine.progress import group_facts, group_text, key_value, learning_until
from rulesd.engine.state import ABSENCE, OPEN, RULE, EngineState
from rulesd.engine.values import NO_GROUP, GroupKey
from rulesd.rules.fields import MISSING, key_parts
from rulesd.rules.model import Absence, Distinct, NewValue, Rule, RuleSet, Sequence, Threshold
from rulesd.times import relative, rfc3339, span, when

VALUES_SHOWN = 5  # distinct or known values listed per group in text
_TIMES = (
    "oldest",
    "last_fired",
    "throttled_until",
    "started",
    "expires_at",
    "fires_at",
    "last_seen",
    "expected_since",
    "closes_at",
)


class Holder(msgspec.Struct, frozen=True):
    """A group that holds an open alert's alias, and until when (None: not a time; an absence's
    silent group holds it until its events return)."""

    rule: Rule | None
    name: str
    key: GroupKey
    until: float | None
    silent: bool  # an absence's silent group


class WrittenStep(msgspec.Struct, frozen=True):
    """A sequence step's condition as written in the rule file, and where (`path:line:col`)."""

    condition: Any
    location: str


CONDITION_SHOWN = 80  # characters of a step's condition in text; the JSON has it whole


class GroupState(msgspec.Struct, frozen=True):
    """One group of a rule: its key, what its state says (`progress.group_facts`, merged) and
    the other groups holding its open alerts' aliases (the alert closes when the last lets go)."""

    key: GroupKey
    facts: dict[str, Any]
    shared: tuple[tuple[str, Holder], ...] = ()  # (alias, another group holding it)


class RuleState(msgspec.Struct, frozen=True):
    """A rule's saved state: `rule` as loaded now (None: not in the rule files, or changed
    there since the state was saved, so the daemon drops the state at its next reload)."""

    name: str
    rule: Rule | None
    groups: tuple[GroupState, ...]
    learning_until: float | None = None


class StateView(msgspec.Struct, frozen=True):
    """All of it, and the clock its times are seen from (`engine`: the engine's, else now)."""

    clock: float
    engine: bool
    rules: tuple[RuleState, ...]
    rules_loaded: bool = True  # False: the rule files did not load, every state is shown as saved
    values_per_group: int | None = None  # the config's limit on a new_value group's values (None: not known)


def engine_clock(saved: dict[str, Any] | None, now: float) -> float | None:
    """The engine's clock at wall time `now`, from the saved state (None: none saved)."""
    if not saved or saved.get("clock") is None:
        return None
    clock, saved_at = float(saved["clock"]), saved.get("clock_saved")
    return clock + max(0.0, now - float(saved_at)) if saved_at is not None else clock


def state_view(
    saved: dict[str, Any] | None,
    ruleset: RuleSet | None,
    now: float,
    only: str | None = None,
    steps: Mapping[str, tuple[WrittenStep, ...]] = MappingProxyType({}),
    values_per_group: int | None = None,
) -> StateView:
    """The view of `saved` (in `EngineState.to_json` form, or None: nothing saved), for the
    rules of `ruleset` (None: unknown), at wall time `now`; `only`: one rule by name; `steps`:
    each sequence rule's steps as written, to say what each group waits for; `values_per_group`:
    the limit, to say which new_value groups are at it."""
    clock = engine_clock(saved, now)
    state = EngineState.from_json(saved or {})
    loaded = ruleset.by_name() if ruleset is not None else {}
    names = [r.name for r in ruleset.rules] if ruleset is not None else []
    saved_names = sorted({n for kind, by_rule in state.tables.items() if kind != RULE for n in by_rule})
    names += [n for n in saved_names if n not in loaded]
    if only is not None:
        names = [n for n in names if n == only] or [only]
    at = clock if clock is not None else now
    current = {n: r for n, r in loaded.items() if state.fingerprints.get(n, r.fingerprint) == r.fingerprint}
    holders = _holders(state, current)
    rules = []
    for name in names:
        rule = current.get(name)  # (None for a rule changed: the state belongs to the rule as it was)
        rules.append(_rule_state(name, rule, state, at, holders, steps.get(name, ()) if rule else ()))
    shown = tuple(r for r in rules if r.groups or only is not None)
    return StateView(at, clock is not None, shown, ruleset is not None, values_per_group)


def _holders(state: EngineState, rules: dict[str, Rule]) -> dict[str, list[Holder]]:
    """Every group holding each open alert's alias (as `engine.holders` counts them)."""
    found: dict[str, list[Holder]] = {}
    for kind in (OPEN, ABSENCE):
        for name, groups in state.tables.get(kind, {}).items():
            rule = rules.get(name)
            for key, value in groups.items():
                resolve = rule.resolve if rule is not None and kind == OPEN else None
                until = value["last"] + resolve if resolve is not None else None
                for alias in held(value):
                    found.setdefault(alias, []).append(Holder(rule, name, key, until, kind == ABSENCE))
    return found


def _held_back(facts: dict[str, Any], clock: float) -> None:
    """A group whose timer its throttle holds back fires when the throttle ends: an absence's
    if still silent (or silent already: the page waits for it; a state saved by an earlier
    rulesd marked such a silence as open with no alert, and the daemon pages for it then too),
    a sequence's absent step if its event has not come by then."""
    until = facts.get("throttled_until")
    if until is None:
        return
    fires = facts.get("fires_at")
    if "step" in facts:
        if fires is not None and fires < until:
            facts["fires_at"] = until
        return
    if "silent" not in facts or facts["open_alerts"]:
        return
    if fires is None or fires < until:
        facts["silent"] = facts["silent"] or fires is None or fires <= clock
        facts["fires_at"] = until


def _rule_state(
    name: str,
    rule: Rule | None,
    state: EngineState,
    clock: float,
    holders: dict[str, list[Holder]],
    steps: tuple[WrittenStep, ...],
) -> RuleState:
    groups: dict[GroupKey, dict[str, Any]] = {}
    for kind, by_rule in state.tables.items():
        if kind == RULE:
            continue
        for key, value in by_rule.get(name, {}).items():
            facts = groups.setdefault(key, {})
            facts.update(group_facts(rule, kind, value, clock))
            if "step" in facts and steps and facts["step"] <= len(steps):
                # The step it waits for (the absent one: the event that ends the wait).
                facts["waits_for"] = msgspec.to_builtins(steps[facts["step"] - 1])
    for facts in groups.values():
        _held_back(facts, clock)
    learning = learning_until(rule, state.tables.get(RULE, {}).get(name, {}).get(NO_GROUP)) if rule else None
    shown = []
    for key, facts in sorted(groups.items()):
        shared = tuple(
            (alias, h)
            for alias in facts.get("open_alerts", ())
            for h in holders.get(alias, ())
            if (h.name, h.key) != (name, key)
        )
        shown.append(GroupState(key, facts, shared))
    return RuleState(name, rule, tuple(shown), learning)


# ---- as text ------------------------------------------------------------------------------


def view_text(view: StateView, now: float) -> str:
    """The text `rulesd state` prints."""
    if view.engine:
        lines = [f"engine clock: {rfc3339(view.clock)} (event time; times below are seen from it)"]
    else:
        lines = [f"engine clock: not saved yet; times below are seen from now, {rfc3339(now)}"]
    for rule_state in view.rules:
        lines.append(_rule_head(rule_state, view.rules_loaded))
        if rule_state.learning_until is not None and rule_state.learning_until > view.clock:
            until = when(rule_state.learning_until, view.clock)
            lines.append(f"  learning until {until}: new values are only recorded")
        for group in rule_state.groups:
            label = _group_label(rule_state.rule, group.key)
            facts = _facts_text(group.facts, view.clock, bool(group.shared))
            if view.values_per_group is not None and group.facts.get("known", 0) >= view.values_per_group:
                facts.append(
                    f"at limits.values_per_group ({view.values_per_group}): the values seen longest ago are "
                    "forgotten as new ones come, and page again when next seen"
                )
            if group.shared:
                facts.append(_shared_text(group, view.clock))
            lines.append(f"  {label}: {'; '.join(facts)}")
    if not view.rules:
        lines.append("no rule has any state")
    return "\n".join(lines)


def _group_label(rule: Rule | None, key: GroupKey) -> str:
    return group_text(rule.group_by if rule is not None else (), key) if key else "(one group)"


def _shared_text(group: GroupState, clock: float) -> str:
    """The other groups holding the group's aliases: the alert closes when the last lets go."""
    several = len(group.facts["open_alerts"]) > 1
    held_by = []
    for alias, h in group.shared:
        until = f" until {when(h.until, clock)}" if h.until is not None else ""
        until = " while it stays silent" if h.silent else until
        of = f"{alias} " if several else ""
        held_by.append(f"{of}also held by {h.name} {_group_label(h.rule, h.key)}{until}")
    return ", ".join(held_by) + ": the alert closes when the last group holding it lets go"


def _rule_head(rule_state: RuleState, rules_loaded: bool) -> str:
    rule, count = rule_state.rule, len(rule_state.groups)
    groups = f"{count} group{'s' if count != 1 else ''}"
    if rule is None and not rules_loaded:
        return f"{rule_state.name} (the rule files do not load: the state as it is): {groups}"
    if rule is None:
        return f"{rule_state.name} (not in the rule files as saved: the state as it is): {groups}"
    return f"{rule.name} ({kind_text(rule)}): {groups}"


def kind_text(rule: Rule) -> str:
    """`threshold 5 in 2m, group_by host, throttle 10m`: what makes the rule fire."""
    kind = rule.kind
    parts: list[str] = []
    if isinstance(kind, Threshold):
        parts.append(f"threshold {kind.count} in {span(kind.window)}")
    elif isinstance(kind, Distinct):
        parts.append(f"distinct {kind.field}, {kind.count} in {span(kind.window)}")
    elif isinstance(kind, Sequence):
        within = f" within {span(kind.within)}" if kind.within is not None else ""
        parts.append(f"sequence of {len(kind.steps)} steps{within}")
    elif isinstance(kind, Absence):
        parts.append(f"absence {span(kind.window)}")
    elif isinstance(kind, NewValue):
        parts.append(f"new_value {', '.join(kind.fields)}")
    else:
        parts.append("every match")
    if rule.group_by:
        parts.append(f"group_by {', '.join(rule.group_by)}")
    if rule.throttle:
        parts.append(f"throttle {span(rule.throttle)}")
    if rule.resolve is not None:
        parts.append(f"resolve after {span(rule.resolve)}")
    return ", ".join(parts)


def _facts_text(facts: dict[str, Any], clock: float, shared: bool = False) -> list[str]:
    """A group's facts as phrases, in the order a reader wants them (`shared`: other groups
    hold its alerts too, so what this group does lets go of them rather than closes them)."""
    closes = "lets go" if shared else "closes"
    out: list[str] = []
    if "count" in facts:
        of = f" of {facts['needed']}" if facts["needed"] is not None else ""
        window = f" in {span(facts['window_seconds'])}" if facts["window_seconds"] is not None else " in the window"
        oldest = f", the oldest {when(facts['oldest'], clock)}" if facts["oldest"] is not None else ""
        out.append(f"{facts['count']}{of}{window}{oldest}")
    if "distinct" in facts:
        of = f" of {facts['needed']}" if facts["needed"] is not None else ""
        field = f" different {facts['field']}" if facts["field"] is not None else " different values"
        out.append(f"{facts['distinct']}{of}{field}{_values_text(facts['values'], clock)}")
    if "step" in facts:
        out.append(_step_text(facts, clock))
    if "last_seen" in facts:
        aliases = ", ".join(facts["open_alerts"])
        if facts["last_seen"] is None:  # an expected group no event has come for
            seen = f"never seen (expected since {when(facts['expected_since'], clock)})"
        else:
            seen = f"silent since {when(facts['last_seen'], clock)}" if facts["silent"] else ""
        if facts["silent"] and not aliases:
            due = f", fires at {when(facts['fires_at'], clock)} if still silent" if facts["fires_at"] else ""
            out.append(f"{seen}: no alert open yet (its throttle holds the page back){due}")
        elif facts["silent"]:
            out.append(f"{seen}: alert open ({aliases}), {closes} when one comes")
        else:
            due = f"fires at {when(facts['fires_at'], clock)} if still silent" if facts["fires_at"] else ""
            seen = seen or f"last seen {when(facts['last_seen'], clock)}"
            out.append("; ".join(part for part in (seen, due) if part))
    if "known" in facts:
        out.append(f"{facts['known']} value(s) known{_values_text(facts['values'], clock)}")
    if facts.get("throttled_until") is not None:
        out.append(f"throttled until {when(facts['throttled_until'], clock)}")
    elif "closes_at" not in facts and facts.get("last_fired") is not None:
        out.append(f"last fired {when(facts['last_fired'], clock)}")
    if "closes_at" in facts:
        aliases = ", ".join(facts["open_alerts"])
        at = f"; {closes} at {when(facts['closes_at'], clock)} unless it fires again" if facts["closes_at"] else ""
        out.append(f"alert open ({aliases}){at}")
    return out


def _step_text(facts: dict[str, Any], clock: float) -> str:
    steps = facts["steps"] if facts["steps"] is not None else "?"
    waits = _waits_text(facts.get("waits_for"))
    if facts["fires_at"] is not None:
        done = facts["step"] - 1
        due = when(facts["fires_at"], clock)
        return f"step {done} of {steps} done; fires at {due} unless the absent step's event comes{waits}"
    needed = facts["needed"]
    counted = f", {facts['events']} of {needed} events" if needed is not None and needed > 1 else ""
    started = f", started {when(facts['started'], clock)}" if facts["started"] is not None else ""
    expires = ""
    if facts["expires_at"] is not None:  # `within` is over then
        by = when(facts["expires_at"], clock)
        expires = f"; the oldest drops out at {by}" if facts["step"] == 1 else f"; the rest must come before {by}"
    return f"at step {facts['step']} of {steps}{waits}{counted}{started}{expires}"


def _waits_text(step: dict[str, Any] | None) -> str:
    """` ({"kind": "sudo"} at rules/r.yaml:12:18)`: the condition of the step a group waits for."""
    if step is None:
        return ""
    text = json.dumps(step["condition"], ensure_ascii=False, default=str)
    if len(text) > CONDITION_SHOWN:
        text = text[: CONDITION_SHOWN - 1] + "…"
    return f" ({text} at {step['location']})"


def _values_text(values: list[tuple[str, float]], clock: float) -> str:
    if not values:
        return ""
    shown = ", ".join(f"{text} (seen {relative(seen, clock)})" for text, seen in values[:VALUES_SHOWN])
    more = f", and {len(values) - VALUES_SHOWN} more" if len(values) > VALUES_SHOWN else ""
    return f": {shown}{more}"


# ---- as JSON ------------------------------------------------------------------------------


def view_json(view: StateView) -> dict[str, Any]:
    """The object `rulesd state --format json` prints: times in RFC 3339, values as values."""
    return {
        "clock": rfc3339(view.clock),
        "clock_source": "engine" if view.engine else "now",
        "rules": [_rule_json(r) for r in view.rules],
    }


def _rule_json(rule_state: RuleState) -> dict[str, Any]:
    rule = rule_state.rule
    return {
        "rule": rule_state.name,
        "loaded": rule is not None,
        "kind": _kind_name(rule) if rule is not None else None,
        "learning_until": _time(rule_state.learning_until),
        "groups": [_group_json(rule, g) for g in rule_state.groups],
    }


_KIND_NAMES = {
    Threshold: "threshold",
    Distinct: "distinct",
    Sequence: "sequence",
    Absence: "absence",
    NewValue: "new_value",
}


def _kind_name(rule: Rule) -> str | None:
    return _KIND_NAMES.get(type(rule.kind)) if rule.kind is not None else None


def _group_json(rule: Rule | None, group: GroupState) -> dict[str, Any]:
    out: dict[str, Any] = {"group": _key_json(rule, group.key)}
    for name, value in group.facts.items():
        if name in _TIMES:
            out[name] = _time(value)
        elif name == "values":
            out[name] = [{"value": key_value(text), "last_seen": rfc3339(seen)} for text, seen in value]
        else:
            out[name] = value
    if "open_alerts" in group.facts:
        out["also_held_by"] = [
            {"alias": alias, "rule": h.name, "group": _key_json(h.rule, h.key), "until": _time(h.until)}
            for alias, h in group.shared
        ]
    return out


def _key_json(rule: Rule | None, key: GroupKey) -> dict[str, Any] | list[Any]:
    """A group as an object of its group_by values (a missing field left out), or, for a rule
    not loaded, the list of its parts (a missing one as null)."""
    values = [key_value(part) for part in key_parts(key)]
    if rule is None or len(rule.group_by) != len(values):
        return [None if v is MISSING else v for v in values]
    return {path: v for path, v in zip(rule.group_by, values, strict=True) if v is not MISSING}


def _time(value: float | None) -> str | None:
    return rfc3339(value) if value is not None else None
