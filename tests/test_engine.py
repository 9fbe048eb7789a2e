"""The engine: thresholds, windows, throttle, one firing per event, state."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from rulesd.engine import Engine, EngineState, core
from rulesd.engine.state import window_times
from rulesd.engine.values import NO_GROUP, Matched
from rulesd.eventtime import EventTime, TimeReader
from rulesd.rules.model import RuleSet
from tests.ruletools import bytes_per_call, ruleset_from_yaml

ARRIVAL = 1_800_000_000.0  # an arrival time far from every event time below

T0 = 1_700_000_000.0


def engine_for(yaml_text: str, state: EngineState | None = None) -> Engine:
    """An engine over the rules of `yaml_text`."""
    return Engine(ruleset_from_yaml(yaml_text), state)


def fired(engine: Engine, event: dict[str, Any], time: float) -> list[str]:
    """Names of the rules that fire on `event` at `time` (lead first), [] if none."""
    firing = engine.evaluate(event, T0 + time)
    return [r.name for r in firing.rules] if firing else []


def run(engine: Engine, events: list[tuple[float, dict[str, Any]]]) -> list[list[str]]:
    """`fired` for each (time, event) in order."""
    return [fired(engine, event, t) for t, event in events]


THRESHOLD = """
name: burst
match: {level: error}
threshold: {count: 3, window: 60}
"""
ERR = {"level": "error"}


def test_without_threshold_every_match_fires() -> None:
    """A rule without threshold fires on every matching event and no other."""
    engine = engine_for("name: r\nmatch: {level: error}\n")
    assert [["r"], [], ["r"]] == run(engine, [(0, ERR), (1, {"level": "info"}), (2, ERR)])


def test_threshold_fires_exactly_at_the_nth_event() -> None:
    """The third matching event within the window fires, not the second."""
    engine = engine_for(THRESHOLD)
    assert [[], [], ["burst"]] == run(engine, [(0, ERR), (10, ERR), (20, ERR)])


def test_count_restarts_after_firing() -> None:
    """After firing, the group needs `count` new events to fire again."""
    engine = engine_for(THRESHOLD)
    times = [0, 1, 2, 3, 4, 5, 6]
    assert [[], [], ["burst"], [], [], ["burst"], []] == run(engine, [(t, ERR) for t in times])


def test_window_is_half_open() -> None:
    """An event exactly `window` seconds older than the current one no longer counts."""
    engine = engine_for(THRESHOLD)
    assert [[], [], []] == run(engine, [(0, ERR), (30, ERR), (60, ERR)])
    engine = engine_for(THRESHOLD)
    assert [[], [], ["burst"]] == run(engine, [(0, ERR), (30, ERR), (59.999, ERR)])


def test_old_events_slide_out_of_the_window() -> None:
    """Only events within the last `window` seconds count."""
    engine = engine_for(THRESHOLD)
    events = [(0, ERR), (50, ERR), (100, ERR), (105, ERR)]
    assert [[], [], [], ["burst"]] == run(engine, events)


def test_late_events_count_in_time_order() -> None:
    """An event older than the latest one still counts by its own time: it leaves the window
    first."""
    engine = engine_for(THRESHOLD)
    events = [(50, ERR), (0, ERR), (65, ERR), (75, ERR), (100, ERR), (90, ERR)]
    assert [[], [], [], ["burst"], [], []] == run(engine, events)
    assert [["burst"]] == run(engine, [(95, ERR)])


def test_non_matching_events_do_not_count() -> None:
    """Events the rule does not match never add to its count."""
    engine = engine_for(THRESHOLD)
    info = {"level": "info"}
    assert [[], [], [], [], ["burst"]] == run(engine, [(0, ERR), (1, info), (2, info), (3, ERR), (4, ERR)])


GROUPED = """
name: per-host
match: {level: error}
threshold: {count: 2, window: 60, group_by: [host]}
"""


def test_group_by_counts_each_group_apart() -> None:
    """Each host has its own count."""
    engine = engine_for(GROUPED)
    events = [
        (0, {"level": "error", "host": "a"}),
        (1, {"level": "error", "host": "b"}),
        (2, {"level": "error", "host": "a"}),
        (3, {"level": "error", "host": "b"}),
    ]
    assert [[], [], ["per-host"], ["per-host"]] == run(engine, events)


def test_missing_group_field_is_its_own_group() -> None:
    """A missing group field is a group of its own, apart from null and from ""."""
    engine = engine_for(GROUPED)
    events = [
        (0, {"level": "error"}),
        (1, {"level": "error", "host": None}),
        (2, {"level": "error", "host": ""}),
        (3, {"level": "error", "host": "missing"}),
        (4, {"level": "error"}),
        (5, {"level": "error", "host": None}),
    ]
    assert [[], [], [], [], ["per-host"], ["per-host"]] == run(engine, events)


def test_group_values_of_different_types_are_different_groups() -> None:
    """`1` and `"1"` are different hosts, as they are different values."""
    engine = engine_for(GROUPED)
    events = [(0, {"level": "error", "host": 1}), (1, {"level": "error", "host": "1"})]
    assert [[], []] == run(engine, events)


def test_group_values_are_saved_as_json_texts() -> None:
    """A group is saved as the JSON texts of its values, escapes and long values included."""
    engine = engine_for(GROUPED)
    engine.state.delta()
    hosts = ['a"b', "back\\slash", "line\nbreak", "é", "h" * 100, "plain", 1.5, {"b": 1, "a": [None]}]
    run(engine, [(t, {"level": "error", "host": host}) for t, host in enumerate(hosts)])
    saved = sorted(group for _, _, group, _ in engine.state.delta().upserts)
    assert (
        sorted(
            json.dumps(
                [json.dumps(h, ensure_ascii=False, separators=(",", ":"), sort_keys=True)],
                ensure_ascii=False,
                separators=(",", ":"),
            )
            for h in hosts
        )
        == saved
    )


THROTTLED = """
name: noisy
match: {level: error}
throttle: 600
"""


def test_throttle_suppresses_within_the_period_and_allows_after() -> None:
    """Once fired, a rule stays quiet for `throttle` seconds of event time."""
    engine = engine_for(THROTTLED)
    events = [(0, ERR), (1, ERR), (599, ERR), (600, ERR), (601, ERR), (1200, ERR)]
    assert [["noisy"], [], [], ["noisy"], [], ["noisy"]] == run(engine, events)


def test_throttle_is_per_group() -> None:
    """A throttled group does not silence another group."""
    engine = engine_for(
        "name: t\nmatch: {level: error}\nthreshold: {count: 1, window: 10, group_by: [host]}\nthrottle: 100\n"
    )
    events = [
        (0, {"level": "error", "host": "a"}),
        (1, {"level": "error", "host": "b"}),
        (2, {"level": "error", "host": "a"}),
    ]
    assert [["t"], ["t"], []] == run(engine, events)


def test_a_throttle_saves_the_firings_it_lets_through_and_starts_its_table_again_in_a_new_state() -> None:
    """A firing the throttle lets through is a changed group of the saved state; one it holds
    back changes nothing. A state restored without the rule's throttle table (another
    instance's, or none yet) throttles from the next firing on, as a first one does."""
    engine = engine_for(
        "name: t\nmatch: {level: error}\nthreshold: {count: 1, window: 10, group_by: [host]}\nthrottle: 100\n"
    )
    engine.state.delta()  # the initial full save
    a, b = {"level": "error", "host": "a"}, {"level": "error", "host": "b"}
    assert [["t"], [], ["t"]] == run(engine, [(0, a), (1, a), (2, b)])
    delta = engine.state.delta()
    assert [
        ("throttle", "t", '["\\"a\\""]', "1700000000.0"),
        ("throttle", "t", '["\\"b\\""]', "1700000002.0"),
    ] == sorted(delta.upserts)
    assert [[]] == run(engine, [(3, a)])
    assert not engine.state.delta().upserts
    engine.restore(EngineState(), T0 + 4)
    assert [["t"], [], ["t"]] == run(engine, [(5, a), (6, a), (105, a)])
    assert {'"a"': T0 + 105} == engine.state.tables["throttle"]["t"]


