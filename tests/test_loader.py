"""Loading rule files: every problem reported as `path:line:col: error: message`."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rulesd.errors import RuleError, SourceLocation
from rulesd.rules import loader, rule_directories
from rulesd.rules.fields import make_getter
from rulesd.rules.lists import NamedList
from rulesd.rules.loader import check_paths, load_ruleset
from rulesd.rules.model import NewValue, Responder, Threshold
from rulesd.rules.templates import Template, parse_template
from tests.daemon_process import wait_until
from tests.run_cli import rulesd_cli

INVALID = os.path.join(os.path.dirname(__file__), "data", "invalid")
DURATION_HELP = (
    "a duration is a number of seconds or a string like 30s, 5m, 2h, 1d or 1h30m "
    "(each unit at most once, largest first)"
)
PATH_HELP = "a field path is one or more non-empty names joined by dots, without braces (e.g. http.status)"
NAME_HELP = "a rule name starts with a letter or digit, then up to 99 letters, digits, '_', '.' or '-'"
RESPONDER_HELP = (
    "a responder is {type: user} with exactly one of username or id, "
    "or {type: team|escalation|schedule} with exactly one of name or id"
)

INVALID_FILES = [
    (
        "yaml_syntax.yaml",
        "4:30: error: YAML syntax error: the '{' at column 12 is not closed on its line: a '}' missing here?",
    ),
    ("duplicate_key.yaml", "4:3: error: duplicate key 'service' (first defined on line 3)"),
    ("tab_indent.yaml", "3:1: error: YAML forbids tabs for indentation: indent with spaces"),
    ("unknown_key.yaml", "3:1: error: throtle: unknown key 'throtle'; did you mean 'throttle'?"),
    (
        "unknown_operator.yaml",
        "3:11: error: match.level.regx: unknown key 'regx'; did you mean 'regex'?",
    ),
    ("wrong_type.yaml", '3:10: error: enabled: expected true or false, got "yes"'),
    ("string_bound.yaml", '3:22: error: match["http.status"].gte: expected a number, got "500"'),
    ("nan_bound.yaml", "3:21: error: match.latency_ms.gte: expected a finite number, got .nan"),
    (
        "huge_bound.yaml",
        "3:20: error: match.latency_ms.lt: expected a finite number, "
        "got an integer of 401 digits, beyond a double's range",
    ),
    ("bad_priority.yaml", '4:13: error: alert.priority: "P0" is not one of: P1, P2, P3, P4, P5'),
    ("bad_duration.yaml", f'3:11: error: throttle: "5 minutes": {DURATION_HELP}'),
    ("zero_window.yaml", "3:31: error: threshold.window: the window must be longer than 0s"),
    (
        "bad_regex.yaml",
        "3:20: error: match.message.regex: invalid regex '(timeout|refused': missing ) at position 1",
    ),
    (
        "malformed_template.yaml",
        "4:12: error: alert.message: malformed template: unclosed '{' at position 12 (write '{{' for a brace)",
    ),
    ("bad_field_path.yaml", f'3:3: error: match["http..status"]: invalid key: {PATH_HELP}'),
    ("bad_group_by.yaml", f'3:46: error: threshold.group_by[0]: "{{host}}": {PATH_HELP}'),
    ("bad_name.yaml", f'1:7: error: name: "has spaces": {NAME_HELP}'),
    ("missing_match.yaml", "1:1: error: (top level): missing required key 'match'"),
    ("bad_responder.yaml", f"4:16: error: alert.responders[0]: {RESPONDER_HELP}"),
    ("empty.yaml", "1:1: error: empty file: expected a rule or a list under 'rules:'"),
    ("only_comment.yaml", "1:1: error: empty file: expected a rule or a list under 'rules:'"),
    (
        "python_tag.yaml",
        "2:8: error: the tag '!!python/object/apply:os.system' is not allowed: only plain YAML data is accepted",
    ),
    ("not_utf8.yaml", "2:22: error: not valid UTF-8 (byte 0xe9)"),
    (
        "control_character.yaml",
        "2:20: error: YAML syntax error: the character U+0007 is not allowed",
    ),
    ("item_not_mapping.yaml", '4:5: error: rules[1]: expected a mapping, got "just a string"'),
    ("rules_not_a_list.yaml", "2:3: error: rules: expected a list, got a mapping"),
    (
        "top_level_list.yaml",
        "1:1: error: (top level): expected a mapping, got a list: write 'rules:' on a line above the list of rules",
    ),
]


def check_lines(*paths: str | Path) -> list[str]:
    """The problems `rulesd check` would print for `paths`."""
    return [str(p) for p in check_paths(paths).problems]


@pytest.mark.parametrize(("name", "expected"), INVALID_FILES)
def test_invalid_file(name: str, expected: str) -> None:
    """Each invalid file yields exactly one problem, at the right place, saying what is wrong."""
    path = os.path.join(INVALID, name)
    assert [f"{path}:{expected}"] == check_lines(path)


def test_every_invalid_file_is_in_the_table() -> None:
    """No file in tests/data/invalid goes untested."""
    tested = {name for name, _ in INVALID_FILES} | {"multi_error.yaml", "duplicate_names"}
    assert sorted(tested) == sorted(os.listdir(INVALID))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("name: a\nmatch:\n  x: 1\n\t\ty: 2\n", "4:1"),
        ("rules:\n  - name: a\n    match:\n  \t  x: 1\n", "4:3"),
        ("name: a\nmatch:\n  x:\n    - 1\n\t- 2\n", "5:1"),
    ],
)
def test_a_tab_in_indentation_is_named_at_its_place(tmp_path: Path, text: str, where: str) -> None:
    """Wherever a tab indents a line, the error says YAML forbids it, at the tab."""
    path = tmp_path / "r.yaml"
    path.write_text(text)
    assert [f"{path}:{where}: error: YAML forbids tabs for indentation: indent with spaces"] == check_lines(path)


def test_a_duplicate_key_does_not_hide_the_other_errors_of_its_file(tmp_path: Path) -> None:
    """The duplicate is reported, and the file is still checked (its first value kept)."""
    path = tmp_path / "r.yaml"
    path.write_text(
        "rules:\n"
        "  - name: a\n"
        "    match: {service: x}\n"
        "    throtle: 5m\n"
        "    match: {service: y}\n"
        "  - name: b\n"
        "    match: {level: {regx: a}}\n"
    )
    assert [
        f"{path}:4:5: error: rules[0].throtle: unknown key 'throtle'; did you mean 'throttle'?",
        f"{path}:5:5: error: duplicate key 'match' (first defined on line 3)",
        f"{path}:7:21: error: rules[1].match.level.regx: unknown key 'regx'; did you mean 'regex'?",
    ] == check_lines(path)


def test_duplicate_names_across_files_are_reported_at_both_places() -> None:
    """A name used twice is an error at each definition, naming the other."""
    first = os.path.join(INVALID, "duplicate_names", "first.yaml")
    second = os.path.join(INVALID, "duplicate_names", "second.yaml")
    expected = [
        f"{first}:2:11: error: duplicate rule name 'dup' (also defined at {second}:2:7)",
        f"{second}:2:7: error: duplicate rule name 'dup' (also defined at {first}:2:11)",
    ]
    assert expected == check_lines(os.path.join(INVALID, "duplicate_names"))


def test_duplicate_names_within_one_file(tmp_path: Path) -> None:
    """Two rules of one file with the same name are both reported."""
    path = tmp_path / "r.yaml"
    path.write_text("rules:\n  - {name: a, match: {x: 1}}\n  - {name: a, match: {x: 2}}\n")
    expected = [
        f"{path}:2:12: error: duplicate rule name 'a' (also defined at {path}:3:12)",
        f"{path}:3:12: error: duplicate rule name 'a' (also defined at {path}:2:12)",
    ]
    assert expected == check_lines(path)


def test_multi_error_file_reports_every_problem() -> None:
    """Schema and semantic problems of every rule are all reported, in file order."""
    path = os.path.join(INVALID, "multi_error.yaml")
    expected = [
        '5:26: error: rules[0].match["http.status"].gte: expected a number, got "500"',
        "6:24: error: rules[0].match.message.regex: invalid regex '(unclosed': missing ) at position 1",
        "7:24: error: rules[0].threshold.count: 0 is less than the minimum of 1",
        '9:17: error: rules[0].alert.priority: "P9" is not one of: P1, P2, P3, P4, P5',
        "10:16: error: rules[0].alert.message: malformed template: '{a!r}' at position 5 "
        "is not a field path (only {field.path} is allowed: no expressions, indexing or "
        "format specs)",
        f'11:11: error: rules[1].name: "bad name!": {NAME_HELP}',
        "13:5: error: rules[2]: missing required key 'name'",
        "14:5: error: rules[2].descripton: unknown key 'descripton'; did you mean 'description'?",
        "17:12: error: rules[3].match.any: must not be empty",
        "18:12: error: rules[3].match.not: expected a mapping, got a list",
        f'19:15: error: rules[3].throttle: "soon": {DURATION_HELP}',
        "20:5: error: rules[4]: expected a mapping, got 42",
    ]
    assert [f"{path}:{line}" for line in expected] == check_lines(path)


def test_no_message_is_the_unhelpful_any_of_schemas_text() -> None:
    """jsonschema's "is not valid under any of the given schemas" never reaches the user."""
    messages = check_lines(INVALID)
    assert [] == [m for m in messages if "any of the given schemas" in m]
    assert len(messages) > len(INVALID_FILES)


