"""The candidate index never skips a rule that matches (it only saves work)."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

import rulesd.rules.index as index_module
from rulesd.rules import patterns
from rulesd.rules.conditions import folded_field
from rulesd.rules.index import RuleIndex, _Scan
from rulesd.rules.model import Rule, RuleSet
from tests.ruletools import ruleset_from_yaml

RULES_YAML = r"""
rules:
  - {name: eq, match: {service: payments}}
  - {name: list, match: {level: [error, critical]}}
  - {name: in-op, match: {service: {in: [billing, payments]}}}
  - {name: equals-op, match: {level: {equals: error, not_equals: x}}}
  - {name: eq-and-regex, match: {service: payments, message: {regex: "timeout|refused"}}}
  - {name: eq-and-icase, match: {level: error, message: {regex: "(?i)refused"}}}
  - {name: nested-all, match: {all: [{service: payments}, {host: [a, b]}]}}
  - {name: contradiction, match: {all: [{service: payments}, {service: {regex: ^billing}}]}}
  - {name: numeric-eq, match: {http.status: 502}}
  - {name: number-bound, match: {http.status: {gte: 500}}}
  - {name: any-of, match: {any: [{service: payments}, {level: warning}]}}
  - {name: negated, match: {not: {service: payments}}}
  - {name: not-list, match: {not: {level: [info, warning]}}}
  - {name: not-in, match: {not: {level: {in: [error, crit]}}}}
  - {name: not-equals, match: {not: {host: {equals: a}}}}
  - {name: not-any, match: {not: {any: [{level: error}, {host: a}, {http.path: /web}]}}}
  - {name: not-any-mixed, match: {not: {any: [{level: error}, {host: a, service: billing}]}}}
  - {name: not-any-multi, match: {not: {any: [{host: c, service: billing}, {http.status: 404}]}}}
  - {name: not-nocase, match: {not: {level: {equals: error, nocase: true}}}}
  - {name: not-and-more, match: {not: {level: {in: [error, info], regex: "^e"}}}}
  - {name: not-two-fields, match: {not: {level: error, host: a}}}
  - {name: not-mixed-types, match: {not: {http.status: [502, "502", true]}}}
  - {name: not-deep, match: {not: {http.path: [/api/x, /API/]}}}
  - {name: not-all, match: {all: [{not: {service: payments}}, {not: {level: info}}]}}
  - {name: not-branch, match: {any: [{not: {service: billing}}, {host: b}]}}
  - {name: not-in-not, match: {not: {not: {level: error}}}}
  - {name: not-contains, match: {not: {message: {contains: time}}}}
  - {name: not-in-op, match: {level: {not_in: [info, warning, 5]}}}
  - {name: not-equals-op, match: {service: {not_equals: payments, exists: true}}}
  - {name: not-equals-number, match: {http.status: {not_equals: 502}}}
  - {name: absent-host, match: {host: {exists: false}}}
  - {name: disabled, enabled: false, match: {service: payments}}
  - {name: re-alternation, match: {message: {regex: "timeout|refused"}}}
  - {name: re-icase, match: {message: {regex: "(?i)TIMEOUT"}}}
  - {name: re-scoped-icase, match: {message: {regex: "(?i:TIME)out"}}}
  - {name: re-dollar, match: {message: {regex: "out$"}}}
  - {name: re-named-group, match: {message: {regex: "(?P<c>o)o"}}}
  - {name: re-group, match: {message: {regex: "(dis)connect"}}}
  - {name: re-unicode-class, match: {message: {regex: "^\\pL{3}$"}}}
  - {name: re-anchor, match: {message: {regex: "^up"}}}
  - {name: re-absolute-anchor, match: {message: {regex: "\\Atime"}}}
  - {name: re-optional, match: {message: {regex: "colou?r"}}}
  - {name: re-class, match: {message: {regex: "[0-9]{3}"}}}
  - {name: re-negated-class, match: {message: {regex: "^[^a-z]+$"}}}
  - {name: re-empty-branch, match: {message: {regex: "zzz|"}}}
  - {name: re-star, match: {message: {regex: "q*"}}}
  - {name: re-dotall, match: {message: {regex: "(?s)up.stream"}}}
  - {name: re-dot, match: {message: {regex: "up.stream"}}}
  - {name: re-hex, match: {message: {regex: "\\x{e9}"}}}
  - {name: re-nonascii-icase, match: {message: {regex: "(?i)É"}}}
  - {name: re-word, match: {message: {regex: "\\btimeout\\b"}}}
  - {name: re-z, match: {message: {regex: "out\\z"}}}
  - {name: re-multiline, match: {message: {regex: "(?m)^stream"}}}
  - {name: re-unicode-s, match: {message: {regex: "(?i)s"}}}
  - {name: re-unicode-k, match: {message: {regex: "(?i)k"}}}
  - {name: re-sharp-s, match: {message: {regex: "(?i)straße"}}}
  - {name: re-escape, match: {message: {regex: "\\d+ms"}}}
  - {name: re-repeat, match: {message: {regex: "(ab){2,}"}}}
  - {name: re-word-ascii, match: {message: {regex: "\\w\\w\\w\\w\\w"}}}
  - {name: re-nested-path, match: {http.path: {regex: "^/api/"}}}
  - {name: re-list-index, match: {items.0.name: {regex: "fir"}}}
  - {name: re-two-fields, match: {message: {regex: "time"}, host: {regex: "^[ab]$"}}}
  - {name: re-twice-one-field, match: {message: {regex: "time", startswith: "up"}}}
  - {name: re-and-eq-other, match: {level: {regex: "^(error|crit)"}}}
  - {name: re-in-any, match: {any: [{message: {regex: "refused"}}, {level: info}]}}
  - {name: re-in-not, match: {not: {message: {regex: "time"}}}}
  - {name: startswith-only, match: {message: {startswith: "conn"}}}
  - {name: contains-list, match: {tags: {contains: red}}}
  - {name: slow-1, match: {latency: {gt: 100}}}
  - {name: slow-2, match: {latency: {gte: 100}}}
  - {name: slow-3, match: {latency: {gte: 250.5, lt: 1000}}}
  - {name: slow-4, match: {latency: {gt: 1000}}}
  - {name: slow-huge, match: {latency: {gte: 123456789012345678901234567890}}}
  - {name: many-1, match: {size: {gte: 1}}}
  - {name: many-2, match: {size: {gte: 2}}}
  - {name: many-3, match: {size: {gte: 3}}}
  - {name: many-4, match: {size: {gte: 4}}}
  - {name: many-5, match: {size: {gte: 5}}}
  - {name: many-5b, match: {size: {gte: 5.0}}}
  - {name: many-6, match: {size: {gt: 6.5}}}
  - {name: deep-bound, match: {items.0.n: {gte: 2}}}
  - {name: nocase-eq, match: {service: {equals: Payments, nocase: true}}}
  - {name: nocase-in, match: {level: {in: [ERROR, Crit], nocase: true}}}
  - {name: nocase-in-mixed, match: {level: {in: [CRITICAL, true], nocase: true}}}
  - {name: nocase-in-empty, match: {host: {in: [A, ""], nocase: true}}}
  - {name: nocase-contains, match: {tags: {contains: RED, nocase: true}}}
  - {name: nocase-sharp-s, match: {message: {contains: straße, nocase: true}}}
  - {name: nocase-kelvin, match: {message: {regex: "^k$", nocase: true}}}
  - {name: nocase-path, match: {http.path: {startswith: /API/, nocase: true}}}
  - {name: nocase-and-eq, match: {host: a, message: {endswith: OUT, nocase: true}}}
  - {name: nocase-under-any, match: {any: [{service: {equals: BILLING, nocase: true}}, {level: info}]}}
  - {name: cidr-host, match: {host: {cidr: [10.0.0.0/8, "2001:db8::/32"]}}}
  - {name: not-cidr-host, match: {host: {not_cidr: 10.0.0.0/8}}}
  - {name: upper-only, match: {latency: {lt: 100}}}
  - {name: upper-lte, match: {size: {lte: 4}}}
  - {name: upper-deep, match: {items.0.n: {lte: 1.5}}}
  - {name: upper-negative, match: {latency: {lt: -4}}}
  - {name: upper-nested, match: {http.status: {lt: 500, gt: 100}}}
  - {name: exists-only, match: {tags: {exists: true}}}
  - {name: any-unindexed-branch, match: {any: [{size: {lte: 0}}, {service: billing}]}}
