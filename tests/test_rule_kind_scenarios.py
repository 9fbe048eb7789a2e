"""The correlation rule kinds held to what the README says of them, as a user checks a rule: a
rule file and a rule test file run with the real `rulesd test` (event time, late lines, ties);
and, where time must pass for a timer, the real daemon with a loopback OpsGenie."""

from __future__ import annotations

import json
import signal
import time
from functools import partial
from pathlib import Path

from tests.daemon_process import Workspace, wait_until
from tests.fake_opsgenie import FakeOpsGenie
from tests.run_cli import rulesd_cli
from tests.test_e2e_lifecycle import closes, creates
from tests.test_rule_kinds import BACKUP, BRUTE_THEN_LOGIN, _listed

SEQUENCES = "rules:\n" + _listed(BRUTE_THEN_LOGIN, BACKUP)


def rule_tests(tmp_path: Path, rules: str, tests: str) -> tuple[int, str]:
    """`rulesd test` of `tests` (the items of a test file's `tests:`) against the one rule file
    `rules`: its exit status and what it printed."""
    (tmp_path / "rules.yaml").write_text(rules)
    path = tmp_path / "kinds.test.yaml"
    path.write_text("rule_files: [rules.yaml]\ntests:\n" + tests)
    done = rulesd_cli("test", str(path))
    return done.returncode, done.stdout + done.stderr


def test_a_sequence_step_counts_only_events_dated_after_the_step_before(tmp_path: Path) -> None:
    """Steps happen in order in event time: a success logged late, dated before the failures,
    does not complete the sequence, nor does a backup's finish dated before its start end the
    wait; an event at the same time as the step before does count (in order as read), and the
    first step's events count in any order."""
    status, out = rule_tests(
        tmp_path,
        SEQUENCES,
        """
  - name: a success dated before the failures completes nothing
    events:
      - {at: 100s, event: {event: login_failed, ip: x}}
      - {at: 105s, event: {event: login_failed, ip: x}}
      - {at: 110s, event: {event: login_failed, ip: x}}
      - {at: 50s, event: {event: login_succeeded, ip: x}}
      - {at: 120s, event: {event: login_succeeded, ip: x}}
    expect_alerts: [{event: 5, rules: [login-after-brute-force]}]
  - name: a success at the same second as the failures completes it
    events:
      - {at: 100s, event: {event: login_failed, ip: x}}
      - {at: 100s, event: {event: login_failed, ip: x}}
      - {at: 100s, event: {event: login_failed, ip: x}}
      - {at: 100s, event: {event: login_succeeded, ip: x}}
    expect_alerts: [{event: 4, rules: [login-after-brute-force]}]
  - name: the first step's events out of order start it at the earliest (601s after it is too late)
    events:
      - {at: 500s, event: {event: login_failed, ip: x}}
      - {at: 0s, event: {event: login_failed, ip: x}}
      - {at: 300s, event: {event: login_failed, ip: x}}
      - {at: 601s, event: {event: login_succeeded, ip: x}}
    expect_alerts: []
  - name: a finish dated before the start does not end the wait
    events:
      - {at: 100s, event: {event: backup_started, host: db1}}
      - {at: 50s, event: {event: backup_finished, host: db1}}
      - {advance: 2h}
    expect_alerts: [{event: 1, rules: [backup-never-finished]}]
""",
    )
    assert (0, "rule tests: 4 passed, 0 failed, 0 invalid") == (status, out.strip().splitlines()[-1]), out


def test_a_login_after_a_second_burst_of_failures_pages_when_the_first_burst_was_too_long_ago(
    tmp_path: Path,
) -> None:
    """Three failed logins from x, a pause, three more 9 minutes later, then one success: the
    success is 10 minutes after the first burst (too slow for it) and 1 after the second, which
    was remembered while the first waited: it pages, on that success. (The success only gave up
    the first burst, and the second was started after it: nothing paged until another login.)"""
    logins = [("failed", at) for at in (0, 5, 10, 540, 545, 550)] + [("succeeded", 610)]
    events = "".join(f"      - {{at: {at}s, event: {{event: login_{what}, ip: x}}}}\n" for what, at in logins)
    test = "  - name: the newer burst and the success page\n    events:\n" + events
    test += "    expect_alerts: [{event: 7, rules: [login-after-brute-force]}]\n"
    status, out = rule_tests(tmp_path, SEQUENCES, test)
    assert (0, "rule tests: 1 passed, 0 failed, 0 invalid") == (status, out.strip().splitlines()[-1]), out


HEARTBEAT = """
name: heartbeat-missing
match: {kind: heartbeat}
absence: {window: 5m, group_by: [host]}
"""


