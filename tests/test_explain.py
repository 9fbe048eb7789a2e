"""`rulesd explain`'s explanation of one event: the first failing condition as written, at its
`path:line:col`, and a verdict that is the rule's own (a randomized test holds them together)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rulesd.explain import Explainer, RuleExplanation, explanation_lines
from rulesd.rules.loader import check_text, load_ruleset, rule_sources
from rulesd.rules.model import RuleSet


def explainer_for(tmp_path: Path, text: str) -> tuple[RuleSet, Explainer]:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    ruleset = load_ruleset([path])
    return ruleset, Explainer(ruleset.rules, rule_sources(ruleset.rules))


def explain_text(tmp_path: Path, text: str, event: dict[str, Any]) -> list[str]:
    """The lines explain prints for `event`, with the rule file's path as `R`."""
    _, explainer = explainer_for(tmp_path, text)
    lines = [line for e in explainer.explain(event) for line in explanation_lines(e)]
    return [line.replace(str(tmp_path / "rules.yaml"), "R") for line in lines]


PAYMENTS = """\
name: pay
match:
  service: payments
  level: [error, critical]
  message: {regex: "timeout|refused"}
  http.status: {gte: 500, lt: 600}
"""
GOOD = {"service": "payments", "level": "error", "message": "read timeout", "http": {"status": 502}}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, ["pay: matches"]),
        ({"service": None}, ['  R:3:12: service: missing, wanted "payments"']),
        ({"service": "web"}, ['  R:3:12: service: "web", wanted "payments"']),
        ({"level": "info"}, ['  R:4:10: level: "info", wanted one of ["error","critical"]']),
        ({"message": "ok"}, ['  R:5:20: message: "ok", wanted regex: "timeout|refused"']),
        ({"message": 7}, ['  R:5:20: message: 7, wanted regex: "timeout|refused"']),
        # an operator mapping: the first operator that fails, as written, at its operand
        ({"http": {"status": 404}}, ["  R:6:22: http.status: 404, wanted gte: 500"]),
        ({"http": {"status": 700}}, ["  R:6:31: http.status: 700, wanted lt: 600"]),
        ({"http": {"status": "502"}}, ['  R:6:22: http.status: "502", wanted gte: 500']),
        ({"http": {}}, ["  R:6:22: http.status: missing, wanted gte: 500"]),
        # two failures: the first written is reported, whatever the predicate's order
        ({"message": "ok", "service": "web"}, ['  R:3:12: service: "web", wanted "payments"']),
        ({"message": "ok", "http": {"status": 1}}, ['  R:5:20: message: "ok", wanted regex: "timeout|refused"']),
    ],
)
def test_the_first_failing_field_test_as_written(tmp_path: Path, change: dict[str, Any], expected: list[str]) -> None:
    """Each field test fails with its place, the field, the event's value (or missing) and
    what was wanted; the first in the file is the one named."""
    event = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    lines = explain_text(tmp_path, PAYMENTS, event)
    assert (["pay: does not match", *expected] if change else expected) == lines


COMBINED = """\
rules:
  - name: combined
    match:
      all:
        - kind: page
        - any:
            - level: error
            - all: [{http.status: {gte: 500}}, {retry: {exists: false}}]
      not: {debug: true, env: test}
"""


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"kind": "page", "level": "error"}, ["combined: matches"]),
        ({"kind": "page", "http": {"status": 503}}, ["combined: matches"]),
        # inside all: the failing part itself is named, not the all
        ({"kind": "mail", "level": "error"}, ['  R:5:17: kind: "mail", wanted "page"']),
        # any: its own place, then each branch's first failure by line
        (
            {"kind": "page", "level": "info", "http": {"status": 503}, "retry": 1},
            [
                "  R:6:11: any: none of its 2 conditions holds",
                '    1. line 7: level: "info", wanted "error"',
                "    2. line 8: retry: 1, wanted exists: false",
            ],
        ),
        # not: its own place, and the values of the fields it names
        (
            {"kind": "page", "level": "error", "debug": True, "env": "test"},
            ['  R:9:7: not: the condition under it holds (debug: true, env: "test")'],
        ),
        ({"kind": "page", "level": "error", "debug": True, "env": "prod"}, ["combined: matches"]),
    ],
)
def test_all_any_and_not_report_as_documented(tmp_path: Path, event: dict[str, Any], expected: list[str]) -> None:
    """all: its first failing part; any: itself and every branch's failure; not: itself."""
    lines = explain_text(tmp_path, COMBINED, event)
    assert (expected if expected == ["combined: matches"] else ["combined: does not match", *expected]) == lines


def test_a_nested_any_lists_its_branches_under_its_line(tmp_path: Path) -> None:
    """An any inside an any's branch is a branch failure with its own branches below it."""
    text = "name: nested\nmatch:\n  any:\n    - a: 1\n    - any: [{b: 2}, {c: {gt: 3}}]\n"
    assert [
        "nested: does not match",
        "  R:3:3: any: none of its 2 conditions holds",
        "    1. line 4: a: missing, wanted 1",
        "    2. line 5: any: none of its 2 conditions holds",
        "       1. line 5: b: 3, wanted 2",
        "       2. line 5: c: 1, wanted gt: 3",
    ] == explain_text(tmp_path, text, {"b": 3, "c": 1})


