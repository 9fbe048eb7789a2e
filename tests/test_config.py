"""Tests for rulesd.config: the daemon configuration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rulesd.alerting.api import is_host_name, validate_alert_url
from rulesd.config import load_config, resolve_api_key
from rulesd.engine import Limits
from rulesd.errors import ConfigError
from rulesd.eventtime import EventTime
from rulesd.rules.model import Responder
from tests.daemon_process import Workspace
from tests.run_cli import rulesd_cli


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "rulesd.yaml"
    path.write_text(text)
    return str(path)


def problems(path: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    return [str(p) for p in info.value.problems]


def test_empty_config_gets_defaults(tmp_path: Path) -> None:
    """An empty file is a valid config: stdin source, rules/ beside it."""
    config = load_config(write(tmp_path, ""), environ={})
    assert (str(tmp_path / "rules"),) == config.rules
    assert "stdin" == config.source.type
    assert "https://api.opsgenie.com/v2/alerts" == config.opsgenie.alert_url
    assert 86400.0 == config.opsgenie.max_age


def test_the_state_limits_default_and_are_read(tmp_path: Path) -> None:
    """`limits` bounds the groups and a new_value group's values: 10,000 values by default."""
    assert Limits() == load_config(write(tmp_path, ""), environ={}).limits
    assert 10_000 == Limits().values_per_group
    text = "limits: {groups_per_rule: 5, groups: 50, values_per_group: 20}\n"
    assert Limits(5, 50, 20) == load_config(write(tmp_path, text), environ={}).limits


@pytest.mark.parametrize("key", ["values_per_group", "groups_per_rule"])
def test_a_limit_written_as_a_whole_float_holds_as_the_integer(tmp_path: Path, key: str) -> None:
    """The schema takes `2.0` for an integer: the limit reached, the engine sliced by the float
    and the process failed with a TypeError (rulesd run's reader, rulesd replay). It acts as 2."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(
        "rules:\n  - name: new-agent\n    match: {event: request}\n"
        "    new_value: {fields: [agent], group_by: [host]}\n    alert: {message: 'new {agent} on {host}'}\n"
    )
    many = "agent" if key == "values_per_group" else "host"
    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(
            f'{{"event": "request", "host": "h", "agent": "a", "{many}": "{many}-{i % 50}"}}\n' for i in range(5000)
        )
    )
    outputs = []
    for written in ("2", "2.0"):
        config = tmp_path / f"rulesd-{written}.yaml"
        config.write_text(f"rules: [rules]\nsource: {{type: stdin}}\nlimits: {{{key}: {written}}}\n")
        result = rulesd_cli("replay", "--config", str(config), str(events), cwd=tmp_path)
        assert 0 == result.returncode, result.stderr
        assert "Traceback" not in result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1] and outputs[0].count("new-agent") > 50  # forgotten, new again


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    """rules, source.path, state_dir and api_key_file are relative to the config file."""
    config = load_config(
        write(
            tmp_path,
            (
                "rules: [r, /abs/rules]\n"
                "source: {type: file, path: logs/*.jsonl, start_at: beginning}\n"
                "state_dir: st\n"
                "opsgenie: {api_key_file: key.txt, recipients: 'team:ops, alice@example.com, schedule:night'}\n"
            ),
        ),
        environ={},
    )
    assert (str(tmp_path / "r"), "/abs/rules") == config.rules
    assert (str(tmp_path / "logs/*.jsonl"),) == config.source.paths
    assert str(tmp_path / "st") == config.state_dir
    assert str(tmp_path / "key.txt") == config.opsgenie.api_key_file
    assert (
        Responder("team", "name", "ops"),
        Responder("user", "username", "alice@example.com"),
        Responder("schedule", "name", "night"),
    ) == config.opsgenie.recipients


def test_state_dir_defaults_to_systemd_state_directory(tmp_path: Path) -> None:
    """Under systemd's StateDirectory=, $STATE_DIRECTORY is the default state_dir."""
    config = load_config(write(tmp_path, ""), environ={"STATE_DIRECTORY": "/var/lib/rulesd-x"})
    assert "/var/lib/rulesd-x" == config.state_dir


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sorce: {type: stdin}\n", "rulesd.yaml:1:1: error: sorce: unknown key 'sorce'; did you mean 'source'?"),
        (
            "source: {type: kafka}\n",
            'rulesd.yaml:1:16: error: source.type: "kafka" is not one of: file, stdin, journald, redis_stream',
        ),
        (
            "source: {type: file}\n",
            "rulesd.yaml:1:9: error: source: missing required key 'path' (the file or glob to tail)",
        ),
        (
            "source: {type: stdin, format: regex}\n",
            "rulesd.yaml:1:9: error: source: format: regex needs a 'pattern' with named groups",
        ),
        (
            "source: {type: stdin, format: regex, pattern: '(x'}\n",
            "rulesd.yaml:1:47: error: source.pattern: invalid regex '(x': missing ) at position 1",
        ),
        (
            "source: {type: stdin, format: regex, pattern: '(?P<a>x)(?P=a)'}\n",
            "rulesd.yaml:1:47: error: source.pattern: regex '(?P<a>x)(?P=a)' is refused: backreferences are not "
            "supported at position 9; regexes must run in time linear in the text (the syntax RE2 and Hyperscan "
            "share)",
        ),
        (
            "source: {type: stdin, format: regex, pattern: '(?P<a>x)(?=y)'}\n",
            "rulesd.yaml:1:47: error: source.pattern: regex '(?P<a>x)(?=y)' is refused: look-ahead assertions are "
            "not supported at position 9; regexes must run in time linear in the text (the syntax RE2 and Hyperscan "
            "share)",
        ),
        (
            "opsgenie: {alert_url: 'http://api.opsgenie.com/v2/alerts'}\n",
            "rulesd.yaml:1:23: error: opsgenie.alert_url: alert_url 'http://api.opsgenie.com/v2/alerts': "
            "http is allowed only for loopback hosts; use https",
        ),
        (
            "opsgenie: {alert_url: 'https://api..opsgenie.com/v2/alerts'}\n",
            "rulesd.yaml:1:23: error: opsgenie.alert_url: alert_url 'https://api..opsgenie.com/v2/alerts': "
            "'api..opsgenie.com' is no host name (a label is empty or over 63 characters)",
        ),
        (
            "opsgenie: {alert_url: 'http://[::1%25lo]:8080/v2/alerts'}\n",
            "rulesd.yaml:1:23: error: opsgenie.alert_url: alert_url 'http://[::1%25lo]:8080/v2/alerts': "
            "an IPv6 zone id ('%25lo') is not supported: write the address without it ([::1]) or a host name",
        ),
        (
            "opsgenie: {alert_url: 'https://[fe80::1%25eth0]/v2/alerts'}\n",
            "rulesd.yaml:1:23: error: opsgenie.alert_url: alert_url 'https://[fe80::1%25eth0]/v2/alerts': "
            "an IPv6 zone id ('%25eth0') is not supported: write the address without it ([fe80::1]) or a host name",
        ),
        (
            "opsgenie: {alert_url: 'https://api%2Eopsgenie.com/v2/alerts'}\n",
            "rulesd.yaml:1:23: error: opsgenie.alert_url: alert_url 'https://api%2Eopsgenie.com/v2/alerts': "
            "'api%2Eopsgenie.com' is no host name (a '%' escape): write the host as it is",
        ),
        (
            "opsgenie: {max_age: 3 days}\n",
            'rulesd.yaml:1:21: error: opsgenie.max_age: "3 days": a duration is a number of seconds or a string '
            "like 30s, 5m, 2h, 1d or 1h30m (each unit at most once, largest first)",
        ),
        (
            "opsgenie: {recipients: 'team:'}\n",
            "rulesd.yaml:1:24: error: opsgenie.recipients: recipient 'team:' has no name",
        ),
        ("metrics: {listen: 9464}\n", "rulesd.yaml:1:19: error: metrics.listen: expected a string or null, got 9464"),
        (
            "metrics: {listen: '127.0.0.1:99999'}\n",
            "rulesd.yaml:1:19: error: metrics.listen: '127.0.0.1:99999': the port must be 0 to 65535",
        ),
        ("- a\n- b\n", "rulesd.yaml:1:1: error: the configuration must be a mapping of keys"),
        (
            "limits: {values_per_group: 0}\n",
            "rulesd.yaml:1:28: error: limits.values_per_group: 0 is less than the minimum of 1",
        ),
    ],
)
def test_config_errors_name_the_key_and_place(tmp_path: Path, text: str, expected: str) -> None:
    """Each config error is reported as path:line:col with the key."""
    found = problems(write(tmp_path, text))
    assert [f"{tmp_path}/{expected}"] == found


