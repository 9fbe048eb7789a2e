"""A field's texts of a block scanned joined (`rulesd.rules.joined`): the answers are each
text's own, whatever the patterns and texts, and the joined scan is used where it is cheaper."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from rulesd.rules import joined, patterns
from rulesd.rules.patterns import FieldScanner, Pattern, When, literal_pattern, regex_problem
from tests.daemon_process import wait_until


def _scanner(written: list[Pattern], kept: dict[str, bytes] | None = None, *, when: When = "now") -> FieldScanner:
    """A field's scanner of `written`, its database of joined texts compiled before it is
    returned ("now"), or after COMPILE_AFTER blocks ("later": every command but the daemon)."""
    scanner = FieldScanner("f")
    for pattern in written:
        scanner.add(pattern)
    scanner.use(scanner.compile())
    store = {} if kept is None else kept
    scanner.join(store.get, store.__setitem__, when=when)
    return scanner


def _state(scanner: FieldScanner, name: str) -> Any:
    """A value the field's scan keeps (its closure), to see which way a block went."""
    for function in (scanner.scan_block, scanner.scan):
        cells = dict(zip(function.__code__.co_freevars, function.__closure__ or (), strict=True))
        if name in cells:
            return cells[name].cell_contents
    raise KeyError(name)


def _same(value: Any) -> Any:
    return value


def _answers(scanner: FieldScanner, values: list[Any]) -> list[Any]:
    """The block's answers, from its scan or, where it leaves them to the caller (text by
    text), each text's own scan, as the index's code takes them."""
    answers = scanner.scan_block(values, _same)
    return [scanner.scan(v) if type(v) is str else None for v in values] if answers is None else answers