def test_valid_rules_load_with_everything_compiled(tmp_path: Path) -> None:
    """A valid file gives compiled rules carrying their definition."""
    path = tmp_path / "payments.yaml"
    path.write_text(
        "rules:\n"
        "  - name: upstream\n"
        "    description: cannot reach upstream\n"
        "    match: {service: payments, http.status: {gte: 500}}\n"
        "    threshold: {count: 5, window: 2m, group_by: [host]}\n"
        "    throttle: 1h30m\n"
        "    alert:\n"
        "      priority: P1\n"
        "      message: failing on {host}\n"
        "      responders: [{type: team, name: ops}, {type: user, username: a@example.com}]\n"
        "  - name: quiet\n"
        "    enabled: false\n"
        "    match: {service: payments}\n"
    )
    result = check_paths([path])
    assert () == result.problems
    assert result.ruleset is not None
    upstream, quiet = result.ruleset.rules
    event = {"service": "payments", "http": {"status": 502}, "host": "h1"}
    assert ("upstream", "cannot reach upstream", True) == (
        upstream.name,
        upstream.description,
        upstream.enabled,
    )
    assert Threshold(5, 120.0, ("host",)) == upstream.threshold
    assert 5400.0 == upstream.throttle
    assert "P1" == upstream.priority
    assert "failing on h1" == upstream.alert.message.render(event)  # type: ignore[union-attr]
    assert (Responder("team", "name", "ops"), Responder("user", "username", "a@example.com")) == (
        upstream.alert.responders
    )
    assert upstream.match(event) is True
    assert upstream.match({**event, "http": {"status": 404}}) is False
    assert (False, "P3") == (quiet.enabled, quiet.priority)
    assert f"{path}:2:5" == str(upstream.location)


