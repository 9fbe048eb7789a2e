"""Caseless patterns compiled as bytes: which qualify, and that the scan answers as UTF-8 mode."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import hyperscan
import pytest

from rulesd.rules import patterns
from rulesd.rules.ascii_case import byte_caseless
from rulesd.rules.patterns import MODE, FieldScanner, Pattern, literal_pattern


@pytest.mark.parametrize(
    "expression",
    [
        "(?i)certificate for db-1\\.internal expires in [0-7] days",
        "(?i)segmentation fault",
        "(?i)\\\\(users\\\\public|programdata)\\\\[a-z]+\\.(exe|ps1|dll)",
        "(?i)\\s-e(nc|ncodedcommand)?\\s+[a-z0-9+/=]{20,}",
        "(?i)^/etc/(passwd|shadow)\\z",
        "(?i)\\x4b\\x{73}[]k]\\A\\z\\Z\\d\\n\\t",
        "(?i)(?:ab)+",
    ],
)
def test_caseless_patterns_of_ascii_atoms_are_compiled_as_bytes(expression: str) -> None:
    assert byte_caseless(expression, caseless=False)
    assert byte_caseless(expression.removeprefix("(?i)"), caseless=True)
    assert not byte_caseless(expression.removeprefix("(?i)"), caseless=False)  # case matters


@pytest.mark.parametrize(
    "expression",
    [
        "(?i)error.*timeout",  # `.` takes a character of several bytes
        "(?i)a[^b]c",  # so does a negated class
        "(?i)\\bkelvin",  # `\b` and `\w` tell the Kelvin sign (not a word character) from k
        "(?i)\\w+",
        "(?i)\\Ssh",
        "(?i)\\Dk",
        "(?i)[[:alpha:]]k",
        "(?i)caf\\x{e9}",  # escapes beyond ASCII
        "(?i)caf\\xe9",
        "(?i)café",
        "(?i)a(?-i)k",  # a flag group: case matters again after it
        "a(?i)k",
        "(?i)(?x)k # .",
        "(?i)(a)\\1",
        "(?i)\\pLk",
        "(?i)k\\",
        "(?i)[k",
        "(?i)^/etc/(passwd|shadow)$",  # `$` before a final newline (see below)
    ],
)
def test_patterns_that_could_answer_otherwise_as_bytes_stay_in_utf8_mode(expression: str) -> None:
    assert not byte_caseless(expression, caseless=False)
    assert not byte_caseless(expression.removeprefix("(?i)"), caseless=True)


ATOMS = ["k", "K", "s", "S", "a", "e", "-", "\\.", " ", "\\d", "\\s", "\\x4b", "\\x{73}", "1"]
CLASSES = ["[a-z]", "[j-l]", "[K]", "[r-t]", "[0-9]", "[ks]", "[A-Z0-9]", "[-.]", "[S-T]"]
OTHERS = ["(?i)k.s", "(?i)\\bks", "(?i)\\w", "k", "s", "\\x{212a}", "\u017f", "(?i)\u017f", "(?i)[^a]"]
CHARACTERS = ["k", "K", "s", "S", "\u212a", "\u017f", "a", "e", "1", " ", "-", ".", "é", "日", "ß", "\n", "\ud800"]


def _random_pattern(rng: random.Random, depth: int = 0) -> str:
    parts = []
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        if roll < 0.55:
            part = rng.choice(ATOMS)
        elif roll < 0.8:
            part = rng.choice(CLASSES)
        elif depth < 2:
            branches = [_random_pattern(rng, depth + 1) for _ in range(rng.randint(1, 3))]
            part = rng.choice(["(", "(?:"]) + "|".join(branches) + ")"
        else:
            part = rng.choice(ATOMS)
        parts.append(part + rng.choice(["", "", "", "?", "*", "+", "{1,2}"]))
    if depth:
        return "".join(parts)
    anchors = rng.choice([("", ""), ("^", ""), ("", "$"), ("\\A", "\\z"), ("", "\\Z")])
    return anchors[0] + "".join(parts) + anchors[1]


def _in_utf8_mode(patterns: dict[Pattern, int]) -> Any:
    """What a database of the patterns, every one in UTF-8 mode, finds in a text."""
    database = hyperscan.Database(mode=MODE)
    database.compile(
        expressions=[p.expression.encode() for p in patterns],
        ids=list(patterns.values()),
        flags=[p.flags for p in patterns],
    )

    def found(text: str) -> set[int]:
        ids: set[int] = set()
        data = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()
        database.scan((data,), match_event_handler=lambda pattern_id, *_: ids.add(pattern_id))
        return ids

    return found


def test_patterns_compiled_as_bytes_find_what_utf8_mode_finds_in_texts_full_of_case_traps() -> None:
    """Random caseless patterns of ASCII atoms, beside patterns that stay in UTF-8 mode, in one
    database; random texts of the Kelvin sign, the long s, their letters and other characters
    beyond ASCII (a lone surrogate too): the field's scan answers as a database of all of them
    in UTF-8 mode, Hyperscan's own Unicode folding, does."""
    rng = random.Random(20261207)
    wrong, as_bytes = [], 0
    for _ in range(60):
        scanner = FieldScanner("f")
        for _ in range(rng.randint(3, 8)):
            caseless = rng.random() < 0.5
            expression = ("" if caseless else "(?i)") + _random_pattern(rng)
            scanner.add(Pattern(expression, caseless))
        for expression in rng.sample(OTHERS, 2):
            scanner.add(Pattern(expression))
        literal = literal_pattern(rng.choice(["Kelvin", "ſ-s", "k.s", "é k"]), "contains", caseless=True)
        assert literal is not None
        scanner.add(literal)
        as_bytes += sum(byte_caseless(p.expression, p.caseless) for p in scanner.patterns)
        scanner.use(scanner.compile())
        texts = ["".join(rng.choice(CHARACTERS) for _ in range(rng.randint(0, 10))) for _ in range(150)]
        expected = _in_utf8_mode(scanner.patterns)
        wrong += [(list(scanner.patterns), t) for t in texts if set(scanner.scan(t)) != expected(t)]
    assert [] == wrong[:3]
    assert as_bytes > 200  # (most of the random ones qualify: the test compares something)


