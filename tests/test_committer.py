"""Committing batches: a batch that cannot be written (a full disk) is kept, tried again every
second exactly as it was, and counted once; the problem is reported once and cleared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rulesd.daemon.committer import STATE_RETRY, Committer, Pending
from rulesd.state import CLOSE, Request, SqliteState, StateUnavailable
from rulesd.stats import Stats
from tests.fake_clock import FakeClock


class FullDisk(SqliteState):
    """A real store whose commits fail like a full disk `failures` times."""

    def __init__(self, path: str, failures: int) -> None:
        super().__init__(path)
        self.failures = failures
        self.tried: list[Pending] = []

    def commit(self, **batch: Any) -> int:
        self.tried.append(Pending(**batch))
        if self.failures:
            self.failures -= 1
            raise StateUnavailable("state directory full: /s: database or disk is full; free space there")
        return super().commit(**batch)


def test_a_batch_that_cannot_be_written_is_kept_and_tried_again_as_it_was(tmp_path: Path) -> None:
    """Two failures, then space: the same batch is committed, retries wait STATE_RETRY seconds,
    the alerts are counted once, and the problem shows in the stats until it is over."""
    store, stats, clock = FullDisk(str(tmp_path / "s.db"), failures=2), Stats(), FakeClock()
    changes: list[str | None] = []
    queued: list[int] = []
    committer = Committer(
        store,
        stats,
        on_change=lambda: changes.append(stats.state_problem),
        on_queued=lambda: queued.append(1),
        clock=clock,
    )
    batch = Pending(positions={"/log": {"offset": 10}}, payloads=[{"message": "m"}], now=1.0, engine=None)
    assert committer.commit(batch) is False
    assert batch is committer.pending
    assert stats.state_problem is not None and stats.state_problem.startswith("state directory full")
    assert committer.retry() is False  # not yet due: nothing tried
    assert 1 == len(store.tried)
    clock.advance(STATE_RETRY)
    assert committer.retry() is False
    clock.advance(STATE_RETRY)
    assert committer.retry() is True
    assert [batch] * 3 == store.tried
    assert (None, None, 1, [1]) == (committer.pending, stats.state_problem, stats.alerts_queued, queued)
    assert 2 == len(changes)
    assert changes[0] is not None and changes[1] is None
    assert ({"/log": {"offset": 10}}, 1) == (store.load_positions(), store.depth()[0])


def test_closes_are_counted_apart_from_the_alerts_created(tmp_path: Path) -> None:
    """A close is queued as a request of its own but creates no alert: rulesd_alerts_queued
    counts the alerts, rulesd_closes_queued the closes (the first counted both)."""
    store, stats = SqliteState(str(tmp_path / "s.db")), Stats()
    committer = Committer(store, stats, on_change=lambda: None, on_queued=lambda: None, clock=FakeClock())
    close = Request({"source": "rulesd"}, action=CLOSE, target="rulesd: r")
    batch = Pending(positions={}, payloads=[{"message": "m"}, close, {"message": "n"}], now=1.0, engine=None)
    assert committer.commit(batch) is True
    assert (2, 1, 3) == (stats.alerts_queued, stats.closes_queued, store.depth()[0])
