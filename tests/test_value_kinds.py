"""A value compared with a field that its events carry as another kind of value (`"500"` for
the number 500), which never matches: warnings of the real `rulesd check` and `rulesd test`
at the value's line."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from rulesd.rules import loader
from rulesd.rules.cache import RuleCache
from rulesd.rules.loader import RuleSource
from rulesd.rules.model import Rule
from tests.run_cli import rulesd_cli
from tests.test_rule_mistakes import check, warnings_of_test

HTTP = """rules:
  - name: server-errors
    match:
      http.status: "500"
      level: [5, error]
      region: {in: ["true", eu]}
    alert: {message: "{http.status}"}
"""


def test_rulesd_test_warns_at_a_value_its_events_carry_as_another_kind(tmp_path: Path) -> None:
    """The rule compares `http.status` with the text "500" and the events carry the number 500:
    the test (expecting silence) passes, and the warning says to write 500 unquoted, at the
    text's line; likewise the number 5 against the text "5" and the text "true" against a
    boolean. A field whose events carry both kinds, or none, draws nothing."""
    (tmp_path / "http.yaml").write_text(HTTP + "  - name: quiet\n    match: {code: '7', kind: [1, x]}\n")
    test = tmp_path / "http.test.yaml"
    test.write_text(
        "rule_files: [http.yaml]\ntests:\n  - name: five hundred\n    events:\n"
        "      - {at: 0s, event: {http: {status: 500}, level: '5', region: true, kind: 1}}\n"
        "      - {at: 1s, event: {http: {status: 502}, level: error, region: false, kind: '1'}}\n"
        "    expect_alerts: []\n"
    )
    rule = f"{tmp_path}/http.yaml"
    events = f"but the events of {test} carry it as a"
    assert [
        f"{rule}:4:20: warning: rules[0].match[\"http.status\"]: 'server-errors' compares http.status with the "
        f'text "500", {events} number (500), which is never equal to it: write 500 unquoted',
        f"{rule}:5:15: warning: rules[0].match.level[0]: 'server-errors' compares level with the number 5, "
        f'{events} text ("5"), which is never equal to it: write "5" in quotes',
        f"{rule}:6:21: warning: rules[0].match.region.in[0]: 'server-errors' compares region with the text "
        f'"true", {events} boolean (true), which is never equal to it: write true unquoted',
    ] == warnings_of_test(test)


def test_rulesd_test_reads_the_written_rules_once_for_all_its_test_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three test files over one rule file, their events carrying http.status as a number, a
    text and a number: each file's warnings are said, naming its events, while the rules as
    written (for the value-kind check) are read once in the run, not once per test file (1,000
    rules and 50 test files read the rule files 50 times over)."""
    from rulesd import ruletest
    from rulesd.cli import main

    (tmp_path / "http.yaml").write_text(HTTP)
    asked: list[str] = []

    def rule_sources(rules: Iterable[Rule], cache: RuleCache | None = None) -> dict[str, RuleSource]:
        wanted = list(rules)
        asked.extend(rule.name for rule in wanted)
        return loader.rule_sources(wanted, cache)

    monkeypatch.setattr(ruletest, "rule_sources", rule_sources)
    tests = []
    for name, status in (("a", "500"), ("b", "'500'"), ("c", "502")):
        tests.append(tmp_path / f"{name}.test.yaml")
        tests[-1].write_text(
            f"rule_files: [http.yaml]\ntests:\n  - name: {name}\n    events:\n"
            f"      - {{event: {{http: {{status: {status}}}}}}}\n    expect_alerts: []\n"
        )
    assert 0 == main(["test", *map(str, tests)])
    said = [line for line in capsys.readouterr().out.splitlines() if "compares http.status" in line]
    assert [tests[0], tests[2]] == [t for line in said for t in tests if f"events of {t} carry it as a number" in line]
    assert ["server-errors"] == asked


def test_the_events_are_looked_at_once_per_field_however_many_rules_compare_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three rules compare http.status with a text, the events carry a number: three warnings,
    while the events' http.status is read by one getter (once per compared value, a test file's
    events were read over again for each of a large rule set's thousands of values)."""
    from rulesd.rules import fields
    from rulesd.ruletest import run_test_files

    made: list[str] = []
    real = fields.make_getter

    def make_getter(path: str) -> Any:
        made.append(path)
        return real(path)

    monkeypatch.setattr(fields, "make_getter", make_getter)
    (tmp_path / "r.yaml").write_text(
        "rules:\n" + "".join(f"  - name: r{i}\n    match: {{http.status: '50{i}'}}\n" for i in range(3))
    )
    test = tmp_path / "r.test.yaml"
    test.write_text(
        "rule_files: [r.yaml]\ntests:\n  - name: t\n    events:\n      - {event: {http: {status: 404}}}\n"
        "    expect_alerts: []\n"
    )
    outcomes, warnings = run_test_files([str(test)])
    assert [True] == [o.passed for o in outcomes]
    assert [3, 5, 7] == [w.location.line for w in warnings if "carry it as a number (404)" in w.message]
    assert 1 == made.count("http.status")


