"""The engine: event + event time + state -> the rules that fire.

Pure: no I/O and no wall clock. Time is an argument: an event's time (`time_field`, else its
arrival), and the engine's clock, the latest event time seen (`now`), which `advance` moves
on when no event does (the daemon, while idle). Timers (an absence, a sequence's absent step,
a resolve) fire when the clock passes them, as alerts of their own (`out`).

Every kind of rule keeps its per-group state in `EngineState`, bounded: groups are forgotten
as their windows end (`sweep`), and beyond a cap per rule and one for all rules together the
stalest groups go first (counted in `evicted`), those holding an open alert last (their alerts
are closed then: counted in `limit_closed`).
"""

from __future__ import annotations

import bisect
import collections
import functools
import itertools
import math
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import msgspec
import orjson

from rulesd.alerting.alias import alert_alias
from rulesd.engine.holders import RELEASED, Holder, Holders, Note, held, merged
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
    restored_value,
)
from rulesd.engine.timers import Timers
from rulesd.engine.values import NO_GROUP, Closing, Firing, GroupKey, Matched
from rulesd.events import SOURCE_NAME, Named, parse_mended
from rulesd.eventtime import AHEAD_LIMIT, EventTime, TimeReader
from rulesd.interned import Interned
from rulesd.rules.fields import KEY_SEPARATOR, MISSING, Event, Getter, key_text
from rulesd.rules.index import RuleIndex
from rulesd.rules.model import Absence, Distinct, NewValue, Rule, RuleSet, Sequence, Threshold
from rulesd.rules.view import INVALID, KeyOrder, Viewer, key_order

SWEEP_EVERY = 4096  # events with candidate rules between sweeps of expired groups
MAX_GROUPS_PER_RULE = 100_000
MAX_GROUPS = 1_000_000
# Values a new_value group knows: its field may be anyone's to choose (a user agent, a URI), and a
# group's values are saved whole at each commit that touches it.
MAX_VALUES_PER_GROUP = 10_000
ALIASES_KEPT = 8  # aliases of open alerts remembered per group, to close them
EXPECTED = "expected"  # an absence's expected group no event has come for yet
LIMIT_CLOSED = "state limit"  # why an alert is closed when its group had to be forgotten
COUNTED_KEPT = 65_536  # matches of candidates listed before they are added up (see `count_matches`)
IN_ORDER_KEPT = 4096  # combinations of fired rules whose order is remembered (see `_apply`)
SUPERSEDED = "superseded"  # why a group's oldest alert is closed when it opens one more than ALIASES_KEPT
_NEVER = -math.inf
# The key, in a rule's own state (RULE), of how its throttled groups were made (`_grouping`).
THROTTLED: GroupKey = "throttled"
_NO_TEXT = object()  # what no event time equals (see `Engine._decider`)

Evaluate = Callable[[Event, float], Firing | None]
Parse = Callable[[bytes], Any]  # how a source parses a line (`Parser.fast`)
T = TypeVar("T")
_Step = Callable[[Event, float, list[Rule]], T]  # what the index's evaluator calls with the candidates
Fired = tuple[Rule | tuple[Rule, ...], ...]  # what fired on an event: rules with state, then runs of plain rules


class PreparedRules(msgspec.Struct, frozen=True):
    """A rule set with its index and evaluators built, ready for `Engine.replace_rules`."""

    ruleset: RuleSet
    index: RuleIndex
    evaluators: dict[TimeReader | None, Evaluate]
    viewers: dict[tuple[TimeReader | None, Parse, bool], Viewer | None]
    # Each rule's place in the order that puts the lead rule first: the rules that fire for one
    # event (dozens, with many similar rules) are sorted by an int, not by their rank.
    order: dict[Rule, int]
    members: dict[Rule, Members]  # see `members`
    timed: bool  # see `_timed`


class Counts(msgspec.Struct, frozen=True):
    """What applying events changes besides the state and the clock: the limits' counts per rule
    and the countdown to the next sweep (see `Engine.counts`)."""

    evicted: dict[str, int]
    limit_closed: dict[str, int]
    until_sweep: int
    values_evicted: dict[str, int] = msgspec.field(default_factory=dict)


class Limits(msgspec.Struct, frozen=True):
    """How many groups the engine keeps: per rule, and for all rules together; and how many
    values a new_value group knows."""

    per_rule: int = MAX_GROUPS_PER_RULE
    total: int = MAX_GROUPS
    values_per_group: int = MAX_VALUES_PER_GROUP


