"""The pipeline's two ways of evaluating lines give the same batch: in one step
(`evaluate_lines`), or matching first and applying the state after (`match_lines` then
`apply_matches`, for processes that share their state)."""

from __future__ import annotations

import random

import orjson
import pytest

from rulesd.alerting.alias import alert_alias, rule_names
from rulesd.alerting.payload import AlertSettings
from rulesd.engine import Engine
from rulesd.eventtime import EventTime, TimeReader
from rulesd.pipeline import Batch, apply_matches, build_alerts, evaluate_lines, match_lines
from tests.ruletools import ruleset_from_yaml

RULES = """
rules:
  - {name: burst, match: {level: error}, threshold: {count: 3, window: 30, group_by: [host]}, resolve: {after: 60}}
  - {name: spray, match: {kind: login}, distinct: {field: user, count: 3, window: 60, group_by: [host]}}
  - name: seq
    sequence:
      group_by: [host]
      within: 120
      steps:
        - {match: {kind: login}, count: 2}
        - {match: {level: error}}
  - name: gone
    sequence:
      group_by: [host]
      steps:
        - match: {kind: start}
        - absent: {match: {kind: stop}, for: 40}
  - {name: quiet, match: {kind: beat}, absence: {window: 50, group_by: [host], expect: [{host: h9}]}}
  - {name: fresh, match: {kind: login}, new_value: {fields: [user], group_by: [host], learn: 20}, throttle: 15}
  - {name: plain, match: {level: critical}}
"""

# When the lines are read: after every event time (a time further ahead is not believed).
ARRIVAL = 2e9


def lines(seed: int, count: int) -> list[bytes]:
    """Events of a few hosts, kinds and levels, at times that mostly grow; some bad lines, and
    stretches of events no rule matches (timers come due during them)."""
    rng = random.Random(seed)
    out: list[bytes] = []
    t = 1_700_000_000.0
    for _ in range(count):
        t += rng.choice([0, 1, 2, 5, 30])
        if rng.random() < 0.03:
            out.append(b"not json")
            continue
        if rng.random() < 0.02:
            for _ in range(rng.randrange(20, 150)):
                t += 1
                out.append(orjson.dumps({"ts": t, "host": "h1", "kind": "noise", "level": "info"}))
        event = {
            "ts": t - rng.choice([0, 0, 0, 3]),
            "host": rng.choice(["h1", "h2", "h3"]),
            "kind": rng.choice(["login", "beat", "start", "stop", "other"]),
            "level": rng.choice(["info", "error", "critical"]),
            "user": rng.choice(["a", "b", "c", "d", "e"]),
        }
        out.append(orjson.dumps(event))
    return out


def described(batch: Batch) -> list[tuple[int, bool, object]]:
    alerts = build_alerts(batch, AlertSettings(), lambda i: f"line {i}")
    return [(a.index, a.timer, a.close or (a.rules, a.payload["alias"], a.origin)) for a in alerts]


@pytest.mark.parametrize("seed", range(4))
def test_matching_then_applying_gives_what_one_step_gives(seed: int) -> None:
    """Same alerts (timer firings and closings included, in the same places), same state."""
    ruleset = ruleset_from_yaml(RULES)
    data = lines(seed, 600)
    one, two = (Engine(ruleset, time=TimeReader(EventTime("ts"))) for _ in range(2))
    fused: list[tuple[int, bool, object]] = []
    split: list[tuple[int, bool, object]] = []
    for start in range(0, len(data), 100):  # batches, as the daemon takes them
        chunk = data[start : start + 100]
        fused += described(evaluate_lines(chunk, orjson.loads, one, ARRIVAL, str, one.time))
        matches = match_lines(chunk, orjson.loads, two, ARRIVAL, two.time)
        split += described(apply_matches(matches, two, str))
    assert any(timer for _, timer, _ in fused), "the events make timers fire"
    assert fused == split
    assert one.state.to_json() == two.state.to_json()


def test_alerts_of_the_same_rules_share_their_names() -> None:
    """The names an alert carries are made once per combination of rules that fire together
    (dozens of rules alike, alert after alert), in the lead-first order of its firing."""
    alike = "".join(f"  - {{name: r-{i:02d}, match: {{level: error}}}}\n" for i in range(30))
    engine = Engine(ruleset_from_yaml("rules:\n" + alike + "  - {name: a, match: {level: error}}\n"), saved=False)
    lines = [orjson.dumps({"level": "error", "n": i}) + b"\n" for i in range(3)]
    alerts = build_alerts(evaluate_lines(lines, orjson.loads, engine, ARRIVAL), AlertSettings(), str)
    assert 3 == len(alerts)
    assert ("a", *(f"r-{i:02d}" for i in range(30))) == alerts[0].rules
    assert alerts[0].rules is alerts[1].rules is alerts[2].rules


def test_the_rules_that_fired_together_hash_by_identity_and_stay_exact() -> None:
    """The alerts' memos (names, alias, body) are keyed by the tuple of rules that fired
    together: hashed by its address, not rule by rule (41 rules an alert at 1,000 held-out
    rules), and equal to a plain tuple of the same rules, whose memos answer the same."""
    alike = "".join(f"  - {{name: r-{i:02d}, match: {{level: error}}}}\n" for i in range(30))
    engine = Engine(ruleset_from_yaml("rules:\n" + alike + "  - {name: a, match: {level: error}}\n"), saved=False)
    lines = [orjson.dumps({"level": "error", "n": i}) + b"\n" for i in range(2)]
    batch = evaluate_lines(lines, orjson.loads, engine, ARRIVAL)
    (_, first, _), (_, second, _) = batch.firings
    assert first.rules is second.rules
    shared, plain = first.rules, tuple(first.rules)
    assert hash(shared) == object.__hash__(shared)
    assert plain == shared and hash(plain) != hash(shared)
    names = rule_names(shared)
    assert names == rule_names(plain) and alert_alias(first.rules, {}) == alert_alias(plain, {})
    assert ("a", *(f"r-{i:02d}" for i in range(30))) == names


def test_an_alert_s_event_source_is_said_when_its_body_is_built() -> None:
    """`replay` builds few bodies (its text lines show the headline): where an event came from
    is asked only for the alert whose body is built, and once."""
    engine = Engine(ruleset_from_yaml(RULES), time=TimeReader(EventTime("ts")), saved=False)
    asked: list[int] = []

    def source_of(index: int) -> str:
        asked.append(index)
        return f"events.jsonl:{index + 1}"

    events = [{"ts": 1_700_000_000.0 + i, "level": "critical", "host": "h1", "n": i} for i in range(3)]
    batch = evaluate_lines([orjson.dumps(e) for e in events], orjson.loads, engine, ARRIVAL, str, engine.time)
    alerts = build_alerts(batch, AlertSettings(), source_of)
    assert [0, 1, 2] == [a.index for a in alerts] and [] == asked
    assert ("plain", "P3") == (alerts[0].rules[0], alerts[0].headline()[0])
    assert [] == asked
    assert "events.jsonl:2" == alerts[1].payload["details"]["Event Source"]
    assert [1] == asked
    assert "events.jsonl:2" == alerts[1].payload["details"]["Event Source"]
    assert "events.jsonl:1" == alerts[0].payload["details"]["Event Source"]
    assert [1, 0] == asked