def test_single_rule_file(tmp_path: Path) -> None:
    """A file may hold one rule mapping instead of a `rules:` list."""
    path = tmp_path / "one.yml"
    path.write_text("name: one\nmatch: {level: [error, critical]}\n")
    ruleset = load_ruleset([path])
    assert ["one"] == [r.name for r in ruleset.rules]


def test_directories_are_searched_recursively_skipping_tests_and_hidden(tmp_path: Path) -> None:
    """`*.yaml`/`*.yml` below a directory load; rule tests and hidden entries do not."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "..data").mkdir()
    (tmp_path / "a.yaml").write_text("name: a\nmatch: {x: 1}\n")
    (tmp_path / "sub" / "b.yml").write_text("name: b\nmatch: {x: 1}\n")
    (tmp_path / "a.test.yaml").write_text("not: [a rule")
    (tmp_path / ".hidden.yaml").write_text("not: [a rule")
    (tmp_path / "..data" / "a.yaml").write_text("name: a\nmatch: {x: 1}\n")
    (tmp_path / "notes.txt").write_text("not: [a rule")
    result = check_paths([tmp_path])
    assert () == result.problems
    assert (str(tmp_path / "a.yaml"), str(tmp_path / "sub" / "b.yml")) == result.files


def test_a_directory_linked_into_itself_is_searched_once(tmp_path: Path) -> None:
    """A link back to a parent directory would be followed until paths grew too long (every
    rule read dozens of times, each a duplicate name): the directory is searched once, and
    the link is named in a warning."""
    rules = tmp_path / "rules"
    (rules / "sub").mkdir(parents=True)
    (rules / "a.yaml").write_text("name: a\nmatch: {x: 1}\n")
    (rules / "sub" / "b.yaml").write_text("name: b\nmatch: {x: 1}\n")
    (rules / "sub" / "back").symlink_to(rules)
    result = check_paths([rules])
    assert (str(rules / "a.yaml"), str(rules / "sub" / "b.yaml")) == result.files
    assert [
        f"{rules}/sub/back: warning: skipped: the same directory as {rules} (a link to a directory already searched)"
    ] == [str(p) for p in result.problems]
    assert result.ruleset is not None and ["a", "b"] == [r.name for r in result.ruleset.rules]


def test_a_named_pipe_in_a_rule_directory_is_an_error_not_a_wait(tmp_path: Path) -> None:
    """A FIFO named like a rule file in a searched directory is not opened (that waited for a
    writer forever: `rulesd check` and a reload hung); it is an error that names it."""
    (tmp_path / "a.yaml").write_text("name: a\nmatch: {x: 1}\n")
    os.mkfifo(tmp_path / "fifo.yaml")
    result = rulesd_cli("check", str(tmp_path), timeout=30)  # (a wait fails the test)
    assert 1 == result.returncode
    assert (
        f"{tmp_path}/fifo.yaml: error: not a regular file (a pipe, socket or device)\n"
        "FAILED: 1 file(s), 0 rule(s), 1 error(s), 0 warning(s)\n"
    ) == result.stdout


def test_the_root_directory_as_rules_is_an_error_said_at_once_not_a_walk_of_everything(tmp_path: Path) -> None:
    """`rules: ['/']` in a configuration walked the whole file system (/proc's ever-changing
    tree too) and read every *.yaml on the way as rules: `check --config` had not ended after
    20 s. A directory past MAX_ENTRIES files and directories is an error at the configuration's
    line, said in about a second, none of its files read; the other rule paths are checked
    still."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text("name: a\nmatch: {x: 1}\nthrottle: 5m5m\n")
    (tmp_path / "rulesd.yaml").write_text("rules: ['/', rules]\nsource: {type: stdin}\n")
    result = rulesd_cli("check", "--config", str(tmp_path / "rulesd.yaml"), timeout=30)
    assert 1 == result.returncode
    assert [
        f'{tmp_path}/rules/a.yaml:3:11: error: throttle: "5m5m": a duration is a number of seconds or a string like '
        "30s, 5m, 2h, 1d or 1h30m (each unit at most once, largest first)",
        f"{tmp_path}/rulesd.yaml:1:9: error: rules[0]: / holds more than 100,000 files and directories: a rule "
        "directory is searched to its depths for *.yaml and *.yml, so it should hold the rule files and little else; "
        "name the directory they are in",
        f"FAILED: config {tmp_path}/rulesd.yaml, 1 file(s), 0 rule(s), 2 error(s), 0 warning(s)",
    ] == result.stdout.splitlines()


