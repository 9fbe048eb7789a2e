"""Mistakes in rule files and rule tests, as the real `rulesd check` and `rulesd test` report
them: an error at the file, line and column, and exit status 1."""

from __future__ import annotations

import json
import resource
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
    problem = (
        f"{test}:6:28: error: tests[0].expect_alerts[0].rules[0]: no such rule 'disk-ful'; did you mean 'disk-full'?\n"
    )
    result = rulesd_cli("test", str(test))
    assert (1, "") == (result.returncode, result.stderr)
    assert problem + "rule tests: 0 passed, 0 failed, 1 invalid\n" == result.stdout
    checked = rulesd_cli("check", str(test))
    assert (1, problem) == (checked.returncode, checked.stdout[: checked.stdout.index("FAILED")])


def check(tmp_path: Path, text: str) -> tuple[int, str]:
    """`rulesd check` of one rule file holding `text`: its exit status and its output, with the
    file's directory written as `DIR`."""
    (tmp_path / "r.yaml").write_text(text)
    result = rulesd_cli("check", str(tmp_path / "r.yaml"))
    assert "" == result.stderr
    return result.returncode, result.stdout.replace(str(tmp_path), "DIR")


def assert_one_error_each(tmp_path: Path, cases: list[tuple[str, str]]) -> None:
    """Each (rule file text, start of the error `line:col: error: ...`): `rulesd check` fails
    with that one error."""
    for text, problem in cases:
        code, out = check(tmp_path, text)
        assert (1, f"DIR/r.yaml:{problem}") == (code, out[: len("DIR/r.yaml:") + len(problem)])
        assert out.endswith("FAILED: 1 file(s), 0 rule(s), 1 error(s), 0 warning(s)\n")


def warnings_of_test(test: Path) -> list[str]:
    """The warnings `rulesd test` of the rule test file `test` prints; its tests all pass."""
    result = rulesd_cli("test", str(test))
    assert 0 == result.returncode, result.stdout
    return [line for line in result.stdout.splitlines() if ": warning: " in line]


def test_rulesd_check_refuses_equality_with_nan(tmp_path: Path) -> None:
    nan = "cannot compare with .nan: NaN is equal to nothing, not even itself"
    assert (
        1,
        f"DIR/r.yaml:2:11: error: lists.codes[0]: {nan}\n"
        f"DIR/r.yaml:4:31: error: rules[0].match.status: {nan}\n"
        f"DIR/r.yaml:5:46: error: rules[1].match.status.not_in[1]: {nan}\n"
        f"DIR/r.yaml:6:31: error: rules[2].match.status: the list $codes defined at DIR/r.yaml:2:3 has errors\n"
        "FAILED: 1 file(s), 0 rule(s), 4 error(s), 0 warning(s)\n",
    ) == check(
        tmp_path,
        "lists:\n  codes: [.nan]\nrules:\n"
        "  - {name: a, match: {status: .nan}}\n"
        "  - {name: b, match: {status: {not_in: [500, .NaN]}}}\n"
        "  - {name: c, match: {status: $codes}}\n",
    )


def test_rulesd_check_says_what_is_wrong_with_a_regex_and_where(tmp_path: Path) -> None:
    """A plain syntax error says what and where, without "linear in the text", which is the
    reason given only for constructs refused as needing backtracking."""
    linear = "regexes must run in time linear in the text (the syntax RE2 and Hyperscan share)"
    assert (
        1,
        "DIR/r.yaml:3:30: error: rules[0].match.message.regex: invalid regex '(?P<1a>x)': group name cannot "
        "begin with a digit at position 1\n"
        "DIR/r.yaml:5:30: error: rules[1].match.message.regex: invalid regex 'timeout|(refused': missing ) "
        "at position 9\n"
        "DIR/r.yaml:7:30: error: rules[2].match.message.regex: regex '(a)\\\\1' is refused: backreferences are "
        f"not supported at position 4; {linear}\n"
        "FAILED: 1 file(s), 0 rule(s), 3 error(s), 0 warning(s)\n",
    ) == check(
        tmp_path,
        "rules:\n"
        "  - name: a\n    match: {message: {regex: '(?P<1a>x)'}}\n"
        "  - name: b\n    match: {message: {regex: 'timeout|(refused'}}\n"
        "  - name: c\n    match: {message: {regex: '(a)\\1'}}\n",
    )


def test_rulesd_test_and_check_refuse_a_test_file_that_tests_nothing(tmp_path: Path) -> None:
    """A test file of comments, `tests: []` and an expected alert at an event the test does not
    have: errors at their place for both commands, not a silent pass or a puzzling failure."""
    (tmp_path / "disk.yaml").write_text(RULES)
    comments = tmp_path / "a.test.yaml"
    comments.write_text("# rule_files: [disk.yaml]\n")
    no_tests = tmp_path / "b.test.yaml"
    no_tests.write_text("rule_files: [disk.yaml]\ntests: []\n")
    past_the_end = tmp_path / "c.test.yaml"
    past_the_end.write_text(
        "rule_files: [disk.yaml]\ntests:\n  - name: t\n    events: [{event: {kind: disk}}]\n"
        "    expect_alerts: [{event: 2, rules: [disk-full]}]\n"
    )
    problems = (
        f"{comments}:1:1: error: empty file: expected rule_files: and tests:\n"
        f"{no_tests}:2:8: error: tests: must not be empty\n"
        f"{past_the_end}:5:29: error: tests[0].expect_alerts[0].event: no event 2: the test has 1 event(s) "
        "(numbered from 1; advance steps are not events)\n"
    )
    tested = rulesd_cli("test", str(comments), str(no_tests), str(past_the_end))
    assert (1, problems + "rule tests: 0 passed, 0 failed, 3 invalid\n") == (tested.returncode, tested.stdout)
    checked = rulesd_cli("check", str(comments), str(no_tests), str(past_the_end))
    assert (1, problems) == (checked.returncode, checked.stdout[: checked.stdout.index("FAILED")])


def test_rulesd_test_refuses_rule_files_without_rules_and_a_disabled_rule(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()  # the rules are elsewhere: a typo in rule_files
    (tmp_path / "disk.yaml").write_text(RULES + "    enabled: false\n")
    steps = "    events: [{event: {kind: disk}}]\n"
    nowhere = tmp_path / "a.test.yaml"
    nowhere.write_text(f"rule_files: [rules]\ntests:\n  - name: quiet\n{steps}    expect_alerts: []\n")
    disabled = tmp_path / "b.test.yaml"
    disabled.write_text(
        f"rule_files: [disk.yaml]\ntests:\n  - name: pages\n{steps}"
        "    expect_alerts: [{event: 1, rules: [disk-full]}]\n"
    )
    result = rulesd_cli("test", str(nowhere), str(disabled))
    assert (
        1,
        f"{nowhere}:1:14: error: rule_files[0]: no rule files (*.yaml, *.yml) found in this directory\n"
        f"{disabled}:5:40: error: tests[0].expect_alerts[0].rules[0]: the rule 'disk-full' ({tmp_path}/disk.yaml:2:5) "
        "is disabled (enabled: false): it never fires\n"
        "rule tests: 0 passed, 0 failed, 2 invalid\n",
    ) == (result.returncode, result.stdout)


def test_rulesd_check_says_why_an_unquoted_word_is_a_boolean(tmp_path: Path) -> None:
    assert (
        1,
        "DIR/r.yaml:2:11: error: rules[0].name: expected a string, got false (YAML reads an unquoted yes, no, on "
        "or off as true or false: quote it for the text)\n"
        "FAILED: 1 file(s), 0 rule(s), 1 error(s), 0 warning(s)\n",
    ) == check(tmp_path, "rules:\n  - name: off\n    match: {switch: power}\n")


def test_rulesd_test_runs_the_test_files_a_directory_holds(tmp_path: Path) -> None:
    """`rulesd test rules/` runs every `*.test.yaml` and `*.test.yml` found in it, its
    subdirectories too, as `rulesd check rules/` finds rule files (it said "cannot read: Is a
    directory"); a directory holding none is an error, as tests that do not run must not pass."""
    rules = tmp_path / "rules"
    (rules / "team").mkdir(parents=True)
    (rules / "r.yaml").write_text("name: page\nmatch: {kind: page}\n")
    test = (
        "rule_files: [{}]\ntests:\n  - name: {}\n"
        "    events: [{{event: {{kind: page}}}}]\n    expect_alerts: [{{event: 1, rules: [page]}}]\n"
    )
    (rules / "a.test.yaml").write_text(test.format(".", "pages"))
    (rules / "team" / "b.test.yml").write_text(test.format("..", "pages too"))
    (rules / ".hidden.test.yaml").write_text("not: [a test")
    result = rulesd_cli("test", str(rules))
    assert 0 == result.returncode, result.stdout
    assert ["rules/a.test.yaml:3:5: pages", "rules/team/b.test.yml:3:5: pages too"] == [
        line.removeprefix(f"PASS {tmp_path}/") for line in result.stdout.splitlines() if line.startswith("PASS")
    ]
    (tmp_path / "none").mkdir()
    result = rulesd_cli("test", str(tmp_path / "none"), str(rules / "a.test.yaml"))
    assert 1 == result.returncode
    assert f"{tmp_path}/none: error: no rule test files (*.test.yaml, *.test.yml) found" in result.stdout.splitlines()
    assert "rule tests: 1 passed, 0 failed, 1 invalid" in result.stdout


def test_rulesd_check_warns_where_an_unquoted_word_is_compared_as_a_boolean(tmp_path: Path) -> None:
    """`country: NO` (Norway) is false to YAML 1.1 and never matches the text: `rulesd check`
    warns at the word, exit 0 (an event may hold a boolean), and says it again when the file
    comes from its cache; a rule test's events are warned about alike."""
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - name: norway\n    match:\n      country: NO\n      region: [US, 'NO', SE, on]\n"
    )
    (tmp_path / "r.test.yaml").write_text(
        "rule_files: [r.yaml]\ntests:\n  - name: t\n    events: [{event: {country: NO}}]\n    expect_alerts: []\n"
    )
    hint = "if the text is meant, or write {} if the boolean is"
    expected = (
        f"DIR/r.test.yaml:4:32: warning: tests[0].events[0].event.country: YAML reads the unquoted NO as false, "
        f'not as text: quote it ("NO") {hint.format("false")}\n'
        f"DIR/r.yaml:4:16: warning: rules[0].match.country: YAML reads the unquoted NO as false, not as text: "
        f'quote it ("NO") {hint.format("false")}\n'
        f"DIR/r.yaml:5:30: warning: rules[0].match.region[3]: YAML reads the unquoted on as true, not as text: "
        f'quote it ("on") {hint.format("true")}\n'
        "OK: 1 file(s), 1 rule(s), 1 rule test file(s) (run them with rulesd test), 0 error(s), 3 warning(s)\n"
    )
    cache = {"RULESD_CACHE_DIR": str(tmp_path / "cache")}
    for _ in ("cold", "warm"):
        result = rulesd_cli("check", str(tmp_path / "r.yaml"), str(tmp_path / "r.test.yaml"), env=cache)
        assert (0, "", expected) == (result.returncode, result.stderr, result.stdout.replace(str(tmp_path), "DIR"))
    assert [] != list((tmp_path / "cache").glob("document-*.bin"))


