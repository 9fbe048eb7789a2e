"""`rulesd replay`: evaluate rules over a file of JSON-lines events, offline."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from orjson import JSONDecodeError, loads

from rulesd.alerting.payload import AlertSettings, build_payload
from rulesd.engine import Engine, event_time, time_reader
from rulesd.events import parse_json, why_invalid
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
    evaluate = engine.evaluate
    arrival = time.time() if start is None else start
    time_key, read_time = time_reader(time_field)
    summary = ReplaySummary()
    events = 0
    for lineno, line in enumerate(stream, 1):
        try:
            event = loads(line)
        except JSONDecodeError:
            event = None
        if type(event) is not dict:
            if line.strip():
                summary.invalid += 1
                on_invalid(lineno, why_invalid(parse_json, line))
            continue
        events += 1
        if time_key is None:
            when = arrival
        else:
            value = event.get(time_key) if read_time is None else read_time(event)
            # A float is the common case: no call to convert it.
            when = value if type(value) is float else event_time(value, arrival)
        firing = evaluate(event, when)
        if firing is None:
            continue
        summary.alerts += 1
        names = tuple(r.name for r in firing.rules)
        summary.firings.update(names)
        yield ReplayedAlert(lineno, names, build_payload(firing, settings, f"{name}:{lineno}"))
    summary.events = events
    yield summary
