"""The outbox sender: order, backoff, pausing, dead letters, expiry, restarts, shutdown."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rulesd.alerting.api import OutputClosed, PausingAlertError, PermanentAlertError, RetryableAlertError
from rulesd.alerting.opsgenie import OpsGenieClient
from rulesd.sender import IDLE_DELAY, RETRY_AFTER_MAX, Sender, backoff, retry_delay
from rulesd.state import CLOSE, DEAD, PENDING, OutboxAlert, Request, SqliteState, StateUnavailable
from tests.fake_clock import T0, FakeClock

try:  # OpsGenie's own schema, when the helper is present; these tests do not need it
    from tests.opsgenie_schema import create_alert_validator
except ImportError:
    create_alert_validator = None  # type: ignore[assignment]

KEY = "3f6e1c2a-9b7d-4e8f-a1b2-c3d4e5f60718"


# -- fakes -------------------------------------------------------------------------------------


class FakeTransport:
    """Answers from a script: each call takes the next entry (None = accepted, else raised).

    With the script used up every call succeeds. `attempts` records every payload tried,
    `sent` those accepted.
    """

    def __init__(self, *script: Exception | None, on_send: Callable[[], None] | None = None) -> None:
        self.script = list(script)
        self.attempts: list[str] = []
        self.sent: list[str] = []
        self.on_send = on_send

    def create_alert(self, payload: dict[str, Any] | bytes) -> None:
        # The sender gives a create's JSON as queued (bytes), a close's body as a dict.
        message = (json.loads(payload) if isinstance(payload, bytes) else payload)["message"]
        self.attempts.append(message)
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        self.sent.append(message)
        if self.on_send is not None:
            self.on_send()

    def close_alert(self, alias: str, body: dict[str, Any]) -> None:
        """A close is recorded as `close <alias>`, with the same script."""
        self.create_alert({"message": f"close {alias}", **body})


@dataclass
class Results:
    """A list-backed `on_result` hook."""

    seen: list[tuple[str, str, str]] = field(default_factory=list)

    def __call__(self, kind: str, alert: OutboxAlert, detail: str) -> None:
        self.seen.append((kind, alert.payload["message"], detail))

    @property
    def kinds(self) -> list[tuple[str, str]]:
        return [(kind, message) for kind, message, _ in self.seen]


def retryable(status: int | None = 503, retry_after: float | None = None) -> RetryableAlertError:
    return RetryableAlertError(f"HTTP {status}", status, retry_after)


def queue(store: SqliteState, *messages: str, now: float = T0) -> None:
    store.commit(positions={}, payloads=[{"message": m} for m in messages], now=now)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "state.db")


@pytest.fixture
def store(db: str) -> Iterator[SqliteState]:
    s = SqliteState(db)
    yield s
    s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_sender(
    store: SqliteState, transport: Any, clock: FakeClock, results: Results | None = None, **kwargs: Any
) -> Sender:
    kwargs.setdefault("random", lambda: 0.5)
    return Sender(store, transport, clock=clock, on_result=results, sleep=clock.sleep, **kwargs)


def pending(store: SqliteState) -> list[str]:
    return [a.payload["message"] for a in store.alerts(PENDING)]


def run_until_empty(sender: Sender, store: SqliteState, clock: FakeClock, limit: int = 100) -> None:
    """Step and let the fake time pass until the outbox is empty."""
    for _ in range(limit):
        delay = sender.step()
        if store.depth()[0] == 0:
            return
        clock.advance(delay)
    raise AssertionError("the outbox never emptied")


# -- order -------------------------------------------------------------------------------------


def test_delivers_everything_due_in_order(store: SqliteState, clock: FakeClock) -> None:
    """One step sends every due alert, oldest first, and reports each."""
    queue(store, "a", "b")
    queue(store, "c")
    transport, results = FakeTransport(), Results()
    sender = make_sender(store, transport, clock, results)

    assert IDLE_DELAY == sender.step()

    assert ["a", "b", "c"] == transport.sent
    assert (0, None) == store.depth()
    assert [("sent", "a"), ("sent", "b"), ("sent", "c")] == results.kinds
    assert (T0, None, None) == (sender.last_success, sender.last_error, sender.paused_reason)


def test_a_step_ends_between_alerts_once_stopped(store: SqliteState, clock: FakeClock) -> None:
    """With `stop` set after the first delivery, the step returns 0 and the rest stay queued."""
    queue(store, "a", "b")
    stop = threading.Event()
    transport = FakeTransport(on_send=stop.set)
    sender = make_sender(store, transport, clock)

    assert 0.0 == sender.step(stop)

    assert (["a"], ["b"]) == (transport.sent, pending(store))


def test_a_waiting_head_holds_back_later_alerts(store: SqliteState, clock: FakeClock) -> None:
    """Strict order: while the oldest alert waits for its retry, nothing behind it is sent."""
    queue(store, "a")
    transport = FakeTransport(retryable())
    sender = make_sender(store, transport, clock)
    delay = sender.step()
    queue(store, "b", now=clock.now + 0.1)

    clock.advance(delay / 2)
    assert delay / 2 == pytest.approx(sender.step())
    assert (["a"], []) == (transport.attempts, transport.sent)

    clock.advance(delay / 2)
    sender.step()
    assert ["a", "b"] == transport.sent


def test_outage_then_recovery_delivers_everything_in_order(store: SqliteState, clock: FakeClock) -> None:
    """Five failed attempts, then the endpoint is back: all alerts arrive, in queue order."""
    queue(store, "a", "b", "c")
    transport, results = FakeTransport(*[retryable()] * 5), Results()
    sender = make_sender(store, transport, clock, results)

    run_until_empty(sender, store, clock)

    assert ["a"] * 6 + ["b", "c"] == transport.attempts
    assert ["a", "b", "c"] == transport.sent
    assert [("retry", "a")] * 5 + [("sent", "a"), ("sent", "b"), ("sent", "c")] == results.kinds
    assert "delivered after 5 failed attempts" == results.seen[5][2]
    assert sender.last_error is None


def test_delivery_is_failing_after_three_failed_attempts_in_a_row_until_one_succeeds(
    store: SqliteState, clock: FakeClock
) -> None:
    """Two failures are a blip (not said to be failing); the third in a row is an outage, which
    `failing()` says with the count and the last error, across alerts; a delivery clears it and
    starts the count again."""
    queue(store, "a", "b")
    transport = FakeTransport(retryable(502), retryable(503), None, retryable(), retryable(), retryable(504))
    sender = make_sender(store, transport, clock)
    seen = []
    for _ in range(7):
        clock.advance(sender.step())
        seen.append((sender.failures, sender.failing()))
    # The third step delivers "a" (the count starts again), then "b" fails.
    assert [(1, None), (2, None), (1, None), (2, None), (3, (3, "HTTP 504")), (0, None), (0, None)] == seen
    assert ["a", "b"] == transport.sent


def failing_three_times(store: SqliteState, clock: FakeClock, then: Exception | None, **kwargs: Any) -> Sender:
    """A sender whose head alert "a" has failed three attempts in a row (so delivery is said to
    be failing); the transport answers the next attempt with `then`."""
    transport = FakeTransport(retryable(), retryable(), retryable(), then)
    sender = make_sender(store, transport, clock, **kwargs)
    for _ in range(3):
        clock.advance(sender.step())
    assert (3, "HTTP 503") == sender.failing()
    return sender


def test_a_refusal_that_dead_letters_the_failing_alert_ends_the_failing(store: SqliteState, clock: FakeClock) -> None:
    """OpsGenie answering at all (here a 422 that dead-letters the alert) proves the way to it
    works: delivery is no longer said to be failing, though nothing was delivered."""
    queue(store, "a")
    sender = failing_three_times(store, clock, PermanentAlertError("HTTP 422: rejected", 422, "{}"))

    assert IDLE_DELAY == sender.step()

    assert ["a"] == [a.payload["message"] for a in store.alerts(DEAD)]
    assert (0, None) == (sender.failures, sender.failing())


def test_an_expiry_that_empties_the_outbox_ends_the_failing(store: SqliteState, clock: FakeClock) -> None:
    """The failing alert expires (max_age) and nothing else waits: nothing is failing to deliver,
    so delivery is not said to be failing until new alerts fail three times in a row."""
    queue(store, "a")
    sender = failing_three_times(store, clock, None, max_age=20.0)
    clock.advance(20.0)

    assert IDLE_DELAY == sender.step()

    assert ["a"] == [a.payload["message"] for a in store.alerts(DEAD)]
    assert (0, None) == (sender.failures, sender.failing())


def test_an_expiry_with_alerts_still_waiting_keeps_the_failing(store: SqliteState, clock: FakeClock) -> None:
    """An expiry after network errors proves nothing about the way to OpsGenie: with another
    alert behind it failing too, delivery is still said to be failing, the count going on."""
    queue(store, "a")
    queue(store, "b", now=T0 + 10)
    sender = failing_three_times(store, clock, retryable(502), max_age=20.0)
    clock.advance(20.0)

    sender.step()

    assert ["a"] == [a.payload["message"] for a in store.alerts(DEAD)]
    assert (4, "HTTP 502") == sender.failing()


# -- backoff -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "ceiling"),
    [(0, 1), (1, 2), (2, 4), (5, 32), (8, 256), (9, 300), (50, 300), (100_000, 300)],
)
def test_backoff_doubles_up_to_the_cap_with_equal_jitter(attempts: int, ceiling: float) -> None:
    """Half the capped exponential is fixed, the other half random."""

    def at(r: float) -> float:
        return backoff(attempts, initial=1.0, maximum=300.0, random=lambda: r)

    assert (ceiling / 2, ceiling * 0.75, ceiling) == (at(0.0), at(0.5), at(1.0))


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(30.0, 30.0), (0.0, 1.0), (10 * RETRY_AFTER_MAX, RETRY_AFTER_MAX), (None, 4.0)],
)
def test_retry_delay_prefers_the_servers_wish_within_bounds(retry_after: float | None, expected: float) -> None:
    """Retry-After wins over backoff; 0 cannot cause a hot loop, a huge value cannot stall."""
    assert expected == retry_delay(3, retry_after, initial=1.0, maximum=300.0, random=lambda: 0.0)


def test_backoff_grows_and_is_jittered_within_bounds(store: SqliteState, clock: FakeClock) -> None:
    """Through the sender: each wait lies in [ceiling/2, ceiling], ceilings double, attempts count."""
    queue(store, "a")
    draws = iter([0.0, 1.0, 0.3, 0.9, 0.1, 0.6, 0.5])
    sender = make_sender(store, FakeTransport(*[retryable()] * 7), clock, random=lambda: next(draws), max_backoff=40.0)

    delays = []
    for attempt in range(7):
        delay = sender.step()
        (alert,) = store.alerts(PENDING)
        assert (attempt + 1, clock.now + delay) == (alert.attempts, alert.next_attempt)
        delays.append(delay)
        clock.advance(delay)

    ceilings = [1, 2, 4, 8, 16, 32, 40]
    assert all(c / 2 <= d <= c for c, d in zip(ceilings, delays, strict=True)), delays
    assert [0.5, 2.0, 4 * 0.65, 8 * 0.95, 16 * 0.55, 32 * 0.8, 40 * 0.75] == pytest.approx(delays)


def test_429_retry_after_is_honoured(store: SqliteState, clock: FakeClock) -> None:
    """A 429 with a stated wait: not sooner, and then delivered."""
    queue(store, "a")
    transport = FakeTransport(retryable(429, retry_after=30.0))
    sender = make_sender(store, transport, clock)

    assert 30.0 == sender.step()
    (alert,) = store.alerts(PENDING)
    assert (1, T0 + 30.0, "HTTP 429") == (alert.attempts, alert.next_attempt, alert.last_error)

    clock.advance(29.0)
    assert 1.0 == sender.step()
    assert ["a"] == transport.attempts

    clock.advance(1.0)
    sender.step()
    assert ["a"] == transport.sent


def test_unexpected_transport_exception_is_retried(
    store: SqliteState, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the transport is logged and treated as retryable, never a crash; its traceback
    is logged once, not at every retry that fails alike (it was, an error a minute all day)."""
    queue(store, "a")
    transport = FakeTransport(*[RuntimeError("boom")] * 3)
    sender = make_sender(store, transport, clock)

    for attempt in (1, 2, 3):
        clock.advance(sender.step())
        (alert,) = store.alerts(PENDING)
        assert (attempt, "unexpected RuntimeError") == (alert.attempts, alert.last_error)
    sender.step()
    assert ["a"] == transport.sent
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert ["unexpected error sending alert 1"] == [r.getMessage() for r in errors]
    assert errors[0].exc_info is not None and "boom" in caplog.text