class GroupKeys:
    """The group of an event: its group_by values as key texts in one string (`fields.group_key`);
    a missing field is its own value.

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
        if len(getters) == 1:  # the common case: the text is the key
            return self.text(getters[0](event))
        return KEY_SEPARATOR.join([self.text(get(event)) for get in getters])

    def text(self, value: Any) -> str:
        """`key_text(value)`, remembered for short strings."""
        if type(value) is str and len(value) <= self.TEXT_LEN_MAX:
            text = self._texts.get(value)
            if text is None:
                if len(self._texts) >= self.TEXTS_MAX:
                    self._texts.clear()
                text = self._texts[value] = orjson.dumps(value).decode()
            return text
        return key_text(value)


class Engine:
    """Evaluates events against a rule set, keeping every rule's per-group state."""

    def __init__(
        self,
        ruleset: RuleSet,
        state: EngineState | None = None,
        *,
        time_field: str | None = None,
        time: TimeReader | None = None,
        saved: bool = True,
        limits: Limits = Limits(),
        index: RuleIndex | None = None,
    ) -> None:
        """`index`: the index of `ruleset`'s rules, if made already (it holds no state: the
        engines of one rule set, a rule test file's, share one)."""
        self.state = state or EngineState()
        # Changed groups are tracked only if the state is saved (the daemon); replay and tests
        # would only pile them up.
        self._touched: set[tuple[str, str, GroupKey]] | None = self.state.touched if saved else None
        # How events' time is read (None: their arrival time): a source may bring its own.
        self.time = time if time is not None or not time_field else TimeReader(EventTime(time_field))
        self._evaluators: dict[TimeReader | None, Evaluate] = {}
        # By (time reader, parse, matching): see `viewer`.
        self._viewers: dict[tuple[TimeReader | None, Parse, bool], Viewer | None] = {}
        # The order of the keys of the first JSON line viewed, which every view's fields follow,
        # those of a rule set reloaded too (see `key_order`).
        self._keys: KeyOrder | None = None
        self._matchers: dict[TimeReader | None, Callable[[Event, float], Matched | None]] = {}
        self._candidates: list[Rule] = []  # reused: no allocation per event
        self.limits = limits
        self._matches: dict[str, int] = {}  # per rule: events that satisfied its condition (`matches`)
        # The candidates matched since `matches` was last brought up to date, one entry per
        # match: one count for the dozens of rules alike a candidate may stand for (see
        # `members`), and one list append per match, where a dict's count was two lookups that
        # hashed the rule. Added up when read, or once COUNTED_KEPT have piled up.
        self._counted: list[Rule] = []
        self.evicted: dict[str, int] = {}  # per rule: groups forgotten to stay within the limits
        self.limit_closed: dict[str, int] = {}  # per rule: open alerts closed as their groups were forgotten
        # Per rule: values its new_value groups forgot for `limits.values_per_group` (counted
        # in `evicted` too, which the metric shows; these tell the daemon which limit to name).
        self.values_evicted: dict[str, int] = {}
        # The new_value groups (rule, group) that went over `limits.values_per_group` since the
        # last sweep, which trims them (None: every group is to be looked at, the state having
        # been restored or adopted, perhaps saved under a higher limit).
        self._crowded: set[tuple[str, GroupKey]] | None = None
        # A new_value group keeps its values in the order they were last seen, so that a sweep
        # reads only those that expire (`_expire_values`); the groups a late event (dated before
        # the group's latest value) put out of order since the last sweep, which puts them back
        # in order (None: every group is to be looked at, the state having been restored or
        # adopted: saved by an earlier rulesd, or by another instance).
        self._unordered: set[tuple[str, GroupKey]] | None = None
        self.out: list[Firing | Closing] = []  # timer firings and closings, in order: the caller takes them
        self.now = _NEVER  # the engine's clock: the latest event time seen or advanced to
        # The latest event time evaluated (not advanced to) since the caller last set it: the
        # daemons take a batch's, to run the clock on from it while idle (`idle_wall`).
        self.latest = _NEVER
        # Where the event being evaluated came from, asked of `source(position)` only when a
        # timer keeps the event (its alert names where it came from); set by the caller.
        self.source: Callable[[int], Any] | None = None
        self.position = 0
        self._timers = Timers()
        # The clock when the timers were last set from the state (a restore, a reload, a
        # resume): no timer of the state then held is set before it, nor when loaded again.
        self._timers_floor = _NEVER
        self._holders = Holders()  # which groups hold each open alert's alias
        self._starting: list[Rule] = []  # rules that start (expected groups, learning) at the next time
        self._until_sweep = SWEEP_EVERY
        # Per rule with state, the latest time of an event it matched: its groups are swept by
        # its own time, so that a source whose times lag behind another's keeps its windows.
        # (A plain rule, see `members`, has no groups: its time is not kept.)
        self._latest: dict[str, float] = {}
        self._group_key = GroupKeys().of  # a bound method: cheaper to call than an instance
        self._texts = GroupKeys()
        # The rules that fired together, in order, by what fired (see `_apply`).
        self._in_order: dict[Fired, tuple[Rule, ...]] = {}
        self.replace_rules(ruleset, self.prepare_rules(ruleset, index) if index is not None else None)

    # -- rules --------------------------------------------------------------------------------

    def prepare_rules(self, ruleset: RuleSet, index: RuleIndex | None = None) -> PreparedRules:
        """Build what `replace_rules` swaps in (the index, unless given, and the evaluators of
        the time readers in use): the slow part of a reload, safe to run in another thread,
        since it reads and changes no state."""
        if index is None:
            index = RuleIndex(ruleset.rules)
        try:
            readers = tuple(self._evaluators)
        except RuntimeError:  # a source asked for its first evaluator meanwhile: it is written then
            readers = ()
        evaluators = {t: index.evaluator(self._decider(t, self._decide), self._candidates) for t in readers}
        try:
            viewed = tuple(self._viewers)
        except RuntimeError:
            viewed = ()
        order, found, timed = _derived(ruleset, index)
        viewers = {(t, p, m): self._write_viewer(index, timed, t, p, matching=m) for t, p, m in viewed}
        return PreparedRules(ruleset, index, evaluators, viewers, order, found, timed)

    def replace_rules(self, ruleset: RuleSet, prepared: PreparedRules | None = None) -> None:
        """Swap in a new rule set (built now unless `prepared` for it), keeping the state of
        rules whose definition is unchanged; of a rule removed or changed, only its open alerts
        that the new rule set closes are kept, and the others are closed (into `out`)."""
        if prepared is None or prepared.ruleset is not ruleset:
            prepared = self.prepare_rules(ruleset)
        self.count_matches()  # (counted by the candidates of the set replaced)
        self.ruleset, self.index = ruleset, prepared.index
        self._rules, self._order, self._members = ruleset.by_name(), prepared.order, prepared.members
        self._in_order.clear()  # (keyed by rules of the set replaced)
        for name in self._rules:  # every rule's count from 0, so that a rate can be taken from the start
            self._matches.setdefault(name, 0)
            self.evicted.setdefault(name, 0)
            self.limit_closed.setdefault(name, 0)
        # A removed rule's counters go with it: rules renamed by reload after reload would
        # otherwise add series to /metrics for as long as the daemon runs.
        for per_rule in (self._matches, self.evicted, self.limit_closed, self.values_evicted, self._latest):
            for name in per_rule.keys() - self._rules.keys():
                del per_rule[name]
        self.timed = prepared.timed
        # The others are written again, for the new index, when next asked for.
        self._evaluators.clear()
        self._evaluators.update(prepared.evaluators)
        self._viewers.clear()
        self._viewers.update(prepared.viewers)
        self._matchers.clear()
        self.__dict__.pop("evaluate", None)  # written again when next used (see `evaluate`)
        self._adopt(ruleset)
        self._set_timers()

    @property
    def matches(self) -> dict[str, int]:
        """Per rule, the events that satisfied its condition (the dict itself, kept up to date
        by `count_matches`: the daemon's metrics read it)."""
        self.count_matches()
        return self._matches

    @matches.setter
    def matches(self, matches: dict[str, int]) -> None:
        self.count_matches()
        self._matches = matches

    def count_matches(self) -> None:
        """Add the matches counted per candidate to `matches`, per rule: when they are read (the
        daemon, after each batch), not per event, where one candidate stands for dozens of
        rules alike."""
        counted = self._counted
        if not counted:
            return
        matches = self._matches
        for candidate, count in collections.Counter(counted).items():  # (in the order first matched)
            for name in self._members[candidate][2]:
                matches[name] = matches.get(name, 0) + count
        counted.clear()

    def evaluator(self, time: TimeReader | None) -> Evaluate:
        """`evaluate` for events whose time `time` reads (None: their arrival time); written
        once per reader and rule set, so each source pays only for its own time format."""
        evaluate = self._evaluators.get(time)
        if evaluate is None:
            evaluate = self._evaluators[time] = self.index.evaluator(
                self._decider(time, self._decide), self._candidates
            )
        return evaluate

    def viewer(
        self,
        time: TimeReader | None,
        parse: Parse = orjson.loads,
        *,
        matching: bool = False,
        lines: Iterable[bytes] = (),
    ) -> Viewer | None:
        """`evaluator`'s counterpart for lines that `parse` reads as JSON (`orjson.loads`, or a
        named source's `Named` over it), judging most of them from a view of the fields the
        index reads (see `RuleIndex.viewer`); None where the rule set has no use for one.
        `matching`: `matcher`'s counterpart instead, which gives a line the `Matched` of its
        rules (appended to the block's `firings`), or INVALID. `lines`: the lines it is first
        asked for, whose first object tells the order of the keys (see `key_order`)."""
        key = (time, parse, matching)
        if key in self._viewers:
            return self._viewers[key]
        if self._keys is None:
            self._keys = _first_key_order(lines)
        viewer = self._viewers[key] = self._write_viewer(self.index, self.timed, time, parse, matching=matching)
        return viewer

    def _write_viewer(
        self, index: RuleIndex, timed: bool, time: TimeReader | None, parse: Parse, *, matching: bool
    ) -> Viewer | None:
        """A viewer for the engine's whole step (`matching`: its first step alone, `matcher`).
        It judges a block of lines per call, but one line per call for a rule set with timers
        (`timed`) taking the whole step, whose firings the pipeline takes between lines;
        matching moves no clock between lines."""
        stamp = (SOURCE_NAME, parse.name) if type(parse) is Named else None
        step, decide = (self.matcher, self._match_only) if matching else (self.evaluator, self._decide)
        whole = functools.partial(self._whole, step, time, parse)
        blocks = matching or not timed
        return index.viewer(
            self._decider(time, decide), self._candidates, parse, whole, stamp, blocks=blocks, keys=self._keys
        )

    def _whole(
        self,
        step: Callable[[TimeReader | None], Callable[[Event, float], Any]],
        time: TimeReader | None,
        parse: Parse,
        line: bytes,
        arrival: float,
    ) -> Any:
        """A JSON line judged from its whole parse (what its view cannot judge) by the `step`
        for `time` (`evaluator` or `matcher`, written for the first such line): what the step
        gives, or INVALID if the line is no event."""
        try:
            event = parse(line)
        except ValueError:
            event = parse_mended(parse, line)
        return step(time)(event, arrival) if type(event) is dict else INVALID

    def _adopt(self, ruleset: RuleSet) -> None:
        current = {r.name: r.fingerprint for r in ruleset.rules}
        known = self.state.fingerprints
        closing: dict[str, list[Note]] = {}  # alias -> the rules it is closed for, each with why
        named = {n for groups in self.state.tables.values() for n in groups}
        for name in sorted(n for n in named if current.get(n) != known.get(n)):  # in order: closings too
            self._drop_rule(name, self._rules.get(name), closing)
        self._close(closing, self.now)
        for rule in ruleset.rules:
            if rule.enabled and rule.throttle:
                self._note_grouping(rule)
            if rule.enabled and isinstance(rule.kind, Sequence):
                self._note_steps(rule.name, rule.kind)
            elif rule.enabled and isinstance(rule.kind, NewValue):
                self._note_learnt(rule.name, rule.kind)
        waiting = {r.name for r in self._starting}  # added while no time was known: not started yet
        self._starting = [
            r
            for r in ruleset.rules
            if isinstance(r.kind, Absence | NewValue)
            and (known.get(r.name) != r.fingerprint or r.name in waiting or self._never_learnt(r))
        ]
        self.state.fingerprints = current
        self.state.dirty = True
        self._crowded = None  # (a state saved under a higher limit is trimmed at the next sweep)
        self._unordered = None
        if self._starting and self.now > _NEVER:
            self._start(self.now)

    def _drop_rule(self, name: str, rule: Rule | None, closing: dict[str, list[Note]]) -> None:
        """Forget the state of a rule that was removed or changed (`rule`: what runs under its
        name now), all but its open alerts and the groups its absence watches: the open alerts
        the rule now running closes as it would have (an open `resolve` group, when it still
        resolves; an absence's silent group, when it is still an absence that still sees the
        group, `expect`s it or matches its last event, and puts that event in the same group)
        are kept for it, and the others let go of their aliases
        (`_let_go`), those no other group holds noted in `closing`, to be closed now: nothing
        else would ever close them. An absence's other groups are kept when it would have made
        them of their last events (or still expects them), so that an edit (a new message, a
        longer window) does not stop watching a host that falls silent before it beats again;
        so are a sequence's waits at its absent step (`_waits_in`), the values a new_value
        rule knows when it learns them as before (`NewValue.learnt`), and the throttles of a rule
        that makes its groups as before (`_grouping`)."""
        tables = self.state.tables
        opened = tables.get(OPEN, {}).get(name, {})
        absences = tables.get(ABSENCE, {}).get(name, {})
        sequences = tables.get(SEQUENCE, {}).get(name, {})
        done = tables.get(RULE, {}).get(name, {}).get(NO_GROUP)  # a sequence's steps, a new_value's start
        known = tables.get(NEW_VALUE, {}).get(name, {})
        silent = {k: st for k, st in absences.items() if _silent_alert(st)}
        throttles = tables.get(THROTTLE, {}).get(name, {})
        grouped = tables.get(RULE, {}).get(name, {}).get(THROTTLED)
        self.state.drop_rule(name)
        if rule is not None and rule.enabled:
            # An edit of the message, the match or the throttle's length leaves the groups as
            # they were: each keeps when it last fired, or a reload would page again at once
            # what the throttle held back. Another kind or group_by makes other groups.
            if rule.throttle and throttles and (kept := self._throttles_kept(rule, throttles, grouped, done, absences)):
                self._table(THROTTLE, name).update(kept)
            if rule.resolve is not None and opened:
                self._table(OPEN, name).update(opened)  # its timers are set again from the state
                opened = {}
            if isinstance(rule.kind, Absence):
                expected = set(rule.kind.expect)
                regrouped: dict[GroupKey, Any] = {}  # those its edited group_by puts in other groups
                for key, st in absences.items():
                    if not self._grouped_alike(rule, key, st["event"]):
                        regrouped[key] = st
                    elif key in expected or _sees(rule, st):
                        # A silent group's alert is closed when its events return; another's
                        # timer is set again, for the new window. The others are forgotten,
                        # their open alerts closed: no event the rule sees would close them.
                        self._table(ABSENCE, name)[key] = silent.pop(key, st)
                self._regroup_absence(rule, expected, regrouped, silent)
            if isinstance(rule.kind, Sequence):
                self._keep_progress(rule, rule.kind, sequences, done)
            if isinstance(rule.kind, NewValue) and done is not None and done.get("learnt") == rule.kind.learnt:
                self._table(RULE, name)[NO_GROUP] = done  # learning goes on from the rule's start
                self._table(NEW_VALUE, name).update(known)
        why = "rule removed" if rule is None else "rule disabled" if not rule.enabled else "rule changed"
        gone: list[tuple[Holder, Any]] = [((OPEN, name, k), st) for k, st in opened.items()]
        self._let_go_of(gone + [((ABSENCE, name, k), st) for k, st in silent.items()], why, closing)

    def _throttles_kept(
        self,
        rule: Rule,
        throttles: dict[GroupKey, Any],
        grouped: dict[str, Any] | None,
        done: dict[str, Any] | None,
        absences: dict[GroupKey, Any],
    ) -> dict[GroupKey, Any]:
        """Of the throttles of an edited rule's groups (`throttles`), those of groups the edited
        `rule` makes as before: all, when it makes its groups as the rule before did (`grouped`,
        `_note_grouping`). A state saved by an earlier rulesd noted nothing: what it shows of how
        the rule before made its groups stands for it, a sequence's steps saved with its group_by
        (`done`), or else, of an absence (`absences`: its groups), each group whose last event
        the edited absence puts in that group again. What a rule of another kind saves does not
        tell its kind and group_by: its throttles start anew, as they would after such an edit."""
        if grouped is None and done is not None and "steps" in done and "group_by" in done:
            grouped = {"kind": Sequence.__name__, "group_by": done["group_by"]}
        if grouped == _grouping(rule):
            return throttles
        if grouped is not None or not absences or not isinstance(rule.kind, Absence):
            return {}
        alike = {k for k, st in absences.items() if self._grouped_alike(rule, k, st["event"])}
        return {k: t for k, t in throttles.items() if k in alike}

    def _regroup_absence(
        self, rule: Rule, expected: set[GroupKey], regrouped: dict[GroupKey, Any], silent: dict[GroupKey, Any]
    ) -> None:
        """An absence whose group_by an edit changed keeps watching each group (of `regrouped`,
        those whose last event it puts in another group now) whose last event has every
        group_by field, under the group that event makes now (of several old groups
        that make one, the latest seen), as an edit that keeps group_by does: one whose last
        event it still matches; a silent one's alert stays open, closed by the alias it went
        out with when its events return, rather than closed at the reload while the host is
        still down with nothing left to page for it again. A group only expected, never seen,
        goes on only if still expected. The silent groups not moved stay in `silent`, to
        be let go of."""
        getters, table = rule.group_getters, self._table(ABSENCE, rule.name)
        latest: dict[GroupKey, tuple[GroupKey, Any]] = {}
        for key, st in regrouped.items():
            event = st["event"]
            if not (st.get(EXPECTED) or _sees(rule, st)):
                continue
            if any(get(event) is MISSING for get in getters):
                continue  # (a field the old events lack would put them all in one group)
            new = self._group_key(getters, event) if getters else NO_GROUP
            if st.get(EXPECTED) and new not in expected:  # (never seen: its events never come)
                continue
            if new not in table and (new not in latest or latest[new][1]["last"] < st["last"]):
                latest[new] = (key, st)
        for new, (key, st) in latest.items():
            table[new] = st
            if silent.pop(key, None) is not None:  # it holds its alert under its new group now
                self._holders.replaced((ABSENCE, rule.name, key), st, None)
                self._holders.replaced((ABSENCE, rule.name, new), None, st)

    def _keep_progress(
        self, rule: Rule, kind: Sequence, sequences: dict[GroupKey, Any], done: dict[str, Any] | None
    ) -> None:
        """Of the groups of an edited sequence (`sequences`, before the edit), keep the waits at
        the absent step it would have made (`_waits_in`; of several that make one group, the one
        due first, as a group waits for its first start) and the progress it keeps
        (`_progress_kept`). A wait's timer is set again from the state, for the new `for`."""
        groups = self._table(SEQUENCE, rule.name)
        firsts: dict[GroupKey, float] = {}  # each wait's due under the edited rule
        for key, st in sequences.items():
            if (group := self._waits_in(rule, kind, key, st)) is not None:
                due = st.get("after", st["start"]) + kind.steps[-1].wait
                if group not in firsts or firsts[group] > due:
                    firsts[group] = due
                    # Due before the edit (a shorter `for`; or held by a throttle the edit
                    # shortened or dropped): paged at the edit and dated then, not at a time
                    # already past, from which the throttle would run and let the next page
                    # out sooner than `throttle` after this one.
                    groups[group] = {**st, "due": max(due, self.now)}
            elif (kept := _progress_kept(kind, st, done)) is not None:
                groups[key] = kept

    def _waits_in(self, rule: Rule, kind: Sequence, key: GroupKey, st: dict[str, Any]) -> GroupKey | None:
        """The group in which an edited sequence (`rule`) would be waiting as the group `key`
        (`st`) of its old definition waits at the absent step, if it would: the edited rule ends
        at an absent step the group's step number is, the event that completed the step before
        it (which the wait holds) still matches that step, the steps were done within the
        edited `within`, and, if that step is the first, the first-step events counted are
        still enough. The group is the one that event makes (another under an edited group_by,
        if it has every group_by field: a field the old events lack would put every wait in
        one group). Progress short of the wait holds only times, not events, so it cannot be
        judged again: it is forgotten."""
        steps = kind.steps
        if st.get("due") is None or not steps[-1].absent or st["step"] != len(steps) - 1:
            return None
        event: Event = st["event"]
        if kind.within is not None and not st.get("after", st["start"]) - st["start"] < kind.within:
            return None
        if len(steps) == 2 and len(st["firsts"]) < steps[0].count:
            return None
        if not steps[-2].match(event):
            return None
        getters = rule.group_getters
        if self._grouped_alike(rule, key, event) or not any(get(event) is MISSING for get in getters):
            return self._group_key(getters, event) if getters else NO_GROUP
        return None

    def _note_steps(self, name: str, kind: Sequence) -> None:
        """Save with the state what identifies the steps of a sequence and its group_by, for
        `_progress_kept` to tell, after an edit (a reload, or rules edited while the daemon was
        stopped), whether its groups' steps done are still those of the edited rule."""
        steps = {"steps": [step.fingerprint for step in kind.steps], "group_by": list(kind.group_by)}
        saved = self._table(RULE, name)
        if saved.get(NO_GROUP) != steps:
            saved[NO_GROUP] = steps
            self._touch(RULE, name, NO_GROUP)

    def _note_grouping(self, rule: Rule) -> None:
        """Save with the state how a throttled rule makes its groups (`_grouping`), for
        `_drop_rule` to tell, after an edit (a reload, or rules edited while the daemon was
        stopped), whether its throttles are still those of the edited rule's groups."""
        grouping = _grouping(rule)
        saved = self._table(RULE, rule.name)
        if saved.get(THROTTLED) != grouping:
            saved[THROTTLED] = grouping
            self._touch(RULE, rule.name, THROTTLED)

    def _note_learnt(self, name: str, kind: NewValue) -> None:
        """Mark a learning start saved by an older rulesd, which did not note what the rule
        learns, as this rule's: it is unchanged since (a changed rule's start was dropped above),
        so a later edit that keeps what it learns keeps its values, as for a start saved now."""
        start = self.state.tables.get(RULE, {}).get(name, {}).get(NO_GROUP)
        if start is not None and "learnt" not in start:
            self._table(RULE, name)[NO_GROUP] = {**start, "learnt": kind.learnt}
            self._touch(RULE, name, NO_GROUP)

    def _grouped_alike(self, rule: Rule, key: GroupKey, event: Event) -> bool:
        """Whether `rule` puts `event` (kept by a group `key` of a rule edited) in that group."""
        getters = rule.group_getters
        return (self._group_key(getters, event) if getters else NO_GROUP) == key

    def _let_go_of(self, gone: list[tuple[Holder, Any]], why: str, closing: dict[str, list[Note]]) -> None:
        """Groups of one rule whose state (`gone`, each with its last value) is no longer there
        let go of their aliases, each once; those no other group holds go into `closing`."""
        notes: dict[str, list[Note]] = {}
        first: dict[str, Holder] = {}
        for holder, st in gone:
            for alias in held(st):
                first.setdefault(alias, holder)
                notes[alias] = merged(notes.get(alias, []), st.get(RELEASED, {}).get(alias, []))
        for alias, holder in first.items():
            closed = self._let_go(alias, holder, why, notes[alias])
            if closed is not None:
                closing[alias] = merged(closing.get(alias, []), closed)

    def _let_go(self, alias: str, holder: Holder, why: str, notes: list[Note]) -> list[Note] | None:
        """`holder` no longer holds `alias` (its state says so already), for `why` ("": its
        group recovered), with the `notes` of those that let go of it before: the rules to
        name in its close, if no other group holds it (then it is to be closed now); else
        None, the notes left with a group that does."""
        notes = merged(notes, [[holder[1], why]])
        other = self._holders.other(alias, holder, self.state.tables)
        if other is None:
            return notes
        kind, name, key = other
        st = self.state.tables[kind][name][key]
        released = st.setdefault(RELEASED, {})
        released[alias] = merged(released.get(alias, []), notes)
        self._touch(kind, name, key)
        return None

    def _close(self, closing: dict[str, list[Note]], time: float) -> None:
        """Close the aliases of `closing`, one closing for the aliases of the same notes, whose
        note names each rule that let go of them (sorted: the same whichever let go first),
        with why where it was not that its group recovered."""
        by_notes: dict[tuple[tuple[str, str], ...], list[str]] = {}
        for alias, notes in closing.items():
            by_notes.setdefault(tuple(sorted((n, why) for n, why in notes)), []).append(alias)
        for pairs, aliases in by_notes.items():
            names, whys = zip(*pairs, strict=True)
            self.out.append(Closing(tuple(aliases), names, time, whys if any(whys) else ()))

    def _never_learnt(self, rule: Rule) -> bool:
        """A new_value rule whose learning has no start in the state (saved before its first
        event): it starts at the next time, or it would learn forever."""
        return isinstance(rule.kind, NewValue) and NO_GROUP not in self.state.tables.get(RULE, {}).get(rule.name, {})

    def _start(self, now: float) -> None:
        """Start the rules that begin at a time: expected groups are watched from `now`, and
        new_value rules learn from `now`."""
        for rule in self._starting:
            kind = rule.kind
            if isinstance(kind, Absence):
                groups = self._table(ABSENCE, rule.name)
                for key, event in zip(kind.expect, kind.expect_events, strict=True):
                    if key not in groups:
                        # `expected`: watched from `now`, no event seen yet (until one comes).
                        groups[key] = {
                            "last": now,
                            "event": event,
                            "origin": None,
                            "open": False,
                            "aliases": [],
                            EXPECTED: True,
                        }
                        self._timers.add(now + kind.window, ABSENCE, rule.name, key)
                        self._touch(ABSENCE, rule.name, key)
            elif isinstance(kind, NewValue):
                self._table(RULE, rule.name).setdefault(NO_GROUP, {"since": now, "learnt": kind.learnt})
                self._touch(RULE, rule.name, NO_GROUP)
        self._starting = []

    def _set_timers(self) -> None:
        """The timers the state asks for (after a restore or a reload), not before the clock: a
        time already past then is one an edit brought forward (a shorter window or `resolve`; a
        silence held by a throttle the edit shortened or dropped), and what it fires for happens
        at the edit, dated then (a throttle runs from that page). Groups another instance
        committed (`load_groups`) keep their times: what came due meanwhile is dated when it
        came due, as one process would have dated it; but not before this clock either."""
        self._timers.clear()
        self._timers_floor = self.now
        for kind in (ABSENCE, SEQUENCE, OPEN):
            for name, groups in self.state.tables.get(kind, {}).items():
                for key, st in groups.items():
                    self._arm(kind, name, key, st, self._timers_floor)

    def _arm(self, kind: str, name: str, key: GroupKey, st: Any, floor: float = _NEVER) -> None:
        """Set the timer a group's state asks for, if any (the engine skips stale ones when due),
        not before `floor`."""
        if kind == SEQUENCE:
            if st.get("due") is not None:
                self._timers.add(st["due"], SEQUENCE, name, key)
            return
        rule = self._rules.get(name)
        if rule is None:
            return
        if kind == ABSENCE and isinstance(rule.kind, Absence) and not _silent_alert(st):
            self._timers.add(max(st["last"] + rule.kind.window, floor), ABSENCE, name, key)
        elif kind == OPEN and rule.resolve is not None:
            self._timers.add(max(st["last"] + rule.resolve, floor), OPEN, name, key)

    # -- state shared with other processes -----------------------------------------------------

    def restore(self, state: EngineState, now: float) -> None:
        """Replace the whole state with `state` (what a shared store holds) and the clock with
        `now`; the state of rules whose definition differs from the running one's is dropped
        (their open alerts kept or closed as at a reload). The state is marked for a full save
        only if something was dropped or started, or its keys were made again (`rekey`).

        Closings not yet taken are forgotten: they came from the state replaced, and `state`
        (not yet adopted if it holds such rules) makes them again, or holds that another
        process made them already."""
        same = state.fingerprints == {r.name: r.fingerprint for r in self.ruleset.rules}
        self.out.clear()
        self.state = state
        self._holders.forget()
        if self._touched is not None:
            self._touched = state.touched
        self.now = now
        self._adopt(self.ruleset)
        if same and not self._starting:
            state.dirty = state.rekeyed  # (its rows under keys an earlier rulesd made go)
        self._set_timers()

    def load_groups(self, values: Mapping[tuple[str, str, GroupKey], Any], now: float) -> None:
        """Replace the given groups' state with `values` (None: the group has none) as another
        process committed them, and the clock with `now`; their timers are set again (a stale
        one is skipped when due). Loading is not a change to save."""
        tables = self.state.tables
        for (kind, name, key), value in values.items():
            if kind in (OPEN, ABSENCE):
                old = tables.get(kind, {}).get(name, {}).get(key)
                self._holders.replaced((kind, name, key), old, value)
            if value is None:
                tables.get(kind, {}).get(name, {}).pop(key, None)
                continue
            by_rule = tables.get(kind)
            if by_rule is None:
                by_rule = tables[kind] = {}
            groups = by_rule.get(name)
            if groups is None:
                groups = by_rule[name] = {}
            groups[key] = value = restored_value(kind, value)
            if kind in (ABSENCE, SEQUENCE, OPEN):
                # Not before the last reload's clock: a group loaded again after a refused
                # commit (`undo`) is one that reload set at its clock (an edit brought it forward).
                self._arm(kind, name, key, value, self._timers_floor)
            elif kind == NEW_VALUE and type(value) is dict:
                if self._crowded is not None and len(value) > self.limits.values_per_group:
                    self._crowded.add((name, key))  # (another instance under a higher limit)
                if self._unordered is not None:
                    self._unordered.add((name, key))
        self.now = now

    # -- time -----------------------------------------------------------------------------------

    @property
    def waiting(self) -> bool:
        """Whether rules wait for the clock to start (expected groups to watch, a learning
        period to begin): no time is known yet."""
        return bool(self._starting)

    def reach(self, time: float) -> None:
        """An event of `time` was read (whichever rule it concerns, if any): the clock moves on
        to it, and it counts for `latest`."""
        if time > self.latest:
            self.latest = time
        self.advance(time)

    def idle_wall(self, arrival: float) -> float:
        """The wall time from which the clock runs on while no event comes, after events that
        arrived at `arrival`: as from the latest of them (`latest`), as late as it came. Idle
        moments may have moved the clock past them (their source lags more than it did): that
        lead is not kept, or each idle moment would add to it and timers would fire for groups
        whose events still come. The clock itself never goes back: it waits for the wall clock."""
        return arrival + (self.now - self.latest) if self.latest > _NEVER else arrival

    def resume(self, clock: float) -> None:
        """Start the clock at `clock`, as a saved state had it (a restart), so that it never
        goes back: the first events read after the restart may be older (a line logged late
        during the stop), and judged by their own times they would end silences as long as
        `window` over. Nothing fires or starts at it: timers due by then fired before it was
        saved, and rules that start at a time start when the clock next moves. Those due before
        it are of rules edited while the daemon was stopped (`_arm`): set at it, as at a reload."""
        if clock > self.now:
            self.now = self.state.clock = clock
            for name, groups in self.state.tables.get(SEQUENCE, {}).items():
                for key, st in groups.items():
                    if st.get("due") is not None and st["due"] < clock:  # (see `_keep_progress`)
                        st["due"] = clock
                        self._touch(SEQUENCE, name, key)
            self._set_timers()

    def run_on(self, clock: float, wall: float | None, now: float) -> None:
        """While no event comes, the clock runs on with the wall clock: from `clock`, which runs
        on from wall time `wall` (it stands until then, see `idle_wall`), to wall time `now`
        (no clock yet, or no wall time: to `now`). The rule of both daemons, on one host and
        shared: the clock a late event is judged by and timers fire at."""
        self.advance(clock + max(0.0, now - wall) if clock > _NEVER and wall is not None else now)

    def advance(self, now: float) -> None:
        """Move the clock on to `now` (if later): timers due by then fire into `out`."""
        if now > self.now:
            self.now = self.state.clock = now
            if self._starting:
                self._start(now)
            heap = self._timers.heap  # (read here, not by a property: once per event with candidates)
            if heap and heap[0][0] <= now:
                self._fire_timers(now)

    @functools.cached_property
    def evaluate(self) -> Evaluate:
        """`evaluate(event, arrival)`: the firing `event` causes, if any, at its event time (read
        by the engine's `time` reader, else `arrival`). Timer firings and closings it causes go
        to `out`.

        Its body is generated: it is `RuleIndex.evaluator`, the index's root node written as one
        Python function that collects the candidate rules and calls the decision step only when
        there are some (most events have none, and pay one call), written when first used after
        each `replace_rules` (JSON lines are judged from views, `viewer`, which is written apart).
        `evaluator(time)` is the same for events whose time another reader reads (another source)."""
        return self.evaluator(self.time)

    @staticmethod
    def time_of(event: Event, arrival: float, time: TimeReader | None) -> float:
        """An event's time as `time` reads it (None: `arrival`), not counted if it has none."""
        return arrival if time is None else time.peek(event, arrival)

    def _origin(self) -> Any:
        source = self.source
        return source(self.position) if source is not None else None

    # -- one event ----------------------------------------------------------------------------

    def matcher(self, time: TimeReader | None) -> Callable[[Event, float], Matched | None]:
        """The first step of `evaluate` alone, for events whose time `time` reads: the rules an
        event matches and their groups, reading no state; `apply` is the second step. Where
        several processes share the state, each matches its events before it is its turn to
        apply them (the expensive step runs in parallel, the stateful one in order)."""
        matcher = self._matchers.get(time)
        if matcher is None:
            matcher = self._matchers[time] = self.index.evaluator(
                self._decider(time, self._match_only), self._candidates
            )
        return matcher

    def _decider(
        self, reader: TimeReader | None, decide: Callable[[Event, float, list[Rule]], T]
    ) -> Callable[[Event, float, list[Rule]], T]:
        """`decide` for events whose time `reader` reads: the event's time is read first
        (locals, not calls: a float in seconds is taken as it is).

        The last text read and its time are kept: events that match come in bursts that share
        a timestamp (a second's resolution), and converting one is three calls and a parse. A
        conversion depends on the text and the arrival time alone, unless it misses (counted
        each time, and read as `reader.untimed` says), so only a time read without a miss is
        kept."""
        if reader is None:
            return decide
        key, getter, convert, floats = reader.key, reader.getter, reader.convert, reader.floats_are_seconds
        last: tuple[object, float, float] = (_NO_TEXT, 0.0, 0.0)  # text, arrival, its time

        def read_time_then_decide(event: Event, arrival: float, candidates: list[Rule]) -> T:
            nonlocal last
            value = event.get(key) if getter is None else getter(event)
            if type(value) is float and floats and value <= arrival + AHEAD_LIMIT:
                return decide(event, value, candidates)
            text, at, seconds = last
            if value == text and arrival == at:
                return decide(event, seconds, candidates)
            misses = reader.misses
            seconds = convert(value, arrival)
            if reader.misses == misses and type(value) is str:
                last = (value, arrival, seconds)  # one tuple, replaced whole
            return decide(event, seconds, candidates)

        return read_time_then_decide

    def _decide(self, event: Event, time: float, candidates: list[Rule]) -> Firing | None:
        """Both steps at once: which candidates the event matches, then what their state
        makes of it at event `time`. Called by `evaluate` for events that have candidates."""
        rules, groups, plain = self._matching(event, candidates)
        return self._apply(event, time, rules, groups, plain) if rules or plain else None

    def _match_only(self, event: Event, time: float, candidates: list[Rule]) -> Matched | None:
        """The first step alone (see `matcher`)."""
        rules, groups, plain = self._matching(event, candidates)
        return Matched(event, time, rules, groups, plain) if rules or plain else None

    def _matching(
        self, event: Event, candidates: list[Rule]
    ) -> tuple[list[Rule], list[GroupKey], list[tuple[Rule, ...]]]:
        """The candidates whose condition the event meets: the rules with state, each with its
        group, and runs of plain rules (see `members`). Reads no state."""
        try:
            unique = candidates
            if self.index.may_repeat and len(candidates) > 1:
                unique = list(dict.fromkeys(candidates))
            rules: list[Rule] = []
            groups: list[GroupKey] = []
            plain: list[tuple[Rule, ...]] = []
            counted = self._counted
            members = self._members
            # The event's group key per `group_by`, made once for the rules that group alike (their
            # getters are one tuple: `group_getters`); made only for an event with such rules.
            keys: dict[tuple[Getter, ...], GroupKey] | None = None
            for candidate in unique:
                if candidate.match(event):
                    counted.append(candidate)
                    stateful, always, _, ungrouped = members[candidate]
                    if always:
                        plain.append(always)
                        if not stateful:
                            continue
                    if ungrouped:  # rules with state and no group_by: their groups are known
                        rules += stateful
                        groups += ungrouped
                        continue
                    for rule in stateful:
                        rules.append(rule)
                        getters = rule.group_getters
                        if not getters:
                            groups.append(NO_GROUP)
                            continue
                        if keys is None:
                            keys = {}
                        key = keys.get(getters)
                        if key is None:
                            key = keys[getters] = self._group_key(getters, event)
                        groups.append(key)
            if len(counted) >= COUNTED_KEPT:  # (replay never reads the counts: bounded all the same)
                self.count_matches()
            return rules, groups, plain
        finally:
            candidates.clear()  # also if a predicate raised: the next event starts empty

    def apply(self, matched: Matched) -> Firing | None:
        """The second step for an event the first step found rules for (see `matcher`)."""
        return self._apply(matched.event, matched.time, matched.rules, matched.groups, matched.plain)

    def _apply(
        self,
        event: Event,
        time: float,
        rules: list[Rule],
        groups: list[GroupKey],
        plain: list[tuple[Rule, ...]],
    ) -> Firing | None:
        """Each matched rule's kind and throttle, at event `time`: the stateful step. The
        rules of `plain` fire as they are."""
        if time > self.latest:
            self.latest = time
        if time > self.now:
            # Before the event counts: what was due by its time happened before it.
            self.advance(time)
        # Only matched events can add groups, so counting just these is enough for the sweeps
        # to bound the state.
        self._until_sweep -= 1
        if not self._until_sweep:
            self._until_sweep = SWEEP_EVERY
            self.sweep(self.now)
        fired: list[Rule] = []
        resolving: list[tuple[str, GroupKey]] | None = None  # fired rules that close later
        latest = self._latest
        for rule, group in zip(rules, groups, strict=True):
            if time > latest.get(rule.name, _NEVER):
                latest[rule.name] = time
            kind = rule.kind
            if kind is None:
                fires = True
            elif type(kind) is Threshold:
                fires = self._threshold(rule.name, kind, group, time)
            else:
                fires = self._other_kind(rule, group, event, time)
            if not fires:
                continue
            if rule.throttle and not self._allowed(rule, group, time):
                if rule.resolve is not None:
                    self._still_firing(rule.name, group, time)
                continue
            fired.append(rule)
            if rule.resolve is not None:
                if resolving is None:
                    resolving = []
                resolving.append((rule.name, group))
        if not fired and not plain:
            return None
        if not fired and len(plain) == 1:  # one run alone (a lone plain rule is one)
            fired_rules: tuple[Rule, ...] = plain[0]  # in order already, and shared (see `members`)
        else:
            # The same rules fire together again and again (dozens of rules alike on one event):
            # they are put in order once per combination, and each firing shares the one tuple.
            what: Fired = (*fired, *plain)  # the rules with state that fired, then the runs (tuples)
            in_order = self._in_order.get(what)
            fired_rules = self._put_in_order(what, fired, plain) if in_order is None else in_order
        if resolving:  # the alert closes later by the alias it goes out with
            alias = alert_alias(fired_rules, event)
            held = self._held_earlier(resolving, alias, fired_rules, event)
            for name, group in resolving:
                self._opened(name, group, time, held or alias)
            if held is not None:
                return Firing(event, time, fired_rules, alias=held)
        return Firing(event, time, fired_rules)

    def _held_earlier(
        self, resolving: list[tuple[str, GroupKey]], alias: str, rules: tuple[Rule, ...], event: Event
    ) -> str | None:
        """The alias an open alert of one of the `resolving` groups went out with, if an earlier
        rulesd wrote that group in it otherwise than `alias` does (`1.0` for `1`), or wrote it
        as it would for `rules` firing on `event` (an alias hashed beyond ALIAS_MAX characters
        cannot be read back): the firing goes out under it, so that OpsGenie folds it into the
        alert open since before the upgrade rather than page again."""
        opened = self.state.tables.get(OPEN, {})
        for name, group in resolving:
            st = opened.get(name, {}).get(group)
            if st is not None and alias not in st["aliases"]:
                # (imported here: a replay, which restores no state, need not load it at start)
                from rulesd.engine.rekey import earlier_alias, rekeyed_alias

                before = earlier_alias(rules, event)
                for earlier in st["aliases"]:
                    if earlier == before or rekeyed_alias(earlier) == alias:
                        return str(earlier)
        return None

    def _put_in_order(self, what: Fired, fired: list[Rule], plain: list[tuple[Rule, ...]]) -> tuple[Rule, ...]:
        """The rules of `fired` and of the runs of `plain` sorted lead first, remembered by `what`
        fired (at most IN_ORDER_KEPT combinations, forgotten all at once when full)."""
        for always in plain:
            fired.extend(always)
        try:
            fired.sort(key=self._order.__getitem__)
        except KeyError:  # a rule of a set replaced meanwhile (not expected): by its rank then
            fired.sort(key=_rank)
        if len(self._in_order) >= IN_ORDER_KEPT:
            self._in_order.clear()
        in_order = self._in_order[what] = Interned(fired)  # the alerts' memos key by it (see `Interned`)
        return in_order

    def _other_kind(self, rule: Rule, group: GroupKey, event: Event, time: float) -> bool:
        kind = rule.kind
        if isinstance(kind, Distinct):
            return self._distinct(rule.name, kind, group, event, time)
        if isinstance(kind, Sequence):
            return self._sequence(rule.name, kind, group, event, time)
        if isinstance(kind, Absence):
            return self._absence(rule.name, kind, group, event, time)
        assert isinstance(kind, NewValue)
        return self._new_value(rule.name, kind, group, event, time)

    def _table(self, kind: str, rule: str) -> dict[GroupKey, Any]:
        tables = self.state.tables
        by_rule = tables.get(kind)
        if by_rule is None:
            by_rule = tables[kind] = {}
        groups = by_rule.get(rule)
        if groups is None:
            groups = by_rule[rule] = {}
        return groups

    def _touch(self, kind: str, rule: str, group: GroupKey) -> None:
        if self._touched is not None:
            self._touched.add((kind, rule, group))

    # -- kinds ----------------------------------------------------------------------------------

    def _threshold(self, name: str, threshold: Threshold, group: GroupKey, time: float) -> bool:
        """Count the event; True when the group's count within the window reaches `count`."""
        if self._touched is not None:
            self._touched.add((WINDOW, name, group))
        windows = self.state.tables.get(WINDOW)
        if windows is None:
            windows = self.state.tables[WINDOW] = {}
        groups = windows.get(name)
        if groups is None:
            groups = windows[name] = {}
        times = groups.get(group)
        cutoff = time - threshold.window
        # A group holding one time keeps it as a bare float (24 bytes) rather than in a list (88
        # with the float): most groups of a high-cardinality group_by see one event. Whatever it holds, the
        # times after `cutoff` count (none if the cutoff is NaN).
        if times is None:  # a new group
            if not time > cutoff:
                groups[group] = []  # not even in its own window (a window of 0s)
                return False
            if threshold.count == 1:
                return True
            groups[group] = time
            return False
        if type(times) is not list:  # one time so far
            if time >= times:
                earlier, later = times, time
            else:  # a late event: the window ends at the latest time
                earlier, later, cutoff = time, times, times - threshold.window
            if earlier > cutoff:  # both count
                if threshold.count <= 2:
                    del groups[group]  # the group's count starts again from zero
                    return True
                groups[group] = [earlier, later]
            elif later > cutoff:
                if threshold.count <= 1:
                    del groups[group]
                    return True
                groups[group] = later
            else:
                groups[group] = []
            return False
        if not times or time >= times[-1]:  # events mostly come in time order
            times.append(time)
        else:  # a late event: the window ends at the latest time
            bisect.insort(times, time)
            cutoff = times[-1] - threshold.window
        if not times[0] > cutoff:  # (not `<=`: a NaN cutoff empties the list, as bisect does)
            del times[: bisect.bisect_right(times, cutoff)]
        if len(times) < threshold.count:
            if len(times) == 1:
                groups[group] = times[0]
            return False
        del groups[group]  # the group's count starts again from zero
        return True

    def _allowed(self, rule: Rule, group: GroupKey, time: float) -> bool:
        """False while the group is throttled; else the firing counts for the throttle. (Called
        for most matches that fire on a large rule set: the rule's table, there after its first
        firing, is read with two lookups rather than through `_table` and `_touch`.)"""
        throttle = rule.throttle
        assert throttle is not None
        by_rule = self.state.tables.get(THROTTLE)
        last_fired = None if by_rule is None else by_rule.get(rule.name)
        if last_fired is None:
            last_fired = self._table(THROTTLE, rule.name)
        last = last_fired.get(group)
        if last is not None and time - last < throttle:
            return False
        last_fired[group] = time
        if self._touched is not None:
            self._touched.add((THROTTLE, rule.name, group))
        return True

    def _distinct(self, name: str, kind: Distinct, group: GroupKey, event: Event, time: float) -> bool:
        """Note the event's value; True when the group has `count` different values in the window.

        An event without the field has no value to count."""
        value = kind.value(event)
        if value is MISSING:
            return False
        groups = self._table(DISTINCT, name)
        text = self._texts.text(value)
        self._touch(DISTINCT, name, group)
        values = groups.get(group)
        if type(values) is dict:  # more than one value
            values[text] = max(time, values.get(text, time))
        else:
            _note_value(groups, group, text, time)
            values = groups[group]
            if type(values) is tuple:  # one value
                if kind.count > 1:
                    return False
                values = groups[group] = {values[0]: values[1]}
        if len(values) < kind.count:
            return False
        cutoff = max(values.values()) - kind.window  # (a late event: the window ends at the latest time)
        for old in [v for v, seen in values.items() if not seen > cutoff]:
            del values[old]
        if len(values) < kind.count:
            if len(values) == 1:
                groups[group] = next(iter(values.items()))
            return False
        del groups[group]  # the group starts again from zero
        return True

    def _sequence(self, name: str, kind: Sequence, group: GroupKey, event: Event, time: float) -> bool:
        """Move the group through the steps; True when the event completes the last one.

        Steps happen in order in event time: an event dated before the step before its own was
        done (`after`: a late line) counts for no later step and ends no absent step's wait."""
        groups = self._table(SEQUENCE, name)
        st = groups.get(group)
        steps = kind.steps
        if st is not None and st.get("due") is not None:  # waiting at the final absent step
            if steps[-1].match(event) and time >= st.get("after", st["start"]):  # what had to come came
                del groups[group]
                self._touch(SEQUENCE, name, group)
            return False
        if st is None:
            st = {"firsts": [], "step": 0, "count": 0, "start": time}
        within = kind.within
        first = steps[0]
        if within is not None:
            # Half-open, as a threshold's window: `within` or longer after its start is too slow
            # for a later step, as the first step's events counted drop out at `within`.
            too_slow = st["step"] > 0 and not time - st["start"] < within
            if too_slow:  # start over
                st["step"], st["count"] = 0, 0
            cutoff = max(time, st["firsts"][-1] if st["firsts"] else time) - within
            st["firsts"] = [t for t in st["firsts"] if t > cutoff]
            if too_slow and len(st["firsts"]) >= first.count and not steps[1].absent:
                # The first step's events remembered meanwhile, still within `within`, start it
                # again before this event counts: it may be the next step's (a newer burst of
                # failed logins, then the login that gave up the slow attempt).
                st["start"] = st["firsts"][0]
                self._next_step(name, kind, group, st, event, st["firsts"][-1])
        step = st["step"]
        fired = False
        if step > 0 and steps[step].match(event) and time >= st.get("after", st["start"]):
            st["count"] += 1
            st["last"] = max(time, st.get("last", time))
            if st["count"] >= steps[step].count:
                fired = self._next_step(name, kind, group, st, event, st["last"])
        elif first.match(event) and (within is None or time > cutoff):
            firsts = st["firsts"]
            bisect.insort(firsts, time)  # in time order, whatever order they came in
            del firsts[: -first.count]  # the latest `count` are enough
        if not fired and st["step"] == 0 and len(st["firsts"]) >= first.count:
            # The first step is done: the sequence starts at its earliest counted event.
            st["start"] = st["firsts"][0]
            fired = self._next_step(name, kind, group, st, event, st["firsts"][-1])
        if fired:
            groups.pop(group, None)
        else:
            groups[group] = st
        self._touch(SEQUENCE, name, group)
        return fired

    def _next_step(
        self, name: str, kind: Sequence, group: GroupKey, st: dict[str, Any], event: Event, done: float
    ) -> bool:
        """Step `st["step"]` is done, by its latest event at `done`: True if it was the last;
        else wait for the next one, whose events must not be dated before `done`."""
        following = st["step"] + 1
        if following == len(kind.steps):
            return True
        st["step"], st["count"], st["after"] = following, 0, done
        st.pop("last", None)
        step = kind.steps[following]
        if step.absent:
            st["due"] = done + step.wait
            st["event"], st["origin"] = event, self._origin()
            self._timers.add(st["due"], SEQUENCE, name, group)
        return False

    def _absence(self, name: str, kind: Absence, group: GroupKey, event: Event, time: float) -> bool:
        """Note that the group was seen; an absence never fires on an event (its timer does),
        but an event ends a silence that fired: its alert is closed."""
        groups = self._table(ABSENCE, name)
        st = groups.get(group)
        if st is None:
            groups[group] = {"last": time, "event": event, "origin": self._origin(), "open": False, "aliases": []}
            self._timers.add(time + kind.window, ABSENCE, name, group)
            self._touch(ABSENCE, name, group)
            return False
        st.pop(EXPECTED, None)  # seen at last (also by a late line)
        if time >= st["last"]:
            st["last"], st["event"], st["origin"] = time, event, self._origin()
            # The silence is over, unless the event is a late line dated `window` or more
            # before the clock: the group is still silent now, so its alert stays open.
            if st["open"] and time + kind.window > self.now:  # its timer is set again
                gone = dict(st)
                st["open"], st["aliases"] = False, []
                st.pop(RELEASED, None)
                closing: dict[str, list[Note]] = {}
                self._let_go_of([((ABSENCE, name, group), gone)], "", closing)
                self._close(closing, time)
                self._timers.add(time + kind.window, ABSENCE, name, group)
        self._touch(ABSENCE, name, group)
        return False

    def _new_value(self, name: str, kind: NewValue, group: GroupKey, event: Event, time: float) -> bool:
        """Note the event's combination of values; True when the group has not seen it before
        (or not within `forget`), once the rule's learning period is over."""
        parts = [get(event) for get in kind.values]
        if MISSING in parts:  # an event without the fields has no value to be new
            return False
        text = self._texts.text(parts[0]) if len(parts) == 1 else key_text(parts)
        groups = self._table(NEW_VALUE, name)
        values = groups.get(group)
        self._touch(NEW_VALUE, name, group)
        if type(values) is dict:  # more than one value: in the order they were last seen
            last = values.get(text)
            if last is None or time > last:
                if last is not None:
                    del values[text]  # (to go last)
                if values and time < values[next(reversed(values))] and self._unordered is not None:
                    self._unordered.add((name, group))  # a late event: put in order by the next sweep
                values[text] = time
                if last is None and self._crowded is not None and len(values) > self.limits.values_per_group:
                    self._crowded.add((name, group))  # trimmed by the next sweep: no scan per value
        else:
            last = _note_value(groups, group, text, time)
        if last is not None and (kind.forget is None or time - last < kind.forget):
            return False
        since: float = self._table(RULE, name).get(NO_GROUP, {}).get("since", time)
        return time - since >= kind.learn

    # -- alerts to close --------------------------------------------------------------------

    def _opened(self, name: str, group: GroupKey, time: float, alias: str) -> None:
        """A rule with resolve fired for a group, in an alert with `alias`: it closes `resolve`
        after the group's last firing. A group keeps the aliases of its latest ALIASES_KEPT
        alerts (an `alert.alias` may give each firing its own): an older one is let go of now,
        since nothing would close it later."""
        groups = self._table(OPEN, name)
        st = groups.get(group)
        if st is None:
            st = groups[group] = {"last": time, "aliases": []}
            rule = self._rules[name]
            assert rule.resolve is not None
            self._timers.add(time + rule.resolve, OPEN, name, group)
        else:
            st["last"] = max(st["last"], time)
        if alias not in st["aliases"]:
            aliases = [*st["aliases"], alias]
            st["aliases"] = aliases[-ALIASES_KEPT:]
            self._holders.add(alias, (OPEN, name, group))
            if len(aliases) > ALIASES_KEPT:
                notes = st.get(RELEASED, {})
                dropped = {"aliases": aliases[:-ALIASES_KEPT], RELEASED: notes}
                closing: dict[str, list[Note]] = {}
                self._let_go_of([((OPEN, name, group), dropped)], SUPERSEDED, closing)
                for gone in dropped["aliases"]:
                    notes.pop(gone, None)
                self._close(closing, time)
        self._touch(OPEN, name, group)

    def _still_firing(self, name: str, group: GroupKey, time: float) -> None:
        """A rule with resolve fired for a group, but its throttle held the alert back: the
        group's open alert, if it has one, stays open as long as the problem goes on."""
        st = self.state.tables.get(OPEN, {}).get(name, {}).get(group)
        if st is not None and time > st["last"]:
            st["last"] = time
            self._touch(OPEN, name, group)

    # -- timers ---------------------------------------------------------------------------------

    def _fire_timers(self, now: float) -> None:
        for due, kind, name, group in self._timers.pop_due(now):
            rule = self._rules.get(name)
            if rule is None or not rule.enabled:
                continue
            if kind == ABSENCE:
                self._absence_due(rule, group, due)
            elif kind == SEQUENCE:
                self._absent_step_due(rule, group, due)
            else:
                self._resolve_due(rule, group, due)

    def _absence_due(self, rule: Rule, group: GroupKey, due: float) -> None:
        kind = rule.kind
        st = self.state.tables.get(ABSENCE, {}).get(rule.name, {}).get(group)
        if st is None or _silent_alert(st) or not isinstance(kind, Absence):
            return
        if st["last"] + kind.window > due:  # seen since the timer was set: wait for the new due time
            self._timers.add(st["last"] + kind.window, ABSENCE, rule.name, group)
            return
        if self._held_back(rule, group, due, ABSENCE) is not None:
            return
        st["open"] = True
        st["aliases"] = [alias := alert_alias((rule,), st["event"])]  # closed by it when events return
        self._holders.add(alias, (ABSENCE, rule.name, group))
        self._touch(ABSENCE, rule.name, group)
        self.out.append(Firing(st["event"], due, (rule,), st["origin"]))

    def _absent_step_due(self, rule: Rule, group: GroupKey, due: float) -> None:
        groups = self.state.tables.get(SEQUENCE, {}).get(rule.name, {})
        st = groups.get(group)
        if st is None or st.get("due") != due:
            return
        self._touch(SEQUENCE, rule.name, group)
        held = self._held_back(rule, group, due, SEQUENCE)
        if held is not None:  # the group waits on, due when the throttle ends
            st["due"] = held
            return
        del groups[group]
        self.out.append(Firing(st["event"], due, (rule,), st["origin"]))

    def _held_back(self, rule: Rule, group: GroupKey, due: float, kind: str) -> float | None:
        """Whether the rule's throttle holds back what a timer of `kind` fires for the group at
        `due` (else the firing counts for the throttle): when the throttle ends, at which a
        timer is set. Held back, not dropped: what is still the case then (a host still silent,
        a step's event still not come) is paged then; a host that flapped and then died, or a
        deploy that hung right after one that was paged, would otherwise never be paged for."""
        if not rule.throttle or self._allowed(rule, group, due):
            return None
        end = _throttle_end(self.state.tables[THROTTLE][rule.name][group], rule.throttle)
        self._timers.add(end, kind, rule.name, group)
        return end

    def _resolve_due(self, rule: Rule, group: GroupKey, due: float) -> None:
        groups = self.state.tables.get(OPEN, {}).get(rule.name, {})
        st = groups.get(group)
        if st is None or rule.resolve is None:
            return
        if st["last"] + rule.resolve > due:  # fired again since: wait for the new due time
            self._timers.add(st["last"] + rule.resolve, OPEN, rule.name, group)
            return
        del groups[group]
        self._touch(OPEN, rule.name, group)
        closing: dict[str, list[Note]] = {}
        self._let_go_of([((OPEN, rule.name, group), st)], "", closing)
        self._close(closing, due)

    # -- bounds ---------------------------------------------------------------------------------

    def counts(self) -> Counts:
        """The counts as they are, taken before events are applied to a state that may be put
        back (a shared state's commit refused): `rewind` then, so that they count once."""
        return Counts(dict(self.evicted), dict(self.limit_closed), self._until_sweep, dict(self.values_evicted))

    def rewind(self, counts: Counts) -> None:
        """Put the counts back as `counts` took them (in place: the daemon's statistics read them)."""
        for live, saved in (
            (self.evicted, counts.evicted),
            (self.limit_closed, counts.limit_closed),
            (self.values_evicted, counts.values_evicted),
        ):
            live.clear()
            live.update(saved)
        self._until_sweep = counts.until_sweep

    def sweep(self, now: float) -> None:
        """Forget groups whose windows have ended by event time `now` (for each rule, at most
        the latest time of an event it matched), then keep within the limits."""
        tables = self.state.tables
        latest = self._latest
        self._order_values()
        for rule in self.ruleset.rules:
            name, kind = rule.name, rule.kind
            at = min(now, latest.get(name, now))
            if isinstance(kind, Threshold) and name in tables.get(WINDOW, {}):
                self._forget(WINDOW, name, at - kind.window)
            if rule.throttle and name in tables.get(THROTTLE, {}):
                self._forget(THROTTLE, name, at - rule.throttle)
            if isinstance(kind, Distinct) and name in tables.get(DISTINCT, {}):
                self._expire_values(DISTINCT, name, at - kind.window)
            if isinstance(kind, NewValue) and kind.forget is not None and name in tables.get(NEW_VALUE, {}):
                self._expire_values(NEW_VALUE, name, at - kind.forget)
            if isinstance(kind, Sequence) and kind.within is not None and name in tables.get(SEQUENCE, {}):
                self._forget(SEQUENCE, name, at - kind.within)
        self._trim_values()
        self._keep_within_limits()

    def _forget(self, kind: str, name: str, cutoff: float) -> None:
        """Forget the groups whose state ended at or before `cutoff` (a sequence waiting at its
        absent step never ends this way: its timer ends it)."""
        groups = self.state.tables[kind][name]
        if kind in (WINDOW, THROTTLE):  # (most groups: `_staleness` inlined, not a call per group)
            gone = [
                key
                for key, last in groups.items()
                if not (last if type(last) is not list else last[-1] if last else _NEVER) > cutoff
            ]
        else:
            gone = [
                key
                for key, value in groups.items()
                if (kind != SEQUENCE or value.get("due") is None) and not _staleness(kind, value) > cutoff
            ]
        for key in gone:
            del groups[key]
            self._touch(kind, name, key)

    def _expire_values(self, kind: str, name: str, cutoff: float) -> None:
        """Forget values last seen at or before `cutoff`, and groups left with none. A new_value
        group's values are in the order they were last seen (`_order_values`): only those that
        expire are read, and the first that does not (up to `limits.values_per_group` per group,
        read at each sweep, where most stay for `forget`). A distinct group's, fewer than its
        `count`, are read all."""
        groups = self.state.tables[kind][name]
        for key, values in list(groups.items()):
            if type(values) is tuple:  # one value
                if values[1] <= cutoff:
                    del groups[key]
                    self._touch(kind, name, key)
                continue
            old = _expired(values, cutoff, ordered=kind == NEW_VALUE)
            if not old:
                continue
            for value in old:
                del values[value]
            if not values:
                del groups[key]
            elif len(values) == 1:
                groups[key] = next(iter(values.items()))
            self._touch(kind, name, key)

    def _order_values(self) -> None:
        """Put back in the order they were last seen the values of the new_value groups a late
        event put out of order since the last sweep (after a restore, every group's not in
        order: saved by an earlier rulesd, which kept them in the order first seen). Of values
        seen at the same time, the first noted stays first."""
        unordered, self._unordered = self._unordered, set()
        for _, key, groups, values in _value_groups(self.state.tables.get(NEW_VALUE, {}), unordered):
            if not _in_order(values):
                groups[key] = dict(sorted(values.items(), key=_second))

    def _trim_values(self) -> None:
        """Keep each new_value group within `limits.values_per_group`: the values seen longest ago
        go (of those seen at the same time, the first noted), each counted in `evicted`. A value
        forgotten is new again, as the values of a group forgotten for the limits are. Only the
        groups that went over since the last sweep are looked at, so a burst of new values costs
        one trim per sweep, not a scan of the group per value."""
        limit = self.limits.values_per_group
        crowded, self._crowded = self._crowded, set()
        for name, key, groups, values in _value_groups(self.state.tables.get(NEW_VALUE, {}), crowded):
            if len(values) <= limit:
                continue
            excess = len(values) - limit
            for text in list(itertools.islice(values, excess)):  # (in order: see `_order_values`)
                del values[text]
            if len(values) == 1:
                groups[key] = next(iter(values.items()))
            self._touch(NEW_VALUE, name, key)
            self.evicted[name] = self.evicted.get(name, 0) + excess
            self.values_evicted[name] = self.values_evicted.get(name, 0) + excess

    def _keep_within_limits(self) -> None:
        """Forget the stalest groups beyond the limit of each rule, then beyond the total."""
        limits = self.limits
        for kind, by_rule in self.state.tables.items():
            if kind == RULE:
                continue
            for name, groups in by_rule.items():
                if len(groups) > limits.per_rule:
                    self._evict([(kind, name, groups)], len(groups) - limits.per_rule)
        excess = self.state.group_count() - limits.total
        if excess > 0:
            self._evict(
                [
                    (kind, name, groups)
                    for kind, by_rule in self.state.tables.items()
                    if kind != RULE
                    for name, groups in by_rule.items()
                ],
                excess,
            )

    def _evict(self, tables: list[tuple[str, str, dict[GroupKey, Any]]], count: int) -> None:
        """Forget `count` groups of `tables` (kind, rule, groups), the stalest first, and those
        holding an open alert only when no other is left: such a group's alert is closed then,
        since nothing else would ever close it (a silent host is the stalest of all). An
        absence's expected groups are never forgotten: nothing would make them again, and the
        rule says to watch them (their number is its `expect` list's)."""
        ordinary: list[tuple[float, str, str, GroupKey]] = []
        holding: list[tuple[float, str, str, GroupKey]] = []
        for kind, name, groups in tables:
            if kind == OPEN:  # every open group holds its alert
                holding += [(float(value["last"]), kind, name, key) for key, value in groups.items()]
            elif kind == ABSENCE:  # a silent group holds one (once paged: not while its throttle holds it back)
                rule = self._rules.get(name)
                expected = set(rule.kind.expect) if rule is not None and isinstance(rule.kind, Absence) else set()
                for key, value in groups.items():
                    if key not in expected:
                        stale = (float(value["last"]), kind, name, key)
                        (holding if _silent_alert(value) else ordinary).append(stale)
            else:  # the other kinds hold none: they pay nothing more
                ordinary += [(_staleness(kind, value), kind, name, key) for key, value in groups.items()]
        ordinary.sort(key=_first)
        self._forget_groups(ordinary[:count])
        if count > len(ordinary):
            holding.sort(key=_first)
            chosen = holding[: count - len(ordinary)]
            gone: dict[str, list[tuple[Holder, Any]]] = {}  # rule -> its groups forgotten, in order
            for _, kind, name, key in chosen:
                gone.setdefault(name, []).append(((kind, name, key), self.state.tables[kind][name][key]))
            self._forget_groups(chosen)
            closing: dict[str, list[Note]] = {}  # one for all: groups of several rules may share an alias
            for name, forgotten in gone.items():
                before = len(closing)
                self._let_go_of(forgotten, LIMIT_CLOSED, closing)
                if len(closing) > before:
                    self.limit_closed[name] = self.limit_closed.get(name, 0) + len(closing) - before
            self._close(closing, self.now)

    def _forget_groups(self, chosen: list[tuple[float, str, str, GroupKey]]) -> None:
        tables = self.state.tables
        for _, kind, name, key in chosen:
            del tables[kind][name][key]
            self._touch(kind, name, key)
            self.evicted[name] = self.evicted.get(name, 0) + 1


