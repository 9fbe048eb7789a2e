"""A group is what the conditions find equal: `1` and `1.0` (and `0` and `-0.0`) are one group of
every rule kind, in its key, its alias and an absence's expected groups; `true` and `1`, and
`"1"` and `1`, stay apart, as they do for `equals`."""

from __future__ import annotations

import itertools
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from rulesd.engine import Engine
from rulesd.rules.conditions import equals_test
from rulesd.rules.fields import key_text
from tests.daemon_process import Workspace, wait_until
from tests.fake_opsgenie import FakeOpsGenie
from tests.ruletools import ruleset_from_yaml
from tests.run_cli import rulesd_cli

# Values JSON tells apart that the conditions may not: numbers written whole or not, signed zeros,
# integers beyond a double's 53 bits and beyond 64 bits, booleans, texts of digits, null.
VALUES: list[Any] = [
    0,
    -0.0,
    0.0,
    1,
    1.0,
    -1,
    -1.0,
    1.5,
    True,
    False,
    None,
    "1",
    "1.0",
    2**53,
    2.0**53,
    2**53 + 1,
    2**63,
    2.0**63,
    2**64,
    1e20,
    10**20,
    10**20 + 1,
    1e300,
    0.1,
    [1, 2.0],
    [1.0, 2],
    [True, 2],
    {"a": 1.0},
    {"a": 1},
]


SCALARS = [v for v in VALUES if not isinstance(v, list | dict)]


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations_with_replacement(SCALARS, 2)))
def test_two_values_share_a_key_exactly_when_equals_finds_them_equal(a: Any, b: Any) -> None:
    """`equals` (the conditions' equality, which `in` and the index's tables follow) of each
    pair against their key texts."""
    expected = equals_test(a)(b)
    assert expected == equals_test(b)(a)
    assert expected == (key_text(a) == key_text(b)), (a, b, key_text(a), key_text(b))


def test_lists_and_objects_share_a_key_when_their_items_are_equal() -> None:
    """Items compared as `equals` compares them, however deep (a list `contains` compares so)."""
    assert key_text([1, 2.0]) == key_text([1.0, 2]) == "[1,2]"
    assert key_text({"b": [{"a": -0.0}], "a": 1e20}) == '{"a":100000000000000000000,"b":[{"a":0}]}'
    assert key_text([True, 2]) != key_text([1, 2])
    deep: Any = 1.0
    for _ in range(2000):  # deeper than the interpreter recurses
        deep = [deep]
    assert "[" * 2000 + "1" + "]" * 2000 == key_text(deep)


def test_a_condition_matches_exactly_the_values_of_its_operands_group() -> None:
    """The rule `v: <operand>` through the engine (the index's tables, then the compiled
    condition), on each value in a random order: it fires exactly when the value's key is the
    operand's. (An integer beyond 64 bits that no float equals is refused as an operand: no
    JSON line holds it, see `test_conditions`.)"""
    rng = random.Random(5)
    beyond = [v for v in SCALARS if type(v) is int and not -(2**63) <= v < 2**64 and float(v) != v]
    assert beyond  # (the refused operand is still among the values compared)
    for operand in [v for v in SCALARS if v is not None and v not in beyond]:
        ruleset = ruleset_from_yaml(f"rules: [{{name: r, match: {{v: {yaml_scalar(operand)}}}}}]")
        evaluate = Engine(ruleset, saved=False).evaluate
        for value in rng.sample(SCALARS, len(SCALARS)):
            fired = evaluate({"v": value}, 0.0) is not None
            assert fired == (key_text(value) == key_text(operand)), (operand, value)


def yaml_scalar(value: Any) -> str:
    """`value` as YAML reads it back with its type (a float with a point: `1e+20` is a text)."""
    if type(value) is float:
        return f"{value:.1f}" if value.is_integer() else repr(value)
    return json.dumps(value)


