"""Tests for rulesd.state: the SQLite store of positions, outbox and engine state."""

from __future__ import annotations

import copy
import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from rulesd.engine import Closing, Engine, EngineState, StateDelta
from rulesd.engine.core import EXPECTED
from rulesd.engine.state import ABSENCE, RULE
from rulesd.events import make_parser
from rulesd.jsontext import compact_json
from rulesd.pipeline import advance, evaluate_lines
from rulesd.state import CLOSE, SqliteState, StateError
from rulesd.state.base import Request
from rulesd.state.sqlite import ATTEMPTS_KEPT
from tests.outbox_checks import check_a_close_of_a_dead_create_is_kept_with_it
from tests.ruletools import ruleset_from_yaml

# When events arrive: after every event time here (a time further ahead is not believed).
ARRIVAL = 2e9


def store(tmp_path: Path) -> SqliteState:
    return SqliteState(str(tmp_path / "state.sqlite"))


def test_commit_queues_alerts_and_saves_positions_together(tmp_path: Path) -> None:
    """One commit: alerts in order, positions and engine state, all readable after reopening."""
    s = store(tmp_path)
    delta = StateDelta(True, {"r": "f1"}, [("window", "r", '["\\"a\\""]', "[5.0]")], [])
    s.commit(positions={"/a": {"offset": 10}}, payloads=[{"message": "1"}, {"message": "2"}], now=100.0, engine=delta)
    reopened = store(tmp_path)
    assert {"/a": {"offset": 10}} == reopened.load_positions()
    assert {"fingerprints": {"r": "f1"}, "windows": {"r": [[['"a"'], [5.0]]]}, "throttles": {}} == (
        reopened.load_engine_state()
    )
    assert ["1", "2"] == [a.payload["message"] for a in reopened.alerts()]
    assert (2, 100.0) == reopened.depth()


def test_a_failed_commit_changes_nothing(tmp_path: Path) -> None:
    """If the transaction fails half-way, neither the alerts nor the position are kept."""
    s = store(tmp_path)
    s.commit(positions={"/a": {"offset": 1}}, payloads=[], now=1.0)
    with pytest.raises(TypeError):
        s.commit(
            positions={"/a": {"offset": 2}},
            payloads=[{"message": "x"}],
            now=2.0,
            engine=StateDelta(True, {"r": object()}, [], []),
        )  # type: ignore[dict-item]
    assert {"/a": {"offset": 1}} == s.load_positions()
    assert [] == s.alerts()


def test_a_close_of_a_dead_lettered_alert_is_kept_to_be_requeued_with_it(tmp_path: Path) -> None:
    """retry-dead sends a dead-lettered create and then the close delivered after it, in order:
    alone, the create would open an alert nothing closes any more."""
    check_a_close_of_a_dead_create_is_kept_with_it(store(tmp_path))


def test_outbox_lifecycle(tmp_path: Path) -> None:
    """head is the oldest pending; sent leaves, rescheduled stays, dead leaves the line until requeued."""
    s = store(tmp_path)
    s.commit(positions={}, payloads=[{"n": 1}, {"n": 2}, {"n": 3}], now=5.0)
    first = s.head()
    assert first is not None and {"n": 1} == first.payload
    s.reschedule(first.id, 50.0, "HTTP 503")
    again = s.head()
    assert again is not None and (again.id, 1, 50.0, "HTTP 503") == (
        again.id,
        again.attempts,
        again.next_attempt,
        again.last_error,
    )
    s.mark_sent(first.id)
    second = s.head()
    assert second is not None
    s.dead_letter(second.id, "HTTP 422", '{"message": "bad"}')
    third = s.head()
    assert third is not None and {"n": 3} == third.payload
    dead = s.alerts("dead")
    assert [("HTTP 422", '{"message": "bad"}')] == [(a.last_error, a.response) for a in dead]
    assert 1 == s.retry_dead(now=99.0)
    assert [{"n": 2}, {"n": 3}] == [a.payload for a in s.alerts("pending")]


