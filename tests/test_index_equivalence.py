"""The rule index only ever skips rules that cannot match: the engine fires exactly what
checking every enabled rule on every event would fire."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rulesd.engine import Engine
from rulesd.rules.fields import MISSING, make_getter
from rulesd.rules.index import RuleIndex
from rulesd.rules.literals import required_literals
from rulesd.rules.model import Rule, RuleSet
from tests.ruletools import ruleset_from_yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import generate

SEED = 7


class BruteForce:
    """Every enabled rule's predicate on every event, with the firing rules written out plainly."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.rules = [r for r in ruleset.rules if r.enabled]
        self.windows: dict[tuple[str, tuple[str, ...]], list[float]] = {}
        self.last_fired: dict[tuple[str, tuple[str, ...]], float] = {}

    def evaluate(self, event: dict[str, Any], time: float) -> list[str]:
        """Names of the rules that fire, lead first (highest priority, then name)."""
        fired = [r for r in self.rules if r.match(event) and self._fires(r, event, time)]
        return [r.name for r in sorted(fired, key=lambda r: (r.priority, r.name))]

    def _fires(self, rule: Rule, event: dict[str, Any], time: float) -> bool:
        key = (rule.name, _group(rule, event))
        if rule.threshold is not None:
            window = rule.threshold.window
            times = [t for t in self.windows.get(key, []) if t > time - window] + [time]
            if len(times) < rule.threshold.count:
                self.windows[key] = times
                return False
            self.windows.pop(key, None)
        if rule.throttle:
            last = self.last_fired.get(key)
            if last is not None and time - last < rule.throttle:
                return False
            self.last_fired[key] = time
        return True


def _group(rule: Rule, event: dict[str, Any]) -> tuple[str, ...]:
    assert rule.threshold is not None or not rule.group_getters
    paths = rule.threshold.group_by if rule.threshold else ()
    values = (make_getter(p)(event) for p in paths)
    return tuple("missing" if v is MISSING else "=" + json.dumps(v, sort_keys=True) for v in values)


