"""Durations: seconds or units written at most once each, largest first."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rulesd.config import load_config
from rulesd.durations import parse_duration
from rulesd.errors import ConfigError, InvalidInputError
from rulesd.rules.loader import check_paths
from rulesd.ruletest import run_test_file
from tests.run_cli import rulesd_cli


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        ("90", 90.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1d2h3m4s", 93784.0),
        (" 1h 30m ", 5400.0),
        ("0s", 0.0),
    ],
)
def test_accepted(text: int | str, seconds: float) -> None:
    """Seconds, one unit, or several units from the largest down."""
    assert seconds == parse_duration(text)


@pytest.mark.parametrize("text", ["5m5m", "30m1h", "1h1h30m", "10s5m", "1d1d"])
def test_a_unit_twice_or_out_of_order_is_refused(text: str) -> None:
    """`5m5m` and `30m1h` could mean several things: an error that says how to write it."""
    with pytest.raises(ValueError, match="each unit at most once, largest first"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["", "m", "5 minutes", "-5m", "1.5h", True])
def test_other_nonsense_is_refused(text: str | bool) -> None:
    """Anything else is not a duration."""
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text", ["5m5m", "30m1h"])
def test_check_refuses_them_in_a_rule_at_their_place(tmp_path: Path, text: str) -> None:
    """`rulesd check` reports them at the value, like any bad duration."""
    path = tmp_path / "r.yaml"
    path.write_text(f"name: r\nmatch: {{x: 1}}\nthrottle: {text}\n")
    assert [
        f'{path}:3:11: error: throttle: "{text}": a duration is a number of seconds or a string like '
        "30s, 5m, 2h, 1d or 1h30m (each unit at most once, largest first)"
    ] == [str(p) for p in check_paths([path]).problems]


def test_check_accepts_them_in_order(tmp_path: Path) -> None:
    """`1h30m` and `1d2h3m4s` are fine in every duration field."""
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nmatch: {x: 1}\nthrottle: 1h30m\nthreshold: {count: 2, window: 1d2h3m4s}\n")
    result = check_paths([path])
    assert ((), 5400.0) == (result.problems, result.ruleset.rules[0].throttle if result.ruleset else None)


def test_a_rule_test_refuses_them_in_at(tmp_path: Path) -> None:
    """A test file's `at` follows the same rule."""
    (tmp_path / "r.yaml").write_text("name: r\nmatch: {x: 1}\n")
    path = tmp_path / "r.test.yaml"
    path.write_text(
        "rule_files: [r.yaml]\ntests:\n  - name: t\n    events: [{at: 5m5m, event: {x: 1}}]\n    expect_alerts: []\n"
    )
    with pytest.raises(InvalidInputError, match="each unit at most once, largest first"):
        run_test_file(str(path))


TOO_LONG = "9" * 400  # seconds: an integer YAML reads, which no float holds
TOO_LONG_MESSAGE = "bad duration: longer than 100 years (36500d), the longest a duration may be"


@pytest.mark.parametrize(
    "value", [int(TOO_LONG), TOO_LONG, TOO_LONG + "d", "9" * 330 + "d"], ids=["int", "text", "days", "330-digit-days"]
)
def test_a_duration_beyond_a_float_is_refused(value: int | str) -> None:
    """Seconds are floats: a duration too long for one is an error, not an OverflowError."""
    with pytest.raises(ValueError, match=re.escape(TOO_LONG_MESSAGE)):
        parse_duration(value)


def test_check_refuses_a_duration_beyond_a_float_at_its_place(tmp_path: Path) -> None:
    """`rulesd check` says so at the value, once (it crashed with a traceback)."""
    path = tmp_path / "r.yaml"
    path.write_text(f"name: r\nmatch: {{x: 1}}\nthrottle: {TOO_LONG}\nthreshold: {{count: 2, window: {TOO_LONG}}}\n")
    assert [
        f"{path}:3:11: error: throttle: {TOO_LONG_MESSAGE}",
        f"{path}:4:31: error: threshold.window: {TOO_LONG_MESSAGE}",
    ] == [str(p) for p in check_paths([path]).problems]


def test_a_rule_test_refuses_at_and_advance_beyond_a_float(tmp_path: Path) -> None:
    """`rulesd test` reports them as problems of the test file (it crashed with a traceback)."""
    (tmp_path / "r.yaml").write_text("name: r\nmatch: {x: 1}\n")
    path = tmp_path / "r.test.yaml"
    steps = f"[{{at: {TOO_LONG}, event: {{x: 1}}}}, {{advance: {TOO_LONG}d}}]"
    path.write_text(f"rule_files: [r.yaml]\ntests:\n  - name: t\n    events: {steps}\n    expect_alerts: []\n")
    with pytest.raises(InvalidInputError) as raised:
        run_test_file(str(path))
    assert [
        f"{path}:4:19: error: tests[0].events[0].at: {TOO_LONG_MESSAGE}",
        f"{path}:4:447: error: tests[0].events[1].advance: {TOO_LONG_MESSAGE}",
    ] == [str(p) for p in raised.value.problems]