def _note_value(groups: dict[GroupKey, Any], group: GroupKey, text: str, time: float) -> float | None:
    """Note that `group` (of a distinct or new_value rule), holding no value or one, saw the
    value `text` at `time`; when it last saw it before (None: never). A group of one value keeps
    it as a pair (text, when), a group of more a dict (noted by the caller then): a dict of one
    costs 128 bytes more than the pair, and most groups of a high-cardinality group_by see one
    value."""
    seen = groups.get(group)
    if seen is None:
        groups[group] = (text, time)
        return None
    assert type(seen) is tuple
    if seen[0] == text:
        groups[group] = (text, max(time, seen[1]))
        return float(seen[1])
    # In the order they were seen (a new_value group's are kept so: see `Engine._order_values`).
    groups[group] = {seen[0]: seen[1], text: time} if time >= seen[1] else {text: time, seen[0]: seen[1]}
    return None


def _progress_kept(kind: Sequence, st: dict[str, Any], done: dict[str, Any] | None) -> dict[str, Any] | None:
    """What an edited sequence (`kind`) keeps of a group `st` part-way through the steps of
    the rule before the edit, whose steps and group_by `done` says (`Engine._note_steps`; None:
    not known). A group holds only its events' times, so an edited step cannot judge them
    again: it goes on only where the steps it has done (for a group still counting events of
    the first step, that step) are the same steps, grouped alike, they were done within the
    edited `within`, and the edited rule waits there for events, not at an absent step (the
    wait would carry the event that completed the step before, which the group does not hold).
    The events it counted towards the step it is at are kept if that step is the same too,
    else the step starts anew. None: the group starts anew."""
    if done is None or st.get("due") is not None or done.get("group_by") != list(kind.group_by):
        return None
    at, steps = st["step"], kind.steps
    before, now = done.get("steps", []), [step.fingerprint for step in steps]
    through = max(at, 1)
    if at >= len(steps) or steps[at].absent or before[:through] != now[:through]:
        return None
    if at and kind.within is not None and not st["after"] - st["start"] < kind.within:
        return None
    if at and before[at : at + 1] != now[at : at + 1] and st["count"]:
        return {**{k: v for k, v in st.items() if k != "last"}, "count": 0}
    return st