def test_rulesd_check_warns_where_a_number_with_an_exponent_is_read_as_text(tmp_path: Path) -> None:
    """`code: 1e3` is the text "1e3" to YAML 1.1 (a float needs a point and a signed exponent), so
    the rule never matched an event's 1000 (a JSON line's `1e3`), and `rulesd check` said OK: it
    warns at each such operand (a matcher, `equals`, a list's item, a named list's), and at a rule
    test's event value, saying what to write for the number and for the text. A quoted one (the
    text meant), an alert's text and YAML's own float form (1.0e+3, 2.5E-3: numbers) are left alone;
    in an ordering (`gte: 1e3`) it is the schema's error, as before; the cache says it again."""
    (tmp_path / "r.yaml").write_text(
        "lists:\n  codes: [5E-3, '7e1', 2.5E-3]\nrules:\n  - name: codes\n    match:\n      code: 1e3\n"
        "      other: {equals: 1.5e3, not_in: $codes}\n      third: [1, 2e+2, '1e3', 1.0e+3]\n"
        "    alert: {message: 1e3}\n"
    )
    (tmp_path / "r.test.yaml").write_text(
        "rule_files: [r.yaml]\ntests:\n  - name: t\n    events: [{event: {other: 1e3}}]\n    expect_alerts: []\n"
    )

    def said(place: str, word: str, number: str) -> str:
        return (
            f"{place}: YAML reads {word} as text (a number with an exponent needs a point and a signed exponent, "
            f'1.0e+3): write {number} if the number is meant, or quote it ("{word}") if the text is\n'
        )

    expected = (
        "DIR/r.test.yaml:4:30: warning: "
        + said("tests[0].events[0].event.other", "1e3", "1000")
        + "DIR/r.yaml:2:11: warning: "
        + said("lists.codes[0]", "5E-3", "0.005")
        + "DIR/r.yaml:6:13: warning: "
        + said("rules[0].match.code", "1e3", "1000")
        + "DIR/r.yaml:7:23: warning: "
        + said("rules[0].match.other.equals", "1.5e3", "1500")
        + "DIR/r.yaml:8:18: warning: "
        + said("rules[0].match.third[1]", "2e+2", "200")
        + "OK: 1 file(s), 1 rule(s), 1 rule test file(s) (run them with rulesd test), 0 error(s), 5 warning(s)\n"
    )
    cache = {"RULESD_CACHE_DIR": str(tmp_path / "cache")}
    for _ in ("cold", "warm"):
        result = rulesd_cli("check", str(tmp_path / "r.yaml"), str(tmp_path / "r.test.yaml"), env=cache)
        assert (0, "", expected) == (result.returncode, result.stderr, result.stdout.replace(str(tmp_path), "DIR"))


def test_rulesd_test_says_the_warnings_of_the_files_it_runs(tmp_path: Path) -> None:
    """A test may pass only because of what a warning is about (`country: NO` in the rule and in
    the event, both read as false): `rulesd test` says the rule files' and the test files'
    warnings, once each however many test files share the rule file, and they fail nothing."""
    (tmp_path / "r.yaml").write_text("name: norway\nmatch: {country: NO}\n")
    test = "rule_files: [r.yaml]\ntests:\n  - name: {}\n    events: [{{event: {{country: NO}}}}]\n"
    test += "    expect_alerts: [{{event: 1, rules: [norway]}}]\n"
    (tmp_path / "a.test.yaml").write_text(test.format("norway pages"))
    (tmp_path / "b.test.yaml").write_text(test.format("norway pages again"))
    result = rulesd_cli("test", str(tmp_path))
    assert 0 == result.returncode, result.stdout
    lines = result.stdout.replace(f"{tmp_path}/", "").splitlines()
    warned = [line.split(": warning: ")[0] for line in lines if ": warning: " in line]
    assert ["r.yaml:2:18", "a.test.yaml:4:32", "b.test.yaml:4:32"] == warned
    assert "rule tests: 2 passed, 0 failed, 0 invalid, 3 warning(s)" == lines[-1]


def test_rulesd_test_says_to_write_a_test_events_exponent_as_a_number_not_the_rules_number_as_text(
    tmp_path: Path,
) -> None:
    """A rule test's event `{code: 1e3}` (the text "1e3" to YAML 1.1) against `code: 1000`: the one
    warning is at the event, saying to write 1000; the rule's 1000 was also told to be written as
    the text "1000", which would match no JSON line's 1e3."""
    (tmp_path / "r.yaml").write_text("name: thousand\nmatch: {code: 1000}\n")
    (tmp_path / "r.test.yaml").write_text(
        "rule_files: [r.yaml]\ntests:\n  - name: t\n    events: [{event: {code: 1e3}}]\n"
        "    expect_alerts: [{event: 1, rules: [thousand]}]\n"
    )
    result = rulesd_cli("test", str(tmp_path / "r.test.yaml"))
    assert 1 == result.returncode, result.stdout
    assert [
        "DIR/r.test.yaml:4:29: warning: tests[0].events[0].event.code: YAML reads 1e3 as text (a number with an "
        'exponent needs a point and a signed exponent, 1.0e+3): write 1000 if the number is meant, or quote it ("1e3") '
        "if the text is"
    ] == [line for line in result.stdout.replace(str(tmp_path), "DIR").splitlines() if ": warning: " in line]


def test_rulesd_check_refuses_a_condition_that_can_never_match(tmp_path: Path) -> None:
    """Tests of a field that no value passes together (in one operator mapping, or in one
    conjunction through `all`, a sequence step's included) are an error at the test that made it
    impossible, naming the one it contradicts: such a rule loads and never fires."""
    never = "the rule can never fire"
    assert (
        1,
        "DIR/r.yaml:3:33: error: rules[0].match.status.lt: contradicts rules[0].match.status.gt (DIR/r.yaml:3:26): "
        f"no number is greater than 5 and less than 3; {never}\n"
        "DIR/r.yaml:5:36: error: rules[1].match.status.lte: contradicts rules[1].match.status.gte (DIR/r.yaml:5:27): "
        f"no number is at least 10 and at most 9; {never}\n"
        "DIR/r.yaml:5:63: error: rules[1].match.level.in: contradicts rules[1].match.level.equals (DIR/r.yaml:5:56): "
        f"they allow no value in common; {never}\n"
        "DIR/r.yaml:7:43: error: rules[2].match.user.equals: contradicts rules[2].match.user.exists "
        "(DIR/r.yaml:7:28): exists: false holds only for a missing field, and a missing field passes no other "
        f"test; {never}\n"
        "DIR/r.yaml:12:30: error: rules[3].match.all[1].path.startswith: contradicts "
        'rules[3].match.all[0].path.startswith (DIR/r.yaml:11:30): no text starts with both "/api/" and "/admin/"; '
        f"{never}\n"
        "DIR/r.yaml:17:52: error: rules[4].sequence.steps[1].match.kind.not_equals: contradicts "
        'rules[4].sequence.steps[1].match.kind.equals (DIR/r.yaml:17:34): the value must be "sudo", which the '
        f"other test rules out; {never}\n"
        "DIR/r.yaml:19:40: error: rules[5].match.size.startswith: contradicts rules[5].match.size.gte "
        f"(DIR/r.yaml:19:25): no value is both a number and a text; {never}\n"
        "FAILED: 1 file(s), 0 rule(s), 7 error(s), 0 warning(s)\n",
    ) == check(
        tmp_path,
        "rules:\n"
        "  - name: a\n    match: {status: {gt: 5, lt: 3}}\n"
        "  - name: b\n    match: {status: {gte: 10, lte: 9}, level: {equals: a, in: [b, c]}}\n"
        "  - name: c\n    match: {user: {exists: false, equals: root}}\n"
        "  - name: d\n    match:\n      all:\n        - path: {startswith: /api/}\n"
        "        - path: {startswith: /admin/}\n"
        "  - name: e\n    sequence:\n      steps:\n        - match: {kind: login}\n"
        "        - match: {kind: {equals: sudo, not_equals: sudo}}\n"
        "  - name: f\n    match: {size: {gte: 1, startswith: '1'}}\n",
    )


def test_rulesd_check_warns_where_a_condition_that_can_never_hold_may_be_meant(tmp_path: Path) -> None:
    """In a branch of `any` (the other branches may match), under `not`, and in an absent step's
    condition, a contradiction is a warning: the rules load, and the exit status stays 0. An
    `any` none of whose branches can match is an error: then the rule can never fire."""
    assert (
        0,
        "DIR/r.yaml:6:19: warning: rules[0].match.any[0].level: contradicts rules[0].match.level (DIR/r.yaml:4:14): "
        "they allow no value in common; this branch of any can never match\n"
        "DIR/r.yaml:11:32: warning: rules[1].match.not.size.lt: contradicts rules[1].match.not.size.gt "
        "(DIR/r.yaml:11:24): no number is greater than 10 and less than 5; what not negates can never hold, so "
        "the not always holds\n"
        "DIR/r.yaml:16:54: warning: rules[2].sequence.steps[1].absent.match.user.in: contradicts "
        "rules[2].sequence.steps[1].absent.match.user.exists (DIR/r.yaml:16:43): exists: false holds only for a "
        "missing field, and a missing field passes no other test; the absent step's condition can never hold, "
        "so the rule fires after every step before it\n"
        "OK: 1 file(s), 3 rule(s), 0 error(s), 3 warning(s)\n",
    ) == check(
        tmp_path,
        "rules:\n"
        "  - name: f\n    match:\n      level: error\n      any:\n        - {level: warning}\n"
        "        - {status: {gte: 500}}\n"
        "  - name: g\n    match:\n      kind: disk\n      not: {size: {gt: 10, lt: 5}}\n"
        "  - name: h\n    sequence:\n      steps:\n        - match: {kind: login}\n"
        "        - absent: {match: {user: {exists: false, in: [root]}}, for: 5m}\n",
    )
    code, out = check(tmp_path, "name: i\nmatch:\n  level: error\n  any: [{level: warning}, {level: info}]\n")
    assert 1 == code
    assert [
        "DIR/r.yaml:4:17: error: match.any[0].level: contradicts match.level (DIR/r.yaml:3:10): they allow no "
        "value in common; the rule can never fire",
        "DIR/r.yaml:4:35: error: match.any[1].level: contradicts match.level (DIR/r.yaml:3:10): they allow no "
        "value in common; the rule can never fire",
        "FAILED: 1 file(s), 0 rule(s), 2 error(s), 0 warning(s)",
    ] == out.splitlines()