# -- dead letters, pausing, expiry -------------------------------------------------------------


def test_422_is_dead_lettered_and_later_alerts_still_flow(store: SqliteState, clock: FakeClock) -> None:
    """A rejected alert goes to the dead letters with the body; the queue goes on."""
    queue(store, "a", "b", "c")
    body = '{"message":"Request body is not processable"}'
    transport, results = FakeTransport(None, PermanentAlertError("HTTP 422: rejected", 422, body)), Results()
    sender = make_sender(store, transport, clock, results)

    assert IDLE_DELAY == sender.step()

    assert ["a", "c"] == transport.sent
    (dead,) = store.alerts(DEAD)
    assert ("b", "HTTP 422: rejected", body) == (dead.payload["message"], dead.last_error, dead.response)
    assert [("sent", "a"), ("dead", "b"), ("sent", "c")] == results.kinds


def test_retry_dead_requeues(store: SqliteState, clock: FakeClock) -> None:
    """`rulesd outbox retry-dead`: the requeued alert is delivered by the next step."""
    queue(store, "a")
    transport = FakeTransport(PermanentAlertError("HTTP 400", 400, "{}"))
    sender = make_sender(store, transport, clock)
    sender.step()
    assert [] == pending(store)

    clock.advance(3600)
    assert 1 == store.retry_dead(clock.now)
    sender.step()

    assert ["a"] == transport.sent
    assert [] == store.alerts()