def test_a_caseless_pattern_compiled_as_bytes_finds_the_kelvin_sign_and_the_long_s() -> None:
    scanner = FieldScanner("message")
    kelvin = scanner.add(Pattern("(?i)kelvin [0-9]+k"))
    long_s = scanner.add(Pattern("disk", caseless=True))
    plain = scanner.add(Pattern("\u212a"))
    assert byte_caseless("(?i)kelvin [0-9]+k", caseless=False) and byte_caseless("disk", caseless=True)
    scanner.use(scanner.compile())
    assert {kelvin, plain} == scanner.scan("\u212aelvin 300\u212a")
    assert {long_s} == scanner.scan("DI\u017fK")
    assert set() == scanner.scan("kelvin 300 di\u017f")


def test_a_caseless_pattern_ending_in_dollar_finds_what_utf8_mode_finds_before_a_final_newline() -> None:
    """Hyperscan in byte mode misses `ks*$` in a text of 17 bytes or more ending `k` and a
    newline, which caseless UTF-8 mode finds (as Python's `re` does): such a pattern stays in
    UTF-8 mode."""
    scanner = FieldScanner("message")
    ids = [scanner.add(Pattern(e, caseless=True)) for e in ("ks*$", "disk full s*$", "^/tmp/x*$")]
    scanner.use(scanner.compile())
    expected = _in_utf8_mode(scanner.patterns)
    for text in ("x" * 15 + "k\n", "/var: disk full\n" * 2, "/tmp/" + "x" * 20 + "\n", "k\n"):
        assert expected(text) == set(scanner.scan(text)), text
    assert {ids[0]} == scanner.scan("x" * 30 + "K\n")


def test_a_database_compiled_with_another_choice_of_bytes_is_keyed_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule cache names a database by `key`: one written by a build that compiled a pattern
    as bytes where this one does not (`ks*$` before `$` stayed in UTF-8 mode) is not read back,
    nor the other way round; it would answer as that build did."""
    scanner = FieldScanner("message")
    scanner.add(Pattern("ks*$", caseless=True))
    scanner.add(Pattern("disk", caseless=True))
    key = scanner.key()
    assert key == scanner.key()
    # the key of a build that marked nothing, and compiled `ks*$` as bytes
    text = "\n".join(f"{i}:{int(p.caseless)}:{p.expression}" for p, i in scanner.patterns.items())
    version, flags = getattr(hyperscan, "__version__", ""), patterns.FLAGS
    unmarked = hashlib.sha256(f"{version}\n{MODE}\n{flags}\nascii-caseless-bytes\n{text}".encode()).hexdigest()
    assert unmarked != key
    monkeypatch.setattr(patterns, "byte_caseless", lambda expression, caseless: caseless)
    elsewhere = FieldScanner("message")
    for pattern in scanner.patterns:
        elsewhere.add(pattern)
    assert key != elsewhere.key()
