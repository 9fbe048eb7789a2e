"""Tests of the file source against real files, rotated the way logrotate does it."""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import lzma
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rulesd.sources import tail as tail_module
from rulesd.sources.file import FileSource
from rulesd.sources.rotation import Position
from rulesd.sources.tail import Tail
from tests.fake_clock import FakeClock
from tests.lines_view import JUNK, Line, each_line, split_as_before

POLL = 0.02
Factory = Callable[..., FileSource]


@pytest.fixture
def warnings() -> list[str]:
    return []


@pytest.fixture
def make_source(warnings: list[str]) -> Iterator[Factory]:
    """Builds sources that poll fast, collect warnings, and are closed after the test."""
    sources: list[FileSource] = []

    def make(patterns: list[Path | str], **kwargs: Any) -> FileSource:
        kwargs.setdefault("poll_interval", POLL)
        kwargs.setdefault("warn", warnings.append)
        source = FileSource([str(p) for p in patterns], **kwargs)
        sources.append(source)
        return source

    yield make
    for source in sources:
        source.close()


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def numbered(start: int, stop: int) -> bytes:
    return b"".join(b"line %d\n" % i for i in range(start, stop))


def texts(lines: list[Line]) -> list[bytes]:
    return [line.data for line in lines]


def read_n(source: FileSource, count: int, timeout: float = 5.0) -> list[Line]:
    """Read until `count` lines have come (failing after `timeout`), then check no more come."""
    lines: list[Line] = []
    deadline = time.monotonic() + timeout
    while len(lines) < count:
        assert time.monotonic() < deadline, f"only {len(lines)} of {count} lines: {texts(lines)}"
        lines += list(each_line(source.read(1000)))
        if len(lines) < count:
            source.wait(0.05)
    assert [] == read_settled(source)
    return lines


def read_settled(source: FileSource) -> list[Line]:
    """Everything read() returns over a few poll intervals, so that the source has looked at
    the paths again since the caller's last change (the only way to show nothing comes)."""
    lines = list(each_line(source.read(1000)))
    deadline = time.monotonic() + POLL * 3
    while (remaining := deadline - time.monotonic()) > 0:
        source.wait(remaining)
        lines += list(each_line(source.read(1000)))
    return lines


# -- pure parts --------------------------------------------------------------------------------


# -- start_at, partial lines, long lines --------------------------------------------------------


def test_start_at_end_skips_what_is_there(tmp_path: Path, make_source: Factory) -> None:
    """With start_at=end only lines written after startup are read."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"old 1\nold 2\n")
    source = make_source([log], start_at="end")
    append(log, b"new\n")
    assert [Line(b"new", str(log), 12)] == read_n(source, 1)


def test_start_at_end_keeps_the_line_being_written(tmp_path: Path, make_source: Factory) -> None:
    """A line half written at startup is read whole once it is complete."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"old\nhal")
    source = make_source([log], start_at="end")
    append(log, b"f\n")
    assert [b"half"] == texts(read_n(source, 1))


def test_start_at_beginning_reads_everything(tmp_path: Path, make_source: Factory) -> None:
    """With start_at=beginning existing lines are read, with their offsets (a CR is kept)."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"a\r\nbb\n\nc\n")
    source = make_source([log], start_at="beginning")
    expected = [Line(b"a\r", str(log), 0), Line(b"bb", str(log), 3), Line(b"", str(log), 6), Line(b"c", str(log), 7)]
    assert expected == read_n(source, 4)


def test_partial_line_waits_for_its_newline(tmp_path: Path, make_source: Factory) -> None:
    """A last line without newline is not returned and the position stays at its start."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"one\ntw")
    source = make_source([log], start_at="beginning")
    assert [b"one"] == texts(read_n(source, 1))
    assert 4 == source.checkpoint()[str(log)].offset
    append(log, b"o\n")
    assert [Line(b"two", str(log), 4)] == read_n(source, 1)
    assert 8 == source.checkpoint()[str(log)].offset


def test_read_respects_max_lines(tmp_path: Path, make_source: Factory) -> None:
    """read() returns at most max_lines; the checkpoint covers only those."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(numbered(0, 10))
    source = make_source([log], start_at="beginning")
    assert numbered(0, 3).splitlines() == texts(list(each_line(source.read(3))))
    assert len(numbered(0, 3)) == source.checkpoint()[str(log)].offset
    assert numbered(3, 10).splitlines() == texts(read_n(source, 7))


def test_long_line_is_skipped_and_counted(tmp_path: Path, make_source: Factory, warnings: list[str]) -> None:
    """An over-long line is skipped with a warning; the next line is read normally."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"a\n" + b"x" * 300_000 + b"\nb\n" + b"y" * 101 + b"\nc\n")
    source = make_source([log], start_at="beginning", max_line_bytes=100)
    assert [b"a", b"b", b"c"] == texts(read_n(source, 3))
    assert 2 == source.skipped_long
    assert 2 == sum("longer than 100 bytes" in w for w in warnings)


def test_long_line_written_in_pieces(tmp_path: Path, make_source: Factory) -> None:
    """A line that grows too long while being written is discarded without being held."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"a\n" + b"x" * 150)
    source = make_source([log], start_at="beginning", max_line_bytes=100)
    assert [b"a"] == texts(read_n(source, 1))
    assert 1 == source.skipped_long
    assert 2 == source.checkpoint()[str(log)].offset  # never inside the long line
    append(log, b"x" * 100_000)
    assert [] == read_settled(source)
    append(log, b"x\nb\n")
    assert [b"b"] == texts(read_n(source, 1))
    assert 1 == source.skipped_long


def test_line_of_exactly_max_bytes_is_kept(tmp_path: Path, make_source: Factory) -> None:
    """The limit is inclusive."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"z" * 100 + b"\n")
    source = make_source([log], start_at="beginning", max_line_bytes=100)
    assert [b"z" * 100] == texts(read_n(source, 1))
    assert 0 == source.skipped_long


