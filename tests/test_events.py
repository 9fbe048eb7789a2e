"""Lines to events: a block is parsed at once, and a bad line in it costs only its own event."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from rulesd.events import IGNORED, Reading, make_parser, parse_block, parse_json, parse_text, regex_parser
from rulesd.sources.journald import journal_event


@pytest.mark.parametrize(
    ("parse", "lines", "expected"),
    [
        (orjson.loads, [b'{"a": 1}\n', b"[2]\n"], [{"a": 1}, [2]]),
        (orjson.loads, [b'{"a": 1}\n', b"not json\n", b"\n", b'{"b": 2}'], [{"a": 1}, None, None, {"b": 2}]),
        (parse_json, [b"[2]\n", b'{"a": 1}\n'], [None, {"a": 1}]),  # InvalidEvent: not an object
        (parse_text, [b"ok\n", b"\xff\xfe\n"], [{"message": "ok"}, None]),
        (regex_parser(r"(?P<level>[A-Z]+) "), [b"x\n", b"ERROR y\n"], [None, {"level": "ERROR", "message": "ERROR y"}]),
        (orjson.loads, [], []),
        # A leading byte order mark (Windows tools write one first in a file) is taken away.
        (orjson.loads, [b'\xef\xbb\xbf{"a": 1}\n', b'{"b": 2}\n'], [{"a": 1}, {"b": 2}]),
        (orjson.loads, [b"x\n", b'\xef\xbb\xbf{"a": 1}\n', b"\xef\xbb\xbfx\n"], [None, {"a": 1}, None]),
        (parse_text, [b"\xef\xbb\xbfok\r\n"], [{"message": "ok"}]),
        (regex_parser(r"^(?P<level>[A-Z]+) "), [b"\xef\xbb\xbfERROR y\n"], [{"level": "ERROR", "message": "ERROR y"}]),
        (make_parser(Reading(source_name="s")).fast, [b'\xef\xbb\xbf{"a": 1}\n'], [{"a": 1, "source_name": "s"}]),
        # Escapes of lone surrogates (what Python's json.dumps writes for undecodable input) are
        # U+FFFD's; a pair is one character, and an escaped backslash before `u` is text.
        (orjson.loads, [b'{"user": "x\\udcff"}\n'], [{"user": "x\ufffd"}]),
        (
            orjson.loads,
            [b'{"a": "\\ud800\\ud800", "\\udc00": "\\ud83d\\ude00"}\n'],
            [{"a": "\ufffd\ufffd", "\ufffd": "\U0001f600"}],
        ),
        (orjson.loads, [b'{"a": "\\\\ud800\\udc00"}\n'], [{"a": "\\ud800\ufffd"}]),
        (orjson.loads, [b'{"a": "\\\\\\ud800 x"}\n'], [{"a": "\\\ufffd x"}]),
        (
            orjson.loads,
            [b'\xef\xbb\xbf{"a": "\\udcff"}\n', b'{"a": "\\udcff"\n', b'{"a": "\xff\\udcff"}\n'],
            [{"a": "\ufffd"}, None, None],
        ),
        (make_parser(Reading(source_name="s")).fast, [b'{"a": "\\udcff"}\n'], [{"a": "\ufffd", "source_name": "s"}]),
        # Only JSON's escapes are mended: `\U` is none, and the line stays invalid.
        (orjson.loads, [b'{"a": "\\Ud800"}\n', b'{"a": "\\uDC0f"}\n'], [None, {"a": "\ufffd"}]),
    ],
)
def test_each_line_is_parsed_and_a_bad_one_is_none(
    parse: Callable[[bytes], Any], lines: list[bytes], expected: list[Any]
) -> None:
    """Good lines give their value wherever the bad ones are; a bad line gives None."""
    assert expected == parse_block(parse, lines)


def test_an_error_that_is_not_about_the_line_is_not_swallowed() -> None:
    """Only a parser's ValueError marks a bad line; any other error is a bug and propagates."""

    def broken(line: bytes) -> Any:
        raise KeyError(line)

    with pytest.raises(KeyError):
        parse_block(broken, [b"x\n"])


def test_every_line_is_parsed_once_however_many_are_bad() -> None:
    """A source whose pattern most lines miss (a regex source picking errors out of a log)
    costs one parse per line, not a parse of the block again after each bad line."""
    calls: list[bytes] = []
    parse = regex_parser(r"ERROR (?P<what>\w+)")

    def counted(line: bytes) -> Any:
        calls.append(line)
        return parse(line)

    lines = [b"INFO a\n", b"ERROR b\n", b"INFO c\n", b"INFO d\n", b"ERROR e\n", b"INFO f\n"]
    events = parse_block(counted, lines)
    assert ["b", "e"] == [e["what"] for e in events if e is not None]
    assert [None, "b", None, None, "e", None] == [e and e["what"] for e in events]
    assert lines == calls


def test_a_parser_raising_stop_iteration_does_not_cut_the_block_short() -> None:
    """`map` would end quietly at a StopIteration; the block still has a value per line, or
    the error surfaces."""

    def stops(line: bytes) -> Any:
        if line == b"stop\n":
            raise StopIteration
        return line

    with pytest.raises(StopIteration):
        parse_block(stops, [b"a\n", b"stop\n", b"b\n"])


SSHD = (
    r"Failed password for (?:invalid user )?(?P<user>\S+) from (?P<ip>\S+) port (?P<port>\d+)",
    r"Invalid user (?P<user>\S+) from (?P<ip>\S+)",
)


