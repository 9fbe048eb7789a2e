"""`rulesd replay`: evaluate rules over a file of events, offline, read as a configured source
reads them (by default JSON lines), and report how the lines fared, like `fail2ban-regex`."""

from __future__ import annotations

import math
import operator
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, BinaryIO

import msgspec

from rulesd.alerting.payload import AlertSettings
from rulesd.engine import Engine
from rulesd.engine.core import Limits
from rulesd.events import JSON_PARSER, Parser, Reading, unmatched_reason
from rulesd.eventtime import EventTime, TimeReader
from rulesd.pipeline import Alert, build_alerts, evaluate_lines
from rulesd.printable import one_line
from rulesd.replay_blocks import blocks
from rulesd.rules.model import Rule, RuleSet
from rulesd.sources.lines import MAX_LINE_BYTES, line_text

SAMPLES = 5  # invalid (unmatched) lines the summary shows
# Tuples of rules that fired counted apart before their counts go to the rules' (see `replay`):
# the engine makes a combination's tuple again once it has forgotten it, so they are bounded.
FIRED_KEPT = 4096
SAMPLE_CHARS = 200


class Sample(msgspec.Struct, frozen=True):
    """An invalid line as the summary shows it: its number, its text (cut short) and why."""

    line: int
    text: str
    reason: str


class ReplaySummary(msgspec.Struct):
    """What a replay saw."""

    events: int = 0
    invalid: int = 0
    alerts: int = 0
    closes: int = 0
    firings: Counter[str] = msgspec.field(default_factory=Counter)
    lines: int = 0
    blank: int = 0
    ignored: int = 0  # dropped by the source's ignore_pattern
    too_long: int = 0  # skipped, as the source skips them: longer than its max_line_bytes
    samples: list[Sample] = msgspec.field(default_factory=list)  # the first SAMPLES invalid lines
    unconverted: dict[str, int] = msgspec.field(default_factory=dict)  # per field: values left out
    time: EventTime | None = None
    untimed: int = 0  # events evaluated at the start time: their time missing, unreadable or too far ahead
    latest_untimed: str = ""  # the latest of them, as `TimeReader.describe_miss` says


class ReplayedAlert(msgspec.Struct, frozen=True, eq=False):
    """An alert that would be sent (or, with `close`, the alias of one that would be closed),
    with the line of its event (0: none, an expected group never seen). Its body is built when
    first asked for (see `pipeline.Alert`): the text lines show only its `headline()`."""

    line: int
    alert: Alert  # (its `index` counts from the block it was found in)

    @property
    def rules(self) -> tuple[str, ...]:
        """The rules that fired, lead first (or whose alerts close)."""
        return self.alert.rules

    @property
    def close(self) -> str | None:
        """The alias of the alert to close, for a closing."""
        return self.alert.close

    @property
    def payload(self) -> dict[str, Any]:
        """The request's body, as the daemon would queue it."""
        return self.alert.payload

    def headline(self) -> tuple[str, str, str]:
        """The body's priority, message and alias, without building the rest of it."""
        return self.alert.headline()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReplayedAlert):
            return NotImplemented
        mine, theirs = (self.line, self.rules, self.close), (other.line, other.rules, other.close)
        return mine == theirs and self.payload == other.payload

    __hash__ = None  # type: ignore[assignment]  # equal by value, like the body it holds


def replay(
    ruleset: RuleSet,
    stream: BinaryIO,
    *,
    name: str,
    settings: AlertSettings,
    parser: Parser = JSON_PARSER,
    time_field: str | None = None,
    start: float | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    limits: Limits = Limits(),
    on_invalid: Callable[[int, str], None] = lambda line, reason: None,
    block_done: Callable[[], None] = lambda: None,
) -> Iterator[ReplayedAlert | ReplaySummary]:
    """Yield each alert as it would be sent, then the summary.

    Events are read and evaluated a block at a time (see `blocks`): `block_done` is called once
    the alerts of a block have all been yielded, before the next block is read.

    Lines become events through `parser` (a configured source's, from
    `sources.parsers.source_parser`, or JSON lines), whose time reader gives event times; or
    `time_field` is read as epoch seconds or RFC 3339. Without either, every event counts as
    arriving at `start` (default: now); an event whose time cannot be read (or is too far after
    `start`) counts at the latest event time before it (see `replay_engine`). Lines longer
    than `max_line_bytes` (the configured source's, else the sources' default) are skipped and
    counted, as the source skips them, and never held whole (see `replay_blocks`).
    The state is kept within `limits` (the configuration's), as the daemon keeps it: the groups
    they forget, and the open alerts they close, are the daemon's.
    """
    engine, time_reader = replay_engine(ruleset, parser, time_field, limits)
    arrival = time.time() if start is None else start
    summary = ReplaySummary(time=time_reader.spec if time_reader else None)
    fast = parser.fast
    lineno = 0  # events are the lines neither blank, invalid nor ignored
    # Alerts counted by the rules that fired, each rule's name counted at the end: the same
    # dozens of rules alike fire together again and again, and the engine shares one tuple of
    # them, hashed by its identity, between their firings (`Alert.fired`).
    fired: Counter[tuple[Rule, ...]] = Counter()
    for block, long in blocks(stream, max_line_bytes):
        first = lineno + 1
        # A timer keeps its event's line number; its alert names it.
        batch = evaluate_lines(block, fast, engine, arrival, partial(operator.add, first), time_reader)
        summary.ignored += batch.ignored
        for i in batch.invalid:
            if i in long:
                summary.too_long += 1
                on_invalid(lineno + i + 1, f"longer than max_line_bytes ({max_line_bytes} bytes): {long[i]} bytes")
            elif block[i].strip():
                _invalid(summary, parser, lineno + i + 1, block[i], on_invalid)
            else:
                summary.blank += 1
        for alert in build_alerts(batch, settings, partial(_line_of, name, first), partial(_line_of, name, 0)):
            if alert.close is not None:
                summary.closes += 1
                yield ReplayedAlert(first + alert.index, alert)
                continue
            summary.alerts += 1
            fired[alert.fired] += 1
            yield ReplayedAlert((alert.origin or 0) if alert.timer else first + alert.index, alert)
        if len(fired) >= FIRED_KEPT:
            _count_firings(fired, summary.firings)
        lineno += len(block)
        block_done()
    _count_firings(fired, summary.firings)
    summary.lines = lineno
    summary.events = lineno - summary.blank - summary.invalid - summary.ignored - summary.too_long
    summary.unconverted = dict(parser.misses.counts)
    if time_reader is not None and time_reader.misses:
        summary.untimed, summary.latest_untimed = time_reader.misses, time_reader.describe_miss()
    yield summary


