"""The rule index only ever skips rules that cannot match: the engine fires exactly what
checking every enabled rule on every event would fire, on every benchmark shape and on
randomized rule sets full of regexes, literals, Unicode and case traps."""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from rulesd.engine import Engine, core
from rulesd.engine.state import THROTTLE
from rulesd.engine.values import NO_GROUP
from rulesd.rules.conditions import behaviour_key, generated_function
from rulesd.rules.fields import MISSING, make_getter
from rulesd.rules.index import RuleIndex
from rulesd.rules.loader import check_text
from rulesd.rules.model import Rule, RuleSet
from tests.ruletools import ruleset_from_yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import generate

SEED = 7
LITERAL_OPS = ("contains", "startswith", "endswith")


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


def planted_events(rules: list[dict[str, Any]], count: int, shape: str = "classic") -> list[dict[str, Any]]:
    """Generated events, half of them altered to meet a random rule's equalities, so that
    many events reach deep into the index and many rules fire."""
    rng = random.Random(SEED)
    events = list(generate.shape_module(shape).generate_events(count, SEED))
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
            if isinstance(value, str | int):
                event[key] = value
            elif isinstance(value, list) and value:
                event[key] = rng.choice(value)
            elif isinstance(value, dict) and any(op in value for op in LITERAL_OPS) and rng.random() < 0.5:
                # a text that satisfies the literal operators (the predicate still decides)
                parts = [
                    value.get("startswith", ""),
                    " x ",
                    value.get("contains", ""),
                    " y ",
                    value.get("endswith", ""),
                ]
                event[key] = "".join(p for p in parts if isinstance(p, str))
            elif isinstance(value, dict) and "regex" in value and rng.random() < 0.3:
                event[key] = rng.choice(generate.PROBLEMS).format(
                    n=rng.randrange(9999),
                    k=rng.randrange(40),
                    code=rng.randrange(1000, 1400),
                    user="u",
                    service=event.get("service", "x"),
                    host="h",
                )


def _ruleset(count: int, shape: str = "classic") -> tuple[RuleSet, list[dict[str, Any]]]:
    raw = generate.shape_module(shape).generate_rules(count, generate.DEFAULT_SEED)
    return ruleset_from_yaml(yaml.safe_dump({"rules": raw})), raw


# Shapes, rule counts and events of the tests that compare the engine with a reference.
SHAPE_SIZES = [
    ("classic", 100, 6000),
    ("classic", 1000, 2500),
    ("ops", 100, 6000),
    ("ops", 1000, 2500),
    ("sigma", 100, 4000),
    ("sigma", 1000, 1500),
    ("heldout", 100, 4000),  # dozens of rules alike: one predicate call stands for them
    ("heldout", 1000, 1500),
    ("estate", 100, 4000),  # written after the tuning, thresholds and throttles in plenty
    ("estate", 1000, 1500),
]


@pytest.mark.parametrize(("shape", "rules", "events"), SHAPE_SIZES)
def test_engine_fires_what_brute_force_fires(shape: str, rules: int, events: int) -> None:
    """Same rules fire on the same events, with thresholds and throttles, as brute force."""
    ruleset, raw = _ruleset(rules, shape)
    engine, reference = Engine(ruleset), BruteForce(ruleset)
    fired_events = 0
    for i, event in enumerate(planted_events(raw, events, shape)):
        time = generate.START_TIME + i
        firing = engine.evaluate(event, time)
        actual = [r.name for r in firing.rules] if firing else []
        expected = reference.evaluate(event, time)
        assert expected == actual, f"event {i}: {event}"
        fired_events += bool(expected)
    assert fired_events > events // 100  # the comparison covered real firings