def test_401_pauses_without_dead_lettering_and_resumes(store: SqliteState, clock: FakeClock) -> None:
    """A wrong key: nothing is dead-lettered or counted; delivery resumes once the key works."""
    queue(store, "a", "b")
    wrong_key = PausingAlertError("HTTP 401: OpsGenie rejected the API key", 401)
    transport, results = FakeTransport(wrong_key, wrong_key), Results()
    sender = make_sender(store, transport, clock, results, auth_retry=60.0)

    assert 60.0 == sender.step()
    assert "HTTP 401: OpsGenie rejected the API key" == sender.paused_reason
    clock.advance(30)
    assert 30.0 == sender.step()
    clock.advance(30)
    assert 60.0 == sender.step()

    assert [] == store.alerts(DEAD)
    assert [(0, "a"), (0, "b")] == [(a.attempts, a.payload["message"]) for a in store.alerts(PENDING)]
    assert ["a", "a"] == transport.attempts
    # Recorded for other processes (`rulesd outbox list`), with each pause in the alert's history.
    assert "HTTP 401: OpsGenie rejected the API key" == store.paused()
    head = store.head()
    assert head is not None
    assert [(T0, "paused"), (T0 + 60, "paused")] == [(x.at, x.result) for x in store.attempts(head.id)]

    clock.advance(60)
    sender.step()
    assert ["a", "b"] == transport.sent
    assert sender.paused_reason is None
    assert store.paused() is None
    assert [("paused", "a"), ("paused", "a"), ("sent", "a"), ("sent", "b")] == results.kinds


