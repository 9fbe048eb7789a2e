"""`rulesd replay`: evaluate rules over a file of JSON-lines events, offline."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from orjson import JSONDecodeError, loads

from rulesd.alerting.payload import AlertSettings, build_payload
from rulesd.engine import Engine
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
    evaluate = Engine(ruleset, time_field=time_field, saved=False).evaluate
    arrival = time.time() if start is None else start
    summary = ReplaySummary()
    lineno = blank = 0  # events are the lines neither blank nor invalid: no count per event
    for lineno, line in enumerate(stream, 1):
        try:
            event = loads(line)
        except JSONDecodeError:
            event = None
        if type(event) is not dict:
            if line.strip():
                summary.invalid += 1
                on_invalid(lineno, why_invalid(parse_json, line))
            else:
                blank += 1
            continue
        firing = evaluate(event, arrival)
        del event  # freed before the next parse, which then reuses its memory while it is in cache
        if firing is None:
            continue
        summary.alerts += 1
        names = tuple(r.name for r in firing.rules)
        summary.firings.update(names)
        yield ReplayedAlert(lineno, names, build_payload(firing, settings, f"{name}:{lineno}"))
    summary.events = lineno - blank - summary.invalid
    yield summary