def _first_key_order(lines: Iterable[bytes]) -> KeyOrder | None:
    """The order of the keys of the first of `lines` that is a JSON object (None: none is)."""
    for line in lines:
        try:
            keys = key_order(orjson.loads(line))
        except ValueError:
            continue
        if keys is not None:
            return keys
    return None


# What `prepare_rules` derives from a rule set and its index alone, which engines only read: kept
# while the index lives, so that the engines of one index (`rulesd test`'s, one a test: at 1,000
# rules ~5 ms each) derive it once.
_DERIVED: weakref.WeakKeyDictionary[RuleIndex, tuple[RuleSet, dict[Rule, int], dict[Rule, Members], bool]] = (
    weakref.WeakKeyDictionary()
)


def _derived(ruleset: RuleSet, index: RuleIndex) -> tuple[dict[Rule, int], dict[Rule, Members], bool]:
    """Each rule's place in the firing's order, the index's `members`, and `_timed`."""
    found = _DERIVED.get(index)
    if found is None or found[0] is not ruleset:
        order = {rule: i for i, rule in enumerate(sorted(ruleset.rules, key=_rank))}
        found = _DERIVED[index] = (ruleset, order, members(index), _timed(ruleset))
    return found[1], found[2], found[3]


def _timed(ruleset: RuleSet) -> bool:
    """Whether any enabled rule of `ruleset` has timers (an absence, a sequence, `resolve`)."""
    return any(rule.timed and rule.enabled for rule in ruleset.rules)


