"""Durable state: the backend protocol (`base`) and its SQLite implementation (`sqlite`)."""

from rulesd.state.base import (
    CLOSE,
    CREATE,
    DEAD,
    PENDING,
    Attempt,
    Outbox,
    OutboxAlert,
    Request,
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
    "StateBackend",
    "StateError",
    "StateUnavailable",
]
