"""The engine: event + event time + state -> the rules that fire (`core`), with its state
(`state`), timers (`timers`) and what it hands out (`values`)."""

from rulesd.engine.core import (
    MAX_GROUPS,
    MAX_GROUPS_PER_RULE,
    SWEEP_EVERY,
    Counts,
    Engine,
    GroupKeys,
    Limits,
    PreparedRules,
)
from rulesd.engine.state import THROTTLE, WINDOW, EngineState, StateDelta
from rulesd.engine.values import Closing, Firing, GroupKey

__all__ = [
    "MAX_GROUPS",
    "MAX_GROUPS_PER_RULE",
    "SWEEP_EVERY",
    "THROTTLE",
    "WINDOW",
    "Closing",
    "Counts",
    "Engine",
    "EngineState",
    "Firing",
    "GroupKey",
    "GroupKeys",
    "Limits",
    "PreparedRules",
    "StateDelta",
]