# -- rotation, truncation, deletion -------------------------------------------------------------


def test_rename_rotation_in_a_burst(tmp_path: Path, make_source: Factory) -> None:
    """Rename+create in the middle of a burst: every line once, in order, old file first."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(numbered(0, 500))
    source = make_source([log], start_at="beginning")
    first = list(each_line(source.read(100)))
    append(log, numbered(500, 600))  # written just before the rename
    os.rename(log, tmp_path / "events.jsonl.1")
    log.write_bytes(numbered(600, 700))
    lines = first + read_n(source, 600)
    assert numbered(0, 700).splitlines() == texts(lines)
    assert {str(log)} == {line.path for line in lines}


def test_rotation_under_a_running_writer(tmp_path: Path, make_source: Factory) -> None:
    """A writer thread keeps writing through three rotations (and writes to the renamed file
    before it reopens): every line is read exactly once, in order."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"")
    source = make_source([log], start_at="beginning")
    # The writer waits until the first line of each new file was read, because a file that is
    # created and rotated away before the source ever looks at it cannot be seen by a tail -F.
    first_lines = {b"line %d" % (n + 50): threading.Event() for n in (3000, 6000, 9000)}
    total = 12_000

    def write() -> None:
        writer = open(log, "ab", buffering=0)  # noqa: SIM115 - reopened at every rotation
        for n in range(0, total, 100):
            if n and n % 3000 == 0:
                os.rename(log, tmp_path / f"events.jsonl.{n}")
                writer.write(numbered(n, n + 50))  # still on the renamed file
                writer.close()
                writer = open(log, "ab", buffering=0)  # noqa: SIM115
                writer.write(numbered(n + 50, n + 51))
                assert first_lines[b"line %d" % (n + 50)].wait(5)
                writer.write(numbered(n + 51, n + 100))
            else:
                writer.write(numbered(n, n + 100))
        writer.close()

    thread = threading.Thread(target=write)
    thread.start()
    lines: list[Line] = []
    deadline = time.monotonic() + 10
    while len(lines) < total and time.monotonic() < deadline:
        batch = list(each_line(source.read(500)))
        lines += batch
        for line in batch:
            if line.data in first_lines:
                first_lines[line.data].set()
        if not batch:
            source.wait(0.05)
    thread.join()
    assert numbered(0, total).splitlines() == texts(lines)


def test_writer_still_on_the_old_file_after_rename(tmp_path: Path, make_source: Factory) -> None:
    """Lines the writer adds to the renamed file before it reopens are not lost."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"")
    source = make_source([log], start_at="beginning")
    with open(log, "ab", buffering=0) as writer:
        writer.write(numbered(0, 3))
        assert 3 == len(read_n(source, 3))
        os.rename(log, tmp_path / "events.jsonl.1")
        log.write_bytes(b"")  # logrotate's "create"
        assert [] == read_settled(source)
        writer.write(numbered(3, 5))  # the writer has not reopened yet
        assert numbered(3, 5).splitlines() == texts(read_n(source, 2))
    append(log, numbered(5, 7))
    assert numbered(5, 7).splitlines() == texts(read_n(source, 2))


def test_two_rotations_before_reading(tmp_path: Path, make_source: Factory) -> None:
    """Files rotated twice before being drained are all read, oldest first."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(numbered(0, 2))
    source = make_source([log], start_at="beginning")
    assert 2 == len(read_n(source, 2))
    append(log, numbered(2, 4))
    os.rename(log, tmp_path / "events.jsonl.1")
    log.write_bytes(b"")
    # A look at the paths, so the source knows the second file before it is rotated too
    # (a file created and rotated away between two looks cannot be seen by any tail -F).
    lines = read_settled(source)
    append(log, numbered(4, 6))
    os.rename(log, tmp_path / "events.jsonl.2")
    log.write_bytes(numbered(6, 8))
    lines += read_n(source, 6 - len(lines))
    assert numbered(2, 8).splitlines() == texts(lines)


def test_copytruncate_restarts_at_zero(tmp_path: Path, make_source: Factory, warnings: list[str]) -> None:
    """Copy then truncate in place: no crash, reading restarts at 0 with a warning."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(numbered(0, 50))
    source = make_source([log], start_at="beginning")
    assert 50 == len(read_n(source, 50))
    shutil.copyfile(log, tmp_path / "events.jsonl.1")
    with open(log, "r+b") as f:
        f.truncate(0)
    assert [] == read_settled(source)
    assert any("truncated" in w for w in warnings)
    append(log, b"after\n")
    assert [Line(b"after", str(log), 0)] == read_n(source, 1)


def test_truncate_and_rewrite_past_the_offset(tmp_path: Path, make_source: Factory, warnings: list[str]) -> None:
    """Truncated and refilled beyond our offset between two looks: the fingerprint tells."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"first\n")
    source = make_source([log], start_at="beginning")
    assert 1 == len(read_n(source, 1))
    with open(log, "r+b") as f:
        f.truncate(0)
        f.write(b"second\nthird\n")
    assert [b"second", b"third"] == texts(read_n(source, 2))
    assert any("fingerprint" in w for w in warnings)


