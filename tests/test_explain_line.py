"""`rulesd explain --events FILE --line N`: line N explained with the state the lines before it
built through replay's pipeline, and whether it fires each rule it matches, kind by kind."""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from rulesd.alerting.payload import AlertSettings
from rulesd.events import JSON_PARSER
from rulesd.explain import VALUE_CHARS, Explainer
from rulesd.explain_line import ExplainedLine, LineError, explain_line, explained_line_text
from rulesd.replay import ReplayedAlert, replay
from rulesd.rules.loader import load_ruleset, rule_sources
from rulesd.rules.model import RuleSet
from tests.run_cli import rulesd_cli

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z

RULES = """\
rules:
  - name: ssh-brute
    match: {event: login_failed}
    threshold: {count: 3, window: 5m, group_by: [ip]}
    throttle: 10m
  - name: spraying
    match: {event: login_failed}
    distinct: {field: user, count: 3, window: 5m, group_by: [ip]}
  - name: login-after-brute
    sequence:
      group_by: [ip]
      steps:
        - match: {event: login_failed}
          count: 2
        - match: {event: login_ok}
  - name: backup-never-finished
    sequence:
      group_by: [host]
      steps:
        - match: {event: backup_started}
        - absent: {match: {event: backup_finished}, for: 1h}
  - name: heartbeat-missing
    match: {event: heartbeat}
    absence: {window: 5m, group_by: [host]}
  - name: new-admin-address
    match: {event: login_ok}
    new_value: {fields: [ip], group_by: [user], learn: 1m}
  - name: any-error
    match: {level: error}
    throttle: 1m
"""


def load(tmp_path: Path, text: str = RULES) -> tuple[RuleSet, Explainer]:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    ruleset = load_ruleset([path])
    return ruleset, Explainer(ruleset.rules, rule_sources(ruleset.rules))


