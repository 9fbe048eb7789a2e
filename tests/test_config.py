"""Tests for rulesd.config: the daemon configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from rulesd.alerting.opsgenie import validate_alert_url
from rulesd.config import load_config, resolve_api_key
from rulesd.errors import ConfigError
from rulesd.rules.model import Responder


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
            'rulesd.yaml:1:16: error: source.type: "kafka" is not one of: file, stdin, journald',
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
            "opsgenie: {max_age: 3 days}\n",
            'rulesd.yaml:1:21: error: opsgenie.max_age: "3 days": a duration is a number of seconds or a string '
            "like 30s, 5m, 2h, 1d or 1h30m (each unit at most once, largest first)",
        ),
        (
            "opsgenie: {recipients: 'team:'}\n",
            "rulesd.yaml:1:24: error: opsgenie.recipients: recipient 'team:' has no name",
        ),
        ("metrics: {listen: 9464}\n", "rulesd.yaml:1:19: error: metrics.listen: expected a string or null, got 9464"),
        ("- a\n- b\n", "rulesd.yaml:1:1: error: the configuration must be a mapping of keys"),
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
