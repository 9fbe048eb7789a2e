"""The engine: event + event time + state -> the rules that fire.

Pure: no I/O and no clock. Time is an argument; the window and throttle state
lives in an EngineState that can be saved and restored as JSON and is pruned
so that it stays bounded.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from rulesd.eventtime import EventTime, TimeReader
from rulesd.rules.fields import MISSING, Event, Getter
from rulesd.rules.index import RuleIndex
from rulesd.rules.model import Rule, RuleSet
from rulesd.rules.templates import to_text

GroupKey = tuple[str, ...]
SWEEP_EVERY = 4096  # events with candidate rules between sweeps of expired groups
MAX_GROUPS_PER_RULE = 100_000  # beyond this the oldest groups are forgotten


@dataclass(frozen=True, slots=True)
class Firing:
    """One alert's worth of firing: the event and the rules that fired on it, lead first."""

    event: Event
    time: float
    rules: tuple[Rule, ...]
    group: tuple[str, ...] = ()  # the lead rule's group_by values, as text

    @property
    def lead(self) -> Rule:
        """The rule with the highest priority (ties broken by name)."""
        return self.rules[0]


WINDOW, THROTTLE = "window", "throttle"  # the two kinds of per-group state


@dataclass(frozen=True, slots=True)
class StateDelta:
    """Engine state to save: rows (kind, rule, group as JSON, value as JSON) to write and delete.

    `full`: the rows are the whole state, replacing what was saved.
    """

    full: bool
    fingerprints: dict[str, str]
    upserts: list[tuple[str, str, str, str]]
    deletes: list[tuple[str, str, str]]


def _key_json(key: GroupKey) -> str:
    return orjson.dumps(list(key)).decode()


