"""Lines to events: a block is parsed at once, and a bad line in it costs only its own event."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from rulesd.events import parse_block, parse_json, parse_text, regex_parser


@pytest.mark.parametrize(
    ("parse", "lines", "expected"),
    [
        (orjson.loads, [b'{"a": 1}\n', b"[2]\n"], [{"a": 1}, [2]]),
        (orjson.loads, [b'{"a": 1}\n', b"not json\n", b"\n", b'{"b": 2}'], [{"a": 1}, None, None, {"b": 2}]),
        (parse_json, [b"[2]\n", b'{"a": 1}\n'], [None, {"a": 1}]),  # InvalidEvent: not an object
        (parse_text, [b"ok\n", b"\xff\xfe\n"], [{"message": "ok"}, None]),
        (regex_parser(r"(?P<level>[A-Z]+) "), [b"x\n", b"ERROR y\n"], [None, {"level": "ERROR", "message": "ERROR y"}]),
        (orjson.loads, [], []),
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