@pytest.mark.parametrize(
    "url",
    [
        "https://api.opsgenie.com/v2/alerts",
        "https://api.eu.opsgenie.com/v2/alerts",
        "http://127.0.0.1:8080/v2/alerts",
        "http://localhost/v2/alerts",
        "http://[::1]:9/v2/alerts",
        "http://127.9.9.9/x",
    ],
)
def test_alert_url_accepted(url: str) -> None:
    """https anywhere, http only on loopback."""
    assert url == validate_alert_url(url)


@pytest.mark.parametrize(
    "url",
    ["http://api.opsgenie.com/v2/alerts", "ftp://x/y", "api.opsgenie.com/v2/alerts", "http://10.0.0.1/x", "https://"],
)
def test_alert_url_refused(url: str) -> None:
    """Anything else would send the key in clear text or nowhere sensible."""
    with pytest.raises(ValueError):
        validate_alert_url(url)


def test_api_key_sources_in_order(tmp_path: Path) -> None:
    """api_key_file, then the environment, then the systemd credential, then inline; stripped."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "opsgenie-api-key").write_text("cred-key\n")
    (tmp_path / "key.txt").write_text("  file-key \n")
    env = {"RULESD_OPSGENIE_API_KEY": " env-key ", "CREDENTIALS_DIRECTORY": str(creds)}
    with_file = load_config(write(tmp_path, "opsgenie: {api_key_file: key.txt, api_key: inline}\n"), environ={})
    inline = load_config(write(tmp_path, "opsgenie: {api_key: ' inline '}\n"), environ={})
    assert "file-key" == resolve_api_key(with_file.opsgenie, env)
    assert "env-key" == resolve_api_key(inline.opsgenie, env)
    assert "cred-key" == resolve_api_key(inline.opsgenie, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert "inline" == resolve_api_key(inline.opsgenie, {})


def test_missing_api_key_is_a_config_error(tmp_path: Path) -> None:
    """No key anywhere: a clear error that mentions --dry-run."""
    config = load_config(write(tmp_path, ""), environ={})
    with pytest.raises(ConfigError, match="--dry-run"):
        resolve_api_key(config.opsgenie, {})


def test_inline_key_is_not_in_repr(tmp_path: Path) -> None:
    """The key never shows up when the config is printed or logged."""
    config = load_config(write(tmp_path, "opsgenie: {api_key: s3cr3t-key}\n"), environ={})
    assert "s3cr3t-key" not in repr(config)


def test_journald_source_settings(tmp_path: Path) -> None:
    """units and matches (a value or a list of values) are read for a journald source."""
    config = load_config(
        write(
            tmp_path,
            "source: {type: journald, units: [app.service],\n"
            "         matches: {PRIORITY: ['3', '4'], SYSLOG_IDENTIFIER: app}}\n",
        ),
        environ={},
    )
    assert ("app.service",) == config.source.units
    assert (("PRIORITY", ("3", "4")), ("SYSLOG_IDENTIFIER", ("app",))) == config.source.matches


def test_journald_keys_refused_elsewhere(tmp_path: Path) -> None:
    """units/matches on a file source are a mistake worth reporting."""
    found = problems(write(tmp_path, "source: {type: file, path: x.log, units: [a]}\n"))
    assert [f"{tmp_path}/rulesd.yaml:1:42: error: source.units: 'units' is only used with type: journald"] == found


def test_a_duplicate_key_does_not_hide_the_other_errors(tmp_path: Path) -> None:
    """The duplicate is reported and the rest of the file is still checked."""
    path = write(tmp_path, "state_dir: a\nstate_dir: b\nopsgenie: {timeout: 3}\n")
    assert [
        f"{path}:2:1: error: duplicate key 'state_dir' (first defined on line 1)",
        f"{path}:3:12: error: opsgenie.timeout: unknown key 'timeout'; did you mean 'timeout_s'?",
    ] == problems(path)


def test_a_duration_with_a_unit_where_seconds_are_a_number_says_the_number(tmp_path: Path) -> None:
    """`timeout_s: 10s` (or `2m`), as durations are written elsewhere in the file, was only
    "expected a number": the error says the seconds to write."""
    path = write(tmp_path, "opsgenie: {timeout_s: 10s}\n")
    seconds = "opsgenie.timeout_s: expected a number, got"
    assert [
        f'{path}:1:23: error: {seconds} "10s": timeout_s is a number of seconds, with no unit: write timeout_s: 10'
    ] == (problems(path))
    path = write(tmp_path, "opsgenie:\n  timeout_s: 2m\n")
    assert [
        f'{path}:2:14: error: {seconds} "2m": timeout_s is a number of seconds, with no unit: write timeout_s: 120'
    ] == (problems(path))
    path = write(tmp_path, "opsgenie: {timeout_s: ten}\n")
    assert [f'{path}:1:23: error: {seconds} "ten": timeout_s is a number of seconds (timeout_s: 10)'] == problems(path)


def test_a_number_with_an_exponent_that_yaml_read_as_text_says_the_number(tmp_path: Path) -> None:
    """`timeout_s: 1e1` and `max_line_bytes: 1e6` are text to YAML 1.1 (a number with an
    exponent needs a point and a signed exponent): the error says the number to write, not that
    timeout_s is a number of seconds."""
    path = write(tmp_path, "opsgenie: {timeout_s: 1e1}\nsource: {type: stdin, max_line_bytes: 1e6}\n")
    said = "as text (a number with an exponent needs a point and a signed exponent, 1.0e+3): write"
    assert [
        f'{path}:1:23: error: opsgenie.timeout_s: expected a number, got "1e1": YAML reads 1e1 {said} 10',
        f'{path}:2:39: error: source.max_line_bytes: expected an integer, got "1e6": YAML reads 1e6 {said} 1000000',
    ] == problems(path)
    quoted = write(tmp_path, "opsgenie: {timeout_s: '1.5e+1'}\n")  # (YAML's own form: a text only as quoted)
    assert [
        f'{quoted}:1:23: error: opsgenie.timeout_s: expected a number, got "1.5e+1": timeout_s is a number of '
        "seconds (timeout_s: 10)"
    ] == problems(quoted)


def test_a_time_format_without_a_date_is_refused_by_check_and_replay(tmp_path: Path) -> None:
    """`time_format: '%H:%M:%S'` (a log that writes only the time) was taken: strptime dates it
    1 January, so every event was months before its arrival and went a day back at each
    midnight, where heartbeats dated a window before the clock end no silence. Both commands
    say so at the line, before anything is read."""
    (tmp_path / "r.yaml").write_text("rules:\n  - {name: e, match: {level: error}}\n")
    (tmp_path / "events.jsonl").write_text('{"level": "error", "t": "10:00:01"}\n')
    cfg = write(tmp_path, "rules: [r.yaml]\nsource:\n  type: stdin\n  time_field: t\n  time_format: '%H:%M:%S'\n")
    said = f"{cfg}:5:16: error: source.time_format: time_format '%H:%M:%S' reads no date (a month and a day)"
    checked = rulesd_cli("check", "--config", cfg)
    assert 1 == checked.returncode and checked.stdout.startswith(said), checked.stdout
    replayed = rulesd_cli("replay", "--config", cfg, str(tmp_path / "events.jsonl"))
    assert (2, "") == (replayed.returncode, replayed.stdout)
    assert replayed.stderr.startswith(said), replayed.stderr


def test_a_timeout_of_nan_is_an_error_at_its_line(tmp_path: Path) -> None:
    """YAML's .nan is a number within timeout_s's bounds (it compares false with both): it was
    taken, and every request to OpsGenie then failed on `settimeout(nan)`, no alert delivered."""
    path = write(tmp_path, "opsgenie:\n  timeout_s: .nan\n")
    assert [
        f"{path}:2:14: error: opsgenie.timeout_s: expected a number of seconds, got .nan: a socket takes no such "
        "timeout, so every request would fail and no alert be delivered (the default is 10)"
    ] == problems(path)


def test_an_ignore_pattern_found_in_every_line_is_an_error_at_it(tmp_path: Path) -> None:
    """`ignore_pattern: ".*"` (or `(debug)?`, `DEBUG|$`) matches the empty text, so the source
    dropped every line before any rule saw it, and check said OK; one that drops only blank
    lines (`^\\s*$`) is taken."""
    patterns = '["^\\\\s*$", "(?i)(debug)?", "DEBUG|$"]'
    path = write(tmp_path, f"source:\n  type: stdin\n  format: text\n  ignore_pattern: {patterns}\n")
    every = "is found in every line (it matches an empty text): every line would be dropped"
    assert [
        f"{path}:4:30: error: source.ignore_pattern[1]: '(?i)(debug)?' {every}",
        f"{path}:4:46: error: source.ignore_pattern[2]: 'DEBUG|$' {every}",
    ] == problems(path)
    path = write(tmp_path, "source: {type: stdin, format: text, ignore_pattern: .*}\n")
    assert [f"{path}:1:53: error: source.ignore_pattern: '.*' {every}"] == problems(path)


SOURCES = """\
time_field: ts
sources:
  - name: nginx
    type: file
    path: access.log
    format: regex
    pattern: '(?P<ip>\\S+) .* \\[(?P<time>[^]]+)\\] "(?P<request>[^"]*)" (?P<status>\\d+)'
    fields: {status: int}
    time_field: time
    time_format: "%d/%b/%Y:%H:%M:%S %z"
  - name: sshd
    type: journald
    units: [ssh.service]
    format: regex
    pattern:
      - 'Failed password for (?:invalid user )?(?P<user>\\S+) from (?P<ip>\\S+)'
      - 'Invalid user (?P<user>\\S+) from (?P<ip>\\S+)'
    ignore_pattern: '^Connection closed'
  - name: app
    type: file
    path: app.jsonl
