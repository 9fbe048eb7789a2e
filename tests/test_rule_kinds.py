"""The rule kinds beyond counting (distinct, sequence, absence, new_value) and closing alerts
(resolve), through the pipeline that `rulesd test`, `rulesd replay` and the daemon share."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from rulesd.alerting.payload import AlertSettings
from rulesd.engine import Closing, Engine, EngineState, Limits
from rulesd.engine.core import THROTTLED
from rulesd.engine.state import ABSENCE, OPEN, RULE, SEQUENCE, seen_values
from rulesd.errors import RuleError
from rulesd.pipeline import build_alerts, evaluate_events, pending
from tests.ruletools import bytes_per_call, ruleset_from_yaml

T0 = 1_700_000_000.0
Step = tuple[float, dict[str, Any] | None]  # (seconds from T0, event); a None event only moves the clock


def run(engine: Engine, steps: list[Step]) -> list[tuple[Any, ...]]:
    """What the steps cause, in order: ("alert", rules, event number) with the number of the
    event the alert carries (0: none), or ("close", rules, alias)."""
    numbers: list[int] = []
    count = 0
    for _, event in steps:
        count += event is not None
        numbers.append(count)
    batch = evaluate_events([(event, T0 + at) for at, event in steps], engine, numbers.__getitem__)
    out: list[tuple[Any, ...]] = []
    for alert in build_alerts(batch, AlertSettings(), lambda i: f"event {numbers[i]}"):
        if alert.close is not None:
            out.append(("close", alert.rules, alert.close))
        else:
            number = (alert.origin or 0) if alert.timer else numbers[alert.index]
            out.append(("alert", alert.rules, number))
    return out


def engine_for(text: str, **kwargs: Any) -> Engine:
    return Engine(ruleset_from_yaml(text), time_field="t", **kwargs)


def _listed(*rules: str) -> str:
    """Single-rule YAML texts as the items of one `rules:` list."""
    return "".join("  - " + rule.strip().replace("\n", "\n    ") + "\n" for rule in rules)


# -- distinct ---------------------------------------------------------------------------------

SPRAY = """
name: spray
match: {event: login_failed}
distinct: {field: user, count: 3, window: 5m, group_by: [ip]}
"""


def failed(user: str | None, ip: str = "a") -> dict[str, Any]:
    event: dict[str, Any] = {"event": "login_failed", "ip": ip}
    if user is not None:
        event["user"] = user
    return event


def test_distinct_fires_on_the_countth_different_value() -> None:
    """Repeats of a value and events without the field do not count; other groups are apart."""
    engine = engine_for(SPRAY)
    steps: list[Step] = [
        (0, failed("u1")),
        (1, failed("u1")),
        (2, failed(None)),
        (3, failed("u2")),
        (4, failed("u3", ip="b")),
        (5, failed("u3")),  # the third different user of ip a: event 6
        (6, failed("u4")),  # the group started again from zero
    ]
    assert [("alert", ("spray",), 6)] == run(engine, steps)


def test_distinct_values_leave_the_window() -> None:
    """A value seen more than `window` ago no longer counts; one seen again counts anew."""
    engine = engine_for(SPRAY)
    steps: list[Step] = [(0, failed("u1")), (200, failed("u2")), (300, failed("u3")), (301, failed("u4"))]
    assert [("alert", ("spray",), 4)] == run(engine, steps)  # u1 left at 300 (half-open window)


# -- sequence ---------------------------------------------------------------------------------

BRUTE_THEN_LOGIN = """
name: login-after-brute-force
sequence:
  group_by: [ip]
  within: 10m
  steps:
    - match: {event: login_failed}
      count: 3
    - match: {event: login_succeeded}