def _count_firings(fired: Counter[tuple[Rule, ...]], firings: Counter[str]) -> None:
    """Add the alerts of each tuple of rules in `fired` to its rules' counts, in the order the
    tuples first fired (a rule is counted where it first fired, as before any was let go), and
    let the tuples go."""
    for rules, count in fired.items():
        for rule in rules:
            firings[rule.name] += count
    fired.clear()


def replay_engine(
    ruleset: RuleSet, parser: Parser, time_field: str | None, limits: Limits = Limits()
) -> tuple[Engine, TimeReader | None]:
    """The engine that replays events read by `parser` within `limits`, and what reads their
    time: the parser's reader, else `time_field` (epoch seconds or RFC 3339), else none
    (arrival time).

    An event without a (believable) time counts at the engine's clock, as if read right after
    the events before it, as the daemon would have read it: not at the replay's start, which
    would jump the clock from the log's times to now and make every timer due at once."""
    time_reader = parser.time or (TimeReader(EventTime(time_field)) if time_field else None)
    engine = Engine(ruleset, time=time_reader, saved=False, limits=limits)
    if time_reader is not None:
        time_reader.untimed = partial(_at_clock, engine)
    return engine, time_reader


def _at_clock(engine: Engine, arrival: float) -> float:
    """The engine's clock; `arrival` (the replay's start) before any time is known."""
    return engine.now if engine.now > -math.inf else arrival


def _invalid(
    summary: ReplaySummary, parser: Parser, lineno: int, line: bytes, on_invalid: Callable[[int, str], None]
) -> None:
    """Count an invalid line, keep it as a sample if it is among the first, and pass it on."""
    summary.invalid += 1
    reason = parser.why_invalid(line_text(line))  # (orjson counts a cut line's newline)
    if len(summary.samples) < SAMPLES:
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        cut = text[:SAMPLE_CHARS] + ("…" if len(text) > SAMPLE_CHARS else "")
        summary.samples.append(Sample(lineno, cut, reason))
    on_invalid(lineno, reason)


def _line_of(name: str, first: int, index: int) -> str:
    """The "Event Source" of the line `index` lines after line `first` of the file `name`."""
    return f"{name}:{first + index}"


def summary_text(summary: ReplaySummary, reading: Reading | None = None) -> str:
    """The summary as replay prints it; with the `reading` of a configured source, also how
    its lines fared (matched, not matched with the first few, ignored), the field values that
    did not convert and the events whose time could not be read."""
    lines = [
        f"events: {summary.events}, invalid lines: {summary.invalid}"
        + (f", lines longer than max_line_bytes (skipped): {summary.too_long}" if summary.too_long else "")
        + f", alerts: {summary.alerts}"
        + (f", closes: {summary.closes}" if summary.closes else ""),
        *(f"  {name}: {count} firing(s)" for name, count in sorted(summary.firings.items())),
    ]
    if reading is not None and reading.format != "json":
        lines += _line_report(summary, reading)
    if reading is not None and reading.fields:
        left_out = ", ".join(f"{name} ({kind}) {summary.unconverted.get(name, 0)}" for name, kind in reading.fields)
        lines.append(f"values that did not convert, left out of their event: {left_out}")
    if summary.time is not None:
        lines.append(
            f"event time (field {summary.time.field}, time_format {summary.time.format}): "
            f"{summary.untimed} event(s) without a readable time, evaluated at the latest event time before them "
            "(an event's time is read when a rule may match it)"
            + (f"; latest {summary.latest_untimed}" if summary.untimed else "")
        )
    return "\n".join(lines)


def _line_report(summary: ReplaySummary, reading: Reading) -> list[str]:
    """`fail2ban-regex`'s report: how many lines the patterns matched, and the first that missed."""
    kept, missed = ("matched", "did not match") if reading.format == "regex" else ("kept", "invalid")
    lines = [
        f"{summary.lines} lines: {summary.events} {kept}, {summary.invalid} {missed}, "
        f"{summary.ignored} ignored (ignore_pattern), {summary.blank} blank"
        + (f", {summary.too_long} too long (max_line_bytes)" if summary.too_long else "")
    ]
    if summary.samples:
        header = "lines that did not match" if reading.format == "regex" else "invalid lines"
        lines.append(f"{header} ({summary.invalid}; the first {len(summary.samples)} shown):")
        usual = unmatched_reason(len(reading.patterns))
        for sample in summary.samples:
            why = "" if sample.reason == usual else f"  [{sample.reason}]"
            lines.append(f"  line {sample.line}: {one_line(sample.text)}{why}")
    return lines