"""

WORDS = [
    "upstream",
    "up",
    "stream",
    "timeout",
    "TIMEOUT",
    "Timeout",
    "time",
    "out",
    "refused",
    "REFUSED",
    "connection",
    "disconnect",
    "connect",
    "aa",
    "oo",
    "book",
    "ab",
    "abab",
    "b",
    "c",
    "colour",
    "color",
    "STRASSE",
    "straße",
    "STRAẞE",
    "ſ",
    "K",
    "k",
    "Σ",
    "/api/x",
    "502",
    "12ms",
    "x",
    "é",
    "İ",
    "",
    "q",
    "\u212a",
]
SEPARATORS = [" ", "", "\n", "-", "."]


def random_message(rng: random.Random) -> str:
    """A short text made of words some rules look for."""
    words = rng.choices(WORDS, k=rng.randint(0, 4))
    out = ""
    for word in words:
        out += word + rng.choice(SEPARATORS)
    return out


def maybe(rng: random.Random, event: dict[str, Any], key: str, options: list[Any]) -> None:
    """Set `key` to one of `options`, or leave it missing."""
    value = rng.choice([*options, "<missing>"])
    if value != "<missing>":
        event[key] = value


def random_event(rng: random.Random) -> dict[str, Any]:
    """An event with fields of the right and the wrong types, present or missing."""
    event: dict[str, Any] = {}
    maybe(rng, event, "service", ["payments", "billing", "PAYMENTS", "Billing", None, 5, ["payments"]])
    maybe(rng, event, "level", ["error", "critical", "warning", "info", "crit", ["error"], True, "Error", "CRIT"])
    maybe(rng, event, "host", ["a", "b", "c", None, "ab", "A", "", "10.1.2.3", "::ffff:10.0.0.1", "2001:db8::1"])
    maybe(rng, event, "tags", [["red"], ["blue", "red"], "red", [], ["Red"], ["reddish"]])
    if rng.random() < 0.9:
        event["message"] = random_message(rng)
    elif rng.random() < 0.5:
        event["message"] = rng.choice([None, 42, ["timeout"], {"t": "timeout"}])
    http: dict[str, Any] = {}
    maybe(rng, http, "status", [200, 404, 500, 502, "502", 502.0, True, 499.5])
    maybe(rng, http, "path", ["/api/x", "/web", "/API/", 7])
    maybe(rng, event, "http", [http, http, "string", None])
    maybe(
        rng,
        event,
        "items",
        [
            [{"name": "first"}],
            [],
            [{"name": 1}],
            [{"name": "FIRST"}],
            {},
            [{"n": 2}],
            [{"n": 1.5}],
            [{"n": "3"}],
            [{"n": True}],
        ],
    )
    numbers = [
        0,
        99,
        100,
        100.0,
        101,
        250.5,
        999.9,
        1000,
        1001,
        1e30,
        123456789012345678901234567890,
        -5,
        True,
        False,
        None,
        "500",
        [500],
        {"v": 500},
    ]
    maybe(rng, event, "latency", numbers)
    maybe(rng, event, "size", [*numbers, 1, 2, 3, 4, 4.5, 5, 6, 6.5, 7])
    return event


def brute_force(rules: tuple[Rule, ...], event: dict[str, Any]) -> set[str]:
    """What the index must find: every enabled rule whose predicate holds."""
    return {r.name for r in rules if r.enabled and r.match(event)}


def via_index(index: RuleIndex, event: dict[str, Any]) -> set[str]:
    """What the engine finds: candidates from the index, then the predicate."""
    return {r.name for r in index.candidates(event) if r.match(event)}


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    """The mixed rule set above."""
    return ruleset_from_yaml(RULES_YAML)


def test_index_finds_exactly_what_brute_force_finds(ruleset: RuleSet) -> None:
    """For thousands of random events the index agrees with evaluating every rule."""
    rng = random.Random(20240601)
    index = RuleIndex(ruleset.rules)
    mismatches = []
    for _ in range(4000):
        event = random_event(rng)
        expected, actual = brute_force(ruleset.rules, event), via_index(index, event)
        if expected != actual:
            mismatches.append((event, sorted(expected - actual), sorted(actual - expected)))
    assert [] == mismatches[:5]


def test_every_rule_is_exercised(ruleset: RuleSet) -> None:
    """The random events make every enabled rule match at least once (else the test is weak)."""
    rng = random.Random(20240601)
    seen: set[str] = set()
    for _ in range(4000):
        seen |= brute_force(ruleset.rules, random_event(rng))
    never = {r.name for r in ruleset.rules if r.enabled} - seen
    assert {"contradiction"} == never


@pytest.mark.parametrize(
    ("rules", "event"),
    [
        (["re-dollar", "re-z"], {"message": "time out\n"}),
        (["re-nonascii-icase", "re-hex"], {"message": "é"}),
        (["re-named-group", "re-group"], {"message": "book"}),
        (["re-unicode-class", "re-word-ascii"], {"message": "ſéΣ"}),
        (["re-unicode-s"], {"message": "ſ"}),
        (["re-unicode-k"], {"message": "K"}),
        (["re-sharp-s"], {"message": "STRAẞE"}),
        (["re-icase", "re-alternation"], {"message": "TimeOut"}),
        (["re-word-ascii", "re-word"], {"message": "timeout"}),
        (["re-empty-branch", "re-star"], {"message": ""}),
        (["re-multiline", "re-anchor"], {"message": "x\nstream"}),
    ],
)
def test_tricky_patterns_in_small_sets(ruleset: RuleSet, rules: list[str], event: dict[str, Any]) -> None:
    """Patterns whose meaning could change when combined still match alone or together."""
    chosen = tuple(r for r in ruleset.rules if r.name in rules)
    assert brute_force(chosen, event) == via_index(RuleIndex(chosen), event)
    assert set(rules) & brute_force(chosen, event)


def test_disabled_rules_are_never_candidates(ruleset: RuleSet) -> None:
    """A disabled rule is loaded but the index never offers it."""
    index = RuleIndex(ruleset.rules)
    event = {"service": "payments", "level": "error", "message": "timeout"}
    assert "disabled" not in {r.name for r in index.candidates(event)}


def test_empty_rule_set() -> None:
    """No rules, no candidates."""
    assert [] == RuleIndex(()).candidates({"service": "payments"})


def test_a_field_read_inside_an_inlined_node_is_read_again_outside_it() -> None:
    """`service: a` is a table of one value, so its node is written inline; the `level` it
    reads there must not stand for the root's own `level` test when the service differs."""
    rules = ruleset_from_yaml("""
rules:
  - {name: r1, match: {service: a, level: error}}
  - {name: r3, match: {service: a, host: h}}
  - {name: r2, match: {level: warning}}
""")
    index = RuleIndex(rules.rules)
    for event, expected in [
        ({"level": "warning"}, {"r2"}),
        ({"service": "a", "level": "warning"}, {"r2"}),
        ({"service": "a", "level": "error", "host": "h"}, {"r1", "r3"}),
        ({"service": "b", "level": "error"}, set()),
    ]:
        assert expected == via_index(index, event) == brute_force(rules.rules, event)