@pytest.fixture
def always_joined(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every block after the first is scanned joined, however dear."""
    monkeypatch.setattr(patterns, "JOINED_COST", -1e9)
    monkeypatch.setattr(patterns, "PROBE_EVERY", 10**9)


def _regex(rng: random.Random) -> str:
    atoms = ["a", "b", "k", "s", "ab", "[ab]", "[^a]", ".", "\\s", "\\d", "\\w", "x1", " ", "é", "\\n"]
    quantifiers = ["", "", "", "*", "+", "?", "{1,2}"]
    body = "".join(rng.choice(atoms) + rng.choice(quantifiers) for _ in range(rng.randint(1, 3)))
    start = rng.choice(["", "", "^", "\\A", "\\b", "(?m)^", "(?i)", "(?s)"])
    end = rng.choice(["", "", "$", "\\z", "\\Z", "\\b", "\\B"])
    return start + body + end


def _patterns(rng: random.Random) -> list[Pattern]:
    written: list[Pattern] = []
    while len(written) < rng.randint(1, 6):
        if rng.random() < 0.3:
            text = "".join(rng.choice("abks é") for _ in range(rng.randint(1, 3)))
            where = rng.choice(["contains", "startswith", "endswith", "equals"])
            pattern = literal_pattern(text, where, rng.random() < 0.3)
            if pattern is not None:
                written.append(pattern)
        elif regex_problem(regex := _regex(rng)) is None:
            written.append(Pattern(regex, rng.random() < 0.2))
    return written


def _values(rng: random.Random) -> list[Any]:
    def text() -> str:
        return "".join(rng.choice("abksx1 \n\té.K\u212a\u017f") for _ in range(rng.randint(0, 12)))

    others: list[Any] = [None, 7, ["ab"], True]
    return [text() if rng.random() < 0.9 else rng.choice(others) for _ in range(rng.randint(1, 50))]


def test_the_database_of_joined_texts_is_compiled_at_once_for_a_rule_set_that_scans() -> None:
    scanner = FieldScanner("f")
    scanner.add(Pattern("fatal"))
    scanner.use(scanner.compile())
    kept: dict[str, bytes] = {}
    scanner.join(kept.get, kept.__setitem__, when="now")
    assert len(kept) == 1 and _state(scanner, "joined_scan") is not None


def test_a_block_is_answered_as_each_text_alone(always_joined: None) -> None:
    """Randomized patterns (anchors of every kind, `\\b`, `(?m)`, `(?i)`, `(?s)`, literals
    anchored as `startswith`, `endswith` and `equals` write them, caseless) against blocks of
    texts holding newlines, empty texts, non-ASCII and values that are no text: each answer of
    the joined scan is the text's own scan (None for another value)."""
    rng = random.Random(20261207)
    wrong = []
    used = 0
    for _ in range(300):
        written = _patterns(rng)
        scanner = _scanner(written)
        alone = _scanner(written)
        _answers(scanner, _values(rng))  # (the first block is scanned text by text)
        for _ in range(4):
            values = _values(rng)
            before = _state(scanner, "scans")
            got = _answers(scanner, values)
            used += _state(scanner, "scans") - before < sum(type(v) is str for v in values)
            expected = [alone.scan(v) if type(v) is str else None for v in values]
            if got != expected:
                wrong.append(([p.expression for p in written], values, got, expected))
    assert [] == wrong[:3]
    assert used > 600  # (most blocks scanned fewer texts alone than they hold)


def test_only_the_texts_holding_a_match_are_scanned_alone(always_joined: None) -> None:
    scanner = _scanner([Pattern("timeout"), Pattern("^panic: ")])
    _answers(scanner, ["warm-up"])
    texts = ["GET /a 200", "upstream timeout after 3s", "ok", "panic: nil map", "x panic: no"]
    values = [f"{text} {i}" for i in range(8) for text in texts]  # (none repeats: no memo)
    before = _state(scanner, "scans")
    answers = scanner.scan_block(values, _same)
    assert answers is not None
    assert _state(scanner, "scans") - before == 16  # the two texts of each five holding one
    assert [bool(a) for a in answers] == [False, True, False, True, False] * 8


def test_caseless_patterns_of_ascii_are_joined_as_bytes_and_the_folded_letters_found(always_joined: None) -> None:
    """As in the field's own database (see `ascii_case`), the caseless patterns of ASCII are
    compiled as bytes, where the Kelvin sign is not `k` nor the long s `s`: the trap's match
    flags a text holding one, whose own scan finds them."""
    written = [Pattern("kill -9", caseless=True), Pattern("(?i)session lost"), Pattern("panic")]
    scanner = _scanner(written)
    assert scanner.as_bytes() == {0, 1}
    _answers(scanner, ["warm-up"])
    values = ["ok", "\u212aILL -9", "Se\u017f\u017fion LOST", "KILL -9", "panic", "\u212a"]
    before = _state(scanner, "scans")
    answers = scanner.scan_block(values, _same)
    assert answers == [frozenset(), {0}, {1}, {0}, {2}, frozenset()]
    assert _state(scanner, "scans") - before == 5  # (the trap flags the last text in vain)


def test_anchors_are_written_for_joined_texts() -> None:
    assert joined.joined_expression("\\Afoo\\z") == "^foo"
    assert joined.joined_expression("^a+$") == "^a"
    assert joined.joined_expression("x\\Z") == "x"
    assert joined.joined_expression("\\\\A[$^\\z]\\Q$\\E") == "\\\\A[$^\\z]\\Q$\\E"  # not anchors
    assert joined.joined_expression("(?i)a(?m:^b)") == "(?i)a(?m:^b)"
    assert joined.joined_expression("(?-m)^a") is None
    assert joined.joined_expression("(?x)a # ^") is None


def test_a_repeat_ending_a_pattern_is_cut_to_its_least() -> None:
    """`error.*` would report a match at every byte after `error`: `error` is found where it
    may start, each text holding it reported once or so."""
    assert joined.joined_expression("timeout after \\d+ms.*$") == "timeout after \\d+ms"
    assert joined.joined_expression("ab[cd]*\\s+") == "ab[cd]*\\s"
    assert joined.joined_expression("x{2,}") == "x{2}"
    assert joined.joined_expression("a|b.*") == "a|b.*"  # (an alternative may hold the repeat)
    assert joined.joined_expression("(ab)*") == "(ab)*"
    assert joined.joined_expression("a\\x{24}") == "a\\x{24}"  # (a code point, not a count)


def test_a_pattern_ending_in_dot_star_keeps_its_field_joined() -> None:
    scanner = _scanner([Pattern("ERROR user .*")])
    values = [f"INFO request {i}" for i in range(43)]
    _answers(scanner, values)  # (the first block is scanned text by text)
    for n in range(20):
        before = _state(scanner, "scans")
        answers = scanner.scan_block([*values, f"ERROR user u{n}: " + "x" * 60], _same)
        assert answers is not None and answers[-1]
        assert _state(scanner, "scans") - before == 1
    assert _state(scanner, "paused") == 0


def test_a_field_whose_texts_mostly_hold_a_pattern_is_scanned_text_by_text() -> None:
    """The joined scan would report a match in nearly every text: each block's texts are
    scanned one by one instead, for a while, the answers the same."""
    scanner = _scanner([Pattern("a")])
    alone = _scanner([Pattern("a")])
    values = [f"a{i}" for i in range(40)]
    for _ in range(5):
        assert _answers(scanner, values) == [alone.scan(v) for v in values]
    assert _state(scanner, "paused") > 0


def test_a_pattern_found_in_an_empty_text_leaves_its_field_text_by_text() -> None:
    scanner = _scanner([Pattern("a*"), Pattern("b")])
    values = ["", "b", "c"] * 10
    for _ in range(3):
        assert scanner.scan_block(values, _same) is None  # (each text is scanned by the caller)
    assert _state(scanner, "joined_scan") is None


def test_the_database_of_joined_texts_is_compiled_once_and_kept() -> None:
    """Not at a start, but after COMPILE_AFTER blocks scanned text by text (a short replay or a
    rule test never pays for it); then kept, and read back by the next start."""
    kept: dict[str, bytes] = {}
    first = _scanner([Pattern("fatal"), Pattern("^x")], kept, when="later")
    for _ in range(patterns.COMPILE_AFTER):
        assert first.scan_block(["a", "b"], _same) is None
    assert not kept
    _answers(first, ["a", "b"])
    assert len(kept) == 1
    second = _scanner([Pattern("fatal"), Pattern("^x")], kept, when="later")
    assert _state(second, "joined_scan") is not None  # read back, not compiled: used at once
    assert _answers(second, ["x fatal", "y"]) == [first.scan("x fatal"), first.scan("y")]


@pytest.fixture
def held_compiles(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, list[str]]]:
    """Compiles of a database of joined texts held until the event is set, each field named in
    the list as its compile begins; set at the end whatever failed (a compile held would hold
    back every later one)."""
    release = threading.Event()
    begun: list[str] = []
    compile_joined = FieldScanner._compile_joined

    def held(self: FieldScanner) -> Any:
        begun.append(self.field)
        assert release.wait(10)
        return compile_joined(self)

    monkeypatch.setattr(FieldScanner, "_compile_joined", held)
    yield release, begun
    release.set()


