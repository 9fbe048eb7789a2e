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


def test_a_cidr_inside_its_not_cidr_is_found_across_ipv4_and_its_mapped_ipv6_form() -> None:
    """Addresses are looked up in one space, IPv4 as IPv4-mapped IPv6 (`::ffff:10.1.2.3` is in
    `10.0.0.0/8`), so a network written in either form inside the other is a contradiction;
    a network that reaches outside it is none."""
    mapped = {"ip": {"cidr": "::ffff:10.1.0.0/112", "not_cidr": "10.0.0.0/8"}}
    ((found,),) = [contradictions(mapped, ("match",), NO_LISTS)]
    assert "every address in ::ffff:a01:0/112 is in a network that not_cidr rules out" == found.reason
    plain = {"ip": {"cidr": "10.1.0.0/16", "not_cidr": "::ffff:10.0.0.0/104"}}
    assert 1 == len(contradictions(plain, ("match",), NO_LISTS))
    wider = {"ip": {"cidr": "::ffff:0.0.0.0/95", "not_cidr": "10.0.0.0/8"}}
    assert [] == contradictions(wider, ("match",), NO_LISTS)