class _ReadRecorder(dict[str, Any]):
    """An event that notes the fields the index reads."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.read: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        self.read.append(key)
        return super().get(key, default)


def test_a_rule_with_an_equality_stays_under_it_though_the_node_searches_its_text_anyway() -> None:
    """A hundred rules share `level: error` and the literal `timeout after `; the regex-only
    rules make the root search `message` anyway. Filed under that search, every text holding
    the literal would run a hundred regexes whatever its level; under `level`, an `info`
    event costs one lookup."""
    lines = [
        f"  - {{name: h{i}, match: {{level: error, message: {{regex: 'timeout after \\d+ms on host-{i}\\b'}}}}}}"
        for i in range(100)
    ]
    lines += [f"  - {{name: r{i}, match: {{message: {{regex: 'disk {i} full'}}}}}}" for i in range(10)]
    rules = ruleset_from_yaml("rules:\n" + "\n".join(lines) + "\n")
    index = RuleIndex(rules.rules)
    for level, expected in [("info", set()), ("error", {"h3"})]:
        event = {"level": level, "message": "upstream timeout after 5ms on host-3, retrying"}
        recorder = _ReadRecorder(event)
        assert expected == {r.name for r in index.candidates(recorder)} == brute_force(rules.rules, event)
        if level == "info":  # `level` once, and `message` for the regex-only rules' gate only
            assert ["level", "message"] == sorted(recorder.read)


def test_of_fields_that_cover_as_many_rules_an_equality_is_read_before_a_text_search() -> None:
    """In the payments node, `level` and `message` each cover the rule; comparing `level`
    is cheaper than searching `message`, so most events never have their message searched."""
    rules = ruleset_from_yaml(r"""
rules:
  - {name: r, match: {service: payments, level: error, message: {regex: "declined by \\w+"}}}
  - {name: other, match: {service: billing}}
""")
    index = RuleIndex(rules.rules)
    recorder = _ReadRecorder({"service": "payments", "level": "info", "message": "declined by x"})
    assert [] == index.candidates(recorder)
    assert ["service", "level"] == recorder.read
    recorder = _ReadRecorder({"service": "payments", "level": "error", "message": "declined by x"})
    assert ["r"] == [r.name for r in index.candidates(recorder)]
    assert ["service", "level", "message"] == recorder.read


def test_a_rule_under_a_regex_is_a_candidate_only_if_the_regex_is_found() -> None:
    """The scan answers for the regex itself, not for a literal it needs, so an event whose
    text only holds `timeout after ` is not sent on to the engine."""
    rules = ruleset_from_yaml(r"""
