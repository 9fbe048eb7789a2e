"""Durable state: the backend protocol (`base`), its SQLite implementation (`sqlite`) and the
shared one in Redis (`redis`, imported where used: only that mode needs the client)."""

from rulesd.state.base import (
    CLOSE,
    CREATE,
    DEAD,
    PENDING,
    Attempt,
    Outbox,
    OutboxAlert,
    Request,
    StateAuthFailed,
    StateBackend,
    StateError,
    StateUnavailable,
)
from rulesd.state.sqlite import PAUSED, SqliteState

__all__ = [
    "CLOSE",
    "CREATE",
    "DEAD",
    "PAUSED",
    "PENDING",
    "Attempt",
    "Outbox",
    "OutboxAlert",
    "Request",
    "SqliteState",
    "StateAuthFailed",
    "StateBackend",
    "StateError",
    "StateUnavailable",
]