Members = tuple[tuple[Rule, ...], tuple[Rule, ...], tuple[str, ...], tuple[GroupKey, ...] | None]


def members(index: RuleIndex) -> dict[Rule, Members]:
    """For each rule the index may give as a candidate, the rules that match when it does
    (itself, or those it stands for: `RuleIndex.alike`): those with state to apply, the plain
    ones (no kind, throttle, resolve nor group: they fire whenever they match, and no sweep
    looks at them), the names of all, to count, and, when none of those with state has a
    `group_by`, their groups (NO_GROUP each; else None). A rule set drawn from a few variants has
    dozens of plain rules matching one event; they cost a count each, not a pass through
    the stateful step. Rules with state but no group (a throttle alone: most matches of a
    large rule set that pages often) are added to the step's lists at once, with their
    groups, instead of one by one with a look at each one's `group_by`."""
    found: dict[Rule, Members] = {}
    for rule in index.rules:
        same = index.alike.get(rule, (rule,))
        # A run is in the firing's order already (lead first, as `_put_in_order` sorts; names are
        # unique, so by rank is by `PreparedRules.order`): a run that fires alone is the firing's
        # tuple as it is. (A run is also part of `_apply`'s key: hashed cheaply.)
        plain = Interned(r for r in same if _plain(r))
        if len(plain) > 1:  # (most rules stand for themselves alone: nothing to sort at start-up)
            plain = Interned(sorted(plain, key=_rank))
        stateful = tuple(r for r in same if not _plain(r))
        found[rule] = (stateful, plain, tuple(r.name for r in same), _ungrouped(stateful) if stateful else ())
    return found