rules:
  - {name: slow, match: {message: {regex: "timeout after \\d{4,}ms"}}}
  - {name: both, match: {message: {regex: "timeout after", contains: "db"}}}
  - {name: icase, match: {message: {regex: "(?i)PANIC: .*\\[1\\]"}}}
""")
    index = RuleIndex(rules.rules)
    for message, candidates, matching in [
        ("timeout after 12ms", set(), set()),  # `both` needs "db" too: indexed on it under the regex
        ("timeout after 12345ms", {"slow"}, {"slow"}),
        ("db timeout after 12ms", {"both"}, {"both"}),
        ("panic: index [2]", set(), set()),
        ("Panic: index [1]", {"icase"}, {"icase"}),
    ]:
        event = {"message": message}
        assert candidates == {r.name for r in index.candidates(event)}
        assert matching == via_index(index, event) == brute_force(rules.rules, event)


def test_rules_each_with_an_equality_of_their_own_join_a_text_search_the_node_makes_anyway() -> None:
    """Thirty rules each test a field no other rule tests, and a literal in `message`, which
    the root scans anyway: filed under that pattern, they add no read to every event, and
    only a text holding the literal has their fields looked up."""
    lines = [f"  - {{name: own{i}, match: {{f{i}: x, message: {{contains: panic}}}}}}" for i in range(30)]
    lines.append("  - {name: plain, match: {message: {regex: 'disk \\d+ full'}}}")
    rules = ruleset_from_yaml("rules:\n" + "\n".join(lines) + "\n")
    index = RuleIndex(rules.rules)
    for event, expected in [
        ({"message": "all well", "f3": "x"}, set()),
        ({"message": "kernel panic", "f3": "x"}, {"own3"}),
        ({"message": "disk 7 full"}, {"plain"}),
    ]:
        recorder = _ReadRecorder(event)
        assert expected == {r.name for r in index.candidates(recorder)} == brute_force(rules.rules, event)
        assert "panic" in event["message"] or ["message"] == recorder.read


def test_rules_on_one_field_share_one_scan_and_the_candidates_are_exact() -> None:
    """Many rules with regexes and literals on `message`: the root has one test, the scan of
    `message`, and its candidates are exactly the matching rules (every rule here is filed
    under the pattern its predicate needs)."""
    lines = [
        f"  - {{name: h{i}, match: {{message: {{regex: 'timeout after \\d+ms on host-{i}\\b'}}}}}}" for i in range(20)
    ]
    lines += [
        "  - {name: icase, match: {message: {regex: '(?i)TIMEOUT AFTER \\d+MS ON DB'}}}",
        "  - {name: plain, match: {message: {contains: 'timeout after '}}}",
        "  - {name: start, match: {message: {startswith: 'timeout'}}}",
        "  - {name: end, match: {message: {endswith: ', again'}}}",
    ]
    rules = ruleset_from_yaml("rules:\n" + "\n".join(lines) + "\n")
    index = RuleIndex(rules.rules)
    ((field, scan),) = index._root.tests
    assert "message" == field and isinstance(scan, _Scan)
    for message, expected in [
        ("timeout after 5ms on host-3x", {"plain", "start"}),
        ("timeout after 5ms on host-3", {"h3", "plain", "start"}),
        ("Timeout after 9ms on DB", {"icase"}),
        ("timeout after 5ms on db, again", {"icase", "plain", "start", "end"}),
    ]:
        event = {"message": message}
        assert expected == {r.name for r in index.candidates(event)} == brute_force(rules.rules, event)


def scans_counted(monkeypatch: pytest.MonkeyPatch, remembered: bool = False) -> list[str]:
    """The fields of the scans called from now on, once per call (a scanner made after this).
    Unless `remembered`, the index finds no text remembered (`memo_of`: an empty memo), so it
    asks the scan about every text."""
    calls: list[str] = []
    memoised = patterns._memoised_scan

    def counted(field: str) -> tuple[Any, Any, Any, Any]:
        scan, use, scan_block, join = memoised(field)

        def counting(value: str) -> frozenset[int]:
            calls.append(field)
            return scan(value)

        counting.__dict__[patterns._MEMO] = patterns.memo_of(scan) if remembered else {}
        return counting, use, scan_block, join

    monkeypatch.setattr(patterns, "_memoised_scan", counted)
    return calls


def test_a_node_beneath_a_pattern_takes_the_answer_of_the_scan_above_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rules needing two patterns in one field are filed under the first and indexed again on
    the second beneath it, in a node of its own: that node takes the scan's answer from the
    node above, so a text is scanned once (one call of the field's scan), not once per node."""
    calls = scans_counted(monkeypatch)
    both = "  - {{name: {}, match: {{all: [{{cmd: {{{}}}}}, {{cmd: {{contains: '{}'}}}}]}}}}"
    lines = [both.format(f"c{i}", "contains: cmd.exe", f" /c {i}") for i in range(3)]
    lines += [both.format(f"p{i}", "regex: powershell", f" -e{i}") for i in range(3)]
    lines.append("  - {name: list, match: {cmd: {contains: cmd.exe}}}")
    rules = ruleset_from_yaml("rules:\n" + "\n".join(lines) + "\n")
    index = RuleIndex(rules.rules)
    for event, expected in [
        ({"cmd": "cmd.exe /c 1 dir"}, {"c1", "list"}),
        ({"cmd": "powershell -e2 x; cmd.exe"}, {"p2", "list"}),
        ({"cmd": "cmd.exe"}, {"list"}),
        ({"cmd": "notepad"}, set()),
        ({"cmd": ["cmd.exe", "x"]}, {"list"}),
    ]:
        calls.clear()
        assert expected == via_index(index, event) == brute_force(rules.rules, event)
        calls.clear()
        index.candidates(event)
        assert (1 if type(event["cmd"]) is str else 0) == len(calls), event