def planted_events(rules: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Generated events, half of them altered to meet a random rule's string equalities,
    so that many events reach deep into the index and many rules fire."""
    rng = random.Random(SEED)
    events = list(generate.generate_events(count, SEED))
    for event in events:
        if rng.random() < 0.5:
            _plant(event, rng.choice(rules)["match"], rng)
    return events


def _plant(event: dict[str, Any], match: dict[str, Any], rng: random.Random) -> None:
    for key, value in match.items():
        if key in ("all", "any"):
            for sub in value if key == "all" else [rng.choice(value)]:
                _plant(event, sub, rng)
        elif key != "not" and "." not in key:
            if isinstance(value, str):
                event[key] = value
            elif isinstance(value, list) and value:
                event[key] = rng.choice(value)
            elif isinstance(value, dict) and "regex" in value and rng.random() < 0.3:
                event[key] = rng.choice(generate.PROBLEMS).format(
                    n=rng.randrange(9999),
                    k=rng.randrange(40),
                    code=rng.randrange(1000, 1400),
                    user="u",
                    service=event.get("service", "x"),
                    host="h",
                )


def _ruleset(count: int) -> tuple[RuleSet, list[dict[str, Any]]]:
    raw = generate.generate_rules(count, generate.DEFAULT_SEED)
    return ruleset_from_yaml(yaml.safe_dump({"rules": raw})), raw


@pytest.mark.parametrize(("rules", "events"), [(100, 6000), (1000, 2500)])
def test_engine_fires_what_brute_force_fires(rules: int, events: int) -> None:
    """Same rules fire on the same events, with thresholds and throttles, as brute force."""
    ruleset, raw = _ruleset(rules)
    engine, reference = Engine(ruleset), BruteForce(ruleset)
    fired_events = 0
    for i, event in enumerate(planted_events(raw, events)):
        time = generate.START_TIME + i
        firing = engine.evaluate(event, time)
        actual = [r.name for r in firing.rules] if firing else []
        expected = reference.evaluate(event, time)
        assert expected == actual, f"event {i}: {event}"
        fired_events += bool(expected)
    assert fired_events > events // 50  # the comparison covered real firings


@pytest.mark.parametrize("rules", [100, 1000])
def test_every_matching_rule_is_a_candidate_exactly_once(rules: int) -> None:
    """For each event, every enabled rule whose predicate holds is among the candidates, once."""
    ruleset, raw = _ruleset(rules)
    index = RuleIndex(ruleset.rules)
    enabled = [r for r in ruleset.rules if r.enabled]
    matched = 0
    for event in planted_events(raw, 2000):
        candidates = index.candidates(event)
        names = [r.name for r in candidates]
        assert len(names) == len(set(names))
        missing = [r.name for r in enabled if r.match(event) and r not in candidates]
        assert [] == missing, f"{event}"
        matched += len(candidates) > 0
    assert matched > 200


TRICKY = """
rules:
  - {name: alt, match: {message: {regex: "timeout|refused"}}}
  - {name: folded, match: {message: {regex: "(?i)Disk Full"}}}
  - {name: star, match: {message: {regex: "ab*c"}}}
  - {name: optional, match: {message: {regex: "(x)?yz+"}}}
  - {name: class-only, match: {message: {regex: "^[0-9]+$"}}}
  - {name: anchored, match: {message: {regex: "^panic: (a|b)c"}}}
  - {name: backref, match: {message: {regex: "(q)\\\\1"}}}
  - {name: bound, match: {latency: {gt: 5}, message: {regex: "s"}}}
  - {name: bound-only, match: {latency: {gte: 5.5}}}
  - {name: not-only, match: {not: {level: info}}}
  - {name: any-union, match: {any: [{level: error, host: a}, {level: critical}]}}
  - {name: nested, match: {http.status: {gte: 500}, http.method: [POST]}}
  - {name: numbers, match: {code: 1, flag: true}}
"""
TRICKY_EVENTS: list[dict[str, Any]] = [
    {"message": "upstream timeout"},
    {"message": "conn REFUSED"},
    {"message": "DISK FULL on /"},
    {"message": "ac"},
    {"message": "abbbc"},
    {"message": "yzz"},
    {"message": "xyz"},
    {"message": "12345"},
    {"message": "panic: bc"},
    {"message": "panic: ac!"},
    {"message": "qq"},
    {"message": "s", "latency": 5},
    {"message": "s", "latency": 5.01},
    {"latency": 5.5},
    {"latency": True},
    {"level": "info"},
    {"level": "error", "host": "a"},
    {"level": "critical"},
    {"level": "error", "host": "b"},
    {"http": {"status": 503, "method": "POST"}},
    {"http": {"status": 503, "method": "GET"}},
    {"code": 1.0, "flag": True},
    {"code": True, "flag": True},
    {"message": 5},
    {"message": ["timeout"]},
    {},
]


@pytest.mark.parametrize("event", TRICKY_EVENTS)
def test_tricky_rules_are_candidates_when_they_match(event: dict[str, Any]) -> None:
    """Hand-picked regex, bound and `any` shapes: a match is never skipped."""
    ruleset = ruleset_from_yaml(TRICKY)
    candidates = RuleIndex(ruleset.rules).candidates(event)
    assert [] == [r.name for r in ruleset.rules if r.match(event) and r not in candidates]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("timeout|refused", {("timeout", False), ("refused", False)}),
        ("(?i)Disk Full", {("Disk Full", True)}),
        ("ab*c", {("a", False)}),
        ("x?yz+", {("y", False)}),
        ("^panic: (a|b)c", {("panic: ", False)}),
        ("^[0-9]+$", None),
        ("(?a)(?i)k", None),
    ],
)
def test_required_literals(pattern: str, expected: set[tuple[str, bool]] | None) -> None:
    """The literals found are ones every match must contain."""
    found = required_literals(pattern)
    assert expected == (set(found) if found is not None else None)