def test_rules_firing_together_make_one_firing_lead_first() -> None:
    """All rules firing on one event are one firing; lead = highest priority, then name."""
    engine = engine_for(
        """
rules:
  - {name: zeta, match: {level: error}, alert: {priority: P1}}
  - {name: alpha, match: {level: error}, alert: {priority: P2}}
  - {name: beta, match: {level: error}}
  - {name: aardvark, match: {level: error}, alert: {priority: P2}}
  - {name: other, match: {level: info}, alert: {priority: P1}}
"""
    )
    firing = engine.evaluate(ERR, T0)
    assert firing is not None
    assert (["zeta", "aardvark", "alpha", "beta"], "zeta") == (
        [r.name for r in firing.rules],
        firing.lead.name,
    )


def test_rules_of_an_equal_set_loaded_again_are_still_put_lead_first() -> None:
    """The firing rules are sorted by their place in the engine's rule set; rules the engine
    does not hold (matched with a copy of the set loaded again) are sorted by their rank."""
    text = """
rules:
  - {name: beta, match: {level: error}}
  - {name: alpha, match: {level: error}, alert: {priority: P1}}
"""
    engine, copy = engine_for(text), ruleset_from_yaml(text)
    firing = engine.apply(Matched(ERR, T0, list(copy.rules), [NO_GROUP, NO_GROUP]))
    assert firing is not None
    assert ["alpha", "beta"] == [r.name for r in firing.rules]


def test_only_rules_that_fire_are_in_the_firing() -> None:
    """A matching rule still below its threshold is not named."""
    engine = engine_for(
        "rules:\n  - {name: now, match: {level: error}}\n"
        "  - {name: later, match: {level: error}, threshold: {count: 2, window: 60}}\n"
    )
    assert [["now"], ["later", "now"]] == run(engine, [(0, ERR), (1, ERR)])


