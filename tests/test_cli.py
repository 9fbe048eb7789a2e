"""The `rulesd` command: check, test, replay, schema, --version, via a real process."""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

import rulesd
from rulesd import cli
from rulesd.replay_blocks import blocks
from tests.daemon_process import PAGE_RULE
from tests.opsgenie_schema import create_alert_validator
from tests.run_cli import clean_env, rulesd_cli

ROOT = Path(__file__).resolve().parent.parent
VALIDATOR = create_alert_validator()

INVALID = os.path.join(os.path.dirname(__file__), "data", "invalid")
RULES = "name: err\nmatch: {level: error}\nalert: {priority: P2, message: 'error on {host}'}\n"


def write(path: Path, text: str) -> Path:
    """Write `text` to `path` (and the folders it is in) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_check_valid_exits_0(tmp_path: Path) -> None:
    """Valid rules: no problems, a summary, exit 0."""
    rules = write(tmp_path / "r.yaml", RULES)
    result = rulesd_cli("check", str(rules))
    assert (0, "OK: 1 file(s), 1 rule(s), 0 error(s), 0 warning(s)\n", "") == (
        result.returncode,
        result.stdout,
        result.stderr,
    )


def test_check_validates_a_rule_test_file_as_a_test_file(tmp_path: Path) -> None:
    """`rulesd check x.test.yaml` checks it against the test file schema, and says what it is."""
    write(tmp_path / "r.yaml", RULES)
    good = write(
        tmp_path / "r.test.yaml",
        "rule_files: [r.yaml]\ntests:\n  - name: t\n    events: [{event: {level: error}}]\n"
        "    expect_alerts: [{event: 1, rules: [err]}]\n",
    )
    bad = write(
        tmp_path / "bad.test.yaml",
        "rule_files: [gone.yaml]\ntests:\n  - name: t\n    events: [{event: {}}]\n    expect_alert: []\n",
    )
    ok = rulesd_cli("check", str(good), str(tmp_path / "r.yaml"))
    assert (
        0,
        "OK: 1 file(s), 1 rule(s), 1 rule test file(s) (run them with rulesd test), 0 error(s), 0 warning(s)\n",
    ) == (
        ok.returncode,
        ok.stdout,
    )
    failed = rulesd_cli("check", str(bad))
    assert (
        1,
        [
            f"{bad}:3:5: error: tests[0]: missing required key 'expect_alerts'",
            f"{bad}:5:5: error: tests[0].expect_alert: unknown key 'expect_alert'; did you mean 'expect_alerts'?",
            "FAILED: 0 file(s), 0 rule(s), 1 rule test file(s) (run them with rulesd test), 2 error(s), 0 warning(s)",
        ],
    ) == (failed.returncode, failed.stdout.splitlines())
    one_test = "tests: [{name: t, events: [{event: {}}], expect_alerts: []}]\n"
    missing = write(tmp_path / "m.test.yaml", "rule_files: [r.yaml, gone.yaml]\n" + one_test)
    assert (
        f"{missing}:1:22: error: rule_files[1]: no such file or directory\n" in rulesd_cli("check", str(missing)).stdout
    )


def test_top_level_help_describes_rulesd_for_its_users() -> None:
    """`rulesd --help` says what rulesd does and how to start, not how the module is built."""
    result = rulesd_cli("--help")
    assert 0 == result.returncode
    assert "evaluates YAML trigger rules against every event" in result.stdout
    assert "`rulesd COMMAND --help`" in result.stdout
    assert "parses arguments" not in result.stdout and "exit codes" not in result.stdout


def test_check_defaults_to_the_rules_directory(tmp_path: Path) -> None:
    """Without a path, `./rules` is checked."""
    (tmp_path / "rules").mkdir()
    write(tmp_path / "rules" / "r.yaml", RULES)
    result = rulesd_cli("check", cwd=tmp_path)
    assert (0, "OK: 1 file(s), 1 rule(s), 0 error(s), 0 warning(s)\n") == (
        result.returncode,
        result.stdout,
    )


def test_check_invalid_reports_every_problem_and_exits_1() -> None:
    """A multi-error file: every problem on its own line, then the summary, exit 1."""
    path = os.path.join(INVALID, "multi_error.yaml")
    result = rulesd_cli("check", path)
    lines = result.stdout.splitlines()
    assert 1 == result.returncode
    assert 12 == sum(line.startswith(f"{path}:") and ": error: " in line for line in lines)
    assert "FAILED: 1 file(s), 0 rule(s), 12 error(s), 0 warning(s)" == lines[-1]
    assert "" == result.stderr


def test_check_the_whole_invalid_directory_never_crashes() -> None:
    """All invalid files at once: problems only, no traceback, no unhelpful schema text."""
    result = rulesd_cli("check", INVALID)
    output = result.stdout + result.stderr
    assert 1 == result.returncode
    assert "Traceback" not in output
    assert "any of the given schemas" not in output
    assert result.stdout.splitlines()[-1].startswith("FAILED: ")


def test_check_json_format(tmp_path: Path) -> None:
    """`--format json` prints the same problems as a JSON array."""
    path = os.path.join(INVALID, "unknown_key.yaml")
    result = rulesd_cli("check", "--format", "json", path)
    assert 1 == result.returncode
    assert [
        {
            "path": path,
            "line": 3,
            "col": 1,
            "severity": "error",
            "message": "throtle: unknown key 'throtle'; did you mean 'throttle'?",
        }
    ] == json.loads(result.stdout)
    ok = rulesd_cli("check", "--format", "json", str(write(tmp_path / "r.yaml", RULES)))
    assert (0, []) == (ok.returncode, json.loads(ok.stdout))


def test_check_usage_error_exits_2() -> None:
    """An unknown option is a usage error."""
    result = rulesd_cli("check", "--no-such-option")
    assert (2, "") == (result.returncode, result.stdout)
    assert "unrecognized arguments: --no-such-option" in result.stderr


def test_rule_tests_pass_and_fail(tmp_path: Path) -> None:
    """`rulesd test`: exit 0 when all pass; exit 1 with expected, actual and differences."""
    write(tmp_path / "rules.yaml", RULES)
    good = write(
        tmp_path / "good.test.yaml",
        "rule_files: [rules.yaml]\ntests:\n  - name: pages\n    events:\n"
        "      - {event: {level: error, host: a}}\n"
        "    expect_alerts:\n      - {event: 1, rules: [err], priority: P2, message: error on a}\n",
    )
    passed = rulesd_cli("test", str(good))
    assert (0, f"PASS {good}:3:5: pages\nrule tests: 1 passed, 0 failed, 0 invalid\n") == (
        passed.returncode,
        passed.stdout,
    )
    bad = write(
        tmp_path / "bad.test.yaml",
        "rule_files: [rules.yaml]\ntests:\n  - name: wrong priority\n    events:\n"
        "      - {event: {level: info}}\n"
        "      - {at: 5s, event: {level: error, host: b}}\n"
        "    expect_alerts:\n      - {event: 2, rules: [err], priority: P1}\n",
    )
    failed = rulesd_cli("test", str(bad))
    assert 1 == failed.returncode
    assert (
        f"FAIL {bad}:3:5: wrong priority\n"
        "    expected:\n"
        "      - event 2: rules ['err'], priority: 'P1'\n"
        "    actual:\n"
        "      - event 2: rules ['err'], priority 'P2', message 'error on b'\n"
        "    differences:\n"
        "      missing: event 2: rules ['err'], priority: 'P1'\n"
        "        priority: expected 'P1', got 'P2'\n"
        "      unexpected: event 2: rules ['err'], priority 'P2', message 'error on b'\n"
        "rule tests: 0 passed, 1 failed, 0 invalid\n"
    ) == failed.stdout


def test_an_integer_beyond_64_bits_is_caught_by_check_and_test_as_replay_never_matches_it(tmp_path: Path) -> None:
    """A JSON line's integer beyond 64 bits is read as the nearest float, so a rule comparing
    an event's id with 99999999999999999999 never fired (replay of that line paged nothing),
    while a rule test whose YAML event held that integer passed: check, replay and test say so
    at each place."""
    rules = write(tmp_path / "ids.yaml", "rules:\n  - name: one-id\n    match: {id: 99999999999999999999}\n")
    where = "no event holds 99999999999999999999: a JSON line's integer beyond 64 bits is read as the nearest float"
    said = f"{rules}:3:17: error: rules[0].match.id: {where}, 1e+20;"
    checked = rulesd_cli("check", str(rules))
    assert 1 == checked.returncode
    assert checked.stdout.startswith(said)
    events = write(tmp_path / "events.jsonl", '{"id": 99999999999999999999}\n')
    replayed = rulesd_cli("replay", "--rules", str(rules), str(events))
    assert (1, "") == (replayed.returncode, replayed.stdout)
    assert replayed.stderr.startswith(said)
    test_file = write(
        tmp_path / "ids.test.yaml",
        "rule_files: [ids.yaml]\ntests:\n  - name: pages\n    events:\n"
        "      - {event: {id: 99999999999999999999}}\n    expect_alerts: [{event: 1, rules: [one-id]}]\n",
    )
    tested = rulesd_cli("test", str(test_file))
    assert 1 == tested.returncode
    assert f"{test_file}:5:22: error: tests[0].events[0].event.id: {where}, 1e+20;" in tested.stdout
    assert "rule tests: 0 passed, 0 failed, 1 invalid\n" in tested.stdout


def test_rule_tests_of_the_repository_pass() -> None:
    """The example rules in rules/ pass their own tests."""
    root = Path(__file__).resolve().parent.parent
    files = sorted(str(p) for p in (root / "rules").glob("*.test.yaml"))
    result = rulesd_cli("test", *files)
    assert (0, " 0 failed, 0 invalid") == (result.returncode, result.stdout[-21:].rstrip("\n"))


EVENTS = b'{"level":"error","host":"a"}\nnot json\n\n{"level":"info"}\n{"level":"error","host":"b"}\n'


def test_replay_text(tmp_path: Path) -> None:
    """`rulesd replay` prints each alert it would send, then a summary; it sends nothing."""
    rules = write(tmp_path / "rules.yaml", RULES)
    (tmp_path / "events.jsonl").write_bytes(EVENTS)
    result = rulesd_cli("replay", "--rules", str(rules), "events.jsonl", cwd=tmp_path)
    assert (
        0,
        "line 1: P2 [err] error on a  (alias: rulesd: err)\n"
        "line 5: P2 [err] error on b  (alias: rulesd: err)\n"
        "events: 3, invalid lines: 1, alerts: 2\n"
        "  err: 2 firing(s)\n",
    ) == (result.returncode, result.stdout)
    assert "events.jsonl:2: skipped: invalid JSON" in result.stderr


def test_replay_explains_a_cut_line_as_the_daemon_does(tmp_path: Path) -> None:
    """orjson counts the newline of a JSON line cut short: `replay` says why of the line
    without it, as the daemon does (it said "line 2 column 1" of a one-line event)."""
    rules = write(tmp_path / "rules.yaml", RULES)
    (tmp_path / "events.jsonl").write_bytes(b'{"level": "error",\n{"level": "error", "host": "b"}\n')
    result = rulesd_cli("replay", "--rules", str(rules), "events.jsonl", cwd=tmp_path)
    reason = "events.jsonl:1: skipped: invalid JSON: unexpected end of data: line 1 column 19 (char 18)"
    assert reason in result.stderr, result.stderr


def test_replay_says_where_a_line_stops_being_utf8(tmp_path: Path) -> None:
    """A byte that is not UTF-8 is named with its column; orjson's own words were "surrogates not
    allowed: line 1 column 1 (char 0)" for any such byte, wherever it was."""
    rules = write(tmp_path / "rules.yaml", RULES)
    (tmp_path / "events.jsonl").write_bytes(
        '{"level": "error", "host": "é€a'.encode() + b'\xffb"}\n{"level": "error", "host": "b"}\n'
    )
    result = rulesd_cli("replay", "--rules", str(rules), "events.jsonl", cwd=tmp_path)
    assert (0, "events: 1, invalid lines: 1, alerts: 1") == (result.returncode, result.stdout.splitlines()[1])
    # (the column counts characters, as an editor shows them: "é" and "€" one each)
    reason = "events.jsonl:1: skipped: invalid JSON: not valid UTF-8: byte 0xff at column 32\n"
    assert reason in result.stderr, result.stderr


