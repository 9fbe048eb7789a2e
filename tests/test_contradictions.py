"""The contradiction check's quick look never passes over a condition it would find one in."""

from __future__ import annotations

import random

from rulesd.rules.contradictions import _scope, contradictions
from rulesd.rules.lists import NO_LISTS
from tests.test_index_equivalence import _bare_condition, _condition


def test_the_quick_look_finds_every_contradiction_the_full_walk_finds() -> None:
    """For random conditions (bounds, `exists`, networks, texts, nested `all`, `any`, `not`),
    skipping those the quick look finds nothing in loses no contradiction; and the random
    conditions do hold contradictions of each scope (else the test would be weak)."""
    rng = random.Random(20261206)
    scopes: set[str] = set()
    for _ in range(3000):
        condition = _bare_condition(rng) if rng.random() < 0.3 else _condition(rng)
        full = _scope(condition, (), NO_LISTS, {}, "")[0]
        assert full == contradictions(condition, (), NO_LISTS), condition
        scopes |= {c.scope for c in full}
    assert {"", "any", "not"} <= scopes