def test_the_index_answers_a_text_remembered_without_calling_the_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """The index looks a field's text up in its scan's memo (`memo_of`) before it calls the
    scan: once the scan has seen the texts repeat, a remembered text costs no call, a new
    one is scanned, and the candidates are exact either way (at the root and beneath it, on a
    nested path, and for values that are not texts)."""
    calls = scans_counted(monkeypatch, remembered=True)
    rules = ruleset_from_yaml(NESTED_SCANS)
    index = RuleIndex(rules.rules)
    texts: list[Any] = ["kernel panic: disk", "panic", "cmd.exe /c dir", "powershell -e x", "run.bat", "PANIC"]
    rng = random.Random(7)

    def event(text: Any) -> dict[str, Any]:
        return {"msg": text, "cmd": text, "host": rng.choice(("a", "b")), "p": {"cmd": text}}

    for _ in range(8 * patterns.MEMO_SIZE):  # (probed, then remembered: p.cmd is asked beneath msg)
        index.candidates(event(rng.choice(texts)))
    for text in [*texts, ["cmd.exe", "panic"], None, 7]:
        e = event("".join(text) if type(text) is str else text)  # (a new object: found by text)
        calls.clear()
        candidates = index.candidates(e)
        assert [] == calls, text
        assert brute_force(rules.rules, e) == {r.name for r in candidates if r.match(e)}, e
    e = event("another panic")
    calls.clear()
    candidates = index.candidates(e)
    assert {"msg", "cmd", "p.cmd"} == set(calls)  # a new text: scanned
    assert brute_force(rules.rules, e) == {r.name for r in candidates if r.match(e)}


NESTED_SCANS = """
rules:
  - {name: both-fields, match: {all: [{msg: {contains: panic}}, {cmd: {contains: cmd.exe}}, {cmd: {contains: ' /c '}}]}}
  - {name: back-to-msg, match: {all: [{msg: {contains: panic}}, {host: a}, {cmd: {regex: powershell}},
      {msg: {endswith: disk}}]}}
  - {name: host-then-msg, match: {all: [{host: a}, {msg: {contains: panic}}, {msg: {startswith: kernel}}]}}
  - {name: deep, match: {all: [{p.cmd: {contains: cmd.exe}}, {msg: {contains: panic}}, {p.cmd: {endswith: '.bat'}}]}}
  - {name: list-item, match: {all: [{msg: {contains: panic}}, {cmd: {contains: cmd.exe}}]}}
  - {name: nocase, match: {all: [{msg: {contains: PANIC, nocase: true}}, {cmd: {contains: Cmd.Exe, nocase: true}}]}}
"""


def test_answers_handed_down_are_of_the_field_the_node_beneath_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes beneath nodes beneath scans, on other fields and back on the first one, through a
    table on another field, on a nested path, with list-valued and missing fields: each node
    takes the answers of the scans above it for the field it reads and no other, so the
    candidates are exact; the field scanned at the root is scanned once per event, however
    deep the nodes that read it again (nodes side by side scan a field of their own apiece)."""
    calls = scans_counted(monkeypatch)
    rules = ruleset_from_yaml(NESTED_SCANS)
    index = RuleIndex(rules.rules)
    texts: list[Any] = ["kernel panic: disk", "panic", "cmd.exe /c dir", "powershell -e x", "run.bat", "KERNEL PANIC"]
    texts += [["cmd.exe", "panic"], None, 7]
    rng = random.Random(5)
    for _ in range(600):
        event: dict[str, Any] = {}
        for key in ("msg", "cmd", "host", "p"):
            if rng.random() < 0.8:
                value = " ".join(rng.sample(texts[:6], rng.randint(1, 3))) if rng.random() < 0.7 else rng.choice(texts)
                event[key] = {"cmd": value} if key == "p" else rng.choice(("a", "b")) if key == "host" else value
        calls.clear()
        assert brute_force(rules.rules, event) == via_index(index, event), event
        calls.clear()
        index.candidates(event)
        assert calls.count("msg") <= 1, (event, calls)  # (scanned above all: beneath, taken)


PAIRED_PATTERNS = r"""
rules:
  - {name: cmd-k, match: {all: [{cmd: {contains: cmd.exe}}, {cmd: {endswith: ' /k'}}]}}
  - {name: cmd-q, match: {all: [{cmd: {contains: cmd.exe}}, {cmd: {regex: ' /q\b'}}]}}
  - {name: ps-enc, match: {all: [{cmd: {contains: powershell}}, {cmd: {regex: '-enc\b'}}]}}
  - {name: ps-hidden, match: {all: [{cmd: {contains: powershell}}, {cmd: {regex: '-w(indowstyle)? hidden'}}]}}
  - {name: rundll, match: {cmd: {contains: rundll32}}}
  - {name: mshta, match: {parent: {endswith: mshta.exe}}}
  - {name: office-shell, match: {all: [{parent: {endswith: winword.exe}}, {cmd: {regex: ' /c '}}]}}
  - {name: office-ps, match: {all: [{parent: {endswith: winword.exe}}, {cmd: {regex: 'powershell.*-enc'}}]}}