def _answered(scanner: FieldScanner) -> bool:
    """Whether the scanner's compile beside has given its answer (a database, or None)."""
    return bool(_state(scanner, "joined_later")() is not patterns.COMPILING)


def test_a_daemon_compiles_the_database_of_joined_texts_beside_its_loop(
    held_compiles: tuple[threading.Event, list[str]], always_joined: None
) -> None:
    """When "beside", the compile runs in a thread of its own from the start; until it is done
    every block is scanned text by text (not waited for), then joined, and it is kept."""
    release, _ = held_compiles
    kept: dict[str, bytes] = {}
    scanner = _scanner([Pattern("fatal"), Pattern("^x")], kept, when="beside")  # (returns at once)
    alone = _scanner([Pattern("fatal"), Pattern("^x")], when="later")
    for _ in range(3):
        assert scanner.scan_block(["x fatal", "y"], _same) is None  # (not waited for)
    assert not kept and _state(scanner, "joined_scan") is None
    release.set()
    assert wait_until(lambda: _answered(scanner))
    assert kept  # (kept before it is given)
    _answers(scanner, ["a"])  # (the first block once it is done is counted text by text)
    assert _state(scanner, "joined_scan") is not None
    values = ["x fatal", "y", "z"]
    before = _state(scanner, "scans")
    got = _answers(scanner, values)
    assert _state(scanner, "scans") - before == 1  # (only "x fatal", flagged by the joined scan)
    assert got == [alone.scan(v) for v in values]


