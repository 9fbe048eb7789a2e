"""`rulesd test`: unit tests for rules, in the spirit of `promtool test rules`.

Each test feeds its events, in order, to a fresh engine over the rule files the
test file names, and compares the alerts produced with `expect_alerts`: exactly
those alerts, no others. Payload fields named in an expectation are compared
exactly, except `details`, whose listed keys are compared.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
from collections.abc import Iterator
from functools import partial
from typing import Any

import msgspec

from rulesd.alerting.payload import AlertSettings, forget_rules
from rulesd.document import Document, JsonPath, missing
from rulesd.durations import parse_duration, unitless
from rulesd.engine import Engine
from rulesd.errors import InvalidInputError, Problem, RuleError, SourceLocation, listed_again
from rulesd.pipeline import Alert as PipelineAlert
from rulesd.pipeline import build_alerts, evaluate_events
from rulesd.rules import generated_code
from rulesd.rules.boolean_words import rule_test_warnings
from rulesd.rules.cache import RuleCache
from rulesd.rules.index import RuleIndex
from rulesd.rules.lists import unheld_integer
from rulesd.rules.loader import TEST_SUFFIXES, CheckResult, RuleSource, check_paths, discover_files, rule_sources
from rulesd.rules.model import Absence, Rule, RuleSet, rule_hint
from rulesd.rules.unseen import unseen_fields
from rulesd.rules.value_kinds import event_warnings
from rulesd.validation import format_path, validate_document
from rulesd.yamldoc import read_yaml

START = 1_700_000_000.0  # event time of `at: 0s`; fixed so that tests are reproducible


class Alert(msgspec.Struct, frozen=True):
    """An alert as a test sees it: the triggering event's 1-based index, rules, payload."""

    event: int
    rules: tuple[str, ...]
    payload: dict[str, Any]


class TestOutcome(msgspec.Struct, frozen=True):
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


def check_test_file(path: str, rules: CheckedRules | None = None) -> list[Problem]:
    """Every problem of the test file `path` itself (YAML, schema, rule files that do not
    exist, expectations of rules those do not define or that are disabled), without running
    it, and warnings: the values of its events that YAML read as booleans from a word. The
    rule files' own problems are not its: they are reported where those are checked (and by
    `rulesd test`). `rules`: the rule files checked last, shared with the other test files
    checked by the same run (`rulesd check` of many test files over one large rule set)."""
    try:
        doc = read_yaml(path, keep_going=True)
    except InvalidInputError as exc:
        return list(exc.problems)
    problems, _ = _examined(doc, rules)
    return [*problems, *_warnings(doc)]


def _warnings(doc: Document) -> list[Problem]:
    """The warnings of a test file: the words of its events read as booleans, and its `at`
    and `advance` written without a unit."""
    found = rule_test_warnings(doc)
    tests = doc.value.get("tests") if isinstance(doc.value, dict) else None
    for t_index, test in enumerate(tests if isinstance(tests, list) else ()):
        steps = test.get("events") if isinstance(test, dict) else None
        for e_index, step in enumerate(steps if isinstance(steps, list) else ()):
            for key in ("at", "advance") if isinstance(step, dict) else ():
                warning = unitless(step.get(key))
                if warning is not None:
                    path = ("tests", t_index, "events", e_index, key)
                    found.append(Problem(doc.locate(path), f"{format_path(path)}: {warning}", "warning"))
    return sorted(found)


def _examined(doc: Document, rules: CheckedRules | None = None) -> tuple[list[Problem], CheckResult | None]:
    """The test file's own problems: its document's, else the expectations of rules its rule
    files do not define or disable; and the check of those rule files (None if not reached),
    by `rules` if given (the test files of one run share what it checked last)."""
    problems = _test_file_problems(doc)
    if problems:
        return problems, None
    checked = rules.check(_rule_paths(doc)) if rules is not None else check_paths(_rule_paths(doc))
    return ([] if checked.ruleset is None else list(_unknown_rules(doc, checked.ruleset))), checked