def test_a_rule_directory_past_the_bound_loads_none_of_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_ENTRIES (counting directories and files, a hidden directory's contents not) a
    rule directory is an error and none of the files found so far is read; up to it, all are.
    Rule test directories are bounded alike."""
    (tmp_path / "sub").mkdir()
    (tmp_path / ".git").mkdir()
    for name in ("a.yaml", "sub/b.yaml", ".git/c", ".git/d", ".git/e"):
        (tmp_path / name).write_text(f"name: {name[-6]}\nmatch: {{x: 1}}\n")
    monkeypatch.setattr(rule_directories, "MAX_ENTRIES", 3)  # a.yaml, sub, sub/b.yaml (not .git, hidden)
    result = check_paths([tmp_path])
    assert ((str(tmp_path / "a.yaml"), str(tmp_path / "sub" / "b.yaml")), ()) == (result.files, result.problems)
    (tmp_path / "sub" / "notes.txt").touch()
    result = check_paths([tmp_path])
    expected = [f"{tmp_path}: error: {rule_directories.too_many_entries(str(tmp_path))}"]
    assert ((), expected) == (result.files, [str(p) for p in result.problems])
    assert ([], expected) == (lambda found: (found[0], [str(p) for p in found[1]]))(
        loader.discover_test_files([str(tmp_path)])
    )


def test_a_file_under_two_names_is_read_once(tmp_path: Path) -> None:
    """A link to a rule file (`current.yaml -> v2.yaml`) names the same rules: read once, under
    the first name found, not reported as duplicate rule names."""
    (tmp_path / "v2.yaml").write_text("name: a\nmatch: {x: 1}\n")
    (tmp_path / "current.yaml").symlink_to("v2.yaml")
    result = check_paths([tmp_path, tmp_path / "v2.yaml"])
    assert ((str(tmp_path / "current.yaml"),), ()) == (result.files, result.problems)


def test_a_link_loop_or_a_dangling_link_is_said_as_such_not_as_missing(tmp_path: Path) -> None:
    """`check loop.yaml` (a link to itself) and a link whose target was removed (a deploy that
    renamed the file) say what is wrong with the path, for rules and a test's rule_files alike."""
    (tmp_path / "loop.yaml").symlink_to("loop.yaml")
    (tmp_path / "gone.yaml").symlink_to("v1.yaml")
    loop, gone = tmp_path / "loop.yaml", tmp_path / "gone.yaml"
    assert [f"{loop}: error: too many levels of symbolic links"] == check_lines(loop)
    assert [f"{gone}: error: it is a link to v1.yaml, which does not exist"] == check_lines(gone)
    test = tmp_path / "t.test.yaml"
    test.write_text(
        "rule_files: [loop.yaml, gone.yaml]\ntests: [{name: t, events: [{event: {}}], expect_alerts: []}]\n"
    )
    assert [
        f"{test}:1:14: error: rule_files[0]: too many levels of symbolic links",
        f"{test}:1:25: error: rule_files[1]: it is a link to v1.yaml, which does not exist",
    ] == rulesd_cli("test", str(test)).stdout.splitlines()[:2]


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    """A missing path is an error; a directory without rules is only a warning."""
    missing = tmp_path / "nope.yaml"
    assert [f"{missing}: error: no such file or directory"] == check_lines(missing)
    result = check_paths([tmp_path])
    assert [f"{tmp_path}: warning: no rule files (*.yaml, *.yml) found"] == [str(p) for p in result.problems]
    assert result.ruleset is not None


def test_load_ruleset_raises_with_every_error() -> None:
    """load_ruleset refuses a rule set with any error and carries all of them."""
    path = os.path.join(INVALID, "multi_error.yaml")
    with pytest.raises(RuleError) as caught:
        load_ruleset([path])
    assert 12 == len(caught.value.problems)


def test_fingerprint_follows_the_definition(tmp_path: Path) -> None:
    """A rule's fingerprint changes with its definition and only then."""
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nmatch: {x: 1}\n")
    before = load_ruleset([path]).rules[0].fingerprint
    path.write_text("# a comment\nname: r\nmatch:\n  x: 1\n")
    same = load_ruleset([path]).rules[0].fingerprint
    path.write_text("name: r\nmatch: {x: 2}\n")
    changed = load_ruleset([path]).rules[0].fingerprint
    assert (before, True) == (same, before != changed)


def test_yaml_features_that_are_plain_data_are_accepted(tmp_path: Path) -> None:
    """Anchors, aliases and merge keys work; dates stay strings."""
    path = tmp_path / "r.yaml"
    path.write_text(
        "common: &common {service: payments}\nrules:\n  - name: a\n    match: {<<: *common, day: 2024-01-01}\n"
    )
    assert ["common: unknown key 'common'; expected one of: lists, rules"] == [
        p.message for p in check_paths([path]).problems
    ]
    path.write_text(
        "rules:\n"
        "  - name: a\n"
        "    match: &m {service: payments, day: 2024-01-01}\n"
        "  - name: b\n"
        "    match: {<<: *m, level: error}\n"
    )
    a, b = load_ruleset([path]).rules
    event = {"service": "payments", "day": "2024-01-01", "level": "error"}
    assert (True, True, False) == (a.match(event), b.match(event), b.match({**event, "day": 1}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: a\nmatch: !!python/name:os.system {}\n", "2:8: error: the tag '!!python/name:os.system'"),
        ("name: !!python/str a\nmatch: {x: 1}\n", "1:7: error: the tag '!!python/str'"),
        ("name: a\nmatch: !custom {x: 1}\n", "2:8: error: the tag '!custom'"),
        ("name: a\nmatch: {x: !!set {a, b}}\n", "2:12: error: the tag '!!set'"),
    ],
)
def test_tags_that_are_not_plain_data_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    """No YAML tag can build objects, and none is silently ignored."""
    path = tmp_path / "r.yaml"
    path.write_text(text)
    assert [f"{path}:{expected} is not allowed: only plain YAML data is accepted"] == check_lines(path)


NO_TAG = ": a number needs no tag (count: 5), nor a duration, written with its unit (window: 5m)"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("!!int x", f"'x' is not a valid !!int{NO_TAG}"),
        ("!!int 0x1g", f"'0x1g' is not a valid !!int{NO_TAG}"),
        ("!!float x", f"'x' is not a valid !!float{NO_TAG}"),
        ("!!int 5m", f"'5m' is not a valid !!int{NO_TAG}"),
        ('!!int ""', f"'' is not a valid !!int{NO_TAG}"),  # (an IndexError in PyYAML: a traceback)
        ('!!float ""', f"'' is not a valid !!float{NO_TAG}"),
        (
            '!!int "017"',
            '!!int "017" is the octal number 15: write 17 with no tag if that decimal number is meant, else 15',
        ),
        (
            "!!int 017",  # (the tag asks for a number: quoting it, as at a plain 017, would not help)
            "!!int 017 is the octal number 15: write 17 with no tag if that decimal number is meant, else 15",
        ),
        (
            "!!int -0_17",
            "!!int -0_17 is the octal number -15: write -17 with no tag if that decimal number is meant, else -15",
        ),
        ("!!bool maybe", "'maybe' is not a valid !!bool"),
        ("!!timestamp 2020-99-99", "'2020-99-99' is not a valid !!timestamp"),
    ],
)
def test_a_plain_tag_on_a_text_it_cannot_read_is_a_located_error(tmp_path: Path, value: str, expected: str) -> None:
    """`!!int x` made PyYAML raise Python's own ValueError (`!!int ""` an IndexError), which
    ended `rulesd check` with a traceback: it is an error at its place, saying how rulesd writes
    a number. `!!int "017"`, which YAML 1.1 reads as octal 15, says so."""
    path = tmp_path / "r.yaml"
    path.write_text(f"name: a\nmatch: {{level: {value}}}\n")
    assert [f"{path}:2:16: error: {expected}"] == check_lines(path)