class _Reads(dict[str, Any]):
    """An event that counts the reads of each of its fields."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reads: dict[str, int] = {}

    def get(self, key: str, default: Any = None) -> Any:
        self.reads[key] = self.reads.get(key, 0) + 1
        return super().get(key, default)


def test_rules_with_one_condition_have_it_tested_once_per_event() -> None:
    """Forty rules written with the same condition (a rule set drawn from a few variants) are
    tested by one predicate call per event, not forty, and each still counts, fires and keeps
    its own state; a rule with the same condition but another value is tested apart."""
    same = "match: {uri: {startswith: /wp-login}, not: {remote_addr: {startswith: '10.'}}}"
    lines = [f"  - {{name: admin-{i:02}, {same}, threshold: {{count: {1 + i % 2}, window: 60}}}}" for i in range(40)]
    other = "match: {uri: {startswith: /wp-login}, not: {remote_addr: {startswith: '192.'}}}"
    engine = engine_for("rules:\n" + "\n".join(lines) + f"\n  - {{name: other, {other}}}\n")
    first = _Reads({"uri": "/wp-login.php", "remote_addr": "203.0.113.9"})
    assert [*(f"admin-{i:02}" for i in range(0, 40, 2)), "other"] == fired(engine, first, 0)
    assert 2 == first.reads["remote_addr"]  # once for the forty, once for `other`
    second = _Reads({"uri": "/wp-login.php", "remote_addr": "10.1.2.3"})
    assert ["other"] == fired(engine, second, 1)
    assert 2 == second.reads["remote_addr"]
    assert [*(f"admin-{i:02}" for i in range(40)), "other"] == fired(engine, first, 2)
    assert {2} == {engine.matches[f"admin-{i:02}"] for i in range(40)}
    assert 3 == engine.matches["other"]


def test_disabled_rules_never_fire() -> None:
    """`enabled: false` loads the rule but never fires it."""
    engine = engine_for("name: quiet\nenabled: false\nmatch: {level: error}\n")
    assert [[], []] == run(engine, [(0, ERR), (1, ERR)])


def test_state_round_trip_through_json_preserves_behaviour() -> None:
    """Window and throttle state saved as JSON and restored carries on where it was."""
    text = """
rules:
  - {name: burst, match: {level: error}, threshold: {count: 3, window: 60, group_by: [host]}}
  - {name: noisy, match: {level: error}, throttle: 600}
"""
    ruleset = ruleset_from_yaml(text)
    first = Engine(ruleset)
    a, b = {"level": "error", "host": "a"}, {"level": "error"}
    assert [["noisy"], [], []] == run(first, [(0, a), (1, a), (2, b)])
    saved = json.loads(json.dumps(first.state.to_json()))
    restored = Engine(ruleset, EngineState.from_json(saved))
    assert [["burst"], [], ["noisy"]] == run(restored, [(3, a), (4, b), (700, {"level": "error", "host": "c"})])
    assert saved == json.loads(json.dumps(EngineState.from_json(saved).to_json()))


def test_replace_rules_keeps_state_of_unchanged_rules_only() -> None:
    """On reload, unchanged rules keep their counts; changed ones start afresh."""
    old = """
rules:
  - {name: same, match: {level: error}, threshold: {count: 2, window: 60}}
  - {name: edited, match: {level: error}, threshold: {count: 2, window: 60}}
"""
    new = """
rules:
  - {name: same, match: {level: error}, threshold: {count: 2, window: 60}}
  - {name: edited, match: {level: error}, threshold: {count: 2, window: 61}}
  - {name: added, match: {level: error}, threshold: {count: 2, window: 60}}
"""
    engine = engine_for(old)
    assert [[]] == run(engine, [(0, ERR)])
    engine.replace_rules(ruleset_from_yaml(new))
    assert [["same"], ["added", "edited"]] == run(engine, [(1, ERR), (2, ERR)])


def test_replace_rules_drops_state_of_removed_rules() -> None:
    """A rule that disappears leaves no state behind, even if it comes back."""
    text = "name: r\nmatch: {level: error}\nthreshold: {count: 2, window: 60}\n"
    engine = engine_for(text)
    run(engine, [(0, ERR)])
    engine.replace_rules(ruleset_from_yaml("name: other\nmatch: {x: 1}\n"))
    assert 0 == engine.state.group_count()
    engine.replace_rules(ruleset_from_yaml(text))
    assert [[], ["r"]] == run(engine, [(1, ERR), (2, ERR)])


def test_sweep_drops_expired_groups() -> None:
    """Groups whose window or throttle has passed by the rule's own latest event time are
    forgotten: state stays bounded."""
    engine = engine_for(
        """
rules:
  - {name: w, match: {level: error}, threshold: {count: 5, window: 60, group_by: [host]}}
  - {name: t, match: {level: error}, threshold: {count: 1, window: 1, group_by: [host]}, throttle: 100}