def test_delete_and_recreate(tmp_path: Path, make_source: Factory) -> None:
    """The deleted file is drained through its descriptor, then the new file read from 0."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"one\n")
    source = make_source([log], start_at="beginning")
    assert 1 == len(read_n(source, 1))
    append(log, b"two\n")
    log.unlink()
    assert [b"two"] == texts(read_n(source, 1))
    assert {} == source.checkpoint()
    log.write_bytes(b"three\n")
    assert [Line(b"three", str(log), 0)] == read_n(source, 1)


def test_file_appearing_later_is_read_from_start(tmp_path: Path, make_source: Factory) -> None:
    """A path that does not exist yet is waited for, then read from its beginning."""
    log = tmp_path / "later" / "events.jsonl"
    source = make_source([log], start_at="end")
    assert [] == read_settled(source)
    log.parent.mkdir()
    log.write_bytes(b"a\nb\n")
    assert [b"a", b"b"] == texts(read_n(source, 2))


def test_glob_with_two_files_and_a_new_one(tmp_path: Path, make_source: Factory) -> None:
    """Every file matching a glob is tailed; a new match is read from its beginning."""
    (tmp_path / "a.log").write_bytes(b"a1\n")
    (tmp_path / "b.log").write_bytes(b"b1\n")
    (tmp_path / "other.txt").write_bytes(b"ignored\n")
    source = make_source([tmp_path / "*.log"], start_at="beginning")
    assert {b"a1", b"b1"} == set(texts(read_n(source, 2)))
    append(tmp_path / "b.log", b"b2\n")
    (tmp_path / "c.log").write_bytes(b"c1\n")
    lines = read_n(source, 2)
    assert {(b"b2", str(tmp_path / "b.log")), (b"c1", str(tmp_path / "c.log"))} == {
        (line.data, line.path) for line in lines
    }


def test_glob_matching_rotated_names_reads_once(tmp_path: Path, make_source: Factory) -> None:
    """When the rotated name also matches the glob, its lines are not read again."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(numbered(0, 5))
    source = make_source([f"{log}*"], start_at="beginning")
    assert 5 == len(read_n(source, 5))
    append(log, numbered(5, 7))
    os.rename(log, tmp_path / "events.jsonl.1")
    log.write_bytes(numbered(7, 9))
    assert numbered(5, 9).splitlines() == texts(read_n(source, 4))


# -- compressed rotations -------------------------------------------------------------------------


def gzip_kept_as_text(data: bytes) -> bytes:
    """gzip at level 0 keeps the text as it is: lines read from it would be events again."""
    return gzip.compress(data, compresslevel=0)


