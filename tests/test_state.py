"""Tests for rulesd.state: the SQLite store of positions, outbox and engine state."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from rulesd.engine import Engine, EngineState, StateDelta
from rulesd.state import SqliteState, StateError
from rulesd.state.sqlite import ATTEMPTS_KEPT
from tests.ruletools import ruleset_from_yaml


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
    first save writes them as rows."""
    rules = ruleset_from_yaml("name: t\nmatch: {level: error}\nthrottle: 600\n")
    old = Engine(rules)
    old.evaluate({"level": "error"}, 1_700_000_000.0)
    s = store(tmp_path)
    with s._lock:
        s._conn().execute("INSERT INTO engine_state (id, data) VALUES (1, ?)", (json.dumps(old.state.to_json()),))
    restored = EngineState.from_json(store(tmp_path).load_engine_state() or {})
    assert old.state.to_json() == restored.to_json()
    engine = Engine(rules, restored)
    assert engine.evaluate({"level": "error"}, 1_700_000_060.0) is None  # still throttled
    s.commit(positions={}, payloads=[], now=0.0, engine=engine.state.delta())
    assert old.state.to_json() == EngineState.from_json(store(tmp_path).load_engine_state() or {}).to_json()


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
    engine.evaluate({"a": 1, "t": 1000.0}, 0.0)
    engine.evaluate({"a": 1, "t": 1010.0}, 0.0)
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