def test_a_config_refuses_a_duration_beyond_a_float(tmp_path: Path) -> None:
    """`opsgenie.max_age` too: a configuration error at its place, not a traceback."""
    path = tmp_path / "rulesd.yaml"
    path.write_text(f"rules: []\nopsgenie: {{api_key: k, max_age: {TOO_LONG}}}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(str(path))
    assert [f"{path}:2:33: error: opsgenie.max_age: {TOO_LONG_MESSAGE}"] == [str(p) for p in raised.value.problems]


@pytest.mark.parametrize("value", [36500 * 86400, "36500d", "36499d23h59m60s", " 3153600000 "])
def test_a_hundred_years_is_the_longest_duration(value: int | str) -> None:
    """Up to 100 years (36500 days): longer than any window, throttle or age a user means."""
    assert 3153600000.0 == parse_duration(value)


@pytest.mark.parametrize("value", [36500 * 86400 + 1, "36500d1s", "36501d", "9999999999999999999999d"])
def test_a_duration_longer_than_a_hundred_years_is_refused(value: int | str) -> None:
    """A float holds `9999999999999999999999d`, but no user means it: it was accepted."""
    with pytest.raises(ValueError, match=re.escape(TOO_LONG_MESSAGE)):
        parse_duration(value)


HUGE = "9999999999999999999999d"


def test_rulesd_check_and_test_refuse_a_huge_duration_at_its_place(tmp_path: Path) -> None:
    """The real commands: in a rule, in a rule test's `at` and `advance`, and in a config."""
    rules = tmp_path / "r.yaml"
    rules.write_text(f"name: r\nmatch: {{x: 1}}\nthrottle: {HUGE}\n")
    test = tmp_path / "r.test.yaml"
    steps = f"[{{at: {HUGE}, event: {{x: 1}}}}, {{advance: {HUGE}}}]"
    test.write_text(f"rule_files: [r.yaml]\ntests:\n  - name: t\n    events: {steps}\n    expect_alerts: []\n")
    config = tmp_path / "rulesd.yaml"
    config.write_text(f"rules: [r.yaml]\nsource: {{type: stdin}}\nopsgenie: {{api_key: k, max_age: {HUGE}}}\n")
    checked = rulesd_cli("check", "--config", str(config), str(rules))
    assert (
        1,
        f"{rules}:3:11: error: throttle: {TOO_LONG_MESSAGE}\n"
        f"{config}:3:33: error: opsgenie.max_age: {TOO_LONG_MESSAGE}\n",
    ) == (
        checked.returncode,
        checked.stdout[: checked.stdout.index("FAILED")],
    )
    tested = rulesd_cli("test", str(test))
    assert (
        1,
        f"{test}:4:19: error: tests[0].events[0].at: {TOO_LONG_MESSAGE}\n"
        f"{test}:4:70: error: tests[0].events[1].advance: {TOO_LONG_MESSAGE}\n"
        "rule tests: 0 passed, 0 failed, 2 invalid\n",
    ) == (tested.returncode, tested.stdout)


def test_a_text_is_parsed_once_per_process_and_a_bad_one_refused_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule set repeats its few durations (`5m` in hundreds of rules) at every start: a text
    is parsed once, and answers the same after; a text that is no duration is refused every
    time, with the same message; a number, and a boolean, are read as before."""
    from rulesd import durations

    parsed: list[str] = []
    plain = durations._PLAIN

    class Counting:
        def match(self, text: str) -> re.Match[str] | None:
            parsed.append(text)
            return plain.match(text)

    monkeypatch.setattr(durations, "_PLAIN", Counting())
    text = " 3d 2h 1m 59s "  # (no other test reads it)
    assert [266519.0] * 3 == [parse_duration(text) for _ in range(3)]
    assert [text] == parsed
    for bad in ("9m 9m", "4x"):
        messages = []
        for _ in range(2):
            with pytest.raises(ValueError, match="bad duration") as raised:
                parse_duration(bad)
            messages.append(str(raised.value))
        assert messages[0] == messages[1]
    assert (60.0, 60.0) == (parse_duration(60), parse_duration("60"))
    with pytest.raises(ValueError, match="bad duration True"):
        parse_duration(True)
