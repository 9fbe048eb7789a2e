"""Committing batches: a batch that cannot be written (a full disk) is kept, tried again every
second exactly as it was, and counted once; the problem is reported once and cleared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rulesd.daemon.committer import STATE_RETRY, Committer, Pending
from rulesd.state import SqliteState, StateUnavailable
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