def test_patterns_are_tried_in_order_and_the_first_match_gives_its_own_groups() -> None:
    """A list of patterns: each line shape puts the address in its own place."""
    parse = make_parser(Reading("regex", SSHD)).fast
    assert {
        "user": "root",
        "ip": "203.0.113.9",
        "port": "22",
        "message": "Failed password for root from 203.0.113.9 port 22",
    } == parse(b"Failed password for root from 203.0.113.9 port 22\n")
    assert {"user": "admin", "ip": "198.51.100.4", "message": "Invalid user admin from 198.51.100.4"} == parse(
        b"Invalid user admin from 198.51.100.4\n"
    )


def test_a_line_no_pattern_matches_is_invalid_and_says_so() -> None:
    """Unmatched lines are not events; the explanation names how many patterns were tried."""
    parser = make_parser(Reading("regex", SSHD))
    assert [None] == parse_block(parser.fast, [b"Accepted publickey for alice\n"])
    assert "matches none of the 2 source patterns" == parser.why_invalid(b"Accepted publickey for alice\n")
    single = make_parser(Reading("regex", SSHD[:1]))
    assert "does not match the source pattern" == single.why_invalid(b"x\n")


def test_ignored_lines_are_dropped_before_the_patterns_and_are_not_invalid() -> None:
    """`ignore_pattern` wins over a matching pattern, and the parser says IGNORED, not invalid."""
    parser = make_parser(Reading("regex", SSHD, ignore=(r"from 10\.", r"^pam_unix")))
    lines = [
        b"Failed password for root from 10.0.0.1 port 22\n",
        b"pam_unix(sshd): session opened\n",
        b"Invalid user x from 1.2.3.4\n",
    ]
    assert [IGNORED, IGNORED, {"user": "x", "ip": "1.2.3.4", "message": "Invalid user x from 1.2.3.4"}] == parse_block(
        parser.fast, lines
    )
    text = make_parser(Reading("text", ignore=("DEBUG",)))
    assert [IGNORED, {"message": "INFO up"}] == parse_block(text.fast, [b"DEBUG x\n", b"INFO up\n"])


def test_typed_fields_convert_and_a_value_that_does_not_is_left_out_and_counted() -> None:
    """`fields` turns captures into numbers and booleans; a failed conversion drops only that field."""
    pattern = r"(?P<status>\S+) (?P<latency>\S+) (?P<cached>\S+)"
    parser = make_parser(
        Reading("regex", (pattern,), fields=(("status", "int"), ("latency", "float"), ("cached", "bool")))
    )
    assert {"status": 503, "latency": 0.25, "cached": True, "message": "503 0.25 yes"} == parser.fast(b"503 0.25 yes\n")
    assert {"latency": 1000.0, "cached": False, "message": "5xx 1e3 OFF"} == parser.fast(b"5xx 1e3 OFF\n")
    assert {"status": 200, "message": "200 - maybe"} == parser.fast(b"200 - maybe\n")
    assert {"status": 1, "latency": 1, "cached": 1} == parser.misses.counts
    assert {"status": "5xx", "latency": "-", "cached": "maybe"} == parser.misses.latest
    assert {"status": "int", "latency": "float", "cached": "bool"} == parser.misses.kinds


def test_a_named_source_puts_its_name_in_every_event() -> None:
    """`source_name` is added to events of every format, over a field of that name in the line."""
    json_parser = make_parser(Reading(source_name="nginx"))
    assert {"a": 1, "source_name": "nginx"} == json_parser.fast(b'{"a": 1, "source_name": "forged"}\n')
    assert "not a JSON object but an array" == json_parser.why_invalid(b"[1]\n")  # still invalid
    regex = make_parser(Reading("regex", (r"(?P<w>\w+)",), source_name="app"))
    assert {"w": "hi", "message": "hi", "source_name": "app"} == regex.fast(b"hi\n")
    assert {"a": 1} == make_parser(Reading()).fast(b'{"a": 1}')  # unnamed: nothing added


def entry_line(message: str, **extra: str) -> bytes:
    """A line of `journalctl --output=json`."""
    fields = {
        "__CURSOR": "c1",
        "__REALTIME_TIMESTAMP": "1700000000000000",
        "_SYSTEMD_UNIT": "ssh.service",
        "_PID": "42",
    }
    return orjson.dumps({**fields, "MESSAGE": message, **extra}) + b"\n"


def test_journal_entries_get_the_text_formats_applied_to_their_message() -> None:
    """regex: the groups of MESSAGE are added to the entry's fields, which stay as they are;
    an entry whose MESSAGE no pattern matches is invalid; text leaves the entry as it is."""
    parser = make_parser(Reading("regex", SSHD, fields=(("port", "int"),)), journal_event)
    event = parser.fast(entry_line("Failed password for root from 203.0.113.9 port 22 ssh2"))
    assert {"user": "root", "ip": "203.0.113.9", "port": 22} == {k: event[k] for k in ("user", "ip", "port")}
    assert ("ssh.service", 42, 1_700_000_000.0) == (event["unit"], event["pid"], event["time"])
    assert "Failed password for root from 203.0.113.9 port 22 ssh2" == event["message"] == event["journal"]["MESSAGE"]
    assert [None] == parse_block(parser.fast, [entry_line("Accepted publickey for alice")])
    text = make_parser(Reading("text", ignore=("^Accepted",)), journal_event)
    assert [IGNORED] == parse_block(text.fast, [entry_line("Accepted publickey for alice")])
    assert journal_event(entry_line("hello")) == text.fast(entry_line("hello"))