def lines_of(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def explain_at(tmp_path: Path, events: list[dict[str, Any]], line: int, text: str = RULES) -> ExplainedLine:
    ruleset, explainer = load(tmp_path, text)
    stream = io.BytesIO(lines_of(events))
    return explain_line(ruleset, explainer, stream, line, name="events", parser=JSON_PARSER, time_field="t")


def said(explained: ExplainedLine) -> dict[str, str]:
    """Rule -> what its line says after the verdict, for the rules the event matches."""
    out = {}
    for line in explained_line_text(explained, "events")[1:]:
        name, _, rest = line.partition(": ")
        if not line.startswith(" ") and rest.startswith("matches") and not rest.startswith("matches none"):
            out[name] = rest
    return out


def failed(at: int, ip: str = "a", user: str = "u1") -> dict[str, Any]:
    return {"t": T0 + at, "event": "login_failed", "ip": ip, "user": user}


def test_threshold_and_distinct_count_up_to_firing(tmp_path: Path) -> None:
    """`not yet: k of n` until the event that fires (`fires: threshold reached, 3 of 3`)."""
    events = [failed(0, user="u1"), failed(10, user="u1"), failed(20, user="u2"), failed(30, user="u3")]
    assert {
        "ssh-brute": 'matches, group ip="a"; not yet: 2 of 3 in 5m',
        "spraying": 'matches, group ip="a"; not yet: 1 of 3 different user in 5m',
        "login-after-brute": 'matches step 1 of 2, group ip="a"; not yet: at step 2 of 2',
    } == said(explain_at(tmp_path, events, 2))
    third = said(explain_at(tmp_path, events, 3))
    assert 'matches, group ip="a"; fires: threshold reached, 3 of 3' == third["ssh-brute"]
    assert 'matches, group ip="a"; not yet: 2 of 3 different user in 5m' == third["spraying"]
    fourth = said(explain_at(tmp_path, events, 4))
    assert 'matches, group ip="a"; fires: 3 of 3 different user' == fourth["spraying"]
    assert 'matches, group ip="a"; not yet: 1 of 3 in 5m' == fourth["ssh-brute"]


def test_a_throttled_group_says_until_when(tmp_path: Path) -> None:
    """The count is reached again within the throttle: `but throttled until` its end, seen
    from the event's time; a rule without a kind says only that."""
    events = [failed(i * 10) for i in range(6)] + [{"t": T0, "level": "error"}, {"t": T0 + 30, "level": "error"}]
    assert (
        'matches, group ip="a"; threshold reached, 3 of 3, but throttled until 2026-01-01T00:10:20Z (in 9m30s)'
        == said(explain_at(tmp_path, events, 6))["ssh-brute"]
    )
    assert "matches; fires" == said(explain_at(tmp_path, events, 7))["any-error"]
    assert (
        "matches; throttled until 2026-01-01T00:01:00Z (in 30s)" == said(explain_at(tmp_path, events, 8))["any-error"]
    )


def test_sequences_say_their_step(tmp_path: Path) -> None:
    """Counted steps, the step that completes, the wait of an absent step and its end."""
    events = [
        failed(0),
        failed(5),
        {"t": T0 + 6, "event": "login_ok", "ip": "a", "user": "u1"},
        {"t": T0 + 10, "event": "backup_started", "host": "db"},
        {"t": T0 + 20, "event": "backup_finished", "host": "db"},
    ]
    assert (
        'matches step 1 of 2, group ip="a"; not yet: at step 1 of 2, 1 of 2 events'
        == (said(explain_at(tmp_path, events, 1))["login-after-brute"])
    )
    assert (
        'matches step 2 of 2, group ip="a"; fires: step 2 of 2'
        == (said(explain_at(tmp_path, events, 3))["login-after-brute"])
    )
    assert (
        'matches step 1 of 2, group host="db"; not yet: step 1 of 2 done; fires at 2026-01-01T01:00:10Z (in 1h) '
        "unless the absent step's event comes" == said(explain_at(tmp_path, events, 4))["backup-never-finished"]
    )
    assert (
        'matches step 2 of 2, group host="db"; ends the wait: the absent step\'s event came, so the group starts again'
        == said(explain_at(tmp_path, events, 5))["backup-never-finished"]
    )


def test_a_late_line_dated_before_the_step_it_would_follow_says_it_is_not_counted(tmp_path: Path) -> None:
    """A success logged late, dated before the failures were counted, completes nothing, and
    the line says why; so does a finish dated before its backup started."""
    late_ok = {"t": T0 + 50, "event": "login_ok", "ip": "a", "user": "u1"}
    backup = [
        {"t": T0 + at, "event": f"backup_{what}", "host": "db"} for at, what in ((200, "started"), (150, "finished"))
    ]
    events = [failed(100), failed(110), late_ok, *backup]
    assert (
        'matches step 2 of 2, group ip="a"; not counted for step 2: dated before step 1 was done '
        "(2026-01-01T00:01:50Z (in 1m)); at step 2 of 2" == said(explain_at(tmp_path, events, 3))["login-after-brute"]
    )
    assert (
        'matches step 2 of 2, group host="db"; not counted for step 2: dated before step 1 was done '
        "(2026-01-01T00:03:20Z (in 50s)); step 1 of 2 done; fires at 2026-01-01T01:03:20Z (in 1h) "
        "unless the absent step's event comes" == said(explain_at(tmp_path, events, 5))["backup-never-finished"]
    )


def test_a_heartbeat_dated_a_window_before_the_clock_says_the_silence_goes_on(tmp_path: Path) -> None:
    """After the silence fired (another host's beat moved the clock on), a beat logged late
    does not end it; one in time does."""
    beats = [{"t": T0 + at, "event": "heartbeat", "host": host} for at, host in ((0, "h1"), (900, "h2"))]
    beats += [{"t": T0 + 100, "event": "heartbeat", "host": "h1"}, {"t": T0 + 901, "event": "heartbeat", "host": "h1"}]
    assert (
        'matches, group host="h1"; seen late: dated 5m or more before the clock, so still silent (its alert stays open)'
        == said(explain_at(tmp_path, beats, 3))["heartbeat-missing"]
    )
    assert said(explain_at(tmp_path, beats, 4))["heartbeat-missing"].startswith(
        'matches, group host="h1"; seen: ends the silence (its alert closes)'
    )
    older = [*beats, {"t": T0 + 850, "event": "heartbeat", "host": "h2"}]
    assert (
        'matches, group host="h2"; seen late: dated before the group\'s last event (2026-01-01T00:15:00Z (in 50s)), '
        "so it changes nothing" == said(explain_at(tmp_path, older, 5))["heartbeat-missing"]
    )


def test_absence_and_new_value(tmp_path: Path) -> None:
    """An absence's timer starts again (and a silence that fired ends); a new value is only
    recorded while the rule learns (from the first event), then seen before, or new."""
    beats = [{"t": T0, "event": "heartbeat", "host": "h1"}, {"t": T0 + 600, "event": "heartbeat", "host": "h1"}]
    assert (
        'matches, group host="h1"; seen: its silence timer starts again (fires if silent until '
        "2026-01-01T00:05:00Z (in 5m))" == said(explain_at(tmp_path, beats, 1))["heartbeat-missing"]
    )
    assert (
        'matches, group host="h1"; seen: ends the silence (its alert closes); fires again if silent until '
        "2026-01-01T00:15:00Z (in 5m)" == said(explain_at(tmp_path, beats, 2))["heartbeat-missing"]
    )
    logins = [
        {"t": T0 + at, "event": "login_ok", "ip": ip, "user": "u1"}
        for at, ip in ((0, "a"), (10, "b"), (70, "b"), (90, "c"))
    ]
    assert {
        2: 'matches, group user="u1"; new value, but learning until 2026-01-01T00:01:00Z (in 50s)',
        3: 'matches, group user="u1"; seen before (last 2026-01-01T00:00:10Z (1m ago))',
        4: 'matches, group user="u1"; fires: new value',
    } == {n: said(explain_at(tmp_path, logins, n))["new-admin-address"] for n in (2, 3, 4)}


def test_the_rules_that_fire_are_those_replay_alerts_for(tmp_path: Path) -> None:
    """Over random events, line by line: explain says `fires` for exactly the rules of the
    alert replay sends for that line (none where it sends none)."""
    rng = random.Random(7)
    events = []
    for i in range(120):
        kind = rng.choice(["login_failed", "login_failed", "login_ok", "heartbeat", "backup_started", "x"])
        event = {"t": T0 + i * rng.choice([1, 5, 40]), "event": kind, "ip": rng.choice("ab"), "user": rng.choice("uvw")}
        event["host"] = rng.choice(["h1", "h2"])
        if rng.random() < 0.2:
            event["level"] = "error"
        events.append(event)
    ruleset, explainer = load(tmp_path)
    data = lines_of(events)
    alerts: dict[int, set[str]] = {}
    for item in replay(ruleset, io.BytesIO(data), name="events", settings=AlertSettings(), time_field="t"):
        if isinstance(item, ReplayedAlert) and item.close is None and item.line:
            alerts.setdefault(item.line, set()).update(item.rules)
    timers = {"heartbeat-missing", "backup-never-finished"}  # fire by their timers, never on an event
    for n in range(1, len(events) + 1):
        explained = explain_line(ruleset, explainer, io.BytesIO(data), n, name="e", parser=JSON_PARSER, time_field="t")
        fires = {name for name, text in explained.outcomes.items() if "fires:" in text or text == "fires"}
        assert alerts.get(n, set()) - timers == fires, n
    assert len(alerts) > 10  # the events made rules fire often


def test_a_line_is_explained_with_the_clock_replay_had_at_it(tmp_path: Path) -> None:
    """An event no rule matches moves the clock at the end of its block, in replay as in the
    daemon: a beat logged a little late right after it is on time for replay, which sends
    nothing, and explain says the same (it moved the clock at the line before, so the silence
    had fired and the beat closed it)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: quiet, match: {kind: beat}, absence: {window: 60, group_by: [host]}}\n")
    events = tmp_path / "events.jsonl"
    events.write_text(
        f'{{"kind":"beat","host":"a","ts":{T0}}}\n{{"kind":"other","ts":{T0 + 100}}}\n'
        f'{{"kind":"beat","host":"a","ts":{T0 + 50}}}\n'
    )
    replayed = rulesd_cli("replay", "--rules", str(rules), "--time-field", "ts", str(events))
    assert "alerts: 0\n" in replayed.stdout and "close" not in replayed.stdout, replayed
    explained = rulesd_cli(
        "explain", "--rules", str(rules), "--time-field", "ts", "--events", str(events), "--line", "3"
    )
    assert (
        'quiet: matches, group host="a"; seen: its silence timer starts again (fires if silent until '
        "2026-01-01T00:01:50Z (in 1m))" == explained.stdout.splitlines()[1]
    )


def test_out_of_order_lines_are_explained_as_replay_evaluates_them(tmp_path: Path) -> None:
    """Over random events whose times go back now and then, among lines no rule matches, past
    several blocks: explain says a line ends a silence (closing its alert) exactly where replay
    closes one, and fires exactly the rules replay alerts for there."""
    rng = random.Random(11)
    events: list[dict[str, Any]] = []
    at = 0
    for _ in range(200):
        at += rng.choice([0, 20, 90, 400])
        kind = rng.choice(["heartbeat", "heartbeat", "login_failed", "x", "x", "x"])
        late = rng.choice([0, 0, 0, 60, 200, 350])
        events.append({"t": T0 + at - late, "event": kind, "host": rng.choice(["h1", "h2"]), "ip": "a", "user": "u"})
    ruleset, explainer = load(tmp_path)
    data = lines_of(events)
    fired: dict[int, set[str]] = {}
    closed: set[int] = set()
    for item in replay(ruleset, io.BytesIO(data), name="events", settings=AlertSettings(), time_field="t"):
        if isinstance(item, ReplayedAlert) and item.close is not None and "heartbeat-missing" in item.rules:
            closed.add(item.line)
        elif isinstance(item, ReplayedAlert) and item.line and item.rules != ("heartbeat-missing",):
            fired.setdefault(item.line, set()).update(item.rules)
    ends, fires = set(), {}
    for n in range(1, len(events) + 1):
        explained = explain_line(ruleset, explainer, io.BytesIO(data), n, name="e", parser=JSON_PARSER, time_field="t")
        if "ends the silence" in explained.outcomes.get("heartbeat-missing", ""):
            ends.add(n)
        named = {name for name, text in explained.outcomes.items() if "fires:" in text or text == "fires"}
        if named:
            fires[n] = named
    assert (closed, fired) == (ends, fires)
    assert len(closed) > 5  # silences ended often


def test_bad_lines_are_errors(tmp_path: Path) -> None:
    """Past the end, blank, not JSON, not an object: LineError saying which."""
    ruleset, explainer = load(tmp_path)
    data = b'{"t": 1}\n\nnot json\n[1]\n'
    messages = []
    for n in (5, 2, 3, 4):
        with pytest.raises(LineError) as caught:
            explain_line(ruleset, explainer, io.BytesIO(data), n, name="ev", parser=JSON_PARSER)
        messages.append(str(caught.value))
    assert [
        "ev: there is no line 5: the file has 4 line(s)",
        "ev:2: the line is blank",
        "ev:3: not an event: invalid JSON: invalid literal, expected 'null': line 1 column 1 (char 0)",
        "ev:4: not an event: not a JSON object but an array",
    ] == messages


def test_a_cut_line_is_explained_as_the_daemon_explains_it(tmp_path: Path) -> None:
    """orjson counts the newline of a JSON line cut short: the reason is taken of the line
    without it, at line 1 of the event (as the daemon says), not at a line 2 it lacks."""
    ruleset, explainer = load(tmp_path)
    with pytest.raises(LineError) as caught:
        explain_line(ruleset, explainer, io.BytesIO(b'{"t": 1}\n{"t":\n'), 2, name="ev", parser=JSON_PARSER)
    assert "ev:2: not an event: invalid JSON: unexpected end of data: line 1 column 6 (char 5)" == str(caught.value)


# ---- the command ---------------------------------------------------------------------------


def test_command_explains_a_line_read_as_the_configured_source_reads_it(tmp_path: Path) -> None:
    """With --config, a regex source's lines become events as the daemon reads them (typed
    fields, its time format); the first line is the file and line, then the rules."""
    (tmp_path / "rules.yaml").write_text(
        "name: ssh-brute\nmatch: {program: sshd, port: {gte: 1024}}\n"
        "threshold: {count: 2, window: 1m, group_by: [ip]}\n"
    )
    (tmp_path / "rulesd.yaml").write_text(
        "rules: [rules.yaml]\nstate_dir: state\n"
        "source:\n  type: file\n  path: auth.log\n  format: regex\n"
        "  pattern: '^(?P<time>\\S+) (?P<program>\\w+): fail from (?P<ip>\\S+) port (?P<port>\\d+)'\n"
        "  fields: {port: int}\n  time_field: time\n  time_format: rfc3339\n"
    )
    (tmp_path / "auth.log").write_text(
        "2026-01-01T00:00:00Z sshd: fail from 192.0.2.1 port 2222\n"
        "2026-01-01T00:00:30Z sshd: fail from 192.0.2.1 port 22\n"
        "2026-01-01T00:00:40Z sshd: fail from 192.0.2.1 port 4000\n"
        "garbage\n"
    )
    result = rulesd_cli("explain", "--config", "rulesd.yaml", "--events", "auth.log", "--line", "3", cwd=tmp_path)
    assert (0, "") == (result.returncode, result.stderr)
    head, verdict = result.stdout.splitlines()
    assert head.startswith("auth.log:3 (event time 2026-01-01T00:00:40Z): {") and '"port":4000' in head
    assert 'ssh-brute: matches, group ip="192.0.2.1"; fires: threshold reached, 2 of 2' == verdict
    second = rulesd_cli("explain", "--config", "rulesd.yaml", "--events", "auth.log", "--line", "2", cwd=tmp_path)
    assert [
        "ssh-brute: does not match",
        f"  {tmp_path / 'rules.yaml'}:2:36: port: 22, wanted gte: 1024",
    ] == second.stdout.splitlines()[1:]
    bad = rulesd_cli("explain", "--config", "rulesd.yaml", "--events", "auth.log", "--line", "4", cwd=tmp_path)
    assert (2, "rulesd explain: auth.log:4: not an event: does not match the source pattern\n") == (
        bad.returncode,
        bad.stderr,
    )


def test_an_event_nested_hundreds_deep_is_explained_not_a_traceback(tmp_path: Path) -> None:
    """A JSON line may nest up to 1,024 levels (orjson reads it, replay pages on it); explain
    wrote the event and a failing value with orjson, which writes 254 at most, and ended in a
    traceback (`TypeError: Recursion limit reached`)."""
    (tmp_path / "rules.yaml").write_text("rules:\n  - name: deep\n    match: {d: 5}\n")
    deep = '{"x":' * 1000 + "1" + "}" * 1000
    (tmp_path / "events.jsonl").write_text(f'{{"a":1,"d":{deep}}}\n')
    result = rulesd_cli("explain", "--rules", "rules.yaml", "--events", "events.jsonl", "--line", "1", cwd=tmp_path)
    assert (0, "") == (result.returncode, result.stderr)
    head, verdict, failed = result.stdout.splitlines()
    event = '{"a":1,"d":' + deep + "}"
    assert head.startswith("events.jsonl:1 (event time ") and head.endswith(f"): {event[: VALUE_CHARS - 1]}…")
    shown = f"{deep[: VALUE_CHARS - 1]}…"
    assert ("deep: does not match", f"  rules.yaml:3:16: d: {shown}, wanted 5") == (verdict, failed)


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["{"], "", "rulesd explain: the event is invalid JSON: unexpected end of data: line 1 column 2 (char 1)"),
        (["[1, 2]"], "", "rulesd explain: the event is not a JSON object but an array"),
        (["-"], '"text"', "rulesd explain: the event is not a JSON object but a string"),
        (["--rule", "ssh-brut", "{}"], "", "rulesd explain: no rule named 'ssh-brut'; did you mean 'ssh-brute'?"),
        (
            ["--events", "ev.jsonl", "--line", "9"],
            "",
            "rulesd explain: ev.jsonl: there is no line 9: the file has 1 line(s)",
        ),
        (["--events", "ev.jsonl"], "", "rulesd explain: --events FILE and --line N go together"),
        (
            ["--events", "ev.jsonl", "--line", "1", "{}"],
            "",
            "rulesd explain: give either EVENT_JSON or --events FILE --line N, not both",
        ),
        ([], "", "rulesd explain: give the event (EVENT_JSON, or - for standard input) or --events FILE --line N"),
    ],
)
def test_command_bad_input_exits_2(tmp_path: Path, args: list[str], stdin: str, message: str) -> None:
    """Not JSON, not an object, an unknown rule, a line past the end, arguments that do not go together."""
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "ev.jsonl").write_text('{"event": "x"}\n')
    result = rulesd_cli("explain", "--rules", "rules.yaml", *args, stdin=stdin, cwd=tmp_path)
    assert (2, "", message + "\n") == (result.returncode, result.stdout, result.stderr)


def test_command_explains_an_event_from_stdin_for_one_rule(tmp_path: Path) -> None:
    """`-` reads the event from standard input; --rule explains that rule only."""
    (tmp_path / "rules.yaml").write_text(RULES)
    result = rulesd_cli(
        "explain", "--rules", "rules.yaml", "--rule", "any-error", "-", stdin='{"level": "warn"}\n', cwd=tmp_path
    )
    assert (0, ["any-error: does not match", '  rules.yaml:29:20: level: "warn", wanted "error"'], "") == (
        result.returncode,
        result.stdout.splitlines(),
        result.stderr,
    )


def test_an_event_time_beyond_the_calendar_is_not_believed(tmp_path: Path) -> None:
    """An event's time field may hold any number (nanoseconds read as seconds, 1e300): so far
    ahead, it is not believed, as in `run` and `replay`; the line is explained at its arrival
    time (no OverflowError writing it), and a throttle's end is counted from there."""
    (tmp_path / "rules.yaml").write_text("name: r\nmatch: {x: 1}\nthrottle: 10s\n")
    (tmp_path / "events.jsonl").write_text('{"x": 1, "t": 1e300}\n{"x": 1, "t": 1733420000000000000}\n')
    args = ["explain", "--rules", "rules.yaml", "--time-field", "t", "--events", "events.jsonl", "--line", "2"]
    result = rulesd_cli(*args, cwd=tmp_path)
    assert 0 == result.returncode, result.stderr
    first, second = result.stdout.splitlines()
    now = r"20\d\d-\d\d-\d\dT[\d:]+Z"
    assert re.fullmatch(rf'events.jsonl:2 \(event time {now}\): \{{"x":1,"t":1733420000000000000\}}', first), first
    assert re.fullmatch(rf"r: matches; throttled until {now} \(in 1\ds\)", second), second
