"""`rulesd test`: unit tests for rules, in the spirit of `promtool test rules`.

Each test feeds its events, in order, to a fresh engine over the rule files the
test file names, and compares the alerts produced with `expect_alerts`: exactly
those alerts, no others. Payload fields named in an expectation are compared
exactly, except `details`, whose listed keys are compared.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rulesd.alerting.payload import AlertSettings
from rulesd.durations import parse_duration
from rulesd.engine import Engine
from rulesd.errors import InvalidInputError, Problem, SourceLocation
from rulesd.pipeline import build_alerts, evaluate_events
from rulesd.rules.loader import TEST_SUFFIXES, load_ruleset
from rulesd.rules.model import RuleSet
from rulesd.validation import validate_document
from rulesd.yamldoc import Document, read_yaml

START = 1_700_000_000.0  # event time of `at: 0s`; fixed so that tests are reproducible


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert as a test sees it: the triggering event's 1-based index, rules, payload."""

    event: int
    rules: tuple[str, ...]
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TestOutcome:
    """One test's result; `report` is empty when it passed."""

    name: str
    location: SourceLocation
    report: str

    @property
    def passed(self) -> bool:
        """True when the alerts were exactly those expected."""
        return not self.report


def is_test_file(path: str) -> bool:
    """Whether `path` is named as a rule test file (`*.test.yaml`, `*.test.yml`)."""
    return path.endswith(TEST_SUFFIXES)


def check_test_file(path: str) -> list[Problem]:
    """Every problem of the test file `path` itself (YAML, schema, rule files that do not
    exist), without running it; its rules are checked when the tests run."""
    try:
        doc = read_yaml(path, keep_going=True)
    except InvalidInputError as exc:
        return list(exc.problems)
    problems = sorted({*doc.problems, *validate_document(doc, "test")})
    if problems:
        return problems
    assert isinstance(doc.value, dict)
    for i, name in enumerate(doc.value["rule_files"]):
        if not os.path.exists(os.path.join(os.path.dirname(path), name)):
            problems.append(Problem(doc.locate(("rule_files", i)), f"rule_files[{i}]: no such file or directory"))
    return problems


def run_test_file(path: str) -> list[TestOutcome]:
    """Run every test in `path`; InvalidInputError when the file or its rules are invalid."""
    problems = check_test_file(path)
    if problems:
        raise InvalidInputError(problems)
    doc = read_yaml(path)
    assert isinstance(doc.value, dict)
    base = os.path.dirname(path)
    rule_paths = [os.path.join(base, p) for p in doc.value["rule_files"]]
    ruleset = load_ruleset(rule_paths)
    return [_run_one(doc, i, test, ruleset) for i, test in enumerate(doc.value["tests"])]


def _run_one(doc: Document, index: int, test: dict[str, Any], ruleset: RuleSet) -> TestOutcome:
    engine = Engine(ruleset, saved=False)
    batch = evaluate_events(_timed(test["events"]), engine.evaluate)
    # Events are numbered from 1 in the test file and in its expectations.
    found = build_alerts(batch, AlertSettings(), lambda i: f"{doc.path}: event {i + 1}")
    actual = [Alert(alert.index + 1, alert.rules, alert.payload) for alert in found]
    report = _compare(test["expect_alerts"], actual)
    return TestOutcome(test["name"], doc.locate(("tests", index)), report)


def _timed(items: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], float]]:
    """Each event with its time: `at` from the start, else the time of the event before."""
    offset = 0.0
    for item in items:
        if "at" in item:
            offset = parse_duration(item["at"])
        yield item["event"], START + offset


def _compare(expected: list[dict[str, Any]], actual: list[Alert]) -> str:
    remaining = list(actual)
    differences: list[str] = []
    for exp in expected:
        match = next((a for a in remaining if _same_alert(exp, a)), None)
        if match is None:
            differences.append(f"missing: {_describe_expected(exp)}")
            near = [a for a in remaining if a.event == exp["event"]]
            differences.extend(f"  {d}" for a in near for d in _field_differences(exp, a))
        else:
            remaining.remove(match)
    differences.extend(f"unexpected: {_describe_actual(a)}" for a in remaining)
    if not differences:
        return ""
    lines = ["expected:"]
    lines += [f"  - {_describe_expected(e)}" for e in expected] or ["  (no alerts)"]
    lines.append("actual:")
    lines += [f"  - {_describe_actual(a)}" for a in actual] or ["  (no alerts)"]
    lines.append("differences:")
    lines += [f"  {d}" for d in differences]
    return "\n".join(lines)


def _same_alert(exp: dict[str, Any], alert: Alert) -> bool:
    return exp["event"] == alert.event and not _field_differences(exp, alert)


def _field_differences(exp: dict[str, Any], alert: Alert) -> list[str]:
    out: list[str] = []
    if sorted(exp["rules"]) != sorted(alert.rules):
        out.append(f"rules: expected {sorted(exp['rules'])}, got {sorted(alert.rules)}")
    for key, want in exp.items():
        if key in ("event", "rules"):
            continue
        got = alert.payload.get(key)
        if key == "details" and isinstance(got, dict):
            got = {k: got.get(k) for k in want}
        if got != want:
            out.append(f"{key}: expected {want!r}, got {got!r}")
    return out


def _describe_expected(exp: dict[str, Any]) -> str:
    extra = "".join(f", {k}: {v!r}" for k, v in exp.items() if k not in ("event", "rules"))
    return f"event {exp['event']}: rules {sorted(exp['rules'])}{extra}"


def _describe_actual(alert: Alert) -> str:
    p = alert.payload
    return f"event {alert.event}: rules {sorted(alert.rules)}, priority {p['priority']!r}, message {p['message']!r}"


def run_test_files(paths: list[str]) -> tuple[list[TestOutcome], list[Problem]]:
    """Run all files; invalid files become problems rather than stopping the run."""
    outcomes: list[TestOutcome] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            outcomes.extend(run_test_file(path))
        except InvalidInputError as exc:
            problems.extend(exc.problems)
    return outcomes, problems
