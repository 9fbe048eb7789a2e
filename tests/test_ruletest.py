"""`rulesd test`: rule unit tests, compared exactly with the alerts produced."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import pytest

from rulesd.rules.model import Rule
from rulesd.ruletest import check_test_file, run_test_files

RULES = """
rules:
  - name: burst
    match: {level: error}
    threshold: {count: 2, window: 1m, group_by: [host]}
    alert: {priority: P1, message: "burst on {host}", details: {runbook: "https://wiki/x"}}
  - name: any-error
    match: {level: error}
"""


def run(tmp_path: Path, tests_yaml: str) -> tuple[list[tuple[str, bool, str]], list[str]]:
    """Run one test file against RULES; (name, passed, report) per test, and problems."""
    (tmp_path / "rules.yaml").write_text(RULES)
    path = tmp_path / "t.test.yaml"
    path.write_text("rule_files: [rules.yaml]\ntests:\n" + tests_yaml)
    outcomes, problems = run_test_files([str(path)])
    return [(o.name, o.passed, o.report) for o in outcomes], [str(p) for p in problems]


def test_offsets_and_thresholds(tmp_path: Path) -> None:
    """`at` sets event time; alerts are matched by event index, rules and listed fields."""
    outcomes, problems = run(
        tmp_path,
        """
  - name: second error within the minute pages
    events:
      - {at: 0s, event: {level: error, host: a}}
      - {at: 59s, event: {level: error, host: a}}
      - {at: 2m, event: {level: error, host: a}}
    expect_alerts:
      - {event: 1, rules: [any-error]}
      - {event: 2, rules: [burst, any-error], priority: P1, message: burst on a,
         details: {runbook: "https://wiki/x"}}
      - {event: 3, rules: [any-error]}
""",
    )
    assert ([("second error within the minute pages", True, "")], []) == (outcomes, problems)


def test_the_tests_of_a_file_share_one_index_and_keep_their_own_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index of the file's rule set is made once for all its tests (it holds no state;
    at 1,000 rules it took ~50 ms a test); each test still starts from no state: the same
    events alert alike in each."""
    from rulesd.rules import index

    made = []
    make = index.RuleIndex.__init__

    def counted(self: index.RuleIndex, rules: Any) -> None:
        made.append(len(rules))
        make(self, rules)

    monkeypatch.setattr(index.RuleIndex, "__init__", counted)
    test = """
  - name: {name}
    events:
      - {{at: 0s, event: {{level: error, host: a}}}}
      - {{at: 1s, event: {{level: error, host: a}}}}
    expect_alerts:
      - {{event: 1, rules: [any-error]}}
      - {{event: 2, rules: [burst, any-error]}}
"""
    outcomes, problems = run(tmp_path, "".join(test.format(name=f"run {i}") for i in range(3)))
    assert ([(f"run {i}", True, "") for i in range(3)], []) == (outcomes, problems)
    assert made == [2]


def test_window_edge_is_exclusive(tmp_path: Path) -> None:
    """Events exactly one window apart do not reach a count of two."""
    outcomes, _ = run(
        tmp_path,
        """
  - name: a minute apart
    events:
      - {at: 0, event: {level: error, host: a}}
      - {at: 60, event: {level: error, host: a}}
    expect_alerts:
      - {event: 1, rules: [any-error]}
      - {event: 2, rules: [any-error]}
""",
    )
    assert [("a minute apart", True, "")] == outcomes


def test_failure_report_names_missing_and_unexpected_alerts(tmp_path: Path) -> None:
    """A failed test reports expected, actual and each difference."""
    outcomes, _ = run(
        tmp_path,
        """
  - name: expects too much
    events:
      - {event: {level: error, host: a}}
    expect_alerts:
      - {event: 1, rules: [burst]}
""",
    )
    assert [
        (
            "expects too much",
            False,
            "expected:\n"
            "  - event 1: rules ['burst']\n"
            "actual:\n"
            "  - event 1: rules ['any-error'], priority 'P3', message 'rulesd: any-error'\n"
            "differences:\n"
            "  missing: event 1: rules ['burst']\n"
            "    rules: expected ['burst'], got ['any-error']\n"
            "  unexpected: event 1: rules ['any-error'], priority 'P3', message 'rulesd: any-error'",
        )
    ] == outcomes


