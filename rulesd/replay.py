"""`rulesd replay`: evaluate rules over a file of JSON-lines events, offline."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from orjson import loads

from rulesd.alerting.payload import AlertSettings, build_payload
from rulesd.engine import Engine
from rulesd.events import parse_block, parse_json, why_invalid
from rulesd.rules.model import RuleSet

# Read at a time: lines up to and including the one that crosses BLOCK_BYTES (about 60 events
# of 200 bytes; one long line alone), then parsed and evaluated (see `parse_block`). A byte
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
    lineno = blank = 0  # events are the lines neither blank nor invalid: no count per event
    while block := stream.readlines(BLOCK_BYTES):
        for offset, event in enumerate(parse_block(loads, block)):
            if type(event) is not dict:
                line = block[offset]
                if line.strip():
                    summary.invalid += 1
                    on_invalid(lineno + offset + 1, why_invalid(parse_json, line))
                else:
                    blank += 1
                continue
            firing = evaluate(event, arrival)
            if firing is None:
                continue
            summary.alerts += 1
            names = tuple([r.name for r in firing.rules])
            summary.firings.update(names)
            where = lineno + offset + 1
            yield ReplayedAlert(where, names, build_payload(firing, settings, f"{name}:{where}"))
        lineno += len(block)
    summary.events = lineno - blank - summary.invalid
    yield summary