def test_resume_retries_a_paused_head_at_once(store: SqliteState, clock: FakeClock) -> None:
    """After a reload that may have fixed the key, the paused head is due again immediately."""
    queue(store, "a")
    wrong_key = PausingAlertError("HTTP 403: OpsGenie rejected the API key", 403)
    transport = FakeTransport(wrong_key)
    sender = make_sender(store, transport, clock, auth_retry=60.0)
    assert not sender.resume()  # not paused: nothing to do
    sender.step()

    assert sender.resume()
    assert IDLE_DELAY == sender.step()

    assert ["a"] == transport.sent
    assert sender.paused_reason is None


def test_a_restarted_sender_tries_the_head_a_pause_held_at_once(store: SqliteState, clock: FakeClock) -> None:
    """The pause is the refused key's: a sender started afresh (a restart, often to fix the key)
    tries the head the paused one held at once, not when that pause would have ended; a retry's
    backoff (its error not the pause's) is waited out by a new sender as before."""
    queue(store, "a")
    wrong_key = PausingAlertError("HTTP 401: OpsGenie rejected the API key", 401)
    make_sender(store, FakeTransport(wrong_key), clock, auth_retry=60.0).step()
    clock.advance(1)
    transport = FakeTransport(RetryableAlertError("HTTP 503: unavailable", 503))
    assert 0 < make_sender(store, transport, clock, initial_backoff=30.0).step()
    assert ["a"] == transport.attempts
    again = FakeTransport()
    assert 0 < make_sender(store, again, clock).step()
    assert ([], "HTTP 503: unavailable") == (again.attempts, store.alerts(PENDING)[0].last_error)


