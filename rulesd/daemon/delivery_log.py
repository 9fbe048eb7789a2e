"""What the daemon says about deliveries: every outcome counted, each problem logged once.

During an outage or while OpsGenie refuses the key the sender tries the same alert again and
again; a line per attempt would bury the journal (a day's 401 pause: 1,440 errors). So a
failure is logged when it starts or changes kind (a 503 turning into a timeout), its repeats
only at debug, and its end once, at info: the delivery that ends it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from rulesd.logs import FailureRun, failure_kind
from rulesd.sender import PAUSED, RETRY, SENT
from rulesd.state import CLOSE, OutboxAlert
from rulesd.stats import Stats

log = logging.getLogger("rulesd")

PAUSE_ADVICE = (
    "fix the API key (a changed opsgenie.api_key_file is read at once, any key at a reload) or "
    "opsgenie.alert_url (read at start: restart)"
)


class DeliveryLog:
    """The sender's `on_result`: counts every outcome in `stats` and logs what an operator must
    know, once."""

    def __init__(self, stats: Stats, clock: Callable[[], float]) -> None:
        self._stats = stats
        self._clock = clock
        self._failing: tuple[int, str] | None = None  # the alert and failure last logged as a warning
        self._paused = FailureRun(logging.ERROR)  # the refusals that paused delivery

    def __call__(self, kind: str, alert: OutboxAlert, detail: str) -> None:
        self._stats.bump(self._stats.delivery, kind)
        if kind == SENT and alert.action == CLOSE:
            self._stats.closes_sent += 1
        if kind == SENT:
            self._sent(alert, detail)
        elif kind == RETRY:
            self._retry(alert, detail)
        elif kind == PAUSED:  # shown live through sender.paused_reason until a delivery succeeds
            self._pause(detail)
        else:
            self._stats.last_error = detail
            if self._failing is not None and self._failing[0] == alert.id:
                self._failing = None
            log.error(
                "alert %d dead-lettered (%s): %s: %s; see it with 'rulesd outbox show %d', and once the cause is "
                "fixed 'rulesd outbox retry-dead' sends it again",
                alert.id,
                kind,
                alert.headline(),
                detail,
                alert.id,
            )

    def _sent(self, alert: OutboxAlert, detail: str) -> None:
        self._stats.last_delivery = self._clock()
        if self._paused.ended():
            log.info("sending resumed: OpsGenie accepted alert %d", alert.id)
        # After failed attempts (logged as a warning) the recovery is news too.
        level = logging.INFO if alert.attempts or self._failing is not None else logging.DEBUG
        if log.isEnabledFor(level):  # (most deliveries: a debug line not written, its headline not made)
            log.log(level, "alert %d %s: %s", alert.id, detail, alert.headline())
        self._failing = None

    def _retry(self, alert: OutboxAlert, detail: str) -> None:
        failing = (alert.id, failure_kind(detail))
        if failing == self._failing:
            log.debug("alert %d still not delivered, will retry: %s", alert.id, detail)
            return
        self._failing = failing
        log.warning(
            "alert %d not delivered, will retry: %s (further failures like it are logged at debug)", alert.id, detail
        )

    def _pause(self, detail: str) -> None:
        level = self._paused.failed(detail)
        if level == logging.DEBUG:
            log.debug("OpsGenie still refuses the request (%s)", detail)
            return
        log.log(level, "OpsGenie refused the request (%s); sending paused, nothing dropped: %s", detail, PAUSE_ADVICE)
