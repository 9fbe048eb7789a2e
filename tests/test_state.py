"""Tests for rulesd.state: the SQLite store of positions, outbox and engine state."""

from __future__ import annotations

from pathlib import Path

import pytest

from rulesd.state import StateStore


def store(tmp_path: Path) -> StateStore:
    return StateStore(str(tmp_path / "state.sqlite"))


def test_commit_queues_alerts_and_saves_positions_together(tmp_path: Path) -> None:
    """One commit: alerts in order, positions and engine state, all readable after reopening."""
    s = store(tmp_path)
    s.commit(positions={"/a": {"offset": 10}}, payloads=[{"message": "1"}, {"message": "2"}], now=100.0,
             engine_state={"windows": {}})
    reopened = store(tmp_path)
    assert {"/a": {"offset": 10}} == reopened.load_positions()
    assert {"windows": {}} == reopened.load_engine_state()
    assert ["1", "2"] == [a.payload["message"] for a in reopened.alerts()]
    assert (2, 100.0) == reopened.depth()


def test_a_failed_commit_changes_nothing(tmp_path: Path) -> None:
    """If the transaction fails half-way, neither the alerts nor the position are kept."""
    s = store(tmp_path)
    s.commit(positions={"/a": {"offset": 1}}, payloads=[], now=1.0)
    with pytest.raises(TypeError):
        s.commit(positions={"/a": {"offset": 2}}, payloads=[{"message": "x"}], now=2.0,
                 engine_state={"bad": object()})
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
        again.id, again.attempts, again.next_attempt, again.last_error)
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
    s = StateStore(":memory:")
    s.commit(positions={}, payloads=[{"n": 1}], now=1.0)
    assert (1, 1.0) == s.depth()