def _ungrouped(stateful: tuple[Rule, ...]) -> tuple[GroupKey, ...] | None:
    """The groups of `stateful` if none of them has a `group_by` (NO_GROUP each), else None."""
    for rule in stateful:
        if rule.group_getters:
            return None
    return (NO_GROUP,) * len(stateful)


def _plain(rule: Rule) -> bool:
    return rule.kind is None and not rule.throttle and rule.resolve is None and not rule.group_getters


def _rank(rule: Rule) -> tuple[int, str]:
    return rule.rank


def _latest(st: dict[str, Any]) -> float:
    """The latest event time a sequence's progress holds."""
    return float(max([st["start"], *st["firsts"]]))


def _throttle_end(last: float, throttle: float) -> float:
    """The first time `Engine._allowed` lets a group throttled from `last` fire again. The sum
    `last + throttle` may round below it (`(43.8 + 60 + 120) - (43.8 + 60)` is less than 120):
    a timer set there would find the group still throttled and be set again at the same time,
    for good, holding the clock (and every rule) still."""
    end = last + throttle
    while end - last < throttle:
        end = math.nextafter(end, math.inf)
    return end


def _sees(rule: Rule, st: dict[str, Any]) -> bool:
    """Whether an edited absence (`rule`) still sees the events of a group seen before the edit
    (`st`): it matches the group's last event. A group only expected, never seen, is seen by no
    event: `expect` alone keeps it (the event it holds is made of the `expect` entry, and an
    entry the edit took out, a typo say, would be paged for though no longer expected)."""
    return not st.get(EXPECTED) and bool(rule.match(st["event"]))