def test_a_new_key_with_nothing_queued_ends_the_pause(store: SqliteState, clock: FakeClock) -> None:
    """The alert a refused key paused expires (max_age): the key is still the refused one, so
    sending is still paused; once a new key is read, nothing refused it, so the pause ends (in
    the store too, for `rulesd outbox list`) and the next alert tries it."""
    queue(store, "a")
    wrong_key = PausingAlertError("HTTP 401: OpsGenie rejected the API key", 401)
    sender = make_sender(store, FakeTransport(wrong_key), clock, auth_retry=60.0, max_age=100.0)
    sender.step()
    clock.advance(100)
    assert IDLE_DELAY == sender.step()
    assert ["a"] == [a.payload["message"] for a in store.alerts(DEAD)]

    assert sender.resume()  # a reload that read the same key
    assert ("HTTP 401: OpsGenie rejected the API key",) * 2 == (sender.paused_reason, store.paused())
    assert sender.resume(key_changed=True)
    assert (None, None) == (sender.paused_reason, store.paused())
    assert not sender.resume(key_changed=True)


def test_expiry_after_max_age(store: SqliteState, clock: FakeClock) -> None:
    """An alert still undelivered after max_age is dead-lettered as expired, not sent late."""
    queue(store, "old")
    queue(store, "new", now=T0 + 50)
    transport, results = FakeTransport(*[retryable()] * 3), Results()
    sender = make_sender(store, transport, clock, results, max_age=80.0, initial_backoff=40.0, max_backoff=300.0)

    assert 30.0 == sender.step()  # backoff 40 * (0.5 + 0.5 * 0.5)
    clock.advance(30)
    # The next retry (60 s on) would come after the expiry at T0 + 80: wake for the expiry.
    assert 50.0 == sender.step()
    clock.advance(50)
    sender.step()

    (expired,) = store.alerts(DEAD)
    assert "old" == expired.payload["message"]
    assert expired.last_error is not None and expired.last_error.startswith("expired: undelivered after 80s")
    assert "last error: HTTP 503" in expired.last_error
    assert ["old", "old", "new"] == transport.attempts
    assert ("expired", "old") in results.kinds


def test_expired_alert_does_not_wait_for_its_next_attempt(store: SqliteState, clock: FakeClock) -> None:
    """An expired head is dropped at once, so it cannot hold back fresh alerts."""
    queue(store, "old")
    queue(store, "fresh", now=T0 + 1000)
    transport = FakeTransport(retryable(429, retry_after=3000.0))
    sender = make_sender(store, transport, clock, max_age=600.0)
    sender.step()

    clock.advance(1000)
    sender.step()

    assert ["fresh"] == transport.sent
    assert ["old"] == [a.payload["message"] for a in store.alerts(DEAD)]


# -- restarts and shutdown ---------------------------------------------------------------------


def test_restart_resumes_where_it_stopped(db: str, clock: FakeClock) -> None:
    """A new Sender over the same database continues the order and the backoff schedule."""
    first_store = SqliteState(db)
    queue(first_store, "a", "b", "c")
    first = FakeTransport(None, retryable())
    delay = make_sender(first_store, first, clock).step()
    first_store.close()
    assert (["a"], 0.75) == (first.sent, delay)

    second_store = SqliteState(db)
    second = FakeTransport(retryable())
    sender = make_sender(second_store, second, clock)
    clock.advance(0.5)
    assert 0.25 == sender.step()  # the saved next attempt still holds
    clock.advance(0.25)
    assert 1.5 == sender.step()  # the second failure of "b": backoff continues from 1 attempt
    clock.advance(1.5)
    sender.step()

    assert (["b", "b", "c"], ["b", "c"]) == (second.attempts, second.sent)
    second_store.close()


def test_drain_empties_the_outbox(store: SqliteState, clock: FakeClock) -> None:
    """Shutdown with a healthy endpoint: everything goes, through short retries if need be."""
    queue(store, "a", "b")
    transport = FakeTransport(retryable())
    sender = make_sender(store, transport, clock)

    assert sender.drain(deadline=T0 + 5)

    assert ["a", "b"] == transport.sent
    assert [0.75] == clock.sleeps


def test_drain_records_deliveries_without_a_sync_each(store: SqliteState, clock: FakeClock) -> None:
    """Drain runs on the thread that queued (its connection syncs every queuing commit to disk):
    from then on that connection records deliveries as the sender's own does, synchronous=NORMAL."""
    synchronous = "PRAGMA synchronous"
    queue(store, "a")
    assert 2 == store._conn().execute(synchronous).fetchone()[0]  # FULL: queuing is durable

    assert make_sender(store, FakeTransport(), clock).drain(deadline=T0 + 5)

    assert 1 == store._conn().execute(synchronous).fetchone()[0]  # NORMAL