def test_a_late_heartbeat_dated_within_a_silence_neither_closes_nor_pages_again(tmp_path: Path) -> None:
    """After the silence paged, a heartbeat logged late, dated 5 minutes or more before the
    clock, shows the host still silent: its alert stays open (it was closed, and the timer
    set again from the late time paged a second time at once). A heartbeat in time closes it."""
    status, out = rule_tests(
        tmp_path,
        HEARTBEAT,
        """
  - name: one page, one close
    events:
      - {at: 0s, event: {kind: heartbeat, host: h}}
      - {advance: 10m}
      - {at: 100s, event: {kind: heartbeat, host: h}}
      - {advance: 1m}
      - {at: 12m, event: {kind: heartbeat, host: h}}
    expect_alerts: [{event: 1, rules: [heartbeat-missing]}]
    expect_closes: [{rules: [heartbeat-missing]}]
""",
    )
    assert (0, "rule tests: 1 passed, 0 failed, 0 invalid") == (status, out.strip().splitlines()[-1]), out


def test_the_daemon_keeps_a_silence_open_through_a_late_heartbeat(tmp_path: Path, server: FakeOpsGenie) -> None:
    """The real daemon on event time (`time_field`): the absence pages while the source is
    quiet; a heartbeat dated within the silence, read with one in time, closes it once, and
    no second page goes out."""
    ws = Workspace(tmp_path, server.url, time_field="t")
    (ws.rules / "rules.yaml").write_text(HEARTBEAT.replace("5m", "2s"))
    daemon = ws.start()
    start = time.time()
    ws.append({"kind": "heartbeat", "host": "w1", "t": start})
    assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=15), daemon.output()
    assert wait_until(lambda: time.time() > start + 4, timeout=10)
    ws.append(
        {"kind": "heartbeat", "host": "w1", "t": start + 0.5}, {"kind": "heartbeat", "host": "w1", "t": time.time()}
    )
    assert server.wait_for(lambda got: len(closes(server)) >= 1, timeout=15), daemon.output()
    assert 0 == daemon.terminate()  # after the sender drained the outbox
    assert (1, 1) == (len(creates(server)), len(closes(server))), [r.path for r in server.requests]


COUNTING = """
rules:
  - name: errors
    match: {level: error}
    threshold: {count: 3, window: 5m}
  - name: spraying
    match: {event: login_failed}
    distinct: {field: user, count: 3, window: 5m}
"""


def test_a_late_event_counts_in_the_window_that_ends_at_the_latest_event(tmp_path: Path) -> None:
    """Events logged late are counted where their time puts them: one dated 5 minutes or more
    before the group's latest event is outside its window (three events 400 s apart are not
    three within 5 minutes), one dated less is inside."""
    cases = {"too old to count": (100, []), "late but within the window": (102, [3, 6])}
    tests = "".join(
        f"""
  - name: {name}
    events:
      - {{at: 400s, event: {{level: error}}}}
      - {{at: 401s, event: {{level: error}}}}
      - {{at: {late}s, event: {{level: error}}}}
      - {{at: 400s, event: {{event: login_failed, user: u1}}}}
      - {{at: 401s, event: {{event: login_failed, user: u2}}}}
      - {{at: {late}s, event: {{event: login_failed, user: u3}}}}
    expect_alerts: {[{"event": n, "rules": ["errors" if n == 3 else "spraying"]} for n in fired]}
"""
        for name, (late, fired) in cases.items()
    )
    status, out = rule_tests(tmp_path, COUNTING, tests)
    assert (0, "rule tests: 2 passed, 0 failed, 0 invalid") == (status, out.strip().splitlines()[-1]), out


def test_replay_counts_a_line_without_a_time_at_the_latest_event_time(tmp_path: Path) -> None:
    """Replaying an old log, a heartbeat without a time (or with one from the future) is taken
    as read right after the one before it, as the daemon read it: the clock does not jump from
    the log's times to today, so the absence neither pages nor closes (heartbeats a minute apart)."""
    (tmp_path / "rules.yaml").write_text(HEARTBEAT)
    start = 1_717_000_000
    beats = [{"t": start}, {}, {"t": "garbage"}, {"t": 1e308}, {"t": start + 60}, {"t": start + 120}]
    lines = "".join(json.dumps({"kind": "heartbeat", "host": "h", **beat}) + "\n" for beat in beats)
    (tmp_path / "beats.jsonl").write_text(lines)
    done = rulesd_cli("replay", "--rules", "rules.yaml", "--time-field", "t", "beats.jsonl", cwd=tmp_path)
    assert 0 == done.returncode, done.stderr
    assert "events: 6, invalid lines: 0, alerts: 0" == done.stdout.splitlines()[0], done.stdout
    assert "3 event(s) without a readable time, evaluated at the latest event time before them" in done.stdout


STARTING = """
rules:
  - name: heartbeat-missing
    match: {kind: heartbeat}
    absence: {window: 5m, group_by: [host], expect: [{host: pay-1}]}
  - name: new-address
    match: {kind: login}
    new_value: {fields: [ip], learn: 1h}
"""