"""
    )
    for i in range(50):
        engine.evaluate({"level": "error", "host": f"h{i}"}, T0 + i)
    assert 100 == engine.state.group_count()
    engine.sweep(T0 + 109)  # the rules' latest event is at T0 + 49: nothing has ended by then
    assert 100 == engine.state.group_count()
    engine.evaluate({"level": "error", "host": "late"}, T0 + 109)
    engine.sweep(T0 + 109)  # every window of h0..h49 ended; throttles of h0..h9 ended
    assert (['"late"'], 41) == (list(engine.state.windows["w"]), len(engine.state.throttles["t"]))
    engine.evaluate({"level": "error", "host": "later"}, T0 + 300)
    engine.sweep(T0 + 300)
    assert 2 == engine.state.group_count()  # only "later", in both rules


def test_a_sweep_reads_windows_and_throttles_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep reads each window and throttle group's time where it is (one time, the latest
    of several, none), not through a call per group: a held-out replay at 1,000 rules sweeps
    ~11,000 window groups at a time. It forgets what ended, and only that."""
    engine = engine_for(
        """
rules:
  - {name: w, match: {level: error}, threshold: {count: 3, window: 60, group_by: [host]}}
  - {name: t, match: {level: error}, throttle: 100}
"""
    )
    for host, at in [("one", 0), ("two", 0), ("two", 30), ("old-two", 0), ("old-two", 1)]:
        engine.evaluate({"level": "error", "host": host}, T0 + at)
    windows = engine.state.windows["w"]
    windows['"none"'] = []  # (as a window of 0s leaves a group)
    assert [float, list, list, list] == [type(windows[k]) for k in ['"one"', '"two"', '"old-two"', '"none"']]

    def called(kind: str, value: Any) -> float:
        raise AssertionError(f"a call per {kind} group")

    monkeypatch.setattr(core, "_staleness", called)
    engine.evaluate({"level": "error", "host": "new"}, T0 + 61)
    engine.sweep(T0 + 61)  # windows that ended by T0 + 1: "one" (T0), "old-two" (T0 + 1), "none"
    assert ['"new"', '"two"'] == sorted(windows)
    assert {"": T0} == engine.state.throttles["t"]
    engine.evaluate({"level": "error", "host": "new"}, T0 + 101)
    engine.sweep(T0 + 101)
    assert {"": T0 + 101} == engine.state.throttles["t"]  # fired again once its throttle ended


def test_sweep_keeps_live_groups() -> None:
    """A sweep keeps groups still inside their window, and their counts."""
    engine = engine_for(GROUPED)
    engine.evaluate({"level": "error", "host": "a"}, T0)
    engine.evaluate({"level": "error", "host": "b"}, T0 + 50)
    engine.evaluate({"level": "error", "host": "c"}, T0 + 70)
    engine.sweep(T0 + 70)
    assert ['"b"', '"c"'] == sorted(engine.state.windows["per-host"])  # a's window ended at T0 + 60
    assert [["per-host"]] == run(engine, [(71, {"level": "error", "host": "b"})])


def test_many_distinct_groups_stay_bounded_over_time() -> None:
    """With a steady flow of new groups, periodic sweeps keep state from growing."""
    engine = engine_for(GROUPED)
    for i in range(20000):
        engine.evaluate({"level": "error", "host": f"h{i}"}, T0 + i / 10)
    assert engine.state.group_count() <= 600 + 4096


def test_ruleset_is_the_engines_current_one() -> None:
    """The engine exposes the rule set it evaluates."""
    ruleset: RuleSet = ruleset_from_yaml(THRESHOLD)
    assert ruleset is Engine(ruleset).ruleset


def test_matches_are_counted_per_rule_even_below_the_threshold() -> None:
    """engine.matches counts events that satisfied a rule's condition, fired or not."""
    engine = engine_for(THRESHOLD)
    run(engine, [(0, ERR), (1, ERR), (2, {"level": "info"})])
    assert {"burst": 2} == engine.matches


def test_state_changes_are_tracked_per_group() -> None:
    """Only touched groups are saved: a non-matching event changes nothing; a match marks its
    group; a firing that resets the group turns it into a deletion."""
    engine = engine_for(THRESHOLD.replace("window: 60}", "window: 60, group_by: [host]}"))
    engine.state.delta()  # the initial full save
    run(engine, [(0, {"level": "info"})])
    assert not engine.state.changed
    run(engine, [(1, {"level": "error", "host": "a"})])
    delta = engine.state.delta()
    assert (False, [("window", "burst", '["\\"a\\""]', "[1700000001.0]")], []) == (
        delta.full,
        delta.upserts,
        delta.deletes,
    )
    run(engine, [(2, {"level": "error", "host": "a"}), (3, {"level": "error", "host": "a"})])
    delta = engine.state.delta()
    assert ([], [("window", "burst", '["\\"a\\""]')]) == (delta.upserts, delta.deletes)
    assert not engine.state.changed


def test_an_engine_whose_state_is_not_saved_tracks_no_changes() -> None:
    """Replay and rule tests never save: the same firings, but no growing set of changed groups."""
    rules = ruleset_from_yaml(THRESHOLD.replace("window: 60}", "window: 60, group_by: [host]}"))
    saved, unsaved = Engine(rules), Engine(rules, saved=False)
    saved.state.delta()
    unsaved.state.delta()
    events = [(i, {"level": "error", "host": f"h{i % 4}"}) for i in range(40)]
    assert run(saved, events) == run(unsaved, events)
    assert saved.state.touched and not unsaved.state.touched
    for engine in (saved, unsaved):  # much later: every earlier window ends
        engine.evaluate({"level": "error", "host": "z"}, 1e12)
        engine.sweep(1e12)
    assert ['"z"'] == list(unsaved.state.windows["burst"]) and not unsaved.state.touched