@pytest.mark.parametrize("shape", ["classic", "ops", "sigma", "heldout", "estate"])
@pytest.mark.parametrize("rules", [100, 1000])
def test_every_matching_rule_is_a_candidate_exactly_once(shape: str, rules: int) -> None:
    """For each event, every enabled rule whose predicate holds is among the candidates, once."""
    ruleset, raw = _ruleset(rules, shape)
    index = RuleIndex(ruleset.rules)
    enabled = [r for r in ruleset.rules if r.enabled]
    matched = 0
    for event in planted_events(raw, 2000, shape):
        candidates = index.candidates(event)
        names = [r.name for r in candidates]
        assert len(names) == len(set(names))
        missing = [r.name for r in enabled if r.match(event) and r not in candidates]
        assert [] == missing, f"{event}"
        matched += len(candidates) > 0
    assert matched > 200


@pytest.mark.parametrize("shape", ["ops", "sigma", "estate"])
def test_building_the_index_of_1000_rules_stays_within_120_python_calls_a_rule(shape: str) -> None:
    """Every `replay` and `run` builds the index at start (its plan is not kept in the rule
    cache): counted in calls (Python functions and generators entered, C functions called),
    which the machine's load does not move, it was 130-175 a rule at 1,000 rules, a sixth of a
    warm start; with the fields a node reads chosen once per kind of entry it is 93-104."""
    ruleset, _ = _ruleset(1000, shape)
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        calls += event in ("call", "c_call")

    sys.setprofile(count)
    try:
        RuleIndex(ruleset.rules)
    finally:
        sys.setprofile(None)
    assert calls <= 120 * len(ruleset.rules)


TRICKY = """
rules:
  - {name: alt, match: {message: {regex: "timeout|refused"}}}
  - {name: folded, match: {message: {regex: "(?i)Disk Full"}}}
  - {name: star, match: {message: {regex: "ab*c"}}}
  - {name: optional, match: {message: {regex: "(x)?yz+"}}}
  - {name: class-only, match: {message: {regex: "^[0-9]+$"}}}
  - {name: anchored, match: {message: {regex: "^panic: (a|b)c"}}}
  - {name: repeat, match: {message: {regex: "(q)q"}}}
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


# Rules written alike (one predicate call stands for them all) beside rules that only look so:
# another order of keys, another number type, another bound, a disabled twin, other kinds.
ALIKE = """
rules:
  - {name: a1, match: {code: 1}}
  - {name: a2, match: {code: 1}, throttle: 10s}
  - {name: a3, match: {code: 1.0}}
  - {name: a4, match: {code: true}}
  - {name: b1, match: {size: {gte: 1}}, threshold: {count: 2, window: 60, group_by: [host]}}
  - {name: b2, match: {size: {gte: 1.0}}}
  - {name: b3, match: {size: {gte: 1}}, enabled: false}
  - {name: b4, match: {size: {gt: 1}}}
  - {name: c1, match: {level: [error, critical]}}
  - {name: c2, match: {level: [critical, error]}, throttle: 5s}
  - {name: c3, match: {level: [error, warn]}}
  - {name: c4, match: {level: error}}
  - {name: d1, match: {user: {equals: Alice, nocase: true}}}
  - {name: d2, match: {user: Alice}}
  - {name: d3, match: {user: {in: [alice], nocase: true}}}
  - {name: e1, match: {message: {regex: "(?i)disk full"}}}
  - {name: e2, match: {message: {regex: "disk full"}}, threshold: {count: 2, window: 30}}
  - {name: e3, match: {message: {contains: disk full}}}
  - {name: e4, match: {message: {regex: "disk full"}}}
  - {name: f1, match: {any: [{level: error}, {host: a}]}}
  - {name: f2, match: {any: [{level: error}, {host: a}]}, threshold: {count: 3, window: 60, group_by: [host]}}
  - {name: f3, match: {any: [{level: error}, {host: b}]}}
  - {name: g1, match: {src: {cidr: 10.0.0.0/8}}}
  - {name: g2, match: {src: {cidr: 10.0.0.0/16}}}
  - {name: g3, match: {src: {cidr: 10.0.0.0/8}}, throttle: 20s}
  - {name: h1, match: {uri: {startswith: /wp-login}, not: {addr: {startswith: "10."}}}}
  - {name: h2, match: {uri: {startswith: /wp-login}, not: {addr: {startswith: "10."}}}, throttle: 30s}
  - {name: h3, match: {not: {addr: {startswith: "10."}}, uri: {startswith: /wp-login}}}
  - {name: h4, match: {uri: {startswith: /wp-login}, not: {addr: {startswith: "10.1"}}}}
  - {name: i1, match: {tags: {contains: db}}}
  - {name: i2, match: {tags: {contains: db}}, throttle: 15s}
  - {name: i3, match: {tags: {contains: 1}}}
  - {name: j1, match: {code: {not_equals: 1}}}
  - {name: j2, match: {code: {not_in: [1, x]}}}
  - {name: j3, match: {level: {not_in: [error, warn]}, flag: {equals: null}}}
  - {name: j4, match: {flag: {in: [false, 0]}}}