@dataclass(slots=True)
class EngineState:
    """Window counts and throttle times per rule and group; JSON-serialisable."""

    windows: dict[str, dict[GroupKey, list[float]]] = field(default_factory=dict)
    throttles: dict[str, dict[GroupKey, float]] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    # What to save: `dirty` asks for a full rewrite (new state, new rules); `touched` names the
    # groups changed since the last save, so a busy engine with many groups saves only those.
    dirty: bool = field(default=False, compare=False)
    touched: set[tuple[str, str, GroupKey]] = field(default_factory=set, compare=False)

    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible dict (group keys become lists)."""
        return {
            "fingerprints": self.fingerprints,
            "windows": {r: [[list(k), v] for k, v in g.items()] for r, g in self.windows.items()},
            "throttles": {r: [[list(k), v] for k, v in g.items()] for r, g in self.throttles.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineState:
        """The inverse of to_json."""
        return cls(
            windows={r: {tuple(k): list(v) for k, v in g} for r, g in data.get("windows", {}).items()},
            throttles={r: {tuple(k): float(v) for k, v in g} for r, g in data.get("throttles", {}).items()},
            fingerprints=dict(data.get("fingerprints", {})),
        )

    @property
    def changed(self) -> bool:
        """True when there is something to save."""
        return self.dirty or bool(self.touched)

    def delta(self) -> StateDelta:
        """What changed since the last call, as rows to write; then start afresh."""
        if self.dirty:
            rows = [
                (WINDOW, r, _key_json(k), orjson.dumps(v).decode())
                for r, g in self.windows.items()
                for k, v in g.items()
            ]
            rows += [
                (THROTTLE, r, _key_json(k), orjson.dumps(v).decode())
                for r, g in self.throttles.items()
                for k, v in g.items()
            ]
            result = StateDelta(True, dict(self.fingerprints), rows, [])
        else:
            upserts: list[tuple[str, str, str, str]] = []
            deletes: list[tuple[str, str, str]] = []
            for kind, rule, key in self.touched:
                table = self.windows if kind == WINDOW else self.throttles
                value = table.get(rule, {}).get(key)
                if value is None:
                    deletes.append((kind, rule, _key_json(key)))
                else:
                    upserts.append((kind, rule, _key_json(key), orjson.dumps(value).decode()))
            result = StateDelta(False, dict(self.fingerprints), upserts, deletes)
        self.dirty = False
        self.touched.clear()
        return result

    def group_count(self) -> int:
        """How many groups are tracked in all, a measure of memory held."""
        return sum(map(len, self.windows.values())) + sum(map(len, self.throttles.values()))


class GroupKeys:
    """The group of an event: its group_by values as JSON texts; a missing field is its own value.

    The texts of recent short strings (user names, addresses) are kept, since the same ones
    recur and a reused text also keeps its hash for the dictionaries it is looked up in;
    at most `TEXTS_MAX` of them, forgotten all at once when full.
    """

    TEXTS_MAX = 8192
    TEXT_LEN_MAX = 64

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}

    def of(self, getters: tuple[Getter, ...], event: Event) -> GroupKey:
        """The group key of `event` for a rule grouping by `getters`."""
        if len(getters) == 1:  # the common case, without a generator's frame
            return (self._text(getters[0](event)),)
        return tuple([self._text(get(event)) for get in getters])

    def _text(self, value: Any) -> str:
        if type(value) is str and len(value) <= self.TEXT_LEN_MAX:
            text = self._texts.get(value)
            if text is None:
                if len(self._texts) >= self.TEXTS_MAX:
                    self._texts.clear()
                text = self._texts[value] = orjson.dumps(value).decode()
            return text
        if value is MISSING:
            return "\x00missing"
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


Evaluate = Callable[[Event, float], "Firing | None"]
_Decide = Callable[[Event, float, list[Rule]], "Firing | None"]


class Engine:
    """Evaluates events against a rule set, keeping threshold and throttle state."""

    evaluate: Evaluate
    """`evaluate(event, arrival)`: the firing `event` causes, if any, at its event time
    (read by the engine's `time` reader, else `arrival`).

    Its body is generated: `replace_rules` installs `RuleIndex.evaluator`, the index's root
    node written as one Python function that collects the candidate rules and calls
    the decision step only when there are some (most events have none, and pay one call).
    `evaluator(time)` is the same for events whose time another reader reads (another source)."""

    def __init__(
        self,
        ruleset: RuleSet,
        state: EngineState | None = None,
        *,
        time_field: str | None = None,
        time: TimeReader | None = None,
        saved: bool = True,
    ) -> None:
        self.state = state or EngineState()
        # Changed groups are tracked only if the state is saved (the daemon); replay and tests
        # would only pile them up.
        self._touched: set[tuple[str, str, GroupKey]] | None = self.state.touched if saved else None
        self.time = time if time is not None or not time_field else TimeReader(EventTime(time_field))
        self._candidates: list[Rule] = []  # reused: no allocation per event
        self._evaluators: dict[TimeReader | None, Evaluate] = {}
        self.replace_rules(ruleset)
        self._until_sweep = SWEEP_EVERY
        self._latest = float("-inf")
        self.matches: dict[str, int] = {}  # per rule: events that satisfied its condition
        self._group_key = GroupKeys().of  # a bound method: cheaper to call than an instance

    def replace_rules(self, ruleset: RuleSet) -> None:
        """Swap in a new rule set, keeping the state of rules whose definition is unchanged."""
        self.ruleset, self.index = ruleset, RuleIndex(ruleset.rules)
        self._evaluators.clear()  # each is written again, for the new index, when next asked for
        self.evaluate = self.evaluator(self.time)
        self._adopt(ruleset)

    def evaluator(self, time: TimeReader | None) -> Evaluate:
        """`evaluate` for events whose time `time` reads (None: their arrival time); written
        once per reader and rule set, so each source pays only for its own time format."""
        evaluate = self._evaluators.get(time)
        if evaluate is None:
            evaluate = self._evaluators[time] = self.index.evaluator(self._decider(time), self._candidates)
        return evaluate

    def _adopt(self, ruleset: RuleSet) -> None:
        current = {r.name: r.fingerprint for r in ruleset.rules}
        for table in (self.state.windows, self.state.throttles):
            for name in [n for n in table if current.get(n) != self.state.fingerprints.get(n)]:
                del table[name]
        self.state.fingerprints = current
        self.state.dirty = True

    def _decider(self, reader: TimeReader | None) -> _Decide:
        """The decision step for events whose time `reader` reads: the time reading is
        written into it (locals, not calls: a float in seconds is taken as it is)."""
        key = reader.key if reader is not None else None
        getter = reader.getter if reader is not None else None
        convert = reader.convert if reader is not None else None
        floats = reader.floats_are_seconds if reader is not None else True

        def decide(event: Event, arrival: float, candidates: list[Rule]) -> Firing | None:
            """Check the candidates in full and apply thresholds and throttles.

            Called by `evaluate` for events that have candidates at all.
            """
            try:
                time = arrival
                if key is not None:
                    value = event.get(key) if getter is None else getter(event)
                    time = value if type(value) is float and floats else convert(value, arrival)  # type: ignore[misc]
                # Only events with candidates can add groups, so counting and timing just
                # these is enough for the sweeps to bound the state.
                if time > self._latest:
                    self._latest = time
                self._until_sweep -= 1
                if not self._until_sweep:
                    self._until_sweep = SWEEP_EVERY
                    self.sweep(self._latest)
                unique = candidates
                if self.index.may_repeat and len(candidates) > 1:
                    unique = list(dict.fromkeys(candidates))
                fired: list[Rule] = []
                matches = self.matches
                for rule in unique:
                    if rule.match(event):
                        matches[rule.name] = matches.get(rule.name, 0) + 1
                        group = self._group_key(rule.group_getters, event) if rule.group_getters else ()
                        if self._fires(rule, group, time):
                            fired.append(rule)
            finally:
                candidates.clear()  # also if a predicate raised: the next event starts empty
            if not fired:
                return None
            if len(fired) > 1:
                fired.sort(key=_rank)
            lead = fired[0]
            values = tuple([to_text(get(event)) for get in lead.group_getters]) if lead.group_getters else ()
            return Firing(event, time, tuple(fired), values)

        return decide

    def _fires(self, rule: Rule, group: GroupKey, time: float) -> bool:
        threshold = rule.threshold
        if threshold is not None:
            name = rule.name
            if self._touched is not None:
                self._touched.add((WINDOW, name, group))
            windows = self.state.windows
            groups = windows.get(name)
            if groups is None:
                groups = windows[name] = {}
            times = groups.get(group)
            if times is None:
                times = groups[group] = [time]
            elif not times or time >= times[-1]:  # events mostly come in time order
                times.append(time)
            else:
                bisect.insort(times, time)
            cutoff = time - threshold.window
            if not times[0] > cutoff:  # (not `<=`: a NaN cutoff empties the list, as bisect does)
                del times[: bisect.bisect_right(times, cutoff)]
            if len(times) < threshold.count:
                return False
            del groups[group]  # the group's count starts again from zero
        throttle = rule.throttle
        if throttle:
            throttles = self.state.throttles
            last_fired = throttles.get(rule.name)
            if last_fired is None:
                last_fired = throttles[rule.name] = {}
            last = last_fired.get(group)
            if last is not None and time - last < throttle:
                return False
            last_fired[group] = time
            if self._touched is not None:
                self._touched.add((THROTTLE, rule.name, group))
        return True

    def sweep(self, now: float) -> None:
        """Forget groups whose window or throttle has expired by event time `now`."""
        touched = self._touched
        windows, throttles = self.state.windows, self.state.throttles
        for rule in self.ruleset.rules:
            if rule.threshold and rule.name in windows:
                groups = windows[rule.name]
                cutoff = now - rule.threshold.window
                gone = [k for k, t in groups.items() if not t or t[-1] <= cutoff]
                if len(groups) - len(gone) > MAX_GROUPS_PER_RULE:
                    gone += _cap(groups, lambda t: t[-1], set(gone))
                _forget(groups, gone, WINDOW, rule.name, touched)
            if rule.throttle and rule.name in throttles:
                last_fired = throttles[rule.name]
                cutoff = now - rule.throttle
                gone = [k for k, t in last_fired.items() if t <= cutoff]
                if len(last_fired) - len(gone) > MAX_GROUPS_PER_RULE:
                    gone += _cap(last_fired, lambda t: t, set(gone))
                _forget(last_fired, gone, THROTTLE, rule.name, touched)


def _forget(
    groups: dict[GroupKey, Any],
    gone: list[GroupKey],
    kind: str,
    rule: str,
    touched: set[tuple[str, str, GroupKey]] | None,
) -> None:
    """Drop the `gone` groups (distinct keys, all present) and mark them for saving."""
    if gone:
        for key in gone:
            del groups[key]
        if touched is not None:
            touched.update([(kind, rule, key) for key in gone])


def _rank(rule: Rule) -> tuple[int, str]:
    return rule.rank


def _cap(groups: dict[GroupKey, Any], newest: Any, going: set[GroupKey]) -> list[GroupKey]:
    """The stalest groups beyond the limit (besides those `going` anyway): memory stays bounded
    under a flood of distinct groups."""
    excess = len(groups) - len(going) - MAX_GROUPS_PER_RULE
    if excess <= 0:
        return []
    staying = (k for k in groups if k not in going)
    return sorted(staying, key=lambda k: newest(groups[k]))[:excess]