def test_a_new_rule_set_saves_the_whole_state() -> None:
    """After replace_rules the saved state is rewritten in full."""
    engine = engine_for(THRESHOLD)
    engine.state.delta()
    engine.replace_rules(ruleset_from_yaml(THRESHOLD.replace("count: 3", "count: 4")))
    assert engine.state.delta().full


def test_thresholds_count_in_the_time_field_s_time_not_the_arrival_time() -> None:
    """Two events within the window by their `ts` fire though they arrive an hour apart; two
    that arrive together but are ten minutes apart by `ts` do not."""
    rules = ruleset_from_yaml("name: pair\nmatch: {level: error}\nthreshold: {count: 2, window: 1m}\n")
    engine = Engine(rules, time_field="ts", saved=False)
    assert engine.evaluate({"level": "error", "ts": 1000}, ARRIVAL) is None
    firing = engine.evaluate({"level": "error", "ts": "1970-01-01T00:16:50Z"}, ARRIVAL + 3600)
    assert firing is not None and 1010.0 == firing.time
    assert engine.evaluate({"level": "error", "ts": 2000}, ARRIVAL) is None
    assert engine.evaluate({"level": "error", "ts": 2600}, ARRIVAL) is None
    nested = Engine(rules, time_field="meta.ts", saved=False)  # a dotted path works too
    assert nested.evaluate({"level": "error", "meta": {"ts": 0}}, ARRIVAL) is None
    assert nested.evaluate({"level": "error", "meta": {"ts": 30}}, ARRIVAL + 3600) is not None


def test_each_source_s_time_is_read_its_own_way_and_only_for_events_a_rule_may_match() -> None:
    """Two readers (two sources) share one engine and its state: each evaluator reads its own
    field and format. An event no rule may match is never timed, so a slow format costs it
    nothing and its unreadable time is not counted; a candidate's unreadable time is."""
    rules = ruleset_from_yaml("name: pair\nmatch: {level: error}\nthreshold: {count: 2, window: 1m}\n")
    engine = Engine(rules, saved=False)
    seconds = TimeReader(EventTime("ts"))
    millis = TimeReader(EventTime("t", "epoch_ms"))
    assert engine.evaluator(seconds) is engine.evaluator(seconds)  # written once per reader
    assert engine.evaluator(seconds)({"level": "error", "ts": 1000.0}, ARRIVAL) is None
    firing = engine.evaluator(millis)({"level": "error", "t": 1_030_000}, ARRIVAL)
    assert firing is not None and 1030.0 == firing.time
    engine.evaluator(millis)({"level": "info", "t": "never read"}, ARRIVAL)
    assert 0 == millis.misses
    engine.evaluator(millis)({"level": "error", "t": "soon"}, ARRIVAL)
    assert (1, "soon") == (millis.misses, millis.latest_miss)
    written = engine.evaluator(millis)
    engine.replace_rules(rules)  # a reload writes them again, for the new index
    assert engine.evaluator(millis) is not written
    firing = engine.evaluator(millis)({"level": "error", "t": (ARRIVAL + 10) * 1000}, ARRIVAL)
    assert firing is not None and ARRIVAL + 10 == firing.time  # paired with the untimed one