"""


def test_several_sources_each_with_its_own_reading(tmp_path: Path) -> None:
    """`sources:` gives each source its name, format, patterns, field types and time; a source
    without a time_field of its own takes the top-level one, in the auto format."""
    config = load_config(write(tmp_path, SOURCES), environ={})
    nginx, sshd, app = config.sources
    assert ("nginx", "file", (str(tmp_path / "access.log"),)) == (nginx.name, nginx.type, nginx.paths)
    assert (("status", "int"),) == nginx.reading.fields
    assert EventTime("time", "%d/%b/%Y:%H:%M:%S %z") == nginx.reading.time
    assert ("sshd", 2, ("^Connection closed",)) == (sshd.name, len(sshd.reading.patterns), sshd.reading.ignore)
    assert EventTime("ts", "auto") == sshd.reading.time == app.reading.time
    assert ["nginx", "sshd", "app"] == [s.label for s in config.sources]


def test_a_single_source_may_have_a_name_and_an_unnamed_one_is_labelled_by_its_type(tmp_path: Path) -> None:
    """`source:` takes `name` too (events then carry it); without one it adds nothing."""
    named = load_config(write(tmp_path, "source: {type: stdin, name: in}\n"), environ={})
    assert ("in", "in") == (named.source.name, named.source.label)
    plain = load_config(write(tmp_path, "source: {type: stdin}\n"), environ={})
    assert (None, "stdin", None) == (plain.source.name, plain.source.label, plain.source.reading.source_name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "source: {type: stdin, format: regex, pattern: '(?P<a>x)', time_field: a, time_format: epoch}\n",
            "1:87: error: source.time_format: unknown time_format 'epoch': one of auto, epoch_s, epoch_ms, rfc3339, "
            "syslog, or a strptime format with % directives such as '%d/%b/%Y:%H:%M:%S %z'",
        ),
        (
            "source: {type: stdin, time_field: t, time_format: '%d/%Q'}\n",
            "1:51: error: source.time_format: time_format '%d/%Q' is not a usable strptime format: "
            "'Q' is a bad directive in format '%d/%Q'",
        ),
        (
            "source: {type: stdin, time_field: t, time_format: '%H:%M:%S'}\n",
            "1:51: error: source.time_format: time_format '%H:%M:%S' reads no date (a month and a day): every event "
            "would be dated 1 January; add the date's directives (%b %d, %m/%d, %j), or leave out time_field to "
            "count events at their arrival",
        ),
        (
            "source: {type: stdin, time_format: epoch_ms}\n",
            "1:36: error: source.time_format: a time_format needs a time_field (of the source, or at the top level)",
        ),
        (
            "source: {type: stdin, format: regex, pattern: '(?P<a>x)', fields: {a: integer}}\n",
            '1:71: error: source.fields.a: "integer" is not one of: int, float, bool',
        ),
        (
            "source: {type: stdin, format: regex, pattern: '(?P<a>x)', fields: {b: int}}\n",
            "1:71: error: source.fields.b: no pattern has a group named 'b'",
        ),
        (
            "source: {type: stdin, format: text, fields: {status: int}}\n",
            "1:54: error: source.fields.status: format: text has only message, not 'status'",
        ),
        (
            "source: {type: stdin, fields: {status: int}}\n",
            "1:31: error: source.fields: 'fields' is used with format text or regex (a JSON line is parsed whole)",
        ),
        (
            "source: {type: stdin, format: regex, pattern: ['(?P<a>x)', 'y']}\n",
            "1:60: error: source.pattern[1]: the pattern has no named groups (?P<name>...)",
        ),
        (
            "source: {type: stdin, format: text, ignore_pattern: ['ok', '(']}\n",
            "1:60: error: source.ignore_pattern[1]: invalid regex '(': missing ) at position 1",
        ),
        (
            "source: {type: stdin, format: regex, pattern: ['(?P<a>x)', '(?P<b>y)(?=z)']}\n",
            "1:60: error: source.pattern[1]: regex '(?P<b>y)(?=z)' is refused: look-ahead assertions are not "
            "supported at position 9; regexes must run in time linear in the text (the syntax RE2 and Hyperscan share)",
        ),
        (
            "source: {type: stdin, name: a, format: regex, pattern: '(?P<source_name>x)'}\n",
            "1:56: error: source.pattern: the group name source_name is taken: it holds the source's name",
        ),
        (
            "sources:\n  - {name: a, type: stdin}\n  - {name: a, type: file, path: x}\n",
            "3:12: error: sources[1].name: duplicate source name 'a' (sources[0] has it too)",
        ),
        (
            "sources:\n  - {name: a, type: stdin}\n  - {name: b, type: stdin}\n",
            "3:21: error: sources[1].type: only one source can read stdin (sources[0] does)",
        ),
        (
            "source: {type: stdin}\nsources:\n  - {name: a, type: stdin}\n",
            "3:3: error: sources: give either source or sources, not both (sources replaces source)",
        ),
        (
            "sources:\n  - {type: stdin}\n",
            "2:5: error: sources[0]: missing required key 'name'",
        ),
        (
            "sources:\n  - {name: 'a b', type: stdin}\n",
            '2:12: error: sources[0].name: "a b": a source name is 1 to 64 letters, digits, '
            "'_', '.' or '-', starting with a letter or digit",
        ),
    ],
)
def test_source_reading_errors_name_the_key_and_place(tmp_path: Path, text: str, expected: str) -> None:
    """Every mistake in a source's format, patterns, field types, time and names is an error
    at its path:line:col."""
    assert [f"{tmp_path}/rulesd.yaml:{expected}"] == problems(write(tmp_path, text))


SECRET = "734519826504"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:secret@state:notaport/0", "the port is not a number from 0 to 65535"),
        ("redis://:secret@state:70000/0", "the port is not a number from 0 to 65535"),
        ("redis://:secret@state:6379/one", "the database is not a number"),
        ("redis://", "the URL names no host"),
        ("unix://", "a unix:// URL needs the socket's path"),
    ],
)
def test_a_malformed_redis_url_is_a_config_error_at_its_key(tmp_path: Path, url: str, expected: str) -> None:
    """A Redis URL the client cannot parse (it raised ValueError at the first connection, a
    traceback from every command) or would read otherwise (a database that is not a number
    went to database 0) is reported where it is written, without the password, exit 2."""
    cfg = write(
        tmp_path,
        f"source: {{type: redis_stream, url: '{url}'}}\n"
        f"state: {{backend: redis, url: '{url}'}}\n"
        f"forward: {{url: '{url}'}}\n",
    )
    found = problems(cfg)
    assert [(1, "source.url"), (2, "state.url"), (3, "forward.url")] == [
        (int(p.split(":")[1]), p.split(": ")[2]) for p in found
    ]
    assert all(f": {expected} (" in p and "secret" not in p for p in found), found
    for command in (["run"], ["state"], ["outbox", "list"], ["forward"]):
        result = rulesd_cli(*command, "--config", cfg)
        assert 2 == result.returncode, result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr and "secret" not in result.stderr


@pytest.mark.parametrize(
    "value",
    [SECRET, f"[{SECRET}]", f"{{k: {SECRET}}}", f"{SECRET}.5", "true"],
    ids=["all-digits", "list", "mapping", "number", "boolean"],
)
@pytest.mark.parametrize("fmt", ["text", "json", "github"])
def test_check_never_echoes_an_inline_api_key(tmp_path: Path, value: str, fmt: str) -> None:
    """An inline api_key of the wrong type is reported at its place, its value never shown."""
    (tmp_path / "rules").mkdir()
    config = write(tmp_path, f"opsgenie:\n  api_key: {value}\n")
    result = rulesd_cli("check", "--config", config, "--format", fmt)
    assert 1 == result.returncode
    assert "opsgenie.api_key" in result.stdout
    assert "not shown: it is a secret" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_a_key_file_readable_by_others_draws_a_warning_from_check(tmp_path: Path) -> None:
    """`rulesd check --config` names a key file that group or others may read; 0600 is quiet."""
    (tmp_path / "rules").mkdir()
    key = tmp_path / "opsgenie.key"
    key.write_text("k\n")
    config = write(tmp_path, "opsgenie: {api_key_file: opsgenie.key}\n")
    for mode in (0o644, 0o640):
        os.chmod(key, mode)
        result = rulesd_cli("check", "--config", config)
        assert 0 == result.returncode, result.stdout
        expected = (
            f"{key}: warning: the API key file is readable by group or others (mode {mode:04o}); run: chmod 600 {key}"
        )
        assert expected in result.stdout
    os.chmod(key, 0o600)
    assert "API key file" not in rulesd_cli("check", "--config", config).stdout


def test_a_key_file_readable_by_others_draws_a_warning_from_run(workspace: Workspace) -> None:
    """`rulesd run` logs the same warning at start, naming the file."""
    os.chmod(workspace.key_file, 0o604)
    daemon = workspace.start()
    assert daemon.wait_for_log(f"{workspace.key_file}: the API key file is readable by group or others (mode 0604)")


def test_check_refuses_a_source_path_that_names_a_fifo_or_a_directory(tmp_path: Path) -> None:
    """`rulesd check --config` names each path of a file source that is a FIFO or a directory
    (never followed: a FIFO has no offset to resume from) at its line, with what to give
    instead; a missing path (waited for) and a glob are not errors."""
    (tmp_path / "rules").mkdir()
    os.mkfifo(tmp_path / "events.fifo")
    (tmp_path / "logs").mkdir()
    config = write(
        tmp_path,
        "sources:\n  - name: app\n    type: file\n    path: [later.log, events.fifo, logs, 'logs/*.log']\n",
    )
    result = rulesd_cli("check", "--config", config)
    assert 1 == result.returncode, result.stdout
    assert [
        f"{config}:4:23: error: sources[0].path[1]: {tmp_path}/events.fifo is a FIFO, not a regular file: a file "
        f"source follows regular files; to read a pipe, use source: {{type: stdin}} and run: rulesd run < "
        f"{tmp_path}/events.fifo",
        f"{config}:4:36: error: sources[0].path[2]: {tmp_path}/logs is a directory; to follow the files in it give "
        f"a glob, e.g. {tmp_path}/logs/*.log",
    ] == [line for line in result.stdout.splitlines() if ": error: " in line]


def test_check_refuses_a_source_path_that_names_a_file_of_proc(tmp_path: Path) -> None:
    """A file of /proc (its size reads 0, yet it holds lines; here through a link) is an error at
    its line, saying how to read its lines once: followed, it was read again at every turn. An
    empty regular file beside it is no error (it is waited on to grow)."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "empty.log").touch()
    (tmp_path / "status").symlink_to("/proc/self/status")
    config = write(tmp_path, "source: {type: file, path: [empty.log, status]}\n")
    result = rulesd_cli("check", "--config", config)
    assert 1 == result.returncode, result.stdout
    assert [
        f"{config}:1:40: error: source.path[1]: {tmp_path}/status is a file whose size reads 0 though it holds data "
        "(as the files of /proc and /sys do): a file source follows files that lines are appended to, and this one "
        f"has no end to follow; to read its lines once, use source: {{type: stdin}} and run: rulesd run < "
        f"{tmp_path}/status",
    ] == [line for line in result.stdout.splitlines() if "source.path" in line]