RULES = """
rules:
  - name: heartbeat-missing
    match: {event: heartbeat}
    absence: {window: 1m, group_by: [host], expect: [{host: 1.0}, {host: 2}]}
    alert: {message: "no heartbeat from {host}"}
  - name: errors
    match: {event: error}
    threshold: {count: 2, window: 1m, group_by: [host]}
  - name: spraying
    match: {event: login_failed}
    distinct: {field: user, count: 2, window: 1m, group_by: [host]}
  - name: new-port
    match: {event: connection}
    new_value: {fields: [port], group_by: [host]}
  - name: brute-then-login
    sequence: {group_by: [host], steps: [{match: {event: login_failed}, count: 2}, {match: {event: login}}]}
"""


def replay(tmp_path: Path, events: list[dict[str, Any]], rules: str = RULES) -> list[dict[str, Any]]:
    """`rulesd replay --format json` of `events` (times in `ts`): the payloads, in order."""
    (tmp_path / "rules.yaml").write_text(rules)
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    result = rulesd_cli(
        "replay", "--rules", "rules.yaml", "--time-field", "ts", "--format", "json", "events.jsonl", cwd=tmp_path
    )
    assert 0 == result.returncode, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_an_expected_group_written_as_a_whole_float_is_the_group_of_its_integer(tmp_path: Path) -> None:
    """`expect: [{host: 1.0}]` while host 1 beats every 20 s: host 1 is not paged as never seen
    (it was: its key was `1.0`); host 2, never seen, is, and under the alias of its group."""
    events = [{"ts": t, "event": "heartbeat", "host": 1} for t in range(0, 200, 20)]
    paged = replay(tmp_path, events)
    assert ['rulesd: heartbeat-missing: {"host":2}'] == [p["alias"] for p in paged]
    assert ["no heartbeat from 2"] == [p["message"] for p in paged]


def test_every_kind_groups_and_counts_a_whole_float_with_its_integer(tmp_path: Path) -> None:
    """Each kind sees `5`, `5.0` and `-0.0`/`0` as one value: a threshold counts them together, a
    distinct counts one user, a new_value knows the port, a sequence goes on in one group; the
    alias names the group as its integer, whichever the event wrote."""
    events = [
        {"ts": 1, "event": "error", "host": 5},
        {"ts": 2, "event": "error", "host": 5.0},
        {"ts": 3, "event": "login_failed", "host": 0, "user": 7},
        {"ts": 4, "event": "login_failed", "host": -0.0, "user": 7.0},
        {"ts": 5, "event": "connection", "host": 6, "port": 443},
        {"ts": 6, "event": "connection", "host": 6.0, "port": 443.0},
        {"ts": 7, "event": "login", "host": 0.0},
    ]
    paged = replay(tmp_path, events)
    assert [
        ("errors", 'rulesd: errors: {"host":5}'),
        ("new-port", 'rulesd: new-port: {"host":6}'),
        ("brute-then-login", 'rulesd: brute-then-login: {"host":0}'),
    ] == [(json.loads(p["details"]["Triggering Rules"])[0], p["alias"]) for p in paged]


def test_a_boolean_and_a_text_of_digits_stay_apart_from_the_number(tmp_path: Path) -> None:
    """`true` is not `1`, nor `"1"`, for `equals`, and not for the groups either: three groups,
    none reaching a count of two; a fourth event of 1.0 brings 1's to it."""
    events = [
        {"ts": 1, "event": "error", "host": 1},
        {"ts": 2, "event": "error", "host": True},
        {"ts": 3, "event": "error", "host": "1"},
        {"ts": 4, "event": "error", "host": 1.0},
    ]
    paged = replay(tmp_path, events)
    assert ['rulesd: errors: {"host":1}'] == [p["alias"] for p in paged]
    assert '"host": 1.0' in paged[0]["description"]  # the event as it was written