def test_compiles_beside_run_one_at_a_time(held_compiles: tuple[threading.Event, list[str]]) -> None:
    """Quick reloads do not compile their rule sets' databases all at once (each a thread of
    its own): a compile beside begins once the one before it is done."""
    release, begun = held_compiles
    kept: dict[str, bytes] = {}
    for scanner, pattern in ((FieldScanner("first"), "fatal"), (FieldScanner("second"), "panic")):
        scanner.add(Pattern(pattern))
        scanner.use(scanner.compile())
        scanner.join(kept.get, kept.__setitem__, when="beside")
        assert wait_until(lambda: begun == ["first"])  # (the first has begun before the second is asked)
    assert not release.wait(0.2) and begun == ["first"]  # (the second waits its turn)
    release.set()
    assert wait_until(lambda: len(kept) == 2)
    assert begun == ["first", "second"]


def test_a_compile_beside_queued_behind_one_of_the_same_patterns_reads_what_it_kept(
    held_compiles: tuple[threading.Event, list[str]],
) -> None:
    """Quick reloads that leave a field's patterns as they were queue compiles of one database:
    the second finds it kept by the first, and does not compile it again."""
    release, begun = held_compiles
    kept: dict[str, bytes] = {}
    first = _scanner([Pattern("fatal")], kept, when="beside")
    assert wait_until(lambda: begun == ["f"])
    second = _scanner([Pattern("fatal")], kept, when="beside")
    release.set()
    assert wait_until(lambda: _answered(first) and _answered(second))
    assert _state(first, "joined_later")() is not None and _state(second, "joined_later")() is not None
    assert begun == ["f"] and len(kept) == 1


def test_a_compile_beside_without_a_thread_is_compiled_later(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where no thread can be started (a container's limit on processes), the database is
    compiled as every other command compiles it, after COMPILE_AFTER blocks; nothing fails."""

    def refused(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refused)
    kept: dict[str, bytes] = {}
    scanner = _scanner([Pattern("fatal")], kept, when="beside")
    assert "compiled later: can't start new thread" in caplog.text
    for _ in range(patterns.COMPILE_AFTER):
        assert scanner.scan_block(["fatal", "b"], _same) is None
    assert not kept
    _answers(scanner, ["fatal", "b"])
    assert len(kept) == 1 and _state(scanner, "joined_scan") is not None


def test_a_compile_beside_that_fails_leaves_texts_scanned_one_by_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def failing(self: FieldScanner) -> Any:
        raise MemoryError

    monkeypatch.setattr(FieldScanner, "_compile_joined", failing)
    scanner = _scanner([Pattern("fatal")], {}, when="beside")
    assert wait_until(lambda: "was not compiled" in caplog.text)
    for _ in range(3):
        assert scanner.scan_block(["fatal", "b"], _same) is None
    assert _state(scanner, "joined_scan") is None and _state(scanner, "joined_later") is None
    assert "'f' texts joined was not compiled" in caplog.text
