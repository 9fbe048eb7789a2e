"""What `rulesd outbox list` and `show` print, from the store's rows (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from rulesd.outbox_view import attempts_text, outbox_row, row_text, summary
from rulesd.state import Attempt, OutboxAlert

PAYLOAD: dict[str, Any] = {
    "message": "Brute force on root",
    "alias": 'rulesd: auth-brute-force: {"user":"root"}',
    "details": {"Triggering Rules": '["auth-brute-force","auth-any-failure"]', "Event Source": "/var/log/a (offset 9)"},
}


def alert(status: str = "pending", payload: dict[str, Any] = PAYLOAD, error: str | None = None) -> OutboxAlert:
    return OutboxAlert(7, 1_767_225_600.0, payload, status, 2, 1_767_225_700.0, error, None)


@pytest.mark.parametrize(
    ("status", "paused", "state"),
    [("pending", False, "pending"), ("pending", True, "paused"), ("dead", False, "dead"), ("dead", True, "dead")],
)
def test_state_is_pending_paused_or_dead(status: str, paused: bool, state: str) -> None:
    """A pending alert is paused while the sender is; a dead one stays dead."""
    assert state == outbox_row(alert(status), paused).state


def test_a_row_as_json_has_exactly_the_documented_keys() -> None:
    """id, state, created (RFC 3339, UTC), attempts, lead rule (the first triggering rule),
    message, event source, last error, and the request body as an object."""
    assert {
        "id": 7,
        "state": "dead",
        "created": "2026-01-01T00:00:00Z",
        "attempts": 2,
        "lead_rule": "auth-brute-force",
        "message": "Brute force on root",
        "event_source": "/var/log/a (offset 9)",
        "last_error": "HTTP 422: alert rejected",
        "payload": PAYLOAD,
    } == outbox_row(alert("dead", error="HTTP 422: alert rejected"), False).to_json()


def test_a_payload_without_details_still_makes_a_row() -> None:
    """A payload cut short of its event source (the details limit) or odd: empty, not a crash."""
    row = outbox_row(alert(payload={"message": "m", "details": {"Triggering Rules": "not json"}}), False)
    assert ("", None) == (row.lead_rule, row.event_source)


def test_text_rows_and_summary() -> None:
    """A line of the essentials, then message, event source and last error; then the counts."""
    rows = [outbox_row(alert(error="HTTP 401: OpsGenie rejected the API key"), True), outbox_row(alert("dead"), True)]
    assert (
        "7  paused  2026-01-01T00:00:00Z  attempts=2  auth-brute-force\n"
        "    message: Brute force on root\n"
        "    event source: /var/log/a (offset 9)\n"
        "    last error: HTTP 401: OpsGenie rejected the API key"
    ) == row_text(rows[0])
    assert "0 pending, 1 paused, 1 dead" == summary(rows)


def test_attempts_text_lists_each_failure_then_the_next_attempt() -> None:
    """`outbox show`, after the payload: the failed attempts, then when the next one is due."""
    row = outbox_row(alert(), False)
    attempts = [Attempt(1_767_225_610.0, "retry", "HTTP 503"), Attempt(1_767_225_640.0, "retry", "timeout")]
    assert (
        "attempts: 2 (a pause is not counted), failed:\n"
        "  2026-01-01T00:00:10Z  retry  HTTP 503\n"
        "  2026-01-01T00:00:40Z  retry  timeout\n"
        "next attempt: 2026-01-01T00:01:40Z"
    ) == attempts_text(row, attempts, 1_767_225_700.0)


@pytest.mark.parametrize(
    ("note", "lead"),
    [("resolved: errors, errors-any", "errors"), ("resolved: heartbeat-missing (rule removed)", "heartbeat-missing")],
)
def test_a_close_row_names_its_first_rule_without_the_reason_a_reload_gave(note: str, lead: str) -> None:
    """A close's rules are in its note; a reload's note says why after each name, which is no
    part of the rule's name."""
    close = OutboxAlert(
        8, 1_767_225_600.0, {"source": "rulesd", "note": note}, "pending", 0, 0.0, None, None, "close", "a"
    )
    row = outbox_row(close, False)
    assert (lead, "close a") == (row.lead_rule, row.message)