def test_a_value_a_tag_keeps_from_being_read_leaves_the_rest_checked(tmp_path: Path) -> None:
    """`!!int 017` or `!!int x` was the one error of its file: every other mistake of the file
    (a misspelled key, a bad duration) waited for the next run. The rest is read and checked,
    and the value, read as null, draws no "expected an integer, got null" besides."""
    path = tmp_path / "r.yaml"
    path.write_text(
        "rules:\n  - name: a\n    match: {code: !!int 017}\n    thresold: {count: 5}\n"
        "  - name: b\n    match: {c: 1}\n    threshold: {count: !!int x, window: 5mm}\n"
    )
    assert [
        f"{path}:3:19: error: !!int 017 is the octal number 15: write 17 with no tag if that decimal number is "
        "meant, else 15",
        f"{path}:4:5: error: rules[0].thresold: unknown key 'thresold'; did you mean 'threshold'?",
        f"{path}:7:24: error: 'x' is not a valid !!int{NO_TAG}",
        f'{path}:7:41: error: rules[1].threshold.window: "5mm": a duration is a number of seconds or a string like '
        "30s, 5m, 2h, 1d or 1h30m (each unit at most once, largest first)",
    ] == check_lines(path)


def test_a_number_tag_written_asks_for_the_number(tmp_path: Path) -> None:
    """`!!int 0x1F` is the number 31 because the tag says so: no warning that the text
    0x1F may have been meant, as at a plain 0x1F (quoting it would leave the tag's number)."""
    path = tmp_path / "r.yaml"
    path.write_text("name: a\nmatch: {code: !!int 0x1F, port: !!float 1_000, level: 0x1F}\n")
    assert [
        f"{path}:2:55: warning: match.level: YAML reads the unquoted 0x1F as the number 31, not as text: "
        'quote it ("0x1F") if the text is meant, or write 31 if the number is'
    ] == check_lines(path)


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    """A "billion laughs" document is a problem, not a hang or a crash."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert ["document too large (more than 1000000 nodes)"] == [p.message for p in check_paths([path]).problems]


def test_deep_nesting_is_a_problem(tmp_path: Path) -> None:
    """Absurdly nested YAML is reported, not a crash."""
    path = tmp_path / "deep.yaml"
    path.write_text("name: a\nmatch: {x: " + "[" * 5000 + "]" * 5000 + "}\n")
    problems = check_paths([path]).problems
    assert 1 <= len(problems)


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    """Editors that write a BOM do not break rule files."""
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfname: a\nmatch: {x: 1}\n")
    assert ["a"] == [r.name for r in load_ruleset([path]).rules]


YAML_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "match",
                    "rules",
                    "alert",
                    "threshold",
                    "throttle",
                    "regex",
                    "all",
                    "any",
                    "not",
                    "exists",
                    "in",
                    "message",
                    "priority",
                    "tags",
                    "count",
                    "window",
                    "group_by",
                    "details",
                    "responders",
                    "type",
                    "http.status",
                    "level",
                    "x",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


def _check_text(text: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fuzz.yaml")
        with open(path, "wb") as fh:
            fh.write(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
        result = check_paths([path])
    for problem in result.problems:
        assert "any of the given schemas" not in problem.message
        assert problem.location.path == path
    assert (result.ruleset is None) == bool(result.errors)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from("ab:- \n{}[]!&*#'\"|>%@`,?\t\\.0\x07é"), max_size=80))
def test_arbitrary_text_never_raises(text: str) -> None:
    """Any text at all gives problems or rules, never an exception."""
    _check_text(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(YAML_TEXT)
def test_arbitrary_yaml_values_never_raise(value: object) -> None:
    """Any YAML value, however close to a rule, gives problems or rules, never an exception."""
    import yaml

    _check_text(yaml.safe_dump(value, allow_unicode=True))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=60))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    """Undecodable bytes are problems too."""
    _check_text(data)


def test_a_word_yaml_reads_as_a_boolean_where_a_text_belongs_says_so(tmp_path: Path) -> None:
    """`name: off` is the boolean false in YAML 1.1: the error says why a text became one. In a
    condition's operand that takes only a text (`startswith`), that error is all: no warning
    beside it (see the next test)."""
    path = tmp_path / "r.yaml"
    path.write_text("name: off\nmatch: {x: 1, path: {startswith: off}, mode: off}\nalert: {tags: [on]}\n")
    hint = "YAML reads an unquoted yes, no, on or off as true or false: quote it for the text"
    assert [
        f"{path}:1:7: error: name: expected a string, got false ({hint})",
        f"{path}:2:34: error: match.path.startswith: expected a string, got false ({hint})",
        f"{path}:2:46: warning: match.mode: {boolean_word('off', 'false')}",
        f"{path}:3:16: error: alert.tags[0]: expected a string, got true ({hint})",
    ] == check_lines(path)


def boolean_word(word: str, value: str) -> str:
    """The warning about an unquoted `word` that YAML read as `value`."""
    return (
        f'YAML reads the unquoted {word} as {value}, not as text: quote it ("{word}") if the text is meant, '
        f"or write {value} if the boolean is"
    )


def test_an_unquoted_word_read_as_a_boolean_where_a_value_is_compared_is_warned_about(tmp_path: Path) -> None:
    """`country: NO` compares with false, never with the text "NO": a warning at each such word
    that is compared with an event's value (in a condition, a named list, an expected group),
    while the rules still load (an event may hold a boolean). Plain true and false, quoted words,
    `exists` and `nocase` (which take booleans) and other places draw none."""
    path = tmp_path / "r.yaml"
    path.write_text(
        "lists:\n"
        "  nordics: [SE, NO, 'DK']\n"
        "rules:\n"
        "  - name: a\n"
        "    match:\n"
        "      country: NO\n"
        "      region: [US, no, SE]\n"
        "      mode: {in: [on, 'off', true], not_equals: Off}\n"
        "      any: [{answer: YES}, {not: {tls: ON}}]\n"
        "      enabled: true\n"
        "      exists: off\n"
        "      user: {exists: yes, equals: 'No', nocase: on}\n"
        "    enabled: yes\n"
        "  - name: b\n"
        "    sequence:\n"
        "      steps:\n"
        "        - match: {state: on}\n"
        "        - absent: {match: {state: off}, for: 5m}\n"
        "      group_by: [host]\n"
        "  - name: c\n"
        "    match: {kind: beat}\n"
        "    absence: {window: 5m, group_by: [host], expect: [{host: NO}, {host: 'no'}]}\n"
        "    enabled: no\n"
    )
    result = check_paths([path])
    assert [
        f"{path}:2:17: warning: lists.nordics[1]: {boolean_word('NO', 'false')}",
        f"{path}:6:16: warning: rules[0].match.country: {boolean_word('NO', 'false')}",
        f"{path}:7:20: warning: rules[0].match.region[1]: {boolean_word('no', 'false')}",
        f"{path}:8:19: warning: rules[0].match.mode.in[0]: {boolean_word('on', 'true')}",
        f"{path}:8:49: warning: rules[0].match.mode.not_equals: {boolean_word('Off', 'false')}",
        f"{path}:9:22: warning: rules[0].match.any[0].answer: {boolean_word('YES', 'true')}",
        f"{path}:9:40: warning: rules[0].match.any[1].not.tls: {boolean_word('ON', 'true')}",
        f"{path}:11:15: warning: rules[0].match.exists: {boolean_word('off', 'false')}",
        f"{path}:17:26: warning: rules[1].sequence.steps[0].match.state: {boolean_word('on', 'true')}",
        f"{path}:18:35: warning: rules[1].sequence.steps[1].absent.match.state: {boolean_word('off', 'false')}",
        f"{path}:22:61: warning: rules[2].absence.expect[0].host: {boolean_word('NO', 'false')}",
    ] == [str(p) for p in result.problems]
    assert result.ruleset is not None
    rule = result.ruleset.by_name()["a"]
    event = {"country": False, "region": False, "mode": True, "answer": True, "enabled": True, "user": "no"}
    assert rule.match({**event, "exists": False})  # what was read is what is compared


def test_an_alert_s_every_part_is_compiled_and_every_malformed_template_said(tmp_path: Path) -> None:
    """Each of the alert's texts becomes its template (a text of the wrong kind is the schema's
    error alone), its responders and details kept in their order; a malformed template is an error
    wherever it is written, each at its own line, in the file's order."""
    good = (
        "rules:\n  - name: a\n    match: {x: 1}\n    alert:\n      priority: P2\n      message: '{host} down'\n"
        "      description: d {x}\n      alias: '{host}'\n      entity: e\n      note: n\n"
        "      tags: [t1, '{x}']\n      responders: [{type: team, name: ops}, {type: user, id: u1}]\n"
        "      details: {b: '{x}', a: plain}\n"
    )
    path = tmp_path / "good.yaml"
    path.write_text(good)
    (rule,) = load_ruleset([path]).rules
    alert = rule.alert
    event = {"host": "h", "x": 7}
    parts = (alert.message, alert.description, alert.alias, alert.entity, alert.note)
    assert ["P2", "h down", "d 7", "h", "e", "n"] == [alert.priority, *(t and t.render(event) for t in parts)]
    assert ["t1", "7"] == [t.render(event) for t in alert.tags]
    assert (Responder("team", "name", "ops"), Responder("user", "id", "u1")) == alert.responders
    assert [("b", "7"), ("a", "plain")] == [(k, t.render(event)) for k, t in alert.details]
    bad = good.replace("'{host} down'", "'{a!r}'").replace("'{x}']", "'{'] ").replace("b: '{x}'", "b: '}'")
    path.write_text(bad)
    lines = [line.split(": error: ")[0].removeprefix(f"{path}:") for line in check_lines(path)]
    assert ["6:16", "11:18", "13:20"] == lines