"""
ALIKE_VALUES: dict[str, tuple[Any, ...]] = {
    "code": (1, 1.0, True, 2, "1", None),
    "size": (0, 1, 1.0, 1.5, True, "2"),
    "level": ("error", "critical", "warn", "ERROR", 1),
    "user": ("Alice", "alice", "ALICE", "Bob", ["Alice"]),
    "message": ("disk full", "Disk Full on /", "disk  full", "ok", 5),
    "host": ("a", "b", "c"),
    "src": ("10.0.1.1", "10.1.1.1", "11.0.0.1", "::ffff:10.0.0.1", 10),
    "uri": ("/wp-login.php", "/index", "/WP-LOGIN"),
    "addr": ("10.0.0.1", "10.1.0.1", "192.0.2.1", None),
    "tags": ("db", "xdbx", ["db"], ["x", 1], [["db"]], 1, 1.0, None),
    "flag": (None, False, 0, 0.0, "false"),
}


def test_rules_written_alike_fire_each_as_brute_force_fires() -> None:
    """Rules whose conditions are written alike share one predicate call per event; each still
    fires by its own kind, throttle and groups, and rules that only look alike stay apart."""
    ruleset = ruleset_from_yaml(ALIKE)
    alike = RuleIndex(ruleset.rules).alike
    shared = [sorted(r.name for r in same) for same in alike.values()]
    assert sorted(shared) == [
        ["a1", "a2"],
        ["c1", "c2"],
        ["d1", "d3"],
        ["e2", "e4"],
        ["f1", "f2"],
        ["g1", "g3"],
        ["h1", "h2"],
        ["i1", "i2"],
    ]
    rng = random.Random(SEED)
    engine, reference = Engine(ruleset), BruteForce(ruleset)
    fired = set()
    for i in range(3000):
        event = {k: rng.choice(v) for k, v in ALIKE_VALUES.items() if rng.random() < 0.6}
        firing = engine.evaluate(event, float(i))
        actual = [r.name for r in firing.rules] if firing else []
        assert reference.evaluate(event, float(i)) == actual, f"event {i}: {event}"
        fired.update(actual)
    assert {r.name for r in ruleset.rules} - {"b3"} == fired  # every enabled rule fired at least once


# ---- randomized rule sets --------------------------------------------------------------

# Texts and patterns chosen to trip an index that decided differently from the predicates:
# case (ASCII and not, Kelvin sign, long s, titlecase digraphs), multi-byte characters, word
# boundaries next to non-ASCII letters, `$` before a final newline, empty matches, digits
# that are not ASCII, and literals that are regex syntax.
WORDS = (
    "error",
    "Error",
    "ERROR",
    "timeout",
    "TimeOut",
    "refused",
    "é",
    "É",
    "straße",
    "STRASSE",
    "ſ",
    "s",
    "K",
    "k",
    "\u212a",
    "ǅ",
    "ǆ",
    "Σ",
    "σ",
    "ς",
    "٣",
    "3",
    "a.b",
    "a+b",
    "[x]",
    "(y)",
    "\\",
    "/api/v1",
    "\u00a0",
    "日本",
    "😀",
    "",
    "x",
    "db-1",
    "out",
    "\n",
    "ẞ",
    "STRAẞE",
    "SS",
    "ΟΔΟΣ",
    "οδος",
    "İ",
    "i",
    "ı",
    "I",
    "İstanbul",
    "istanbul",
    "Kelvin",
    "\u212aelvin",
    "$dollar",
)
PATTERNS = (
    "error",
    "(?i)error",
    "(?i)é",
    "É",
    "(?i)straße",
    "(?i)k",
    "(?i)s",
    "(?i)σ",
    "(?i)ǆ",
    "\\bé",
    "é\\b",
    "\\d",
    "[0-9]",
    "\\w+$",
    "out$",
    "out\\z",
    "^$",
    "^",
    "a*",
    "x?",
    "\\.",
    "a\\.b",
    "\\[x\\]",
    "\\(y\\)",
    "日本",
    "😀",
    "(?s)x.y",
    "x.y",
    "\\s",
    "(?m)^out",
    "[[:alpha:]]+",
    "\\pL",
    "\\x{e9}",
    "(?i)TIME(out)?",
    "db-\\d+",
    "^/api/",
    "error|refused",
)
LITERALS = ("error", "Error", "é", "É", "a.b", "[x]", "\\", "日本", "😀", "out\n", "/api", "K", "ſ", " ")
# Case traps for `nocase`: ß and ẞ (not ss), Σ σ ς, İ i ı I, the Kelvin sign.
CASE_LITERALS = ("straße", "STRASSE", "ẞ", "ΟΔΟΣ", "ος", "σ", "İ", "i", "ı", "I", "kelvin", "\u212a", "ERROR", "")
NETWORKS = ("10.0.0.0/8", "10.1.0.0/16", "192.0.2.0/24", "2001:db8::/32", "::ffff:10.0.0.0/104", "0.0.0.0/0")
ADDRESSES = ("10.1.2.3", "10.200.0.1", "192.0.2.9", "198.51.100.1", "2001:db8::1", "::ffff:10.1.2.3", "fe80::1", "x")


BOUNDS = (1, 2.5, 10, 0, -3, 2**53)
NUMBERS = (None, 1, 1.0, 2.5, 2.5000000000000004, 10, 0, -3, -0.0, 2**53, 2**53 + 1, float("nan"), True, False)


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(WORDS) + rng.choice(("", " ", "\n", "-")) for _ in range(rng.randint(0, 4)))


# Named lists the random rules use as `$name` operands.
LISTS = {
    "words": ["error", "Error", "timeout", "é", "x", "db-1", "$dollar"],
    "traps": ["straße", "ΟΔΟΣ", "İ", "ı", "\u212aelvin", "STRAẞE"],
    "networks": ["10.0.0.0/8", "2001:db8::/32", "::ffff:192.0.2.0/120"],
}


def _matcher(rng: random.Random) -> dict[str, Any] | str | list[str]:
    kind = rng.randrange(10)
    if kind == 9:
        return _listed_matcher(rng)
    if kind >= 6:
        return _caseless_matcher(rng)
    if kind == 0:
        return {"regex": rng.choice(PATTERNS)}
    if kind == 1:
        return {rng.choice(("contains", "startswith", "endswith")): rng.choice(LITERALS)}
    if kind == 2:
        return {"regex": rng.choice(PATTERNS), "contains": rng.choice(LITERALS)}
    if kind == 3:
        return rng.choice(WORDS)
    if kind == 4:
        return rng.sample(WORDS, 2)
    return {"not_equals": rng.choice(WORDS)}


def _caseless_matcher(rng: random.Random) -> dict[str, Any]:
    """A text operator under `nocase: true`, sometimes beside another."""
    texts = CASE_LITERALS + LITERALS
    op = rng.choice(("equals", "in", "contains", "startswith", "endswith", "regex"))
    operand: Any = rng.choice(PATTERNS) if op == "regex" else rng.choice(texts + WORDS)
    if op == "in":
        operand = rng.sample(texts + WORDS, rng.randint(1, 4)) + ([rng.choice((1, True))] if rng.random() < 0.2 else [])
    matcher = {op: operand, "nocase": True}
    if rng.random() < 0.3:
        other = rng.choice(("contains", "startswith", "endswith"))
        matcher[other] = rng.choice(texts)
    return matcher


def _listed_matcher(rng: random.Random) -> dict[str, Any] | str:
    """A named list as a field's matcher or as an operand."""
    name = rng.choice(("$words", "$traps"))
    return rng.choice((name, {"in": name}, {"not_in": name}, {"in": name, "nocase": True}))