def test_in_memory_store_for_dry_runs() -> None:
    """':memory:' works the same and touches no file."""
    s = SqliteState(":memory:")
    s.commit(positions={}, payloads=[{"n": 1}], now=1.0)
    assert (1, 1.0) == s.depth()


def test_engine_state_round_trip_with_incremental_saves(tmp_path: Path) -> None:
    """Saving only the touched groups, batch after batch, restores the same state as the engine's."""
    rules = ruleset_from_yaml(
        "name: burst\nmatch: {level: error}\nthreshold: {count: 3, window: 60, group_by: [host]}\nthrottle: 600\n"
    )
    engine = Engine(rules)
    s = store(tmp_path)
    events = [
        (t, {"level": "error", "host": h})
        for t, h in [(0, "a"), (1, "b"), (2, "a"), (3, "a"), (4, "c"), (70, "b"), (71, "b"), (5000, "d")]
    ]
    for t, event in events:
        engine.evaluate(event, 1_700_000_000.0 + t)
        s.commit(positions={}, payloads=[], now=float(t), engine=engine.state.delta())
        if t == 71:
            engine.sweep(1_700_000_000.0 + 4000)  # a sweep's deletions are saved too
            s.commit(positions={}, payloads=[], now=float(t), engine=engine.state.delta())
    saved = store(tmp_path).load_engine_state()
    assert saved is not None
    expected = engine.state.to_json()
    assert expected["fingerprints"] == saved["fingerprints"]
    for kind in ("windows", "throttles"):
        assert {r: sorted(map(repr, g)) for r, g in expected[kind].items() if g} == {
            r: sorted(map(repr, g)) for r, g in saved[kind].items()
        }


def test_state_saved_whole_in_one_row_by_an_older_rulesd_is_kept(tmp_path: Path) -> None:
    """Before groups had rows of their own, the whole state was one JSON row: an upgrade
    restores its windows and throttles (else throttled alerts would page again), and the
    first save writes them as rows (with the note of how the throttled rule makes its groups,
    which that row never held)."""
    rules = ruleset_from_yaml("name: t\nmatch: {level: error}\nthrottle: 600\n")
    old = Engine(rules)
    old.evaluate({"level": "error"}, 1_700_000_000.0)
    row = {kind: saved for kind, saved in old.state.to_json().items() if kind != RULE}
    s = store(tmp_path)
    with s._lock:
        s._conn().execute("INSERT INTO engine_state (id, data) VALUES (1, ?)", (json.dumps(row),))
    restored = EngineState.from_json(store(tmp_path).load_engine_state() or {})
    assert row == restored.to_json()
    engine = Engine(rules, restored)
    assert engine.evaluate({"level": "error"}, 1_700_000_060.0) is None  # still throttled
    s.commit(positions={}, payloads=[], now=0.0, engine=engine.state.delta())
    assert old.state.to_json() == EngineState.from_json(store(tmp_path).load_engine_state() or {}).to_json()


def test_a_throttle_an_edit_keeps_is_saved_with_how_its_groups_are_made(tmp_path: Path) -> None:
    """A throttled rule edited (its message) keeps its throttle through the database: a restart
    under the edited rule is still throttled, and so is one after a further edit, since the
    saved state says how the edited rule makes its groups. (A reload paged again at once.)"""
    text = "name: t\nmatch: {level: error}\nthrottle: 600\n"
    engine = Engine(ruleset_from_yaml(text))
    assert engine.evaluate({"level": "error"}, 1_700_000_000.0) is not None
    s = store(tmp_path)
    s.commit(positions={}, payloads=[], now=0.0, engine=engine.state.delta())
    engine.replace_rules(ruleset_from_yaml(text + "alert: {message: again}\n"))
    assert engine.evaluate({"level": "error"}, 1_700_000_030.0) is None
    s.commit(positions={}, payloads=[], now=0.0, engine=engine.state.delta())
    edited = ruleset_from_yaml(text + "alert: {message: once more}\n")
    restored = Engine(edited, EngineState.from_json(store(tmp_path).load_engine_state() or {}))
    assert restored.evaluate({"level": "error"}, 1_700_000_060.0) is None  # still throttled
    assert restored.evaluate({"level": "error"}, 1_700_000_600.0) is not None