"""


def ok(ip: str = "a") -> dict[str, Any]:
    return {"event": "login_succeeded", "ip": ip}


def test_sequence_fires_on_the_event_that_completes_it() -> None:
    """Three failures then a success of the same address; a success before them is nothing."""
    engine = engine_for(BRUTE_THEN_LOGIN)
    steps: list[Step] = [(0, ok()), (1, failed("x")), (2, failed("x")), (3, ok("b")), (4, failed("x")), (5, ok())]
    assert [("alert", ("login-after-brute-force",), 6)] == run(engine, steps)


def test_sequence_must_fit_within() -> None:
    """Too slow: the progress is given up; failures still within `within` start it again, and
    the success that found the first attempt too slow completes the new one. (It only gave up
    the first: a second success was needed, and an attacker's one login went unpaged.)"""
    engine = engine_for(BRUTE_THEN_LOGIN)
    steps: list[Step] = [
        (0, failed("x")),
        (60, failed("x")),
        (120, failed("x")),  # armed, starting at 0
        (590, failed("x")),
        (595, failed("x")),
        (601, ok()),  # 601 s after the start: too late; the failures at 120, 590, 595 start it again
        (602, ok()),  # the sequence starts again from zero: nothing
    ]
    assert [("alert", ("login-after-brute-force",), 6)] == run(engine, steps)
    engine = engine_for(BRUTE_THEN_LOGIN)
    steps = [(0, failed("x")), (60, failed("x")), (120, failed("x")), (601, failed("x")), (700, ok())]
    assert [] == run(engine, steps), "the failures within 10m of the success are not enough"


def test_sequence_within_is_half_open_for_every_step() -> None:
    """`within` after the start is too late for the last step as for the first step's own
    events, as an event exactly `window` old no longer counts for a threshold; a moment less
    is in time."""
    steps: list[Step] = [(0, failed("x")), (60, failed("x")), (120, failed("x")), (600, ok())]
    assert [] == run(engine_for(BRUTE_THEN_LOGIN), steps)
    steps = [(0, failed("x")), (300, failed("x")), (600, failed("x")), (601, ok())]
    assert [] == run(engine_for(BRUTE_THEN_LOGIN), steps)
    steps = [(0, failed("x")), (60, failed("x")), (120, failed("x")), (599.5, ok())]
    assert [("alert", ("login-after-brute-force",), 4)] == run(engine_for(BRUTE_THEN_LOGIN), steps)


BACKUP = """
name: backup-never-finished
sequence:
  group_by: [host]
  steps:
    - match: {event: backup_started}
    - absent: {match: {event: backup_finished}, for: 2h}
"""


def backup(what: str, host: str = "db1") -> dict[str, Any]:
    return {"event": f"backup_{what}", "host": host}


def test_absent_step_fires_when_nothing_came_in_time() -> None:
    """The alert is its own and carries the event that armed it; a finished backup cancels."""
    engine = engine_for(BACKUP)
    steps: list[Step] = [
        (0, backup("started")),
        (60, backup("started", host="db2")),
        (3600, backup("finished", host="db2")),
        (7199, None),
        (7200, None),  # db1's two hours are up
        (9000, None),
    ]
    assert [("alert", ("backup-never-finished",), 1)] == run(engine, steps)


def test_absent_step_timer_fires_before_a_later_event_is_counted() -> None:
    """A finish that comes after the deadline does not cancel what was due before it."""
    engine = engine_for(BACKUP)
    steps: list[Step] = [(0, backup("started")), (7300, backup("finished"))]
    assert [("alert", ("backup-never-finished",), 1)] == run(engine, steps)


# -- absence ----------------------------------------------------------------------------------

HEARTBEAT = """
name: payments-heartbeat-missing
match: {service: payments, event: heartbeat}
absence: {window: 5m, group_by: [host], expect: [{host: pay-1}, {host: pay-9}]}
"""


def beat(host: str) -> dict[str, Any]:
    return {"service": "payments", "event": "heartbeat", "host": host}


def test_absence_fires_once_per_silence_and_closes_when_events_return() -> None:
    """Seen and expected groups are watched; an expected group never seen carries no event."""
    engine = engine_for(HEARTBEAT)
    steps: list[Step] = [
        (0, beat("pay-1")),
        (10, beat("pay-2")),
        (200, beat("pay-1")),
        (299, None),
        (300, None),  # pay-9 was never seen: silent since the start
        (310, None),  # pay-2 silent for 5 minutes
        (900, None),  # pay-1 too (last seen at 200); nothing twice
        (1000, beat("pay-2")),  # back: its alert is closed
    ]
    rule = ("payments-heartbeat-missing",)
    assert [
        ("alert", rule, 0),
        ("alert", rule, 2),
        ("alert", rule, 3),
        ("close", rule, 'rulesd: payments-heartbeat-missing: {"host":"pay-2"}'),
    ] == run(engine, steps)


def test_absence_watches_again_after_a_silence_ends() -> None:
    """After events return, a new silence fires again."""
    engine = engine_for("name: hb\nmatch: {event: hb}\nabsence: {window: 60}\n")
    steps: list[Step] = [(0, {"event": "hb"}), (60, None), (100, {"event": "hb"}), (159, None), (160, None)]
    assert [("alert", ("hb",), 1), ("close", ("hb",), "rulesd: hb"), ("alert", ("hb",), 2)] == run(engine, steps)


# -- new_value --------------------------------------------------------------------------------

NEW_SOURCE = """
name: new-admin-source-address
match: {event: login_succeeded, role: admin}
new_value: {fields: [source.ip], group_by: [user], learn: 1h, forget: 1d}
"""


def admin(user: str, ip: str | None) -> dict[str, Any]:
    event: dict[str, Any] = {"event": "login_succeeded", "role": "admin", "user": user}
    if ip is not None:
        event["source"] = {"ip": ip}
    return event


def test_new_value_after_learning() -> None:
    """Values of the learning hour are known; after it a new one fires once; a user's values
    are their own; an event without the field has no value."""
    engine = engine_for(NEW_SOURCE)
    steps: list[Step] = [
        (0, admin("ann", "10.0.0.1")),
        (60, admin("ann", "10.0.0.2")),  # learning
        (3600, admin("ann", "10.0.0.1")),
        (3601, admin("ann", "192.0.2.7")),  # new: event 4
        (3602, admin("ann", "192.0.2.7")),
        (3603, admin("bob", "10.0.0.1")),  # new for bob: event 6
        (3604, admin("bob", None)),
    ]
    rule = ("new-admin-source-address",)
    assert [("alert", rule, 4), ("alert", rule, 6)] == run(engine, steps)


def test_new_value_forgets_what_it_has_not_seen_for_a_while() -> None:
    """A value unseen for `forget` is new again."""
    engine = engine_for(NEW_SOURCE)
    steps: list[Step] = [(0, admin("ann", "10.0.0.1")), (3600 + 86400, admin("ann", "10.0.0.1"))]
    assert [("alert", ("new-admin-source-address",), 2)] == run(engine, steps)


def test_new_value_boundaries_limits_and_edits() -> None:
    """New exactly when `learn` ends and exactly `forget` after last seen; a group forgotten for
    the limits knows nothing (its next value is new); an edit learns again from the reload."""
    text = NEW_SOURCE.replace("forget: 1d", "forget: 2h")
    engine = engine_for(text, limits=Limits(per_rule=1))
    steps: list[Step] = [
        (0, admin("ann", "10.0.0.1")),
        (3600, admin("ann", "10.0.0.2")),  # new: learning ended at 3600
        (3600 + 7200, admin("ann", "10.0.0.2")),  # new again: forgotten after exactly 2h
        (3600 + 7201, admin("bob", "10.0.0.1")),  # new for bob
    ]
    rule = ("new-admin-source-address",)
    assert [("alert", rule, n) for n in (2, 3, 4)] == run(engine, steps)
    engine.sweep(engine.now)  # ann, the stalest, is forgotten for the limit of one group
    assert [("alert", rule, 1)] == run(engine, [(3600 + 7202, admin("ann", "10.0.0.2"))])  # so it is new again
    engine.replace_rules(ruleset_from_yaml(text.replace("learn: 1h", "learn: 2h")))
    assert [] == run(engine, [(3600 + 7300, admin("cid", "10.0.0.9"))])  # learning again from the reload
    assert [("alert", rule, 1)] == run(engine, [(3600 + 7202 + 7200, admin("cid", "10.0.0.8"))])  # 2h after it


def test_an_edit_that_keeps_what_a_new_value_rule_learns_keeps_the_values_it_knows() -> None:
    """ann's two addresses are known when the rule's message, throttle and `forget` are edited
    (a reload, or a start under the edited rule from the state saved under the old one): they
    page nothing again, a third does. An edit of what it learns (its `fields`, `match`,
    `group_by` or `learn`) learns again from the edit. (Every edit forgot every value: after a
    new message, every address seen before paged again once learning was over.)"""
    text = NEW_SOURCE.replace("learn: 1h, ", "")
    engine = engine_for(text)
    rule = ("new-admin-source-address",)
    assert [("alert", rule, 1), ("alert", rule, 2)] == run(
        engine, [(0, admin("ann", "10.0.0.1")), (60, admin("ann", "10.0.0.2"))]
    )
    saved = json.loads(json.dumps(engine.state.to_json()))
    edited = text.replace("forget: 1d", "forget: 2d") + 'throttle: 1m\nalert: {message: "new address {source.ip}"}\n'
    assert [] == reload(engine, edited)
    restarted = Engine(ruleset_from_yaml(edited), EngineState.from_json(saved), time_field="t")
    for each in (engine, restarted):
        known = [(120, admin("ann", "10.0.0.1")), (180, admin("ann", "10.0.0.2")), (240, admin("ann", "10.0.0.3"))]
        assert [("alert", rule, 3)] == run(each, known)
    for relearnt in (text.replace("role: admin}", "role: [admin, root]}"), text.replace("[user]", "[user, host]")):
        engine = engine_for(text)
        run(engine, [(0, admin("ann", "10.0.0.1"))])
        reload(engine, relearnt)
        assert [("alert", rule, 1)] == run(engine, [(120, admin("ann", "10.0.0.1"))]), relearnt


def test_a_new_value_state_saved_before_what_it_learns_was_noted_keeps_its_values_across_an_edit() -> None:
    """A state saved by an older rulesd notes the learning's start without what the rule learns.
    Restored under the same rule, it is marked as that rule's, so that a later edit of the
    message keeps the values known, as for a state saved now (it forgot them all: after the
    first edit following an upgrade, every address seen before paged again)."""
    text = NEW_SOURCE.replace("learn: 1h, ", "")
    engine = engine_for(text)
    rule = ("new-admin-source-address",)
    run(engine, [(0, admin("ann", "10.0.0.1")), (60, admin("ann", "10.0.0.2"))])
    saved = json.loads(json.dumps(engine.state.to_json()))
    for groups in saved["rule"].values():
        for _key, start in groups:
            del start["learnt"]  # as an older rulesd saved it
    restarted = Engine(ruleset_from_yaml(text), EngineState.from_json(saved), time_field="t")
    edited = text + 'alert: {message: "new address {source.ip}"}\n'
    assert [] == reload(restarted, edited)
    known = [(120, admin("ann", "10.0.0.1")), (180, admin("ann", "10.0.0.2")), (240, admin("ann", "10.0.0.3"))]
    assert [("alert", rule, 3)] == run(restarted, known)


def test_a_new_value_group_knows_at_most_values_per_group_the_stalest_forgotten_first() -> None:
    """`values_per_group: 2`: ann's third address makes the sweep forget the one seen longest ago
    (.2, not .1 seen again since), counted as evicted, so .2 pages again when it comes back and
    .1 does not. (A group's values grew without bound: an attacker's user agents or addresses
    kept until `forget`, and every commit rewrote them all.)"""
    text = NEW_SOURCE.replace("learn: 1h, ", "")
    engine = engine_for(text, limits=Limits(values_per_group=2))
    rule = ("new-admin-source-address",)
    steps: list[Step] = [
        (0, admin("ann", "10.0.0.1")),
        (10, admin("ann", "10.0.0.2")),
        (20, admin("ann", "10.0.0.1")),
        (30, admin("ann", "10.0.0.3")),
        (31, admin("bob", "10.0.0.2")),  # bob's values are his own
    ]
    assert [("alert", rule, n) for n in (1, 2, 4, 5)] == run(engine, steps)
    engine.sweep(engine.now)
    assert {'"10.0.0.1"': T0 + 20, '"10.0.0.3"': T0 + 30} == seen_values(
        engine.state.tables["new_value"][rule[0]]['"ann"']
    )
    assert ({rule[0]: 1}, {rule[0]: 1}) == (engine.evicted, engine.values_evicted)
    later: list[Step] = [(40, admin("ann", "10.0.0.1")), (50, admin("ann", "10.0.0.2"))]
    assert [("alert", rule, 2)] == run(engine, later)


def test_a_new_value_state_over_values_per_group_is_trimmed_at_the_first_sweep_and_saved() -> None:
    """A state saved under a higher limit (or restored from Redis) is trimmed to the limit at
    the first sweep after it is adopted, and the group trimmed is among the rows to save."""
    text = NEW_SOURCE.replace("learn: 1h, ", "")
    engine = engine_for(text)
    run(engine, [(i, admin("ann", f"10.0.0.{i}")) for i in range(5)])
    saved = json.loads(json.dumps(engine.state.to_json()))
    restarted = Engine(
        ruleset_from_yaml(text), EngineState.from_json(saved), time_field="t", limits=Limits(values_per_group=3)
    )
    restarted.state.delta()
    restarted.sweep(T0 + 10)
    (row,) = restarted.state.delta().upserts
    assert ("new_value", "new-admin-source-address") == row[:2]
    assert {f'"10.0.0.{i}"': T0 + i for i in (2, 3, 4)} == json.loads(row[3])
    assert {"new-admin-source-address": 2} == restarted.evicted


def test_a_new_value_group_another_process_committed_over_values_per_group_is_trimmed() -> None:
    """A group loaded as another process committed it (an instance under a higher limit) with
    more values than `values_per_group` is trimmed at the next sweep, as one that grew here."""
    engine = engine_for(NEW_SOURCE.replace("learn: 1h, ", ""), limits=Limits(values_per_group=3))
    engine.sweep(T0)  # (a sweep after the rules were adopted: from now on only the groups that grow)
    values = {f'"10.0.0.{i}"': T0 + i for i in range(5)}
    engine.load_groups({("new_value", "new-admin-source-address", '"ann"'): values}, T0 + 5)
    engine.sweep(T0 + 5)
    kept = seen_values(engine.state.tables["new_value"]["new-admin-source-address"]['"ann"'])
    assert {f'"10.0.0.{i}"': T0 + i for i in (2, 3, 4)} == kept


class ReadCount(dict[str, float]):
    """A group's values that count how many of them a sweep reads."""

    read = 0

    def items(self) -> Any:
        for item in super().items():
            self.read += 1
            yield item


FORGETTING = NEW_SOURCE.replace("learn: 1h, ", "").replace("forget: 1d", "forget: 1h")
FORGETTING_RULE = "new-admin-source-address"


def known(engine: Engine, user: str = "ann") -> dict[str, float]:
    return seen_values(engine.state.tables["new_value"][FORGETTING_RULE].get(f'"{user}"'))


def test_a_sweep_reads_only_the_new_values_that_expire() -> None:
    """ann knows 1,000 addresses, seen one a second; at a sweep where the first is past
    `forget`, it alone is forgotten, and the sweep reads it and the next only, not every value
    of the group. (Each sweep read every value of every group: up to groups x
    values_per_group, 10 million, every 4,096 events.)"""
    engine = engine_for(FORGETTING)
    run(engine, [(i, admin("ann", f"10.0.{i // 256}.{i % 256}")) for i in range(1000)])
    engine.sweep(engine.now)
    groups = engine.state.tables["new_value"][FORGETTING_RULE]
    groups['"ann"'] = counted = ReadCount(groups['"ann"'])
    run(engine, [(3600, admin("bob", "10.9.9.9"))])  # (a rule's groups are swept by its latest event's time)
    engine.sweep(engine.now)
    assert (999, 2) == (len(counted), counted.read)
    assert '"10.0.0.0"' not in counted


def test_new_values_seen_late_or_again_are_forgotten_by_when_each_was_last_seen() -> None:
    """Values seen again move after the others, and a late event's value (dated before values
    seen already) is put back in its place at the next sweep: each is forgotten `forget` after
    it was last seen, whatever order the events came in, and pages again then. The same from a
    state saved by an earlier rulesd, which kept a group's values in the order first seen (.3,
    seen again last, first)."""
    engine = engine_for(FORGETTING)
    engine.sweep(T0)  # (a sweep after the rules were adopted: from now on only the groups put out of order)
    steps: list[Step] = [
        (0, admin("ann", "10.0.0.3")),
        (100, admin("ann", "10.0.0.1")),
        (200, admin("ann", "10.0.0.2")),
        (300, admin("ann", "10.0.0.3")),  # seen again: now the latest
        (150, admin("ann", "10.0.0.4")),  # late: between .1 and .2
        (350, admin("ann", "10.0.0.1")),  # seen again: the latest
    ]
    run(engine, steps)
    saved = json.loads(json.dumps(engine.state.to_json()))
    old_order = {'"10.0.0.3"': T0 + 300, '"10.0.0.1"': T0 + 350, '"10.0.0.2"': T0 + 200, '"10.0.0.4"': T0 + 150}
    saved["new_value"][FORGETTING_RULE] = [[['"ann"'], old_order]]
    restarted = Engine(ruleset_from_yaml(FORGETTING), EngineState.from_json(saved), time_field="t")
    for each in (engine, restarted):
        expected = ['"10.0.0.4"', '"10.0.0.2"', '"10.0.0.3"', '"10.0.0.1"']  # by when last seen
        for at in (3750, 3800, 3900, 3950):
            run(each, [(at, admin("bob", "10.9.9.9"))])
            each.sweep(each.now)
            expected.pop(0)
            assert set(expected) == set(known(each)), at
        assert [("alert", (FORGETTING_RULE,), 1)] == run(each, [(3960, admin("ann", "10.0.0.4"))])


def test_new_values_loaded_as_another_process_committed_them_out_of_order_are_forgotten_in_time() -> None:
    """A group loaded as another process (an earlier rulesd) committed it, its values in the
    order first seen, is put in order at the next sweep: its values are forgotten by when each
    was last seen."""
    engine = engine_for(FORGETTING)
    engine.sweep(T0)
    values = {'"10.0.0.1"': T0 + 300, '"10.0.0.2"': T0 + 100, '"10.0.0.3"': T0 + 200}
    engine.load_groups({("new_value", FORGETTING_RULE, '"ann"'): values}, T0 + 300)
    run(engine, [(3750, admin("bob", "10.9.9.9"))])
    engine.sweep(engine.now)
    assert {'"10.0.0.3"', '"10.0.0.1"'} == set(known(engine))


# -- resolve ----------------------------------------------------------------------------------

RESOLVING = """
name: errors
match: {level: error}
threshold: {count: 2, window: 1m, group_by: [host]}
resolve: {after: 10m}
"""


def test_resolve_closes_the_alias_after_a_quiet_period() -> None:
    """Repeated firings keep the alert open; 10 minutes after the last, it is closed; a later
    firing opens it again."""
    engine = engine_for(RESOLVING)
    err = {"level": "error", "host": "a"}
    steps: list[Step] = [(0, err), (1, err), (300, err), (301, err), (900, None), (901, None), (2000, err), (2001, err)]
    alias = 'rulesd: errors: {"host":"a"}'
    assert [
        ("alert", ("errors",), 2),
        ("alert", ("errors",), 4),
        ("close", ("errors",), alias),
        ("alert", ("errors",), 6),
    ] == run(engine, steps)


def test_resolve_closes_each_group_and_only_the_rules_that_resolve() -> None:
    """Each group's alert is closed 10 minutes after its own last firing, by its own alias; a
    rule firing with it that has no `resolve` closes nothing."""
    engine = engine_for(
        "rules:\n"
        "  - {name: errors, match: {level: error}, threshold: {count: 2, window: 1m, group_by: [host]},"
        " resolve: {after: 10m}}\n"
        "  - {name: errors-any, match: {level: error}}\n"
    )
    a, b = {"level": "error", "host": "a"}, {"level": "error", "host": "b"}
    c = {"level": "error", "host": "c"}
    steps: list[Step] = [(0, a), (1, a), (300, b), (301, b), (700, None), (800, c), (1000, None)]
    assert [
        ("alert", ("errors-any",), 1),
        ("alert", ("errors", "errors-any"), 2),
        ("alert", ("errors-any",), 3),
        ("alert", ("errors", "errors-any"), 4),
        ("close", ("errors",), 'rulesd: errors, errors-any: {"host":"a"}'),  # due at 601: the alias it went out with
        ("alert", ("errors-any",), 5),
        ("close", ("errors",), 'rulesd: errors, errors-any: {"host":"b"}'),  # due at 901
    ] == run(engine, steps)


# -- an alias held by several groups ----------------------------------------------------------

ERRORS_BY_HOST = "match: {level: error}, threshold: {count: 1, window: 1m, group_by: [host]}"
SHORT = "{name: errors-a, " + ERRORS_BY_HOST + ", resolve: {after: 5m}}"
LONG = "{name: errors-b, " + ERRORS_BY_HOST + ", resolve: {after: 20m}}"
TOGETHER = "rules:\n" + _listed(SHORT, LONG)
SHARED = 'rulesd: errors-a, errors-b: {"host":"a"}'
ERR_A = {"level": "error", "host": "a"}


def test_an_alert_two_rules_fired_together_closes_when_the_last_of_them_recovers() -> None:
    """errors-a (after 5m) and errors-b (after 20m) fire on one event: one alert, one alias.
    errors-a's quiet period ending closes nothing while errors-b's group still holds the alert;
    when errors-b's ends, the alert is closed once, its note naming both rules."""
    engine = engine_for(TOGETHER)
    assert [("alert", ("errors-a", "errors-b"), 1)] == run(engine, [(0, ERR_A)])
    assert [] == run(engine, [(600, None)])
    assert [("close", ("errors-a", "errors-b"), SHARED)] == run(engine, [(1199, None), (1200, None), (5000, None)])


def test_the_notes_of_those_that_let_go_survive_a_restart() -> None:
    """errors-a let go while errors-b holds the alert; the state saved then and restored (a
    restart) still closes the alert once, naming both."""
    ruleset = ruleset_from_yaml(TOGETHER)
    first = Engine(ruleset, time_field="t")
    run(first, [(0, ERR_A), (600, None)])
    second = Engine(ruleset, EngineState.from_json(json.loads(json.dumps(first.state.to_json()))), time_field="t")
    assert [] == pending(second).firings
    assert [(("errors-a", "errors-b"), SHARED, "resolved: errors-a, errors-b")] == [
        (a.rules, a.close, a.payload["note"])
        for a in build_alerts(evaluate_events([(None, T0 + 1200)], second, str), AlertSettings(), str)
    ]


def test_a_rule_a_reload_removes_leaves_an_alert_another_rule_holds_open() -> None:
    """errors-a removed by a reload: no close while errors-b holds the alert; it closes when
    errors-b's group recovers, the note saying why errors-a let go."""
    engine = engine_for(TOGETHER)
    run(engine, [(0, ERR_A)])
    assert [] == reload(engine, LONG)
    assert [] == run(engine, [(600, None)])
    closed = build_alerts(evaluate_events([(None, T0 + 1200)], engine, str), AlertSettings(), str)
    assert [(SHARED, "resolved: errors-a (rule removed), errors-b")] == [(a.close, a.payload["note"]) for a in closed]
    engine = engine_for(TOGETHER)
    run(engine, [(0, ERR_A)])
    note = "resolved: errors-a (rule removed), errors-b (rule removed)"
    assert [("close", ("errors-a", "errors-b"), SHARED, note)] == reload(engine, "name: other\nmatch: {k: v}\n")


def test_a_group_the_limits_forget_leaves_an_alert_another_group_holds_open() -> None:
    """Over the limit, errors-a's open group is forgotten: its alert stays open while errors-b's
    group holds it (not counted as closed), and closes when that group recovers."""
    engine = engine_for(TOGETHER, limits=Limits(per_rule=100, total=1))
    run(engine, [(0, ERR_A)])
    engine.sweep(engine.now)
    assert [] == closes(engine)
    assert {"errors-a": 0, "errors-b": 0} == engine.limit_closed
    assert [(("errors-a", "errors-b"), SHARED, "resolved: errors-a (state limit), errors-b")] == [
        (a.rules, a.close, a.payload["note"])
        for a in build_alerts(evaluate_events([(None, T0 + 1200)], engine, str), AlertSettings(), str)
    ]


def test_an_alias_template_shared_by_groups_closes_when_the_last_group_recovers() -> None:
    """An `alert.alias` without the group's field: hosts a and b page under one alias, closed
    once, when the later of them has been quiet for `after`."""
    engine = engine_for(RESOLVING.replace("resolve:", "alert: {alias: db-errors}\nresolve:"))
    err_b = {"level": "error", "host": "b"}
    steps: list[Step] = [(0, ERR_A), (1, ERR_A), (300, err_b), (301, err_b), (700, None)]
    assert [("alert", ("errors",), 2), ("alert", ("errors",), 4)] == run(engine, steps)
    assert [("close", ("errors",), "db-errors")] == run(engine, [(900, None), (901, None), (5000, None)])


def test_an_absence_and_a_resolve_rule_paging_under_one_alias_share_its_alert() -> None:
    """host-a's silence pages; an error of host-a under the same alias joins that alert, which
    stays open when the heartbeat returns, until the errors recover. A heartbeat that is itself
    an error ends the silence first: the absence's alert is closed, then the error opens one."""
    rules = "rules:\n" + _listed(
        "{name: hb, match: {kind: hb}, absence: {window: 60, group_by: [host]}, alert: {alias: 'host-{host}'}}",
        RESOLVING.replace("count: 2", "count: 1")
        .replace("10m", "100")
        .replace("resolve:", "alert: {alias: 'host-{host}'}\nresolve:"),
    )
    hb_a, err = {"kind": "hb", "host": "a"}, {"level": "error", "host": "a"}
    steps: list[Step] = [(0, hb_a), (70, {}), (80, err), (90, hb_a), (120, {})]
    assert [("alert", ("hb",), 1), ("alert", ("errors",), 3)] == run(engine := engine_for(rules), steps)
    assert [("close", ("errors", "hb"), "host-a")] == run(engine, [(140, hb_a), (180, {})])
    both = {**hb_a, **err}
    assert [("alert", ("hb",), 1), ("close", ("hb",), "host-a"), ("alert", ("errors",), 3)] == run(
        engine_for(rules), [(0, hb_a), (70, {}), (80, both)]
    )


def test_a_group_whose_firings_each_have_an_alias_closes_the_oldest_beyond_eight() -> None:
    """`alert.alias` names the request: each firing is an alert of its own. The group keeps the
    aliases of its latest eight; the ninth firing closes the oldest (which nothing could close
    later), the note saying why, and the rest close when the group recovers."""
    engine = engine_for(
        RESOLVING.replace("count: 2", "count: 1").replace("resolve:", "alert: {alias: 'e-{req}'}\nresolve:")
    )
    fired = run(engine, [(i, {**ERR_A, "req": i}) for i in range(10)])
    assert [("alert", ("errors",), n) for n in range(1, 9)] == fired[:8]
    assert [("close", ("errors",), "e-0"), ("alert", ("errors",), 9)] == fired[8:10]
    assert [("close", ("errors",), "e-1"), ("alert", ("errors",), 10)] == fired[10:]
    assert ["resolved: errors (superseded)"] == [
        a.payload["note"]
        for a in build_alerts(evaluate_events([({**ERR_A, "req": 10}, T0 + 10)], engine, str), AlertSettings(), str)
        if a.close
    ]
    assert [("close", ("errors",), f"e-{n}") for n in range(3, 11)] == run(engine, [(5000, None)])


# -- throttle, state, limits ------------------------------------------------------------------


def test_throttle_applies_to_every_kind() -> None:
    """A distinct rule that reaches its count again within the throttle stays quiet."""
    engine = engine_for(SPRAY + "throttle: 1h\n")
    steps: list[Step] = [(i, failed(f"u{i}")) for i in range(9)]
    assert [("alert", ("spray",), 3)] == run(engine, steps)


def test_a_silence_the_throttle_holds_back_is_paged_when_the_throttle_ends() -> None:
    """pay-1 falls silent (paged at 300), beats again (closed), and falls silent for good within
    its 1h throttle: paged once, at 3600 + 300, when the throttle ends, and not again; a
    silence that ends before the throttle does pages nothing. The same after a restart from
    the state saved while the page was held back. (A held silence was never paged: a host that
    flapped and then died stayed unpaged, its alert closed.)"""
    rule = HEARTBEAT.replace(", expect: [{host: pay-1}, {host: pay-9}]", "") + "throttle: 1h\n"
    engine = engine_for(rule)
    flap: list[Step] = [(0, beat("pay-1")), (300, None), (400, beat("pay-1")), (3000, None)]
    assert [("alert", HEARTBEAT_RULE, 1), ("close", HEARTBEAT_RULE, PAY_1)] == run(engine, flap)
    saved = json.loads(json.dumps(engine.state.to_json()))
    restarted = Engine(ruleset_from_yaml(rule), EngineState.from_json(saved), time_field="t")
    restarted.resume(engine.now)
    for each in (engine, restarted):
        assert [] == run(each, [(3899, None)])
        assert [("alert", HEARTBEAT_RULE)] == [a[:2] for a in run(each, [(3900, None), (9000, None)])]
    engine = engine_for(rule)
    run(engine, flap)
    assert [] == run(engine, [(3500, beat("pay-1")), (3800, beat("pay-1")), (4000, None)])


def test_an_absent_step_the_throttle_holds_back_is_paged_when_the_throttle_ends() -> None:
    """db1's backup never finishes (paged at 2h), and the next one, started at 8000, hangs too:
    its absent step is due at 8000 + 2h, within the 3h throttle, and is paged once when the
    throttle ends (7200 + 3h), carrying the start that armed it, if the finish still has not
    come. The same after a restart from the state saved while the page was held back; a finish
    that comes before the throttle ends pages nothing. (A held step was never paged: the hung
    backup went unnoticed.)"""
    rule = BACKUP + "throttle: 3h\n"
    engine = engine_for(rule)
    hung: list[Step] = [(0, backup("started")), (7200, None), (8000, backup("started")), (16000, None)]
    assert [("alert", ("backup-never-finished",), 1)] == run(engine, hung)
    saved = json.loads(json.dumps(engine.state.to_json()))
    restarted = Engine(ruleset_from_yaml(rule), EngineState.from_json(saved), time_field="t")
    restarted.resume(engine.now)
    for each in (engine, restarted):
        assert [] == run(each, [(17999, None)])
        assert [("alert", ("backup-never-finished",), 2)] == run(each, [(18000, None), (40000, None)])
    engine = engine_for(rule)
    run(engine, hung)
    assert [] == run(engine, [(17000, backup("finished")), (40000, None)])


def test_a_firing_the_throttle_holds_back_keeps_the_groups_alert_open() -> None:
    """Errors every minute for 20 minutes, throttled to one alert per 10 minutes, resolved after
    5 quiet minutes: the alert stays open while they go on (the firings the throttle holds back
    count as firings), its later firings go out under the same alias, and it is closed once, 5
    minutes after the last error; a throttled firing of a group with no open alert opens none."""
    engine = engine_for(RESOLVING.replace("count: 2", "count: 1").replace("10m", "5m") + "throttle: 10m\n")
    alias = 'rulesd: errors: {"host":"a"}'
    steps: list[Step] = [(60 * i, ERR_A) for i in range(21)]
    assert [("alert", ("errors",), n) for n in (1, 11, 21)] == run(engine, steps)
    assert [] == run(engine, [(1200 + 299, None)])
    assert [("close", ("errors",), alias)] == run(engine, [(1200 + 300, None)])
    assert [] == run(engine, [(1600, ERR_A), (5000, None)])  # within the throttle of the last alert (1200)


def test_state_survives_a_restart_with_its_timers() -> None:
    """Restored from its JSON, an engine keeps the absence it watched and fires on time."""
    ruleset = ruleset_from_yaml(HEARTBEAT)
    first = Engine(ruleset, time_field="t")
    run(first, [(0, beat("pay-1")), (100, beat("pay-2"))])
    saved = json.loads(json.dumps(first.state.to_json()))
    second = Engine(ruleset, EngineState.from_json(saved), time_field="t")
    rule = ("payments-heartbeat-missing",)
    # pay-1 (event 1) and pay-9 (expected, never seen) are due at 300, pay-2 (event 2) at 400.
    assert [("alert", rule, 1), ("alert", rule, 0), ("alert", rule, 2)] == run(second, [(150, None), (450, None)])


def test_a_reload_keeps_the_state_of_unchanged_rules_only() -> None:
    """The distinct values of an unchanged rule are kept; a changed rule starts afresh."""
    engine = engine_for(SPRAY)
    run(engine, [(0, failed("u1")), (1, failed("u2"))])
    engine.replace_rules(ruleset_from_yaml(SPRAY))
    assert [("alert", ("spray",), 1)] == run(engine, [(2, failed("u3"))])
    run(engine, [(3, failed("u1")), (4, failed("u2"))])
    engine.replace_rules(ruleset_from_yaml(SPRAY.replace("count: 3", "count: 4")))
    assert [] == run(engine, [(5, failed("u3"))])


THROTTLED_SPRAY = SPRAY.replace("match:", "throttle: 1h\nmatch:")
THROTTLED_MATCH = "name: root-login\nmatch: {event: login_failed, user: root}\nthrottle: 1h\n"


@pytest.mark.parametrize(
    ("before", "after", "kept"),
    [
        (THROTTLED_SPRAY, THROTTLED_SPRAY + "alert: {message: 'spray from {ip}', priority: P1}\n", True),
        (THROTTLED_SPRAY, THROTTLED_SPRAY.replace("throttle: 1h", "throttle: 2h"), True),
        (THROTTLED_SPRAY, THROTTLED_SPRAY.replace("{event: login_failed}", "{event: {in: [login_failed, x]}}"), True),
        (THROTTLED_MATCH, THROTTLED_MATCH.replace(", user: root", ""), True),
        (THROTTLED_SPRAY, THROTTLED_SPRAY.replace("group_by: [ip]", "group_by: [ip, dc]"), False),
        (THROTTLED_SPRAY, THROTTLED_SPRAY.replace("distinct: {field: user,", "threshold: {"), False),
    ],
    ids=["message", "throttle", "wider-match", "match-kind-wider", "group_by", "kind"],
)
def test_an_edit_keeps_the_throttle_of_each_group_it_makes_alike(before: str, after: str, kept: bool) -> None:
    """A group paged for and held back by its throttle is not paged again by a reload of its
    edited rule (message, priority, throttle, match) while that throttle holds; a new kind or
    group_by makes other groups, whose throttles start anew. (Every edit paged again at once.)"""
    engine = engine_for(before)
    steps: list[Step] = [(0, failed("u1")), (1, failed("u2")), (2, failed("root"))]
    assert 1 == len(run(engine, steps))
    engine.replace_rules(ruleset_from_yaml(after))
    again: list[Step] = [(10, failed("root")), (11, failed("u4")), (12, failed("u5"))]
    assert kept == (run(engine, again) == [])


def test_a_throttle_kept_across_an_edit_survives_a_restart_under_the_edited_rule() -> None:
    """A state saved under the old rule and restored under the edited one (rules edited while
    the daemon was stopped) keeps the throttle as a reload does; the edited rule's groups are
    noted afresh, so the next edit keeps it too."""
    first = engine_for(THROTTLED_MATCH)
    assert 1 == len(run(first, [(0, failed("root"))]))
    saved = json.loads(json.dumps(first.state.to_json()))
    edited = THROTTLED_MATCH + "alert: {message: root again}\n"
    second = Engine(ruleset_from_yaml(edited), EngineState.from_json(saved), time_field="t")
    assert [] == run(second, [(10, failed("root"))])
    second.replace_rules(ruleset_from_yaml(edited.replace("root again", "root!")))
    assert [] == run(second, [(20, failed("root"))])
    assert [("alert", ("root-login",), 1)] == run(second, [(3601, failed("root"))])


def _edited(engine: Engine, text: str, *, how: str) -> Engine:
    """`engine` under the rule `text`: reloaded; restarted from its saved state and clock, the
    rules having been edited while the daemon was stopped ("restart"); or one under the edited
    rule taking the state and clock as shared ones are taken from Redis ("shared")."""
    if how == "reload":
        engine.replace_rules(ruleset_from_yaml(text))
        return engine
    saved = EngineState.from_json(json.loads(json.dumps(engine.state.to_json())))
    if how == "shared":
        other = engine_for(text)
        other.restore(saved, engine.now)
        return other
    restarted = Engine(ruleset_from_yaml(text), saved, time_field="t")
    restarted.resume(engine.now)
    return restarted


@pytest.mark.parametrize("how", ["reload", "restart", "shared"])
def test_a_held_silence_an_edit_lets_out_is_paged_at_the_edit_and_throttled_from_then(how: str) -> None:
    """pay-1 flaps (paged at 300) and falls silent within its 1h throttle; at 3000 the throttle
    is made 30m, which ended at 2100: the silence is paged at the edit, and the throttle runs
    from that page, so pay-1's next silence (due 3400) waits until 3000 + 30m. (The timer was
    set again at the silence's old due time, 700: the page was dated 2100, and the next one
    went out at 3900, 15 minutes after it.) The same for rules edited while stopped, and for a
    state taken from Redis by an instance under the edited rule."""
    rule = HEARTBEAT.replace(", expect: [{host: pay-1}, {host: pay-9}]", "") + "throttle: 1h\n"
    engine = engine_for(rule)
    flap: list[Step] = [(0, beat("pay-1")), (300, None), (400, beat("pay-1")), (3000, None)]
    assert [("alert", HEARTBEAT_RULE, 1), ("close", HEARTBEAT_RULE, PAY_1)] == run(engine, flap)
    engine = _edited(engine, rule.replace("throttle: 1h", "throttle: 30m"), how=how)
    assert [("alert", HEARTBEAT_RULE, 2)] == run(engine, [(3001, None)])
    assert [("close", HEARTBEAT_RULE, PAY_1)] == run(engine, [(3100, beat("pay-1")), (4799, None)])
    assert [("alert", HEARTBEAT_RULE, 1)] == run(engine, [(4800, None)])


@pytest.mark.parametrize("how", ["reload", "restart", "shared"])
def test_a_held_hang_an_edit_lets_out_is_paged_at_the_edit_and_throttled_from_then(how: str) -> None:
    """db1's second backup hangs within the 3h throttle of the first hang's page (7200); at
    16000 the throttle is made 1h and `for` 30m: the wait, due at 8000 + 30m by the edited rule,
    is paged at the edit, and the throttle runs from that page, so the next backup's hang (due
    16100 + 30m) waits until 16000 + 1h. (The wait was set again at its old due time: paged
    dated 10800, and the next hang went out at 17900, half an hour after it.) The same for rules
    edited while stopped, and for a state taken from Redis by an instance under the edited rule."""
    rule = BACKUP + "throttle: 3h\n"
    engine = engine_for(rule)
    hung: list[Step] = [(0, backup("started")), (7200, None), (8000, backup("started")), (16000, None)]
    assert [("alert", ("backup-never-finished",), 1)] == run(engine, hung)
    edited = rule.replace("throttle: 3h", "throttle: 1h").replace("for: 2h", "for: 30m")
    engine = _edited(engine, edited, how=how)
    assert [("alert", ("backup-never-finished",), 2)] == run(engine, [(16001, None)])
    assert [] == run(engine, [(16100, backup("started")), (19599, None)])
    assert [("alert", ("backup-never-finished",), 1)] == run(engine, [(19600, None)])


def _saved_before_grouping_notes(engine: Engine) -> dict[str, Any]:
    """`engine`'s state as an earlier rulesd saved it: without the notes of how its throttled
    rules make their groups."""
    saved: dict[str, Any] = json.loads(json.dumps(engine.state.to_json()))
    saved[RULE] = {name: [row for row in rows if row[0] != [THROTTLED]] for name, rows in saved[RULE].items()}
    return saved


@pytest.mark.parametrize(
    ("rule", "steps", "held_until"),
    [
        (
            HEARTBEAT.replace(", expect: [{host: pay-1}, {host: pay-9}]", "") + "throttle: 1h\n",
            [(0, beat("pay-1")), (300, None), (400, beat("pay-1")), (3000, None)],
            3900,
        ),
        (
            BACKUP + "throttle: 3h\n",
            [(0, backup("started")), (7200, None), (8000, backup("started")), (16000, None)],
            18000,
        ),
    ],
    ids=["absence", "sequence"],
)
def test_a_state_saved_before_grouping_notes_keeps_what_it_shows_of_the_groups(
    rule: str, steps: list[Step], held_until: float
) -> None:
    """A state saved by an earlier rulesd does not note how a throttled rule makes its groups;
    restored under the rule edited meanwhile (its message), a sequence keeps its throttles (its
    steps are saved with its group_by) and an absence those of the groups whose last events it
    puts in them again: the silence or the hang the throttle holds back is paged when the
    throttle ends, not at the start. (Their throttles started anew: paged at the start.) A rule
    whose state does not say how it made its groups starts its throttles anew."""
    engine = engine_for(rule)
    assert 1 == sum(fired[0] == "alert" for fired in run(engine, steps))
    restarted = Engine(
        ruleset_from_yaml(rule + "alert: {message: edited}\n"),
        EngineState.from_json(_saved_before_grouping_notes(engine)),
        time_field="t",
    )
    restarted.resume(engine.now)
    assert [] == run(restarted, [(steps[-1][0] + 1, None), (held_until - 1, None)])
    assert [("alert", (restarted.ruleset.rules[0].name,), 2)] == run(restarted, [(held_until, None)])
    plain = engine_for(THROTTLED_MATCH)
    assert 1 == len(run(plain, [(0, failed("root"))]))
    saved = EngineState.from_json(_saved_before_grouping_notes(plain))
    edited = Engine(ruleset_from_yaml(THROTTLED_MATCH + "alert: {message: edited}\n"), saved, time_field="t")
    assert [("alert", ("root-login",), 1)] == run(edited, [(10, failed("root"))])


def test_rules_added_before_any_event_start_after_a_reload() -> None:
    """A new_value rule learns from, and expected groups are watched from, the first time known,
    even when a reload came before it (the rule that never started learnt forever, and the
    expected groups were never watched)."""
    text = "rules:\n" + _listed(NEW_SOURCE, HEARTBEAT)
    engine = engine_for(text)
    engine.replace_rules(ruleset_from_yaml(text + "  - {name: other, match: {k: v}}\n"))
    steps: list[Step] = [(0, admin("ann", "10.0.0.1")), (3601, admin("ann", "192.0.2.7"))]
    assert [
        ("alert", ("payments-heartbeat-missing",), 0),
        ("alert", ("payments-heartbeat-missing",), 0),
        ("alert", ("new-admin-source-address",), 2),
    ] == run(engine, steps)


def test_a_new_value_rule_saved_before_any_event_learns_after_a_restart() -> None:
    """A state saved before the rule's first event (a daemon stopped while its source was
    quiet) holds no learning start: the restarted rule learns from its first event."""
    saved = json.loads(json.dumps(engine_for(NEW_SOURCE).state.to_json()))
    engine = Engine(ruleset_from_yaml(NEW_SOURCE), EngineState.from_json(saved), time_field="t")
    steps: list[Step] = [(0, admin("ann", "10.0.0.1")), (3601, admin("ann", "192.0.2.7"))]
    assert [("alert", ("new-admin-source-address",), 2)] == run(engine, steps)


def test_the_total_limit_evicts_the_stalest_groups_of_all_rules() -> None:
    """Over the total, the groups touched longest ago go first, whatever their rule."""
    text = SPRAY + "---\n" if False else ""
    engine = engine_for(
        "rules:\n"
        "  - {name: a, match: {k: a}, threshold: {count: 9, window: 1d, group_by: [g]}}\n"
        "  - {name: b, match: {k: b}, distinct: {field: u, count: 9, window: 1d, group_by: [g]}}\n" + text,
        limits=Limits(per_rule=100, total=5),
    )
    steps: list[Step] = [(i, {"k": "ab"[i % 2], "g": f"g{i}", "u": "x"}) for i in range(8)]
    run(engine, steps)
    engine.sweep(engine.now)
    assert 5 == engine.state.group_count()
    kept = {(rule, key) for groups in engine.state.tables.values() for rule, g in groups.items() for key in g}
    assert {("b", '"g3"'), ("a", '"g4"'), ("b", '"g5"'), ("a", '"g6"'), ("b", '"g7"')} == kept
    assert {"a": 2, "b": 1} == engine.evicted


HB = "name: hb\nmatch: {event: hb}\nabsence: {window: 5m, group_by: [host]}\n"


def hb(host: str) -> dict[str, Any]:
    return {"event": "hb", "host": host}


def closes(engine: Engine) -> list[tuple[tuple[str, ...], str | None, str]]:
    """The closes the engine queued and no batch took yet, with their notes."""
    return [(a.rules, a.close, a.payload["note"]) for a in build_alerts(pending(engine), AlertSettings(), str)]


def test_the_limits_forget_a_silent_group_last_and_events_returning_close_its_alert() -> None:
    """A silent host is the stalest group of an absence, yet the limit forgets the groups that
    hold no open alert first: its alert is still closed when its heartbeats return."""
    engine = engine_for(HB, limits=Limits(per_rule=3, total=100))
    beats: list[Step] = [(300 + i, hb(f"h{i}")) for i in range(1, 5)]
    assert [("alert", ("hb",), 1)] == run(engine, [(0, hb("h0")), (300, None), *beats])
    engine.sweep(engine.now)
    assert [] == closes(engine)
    assert {'"h0"', '"h3"', '"h4"'} == set(engine.state.tables[ABSENCE]["hb"])
    assert {"hb": 2} == engine.evicted
    assert [("close", ("hb",), 'rulesd: hb: {"host":"h0"}')] == run(engine, [(400, hb("h0"))])


def test_the_limits_never_forget_an_expected_group() -> None:
    """Nothing would make an expected group again: over the limit, the seen groups go, however
    stale the expected one is, and it is paged for when its window has passed since the start."""
    engine = engine_for(
        HB.replace("group_by: [host]", "group_by: [host], expect: [{host: e1}]"), limits=Limits(per_rule=2)
    )
    run(engine, [(0, None), *((100 + i, hb(f"h{i}")) for i in range(1, 4))])
    engine.sweep(engine.now)
    assert {'"e1"', '"h3"'} == set(engine.state.tables[ABSENCE]["hb"])
    assert {"hb": 2} == engine.evicted
    assert [("alert", ("hb",), 0)] == run(engine, [(300, None)])


def test_a_group_with_an_open_alert_forgotten_for_the_limits_has_its_alert_closed_once() -> None:
    """When every group left holds an open alert, the stalest is forgotten and its alert closed
    at once, with a note saying why, counted; its quiet period ending later closes nothing more."""
    engine = engine_for(RESOLVING, limits=Limits(per_rule=2, total=100))
    err = [(at, {"level": "error", "host": host}) for host, t in [("a", 0), ("b", 10), ("c", 20)] for at in (t, t + 1)]
    assert [("alert", ("errors",), n) for n in (2, 4, 6)] == run(engine, err)
    engine.sweep(engine.now)
    assert [(("errors",), 'rulesd: errors: {"host":"a"}', "resolved: errors (state limit)")] == closes(engine)
    assert [] == closes(engine)
    assert {'"b"', '"c"'} == set(engine.state.tables[OPEN]["errors"])
    assert {"errors": 1} == engine.limit_closed
    assert [
        ("close", ("errors",), 'rulesd: errors: {"host":"b"}'),
        ("close", ("errors",), 'rulesd: errors: {"host":"c"}'),
    ] == run(engine, [(700, None)])


def test_the_total_limit_forgets_the_groups_of_other_rules_before_an_open_alert() -> None:
    """Over the total, fresher groups of another rule go before a stale open alert's group."""
    engine = engine_for(
        "rules:\n"
        + _listed(RESOLVING, "{name: logins, match: {k: login}, threshold: {count: 9, window: 1d, group_by: [u]}}"),
        limits=Limits(per_rule=100, total=3),
    )
    logins: list[Step] = [(100 + i, {"k": "login", "u": f"u{i}"}) for i in range(3)]
    run(engine, [(0, {"level": "error", "host": "a"}), (1, {"level": "error", "host": "a"}), *logins])
    engine.sweep(engine.now)
    assert [] == closes(engine)
    assert {'"a"'} == set(engine.state.tables[OPEN]["errors"])
    assert {"errors": 0, "logins": 1} == engine.evicted  # the oldest login went
    assert [("close", ("errors",), 'rulesd: errors: {"host":"a"}')] == run(engine, [(700, None)])


# -- open alerts at a reload -------------------------------------------------------------------


def reload(engine: Engine, text: str) -> list[tuple[Any, ...]]:
    """Replace the engine's rules with `text`: the closes it queues then, with their notes."""
    engine.replace_rules(ruleset_from_yaml(text))
    return [("close", a.rules, a.close, a.payload["note"]) for a in build_alerts(pending(engine), AlertSettings(), str)]


SILENT = [(0, beat("pay-1")), (10, beat("pay-2")), (200, beat("pay-2")), (300, None)]  # pay-1 and pay-9 fire
HEARTBEAT_RULE = ("payments-heartbeat-missing",)
PAY_1, PAY_9 = (f'rulesd: payments-heartbeat-missing: {{"host":"{host}"}}' for host in ("pay-1", "pay-9"))


def test_a_removed_rule_closes_its_open_alerts_once() -> None:
    """An absence's open alerts (a group seen, an expected group never seen) and a resolve
    rule's open group are closed when a reload removes their rules, each rule's note saying
    why; the group that is not silent has nothing to close; nothing is closed twice."""
    engine = engine_for("rules:\n" + _listed(HEARTBEAT, RESOLVING))
    err = {"level": "error", "host": "a"}
    assert [("alert", HEARTBEAT_RULE, 1), ("alert", HEARTBEAT_RULE, 0), ("alert", ("errors",), 5)] == run(
        engine, [*SILENT, (301, err), (302, err)]
    )
    note = "resolved: payments-heartbeat-missing (rule removed)"
    assert [
        ("close", ("errors",), 'rulesd: errors: {"host":"a"}', "resolved: errors (rule removed)"),
        ("close", HEARTBEAT_RULE, PAY_1, note),
        ("close", HEARTBEAT_RULE, PAY_9, note),
    ] == reload(engine, "name: other\nmatch: {k: v}\n")
    assert [] == reload(engine, "rules:\n" + _listed(HEARTBEAT, RESOLVING))  # back: it starts anew
    assert [("alert", HEARTBEAT_RULE, 0), ("alert", HEARTBEAT_RULE, 1)] == run(
        engine, [(400, beat("pay-1")), (2000, None)]
    )


def test_a_changed_absence_keeps_its_open_alerts_and_closes_them_when_events_return() -> None:
    """An absence edited (a longer window) still holds its silences: no close at the reload,
    no page again for a group already paged (pay-9, expected, is not watched anew), and a
    returning heartbeat closes its alert, as before the edit. pay-2, not yet silent at the
    reload, is still watched: its heartbeat of 200 is paged for at 800, the new window after it."""
    engine = engine_for(HEARTBEAT)
    run(engine, SILENT)
    assert [] == reload(engine, HEARTBEAT.replace("window: 5m", "window: 10m"))
    assert [("alert", HEARTBEAT_RULE, 3), ("close", HEARTBEAT_RULE, PAY_1)] == run(
        engine, [(900, None), (1000, beat("pay-1"))]
    )
    assert [("alert", HEARTBEAT_RULE, 1)] == run(engine, [(1599, None), (1600, None)])  # pay-1 silent again


def test_an_edited_absence_watches_the_groups_it_would_have_made() -> None:
    """At an edit (a narrower match), the groups not yet silent whose last event the edited rule
    matches and groups alike are still watched from that event; the others are forgotten; an
    expected group never seen is watched from the rule's start as before, not anew."""
    engine = engine_for(HEARTBEAT)
    run(engine, [(0, None), (100, {**beat("pay-1"), "dc": "a"}), (100, {**beat("pay-2"), "dc": "b"})])
    assert [] == reload(engine, HEARTBEAT.replace("event: heartbeat}", "event: heartbeat, dc: a}"))
    assert {'"pay-1"', '"pay-9"'} == set(engine.state.tables[ABSENCE]["payments-heartbeat-missing"])
    assert [("alert", HEARTBEAT_RULE, 0)] == run(engine, [(300, None)])  # pay-9, since 0
    assert [("alert", HEARTBEAT_RULE, 1)] == run(engine, [(400, None)])  # pay-1's event of 100


def test_an_edited_sequence_keeps_the_waits_at_its_absent_step_it_would_have_made() -> None:
    """At an edit (a full backup's start only, a longer `for`), a group waiting at the absent
    step whose start the edited first step still matches waits on, due the new `for` after that
    start; one whose start it no longer matches is forgotten; a finish still ends a wait. The
    same at a start under the edited rule from the state saved under the old one."""
    engine = engine_for(BACKUP)
    full = {**backup("started"), "type": "full"}
    starts = [(0, full), (10, backup("started", host="db2")), (20, {**full, "host": "db3"})]
    assert [] == run(engine, [*starts, (3600, None)])
    saved = json.loads(json.dumps(engine.state.to_json()))
    edited = BACKUP.replace("{event: backup_started}", "{event: backup_started, type: full}").replace("2h", "3h")
    assert [] == reload(engine, edited)
    restarted = Engine(ruleset_from_yaml(edited), EngineState.from_json(saved), time_field="t")
    for each in (engine, restarted):
        assert [] == run(each, [(7300, backup("finished", host="db3")), (10799, None)])  # db2 was forgotten
        assert [("alert", ("backup-never-finished",), 1)] == run(each, [(10800, None), (20000, None)])


def test_a_regrouped_sequence_waits_on_in_the_groups_the_starts_make() -> None:
    """group_by [host] to [host, dc] while db1 and db2 wait for their backups to finish: each
    waits on in its new group, paged for when due (db2's finish, of the new group, ends its
    wait); to [dc], the two waits of one dc are one, due at the first start; a start without a
    dc (a field the old events lack) is forgotten, rather than make one group of every host.
    The same at a start under the edited rule from the state saved under the old one."""
    starts: list[Step] = [(0, {**backup("started"), "dc": "a"}), (10, {**backup("started", host="db2"), "dc": "a"})]
    starts += [(20, backup("started", host="db3"))]
    for group_by, steps, paged in [
        ("[host, dc]", [(7000, {**backup("finished", host="db2"), "dc": "a"}), (7199, None)], [(7200, 1)]),
        ("[dc]", [(7199, None)], [(7200, 1)]),
    ]:
        engine = engine_for(BACKUP)
        assert [] == run(engine, [*starts, (3600, None)])
        saved = json.loads(json.dumps(engine.state.to_json()))
        edited = BACKUP.replace("[host]", group_by)
        assert [] == reload(engine, edited)
        restarted = Engine(ruleset_from_yaml(edited), EngineState.from_json(saved), time_field="t")
        for each in (engine, restarted):
            assert [] == run(each, steps), group_by
            expected = [("alert", ("backup-never-finished",), number) for _, number in paged]
            assert expected == run(each, [(at, None) for at, _ in paged] + [(20000, None)]), group_by


def test_an_edited_sequence_forgets_a_wait_its_first_step_would_not_have_done() -> None:
    """Two starts 60 s apart armed the wait: edited to need three starts, or to fit them in 1m
    (`within`, half-open), the wait is forgotten; to fit them in 2m, it pages as before."""
    twice = BACKUP.replace("{event: backup_started}", "{event: backup_started}\n      count: 2")
    for edit, fired in (("count: 3", False), ("within: 1m", False), ("within: 2m", True)):
        engine = engine_for(twice)
        assert [] == run(engine, [(0, backup("started")), (60, backup("started")), (3600, None)])
        edited = twice.replace("count: 2", edit) if "count" in edit else twice.replace("steps:", f"{edit}\n  steps:")
        assert [] == reload(engine, edited)
        assert [("alert", ("backup-never-finished",), 2)] * fired == run(engine, [(7260, None)]), edit


DISK = """
name: disk-not-cleaned
sequence:
  group_by: [host]
  within: 1h
  steps:
    - match: {event: disk_warning}
      count: 2
    - match: {event: disk_critical}
    - absent: {match: {event: disk_cleaned}, for: 30m}
"""
DISK_RULE = ("disk-not-cleaned",)


def disk(what: str, host: str) -> dict[str, Any]:
    return {"event": f"disk_{what}", "host": host}


def test_an_edited_sequence_keeps_the_groups_whose_steps_done_it_did_not_change() -> None:
    """h1 has done the first step (two warnings), h2 has one warning of two, h3 waits at the
    absent step; the rule's `for`, throttle, message and absent step are edited. Each group
    goes on under the edited rule, at a reload and at a start from the state saved under the
    old one: h1's critical arms its wait, h2's second warning and critical arm its, and each
    is paged for the new `for` (40m) after its critical. (An edit forgot h1 and h2: only h3,
    already waiting, was paged for.)"""
    engine = engine_for(DISK)
    before = [(0, disk("warning", "h1")), (60, disk("warning", "h1")), (100, disk("warning", "h2"))]
    before += [(120, disk("warning", "h3")), (130, disk("warning", "h3")), (140, disk("critical", "h3"))]
    assert [] == run(engine, before)
    saved = json.loads(json.dumps(engine.state.to_json()))
    edited = DISK.replace("30m", "40m").replace("{event: disk_cleaned}", "{event: disk_cleaned, ok: true}")
    edited += 'throttle: 5m\nalert: {message: "disk of {host} not cleaned"}\n'
    assert [] == reload(engine, edited)
    restarted = Engine(ruleset_from_yaml(edited), EngineState.from_json(saved), time_field="t")
    after = [(200, disk("critical", "h1")), (300, disk("warning", "h2")), (400, disk("critical", "h2"))]
    for each in (engine, restarted):
        assert [] == run(each, [*after, (2539, None)])
        assert [("alert", DISK_RULE, 6)] == run(each, [(2540, None), (2599, None)])  # h3: 140 + 40m
        # h1's critical of 200 and h2's of 400 (events 1 and 3 of their run)
        assert [("alert", DISK_RULE, 1), ("alert", DISK_RULE, 3)] == run(each, [(2600, None), (2800, None)])


@pytest.mark.parametrize(
    ("edit", "kept"),
    [
        (lambda r: r.replace("{event: disk_warning}", "{event: disk_warning, fs: /data}"), False),
        (lambda r: r.replace("count: 2", "count: 3"), False),
        (lambda r: r.replace("[host]", "[host, fs]"), False),
        (lambda r: r.replace("within: 1h", "within: 1m"), False),  # done 60 s after the start: half-open
        (lambda r: r.replace("within: 1h", "within: 61s"), True),
        (lambda r: r.replace("  within: 1h\n", ""), True),
        (lambda r: r.replace("    - match: {event: disk_critical}\n", ""), False),  # h1 would wait: no event kept
        (lambda r: r.replace("{event: disk_critical}", "{event: disk_full}"), True),
    ],
)
def test_an_edited_sequence_forgets_a_group_whose_steps_done_it_changed(edit: Any, kept: bool) -> None:
    """h1 has done the first step at 60, started at 0. An edit of that step (its match or
    count) or of group_by forgets it, and so does a `within` it was not done in, or an edit
    that makes it wait at an absent step (the wait would carry the event that completed the
    first step, which the group does not hold); an edit of a later step keeps it."""
    engine = engine_for(DISK)
    assert [] == run(engine, [(0, disk("warning", "h1")), (60, disk("warning", "h1"))])
    edited = edit(DISK)
    assert [] == reload(engine, edited)
    assert kept == ('"h1"' in engine.state.tables.get(SEQUENCE, {}).get("disk-not-cleaned", {})), edited


def test_an_edited_step_a_group_counts_events_for_starts_anew() -> None:
    """h1 waits for two criticals and has one: an edit of that step (its match) forgets the
    one counted (the edited match cannot judge it), while the steps done are kept, so two more
    are needed; an edit elsewhere (the message) keeps it, so one more completes the step."""
    twice = DISK.replace("- match: {event: disk_critical}", "- match: {event: disk_critical}\n      count: 2")
    start = [(0, disk("warning", "h1")), (60, disk("warning", "h1")), (70, disk("critical", "h1"))]
    for edit, needed in (("{event: disk_critical}", 2), ("{event: disk_critical, level: [1, 2]}", 3)):
        engine = engine_for(twice)
        assert [] == run(engine, start)
        reload(engine, twice.replace("{event: disk_critical}", edit) + "alert: {message: m}\n")
        armed = [(80 + i, {**disk("critical", "h1"), "level": 1}) for i in range(needed - 1)]
        assert [("alert", DISK_RULE, needed - 1)] == run(engine, [*armed, (1800 + 80, None), (5000, None)]), edit


def test_an_absence_changed_so_that_nothing_closes_its_alerts_closes_them_at_the_reload() -> None:
    """Grouped by other fields, its groups can no longer meet an event of the old ones; no longer
    an absence, or disabled, it closes nothing: each open alert is closed at once."""
    for text, why in [
        (HEARTBEAT.replace("group_by: [host], expect: [{host: pay-1}, {host: pay-9}]", "group_by: [dc]"), "changed"),
        ("name: payments-heartbeat-missing\nmatch: {service: payments}\n", "changed"),
        (HEARTBEAT + "enabled: false\n", "disabled"),
    ]:
        engine = engine_for(HEARTBEAT)
        run(engine, SILENT)
        note = f"resolved: payments-heartbeat-missing (rule {why})"
        assert [("close", HEARTBEAT_RULE, PAY_1, note), ("close", HEARTBEAT_RULE, PAY_9, note)] == reload(
            engine, text
        ), text
        assert not [a for a in run(engine, [(400, beat("pay-1")), (3000, None)]) if a[0] == "close"]


def test_a_regrouped_absence_watches_its_hosts_under_the_groups_their_last_heartbeats_make() -> None:
    """group_by [host] to [host, dc]: pay-1, silent and paged, keeps its alert open (closed by its
    alias when it beats again), and pay-2, still beating at the reload, is paged for when silent
    for the window after its last heartbeat. To [dc]: pay-1 and pay-2 are one group, as the latest
    of them (pay-2, not silent), so pay-1's alert is closed at the reload; the group pages when
    pay-2 falls silent."""
    rule = HEARTBEAT.replace(", expect: [{host: pay-1}, {host: pay-9}]", "")
    steps: list[Step] = [(0, {**beat("pay-1"), "dc": "a"}), (10, {**beat("pay-2"), "dc": "a"})]
    steps += [(200, {**beat("pay-2"), "dc": "a"}), (300, None)]
    engine = engine_for(rule)
    assert [("alert", HEARTBEAT_RULE, 1)] == run(engine, steps)
    assert [] == reload(engine, rule.replace("[host]", "[host, dc]"))
    assert [] == run(engine, [(499, None)])
    assert [("alert", HEARTBEAT_RULE)] == [a[:2] for a in run(engine, [(500, None)])]
    assert [("close", HEARTBEAT_RULE, PAY_1)] == run(engine, [(600, {**beat("pay-1"), "dc": "a"})])
    engine = engine_for(rule)
    run(engine, steps)
    note = "resolved: payments-heartbeat-missing (rule changed)"
    assert [("close", HEARTBEAT_RULE, PAY_1, note)] == reload(engine, rule.replace("[host]", "[dc]"))
    assert [] == run(engine, [(499, None)])
    assert [("alert", HEARTBEAT_RULE)] == [a[:2] for a in run(engine, [(500, None)])]


def test_an_expected_group_never_seen_that_an_edit_no_longer_expects_has_its_alert_closed() -> None:
    """pay-1 (seen) and pay-9 (expected, never seen) are silent and paged; `expect` is edited to
    pay-1 alone (pay-9 was a typo, or is gone): pay-9's alert is closed at the reload, since no
    event of it will ever come to close it; pay-1's stays open until pay-1 beats. (pay-9's
    alert stayed open for good.)"""
    engine = engine_for(HEARTBEAT)
    run(engine, SILENT)
    note = "resolved: payments-heartbeat-missing (rule changed)"
    assert [("close", HEARTBEAT_RULE, PAY_9, note)] == reload(engine, HEARTBEAT.replace(", {host: pay-9}", ""))
    assert [("close", HEARTBEAT_RULE, PAY_1)] == run(engine, [(400, beat("pay-1"))])


def test_an_absence_edited_so_that_it_no_longer_sees_a_silent_host_closes_its_alert() -> None:
    """pay-1 is silent and paged. The match is narrowed to dc a, which pay-1's heartbeats lack:
    pay-1's alert is closed at the reload (no event the rule sees would ever close it), and a
    heartbeat of pay-1 then closes nothing again. The same when `expect` loses pay-1 under such
    a match; while expected, pay-1 stays watched. A reload that changes only the message keeps
    the alert open, pages nothing again, and the heartbeat's return closes it. (pay-1's alert
    stayed open for good.)"""
    note = "resolved: payments-heartbeat-missing (rule changed)"
    narrowed = HEARTBEAT.replace("event: heartbeat}", "event: heartbeat, dc: a}")
    for before, after in [
        (HEARTBEAT.replace(", expect: [{host: pay-1}, {host: pay-9}]", ""), "expect: [{host: pay-9}]"),
        (HEARTBEAT, "expect: [{host: pay-9}]"),
    ]:
        engine = engine_for(before)
        run(engine, SILENT)
        edited = narrowed.replace("expect: [{host: pay-1}, {host: pay-9}]", after)
        assert [("close", HEARTBEAT_RULE, PAY_1, note)] == reload(engine, edited), before
        assert [] == [a for a in run(engine, [(400, beat("pay-1")), (3000, None)]) if a[1:3] == PAY_1]
    engine = engine_for(HEARTBEAT)
    run(engine, SILENT)
    assert [] == reload(engine, narrowed)  # still expected
    engine = engine_for(HEARTBEAT)
    run(engine, SILENT)
    assert [] == reload(engine, HEARTBEAT + 'alert: {message: "no heartbeat from {host}"}\n')
    assert [] == run(engine, [(399, None)])
    assert [("close", HEARTBEAT_RULE, PAY_1)] == run(engine, [(400, beat("pay-1"))])


def test_an_expected_host_an_edit_no_longer_expects_is_not_paged_for_even_if_matched() -> None:
    """pay-9, expected and never seen, is taken out of `expect` before its window ran out, under
    a match its heartbeat would pass: it is no longer watched, and nothing is paged for it.
    (It was paged for at the window's end, though no longer expected.)"""
    rule = HEARTBEAT.replace("{service: payments, event: heartbeat}", "{host: {startswith: pay}}")
    engine = engine_for(rule)
    run(engine, [(0, beat("pay-1")), (100, beat("pay-1"))])
    assert [] == reload(engine, rule.replace(", {host: pay-9}", ""))
    assert [] == run(engine, [(250, beat("pay-1")), (500, beat("pay-1"))])


def test_a_changed_rule_that_still_resolves_closes_its_open_group_after_the_quiet_period() -> None:
    """Edited but still resolving, the rule keeps its open groups: a group closes once quiet
    for the new `after` since its last firing, a firing of the edited rule counting; without
    `resolve`, the open group is closed at the reload."""
    err = {"level": "error", "host": "a"}
    alias = 'rulesd: errors: {"host":"a"}'
    edited = RESOLVING.replace("count: 2", "count: 3").replace("10m", "20m")
    engine = engine_for(RESOLVING)
    run(engine, [(0, err), (1, err)])
    assert [] == reload(engine, edited)
    assert [] == run(engine, [(1200, None)])  # the old `after` would have closed it at 601
    assert [("close", ("errors",), alias)] == run(engine, [(1201, None), (5000, None)])
    engine = engine_for(RESOLVING)
    run(engine, [(0, err), (1, err)])
    reload(engine, edited)
    assert [("alert", ("errors",), 3)] == run(engine, [(600, err), (601, err), (602, err)])
    assert [] == run(engine, [(1801, None)])
    assert [("close", ("errors",), alias)] == run(engine, [(1802, None), (5000, None)])
    engine = engine_for(RESOLVING)
    run(engine, [(0, err), (1, err)])
    assert [("close", ("errors",), alias, "resolved: errors (rule changed)")] == reload(
        engine, RESOLVING.replace("resolve: {after: 10m}", "")
    )


def test_open_alerts_of_a_rule_changed_while_stopped_are_closed_at_the_start_and_saved_closed() -> None:
    """A state saved under the old rules and restored under new ones (a restart after the rules
    changed) closes what the new rules leave open; the state saved with those closes no longer
    holds them, so a later restart closes nothing again."""
    first = engine_for(HEARTBEAT)
    run(first, SILENT)
    saved = json.loads(json.dumps(first.state.to_json()))
    removed = ruleset_from_yaml("name: other\nmatch: {k: v}\n")
    second = Engine(removed, EngineState.from_json(saved), time_field="t")
    assert [(PAY_1, PAY_9)] == [c.aliases for _, c, _ in pending(second).firings]
    resaved = json.loads(json.dumps(second.state.to_json()))
    third = Engine(removed, EngineState.from_json(resaved), time_field="t")
    assert [] == pending(third).firings


def test_a_restored_shared_state_closes_once_what_the_new_rules_leave_open() -> None:
    """Where instances share the state, each restores it: one under the old rules' fingerprints
    closes the open alerts (and forgets closings of the state it replaces); one already adopted
    by another instance closes nothing."""
    first = engine_for(HEARTBEAT)
    run(first, SILENT)
    committed = json.loads(json.dumps(first.state.to_json()))
    engine = engine_for("name: other\nmatch: {k: v}\n")
    engine.out.append(Closing(("stale",), ("x",), 0.0))
    engine.restore(EngineState.from_json(committed), T0 + 300)
    assert [(PAY_1, PAY_9)] == [c.aliases for _, c, _ in pending(engine).firings]
    adopted = json.loads(json.dumps(engine.state.to_json()))
    engine.restore(EngineState.from_json(adopted), T0 + 300)
    assert [] == pending(engine).firings


# -- one value or more -------------------------------------------------------------------------

ValueEvent = tuple[str, str, float]  # group, value, time


def _reference_distinct(count: int, window: float, events: list[ValueEvent]) -> tuple[list[int], dict[str, Any]]:
    """Distinct counted the plain way, a dict of values per group: the events that fire, and
    what each group holds at the end. The window ends at the group's latest time."""
    groups: dict[str, dict[str, float]] = {}
    fired = []
    for i, (group, value, time) in enumerate(events):
        values = groups.setdefault(group, {})
        values[value] = max(time, values.get(value, time))
        if len(values) >= count:
            for old in [v for v, seen in values.items() if not seen > max(values.values()) - window]:
                del values[old]
            if len(values) >= count:
                del groups[group]
                fired.append(i)
    return fired, groups


def _reference_new_value(forget: float | None, events: list[ValueEvent]) -> tuple[list[int], dict[str, Any]]:
    """new_value (no learning: from the first event's time on) the plain way, a dict of values
    per group."""
    groups: dict[str, dict[str, float]] = {}
    fired = []
    for i, (group, value, time) in enumerate(events):
        values = groups.setdefault(group, {})
        last = values.get(value)
        values[value] = max(time, last) if last is not None else time
        new = last is None or (forget is not None and time - last >= forget)
        if new and time >= events[0][2]:
            fired.append(i)
    return fired, groups


@pytest.mark.parametrize(
    "spec",
    [
        "distinct: {field: u, count: 1, window: 10, group_by: [g]}",
        "distinct: {field: u, count: 2, window: 10, group_by: [g]}",
        "distinct: {field: u, count: 3, window: 30, group_by: [g]}",
        "new_value: {fields: [u], group_by: [g]}",
        "new_value: {fields: [u], group_by: [g], forget: 20}",
    ],
)
def test_values_seen_count_the_same_whether_a_group_holds_one_value_or_more(spec: str) -> None:
    """A distinct or new_value group that has seen one value keeps it as a pair, more as a dict:
    whatever it holds, in or out of time order, the same events fire as keeping a dict for
    every group, and the group holds the same values after."""
    rng = random.Random(spec)
    engine = Engine(ruleset_from_yaml(f"name: r\nmatch: {{k: v}}\n{spec}\n"), saved=False)
    events = [(rng.choice("ab"), rng.choice("xyz"), T0 + i + rng.choice([0, 0, 0, -3, -8, 0.5])) for i in range(400)]
    fired = [i for i, (g, u, time) in enumerate(events) if engine.evaluate({"k": "v", "g": g, "u": u}, time)]
    rule = engine.ruleset.rules[0]
    if spec.startswith("distinct"):
        expected, holds = _reference_distinct(rule.kind.count, rule.kind.window, events)  # type: ignore[union-attr]
        kept = engine.state.tables.get("distinct", {}).get("r", {})
    else:
        expected, holds = _reference_new_value(rule.kind.forget, events)  # type: ignore[union-attr]
        kept = engine.state.tables["new_value"]["r"]
    assert expected == fired
    as_texts = {f'"{g}"': {f'"{u}"': t for u, t in values.items()} for g, values in holds.items()}
    assert as_texts == {key: seen_values(value) for key, value in kept.items()}
    assert all(type(value) is tuple for value in kept.values() if len(seen_values(value)) == 1)


def test_a_sweep_forgets_values_whether_a_group_holds_one_or_more() -> None:
    """Values not seen within `forget` are forgotten by a sweep, with groups left with none; a
    group left with one keeps counting it as before."""
    engine = engine_for("name: n\nmatch: {k: v}\nnew_value: {fields: [u], group_by: [g], forget: 100}\n")
    for at, g, u in [(0, "a", "x"), (0, "b", "x"), (50, "b", "y"), (60, "c", "x"), (120, "c", "x")]:
        engine.evaluate({"k": "v", "g": g, "u": u}, T0 + at)
    engine.sweep(T0 + 120)  # a's x (0) and b's x (0) are forgotten
    kept = engine.state.tables["new_value"]["n"]
    assert {'"b"': ('"y"', T0 + 50), '"c"': ('"x"', T0 + 120)} == kept
    assert engine.evaluate({"k": "v", "g": "b", "u": "y"}, T0 + 130) is None  # seen 80 s ago
    assert engine.evaluate({"k": "v", "g": "b", "u": "x"}, T0 + 131) is not None  # forgotten: new again


def test_a_group_of_one_value_costs_a_pair_not_a_dict() -> None:
    """A distinct or new_value group that has seen one value keeps it as a pair (text, time):
    well under the 374 bytes such a group cost with a dict of one (tracemalloc, CPython)."""
    for spec in (
        "distinct: {field: u, count: 5, window: 1d, group_by: [g]}",
        "new_value: {fields: [u], group_by: [g]}",
    ):
        engine = Engine(ruleset_from_yaml(f"name: r\nmatch: {{k: v}}\n{spec}\n"), saved=False)
        count = 20_000
        per_group = bytes_per_call(
            lambda i, e=engine: e.evaluate({"k": "v", "g": f"group-{i:08d}", "u": "x"}, T0 + i), count
        )
        assert count == engine.state.group_count()
        assert per_group < 230, f"{spec}: {per_group:.0f} bytes per group"


# -- checks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: r\nmatch: {a: 1}\nthreshold: {count: 1, window: 1}\ndistinct: {field: u, count: 2, window: 1}\n",
            "4:1: error: distinct: a rule has at most one of threshold, distinct, sequence, absence, new_value",
        ),
        (
            "name: r\nmatch: {a: 1}\nsequence: {steps: [{match: {a: 1}}, {match: {b: 1}}]}\n",
            "2:1: error: match: a sequence rule has no top-level match",
        ),
        (
            "name: r\nsequence:\n  steps:\n    - absent: {match: {a: 1}, for: 1m}\n    - match: {b: 1}\n",
            "4:7: error: sequence.steps[0].absent: absent may only be the last step",
        ),
        (
            "name: r\nsequence: {steps: [{match: {a: 1}}, {match: {b: 1}, absent: {match: {c: 1}, for: 1}}]}\n",
            "error: sequence.steps[1]: a step has either match",
        ),
        (
            "name: r\nmatch: {a: 1}\nresolve: {after: 1m}\n",
            "3:1: error: resolve: resolve is for threshold and distinct rules (what recovers is a group)",
        ),
        (
            "name: r\nmatch: {a: 1}\nabsence: {window: 1m, group_by: [host], expect: [{hots: x}]}\n",
            "error: absence.expect[0]: an expected group names the group_by fields (group_by is [host])",
        ),
        (
            "name: r\nmatch: {a: 1}\nabsence: {window: 1m, group_by: [host], expect: [{host: .nan}]}\n",
            "3:57: error: absence.expect[0].host: cannot compare with .nan: NaN is equal to nothing",
        ),
        (
            "name: r\nmatch: {a: 1}\nabsence: {window: 1m, group_by: [id], expect: [{id: 99999999999999999999}]}\n",
            "3:53: error: absence.expect[0].id: no event holds 99999999999999999999: a JSON line's integer beyond",
        ),
        ("name: r\n", "1:1: error: (top level): missing required key 'match'"),
        (
            "name: r\nsequence: {steps: [{match: {a: 1}}]}\n",
            "2:19: error: sequence.steps: must have at least 2 items (it has 1)",
        ),
    ],
)
def test_rule_kind_mistakes_are_check_errors(text: str, message: str) -> None:
    """Each mistake is reported at its place, with what to do instead."""
    with pytest.raises(RuleError) as caught:
        ruleset_from_yaml(text)
    assert any(message in str(p) for p in caught.value.problems), caught.value.problems
