"""Durable state: the backend protocol (`base`) and its SQLite implementation (`sqlite`)."""

from rulesd.state.base import DEAD, PENDING, Attempt, Outbox, OutboxAlert, StateBackend
from rulesd.state.sqlite import PAUSED, SqliteState

__all__ = ["DEAD", "PAUSED", "PENDING", "Attempt", "Outbox", "OutboxAlert", "SqliteState", "StateBackend"]
