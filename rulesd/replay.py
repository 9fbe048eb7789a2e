"""`rulesd replay`: evaluate rules over a file of JSON-lines events, offline."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import methodcaller
from typing import Any, BinaryIO

from orjson import JSONDecodeError, loads

from rulesd.alerting.payload import AlertSettings, build_payload
from rulesd.engine import Engine, event_time
from rulesd.events import InvalidEvent, parse_json
from rulesd.rules.fields import MISSING, Event, make_getter
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
    time_of = _time_reader(time_field, arrival)
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
                on_invalid(lineno, _reason(line))
            continue
        events += 1
        firing = evaluate(event, time_of(event))
        if firing is None:
            continue
        summary.alerts += 1
        names = tuple(r.name for r in firing.rules)
        summary.firings.update(names)
        yield ReplayedAlert(lineno, names, build_payload(firing, settings, f"{name}:{lineno}"))
    summary.events = events
    yield summary


def _reason(line: bytes) -> str:
    try:
        parse_json(line)
    except InvalidEvent as exc:
        return str(exc)
    raise AssertionError("a line that failed to parse parsed")


def _time_reader(time_field: str | None, arrival: float) -> Callable[[Event], float]:
    """A function giving an event's time: its time field, else the arrival time."""
    if time_field is None:
        return lambda event: arrival
    # A missing field reads as None either way: both mean "no time given".
    get = make_getter(time_field) if "." in time_field else methodcaller("get", time_field)

    def time_of(event: Event) -> float:
        value = get(event)
        if type(value) is float:
            return value  # the common case, without a call
        return event_time(_value(value), arrival)

    return time_of


def _value(value: Any) -> Any:
    return None if value is MISSING else value