def _condition(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    cond: dict[str, Any] = {}
    for _ in range(rng.randint(1, 2)):
        cond[rng.choice(("message", "host", "user.name", "tags"))] = _matcher(rng)
    if depth < 2 and rng.random() < 0.3:
        cond[rng.choice(("any", "all"))] = [_condition(rng, depth + 1) for _ in range(rng.randint(1, 3))]
    if depth < 2 and rng.random() < 0.2:
        cond["not"] = _condition(rng, depth + 1)
    if rng.random() < 0.2:
        # Lower, upper and strict bounds, a range, and a bound where floats are 2 apart.
        ops = rng.sample(("gte", "gt", "lt", "lte"), rng.choice((1, 1, 2)))
        cond["n"] = {op: rng.choice(BOUNDS) for op in ops}
    if rng.random() < 0.1:
        cond[rng.choice(("code", "user.name"))] = {"exists": rng.choice((True, False))}
    if rng.random() < 0.1:
        networks: Any = rng.sample(NETWORKS, rng.randint(1, 3)) if rng.random() < 0.7 else "$networks"
        cond["ip"] = {rng.choice(("cidr", "not_cidr")): networks}
    return cond


def _bare_condition(rng: random.Random) -> dict[str, Any]:
    """Tests alone that give the index no text to look up: bounds, `exists`, a network, or an
    `any` of them (filed under a bound, or screened by the rule's predicate)."""
    parts: list[dict[str, Any]] = [
        {"n": {op: rng.choice(BOUNDS) for op in rng.sample(("gte", "gt", "lt", "lte"), rng.choice((1, 2)))}},
        {rng.choice(("code", "user.name", "n")): {"exists": rng.choice((True, False))}},
        {"ip": {rng.choice(("cidr", "not_cidr")): rng.sample(NETWORKS, rng.randint(1, 2))}},
    ]
    chosen = rng.sample(parts, rng.randint(1, 2))
    if len(chosen) == 2 and rng.random() < 0.5:
        return {"any": chosen}
    return {k: v for part in chosen for k, v in part.items()}


def random_rules(rng: random.Random, count: int) -> str:
    """A rule file of `count` random rules (as YAML text)."""
    lists = {name: _written(values) for name, values in LISTS.items()}
    rules: list[dict[str, Any]] = []
    while len(rules) < count:
        condition = _bare_condition(rng) if rng.random() < 0.2 else _condition(rng)
        rule = {"name": f"r{len(rules)}", "match": _written(condition)}
        # A rule that can never match (`n: {gt: 10, lt: 1}`) does not load: another is drawn.
        if check_text(yaml.safe_dump({"lists": lists, "rules": [rule]}, allow_unicode=True)).ruleset is not None:
            rules.append(rule)
    return yaml.safe_dump({"lists": lists, "rules": rules}, allow_unicode=True)


def _written(value: Any, op: str | None = None) -> Any:
    """A condition as a rule file writes it: a text starting with `$` that names no list is
    written with `$$` (a regex as it is)."""
    if isinstance(value, dict):
        return {k: _written(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_written(v, op) for v in value]
    if isinstance(value, str) and value.startswith("$") and value[1:] not in LISTS and op != "regex":
        return "$" + value
    return value


def random_event(rng: random.Random) -> dict[str, Any]:
    """An event whose fields are texts of the words above, or other types, or missing."""
    event: dict[str, Any] = {}
    for key in ("message", "host", "tags", "n"):
        roll = rng.random()
        if roll < 0.7:
            event[key] = _text(rng)
        elif roll < 0.8:
            event[key] = [_text(rng), rng.choice(LITERALS)]
        elif roll < 0.9:
            others = NUMBERS if key == "n" else (None, 1, 2.5, 10, True)
            event[key] = rng.choice((*others, {"x": "error"}))
        elif key == "n" and roll < 0.95:
            event[key] = rng.choice(NUMBERS)
    if rng.random() < 0.3:
        event["code"] = rng.choice((None, "E1", 0))
    if rng.random() < 0.5:
        event["user"] = {"name": _text(rng)}
    if rng.random() < 0.7:
        event["ip"] = rng.choice(ADDRESSES)
    return event


@pytest.mark.parametrize("seed", range(6))
def test_random_rule_sets_with_regex_literal_unicode_and_case_traps(seed: int) -> None:
    """Randomized rules over random texts: every matching rule is a candidate, and the engine
    fires exactly what brute force fires."""
    rng = random.Random(seed)
    ruleset = ruleset_from_yaml(random_rules(rng, 60))
    index = RuleIndex(ruleset.rules)
    engine, reference = Engine(ruleset), BruteForce(ruleset)
    matched = 0
    for i in range(1500):
        event = random_event(rng)
        candidates = index.candidates(event)
        assert [] == [r.name for r in ruleset.rules if r.match(event) and r not in candidates], event
        firing = engine.evaluate(event, float(i))
        assert reference.evaluate(event, float(i)) == ([r.name for r in firing.rules] if firing else []), event
        matched += any(r.match(event) for r in ruleset.rules)
    assert matched > 300


# The ALIKE set with more rules alike that keep state: alerts that close (resolve), groups.
ALIKE_WITH_STATE = (
    ALIKE
    + """
  - {name: a5, match: {code: 1}, threshold: {count: 1, window: 60}, resolve: {after: 30}}
  - {name: c5, match: {level: [error, critical]}, threshold: {count: 1, window: 9, group_by: [host]}, throttle: 5s}
  - {name: f4, match: {any: [{level: error}, {host: a}]}, resolve: {after: 20}, throttle: 10s,
     threshold: {count: 2, window: 60, group_by: [host]}}
"""
)


def _outcome(ruleset: RuleSet, events: list[dict[str, Any]], two_steps: bool) -> tuple[Any, ...]:
    """What `events` give, one a second: each firing's rules and closings, the match counts and
    the state; evaluated in one step, or in the scale-out workers' two."""
    engine = Engine(ruleset)
    matcher = engine.matcher(None)
    seen = []
    for i, event in enumerate(events):
        if two_steps:
            matched = matcher(event, float(i))
            firing = engine.apply(matched) if matched is not None else None
        else:
            firing = engine.evaluate(event, float(i))
        seen.append((firing.rules if firing else None, list(engine.out)))
        engine.out.clear()
    return seen, engine.matches, engine.state.tables


@pytest.mark.parametrize(("text", "shape"), [(ALIKE_WITH_STATE, None), (None, "heldout")])
def test_plain_rules_applied_as_runs_fire_count_and_keep_state_as_rule_by_rule(
    text: str | None, shape: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain rules (no kind, throttle, resolve nor group) that match are applied as one run
    per predicate call: the same firings (lead first), closings, match counts and state as
    when every matched rule goes through the stateful step, evaluated in one step and in the
    scale-out workers' two."""
    if text is not None:
        ruleset, rng = ruleset_from_yaml(text), random.Random(SEED)
        events = [{k: rng.choice(v) for k, v in ALIKE_VALUES.items() if rng.random() < 0.6} for _ in range(3000)]
    else:
        ruleset, raw = _ruleset(100, "heldout")
        events = planted_events(raw, 3000, "heldout")

    runs = (_outcome(ruleset, events, False), _outcome(ruleset, events, True))
    assert any(plain for _, plain, _, _ in core.members(Engine(ruleset).index).values())
    monkeypatch.setattr(core, "_plain", lambda rule: False)  # every rule through the stateful step
    assert (_outcome(ruleset, events, False), _outcome(ruleset, events, True)) == runs
    assert sum(bool(rules) for rules, _ in runs[0][0]) > 100  # the comparison covered real firings
    assert text is None or any(closed for _, closed in runs[0][0])  # and closings


# Rules with state and no group_by, alone and among rules alike: a throttle, a threshold, a
# resolve; beside them the same predicates with a group_by, or a plain rule.
UNGROUPED = (
    ALIKE_WITH_STATE
    + """
  - {name: u1, match: {user: Bob}, throttle: 4s}
  - {name: u2, match: {user: Bob}, threshold: {count: 2, window: 20}, throttle: 3s}
  - {name: u3, match: {host: b}, threshold: {count: 1, window: 10}, resolve: {after: 15}}
"""
)


@pytest.mark.parametrize(("text", "shape"), [(UNGROUPED, None), (None, "estate")])
def test_rules_with_state_and_no_group_added_at_once_as_rule_by_rule(
    text: str | None, shape: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A matched candidate whose rules with state have no group_by adds them to the stateful
    step with their groups at once (`members`' fourth part): the same firings, closings, match
    counts and state as when each of them is looked at for its group_by, in one step and in
    the scale-out workers' two."""
    if text is not None:
        ruleset, rng = ruleset_from_yaml(text), random.Random(SEED)
        values = {**ALIKE_VALUES, "user": (*ALIKE_VALUES["user"], "Bob", "Bob")}
        events = [{k: rng.choice(v) for k, v in values.items() if rng.random() < 0.6} for _ in range(3000)]
    else:
        ruleset, raw = _ruleset(100, "estate")
        events = planted_events(raw, 3000, "estate")

    found = core.members(Engine(ruleset).index)
    ungrouped = [(stateful, groups) for stateful, _, _, groups in found.values() if groups]
    assert ungrouped and all(groups == (NO_GROUP,) * len(stateful) for stateful, groups in ungrouped)
    assert any(groups is None for _, _, _, groups in found.values())  # and candidates that group
    runs = (_outcome(ruleset, events, False), _outcome(ruleset, events, True))
    every = core.members
    # each rule with state looked at for its group_by, as a candidate that groups is
    monkeypatch.setattr(core, "members", lambda index: {r: (*m[:3], None) for r, m in every(index).items()})
    assert (_outcome(ruleset, events, False), _outcome(ruleset, events, True)) == runs
    assert sum(bool(rules) for rules, _ in runs[0][0]) > 100  # the comparison covered real firings
    assert text is None or any(closed for _, closed in runs[0][0])  # and closings
    assert any(NO_GROUP in groups for groups in runs[0][2][THROTTLE].values())  # and their throttles


def test_only_generated_predicates_reading_their_own_names_are_keyed_alike() -> None:
    """A closure, or code holding code of its own, reads values its key would not show: each
    such predicate is its own key, never shared with another that looks alike."""

    def closure(expected: int) -> Callable[[Any], bool]:
        return lambda e: e.get("n") == expected

    assert behaviour_key(closure(1)) != behaviour_key(closure(2))
    nested = generated_function("def run(e):\n    return any(x == C0 for x in e)\n", {"C0": 1})
    other = generated_function("def run(e):\n    return any(x == C0 for x in e)\n", {"C0": 2})
    assert behaviour_key(nested) != behaviour_key(other)
    same = generated_function("def run(e):\n    return e.get(C0) == C1\n", {"C0": "n", "C1": 1})
    twin = generated_function("def run(e):\n    return e.get(C0) == C1\n", {"C0": "n", "C1": 1})
    floated = generated_function("def run(e):\n    return e.get(C0) == C1\n", {"C0": "n", "C1": 1.0})
    assert behaviour_key(same) == behaviour_key(twin) != behaviour_key(floated)