def test_replay_json(tmp_path: Path) -> None:
    """`--format json` prints one payload per line; the summary goes to stderr."""
    rules = write(tmp_path / "rules.yaml", RULES)
    (tmp_path / "events.jsonl").write_bytes(EVENTS)
    result = rulesd_cli("replay", "--rules", str(rules), "--format", "json", "events.jsonl", cwd=tmp_path)
    payloads = [json.loads(line) for line in result.stdout.splitlines()]
    assert 0 == result.returncode
    assert [("error on a", "events.jsonl:1"), ("error on b", "events.jsonl:5")] == [
        (p["message"], p["details"]["Event Source"]) for p in payloads
    ]
    assert "events: 3, invalid lines: 1, alerts: 2\n  err: 2 firing(s)\n" in result.stderr


# `rulesd replay` with its standard output wrapped to count the writes made to it.
COUNTED_REPLAY = """
import sys
from rulesd import cli

class Counting:
    def __init__(self, inner):
        self.inner, self.writes = inner, 0

    def write(self, text):
        self.writes += 1
        return self.inner.write(text)

    def __getattr__(self, name):
        return getattr(self.inner, name)

sys.stdout = counting = Counting(sys.stdout)
status = cli.main(sys.argv[1:])
print("writes:", counting.writes, file=sys.stderr)
sys.exit(status)
"""


@pytest.mark.parametrize(("count", "expected_blocks"), [(30, 1), (150, 3)])
def test_replay_writes_the_alerts_of_a_block_at_once(tmp_path: Path, count: int, expected_blocks: int) -> None:
    """Unbuffered output (`PYTHONUNBUFFERED`, as containers often set) makes every write a
    system call: replay writes the alerts of a block of events at once, not one by one, and
    what it writes is the same."""
    rules = write(tmp_path / "rules.yaml", RULES)
    data = b"".join(b'{"level":"error","host":"h%05d","pad":"%s"}\n' % (i, b"x" * 200) for i in range(count))
    (tmp_path / "events.jsonl").write_bytes(data)
    assert expected_blocks == sum(1 for _ in blocks(io.BytesIO(data), 1 << 20))
    command = [
        sys.executable,
        "-c",
        COUNTED_REPLAY,
        "replay",
        "--rules",
        str(rules),
        "--format",
        "json",
        "events.jsonl",
    ]
    env = clean_env({"PYTHONUNBUFFERED": "1"})
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60, check=False)
    assert 0 == result.returncode, result.stderr
    assert [f"error on h{i:05d}" for i in range(count)] == [
        json.loads(text)["message"] for text in result.stdout.splitlines()
    ]
    assert f"writes: {expected_blocks}\n" in result.stderr


def test_replay_with_invalid_rules_exits_1(tmp_path: Path) -> None:
    """Invalid rules are reported as `path:line:col` and nothing is replayed."""
    (tmp_path / "events.jsonl").write_bytes(EVENTS)
    bad = os.path.join(INVALID, "unknown_key.yaml")
    result = rulesd_cli("replay", "--rules", bad, "events.jsonl", cwd=tmp_path)
    assert (1, "") == (result.returncode, result.stdout)
    assert f"{bad}:3:1: error: throtle: unknown key 'throtle'; did you mean 'throttle'?" in (result.stderr)


def test_replay_onto_a_full_disk_says_so(tmp_path: Path) -> None:
    """`rulesd replay … > out` on a full disk (here /dev/full): exit 1 with a line that says
    what failed, not a traceback."""
    rules = write(tmp_path / "rules.yaml", RULES)
    (tmp_path / "events.jsonl").write_bytes(EVENTS)
    for form in ("text", "json"):
        command = [sys.executable, "-m", "rulesd", "replay", "--rules", str(rules), "--format", form, "events.jsonl"]
        with open("/dev/full", "w") as full:
            result = subprocess.run(
                command, stdout=full, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=clean_env(), timeout=60
            )
        assert 1 == result.returncode, result.stderr
        assert "rulesd: error: cannot write to standard output: No space left on device\n" in result.stderr
        assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


@pytest.mark.parametrize("command", [["schema", "rule"], ["check", "rules.yaml"], ["completion", "bash"]])
def test_any_command_onto_a_full_disk_says_so_in_one_line(tmp_path: Path, command: list[str]) -> None:
    """An error no command reports itself (here its output refused by a full disk) is one
    `rulesd: error:` line and exit 1, not a traceback."""
    write(tmp_path / "rules.yaml", RULES)
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "rulesd", *command],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=clean_env(),
            timeout=60,
        )
    assert (1, "rulesd: error: [Errno 28] No space left on device\n") == (result.returncode, result.stderr)