"""


def lookup_tables(function: Any) -> list[dict[Any, Any]]:
    """The dicts a generated function looks its hits up in (each bound as its `get`)."""
    names = function.__globals__.values()
    return [v.__self__ for v in names if type(getattr(v, "__self__", None)) is dict and v.__name__ == "get"]


def test_a_node_that_only_looks_up_a_scan_done_above_it_is_not_called(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node beneath a pattern whose one test is the answer of a scan made above it (a parent
    image found, then its command line's patterns) is not a function to call: the scan's hit is
    that node's rules by pattern id, looked up where the hit is taken, beside the rules filed
    under patterns alone; where nodes of other kinds are among the hits, every node is called.
    The candidates are exact, and each field is scanned once per event."""
    calls = scans_counted(monkeypatch)
    rules = ruleset_from_yaml(PAIRED_PATTERNS)
    index = RuleIndex(rules.rules)
    lookups = [v for v in lookup_tables(index.collect) if v and all(type(k) is int for k in v)]
    kinds = sorted(sorted({type(hit).__name__ for hit in lookup.values()}) for lookup in lookups)
    assert [["dict", "tuple"], ["function", "tuple"]] == kinds  # parent's patterns; the command line's
    texts: list[Any] = ["cmd.exe /k", "cmd.exe /q x", "powershell -enc AA", "powershell -windowstyle hidden"]
    texts += ["rundll32 a.dll", "x /c dir", "c:\\office\\winword.exe", "mshta.exe", "powershell"]
    rng = random.Random(7)
    for _ in range(600):
        event: dict[str, Any] = {}
        for key in ("cmd", "parent"):
            if rng.random() < 0.85:
                event[key] = (
                    " ".join(rng.sample(texts, rng.randint(1, 3)))
                    if rng.random() < 0.8
                    else rng.choice([*texts, ["cmd.exe /k"], None, 7])
                )
        calls.clear()
        assert brute_force(rules.rules, event) == via_index(index, event), event
        calls.clear()
        index.candidates(event)
        assert calls.count("cmd") <= 1 and calls.count("parent") <= 1, (event, calls)


def test_a_list_value_makes_only_contains_rules_candidates_not_regex_ones() -> None:
    """`contains` may find an equal item in a list; a regex never matches a list, so a list
    in the gated field sends no regex rule on to the engine."""
    rules = ruleset_from_yaml(r"""
rules:
  - {name: ct, match: {message: {contains: "timeout after"}}}
  - {name: rx, match: {message: {regex: "timeout after \\d+"}}}
""")
    index = RuleIndex(rules.rules)
    event = {"message": ["timeout after 5", "timeout after"]}
    assert {"ct"} == {r.name for r in index.candidates(event)} == brute_force(rules.rules, event)


def test_only_a_value_that_is_no_text_is_tested_for_a_list_to_look_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """A text in which the scan found nothing (most events) is no list: the list's type test
    is written after the test of the scan's answer for None (the answer for a value that is no
    text), and the candidates stay exact for a text, a list, a number, null and a missing field."""
    written = sources_written(monkeypatch)
    rules = ruleset_from_yaml(r"""
rules:
  - {name: ct, match: {message: {contains: "timeout after"}}}
  - {name: rx, match: {message: {regex: "disk \\d+ full"}}}
""")
    index = RuleIndex(rules.rules)
    index.collect({}, [])
    (source,) = written
    tests = [line.strip() for line in source.splitlines() if "is list" in line]
    assert len(tests) == 1 and re.fullmatch(r"elif (s\d+) is None and type\(v\d+\) is list:", tests[0]), source
    for message in ["timeout after 5", "disk 3 full", "ok", ["timeout after"], 5, None, {"a": 1}]:
        event = {"message": message}
        assert brute_force(rules.rules, event) == {r.name for r in index.candidates(event)}, event
    assert ["ct"] == [r.name for r in index.candidates({"message": ["x"]})]  # any list: `contains` looks in it
    assert [] == index.candidates({})


def test_an_equality_ignoring_case_is_looked_up_by_the_case_fold_of_the_value() -> None:
    """`in` and `equals` with `nocase` cannot be looked up in a table of exact values: they
    are in a table of case folds, looked up by the fold of the event's text, so the rule is a
    candidate for every spelling of its values and for nothing else."""
    rules = ruleset_from_yaml(r"""
rules:
  - {name: admins, match: {user: {in: [Alice, Bob], nocase: true}}}
  - {name: kelvin, match: {user: {equals: kelvin, nocase: true}}}
  - {name: exact, match: {user: Alice}}
""")
    index = RuleIndex(rules.rules)
    assert {folded_field("user"), "user"} == {field for field, _ in index._root.tables}
    assert () == index._root.always and [] == index._root.tests
    for user, expected in [
        ("ALICE", {"admins"}),
        ("Alice", {"admins", "exact"}),
        ("bOb", {"admins"}),
        ("\u212aELVIN", {"kelvin"}),  # the Kelvin sign
        ("Alice ", set()),
        ("carol", set()),
        (["alice"], set()),
        (5, set()),
    ]:
        event = {"user": user}
        assert expected == {r.name for r in index.candidates(event)} == brute_force(rules.rules, event)


def test_a_named_list_is_looked_up_in_the_equality_table_as_a_written_list_is() -> None:
    """`user: $admins` and `user: {in: $admins}` are filed under each of the list's values."""
    rules = ruleset_from_yaml(r"""
lists: {admins: [alice, bob, "$$root"]}
rules:
  - {name: bare, match: {user: $admins}}
  - {name: in-op, match: {user: {in: $admins}}}
""")
    index = RuleIndex(rules.rules)
    ((field, table),) = index._root.tables
    assert "user" == field and {"alice", "bob", "$root"} == set(table) and () == index._root.always
    assert {"bare", "in-op"} == {r.name for r in index.candidates({"user": "$root"})}
    assert set() == {r.name for r in index.candidates({"user": "carol"})}


def test_a_bucket_whose_rules_have_no_usable_test_is_just_its_rules() -> None:
    """`exists: true` is no test the index uses: the bucket holds the rule itself rather
    than a node that would only hand it on."""
    rules = ruleset_from_yaml(r"""
rules:
  - {name: bk, match: {service: a, size: {exists: true}}}
  - {name: other, match: {service: b}}
""")
    index = RuleIndex(rules.rules)
    ((field, table),) = index._root.tables
    assert "service" == field
    assert (("bk",), ("other",)) == tuple(tuple(r.name for r in table[v]) for v in ("a", "b"))
    assert {"bk"} == {r.name for r in index.candidates({"service": "a", "size": 9})}


