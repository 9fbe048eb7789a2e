"""`rulesd replay`: evaluate rules over a file of JSON-lines events, offline."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from rulesd.alerting.payload import AlertSettings, build_payload
from rulesd.engine import Engine, event_time
from rulesd.events import InvalidEvent, parse_json
from rulesd.rules.fields import MISSING, make_getter
from rulesd.rules.model import RuleSet


@dataclass(slots=True)
class ReplaySummary:
    """What a replay saw."""

    events: int = 0
    invalid: int = 0
    alerts: int = 0
    firings: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class ReplayedAlert:
    """An alert that would be sent, with the line that caused it."""

    line: int
    rules: tuple[str, ...]
    payload: dict[str, Any]


def replay(
    ruleset: RuleSet,
    stream: BinaryIO,
    *,
    name: str,
    settings: AlertSettings,
    time_field: str | None = None,
    start: float | None = None,
    on_invalid: Callable[[int, str], None] = lambda line, reason: None,
) -> Iterator[ReplayedAlert | ReplaySummary]:
    """Yield each alert as it would be sent, then the summary.

    Without a time field every event counts as arriving at `start` (default: now).
    """
    engine = Engine(ruleset)
    arrival = time.time() if start is None else start
    get_time = make_getter(time_field) if time_field else None
    summary = ReplaySummary()
    for lineno, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            event = parse_json(line)
        except InvalidEvent as exc:
            summary.invalid += 1
            on_invalid(lineno, str(exc))
            continue
        summary.events += 1
        when = arrival if get_time is None else event_time(_value(get_time(event)), arrival)
        firing = engine.evaluate(event, when)
        if firing is None:
            continue
        summary.alerts += 1
        names = tuple(r.name for r in firing.rules)
        summary.firings.update(names)
        yield ReplayedAlert(lineno, names, build_payload(firing, settings, f"{name}:{lineno}"))
    yield summary


def _value(value: Any) -> Any:
    return None if value is MISSING else value
