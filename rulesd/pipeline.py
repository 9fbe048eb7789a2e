"""The central step of rulesd: lines -> events -> firings -> alerts, one batch at a time.

The daemon, `rulesd replay` and `rulesd test` all run their input through these functions,
so that none of them can judge an event differently from another. They are pure (the
engine's state aside): reading the input and committing the alerts with the source
positions are the callers' I/O.

Lines are parsed a block at a time and then evaluated (see `events.parse_block`): the
parser's and then the engine's code and data each stay in the CPU's caches for a block.

Rules with timers (absence, a sequence's absent step, resolve) make the engine keep a clock
of event time; their firings and closings are alerts of their own (`Engine.out`), placed in
the batch before the event at whose time they were found due.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import msgspec
import orjson

from rulesd.alerting.alias import alert_alias, rule_names
from rulesd.alerting.payload import AlertSettings, build_payload, close_body, message
from rulesd.engine import Closing, Engine, Firing
from rulesd.engine.values import Matched
from rulesd.events import BLOCK_LINES, IGNORED, Named, parse_block, parse_mended
from rulesd.eventtime import TimeReader
from rulesd.rules.fields import Event
from rulesd.rules.model import Rule
from rulesd.rules.view import INVALID, MAX_DEPTH, Viewer

Evaluate = Callable[[Event, float], Firing | None]


class Batch(msgspec.Struct):
    """What evaluating a run of lines (or events) found.

    Indices count from the first line of the run: `invalid` are the lines that are not
    events (the caller tells blank lines from bad ones if it cares), `ignored` how many lines
    the source's `ignore_pattern` dropped; `firings` are what the engine found, in order, each
    with the index of the event being evaluated then and whether a timer fired it (its event
    is then the one that armed the timer, from `origin`).
    """

    lines: int = 0
    invalid: list[int] = msgspec.field(default_factory=list)
    firings: list[tuple[int, Firing | Closing, bool]] = msgspec.field(default_factory=list)
    ignored: int = 0

    @property
    def events(self) -> int:
        """How many lines were events."""
        return self.lines - len(self.invalid) - self.ignored


class Alert:
    """A request to queue: an alert to create (`payload` is its body) or, with `close`, the
    alias of an alert to close (`payload` is the close request's body).

    `index` is the event being evaluated when it was found; `origin` says where the event it
    carries came from when that is another (a timer's), None otherwise. `fired` is the tuple of
    rules `rules` names, as the engine shares it between the firings of one combination (hashed
    by its identity: see `rulesd.interned`), `()` for a close: per-alert memos and counts key
    by it rather than by the names, a tuple hashed name by name (41 an alert at 1,000 held-out
    rules) each time it is looked up.

    An alert's body is built from its firing when first asked for: `rulesd replay`'s text lines
    show only its `headline()`, a fraction of the work (the description's indented event JSON,
    details, tags and responders are most of it); the daemon asks for every body at once.
    """

    __slots__ = (
        "_firing",
        "_payload",
        "_settings",
        "_source",
        "_source_of",
        "close",
        "fired",
        "index",
        "origin",
        "reasons",
        "rules",
        "timer",
    )

    def __init__(
        self,
        index: int,
        rules: tuple[str, ...],
        payload: dict[str, Any] | None = None,
        close: str | None = None,
        origin: Any = None,
        timer: bool = False,
        *,
        firing: Firing | None = None,
        settings: AlertSettings | None = None,
        source: str = "",
        reasons: tuple[str, ...] = (),
    ) -> None:
        if (payload is None) == (firing is None):
            raise ValueError("an alert has either its body or the firing to build it from")
        self.index, self.rules, self.close, self.origin, self.timer = index, rules, close, origin, timer
        self.fired: tuple[Rule, ...] = () if firing is None else firing.rules
        self.reasons = reasons  # a close's: why each rule let go ("": its group recovered), or none
        self._payload, self._firing, self._settings, self._source = payload, firing, settings, source
        self._source_of: Callable[[int], str] | None = None

    @classmethod
    def of_firing(
        cls,
        index: int,
        rules: tuple[str, ...],
        firing: Firing,
        settings: AlertSettings,
        source_of: Callable[[int], str],
    ) -> Alert:
        """The alert of the firing of the event evaluated at `index` (not a timer's), whose
        "Event Source" is `source_of(index)`, said when the body is built: `replay` of one
        event in five alerting makes tens of thousands of alerts whose body is never built,
        and the keyword call of `Alert(...)` cost as much as the rest of each (in process)."""
        alert: Alert = object.__new__(cls)
        alert.index, alert.rules, alert.fired, alert.timer, alert.reasons = index, rules, firing.rules, False, ()
        alert.close = alert.origin = alert._payload = None
        alert._firing, alert._settings, alert._source, alert._source_of = firing, settings, "", source_of
        return alert

    @property
    def payload(self) -> dict[str, Any]:
        """The request's body."""
        if self._payload is None:
            assert self._firing is not None
            source = self._source if self._source_of is None else self._source_of(self.index)
            self._payload = build_payload(self._firing, self._settings or AlertSettings(), source)
        return self._payload

    def headline(self) -> tuple[str, str, str]:
        """The body's priority, message and alias, without building the rest of it: made here
        as `build_payload` makes them (every text line of a replay asks for one; a call of a
        function of the payload's for it cost a frame more per alert)."""
        firing = self._firing
        if firing is None or self._payload is not None:
            p = self.payload
            return p["priority"], p["message"], p["alias"]
        rules, event = firing.rules, firing.event
        lead = rules[0]  # (once: see `alert_alias`)
        return lead.alert.priority, message(lead, event), firing.alias or alert_alias(rules, event)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Alert):
            return NotImplemented
        mine = (self.index, self.rules, self.close, self.origin, self.timer)
        return (
            mine == (other.index, other.rules, other.close, other.origin, other.timer) and self.payload == other.payload
        )

    __hash__ = None  # type: ignore[assignment]  # equal by value, like the body it holds

    def __repr__(self) -> str:
        return f"Alert(index={self.index}, rules={self.rules!r}, close={self.close!r}, timer={self.timer})"


def evaluate_lines(
    lines: Sequence[bytes],
    parse: Callable[[bytes], Any],
    engine: Engine,
    arrival: float,
    source: Callable[[int], Any] | None = None,
    time: TimeReader | None = None,
    cut: bool = False,
) -> Batch:
    """Parse and evaluate `lines`, all arriving at `arrival`.

    `parse` returns an event (a dict), IGNORED for a line to drop, or raises ValueError /
    returns another non-dict for a bad line (`Parser.fast`). `time` reads the events' time
    (the source's reader; None: their arrival time). `source(index)` says where a line came
    from; it is asked only for an event a timer keeps (its alert carries it later).

    Events no rule matches move the clock at the end of each block of BLOCK_LINES; `cut`:
    `lines` stop short of the block they are the start of (`rulesd explain --events` stops
    before line N), so a last block cut short leaves the clock where it was at that line.
    """
    batch = Batch(len(lines))
    if engine.timed:
        engine.source = source
    if engine.waiting and (start := _first_time(lines, parse, engine, arrival, time)) is not None:
        engine.advance(start)
    # JSON lines are judged from views of the fields the rules' index reads (see `rulesd.rules.view`).
    viewer = _viewer(parse, engine, time, lines=lines)
    if viewer is not None:
        for start, block in _numbered_blocks(lines):
            views = _views(block, viewer)
            if viewer.evaluate_block is not None:  # no timers: the loop is in the generated code
                viewer.evaluate_block(views, block, start, arrival, batch.invalid, batch.firings)
            else:
                ends = not cut or len(block) == BLOCK_LINES
                _evaluate_viewed_timed(block, views, start, viewer, parse, engine, time, arrival, batch, ends)
        return batch
    evaluate = engine.evaluator(time)
    for start, block in _numbered_blocks(lines):
        events = parse_block(parse, block)
        if engine.timed:
            ends = not cut or len(block) == BLOCK_LINES
            _evaluate_timed(events, start, engine, evaluate, time, arrival, batch, ends)
        else:
            _evaluate(events, start, evaluate, arrival, batch)
    return batch


def _first_time(
    lines: Sequence[bytes], parse: Callable[[bytes], Any], engine: Engine, arrival: float, time: TimeReader | None
) -> float | None:
    """The first event's time, where the engine's clock starts for the rules that start then
    (expected groups, learning): the first event's, whichever rule it concerns, not the first
    that a rule matches, which may come much later. None without an event."""
    for line in lines:
        try:
            event = parse(line)
        except ValueError:
            continue
        if type(event) is dict:
            return engine.time_of(event, arrival, time)
    return None


def _numbered_blocks(lines: Sequence[bytes]) -> Sequence[tuple[int, Sequence[bytes]]]:
    """The blocks of `lines` evaluated at a time, each with the index of its first line."""
    if len(lines) <= BLOCK_LINES:  # replay's blocks are one block already: no copy of them
        return [(0, lines)]
    return [(i, lines[i : i + BLOCK_LINES]) for i in range(0, len(lines), BLOCK_LINES)]


def _evaluate(events: list[Any], start: int, evaluate: Evaluate, arrival: float, batch: Batch) -> None:
    """The hot path, for rule sets without timers: locals only, nothing per event but the
    type check and the engine's call."""
    invalid, firings = batch.invalid, batch.firings
    for i, event in enumerate(events, start):
        if type(event) is not dict:
            if event is IGNORED:
                batch.ignored += 1
            else:
                invalid.append(i)
            continue
        firing = evaluate(event, arrival)
        if firing is not None:
            firings.append((i, firing, False))


def _viewer(
    parse: Callable[[bytes], Any],
    engine: Engine,
    time: TimeReader | None,
    match: bool = False,
    lines: Sequence[bytes] = (),
) -> Viewer | None:
    """The engine's viewer (`match`: its match viewer) for lines that `parse` reads as JSON (a
    named source's too), else None; `lines`, the first it views (see `Engine.viewer`)."""
    json = parse.parse if type(parse) is Named else parse
    if json is not orjson.loads:
        return None
    return engine.viewer(time, parse, matching=match, lines=lines)


def _views(lines: Sequence[bytes], viewer: Viewer) -> list[Any]:
    """Each JSON line's view, or None where the view refuses it (not JSON, not an object, not
    UTF-8: a line that is not ASCII has its UTF-8 checked, as the view checks only the fields
    it reads)."""
    decode, refused, deep = viewer.decode, viewer.refused, viewer.deep
    views: list[Any] = []
    joined = b"".join(lines)
    if joined.isascii() and not (deep and max(map(len, lines)) > MAX_DEPTH and _brackets(joined) > MAX_DEPTH):
        try:  # most blocks: one test, and every line's view at once
            views.extend(map(decode, lines))
        except refused:
            views.append(None)
    for line in lines[len(views) :]:
        if deep and len(line) > MAX_DEPTH and _brackets(line) > MAX_DEPTH:  # might nest deeper than orjson allows
            views.append(None)
            continue
        try:
            if not line.isascii():
                line.decode()
            views.append(decode(line))
        except refused:
            views.append(None)
    if viewer.stamp is not None:  # a named source's name, over the line's own `source_name`
        attribute, text = viewer.stamp
        for view in views:
            if view is not None:
                setattr(view, attribute, text)
    return views


def _brackets(text: bytes) -> int:
    """How many arrays and objects `text` may open: a bound on its nesting."""
    return text.count(b"[") + text.count(b"{")


def _evaluate_viewed_timed(
    lines: Sequence[bytes],
    views: list[Any],
    start: int,
    viewer: Viewer,
    parse: Callable[[bytes], Any],
    engine: Engine,
    time: TimeReader | None,
    arrival: float,
    batch: Batch,
    ends: bool = True,
) -> None:
    """`_evaluate_timed` for JSON lines, from their `views`: the block's last event is parsed
    whole to move the clock to its time (`ends`: the block ends here)."""
    evaluate_view, whole = viewer.evaluate, viewer.whole
    assert evaluate_view is not None, "a viewer for timers judges one line per call"
    invalid, firings, out = batch.invalid, batch.firings, engine.out
    last, before = -1, len(invalid)
    for i, view, line in zip(range(start, start + len(lines)), views, lines, strict=True):
        engine.position = i
        firing = evaluate_view(view, line, arrival) if view is not None else whole(line, arrival)
        if firing is INVALID:
            invalid.append(i)
            continue
        last = i
        if out:
            _take(out, i, firings)
        if firing is not None:
            firings.append((i, firing, False))
    # Events that concern no rule move the clock too (a silence shows in other events): to the
    # time of the block's last event.
    end = _last_event(lines, start, last, set(invalid[before:]), parse) if ends else None
    if end is not None:
        j, event = end
        engine.position = j
        engine.reach(engine.time_of(event, arrival, time))
        if out:
            _take(out, j, firings)


def _last_event(
    lines: Sequence[bytes], start: int, last: int, skipped: set[int], parse: Callable[[bytes], Any]
) -> tuple[int, Any] | None:
    """The last event of a block judged from views, at or before index `last`, parsed whole by
    orjson (as without views, a number beyond a double where no rule reads makes a line no
    event, so the one before it is taken); None if there is none."""
    for j in range(last, start - 1, -1):
        if j in skipped:
            continue
        try:
            return j, parse(lines[j - start])
        except ValueError:
            event = parse_mended(parse, lines[j - start])
        if event is not None:
            return j, event
    return None


def _evaluate_timed(
    events: list[Any],
    start: int,
    engine: Engine,
    evaluate: Evaluate,
    time: TimeReader | None,
    arrival: float,
    batch: Batch,
    ends: bool = True,
) -> None:
    """`_evaluate` for rule sets with timers: the engine learns where each event is (a timer
    may keep it), and what its timers fire is taken in order (`ends`: the block ends here)."""
    invalid, firings, out = batch.invalid, batch.firings, engine.out
    last: Any = None
    for i, event in enumerate(events, start):
        if type(event) is not dict:
            if event is IGNORED:
                batch.ignored += 1
            else:
                invalid.append(i)
            continue
        engine.position, last = i, event
        firing = evaluate(event, arrival)
        if out:
            _take(out, i, firings)
        if firing is not None:
            firings.append((i, firing, False))
    if last is not None and ends:
        # Events that concern no rule move the clock too (a silence shows in other events).
        engine.reach(engine.time_of(last, arrival, time))
        if out:
            _take(out, engine.position, firings)


class Matches(msgspec.Struct):
    """The first step of evaluating a run of lines (`match_lines`): what does not need the
    engine's state. `apply_matches` takes it from there, with the state, in order."""

    lines: int = 0
    invalid: list[int] = msgspec.field(default_factory=list)
    ignored: int = 0
    matched: list[tuple[int, Matched]] = msgspec.field(default_factory=list)
    # Where the clock moves on without a match (rules with timers): each block's last event
    # and its time.
    block_ends: list[tuple[int, float]] = msgspec.field(default_factory=list)
    start: float | None = None  # where the clock starts, if rules waited for it (`_first_time`)


def match_lines(
    lines: Sequence[bytes],
    parse: Callable[[bytes], Any],
    engine: Engine,
    arrival: float,
    time: TimeReader | None = None,
) -> Matches:
    """Parse `lines` and find the rules each event matches, without the engine's state (see
    `Engine.matcher`): the part several processes sharing the state can do at once."""
    matches = Matches(len(lines))
    invalid, matched = matches.invalid, matches.matched
    if engine.waiting:
        matches.start = _first_time(lines, parse, engine, arrival, time)
    viewer = _viewer(parse, engine, time, match=True, lines=lines)
    if viewer is not None:  # JSON lines: judged from views, as in `evaluate_lines`
        assert viewer.evaluate_block is not None
        for start, block in _numbered_blocks(lines):
            viewed: list[tuple[int, Any, bool]] = []
            before = len(invalid)
            viewer.evaluate_block(_views(block, viewer), block, start, arrival, invalid, viewed)
            matched += [(i, m) for i, m, _ in viewed]
            if engine.timed and (
                end := _last_event(block, start, start + len(block) - 1, set(invalid[before:]), parse)
            ):
                matches.block_ends.append((end[0], engine.time_of(end[1], arrival, time)))
        return matches
    match = engine.matcher(time)
    for start, block in _numbered_blocks(lines):
        last: Any = None
        for i, event in enumerate(parse_block(parse, block), start):
            if type(event) is not dict:
                if event is IGNORED:
                    matches.ignored += 1
                else:
                    invalid.append(i)
                continue
            last = i, event
            found = match(event, arrival)
            if found is not None:
                matched.append((i, found))
        if last is not None and engine.timed:
            matches.block_ends.append((last[0], engine.time_of(last[1], arrival, time)))
    return matches


def apply_matches(matches: Matches, engine: Engine, source: Callable[[int], Any] | None = None) -> Batch:
    """The second step: the engine's state applied to what `match_lines` found, in order; the
    same batch `evaluate_lines` gives for the same lines and state."""
    batch = Batch(matches.lines, matches.invalid, [], matches.ignored)
    firings, out = batch.firings, engine.out
    engine.source = source
    if matches.start is not None and engine.waiting:  # (another process may have started it)
        engine.advance(matches.start)
    ends = iter(matches.block_ends)
    end = next(ends, None)
    for i, found in matches.matched:
        while end is not None and end[0] < i:
            end = _block_end(engine, end, ends, firings)
        engine.position = i
        firing = engine.apply(found)
        if out:
            _take(out, i, firings)
        if firing is not None:
            firings.append((i, firing, False))
    while end is not None:
        end = _block_end(engine, end, ends, firings)
    return batch


def _block_end(
    engine: Engine,
    end: tuple[int, float],
    ends: Iterator[tuple[int, float]],
    firings: list[tuple[int, Firing | Closing, bool]],
) -> tuple[int, float] | None:
    """Move the clock on to a block's last event time (as `_evaluate_timed` does); the next end."""
    engine.position = end[0]
    engine.reach(end[1])
    if engine.out:
        _take(engine.out, end[0], firings)
    return next(ends, None)


def evaluate_events(
    events: Iterable[tuple[Event | None, float]], engine: Engine, source: Callable[[int], Any]
) -> Batch:
    """Evaluate events that are values already (a rule test's), each with its own time.

    A `None` event with a time only moves the clock on (a rule test's `advance` step).
    """
    batch = Batch()
    engine.source = source
    out = engine.out
    for i, (event, time) in enumerate(events):
        batch.lines += 1
        if event is None:
            engine.advance(time)
            firing = None
        else:
            engine.position = i
            firing = engine.evaluate(event, time)
            engine.reach(engine.time_of(event, time, engine.time))
        if out:
            _take(out, i, batch.firings)
        if firing is not None:
            batch.firings.append((i, firing, False))
    return batch


def advance(engine: Engine, now: float) -> Batch:
    """Move the engine's clock on to `now` (the daemon, while no event comes): what fires then."""
    engine.advance(now)
    return pending(engine)


def pending(engine: Engine) -> Batch:
    """What the engine found and no batch took yet: what a timer fired, or the closings a
    reload (or a restart, or a shared state restored) made of alerts its rules left open.
    The daemon takes them before a batch of lines, since the rule sets without timers take
    nothing while evaluating, and commits them with the state that no longer holds them."""
    batch = Batch()
    if engine.out:
        _take(engine.out, 0, batch.firings)
    return batch


def _take(out: list[Firing | Closing], index: int, firings: list[tuple[int, Firing | Closing, bool]]) -> None:
    firings.extend([(index, found, True) for found in out])
    out.clear()


def build_alerts(
    batch: Batch,
    settings: AlertSettings,
    source_of: Callable[[int], str],
    origin_source: Callable[[Any], str] = str,
) -> list[Alert]:
    """The requests of a batch's firings and closings.

    `source_of(index)` says where an event came from (the payload's "Event Source");
    `origin_source(origin)` says it of an event a timer kept.
    """
    alerts: list[Alert] = []
    for i, found, timer in batch.firings:
        if isinstance(found, Closing):
            body = close_body(found, settings)
            alerts.extend(
                Alert(i, found.rules, body, alias, timer=timer, reasons=found.reasons) for alias in found.aliases
            )
            continue
        names = rule_names(found.rules)
        if not timer and found.origin is None:  # (an event's own firing: nearly every alert)
            alerts.append(Alert.of_firing(i, names, found, settings, source_of))
            continue
        where = source_of(i) if not timer else (origin_source(found.origin) if found.origin is not None else "")
        alerts.append(Alert(i, names, None, None, found.origin, timer, firing=found, settings=settings, source=where))
    return alerts