def test_drain_respects_the_deadline(store: SqliteState, clock: FakeClock) -> None:
    """During an outage drain gives up in time and never sleeps past the deadline."""
    queue(store, "a")
    transport = FakeTransport(*[retryable()] * 100)
    sender = make_sender(store, transport, clock)

    assert not sender.drain(deadline=T0 + 10)

    assert clock.now <= T0 + 10
    assert [0.75, 1.5, 3.0] == clock.sleeps  # the next wait (6.0) would end after the deadline
    assert ["a"] == pending(store)


def test_drain_counts_the_time_a_slow_attempt_took(store: SqliteState, clock: FakeClock) -> None:
    """An attempt that times out late in the grace period leaves no time to sleep for another."""
    queue(store, "a")

    class SlowFailure:
        def create_alert(self, payload: dict[str, Any]) -> None:
            clock.advance(4.5)  # a read timeout
            raise retryable(None)

    assert not make_sender(store, SlowFailure(), clock).drain(deadline=T0 + 5)
    assert ([], T0 + 4.5) == (clock.sleeps, clock.now)


def test_drain_does_not_wait_for_an_attempt_after_the_deadline(store: SqliteState, clock: FakeClock) -> None:
    """A head due only after the deadline: drain returns False at once."""
    queue(store, "a")
    sender = make_sender(store, FakeTransport(retryable(429, retry_after=60.0)), clock)
    sender.step()

    assert not sender.drain(deadline=T0 + 5)
    assert ([], T0) == (clock.sleeps, clock.now)


def test_drain_of_an_empty_outbox() -> None:
    """Nothing queued: drained."""
    clock = FakeClock()
    sender = make_sender(SqliteState(":memory:"), FakeTransport(), clock)

    assert sender.drain(deadline=T0)  # even at the deadline


def set_after(event: threading.Event, count: int) -> Callable[[], None]:
    """An `on_send` hook that sets `event` at the `count`-th delivery."""
    calls = iter(range(1, count + 1))

    def hook() -> None:
        if next(calls, None) == count:
            event.set()

    return hook


# -- the thread --------------------------------------------------------------------------------


@contextmanager
def running(sender: Sender, *busy: Any) -> Iterator[tuple[threading.Event, threading.Thread]]:
    """`sender.run` in its own thread; yields its wake event and the thread, stops it on exit."""
    stop, wake = threading.Event(), threading.Event()
    thread = threading.Thread(target=sender.run, args=(stop, wake, *busy))
    thread.start()
    try:
        yield wake, thread
    finally:
        stop.set()
        wake.set()
        thread.join(10)


def test_run_delivers_in_its_own_thread_and_stops(store: SqliteState, clock: FakeClock) -> None:
    """run(): woken after queuing, delivers in order over its own connection, stops on request."""
    delivered = threading.Event()
    transport = FakeTransport(on_send=set_after(delivered, 3))
    sender = make_sender(store, transport, clock)
    with running(sender) as (wake, thread):
        queue(store, "a", "b", "c")
        wake.set()
        assert delivered.wait(10)

    assert not thread.is_alive()
    assert ["a", "b", "c"] == transport.sent


def test_run_delivers_inside_busy(store: SqliteState, clock: FakeClock) -> None:
    """Each pass of run() that delivers runs inside the `busy` context (the daemon's CPU sharing)."""
    inside, delivered = threading.Event(), threading.Event()
    seen: list[bool] = []

    @contextmanager
    def busy() -> Iterator[None]:
        inside.set()
        try:
            yield
        finally:
            inside.clear()

    def on_send() -> None:
        seen.append(inside.is_set())
        if len(seen) == 2:
            delivered.set()

    sender = make_sender(store, FakeTransport(on_send=on_send), clock)
    with running(sender, busy) as (wake, _):
        queue(store, "a", "b")
        wake.set()
        assert delivered.wait(10)

    assert [True, True] == seen
    assert not inside.is_set()