def _test_file_problems(doc: Document) -> list[Problem]:
    """The problems of a test file's document (see `check_test_file`)."""
    path = doc.path
    if doc.value is None and not doc.problems:  # (only comments, or nothing)
        return [Problem(SourceLocation(path, 1, 1), "empty file: expected rule_files: and tests:")]
    problems = sorted({*doc.problems, *validate_document(doc, "test")})
    if problems:
        return problems
    assert isinstance(doc.value, dict)
    problems.extend(_duplicate_test_names(doc))
    for t_index, test in enumerate(doc.value["tests"]):
        for e_index, item in enumerate(test["events"]):
            if ("event" in item) == ("advance" in item) or ("advance" in item and "at" in item):
                where = doc.locate(("tests", t_index, "events", e_index))
                problems.append(Problem(where, "a step is an event (with an optional at) or an advance"))
            problems.extend(_duration_problems(doc, ("tests", t_index, "events", e_index), item))
            problems.extend(_unheld_numbers(doc, ("tests", t_index, "events", e_index, "event"), item.get("event")))
        problems.extend(_event_number_problems(doc, t_index, test))
        problems.extend(_repeated_rule_names(doc, t_index, test))
    for i, name in enumerate(doc.value["rule_files"]):
        why = _rule_file_problem(os.path.join(os.path.dirname(path), name))
        if why is not None:
            problems.append(Problem(doc.locate(("rule_files", i)), f"rule_files[{i}]: {why}"))
    return problems


def _duplicate_test_names(doc: Document) -> Iterator[Problem]:
    """A test named as one before it, at its name: a report that names a failing test must
    say which one it is (and a copied test that was meant to be changed is a test lost)."""
    assert isinstance(doc.value, dict)
    first: dict[str, SourceLocation] = {}
    for t_index, test in enumerate(doc.value["tests"]):
        path = ("tests", t_index, "name")
        here = doc.locate(path)
        there = first.setdefault(test["name"], here)
        if there is here:
            continue
        if there == here:  # the same test, listed again by an alias
            yield Problem(here, f"{format_path(path)}: duplicate test name {test['name']!r}: {listed_again('test')}")
        else:
            yield Problem(here, f"{format_path(path)}: duplicate test name {test['name']!r} (also at {there})")


def _rule_file_problem(path: str) -> str | None:
    """Why `path` gives a test no rules: missing, a test file, or a directory without rule
    files (the tests would run against no rules, and those expecting no alert would pass)."""
    reason = missing(path)
    if reason is not None:
        return reason
    if is_test_file(path):
        return "a rule test file, not a rule file: name the rule files it tests"
    if os.path.isdir(path) and not discover_files([path])[0]:
        return "no rule files (*.yaml, *.yml) found in this directory"
    return None


def _event_number_problems(doc: Document, t_index: int, test: dict[str, Any]) -> Iterator[Problem]:
    """Expected alerts at an event the test does not have: such an alert can never come."""
    count = sum("event" in item for item in test["events"])
    for e_index, expected in enumerate(test["expect_alerts"]):
        if expected["event"] > count:
            path = ("tests", t_index, "expect_alerts", e_index, "event")
            message = f"the test has {count} event(s) (numbered from 1; advance steps are not events)"
            yield Problem(doc.locate(path), f"{format_path(path)}: no event {expected['event']}: {message}")


def _repeated_rule_names(doc: Document, t_index: int, test: dict[str, Any]) -> Iterator[Problem]:
    """A rule named twice in one expectation: an alert names each of its rules once, so the
    expectation could never be met (and the second name was likely meant to be another)."""
    for key in ("expect_alerts", "expect_closes"):
        for e_index, expected in enumerate(test.get(key, ())):
            names = expected["rules"]
            for r_index, name in enumerate(names):
                if name in names[:r_index]:
                    path = ("tests", t_index, key, e_index, "rules", r_index)
                    message = f"{name!r} is named twice: an alert names each of its rules once"
                    yield Problem(doc.locate(path), f"{format_path(path)}: {message}")


