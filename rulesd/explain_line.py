"""`rulesd explain --events FILE --line N`: line N of an events file explained with the state
that the lines before it built, and whether the event fires each rule it matches.

The lines before N go through `rulesd replay`'s engine and pipeline, read as replay reads them
(the configured source's parser, its time), so the state at line N is replay's. The event of
line N is then evaluated by that engine like any other: whether a rule fires is the engine's
answer, and the group's state before and after says how far it got (`engine.progress`).
"""

from __future__ import annotations

import operator
import time
from functools import partial
from typing import BinaryIO

import msgspec

from rulesd.engine import Engine, Firing, GroupKeys
from rulesd.engine.core import Limits
from rulesd.engine.progress import group_text, outcome, snapshot
from rulesd.engine.values import NO_GROUP
from rulesd.events import IGNORED, Parser, parse_mended
from rulesd.eventtime import TimeReader
from rulesd.explain import Explainer, RuleExplanation, explanation_lines, show
from rulesd.pipeline import evaluate_lines
from rulesd.replay import replay_engine
from rulesd.replay_blocks import blocks
from rulesd.rules.fields import Event
from rulesd.rules.model import RuleSet
from rulesd.sources.lines import MAX_LINE_BYTES, line_text
from rulesd.times import rfc3339


class LineError(ValueError):
    """Line N cannot be explained (past the end, or not an event); the message says why."""


class ExplainedLine(msgspec.Struct, frozen=True):
    """Line `line` of an events file: its event and time, each rule's explanation and, for
    each enabled rule it matches, what the event did (`outcomes`, by rule name)."""

    line: int
    event: Event
    time: float
    explanations: list[RuleExplanation]
    outcomes: dict[str, str] = msgspec.field(default_factory=dict)


def explain_line(
    ruleset: RuleSet,
    explainer: Explainer,
    stream: BinaryIO,
    line: int,
    *,
    name: str,
    parser: Parser,
    time_field: str | None = None,
    start: float | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    limits: Limits = Limits(),
) -> ExplainedLine:
    """Explain line `line` (1-based) of `stream` after replaying the lines before it.

    Events arrive at `start` (default: now), and those without a readable time count at the
    latest event time before them, as in `replay`; lines
    longer than `max_line_bytes` are skipped, and the state kept within `limits`, as in `replay`.
    LineError if the stream has fewer lines, or line N is not an event.
    """
    engine, reader = replay_engine(ruleset, parser, time_field, limits)
    arrival = time.time() if start is None else start
    text = _replay_until(stream, line, engine, parser, reader, arrival, name, max_line_bytes)
    event = _event(text, parser, line, name)
    at = engine.time_of(event, arrival, reader)
    engine.advance(at)  # what is due by the event's time happens before it, as in the engine
    engine.out.clear()
    explanations = explainer.explain(event)
    keys = GroupKeys()
    by_name = {e.rule.name: e.rule for e in explanations}
    groups = {
        e.rule.name: keys.of(e.rule.group_getters, event) if e.rule.group_getters else NO_GROUP
        for e in explanations
        if e.matches and e.rule.enabled
    }
    before = {rule: snapshot(engine.state, rule, group) for rule, group in groups.items()}
    batch = evaluate_lines([text], parser.fast, engine, arrival, lambda _: line, reader)
    firing = next((f for _, f, timer in batch.firings if isinstance(f, Firing) and not timer), None)
    fired = {r.name for r in firing.rules} if firing is not None else set()
    outcomes: dict[str, str] = {}
    for name, group in groups.items():
        rule = by_name[name]
        after = snapshot(engine.state, name, group)
        said = outcome(rule, event, at, before[name], after, name in fired)
        outcomes[name] = f"group {group_text(rule.group_by, group)}; {said}" if rule.group_by else said
    return ExplainedLine(line, event, at, explanations, outcomes)


def _replay_until(
    stream: BinaryIO,
    line: int,
    engine: Engine,
    parser: Parser,
    reader: TimeReader | None,
    arrival: float,
    name: str,
    max_line_bytes: int,
) -> bytes:
    """Evaluate the lines before `line` as replay does; line `line` itself."""
    seen = 0
    for block, long in blocks(stream, max_line_bytes):
        if line - 1 - seen in long:
            raise LineError(f"{name}:{line}: longer than max_line_bytes ({max_line_bytes} bytes): the source skips it")
        if seen + len(block) >= line:
            earlier = block[: line - 1 - seen]
            if earlier:  # (cut: as replay reaches line N, its block not evaluated to the end)
                evaluate_lines(earlier, parser.fast, engine, arrival, partial(operator.add, seen + 1), reader, cut=True)
            return block[line - 1 - seen]
        evaluate_lines(block, parser.fast, engine, arrival, partial(operator.add, seen + 1), reader)
        seen += len(block)
    raise LineError(f"{name}: there is no line {line}: the file has {seen} line(s)")


def _event(text: bytes, parser: Parser, line: int, name: str) -> Event:
    """The event of line `line`; LineError if it is blank, dropped or not an event."""
    if not text.strip():
        raise LineError(f"{name}:{line}: the line is blank")
    try:
        event = parser.fast(text)
    except ValueError:
        event = parse_mended(parser.fast, text)
    if event is IGNORED:
        raise LineError(f"{name}:{line}: the source's ignore_pattern drops this line")
    if type(event) is not dict:
        raise LineError(f"{name}:{line}: not an event: {parser.why_invalid(line_text(text))}")
    return event


def explained_line_text(explained: ExplainedLine, name: str) -> list[str]:
    """The lines `explain --events` prints: the event, then each rule's explanation."""
    lines = [f"{name}:{explained.line} (event time {rfc3339(explained.time)}): {show(explained.event)}"]
    for explanation in explained.explanations:
        lines += explanation_lines(explanation, explained.outcomes.get(explanation.rule.name))
    return lines