def _grouping(rule: Rule) -> dict[str, Any]:
    """How a rule makes the groups its throttle holds, as saved (JSON): its kind and group_by
    (a rule without a kind is throttled as one group)."""
    kind = rule.kind
    return {
        "kind": type(kind).__name__ if kind is not None else "match",
        "group_by": list(kind.group_by) if kind is not None else [],
    }


def _silent_alert(st: dict[str, Any]) -> bool:
    """Whether an absence group holds an open alert: silent, and paged (a state saved by an
    earlier rulesd marks a silence its throttle held back as open with no alias: it is paged
    when the throttle allows, as one held back now)."""
    return bool(st["open"] and st["aliases"])


def _first(candidate: tuple[float, str, str, GroupKey]) -> float:
    return candidate[0]


def _value_groups(
    tables: dict[str, dict[GroupKey, Any]], marked: set[tuple[str, GroupKey]] | None
) -> Iterator[tuple[str, GroupKey, dict[GroupKey, Any], dict[str, float]]]:
    """The new_value groups of `tables` (rule -> group -> values) that `marked` names (None:
    every one, once) and that hold more than one value: (rule, group, the rule's groups, the
    group's values). A group marked may have been forgotten since, or its state replaced."""
    if marked is None:
        marked = {(n, k) for n, groups in tables.items() for k, v in groups.items() if type(v) is dict}
    for name, key in marked:
        groups = tables.get(name, {})
        values = groups.get(key)
        if type(values) is dict:
            yield name, key, groups, values