def test_a_sequence_says_which_steps_the_event_matches(tmp_path: Path) -> None:
    """No top-level match: the steps the event matches, or each step's first failure."""
    text = (
        "name: brute-then-login\n"
        "sequence:\n"
        "  group_by: [ip]\n"
        "  steps:\n"
        "    - match: {event: login_failed}\n"
        "      count: 3\n"
        "    - match: {event: login_succeeded}\n"
        "    - absent: {match: {event: logout}, for: 1h}\n"
    )
    assert ["brute-then-login: matches step 2 of 3"] == explain_text(tmp_path, text, {"event": "login_succeeded"})
    assert ["brute-then-login: matches step 3 of 3"] == explain_text(tmp_path, text, {"event": "logout"})
    assert [
        "brute-then-login: matches none of its 3 steps",
        '  R:5:22: step 1: event: "login", wanted "login_failed"',
        '  R:7:22: step 2: event: "login", wanted "login_succeeded"',
        '  R:8:31: step 3: event: "login", wanted "logout"',
    ] == explain_text(tmp_path, text, {"event": "login"})


def test_a_disabled_rule_that_matches_says_it_never_fires(tmp_path: Path) -> None:
    """enabled: false is loaded and explained, and the verdict says it cannot fire."""
    text = "name: dormant\nenabled: false\nmatch: {a: 1}\n"
    assert ["dormant: matches (disabled: it never fires)"] == explain_text(tmp_path, text, {"a": 1})


def test_long_values_are_cut_short(tmp_path: Path) -> None:
    """A long event value does not flood the line."""
    line = explain_text(tmp_path, "name: r\nmatch: {a: x}\n", {"a": "y" * 500})[1]
    assert line.endswith('…, wanted "x"') and len(line) < 200


LISTED = """\
lists:
  admins: [alice, bob]
  office: [10.0.0.0/8]
rules:
  - name: admin-outside
    match:
      user: {in: $admins, nocase: true}
      source.ip: {not_cidr: $office}
      host: $admins
"""


NO = "admin-outside: does not match"


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"user": "ALICE", "source": {"ip": "192.0.2.1"}, "host": "bob"}, ["admin-outside: matches"]),
        (
            {"user": "carol", "source": {"ip": "192.0.2.1"}},
            [NO, '  R:7:18: user: "carol", wanted in: $admins ["alice","bob"] (nocase)'],
        ),
        (
            {"user": "Bob", "source": {"ip": "10.1.2.3"}},
            [NO, '  R:8:29: source.ip: "10.1.2.3", wanted not_cidr: $office ["10.0.0.0/8"]'],
        ),
        (
            {"user": "Bob", "source": {"ip": "::1"}, "host": "Bob"},
            [NO, '  R:9:13: host: "Bob", wanted one of $admins ["alice","bob"]'],
        ),
    ],
)
def test_a_named_list_is_explained_with_its_values(tmp_path: Path, event: dict[str, Any], expected: list[str]) -> None:
    """A `$name` operand is shown as written and followed by the list's values; `nocase` goes
    with the `in` it changes."""
    assert expected == explain_text(tmp_path, LISTED, event)


# ---- the explanation and the rule cannot disagree ------------------------------------------

FIELDS = ("a", "b", "n.x")
TEXTS = ("", "ab", "abc", "ABC", "b", "x.y", "timeout 5", "Straße", "STRAẞE", "10.1.2.3", "::ffff:10.1.2.3")
NETWORKS = ("10.0.0.0/8", "10.1.2.3", "::ffff:10.0.0.0/104", "2001:db8::/32")
SCALARS = st.one_of(
    st.sampled_from(TEXTS),
    st.sampled_from([0, 1, 1.0, 2, 500, -3, 2.5]),
    st.booleans(),
    st.none(),
)
REGEXES = ("^a", "b+", "c$", "[0-9]", "(?i)abc", "x\\.y", "^$", "time(out)?")