def _duration_problems(doc: Document, path: tuple[str | int, ...], step: dict[str, Any]) -> Iterator[Problem]:
    """`at` and `advance` that the schema lets by but are no time (too many digits)."""
    for key in ("at", "advance"):
        if key in step:
            try:
                parse_duration(step[key])
            except ValueError as exc:
                yield Problem(doc.locate((*path, key)), f"{format_path((*path, key))}: {exc}")


def _unheld_numbers(doc: Document, path: tuple[str | int, ...], value: Any) -> Iterator[Problem]:
    """Numbers in an event that no event holds, so that a test passing on one tests what no rule
    ever sees: YAML's .nan and .inf (JSON has no such number, a line holding one (NaN, Infinity,
    a number beyond a double) is invalid and skipped, and a typed field never converts to one),
    and an integer beyond 64 bits (a JSON line's is a float: `equals: 99999999999999999999`
    holds for the test's event and for no line)."""
    message = None
    if isinstance(value, float) and not math.isfinite(value):
        written = ".nan" if math.isnan(value) else ("-.inf" if value < 0 else ".inf")
        message = (
            f"{written} is no value an event can hold: JSON has no such number (a line with one is invalid, "
            "skipped before any rule sees it) and no typed field converts to one"
        )
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _unheld_numbers(doc, (*path, key), item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unheld_numbers(doc, (*path, index), item)
    else:
        message = unheld_integer(value)
    if message is not None:
        yield Problem(doc.locate(path), f"{format_path(path)}: {message}")


class WrittenRules:
    """The rules as written (`rule_sources`: their mappings and documents, to locate warnings
    at), read once in a run of `rulesd test` and shared by its test files: each file read every
    enabled rule's file again (1,000 rules and 50 test files: the rule files read 50 times over).
    A rule is known by its file, name and fingerprint, so a rule file changed between two test
    files is read again for the second (whose rules were loaded from the new text)."""

    def __init__(self, cache: RuleCache | None = None) -> None:
        self._known: dict[tuple[str, str, str], RuleSource] = {}
        self._cache = cache  # (their documents are read back from it, as the rules were loaded)

    def of(self, rules: list[Rule]) -> dict[str, RuleSource]:
        """The written form of each of `rules` by name; RuleError as `rule_sources`."""
        missing = [rule for rule in rules if _written_key(rule) not in self._known]
        if missing:
            read = rule_sources(missing, self._cache)
            self._known.update((_written_key(rule), read[rule.name]) for rule in missing)
        return {rule.name: self._known[_written_key(rule)] for rule in rules}


def _written_key(rule: Rule) -> tuple[str, str, str]:
    return rule.location.path, rule.name, rule.fingerprint


class CheckedRules:
    """The rule files a test file names, checked, and their rule set's index: the last kept
    for the next test file of the run that names the same files (the paths as written, as its
    problems locate them), while their bytes are the same (their SHA-256). At 1,000 rules the
    check and the index were three quarters of each test file's time, and test files mostly
    share their rule files. One rule set is kept, not every one met; a rule file edited between two
    test files is checked again for the second."""

    def __init__(self, cache: RuleCache | None = None) -> None:
        self.cache = cache  # (through which they are checked: the result is the same, sooner)
        self._last: _Checked | None = None

    def check(self, paths: list[str]) -> CheckResult:
        """The check of the rule files at `paths` (`check_paths`), through the cache."""
        seen = _rule_files_seen(paths)
        last = self._last
        if last is not None and seen is not None and seen == last.seen:
            if last.uses is not None:  # (the code its rule set asks for from now on is kept with it)
                generated_code.record(last.uses)
            return last.result
        self._last = None  # (its rule set let go before the next is loaded)
        uses = None
        if self.cache is not None:  # (the code the last load of these rule files compiled)
            uses = generated_code.load(self.cache, generated_code.code_key(paths))
        result = check_paths(paths, self.cache)
        if seen is not None and seen == _rule_files_seen(paths):  # (else what was read is not what was checked)
            self._last = _Checked(seen, result, uses)
        return result

    def index(self, ruleset: RuleSet) -> RuleIndex:
        """The index of `ruleset` (the last checked), built once for the tests of every file
        that shares it: it holds no state, each test's engine has its own."""
        last = self._last
        if last is None or last.result.ruleset is not ruleset:
            return RuleIndex(ruleset.rules)
        if last.index is None:
            last.index = RuleIndex(ruleset.rules)
        return last.index


class _Checked:
    def __init__(self, seen: _Seen, result: CheckResult, uses: generated_code.Uses | None) -> None:
        self.seen, self.result, self.uses = seen, result, uses
        self.index: RuleIndex | None = None


# The rule files at some paths as a check would find them: the paths, the files found there
# and what finding them said, and the SHA-256 of every file's bytes.
_Seen = tuple[tuple[str, ...], tuple[str, ...], tuple[Problem, ...], tuple[bytes, ...]]


def _rule_files_seen(paths: list[str]) -> _Seen | None:
    """The rule files at `paths` as a check would find them; None if one cannot be read twice
    alike (not a regular file: a pipe's text is the check's to read) or cannot be read (the
    check says why). Each file is hashed as it is read, never held whole."""
    files, problems = discover_files(paths)
    digests = []
    try:
        for path in files:
            if not stat.S_ISREG(os.stat(path).st_mode):  # (before opening: a FIFO's open waits for a writer)
                return None
            with open(path, "rb") as file:
                digests.append(hashlib.file_digest(file, "sha256").digest())
    except OSError:
        return None
    return tuple(paths), tuple(files), tuple(problems), tuple(digests)


def run_test_file(path: str) -> list[TestOutcome]:
    """Run every test in `path`; InvalidInputError when the file or its rules are invalid."""
    return _run_test_file(path, WrittenRules(), CheckedRules())[0]


def _run_test_file(path: str, written: WrittenRules, rules: CheckedRules) -> tuple[list[TestOutcome], list[Problem]]:
    """`run_test_file`, and the warnings of the file and of its rule files: a test may pass
    only because of what one warns about (`country: NO` in the rule and in the event, both
    read as false), so they are said where the test runs."""
    doc = read_yaml(path, keep_going=True)  # once: a pipe (`<(...)`) can be read only once
    problems, checked = _examined(doc, rules)
    if problems:  # (a test expecting a rule that is not there could only fail, not saying why)
        raise InvalidInputError(problems)
    assert checked is not None
    ruleset = checked.ruleset
    if ruleset is None:
        raise RuleError(checked.errors)
    assert isinstance(doc.value, dict)
    others = _other_kinds(doc, ruleset, written)  # (first: it reads every enabled rule as written, _unseen a few)
    warnings = [p for p in checked.problems if p.severity != "error"] + _warnings(doc) + _unseen(doc, ruleset, written)
    said = {p.location for p in warnings}  # (the rule set's own tests may have said it already)
    warnings += [p for p in others if p.location not in said]
    shared = rules.index(ruleset)  # (one for the tests: at 1,000 rules, ~50 ms each)
    outcomes = [_run_one(doc, i, test, ruleset, shared) for i, test in enumerate(doc.value["tests"])]
    if rules.cache is not None:  # (with the engine's, which the tests ran)
        generated_code.keep(rules.cache, generated_code.code_key(_rule_paths(doc)))
    forget_rules()  # (the bodies' memos would keep alive every rule set the run loaded)
    return outcomes, warnings


def _unseen(doc: Document, ruleset: RuleSet, written: WrittenRules) -> list[Problem]:
    """A warning at each field a rule groups or counts by that no event of the file's tests it
    matched has (a misspelled group_by puts every event in one group, and the test may pass)."""
    assert isinstance(doc.value, dict)
    events = [step["event"] for test in doc.value["tests"] for step in test["events"] if "event" in step]
    found = list(unseen_fields(ruleset.rules, events))
    if not found:
        return []
    try:
        sources = written.of([rule for rule, *_ in found])
    except RuleError:  # (a rule file changed meanwhile: its own check says so)
        return []
    warnings = []
    for rule, path, field, count in found:
        source = sources[rule.name]
        where = (*source.base, *path)
        message = (
            f"none of the {count} event(s) of {doc.path} that the rule {rule.name!r} matched has the field "
            f"{field!r}: is it misspelled?"
        )
        warnings.append(Problem(source.doc.locate(where), f"{format_path(where)}: {message}", "warning"))
    return warnings


def _other_kinds(doc: Document, ruleset: RuleSet, written: WrittenRules) -> list[Problem]:
    """A warning at each value a rule compares a field with that the file's events carry as
    another kind of value (`http.status: "500"`, the events' status the number 500)."""
    assert isinstance(doc.value, dict)
    events = [step["event"] for test in doc.value["tests"] for step in test["events"] if "event" in step]
    try:
        sources = written.of([rule for rule in ruleset.rules if rule.enabled])
    except RuleError:  # (a rule file changed meanwhile: its own check says so)
        return []
    return event_warnings(((s.doc, s.raw, s.base) for s in sources.values()), events, doc.path)


def _rule_paths(doc: Document) -> list[str]:
    """The rule files of a (valid) test file, as paths from here."""
    assert isinstance(doc.value, dict)
    return [os.path.join(os.path.dirname(doc.path), p) for p in doc.value["rule_files"]]


def _unknown_rules(doc: Document, ruleset: RuleSet) -> Iterator[Problem]:
    """Each rule name in an expectation that no rule file of the test defines, whose rule is
    disabled, or (a close) whose rule never closes an alert: the alert or close can never come;
    and an alert expected at event 0 that no expected group of an absence rule can bring."""
    rules = ruleset.by_name()
    names = list(rules)
    assert isinstance(doc.value, dict)
    for t_index, test in enumerate(doc.value["tests"]):
        for key in ("expect_alerts", "expect_closes"):
            for e_index, expected in enumerate(test.get(key, ())):
                for r_index, name in enumerate(expected["rules"]):
                    message = _never_comes(rules.get(name), name, names, closes=key == "expect_closes")
                    if message is not None:
                        path = ("tests", t_index, key, e_index, "rules", r_index)
                        yield Problem(doc.locate(path), f"{format_path(path)}: {message}")
                if key == "expect_alerts" and expected["event"] == 0 and _not_expected(expected["rules"], rules):
                    at: JsonPath = ("tests", t_index, key, e_index, "event")
                    message = (
                        "event 0 is the event of an absence rule's expected group never seen, and no rule "
                        "named here is an absence rule with expect (events are numbered from 1)"
                    )
                    yield Problem(doc.locate(at), f"{format_path(at)}: {message}")


def _never_comes(rule: Rule | None, name: str, names: list[str], *, closes: bool) -> str | None:
    """Why an alert (`closes`: a close) of the rule named `name` can never come, if it cannot."""
    if rule is None:
        return f"no such rule {name!r}{rule_hint(name, names)}"
    if not rule.enabled:
        return f"the rule {name!r} ({rule.location}) is disabled (enabled: false): it never fires"
    if closes and rule.resolve is None and not isinstance(rule.kind, Absence):
        return (
            f"the rule {name!r} ({rule.location}) never closes an alert: only a rule with resolve, or an "
            "absence rule, does"
        )
    return None


def _not_expected(names: list[str], rules: dict[str, Rule]) -> bool:
    """Whether the rules `names` (all defined) hold no absence rule with expected groups, the
    only alerts that carry no event (event 0). (An unknown name is said of its own.)"""
    if not all(name in rules for name in names):
        return False
    kinds = [rules[name].kind for name in names]
    return not any(isinstance(kind, Absence) and kind.expect for kind in kinds)


def _run_one(doc: Document, index: int, test: dict[str, Any], ruleset: RuleSet, shared: RuleIndex) -> TestOutcome:
    engine = Engine(ruleset, saved=False, index=shared)  # (its own state: each test starts from none)
    timed = list(_timed(test["events"]))
    numbers = [number for _, _, number in timed]
    # Events are numbered from 1 in the test file and in its expectations (`advance` steps
    # are not events); a timer's alert carries the number of the event that armed it.
    batch = evaluate_events([(event, time) for event, time, _ in timed], engine, numbers.__getitem__)
    found = build_alerts(
        batch, AlertSettings(), lambda i: _event_source(doc.path, numbers[i]), partial(_event_source, doc.path)
    )
    actual = [Alert(_alert_event(a, numbers), a.rules, a.payload) for a in found if a.close is None]
    report = _compare(test["expect_alerts"], actual)
    if "expect_closes" in test:
        report = "\n".join(filter(None, [report, _compare_closes(test["expect_closes"], found)]))
    return TestOutcome(test["name"], doc.locate(("tests", index)), report)


def _event_source(path: str, number: int) -> str:
    return f"{path}: event {number}"


def _alert_event(alert: PipelineAlert, numbers: list[int]) -> int:
    """The number of the event an alert carries: a timer's is the event that armed it (0: an
    expected group never seen)."""
    if alert.timer:
        return int(alert.origin or 0)
    return numbers[alert.index]


def _timed(items: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any] | None, float, int]]:
    """Each event with its time and number: `at` from the start, else the time of the event
    before; an `advance` step (no event) moves the time on by its duration from the latest
    time so far (a late event before it does not hold the clock back). The clock starts at the
    first event, or at the start (`at: 0s`) for an `advance` before any: the time it moves on from."""
    offset = latest = 0.0
    number = 0
    for i, item in enumerate(items):
        if "advance" in item:
            if i == 0:
                yield None, START, number
            offset = latest = latest + parse_duration(item["advance"])
            yield None, START + offset, number
            continue
        if "at" in item:
            offset = parse_duration(item["at"])
            latest = max(latest, offset)
        number += 1
        yield item["event"], START + offset, number