def test_rulesd_check_accepts_tests_of_a_field_that_some_value_passes(tmp_path: Path) -> None:
    """No contradiction is said where a value passes every test: a range of one number, a
    prefix and a suffix, a text and a number in one `in`, `1` and `1.0`, a caseless text
    (case is not reasoned about), a regex (nor are regexes), a named list, `exists: false` twice."""
    assert (0, "OK: 1 file(s), 1 rule(s), 0 error(s), 0 warning(s)\n") == check(
        tmp_path,
        "lists:\n  codes: [500, 503]\n"
        "rules:\n  - name: fine\n    match:\n"
        "      status: {gte: 5, lte: 5}\n"
        "      ratio: {gt: 1.5, lt: 1.6}\n"
        "      path: {startswith: /api/, endswith: .json, contains: v1}\n"
        "      code: {in: [1, x], gt: 0}\n"
        "      n: {equals: 1, in: [1.0]}\n"
        "      user: {equals: Root, startswith: r, nocase: true}\n"
        "      host: {equals: db-1, regex: ^web}\n"
        "      http.status: {in: $codes, gte: 503}\n"
        "      gone: {exists: false}\n"
        "      all: [{level: {startswith: err}}, {level: {startswith: e}}, {path: {exists: true}},\n"
        "            {gone: {exists: false}}]\n",
    )


def test_rulesd_test_and_check_refuse_duplicate_test_names(tmp_path: Path) -> None:
    """Two tests of one file named alike: an error at the second name, naming the first, in
    `rulesd test` (which runs none of the file's tests) and `rulesd check` alike."""
    (tmp_path / "disk.yaml").write_text(RULES)
    test = tmp_path / "disk.test.yaml"
    one = "  - name: full disk\n    events: [{event: {kind: disk}}]\n"
    one += "    expect_alerts: [{event: 1, rules: [disk-full]}]\n"
    test.write_text(f"rule_files: [disk.yaml]\ntests:\n{one}{one}")
    problem = f"{test}:6:11: error: tests[1].name: duplicate test name 'full disk' (also at {test}:3:11)\n"
    result = rulesd_cli("test", str(test))
    assert (1, "", problem + "rule tests: 0 passed, 0 failed, 1 invalid\n") == (
        result.returncode,
        result.stderr,
        result.stdout,
    )
    checked = rulesd_cli("check", str(test))
    assert (1, problem) == (checked.returncode, checked.stdout[: checked.stdout.index("FAILED")])


