"""What the daemon logs of a delivery: the line of a delivered alert at debug, unless it ends
failed attempts (then at info), and the alert's headline made only for a line written."""

from __future__ import annotations

import logging

import pytest

from rulesd.daemon.delivery_log import DeliveryLog
from rulesd.sender import SENT
from rulesd.state import OutboxAlert
from rulesd.stats import Stats


class Named(OutboxAlert, frozen=True):
    """An alert that counts the headlines made of it (each a dict lookup and a `str`)."""

    def headline(self) -> str:
        made.append(self.id)
        return super().headline()


made: list[int] = []


def alert(alert_id: int, attempts: int = 0) -> Named:
    return Named(alert_id, 0.0, {"message": f"disk full {alert_id}"}, "pending", attempts, 0.0, None, None)


def test_a_delivery_logged_at_debug_makes_no_headline_unless_debug_is_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    made.clear()
    stats = Stats()
    log = DeliveryLog(stats, lambda: 5.0)
    with caplog.at_level(logging.INFO, "rulesd"):
        log(SENT, alert(1), "sent")  # the usual delivery: its debug line is not written
        log(SENT, alert(2, attempts=3), "sent")  # after failed attempts: news, at info
    assert [2] == made
    assert ["alert 2 sent: disk full 2"] == [r.getMessage() for r in caplog.records]
    assert (2, 5.0) == (stats.delivery[SENT], stats.last_delivery)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, "rulesd"):
        log(SENT, alert(3), "sent")
    assert ([2, 3], ["alert 3 sent: disk full 3"]) == (made, [r.getMessage() for r in caplog.records])
