"""GitHub Actions annotations (`rulesd.annotations`), and `rulesd check --format github`."""

from __future__ import annotations

from pathlib import Path

import pytest

from rulesd.annotations import escape_data, escape_property, github_annotation
from rulesd.errors import Problem, SourceLocation
from tests.run_cli import rulesd_cli


@pytest.mark.parametrize(
    ("raw", "data", "prop"),
    [
        ("plain", "plain", "plain"),
        ("100%", "100%25", "100%25"),
        ("%0A is not a newline", "%250A is not a newline", "%250A is not a newline"),
        ("two\nlines\r\n", "two%0Alines%0D%0A", "two%0Alines%0D%0A"),
        ("a:b,c", "a:b,c", "a%3Ab%2Cc"),
        ("::error::", "::error::", "%3A%3Aerror%3A%3A"),
    ],
)
def test_escaping_follows_github_s_rules(raw: str, data: str, prop: str) -> None:
    """`%`, CR and LF are escaped everywhere; `:` and `,` only in property values."""
    assert (data, prop) == (escape_data(raw), escape_property(raw))


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        (
            Problem(SourceLocation("rules/a.yaml", 3, 7), "bad: 100%\nsecond line"),
            "::error file=rules/a.yaml,line=3,col=7::bad: 100%25%0Asecond line",
        ),
        (
            Problem(SourceLocation("rules/empty", 0, 0), "no rule files found", "warning"),
            "::warning file=rules/empty::no rule files found",
        ),
        (
            Problem(SourceLocation("odd,name:1.yaml", 2, 0), "m"),
            "::error file=odd%2Cname%3A1.yaml,line=2::m",
        ),
        (
            Problem(SourceLocation("/repo/rules/a.yaml", 1, 1), "under the working directory"),
            "::error file=rules/a.yaml,line=1,col=1::under the working directory",
        ),
        (
            Problem(SourceLocation("/elsewhere/a.yaml", 1, 1), "outside it"),
            "::error file=/elsewhere/a.yaml,line=1,col=1::outside it",
        ),
        (
            Problem(SourceLocation("/repository/a.yaml", 1, 1), "a sibling sharing a prefix is outside"),
            "::error file=/repository/a.yaml,line=1,col=1::a sibling sharing a prefix is outside",
        ),
    ],
)
def test_annotation_for_a_problem(problem: Problem, expected: str) -> None:
    """Errors and warnings, with and without line and column, relative and absolute paths."""
    assert expected == github_annotation(problem, "/repo")


def test_check_format_github_prints_annotations_then_the_summary(tmp_path: Path) -> None:
    """`rulesd check --format github`: one annotation per problem (warnings as ::warning), the
    summary line, and the exit status of the text format."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yaml").write_text("name: r\nmatch: {level: error}\nthrotle: 5m\n")
    (tmp_path / "empty").mkdir()
    result = rulesd_cli("check", "--format", "github", str(rules / "bad.yaml"), "empty", cwd=tmp_path)
    assert (1, "") == (result.returncode, result.stderr)
    assert [
        "::error file=rules/bad.yaml,line=3,col=1::throtle: unknown key 'throtle'; did you mean 'throttle'?",
        "::warning file=empty::no rule files (*.yaml, *.yml) found",
        "FAILED: 1 file(s), 0 rule(s), 1 error(s), 1 warning(s)",
    ] == result.stdout.splitlines()