def test_the_sender_pause_is_recorded_for_other_processes(tmp_path: Path) -> None:
    """set_paused writes a row another connection reads; None clears it."""
    s = store(tmp_path)
    assert s.paused() is None
    s.set_paused("HTTP 401: OpsGenie rejected the API key")
    assert "HTTP 401: OpsGenie rejected the API key" == store(tmp_path).paused()
    s.set_paused(None)
    assert store(tmp_path).paused() is None


def test_failed_attempts_are_kept_until_delivery_and_capped(tmp_path: Path) -> None:
    """Each failed attempt made at a time is recorded (the latest ATTEMPTS_KEPT); a delivery
    removes the history with the alert; a reschedule without a time records nothing."""
    s = store(tmp_path)
    s.commit(positions={}, payloads=[{"n": 1}, {"n": 2}], now=1.0)
    first, second = (a.id for a in s.alerts())
    for i in range(ATTEMPTS_KEPT + 5):
        s.reschedule(first, 100.0 + i, f"HTTP 503 #{i}", at=10.0 + i)
    s.reschedule(first, 500.0, "not an attempt", count=False)
    s.dead_letter(second, "HTTP 422", "{}", at=7.0)
    kept = s.attempts(first)
    assert (ATTEMPTS_KEPT, "HTTP 503 #5", "HTTP 503 #54") == (len(kept), kept[0].error, kept[-1].error)
    assert [(7.0, "dead", "HTTP 422")] == [(a.at, a.result, a.error) for a in s.attempts(second)]
    assert (second, "dead") == (s.alert(second).id, s.alert(second).status)  # type: ignore[union-attr]
    s.mark_sent(first)
    assert ([], None) == (s.attempts(first), s.alert(first))


def test_a_delivery_is_recorded_by_one_statement(tmp_path: Path) -> None:
    """Recording a delivered alert is one statement (its own transaction), its history and all:
    while the sender shares the reader's CPU, every statement is a hand-over of the GIL and back.
    (A close kept with its dead create is decided in a transaction: see the shared check.)"""
    s = store(tmp_path)
    s.commit(positions={}, payloads=[{"n": 1}, Request({"note": "resolved"}, CLOSE, "x")], now=1.0)
    create, close = (a.id for a in s.alerts())
    s.reschedule(create, 100.0, "HTTP 503", at=10.0)
    statements: list[str] = []
    s._conn().set_trace_callback(statements.append)
    s.mark_sent(create)
    s.mark_sent(close)  # a close whose create was delivered
    s._conn().set_trace_callback(None)
    # (SQLite reports a statement again for each statement of the trigger it sets off.)
    assert {"DELETE"} == {statement.split()[0] for statement in statements}
    assert [(None, []), (None, [])] == [(s.alert(alert), s.attempts(alert)) for alert in (create, close)]


def test_a_database_made_before_the_history_trigger_gets_it_when_opened(tmp_path: Path) -> None:
    """A delivery removes the alert in one statement and its history by the schema's trigger:
    a database an older rulesd made (no trigger) is given it when opened."""
    s = store(tmp_path)
    s.commit(positions={}, payloads=[{"n": 1}], now=1.0)
    (alert,) = s.alerts()
    s.reschedule(alert.id, 100.0, "HTTP 503", at=10.0)
    s.close()
    with sqlite3.connect(tmp_path / "state.sqlite") as raw:
        raw.execute("DROP TRIGGER outbox_history_gone")
    reopened = store(tmp_path)
    assert ["HTTP 503"] == [a.error for a in reopened.attempts(alert.id)]
    reopened.mark_sent(alert.id)
    with sqlite3.connect(tmp_path / "state.sqlite") as raw:
        assert (0, 0) == (
            raw.execute("SELECT COUNT(*) FROM outbox").fetchone()[0],
            raw.execute("SELECT COUNT(*) FROM outbox_attempts").fetchone()[0],
        )