def test_compressed_files_a_glob_matches_are_skipped_and_noted_once(
    tmp_path: Path, make_source: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """logrotate's `compress` leaves .gz (or .bz2, .xz…) files the glob matches: never read,
    whatever their name (the magic number decides), noted once each however often looked at."""
    caplog.set_level(logging.INFO, "rulesd.sources.file")
    log = tmp_path / "events.jsonl"
    log.write_bytes(numbered(0, 3))
    (tmp_path / "events.jsonl.2.gz").write_bytes(gzip_kept_as_text(numbered(100, 200)))
    (tmp_path / "events.jsonl.3.bz2").write_bytes(bz2.compress(numbered(200, 300)))
    (tmp_path / "events.jsonl.4").write_bytes(lzma.compress(numbered(300, 400)))
    source = make_source([f"{log}*"], start_at="beginning")
    assert numbered(0, 3).splitlines() == texts(read_n(source, 3))
    assert [] == read_settled(source)  # looked at again
    assert [
        f"{tmp_path}/events.jsonl.2.gz: gzip-compressed, skipped: compressed files are never read",
        f"{tmp_path}/events.jsonl.3.bz2: bzip2-compressed, skipped: compressed files are never read",
        f"{tmp_path}/events.jsonl.4: xz-compressed, skipped: compressed files are never read",
    ] == sorted(r.getMessage() for r in caplog.records if "compressed" in r.getMessage())
    assert {"INFO"} == {r.levelname for r in caplog.records if "compressed" in r.getMessage()}
    assert 0 == source.lag_bytes()  # none is held open


def test_a_compressed_file_seen_before_its_first_bytes_is_not_read(tmp_path: Path, make_source: Factory) -> None:
    """gzip makes the .gz file, then writes it: the file source may open it empty. Its first
    bytes, once they come, show what it is, before any line of it is read."""
    log = tmp_path / "events.jsonl"
    log.touch()
    source = make_source([f"{log}*"], start_at="beginning")
    packed = tmp_path / "events.jsonl.1.gz"
    packed.touch()
    assert [] == read_settled(source)  # opened, empty
    append(packed, gzip_kept_as_text(numbered(0, 50)))
    assert [] == read_settled(source)
    append(log, numbered(50, 52))
    assert numbered(50, 52).splitlines() == texts(read_n(source, 2))


def commit(source: FileSource, state: dict[str, dict[str, Any]]) -> None:
    """Keep a checkpoint as the state database does: an empty position (FORGOTTEN) deletes its key."""
    for key, position in source.checkpoint().items():
        if data := position.to_json():
            state[key] = data
        else:
            state.pop(key, None)


def seen_empty(tmp_path: Path, make_source: Factory) -> tuple[FileSource, Path, dict[str, dict[str, Any]]]:
    """A source on events.jsonl* that has seen events.jsonl.2.gz empty, as gzip makes it before
    writing it; and the state it committed."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(numbered(0, 3))
    source = make_source([f"{log}*"], start_at="beginning")
    assert 3 == len(read_n(source, 3))
    packed = tmp_path / "events.jsonl.2.gz"
    packed.touch()
    assert [] == read_settled(source)  # opened, empty
    state: dict[str, dict[str, Any]] = {}
    commit(source, state)
    return source, packed, state


def test_a_compressed_file_opened_empty_then_rotated_on_while_stopped_is_noted_where_it_is(
    tmp_path: Path, make_source: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped while gzip wrote events.jsonl.2.gz, seen empty: its position (0, of no bytes) was
    saved under that name. Rotated on while stopped (.2.gz to .3.gz, a new .2.gz), the restart
    found it by identity for .2.gz and noted it there: .2.gz noted twice, .3.gz never."""
    caplog.set_level(logging.INFO, "rulesd.sources.file")
    first, packed, state = seen_empty(tmp_path, make_source)
    first.close()
    append(packed, gzip_kept_as_text(numbered(100, 200)))
    os.rename(packed, tmp_path / "events.jsonl.3.gz")
    packed.write_bytes(gzip_kept_as_text(numbered(200, 300)))
    second = make_source([f"{packed.parent / 'events.jsonl'}*"], start_at="beginning", saved=state)
    assert [] == read_settled(second)
    assert [
        f"{tmp_path}/events.jsonl.2.gz: gzip-compressed, skipped: compressed files are never read",
        f"{tmp_path}/events.jsonl.3.gz: gzip-compressed, skipped: compressed files are never read",
    ] == sorted(r.getMessage() for r in caplog.records if "compressed" in r.getMessage())


def test_the_position_of_a_compressed_file_seen_empty_goes_with_it(
    tmp_path: Path, make_source: Factory, warnings: list[str]
) -> None:
    """The position saved for events.jsonl.2.gz while it was empty was kept once gzip had written
    it: when the file was later rotated on and removed while rulesd was stopped, the next start
    warned that events written to it may have been lost (none can be: it is never read). It is
    deleted as the file is let go of now."""
    first, packed, state = seen_empty(tmp_path, make_source)
    append(packed, gzip_kept_as_text(numbered(100, 200)))
    assert [] == read_settled(first)
    commit(first, state)
    first.close()
    assert str(packed) not in state
    oldest = tmp_path / "events.jsonl.3.gz"
    with open(packed, "rb"):  # held, so that its inode is not given to the next file made
        for rotation in range(2):  # the second removes it: logrotate's `rotate 2`
            os.rename(packed, oldest)
            packed.write_bytes(gzip_kept_as_text(numbered(rotation * 10, rotation * 10 + 10)))
    second = make_source([f"{packed.parent / 'events.jsonl'}*"], saved=state)
    assert [] == read_settled(second)
    assert [] == warnings


def test_a_compressed_file_seen_empty_at_the_stop_and_removed_meanwhile_is_not_warned_about(
    tmp_path: Path, make_source: Factory, warnings: list[str]
) -> None:
    """Stopped in the moment between gzip making events.jsonl.2.gz and writing it: the position
    saved for it holds no byte. Written, then rotated away and removed while rulesd was stopped
    (logrotate's `rotate 2`: the path names a newer .2.gz), it was never going to be read: the
    start warned that events written to it may have been lost."""
    first, packed, state = seen_empty(tmp_path, make_source)
    first.close()
    with open(packed, "r+b") as gone:  # held, so that its inode is not given to the next file made
        gone.write(gzip_kept_as_text(numbered(100, 200)))
        packed.unlink()
        packed.write_bytes(gzip_kept_as_text(numbered(200, 300)))
        second = make_source([f"{packed.parent / 'events.jsonl'}*"], saved=state)
        assert [] == read_settled(second)
    assert [] == warnings
    commit(second, state)
    assert str(packed) not in state


def test_a_file_given_the_inode_of_a_compressed_file_seen_empty_at_the_stop_is_not_read(
    tmp_path: Path, make_source: Factory, warnings: list[str]
) -> None:
    """The position saved for events.jsonl.2.gz in the moment gzip had made it empty holds no byte
    to tell its file by, so once that file was removed while stopped, another file of the
    directory that got its inode (here: it renamed, outside the glob, and written) passed for it
    and was followed as events.jsonl.2.gz, its lines read as events. The path naming a compressed
    file again says what the saved one was: never to be read, so not looked for."""
    first, packed, state = seen_empty(tmp_path, make_source)
    first.close()
    stranger = tmp_path / "other-app.log"
    os.rename(packed, stranger)
    stranger.write_bytes(numbered(500, 510))
    packed.write_bytes(gzip_kept_as_text(numbered(200, 300)))
    second = make_source([f"{packed.parent / 'events.jsonl'}*"], saved=state)
    assert [] == read_settled(second)
    append(stranger, numbered(510, 512))
    assert [] == read_settled(second)
    assert 0 == second.lag_bytes()


MAY_BE_LOST = "events written to it after the saved position may have been lost"


def stopped_seeing_empty(make_source: Factory, pattern: Path | str, empty: Path) -> dict[str, dict[str, Any]]:
    """The state a source on `pattern` committed having seen `empty` with no byte in it, then stopped."""
    empty.touch()
    first = make_source([pattern], start_at="beginning")
    assert [] == read_settled(first)
    state: dict[str, dict[str, Any]] = {}
    commit(first, state)
    first.close()
    assert 0 == state[str(empty)]["fp_len"]
    return state


def named(lines: list[Line]) -> list[tuple[str, bytes]]:
    return [(os.path.basename(line.path), line.data) for line in lines]


def test_a_job_file_given_the_inode_of_one_seen_empty_is_read_under_its_own_name(
    tmp_path: Path, make_source: Factory, warnings: list[str]
) -> None:
    """A glob of job files: job-b.jsonl seen empty at the stop, removed meanwhile, its inode given
    to job-c.jsonl, and job-b.jsonl made again for the next run. The position saved for job-b, no
    byte to tell its file by, matched job-c by the inode alone: job-c's lines were read as
    job-b's (the alerts named the wrong file)."""
    job_b, job_c = tmp_path / "job-b.jsonl", tmp_path / "job-c.jsonl"
    pattern = f"{tmp_path}/job-*.jsonl"
    state = stopped_seeing_empty(make_source, pattern, job_b)
    os.rename(job_b, job_c)  # what a removal and the next file given its inode come to
    job_c.write_bytes(numbered(500, 503))
    job_b.write_bytes(numbered(0, 2))
    second = make_source([pattern], saved=state)
    lines = read_settled(second)
    expected = [("job-b.jsonl", b"line %d" % i) for i in range(2)]
    expected += [("job-c.jsonl", b"line %d" % i) for i in range(500, 503)]
    assert expected == sorted(named(lines))
    append(job_c, numbered(503, 504))
    assert [("job-c.jsonl", b"line 503")] == named(read_settled(second))
    commit(second, state)
    second.close()
    assert [] == read_settled(make_source([pattern], saved=state))  # nothing read twice
    # What became of the file job-b.jsonl named at the stop is not known (as for any file seen
    # last at a path that names another one now).
    assert [f"{job_b}: the file read last time is gone; {MAY_BE_LOST}"] == warnings


def test_a_neighbour_given_the_inode_of_a_file_seen_empty_is_not_followed(
    tmp_path: Path, make_source: Factory, warnings: list[str]
) -> None:
    """A literal path seen empty at the stop, removed meanwhile, its inode given to another
    application's log in the directory: that log was followed as the path, its lines read as
    events under the path's name for as long as the path was missing."""
    log, stranger = tmp_path / "events.jsonl", tmp_path / "other-app.log"
    state = stopped_seeing_empty(make_source, log, log)
    os.rename(log, stranger)
    stranger.write_bytes(numbered(500, 503))
    second = make_source([log], saved=state)
    assert [] == read_settled(second)
    append(stranger, numbered(503, 505))
    assert [] == read_settled(second)
    assert [
        f"{log}: the file read last time is gone; events written to it after the saved position may have been lost"
    ] == warnings
    log.write_bytes(numbered(0, 2))
    assert [("events.jsonl", b"line 0"), ("events.jsonl", b"line 1")] == named(read_settled(second))


@pytest.mark.parametrize("as_glob", [False, True])
def test_a_file_seen_empty_then_rotated_by_create_and_written_while_stopped_is_read_once(
    tmp_path: Path, make_source: Factory, warnings: list[str], as_glob: bool
) -> None:
    """logrotate's create mode while rulesd was stopped, the file empty at the stop: renamed to
    events.jsonl.1, written there by the application before it reopened, a new events.jsonl made.
    The rotated file is still found by its inode and finished first (under events.jsonl); a glob
    that names it reads it under its own name instead. Each line once, without a warning."""
    log, rotated = tmp_path / "events.jsonl", tmp_path / "events.jsonl.1"
    pattern: Path | str = f"{log}*" if as_glob else log
    state = stopped_seeing_empty(make_source, pattern, log)
    os.rename(log, rotated)
    rotated.write_bytes(numbered(0, 3))
    log.write_bytes(numbered(3, 5))
    second = make_source([pattern], saved=state)
    lines = read_settled(second)
    assert numbered(0, 5).splitlines() == texts(lines)
    assert {"events.jsonl.1" if as_glob else "events.jsonl"} == {name for name, _ in named(lines[:3])}
    assert [] == warnings


@pytest.mark.parametrize(
    ("name", "rotated_name"),
    [("web01.example.com.log", "web01.example.com.1.log"), ("app.events.jsonl", "app.events-20261206.jsonl")],
)
def test_a_dotted_name_seen_empty_then_rotated_with_extension_while_stopped_is_read_once(
    tmp_path: Path, make_source: Factory, warnings: list[str], name: str, rotated_name: str
) -> None:
    """logrotate's `extension .log` (or `.jsonl`) keeps the ending of a name that holds dots of its
    own: web01.example.com.log rotated as web01.example.com.1.log. Seen empty at the stop and
    written there while stopped, its lines were skipped, warned about as maybe lost: its name was
    not taken for a rotation, the stem taken as all before the name's first dot."""
    log, rotated = tmp_path / name, tmp_path / rotated_name
    state = stopped_seeing_empty(make_source, log, log)
    os.rename(log, rotated)
    rotated.write_bytes(numbered(0, 3))
    log.write_bytes(numbered(3, 5))
    lines = read_settled(make_source([log], saved=state))
    assert numbered(0, 5).splitlines() == texts(lines)
    assert [] == warnings


def test_lines_read_from_a_file_opened_empty_are_in_its_saved_fingerprint(
    tmp_path: Path, make_source: Factory, warnings: list[str]
) -> None:
    """A file empty when opened, written before its first read: the position saved with its lines
    held no byte of it (fp_len 0, offset 21). Removed while stopped and its inode given to another
    file the glob matches, that file was taken for it and read from offset 21: its first lines
    skipped, the next one torn ('e 502')."""
    job_b, job_a = tmp_path / "job-b.jsonl", tmp_path / "job-a.jsonl"
    job_b.touch()
    first = make_source([f"{tmp_path}/job-*.jsonl"], start_at="beginning")
    append(job_b, numbered(0, 3))
    lines: list[Line] = []
    while not lines:  # the lines of the read that first finds them, checkpointed with them
        first.wait(POLL)
        lines = list(each_line(first.read(1000)))
    assert numbered(0, 3).splitlines() == texts(lines)
    state: dict[str, dict[str, Any]] = {}
    commit(first, state)
    first.close()
    assert 21 == state[str(job_b)]["fp_len"]
    os.rename(job_b, job_a)
    job_a.write_bytes(numbered(500, 510))
    second = make_source([f"{tmp_path}/job-*.jsonl"], saved=state)
    assert numbered(500, 510).splitlines() == texts(read_settled(second))


def test_a_rotated_file_compressed_and_removed_is_finished_through_its_descriptor(
    tmp_path: Path, make_source: Factory
) -> None:
    """`compress` without `delaycompress`: events.jsonl becomes .1, is compressed to .1.gz and
    removed before the source has read its last lines; they are read once all the same."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(numbered(0, 3))
    source = make_source([f"{log}*"], start_at="beginning")
    assert 3 == len(read_n(source, 3))
    append(log, numbered(3, 6))
    rotated = tmp_path / "events.jsonl.1"
    os.rename(log, rotated)
    log.write_bytes(numbered(6, 8))
    (tmp_path / "events.jsonl.1.gz").write_bytes(gzip_kept_as_text(rotated.read_bytes()))
    rotated.unlink()
    assert numbered(3, 8).splitlines() == texts(read_n(source, 5))


# -- resuming from saved positions ----------------------------------------------------------------


def saved(source: FileSource) -> dict[str, Position]:
    """The checkpoint as it comes back from the state database."""
    stored = json.loads(json.dumps({k: v.to_json() for k, v in source.checkpoint().items()}))
    return {k: Position.from_json(v) for k, v in stored.items()}


def test_glob_matching_a_rotated_name_saves_its_position_with_the_lines_that_finished_it(
    tmp_path: Path, make_source: Factory
) -> None:
    """The daemon saves the checkpoint of a read that returned lines. The read that finishes a
    rotated file and returns the new file's first lines must save the rotated file under its new
    name, which the glob matches: else a restart reads it again from `start_at`."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(numbered(0, 5))
    first = make_source([f"{log}*"], start_at="beginning")
    assert 5 == len(read_n(first, 5))
    os.rename(log, tmp_path / "events.jsonl.1")
    log.write_bytes(numbered(5, 7))
    lines: list[Line] = []
    deadline = time.monotonic() + 5
    while not lines and time.monotonic() < deadline:
        first.wait(0.05)
        lines = list(each_line(first.read(1000)))
    assert numbered(5, 7).splitlines() == texts(lines)
    positions = saved(first)  # what the daemon commits with these lines
    first.close()
    second = make_source([f"{log}*"], start_at="beginning", saved={k: p.to_json() for k, p in positions.items()})
    assert [] == read_settled(second)


def stopped_after(make_source: Factory, log: Path, count: int, *, whole_file: bool = True) -> dict[str, Position]:
    """Read `count` lines of `log` from its beginning (all of it, checking nothing more comes, or
    only the first ones), stop, and return the saved positions."""
    first = make_source([log], start_at="beginning")
    assert count == len(read_n(first, count) if whole_file else list(each_line(first.read(count))))
    positions = saved(first)
    first.close()
    return positions


def test_resume_from_checkpoint(tmp_path: Path, make_source: Factory) -> None:
    """A new source resumes exactly after the last line returned: nothing lost or repeated."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(numbered(0, 10))
    first = make_source([log], start_at="beginning")
    assert numbered(0, 4).splitlines() == texts(list(each_line(first.read(4))))
    positions = saved(first)
    first.close()
    append(log, numbered(10, 12))
    second = make_source([log], start_at="end", saved={k: p.to_json() for k, p in positions.items()})
    assert numbered(4, 12).splitlines() == texts(read_n(second, 8))


def test_resume_after_rotation_while_down(tmp_path: Path, make_source: Factory) -> None:
    """The old file is found by its inode and finished before the new file is read."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(numbered(0, 10))
    positions = stopped_after(make_source, log, 6, whole_file=False)
    append(log, numbered(10, 12))
    os.rename(log, tmp_path / "events.jsonl.1")
    log.write_bytes(numbered(12, 15))
    second = make_source([log], saved={k: p.to_json() for k, p in positions.items()})
    assert numbered(6, 15).splitlines() == texts(read_n(second, 9))


def test_a_rotated_file_read_to_its_end_may_go_while_stopped_without_a_warning(
    tmp_path: Path, make_source: Factory, warnings: list[str]
) -> None:
    """`events.jsonl*`: events.jsonl.1, once drained, is taken up at its end under that name.
    Rotated on while rulesd is stopped (compressed and removed: logrotate's delaycompress),
    nothing of it can be missing: no warning, also after a restart in between; the file that
    took its name is finished, then the new one read."""
    log = tmp_path / "events.jsonl"
    rotated = tmp_path / "events.jsonl.1"
    log.write_bytes(numbered(0, 3))
    first = make_source([f"{log}*"], start_at="beginning")
    assert 3 == len(read_n(first, 3))
    os.rename(log, rotated)
    log.write_bytes(numbered(3, 5))
    assert 2 == len(read_n(first, 2))
    positions = saved(first)
    first.close()
    assert positions[str(rotated)].drained and not positions[str(log)].drained
    second = make_source([f"{log}*"], saved={k: p.to_json() for k, p in positions.items()})
    assert [] == read_settled(second)
    positions = saved(second)
    second.close()
    assert positions[str(rotated)].drained
    rotated.unlink()
    append(log, numbered(5, 6))
    os.rename(log, rotated)
    log.write_bytes(numbered(6, 7))
    third = make_source([f"{log}*"], saved={k: p.to_json() for k, p in positions.items()})
    assert numbered(5, 7).splitlines() == texts(read_n(third, 2))
    assert [] == warnings


def test_resume_when_rotated_file_is_gone(tmp_path: Path, make_source: Factory, warnings: list[str]) -> None:
    """If the old file was removed while down, the new file is read from 0 with a warning."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(numbered(0, 3))
    positions = stopped_after(make_source, log, 3)
    replacement = tmp_path / "events.jsonl.new"
    replacement.write_bytes(numbered(3, 5))  # created first, so its inode differs
    log.unlink()
    replacement.rename(log)
    second = make_source([log], saved={k: p.to_json() for k, p in positions.items()})
    assert numbered(3, 5).splitlines() == texts(read_n(second, 2))
    assert any("may have been lost" in w for w in warnings)


def test_fingerprint_mismatch_starts_over(tmp_path: Path, make_source: Factory, warnings: list[str]) -> None:
    """Same inode but different first bytes: the file was rewritten, read it from 0."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(numbered(0, 3))
    positions = stopped_after(make_source, log, 3)
    with open(log, "r+b") as f:  # rewritten in place, so dev+ino stay the same
        f.truncate(0)
        f.write(b"other 0\nother 1\nother 2\nother 3\n")
    second = make_source([log], saved={k: p.to_json() for k, p in positions.items()})
    assert 4 == len(read_n(second, 4))
    assert any("fingerprint" in w for w in warnings)


def test_truncated_while_down_starts_over(tmp_path: Path, make_source: Factory, warnings: list[str]) -> None:
    """Same first bytes but shorter than the saved offset: copytruncate happened meanwhile."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(numbered(0, 3))
    positions = stopped_after(make_source, log, 3)
    with open(log, "r+b") as f:
        f.truncate(len(b"line 0\n"))
    second = make_source([log], saved={k: p.to_json() for k, p in positions.items()})
    assert [b"line 0"] == texts(read_n(second, 1))
    assert any("truncated" in w for w in warnings)


# -- many files -----------------------------------------------------------------------------------


def start_cpu(directory: Path, count: int) -> float:
    """This thread's CPU seconds to start a source on a glob of `count` one-line files (best of
    3: thread time is not the machine's load, but a cache or a collection may still weigh)."""
    directory.mkdir()
    for i in range(count):
        (directory / f"container-{i:05d}.log").write_bytes(b"line\n")
    times = []
    for _ in range(3):
        started = time.thread_time()
        source = FileSource([str(directory / "*.log")], start_at="beginning", warn=pytest.fail)
        times.append(time.thread_time() - started)
        source.close()
    return min(times)


def test_a_globs_start_grows_with_its_files_not_with_their_square(tmp_path: Path) -> None:
    """Each file opened at start was checked against every file opened before (is it already
    read under another name?): 2,000 files took over half a second, 5,000 well over one. 32
    times the files now take about 32 times as long (measured: 26 to 36); the square would be
    1,024 times (measured before: 200 to 440)."""
    few, many = start_cpu(tmp_path / "few", 100), start_cpu(tmp_path / "many", 3200)
    assert many / few < 80, f"100 files: {few * 1000:.1f} ms, 3,200: {many * 1000:.1f} ms"


# -- waiting and lag ----------------------------------------------------------------------------


def test_wait_wakes_on_append(tmp_path: Path, make_source: Factory) -> None:
    """wait() returns soon after an append, long before its timeout or the next poll."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"")
    source = make_source([log], poll_interval=5.0)
    assert [] == list(each_line(source.read(10)))
    source.wait(0)  # consume wake-ups from setting up
    writer = threading.Timer(0.05, append, args=(log, b"ping\n"))
    started = time.monotonic()
    writer.start()
    source.wait(5.0)
    elapsed = time.monotonic() - started
    writer.join()
    assert elapsed < 1.0
    assert [b"ping"] == texts(list(each_line(source.read(10))))


def test_wait_times_out_without_data(tmp_path: Path, make_source: Factory) -> None:
    """With nothing happening wait() blocks for its timeout."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"")
    source = make_source([log])
    assert [] == read_settled(source)  # also consumes wake-ups from creating the file
    started = time.monotonic()
    source.wait(0.1)
    assert time.monotonic() - started >= 0.09


def test_a_quiet_turn_reads_and_checkpoints_no_quiet_file(
    tmp_path: Path, make_source: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every turn of the main loop read each file of a glob and built each one's position, so
    an idle daemon on a directory of 2,000 per-container logs took a fifth of a core. Only the
    files written to (an event names them) are read now, and only their positions checkpointed:
    exactly where their lines end."""
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(300):
        (logs / f"c-{i}.jsonl").write_bytes(b"start\n")
    source = make_source([logs / "*.jsonl"], start_at="beginning", poll_interval=60.0)
    assert 300 == len(read_n(source, 300))
    assert {6} == {position.offset for position in source.checkpoint().values()}  # at first, all of them
    reads: list[int] = []
    read_lines = Tail.read_lines
    monkeypatch.setattr(Tail, "read_lines", lambda tail, *a: reads.append(tail.fd) or read_lines(tail, *a))
    assert [] == source.read(1000)
    assert {} == source.checkpoint()
    assert [] == reads
    written = logs / "c-7.jsonl"
    append(written, b"page\n")
    assert [Line(b"page", str(written), 6)] == read_n(source, 1)
    assert {str(written): 11} == {key: position.offset for key, position in source.checkpoint().items()}
    assert 1 == len(set(reads))


def test_lag_bytes_counts_unread_data(tmp_path: Path, make_source: Factory) -> None:
    """Lag is what was written but not yet returned, including a partial line."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"")
    source = make_source([log])
    append(log, b"12345\n789")
    assert 9 == source.lag_bytes()
    assert 1 == len(read_n(source, 1))
    assert 3 == source.lag_bytes()


def test_lag_is_not_read_through_a_descriptor_number_another_file_took(tmp_path: Path) -> None:
    """The metrics thread sums the lag over a copy of the files read, which the reading thread
    may let go of meanwhile: the closed file's descriptor number then names the next file
    opened (the state database, another log). Its size is not this file's lag: counted 0, not
    a spike of the other file's size in rulesd_source_lag_bytes."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"12345\n")
    fd = os.open(log, os.O_RDONLY)
    tail = Tail(fd, os.fstat(fd), 0, lambda _offset: None)
    assert 6 == tail.unread_bytes()
    other = tmp_path / "state.db"
    other.write_bytes(b"x" * 100_000)
    opened = os.open(other, os.O_RDONLY)
    tail.close()
    os.dup2(opened, fd)  # as the next open would, given the lowest free number
    os.close(opened)
    try:
        assert 0 == tail.unread_bytes()
    finally:
        os.close(fd)


def test_unopenable_path_is_reported_once(tmp_path: Path, make_source: Factory, warnings: list[str]) -> None:
    """A path that cannot be opened warns once and is retried until it can."""
    log = tmp_path / "events.jsonl"
    log.symlink_to(log)  # a loop: opening it fails with ELOOP, even for root
    source = make_source([log], start_at="beginning")
    assert [] == read_settled(source)
    assert 1 == sum("cannot open" in w for w in warnings)
    log.unlink()
    log.write_bytes(b"readable\n")
    assert [b"readable"] == texts(read_n(source, 1))


def test_rejects_unknown_start_at(tmp_path: Path) -> None:
    """start_at is checked when the source is built."""
    with pytest.raises(ValueError, match="start_at"):
        FileSource([str(tmp_path / "x")], start_at="middle")


def test_the_clock_decides_when_paths_are_looked_at_again(tmp_path: Path, make_source: Factory) -> None:
    """Where no file system event comes (a directory that did not exist to be watched), a new
    file is found by the periodic look, due by the injected clock, not by the wall clock."""
    clock = FakeClock()
    later = tmp_path / "later"
    source = make_source([later / "events.jsonl"], start_at="beginning", clock=clock)
    later.mkdir()
    (later / "events.jsonl").write_bytes(b'{"a": 1}\n')
    time.sleep(3 * POLL)  # wall time passing changes nothing
    assert [] == source.read(10)
    clock.advance(2 * POLL)
    assert [b'{"a": 1}'] == texts(list(each_line(source.read(10))))


# -- paths that are not regular files ----------------------------------------------------------


def test_a_fifo_at_the_path_never_blocks_and_is_skipped_until_a_file_is_there(
    tmp_path: Path, make_source: Factory, warnings: list[str]
) -> None:
    """A FIFO (no writer: opening it would block for good) is warned about once, naming it, and
    skipped; the regular file that replaces it is read from its start."""
    path = tmp_path / "events.jsonl"
    os.mkfifo(path)
    done = threading.Event()
    made: list[FileSource] = []
    threading.Thread(target=lambda: (made.append(make_source([path], start_at="end")), done.set()), daemon=True).start()
    assert done.wait(5), "opening the source blocked on the FIFO"
    source = made[0]
    assert [] == read_settled(source)
    assert [f"{path}: a FIFO, not a regular file; skipped until a regular file is there"] == warnings
    path.unlink()
    path.write_bytes(numbered(0, 3))
    assert numbered(0, 3).splitlines() == texts(read_n(source, 3))
    assert 1 == len(warnings)


def test_a_proc_file_at_the_path_is_skipped_once_not_read_again_and_again(
    tmp_path: Path, make_source: Factory, warnings: list[str]
) -> None:
    """A link to a file of /proc (its size reads 0, yet it holds lines) is warned about once and
    skipped: its size below what was read looked like a truncation at every look, so its lines
    were read again from 0 at every turn (each made an event again), a core burnt. A regular
    file that takes its place is read from its start, once."""
    path = tmp_path / "events.jsonl"
    path.symlink_to("/proc/self/status")
    source = make_source([path], start_at="beginning")
    for _ in range(5):
        assert [] == read_settled(source)
    sizeless = "a file whose size reads 0 though it holds data (as the files of /proc and /sys do)"
    assert [f"{path}: {sizeless}, not a regular file; skipped until a regular file is there"] == warnings
    path.unlink()
    path.write_bytes(numbered(0, 3))
    assert numbered(0, 3).splitlines() == texts(read_n(source, 3))
    assert [] == read_settled(source)
    assert 1 == len(warnings)


def test_saved_positions_of_a_globs_files_gone_are_forgotten_at_start(tmp_path: Path, make_source: Factory) -> None:
    """Positions saved for files a glob matched that were deleted while stopped come back
    FORGOTTEN from the first checkpoint (the state deletes them), once; those of files still
    there, and keys the globs do not name (another source's, a literal path's, a file in a
    subdirectory that `*` does not reach), are left as they are."""
    (tmp_path / "logs" / "sub").mkdir(parents=True)
    here = tmp_path / "logs" / "here.jsonl"
    here.write_bytes(numbered(0, 2))
    first = make_source([tmp_path / "logs" / "*.jsonl"], start_at="beginning")
    assert 2 == len(read_n(first, 2))
    position = first.checkpoint()[str(here)].to_json()
    first.close()
    gone, deeper, other = (str(tmp_path / p) for p in ("logs/gone.jsonl", "logs/sub/x.jsonl", "other.jsonl"))
    saved = {str(here): position, gone: position, deeper: position, other: position}
    second = make_source([tmp_path / "logs" / "*.jsonl"], start_at="beginning", saved=saved)
    checkpoint = second.checkpoint()
    assert {str(here): position, gone: {}} == {k: v.to_json() for k, v in checkpoint.items()}
    assert gone not in second.checkpoint()  # said once (nothing moved since: nothing at all)


@given(
    st.lists(st.sampled_from(JUNK), max_size=60),
    st.integers(1, 23),
    st.lists(st.integers(1, 9), min_size=1),
    st.integers(0, 12),
)
@settings(max_examples=200, deadline=None)
def test_tail_gives_the_lines_and_offsets_of_a_split_at_newlines_alone(
    pieces: list[bytes], chunk: int, limits: list[int], max_line_bytes: int
) -> None:
    """Lines end at `\\n` alone, whatever other bytes they hold, read in chunks of any size
    and handed out a few at a time; a last line without its newline waits for it."""
    stream = b"".join(pieces)
    long: list[int] = []
    with tempfile.NamedTemporaryFile() as log, pytest.MonkeyPatch.context() as patch:
        patch.setattr(tail_module, "CHUNK_BYTES", chunk)
        log.write(stream)
        log.flush()
        fd = os.open(log.name, os.O_RDONLY)
        tail = Tail(fd, os.fstat(fd), 0, long.append)
        got: list[Line] = []
        for turn in range(len(stream) + 2):
            runs = tail.read_lines(limits[turn % len(limits)], log.name, max_line_bytes)
            assert all(run.end - run.start == sum(map(len, run.data)) for run in runs)
            got += each_line(runs)
            if not runs and tail.eof:
                break
        tail.close()
    lines, too_long = split_as_before(stream, max_line_bytes, ended=False, path=log.name)
    assert (lines, too_long) == (got, long)
    assert stream.rfind(b"\n") + 1 == tail.committed  # a position just after the last complete line
