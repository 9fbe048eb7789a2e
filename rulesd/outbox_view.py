"""What `rulesd outbox list` and `rulesd outbox show` print: pure, from the store's rows.

A close of an alert (its group recovered) is a row too, whose message says what it closes.
An alert's state is `dead` (dead-lettered), `paused` (pending while the sender is paused
by a refused key, as the daemon records it in the store) or `pending`. The lead rule and
the event source are read back from the payload, which names them in `details`.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from rulesd.alerting.payload import CLOSE_NOTE, EVENT_SOURCE
from rulesd.printable import one_line
from rulesd.rules.model import TRIGGERING_RULES
from rulesd.state import CLOSE, DEAD, PAUSED, PENDING, Attempt, OutboxAlert
from rulesd.times import rfc3339


class OutboxRow(msgspec.Struct, frozen=True):
    """One alert of the outbox as an operator sees it."""

    id: int
    state: str
    created: str
    attempts: int
    lead_rule: str
    message: str
    event_source: str | None
    last_error: str | None
    payload: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The object `--format json` prints for this row."""
        return {
            "id": self.id,
            "state": self.state,
            "created": self.created,
            "attempts": self.attempts,
            "lead_rule": self.lead_rule,
            "message": self.message,
            "event_source": self.event_source,
            "last_error": self.last_error,
            "payload": self.payload,
        }


def outbox_row(alert: OutboxAlert, paused: bool) -> OutboxRow:
    """The row of `alert`; `paused` says whether the sender is paused."""
    state = DEAD if alert.status == DEAD else PAUSED if paused else PENDING
    if alert.action == CLOSE:  # a close: its rules are in its note, its alias is what it closes
        note = str(alert.payload.get("note", ""))
        return OutboxRow(
            id=alert.id,
            state=state,
            created=rfc3339(alert.created),
            attempts=alert.attempts,
            # The first name, without the reason a reload gives (`a (rule removed), b`).
            lead_rule=note.removeprefix(CLOSE_NOTE).split(",")[0].split(" (")[0].strip(),
            message=alert.headline(),
            event_source=None,
            last_error=alert.last_error,
            payload={"close": alert.target, **alert.payload},
        )
    details = alert.payload.get("details") or {}
    source = details.get(EVENT_SOURCE)
    return OutboxRow(
        id=alert.id,
        state=state,
        created=rfc3339(alert.created),
        attempts=alert.attempts,
        lead_rule=_lead_rule(details.get(TRIGGERING_RULES)),
        message=alert.headline(),
        event_source=source if isinstance(source, str) else None,
        last_error=alert.last_error,
        payload=alert.payload,
    )


def _lead_rule(names: Any) -> str:
    """The first name of `"Triggering Rules"` (the lead rule comes first), else empty."""
    try:
        listed = json.loads(names) if isinstance(names, str) else None
    except ValueError:
        return ""
    return str(listed[0]) if isinstance(listed, list) and listed else ""


def row_text(row: OutboxRow) -> str:
    """A few lines for one alert: id, state, created, attempts and lead rule, then the rest,
    each field on its line with its control characters escaped (they come from events and
    from OpsGenie's answers)."""
    lines = [f"{row.id}  {row.state}  {row.created}  attempts={row.attempts}  {one_line(row.lead_rule)}"]
    lines.append(f"    message: {one_line(row.message)}")
    if row.event_source is not None:
        lines.append(f"    event source: {one_line(row.event_source)}")
    if row.last_error:
        lines.append(f"    last error: {one_line(row.last_error)}")
    return "\n".join(lines)


def summary(rows: list[OutboxRow]) -> str:
    """`2 pending, 1 paused, 3 dead`."""
    counts = {state: sum(r.state == state for r in rows) for state in (PENDING, PAUSED, DEAD)}
    return ", ".join(f"{count} {state}" for state, count in counts.items())


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    """A failed attempt as `outbox show --format json` prints it."""
    return {"at": rfc3339(attempt.at), "result": attempt.result, "error": attempt.error}


def attempts_text(row: OutboxRow, attempts: list[Attempt], next_attempt: float | None) -> str:
    """The attempts part of `outbox show`: each failed attempt, then what happens next."""
    lines = [f"attempts: {row.attempts} (a pause is not counted), failed:"]
    lines += [f"  {rfc3339(a.at)}  {a.result}  {one_line(a.error)}" for a in attempts]
    if not attempts:
        lines.append("  none failed yet")
    if next_attempt is not None and row.state != DEAD:
        lines.append(f"next attempt: {rfc3339(next_attempt)}")
    return "\n".join(lines)
