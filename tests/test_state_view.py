"""What `rulesd state` shows of the engine's saved state: per rule and group, seen from the
engine's clock (pure: saved state, rules and the wall clock in, text and JSON out)."""

from __future__ import annotations

from typing import Any

from rulesd.engine import Engine
from rulesd.pipeline import evaluate_events
from rulesd.rules.model import RuleSet
from rulesd.state_view import WrittenStep, state_view, view_json, view_text
from tests.ruletools import ruleset_from_yaml

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
SAVED_AT = 5000.0  # the wall time the daemon saved the state at (its clock is event time)

RULES = """\
rules:
  - name: ssh-brute
    match: {event: login_failed}
    threshold: {count: 3, window: 5m, group_by: [ip]}
    throttle: 10m
  - name: spraying
    match: {event: login_failed}
    distinct: {field: user, count: 3, window: 5m, group_by: [ip]}
  - name: login-after-brute
    sequence:
      group_by: [ip]
      within: 10m
      steps:
        - match: {event: login_failed}
          count: 2
        - match: {event: login_ok}
  - name: backup-never-finished
    sequence:
      group_by: [host]
      steps:
        - match: {event: backup_started}
        - absent: {match: {event: backup_finished}, for: 1h}
  - name: heartbeat-missing
    match: {event: heartbeat}
    absence: {window: 5m, group_by: [host]}
  - name: new-admin-address
    match: {event: login_ok}
    new_value: {fields: [ip], group_by: [user], learn: 7d}
  - name: payment-errors
    match: {event: error}
    threshold: {count: 2, window: 1m, group_by: [service]}
    resolve: {after: 15m}
    throttle: 5m
  - name: quiet
    match: {event: never}
"""
EVENTS: list[tuple[int, dict[str, Any]]] = [
    (0, {"event": "login_failed", "ip": "a", "user": "u1"}),
    (10, {"event": "login_failed", "ip": "a", "user": "u2"}),
    (20, {"event": "heartbeat", "host": "h1"}),
    (30, {"event": "backup_started", "host": "db"}),
    (40, {"event": "login_ok", "ip": "a", "user": "u1"}),  # completes login-after-brute for a
    (50, {"event": "error", "service": "pay"}),
    (55, {"event": "error", "service": "pay"}),  # fires payment-errors: open, throttled
    (60, {"event": "login_failed", "ip": "b", "user": "u1"}),
]


def saved_state(ruleset: RuleSet) -> dict[str, Any]:
    """The state after EVENTS, as the store gives it back (the clock saved at SAVED_AT)."""
    engine = Engine(ruleset, time_field="t")
    evaluate_events([({**e, "t": T0 + at}, float(T0 + at)) for at, e in EVENTS], engine, lambda i: i)
    return {**engine.state.to_json(), "clock": engine.now, "clock_saved": SAVED_AT}