def test_rulesd_check_warns_where_another_test_of_the_field_takes_another_kind(tmp_path: Path) -> None:
    """`http.status: {gte: 500}` in one rule file holds only for numbers, so `http.status:
    "500"` in another file of the rule set is warned about, naming the bound; a text that
    reads as no number (`"5xx"`), a number where `startswith` is used, a named list and the
    two tests beside each other (a contradiction, an error of its own) are not."""
    (tmp_path / "bounds.yaml").write_text(
        "rules:\n  - name: bound\n    match: {http.status: {gte: 500}, host: {startswith: web}}\n"
    )
    (tmp_path / "r.yaml").write_text(
        "lists:\n  codes: ['500']\nrules:\n  - name: exact\n    match:\n"
        "      http.status: {in: ['500', 5xx]}\n      host: [web1, 7]\n  - name: listed\n"
        "    match: {http.status: $codes, host: {equals: '8', startswith: '8'}}\n"
    )
    result = rulesd_cli("check", str(tmp_path))
    out = result.stdout.replace(str(tmp_path), "DIR")
    assert (0, "") == (result.returncode, result.stderr)
    assert (
        'DIR/r.yaml:6:26: warning: rules[0].match["http.status"].in[0]: http.status is compared with the text '
        '"500", but rules[0].match["http.status"].gte (DIR/bounds.yaml:3:32: gte: 500) holds only for a number: '
        "if http.status is a number, write 500 unquoted\n"
        "DIR/r.yaml:7:20: warning: rules[0].match.host[1]: host is compared with the number 7, but "
        'rules[0].match.host.startswith (DIR/bounds.yaml:3:57: startswith: "web") holds only for a text: '
        'if host is a text, write "7" in quotes\n'
        "OK: 2 file(s), 3 rule(s), 0 error(s), 2 warning(s)\n"
    ) == out


def test_an_absence_expecting_a_text_where_the_field_is_a_number_is_warned_about(tmp_path: Path) -> None:
    """An expected group's value is compared with events' values too."""
    code, out = check(
        tmp_path,
        "rules:\n  - name: beats\n    match: {service: tls}\n"
        "    absence: {window: 5m, group_by: [port], expect: [{port: '443'}]}\n"
        "  - name: ports\n    match: {port: {gt: 0}}\n",
    )
    assert (0, "DIR/r.yaml:4:61: warning: rules[0].absence.expect[0].port: port is compared with the text") == (
        code,
        out[: len("DIR/r.yaml:4:61: warning: rules[0].absence.expect[0].port: port is compared with the text")],
    )


def test_a_value_written_as_both_kinds_is_not_warned_about(tmp_path: Path) -> None:
    """A rule that writes a value as both kinds (`[500, "500"]`, in `in`, or in two branches of
    `any`) is meant for events of either kind: neither `rulesd check` (another rule testing the
    field with gte) nor `rulesd test` (events carrying numbers) warns that the text should be the
    number it already lists; the text alone still draws the warning."""
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - name: bound\n    match: {status: {gte: 500}}\n"
        "  - name: listed\n    match: {status: [500, '500']}\n"
        "  - name: among\n    match: {status: {in: ['502', 502]}}\n"
        "  - name: branches\n    match: {any: [{status: 503}, {status: '503'}]}\n"
        "  - name: text\n    match: {status: '504'}\n"
    )
    result = rulesd_cli("check", str(tmp_path / "r.yaml"))
    code, out = result.returncode, result.stdout.replace(str(tmp_path), "DIR")
    assert (
        0,
        'DIR/r.yaml:11:21: warning: rules[4].match.status: status is compared with the text "504", but '
        "rules[0].match.status.gte (DIR/r.yaml:3:27: gte: 500) holds only for a number: if status is a number, "
        "write 504 unquoted\nOK: 1 file(s), 5 rule(s), 0 error(s), 1 warning(s)\n",
    ) == (code, out)
    test = tmp_path / "r.test.yaml"
    test.write_text(
        "rule_files: [r.yaml]\ntests:\n  - name: numbers\n    events:\n"
        "      - {at: 0s, event: {status: 200}}\n    expect_alerts: []\n"
    )
    where = f"{tmp_path}/r.yaml:11:21: warning: rules[4].match.status: "
    assert [where] == [w[: len(where)] for w in warnings_of_test(test)]
