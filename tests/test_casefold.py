"""The case folding of `equals`/`in` under `nocase` is Hyperscan's, which decides the other text
operators under `nocase`: the same for every character that has a case."""

from __future__ import annotations

import pytest

from rulesd.rules.casefold import fold, simple_fold
from rulesd.rules.patterns import FieldScanner, literal_pattern

CASED = [c for c in map(chr, range(0x110000)) if not "\ud800" <= c <= "\udfff" and (c.lower() != c or c.upper() != c)]


def test_fold_agrees_with_hyperscan_on_every_cased_character() -> None:
    """Characters fold together exactly when Hyperscan's caseless matching takes one for the
    other: each character is found by the caseless pattern of its own fold class and by no
    other class's."""
    classes: dict[str, list[str]] = {}
    for char in CASED:
        classes.setdefault(fold(char), []).append(char)
    scanner = FieldScanner("f")
    ids = {
        folded: scanner.add(literal_pattern(members[0], "equals", caseless=True)) for folded, members in classes.items()
    }
    scanner.use(scanner.compile())
    wrong = [(char, sorted(found)) for char in CASED if (found := scanner.scan(char)) != {ids[fold(char)]}]
    assert [] == wrong


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Alice", "alice"),
        ("ÉCOLE", "école"),
        ("\u212aelvin", "kelvin"),
        ("ΟΔΟΣ", "οδοσ"),
        ("οδος", "οδοσ"),
        ("STRAẞE", "straße"),
        ("Straße", "straße"),  # simple folding: ß stays ß
        ("STRASSE", "strasse"),
        ("İstanbul", "İstanbul"),  # no Turkish rules: İ and ı fold only to themselves
        ("ıi", "ıi"),
        ("ſ", "s"),
        ("µ", "μ"),
        ("ᾈ", "ᾀ"),
        ("Ა", "Ა"),  # Georgian Mtavruli (Unicode 11): after Hyperscan's Unicode 7.0
        ("ꭰ", "ꭰ"),  # Cherokee lowercase (Unicode 8)
        ("ǅ", "ǆ"),
        ("😀x\u00a0", "😀x\u00a0"),
    ],
)
def test_fold_examples(text: str, folded: str) -> None:
    """Simple case folding of Unicode 7.0, character for character."""
    assert folded == fold(text)
    assert len(text) == len(fold(text))


def test_simple_fold_of_one_character_never_expands() -> None:
    """Full folding would write ß as ss and ﬁ as fi; the simple fold keeps one character."""
    assert ["ß", "ﬁ", "İ"] == [simple_fold(c) for c in ("ß", "ﬁ", "İ")]