def _with_closed(redirection: str, command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`rulesd COMMAND` started with a standard stream closed (`>&-`, `<&-`)."""
    rulesd = f"{shlex.quote(sys.executable)} -m rulesd"
    return subprocess.run(
        ["sh", "-c", f"exec {rulesd} {command} {redirection}"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(),
        timeout=60,
    )


def test_replay_and_a_dry_run_with_standard_output_closed_say_so(tmp_path: Path) -> None:
    """Started with `>&-` (no standard output at all): `replay` says it cannot write, exit 1;
    a dry run, whose only output it is, does not start, exit 2."""
    write(tmp_path / "rules.yaml", RULES)
    (tmp_path / "events.jsonl").write_bytes(EVENTS)
    (tmp_path / "rulesd.yaml").write_text("rules: [rules.yaml]\n")
    for command, status, said in [
        ("replay --rules rules.yaml events.jsonl", 1, "rulesd: error: cannot write to standard output: it is closed"),
        (
            "run --config rulesd.yaml --dry-run < events.jsonl",
            2,
            "rulesd: error: cannot start a dry run: cannot write to standard output: it is closed",
        ),
    ]:
        result = _with_closed(">&-", command, tmp_path)
        assert status == result.returncode, result.stderr
        assert said in result.stderr and "Traceback" not in result.stderr


def test_standard_input_closed_is_said_where_it_is_read_and_harmless_elsewhere(tmp_path: Path) -> None:
    """Started with `<&-`: `replay -` and a daemon whose source is standard input say so (exit
    2); a daemon that reads a file starts as usual (it crashed on the missing stdin)."""
    write(tmp_path / "rules.yaml", RULES)
    (tmp_path / "stdin.yaml").write_text("rules: [rules.yaml]\n")
    (tmp_path / "file.yaml").write_text(f"rules: [rules.yaml]\nsource: {{type: file, path: {tmp_path}/app.log}}\n")
    rulesd = f"{shlex.quote(sys.executable)} -m rulesd"

    def closed_stdin(command: str) -> subprocess.CompletedProcess[str]:
        return _with_closed("<&-", command, tmp_path)

    result = closed_stdin("replay --rules rules.yaml -")
    assert (2, "-: error: cannot read events: standard input is closed\n") == (result.returncode, result.stderr)
    result = closed_stdin("run --config stdin.yaml --dry-run")
    assert 2 == result.returncode
    assert "rulesd: error: cannot start: the source is standard input, which is closed\n" == result.stderr

    proc = subprocess.Popen(
        ["sh", "-c", f"exec {rulesd} run --config file.yaml --dry-run <&-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=clean_env(),
    )
    assert proc.stderr is not None
    try:
        lines = [proc.stderr.readline()]
        while "rulesd started" not in lines[-1] and lines[-1] and len(lines) < 20:
            lines.append(proc.stderr.readline())
        assert "rulesd started" in lines[-1], lines
        proc.send_signal(signal.SIGTERM)
        assert 0 == proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()


def test_explain_of_a_closed_standard_input_says_so(tmp_path: Path) -> None:
    """`rulesd explain -` started with `<&-`: the event cannot be read, said as `replay -` says
    it, exit 2 (it raised AttributeError on the missing stdin)."""
    write(tmp_path / "rules.yaml", RULES)
    result = _with_closed("<&-", "explain --rules rules.yaml -", tmp_path)
    assert (2, "-: error: cannot read the event: standard input is closed\n") == (result.returncode, result.stderr)


def test_explain_of_an_event_argument_that_is_not_utf8_or_holds_a_lone_surrogate(tmp_path: Path) -> None:
    """An EVENT_JSON argument's bytes are judged as a line's are: one that is not UTF-8 is said
    with its column (it raised UnicodeEncodeError re-encoding the argument), and a lone
    surrogate's escape is read as U+FFFD, as replay and the daemon read it (it was refused)."""
    write(tmp_path / "rules.yaml", RULES)
    result = rulesd_cli("explain", "--rules", "rules.yaml", '{"level": "error", "host": "a\udcffb"}', cwd=tmp_path)
    said = "rulesd explain: the event is invalid JSON: not valid UTF-8: byte 0xff at column 30\n"
    assert (2, said) == (result.returncode, result.stderr)
    event = '{"level": "error", "host": "a\\ud800b"}'
    result = rulesd_cli("explain", "--rules", "rules.yaml", event, cwd=tmp_path)
    assert (0, "", "err: matches\n") == (result.returncode, result.stderr, result.stdout)
    replayed = rulesd_cli("replay", "--rules", "rules.yaml", "-", stdin=event + "\n", cwd=tmp_path)
    assert "line 1: P2 [err] error on a\ufffdb  (alias: rulesd: err)\n" == replayed.stdout.splitlines(keepends=True)[0]


def _named_by_a_pipe(args: list[str], text: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`rulesd ARGS` where `{}` in ARGS names a pipe holding `text`, as the shell's `<(...)`
    names one (`/dev/fd/N`): it can be read once only. The rule cache is on."""
    read_end, write_end = os.pipe()
    os.write(write_end, text.encode())  # (less than a pipe holds)
    os.close(write_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "rulesd", *(a.replace("{}", f"/dev/fd/{read_end}") for a in args)],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=clean_env({"RULESD_CACHE_DIR": str(cwd / "cache")}),
            pass_fds=(read_end,),
            timeout=60,
        )
    finally:
        os.close(read_end)


def test_a_rule_file_or_test_file_named_by_a_pipe_is_read_once(tmp_path: Path) -> None:
    """`rulesd check <(git show HEAD:rules.yaml)`: the rules are read once, for the cache key
    and the document both (the second read found the pipe empty: "empty file"); `rulesd test`
    reads its test file once too (it failed an assertion, with a traceback)."""
    result = _named_by_a_pipe(["check", "{}"], RULES, tmp_path)
    assert (0, "OK: 1 file(s), 1 rule(s), 0 error(s), 0 warning(s)\n") == (result.returncode, result.stdout)
    rules = write(tmp_path / "rules.yaml", RULES)
    test = f"rule_files: [{rules}]\ntests:\n  - name: t\n    events: [{{event: {{level: error, host: a}}}}]\n"
    result = _named_by_a_pipe(["test", "{}"], test + "    expect_alerts: [{event: 1, rules: [err]}]\n", tmp_path)
    assert 0 == result.returncode, result.stderr
    assert result.stdout.endswith("rule tests: 1 passed, 0 failed, 0 invalid\n")


def test_replay_whose_reader_goes_away_ends_quietly(tmp_path: Path) -> None:
    """`rulesd replay … | head`: once its reader is gone the command ends, exit 0, with nothing
    said about the broken pipe."""
    rules = write(tmp_path / "rules.yaml", RULES)
    data = b"".join(b'{"level":"error","host":"h%05d"}\n' % i for i in range(20_000))  # more than a pipe holds
    (tmp_path / "events.jsonl").write_bytes(data)
    command = [sys.executable, "-m", "rulesd", "replay", "--rules", str(rules), "events.jsonl"]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=clean_env(), text=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith("line 1: P2 [err] error on h00000")
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert 0 == proc.wait(timeout=60), stderr
    assert "" == stderr


def test_schema_rule_is_a_valid_draft_2020_12_schema() -> None:
    """`rulesd schema rule` prints JSON that is itself a valid JSON Schema."""
    result = rulesd_cli("schema", "rule")
    schema = json.loads(result.stdout)
    Draft202012Validator.check_schema(schema)
    assert (0, "https://json-schema.org/draft/2020-12/schema") == (
        result.returncode,
        schema["$schema"],
    )
    validator = Draft202012Validator(schema)
    assert validator.is_valid({"name": "r", "match": {"level": "error"}})
    assert not validator.is_valid({"name": "r", "match": {"level": {"regx": "e"}}})


def test_version() -> None:
    """`rulesd --version` prints the version and exits 0."""
    result = rulesd_cli("--version")
    assert (0, f"rulesd {rulesd.__version__}\n") == (result.returncode, result.stdout)


def test_check_config_with_errors_still_checks_the_rules_it_names(tmp_path: Path) -> None:
    """An invalid config is reported, and the rules it names are checked, not ./rules."""
    for folder in ("rules", "mine"):
        (tmp_path / folder).mkdir()
    write(tmp_path / "rules" / "other.yaml", "name: elsewhere\nmatch: {a: 1}\n")
    write(tmp_path / "mine" / "r.yaml", "name: mine\nmatch: {x: {gte: .nan}}\n")
    config = write(
        tmp_path / "rulesd.yaml", ("rules: [mine]\nopsgenie: {api_key: k, alert_url: 'http://example.com/v2/alerts'}\n")
    )
    result = rulesd_cli("check", "--config", str(config), cwd=tmp_path)
    assert 1 == result.returncode
    assert "rulesd.yaml:2:" in result.stdout and "alert_url" in result.stdout
    assert "mine/r.yaml:2:" in result.stdout and "expected a finite number" in result.stdout
    assert result.stdout.rstrip().endswith("1 file(s), 0 rule(s), 2 error(s), 0 warning(s)")


def test_check_config_warns_about_an_unknown_endpoint_and_a_heartbeat_with_jsm(tmp_path: Path) -> None:
    """Warnings at the setting's line:col that do not fail the check."""
    (tmp_path / "rules").mkdir()
    write(tmp_path / "rules" / "r.yaml", RULES)
    base = write(tmp_path / "base.yaml", "opsgenie:\n  api_key: k\n  alert_url: https://api.eu.opsgenie.com/\n")
    jsm = write(
        tmp_path / "jsm.yaml",
        "opsgenie:\n  alert_url: https://api.atlassian.com/jsm/ops/integration/v2/alerts\n  heartbeat: rulesd\n",
    )
    fine = write(
        tmp_path / "fine.yaml", "opsgenie: {alert_url: 'https://api.eu.opsgenie.com/v2/alerts', heartbeat: x}\n"
    )
    base_result = rulesd_cli("check", "--config", str(base), cwd=tmp_path)
    assert 0 == base_result.returncode
    assert base_result.stdout.startswith(
        f"{base}:3:14: warning: opsgenie.alert_url: 'https://api.eu.opsgenie.com/' is not a known alert endpoint"
    )
    assert base_result.stdout.rstrip().endswith("0 error(s), 1 warning(s)")
    jsm_result = rulesd_cli("check", "--config", str(jsm), cwd=tmp_path)
    assert 0 == jsm_result.returncode
    assert jsm_result.stdout.startswith(f"{jsm}:3:14: warning: opsgenie.heartbeat: heartbeats are an OpsGenie API only")
    assert "warning" not in rulesd_cli("check", "--config", str(fine), cwd=tmp_path).stdout.replace("0 warning(s)", "")


@pytest.mark.parametrize("kind", ["rule", "config", "test"])
def test_every_object_in_the_bundled_schemas_refuses_unknown_keys_and_none_is_any_of(kind: str) -> None:
    """`additionalProperties: false` on every object with named keys (a condition's other keys
    are field paths, each checked by `propertyNames`), so a misspelt key is an error at its
    line wherever it is; and no oneOf/anyOf, whose errors say only "is not valid under any of
    the given schemas". An `if` only tests a value, it defines no keys: it is not walked."""
    schema = json.loads(rulesd_cli("schema", kind).stdout)
    objects: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            assert not {"oneOf", "anyOf"} & set(node), where
            if "properties" in node:
                objects.append(where)
                assert node.get("additionalProperties") is False or "propertyNames" in node, where
            for key, child in node.items():
                if key != "if":
                    walk(child, f"{where}/{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{where}/{i}")

    walk(schema, kind)
    assert len(objects) >= 3


def test_replay_counts_thresholds_in_the_time_field_s_time(tmp_path: Path) -> None:
    """`--time-field ts`: two errors a minute apart by `ts` make a pair within 2m; ten minutes
    apart they do not. Without it, every event arrives at once and both files alert."""
    rules = write(tmp_path / "rules.yaml", "name: pair\nmatch: {level: error}\nthreshold: {count: 2, window: 2m}\n")
    near = write(tmp_path / "near.jsonl", '{"level":"error","ts":0}\n{"level":"error","ts":"1970-01-01T00:01:00Z"}\n')
    far = write(tmp_path / "far.jsonl", '{"level":"error","ts":0}\n{"level":"error","ts":600}\n')
    summaries = {
        (name, flag): next(
            line
            for line in rulesd_cli("replay", "--rules", str(rules), *flag, str(path)).stdout.splitlines()
            if line.startswith("events:")
        )
        for name, path in (("near", near), ("far", far))
        for flag in ((), ("--time-field", "ts"))
    }
    assert {
        ("near", ()): "events: 2, invalid lines: 0, alerts: 1",
        ("near", ("--time-field", "ts")): "events: 2, invalid lines: 0, alerts: 1",
        ("far", ()): "events: 2, invalid lines: 0, alerts: 1",
        ("far", ("--time-field", "ts")): "events: 2, invalid lines: 0, alerts: 0",
    } == summaries


def test_rule_tests_with_an_invalid_test_file_exit_1(tmp_path: Path) -> None:
    """A test file that is not valid is reported where it is wrong, and the run fails."""
    write(tmp_path / "rules.yaml", RULES)
    bad = write(tmp_path / "bad.test.yaml", "rule_files: [rules.yaml]\ntests:\n  - name: t\n    evnts: []\n")
    result = rulesd_cli("test", str(bad))
    assert 1 == result.returncode
    assert f"{bad}:4:5:" in result.stdout + result.stderr
    assert re.search(r"rule tests: 0 passed, 0 failed, [1-9]\d* invalid\n\Z", result.stdout)


def test_the_readme_s_rule_and_its_rule_test_pass(tmp_path: Path) -> None:
    """The rule example and the rule-test example in README.md work as written."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    write(tmp_path / "payments.yaml", next(b for b in blocks if "name: payments-upstream-errors" in b))
    test = write(tmp_path / "payments.test.yaml", next(b for b in blocks if "rule_files: [payments.yaml]" in b))
    result = rulesd_cli("test", str(test))
    assert (0, "rule tests: 1 passed, 0 failed, 0 invalid") == (result.returncode, result.stdout.splitlines()[-1])


def test_schema_config_prints_the_schema_the_configs_are_checked_against() -> None:
    """`rulesd schema config` is a valid JSON Schema that accepts the shipped configs and refuses
    an unknown key."""
    result = rulesd_cli("schema", "config")
    assert 0 == result.returncode
    schema = json.loads(result.stdout)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for config in (ROOT / "packaging" / "rulesd.yaml", ROOT / "examples" / "rulesd.yaml"):
        assert [] == list(validator.iter_errors(yaml.safe_load(config.read_text()))), config
    assert list(validator.iter_errors({"sorce": {"type": "stdin"}}))


def test_check_config_checks_the_rules_the_config_names(tmp_path: Path) -> None:
    """`rulesd check --config FILE` checks the rules the config names (not ./rules), and a config
    error is reported as path:line:col; exit 1 for either."""
    (tmp_path / "my-rules").mkdir()
    (tmp_path / "my-rules" / "r.yaml").write_text("name: r\nmatch: {kind: page}\nalert: {priority: P0}\n")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "ok.yaml").write_text(PAGE_RULE)
    config = tmp_path / "rulesd.yaml"
    config.write_text("rules: [my-rules]\n")
    result = rulesd_cli("check", "--config", str(config), cwd=tmp_path)
    assert 1 == result.returncode
    out = result.stdout
    assert f"{tmp_path}/my-rules/r.yaml:3:19: error: alert.priority:" in out, out
    assert f"FAILED: config {config}, 1 file(s), 0 rule(s), 1 error(s)" in out

    (tmp_path / "my-rules" / "r.yaml").write_text(PAGE_RULE)
    config.write_text("rules: [my-rules]\nopsgenie:\n  alert_url: http://example.com/v2/alerts\n")
    result = rulesd_cli("check", "--config", str(config), cwd=tmp_path)
    assert 1 == result.returncode
    assert f"{config}:3:14: error: opsgenie.alert_url:" in result.stdout


def test_readme_demo_command(tmp_path: Path) -> None:
    """`rulesd run --config examples/rulesd.yaml --dry-run < examples/events.jsonl` prints valid
    CreateAlertPayload lines, exits 0 and leaves no state behind."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    events = (tmp_path / "examples" / "events.jsonl").read_bytes()
    result = rulesd_cli("run", "--config", "examples/rulesd.yaml", "--dry-run", stdin=events, cwd=tmp_path)
    assert 0 == result.returncode, result.stderr
    payloads = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(payloads) >= 3
    for payload in payloads:
        VALIDATOR.validate(payload)
        assert "rulesd-demo" == payload["source"]
    assert not (tmp_path / "examples" / "state").exists()


def test_schema_write_writes_every_schema_as_a_file(tmp_path: Path) -> None:
    """`rulesd schema --write DIR` creates DIR and writes the rule, config and test schemas, each what
    `rulesd schema NAME` prints; the written rule and test schemas accept the repository's examples."""
    result = rulesd_cli("schema", "--write", str(tmp_path / "schemas"))
    names = ("rule", "config", "test")
    written = [tmp_path / "schemas" / f"rulesd-{name}.schema.json" for name in names]
    assert (0, "".join(f"{p}\n" for p in written)) == (result.returncode, result.stdout)
    assert sorted(written) == sorted((tmp_path / "schemas").iterdir())
    for name, path in zip(names, written, strict=True):
        assert json.loads(rulesd_cli("schema", name).stdout) == json.loads(path.read_text())
    rule_schema = Draft202012Validator(json.loads(written[0].read_text()))
    test_schema = Draft202012Validator(json.loads(written[2].read_text()))
    for example in sorted((ROOT / "rules").glob("*.yaml")):
        schema = test_schema if example.name.endswith(".test.yaml") else rule_schema
        assert [] == list(schema.iter_errors(yaml.safe_load(example.read_text()))), example


def test_schema_write_one_schema_and_errors(tmp_path: Path) -> None:
    """Naming a schema writes only it; a DIR that cannot be created is a usage error."""
    result = rulesd_cli("schema", "config", "--write", str(tmp_path))
    assert (0, [tmp_path / "rulesd-config.schema.json"]) == (result.returncode, list(tmp_path.iterdir()))
    blocker = write(tmp_path / "file", "")
    failed = rulesd_cli("schema", "--write", str(blocker / "sub"))
    assert (2, "") == (failed.returncode, failed.stdout)
    assert f"{blocker / 'sub'}: error: cannot write the schemas" in failed.stderr


# `rulesd schema --write DIR` run ROUNDS times by one process once the test says go, each run's
# files read back at once: the first failure (a status, or a file that is not whole) is printed.
_SCHEMA_WRITER = """
import contextlib, io, json, sys
from rulesd import cli
directory, rounds = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
for _ in range(rounds):
    said = io.StringIO()
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
        status = cli.main(["schema", "--write", directory])
    if status:
        sys.exit(f"status {status}: {said.getvalue()}")
    for path in said.getvalue().split():
        try:
            json.loads(open(path, "rb").read())
        except ValueError as exc:
            sys.exit(f"{path} read back not whole: {exc}")
"""


def test_schema_write_run_twice_at_once_writes_whole_files_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    """Two `schema --write` of the same directory at once (two CI jobs in one checkout, make -j)
    each replace the files whole; a temporary file of a fixed name was renamed by the other
    writer half-written, or gone when its own writer renamed it (a status 2). The files keep the
    mode a new file is given (0666 less the umask), not a temporary file's 0600."""
    directory = tmp_path / "schemas"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _SCHEMA_WRITER, str(directory), "150"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        for _ in range(2)
    ]
    for writer in writers:  # both have imported rulesd: they write at the same time
        assert writer.stdout is not None and "ready\n" == writer.stdout.readline()
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
    said = [writer.communicate(timeout=120) for writer in writers]
    assert [(0, "", "")] * 2 == [(w.returncode, *s) for w, s in zip(writers, said, strict=True)]
    names = sorted(f"rulesd-{name}.schema.json" for name in ("rule", "config", "test"))
    assert names == sorted(p.name for p in directory.iterdir())
    umask = os.umask(0)
    os.umask(umask)
    for name in names:
        assert 0o666 & ~umask == (directory / name).stat().st_mode & 0o777
        json.loads((directory / name).read_text())


AUTH_LOG = """\
Dec 10 06:55:46 host sshd[1]: Failed password for root from 203.0.113.9 port 50022 ssh2
Dec 10 06:55:47 host sshd[1]: Connection closed by 203.0.113.9 port 50022 [preauth]
Dec 10 06:55:48 host sshd[1]: Invalid user admin from 203.0.113.9 port 50100

Dec 10 06:55:49 host sshd[1]: Accepted publickey for alice from 192.0.2.1 port 40000 ssh2
Foo 10 06:55:50 host sshd[1]: Failed password for root from 198.51.100.7 port 50001 ssh2
Dec 10 06:55:51 host sshd[1]: Invalid user bob from 203.0.113.9 port none
Dec 10 06:55:52 host sshd[1]: Failed password for invalid user eve from 203.0.113.9 port 50300 ssh2
"""
AUTH_SOURCE = {
    "type": "file",
    "path": "/var/log/auth.log",
    "format": "regex",
    "pattern": [
        r"^(?P<time>\w{3} +\d+ [\d:]+) \S+ sshd\[\d+\]: Failed password for (?:invalid user )?(?P<user>\S+) "
        r"from (?P<ip>\S+) port (?P<port>\S+)",
        r"^(?P<time>\w{3} +\d+ [\d:]+) \S+ sshd\[\d+\]: Invalid user (?P<user>\S+) from (?P<ip>\S+) port (?P<port>\S+)",
    ],
    "ignore_pattern": "Connection closed by",
    "fields": {"port": "int"},
    "time_field": "time",
    "time_format": "syslog",
}
SSH_BRUTE = (
    "name: ssh-brute\nmatch: {user: {exists: true}}\nthreshold: {count: 3, window: 10m, group_by: [ip]}\n"
    "alert: {message: 'brute force from {ip}', alias: 'ssh-{ip}'}\n"
)


def test_replay_reads_a_log_as_the_configured_source_and_reports_how_its_lines_fared(tmp_path: Path) -> None:
    """`replay --config` reads a regex source's log with its patterns, ignore_pattern, field types
    and time format (not as JSON), and reports, like fail2ban-regex, the lines matched, missed
    (with the first of them), ignored and blank, the values left out and the untimed events."""
    write(tmp_path / "rules" / "r.yaml", SSH_BRUTE)
    write(tmp_path / "rulesd.yaml", yaml.safe_dump({"source": AUTH_SOURCE}))
    write(tmp_path / "auth.log", AUTH_LOG)
    result = rulesd_cli("replay", "--config", "rulesd.yaml", "auth.log", cwd=tmp_path)
    assert 0 == result.returncode, result.stderr
    assert [
        "line 7: P3 [ssh-brute] brute force from 203.0.113.9  (alias: ssh-203.0.113.9)",
        "events: 5, invalid lines: 1, alerts: 1",
        "  ssh-brute: 1 firing(s)",
        "8 lines: 5 matched, 1 did not match, 1 ignored (ignore_pattern), 1 blank",
        "lines that did not match (1; the first 1 shown):",
        "  line 5: Dec 10 06:55:49 host sshd[1]: Accepted publickey for alice from 192.0.2.1 port 40000 ssh2",
        "values that did not convert, left out of their event: port (int) 1",
        "event time (field time, time_format syslog): 1 event(s) without a readable time, evaluated at the "
        "latest event time before them (an event's time is read when a rule may match it); latest unreadable: "
        "'Foo 10 06:55:50'",
    ] == result.stdout.splitlines()
    assert "skipped" not in result.stderr  # the missed lines are in the report, not one warning each


def test_replay_with_a_config_reads_the_time_field_given_on_the_command_line(tmp_path: Path) -> None:
    """`--time-field` overrides the source's own (its format kept): the threshold's window is
    counted in the events' times, so three failures an hour apart never fire."""
    write(tmp_path / "rules" / "r.yaml", SSH_BRUTE)
    write(tmp_path / "rulesd.yaml", yaml.safe_dump({"source": {**AUTH_SOURCE, "time_field": "none"}}))
    lines = [
        f"Dec 10 0{h}:00:00 host sshd[1]: Failed password for root from 203.0.113.9 port 1 ssh2" for h in (1, 2, 3)
    ]
    write(tmp_path / "spread.log", "\n".join(lines) + "\n")
    spread = rulesd_cli("replay", "--config", "rulesd.yaml", "--time-field", "time", "spread.log", cwd=tmp_path)
    assert 0 == spread.returncode, spread.stderr
    assert "events: 3, invalid lines: 0, alerts: 0" in spread.stdout
    assert "event time (field time, time_format syslog)" in spread.stdout
    untimed = rulesd_cli("replay", "--config", "rulesd.yaml", "spread.log", cwd=tmp_path)
    assert "events: 3, invalid lines: 0, alerts: 1" in untimed.stdout


def test_replay_shows_the_first_five_missed_lines_and_why_a_line_is_not_text(tmp_path: Path) -> None:
    """Six missed lines: five are shown; a line that is not UTF-8 says so."""
    source = {"type": "stdin", "format": "regex", "pattern": r"^ERROR (?P<what>\w+)"}
    write(tmp_path / "rules" / "r.yaml", "name: e\nmatch: {what: disk}\n")
    write(tmp_path / "rulesd.yaml", yaml.safe_dump({"source": source}))
    (tmp_path / "app.log").write_bytes(b"\xff oops\n" + b"".join(b"INFO %d\n" % i for i in range(5)) + b"ERROR disk\n")
    result = rulesd_cli("replay", "--config", "rulesd.yaml", "app.log", cwd=tmp_path)
    assert [
        "line 7: P3 [e] ERROR disk  (alias: rulesd: e)",
        "events: 1, invalid lines: 6, alerts: 1",
        "  e: 1 firing(s)",
        "7 lines: 1 matched, 6 did not match, 0 ignored (ignore_pattern), 0 blank",
        "lines that did not match (6; the first 5 shown):",
        "  line 1: \ufffd oops  [invalid UTF-8 at byte 0]",
        "  line 2: INFO 0",
        "  line 3: INFO 1",
        "  line 4: INFO 2",
        "  line 5: INFO 3",
    ] == result.stdout.splitlines()


def test_replay_and_explain_escape_the_control_characters_of_events(tmp_path: Path) -> None:
    """What an event holds is printed with its control characters escaped (C0, DEL, C1), each
    alert on one line: a log line cannot retitle or clear the terminal, or forge an alert line."""
    hostile = "\x1b]0;owned\x07\x9b2J\x7f\nline 9: P1 [fake]"
    escaped = "\\u001b]0;owned\\u0007\\u009b2J\\u007f"
    write(tmp_path / "rules" / "r.yaml", "name: e\nmatch: {what: {exists: true}}\nalert: {alias: 'a-{what}'}\n")
    write(tmp_path / "rules" / "m.yaml", "name: m\nmatch: {message: nothing}\n")  # explain shows the message
    write(
        tmp_path / "rulesd.yaml",
        yaml.safe_dump({"source": {"type": "stdin", "format": "regex", "pattern": "^E (?P<what>.*)"}}),
    )
    (tmp_path / "app.log").write_text(f"E {hostile.replace(chr(10), ' ')}\n{hostile}\n", encoding="utf-8")
    replayed = rulesd_cli("replay", "--config", "rulesd.yaml", "app.log", cwd=tmp_path)
    assert 0 == replayed.returncode, replayed.stderr
    assert [
        f"line 1: P3 [e] E {escaped} line 9: P1 [fake]  (alias: a-{escaped} line 9: P1 [fake])",
        f"  line 2: {escaped}",  # a line no pattern matched
    ] == [line for line in replayed.stdout.splitlines() if escaped in line]
    (tmp_path / "event.json").write_text(json.dumps({"message": hostile}, ensure_ascii=False), encoding="utf-8")
    for explain in (["-"], ["--events", "event.json", "--line", "1"]):
        explained = rulesd_cli(
            "explain", "--rules", "rules", *explain, stdin=(tmp_path / "event.json").read_bytes(), cwd=tmp_path
        )
        assert 0 == explained.returncode, explained.stderr
        assert not set(explained.stdout) & {"\x1b", "\x07", "\x9b", "\x7f"}, explained.stdout
        assert "\\u009b2J\\u007f" in explained.stdout


def test_replay_and_explain_skip_the_lines_the_source_skips_as_too_long(tmp_path: Path) -> None:
    """A line longer than the source's max_line_bytes is skipped by the daemon; replay and
    explain with that --config skip it too (a line of exactly max_line_bytes is kept), so they
    fire where the daemon does: here, on line 3, not on the long line 2."""
    lines = ["fail 1", "fail " + "x" * 60, "fail " + "y" * 59]  # 6, 65 and 64 bytes
    source = {"type": "stdin", "format": "regex", "pattern": "^(?P<message>fail.*)$", "max_line_bytes": 64}
    write(
        tmp_path / "rules" / "r.yaml", "name: f\nmatch: {message: {exists: true}}\nthreshold: {count: 2, window: 1h}\n"
    )
    write(tmp_path / "rulesd.yaml", yaml.safe_dump({"source": source, "state_dir": "state"}))
    write(tmp_path / "app.log", "\n".join(lines) + "\n")
    daemon = rulesd_cli(
        "run", "--config", "rulesd.yaml", "--dry-run", stdin=(tmp_path / "app.log").read_bytes(), cwd=tmp_path
    )
    assert "skipped a line longer than 64 bytes" in daemon.stderr
    sent = [json.loads(line)["message"] for line in daemon.stdout.splitlines()]
    assert [lines[2]] == sent, daemon.stderr
    replayed = rulesd_cli("replay", "--config", "rulesd.yaml", "--format", "json", "app.log", cwd=tmp_path)
    assert sent == [json.loads(line)["message"] for line in replayed.stdout.splitlines()], replayed.stderr
    text = rulesd_cli("replay", "--config", "rulesd.yaml", "app.log", cwd=tmp_path).stdout.splitlines()
    assert "events: 2, invalid lines: 0, lines longer than max_line_bytes (skipped): 1, alerts: 1" == text[1]
    assert (
        "3 lines: 2 matched, 0 did not match, 0 ignored (ignore_pattern), 0 blank, 1 too long (max_line_bytes)"
        == text[3]
    )
    explain = ("explain", "--config", "rulesd.yaml", "--events", "app.log", "--line")
    long = rulesd_cli(*explain, "2", cwd=tmp_path)
    assert (2, "rulesd explain: app.log:2: longer than max_line_bytes (64 bytes): the source skips it\n") == (
        long.returncode,
        long.stderr,
    )
    assert "f: matches; fires: threshold reached, 2 of 2" in rulesd_cli(*explain, "3", cwd=tmp_path).stdout


# Runs rulesd as its child and writes its exit status and peak resident size (KiB) to argv[1].
# A child's peak as wait4 says it counts the memory of the process it was started from (Linux
# keeps the larger of the two at exec), so rulesd is started from this small process, never
# from the test's own (a pytest worker of ~300 MB made a run of 30 MB read as 329 MB).
_PEAK = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-m", "rulesd", *sys.argv[2:]])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def _peak_memory_run(*args: str, cwd: Path) -> tuple[int, str, str, int]:
    """Run `rulesd ARGS` to its end: its status, output, errors and peak resident size in bytes."""
    with open(cwd / "out", "w+b") as out, open(cwd / "err", "w+b") as err:
        subprocess.run(
            [sys.executable, "-c", _PEAK, str(cwd / "peak"), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=cwd,
            env=clean_env(),
            check=True,
        )
    status, peak = map(int, (cwd / "peak").read_text(encoding="utf-8").split())
    texts = [(cwd / name).read_text(encoding="utf-8") for name in ("out", "err")]
    return status, texts[0], texts[1], peak * 1024


@pytest.mark.parametrize("newline", [True, False])
def test_replay_and_explain_without_config_skip_a_huge_line_without_holding_it(tmp_path: Path, newline: bool) -> None:
    """Without --config, replay and explain skip a line longer than the sources' default
    max_line_bytes (1 MiB), as the daemon does, said with its line number, and go on: a line of
    256 MiB, last in the file without a newline or before another event, is never held whole
    (it was read whole: a MemoryError traceback for a line of 2 GB)."""
    write(tmp_path / "r.yaml", RULES)
    huge = 256 << 20
    with open(tmp_path / "events.jsonl", "wb") as events:  # sparse: the line is NUL bytes on no disk
        events.write(b'{"level":"error","host":"a"}\n')
        events.truncate(events.tell() + huge)
        events.seek(0, os.SEEK_END)
        events.write(b'\n{"level":"error","host":"c"}\n' if newline else b"")
    status, out, err, peak = _peak_memory_run("replay", "--rules", "r.yaml", "events.jsonl", cwd=tmp_path)
    assert 0 == status, err
    assert peak < huge // 2, peak
    assert f"events.jsonl:2: skipped: longer than max_line_bytes (1048576 bytes): {huge} bytes\n" in err
    fired = ["line 1: P2 [err] error on a", *(["line 3: P2 [err] error on c"] if newline else [])]
    assert fired == [line.split("  (alias")[0] for line in out.splitlines()[:-2]], out
    assert f"lines longer than max_line_bytes (skipped): 1, alerts: {len(fired)}" in out
    explain = ("explain", "--rules", "r.yaml", "--events", "events.jsonl", "--line")
    status, out, err, peak = _peak_memory_run(*explain, "2", cwd=tmp_path)
    assert (2, "rulesd explain: events.jsonl:2: longer than max_line_bytes (1048576 bytes): the source skips it\n") == (
        status,
        err,
    )
    assert peak < huge // 2, peak
    if newline:
        status, out, err, _ = _peak_memory_run(*explain, "3", cwd=tmp_path)
        assert (0, "err: matches") == (status, out.splitlines()[1].split(";")[0]), out + err


def test_a_time_field_that_names_no_field_is_a_usage_error(tmp_path: Path) -> None:
    """`--time-field a..b` (or an empty one) names no field: replay took it, and evaluated every
    event as untimed, said only in the summary's last line; it is refused as the configuration's
    time_field is, by replay and explain alike."""
    write(tmp_path / "r.yaml", RULES)
    write(tmp_path / "events.jsonl", '{"level":"error","t":{"s":1700000000}}\n')
    said = "a field path is one or more non-empty names joined by dots (e.g. ts or meta.time)"
    for command in (["replay", "events.jsonl"], ["explain", "--events", "events.jsonl", "--line", "1"]):
        for field in ("a..b", "", ".ts", "{ts}"):
            result = rulesd_cli(command[0], "--rules", "r.yaml", "--time-field", field, *command[1:], cwd=tmp_path)
            assert (2, f"rulesd {command[0]}: error: argument --time-field: {field!r}: {said}") == (
                result.returncode,
                result.stderr.splitlines()[-1],
            )
    replayed = rulesd_cli("replay", "--rules", "r.yaml", "--time-field", "t.s", "events.jsonl", cwd=tmp_path)
    assert "0 event(s) without a readable time" in replayed.stdout, replayed.stderr


def test_replay_picks_one_of_several_sources_by_name(tmp_path: Path) -> None:
    """With several sources `--source NAME` says whose reading to use; without it, or with an
    unknown name, replay lists the names and exits 2. Events carry the source's name."""
    sources = [
        {"name": "app", "type": "file", "path": "/var/log/app.jsonl"},
        {"name": "sshd", **AUTH_SOURCE},
    ]
    write(tmp_path / "rules" / "r.yaml", SSH_BRUTE.replace("user: {exists: true}", "source_name: sshd"))
    write(tmp_path / "rulesd.yaml", yaml.safe_dump({"sources": sources}))
    write(tmp_path / "auth.log", AUTH_LOG)
    picked = rulesd_cli("replay", "--config", "rulesd.yaml", "--source", "sshd", "auth.log", cwd=tmp_path)
    assert picked.stdout.startswith("line 7: P3 [ssh-brute] brute force from 203.0.113.9"), picked.stdout
    none = rulesd_cli("replay", "--config", "rulesd.yaml", "auth.log", cwd=tmp_path)
    assert (2, "rulesd replay: the configuration has 2 sources; pick one with --source (app, sshd)\n") == (
        none.returncode,
        none.stderr,
    )
    unknown = rulesd_cli("replay", "--config", "rulesd.yaml", "--source", "web", "auth.log", cwd=tmp_path)
    assert (
        2 == unknown.returncode
        and "no source named 'web'" in unknown.stderr
        and "(sources: app, sshd)" in unknown.stderr
    )
    alone = rulesd_cli("replay", "--rules", "rules", "--source", "sshd", "auth.log", cwd=tmp_path)
    assert (2, "rulesd replay: --source needs --config\n") == (alone.returncode, alone.stderr)


def test_replay_reads_journalctl_output_as_a_journald_source_does(tmp_path: Path) -> None:
    """For a journald source the events file is `journalctl --output=json` output, and the
    source's regex applies to MESSAGE as the daemon applies it."""
    source = {
        "type": "journald",
        "format": "regex",
        "pattern": AUTH_SOURCE["pattern"][0].replace(r"^(?P<time>\w{3} +\d+ [\d:]+) \S+ sshd\[\d+\]: ", ""),
    }
    write(tmp_path / "rules" / "r.yaml", SSH_BRUTE.replace("count: 3", "count: 2"))
    write(tmp_path / "rulesd.yaml", yaml.safe_dump({"source": source}))
    entries = [
        {"MESSAGE": f"Failed password for root from 203.0.113.9 port {port} ssh2", "_SYSTEMD_UNIT": "ssh.service"}
        for port in (50001, 50002)
    ]
    write(tmp_path / "ssh.json", "".join(json.dumps(e) + "\n" for e in entries))
    result = rulesd_cli("replay", "--config", "rulesd.yaml", "--format", "json", "ssh.json", cwd=tmp_path)
    payloads = [json.loads(line) for line in result.stdout.splitlines()]
    assert ["brute force from 203.0.113.9"] == [p["message"] for p in payloads]
    assert '"unit": "ssh.service"' in payloads[0]["description"]
    assert "2 lines: 2 matched, 0 did not match" in result.stderr


def test_replay_of_journal_entries_with_out_of_range_numbers_leaves_them_out(tmp_path: Path) -> None:
    """An entry whose time or PID has more digits than a 64-bit integer (an edited export, not
    what journalctl writes) is read without them, as a value that does not convert is: no
    traceback, and the other entries are evaluated."""
    write(tmp_path / "rules" / "r.yaml", "name: m\nmatch: {message: {contains: boom}}\n")
    write(tmp_path / "rulesd.yaml", yaml.safe_dump({"source": {"type": "journald", "time_field": "time"}}))
    entries = [
        {"MESSAGE": "boom 1", "__REALTIME_TIMESTAMP": "1" * 400, "_PID": "9" * 5000},
        {"MESSAGE": "boom 2", "__REALTIME_TIMESTAMP": "1733813746000000", "PRIORITY": "18446744073709551616"},
    ]
    write(tmp_path / "j.json", "".join(json.dumps(e) + "\n" for e in entries))
    result = rulesd_cli("replay", "--config", "rulesd.yaml", "--format", "json", "j.json", cwd=tmp_path)
    assert 0 == result.returncode, result.stderr
    descriptions = [json.loads(line)["description"] for line in result.stdout.splitlines()]
    assert 2 == len(descriptions) and '"pid"' not in descriptions[0] and '"priority"' not in descriptions[1]
    assert "events: 2, invalid lines: 0, alerts: 2" in result.stderr
    assert "1 event(s) without a readable time" in result.stderr


def test_check_config_names_every_source_error_at_its_place(tmp_path: Path) -> None:
    """`rulesd check --config` reports each mistake of `sources` at path:line:col, all at once."""
    config = write(
        tmp_path / "rulesd.yaml",
        "sources:\n"
        "  - {name: web, type: file, path: a.log, format: regex, pattern: 'x', fields: {code: int}}\n"
        "  - {name: web, type: stdin, time_field: t, time_format: 'when'}\n",
    )
    write(tmp_path / "rules" / "r.yaml", RULES)
    result = rulesd_cli("check", "--config", str(config), cwd=tmp_path)
    assert 1 == result.returncode
    assert [
        f"{config}:2:66: error: sources[0].pattern: the pattern has no named groups (?P<name>...)",
        f"{config}:2:86: error: sources[0].fields.code: no pattern has a group named 'code'",
        f"{config}:3:12: error: sources[1].name: duplicate source name 'web' (sources[0] has it too)",
        f"{config}:3:58: error: sources[1].time_format: unknown time_format 'when': one of auto, epoch_s, "
        "epoch_ms, rfc3339, syslog, or a strptime format with % directives such as '%d/%b/%Y:%H:%M:%S %z'",
    ] == [line for line in result.stdout.splitlines() if ": error: " in line]


def test_replay_prints_timer_alerts_and_closes(tmp_path: Path) -> None:
    """A timer's alert names the line of the event that armed it (an expected group never seen:
    none); a close is a line of its own, `{"close": alias, "rules": [...], "reasons": [...]}` in
    JSON (`recovered`: its group recovered). Pending
    timers do not fire at the end of the input."""
    rules = write(
        tmp_path / "rules.yaml",
        "rules:\n"
        "  - {name: quiet, match: {kind: beat}, absence: {window: 60, group_by: [host], expect: [{host: b}]}}\n"
        "  - {name: errors, match: {level: error}, threshold: {count: 1, window: 60}, resolve: {after: 100}}\n",
    )
    events = write(
        tmp_path / "events.jsonl",
        '{"kind":"beat","host":"a","ts":0}\n'
        '{"level":"error","ts":10}\n'
        '{"kind":"other","ts":70}\n'
        '{"kind":"beat","host":"a","ts":80}\n'
        '{"kind":"other","ts":200}\n',
    )
    text = rulesd_cli("replay", "--rules", str(rules), "--time-field", "ts", str(events))
    assert (
        "line 2: P3 [errors] rulesd: errors  (alias: rulesd: errors)\n"
        'expected group: P3 [quiet] rulesd: quiet  (alias: rulesd: quiet: {"host":"b"})\n'
        'line 1: P3 [quiet] rulesd: quiet  (alias: rulesd: quiet: {"host":"a"})\n'
        'line 4: close [quiet] (alias: rulesd: quiet: {"host":"a"})\n'
        "line 5: close [errors] (alias: rulesd: errors)\n"
        'line 4: P3 [quiet] rulesd: quiet  (alias: rulesd: quiet: {"host":"a"})\n'  # silent again from 80
        "events: 5, invalid lines: 0, alerts: 4, closes: 2\n"
        "  errors: 1 firing(s)\n"
        "  quiet: 3 firing(s)\n"
    ) == text.stdout.split("event time")[0]
    as_json = rulesd_cli("replay", "--rules", str(rules), "--time-field", "ts", "--format", "json", str(events))
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [
        {"close": 'rulesd: quiet: {"host":"a"}', "rules": ["quiet"], "reasons": ["recovered"]},
        {"close": "rulesd: errors", "rules": ["errors"], "reasons": ["recovered"]},
    ] == [line for line in lines if "close" in line]


def test_replay_says_why_a_close_was_not_a_recovery(tmp_path: Path) -> None:
    """A group keeps the aliases of its latest 8 alerts: the ninth closes the first, and the text
    line says why, as the close's note does (`errors (superseded)`), and so does the JSON line,
    one reason per rule (it said none: a script could not tell this close from a recovery)."""
    rules = write(
        tmp_path / "rules.yaml",
        "rules:\n  - {name: errors, match: {level: error}, threshold: {count: 1, window: 1m},"
        ' resolve: {after: 1h}, alert: {alias: "req-{req}"}}\n',
    )
    events = write(
        tmp_path / "events.jsonl", "".join(f'{{"level":"error","req":{i},"ts":{i * 10}}}\n' for i in range(1, 10))
    )
    text = rulesd_cli("replay", "--rules", str(rules), "--time-field", "ts", str(events))
    assert ["line 9: close [errors (superseded)] (alias: req-1)"] == [
        line for line in text.stdout.splitlines() if "close [" in line
    ]
    as_json = rulesd_cli("replay", "--rules", str(rules), "--time-field", "ts", "--format", "json", str(events))
    assert [{"close": "req-1", "rules": ["errors"], "reasons": ["superseded"]}] == [
        json.loads(line) for line in as_json.stdout.splitlines() if line.startswith('{"close"')
    ]


def test_replay_with_a_config_keeps_its_limits_and_closes_what_the_daemon_closes(tmp_path: Path) -> None:
    """`limits.groups_per_rule: 2` and three open alerts: the daemon (`run --dry-run`) forgets the
    stalest open group and closes its alert; `replay --config` prints that close too (it kept
    every group, and printed none), with its reason in JSON too."""
    write(
        tmp_path / "rules.yaml",
        "rules:\n"
        "  - {name: errors, match: {level: error}, threshold: {count: 1, window: 1m, group_by: [host]},"
        " resolve: {after: 1h}}\n"
        "  - {name: noise, match: {event: noise}, threshold: {count: 1000000, window: 1h}}\n",
    )
    now = int(time.time())
    lines = [{"level": "error", "host": f"h{i}", "t": now - 40 + 10 * i} for i in (1, 2, 3)]
    lines += [{"event": "noise", "t": now}] * 4200  # the engine sweeps every 4096 matched events
    events = write(tmp_path / "events.jsonl", "".join(json.dumps(e) + "\n" for e in lines))
    config = write(
        tmp_path / "rulesd.yaml",
        "rules: [rules.yaml]\nsource: {type: stdin}\ntime_field: t\nstate_dir: state\nlimits: {groups_per_rule: 2}\n",
    )
    alias = 'rulesd: errors: {"host":"h1"}'
    daemon = rulesd_cli("run", "--config", str(config), "--dry-run", stdin=events.read_bytes(), cwd=tmp_path)
    sent = [json.loads(line) for line in daemon.stdout.splitlines() if line.startswith('{"close"')]
    assert [{"close": alias, "source": "rulesd", "note": "resolved: errors (state limit)"}] == sent
    replayed = rulesd_cli("replay", "--config", str(config), "--format", "json", str(events), cwd=tmp_path)
    assert [{"close": alias, "rules": ["errors"], "reasons": ["state limit"]}] == [
        json.loads(x) for x in replayed.stdout.splitlines() if "close" in x
    ]


def test_explain_a_line_with_a_config_keeps_its_limits_as_replay_does(tmp_path: Path) -> None:
    """`limits.groups_per_rule: 2`: the stalest of three groups is forgotten, so h1's second
    error counts 1 of 2 and fires nothing in `replay --config`; `explain --events --config` of
    that line says the same (it kept every group, and said it fires)."""
    write(
        tmp_path / "rules.yaml",
        "rules:\n"
        "  - {name: errors, match: {level: error}, threshold: {count: 2, window: 1h, group_by: [host]}}\n"
        "  - {name: noise, match: {event: noise}, threshold: {count: 1000000, window: 1h}}\n",
    )
    now = int(time.time())
    lines = [{"level": "error", "host": f"h{i}", "t": now - 100 + 10 * i} for i in (1, 2, 3)]
    lines += [{"event": "noise", "t": now - 50}] * 4200  # the engine sweeps every 4096 matched events
    lines += [{"level": "error", "host": "h1", "t": now - 10}]
    events = write(tmp_path / "events.jsonl", "".join(json.dumps(e) + "\n" for e in lines))
    config = write(
        tmp_path / "rulesd.yaml",
        "rules: [rules.yaml]\nsource: {type: stdin}\ntime_field: t\nstate_dir: state\nlimits: {groups_per_rule: 2}\n",
    )
    replayed = rulesd_cli("replay", "--config", str(config), str(events), cwd=tmp_path)
    assert "alerts: 0" in replayed.stdout
    explained = rulesd_cli(
        "explain", "--config", str(config), "--events", str(events), "--line", str(len(lines)), cwd=tmp_path
    )
    assert 'errors: matches, group host="h1"; not yet: 1 of 2 in 1h\n' in explained.stdout


def test_replay_interrupted_within_a_block_still_shows_the_alerts_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C while a block's alerts are being written out: those already found are shown
    (as when each was written at once), then the interrupt goes on."""
    from rulesd import cli

    rules = write(tmp_path / "rules.yaml", RULES)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(b'{"level":"error","host":"h%d"}\n' % i for i in range(5)))
    shown = cli._alert_line

    def interrupted_at_the_fourth(item: Any) -> str:
        if item.line == 4:
            raise KeyboardInterrupt
        return shown(item)

    monkeypatch.setattr(cli, "_alert_line", interrupted_at_the_fourth)
    args = cli.build_parser().parse_args(["replay", "--rules", str(rules), str(events)])
    with pytest.raises(KeyboardInterrupt):
        cli.cmd_replay(args)
    assert ["line 1:", "line 2:", "line 3:"] == [line[:7] for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("columns", ["57", "132"])
def test_help_is_formatted_as_argparse_would(columns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The formatter sized once per process wraps help exactly as argparse's own, to $COLUMNS."""
    monkeypatch.setenv("COLUMNS", columns)
    cli._help_width.cache_clear()
    try:
        parser = cli.build_parser()
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parsers = [parser, *subparsers.choices.values()]
        ours = [p.format_help() for p in parsers]
        for p in parsers:
            p.formatter_class = (
                argparse.RawDescriptionHelpFormatter if p is parser else argparse.HelpFormatter  # argparse's own
            )
        assert [p.format_help() for p in parsers] == ours
        assert any(len(line) > 80 for text in ours[1:] for line in text.splitlines()) == (columns == "132")
    finally:
        cli._help_width.cache_clear()


COMMAND_LINES = [
    ["replay", "--rules", "r.yaml", "--time-field", "ts", "events.jsonl"],
    ["--log-level", "debug", "check", "rules", "--format", "json"],
    ["run", "--dry-run", "--log-format", "json"],
    ["outbox", "--config", "c.yaml", "show", "7", "--format", "json"],
    ["outbox", "list"],
    ["explain", "--rules", "a", "--rules", "b", "--events", "e", "--line", "3"],
    ["schema", "config", "--write", "out"],
    ["completion", "bash"],
    ["test", "t.test.yaml", "--junit", "j.xml"],
    ["forward", "--config", "c.yaml"],
    ["state", "--rule", "r"],
]


@pytest.mark.parametrize("argv", COMMAND_LINES, ids=" ".join)
def test_deferred_parser_reads_a_command_line_as_the_whole_parser(argv: list[str]) -> None:
    """The parser `rulesd` parses with, whose subcommands' parsers are made when one is used,
    reads every command line as the whole parser (the man page's and completion's) does."""
    assert cli.build_parser().parse_args(argv) == cli._parser(deferred=True).parse_args(argv)


@pytest.mark.parametrize(
    "argv", [[], ["--help"], ["replay"], ["replay", "--help"], ["bogus"], ["outbox", "show"], ["check", "--bad"]]
)
def test_deferred_parser_says_what_the_whole_parser_says(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Help, usage and errors of the deferred parser are the whole parser's, word for word."""
    said = []
    for parser in (cli.build_parser(), cli._parser(deferred=True)):
        with pytest.raises(SystemExit) as stopped:
            parser.parse_args(argv)
        said.append((stopped.value.code, capsys.readouterr()))
    assert said[0] == said[1]


def test_deferred_parser_makes_only_the_parser_of_the_command_given() -> None:
    """`rulesd replay ...` makes replay's parser and no other subcommand's: making the other nine,
    with their options, was ~2.5 ms of every start."""
    parser = cli._parser(deferred=True)
    parser.parse_args(["replay", "--rules", "r.yaml", "events.jsonl"])
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    made = [name for name, sub in subcommands.choices.items() if vars(sub).get("_made") is not None]
    assert ["replay"] == made


def test_a_copied_deferred_parser_parses_as_the_original() -> None:
    """A deferred subcommand's parser copied before it was made (`copy.copy` makes it without
    `__init__`) is made when used, as the original, instead of recursing without end."""
    parser = cli._parser(deferred=True)
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    copied = copy.copy(subcommands.choices["replay"])
    assert cli.build_parser().parse_args(["replay", "e.jsonl"]).events == copied.parse_args(["e.jsonl"]).events


def test_check_and_replay_of_a_rule_file_whose_name_is_not_utf8(tmp_path: Path) -> None:
    """A rule file named on the command line whose name is not UTF-8 (`r-\\xff.yaml`): check and
    replay raised UnicodeEncodeError making the key of the generated code from its path, with
    the rule cache or without. The rules load, and an error is placed in that file."""
    rules = tmp_path / os.fsdecode(b"r-\xff.yaml")
    rules.write_text(RULES)
    (tmp_path / "events.jsonl").write_text('{"level": "error", "host": "a"}\n')
    for cache in ("", str(tmp_path / "cache")):
        env = {"RULESD_CACHE_DIR": cache}
        checked = rulesd_cli("check", rules.name, cwd=tmp_path, env=env)
        assert (0, "OK: 1 file(s), 1 rule(s), 0 error(s), 0 warning(s)\n") == (checked.returncode, checked.stdout)
        replayed = rulesd_cli("replay", "--rules", rules.name, "events.jsonl", cwd=tmp_path, env=env)
        assert (0, "line 1: P2 [err] error on a  (alias: rulesd: err)") == (
            replayed.returncode,
            replayed.stdout.splitlines()[0],
        )
    rules.write_text(RULES.replace("P2", "P0"))
    checked = rulesd_cli("check", rules.name, cwd=tmp_path)
    assert (1, 'r-\ufffd.yaml:3:19: error: alert.priority: "P0" is not one of') == (
        checked.returncode,
        checked.stdout[: checked.stdout.index(": P1")],
    )


def test_replay_and_explain_of_an_events_file_whose_name_is_not_utf8(tmp_path: Path) -> None:
    """An events file whose name is not UTF-8 (`app-\\xff.jsonl`): `replay --format json` stopped
    with a traceback (the name, in the alert's Event Source, could not be written as JSON). It is
    named with that byte escaped, as the daemon names such a file."""
    write(tmp_path / "rules" / "r.yaml", "name: r\nmatch: {kind: page}\nalert: {alias: 'p-{id}'}\n")
    name = os.fsdecode(b"app-\xff.jsonl")
    (tmp_path / name).write_text('{"kind": "page", "id": 1}\n')
    replayed = rulesd_cli("replay", "--rules", "rules", name, "--format", "json", cwd=tmp_path)
    assert 0 == replayed.returncode, replayed.stderr
    (payload,) = [json.loads(line) for line in replayed.stdout.splitlines()]
    assert "app-\\xff.jsonl:1" == payload["details"]["Event Source"]
    explained = rulesd_cli("explain", "--rules", "rules", "--events", name, "--line", "1", cwd=tmp_path)
    assert 0 == explained.returncode, explained.stderr
    assert "app-\\xff.jsonl:1" in explained.stdout


def test_a_returned_commands_deferred_log_set_up_is_not_made_by_a_later_logger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check` and `replay` set logging up only when they first log. One that returned without
    logging leaves nothing pending: a later logger in the same process (another command, a
    daemon built by an embedding program) keeps the handlers it has, not a stream the
    finished command was given and its caller has closed since."""
    import logging

    from rulesd import loggers

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    assert 0 == cli.main(["check", str(write(tmp_path / "r.yaml", RULES))])
    stream.close()
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        loggers.logger("rulesd")  # (where a deferred set-up is made: nothing is logged, so no handler writes)
        assert before == root.handlers
    finally:
        root.handlers[:] = before
