"""The alerts' memos (`rulesd.interned.Memo`): a hit is one dict lookup, the answers are the
function's, and what they hold stays bounded and goes at a reload."""

from __future__ import annotations

import random

import pytest

from rulesd.alerting import alias, payload
from rulesd.alerting.alias import NAMES_KEPT, alert_alias, rule_names
from rulesd.alerting.payload import AlertSettings, build_payload, forget_rules
from rulesd.engine import Firing
from rulesd.interned import Interned, Memo
from tests.ruletools import rules_from_yaml


def test_a_memo_answers_as_its_function_and_empties_when_full() -> None:
    """Randomized keys, some asked again: each answer is the function's, the function is asked
    once per key while the memo holds it, and the memo never holds more than `kept`."""
    asked: list[int] = []

    def square(n: int) -> int:
        asked.append(n)
        return n * n

    memo = Memo(square, 8)
    rng = random.Random(3)
    held: set[int] = set()
    for _ in range(2000):
        key = rng.randrange(12)
        before = len(asked)
        assert key * key == memo[key]
        assert len(asked) == before + (key not in held)  # asked only when not held
        held = {key} if len(memo) == 1 and key not in held else held | {key}
        assert len(memo) <= 8 and set(memo) == held


def test_a_hit_is_a_lookup_of_the_dict_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The names and the default alias of the rules that fire together are looked up without
    calling a Python function or `functools.lru_cache`'s wrapper on a hit (a key tuple packed,
    hashed and compared, and the recency list moved: three such hits an alert of a replay)."""
    rules = rules_from_yaml("rules:\n  - {name: b, match: {x: 1}}\n  - {name: a, match: {x: 1}}\n")
    fired = Interned([rules["b"], rules["a"]])
    names, said = rule_names(fired), alert_alias(fired, {})

    def asked(rules: object) -> None:
        raise AssertionError("worked out again")

    for memo in alias._MEMOS:
        monkeypatch.setattr(memo, "_answer", asked)
    assert isinstance(rule_names.__self__, Memo)  # type: ignore[attr-defined]
    assert (names, said) == (rule_names(fired), alert_alias(fired, {}))
    assert ("b", "a") == names and "rulesd: a, b" == said


def test_the_bodies_memos_stay_bounded_and_go_at_a_reload() -> None:
    """More combinations than the memos keep: each body is the one worked out anew, the memos
    hold at most NAMES_KEPT tuples of rules each, and `forget_rules` lets go of them all (a
    reload: the rules before are not kept alive by them)."""
    forget_rules()
    text = "rules:\n" + "".join(f"  - {{name: r{i}, match: {{x: 1}}}}\n" for i in range(4))
    rules = list(rules_from_yaml(text).values())
    combos = [Interned(rules[: 1 + i % 4]) for i in range(NAMES_KEPT + 10)]
    for fired in combos:
        body = build_payload(Firing({"x": 1}, 1.0, fired), AlertSettings())
        assert body == build_payload(Firing({"x": 1}, 1.0, tuple(fired)), AlertSettings())
        assert f'["{rules[0].name}"' == body["details"]["Triggering Rules"][: len(rules[0].name) + 3]
        assert ", ".join(rule_names(fired)) == alias.joined_names(fired)  # (replay's text line)
    for memo in (*alias._MEMOS, payload._PARTS):
        assert 0 < len(memo) <= NAMES_KEPT
    forget_rules()
    assert all(len(memo) == 0 for memo in (*alias._MEMOS, payload._PARTS))