def _second(item: tuple[str, float]) -> float:
    return item[1]


def _expired(values: dict[str, float], cutoff: float, *, ordered: bool) -> list[str]:
    """The values of a group seen at or before `cutoff`; `ordered`: the group's values are in
    the order they were last seen, and those after the first seen later are not read."""
    if not ordered:
        return [text for text, seen in values.items() if seen <= cutoff]
    old = []
    for text, seen in values.items():
        if seen > cutoff:
            break
        old.append(text)
    return old


def _in_order(values: dict[str, float]) -> bool:
    """Whether a group's values are in the order they were last seen."""
    seen = list(values.values())
    return seen == sorted(seen)  # (in C: a sort of what is in order reads it once)


def _staleness(kind: str, value: Any) -> float:
    """When a group's state was last touched by an event: the stalest go first."""
    if kind == WINDOW:
        if type(value) is not list:  # one time
            return float(value)
        return value[-1] if value else _NEVER
    if kind == THROTTLE:
        return float(value)
    if kind in (DISTINCT, NEW_VALUE):
        if type(value) is tuple:  # one value
            return float(value[1])
        return max(value.values(), default=_NEVER)
    if kind == SEQUENCE:
        return max(_latest(value), value.get("due") or _NEVER)
    return float(value["last"])  # absence, open