def _compare_closes(expected: list[dict[str, Any]], found: list[PipelineAlert]) -> str:
    """Closes are compared in order: their rules, and their alias where one is expected."""
    actual = [(sorted(a.rules), a.close) for a in found if a.close is not None]
    wanted = [(sorted(e["rules"]), e.get("alias")) for e in expected]
    same = len(actual) == len(wanted) and all(
        rules == want_rules and (alias is None or alias == got)
        for (rules, got), (want_rules, alias) in zip(actual, wanted, strict=True)
    )
    if same:
        return ""
    lines = ["expected closes:"]
    lines += [f"  - rules {rules}" + (f", alias {alias!r}" if alias else "") for rules, alias in wanted] or ["  (none)"]
    lines.append("actual closes:")
    lines += [f"  - rules {rules}, alias {alias!r}" for rules, alias in actual] or ["  (none)"]
    return "\n".join(lines)


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


def run_test_files(
    paths: list[str], written: WrittenRules | None = None, rules: CheckedRules | None = None
) -> tuple[list[TestOutcome], list[Problem]]:
    """Run all files; invalid files become problems rather than stopping the run, and the
    warnings of the files run are problems of severity warning. `written`: the rules as
    written, and `rules`: the rule files checked last, shared with the other calls of the same
    run."""
    written, rules = written or WrittenRules(), rules or CheckedRules()
    outcomes: list[TestOutcome] = []
    problems: list[Problem] = []
    try:
        for path in paths:
            try:
                ran, warnings = _run_test_file(path, written, rules)
            except InvalidInputError as exc:
                problems.extend(exc.problems)
            else:
                outcomes.extend(ran)
                problems.extend(warnings)
    finally:
        generated_code.release()  # (each file recorded for its own rule set: the last is done with)
    return outcomes, problems
