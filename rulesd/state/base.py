"""What the daemon asks of its durable state, whatever keeps it (SQLite on one host; a shared
store when several instances share their state).

One promise holds for every backend: `commit` writes a batch's source positions, the alerts
its events caused and the engine's state changes atomically, so a crash at any moment either
keeps all of them or none: no alert is lost, and no event whose alert was queued is evaluated
again. The sender then drains the outbox in order through the `Outbox` half.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import msgspec
import orjson

from rulesd.engine import StateDelta
from rulesd.errors import RulesdError

PENDING, DEAD = "pending", "dead"
CREATE, CLOSE = "create", "close"  # what an outbox entry asks of OpsGenie
# Why a delivered close stays among the dead letters: the create of its alert is one (it was
# refused, or expired), and `rulesd outbox retry-dead` would send that create alone, opening
# an alert nothing closes any more; kept after it, the close is requeued with it, in order.
KEPT_CLOSE = "delivered, and kept: the alert it closes is dead-lettered; retry-dead sends this close again after it"


class Request(msgspec.Struct, frozen=True):
    """A request to queue: create an alert (`payload` is its body) or close one (`target` is
    its alias, `payload` the close request's body). A plain dict queued is a create."""

    payload: dict[str, Any]
    action: str = CREATE
    target: str | None = None


class StateError(RulesdError):
    """The durable state cannot be used; the message names the file or service and what to do."""


class StateUnavailable(StateError):
    """Writing the state is impossible for now (the state directory is full; a shared Redis is
    down, restarting or failing over): nothing of the
    failed write was kept, and the same write can be tried again later. The daemon stops
    reading until it succeeds, so nothing is lost."""


class StateAuthFailed(StateUnavailable):
    """The shared Redis refused this instance's credentials (WRONGPASS, NOAUTH) or a command
    or key to its ACL user (NOPERM). At start a configuration error: a restart cannot fix it.
    While running (a password rotated under the daemon) it is waited out like an outage, as
    the credentials may be put right (or rotated back) without a restart."""


class OutboxAlert(msgspec.Struct, frozen=True):
    """One queued alert as the sender sees it."""

    id: int
    created: float
    payload: dict[str, Any]
    status: str
    attempts: int
    next_attempt: float
    last_error: str | None
    response: str | None
    action: str = CREATE
    target: str | None = None  # the alias a close is for
    # The payload's JSON as queued (every backend queues `orjson.dumps(payload)`); None where
    # the reader kept no text of it.
    body: bytes | None = None

    def encoded(self) -> bytes:
        """The payload's JSON, to send: the queued text as it is, without a parse and a dump per
        alert (the sender's, ~2 µs); encoded here only where the reader kept none."""
        return self.body if self.body is not None else orjson.dumps(self.payload)

    def headline(self) -> str:
        """What names it in a log line or a listing: its message, or `close <alias>` for a close
        (whose payload has no message)."""
        if self.action == CLOSE:
            return f"close {self.target}"
        return str(self.payload.get("message", ""))


class Attempt(msgspec.Struct, frozen=True):
    """One failed delivery attempt of an alert: when, what came of it (`retry`, `paused`,
    `dead`, `expired`), and the error."""

    at: float
    result: str
    error: str


class Outbox(Protocol):
    """The queue of alerts to deliver, oldest first, as the sender and `rulesd outbox` use it."""

    def head(self, *, take: bool = True) -> OutboxAlert | None:
        """The oldest pending alert: the sender delivers strictly in order. Where processes
        share the outbox, only the one that holds it sees it; `take`: hold it (or go on holding
        it), else only look, so that a sender with nothing to try for a while lets it go."""
        ...

    def owns(self, alert_id: int) -> bool:
        """Asked right before a send: may this process still send the alert? (Where several
        processes share the outbox, one that was paused may have lost it to another.)"""
        ...

    def mark_sent(self, alert_id: int) -> None:
        """Delivered: the alert leaves the outbox; but a close whose alias has a create queued
        before it among the dead letters becomes one itself, with the reason KEPT_CLOSE."""
        ...

    def reschedule(
        self,
        alert_id: int,
        next_attempt: float,
        error: str,
        *,
        count: bool = True,
        at: float | None = None,
        result: str = "retry",
    ) -> None:
        """A failed attempt (counted unless `count` is false): try again at `next_attempt`;
        recorded in the alert's attempts as `result` if made `at` a time."""
        ...

    def dead_letter(
        self, alert_id: int, error: str, response: str | None = None, *, at: float | None = None, result: str = "dead"
    ) -> None:
        """Give up on an alert (`result`: dead or expired); `retry_dead` can requeue it."""
        ...

    def attempts(self, alert_id: int) -> list[Attempt]:
        """The recorded failed attempts of an alert still in the outbox, oldest first."""
        ...

    def alert(self, alert_id: int) -> OutboxAlert | None:
        """One alert of the outbox by id, if it is still there."""
        ...

    def set_paused(self, reason: str | None) -> None:
        """Record that the sender is paused (a refused key) and why, or, with None, that it is not,
        so that another process (`rulesd outbox list`) can tell paused alerts from pending ones."""
        ...

    def paused(self) -> str | None:
        """Why the sender is paused, as last recorded; None when it is not."""
        ...

    def retry_dead(self, now: float) -> int:
        """Requeue every dead-lettered alert as new; how many."""
        ...

    def alerts(self, status: str | None = None) -> list[OutboxAlert]:
        """Queued alerts in order, optionally only those with `status`."""
        ...

    def depth(self, *, last_known: bool = True) -> tuple[int, float | None]:
        """Pending alerts and the creation time of the oldest. A store that can be away (Redis)
        answers the last known meanwhile, or, without `last_known`, raises StateUnavailable."""
        ...

    def relax_durability(self) -> None:
        """Called by the sender's thread once: its updates may be less durable than queuing
        (losing one only means an alert is sent again, which OpsGenie folds by alias)."""
        ...

    def close(self) -> None:
        """Release what the calling thread holds."""
        ...


class StateBackend(Outbox, Protocol):
    """The daemon's durable state: positions, engine state and the outbox."""

    def load_positions(self) -> dict[str, dict[str, Any]]:
        """Saved source positions, keyed as the sources saved them."""
        ...

    def load_engine_state(self) -> dict[str, Any] | None:
        """The saved engine state (in `EngineState.to_json` form), if any, with the engine's
        clock as last saved (`clock`, event time) and the wall time it runs on from (`clock_saved`) when
        one was. Only reads: `rulesd state` asks it beside a running daemon."""
        ...

    def commit(
        self,
        *,
        positions: Mapping[str, Mapping[str, Any]],
        payloads: Iterable[dict[str, Any] | Request],
        now: float,
        engine: StateDelta | None = None,
        clock_wall: float | None = None,
    ) -> int:
        """Queue `payloads` (alert bodies, or `Request`s), save `positions` and the engine's
        changes, atomically; how many were queued (`now` is their creation time). The engine's
        clock is saved with the wall time it runs on from (`clock_wall`, default `now`).
        StateUnavailable: nothing was written, and the same call may be made again."""
        ...
