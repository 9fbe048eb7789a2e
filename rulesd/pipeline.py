"""The central step of rulesd: lines -> events -> firings -> alerts, one batch at a time.

The daemon, `rulesd replay` and `rulesd test` all run their input through these functions,
so that none of them can judge an event differently from another. They are pure (the
engine's state aside): reading the input and committing the alerts with the source
positions are the callers' I/O.

Lines are parsed a block at a time and then evaluated (see `events.parse_block`): the
parser's and then the engine's code and data each stay in the CPU's caches for a block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rulesd.alerting.payload import AlertSettings, build_payload
from rulesd.engine import Firing
from rulesd.events import BLOCK_LINES, IGNORED, parse_block
from rulesd.rules.fields import Event

Evaluate = Callable[[Event, float], Firing | None]


@dataclass(slots=True)
class Batch:
    """What evaluating a run of lines (or events) found.

    Indices count from the first line of the run: `invalid` are the lines that are not
    events (the caller tells blank lines from bad ones if it cares), `ignored` how many
    lines the source's `ignore_pattern` dropped, `firings` the events that fired, with the
    firing.
    """

    lines: int = 0
    invalid: list[int] = field(default_factory=list)
    firings: list[tuple[int, Firing]] = field(default_factory=list)
    ignored: int = 0

    @property
    def events(self) -> int:
        """How many lines were events."""
        return self.lines - len(self.invalid) - self.ignored


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert to queue: the index of the event that caused it, its rules, the request body."""

    index: int
    rules: tuple[str, ...]
    payload: dict[str, Any]


def evaluate_lines(lines: Sequence[bytes], parse: Callable[[bytes], Any], evaluate: Evaluate, arrival: float) -> Batch:
    """Parse and evaluate `lines`, all arriving at `arrival` (the hot path: locals only).

    `parse` returns an event (a dict), IGNORED for a line to drop, or raises ValueError /
    returns another non-dict for a bad line (`Parser.fast`); `evaluate` is the engine's
    (`Engine.evaluator` for the source's time reader).
    """
    batch = Batch(len(lines))
    invalid, firings = batch.invalid, batch.firings
    # Replay's blocks are one block already: no copy of them.
    blocks = (
        [lines]
        if len(lines) <= BLOCK_LINES
        else [lines[i : i + BLOCK_LINES] for i in range(0, len(lines), BLOCK_LINES)]
    )
    start = 0
    for block in blocks:
        for i, event in enumerate(parse_block(parse, block), start):
            if type(event) is not dict:
                if event is IGNORED:
                    batch.ignored += 1
                else:
                    invalid.append(i)
                continue
            firing = evaluate(event, arrival)
            if firing is not None:
                firings.append((i, firing))
        start += len(block)
    return batch


def evaluate_events(events: Iterable[tuple[Event, float]], evaluate: Evaluate) -> Batch:
    """Evaluate events that are values already (a rule test's), each with its own time."""
    batch = Batch()
    for i, (event, time) in enumerate(events):
        batch.lines += 1
        firing = evaluate(event, time)
        if firing is not None:
            batch.firings.append((i, firing))
    return batch


def build_alerts(batch: Batch, settings: AlertSettings, event_source: Callable[[int], str]) -> list[Alert]:
    """The alerts of a batch's firings; `event_source(index)` says where each event came from
    (the payload's "Event Source")."""
    return [
        Alert(i, tuple([rule.name for rule in firing.rules]), build_payload(firing, settings, event_source(i)))
        for i, firing in batch.firings
    ]