def test_the_rule_model_s_classes_compile_no_source_when_imported() -> None:
    """Every start imports the rules' model: a dataclass's class writes its methods as source and
    compiles it (~4.7 M instructions each, 5% of a warm start at 100 rules for four of them), a
    struct's does not. The kinds, templates and named lists are structs; what they compare and
    hash is the same (see the tests of each)."""
    program = (
        "import builtins, sys\n"
        "made = []\n"
        "run = builtins.exec\n"
        "def counted(source, *args, **kwargs):\n"
        "    if isinstance(source, str):\n"
        "        made.append(sys._getframe(1).f_code.co_filename)\n"
        "    return run(source, *args, **kwargs)\n"
        "builtins.exec = counted\n"
        "import rulesd.rules.model\n"
        "print(sorted(set(made)))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60)
    assert "[]" == done.stdout.strip()


def test_a_new_value_kind_compares_and_hashes_by_what_it_tests() -> None:
    """Two new_value kinds of one test are equal whatever their getters and what identifies the
    values they learnt; a template by its text and parts; a named list by its identity."""
    one = NewValue(("user",), ("host",), 60.0, None, (make_getter("user"),), "f1")
    other = NewValue(("user",), ("host",), 60.0, None, (), "f2")
    assert one == other and hash(one) == hash(other) and (one != other) is False
    assert one != NewValue(("user",), ("host",), 0.0) and one != ("user",)
    assert parse_template("{a} b") == Template("{a} b", parse_template("{a} b").parts)
    assert hash(parse_template("{a} b")) == hash(Template("{a} b", parse_template("{a} b").parts))
    assert parse_template("{a} b") != parse_template("{a} c")
    where = SourceLocation("f", 1, 1)
    assert NamedList("l", ("a",), where) != NamedList("l", ("a",), where)
    networks = NamedList("l", ("10.0.0.0/8", "10.1.0.0/16"), where, (where, where))
    assert (frozenset({"10.0.0.0/8", "10.1.0.0/16"}), None) == (networks.options, networks.network_issue)
    assert networks.is_networks() and not NamedList("l", ("a",), where, (where,)).is_networks()


def test_a_rule_set_that_scans_events_compiles_its_joined_texts_database_with_it(tmp_path: Path) -> None:
    """The database that scans a block's texts joined is compiled from when a daemon's rule set
    is built (its start and reloads), in a thread of its own, so that its loop never compiles it; other commands
    leave it until enough blocks have been scanned."""
    from rulesd.rules.cache import RuleCache

    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: panic, match: {message: {regex: 'panic: .*'}}}\n")
    cache = RuleCache(tmp_path / "cache")
    assert check_paths([rules], cache).ruleset is not None
    assert [] == list((tmp_path / "cache").glob(f"{loader.JOINED}-*.bin"))
    assert check_paths([rules], cache, daemon=True).ruleset is not None  # (compiled beside: not waited for)
    assert wait_until(lambda: 1 == len(list((tmp_path / "cache").glob(f"{loader.JOINED}-*.bin"))))