def test_every_kind_of_engine_state_survives_the_database(tmp_path: Path) -> None:
    """Distinct values, sequences, absences (with their event), values seen, open alerts and
    per-rule learning starts are saved by rows and read back as they were."""
    ruleset = ruleset_from_yaml(
        "rules:\n"
        "  - {name: d, match: {k: d}, distinct: {field: u, count: 9, window: 1h, group_by: [h]}}\n"
        "  - {name: s, sequence: {steps: [{match: {k: s1}}, {absent: {match: {k: s2}, for: 1h}}]}}\n"
        "  - {name: a, match: {k: a}, absence: {window: 1h, group_by: [h]}}\n"
        "  - {name: n, match: {k: n}, new_value: {fields: [u], learn: 1m}}\n"
        "  - {name: r, match: {k: r}, threshold: {count: 1, window: 1m}, resolve: {after: 1h}}\n"
    )
    engine = Engine(ruleset)
    for i, kind in enumerate(["d", "s1", "a", "n", "r", "d"]):
        engine.evaluate({"k": kind, "h": "x", "u": f"u{i}", "nested": {"deep": [1, 2]}}, 1000.0 + i)
    s = store(tmp_path)
    s.commit(positions={}, payloads=[], now=0.0, engine=engine.state.delta())
    restored = EngineState.from_json(store(tmp_path).load_engine_state() or {})
    assert engine.state.to_json() == restored.to_json()
    assert {"distinct", "sequence", "absence", "new_value", "open", "rule"} <= set(restored.tables)


def test_an_outbox_written_before_closes_existed_reads_as_creates(tmp_path: Path) -> None:
    """A database whose outbox has no action column (an older rulesd) gets it on opening; its
    queued alerts are creates and are delivered as before."""
    path = tmp_path / "state.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, payload TEXT NOT NULL,"
            " status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL,"
            " last_error TEXT, response TEXT)"
        )
        db.execute('INSERT INTO outbox (created, payload, next_attempt) VALUES (1.0, \'{"message": "old"}\', 1.0)')
    head = SqliteState(str(path)).head()
    assert head is not None
    assert ({"message": "old"}, "create", None) == (head.payload, head.action, head.target)


def test_the_engine_clock_is_saved_with_the_state(tmp_path: Path) -> None:
    """The engine's clock (the latest event time) and the wall time it was saved at come back
    with the state, for readers such as `rulesd state`; the restored engine state is as before."""
    engine = Engine(ruleset_from_yaml("name: r\nmatch: {a: 1}\nthreshold: {count: 5, window: 1m}\n"), time_field="t")
    engine.evaluate({"a": 1, "t": 1000.0}, ARRIVAL)
    engine.evaluate({"a": 1, "t": 1010.0}, ARRIVAL)
    store(tmp_path).commit(positions={}, payloads=[], now=5000.0, engine=engine.state.delta())
    saved = store(tmp_path).load_engine_state()
    assert saved is not None and (1010.0, 5000.0) == (saved["clock"], saved["clock_saved"])
    assert engine.state.to_json() == EngineState.from_json(saved).to_json()