def test_a_rule_with_only_a_not_of_an_equality_is_skipped_for_the_texts_it_excludes() -> None:
    """`not: {level: [debug, info]}` has nothing to look up; rather than being sent on to the
    engine with every event, it is skipped for an event whose level is one of those texts."""
    ruleset = ruleset_from_yaml("""
rules:
  - {name: loud, match: {not: {level: [debug, info]}}}
  - {name: not-web, match: {not: {any: [{level: debug}, {service: web}]}}}
  - {name: branch, match: {any: [{not: {level: info}}, {host: a}]}}
  - {name: op, match: {level: {not_in: [debug, info, warning]}, service: {not_equals: web}}}
""")
    index = RuleIndex(ruleset.rules)

    def names(event: dict[str, Any]) -> list[str]:
        return sorted(r.name for r in index.candidates(event))

    assert ["branch"] == names({"level": "debug"})  # (`branch` needs only a level other than info)
    assert ["not-web"] == names({"level": "info", "service": "api"})
    assert ["branch", "not-web"] == names({"level": "info", "service": "api", "host": "a"})
    # Filed under one field it excludes (`level`, which the most rules do): `service: web` is
    # left to the predicate.
    assert ["branch", "loud", "not-web", "op"] == names({"level": "error", "service": "web"})
    assert ["branch", "loud", "not-web"] == names({"level": "warning", "service": "web"})
    assert ["branch", "loud", "not-web", "op"] == names({"service": "api"})  # a missing level is no excluded text
    assert ["branch", "loud", "not-web", "op"] == names({"level": ["debug"]})  # nor is a list
    assert [] == [r.name for r in index._root.always]


def test_a_rule_with_no_test_to_be_filed_under_is_a_candidate_only_when_its_predicate_holds() -> None:
    """`exists: true`, a `cidr` alone or an `any` with such a branch give the index nothing
    to look up; rather than being handed on with every event (which makes the engine read
    each event's time and run its step), such a rule is screened at the root by its own
    predicate."""
    ruleset = ruleset_from_yaml("""
rules:
  - {name: coded, match: {error.code: {exists: true}}}
  - {name: inside, match: {client: {cidr: 10.0.0.0/8}}}
  - {name: either, match: {any: [{client: {not_cidr: 10.0.0.0/8}}, {service: billing}]}}
  - {name: eq, match: {service: payments}}
""")
    index = RuleIndex(ruleset.rules)
    assert ["coded", "either", "inside"] == sorted(r.name for r in index._root.screened)
    assert () == index._root.always

    def names(event: dict[str, Any]) -> list[str]:
        return sorted(r.name for r in index.candidates(event))

    assert [] == names({"service": "api"}) == names({"client": "no address", "error": {}})
    assert ["eq"] == names({"service": "payments"})
    assert ["either"] == names({"client": "192.0.2.1"}) == names({"service": "billing"})
    assert ["coded"] == names({"error": {"code": None}})  # present, though null
    assert ["inside"] == names({"client": "10.1.2.3"})


def test_an_upper_bound_is_a_lower_bound_of_the_negated_number() -> None:
    """`lt`/`lte` are looked up like `gt`/`gte`: a value above every upper bound, a missing
    field, a text or a boolean makes no rule a candidate."""
    ruleset = ruleset_from_yaml("""
rules:
  - {name: fast, match: {latency: {lt: 5}}}
  - {name: instant, match: {latency: {lte: 1}, size: {gte: 0}}}
  - {name: deep, match: {a.b.c: {lte: -2.5}}}
  - {name: either, match: {any: [{latency: {lte: 1}}, {service: billing}]}}
  - {name: informational, match: {status: {lt: 200}}}
  - {name: server-error, match: {status: {gt: 499}}}
  - {name: half, match: {ratio: {gt: 0.5}}}
  - {name: big, match: {id: {gt: 9007199254740992}}}
""")
    index = RuleIndex(ruleset.rules)
    assert () == index._root.screened == index._root.always

    def names(event: dict[str, Any]) -> list[str]:
        return sorted(r.name for r in index.candidates(event))

    assert [] == names({"latency": 50}) == names({}) == names({"latency": "1"}) == names({"latency": True})
    assert ["fast"] == names({"latency": 4.5})
    assert ["either", "fast", "instant"] == names({"latency": 1, "size": 0})
    assert ["either", "fast", "instant"] == names({"latency": -7, "size": 3})
    assert ["either"] == names({"service": "billing"})
    assert [] == names({"a": {"b": {"c": -2.4}}}) == names({"a": {"b": {"c": None}}})
    assert ["deep"] == names({"a": {"b": {"c": -2.5}}})
    # A strict bound is exact too: the most common status, 200, makes `lt: 200` no candidate.
    assert [] == names({"status": 200}) == names({"status": 200.0}) == names({"status": 499}) == names({"ratio": 0.5})
    assert ["informational"] == names({"status": 199.99})
    assert ["server-error"] == names({"status": 499.5})
    assert ["half"] == names({"ratio": 0.5000000000000001}) == names({"ratio": 1})
    # Beyond 2**53 an integer lies between adjacent floats: the bound is not raised there.
    assert ["big"] == names({"id": 2**53 + 1})


