"""Raw lines -> events. Bad input is an InvalidEvent with a reason, never a crash."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec
import orjson

from rulesd.deferred_regex import when_used
from rulesd.eventtime import EventTime, TimeReader
from rulesd.fieldtypes import CONVERTERS
from rulesd.rules.fields import Event
from rulesd.rules.patterns import compile_source_pattern


class InvalidEvent(ValueError):
    """A line that is not an event; the message is the reason, safe to log."""


def parse_json(line: bytes) -> Event:
    """One JSON object per line (orjson: fast, and strict about UTF-8 and nesting depth)."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"invalid JSON: {_not_utf8(line) or exc}") from None
    if type(value) is not dict:
        raise InvalidEvent(f"not a JSON object but {_kind(value)}")
    return value


def _not_utf8(line: bytes) -> str | None:
    """Where `line` stops being UTF-8, or None if it is UTF-8. orjson says "str is not valid
    UTF-8: surrogates not allowed" at line 1 column 1 for any such byte, wherever it is."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        # (a column counts characters, as an editor does: the bytes before are valid UTF-8)
        column = len(line[: bad.start].decode("utf-8")) + 1
        return f"not valid UTF-8: byte {line[bad.start]:#04x} at column {column}"
    return None


# Lines parsed before any of them is evaluated (see `parse_block`).
BLOCK_LINES = 64

BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark, which some Windows tools write first in a file

# A `\uXXXX` escape of a UTF-16 surrogate: a high one with the low one after it (a pair: one
# character), or either alone. Group 1 is the backslashes before the `u`: an escape only if
# their number is odd (`\\ud800` is a backslash and text).
_SURROGATE_ESCAPE = when_used(
    rb"(\\+)u(?:([dD][89abAB][0-9a-fA-F]{2})(\\u[dD][c-fC-F][0-9a-fA-F]{2})?|[dD][c-fC-F][0-9a-fA-F]{2})"
)  # (JSON's `u` is lower case; its hex digits are either)
_REPLACEMENT = rb"\ufffd"


def parse_mended(parse: Callable[[bytes], Any], line: bytes) -> Any:
    """For a line `parse` refused: `parse` of it mended, or None if nothing needed mending or
    it is still refused. Only refused lines get this second look, so other lines pay nothing.

    Mended are what orjson refuses in valid JSON: a leading byte order mark (taken away), and
    escapes of lone surrogates, each made U+FFFD's (Python's `json.dumps` writes undecodable
    input so, e.g. `"\\udcff"`). Refusing the line would let whoever puts such an escape into a
    user name or a path keep its event from ever being evaluated. Bytes that are not UTF-8
    stay invalid."""
    mended = line[len(BOM) :] if line.startswith(BOM) else line
    if b"\\u" in mended:
        mended = _SURROGATE_ESCAPE().sub(_mend_surrogates, mended)
    if mended == line:
        return None
    try:
        return parse(mended)
    except ValueError:
        return None


def _mend_surrogates(found: re.Match[bytes]) -> bytes:
    """A surrogate escape as it is if it is one of a pair (or no escape at all), else U+FFFD's."""
    slashes, high, low = found.group(1, 2, 3)
    escaped = len(slashes) % 2 == 1
    if escaped and high is not None and low is not None:
        return found.group()  # a pair
    if not escaped and high is None:
        return found.group()  # a backslash, then text
    head = slashes[:-1] + _REPLACEMENT if escaped else found.group()[: len(slashes) + 5]
    return head + (_REPLACEMENT if low is not None else b"")  # a low escape after text is alone