def test_a_read_only_store_reads_beside_a_writer_and_cannot_write(tmp_path: Path) -> None:
    """Opened read-only, the store reads the committed state while another connection holds the
    write lock (a write transaction would wait for it), and refuses to write."""
    writer = store(tmp_path)
    delta = StateDelta(True, {"r": "f1"}, [("window", "r", '["\\"a\\""]', "[5.0]")], [])
    writer.commit(positions={}, payloads=[], now=1.0, engine=delta)
    holder = sqlite3.connect(str(tmp_path / "state.sqlite"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("DELETE FROM engine_groups")  # not committed: the reader must not see it
    try:
        started = time.monotonic()
        reader = SqliteState(str(tmp_path / "state.sqlite"), read_only=True)
        saved = reader.load_engine_state()
        assert time.monotonic() - started < 5
        assert saved is not None and {"r": [[['"a"'], [5.0]]]} == saved["windows"]
        with pytest.raises(StateError, match="cannot write the state database"):
            reader.commit(positions={"/a": {"offset": 1}}, payloads=[], now=2.0)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


# What the database in tests/data/engine-state-before-string-keys.sql was written from: these rules
# and events, saved after each event by the rulesd that kept a group key as a tuple of its parts.
OLD_RULES = """
rules:
  - {name: thr, match: {k: t}, threshold: {count: 4, window: 1h, group_by: [host]}}
  - {name: pair, match: {k: t}, threshold: {count: 2, window: 1h, group_by: [host, user]}}
  - {name: all, match: {k: t}, threshold: {count: 9, window: 1h}}
  - {name: first, match: {k: t}, threshold: {count: 1, window: 1h, group_by: [host]},
     throttle: 1h, resolve: {after: 2h}}
  - {name: users, match: {k: t}, distinct: {field: user, count: 3, window: 1h, group_by: [host]}}
  - {name: twice, sequence: {group_by: [host], steps: [{match: {k: t}, count: 2}, {match: {k: done}}]}}
  - {name: unfinished, sequence: {group_by: [host],
     steps: [{match: {k: start}}, {absent: {match: {k: done}, for: 30m}}]}}
  - {name: quiet, match: {k: t}, absence: {window: 2h, group_by: [host], expect: [{host: z}]}}
  - {name: newuser, match: {k: t}, new_value: {fields: [user], group_by: [host]}}
"""
OLD_EVENTS: list[tuple[float, dict[str, Any]]] = [
    (0, {"k": "t", "host": "a", "user": "u1"}),
    (10, {"k": "t", "host": "b", "user": "u1"}),
    (20, {"k": "t", "host": "b", "user": "u2"}),
    (30, {"k": "t", "host": "c"}),
    (40, {"k": "start", "host": "a"}),
    (50, {"k": "t", "host": "we\x1fird", "user": {"id": 7}}),  # the separator of a key's parts, in a value
    (60, {"k": "t", "host": "b", "user": "u2"}),
]
NEXT_EVENTS: list[tuple[float, dict[str, Any]]] = [
    (100, {"k": "t", "host": "a", "user": "u3"}),
    (110, {"k": "t", "host": "b", "user": "u3"}),
    (120, {"k": "t", "host": "c"}),
    (130, {"k": "done", "host": "b"}),
    (140, {"k": "t", "host": "we\x1fird", "user": {"id": 7}}),
    (3000, {"k": "done", "host": "a"}),
    (20000, {"k": "t", "host": "a", "user": "u1"}),
]
OLD_T0 = 1_700_000_000.0


def _outcomes(engine: Engine, events: list[tuple[float, dict[str, Any]]]) -> list[tuple[Any, ...]]:
    """What the events cause, in order: ("fire", rules, seconds from OLD_T0, host) or ("close", aliases, seconds)."""
    out: list[tuple[Any, ...]] = []
    for at, event in events:
        firing = engine.evaluate({**event, "t": OLD_T0 + at}, ARRIVAL)
        for item in [*engine.out, *([firing] if firing is not None else [])]:
            if isinstance(item, Closing):
                out.append(("close", item.aliases, item.time - OLD_T0))
            else:
                out.append(("fire", tuple(r.name for r in item.rules), item.time - OLD_T0, item.event.get("host")))
        engine.out.clear()
    return out


def _without_expected(tables: dict[str, Any]) -> dict[str, Any]:
    """`tables` with the absence groups' EXPECTED marks left out."""
    out = copy.deepcopy(tables)
    for groups in out.get(ABSENCE, {}).values():
        for value in groups.values():
            value.pop(EXPECTED, None)
    return out


def test_a_database_written_while_group_keys_were_tuples_loads_and_carries_on(tmp_path: Path) -> None:
    """State saved by the rulesd that kept a group key as a tuple of its parts (every kind, one
    and two group_by fields, none, a missing field, a value holding the parts' separator) is
    read back as it was: the engine carries on exactly as one that never stopped, and writes
    the same rows again (the same group keys, so an update replaces the old row), besides
    those that note its sequences' steps and how its throttled rules make their groups."""
    path = tmp_path / "state.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript((Path(__file__).parent / "data" / "engine-state-before-string-keys.sql").read_text())
        old_rows = sorted(db.execute("SELECT kind, rule, grp, data FROM engine_groups"))
    ruleset = ruleset_from_yaml(OLD_RULES)
    saved = store(tmp_path).load_engine_state()
    assert saved is not None
    restored = Engine(ruleset, EngineState.from_json(saved), time_field="t")
    rows = sorted(restored.state.delta().upserts)
    # How each throttled rule makes its groups is noted (an edit that keeps them keeps its throttles).
    throttled = [row for row in rows if row[2] == '["throttled"]']
    assert [("rule", "first", '["throttled"]', '{"kind":"Threshold","group_by":["host"]}')] == throttled
    rows = [row for row in rows if row not in throttled]
    # The steps of its sequences are noted too (what an edit keeps of their groups is told by
    # them), and what its new_value rule learns beside its learning's start (so that an edit
    # that keeps it keeps the values known); every other row is written byte for byte again.
    assert [("rule", "twice"), ("rule", "unfinished")] == [row[:2] for row in rows if '"steps"' in row[3]]
    noted = {row[:3]: row for row in rows if '"learnt"' in row[3]}
    assert [("rule", "newuser", "[]")] == list(noted)
    unmarked = [(*row[:3], re.sub(r',"learnt":"[0-9a-f]+"', "", row[3])) for row in noted.values()]
    assert old_rows == sorted([row for row in rows if '"steps"' not in row[3] and row[:3] not in noted] + unmarked)

    never_stopped = Engine(ruleset, time_field="t")
    _outcomes(never_stopped, OLD_EVENTS)
    expected = _outcomes(never_stopped, NEXT_EVENTS)
    carried_on = _outcomes(restored, NEXT_EVENTS)
    # The database predates the mark of an expected group no event came for (`rulesd state`
    # shows such a group of an older database as seen, as it did): alike but for that mark.
    assert _without_expected(never_stopped.state.tables) == restored.state.tables
    # One difference, of order alone: the database was written before a throttled firing counted
    # for resolve, so first's open group of b holds its sent firing's time (10), not 60; its
    # timer, re-armed at other moments, comes up before quiet's of b, both due at 7310.
    b_close = ("close", ('rulesd: first, newuser: {"host":"b"}',), 7310.0)
    assert expected.index(b_close) == carried_on.index(b_close) + 1
    carried_on.remove(b_close)
    carried_on.insert(expected.index(b_close), b_close)
    assert expected == carried_on
    assert [
        ("fire", ("newuser",), 100.0, "a"),
        ("fire", ("newuser", "thr", "users"), 110.0, "b"),  # thr: the 4th time; users: the 3rd user
        ("fire", ("all", "pair"), 120.0, "c"),  # pair: c with user missing, twice
        ("fire", ("twice",), 130.0, "b"),
        ("fire", ("pair",), 140.0, "we\x1fird"),
        ("fire", ("unfinished",), 1840.0, "a"),  # the timer saved with its sequence
        ("fire", ("twice",), 3000.0, "a"),
        ("fire", ("quiet",), 7200.0, "z"),  # the expected group, watched since the first event
        # first's alerts close 2h after its last firing, the throttled ones of 100-140 counted
        ("fire", ("quiet",), 7300.0, "a"),
        ("close", ('rulesd: first, newuser: {"host":"a"}',), 7300.0),
        ("fire", ("quiet",), 7310.0, "b"),
        ("close", ('rulesd: first, newuser: {"host":"b"}',), 7310.0),
        ("fire", ("quiet",), 7320.0, "c"),
        ("close", ('rulesd: first: {"host":"c"}',), 7320.0),
        ("fire", ("quiet",), 7340.0, "we\x1fird"),
        ("close", ('rulesd: first, newuser: {"host":"we\\u001fird"}',), 7340.0),
        ("close", ('rulesd: quiet: {"host":"a"}',), 20000.0),
        ("fire", ("first",), 20000.0, "a"),  # its throttle ended
    ] == expected


# The deepest line the parser takes as an event (orjson reads 1,024 levels): its absence group
# keeps it one level further down.
DEEP_HEARTBEAT = b'{"event": "heartbeat", "host": "h", "v": ' + b"[" * 1023 + b"]" * 1023 + b"}"
DEEP_ABSENCE = "name: hb\nmatch: {event: heartbeat}\nabsence: {window: 60, group_by: [host]}\n"


def test_an_absence_that_keeps_an_event_nested_as_deep_as_events_go_is_read_back(tmp_path: Path) -> None:
    """A heartbeat nested 1,024 levels deep is an event, and its absence group keeps it: the
    saved state is read back and the absence fires for its host after the restart, with that
    event. orjson refused the group's value, one level deeper, and json's recursion gave out:
    the daemon stopped at every start."""
    ruleset = ruleset_from_yaml(DEEP_ABSENCE)
    engine = Engine(ruleset)
    assert [] == evaluate_lines([DEEP_HEARTBEAT], make_parser().fast, engine, ARRIVAL).invalid
    store(tmp_path).commit(positions={}, payloads=[], now=ARRIVAL, engine=engine.state.delta())
    restored = Engine(ruleset, EngineState.from_json(store(tmp_path).load_engine_state() or {}))
    firings = advance(restored, ARRIVAL + 61).firings
    assert [("hb", "h")] == [(f.lead.name, f.event["host"]) for _, f, _ in firings]
    assert compact_json(orjson.loads(DEEP_HEARTBEAT)) == compact_json(firings[0][1].event)  # (== recurses)


# A new_value rule whose group sees a value again, and a sequence whose absent step's page its
# throttle holds back: u1 was paged at 4600, and the wait started at 5000, due at 8600, waits
# on to 15400, when the throttle ends.
HELD_AND_ORDERED = (
    "rules:\n"
    "  - {name: n, match: {k: n}, new_value: {fields: [u], forget: 1d}}\n"
    "  - {name: s, sequence: {steps: [{match: {k: s1}}, {absent: {match: {k: s2}, for: 1h}}]}, throttle: 3h}\n"
)


def held_and_ordered(engine: Engine) -> None:
    for i, user in enumerate(["a", "b", "c", "a"]):
        engine.evaluate({"k": "n", "u": user}, 1000.0 + i)
    engine.evaluate({"k": "s1"}, 1000.0)
    engine.evaluate({"k": "s1"}, 5000.0)
    assert [4600.0] == [firing.time for _, firing, _ in advance(engine, 9000.0).firings]


def check_held_and_ordered(restored: Engine) -> None:
    """The values of `held_and_ordered` as last seen, and its held wait, which fires at 15400."""
    assert ['"b"', '"c"', '"a"'] == list(restored.state.tables["new_value"]["n"][""])
    assert [] == advance(restored, 15399.0).firings
    assert [("s", 15400.0)] == [(f.lead.name, f.time) for _, f, _ in advance(restored, 15400.0).firings]


def test_new_values_as_last_seen_and_a_held_absent_step_are_read_back(tmp_path: Path) -> None:
    """A new_value group's values are read back in the order last seen (a sweep reads only
    those that expire), and a sequence's wait that its throttle holds back waits on to the
    throttle's end after a restart, and fires then."""
    ruleset = ruleset_from_yaml(HELD_AND_ORDERED)
    engine = Engine(ruleset)
    held_and_ordered(engine)
    store(tmp_path).commit(positions={}, payloads=[], now=ARRIVAL, engine=engine.state.delta())
    check_held_and_ordered(Engine(ruleset, EngineState.from_json(store(tmp_path).load_engine_state() or {})))


def test_engine_states_compare_by_their_groups_and_fingerprints_alone() -> None:
    """Two states are equal when they hold the same groups and fingerprints, whatever their
    clocks and what each has yet to save; a state is no key (it changes); each new state has
    tables of its own; and it shows every part."""
    one, two = EngineState(), EngineState()
    assert one == two and one.tables is not two.tables and one.touched is not two.touched
    two.clock, two.dirty = 5.0, True
    two.touch("windows", "r", ("h",))
    assert one == two
    assert EngineState(fingerprints={"r": "f"}) != one
    assert EngineState(tables={"windows": {"r": {}}}) != one
    assert one != ("not", "a", "state")
    with pytest.raises(TypeError):
        hash(one)
    expected = "EngineState(tables={}, fingerprints={}, clock=-inf, dirty=False, touched=set(), rekeyed=False)"
    assert expected == repr(one)
