"""Mistakes in rule files and rule tests, as the real `rulesd check` and `rulesd test` report
them: an error at the file, line and column, and exit status 1."""

from __future__ import annotations

from pathlib import Path

from tests.run_cli import rulesd_cli

RULES = "rules:\n  - name: disk-full\n    match: {kind: disk}\n"


def test_rulesd_test_names_an_unknown_rule_in_an_expectation(tmp_path: Path) -> None:
    (tmp_path / "disk.yaml").write_text(RULES)
    test = tmp_path / "disk.test.yaml"
    test.write_text(
        "rule_files: [disk.yaml]\ntests:\n  - name: full\n    events: [{event: {kind: disk}}]\n"
        "    expect_alerts:\n      - {event: 1, rules: [disk-ful]}\n"
    )
    result = rulesd_cli("test", str(test))
    assert (1, "") == (result.returncode, result.stderr)
    assert (
        f"{test}:6:28: error: tests[0].expect_alerts[0].rules[0]: no such rule 'disk-ful'; did you mean 'disk-full'?\n"
        "rule tests: 0 passed, 0 failed, 1 invalid\n"
    ) == result.stdout