def test_a_rule_set_with_an_error_compiles_no_joined_texts_database(tmp_path: Path) -> None:
    """A reload refused for an error (its rules never run) starts no compile of its joined
    texts' database beside the running daemon."""
    from rulesd.rules.cache import RuleCache

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n"
        "  - {name: panic, match: {message: {regex: 'panic: .*'}}}\n"
        "  - {name: panic, match: {message: {contains: oops}}}\n"  # (a duplicate name: an error)
    )
    result = check_paths([rules], RuleCache(tmp_path / "cache"), daemon=True)
    assert result.ruleset is None and result.errors
    rules.write_text("rules:\n  - {name: panic, match: {message: {regex: 'panic: .*'}}}\n")
    assert check_paths([rules], RuleCache(tmp_path / "other"), daemon=True).ruleset is not None
    # (the same rules without the error: kept there)
    assert wait_until(lambda: list((tmp_path / "other").glob(f"{loader.JOINED}-*.bin")))
    assert [] == list((tmp_path / "cache").glob(f"{loader.JOINED}-*.bin"))


def test_a_replay_compiles_the_joined_texts_database_only_once_it_has_scanned_enough_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replay of a sample (a few blocks) with a rule set not in the cache scans its texts one
    by one and compiles no database of joined texts; a long one compiles it and keeps it, its
    alerts the same."""
    from rulesd import cli
    from rulesd.rules import patterns

    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: panic, match: {message: {regex: 'panic: .*'}}}\n")
    monkeypatch.setenv("RULESD_CACHE_DIR", str(tmp_path / "cache"))
    padding = "x" * 150  # (~60 events a block: COMPILE_AFTER blocks are ~4,000 events)
    lines = [
        f'{{"message": "{"panic: nil map" if i % 1000 == 7 else f"GET /item/{i} 200"} {padding}"}}\n'
        for i in range(10_000)
    ]
    events = tmp_path / "events.jsonl"
    for count, compiled in ((500, 0), (10_000, 1)):
        events.write_text("".join(lines[:count]))
        assert cli.main(["replay", "--rules", str(rules), str(events)]) == 0
        alerts = [line for line in capsys.readouterr().out.splitlines() if line.startswith("line ")]
        assert len(alerts) == len(range(7, count, 1000))
        assert len(list((tmp_path / "cache").glob(f"{loader.JOINED}-*.bin"))) == compiled
    assert patterns.COMPILE_AFTER * 60 < 10_000


def test_a_daemons_reload_compiles_the_joined_texts_database_beside_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload builds the rule set in the loader thread, and the database of joined texts in
    a thread of its own: the daemon's loop, which takes the set, never compiles it (a thousand
    message patterns take ~0.1 s, a hundred thousand seconds)."""
    import threading

    from rulesd.daemon.reloader import RuleLoader
    from rulesd.rules.cache import RuleCache

    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: panic, match: {message: {regex: 'panic: .*'}}}\n")
    written: list[str] = []
    keep = RuleCache.put

    def put(cache: RuleCache, kind: str, key: str, payload: bytes) -> None:
        written.append(f"{kind} in {threading.current_thread().name}")
        keep(cache, kind, key, payload)

    monkeypatch.setattr(RuleCache, "put", put)
    reloader = RuleLoader([str(rules)], RuleCache(tmp_path / "cache"), lambda ruleset: None, lambda: "")  # type: ignore[arg-type,return-value]
    reloader.start()
    assert reloader.done.wait(30)
    outcome = reloader.take()
    assert outcome is not None and outcome.result.ruleset is not None
    assert wait_until(lambda: any(w.startswith(loader.JOINED) for w in written), timeout=30)
    assert f"{loader.JOINED} in rulesd-compile" in written