def test_every_kind_of_group_state_as_text() -> None:
    """Counts in the window, distinct values, the sequence step (and when `within` is over for
    it) and an absent step's wait,
    an absence's timer, values known and learning, throttle and open alerts with their close;
    times from the engine clock: the saved event time plus the wall time since (60 s)."""
    ruleset = ruleset_from_yaml(RULES)
    view = state_view(saved_state(ruleset), ruleset, SAVED_AT + 60)
    assert [
        "engine clock: 2026-01-01T00:02:00Z (event time; times below are seen from it)",
        "ssh-brute (threshold 3 in 5m, group_by ip, throttle 10m): 2 groups",
        '  ip="a": 2 of 3 in 5m, the oldest 2026-01-01T00:00:00Z (2m ago)',
        '  ip="b": 1 of 3 in 5m, the oldest 2026-01-01T00:01:00Z (1m ago)',
        "spraying (distinct user, 3 in 5m, group_by ip): 2 groups",
        '  ip="a": 2 of 3 different user: "u2" (seen 1m50s ago), "u1" (seen 2m ago)',
        '  ip="b": 1 of 3 different user: "u1" (seen 1m ago)',
        "login-after-brute (sequence of 2 steps within 10m, group_by ip): 1 group",
        '  ip="b": at step 1 of 2, 1 of 2 events, started 2026-01-01T00:01:00Z (1m ago); '
        "the oldest drops out at 2026-01-01T00:11:00Z (in 9m)",
        "backup-never-finished (sequence of 2 steps, group_by host): 1 group",
        '  host="db": step 1 of 2 done; fires at 2026-01-01T01:00:30Z (in 58m30s) '
        "unless the absent step's event comes",
        "heartbeat-missing (absence 5m, group_by host): 1 group",
        '  host="h1": last seen 2026-01-01T00:00:20Z (1m40s ago); '
        "fires at 2026-01-01T00:05:20Z (in 3m20s) if still silent",
        "new-admin-address (new_value ip, group_by user): 1 group",
        "  learning until 2026-01-08T00:00:00Z (in 6d23h): new values are only recorded",
        '  user="u1": 1 value(s) known: "a" (seen 1m20s ago)',
        "payment-errors (threshold 2 in 1m, group_by service, throttle 5m, resolve after 15m): 1 group",
        '  service="pay": throttled until 2026-01-01T00:05:55Z (in 3m55s); alert open (rulesd: payment-errors: '
        '{"service":"pay"}); closes at 2026-01-01T00:15:55Z (in 13m55s) unless it fires again',
    ] == view_text(view, SAVED_AT + 60).splitlines()


def test_a_new_value_group_at_values_per_group_says_so() -> None:
    """A group that knows `limits.values_per_group` values says that its stalest values are
    forgotten as new ones come (and page again); below the limit, or with no limit known, not."""
    ruleset = ruleset_from_yaml(RULES)
    saved = saved_state(ruleset)
    said = (
        '  user="u1": 1 value(s) known: "a" (seen 1m20s ago); at limits.values_per_group (1): the values '
        "seen longest ago are forgotten as new ones come, and page again when next seen"
    )
    for limit, expected in ((1, said), (2, '  user="u1": 1 value(s) known: "a" (seen 1m20s ago)')):
        view = state_view(saved, ruleset, SAVED_AT + 60, "new-admin-address", values_per_group=limit)
        assert expected == view_text(view, SAVED_AT + 60).splitlines()[-1]


def test_counts_leave_the_window_as_the_clock_runs_on() -> None:
    """Ten minutes of wall time later the engine clock has moved on as the daemon's does while
    idle: the windows are empty, the throttle is over, the absence is due."""
    ruleset = ruleset_from_yaml(RULES)
    view = state_view(saved_state(ruleset), ruleset, SAVED_AT + 600, "ssh-brute")
    assert [
        "engine clock: 2026-01-01T00:11:00Z (event time; times below are seen from it)",
        "ssh-brute (threshold 3 in 5m, group_by ip, throttle 10m): 2 groups",
        '  ip="a": 0 of 3 in 5m',
        '  ip="b": 0 of 3 in 5m',
    ] == view_text(view, SAVED_AT + 600).splitlines()


def test_the_json_form() -> None:
    """Groups by their group_by values, times in RFC 3339, values as values."""
    ruleset = ruleset_from_yaml(RULES)
    rules = {r["rule"]: r for r in view_json(state_view(saved_state(ruleset), ruleset, SAVED_AT + 60))["rules"]}
    assert ["ssh-brute", "spraying", "login-after-brute", "backup-never-finished"] == list(rules)[:4]
    assert {
        "group": {"service": "pay"},
        "last_fired": "2026-01-01T00:00:55Z",
        "throttled_until": "2026-01-01T00:05:55Z",
        "open_alerts": ['rulesd: payment-errors: {"service":"pay"}'],
        "closes_at": "2026-01-01T00:15:55Z",
        "also_held_by": [],
    } == rules["payment-errors"]["groups"][0]
    assert {
        "group": {"ip": "a"},
        "field": "user",
        "distinct": 2,
        "needed": 3,
        "window_seconds": 300.0,
        "values": [
            {"value": "u2", "last_seen": "2026-01-01T00:00:10Z"},
            {"value": "u1", "last_seen": "2026-01-01T00:00:00Z"},
        ],
    } == rules["spraying"]["groups"][0]
    assert ("sequence", 2, "2026-01-01T01:00:30Z") == (
        rules["backup-never-finished"]["kind"],
        rules["backup-never-finished"]["groups"][0]["step"],
        rules["backup-never-finished"]["groups"][0]["fires_at"],
    )
    assert "2026-01-08T00:00:00Z" == rules["new-admin-address"]["learning_until"]
    assert "quiet" not in rules  # a rule without state is left out