def test_a_time_text_read_again_is_not_converted_again_and_misses_are_each_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Matching events that share a timestamp text (a second's resolution) have it converted
    once; at another arrival it is read again (a year-less time depends on it). Unreadable
    times and times too far ahead are counted on every event, even the same text again, and
    are read as their arrival, not as a time kept from before."""
    from rulesd import eventtime

    parsed: list[str] = []
    iso = eventtime._iso
    monkeypatch.setattr(eventtime, "_iso", lambda text: parsed.append(text) or iso(text))
    engine = Engine(ruleset_from_yaml("name: all\nmatch: {level: error}\n"), time_field="ts", saved=False)
    stamp = "2024-06-11T10:00:00+00:00"
    times = [engine.evaluate({"level": "error", "ts": stamp, "n": n}, ARRIVAL) for n in range(3)]
    assert [1718100000.0] * 3 == [firing.time for firing in times if firing is not None]
    assert [stamp] == parsed
    assert engine.evaluate({"level": "info", "ts": "2024-06-11T10:00:01+00:00"}, ARRIVAL) is None  # not timed
    engine.evaluate({"level": "error", "ts": stamp}, ARRIVAL + 1)
    assert [stamp, stamp] == parsed
    reader = engine.time
    assert reader is not None and 0 == reader.misses
    ahead = "2099-01-01T00:00:00Z"
    for text in ("soon", "soon", ahead, ahead):
        firing = engine.evaluate({"level": "error", "ts": text}, ARRIVAL)
        assert firing is not None and ARRIVAL == firing.time
    assert (4, ahead, True) == (reader.misses, reader.latest_miss, reader.latest_ahead)
    firing = engine.evaluate({"level": "error", "ts": stamp}, ARRIVAL)
    assert firing is not None and 1718100000.0 == firing.time


def test_load_groups_replaces_groups_and_sets_their_timers() -> None:
    """Groups another process committed replace the cached ones (None forgets one) and their
    timers are set again: the loaded silence fires when due, the stale timer of a group seen
    since does not."""
    from rulesd.pipeline import advance

    ruleset = ruleset_from_yaml(
        "rules:\n  - name: quiet\n    match: {kind: beat}\n    absence: {window: 60, group_by: [host]}\n"
    )
    engine = Engine(ruleset, time_field="t")
    engine.evaluate({"kind": "beat", "host": "a", "t": 100.0}, 0.0)
    engine.evaluate({"kind": "beat", "host": "c", "t": 100.0}, 0.0)

    def seen(host: str, at: float) -> dict[str, object]:
        event = {"kind": "beat", "host": host, "t": at}
        return {"last": at, "event": event, "origin": None, "open": False, "aliases": []}

    engine.load_groups(
        {
            ("absence", "quiet", '"a"'): seen("a", 150.0),  # seen since by another process
            ("absence", "quiet", '"b"'): seen("b", 130.0),  # only another process saw it
            ("absence", "quiet", '"c"'): None,  # gone
        },
        150.0,
    )
    assert 150.0 == engine.now
    fired = advance(engine, 200.0).firings
    assert [{"host": "b"}] == [{"host": f.event["host"]} for _, f, _ in fired]
    assert ["a"] == [f.event["host"] for _, f, _ in advance(engine, 215.0).firings]  # 150 + 60, not 100 + 60


def _reference_threshold(
    count: int, window: float, events: list[tuple[str, float]]
) -> tuple[list[int], dict[str, list[float]]]:
    """A threshold counted the plain way, every group's times in a sorted list: the indexes of
    the events that fire, and the times each group holds at the end. The window ends at the
    group's latest time (a late event's own time is earlier)."""
    groups: dict[str, list[float]] = {}
    fired = []
    for i, (group, time) in enumerate(events):
        times = sorted([*groups.get(group, []), time])
        times = [t for t in times if t > times[-1] - window]
        if len(times) >= count:
            groups.pop(group, None)
            fired.append(i)
        else:
            groups[group] = times
    return fired, groups


@pytest.mark.parametrize("count", [1, 2, 3, 5])
@pytest.mark.parametrize("window", [1, 7, 60])
def test_a_threshold_counts_the_same_whether_a_group_holds_one_time_or_more(count: int, window: int) -> None:
    """A group holding one time keeps it as a bare float, more as a list: whatever it holds, in
    or out of time order, the same events fire as counting every group's times in a list, and
    the group holds the same times after."""
    rng = random.Random(count * 100 + window)
    engine = engine_for(
        f"name: r\nmatch: {{level: error}}\nthreshold: {{count: {count}, window: {window}, group_by: [host]}}\n"
    )
    events = [(rng.choice("abc"), T0 + i + rng.choice([0, 0, 0, -3, -8, 0.5])) for i in range(400)]
    fired = [i for i, (host, time) in enumerate(events) if engine.evaluate({"level": "error", "host": host}, time)]
    expected, holds = _reference_threshold(count, window, events)
    assert expected == fired
    kept = engine.state.windows.get("r", {})
    assert {f'"{h}"': times for h, times in holds.items()} == {k: window_times(v) for k, v in kept.items()}
    assert all(type(v) is float for v in kept.values() if len(window_times(v)) == 1)


def test_a_group_of_one_event_costs_a_string_and_a_float() -> None:
    """A live threshold group of one event is its key (one string, whatever the number of
    group_by fields) and its time (one float), with its slot in the rule's table: well under
    the 254 bytes a group cost as a tuple key and a list of times (tracemalloc, CPython)."""
    for group_by, limit in (("[host]", 150), ("[host, dc]", 170)):
        text = f"name: r\nmatch: {{level: error}}\nthreshold: {{count: 5, window: 1d, group_by: {group_by}}}\n"
        engine = Engine(ruleset_from_yaml(text), saved=False)  # as replay: no record of changes to save
        count = 20_000
        per_group = bytes_per_call(
            lambda i, e=engine: e.evaluate({"level": "error", "host": f"host-{i:08d}", "dc": "x"}, T0 + i), count
        )
        keys = list(engine.state.windows["r"])
        assert count == len(keys) and all(type(k) is str for k in keys)
        assert per_group < limit, f"group_by {group_by}: {per_group:.0f} bytes per group"


def test_plain_rules_alike_are_applied_as_one_run() -> None:
    """Dozens of rules alike with no kind, throttle nor resolve (a rule set drawn from a few
    variants) fire whenever their shared predicate holds: they reach the stateful step as one
    run, not each on its own, and each is still counted and fired, lead first."""
    plain = "".join(f"  - {{name: admin-{i:02d}, match: {{uri: {{startswith: /admin}}}}}}\n" for i in range(40))
    engine = engine_for(
        "rules:\n"
        + plain
        + "  - {name: admin-burst, match: {uri: {startswith: /admin}}, threshold: {count: 2, window: 60}}\n"
        + "  - {name: admin-first, match: {uri: {startswith: /admin}}, alert: {priority: P1}}\n"
    )
    event = {"uri": "/admin/users"}
    matched = engine.matcher(None)(event, T0)
    assert matched is not None
    assert ["admin-burst"] == [r.name for r in matched.rules]
    plain_names = ["admin-first"] + [f"admin-{i:02d}" for i in range(40)]  # a run is lead first
    assert [plain_names] == [[r.name for r in run] for run in matched.plain]
    assert engine.apply(matched) is not None
    firing = engine.evaluate(event, T0 + 1)
    assert firing is not None
    expected = ["admin-first"] + [f"admin-{i:02d}" for i in range(40)] + ["admin-burst"]  # by priority, then name
    assert expected == [r.name for r in firing.rules]
    assert {name: 2 for name in expected} == engine.matches


ALIKE = "".join(f"  - {{name: admin-{i:02d}, match: {{uri: {{startswith: /admin}}}}}}\n" for i in range(40))


def test_rules_alike_that_fire_together_again_share_one_tuple_in_order() -> None:
    """The same dozens of rules alike fire on event after event: they are put in order once
    per combination of what fired, and each firing carries the same tuple (which the alert's
    names and alias are then made of once, see `alias.rule_names`), lead first every time."""
    engine = engine_for(
        "rules:\n"
        + ALIKE
        + "  - {name: admin-burst, match: {uri: {startswith: /admin}}, threshold: {count: 2, window: 60}}\n"
        + "  - {name: admin-first, match: {uri: {startswith: /admin}}, alert: {priority: P1}}\n"
    )
    alike = ["admin-first"] + [f"admin-{i:02d}" for i in range(40)]
    firings = [engine.evaluate({"uri": f"/admin/{i}"}, T0 + i) for i in range(4)]
    assert all(f is not None for f in firings)
    rules = [f.rules for f in firings if f is not None]
    burst = [*alike, "admin-burst"]
    assert [alike, burst, alike, burst] == [[r.name for r in t] for t in rules]
    assert rules[0] is rules[2] and rules[1] is rules[3]


def test_a_run_of_plain_rules_that_fires_alone_is_the_firings_tuple() -> None:
    """Plain rules alike that fire with nothing else (most firings of most rule sets: one plain
    rule, or one run of them) need no lookup of their order: the run is made lead first with
    the rule set, and each firing carries it as it is, the same tuple every time."""
    engine = engine_for(
        "rules:\n" + ALIKE + "  - {name: admin-first, match: {uri: {startswith: /admin}}, alert: {priority: P1}}\n"
    )
    firings = [engine.evaluate({"uri": f"/admin/{i}"}, T0 + i) for i in range(3)]
    assert all(f is not None for f in firings)
    rules = [f.rules for f in firings if f is not None]
    assert [["admin-first"] + [f"admin-{i:02d}" for i in range(40)]] * 3 == [[r.name for r in t] for t in rules]
    assert rules[0] is rules[1] is rules[2]
    matched = engine.matcher(None)({"uri": "/admin"}, T0 + 3)
    assert matched is not None and [rules[0]] == matched.plain and matched.plain[0] is rules[0]
    assert not engine._in_order  # nothing to remember: the run is its own order


def test_the_order_of_rules_that_fired_follows_a_reload_and_a_full_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The order remembered per combination of fired rules is the rule set's: a reload that
    changes the priorities orders them anew; and with more combinations than are remembered,
    each still comes out in order."""
    monkeypatch.setattr(core, "IN_ORDER_KEPT", 2)
    engine = engine_for("rules:\n" + ALIKE)
    assert ["admin-00", "admin-01"] == fired(engine, {"uri": "/admin"}, 0)[:2]
    engine.replace_rules(
        ruleset_from_yaml("rules:\n" + ALIKE.replace("name: admin-39,", "name: admin-39, alert: {priority: P1},"))
    )
    assert ["admin-39", "admin-00"] == fired(engine, {"uri": "/admin"}, 1)[:2]
    flags = "rules:\n" + "".join(
        f"  - {{name: f{i}, match: {{f{i}: 1}}, alert: {{priority: P{5 - i}}}}}\n" for i in range(4)
    )
    engine = engine_for(flags)
    for bits in [*range(1, 16), *range(1, 16)]:
        event = {f"f{i}": 1 for i in range(4) if bits >> i & 1}
        assert [f"f{i}" for i in range(3, -1, -1) if bits >> i & 1] == fired(engine, event, bits)
        assert len(engine._in_order) <= 2