def parse_block(parse: Callable[[bytes], Any], lines: Sequence[bytes]) -> list[Any]:
    """Each line parsed, or None where `parse` refuses it; every line is parsed once.

    Replay and the daemon parse a block of lines and then evaluate its events: the parser's
    and then the engine's code and data each stay in the CPU's caches for a whole block,
    which at 100 rules is ~10% faster than parsing and evaluating line by line.
    """
    events: list[Any] = []
    try:
        events.extend(map(parse, lines))  # most blocks: every line good
    except ValueError:  # orjson's JSONDecodeError and InvalidEvent alike
        # `extend` kept the values before the bad line: go on one by one from the line after it.
        events.append(parse_mended(parse, lines[len(events)]))
    # Also if `map` stopped short (a parser raising StopIteration): the line raises it again here.
    for line in lines[len(events) :]:
        try:
            events.append(parse(line))
        except ValueError:
            events.append(parse_mended(parse, line))
    return events


def parse_text(line: bytes) -> Event:
    """The line as `{"message": line}`."""
    return {"message": decode_line(line)}


def decode_line(line: bytes) -> str:
    """The line as text, without its line ending or a leading byte order mark (patterns
    anchored at `^` must see the line's first character); InvalidEvent if it is not UTF-8."""
    try:
        return line.decode("utf-8").removeprefix("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"invalid UTF-8 at byte {exc.start}") from None


def regex_parser(pattern: str) -> Callable[[bytes], Event]:
    """A parser whose named groups become fields; lines that do not match are invalid."""
    return make_parser(Reading("regex", (pattern,))).explain


class _Ignored:
    """What a parser returns for a line that `ignore_pattern` drops (not an event, not invalid)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "IGNORED"


IGNORED: Final = _Ignored()


class Reading(msgspec.Struct, frozen=True):
    """How a source's lines become events, as configured: the one description that the
    daemon's sources and `rulesd replay --config` both build their parser from.

    `format` is json, text or regex; `patterns` are tried in order (the first that matches
    wins), after the `ignore` patterns, on the line (journald: on MESSAGE); `fields` gives
    captured fields a type (`fieldtypes`); a named source adds `source_name` to every event;
    `time` says where the event's time is and how it is written.
    """

    format: str = "json"
    patterns: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    fields: tuple[tuple[str, str], ...] = ()
    source_name: str | None = None
    time: EventTime | None = None


class FieldMisses(msgspec.Struct):
    """Captured values that did not convert to their field's type: how many, per field,
    and the latest of each (for the warning). Counted by the parser, read by its caller."""

    kinds: dict[str, str] = msgspec.field(default_factory=dict)  # field -> its type, for the warning
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    latest: dict[str, str] = msgspec.field(default_factory=dict)

    def note(self, name: str, text: str) -> None:
        """Count one value of field `name` that did not convert."""
        self.counts[name] = self.counts.get(name, 0) + 1
        self.latest[name] = text


def why_invalid(parse: Callable[[bytes], Event], line: bytes) -> str:
    """Why `line` is not an event, asked of a parser that explains itself (the slow path only)."""
    try:
        parse(line)
    except InvalidEvent as exc:
        return str(exc)
    return "not an event"


class Parser(msgspec.Struct, frozen=True):
    """How a source's lines become events, and how their time is read.

    `fast` runs for every line: for a bad line it raises ValueError or returns something
    that is not a dict (`orjson.loads` itself for JSON lines, with the type checked by the
    caller; IGNORED for a line `ignore_pattern` drops). `explain` runs only for the rare bad
    line, to say why (InvalidEvent). `misses` counts the captured values that did not
    convert; `time` reads the event time (None: the arrival time) and counts its misses.
    """

    fast: Callable[[bytes], Any]
    explain: Callable[[bytes], Event]
    misses: FieldMisses = msgspec.field(default_factory=FieldMisses)
    time: TimeReader | None = None

    def why_invalid(self, line: bytes) -> str:
        """Why `line` is not an event."""
        return why_invalid(self.explain, line)


JSON_PARSER = Parser(orjson.loads, parse_json)
Entry = Callable[[bytes], Event]


def make_parser(reading: Reading = Reading(), entry: Entry | None = None) -> Parser:
    """The parser for `reading`. `entry` is how a source other than plain lines turns a
    line into an event (journald: an entry of journalctl's JSON); the text formats then apply
    to its `message`, and its other fields stay as they are."""
    time = TimeReader(reading.time) if reading.time is not None else None
    misses = FieldMisses(dict(reading.fields))
    if reading.format == "json":
        fast, explain = (orjson.loads, parse_json) if entry is None else (entry, entry)
    elif reading.format in ("text", "regex"):
        extract = _extractor(reading, misses)
        if entry is None:
            fast = explain = _line_parser(extract)
        else:
            fast = explain = _entry_parser(entry, extract)
    else:
        raise ValueError(f"unknown event format {reading.format!r}")
    if reading.source_name is not None:
        fast = _naming(fast, reading.source_name)
        explain = _naming(explain, reading.source_name)
    return Parser(fast, explain, misses, time)


Extract = Callable[[str], "Event | _Ignored"]


def _extractor(reading: Reading, misses: FieldMisses) -> Extract:
    """`extract(text)`: the fields of a line's text by the reading's patterns and types;
    IGNORED for a line an ignore pattern matches; InvalidEvent if no pattern matches."""
    # RE2 runs them (linear time, named groups), refusing what rule regexes refuse.
    ignores = tuple(compile_source_pattern(text) for text in reading.ignore)
    patterns = tuple(compile_source_pattern(text) for text in reading.patterns)
    typed = tuple((name, CONVERTERS[kind]) for name, kind in reading.fields)
    unmatched = unmatched_reason(len(patterns))

    def extract(text: str) -> Event | _Ignored:
        data = text.encode("utf-8", "surrogatepass")  # RE2 matches the UTF-8 bytes
        for ignore in ignores:
            if ignore.found(data):
                return IGNORED
        if patterns:
            for pattern in patterns:
                found = pattern.fields(data)
                if found is not None:
                    break
            else:
                raise InvalidEvent(unmatched)
            fields: Event = found
            fields.setdefault("message", text)
        else:
            fields = {"message": text}
        for name, convert in typed:
            value = fields.get(name)
            if type(value) is str:
                converted = convert(value)
                if converted is None:
                    del fields[name]
                    misses.note(name, value)
                else:
                    fields[name] = converted
        return fields

    return extract


def unmatched_reason(patterns: int) -> str:
    """Why a line that none of `patterns` source patterns matches is not an event."""
    return "does not match the source pattern" if patterns == 1 else f"matches none of the {patterns} source patterns"


def _line_parser(extract: Extract) -> Callable[[bytes], Any]:
    def parse(line: bytes) -> Any:
        return extract(decode_line(line))

    return parse


def _entry_parser(entry: Entry, extract: Extract) -> Callable[[bytes], Any]:
    def parse(line: bytes) -> Any:
        event = entry(line)
        message = event.get("message")
        if type(message) is not str:
            raise InvalidEvent("the entry has no message to apply the source's format to")
        fields = extract(message)
        if fields is IGNORED:
            return fields
        event.update(fields)  # type: ignore[arg-type]
        return event

    return parse


def _naming(parse: Callable[[bytes], Any], name: str) -> Callable[[bytes], Any]:
    """`parse` adding `source_name` to each event it returns (also over a field of that name)."""
    return Named(parse, name)


class Named:
    """A named source's parser: `parse`, adding `source_name` to each event it returns (also
    over a field of that name). The pipeline reads `parse` and `name` to judge JSON lines
    from views all the same."""

    __slots__ = ("name", "parse")

    def __init__(self, parse: Callable[[bytes], Any], name: str) -> None:
        self.parse, self.name = parse, name

    def __call__(self, line: bytes) -> Any:
        event = self.parse(line)
        if type(event) is dict:
            event[SOURCE_NAME] = self.name
        return event


SOURCE_NAME: Final = "source_name"


def _kind(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")
