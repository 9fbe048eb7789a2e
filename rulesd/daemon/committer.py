"""Committing each evaluated batch, and waiting out a state that cannot be written.

A batch's source positions, the alerts its events caused and the engine's changes go into one
transaction, so a crash either keeps them all or none. When the state cannot be written (the
disk under the state directory is full: `StateUnavailable`, whatever the backend), the batch is
kept as it is and committed again every `STATE_RETRY` seconds, and the daemon reads nothing
meanwhile: the positions saved never move past lines whose alerts are not queued, and the
engine's changes are saved in order. Nothing is lost, and reading resumes by itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from rulesd.engine import StateDelta
from rulesd.state import CLOSE, Request, StateBackend, StateUnavailable
from rulesd.stats import Stats

log = logging.getLogger("rulesd")
STATE_RETRY = 1.0  # seconds between attempts to commit a batch while the state cannot be written
STATE_REMIND = 60.0  # seconds between log lines while it still cannot


class Pending(msgspec.Struct, frozen=True):
    """A batch evaluated but not yet committed: exactly what `StateBackend.commit` is given."""

    positions: dict[str, dict[str, Any]]
    payloads: list[dict[str, Any] | Request]
    now: float
    engine: StateDelta | None
    clock_wall: float | None = None  # the wall time the engine's clock runs on from (None: `now`)


class Committer:
    """Commits batches into `store`; says in `stats.state_problem` (and calls `on_change`) when
    the state cannot be written and when it can again; `on_queued` hears of queued alerts."""

    def __init__(
        self,
        store: StateBackend,
        stats: Stats,
        *,
        on_change: Callable[[], None],
        on_queued: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store, self._stats = store, stats
        self._on_change, self._on_queued = on_change, on_queued
        self._clock = clock
        self.pending: Pending | None = None  # a batch evaluated but not yet committed
        self._since = self._tried = self._reminded = 0.0

    def commit(self, batch: Pending) -> bool:
        """Commit `batch`; True once written, False when it is kept to be tried again (`retry`)."""
        self.pending = batch
        self._tried = self._clock()
        try:
            self._store.commit(
                positions=batch.positions,
                payloads=batch.payloads,
                now=batch.now,
                engine=batch.engine,
                clock_wall=batch.clock_wall,
            )
        except StateUnavailable as exc:
            self._unavailable(str(exc))
            return False
        self.pending = None
        if self._stats.state_problem is not None:
            self._recovered()
        closes = sum(1 for p in batch.payloads if type(p) is Request and p.action == CLOSE)
        self._stats.alerts_queued += len(batch.payloads) - closes
        self._stats.closes_queued += closes
        if batch.payloads:
            self._on_queued()
        return True

    def retry(self) -> bool:
        """Commit the kept batch again if STATE_RETRY seconds have passed; True once written."""
        if self.pending is None:
            return True
        if self._clock() - self._tried < STATE_RETRY:
            return False
        return self.commit(self.pending)

    def _unavailable(self, problem: str) -> None:
        """Say once (and then every STATE_REMIND seconds) that reading waits for the state."""
        now = self._clock()
        first = self._stats.state_problem is None
        self._stats.state_problem = problem
        if first:
            self._since = self._reminded = now
            log.error("%s; reading paused, nothing is lost: retrying every %.0fs", problem, STATE_RETRY)
            self._on_change()
        elif now - self._reminded >= STATE_REMIND:
            self._reminded = now
            log.error("%s; reading paused for %.0fs, still retrying", problem, now - self._since)

    def _recovered(self) -> None:
        log.info("state writable again after %.0fs; reading resumes", self._clock() - self._since)
        self._stats.state_problem = None
        self._on_change()
