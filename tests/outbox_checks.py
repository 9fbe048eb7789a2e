"""Checks of the outbox that every state backend must pass alike."""

from __future__ import annotations

from rulesd.state import CLOSE, CREATE, Attempt, Request, StateBackend

# Why the close stays, as `outbox list` shows it.
KEPT = "delivered, and kept: the alert it closes is dead-lettered; retry-dead sends this close again after it"


def check_a_close_of_a_dead_create_is_kept_with_it(store: StateBackend) -> None:
    """A close delivered after the create of its alias was dead-lettered is kept as a dead
    letter after it, with the attempts that failed before its delivery (as `outbox show` shows
    a dead letter's), and requeued with it in order; a close whose create was delivered, and
    any create, leave the outbox when delivered."""
    store.commit(
        positions={},
        payloads=[
            {"alias": "x", "message": "refused"},
            {"alias": "y", "message": "delivered"},
            Request({"note": "resolved: r"}, CLOSE, "x"),
            Request({"note": "resolved: r"}, CLOSE, "y"),
        ],
        now=5.0,
    )
    for step in ("dead", "sent", "retried", "sent"):
        head = store.head()
        assert head is not None
        if step == "dead":
            store.dead_letter(head.id, "HTTP 422", '{"message": "bad"}')
            continue
        if step == "retried":  # the close of x fails once before it goes
            store.reschedule(head.id, 5.0, "HTTP 503", at=6.0)
        store.mark_sent(head.id)
    assert store.head() is None
    dead = store.alerts("dead")
    assert [(CREATE, None, "HTTP 422"), (CLOSE, "x", KEPT)] == [(a.action, a.target, a.last_error) for a in dead]
    assert 1 == dead[1].attempts
    assert [Attempt(6.0, "retry", "HTTP 503")] == store.attempts(dead[1].id)
    assert 2 == store.retry_dead(now=99.0)
    assert [(CREATE, "refused"), (CLOSE, "x")] == [
        (a.action, a.target or a.payload["message"]) for a in store.alerts("pending")
    ]
