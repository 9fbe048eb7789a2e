"""Tests for rulesd.sources.stdin: lines from a pipe, without blocking."""

from __future__ import annotations

import os

import pytest

from rulesd.sources import lines, stdin
from rulesd.sources.stdin import StdinSource
from tests.lines_view import each_line


def drain(source: StdinSource) -> list[bytes]:
    out: list[bytes] = []
    while not source.eof:
        source.wait(1.0)
        out.extend(line.data for line in list(each_line(source.read(1000))))
    out.extend(line.data for line in list(each_line(source.read(1000))))
    return out


def test_lines_crlf_and_a_final_line_without_newline() -> None:
    """Every line, a CR kept (the parsers ignore it); the last one without a newline comes at EOF."""
    r, w = os.pipe()
    os.write(w, b'{"a": 1}\r\n{"b": 2}\n\n{"c": 3}')
    os.close(w)
    assert [b'{"a": 1}\r', b'{"b": 2}', b"", b'{"c": 3}'] == drain(StdinSource(r))


def test_over_long_lines_are_skipped_and_counted() -> None:
    """A line over max_line_bytes is dropped whole, even across reads; the next line survives."""
    warnings: list[str] = []
    r, w = os.pipe()
    source = StdinSource(r, max_line_bytes=100, warn=warnings.append)
    pid = os.fork()
    if pid == 0:  # a writer process, so the pipe never fills up against ourselves
        os.close(r)
        os.write(w, b"ok1\n" + b"x" * 300_000 + b"\nok2\n" + b"y" * 150 + b"\nok3")
        os._exit(0)
    os.close(w)
    assert [b"ok1", b"ok2", b"ok3"] == drain(source)
    os.waitpid(pid, 0)
    assert 2 == source.skipped_long
    assert 2 == len(warnings)


def test_read_respects_max_lines() -> None:
    """read() hands out at most max_lines and keeps the rest for the next call."""
    r, w = os.pipe()
    os.write(w, b"1\n2\n3\n")
    os.close(w)
    source = StdinSource(r)
    assert [b"1", b"2"] == [line.data for line in list(each_line(source.read(2)))]
    assert [b"3"] == [line.data for line in list(each_line(source.read(2)))]


def test_read_stops_growing_a_batch_at_batch_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long lines make a batch of fewer lines: memory per batch is bounded in bytes too."""
    monkeypatch.setattr(lines, "BATCH_BYTES", 1000)
    monkeypatch.setattr(stdin, "CHUNK", 500)
    r, w = os.pipe()
    os.write(w, (b"x" * 99 + b"\n") * 30)
    os.close(w)
    source = StdinSource(r)
    first = list(each_line(source.read(1000)))
    assert 10 <= len(first) < 30
    assert [b"x" * 99] * 30 == [line.data for line in first] + drain(source)