def test_a_path_written_with_an_environment_variable_is_an_error_at_its_line(tmp_path: Path) -> None:
    """Nothing in rulesd.yaml is expanded: `${LOG_DIR}/app.jsonl` named a file of that name
    beside the config (waited for, for good) and `$STATE_DIRECTORY/rulesd` made a directory
    called `$STATE_DIRECTORY`; `check` and `run` now refuse each path at its line."""
    (tmp_path / "rules").mkdir()
    config = write(
        tmp_path,
        "rules: [rules, $RULES]\n"
        "source:\n  type: file\n  path: ${LOG_DIR}/app.jsonl\n"
        "state_dir: $STATE_DIRECTORY/rulesd\n"
        "opsgenie: {api_key_file: '${CREDENTIALS_DIRECTORY}/key'}\n",
    )
    expected = [
        f"{config}:1:16: error: rules[1]: '$RULES': environment variables such as $RULES are not expanded; write "
        "the path out",
        f"{config}:4:9: error: source.path: '${{LOG_DIR}}/app.jsonl': environment variables such as ${{LOG_DIR}} are "
        "not expanded; write the path out",
        f"{config}:5:12: error: state_dir: '$STATE_DIRECTORY/rulesd': environment variables such as "
        "$STATE_DIRECTORY are not expanded; write the path out (leave state_dir out to use $STATE_DIRECTORY, as "
        "systemd sets it)",
        f"{config}:6:26: error: opsgenie.api_key_file: '${{CREDENTIALS_DIRECTORY}}/key': environment variables such "
        "as ${CREDENTIALS_DIRECTORY} are not expanded; write the path out",
    ]
    checked = rulesd_cli("check", "--config", config, env={"LOG_DIR": str(tmp_path)})
    assert 1 == checked.returncode, checked.stdout
    assert expected == [line for line in checked.stdout.splitlines() if f"{config}:" in line]
    run = rulesd_cli("run", "--config", config, "--dry-run", env={"LOG_DIR": str(tmp_path)})
    assert 2 == run.returncode, run.stderr
    assert expected == [line for line in run.stderr.splitlines() if f"{config}:" in line]


