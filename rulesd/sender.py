"""Drains the outbox to OpsGenie: in order, with backoff, pausing and dead letters.

Alerts leave strictly in queue order: only the oldest pending alert is ever tried,
so while it waits for its next attempt nothing behind it is sent. What happens
after a failed attempt is decided by the class of the transport's error:

- `RetryableAlertError` (network, 408, 429, 5xx): reschedule with exponential
  backoff and jitter, or the server's `Retry-After`; counts as an attempt.
- `PausingAlertError` (401/403, a redirect): every alert would fail alike, so
  reschedule at `auth_retry` without counting it and report `paused_reason`; meanwhile the
  outbox is only looked at, not held, so another instance sharing it (its key may work) can
  take it over.
- `PermanentAlertError` (other 4xx): dead-letter with the response body, go on.
- `OutputClosed` (a dry run's standard output was closed) or `StopCut` (the request was cut at
  the end of the stop grace): leave the alert as it is, due at once at the next start; the
  daemon is stopping.

An alert older than `max_age` is dead-lettered as expired instead of sent: a page
that late does more harm than good.

`backoff` and `retry_delay` are pure; `Sender` is the loop around the store and the
transport. The sender keeps its own database connection (the SQLite backend opens one per
thread), so it can run in its own thread beside the daemon's reader.
"""

from __future__ import annotations

import logging
import math
import random as _random
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from rulesd.alerting.api import (
    AlertError,
    OutputClosed,
    PausingAlertError,
    PermanentAlertError,
    RetryableAlertError,
    StopCut,
    Transport,
)
from rulesd.logs import FailureRun
from rulesd.state import CLOSE, Outbox, OutboxAlert, StateUnavailable

log = logging.getLogger("rulesd.sender")

# What `step` answers when the outbox is empty: "nothing to do for a long while".
IDLE_DELAY = 3600.0
# `run` looks at the outbox at least this often even without a wake-up, so alerts that
# another process requeued (`rulesd outbox retry-dead`) go out without a restart.
POLL_INTERVAL = 5.0
# While the state cannot be written (a full disk), the sender looks again this often.
STATE_RETRY = 1.0
# Seconds before looking again when the outbox turned out to be another process's to send.
OWNERSHIP_WAIT = 1.0
# Retries back off, doubling, up to this: after an outage the queue moves again within a minute.
MAX_BACKOFF = 60.0
# A server's Retry-After is honoured up to this: asking again sooner costs one more 429, while a
# broken or hostile header (a proxy's `Retry-After: 86400`) would hold every page behind it.
RETRY_AFTER_MAX = 300.0
# Failed attempts in a row (network errors, 5xx, 429, a proxy's page) after which delivery is said
# to be failing (/readyz, STATUS=): one or two are a blip that the backoff rides out within
# seconds; three in a row (1 s, 2 s, 4 s of backoff) are an outage of the path to OpsGenie.
FAILING_AFTER = 3

SENT, RETRY, PAUSED, DEAD, EXPIRED = "sent", "retry", "paused", "dead", "expired"

ResultHook = Callable[[str, OutboxAlert, str], None]


def backoff(attempts: int, *, initial: float, maximum: float, random: Callable[[], float]) -> float:
    """Seconds before the next try after `attempts` earlier failures: capped doubling, equal jitter.

    Equal jitter (half fixed, half random) spreads retries out like full jitter does but
    never comes back almost at once, which would hammer a struggling endpoint.
    """
    # The exponent is capped so that a long outage cannot overflow the float.
    ceiling = min(maximum, initial * 2.0 ** min(max(attempts, 0), 64))
    return ceiling / 2 + random() * ceiling / 2


def retry_delay(
    attempts: int,
    retry_after: float | None,
    *,
    initial: float,
    maximum: float,
    random: Callable[[], float],
) -> float:
    """Seconds before retrying: the server's wish if it stated one, else `backoff`.

    A stated wait is clamped to [initial, RETRY_AFTER_MAX]: `Retry-After: 0` must not
    make a hot loop, nor a huge value hold every later alert until it expires.
    """
    if retry_after is not None:
        return min(max(retry_after, initial), RETRY_AFTER_MAX)
    return backoff(attempts, initial=initial, maximum=maximum, random=random)


def is_expired(alert: OutboxAlert, now: float, max_age: float) -> bool:
    """True once an alert has waited `max_age` seconds since it was queued."""
    return now - alert.created >= max_age


