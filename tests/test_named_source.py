"""Tests for rulesd.sources.named: the positions of named sources are kept apart."""

from __future__ import annotations

from typing import Any

from rulesd.events import JSON_PARSER
from rulesd.sources.journald import JournalCursor
from rulesd.sources.lines import Lines
from rulesd.sources.named import NamedSource, own_positions

FILE = {"dev": 1, "ino": 2, "offset": 30, "fp_len": 10, "fp_hash": "ab"}


def test_an_unnamed_source_takes_the_bare_keys_only() -> None:
    """A single unnamed source sees the keys it always saved, not those of named sources."""
    saved = {"/var/log/a.log": FILE, "journald": {"cursor": "c0"}, "sshd:journald": {"cursor": "c1"}}
    assert {"/var/log/a.log": FILE, "journald": {"cursor": "c0"}} == own_positions(None, saved)


def test_a_named_source_takes_its_own_keys_without_its_name() -> None:
    """Two journald sources each find their own cursor; a name that is a prefix of another does not mix."""
    saved = {"sshd:journald": {"cursor": "c1"}, "sshd2:journald": {"cursor": "c2"}, "journald": {"cursor": "old"}}
    assert {"journald": {"cursor": "c1"}} == own_positions("sshd", saved)
    assert {"journald": {"cursor": "c2"}} == own_positions("sshd2", saved)
    assert {"/var/log/a.log": FILE} == own_positions("app", {"app:/var/log/a.log": FILE, "web:/var/log/a.log": {}})


def test_the_first_start_with_names_takes_over_the_unnamed_positions() -> None:
    """Upgrading: with no position saved under any name yet, every named source is offered the
    bare ones; once names are saved, a newly added source starts afresh (not at an old cursor)."""
    before = {"/var/log/a.log": FILE, "journald": {"cursor": "c0"}}
    assert before == own_positions("app", before) == own_positions("sshd", before)
    after = {**before, "app:/var/log/a.log": FILE}
    assert {} == own_positions("sshd", after)


class Recorded:
    """A source that hands out nothing and has one position."""

    parser = JSON_PARSER
    skipped_long = 3

    def __init__(self) -> None:
        self.closed = False

    def read(self, max_lines: int) -> list[Lines]:
        return []

    def wait(self, timeout: float) -> None:
        return None

    def checkpoint(self) -> dict[str, Any]:
        return {"journald": JournalCursor("c9")}

    def exhausted(self) -> bool:
        return True

    def lag_bytes(self) -> int:
        return 7

    def names(self) -> list[str]:
        return ["journalctl"]

    def close(self) -> None:
        self.closed = True


def test_a_named_source_saves_under_its_name_and_is_otherwise_its_source() -> None:
    """Checkpoints gain the `NAME:` prefix; everything else is passed through."""
    inner = Recorded()
    named = NamedSource("sshd", inner)
    assert {"sshd:journald": JournalCursor("c9")} == named.checkpoint()
    assert (JSON_PARSER, 3, 7, True, [], ["journalctl"]) == (
        named.parser,
        named.skipped_long,
        named.lag_bytes(),
        named.exhausted(),
        named.read(10),
        named.names(),
    )
    named.close()
    assert inner.closed