def test_a_rule_test_expects_the_group_of_a_whole_float_by_its_integer(tmp_path: Path) -> None:
    """`rulesd test`: a threshold's second event of the group written `3.0` fires, and an
    absence that expects `{host: 1.0}` pages nothing while host 1 beats."""
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "t.test.yaml").write_text(
        """
rule_files: [rules.yaml]
tests:
  - name: one host written two ways
    events:
      - {at: 0s, event: {event: heartbeat, host: 1}}
      - {at: 1s, event: {event: heartbeat, host: 2}}
      - {at: 30s, event: {event: error, host: 3}}
      - {at: 31s, event: {event: error, host: 3.0}}
      - {at: 50s, event: {event: heartbeat, host: 1}}
      - {at: 55s, event: {event: heartbeat, host: 2.0}}
    expect_alerts:
      - {event: 4, rules: [errors], alias: 'rulesd: errors: {"host":3}'}
"""
    )
    result = rulesd_cli("test", "t.test.yaml", cwd=tmp_path)
    assert 0 == result.returncode, result.stdout + result.stderr


def test_the_daemon_pages_no_expected_group_written_as_a_whole_float_while_its_integer_beats(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """`rulesd run` with a loopback OpsGenie: `expect: [{host: 1.0}, {host: 2}]` (window 2s)
    while host 1 beats every half second: host 2 is paged as never seen, host 1 never is."""
    ws = Workspace(tmp_path, server.url)
    (ws.rules / "rules.yaml").write_text(
        "rules:\n  - {name: heartbeat-missing, match: {event: heartbeat},"
        " absence: {window: 2s, group_by: [host], expect: [{host: 1.0}, {host: 2}]}}\n"
    )
    daemon = ws.start()
    for _ in range(10):
        ws.append({"event": "heartbeat", "host": 1})
        time.sleep(0.5)
    assert server.wait_for(lambda got: len(got) >= 1, timeout=10), daemon.output()
    assert 0 == daemon.terminate()
    assert ['rulesd: heartbeat-missing: {"host":2}'] == [r.json()["alias"] for r in server.requests]


def test_rulesd_state_shows_a_group_as_its_alias_names_it(tmp_path: Path, server: FakeOpsGenie) -> None:
    """`rulesd state --format json` beside the daemon: events of host `1` and `1.0` are one
    group of two events, shown as 1; host `1e20`'s group is shown as the integer it equals,
    as its alias writes it (it was shown as the float 1e+20)."""
    ws = Workspace(tmp_path, server.url)
    (ws.rules / "rules.yaml").write_text(
        "rules:\n  - {name: errors, match: {event: error}, threshold: {count: 3, window: 1h, group_by: [host]}}\n"
    )
    daemon = ws.start()
    ws.append(b'{"event":"error","host":1}\n{"event":"error","host":1.0}\n{"event":"error","host":1e20}\n')

    def counts() -> list[tuple[Any, str, int]]:
        result = rulesd_cli("state", "--config", str(ws.config), "--format", "json")
        assert 0 == result.returncode, result.stderr
        rules = json.loads(result.stdout)["rules"]
        hosts = [(g["group"]["host"], g["count"]) for r in rules for g in r["groups"]]
        return sorted((host, type(host).__name__, count) for host, count in hosts)

    assert wait_until(lambda: len(counts()) == 2, timeout=20), daemon.output()
    assert [(1, "int", 2), (10**20, "int", 1)] == counts()
    assert 0 == daemon.terminate()


@pytest.mark.parametrize("value", [[1e20], {"a": [1e20, 2.5], "b": "1e20"}, [10**20 + 1, -(10**20)], [[1.0]]])
def test_a_group_value_holding_an_integer_beyond_64_bits_is_shown_exactly(value: Any) -> None:
    """`rulesd state` reads a group's values back from their key texts: an integer beyond 64
    bits inside a list or an object is the integer its key text writes, as at the top level
    (orjson read it as the float 1e+20)."""
    from rulesd.engine.progress import key_value

    shown = key_value(key_text(value))
    assert key_text(value) == json.dumps(shown, separators=(",", ":"), sort_keys=True)