def test_without_a_saved_clock_times_are_seen_from_now() -> None:
    """A state saved before the clock was (or by no engine yet): the wall clock, said so."""
    ruleset = ruleset_from_yaml(RULES)
    saved = {k: v for k, v in saved_state(ruleset).items() if not k.startswith("clock")}
    view = state_view(saved, ruleset, T0 + 120.0, "ssh-brute")
    assert (False, T0 + 120.0) == (view.engine, view.clock)
    assert view_text(view, T0 + 120.0).startswith(
        "engine clock: not saved yet; times below are seen from now, 2026-01-01T00:02:00Z\n"
    )


def test_state_of_a_rule_changed_or_removed_is_shown_as_saved() -> None:
    """The rule files changed since (the daemon drops that state at its next reload): shown
    as it is saved, without the rule's parameters."""
    saved = saved_state(ruleset_from_yaml(RULES))
    changed = ruleset_from_yaml(
        RULES.replace("count: 3, window: 5m, group_by: [ip]}", "count: 4, window: 5m, group_by: [ip]}")
    )
    lines = view_text(state_view(saved, changed, SAVED_AT + 60, "ssh-brute"), SAVED_AT + 60).splitlines()
    assert [
        "ssh-brute (not in the rule files as saved: the state as it is): 2 groups",
        '  ["a"]: 2 in the window, the oldest 2026-01-01T00:00:00Z (2m ago)',
        '  ["b"]: 1 in the window, the oldest 2026-01-01T00:01:00Z (1m ago)',
    ] == lines[1:]
    gone = state_view(saved, None, SAVED_AT + 60, "spraying")
    assert (
        "spraying (the rule files do not load: the state as it is): 2 groups"
        == (view_text(gone, SAVED_AT + 60).splitlines()[1])
    )
    assert [{"group": ["a"], "field": None, "distinct": 2}] == [
        {k: g[k] for k in ("group", "field", "distinct")} for g in view_json(gone)["rules"][0]["groups"][:1]
    ]


SHARED = """\
rules:
  - name: errors-short
    match: {kind: error}
    threshold: {count: 1, window: 1m}
    resolve: {after: 5m}
  - name: errors-long
    match: {kind: error}
    threshold: {count: 1, window: 1m}
    resolve: {after: 30m}
  - name: heartbeat-missing
    match: {kind: heartbeat}
    absence: {window: 1m, group_by: [host]}
    throttle: 1h
"""