def test_replay_starts_the_clock_at_the_first_event_as_rule_tests_do(tmp_path: Path) -> None:
    """The expected group is watched, and learning starts, at the first event, though no rule
    matches it: `rulesd replay` pages for the expected host 5 minutes on and for the address
    new at the end of the hour, as `rulesd test` of the same events does."""
    events = [(0, {"kind": "deploy"}), (3000, {"kind": "login", "ip": "a"}), (3600, {"kind": "login", "ip": "b"})]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps({"t": at, **event}) + "\n" for at, event in events))
    (tmp_path / "rules.yaml").write_text(STARTING)
    done = rulesd_cli("replay", "--rules", "rules.yaml", "--time-field", "t", "events.jsonl", cwd=tmp_path)
    assert [
        "expected group: P3 [heartbeat-missing] rulesd: heartbeat-missing  "
        '(alias: rulesd: heartbeat-missing: {"host":"pay-1"})',
        "line 3: P3 [new-address] rulesd: new-address  (alias: rulesd: new-address)",
    ] == done.stdout.splitlines()[:2], done.stdout
    steps = "".join(f"      - {{at: {at}s, event: {json.dumps(event)}}}\n" for at, event in events)
    expected = "[{event: 0, rules: [heartbeat-missing]}, {event: 3, rules: [new-address]}]"
    status, out = rule_tests(tmp_path, STARTING, f"  - name: same\n    events:\n{steps}    expect_alerts: {expected}\n")
    assert 0 == status, out


def test_the_daemon_learns_new_values_from_its_start(tmp_path: Path, server: FakeOpsGenie) -> None:
    """A new_value rule (no timers in the rule set) learns for `learn` from the daemon's start,
    not from the first login, which may come long after: a login after `learn` has passed
    since the start is new."""
    ws = Workspace(tmp_path, server.url)
    (ws.rules / "rules.yaml").write_text(
        "name: new-address\nmatch: {kind: login}\nnew_value: {fields: [ip], learn: 2s}\n"
    )
    daemon = ws.start()
    started = time.time()
    assert wait_until(lambda: time.time() > started + 3, timeout=10)
    ws.append({"kind": "login", "ip": "a"})
    assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=15), daemon.output()
    assert 0 == daemon.terminate()


def test_a_new_value_rule_whose_message_is_edited_pages_only_for_values_it_never_saw(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """Two user agents of web are paged as new; the rule's message is edited and reloaded by
    SIGHUP; the same two come again, then a third: only the third is paged. (The edit forgot
    every value: both known user agents paged again.)"""
    ws = Workspace(tmp_path, server.url)
    rule = "name: new-agent\nmatch: {kind: http}\nnew_value: {fields: [ua], group_by: [host]}\n"
    (ws.rules / "rules.yaml").write_text(rule)
    daemon = ws.start()
    ws.append(*({"kind": "http", "host": "web", "ua": ua} for ua in ("curl", "wget")))
    assert server.wait_for(lambda got: len(creates(server)) == 2, timeout=15), daemon.output()
    (ws.rules / "rules.yaml").write_text(rule + 'alert: {message: "new user agent {ua} on {host}"}\n')
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.wait_for_log("changed: 1 ("), daemon.output()
    ws.append(*({"kind": "http", "host": "web", "ua": ua} for ua in ("curl", "wget", "sqlmap")))
    assert server.wait_for(lambda got: len(creates(server)) == 3, timeout=15), daemon.output()
    time.sleep(1.0)
    assert 0 == daemon.terminate()
    assert ["new user agent sqlmap on web"] == [r.json()["message"] for r in creates(server)[2:]]


def test_a_rule_test_that_begins_with_an_advance_starts_its_clock_at_zero(tmp_path: Path) -> None:
    """`{advance: 10m}` moves the clock on from the start, so an expected host never seen is
    silent for those 10 minutes and pages; the expected group was watched from 10m, and so
    did not page, before."""
    status, out = rule_tests(
        tmp_path,
        HEARTBEAT.replace("group_by: [host]", "group_by: [host], expect: [{host: pay-1}]"),
        """
  - name: silent from the start
    events:
      - {advance: 10m}
    expect_alerts: [{event: 0, rules: [heartbeat-missing]}]
""",
    )
    assert (0, "rule tests: 1 passed, 0 failed, 0 invalid") == (status, out.strip().splitlines()[-1]), out


def test_an_absent_step_waiting_across_a_restart_pages_once_on_time(tmp_path: Path, server: FakeOpsGenie) -> None:
    """A backup started, then the daemon stopped and started again before the wait ended: the
    wait is kept with the state, and the page goes out once, when it ends, carrying the start."""
    ws = Workspace(tmp_path, server.url)
    (ws.rules / "rules.yaml").write_text(BACKUP.replace("for: 2h", "for: 8s"))
    first = ws.start()
    started = time.time()
    ws.append({"event": "backup_started", "host": "db1", "run": 7})
    waiting = partial(rulesd_cli, "state", "--config", str(ws.config), "--rule", "backup-never-finished")
    assert wait_until(lambda: "step 1 of 2 done" in waiting().stdout, timeout=10), first.output()
    assert 0 == first.terminate()
    assert [] == creates(server)
    second = ws.start()
    assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=20), second.output()
    assert time.time() >= started + 8
    assert '"run": 7' in creates(server)[0].json()["description"]
    assert 0 == second.terminate()
    assert 1 == len(creates(server))