def test_no_alerts_expected(tmp_path: Path) -> None:
    """`expect_alerts: []` fails when anything fires, saying `(no alerts)` expected."""
    outcomes, _ = run(
        tmp_path,
        """
  - name: quiet
    events:
      - {event: {level: error, host: a}}
    expect_alerts: []
""",
    )
    assert outcomes[0][2].startswith("expected:\n  (no alerts)\nactual:\n  - event 1")


def test_invalid_test_file_and_invalid_rules_are_problems(tmp_path: Path) -> None:
    """A malformed test file, or rules that do not load, become located problems."""
    (tmp_path / "rules.yaml").write_text("name: r\nmatch: {level: error}\nthrotle: 1m\n")
    bad_rules = tmp_path / "a.test.yaml"
    bad_rules.write_text("rule_files: [rules.yaml]\ntests: [{name: t, events: [{event: {}}], expect_alerts: []}]\n")
    bad_test = tmp_path / "b.test.yaml"
    bad_test.write_text("rule_files: [rules.yaml]\ntests:\n  - name: x\n    event: []\n")
    assert [
        f"{tmp_path / 'rules.yaml'}:3:1: error: throtle: unknown key 'throtle'; did you mean 'throttle'?",
        f"{bad_test}:3:5: error: tests[0]: missing required key 'events'",
        f"{bad_test}:3:5: error: tests[0]: missing required key 'expect_alerts'",
        f"{bad_test}:4:5: error: tests[0].event: unknown key 'event'; did you mean 'events'?",
    ] == invalid([bad_rules, bad_test])


def test_every_payload_field_an_expectation_names_is_compared(tmp_path: Path) -> None:
    """Each payload field the test schema takes in an expectation is compared: an expected
    value that differs from the alert's fails the test, saying what differs (details: only the
    keys listed)."""
    (tmp_path / "rules.yaml").write_text(
        "name: full\nmatch: {k: b}\nalert: {responders: [{type: team, name: ops}], details: {a: '1', b: '2'}, "
        "tags: [x], entity: e, note: n, alias: al, description: d, message: m, priority: P2}\n"
    )
    right = {
        "responders": "[{type: team, name: ops}]",
        "details": "{a: '1'}",
        "tags": "[x]",
        "entity": "e",
        "note": "n",
        "alias": "al",
        "description": json.dumps('full: d\n\nEvent:\n{\n  "k": "b"\n}'),  # (the event follows)
        "message": "m",
        "priority": "P2",
        "source": "rulesd",
    }
    wrong = dict.fromkeys(right, "z") | {"responders": "[{type: team, id: ops}]", "details": "{a: '2'}"}
    wrong |= {"tags": "[y]", "priority": "P1"}
    lines = ["rule_files: [rules.yaml]", "tests:"]
    for name in ["all", *right]:
        fields = ", ".join(f"{k}: {wrong[k] if k == name else v}" for k, v in right.items())
        lines += [
            f"  - name: {name}",
            "    events: [{event: {k: b}}]",
            f"    expect_alerts: [{{event: 1, rules: [full], {fields}}}]",
        ]
    path = tmp_path / "t.test.yaml"
    path.write_text("\n".join(lines) + "\n")
    outcomes, problems = run_test_files([str(path)])
    assert [] == problems
    assert [("all", True)] + [(k, False) for k in right] == [(o.name, o.passed) for o in outcomes]
    for key, outcome in zip(right, outcomes[1:], strict=True):
        assert f"    {key}: expected " in outcome.report