def operators() -> st.SearchStrategy[dict[str, Any]]:
    number = st.sampled_from([0, 1, 2, 2.5, 500, -3])
    text = st.sampled_from(TEXTS)
    one = st.one_of(
        st.builds(lambda v: {"equals": v}, SCALARS),
        st.builds(lambda v: {"not_equals": v}, SCALARS),
        st.builds(lambda v: {"in": v}, st.lists(SCALARS, min_size=1, max_size=3)),
        st.builds(lambda v: {"not_in": v}, st.lists(SCALARS, min_size=1, max_size=3)),
        st.builds(lambda v: {"contains": v}, SCALARS),
        st.builds(lambda v: {"startswith": v}, text),
        st.builds(lambda v: {"endswith": v}, text),
        st.builds(lambda v: {"regex": v}, st.sampled_from(REGEXES)),
        st.builds(lambda v: {"gt": v}, number),
        st.builds(lambda v: {"gte": v}, number),
        st.builds(lambda v: {"lt": v}, number),
        st.builds(lambda v: {"lte": v}, number),
        st.builds(lambda v: {"exists": v}, st.booleans()),
        st.builds(lambda v: {"cidr": v}, st.lists(st.sampled_from(NETWORKS), min_size=1, max_size=2)),
        st.builds(lambda v: {"not_cidr": v}, st.sampled_from(NETWORKS)),
    )
    ops = st.lists(one, min_size=1, max_size=3).map(lambda ops: {k: v for op in ops for k, v in op.items()})
    return st.builds(_with_nocase, ops, st.booleans())


def _with_nocase(matcher: dict[str, Any], nocase: bool) -> dict[str, Any]:
    """`matcher`, ignoring case where that is allowed (a text operator with a text beside it)."""
    texts = any(
        isinstance(operand, str) or (op == "in" and any(isinstance(o, str) for o in operand))
        for op, operand in matcher.items()
        if op in ("equals", "in", "contains", "startswith", "endswith", "regex")
    )
    if nocase and texts and "not_equals" not in matcher and "not_in" not in matcher:
        return {**matcher, "nocase": True}
    return matcher


MATCHERS = st.one_of(SCALARS, st.lists(SCALARS, min_size=1, max_size=3), operators())


def conditions(depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    fields = st.dictionaries(st.sampled_from(FIELDS), MATCHERS, min_size=1, max_size=2)
    if depth >= 2:
        return fields
    inner = st.deferred(lambda: conditions(depth + 1))
    combined = st.one_of(
        st.builds(lambda c: {"all": c}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda c: {"any": c}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda c: {"not": c}, inner),
    )
    return st.builds(lambda f, c: {**f, **c}, st.one_of(st.just({}), fields), combined) | fields


def operands(cond: Any) -> list[Any]:
    """Every scalar a condition is written with (events built from them match often)."""
    if isinstance(cond, dict):
        return [v for value in cond.values() for v in operands(value)]
    if isinstance(cond, list):
        return [v for value in cond for v in operands(value)]
    return [cond]


def subconditions(cond: dict[str, Any]) -> list[dict[str, Any]]:
    """A condition and every condition written inside it."""
    inner: list[dict[str, Any]] = []
    for key, value in cond.items():
        if key in ("all", "any"):
            inner += [part for c in value for part in subconditions(c)]
        elif key == "not":
            inner += subconditions(value)
        else:
            inner.append({key: value})
    return [cond, *inner]


def events_for(matches: list[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Events whose values are mostly the conditions' own operands, so that field tests hold
    about as often as they fail, and every combination gets tried."""
    written = st.sampled_from(operands(matches))
    value = st.one_of(written, written, written, SCALARS)
    values = st.one_of(value, value, value, st.lists(value, max_size=2))
    absent = object()
    nested = st.one_of(st.fixed_dictionaries({"x": value}), st.fixed_dictionaries({"x": value}), values)
    fields = st.fixed_dictionaries(
        {
            name: st.one_of(kind, kind, kind, st.just(absent))
            for name, kind in (("a", values), ("b", values), ("n", nested))
        }
    )
    return fields.map(lambda event: {k: v for k, v in event.items() if v is not absent})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(conditions(), min_size=1, max_size=4), st.data())
def test_explain_says_matches_exactly_when_the_rule_matches(
    tmp_path_factory: pytest.TempPathFactory, matches: list[dict[str, Any]], data: st.DataObject
) -> None:
    """For random conditions and events, the verdict is the compiled rule's (a sequence's:
    its steps'), and a rule that does not match is explained by a failing condition."""
    # Every part of every condition is a rule of its own too: small parts hold often, so each
    # `any`, `not` and operator is tried both ways, alone and within the whole.
    parts = [part for m in matches for part in subconditions(m)]
    written: list[dict[str, Any]] = [{"name": f"r{i}", "match": m} for i, m in enumerate(parts)]
    written.append({"name": "steps", "sequence": {"steps": [{"match": m} for m in (matches * 2)[:3]]}})
    # A rule that can never match (`a: {equals: null, startswith: ""}`) does not load.
    rules = [rule for rule in written if check_text(yaml.safe_dump({"rules": [rule]})).ruleset is not None]
    assume(rules)
    text = yaml.safe_dump({"rules": rules})
    _, explainer = explainer_for(tmp_path_factory.mktemp("random"), text)
    for event in data.draw(st.lists(events_for(matches), min_size=1, max_size=16)):
        explained: list[RuleExplanation] = explainer.explain(event)
        assert [e.rule.match(event) for e in explained] == [e.matches for e in explained], (text, event)
        assert all(e.matches == (e.failure is None) for e in explained if e.rule.name != "steps")
