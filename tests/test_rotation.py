"""The file source's decisions (rotation, truncation, resuming), pure functions tested by table."""

from __future__ import annotations

import json

import pytest

from rulesd.sources.rotation import (
    Change,
    Position,
    Retired,
    Tracked,
    classify_saved,
    fingerprint,
    judge,
    may_be_the_saved,
    resume_retired,
    resume_saved,
    writer_gone,
)
from rulesd.sources.watch import observed_directory

HELLO = b"hello world\n"
FP_LEN, FP_HASH = fingerprint(HELLO)


@pytest.mark.parametrize("drained", [False, True])
def test_position_json_round_trip(drained: bool) -> None:
    """A position survives the JSON it is saved as; `drained` is written only when true, so a
    position saved before it existed reads as not drained."""
    position = Position(dev=1, ino=2, offset=3, fp_len=4, fp_hash="ab", drained=drained)
    assert position == Position.from_json(json.loads(json.dumps(position.to_json())))
    assert drained == ("drained" in position.to_json())


@pytest.mark.parametrize(
    ("content", "size", "expected"),
    [
        (b"hello world\n", 12, "resume"),
        (b"hello world\nmore\n", 17, "resume"),
        (b"hello", 5, "changed"),  # shorter than the fingerprint
        (b"HELLO world\n", 12, "changed"),
        (b"hello worl", 10, "changed"),
    ],
)
def test_classify_saved(content: bytes, size: int, expected: str) -> None:
    """A saved position is trusted only while the file's first bytes are unchanged."""
    fp_len, fp_hash = fingerprint(b"hello world\n")
    saved = Position(dev=1, ino=1, offset=12, fp_len=fp_len, fp_hash=fp_hash)
    assert expected == classify_saved(saved, size, content[:1024])


def test_classify_saved_truncated() -> None:
    """Same first bytes but shorter than the offset is a truncation."""
    fp_len, fp_hash = fingerprint(b"ab")
    assert "truncated" == classify_saved(Position(1, 1, 10, fp_len, fp_hash), 4, b"ab\nc")


def tracked(*, seen_size: int = 12, read_pos: int = 12) -> Tracked:
    """A file (1, 1) of which HELLO was read and 12 bytes seen."""
    return Tracked((1, 1), seen_size, read_pos, FP_LEN, FP_HASH)


@pytest.mark.parametrize(
    ("path_identity", "size", "content", "expected"),
    [
        ((1, 1), 12, None, "same"),  # nothing new: the first bytes are not even read
        ((1, 1), 20, HELLO + b"more\n", "grew"),
        ((1, 1), 4, b"hell", "truncated"),  # copytruncate, then a little written
        ((1, 1), 30, b"HELLO WORLD\n" + b"x" * 18, "changed"),  # rewritten in place, longer
        ((1, 1), 12, b"HELLO WORLD\n", "same"),  # same size: a rewrite of equal length goes unseen
        ((1, 2), 12, None, "replaced"),  # the path names another file now (rename + create)
        (None, 12, None, "replaced"),  # the path is gone (deleted, or renamed away)
    ],
)
def test_judge(path_identity: tuple[int, int] | None, size: int, content: bytes | None, expected: Change) -> None:
    """What became of a file being read, from its path's identity, its size and first bytes."""

    def head() -> bytes:
        assert content is not None, "the first bytes were read although the size did not change"
        return content

    assert expected == judge(tracked(), path_identity, size, head)


def test_judge_sees_truncation_to_the_size_last_seen() -> None:
    """Truncated and refilled to exactly the size seen before, but less than what was read."""
    assert "truncated" == judge(tracked(seen_size=8, read_pos=12), (1, 1), 8, lambda: b"hello wo")


@pytest.mark.parametrize(
    ("identity", "size", "head", "rotated", "claimed", "expected"),
    [
        ((1, 1), 20, HELLO, False, False, (12, "resume")),
        ((1, 1), 20, HELLO, True, False, (12, "resume")),  # found under its rotated name
        ((1, 1), 5, HELLO[:5], False, False, (0, "changed")),  # at its path, rewritten: from 0
        ((1, 1), 5, HELLO[:5], True, False, (None, "changed")),  # rotated and changed: inode reused
        ((1, 1), 20, b"other start\n", True, False, (None, "changed")),
        ((1, 2), 20, HELLO, False, False, (None, "resume")),  # another file
        ((1, 1), 20, HELLO, False, True, (None, "resume")),  # already read under another name
    ],
)
def test_resume_saved(
    identity: tuple[int, int],
    size: int,
    head: bytes,
    rotated: bool,
    claimed: bool,
    expected: tuple[int | None, str],
) -> None:
    """Where a saved position resumes at start-up, if the file found is the one saved."""
    saved = Position(1, 1, 12, FP_LEN, FP_HASH)
    assert expected == resume_saved(saved, identity, size, head, rotated=rotated, claimed=claimed, elsewhere=rotated)


def test_resume_saved_truncated_reads_from_zero() -> None:
    """A file shorter than the saved offset (truncated while down) is read from its start."""
    fp_len, fp_hash = fingerprint(b"ab")
    assert (0, "truncated") == resume_saved(
        Position(1, 1, 10, fp_len, fp_hash), (1, 1), 4, b"ab\nc", rotated=False, claimed=False, elsewhere=False
    )