def test_an_alert_held_by_several_groups_and_a_silence_whose_page_was_throttled() -> None:
    """Two rules that fired together send one alert: the group whose resolve comes first only
    lets go of it, the alert stays open until the other does too, and both say so. An absence
    silent again within its throttle has paged nothing yet: no alert open, none to close, and
    it fires when the throttle ends if still silent."""
    ruleset = ruleset_from_yaml(SHARED)
    engine = Engine(ruleset)
    engine.evaluate({"kind": "heartbeat", "host": "h1"}, T0)
    engine.advance(T0 + 90)  # silent: paged
    engine.evaluate({"kind": "heartbeat", "host": "h1"}, T0 + 100)  # back: its alert closes
    engine.advance(T0 + 200)  # silent again within the throttle: not paged
    engine.evaluate({"kind": "error"}, T0 + 200)
    saved = {**engine.state.to_json(), "clock": engine.now, "clock_saved": SAVED_AT}
    view = state_view(saved, ruleset, SAVED_AT)
    alias = "rulesd: errors-long, errors-short"
    assert [
        "errors-short (threshold 1 in 1m, resolve after 5m): 1 group",
        f"  (one group): alert open ({alias}); lets go at 2026-01-01T00:08:20Z (in 5m) unless it fires again; "
        "also held by errors-long (one group) until 2026-01-01T00:33:20Z (in 30m): "
        "the alert closes when the last group holding it lets go",
        "errors-long (threshold 1 in 1m, resolve after 30m): 1 group",
        f"  (one group): alert open ({alias}); lets go at 2026-01-01T00:33:20Z (in 30m) unless it fires again; "
        "also held by errors-short (one group) until 2026-01-01T00:08:20Z (in 5m): "
        "the alert closes when the last group holding it lets go",
        "heartbeat-missing (absence 1m, group_by host, throttle 1h): 1 group",
        '  host="h1": silent since 2026-01-01T00:01:40Z (1m40s ago): no alert open yet (its throttle holds the '
        "page back), fires at 2026-01-01T01:01:00Z (in 57m40s) if still silent; throttled until "
        "2026-01-01T01:01:00Z (in 57m40s)",
    ] == view_text(view, SAVED_AT).splitlines()[1:]
    rules = {r["rule"]: r for r in view_json(view)["rules"]}
    assert [{"alias": alias, "rule": "errors-long", "group": {}, "until": "2026-01-01T00:33:20Z"}] == rules[
        "errors-short"
    ]["groups"][0]["also_held_by"]
    held = rules["heartbeat-missing"]["groups"][0]
    assert ([], [], True, "2026-01-01T01:01:00Z") == tuple(
        held[k] for k in ("open_alerts", "also_held_by", "silent", "fires_at")
    )


EXPECTED = """\
rules:
  - name: beat
    match: {kind: heartbeat}
    absence: {window: 1m, group_by: [host], expect: [{host: h1}, {host: h2}]}
  - name: login-then-sudo
    sequence: {group_by: [user], within: 10m, steps: [match: {kind: login}, match: {kind: sudo}]}
"""


def test_an_expected_group_never_seen_is_not_said_to_have_been_seen() -> None:
    """An absence's expected group is watched from the rules' start with no event: it was
    shown `last seen` (and `silent since`, once it paged) at that moment, as though the host had
    spoken. It is `never seen (expected since …)`, `last_seen` null, until an event comes. A
    sequence past its first step says until when the rest may come."""
    ruleset = ruleset_from_yaml(EXPECTED)
    engine = Engine(ruleset)
    engine.advance(T0)  # the rules start: both hosts are expected from now
    engine.evaluate({"kind": "heartbeat", "host": "h1"}, T0 + 10)
    engine.evaluate({"kind": "login", "user": "alice"}, T0 + 20)
    saved = {**engine.state.to_json(), "clock": engine.now, "clock_saved": SAVED_AT}
    view = state_view(saved, ruleset, SAVED_AT)
    assert [
        "beat (absence 1m, group_by host): 2 groups",
        '  host="h1": last seen 2026-01-01T00:00:10Z (10s ago); fires at 2026-01-01T00:01:10Z (in 50s) if still silent',
        '  host="h2": never seen (expected since 2026-01-01T00:00:00Z (20s ago)); '
        "fires at 2026-01-01T00:01:00Z (in 40s) if still silent",
        "login-then-sudo (sequence of 2 steps within 10m, group_by user): 1 group",
        '  user="alice": at step 2 of 2, started 2026-01-01T00:00:20Z (now); '
        "the rest must come before 2026-01-01T00:10:20Z (in 10m)",
    ] == view_text(view, SAVED_AT).splitlines()[1:]
    groups = {g["group"]["host"]: g for g in view_json(view)["rules"][0]["groups"]}
    assert (None, "2026-01-01T00:00:00Z") == (groups["h2"]["last_seen"], groups["h2"]["expected_since"])
    assert ("2026-01-01T00:00:10Z", None) == (groups["h1"]["last_seen"], groups["h1"]["expected_since"])

    engine.advance(T0 + 65)  # h2 silent for its window: paged
    saved = {**engine.state.to_json(), "clock": engine.now, "clock_saved": SAVED_AT}
    assert (
        '  host="h2": never seen (expected since 2026-01-01T00:00:00Z (1m5s ago)): '
        'alert open (rulesd: beat: {"host":"h2"}), closes when one comes'
    ) == view_text(state_view(saved, ruleset, SAVED_AT, "beat"), SAVED_AT).splitlines()[-1]
    engine.evaluate({"kind": "heartbeat", "host": "h2"}, T0 + 70)  # its first event
    saved = {**engine.state.to_json(), "clock": engine.now, "clock_saved": SAVED_AT}
    assert (
        view_text(state_view(saved, ruleset, SAVED_AT, "beat"), SAVED_AT)
        .splitlines()[-1]
        .startswith('  host="h2": last seen 2026-01-01T00:01:10Z (now); ')
    )