def test_replay_explain_and_state_say_the_warnings_of_their_rules(tmp_path: Path) -> None:
    """`rulesd replay`, `rulesd explain` and `rulesd state` say the rule files' warnings on
    standard error, once each, as `rulesd check` prints them; standard output is as it was."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "rules:\n  - name: norway\n    match: {country: NO}\n"
        "  - name: some\n    match: {kind: x, any: [{kind: y}, {size: 1}]}\n"
    )
    warnings = (
        f"{rules}/r.yaml:3:22: warning: rules[0].match.country: YAML reads the unquoted NO as false, not as text: "
        'quote it ("NO") if the text is meant, or write false if the boolean is\n'
        f"{rules}/r.yaml:5:35: warning: rules[1].match.any[0].kind: contradicts rules[1].match.kind "
        f"({rules}/r.yaml:5:19): they allow no value in common; this branch of any can never match\n"
    )
    (tmp_path / "events.jsonl").write_text('{"country": false}\n')
    replayed = rulesd_cli("replay", "--rules", str(rules), "events.jsonl", cwd=tmp_path)
    assert (0, warnings) == (replayed.returncode, replayed.stderr)
    assert "line 1: P3 [norway] rulesd: norway  (alias: rulesd: norway)\n" == replayed.stdout.splitlines(True)[0]
    explained = rulesd_cli("explain", "--rules", str(rules), "--rule", "norway", '{"country": false}')
    assert (0, warnings, "norway: matches\n") == (explained.returncode, explained.stderr, explained.stdout)
    (tmp_path / "rulesd.yaml").write_text(f"rules: [{rules}]\nstate_dir: {tmp_path}/state\n")
    shown = rulesd_cli("state", "--config", str(tmp_path / "rulesd.yaml"), "--format", "json")
    assert (0, warnings) == (shown.returncode, shown.stderr)
    assert [] == json.loads(shown.stdout)["rules"]  # (no state saved yet; standard output is JSON alone)


def test_rulesd_check_refuses_a_correlation_whose_groups_can_never_fire(tmp_path: Path) -> None:
    """A distinct rule grouped by the field it counts (or by an object holding it) sees one value
    per group; a sequence's steps that need different values of a group_by field never happen in
    one group; a cidr inside a not_cidr holds for no address. Each is an error at its place."""
    assert (
        1,
        "DIR/r.yaml:5:71: error: rules[0].distinct.group_by[1]: the counted field 'user.name' lies within the "
        "group_by field 'user': each group has one value of it, so it never counts 5 different values and the "
        "rule never fires\n"
        "DIR/r.yaml:11:47: error: rules[1].sequence.steps[1].match.host.startswith: contradicts "
        'rules[1].sequence.steps[0].match.host.startswith (DIR/r.yaml:10:47): no text starts with both "web" and '
        "\"db\"; the events of a sequence are of one group (one 'host'), so it can never complete\n"
        "DIR/r.yaml:13:59: error: rules[2].match.ip.not_cidr: contradicts rules[2].match.ip.cidr (DIR/r.yaml:13:24): "
        "every address in 10.1.0.0/16, 10.2.3.4/32 is in a network that not_cidr rules out; the rule can never "
        "fire\n"
        "FAILED: 1 file(s), 0 rule(s), 3 error(s), 0 warning(s)\n",
    ) == check(
        tmp_path,
        "rules:\n"
        "  - name: spray\n"
        "    match: {kind: login}\n"
        "    # (grouped by ip and user: one user's name per group)\n"
        "    distinct: {field: user.name, count: 5, window: 5m, group_by: [ip, user]}\n"
        "  - name: web-then-db\n"
        "    sequence:\n"
        "      group_by: [host]\n"
        "      steps:\n"
        "        - match: {kind: a, host: {startswith: web}}\n"
        "        - match: {kind: b, host: {startswith: db}}\n"
        "  - name: internal-not-internal\n"
        "    match: {ip: {cidr: [10.1.0.0/16, 10.2.3.4], not_cidr: 10.0.0.0/8}}\n",
    )
    assert (0, "OK: 1 file(s), 3 rule(s), 0 error(s), 0 warning(s)\n") == check(
        tmp_path,
        "rules:\n"
        "  - name: first-user-per-ip\n"
        "    match: {kind: login}\n"
        "    distinct: {field: user, count: 1, window: 5m, group_by: [user]}\n"
        "  - name: web-then-web-1\n"
        "    sequence:\n"
        "      group_by: [host]\n"
        "      steps:\n"
        "        - match: {kind: a, host: {startswith: web}}\n"
        "        - match: {kind: b, host: [web-1, db-1]}\n"
        "  - name: internal-but-not-lab\n"
        "    match: {ip: {cidr: 10.0.0.0/8, not_cidr: [10.1.0.0/16]}}\n",
    )


def test_rulesd_test_and_check_refuse_expectations_that_can_never_be_met(tmp_path: Path) -> None:
    """A rule named twice in one expectation (an alert names each rule once), a close expected
    of a rule that never closes an alert (no resolve, not an absence), and an alert at event 0
    (only an absence rule's expected group never seen is there): an error at each, in `rulesd
    test` and `rulesd check` alike, instead of a test failing with a diff that does not say why."""
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - {name: disk-full, match: {kind: disk}}\n"
        "  - {name: burst, match: {kind: err}, threshold: {count: 2, window: 1m}}\n"
        "  - name: quiet\n    match: {kind: beat}\n    absence: {window: 5m, group_by: [host], expect: [{host: a}]}\n"
    )
    tests = {
        "twice": "  - name: twice\n    events: [{event: {kind: disk}}]\n"
        "    expect_alerts: [{event: 1, rules: [disk-full, disk-full]}]\n",
        "never": "  - name: never closes\n    events: [{event: {kind: err}}, {event: {kind: err}}, {advance: 1h}]\n"
        "    expect_alerts: [{event: 2, rules: [burst]}]\n    expect_closes: [{rules: [burst]}]\n"
        "  - name: event zero\n    events: [{event: {kind: disk}}, {advance: 10m}]\n"
        "    expect_alerts: [{event: 0, rules: [disk-full]}, {event: 0, rules: [quiet]}]\n",
    }
    problems = {
        "twice": "DIR/twice.test.yaml:5:51: error: tests[0].expect_alerts[0].rules[1]: 'disk-full' is named twice: "
        "an alert names each of its rules once\n",
        "never": "DIR/never.test.yaml:6:30: error: tests[0].expect_closes[0].rules[0]: the rule 'burst' "
        "(DIR/r.yaml:3:5) never closes an alert: only a rule with resolve, or an absence rule, does\n"
        "DIR/never.test.yaml:9:29: error: tests[1].expect_alerts[0].event: event 0 is the event of an absence "
        "rule's expected group never seen, and no rule named here is an absence rule with expect (events are "
        "numbered from 1)\n",
    }
    for name, text in tests.items():
        test = tmp_path / f"{name}.test.yaml"
        test.write_text(f"rule_files: [r.yaml]\ntests:\n{text}")
        result = rulesd_cli("test", str(test))
        out = result.stdout.replace(str(tmp_path), "DIR")
        invalid = problems[name].count("\n")
        assert (1, "", problems[name] + f"rule tests: 0 passed, 0 failed, {invalid} invalid\n") == (
            result.returncode,
            result.stderr,
            out,
        )
        checked = rulesd_cli("check", str(test))
        assert (1, problems[name]) == (
            checked.returncode,
            checked.stdout.replace(str(tmp_path), "DIR").split("FAILED")[0],
        )


def test_a_key_written_beside_a_merge_key_overrides_the_merged_one(tmp_path: Path) -> None:
    """YAML's merge key (`<<: *base`) gives a mapping the keys of another, and a key written
    in the mapping itself overrides a merged one: a rule made from another under its own name
    loads (it was refused as a duplicate key, and as a duplicate rule name said to be defined
    at its own place). Of several mappings merged, the first that has a key gives it; a key
    written twice is still a duplicate key."""
    text = (
        "rules:\n"
        "  - &base\n    name: disk-full\n    match: {kind: disk, level: error}\n"
        "  - <<: *base\n    name: disk-full-db\n    match: {<<: [{host: db}, {host: web, level: warn}], kind: db}\n"
    )
    assert (0, "OK: 1 file(s), 2 rule(s), 0 error(s), 0 warning(s)\n") == check(tmp_path, text)
    (tmp_path / "events.jsonl").write_text(
        '{"kind": "db", "host": "db", "level": "warn"}\n{"kind": "db", "host": "web", "level": "warn"}\n'
    )
    replayed = rulesd_cli("replay", "--rules", str(tmp_path / "r.yaml"), str(tmp_path / "events.jsonl"))
    assert (0, "line 1: P3 [disk-full-db] rulesd: disk-full-db  (alias: rulesd: disk-full-db)") == (
        replayed.returncode,
        replayed.stdout.splitlines()[0],
    )
    assert "events: 2, invalid lines: 0, alerts: 1" == replayed.stdout.splitlines()[1]
    code, out = check(tmp_path, "name: a\nmatch: {kind: disk}\n<<: {name: b}\nname: c\n")
    assert (1, "DIR/r.yaml:4:1: error: duplicate key 'name' (first defined on line 1)\n") == (
        code,
        out.split("FAILED")[0],
    )


def test_rulesd_check_refuses_an_expected_group_the_match_rules_out(tmp_path: Path) -> None:
    """An absence rule expecting a group whose value its own match rules out would page that
    group's silence every window, since none of its events can ever count: an error at the
    expected value, naming the test that rules it out. A value the match allows is fine."""
    assert (
        1,
        "DIR/r.yaml:4:83: error: absence.expect[1].host: contradicts match.host (DIR/r.yaml:2:27): they allow no "
        "value in common; no event of this expected group can match the rule, so its absence is always paged\n"
        "DIR/r.yaml:4:122: error: absence.expect[2].port: contradicts match.port.gte (DIR/r.yaml:2:55): the value "
        "must be 80, which the other test rules out; no event of this expected group can match the rule, so its "
        "absence is always paged\n"
        "FAILED: 1 file(s), 0 rule(s), 2 error(s), 0 warning(s)\n",
    ) == check(
        tmp_path,
        "name: heartbeats\nmatch: {kind: beat, host: [web-1, web-2], port: {gte: 1024}}\n"
        "absence:\n  {window: 5m, group_by: [host, port], expect: [{host: web-1, port: 8080}, {host: db-1, port: "
        "8080}, {host: web-2, port: 80}]}\n",
    )


def test_a_rule_file_that_is_a_list_of_rules_says_to_write_rules_above_it(tmp_path: Path) -> None:
    """A list of rules without `rules:` above it is the likely mistake behind a top-level list:
    the error says how to write it (a list of anything else only says what it is)."""
    assert (
        1,
        "DIR/r.yaml:2:1: error: (top level): expected a mapping, got a list: write 'rules:' on a line above the "
        "list of rules\nFAILED: 1 file(s), 0 rule(s), 1 error(s), 0 warning(s)\n",
    ) == check(
        tmp_path, "# disk rules\n- name: disk-full\n  match: {kind: disk}\n- name: disk-slow\n  match: {kind: io}\n"
    )
    code, out = check(tmp_path, "- 1\n- 2\n")
    assert (1, "DIR/r.yaml:1:1: error: (top level): expected a mapping, got a list\n") == (code, out.split("FAILED")[0])


def test_rulesd_check_says_every_problem_of_a_rule_kind_in_one_run(tmp_path: Path) -> None:
    """A kind's own checks (its durations, its group_by against its counted field, its steps
    against its group) are made even when the schema faulted another part of the rule, and a
    fault in a threshold does not make it "not a threshold" for `resolve`."""
    long = "bad duration: longer than 100 years (36500d), the longest a duration may be"
    assert (
        1,
        'DIR/r.yaml:4:24: error: rules[0].threshold.count: expected an integer, got "5"\n'
        f"DIR/r.yaml:4:37: error: rules[0].threshold.window: {long}\n"
        "DIR/r.yaml:7:27: error: rules[1].threshold.within: a threshold counts the events of its window, written "
        "beside it: leave within out\n"
        f"DIR/r.yaml:8:22: error: rules[1].resolve.after: {long}\n"
        f"DIR/r.yaml:11:37: error: rules[2].new_value.learn: {long}\n"
        "DIR/r.yaml:11:60: error: rules[2].new_value.foo: unknown key 'foo'; expected one of: fields, forget, "
        "group_by, learn\n"
        'DIR/r.yaml:14:47: error: rules[3].distinct.window: "5min": a duration is a number of seconds or a string '
        "like 30s, 5m, 2h, 1d or 1h30m (each unit at most once, largest first)\n"
        "DIR/r.yaml:14:64: error: rules[3].distinct.group_by[0]: the counted field 'user' is the group_by field "
        "'user': each group has one value of it, so it never counts 5 different values and the rule never fires\n"
        f"DIR/r.yaml:18:15: error: rules[4].sequence.within: {long}\n"
        "DIR/r.yaml:21:25: error: rules[4].sequence.steps[1].match.host: contradicts "
        "rules[4].sequence.steps[0].match.host (DIR/r.yaml:20:25): they allow no value in common; the events of a "
        "sequence are of one group (one 'host'), so it can never complete\n"
        "DIR/r.yaml:24:15: error: rules[5].distinct: missing required key 'count'\n"
        "DIR/r.yaml:24:37: error: rules[5].distinct.window: the window must be longer than 0s\n"
        "FAILED: 1 file(s), 0 rule(s), 12 error(s), 0 warning(s)\n",
    ) == check(
        tmp_path,
        "rules:\n"
        "  - name: a\n    match: {user: x}\n"
        '    threshold: {count: "5", window: 99999999999999999999d}\n'
        "  - name: b\n    match: {user: x}\n"
        "    threshold: {count: 5, within: 5m, window: 5m}\n"
        "    resolve: {after: 99999999999999999999d}\n"
        "  - name: c\n    match: {user: x}\n"
        "    new_value: {fields: [a], learn: 99999999999999999999d, foo: 1}\n"
        "  - name: d\n    match: {user: x}\n"
        "    distinct: {field: user, count: 5, window: 5min, group_by: [user]}\n"
        "  - name: e\n"
        "    sequence:\n"
        "      group_by: [host]\n"
        "      within: 99999999999999999999d\n"
        "      steps:\n"
        "        - match: {host: a}\n"
        "        - match: {host: b}\n"
        "  - name: f\n    match: {user: x}\n"
        "    distinct: {field: user, window: 0s, group_by: [user]}\n",
    )


def test_rulesd_check_warns_at_a_regex_found_in_every_text(tmp_path: Path) -> None:
    """`(timeout)?` is found in every text (as the empty match at its start), so its condition
    only asks for a text: a warning at the regex, wherever it is in a condition; a regex that
    matches an empty text only at some places (`^$`, `\\b`), or only some texts, draws none."""
    said = (
        "is found in every text (it matches an empty text), so this test holds for any text value: was a part "
        "of it meant not to be optional?"
    )
    assert (
        0,
        f"DIR/r.yaml:3:30: warning: rules[0].match.message.regex: the regex '(timeout)?' {said}\n"
        f"DIR/r.yaml:5:37: warning: rules[1].match.any[0].message.regex: the regex '.*' {said}\n"
        f"DIR/r.yaml:5:66: warning: rules[1].match.any[1].not.host.regex: the regex '(?m)^' {said}\n"
        f"DIR/r.yaml:9:30: warning: rules[2].sequence.steps[0].match.m.regex: the regex 'a*' {said}\n"
        f"DIR/r.yaml:10:39: warning: rules[2].sequence.steps[1].absent.match.m.regex: the regex '[a-z]*$' {said}\n"
        "OK: 1 file(s), 4 rule(s), 0 error(s), 5 warning(s)\n",
    ) == check(
        tmp_path,
        "rules:\n"
        "  - name: a\n    match: {message: {regex: '(timeout)?', nocase: true}}\n"
        "  - name: b\n    match: {any: [{message: {regex: '.*'}}, {not: {host: {regex: '(?m)^'}}}]}\n"
        "  - name: c\n"
        "    sequence:\n"
        "      steps:\n"
        "        - match: {m: {regex: 'a*'}}\n"
        "        - absent: {match: {m: {regex: '[a-z]*$'}}, for: 5m}\n"
        "  - name: d\n"
        "    match:\n"
        "      a: {regex: '^$'}\n"
        "      b: {regex: '\\b'}\n"
        "      c: {regex: '^.*$'}\n"
        "      d: {regex: 'disk (is )?full'}\n"
        "      e: {regex: '^\\s*x?$'}\n",
    )


def test_rulesd_check_places_a_missing_colon_at_the_line_that_misses_it(tmp_path: Path) -> None:
    """PyYAML notices a key without its ':' only on the next line: the error is at the line
    that misses it. A line indented as if it went on the one above is named with that one."""
    rule = "rules:\n  - name: a\n    match: {m: x}\n"
    cases = [
        (
            "rules:\n  - name a\n    description: x\n",
            "2:5: error: YAML syntax error: the text 'name a description' that starts here runs on to line 3, "
            "where a ':' follows it (is a ':' missing on this line?)",
        ),
        (
            rule + "    description x\n    throttle: 5m\n",
            "4:5: error: YAML syntax error: could not find the ':' after the key that starts here (is it missing?)",
        ),
        (
            rule + "    alert:\n      message: x\n    throttle: 5m\n      tags: [a]\n",
            "7:11: error: YAML syntax error: a ':' after the text '5m tags', which started on line 6 (is this line "
            "indented wrong, or line 6, or is a ':' missing there?)",
        ),
        (  # (priority is no key of a rule, but of the alert, as tags after it is: that line is out of step)
            rule + "    alert:\n      message: x\n    priority: P2\n      tags: [a]\n",
            "6:5: error: YAML syntax error: this line is indented to column 5, but it is no key of a rule: it belongs "
            "under 'alert' (line 4), whose keys (lines 5 and 7) are at column 7: indent it to column 7, with the "
            "lines under it",
        ),
        (
            rule + "    alert:\n      message: Disk full: x\n",
            "5:25: error: YAML syntax error: a ': ' inside a plain value: quote the value (\"...\") to write it",
        ),
    ]
    for text, problem in cases:
        assert (1, f"DIR/r.yaml:{problem}\nFAILED: 1 file(s), 0 rule(s), 1 error(s), 0 warning(s)\n") == check(
            tmp_path, text
        )


def test_a_key_of_a_flow_mapping_without_its_colon_is_an_error_at_the_key(tmp_path: Path) -> None:
    """`{service: auth, event login_failed}` is the field 'event login_failed' compared with
    null, a rule that silently never fires: an error at the key, in rule files and rule tests
    alike, after which the rest is checked as if the ':' were there (no follow-on errors)."""
    no_value = "has no ':' after it, so YAML reads it as a key with no value"
    assert (
        1,
        f"DIR/r.yaml:3:28: error: rules[0].match[\"event login_failed\"]: 'event login_failed' {no_value}: write "
        "'event: login_failed'\n"
        'DIR/r.yaml:4:23: error: rules[0].alert.priority: "P0" is not one of: P1, P2, P3, P4, P5\n'
        f"DIR/r.yaml:4:41: error: rules[0].alert.responders[0][\"type team\"]: 'type team' {no_value}: write "
        "'type: team'\n"
        "DIR/r.yaml:4:70: error: rules[0].alert.tags[0]: expected a string, got a mapping\n"
        f"DIR/r.yaml:4:71: error: rules[0].alert.tags[0].host: 'host' {no_value} (a template is written in quotes: "
        '"{host}")\n'
        "FAILED: 1 file(s), 0 rule(s), 5 error(s), 0 warning(s)\n",
    ) == check(
        tmp_path,
        "rules:\n  - name: a\n    match: {service: auth, event login_failed}\n"
        "    alert: {priority: P0, responders: [{type team, name: x}], tags: [{host}]}\n",
    )
    (tmp_path / "r.yaml").write_text("rules:\n  - name: a\n    match: {service: auth, event: login_failed}\n")
    test = tmp_path / "r.test.yaml"
    test.write_text(
        "rule_files: [r.yaml]\ntests:\n  - name: t\n    events: [{event: {service: auth, event login_failed}}]\n"
        "    expect_alerts: [{event: 1, rules: [a]}]\n"
    )
    problem = f"{test}:4:38: error: tests[0].events[0].event[\"event login_failed\"]: 'event login_failed' {no_value}"
    result = rulesd_cli("test", str(test))
    assert (1, f"{problem}: write 'event: login_failed'\nrule tests: 0 passed, 0 failed, 1 invalid\n") == (
        result.returncode,
        result.stdout,
    )


def test_rulesd_check_warns_at_a_field_in_doubled_braces(tmp_path: Path) -> None:
    """`{{host}}` (as Jinja, Go and Prometheus templates write a field) is the text `{host}` in
    the page, not the host: a warning at the template; `{{{host}}}` (the value in braces) and
    braces around other text draw none."""
    assert (
        0,
        "DIR/r.yaml:5:16: warning: rules[0].alert.message: '{{host}}' is the text '{host}' in the alert, not the "
        "value of a field: write {host} for the value of host (a doubled brace is a brace)\n"
        "DIR/r.yaml:6:14: warning: rules[0].alert.tags[0]: '{{ .host }}' is the text '{ .host }' in the alert, not "
        "the value of a field: write {host} for the value of host (a doubled brace is a brace)\n"
        "DIR/r.yaml:7:20: warning: rules[0].alert.details.h: '{{ $labels.dev }}' is the text '{ $labels.dev }' in "
        "the alert, not the value of a field: write {labels.dev} for the value of labels.dev (a doubled brace is a "
        "brace)\n"
        "OK: 1 file(s), 1 rule(s), 0 error(s), 3 warning(s)\n",
    ) == check(
        tmp_path,
        "rules:\n  - name: a\n    match: {m: x}\n    alert:\n"
        '      message: "Disk full on {{host}}: {{{dev}}} {{\\"a\\": 1}} {{}}"\n'
        '      tags: ["host:{{ .host }}"]\n'
        '      details: {h: "{{ $labels.dev }}"}\n',
    )


def test_rulesd_check_warns_at_a_responder_written_as_a_template(tmp_path: Path) -> None:
    """The alert's texts are templates, a responder is not: `name: "{team}"` asked OpsGenie for
    a team literally named {team}, which it cannot resolve, and check said nothing. A warning at
    the responder; a name without a field, `{{team}}` included, draws none."""
    assert (
        0,
        "DIR/r.yaml:5:68: warning: rules[0].alert.responders[1].username: a responder is not a template: OpsGenie "
        "is asked for the one named '{owner.email}' as written, not for the value of owner.email; to page by a "
        "field's value, write a rule for each value\n"
        "OK: 1 file(s), 1 rule(s), 0 error(s), 1 warning(s)\n",
    ) == check(
        tmp_path,
        "rules:\n  - name: a\n    match: {m: x}\n    alert:\n"
        '      responders: [{type: team, name: ops}, {type: user, username: "{owner.email}"}, '
        '{type: team, name: "{{team}}"}]\n',
    )


def test_rulesd_check_says_how_a_misindented_line_or_an_unclosed_brace_should_be_written(tmp_path: Path) -> None:
    """libyaml's "did not find expected key (while parsing a block mapping started at 2:5)"
    says neither that indentation is wrong nor which column was expected, and its "did not
    find expected ',' or '}'" comes a line late for a brace left open: the errors say what to
    write, where."""
    cases = [
        (
            "rules:\n  - name: a\n    match: {m: x}\n    alert:\n        message: x\n      priority: P2\n",
            "6:7: error: YAML syntax error: this line is indented to column 7, but the keys of the mapping it is in "
            "(from line 2) are at column 5, and no mapping under it has keys there: is this line, or one above it, "
            "indented wrong?",
        ),
        (
            "rules:\n  - name: a\n    match: {m: x}\n  description: x\n",
            "4:3: error: YAML syntax error: this line is indented to column 3, as the items ('- ') of the list that "
            "starts on line 2 are, but is not one: is this line, or that line, indented wrong?",
        ),
        (  # a '{' not closed on its line: at that line's end, not at the next line's ':'
            "rules:\n  - name: a\n    match: {m: x, n: y\n    alert: {priority: P1}\n",
            "3:23: error: YAML syntax error: the '{' at column 12 is not closed on its line: a '}' missing here?",
        ),
        (
            "rules:\n  - name: a\n    match: {m: x}\n    threshold: {count: 10, window: 5m, group_by [user]}\n",
            "4:49: error: YAML syntax error: a ',' or the '}' closing the '{' at 4:16 was expected here (is a ':', "
            "a ',' or a '}' missing before it?)",
        ),
    ]
    for text, problem in cases:
        assert (1, f"DIR/r.yaml:{problem}\nFAILED: 1 file(s), 0 rule(s), 1 error(s), 0 warning(s)\n") == check(
            tmp_path, text
        )


def test_rulesd_check_says_where_a_key_under_the_wrong_parent_belongs(tmp_path: Path) -> None:
    """A key indented under the wrong parent is spelled right: the error at its line says where
    it belongs (the mapping written nearest, with its line), and the parent's own follow-on
    errors (the key it then misses, its empty value) are not said again. In a condition, where
    any field name is taken, a rule's key with the value it takes is such a mistake too (it
    would test an event field named so, and the rule would never fire), as is an operator
    beside the fields, meant under the empty field above it."""
    top = "at the rule's top level"
    assert (
        1,
        f"DIR/r.yaml:4:7: error: rules[0].match.throttle: 'throttle' belongs {top}, not under 'match' (as written, "
        "it tests an event field named 'throttle': write throttle: {equals: …} if meant)\n"
        f"DIR/r.yaml:5:7: error: rules[0].match.alert: 'alert' belongs {top}, not under 'match'\n"
        f"DIR/r.yaml:8:39: error: rules[1].threshold.throttle: 'throttle' belongs {top}, not under 'threshold'\n"
        f"DIR/r.yaml:13:5: error: rules[2].group_by: 'group_by' belongs under 'absence' (line 12), not {top}\n"
        "DIR/r.yaml:14:5: error: rules[2].responders: 'responders' belongs under 'alert' (line 15), not "
        f"{top}\n"
        "DIR/r.yaml:21:11: error: rules[3].sequence.steps[1].for: 'for' belongs under 'absent' (line 20), not in "
        "rules[3].sequence.steps[1]\n"
        "DIR/r.yaml:24:5: error: rules[4].window: 'window' belongs under 'threshold' (line 25), not "
        f"{top}\n"
        "DIR/r.yaml:30:7: error: rules[5].match.equals: 'equals' is an operator: it belongs under 'status' (line "
        "29), which is empty: indent this line under that (status: {equals: …})\n"
        "DIR/r.yaml:33:5: error: rules[6].service: 'service' is not a key at the rule's top level: it belongs "
        "under 'match' (line 32), which is empty: indent this line (and those after it) under that\n"
        "FAILED: 1 file(s), 0 rule(s), 9 error(s), 0 warning(s)\n",
    ) == check(
        tmp_path,
        "rules:\n"
        "  - name: a\n    match:\n      throttle: 10m\n      alert: {priority: P1}\n      kind: disk\n"
        "  - name: b\n    threshold: {count: 5, window: 2m, throttle: 5m}\n    match: {kind: disk}\n"
        "  - name: c\n    match: {kind: beat}\n    absence: {window: 5m}\n    group_by: [host]\n"
        "    responders: [{type: team, name: ops}]\n    alert: {priority: P2}\n"
        "  - name: d\n    sequence:\n      steps:\n        - match: {event: a}\n"
        "        - absent: {match: {event: b}}\n          for: 2h\n"
        "  - name: e\n    match: {kind: x}\n    window: 5m\n    threshold:\n      count: 5\n"
        "  - name: f\n    match:\n      status:\n      equals: 500\n"
        "  - name: g\n    match:\n    service: payments\n",
    )
    # the kind the misplaced keys belong in misses them, and is not built without them
    assert (
        1,
        "DIR/r.yaml:4:5: error: rules[0].field: 'field' belongs under 'distinct' (line 3), not at the rule's top "
        "level\n"
        "DIR/r.yaml:6:29: error: rules[1].match.expect: 'expect' belongs under 'absence' (line 6), not under "
        "'match'\n"
        "FAILED: 1 file(s), 0 rule(s), 2 error(s), 0 warning(s)\n",
    ) == check(
        tmp_path,
        "rules:\n  - name: a\n    distinct: {count: 3, window: 5m}\n    field: user\n    match: {k: a}\n"
        "  - {name: b, match: {k: b, expect: [{host: a}]}, absence: {window: 5m, group_by: [host]}}\n",
    )
    # a field of such a name is tested when written with an operator
    assert 0 == check(tmp_path, "name: a\nmatch: {throttle: {equals: 10m}, in: {equals: x}}\n")[0]


def test_a_duration_without_a_unit_is_seconds_and_draws_a_warning_at_its_line(tmp_path: Path) -> None:
    """`window: 5` is five seconds, as a duration's integer always was, but Prometheus refuses
    it and ElastAlert writes `minutes: 5`: a warning at every duration of a rule and every `at`
    and `advance` of a rule test written so (0 is 0 in any unit), which the rules still load
    with and a test still passes with."""

    def seconds(n: int) -> str:
        minutes = f" ({n}m if minutes were meant)" if n < 60 else ""
        return f"{n} has no unit, so it is {n} seconds: write {n}s to say so{minutes}"

    (tmp_path / "r.yaml").write_text(
        "rules:\n"
        "  - {name: a, match: {k: a}, threshold: {count: 2, window: 5}, throttle: 600, resolve: {after: 900}}\n"
        "  - {name: b, match: {k: b}, distinct: {field: u, count: 2, window: 7}}\n"
        "  - {name: c, match: {k: c}, absence: {window: 120}}\n"
        "  - {name: d, match: {k: d}, new_value: {fields: [u], learn: 0, forget: 9}}\n"
        "  - name: e\n    sequence:\n      within: 4\n"
        "      steps: [{match: {k: e}}, {absent: {match: {k: f}, for: 3}}]\n"
    )
    test = tmp_path / "r.test.yaml"
    test.write_text(
        "rule_files: [r.yaml]\ntests:\n  - name: two within five seconds\n    events:\n"
        "      - {at: 0, event: {k: a}}\n      - {at: 4, event: {k: a}}\n      - {advance: 2}\n"
        "    expect_alerts: [{event: 2, rules: [a]}]\n"
    )
    warnings = [
        f"{tmp_path}/r.yaml:2:60: warning: rules[0].threshold.window: {seconds(5)}",
        f"{tmp_path}/r.yaml:2:74: warning: rules[0].throttle: {seconds(600)}",
        f"{tmp_path}/r.yaml:2:96: warning: rules[0].resolve.after: {seconds(900)}",
        f"{tmp_path}/r.yaml:3:69: warning: rules[1].distinct.window: {seconds(7)}",
        f"{tmp_path}/r.yaml:4:48: warning: rules[2].absence.window: {seconds(120)}",
        f"{tmp_path}/r.yaml:5:73: warning: rules[3].new_value.forget: {seconds(9)}",
        f"{tmp_path}/r.yaml:8:15: warning: rules[4].sequence.within: {seconds(4)}",
        f"{tmp_path}/r.yaml:9:62: warning: rules[4].sequence.steps[1].absent.for: {seconds(3)}",
    ]
    checked = rulesd_cli("check", str(tmp_path / "r.yaml"))
    assert (0, [*warnings, "OK: 1 file(s), 5 rule(s), 0 error(s), 8 warning(s)"]) == (
        checked.returncode,
        checked.stdout.splitlines(),
    )
    ran = rulesd_cli("test", str(test))
    test_warnings = [
        f"{test}:6:14: warning: tests[0].events[1].at: {seconds(4)}",
        f"{test}:7:19: warning: tests[0].events[2].advance: {seconds(2)}",
    ]
    assert 0 == ran.returncode
    assert [*warnings, *test_warnings] == [line for line in ran.stdout.splitlines() if ": warning: " in line]
    assert "rule tests: 1 passed, 0 failed, 0 invalid, 10 warning(s)" == ran.stdout.splitlines()[-1]


def test_rulesd_check_puts_a_block_whose_first_line_is_indented_too_little_at_that_line(tmp_path: Path) -> None:
    """YAML takes a block's indentation from its first line, so when that line is indented too
    little (or is an item without its '- ') it finds fault with the second: the error is at the
    first line, the odd one out, when the lines after it agree with each other. Where they do
    not (the line YAML stopped at is the last of its block, or opens a block of its own moved
    with it), the error stays where YAML found it and names both lines."""
    cases = [
        (
            "rules:\n  - name: hb\n    match: {kind: beat}\n    absence:\n     window: 5m\n      group_by: [host]\n"
            "      expect: [{host: a}]\n",
            "5:6: error: YAML syntax error: this line is indented to column 6, but the keys after it in its block "
            "(from line 6) are at column 7: indent it to column 7 (or them to 6)",
        ),
        (
            "rules:\n  - name: hb\n    match: {kind: beat}\n    alert:\n    message: x\n      priority: P2\n"
            "      tags: [a]\n",
            "5:5: error: YAML syntax error: this line is indented to column 5, but the keys after it in its block "
            "(from line 6) are at column 7: indent it to column 7 (or them to 5)",
        ),
        (  # a list whose first item is indented too little
            "rules:\n  - name: hb\n    sequence:\n      steps:\n       - match: {a: 1}\n        - match: {b: 1}\n"
            "        - match: {c: 1}\n",
            "5:8: error: YAML syntax error: this line is indented to column 8, but the items ('- ') after it in its "
            "block (from line 6) are at column 9: indent it to column 9 (or them to 8)",
        ),
        (  # an item written without its '- '
            "rules:\n  - name: a\n    sequence:\n      steps:\n          match: {a: 1}\n        - match: {c: 1}\n"
            "        - match: {d: 1}\n",
            "5:11: error: YAML syntax error: this line is not a list item, but the lines after it in its block (from "
            "line 6) are ('- ' at column 9): is its '- ' missing?",
        ),
        (  # a line that opens a block, moved with it: YAML's line is the one to fix
            "rules:\n  - name: hb\n    match: {kind: beat}\n      alert:\n      priority: P2\n",
            "4:7: error: YAML syntax error: this line is indented to column 7, but the keys of the mapping it is in",
        ),
        (  # the last line of a block indented too little
            "rules:\n  - name: hb\n    match: {kind: beat}\n    alert:\n      priority: P2\n     tags: [a]\n",
            "6:6: error: YAML syntax error: this line is indented to column 6, but the keys of the mapping it is in",
        ),
    ]
    assert_one_error_each(tmp_path, cases)


def test_rulesd_check_names_a_rule_key_indented_into_a_condition_with_its_block(tmp_path: Path) -> None:
    """`alert:` and its block indented one level too deep, into `match:`, is valid YAML: an
    empty field `alert` and fields `message`, `priority`… that no event has, so the rule
    silently never fires (and pages with no message of its own). It is an error at `alert:`,
    naming the keys after it that are its own; an empty field followed by no key of its own
    is still a field."""
    assert (
        1,
        "DIR/r.yaml:5:7: error: rules[0].match.alert: 'alert' belongs at the rule's top level, not under 'match', "
        "with its keys after it ('message', 'priority') under it: as written, they test event fields\n"
        "DIR/r.yaml:11:7: error: rules[1].match.threshold: 'threshold' belongs at the rule's top level, not under "
        "'match', with its keys after it ('count') under it: as written, they test event fields\n"
        "FAILED: 1 file(s), 0 rule(s), 2 error(s), 0 warning(s)\n",
    ) == check(
        tmp_path,
        "rules:\n"
        "  - name: a\n    match:\n      service: auth\n      alert:\n      message: Admin {user} logged in\n"
        "      priority: P3\n"
        "  - name: b\n    match:\n      service: auth\n      threshold:\n      count: 5\n"
        "  - name: c\n    match:\n      alert:\n      service: auth\n",
    )


def test_rulesd_check_names_an_operator_written_beside_the_fields(tmp_path: Path) -> None:
    """`nocase: true` written beside `message: {contains: err}` instead of inside it tests an
    event field named `nocase`, which no event has: the rule silently never fired. It is an
    error at its line naming the field whose mapping it belongs in; an operator's name written
    with an operator is still a field."""
    beside = "is an operator, written beside the fields: it belongs in the mapping of 'message'"
    assert (
        1,
        f"DIR/r.yaml:5:7: error: rules[0].match.nocase: 'nocase' {beside} (line 4): message: {{…, nocase: true}} "
        "(as written, it tests an event field named 'nocase': write nocase: {equals: …} if meant)\n"
        f"DIR/r.yaml:7:34: error: rules[1].match.contains: 'contains' {beside} (line 7): message: {{…, contains: …}} "
        "(as written, it tests an event field named 'contains': write contains: {equals: …} if meant)\n"
        "FAILED: 1 file(s), 0 rule(s), 2 error(s), 0 warning(s)\n",
    ) == check(
        tmp_path,
        "rules:\n  - name: a\n    match:\n      message: {contains: err}\n      nocase: true\n"
        "  - name: b\n    match: {message: {regex: a}, contains: b, service: x}\n"
        "  - name: c\n    match: {message: {regex: a}, nocase: {equals: true}}\n",
    )


def test_rulesd_check_warns_at_a_glob_or_a_regex_written_as_text(tmp_path: Path) -> None:
    """`host: "web-*"` or `contains: "fail.*password"` compares the text as written, so the
    rule silently never fires on the hosts or messages meant: a warning at the value says which
    operator does what was likely meant."""
    text = "is compared as the text written:"
    assert (
        0,
        f"DIR/r.yaml:4:13: warning: rules[0].match.host: 'web-*' {text} '*' is no wildcard in equals: write "
        "startswith: 'web-' for texts that start with it\n"
        f"DIR/r.yaml:5:21: warning: rules[0].match.m.contains: 'fail.*password' {text} '.*' is no pattern in "
        "contains: write regex: 'fail.*password' for a regex\n"
        f"DIR/r.yaml:6:21: warning: rules[0].match.d.endswith: '*.example.com' {text} '*' is no wildcard in "
        "endswith: write endswith: '.example.com' for texts that end with it\n"
        f"DIR/r.yaml:7:10: warning: rules[0].match.e: '*err*' {text} '*' is no wildcard in equals: write contains: "
        "'err' for texts that contain it\n"
        "OK: 1 file(s), 1 rule(s), 0 error(s), 4 warning(s)\n",
    ) == check(
        tmp_path,
        'rules:\n  - name: a\n    match:\n      host: "web-*"\n      m: {contains: "fail.*password"}\n'
        '      d: {endswith: "*.example.com"}\n      e: "*err*"\n      g: "***"\n      h: "a*b"\n',
    )


def test_rulesd_check_says_where_a_duration_written_as_a_field_belongs_with_no_sequence_written(
    tmp_path: Path,
) -> None:
    """`for: 5m` under `match` of a rule with no sequence: `for` is a key of a sequence step's
    `absent` alone, none of which is written; the error still says where it belongs (it was an
    IndexError: the place was left out as one inside list items none wrote)."""
    assert (
        1,
        "DIR/r.yaml:5:7: error: rules[0].match.for: 'for' belongs under 'sequence.steps[].absent', not under "
        "'match' (as written, it tests an event field named 'for': write for: {equals: …} if meant)\n"
        "FAILED: 1 file(s), 0 rule(s), 1 error(s), 0 warning(s)\n",
    ) == check(tmp_path, "rules:\n  - name: b\n    match:\n      user: root\n      for: 5m\n    alert: {message: x}\n")


def test_rulesd_check_takes_stars_that_are_the_texts_own_as_text(tmp_path: Path) -> None:
    """A glob's '*' is one star against the text it stands for (`web-*`); a run of stars or one
    beside a space is the text's own: a banner (`*** FATAL ERROR ***`), a query (`SELECT *`),
    Markdown (`**bold**`), a bullet (`* item`). None draws a warning whose advice (`contains:
    'SELECT '`) would change what the rule finds. A `.+` written as text is said as such."""
    assert (
        0,
        "DIR/r.yaml:9:21: warning: rules[0].match.g.contains: 'id=.+' is compared as the text written: '.+' is "
        "no pattern in contains: write regex: 'id=.+' for a regex\n"
        "OK: 1 file(s), 1 rule(s), 0 error(s), 1 warning(s)\n",
    ) == check(
        tmp_path,
        'rules:\n  - name: a\n    match:\n      message: "*** FATAL ERROR ***"\n      q: {contains: "SELECT *"}\n'
        '      m: "**bold**"\n      b: {startswith: "* item"}\n      e: {endswith: "done **"}\n'
        '      g: {contains: "id=.+"}\n',
    )


def test_rulesd_check_warns_at_an_empty_text_that_every_text_passes(tmp_path: Path) -> None:
    """`contains: ""` (a text left out, or a template variable never filled in) holds for every
    text, so the rule fires on whatever else it tests: a warning at it, as at a regex found in
    every text."""
    empty = "of an empty text holds for any text value, as if it were not written: was a text left out?"
    assert (
        0,
        f"DIR/r.yaml:4:21: warning: rules[0].match.m.contains: contains {empty}\n"
        f"DIR/r.yaml:5:23: warning: rules[0].match.n.startswith: startswith {empty}\n"
        "OK: 1 file(s), 1 rule(s), 0 error(s), 2 warning(s)\n",
    ) == check(
        tmp_path,
        'rules:\n  - name: a\n    match:\n      m: {contains: ""}\n      n: {startswith: "", nocase: true}\n'
        '      o: {equals: ""}\n',
    )


def test_rulesd_check_puts_a_key_missing_its_colon_at_that_key_beside_a_block(tmp_path: Path) -> None:
    """A key without its ':' as the first line of a block, or as the key right after a block,
    is reported at the key that misses it, not at the line before it with advice to
    indent that line (which is right as it is)."""
    runs_on = "YAML syntax error: the text {!r} that starts here runs on to line {}, where a ':' follows it"
    cases = [
        (  # the first key under `match:`
            "rules:\n  - name: a\n    match:\n      service auth\n      event: login_failed\n",
            "4:7: error: " + runs_on.format("service auth event", 5),
        ),
        (  # the first key after the block of `match:`
            "rules:\n  - name: a\n    match:\n      message: x\n    throttle 30m\n    alert:\n      message: x\n",
            "5:5: error: YAML syntax error: could not find the ':' after the key that starts here (is it missing?)",
        ),
        (  # the same after a block of several lines
            "rules:\n  - name: a\n    match:\n      a: 1\n      b: 2\n    threshold {count: 2, window: 1m}\n"
            "    alert:\n      message: x\n",
            "6:5: error: YAML syntax error: could not find the ':' after the key that starts here (is it missing?)",
        ),
    ]
    assert_one_error_each(tmp_path, cases)


def test_rulesd_check_says_to_quote_a_value_with_a_colon_after_a_key_of_words(tmp_path: Path) -> None:
    """A key of several words (`User Agent`, as Windows and web logs name fields) has its ':';
    the ': ' in its value is what YAML refuses, and the advice is to quote the value, not that
    the key misses its ':' (that is for a key run into a flow mapping: `threshold {count: 5}`)."""
    assert_one_error_each(
        tmp_path,
        [
            (
                "rules:\n  - name: a\n    match:\n      User Agent: Mozilla: x\n    alert: {message: x}\n",
                "4:26: error: YAML syntax error: a ': ' inside a plain value: quote the value (\"...\") to write it",
            ),
            (
                "rules:\n  - name: a\n    match: {a: 1}\n    threshold {count: 5, window: 1m}\n"
                "    alert: {message: x}\n",
                "4:5: error: YAML syntax error: could not find the ':' after the key that starts here (is it missing?)",
            ),
        ],
    )


def test_rulesd_check_puts_a_first_list_item_without_its_dash_at_that_item(tmp_path: Path) -> None:
    """The first rule (or sequence step) written without its '- ' is read by YAML as a
    mapping, and YAML finds fault only at the next item, maybe many lines further: the error is
    at the first item, saying its '- ' seems missing."""
    cases = [
        (
            "rules:\n    name: a\n    match: {a: 1}\n    alert:\n      message: x\n      priority: P2\n"
            "  - name: b\n    match: {a: 2}\n",
            "2:5: error: YAML syntax error: this line is not a list item, but the items after it in its block (from "
            "line 7) are ('- ' at column 3): is its '- ' missing?",
        ),
        (
            "rules:\n  - name: a\n    sequence:\n      steps:\n          match: {a: 1}\n        - match: {b: 1}\n",
            "5:11: error: YAML syntax error: this line is not a list item, but the items after it in its block (from "
            "line 6) are ('- ' at column 9): is its '- ' missing?",
        ),
    ]
    assert_one_error_each(tmp_path, cases)


def test_rulesd_test_warns_at_a_group_by_field_none_of_the_events_it_matched_has(tmp_path: Path) -> None:
    """A misspelled group_by (`source.ipx`) puts every event in one group, and a test whose
    events all share one address still passes: `rulesd test` warns at each field a rule groups
    or counts by that none of the file's events the rule matched has. A rule that matched no
    event, or whose events have the field, draws none."""
    (tmp_path / "r.yaml").write_text(
        "rules:\n"
        "  - name: after-failures\n    sequence:\n      group_by: [source.ipx]\n"
        "      steps: [{match: {event: fail}, count: 2}, {match: {event: ok}}]\n"
        "  - {name: spray, match: {event: fail}, distinct: {field: usr, count: 2, window: 1m, group_by: [source.ip]}}\n"
        "  - {name: unused, match: {event: other}, threshold: {count: 2, window: 1m, group_by: [nothing]}}\n"
    )
    test = tmp_path / "r.test.yaml"
    test.write_text(
        "rule_files: [r.yaml]\ntests:\n  - name: a login after two failures\n    events:\n"
        "      - {event: {event: fail, user: a, source: {ip: 192.0.2.1}}}\n"
        "      - {event: {event: fail, user: a, source: {ip: 192.0.2.1}}}\n"
        "      - {event: {event: ok, user: a, source: {ip: 192.0.2.1}}}\n"
        "    expect_alerts: [{event: 3, rules: [after-failures]}]\n"
    )
    assert [
        f"{tmp_path}/r.yaml:4:18: warning: rules[0].sequence.group_by[0]: none of the 3 event(s) of {test} that the "
        "rule 'after-failures' matched has the field 'source.ipx': is it misspelled?",
        f"{tmp_path}/r.yaml:6:59: warning: rules[1].distinct.field: none of the 2 event(s) of {test} that the rule "
        "'spray' matched has the field 'usr': is it misspelled?",
    ] == warnings_of_test(test)


def test_rulesd_test_warns_at_an_alert_template_field_none_of_the_events_it_matched_has(tmp_path: Path) -> None:
    """`message: "login by {usr}"` (for `user`) renders an empty name in every page, and the
    rule test still passes: `rulesd test` warns at the template naming a field that none of the
    file's events the rule matched has, as at a group_by field. Fields some event has draw none."""
    (tmp_path / "r.yaml").write_text(
        "rules:\n"
        "  - name: admin-login\n    match: {event: login}\n"
        "    alert:\n      message: 'login by {usr} from {source.ip}'\n      tags: ['host:{hots}']\n"
        "      details: {who: '{user}'}\n"
    )
    test = tmp_path / "r.test.yaml"
    test.write_text(
        "rule_files: [r.yaml]\ntests:\n  - name: a login\n    events:\n"
        "      - {event: {event: login, user: a, host: h}}\n"
        "      - {event: {event: login, user: a, host: h, source: {ip: 192.0.2.1}}}\n"
        "    expect_alerts: [{event: 1, rules: [admin-login]}, {event: 2, rules: [admin-login]}]\n"
    )
    assert [
        f"{tmp_path}/r.yaml:5:16: warning: rules[0].alert.message: none of the 2 event(s) of {test} that the rule "
        "'admin-login' matched has the field 'usr': is it misspelled?",
        f"{tmp_path}/r.yaml:6:14: warning: rules[0].alert.tags[0]: none of the 2 event(s) of {test} that the rule "
        "'admin-login' matched has the field 'hots': is it misspelled?",
    ] == warnings_of_test(test)


def test_an_unknown_escape_in_double_quotes(tmp_path: Path) -> None:
    """A double-quoted regex with a backslash-d is a YAML syntax error that says to write it in
    single quotes."""
    text = """\
name: port
match:
  message: {regex: "port \\d+"}
"""
    status, output = check(tmp_path, text)
    assert 1 == status
    assert [
        (
            "DIR/r.yaml:3:26: error: YAML syntax error: \\d is not an escape YAML knows in double quotes: write "
            "the text in single quotes ('...\\d...'), where a backslash is itself, as a regex is best written, "
            "or double the backslash (\\\\d)"
        ),
        ("FAILED: 1 file(s), 0 rule(s), 1 error(s), 0 warning(s)"),
    ] == output.splitlines()


def test_numbers_yaml_reads_otherwise_than_written(tmp_path: Path) -> None:
    """0123 (octal), 12:30 (base 60), 1.10 and 1_000 compared with events are warnings that
    say the number YAML reads and how to write either meaning; at an ordering operator only the
    octal one is."""
    text = """\
rules:
  - name: nums
    match:
      service: 0123
      at: 12:30
      version: 1.10
      code: {gte: 0500, lt: 1_000}
      size: {in: [1_000, 2.50]}
"""
    status, output = check(tmp_path, text)
    assert 0 == status
    assert [
        (
            "DIR/r.yaml:4:16: warning: rules[0].match.service: YAML reads the unquoted 0123 as the octal number "
            '83, not as text: quote it ("0123") if the text is meant, or write 123 if the decimal number is'
        ),
        (
            "DIR/r.yaml:5:11: warning: rules[0].match.at: YAML reads the unquoted 12:30 as the base-60 number "
            '750, not as text: quote it ("12:30") if the text is meant, or write 750 if the number is'
        ),
        (
            "DIR/r.yaml:6:16: warning: rules[0].match.version: YAML reads the unquoted 1.10 as the number 1.1, "
            'not as text: quote it ("1.10") if the text is meant, or write 1.1 if the number is'
        ),
        (
            "DIR/r.yaml:7:19: warning: rules[0].match.code.gte: YAML reads the unquoted 0500 as the octal "
            'number 320, not as text: quote it ("0500") if the text is meant, or write 500 if the decimal '
            "number is"
        ),
        (
            "DIR/r.yaml:8:19: warning: rules[0].match.size.in[0]: YAML reads the unquoted 1_000 as the number "
            '1000, not as text: quote it ("1_000") if the text is meant, or write 1000 if the number is'
        ),
        (
            "DIR/r.yaml:8:26: warning: rules[0].match.size.in[1]: YAML reads the unquoted 2.50 as the number "
            '2.5, not as text: quote it ("2.50") if the text is meant, or write 2.5 if the number is'
        ),
        ("OK: 1 file(s), 1 rule(s), 0 error(s), 6 warning(s)"),
    ] == output.splitlines()


def test_an_octal_number_says_the_decimal_number_as_written(tmp_path: Path) -> None:
    """The decimal number a warning offers for an octal one keeps its sign and drops YAML's
    underscores: `-0123` is -123 (not 123, a number of the other sign), `01_0` is 10."""
    status, output = check(tmp_path, "name: x\nmatch: {delta: -0123, port: 01_0}\n")
    assert 0 == status
    assert [
        (
            "DIR/r.yaml:2:16: warning: match.delta: YAML reads the unquoted -0123 as the octal number -83, not "
            'as text: quote it ("-0123") if the text is meant, or write -123 if the decimal number is'
        ),
        (
            "DIR/r.yaml:2:29: warning: match.port: YAML reads the unquoted 01_0 as the octal number 8, not as "
            'text: quote it ("01_0") if the text is meant, or write 10 if the decimal number is'
        ),
        "OK: 1 file(s), 1 rule(s), 0 error(s), 2 warning(s)",
    ] == output.splitlines()


def test_a_number_where_a_text_is_taken_says_to_quote_it_as_written(tmp_path: Path) -> None:
    """`tags: [2024]` or `startswith: 0123` (which YAML reads as the octal 83) is an error that
    says to quote the value as it is written."""
    status, output = check(tmp_path, "name: x\nmatch: {path: {startswith: 0123}}\nalert: {tags: [2024]}\n")
    assert 1 == status
    assert [
        'DIR/r.yaml:2:28: error: match.path.startswith: expected a string, got 83: quote it ("0123") for the text',
        'DIR/r.yaml:3:16: error: alert.tags[0]: expected a string, got 2024: quote it ("2024") for the text',
        "FAILED: 1 file(s), 0 rule(s), 2 error(s), 0 warning(s)",
    ] == output.splitlines()


def test_a_number_with_an_exponent_that_yaml_read_as_text_says_what_to_write(tmp_path: Path) -> None:
    """YAML 1.1 reads `1e3` and `1.5e3` as text (a number with an exponent needs a point and a
    signed exponent, `1.0e+3`), so `gt: 1e3` or `count: 1e1` was "expected a number, got
    "1e3"", as if the text were what was written wrong: the error says the number to write."""
    text = (
        "name: x\nmatch: {a: {gt: 1e3}, b: {lt: 2E-3}, c: {lt: 1e-7}, d: {gt: 1e400}}\n"
        "threshold: {count: 1e1, window: 1m}\n"
    )
    said = "as text (a number with an exponent needs a point and a signed exponent, 1.0e+3): write"
    status, output = check(tmp_path, text)
    assert (
        1,
        [
            f'DIR/r.yaml:2:17: error: match.a.gt: expected a number, got "1e3": YAML reads 1e3 {said} 1000',
            f'DIR/r.yaml:2:31: error: match.b.lt: expected a number, got "2E-3": YAML reads 2E-3 {said} 0.002',
            f'DIR/r.yaml:2:46: error: match.c.lt: expected a number, got "1e-7": YAML reads 1e-7 {said} 1.0e-07',
            'DIR/r.yaml:2:61: error: match.d.gt: expected a number, got "1e400"',
            f'DIR/r.yaml:3:20: error: threshold.count: expected an integer, got "1e1": YAML reads 1e1 {said} 10',
            "FAILED: 1 file(s), 0 rule(s), 5 error(s), 0 warning(s)",
        ],
    ) == (status, output.splitlines())


def test_an_alias_inside_what_it_names_is_an_error_at_its_key(tmp_path: Path) -> None:
    """`details: &d` holding `self: *d` never ends: check said "document nested too deeply" at
    1:1, naming no line of the file; it names the key holding the alias and the anchor's line."""
    text = "name: x\nmatch: {a: 1}\nalert:\n  details: &d\n    runbook: r\n    again: *d\n"
    status, output = check(tmp_path, text)
    assert (
        1,
        [
            "DIR/r.yaml:6:5: error: alert.details.again: this alias names the mapping or list that holds it "
            "(alert.details, line 4), so it would never end: an alias may only repeat a mapping or list outside it",
            "FAILED: 1 file(s), 0 rule(s), 1 error(s), 0 warning(s)",
        ],
    ) == (status, output.splitlines())


def test_conditions_nested_hundreds_deep_are_an_error_at_the_line_not_a_traceback(tmp_path: Path) -> None:
    """330 `not:` within one another: check, replay and explain ended in a RecursionError's
    traceback (the checks that walk a condition go a few frames deep per level); now the
    nesting is an error at the line where it goes deeper than 128 levels."""
    text = "name: x\nmatch:\n" + "".join("  " * (i + 1) + "not:\n" for i in range(330)) + "    a: 1\n"
    status, output = check(tmp_path, text)
    said = "document nested too deeply: more than 128 mappings and lists within one another"
    assert (1, [f"DIR/r.yaml:130:257: error: {said}", "FAILED: 1 file(s), 0 rule(s), 1 error(s), 0 warning(s)"]) == (
        status,
        output.splitlines(),
    )
    explained = rulesd_cli("explain", "--rules", str(tmp_path / "r.yaml"), '{"a": 2}')
    assert (1, f"{tmp_path}/r.yaml:130:257: error: {said}\n") == (explained.returncode, explained.stderr)


def test_a_rule_s_own_triggering_rules_detail_is_warned_about_at_its_key(tmp_path: Path) -> None:
    """Every alert's "Triggering Rules" detail names the rules that fired, so a rule's own detail
    of that name was dropped from every page without a word; its "Event Source" is sent where no
    event's source is said (an expected group never seen), and is not warned about."""
    text = (
        "name: x\nmatch: {a: 1}\nalert:\n  details:\n    Triggering Rules: disk checks\n"
        "    Event Source: the disk monitor\n"
    )
    for _ in range(2):  # (read back from the rule cache the second time: the warning is said again)
        status, output = check(tmp_path, text)
        assert (
            0,
            [
                "DIR/r.yaml:5:5: warning: alert.details[\"Triggering Rules\"]: 'Triggering Rules' is the detail "
                "rulesd writes itself, the names of the rules that fired: this value is never sent; give the detail "
                "another name",
                "OK: 1 file(s), 1 rule(s), 0 error(s), 1 warning(s)",
            ],
        ) == (status, output.splitlines())


def test_a_key_indented_out_of_its_block_is_the_line_named(tmp_path: Path) -> None:
    """A key in the middle of a block moved to its parent's column is valid YAML up to the line
    after it, where YAML stopped and the error was: it is at the key when it is no key of a
    rule, written at a rule's keys' column, and the block it interrupts takes it (`tags` of an
    alert, with a block of its own or not; a field of a match, unless it reads as a rule key
    misspelled), and when it is the first line under a key it leaves empty. A rule key there
    (`throttle`) may be right where it is: the error stays at the line after it."""
    head = "rules:\n  - name: a\n"
    assert_one_error_each(
        tmp_path,
        [
            (
                head + "    match: {m: x}\n    alert:\n      message: x\n    tags: [a]\n      priority: P2\n"
                "    throttle: 5m\n",
                "6:5: error: YAML syntax error: this line is indented to column 5, but it is no key of a rule: it "
                "belongs under 'alert' (line 4), whose keys (lines 5 and 7) are at column 7: indent it to column 7, "
                "with the lines under it",
            ),
            (
                head + "    match:\n      service: auth\n    event: login_failed\n      user: {exists: true}\n"
                "    throttle: 5m\n",
                "5:5: error: YAML syntax error: this line is indented to column 5, but it is no key of a rule: it "
                "belongs under 'match' (line 3), whose keys (lines 4 and 6) are at column 7: indent it to column 7, "
                "with the lines under it",
            ),
            (
                head + "    match: {m: x}\n    alert:\n      message: x\n    details:\n        a: b\n      note: n\n",
                "6:5: error: YAML syntax error: this line is indented to column 5, but it is no key of a rule: it "
                "belongs under 'alert' (line 4), whose keys (lines 5 and 8) are at column 7: indent it to column 7, "
                "with the lines under it",
            ),
            (
                head + "    match:\n      service: auth\n    thresold: 5\n      user: {exists: true}\n",
                "6:11: error: YAML syntax error: a ':' after the text '5 user', which started on line 5 (is this line "
                "indented wrong, or line 5, or is a ':' missing there?)",
            ),
            (  # (a list item after an item opening a block is its sibling, not a key it left empty)
                head + "    sequence:\n      steps:\n        - match:\n        - absent: x\n            y: 1\n",
                "7:14: error: YAML syntax error: a ':' after the text 'x y', which started on line 6 (is this line "
                "indented wrong, or line 6, or is a ':' missing there?)",
            ),
            (
                head + "    match:\n    type: http_access\n      status: 500\n    throttle: 5m\n",
                "4:5: error: YAML syntax error: this line is indented to column 5, as 'match' above it is, which "
                "leaves 'match' empty, but the line after it is at column 7: indent it to column 7, under 'match' (or "
                "line 5 to column 5)",
            ),
        ],
    )


def test_a_device_named_as_a_rule_test_or_config_file_is_an_error_not_read_forever(tmp_path: Path) -> None:
    """`/dev/zero` named where a file is read (rules, a test's rule_files, a config) is said to be a
    device; it was read until memory ran out (here a limit of 1.5 GB: a MemoryError traceback)."""
    (tmp_path / "t.test.yaml").write_text(
        "rule_files: [/dev/zero]\ntests:\n  - name: t\n    events: [{event: {a: 1}}]\n    expect_alerts: []\n"
    )

    said = "/dev/zero: error: cannot read: it is a character device, not a file\n"
    for args in (["check", "/dev/zero"], ["test", "t.test.yaml"], ["check", "--config", "/dev/zero"]):
        limit = (resource.RLIMIT_AS, 1536 << 20)
        result = rulesd_cli(*args, cwd=tmp_path, env={"RULESD_CACHE_DIR": ""}, rlimit=limit)
        assert (1, "") == (result.returncode, result.stderr), args
        assert result.stdout.startswith(said), args


def test_a_rule_file_saved_as_utf16_is_said_to_be_utf16(tmp_path: Path) -> None:
    """A file that Windows PowerShell's `>` wrote (UTF-16 with its byte order mark) is named as
    such, not only as "not valid UTF-8 (byte 0xff)"."""
    (tmp_path / "r.yaml").write_bytes("\ufeffname: a\nmatch: {level: error}\n".encode("utf-16-le"))
    result = rulesd_cli("check", "r.yaml", cwd=tmp_path)
    said = (
        "r.yaml:1:1: error: not valid UTF-8 (byte 0xff): the file is UTF-16 (it begins with UTF-16's byte order "
        "mark); save it as UTF-8\n"
    )
    assert (1, said) == (result.returncode, result.stdout[: result.stdout.index("FAILED")])


def test_an_integer_longer_than_python_reads_is_said_as_such(tmp_path: Path) -> None:
    """An unquoted integer of more than 4300 digits (Python's limit on reading one from text): the
    error said "is not a valid !!int: a number needs no tag", of a number written with none."""
    assert (
        1,
        "DIR/r.yaml:2:13: error: '10000000000000000000'… is an integer of 5001 digits, more than the 4300 read "
        "as a number: quote it if the text is meant\n"
        "FAILED: 1 file(s), 0 rule(s), 1 error(s), 0 warning(s)\n",
    ) == check(tmp_path, "name: a\nmatch: {id: 1" + "0" * 5000 + "}\n")


def test_a_rule_listed_again_by_an_alias_is_said_to_be_so(tmp_path: Path) -> None:
    """`- *a` after the rule anchored `&a`: the duplicate name was said at the anchor's place,
    "also defined at" that same place. It says an alias lists the rule again, and how to copy it."""
    text = "rules:\n  - &a\n    name: r\n    match: {level: error}\n  - *a\n"
    assert (
        1,
        "DIR/r.yaml:3:11: error: duplicate rule name 'r': the rule written here is listed again by a YAML alias "
        "of it (`- *NAME`); to copy it, merge it and rename the copy (`- <<: *NAME` then `name: ...`)\n"
        "FAILED: 1 file(s), 0 rule(s), 1 error(s), 0 warning(s)\n",
    ) == check(tmp_path, text)
    assert 0 == check(tmp_path, text.replace("- *a", "- <<: *a\n    name: s"))[0]

    test = "rule_files: [r.yaml]\ntests:\n  - &t\n    name: t\n    events: [{event: {level: error}}]\n"
    (tmp_path / "r.test.yaml").write_text(test + "    expect_alerts: []\n  - *t\n")
    tested = rulesd_cli("test", "r.test.yaml", cwd=tmp_path)
    assert (
        1,
        "r.test.yaml:4:11: error: tests[1].name: duplicate test name 't': the test written here is listed again by "
        "a YAML alias of it (`- *NAME`); to copy it, merge it and rename the copy (`- <<: *NAME` then `name: ...`)",
    ) == (tested.returncode, tested.stdout.splitlines()[0])