@pytest.mark.parametrize(("elsewhere", "expected"), [(False, 21), (True, 0)])
def test_a_position_with_no_byte_over_lines_read_resumes_elsewhere_from_zero(elsewhere: bool, expected: int) -> None:
    """A position an earlier rulesd saved with no fingerprint over the lines it had read (the file
    opened empty): at its own path it resumes, but a file found by its inode under another name
    may be another one given the inode: read whole, not from an offset that would skip and tear."""
    empty = Position(1, 1, 21, *fingerprint(b""))
    head = b"line 500\nline 501\nline 502\n"
    assert (expected, "resume") == resume_saved(
        empty, (1, 1), len(head), head, rotated=False, claimed=False, elsewhere=elsewhere
    )


@pytest.mark.parametrize(
    ("found", "followed", "expected"),
    [
        ("/d/events.jsonl.1", False, True),  # logrotate's create mode
        ("/d/events.jsonl-20261206", False, True),  # dateext
        ("/d/events.1.jsonl", False, True),  # extension .jsonl
        ("/d/events-20261206.jsonl", False, True),
        ("/d/events.jsonl.1", True, False),  # a glob follows it under its own name: read there
        ("/d/other-app.log", False, False),  # a neighbour given the inode
        ("/d/eventsfeed.jsonl", False, False),
        ("/d/events-debug.jsonl", False, False),  # the same application's other log
        ("/d/events.jsonl.tmp", False, False),
        ("/d/events.jsonl.1.gz", False, True),
    ],
)
def test_a_position_seen_empty_is_taken_only_for_a_rotation_of_it(found: str, followed: bool, expected: bool) -> None:
    """With no byte to tell it by, the inode alone names the file: only a file named as a rotation
    of the saved path, and not followed under its own name, may be taken for it."""
    empty = Position(1, 1, 0, *fingerprint(b""))
    assert expected == may_be_the_saved(empty, "/d/events.jsonl", found, followed=followed)
    assert may_be_the_saved(Position(1, 1, 0, *fingerprint(b"x\n")), "/d/events.jsonl", found, followed=followed)


@pytest.mark.parametrize(
    ("path", "found", "expected"),
    [
        # `extension .log` for a name holding dots of its own (a host's): the number or date goes
        # before the configured ending, not before the name's first dot.
        ("/d/web01.example.com.log", "/d/web01.example.com.1.log", True),
        ("/d/web01.example.com.log", "/d/web01.example.com-20261206.log", True),
        ("/d/app.events.jsonl", "/d/app.events.2.jsonl", True),
        # `extension` with `compress`: the compressor's extension after the kept one.
        ("/d/events.jsonl", "/d/events.1.jsonl.gz", True),
        ("/d/app.events.jsonl", "/d/app.events.2.jsonl.gz", True),
        ("/d/app.events.jsonl", "/d/app.1.jsonl", False),  # another file of the directory
        ("/d/web01.example.com.log", "/d/web01.example.com.log.tmp", False),
        ("/d/web01.example.com.log", "/d/web01.example.org.log", False),
    ],
)
def test_rotation_names_with_dotted_names_and_a_compressed_extension(path: str, found: str, expected: bool) -> None:
    """logrotate's `extension` keeps the ending it is given, which for a dotted name is not all
    after the first dot; with `compress` the compressor's extension follows it."""
    empty = Position(1, 1, 0, *fingerprint(b""))
    assert expected == may_be_the_saved(empty, path, found, followed=False)


@pytest.mark.parametrize(
    ("retired", "mtime_ns", "head", "expected"),
    [
        (None, 7, HELLO, 0),  # never seen: from its start
        (Retired("/log/app.jsonl.1", Position(1, 1, 12, FP_LEN, FP_HASH), 7), 7, HELLO, 12),  # drained elsewhere
        (Retired("/log/app.jsonl", Position(1, 1, 12, FP_LEN, FP_HASH), 7), 7, HELLO, 0),  # same name: re-created
        (Retired("/log/app.jsonl.1", Position(1, 1, 12, FP_LEN, FP_HASH), 7), 7, b"other\n", 0),  # inode reused
        # Written since it was let go of: the inode reused by a file that starts alike.
        (Retired("/log/app.jsonl.1", Position(1, 1, 12, FP_LEN, FP_HASH), 7), 8, HELLO, 0),
    ],
)
def test_resume_retired(retired: Retired | None, mtime_ns: int, head: bytes, expected: int) -> None:
    """A file appearing while running is read from 0 unless it was drained under another name
    and not written to since."""
    assert expected == resume_retired("/log/app.jsonl", retired, 20, mtime_ns, head)


@pytest.mark.parametrize(
    ("links", "newer_size", "expected"),
    [(0, None, True), (1, None, False), (1, 0, False), (1, 5, True), (0, 0, True)],
)
def test_writer_gone(links: int, newer_size: int | None, expected: bool) -> None:
    """A rotated file is finished once deleted or once the new file has data."""
    assert expected == writer_gone(links, newer_size)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("/var/log/app/events.jsonl", ("/var/log/app", False)),
        ("/var/log/app/*.jsonl", ("/var/log/app", False)),
        ("/var/log/*/events.jsonl", ("/var/log", True)),
        ("events.jsonl", (".", False)),
        ("*/events.jsonl", (".", True)),
    ],
)
def test_observed_directory(pattern: str, expected: tuple[str, bool]) -> None:
    """The directory watched for a pattern is the deepest one without wildcards."""
    assert expected == observed_directory(pattern)