class Sender:
    """Delivers outbox alerts through a `Transport`, oldest first.

    `clock` must tell the same time (epoch seconds) that `StateBackend.commit(now=...)` was
    given, since `created` and `next_attempt` are compared with it. `sleep` is only used
    by `drain`. `on_result(kind, alert, detail)` hears every outcome: kind is one of
    "sent", "retry", "paused", "dead", "expired"; `detail` never contains the API key.
    """

    def __init__(
        self,
        store: Outbox,
        transport: Transport,
        *,
        clock: Callable[[], float],
        max_age: float = 86400.0,
        random: Callable[[], float] = _random.random,
        initial_backoff: float = 1.0,
        max_backoff: float = MAX_BACKOFF,
        auth_retry: float = 60.0,
        on_result: ResultHook | None = None,
        sleep: Callable[[float], None] = time.sleep,
        poll: float = POLL_INTERVAL,
    ) -> None:
        self._store = store
        self.transport = transport
        self._clock = clock
        self._max_age = max_age
        self._random = random
        self._initial = initial_backoff
        self._max_backoff = max_backoff
        self._auth_retry = auth_retry
        self._on_result = on_result
        self._sleep = sleep
        self._poll = poll  # looks at the outbox at least this often (others may queue into it)
        # Serialises `step`, `run` and `drain` so that no alert is ever in flight twice.
        self._lock = threading.Lock()
        self.paused_reason: str | None = None
        # While paused, until when the sender only looks at the outbox without holding it: where
        # instances share it, another one, whose key may work, then takes it over meanwhile.
        self._paused_until = -math.inf
        self.last_error: str | None = None
        self.last_success: float | None = None
        # Attempts failed in a row (retried, not paused) since OpsGenie last answered (a delivery or a
        # refusal) while alerts waited on this sender: an empty outbox (the failing alert expired)
        # or one another instance took over has nothing failing to deliver.
        self.failures = 0
        # Whether the store's record of a pause may be set: unknown at start (a previous run may
        # have left it), so the first delivery clears it; after that only a pause sets it again.
        self._pause_recorded = True
        # An alert OpsGenie accepted whose delivery could not be recorded yet (a full disk): it
        # is recorded before anything else is done, and never sent again meanwhile.
        self._delivered: int | None = None
        # The kind of state problem (an outage, refused credentials) logged, once per kind in a row.
        self._state_problem: type[StateUnavailable] | None = None
        # Unexpected exceptions in a row: each kind's traceback is logged once.
        self._unexpected = FailureRun(logging.ERROR)

    # -- the loop ----------------------------------------------------------------------------

    def step(self, stop: threading.Event | None = None) -> float:
        """Deliver every due alert in order until one fails, none is due or `stop` is set.

        Returns the seconds until the oldest pending alert is due (`IDLE_DELAY` when the
        outbox is empty; 0 when stopped).
        """
        while stop is None or not stop.is_set():
            delay = self._advance()
            if delay is not None:
                return IDLE_DELAY if delay == math.inf else delay
        return 0.0

    def run(
        self,
        stop: threading.Event,
        wake: threading.Event,
        busy: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        """Deliver until `stop` is set; `wake` cuts a wait short (set it after `stop` too).
        Each pass runs inside `busy()` (the daemon keeps it on its reader's CPU: see
        `rulesd.shared_cpu`).

        Never raises: a failing store or callback is logged and tried again after a pause.
        """
        self._store.relax_durability()
        try:
            while not stop.is_set():
                # Cleared before looking, so a wake-up during the step is not lost.
                wake.clear()
                with busy():
                    delay = self._guarded_step(stop)
                if stop.is_set():
                    break
                wake.wait(min(delay, self._poll))
        finally:
            self._store.close()  # this thread's connection only

    def drain(self, deadline: float) -> bool:
        """On shutdown: deliver until the outbox is empty (True) or `deadline` passes (False).

        Never sleeps past the deadline; an attempt already in flight finishes (bounded
        by the transport's timeout). Called on the thread that queued the alerts, once it has
        queued its last: its connection then records deliveries as `run`'s does, without a
        sync to disk each (a power cut may only cost a repeat, which OpsGenie folds by alias).
        """
        self._store.relax_durability()
        while True:
            try:
                if self._clock() >= deadline:
                    return self._store.head() is None
                delay = self._advance()
            except StateUnavailable:
                return False  # what is left is sent at the next start
            if delay is None:
                continue
            if delay == math.inf:
                return True
            # The clock is read again: the attempt that just failed may have taken a while.
            if self._clock() + delay >= deadline:
                return False
            self._sleep(delay)

    def _guarded_step(self, stop: threading.Event) -> float:
        """One pass of `run`: deliver due alerts while not stopped; never raises."""
        try:
            delay = self.step(stop)
        except StateUnavailable as exc:  # a full disk: the daemon says so too; wait for space
            if type(exc) is not self._state_problem:  # a new cause (Redis back, but refusing the password)
                log.warning("sender waits: %s", exc)
            self._state_problem = type(exc)
            return STATE_RETRY
        except Exception:  # the top of the sender loop: log, wait, go on
            log.exception("sender step failed; retrying in %.0fs", self._poll)
            return self._poll
        if self._state_problem is not None:
            self._state_problem = None
            log.info("sender: the state can be written again")
        return delay

    def failing(self) -> tuple[int, str] | None:
        """How many attempts in a row have failed and the last error, once FAILING_AFTER have
        (read once each: another thread asks, while a delivery may reset them)."""
        failures, error = self.failures, self.last_error
        return (failures, error) if failures >= FAILING_AFTER and error is not None else None

    def resume(self, *, key_changed: bool = False) -> bool:
        """Retry a paused head at once (after a reload that may have fixed the key); True if paused.

        With no alert queued (the paused ones expired) and a new key, the pause ends: the key
        OpsGenie refused is gone, and the next alert tries the new one (a refusal pauses again
        at once). Kept, it said sending was paused until some later alert was delivered."""
        with self._lock:
            if self.paused_reason is None:
                return False
            self._paused_until = -math.inf  # the new key may be tried at once
            alert = self._store.head()
            if alert is not None:
                self._store.reschedule(alert.id, self._clock(), alert.last_error or "", count=False)
            elif key_changed:
                self.paused_reason = None
                self._store.set_paused(None)  # for `rulesd outbox list`
                self._pause_recorded = False
            return True

    # -- one alert ---------------------------------------------------------------------------

    def _advance(self) -> float | None:
        """Handle the oldest pending alert if it is due.

        Returns None after progress (sent, dead-lettered, expired), else the seconds to
        wait: until the head is due, or `math.inf` when the outbox is empty.
        """
        with self._lock:
            if self._delivered is not None:
                self._record_delivery()
                return None
            now = self._clock()
            alert = self._store.head(take=self.paused_reason is None or now >= self._paused_until)
            if alert is None:  # empty, or another instance holds the outbox (it took the lease over)
                self.failures = 0  # no alert waits on this sender, so no delivery is failing
                return math.inf
            if is_expired(alert, now, self._max_age):
                self._expire(alert, now)
                return None
            if alert.next_attempt > now and not self._paused_elsewhere(alert):
                return self._wait(alert, alert.next_attempt, now)
            return self._attempt(alert, now)

    def _paused_elsewhere(self, alert: OutboxAlert) -> bool:
        """Whether the head waits out a pause that is not this sender's: another instance's key
        was refused (its retry time, `auth_retry` after the refusal, is the alert's; its reason
        the alert's last error and the pause recorded), or this process's before a restart. This
        sender, not paused, tries it at once: its key may work, and the pause is to keep the
        refused key from being tried again, not the alert from being sent. A sender paused
        itself waits its pause out, as before; a retry's backoff is waited out too (its last
        error is not the pause's)."""
        return self.paused_reason is None and alert.last_error is not None and alert.last_error == self._store.paused()

    def _wait(self, alert: OutboxAlert, next_attempt: float, now: float) -> float:
        """Seconds until the head needs attention: its next attempt or its expiry, if sooner."""
        return min(next_attempt, alert.created + self._max_age) - now

    def _attempt(self, alert: OutboxAlert, now: float) -> float | None:
        """Send one due alert and record the outcome; the wait before the next try, if any."""
        if not self._store.owns(alert.id):  # another process took the outbox over (after a pause)
            self.failures = 0  # its deliveries are the new holder's to fail or not
            return OWNERSHIP_WAIT
        try:
            if alert.action == CLOSE:
                self.transport.close_alert(alert.target or "", alert.payload)
            else:
                self.transport.create_alert(alert.encoded())
        except PermanentAlertError as exc:
            self._dead_letter(alert, exc)
            return None
        except PausingAlertError as exc:
            return self._pause(alert, now, exc)
        except OutputClosed:  # the daemon is stopping: nothing to record, nothing to retry
            return IDLE_DELAY
        except StopCut:
            # Not counted: a cut attempt counted as failed stored its backoff (up to MAX_BACKOFF),
            # and the alert waited that out after the restart before its first try. Said, so that
            # the stop shows the attempt ended rather than a thread left behind in it.
            log.info(
                "alert %d: its request was cut by the stop; it stays queued, sent first at the next start", alert.id
            )
            return IDLE_DELAY
        except RetryableAlertError as exc:
            return self._retry(alert, now, str(exc), exc.retry_after)
        except AlertError as exc:  # a subclass this sender does not know: be careful
            return self._retry(alert, now, str(exc), None)
        except Exception as exc:  # a transport bug must not stop delivery
            # Its traceback once, not at every retry of the same failure.
            level = self._unexpected.failed(type(exc).__name__)
            log.log(level, "unexpected error sending alert %d", alert.id, exc_info=True)
            return self._retry(alert, now, f"unexpected {type(exc).__name__}", None)
        self._unexpected.ended()
        self._delivered = alert.id  # delivered: never sent again, even if recording it fails
        self.paused_reason = self.last_error = None
        self.failures = 0
        self.last_success = now
        self._report(SENT, alert, _sent_detail(alert))
        self._record_delivery()
        return None

    def _record_delivery(self) -> None:
        """Take the delivered alert out of the outbox (StateUnavailable: try again later)."""
        assert self._delivered is not None
        self._store.mark_sent(self._delivered)
        self._delivered = None
        if self._pause_recorded:
            self._store.set_paused(None)
            self._pause_recorded = False

    def _retry(self, alert: OutboxAlert, now: float, error: str, retry_after: float | None) -> float:
        delay = retry_delay(
            alert.attempts,
            retry_after,
            initial=self._initial,
            maximum=self._max_backoff,
            random=self._random,
        )
        self._store.reschedule(alert.id, now + delay, error, at=now, result=RETRY)
        self.last_error = error
        self.failures += 1
        self._report(RETRY, alert, f"{error}; attempt {alert.attempts + 1} failed, retrying in {delay:.1f}s")
        return self._wait(alert, now + delay, now)

    def _pause(self, alert: OutboxAlert, now: float, exc: PausingAlertError) -> float:
        # Not counted: the alert is not at fault, and nothing may be dead-lettered for it.
        self._store.reschedule(alert.id, now + self._auth_retry, str(exc), count=False, at=now, result=PAUSED)
        # Paused before the store records it: a record that fails (Redis gone, or its answer lost
        # once made) must leave this sender paused, or its next step takes the recorded pause for
        # another instance's and tries the refused key again at once (`_paused_elsewhere`).
        self._pause_recorded = True
        self._paused_until = now + self._auth_retry
        self.paused_reason = self.last_error = str(exc)
        self._report(PAUSED, alert, f"{exc}; delivery paused, retrying in {self._auth_retry:.0f}s")
        # Recorded in the store too, so that `rulesd outbox list` (another process) shows it.
        self._store.set_paused(str(exc))
        return self._wait(alert, now + self._auth_retry, now)

    def _dead_letter(self, alert: OutboxAlert, exc: PermanentAlertError) -> None:
        self._store.dead_letter(alert.id, str(exc), exc.body, at=self._clock(), result=DEAD)
        self.last_error = str(exc)
        self.failures = 0  # OpsGenie answered: the way to it works, whatever it made of this alert
        self._report(DEAD, alert, str(exc))

    def _expire(self, alert: OutboxAlert, now: float) -> None:
        age = now - alert.created
        error = f"expired: undelivered after {age:.0f}s (max_age {self._max_age:.0f}s)"
        if alert.last_error:
            error += f"; last error: {alert.last_error}"
        self._store.dead_letter(alert.id, error, alert.response, at=now, result=EXPIRED)
        self._report(EXPIRED, alert, error)

    def _report(self, kind: str, alert: OutboxAlert, detail: str) -> None:
        if self._on_result is not None:
            self._on_result(kind, alert, detail)


def _sent_detail(alert: OutboxAlert) -> str:
    if alert.attempts == 0:
        return "delivered"
    return f"delivered after {alert.attempts} failed attempt{'s' if alert.attempts != 1 else ''}"