@pytest.mark.parametrize(
    ("text", "where", "variable"),
    [
        ("rules: [rules]\nsource: {type: file, path: ${LOG_DIR}/a.log}\n", "2:28", "${LOG_DIR}"),
        ("rules: [rules, ${RULES}]\n", "1:16", "${RULES}"),
    ],
)
def test_a_variable_in_braces_is_named_rather_than_a_yaml_syntax_error(
    tmp_path: Path, text: str, where: str, variable: str
) -> None:
    """In a flow mapping or list the variable's brace ends the plain value, a YAML syntax error
    (`did not find expected ',' or '}'`) that said nothing of the variable: said as what it is, at
    the `$`, by check (exit 1) and run (exit 2)."""
    (tmp_path / "rules").mkdir()
    config = write(tmp_path, text)
    expected = [
        f"{config}:{where}: error: {variable}: environment variables are not expanded, and within {{...}} or [...] "
        "its brace is a YAML syntax error; write the path out"
    ]
    checked = rulesd_cli("check", "--config", config)
    assert (1, expected) == (checked.returncode, [line for line in checked.stdout.splitlines() if f"{config}:" in line])
    run = rulesd_cli("run", "--config", config, "--dry-run")
    assert (2, expected) == (run.returncode, [line for line in run.stderr.splitlines() if f"{config}:" in line])
    assert ["rules", "rulesd.yaml"] == sorted(os.listdir(tmp_path))  # no `$STATE_DIRECTORY` made