def test_a_sequence_group_says_which_step_it_waits_for_as_written() -> None:
    """The step a group waits for is named by its condition as written and where (a long one
    cut in text, whole in JSON); without the written steps (a rule file changed since) the
    group's line is as before."""
    ruleset = ruleset_from_yaml(EXPECTED)
    engine = Engine(ruleset)
    engine.evaluate({"kind": "login", "user": "alice"}, T0)
    saved = {**engine.state.to_json(), "clock": engine.now, "clock_saved": SAVED_AT}
    long = {"kind": "sudo", "command": {"in": [f"/usr/bin/tool-{i}" for i in range(10)]}}
    steps = {"login-then-sudo": (WrittenStep({"kind": "login"}, "r.yaml:3:5"), WrittenStep(long, "r.yaml:4:5"))}
    view = state_view(saved, ruleset, SAVED_AT, "login-then-sudo", steps)
    line = view_text(view, SAVED_AT).splitlines()[-1]
    assert line.startswith(
        '  user="alice": at step 2 of 2 ({"kind": "sudo", "command": {"in": ["/usr/bin/tool-0", '
        '"/usr/bin/tool-1", "/usr… at r.yaml:4:5), started '
    )
    group = view_json(view)["rules"][0]["groups"][0]
    assert {"condition": long, "location": "r.yaml:4:5"} == group["waits_for"]
    plain = view_text(state_view(saved, ruleset, SAVED_AT, "login-then-sudo"), SAVED_AT).splitlines()[-1]
    assert plain.startswith('  user="alice": at step 2 of 2, started ')


HUNG = """\
name: backup-never-finished
sequence: {group_by: [host], steps: [match: {event: backup_started}, absent: {match: {event: backup_done}, for: 1h}]}
throttle: 3h
"""


def test_an_absent_step_its_throttle_holds_back_says_it_fires_when_the_throttle_ends() -> None:
    """db's first backup hung (paged at 1h); the next, started at 1h30m, is due at 2h30m, within
    the 3h throttle: the group says it fires when the throttle ends, at 4h, both while it waits
    for the step's due time and once that time has passed with the page held back."""
    ruleset = ruleset_from_yaml(HUNG)
    engine = Engine(ruleset)
    engine.evaluate({"event": "backup_started", "host": "db"}, T0)
    engine.advance(T0 + 3600)
    engine.evaluate({"event": "backup_started", "host": "db"}, T0 + 5400)
    for clock in (T0 + 7200, T0 + 10800):  # before the step's due time, and after it
        engine.advance(clock)
        saved = {**engine.state.to_json(), "clock": engine.now, "clock_saved": SAVED_AT}
        view = state_view(saved, ruleset, SAVED_AT)
        [group] = view_json(view)["rules"][0]["groups"]
        assert ("2026-01-01T04:00:00Z", "2026-01-01T04:00:00Z") == (group["fires_at"], group["throttled_until"])
        assert "step 1 of 2 done; fires at 2026-01-01T04:00:00Z" in view_text(view, SAVED_AT), clock
    engine.advance(T0 + 14400)
    assert [T0 + 3600, T0 + 14400] == [firing.time for firing in engine.out]