def sources_written(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sources of the functions the index writes from now on, in order."""
    written: list[str] = []
    generated_function = index_module.generated_function
    monkeypatch.setattr(
        index_module,
        "generated_function",
        lambda source, names: (written.append(source), generated_function(source, names))[1],
    )
    return written


CHAINED = """
rules:
  - {name: api-slow, match: {level: error, service: api, latency: {gte: 500}}}
  - {name: api-down, match: {level: error, service: api, status: [502, 503]}}
  - {name: db, match: {level: critical, service: db}}
  - {name: one, match: {level: warn, code: 1}}
  - {name: flagged, match: {level: warn, flag: true}}
  - {name: paged, match: {level: [error, critical], pager: "up"}}
"""


def test_a_table_of_a_few_values_is_compared_value_by_value_its_nodes_inline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A table of up to three values is comparisons, each value's node written inline: one
    function for the whole index, no lookup of the event's value; it finds what a dict finds
    (1, 1.0 and true alike, a list or an object nothing)."""
    written = sources_written(monkeypatch)
    index = RuleIndex(ruleset_from_yaml(CHAINED).rules)
    index.collect({}, [])
    assert len(written) == 1
    assert [] == lookup_tables(index.collect)

    def names(event: dict[str, Any]) -> list[str]:
        return sorted(r.name for r in index.candidates(event))

    assert ["api-slow"] == names({"level": "error", "service": "api", "latency": 500})
    assert ["api-down", "paged"] == names({"level": "error", "service": "api", "status": 503, "pager": "up"})
    assert ["db", "paged"] == names({"level": "critical", "service": "db", "pager": "up"})
    assert ["flagged", "one"] == names({"level": "warn", "code": 1.0, "flag": True})
    assert ["flagged", "one"] == names({"level": "warn", "code": True, "flag": 1})
    assert [] == names({"level": "warn", "code": [1], "flag": {"a": 1}}) == names({"level": ["error"]})
    assert [] == names({"level": "info", "service": "api"}) == names({"level": None}) == names({})


def test_a_tables_lookup_is_a_call_of_its_bound_get() -> None:
    """A table of more values than are compared one by one is looked up through its `get`,
    bound once into the generated code's names rather than looked up on the table per event."""
    text = "rules:\n" + "".join(f"  - {{name: r{i}, match: {{service: s{i}, level: error}}}}\n" for i in range(5))
    index = RuleIndex(ruleset_from_yaml(text).rules)
    assert [{f"s{i}" for i in range(5)}] == [set(table) for table in lookup_tables(index.collect)]
    assert ["r3"] == [r.name for r in index.candidates({"service": "s3", "level": "error"})]
    assert [] == index.candidates({"service": ["s3"], "level": "error"})


def test_a_table_compares_the_number_of_a_lone_bound_beneath_it_itself() -> None:
    """A rule's equality often leaves one bound (`service: api, latency: {gt: 500}`): where
    every node beneath a table is one bound on one field, the table holds those bounds and
    rules, not nodes to call, and an event reaching it is compared as a node of its own would
    compare it (upper bounds, strict ones, values that are no number); a table with a node of
    another kind beside them keeps calling every node (each call would pay a type test)."""
    ruleset = ruleset_from_yaml("""
rules:
  - {name: api-slow, match: {service: api, latency: {gt: 500}}}
  - {name: api-crawl, match: {service: api, latency: {gte: 2000}}}
  - {name: db-slow, match: {service: db, latency: {gte: 100}}}
  - {name: web-slow, match: {service: web, latency: {gte: 0.5}}}
  - {name: web-fast, match: {kind: web, latency: {lt: 5}}}
  - {name: web-instant, match: {kind: edge, latency: {lte: 1}}}
  - {name: db-instant, match: {kind: db, latency: {lt: 2}}}
  - {name: mq-instant, match: {kind: mq, latency: {lte: 3}}}
  - {name: batch, match: {service: batch}}
  - {name: queue-deep, match: {type: queue, backlog.depth: {gte: 10}}}
  - {name: queue-slow, match: {type: queue-x, latency: {gte: 10}}}
  - {name: cache, match: {type: cache, level: error}}
  - {name: cache-warn, match: {type: cache, level: warning}}
  - {name: timer, match: {type: timer, level: debug}}
""")
    index = RuleIndex(ruleset.rules)
    assert {"service", "kind", "type"} == {field for field, _ in index._root.tables}

    def hits(key: str) -> dict[str, str]:
        (table,) = [v for v in lookup_tables(index.collect) if key in v]
        return {k: type(hit).__name__ for k, hit in table.items()}

    assert {"api": "_BoundHit", "db": "_BoundHit", "web": "_BoundHit", "batch": "tuple"} == hits("api")
    assert {"web": "_BoundHit", "edge": "_BoundHit", "db": "_BoundHit", "mq": "_BoundHit"} == hits("edge")  # `-latency`
    assert {"queue": "function", "queue-x": "function", "cache": "function", "timer": "function"} == hits("queue")

    def names(event: dict[str, Any]) -> list[str]:
        return sorted(r.name for r in index.candidates(event))

    assert [] == names({"service": "api", "latency": 500}) == names({"service": "api", "latency": 500.0})
    assert ["api-slow"] == names({"service": "api", "latency": 500.5}) == names({"service": "api", "latency": 1999})
    assert ["api-crawl", "api-slow"] == names({"service": "api", "latency": 2000})
    assert [] == names({"service": "api"}) == names({"service": "api", "latency": "9000"})
    assert [] == names({"service": "api", "latency": None}) == names({"service": "api", "latency": [9000]})
    assert ["db-slow"] == names({"service": "db", "latency": 100}) == names({"service": "db", "latency": 1e9})
    assert ["web-slow"] == names({"service": "web", "latency": 0.5}) == names({"service": "web", "latency": True})
    assert ["web-fast"] == names({"kind": "web", "latency": 4.9}) == names({"kind": "web", "latency": -3})
    assert [] == names({"kind": "web", "latency": 5}) == names({"kind": "web", "latency": False})
    assert ["web-instant"] == names({"kind": "edge", "latency": 1}) == names({"kind": "edge", "latency": -1e300})
    assert [] == names({"kind": "edge", "latency": 1.5}) == names({"kind": "edge"})
    assert ["db-instant"] == names({"kind": "db", "latency": 1.5}) == names({"kind": "db", "latency": -2})
    assert [] == names({"kind": "db", "latency": 2}) == names({"kind": "mq", "latency": 3.5})
    assert ["mq-instant"] == names({"kind": "mq", "latency": 3})
    assert ["timer"] == names({"type": "timer", "level": "debug"})
    assert ["batch"] == names({"service": "batch", "latency": 3})
    assert ["queue-deep"] == names({"type": "queue", "backlog": {"depth": 10}})
    assert [] == names({"type": "queue", "backlog": {"depth": 9}}) == names({"type": "queue", "latency": 99})
    assert ["cache"] == names({"type": "cache", "level": "error", "latency": 3})