def test_a_source_path_that_names_no_file_draws_a_warning_at_its_line(workspace: Workspace) -> None:
    """A path that does not exist (a stray space, a wrong directory) or a glob that matches no
    file is waited for, but said at its line, by `check --config` and at `run`'s start; a path
    that exists and a glob that matches are quiet."""
    import yaml

    (workspace.root / "logs").mkdir()
    (workspace.root / "logs" / "a.jsonl").touch()
    config = yaml.safe_load(workspace.config.read_text())
    config["source"]["path"] = ["events.jsonl", "events.jsonl ", "logs/*.jsonl", "log/*.jsonl"]
    workspace.config.write_text(yaml.safe_dump(config))
    line = workspace.config.read_text().splitlines().index("  - events.jsonl") + 1
    expected = [
        f"{workspace.config}:{line + 1}:5: warning: source.path[1]: '{workspace.root}/events.jsonl ' does not exist "
        "yet: nothing is read until it appears",
        f"{workspace.config}:{line + 3}:5: warning: source.path[3]: '{workspace.root}/log/*.jsonl' matches no "
        "regular file yet: nothing is read until one appears",
    ]
    checked = rulesd_cli("check", "--config", str(workspace.config))
    assert 0 == checked.returncode, checked.stdout
    assert expected == [line for line in checked.stdout.splitlines() if "source.path" in line]
    daemon = workspace.start()
    for warning in expected:
        location, _, message = warning.partition(": warning: ")
        assert f"rulesd: warning: {location}: {message}" in daemon.stderr()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "state_dir: state.db\n",
            "rulesd.yaml:1:12: error: state_dir: {root}/state.db exists and is not a directory",
        ),
        (
            "state_dir: rulesdd/state\n",
            "rulesd.yaml:1:12: error: state_dir: {root}/rulesdd/state: the directory it would be made in, "
            "{root}/rulesdd, does not exist (only the state directory itself is made)",
        ),
        (
            "opsgenie: {alert_url: api.opsgenie.com/v2/alerts}\n",
            "rulesd.yaml:1:23: error: opsgenie.alert_url: alert_url 'api.opsgenie.com/v2/alerts' has no scheme: "
            "write it as https://api.opsgenie.com/v2/alerts",
        ),
        (
            "opsgenie:\n  alert_url: https://api.opsgenei.com/v2/alerts\n",
            "rulesd.yaml:2:14: warning: opsgenie.alert_url: the host 'api.opsgenei.com' is not 'api.opsgenie.com': a "
            "misspelt host would leave every alert undelivered; did you mean https://api.opsgenie.com/v2/alerts?",
        ),
        (
            "opsgenie: {alert_url: 'https://api.atlasian.com/jsm/ops/integration/v2/alerts'}\n",
            "rulesd.yaml:1:23: warning: opsgenie.alert_url: the host 'api.atlasian.com' is not 'api.atlassian.com': a "
            "misspelt host would leave every alert undelivered; did you mean "
            "https://api.atlassian.com/jsm/ops/integration/v2/alerts?",
        ),
        (
            "opsgenie: {api_key_file: key, api_key: inline-key}\n",
            "rulesd.yaml:1:40: warning: opsgenie.api_key: not used: opsgenie.api_key_file is given, and the key is "
            "read from it first",
        ),
        (
            "opsgenie: {recipients: 'team:ops, user:{owner}'}\n",
            "rulesd.yaml:1:24: warning: opsgenie.recipients: a recipient is not a template: OpsGenie is asked for the "
            "one named '{{owner}}' as written, not for the value of owner; to page by a field's value, write a rule "
            "for each value",
        ),
        (
            "opsgenie: {api_key_file: missing.key}\n",
            "missing.key: warning: cannot read the API key (opsgenie.api_key_file): No such file or directory; "
            "rulesd run will not start (but with --dry-run)",
        ),
        (
            "opsgenie: {api_key_file: rules}\n",
            "rules: warning: cannot read the API key (opsgenie.api_key_file): Is a directory; rulesd run will not "
            "start (but with --dry-run)",
        ),
        (
            "opsgenie: {api_key_file: empty.key}\n",
            "empty.key: warning: cannot read the API key (opsgenie.api_key_file): the file is empty; rulesd run will "
            "not start (but with --dry-run)",
        ),
        (
            "opsgenie: {api_key: 'GenieKey 0123-abcd'}\n",
            "rulesd.yaml:1:21: warning: opsgenie.api_key: it contains spaces or control characters: rulesd run will "
            "not use it; a key is one line of printable characters",
        ),
        (
            "opsgenie: {heartbeat: ''}\n",
            "rulesd.yaml:1:23: error: opsgenie.heartbeat: a heartbeat name cannot be empty (null: no heartbeat)",
        ),
    ],
)
def test_check_names_what_is_wrong_with_the_key_the_alert_url_and_the_state_dir(
    tmp_path: Path, text: str, expected: str
) -> None:
    """Mistakes that check said OK to (a misspelt host, an inline key the key file overrides, a
    missing key file, a state_dir that is a file) or said wrongly ('has no host' for a URL
    without its scheme; 'chmod 600' for a key file that is a directory) are named at their
    place; a relay's own host draws no warning."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "state.db").touch()
    (tmp_path / "key").write_text("k\n")
    (tmp_path / "key").chmod(0o600)
    (tmp_path / "empty.key").touch(0o600)
    result = rulesd_cli("check", "--config", write(tmp_path, text))
    assert [f"{tmp_path}/{expected.format(root=tmp_path)}"] == [
        line for line in result.stdout.splitlines() if "rules: warning: no rule files" not in line
    ][:-1]
    assert (1 if ": error: " in expected else 0) == result.returncode
    relay = rulesd_cli(
        "check", "--config", write(tmp_path, "opsgenie: {alert_url: 'https://og.example.com/v2/alerts'}")
    )
    assert (0, []) == (relay.returncode, [line for line in relay.stdout.splitlines() if "alert_url" in line])


def test_a_missing_rules_path_is_an_error_at_its_line_in_the_config(tmp_path: Path) -> None:
    """`rules: [/etc/rulesd/rules.d]` that does not exist: check and run name the config's line
    and the key (they named only the path, which the operator had to look for); the rule paths
    that are there are still checked."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "bad.yaml").write_text("name: bad\nmatch: {kind: {eq: 1}\n")
    config = write(tmp_path, "rules:\n  - rules\n  - /nonexistent/rules.d\nsource: {type: stdin}\n")
    missing = f"{config}:3:5: error: rules[1]: /nonexistent/rules.d: no such file or directory"
    checked = rulesd_cli("check", "--config", config)
    assert 1 == checked.returncode
    lines = checked.stdout.splitlines()
    assert missing in lines
    assert 1 == sum("/nonexistent/rules.d" in line for line in lines)
    assert any(line.startswith(f"{tmp_path}/rules/bad.yaml:") for line in lines), lines
    run = rulesd_cli("run", "--config", config, "--dry-run")
    assert 2 == run.returncode
    assert missing in run.stderr.splitlines()


def test_a_state_dir_whose_parent_is_missing_is_not_made(tmp_path: Path) -> None:
    """A misspelt parent (`rulesdd/state`): run stops at state_dir's line (exit 2) and makes
    nothing, as systemd's StateDirectory= makes only the last component; the state directory
    itself, in a directory that exists, is made (private) as before."""
    (tmp_path / "rules").mkdir()
    config = write(tmp_path, "state_dir: rulesdd/state\nsource: {type: stdin}\nopsgenie: {api_key: k}\n")
    run = rulesd_cli("run", "--config", config, stdin=b"")
    assert (2, False) == (run.returncode, (tmp_path / "rulesdd").exists()), run
    assert f"{config}:1:12: error: state_dir: {tmp_path}/rulesdd/state: the directory it would be made in" in run.stderr
    config = write(tmp_path, "state_dir: state\nsource: {type: stdin}\nopsgenie: {api_key: k}\n")
    run = rulesd_cli("run", "--config", config, stdin=b"")
    assert (0, 0o700) == (run.returncode, (tmp_path / "state").stat().st_mode & 0o777), run


def test_the_daemon_makes_only_the_state_directory_itself(tmp_path: Path) -> None:
    """Should the parent go between the check and the start, the start still makes no parent."""
    from rulesd.daemon.build import make_state_dir
    from rulesd.state import StateError

    with pytest.raises(StateError, match="the directory it is in does not exist"):
        make_state_dir(str(tmp_path / "gone" / "state"))
    assert not (tmp_path / "gone").exists()
    make_state_dir(str(tmp_path / "state"))
    make_state_dir(str(tmp_path / "state"))  # there already: nothing to do
    assert (tmp_path / "state").is_dir()


def config_warnings(tmp_path: Path, text: str) -> list[str]:
    """The warnings `rulesd check --config` prints at the settings of a config holding `text`."""
    (tmp_path / "rules").mkdir(exist_ok=True)
    result = rulesd_cli("check", "--config", write(tmp_path, text))
    assert 0 == result.returncode, result.stdout
    return [line for line in result.stdout.splitlines() if line.startswith(f"{tmp_path}/rulesd.yaml:")]


REDIS_STREAM = "state: {backend: redis, url: 'redis://state:6379/0'}\nsource: {type: redis_stream, claim_idle: %s}\n"


def test_a_config_duration_without_a_unit_warns_at_its_line_as_a_rules_does(tmp_path: Path) -> None:
    """`max_age: 30` and `claim_idle: 10` are seconds, as `window: 5` is in a rule, and are said
    so at their line in the same words (with what a max_age that short does); written with
    their unit, they draw nothing."""
    assert [
        f"{tmp_path}/rulesd.yaml:2:12: warning: opsgenie.max_age: 30 has no unit, so it is 30 seconds: write 30s "
        "to say so (30m if minutes were meant); an alert not delivered within 30s (an OpsGenie outage, a network "
        "blip) is dead-lettered, not sent: a max_age under 10m loses pages to a short outage (the default is 24h)"
    ] == config_warnings(tmp_path, "opsgenie:\n  max_age: 30\n")
    assert [
        f"{tmp_path}/rulesd.yaml:1:21: warning: opsgenie.max_age: 7200 has no unit, so it is 7200 seconds: write "
        "7200s to say so"
    ] == config_warnings(tmp_path, "opsgenie: {max_age: 7200}\n")
    assert [
        f"{tmp_path}/rulesd.yaml:2:42: warning: source.claim_idle: 10 has no unit, so it is 10 seconds: write 10s "
        "to say so (10m if minutes were meant)"
    ] == config_warnings(tmp_path, REDIS_STREAM % "10")
    for quiet in ("opsgenie: {max_age: 30m}\n", "opsgenie: {max_age: 2h}\n", REDIS_STREAM % "10s"):
        assert [] == config_warnings(tmp_path, quiet)


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (
            "opsgenie: {max_age: 2m}\n",
            "1:21: warning: opsgenie.max_age",
            "an alert not delivered within 2m (an OpsGenie outage, a network blip) is dead-lettered, not sent: a "
            "max_age under 10m loses pages to a short outage (the default is 24h)",
        ),
        (
            "opsgenie: {max_age: 0s}\n",
            "1:21: warning: opsgenie.max_age",
            "every alert is dead-lettered before it is sent: nothing is ever paged (the default is 24h)",
        ),
        (
            REDIS_STREAM % "0s",
            "2:42: warning: source.claim_idle",
            "an entry another instance is still working on (a batch may take a second on a loaded host) is claimed "
            "from it, and the instances redo each other's work; the default is 10s",
        ),
        (
            REDIS_STREAM % "1h",
            "2:42: warning: source.claim_idle",
            "the events a stopped instance had read, and the pages they make, wait 1h before another instance takes "
            "them; the default is 10s",
        ),
        (
            "opsgenie: {timeout_s: 0.2}\n",
            "1:23: warning: opsgenie.timeout_s",
            "0.2 seconds is less than a request to OpsGenie over the internet (connecting, TLS, the answer) often "
            "takes: a request cut off is sent again, and one whose answer alone was cut off pages twice; write at "
            "least 1 (the default is 10)",
        ),
    ],
)
def test_a_config_duration_beyond_what_its_setting_plausibly_means_warns_with_why(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    """A max_age that dead-letters pages after a short outage (or at once), a claim_idle that
    takes entries from a live instance or leaves a dead one's waiting, a timeout_s shorter than
    a request to OpsGenie takes: each warns at its line, with what it does."""
    assert [f"{tmp_path}/rulesd.yaml:{where}: {message}"] == config_warnings(tmp_path, text)


def test_a_short_timeout_to_this_host_draws_nothing(tmp_path: Path) -> None:
    """A relay or stand-in on this host answers within a short timeout_s."""
    assert [] == config_warnings(tmp_path, "opsgenie: {timeout_s: 0.2, alert_url: 'http://127.0.0.1:9/v2/alerts'}\n")


def test_the_daemon_logs_a_config_durations_warning_at_start(workspace: Workspace) -> None:
    """What `rulesd check --config` says of a duration, `rulesd run` says at start."""
    import yaml

    config = yaml.safe_load(workspace.config.read_text())
    config["opsgenie"]["max_age"] = 90
    workspace.config.write_text(yaml.safe_dump(config))
    daemon = workspace.start()
    assert daemon.wait_for_log("opsgenie.max_age: 90 has no unit, so it is 90 seconds: write 90s to say so")


def test_two_sources_reading_one_file_draw_a_warning_and_the_daemon_says_so(workspace: Workspace) -> None:
    """Two sources whose paths name the same file (literally, or through a glob or a link)
    evaluate each line twice, so a rule that does not match on source_name pages twice: said
    at the second one's path by check and at run's start."""
    import yaml

    (workspace.root / "link.jsonl").symlink_to(workspace.events)
    config = yaml.safe_load(workspace.config.read_text())
    config.pop("source")
    config["sources"] = [
        {"name": "a", "type": "file", "path": "events.jsonl"},
        {"name": "b", "type": "file", "path": ["other.log", "*.jsonl"]},
    ]
    workspace.config.write_text(yaml.safe_dump(config))
    lines = workspace.config.read_text().splitlines()
    at = lines.index("  - '*.jsonl'") + 1
    twice = (
        "is read by sources[0] too: each of its lines is evaluated once per source, so a rule that does not match "
        "on source_name counts it twice and pages twice"
    )
    expected = [
        f"{workspace.config}:{at}:5: warning: sources[1].path[1]: {workspace.events} {twice}",
        f"{workspace.config}:{at}:5: warning: sources[1].path[1]: {workspace.root}/link.jsonl {twice}",
    ]
    checked = rulesd_cli("check", "--config", str(workspace.config))
    assert 0 == checked.returncode, checked.stdout
    assert expected == [line for line in checked.stdout.splitlines() if "read by" in line]
    daemon = workspace.start()
    assert daemon.wait_for_log(f"sources[1].path[1]: {workspace.events} {twice}")


def test_a_key_file_that_is_a_fifo_stops_the_start_instead_of_blocking_it(tmp_path: Path) -> None:
    """`api_key_file` naming a FIFO: `rulesd run` waited for a writer before it started, and
    check would too; both now say what it is, at once (run: exit 2, nothing started)."""
    (tmp_path / "rules").mkdir()
    os.mkfifo(tmp_path / "opsgenie.key")
    config = write(tmp_path, "source: {type: stdin}\nstate_dir: state\nopsgenie: {api_key_file: opsgenie.key}\n")
    reason = (
        f"{tmp_path}/opsgenie.key: error: cannot read the API key (opsgenie.api_key_file): it is a FIFO, not a file"
    )
    run = rulesd_cli("run", "--config", config, timeout=30)
    assert (2, f"{reason}\n") == (run.returncode, run.stderr.splitlines(keepends=True)[-1])
    assert "rulesd started" not in run.stderr
    checked = rulesd_cli("check", "--config", config, timeout=30)
    assert (
        f"{reason.replace(': error: ', ': warning: ')}; rulesd run will not start (but with --dry-run)"
        in checked.stdout
    )


def test_a_path_holding_a_nul_character_is_an_error_at_its_place(tmp_path: Path) -> None:
    """A NUL in state_dir, a file source's path, api_key_file or a rule path (an escape `\\0` in a
    quoted string) is said where it is written; check and run raised ValueError ("embedded null
    byte") at the first look at such a path."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text("name: a\nmatch: {level: error}\n")
    config = write(
        tmp_path,
        'rules: [rules, "r\\0.yaml"]\nsource: {type: file, path: "/var/log/a\\0.log"}\nstate_dir: "st\\0"\n'
        'opsgenie: {api_key_file: "k\\0", recipients: "team:ops"}\n',
    )
    said = [
        f"{config}:1:16: error: rules[1]: 'r\\x00.yaml': a path cannot hold a NUL character",
        f"{config}:2:28: error: source.path: '/var/log/a\\x00.log': a path cannot hold a NUL character",
        f"{config}:3:12: error: state_dir: 'st\\x00': a path cannot hold a NUL character",
        f"{config}:4:26: error: opsgenie.api_key_file: 'k\\x00': a path cannot hold a NUL character",
    ]
    checked = rulesd_cli("check", "--config", config)
    assert (1, "", said) == (checked.returncode, checked.stderr, checked.stdout.splitlines()[:-1])
    run = rulesd_cli("run", "--dry-run", "--config", config)
    assert (2, said) == (run.returncode, run.stderr.splitlines())


@given(st.text(st.sampled_from("a-.0é"), min_size=1, max_size=70) | st.from_regex(r"[a.]{60,70}", fullmatch=True))
@settings(max_examples=400, deadline=None)
def test_a_host_name_is_judged_as_the_idna_codec_judges_it(host: str) -> None:
    """ASCII names are judged without the codec (not imported at start), as the codec judges
    them: labels empty or over 63 characters refused, a final dot allowed."""
    try:
        host.encode("idna")
        taken = True
    except UnicodeError:
        taken = False
    assert taken == is_host_name(host)
    assert is_host_name("a" * 63 + "." + "b" * 63 + ".") and not is_host_name("a" * 64 + ".b")


def test_a_recipient_whose_kind_is_misspelt_draws_a_warning_at_its_line(tmp_path: Path) -> None:
    """`tem:ops` is valid (a team of that name) but pages nobody if `team:ops` was meant: check
    says so at the line (the warnings come sorted); a team name holding a colon unlike any kind
    draws nothing."""
    assert [
        f"{tmp_path}/rulesd.yaml:2:15: warning: opsgenie.recipients: 'Usr: bob' is taken as a team named "
        "'Usr: bob'; if user:bob was meant, write user:",
        f"{tmp_path}/rulesd.yaml:2:15: warning: opsgenie.recipients: 'tem:ops' is taken as a team named "
        "'tem:ops'; if team:ops was meant, write team:",
    ] == config_warnings(tmp_path, 'opsgenie:\n  recipients: "tem:ops, Usr: bob, schedule:night, db:primary, a@b.c"\n')
    assert [] == config_warnings(tmp_path, 'opsgenie:\n  recipients: "team:ops, db:primary, Escalation:x"\n')