def test_run_survives_a_failing_step(store: SqliteState, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """An exception escaping a step (here the result hook) is logged and the loop goes on."""
    failed, delivered = threading.Event(), threading.Event()

    def on_result(kind: str, alert: OutboxAlert, detail: str) -> None:
        if not failed.is_set():
            failed.set()
            raise OSError("metrics exporter gone")

    transport = FakeTransport(on_send=set_after(delivered, 2))
    sender = Sender(store, transport, clock=clock, on_result=on_result)
    queue(store, "a", "b")
    with running(sender) as (wake, thread):
        assert failed.wait(10)
        wake.set()  # cut the pause after the failure short
        assert delivered.wait(10)

    assert not thread.is_alive()
    assert ["a", "b"] == transport.sent
    assert "sender step failed" in caplog.text


# -- through a real HTTP server ----------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as a local server received it."""

    path: str
    headers: dict[str, str]
    body: bytes


class LocalServer:
    """A loopback HTTP server in a thread that records requests and answers `reply(path)`."""

    def __init__(self, reply: Callable[[str], tuple[int, dict[str, str], bytes]]) -> None:
        self.seen: list[Seen] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.seen.append(Seen(self.path, dict(self.headers.items()), body))
                status, headers, reply_body = reply(self.path)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(reply_body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply_body)

            do_GET = do_POST  # a followed 303 would arrive as GET

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v2/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def servers() -> Iterator[Callable[..., LocalServer]]:
    started: list[LocalServer] = []

    def start(reply: Callable[[str], tuple[int, dict[str, str], bytes]]) -> LocalServer:
        started.append(LocalServer(reply))
        return started[-1]

    yield start
    for server in started:
        server.close()


def test_real_client_delivers_to_a_local_server(
    store: SqliteState, clock: FakeClock, servers: Callable[..., LocalServer]
) -> None:
    """Sender + OpsGenieClient over a real socket: exact bodies and headers, in order."""
    accepted = b'{"result":"Request will be processed","took":0.01,"requestId":"r"}'
    opsgenie = servers(lambda _path: (202, {"Content-Type": "application/json"}, accepted))
    payloads: list[dict[str, Any]] = [
        {
            "message": "Payments upstream failing on a",
            "alias": "rulesd: payments-upstream-errors: a",
            "details": {"Triggering Rules": json.dumps(["payments-upstream-errors"])},
            "responders": [{"type": "team", "name": "payments-oncall"}, {"type": "user", "username": "a@example.com"}],
            "tags": ["payments", "host:a"],
            "priority": "P1",
            "source": "rulesd",
        },
        {"message": "b", "priority": "P3", "source": "rulesd"},
    ]
    store.commit(positions={}, payloads=payloads, now=T0)
    client = OpsGenieClient(opsgenie.url, lambda: KEY, 5.0)
    make_sender(store, client, clock).step()

    received = [json.loads(s.body) for s in opsgenie.seen]
    assert payloads == received
    if create_alert_validator is not None:
        validator = create_alert_validator()
        for payload in received:
            validator.validate(payload)
    assert {f"GenieKey {KEY}"} == {s.headers["Authorization"] for s in opsgenie.seen}
    assert {"application/json"} == {s.headers["Content-Type"] for s in opsgenie.seen}
    assert (0, None) == store.depth()


def test_a_create_is_sent_as_the_json_text_queued(
    store: SqliteState, db: str, clock: FakeClock, servers: Callable[..., LocalServer]
) -> None:
    """The transport is given a create's JSON exactly as the outbox keeps it, and the client
    posts those bytes as they are: no parse and dump per alert on the sender's thread."""
    given: list[Any] = []

    class Recording(FakeTransport):
        def create_alert(self, payload: dict[str, Any] | bytes) -> None:
            given.append(payload)
            super().create_alert(payload)

    payload = {"message": "é \u2028 x", "details": {"n": "1"}, "priority": "P2", "count": 1.5}
    store.commit(positions={}, payloads=[payload, {"message": "b"}], now=T0)
    with sqlite3.connect(db) as conn:
        queued = [text.encode() for (text,) in conn.execute("SELECT payload FROM outbox ORDER BY id")]
    make_sender(store, Recording(), clock).step()
    assert queued == given

    accepted = b'{"result":"Request will be processed","took":0.01,"requestId":"r"}'
    opsgenie = servers(lambda _path: (202, {"Content-Type": "application/json"}, accepted))
    OpsGenieClient(opsgenie.url, lambda: KEY, 5.0).create_alert(queued[0])
    assert [queued[0]] == [seen.body for seen in opsgenie.seen]
    assert payload == json.loads(opsgenie.seen[0].body)


def test_a_payload_kept_as_a_blob_is_sent_as_it_is(store: SqliteState, db: str, clock: FakeClock) -> None:
    """A row whose payload is a blob (SQLite keeps what a hand-made insert gives it) is read and
    sent like the text rulesd writes."""
    queue(store, "a")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE outbox SET payload = CAST(payload AS BLOB)")
    transport = FakeTransport()
    make_sender(store, transport, clock).step()
    assert ["a"] == transport.sent
    assert (0, None) == store.depth()


def test_redirect_to_another_port_is_not_followed(
    store: SqliteState, clock: FakeClock, servers: Callable[..., LocalServer]
) -> None:
    """A 302 to another local server: not followed, that server never sees the key, nothing leaks."""
    thief = servers(lambda _path: (202, {}, b""))
    redirector = servers(lambda _path: (302, {"Location": f"{thief.url}?stolen={KEY}"}, f"moved {KEY}".encode()))
    queue(store, "a")
    results = Results()
    client = OpsGenieClient(redirector.url, lambda: KEY, 5.0)
    sender = make_sender(store, client, clock, results, auth_retry=60.0)
    assert 60.0 == sender.step()

    assert [] == thief.seen
    assert [f"GenieKey {KEY}"] == [s.headers["Authorization"] for s in redirector.seen]
    assert [("paused", "a")] == results.kinds
    (alert,) = store.alerts(PENDING)
    texts = [detail for _, _, detail in results.seen] + [sender.paused_reason or "", alert.last_error or ""]
    assert all("302" in text and KEY not in text for text in texts), texts
    assert thief.url.split("/v2")[0] in (sender.paused_reason or "")


def test_unreachable_local_server_is_retried(
    store: SqliteState, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Connection refused through the real client: retryable, key absent from logs and errors."""
    caplog.set_level(logging.DEBUG)
    queue(store, "a")
    results = Results()
    # A bound socket that never listens: connections to its port are refused, and no one
    # else can take the port meanwhile.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/v2/alerts"
        client = OpsGenieClient(url, lambda: KEY, 5.0)
        make_sender(store, client, clock, results).step()

    assert [("retry", "a")] == results.kinds
    assert "connection error" in results.seen[0][2]
    assert KEY not in results.seen[0][2] + caplog.text


# -- an unwritable state -------------------------------------------------------------------------


class FullDiskStore(SqliteState):
    """A real store whose `mark_sent` fails like a full disk while `full` is set."""

    full = True
    tries = 0

    def mark_sent(self, alert_id: int) -> None:
        self.tries += 1
        if self.full:
            raise StateUnavailable("state directory full: /var/lib/rulesd: database or disk is full")
        super().mark_sent(alert_id)


def test_a_delivery_that_cannot_be_recorded_is_never_sent_again(tmp_path: Path, clock: FakeClock) -> None:
    """OpsGenie accepted the alert but the disk is full: the sender waits, recording it first
    once space returns, and sends it only once; the `run` loop neither dies nor logs a traceback."""
    store = FullDiskStore(str(tmp_path / "state.db"))
    queue(store, "a", "b")
    transport = FakeTransport()
    sender = make_sender(store, transport, clock)
    stop, wake = threading.Event(), threading.Event()
    thread = threading.Thread(target=sender.run, args=(stop, wake))
    thread.start()
    try:
        assert wait_for(lambda: store.tries == 1)
        wake.set()
        assert wait_for(lambda: store.tries >= 2)  # recording "a" was tried again...
        assert ["a"] == transport.attempts  # ...and "a" was not sent again meanwhile
        store.full = False
        wake.set()
        assert wait_for(lambda: transport.sent == ["a", "b"])
    finally:
        stop.set()
        wake.set()
        thread.join(10)
    assert ["a", "b"] == transport.attempts
    assert (0, None) == store.depth()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_a_close_waits_for_the_create_before_it(store: SqliteState, clock: FakeClock) -> None:
    """Closes queue in the same outbox: a create that must be retried holds back the close of
    its alias behind it, so the close never overtakes it."""
    store.commit(
        positions={},
        payloads=[{"message": "a"}, Request({"source": "rulesd", "note": "resolved: r"}, CLOSE, "alias-a")],
        now=T0,
    )
    transport = FakeTransport(retryable())
    sender = make_sender(store, transport, clock)
    run_until_empty(sender, store, clock)
    assert ["a", "a", "close alias-a"] == transport.attempts


def test_a_closed_output_leaves_the_alert_queued_untouched(store: SqliteState, clock: FakeClock) -> None:
    """A dry run whose standard output was closed: nothing is recorded, reported or retried
    for the alert (the daemon is stopping), and the alerts behind it stay in order."""
    queue(store, "a", "b")
    transport, results = FakeTransport(OutputClosed("standard output was closed")), Results()
    sender = make_sender(store, transport, clock, results)

    assert IDLE_DELAY == sender.step()

    assert (["a"], []) == (transport.attempts, transport.sent)
    assert [] == results.seen
    assert ["a", "b"] == pending(store)
    assert [0, 0] == [a.attempts for a in store.alerts(PENDING)]
    assert (None, None) == (sender.last_error, sender.paused_reason)