class Writes(dict[str, int]):
    """A dict that counts the writes to it."""

    writes = 0

    def __setitem__(self, key: str, value: int) -> None:
        self.writes += 1
        super().__setitem__(key, value)


def test_matches_of_rules_alike_are_counted_per_rule_when_read_not_per_event() -> None:
    """Each of 40 rules alike counts the events it matched, but not one write per rule and
    event: the candidate standing for them counts, and its rules' counts are brought up to
    date when read (`matches`; the daemon's metrics hold the dict, brought up to date after
    each batch by `count_matches`)."""
    engine = engine_for("rules:\n" + ALIKE + "  - {name: other, match: {uri: /other}}\n")
    live = engine.matches = Writes()
    for i in range(50):
        engine.evaluate({"uri": "/admin"}, T0 + i)
    engine.evaluate({"uri": "/other"}, T0 + 50)
    assert 0 == live.writes  # nothing counted per rule yet
    assert {**{f"admin-{i:02d}": 50 for i in range(40)}, "other": 1} == engine.matches
    assert 41 == live.writes  # once per rule, for 51 events
    engine.evaluate({"uri": "/admin"}, T0 + 51)
    engine.count_matches()
    assert 51 == live["admin-00"] and live is engine.matches


def test_matches_counted_over_a_long_replay_stay_exact_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replay never reads the counts: the matches listed per candidate are added up once
    `COUNTED_KEPT` have piled up, so a long replay holds no more than that, and the counts
    stay exact across each adding up, as when read in between."""
    monkeypatch.setattr(core, "COUNTED_KEPT", 7)
    engine = engine_for("rules:\n" + ALIKE + "  - {name: other, match: {uri: /other}}\n")
    live = engine.matches = Writes()
    for i in range(100):
        engine.evaluate({"uri": "/admin" if i % 3 else "/other"}, T0 + i)
        assert len(engine._counted) < 7
        if i == 50:
            assert {**{f"admin-{i:02d}": 34 for i in range(40)}, "other": 17} == engine.matches
    assert 0 < live.writes
    assert {**{f"admin-{i:02d}": 66 for i in range(40)}, "other": 34} == engine.matches


def test_rules_that_group_alike_make_an_events_group_key_once() -> None:
    """Rules drawn from a few variants group by a handful of paths: the rules an event matches
    that group by the same paths share one tuple of getters, and the event's key is made once
    for them (a rule grouping otherwise gets its own), each rule still counting in its group."""
    engine = engine_for(
        "rules:\n"
        + "".join(
            f"  - {{name: burst-{i}, match: {{level: error}}, threshold: {{count: 2, window: 60, group_by: [host]}}}}\n"
            for i in range(3)
        )
        + "  - {name: by-both, match: {level: error}, threshold: {count: 2, window: 60, group_by: [host, app]}}\n"
        + "  - {name: plain, match: {level: error}}\n"
    )
    rules = {r.name: r for r in engine.ruleset.rules}
    assert rules["burst-0"].group_getters is rules["burst-1"].group_getters is rules["burst-2"].group_getters
    assert rules["by-both"].group_getters is not rules["burst-0"].group_getters
    made: list[tuple[int, ...]] = []
    keys = engine._group_key

    def counting(getters: tuple[Any, ...], event: dict[str, Any]) -> str:
        made.append(tuple(map(id, getters)))
        return keys(getters, event)

    engine._group_key = counting
    event = {"level": "error", "host": "a", "app": "x"}
    matched = engine.matcher(None)(event, T0)
    assert matched is not None
    assert 2 == len(made) and len(set(made)) == 2  # one key for the three, one for by-both
    assert ['"a"'] * 3 + ['"a"\x1f"x"'] == [
        g for r, g in zip(matched.rules, matched.groups, strict=True) if r.name != "plain"
    ]
    assert ["plain"] == fired(engine, event, 0)
    assert ["burst-0", "burst-1", "burst-2", "by-both", "plain"] == sorted(fired(engine, event, 1))
    assert ["plain"] == fired(engine, {"level": "error", "host": "b", "app": "x"}, 2)
    assert ["plain"] == fired(engine, {"level": "error", "host": "a", "app": "y"}, 3)
    assert ["burst-0", "burst-1", "burst-2", "plain"] == sorted(
        fired(engine, {"level": "error", "host": "b", "app": "y"}, 4)
    )


def test_engines_sharing_an_index_share_its_written_evaluator_and_keep_their_own_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An index writes its root's function once (`rulesd test` builds an engine a test on one
    index: at 1,000 rules the writing was most of a test's time), and what the engines derive
    from the index alone (`members`, the rules' order) is derived once; each engine's copy of
    the function binds its own candidates and step, so interleaved events count in their own
    engine alone."""
    from rulesd.rules import index as index_module

    written, derived = [], []
    write, derive = index_module._NodeWriter.evaluator, core.members

    def counted(self: Any, plan: Any) -> Any:
        written.append(plan)
        return write(self, plan)

    def counted_members(index: Any) -> Any:
        derived.append(index)
        return derive(index)

    monkeypatch.setattr(index_module._NodeWriter, "evaluator", counted)
    monkeypatch.setattr(core, "members", counted_members)
    ruleset = ruleset_from_yaml(THRESHOLD)
    shared = index_module.RuleIndex(ruleset.rules)
    one, other = Engine(ruleset, index=shared), Engine(ruleset, index=shared)
    burst = [{"level": "error", "host": "a"}] * 3
    assert [[], [], []] == [fired(one, burst[0], 0), fired(other, burst[1], 1), fired(one, burst[2], 2)]
    assert ["burst"] == fired(one, burst[0], 3)  # (its third error: the other's is not its)
    assert [] == fired(other, burst[0], 4)
    assert 1 == len(written)
    assert [shared] == derived
