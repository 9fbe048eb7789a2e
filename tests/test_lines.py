"""Tests for rulesd.sources.lines: runs of lines, their offsets, and handing them out in batches."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rulesd.events import Reading, make_parser
from rulesd.sources.lines import (
    LineQueue,
    Lines,
    LineSplitter,
    Offsets,
    count_lines,
    line_text,
    runs_of,
    split_lines,
    split_long,
)
from tests.lines_view import JUNK, Line, each_line, offsets, split_as_before

STREAM = b"alpha\r\n\nbravo charlie\n" + b"x" * 50 + b"\ndelta\n"


def expected_lines(stream: bytes, path: str = "p") -> list[Line]:
    """Every line of `stream` that ends in a newline, found the slow way."""
    out, offset = [], 0
    for raw in stream.split(b"\n")[:-1]:
        out.append(Line(raw, path, offset))
        offset += len(raw) + 1
    return out


def test_offsets_count_every_byte_including_cr() -> None:
    run = Lines("p", 100, [b"ab\r\n", b"\n", b"cde\n"], 109)
    assert [100, 104, 105] == offsets(run)
    assert [100, 104, 105] == [Offsets(run)(i) for i in range(3)]
    assert [] == offsets(Lines("p", 7, [], 7))


def test_offsets_asked_in_any_order_match() -> None:
    run = Lines("p", 100, [b"ab\r\n", b"\n", b"cde\n", b"f"], 110)  # the last: a stream's end
    offset = Offsets(run)
    expected = offsets(run)
    for index in [0, 2, 3, 1, 1, 0, 3]:
        assert expected[index] == offset(index)


def test_split_long_drops_long_lines_and_keeps_the_offsets_of_the_rest() -> None:
    reported: list[int] = []
    lines = split_lines(STREAM)
    runs = split_long("p", 0, lines, 20, reported.append)
    assert [line for line in expected_lines(STREAM) if len(line.data) <= 20] == list(each_line(runs))
    assert [STREAM.index(b"x")] == reported
    assert 2 == len(runs)  # the long line splits the run in two
    assert [STREAM.index(b"x"), len(STREAM)] == [run.end for run in runs]


@pytest.mark.parametrize("limit", [20, 50, 1000])
def test_runs_of_is_one_run_unless_a_line_is_too_long(limit: int) -> None:
    """Without a long line all lines are one run; with one, the same runs as `split_long`."""
    lines = split_lines(STREAM)
    fast: list[int] = []
    slow: list[int] = []
    runs = runs_of("p", 0, lines, len(STREAM), limit, fast.append)
    assert split_long("p", 0, lines, limit, slow.append) == runs
    assert slow == fast
    if limit >= 50:
        assert [Lines("p", 0, lines, len(STREAM))] == runs
    assert [] == runs_of("p", 7, [], 7, limit, fast.append)


@pytest.mark.parametrize("sizes", [[1], [2, 3], [1, 1, 1, 1, 1, 1], [100]])
def test_queue_hands_out_at_most_max_lines_with_exact_offsets(sizes: list[int]) -> None:
    queue = LineQueue()
    splitter = LineSplitter("p", 1000, lambda message: None)
    queue.extend(splitter.feed(STREAM[:9]))
    queue.extend(splitter.feed(STREAM[9:]))
    assert 5 == len(queue)
    got: list[Line] = []
    for size in sizes * 5:
        batch = queue.take(size)
        assert count_lines(batch) == min(size, 5 - len(got))
        got += each_line(batch)
        assert [run.end for run in batch] == [run.start + sum(map(len, run.data)) for run in batch]
    assert expected_lines(STREAM) == got
    assert 0 == len(queue)
    assert 0 == queue.size


def test_splitter_offsets_survive_chunk_boundaries_and_long_lines() -> None:
    warnings: list[str] = []
    splitter = LineSplitter("p", 20, warnings.append)
    runs = [run for i in range(0, len(STREAM), 7) for run in splitter.feed(STREAM[i : i + 7])]
    assert [line for line in expected_lines(STREAM) if len(line.data) <= 20] == list(each_line(runs))
    assert 1 == splitter.skipped_long
    assert [f"p: skipped a line longer than 20 bytes at offset {STREAM.index(b'x')}"] == warnings


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_parsers_ignore_the_cr_a_line_keeps(fmt: str) -> None:
    parser = make_parser(Reading(fmt))
    line = b'{"a": 1}'
    for parse in (parser.fast, parser.explain):
        assert parse(line) == parse(line + b"\r") == parse(line + b"\r\n") == parse(line + b"\n")


@given(st.lists(st.sampled_from(JUNK), max_size=60), st.lists(st.integers(1, 23), min_size=1), st.integers(0, 12))
@settings(max_examples=300, deadline=None)
def test_splitter_gives_the_lines_and_offsets_of_a_split_at_newlines_alone(
    pieces: list[bytes], cuts: list[int], limit: int
) -> None:
    stream = b"".join(pieces)
    long: list[int] = []
    splitter = LineSplitter("p", limit, lambda message: long.append(int(message.rsplit(" ", 1)[1])))
    queue = LineQueue()
    at, turn = 0, 0
    while at < len(stream):  # fed in chunks of the sizes `cuts` gives, in turn
        size = cuts[turn % len(cuts)]
        queue.extend(splitter.feed(stream[at : at + size]))
        at, turn = at + size, turn + 1
    fed = list(each_line(queue.take(len(queue))))
    assert split_as_before(stream, limit, ended=False) == (fed, long)
    queue.extend(splitter.finish())
    runs = queue.take(1_000)
    assert split_as_before(stream, limit, ended=True)[0] == fed + list(each_line(runs))
    for run in runs:  # the lengths, newlines kept, add up to the bytes read
        assert run.end - run.start == sum(map(len, run.data))
        assert all(line.endswith(b"\n") for line in run.data[:-1])


def test_split_lines_ends_a_line_at_newline_alone() -> None:
    text = b"a\rb\r\nc\x0bd\x0c\x1c\x1d\x1e\x85e\xe2\x80\xa8f\n\ng"
    assert [b"a\rb\r\n", b"c\x0bd\x0c\x1c\x1d\x1e\x85e\xe2\x80\xa8f\n", b"\n", b"g"] == split_lines(text)
    assert [] == split_lines(b"")
    assert [b"a\r", b"", b"b"] == [line_text(line) for line in split_lines(b"a\r\n\nb")]


def test_a_line_of_just_max_bytes_is_kept_and_one_more_is_not() -> None:
    lines = [b"12345\n", b"123456\n", b"1234\r\n", b"12345"]  # the last: a stream's end
    long: list[int] = []
    runs = runs_of("p", 10, lines, 10 + sum(map(len, lines)), 5, long.append)
    assert [Line(b"12345", "p", 10), Line(b"1234\r", "p", 23), Line(b"12345", "p", 29)] == list(each_line(runs))
    assert [16] == long
    assert [(10, 16), (23, 34)] == [(run.start, run.end) for run in runs]
