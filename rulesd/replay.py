"""`rulesd replay`: evaluate rules over a file of JSON-lines events, offline."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, BinaryIO

from orjson import loads

from rulesd.alerting.payload import AlertSettings
from rulesd.engine import Engine
from rulesd.events import JSON_PARSER
from rulesd.pipeline import build_alerts, evaluate_lines
from rulesd.rules.model import RuleSet

# Read at a time: lines up to and including the one that crosses BLOCK_BYTES (about 60 events
# of 200 bytes; one long line alone), then parsed and evaluated (see `pipeline`). A byte
# count, not the daemon's BLOCK_LINES, so that long lines do not make a block large.
BLOCK_BYTES = 12 * 1024


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
    lineno = blank = 0  # events are the lines neither blank nor invalid
    while block := stream.readlines(BLOCK_BYTES):
        batch = evaluate_lines(block, loads, evaluate, arrival)
        for i in batch.invalid:
            if block[i].strip():
                summary.invalid += 1
                on_invalid(lineno + i + 1, JSON_PARSER.why_invalid(block[i]))
            else:
                blank += 1
        first = lineno + 1
        for alert in build_alerts(batch, settings, partial(_line_of, name, first)):
            summary.alerts += 1
            summary.firings.update(alert.rules)
            yield ReplayedAlert(first + alert.index, alert.rules, alert.payload)
        lineno += len(block)
    summary.events = lineno - blank - summary.invalid
    yield summary


def _line_of(name: str, first: int, index: int) -> str:
    """The "Event Source" of the line `index` lines after line `first` of the file `name`."""
    return f"{name}:{first + index}"