def count_checks(monkeypatch: pytest.MonkeyPatch) -> tuple[list[list[str]], list[int]]:
    """The rule paths of every check `rulesd test` makes, and the size of every index built."""
    from rulesd import ruletest
    from rulesd.rules import index

    checks: list[list[str]] = []
    made: list[int] = []
    check, make = ruletest.check_paths, index.RuleIndex.__init__

    def counted_check(paths: Any, cache: Any = None, **kw: Any) -> Any:
        checks.append([Path(p).name for p in paths])
        return check(paths, cache, **kw)

    def counted_index(self: index.RuleIndex, rules: Any) -> None:
        made.append(len(rules))
        make(self, rules)

    monkeypatch.setattr(ruletest, "check_paths", counted_check)
    monkeypatch.setattr(index.RuleIndex, "__init__", counted_index)
    return checks, made


ONE_BURST = (
    "tests:\n  - name: one\n    events:\n"
    "      - {event: {level: error, host: a}}\n      - {event: {level: error, host: a}}\n"
    "    expect_alerts:\n      - {event: 1, rules: [any-error]}\n"
    "      - {event: 2, rules: [burst, any-error]}\n"
)


def test_test_files_naming_the_same_rule_files_share_their_check_and_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test files of one run that name the same rule files, unchanged, share one check of them
    and one index (at 1,000 rules, three quarters of each file's time); a file naming them
    otherwise (its problems are located by the paths it wrote) is checked on its own."""
    checks, made = count_checks(monkeypatch)
    (tmp_path / "rules.yaml").write_text(RULES)
    paths = [tmp_path / f"t{i}.test.yaml" for i in range(4)]
    for i, path in enumerate(paths):
        path.write_text(f"rule_files: [{'./' if i == 2 else ''}rules.yaml]\n" + ONE_BURST)
    outcomes, problems = run_test_files([str(p) for p in paths])
    assert ([True] * 4, []) == ([o.passed for o in outcomes], problems)
    assert [["rules.yaml"], ["rules.yaml"], ["rules.yaml"]] == checks  # the first, ./rules.yaml, then rules.yaml again
    assert [2, 2, 2] == made


def test_a_rule_file_edited_between_two_test_files_is_checked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every byte of the rule files is compared: one edited between two test files (as
    `rulesd test` runs them, one call each) is checked anew, and the second file's tests run
    the rules as they are now, even when the edit kept the file's size."""
    from rulesd.ruletest import CheckedRules, WrittenRules

    checks, _ = count_checks(monkeypatch)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    first, second = tmp_path / "a.test.yaml", tmp_path / "b.test.yaml"
    first.write_text("rule_files: [rules.yaml]\n" + ONE_BURST)
    second.write_text("rule_files: [rules.yaml]\n" + ONE_BURST)
    written, checked = WrittenRules(), CheckedRules()
    outcomes, _ = run_test_files([str(first)], written, checked)
    assert [True] == [o.passed for o in outcomes]
    rules.write_text(RULES.replace("count: 2", "count: 3"))
    outcomes, _ = run_test_files([str(second)], written, checked)
    assert [False] == [o.passed for o in outcomes]  # (the burst needs a third error now)
    outcomes, _ = run_test_files([str(first)], written, checked)
    assert [False] == [o.passed for o in outcomes]
    assert 2 == len(checks)


def test_a_rule_file_that_is_not_a_regular_file_is_not_read_to_be_compared(tmp_path: Path) -> None:
    """A FIFO (or a shell's `<(...)`) can be read once, by the check: its text is not read to
    be compared, nor is it opened (which would wait for a writer), so its check is not shared."""
    import os
    import threading

    from rulesd.ruletest import _rule_files_seen

    fifo = tmp_path / "rules.yaml"
    os.mkfifo(fifo)
    (tmp_path / "other.yaml").write_text(RULES)  # (a FIFO found in a folder is an error of the check's)
    found: list[object] = []
    reader = threading.Thread(target=lambda: found.append(_rule_files_seen([str(fifo)])), daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # (let it go: it waits for a writer)
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert [None] == found
    assert _rule_files_seen([str(tmp_path / "other.yaml")]) is not None


def test_the_rule_sets_of_the_files_run_before_are_let_go(tmp_path: Path) -> None:
    """Test files naming other rule files than the file before load theirs anew; once a file's
    tests ran, the alert bodies' memos of the combinations that fired must not keep its rule
    set alive (predicates, Hyperscan databases) while the next files run: a CI run of hundreds
    of files, each naming one of two rule sets in turn, holds one set."""
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "other.yaml").write_text(RULES + "# the same rules, another file\n")
    paths = [tmp_path / f"t{i}.test.yaml" for i in range(12)]
    for i, path in enumerate(paths):
        path.write_text(
            f"rule_files: [{('rules.yaml', 'other.yaml')[i % 2]}]\ntests:\n  - name: one\n    events:\n"
            "      - {event: {level: error, host: a}}\n      - {event: {level: error, host: a}}\n"
            "    expect_alerts:\n      - {event: 1, rules: [any-error]}\n"
            "      - {event: 2, rules: [burst, any-error]}\n"
        )
    outcomes, problems = run_test_files([str(p) for p in paths])
    assert ([True] * 12, []) == ([o.passed for o in outcomes], problems)
    del outcomes
    gc.collect()
    alive = [o.name for o in gc.get_objects() if type(o) is Rule and o.name in ("burst", "any-error")]
    assert len(alive) <= 2, alive  # (one set at most, not one per file)


def invalid(paths: list[Path]) -> list[str]:
    """The problems of test files none of which runs."""
    outcomes, problems = run_test_files([str(p) for p in paths])
    assert [] == outcomes
    return [str(p) for p in problems]


TIMED_RULES = """
rules:
  - name: gone-quiet
    match: {kind: beat}
    absence: {window: 5m, group_by: [host], expect: [{host: b}]}
  - name: errors
    match: {level: error}
    threshold: {count: 1, window: 1m, group_by: [host]}
    resolve: {after: 10m}
"""


def run_timed(tmp_path: Path, tests_yaml: str) -> tuple[list[tuple[str, bool, str]], list[str]]:
    (tmp_path / "timed.yaml").write_text(TIMED_RULES)
    path = tmp_path / "timed.test.yaml"
    path.write_text("rule_files: [timed.yaml]\ntests:\n" + tests_yaml)
    outcomes, problems = run_test_files([str(path)])
    return [(o.name, o.passed, o.report) for o in outcomes], [str(p) for p in problems]


def test_advance_steps_let_timers_fire(tmp_path: Path) -> None:
    """`advance` moves the clock on without an event (steps are not numbered); a timer's alert
    names the event that armed it, 0 for an expected group never seen; closes are compared in
    order when `expect_closes` is given."""
    outcomes, problems = run_timed(
        tmp_path,
        """
  - name: silence, then recovery
    events:
      - {at: 0s, event: {kind: beat, host: a}}
      - {advance: 5m}
      - {at: 6m, event: {kind: beat, host: a}}
      - {at: 7m, event: {level: error, host: a}}
      - {advance: 10m}
    expect_alerts:
      - {event: 1, rules: [gone-quiet], alias: 'rulesd: gone-quiet: {"host":"a"}'}
      - {event: 0, rules: [gone-quiet], alias: 'rulesd: gone-quiet: {"host":"b"}'}
      - {event: 3, rules: [errors]}
      - {event: 2, rules: [gone-quiet]}  # silent again from 6m: due at 11m
    expect_closes:
      - {rules: [gone-quiet], alias: 'rulesd: gone-quiet: {"host":"a"}'}
      - {rules: [errors]}
""",
    )
    assert ([("silence, then recovery", True, "")], []) == (outcomes, problems)


def test_advance_moves_on_from_the_latest_time_after_a_late_event(tmp_path: Path) -> None:
    """`advance` counts from the latest time so far, not from a late event's older time: both
    silences are due by 10m + 6m."""
    outcomes, _ = run_timed(
        tmp_path,
        """
  - name: late beat, then advance
    events:
      - {at: 10m, event: {kind: beat, host: a}}
      - {at: 1m, event: {kind: beat, host: c}}
      - {advance: 6m}
    expect_alerts:
      - {event: 0, rules: [gone-quiet], alias: 'rulesd: gone-quiet: {"host":"b"}'}
      - {event: 1, rules: [gone-quiet], alias: 'rulesd: gone-quiet: {"host":"a"}'}
      - {event: 2, rules: [gone-quiet], alias: 'rulesd: gone-quiet: {"host":"c"}'}
""",
    )
    assert [("late beat, then advance", True, "")] == outcomes


def test_an_unexpected_close_fails_the_test(tmp_path: Path) -> None:
    """With `expect_closes: []`, a close that happens is reported as the difference."""
    outcomes, _ = run_timed(
        tmp_path,
        """
  - name: no close expected
    events:
      - {at: 0s, event: {level: error, host: a}}
      - {advance: 11m}
    expect_alerts:
      - {event: 1, rules: [errors]}
    expect_closes: []
""",
    )
    [(_, passed, report)] = outcomes
    assert not passed
    assert (
        "expected closes:\n  (none)\nactual closes:\n  - rules ['errors'], alias 'rulesd: errors: {\"host\":\"a\"}'"
        in report
    )


def test_a_step_is_an_event_or_an_advance(tmp_path: Path) -> None:
    """A step with both, or neither, is a problem of the test file at its line."""
    _, problems = run_timed(
        tmp_path,
        """
  - name: both
    events:
      - {advance: 1m, event: {kind: beat, host: a}}
    expect_alerts: []
""",
    )
    assert [
        f"{tmp_path}/timed.test.yaml:6:9: error: a step is an event (with an optional at) or an advance"
    ] == problems


def test_an_expectation_naming_no_rule_is_a_problem_at_its_name(tmp_path: Path) -> None:
    """A rule name no rule file defines (a typo, a renamed rule) is an error at the name, with
    the nearest name if one is close, not a test that fails for no visible reason."""
    outcomes, problems = run(
        tmp_path,
        """
  - name: typo
    events:
      - {event: {level: error, host: a}}
    expect_alerts:
      - event: 1
        rules: [any-eror]
    expect_closes:
      - {rules: [burst, nothing-like-it]}
""",
    )
    test = tmp_path / "t.test.yaml"
    assert [] == outcomes
    assert [
        f"{test}:9:17: error: tests[0].expect_alerts[0].rules[0]: no such rule 'any-eror'; did you mean 'any-error'?",
        f"{test}:11:18: error: tests[0].expect_closes[0].rules[0]: the rule 'burst' ({tmp_path}/rules.yaml:3:5) "
        "never closes an alert: only a rule with resolve, or an absence rule, does",
        f"{test}:11:25: error: tests[0].expect_closes[0].rules[1]: no such rule 'nothing-like-it' (2 rule(s) loaded)",
    ] == problems


def test_a_test_file_that_tests_nothing_is_a_problem(tmp_path: Path) -> None:
    """An empty file, one of comments, `tests: []` and a test without events would pass
    while testing nothing (a file whose tests were all commented out): each is an error."""
    (tmp_path / "rules.yaml").write_text(RULES)
    texts = {
        "empty": "",
        "comments": "# tests: to do\n",
        "no-tests": "rule_files: [rules.yaml]\ntests: []\n",
        "no-events": "rule_files: [rules.yaml]\ntests:\n  - {name: t, events: [], expect_alerts: []}\n",
    }
    for name, text in texts.items():
        (tmp_path / f"{name}.test.yaml").write_text(text)
    assert [
        f"{tmp_path}/empty.test.yaml:1:1: error: empty file: expected rule_files: and tests:",
        f"{tmp_path}/comments.test.yaml:1:1: error: empty file: expected rule_files: and tests:",
        f"{tmp_path}/no-tests.test.yaml:2:8: error: tests: must not be empty",
        f"{tmp_path}/no-events.test.yaml:3:23: error: tests[0].events: must not be empty",
    ] == invalid([tmp_path / f"{name}.test.yaml" for name in texts])


def test_an_expected_alert_at_an_event_the_test_lacks_is_a_problem(tmp_path: Path) -> None:
    """`event: 3` with two events (an advance step is not one) can never be met: an error at
    the number, not a failure that reads like the rule's."""
    outcomes, problems = run(
        tmp_path,
        """  - name: off by one
    events:
      - {event: {level: error, host: a}}
      - {advance: 1m}
      - {event: {level: error, host: a}}
    expect_alerts:
      - {event: 2, rules: [any-error]}
      - {event: 3, rules: [any-error]}
""",
    )
    assert [] == outcomes
    assert [
        f"{tmp_path}/t.test.yaml:10:17: error: tests[0].expect_alerts[1].event: no event 3: the test has 2 event(s) "
        "(numbered from 1; advance steps are not events)"
    ] == problems


def test_rule_files_that_give_no_rules_are_a_problem(tmp_path: Path) -> None:
    """A directory without rule files, or a test file named as a rule file: the tests would run
    against no rules (or fail on the test file read as rules), and those expecting no alert
    would pass."""
    (tmp_path / "empty").mkdir()
    one_test = "tests: [{name: t, events: [{event: {level: error}}], expect_alerts: []}]\n"
    (tmp_path / "a.test.yaml").write_text("rule_files: [empty]\n" + one_test)
    (tmp_path / "b.test.yaml").write_text("rule_files: [a.test.yaml]\n" + one_test)
    assert [
        f"{tmp_path}/a.test.yaml:1:14: error: rule_files[0]: no rule files (*.yaml, *.yml) found in this directory",
        f"{tmp_path}/b.test.yaml:1:14: error: rule_files[0]: a rule test file, not a rule file: name the rule files "
        "it tests",
    ] == invalid([tmp_path / "a.test.yaml", tmp_path / "b.test.yaml"])


def test_an_expectation_naming_a_disabled_rule_is_a_problem(tmp_path: Path) -> None:
    """A disabled rule never fires: expecting its alert is a mistake in the test or the rule."""
    (tmp_path / "rules.yaml").write_text("rules:\n  - {name: quiet, enabled: false, match: {level: error}}\n")
    test = tmp_path / "t.test.yaml"
    test.write_text(
        "rule_files: [rules.yaml]\ntests:\n  - name: t\n    events: [{event: {level: error}}]\n"
        "    expect_alerts: [{event: 1, rules: [quiet]}]\n"
    )
    assert [
        f"{test}:5:40: error: tests[0].expect_alerts[0].rules[0]: the rule 'quiet' ({tmp_path}/rules.yaml:2:5) is "
        "disabled (enabled: false): it never fires"
    ] == invalid([test])


def test_checking_a_test_file_finds_expectations_of_unknown_rules(tmp_path: Path) -> None:
    """`rulesd check` (check_test_file) says so too, without running the tests; problems of the
    rule files themselves are left to the check of those files."""
    (tmp_path / "rules.yaml").write_text(RULES)
    test = tmp_path / "t.test.yaml"
    test.write_text(
        "rule_files: [rules.yaml]\ntests:\n  - name: t\n    events: [{event: {level: error}}]\n"
        "    expect_alerts: [{event: 1, rules: [brst]}]\n"
    )
    assert [f"{test}:5:40: error: tests[0].expect_alerts[0].rules[0]: no such rule 'brst'; did you mean 'burst'?"] == [
        str(p) for p in check_test_file(str(test))
    ]
    (tmp_path / "rules.yaml").write_text("name: r\nmatch: {level: error}\nthrotle: 1m\n")
    assert [] == check_test_file(str(test))


def test_rulesd_check_of_test_files_naming_the_same_rule_files_checks_those_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rulesd check` of many test files (a pre-commit hook given every changed one) checks the
    rule files they share once, through the rule cache, and still says each file's problems."""
    from rulesd import cli

    monkeypatch.setenv("RULESD_CACHE_DIR", str(tmp_path / "cache"))
    checks, _ = count_checks(monkeypatch)
    (tmp_path / "rules.yaml").write_text(RULES)
    tests = [tmp_path / f"t{i}.test.yaml" for i in range(3)]
    for i, test in enumerate(tests):
        test.write_text(
            "rule_files: [rules.yaml]\ntests:\n  - name: t\n    events: [{event: {level: error}}]\n"
            f"    expect_alerts: [{{event: 1, rules: [{('any-error', 'brst')[i == 1]}]}}]\n"
        )
    assert 1 == cli.main(["check", *map(str, tests)])
    out = capsys.readouterr().out
    assert f"{tests[1]}:5:40: error: tests[0].expect_alerts[0].rules[0]: no such rule 'brst'" in out
    assert 1 == out.count("no such rule")
    assert [["rules.yaml"]] == checks


def test_an_expected_responder_is_checked_as_a_rules_responder_is(tmp_path: Path) -> None:
    """A misspelled key of an expected responder, or a pairing OpsGenie cannot resolve, is an
    error at its line (as in a rule's alert.responders), not a test failing at run time over
    a responder no alert could have; `rulesd check` of the test file says the same."""
    tests = """
  - name: responders
    events:
      - {event: {level: error, host: a}}
    expect_alerts:
      - event: 1
        rules: [any-error]
        responders:
          - {nmae: ops, type: team}
          - {type: user, name: bob}
"""
    outcomes, problems = run(tmp_path, tests)
    test = tmp_path / "t.test.yaml"
    expected = [
        f"{test}:11:14: error: tests[0].expect_alerts[0].responders[0].nmae: unknown key 'nmae'; did you mean 'name'?",
        f"{test}:12:13: error: tests[0].expect_alerts[0].responders[1]: a user responder is named by username or "
        "id, not name: OpsGenie cannot resolve it",
    ]
    assert [] == outcomes
    assert expected == problems
    assert expected == [str(p) for p in check_test_file(str(test))]


def test_the_test_schema_takes_responders_as_the_rule_schema_does() -> None:
    """One responder schema: a pairing the rule schema refuses is refused in a rule test too."""
    from rulesd.validation import load_schema

    assert load_schema("rule")["$defs"]["responder"] == load_schema("test")["$defs"]["responder"]


def test_an_unknown_key_of_a_test_is_not_sent_into_list_items_it_has_not_written(tmp_path: Path) -> None:
    """`type:` and `id:` at a test's own level were said to belong under
    `tests[].expect_alerts[].responders[]`, a place two lists down that the test does not have:
    they are unknown keys there, with the keys a test takes."""
    _, problems = run(
        tmp_path,
        """
  - name: typed
    type: team
    id: abc
    events:
      - {event: {a: 1}}
    expect_alerts: []
""",
    )
    taken = "expected one of: events, expect_alerts, expect_closes, name"
    assert [
        f"{tmp_path}/t.test.yaml:5:5: error: tests[0].type: unknown key 'type'; {taken}",
        f"{tmp_path}/t.test.yaml:6:5: error: tests[0].id: unknown key 'id'; {taken}",
    ] == problems


def test_event_fields_written_beside_at_say_they_go_under_event(tmp_path: Path) -> None:
    """`{at: 0s, message: x}` (the fields without `event:`) says where they go, not that
    `message` belongs in an expected alert."""
    _, problems = run(
        tmp_path,
        """
  - name: flat
    events:
      - {at: 0s, host: a}
    expect_alerts: []
""",
    )
    assert [
        f"{tmp_path}/t.test.yaml:6:18: error: tests[0].events[0].host: unknown key 'host'; a step is "
        "{at: …, event: {…}} or {advance: …}: an event's fields go under event"
    ] == problems


def test_rulesd_test_loads_a_rule_set_its_test_files_share_through_the_rule_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two test files over one rule file: the rule file's YAML is parsed for the first and read
    back from the rule cache for the second (each test file loaded its rules cold: at 1,000
    rules ~0.45 s a file), and a run on a warm cache says exactly what the cold one said,
    its warning included."""
    from rulesd.cli import main
    from rulesd.rules import loader

    (tmp_path / "rules.yaml").write_text(RULES + "  - name: shouting\n    match: {country: NO}\n")
    tests = []
    for name in ("a", "b"):
        tests.append(str(tmp_path / f"{name}.test.yaml"))
        Path(tests[-1]).write_text(
            f"rule_files: [rules.yaml]\ntests:\n  - name: {name}\n    events:\n"
            "      - {event: {level: error, host: h}}\n    expect_alerts: [{event: 1, rules: [any-error]}]\n"
        )
    parsed: list[str] = []
    read_yaml = loader._read_yaml

    def counted(path: str, data: bytes) -> Any:
        parsed.append(path)
        return read_yaml(path, data)

    monkeypatch.setattr(loader, "_read_yaml", counted)
    monkeypatch.setenv("RULESD_CACHE_DIR", str(tmp_path / "cache"))
    said = []
    for _ in range(2):
        assert 0 == main(["test", *tests])
        said.append(capsys.readouterr().out)
    assert [str(tmp_path / "rules.yaml")] == parsed
    assert said[0] == said[1]
    assert "rule tests: 2 passed, 0 failed, 0 invalid, 1 warning(s)" in said[0]


def test_an_event_holding_an_integer_beyond_64_bits_is_a_problem_at_the_value(tmp_path: Path) -> None:
    """No event holds an integer beyond 64 bits (a JSON line's is read as the nearest float):
    a test passing on one passed where the daemon compares a float. Each is an error at its
    value, nested ones too, also one a double holds exactly (a template writes it otherwise)."""
    _, problems = run(
        tmp_path,
        """
  - name: huge ids
    events:
      - {event: {level: error, host: a, id: 99999999999999999999}}
      - {event: {level: error, host: a, ids: [1, 1180591620717411303424], n: 18446744073709551615}}
    expect_alerts: []
""",
    )
    said = "a JSON line's integer beyond 64 bits is read as the nearest float"
    assert [
        f"{tmp_path}/t.test.yaml:6:45: error: tests[0].events[0].event.id: no event holds 99999999999999999999: "
        f"{said}, 1e+20; quote it to compare it as text, as the events must quote it to keep it exact",
        f"{tmp_path}/t.test.yaml:7:50: error: tests[0].events[1].event.ids[1]: no event holds 1180591620717411303424: "
        f"{said}, 1.1805916207174113e+21; quote it to compare it as text, as the events must quote it to keep it exact",
    ] == problems


def test_an_event_holding_nan_or_inf_is_a_problem_at_the_value(tmp_path: Path) -> None:
    """No event holds .nan or .inf (a JSON line with NaN or Infinity is invalid and skipped; a
    typed field never converts to one): a test passing on one (a rule's `gt` holds for .inf)
    passed where the daemon pages nothing. Each is an error at its value, nested ones too."""
    _, problems = run(
        tmp_path,
        """
  - name: infinite
    events:
      - {event: {level: error, host: .nan}}
      - {event: {level: error, host: a, took: {ms: [1, -.inf]}}}
    expect_alerts: []
""",
    )
    said = (
        "is no value an event can hold: JSON has no such number (a line with one is invalid, skipped before any "
        "rule sees it) and no typed field converts to one"
    )
    assert [
        f"{tmp_path}/t.test.yaml:6:38: error: tests[0].events[0].event.host: .nan {said}",
        f"{tmp_path}/t.test.yaml:7:56: error: tests[0].events[1].event.took.ms[1]: -.inf {said}",
    ] == problems
