"""Alerts that close, through the real daemon and a loopback OpsGenie: an absence fires while
no event comes (the daemon's clock moves on with the wall clock) and closes when events
return; a resolve closes after a quiet period; the same against the Jira Service Management
endpoint. And the state limits: the stalest groups forgotten, counted and warned about once."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import yaml

from rulesd.config import load_config
from rulesd.daemon import Daemon, build_parts
from rulesd.rules.loader import load_ruleset
from tests.daemon_process import DaemonProcess, Workspace, daemon_parts, reload_between_batches, wait_until
from tests.fake_opsgenie import FakeOpsGenie, Received, Reply
from tests.opsgenie_schema import create_alert_validator
from tests.run_cli import rulesd_cli

VALIDATOR = create_alert_validator()
HEARTBEAT = """
name: worker-heartbeat-missing
match: {kind: heartbeat}
absence: {window: 2s, group_by: [host]}
alert: {priority: P2, message: "no heartbeat from {host}"}
"""
ALIAS = 'rulesd: worker-heartbeat-missing: {"host":"w1"}'
JSM_PATH = "/jsm/ops/integration/v2/alerts"


def creates(server: FakeOpsGenie) -> list[Received]:
    return [r for r in server.requests if r.path.endswith("/alerts")]


def closes(server: FakeOpsGenie) -> list[Received]:
    return [r for r in server.requests if "/close" in r.path]


def close_path(base: str, alias: str) -> str:
    return f"{base}/{urllib.parse.quote(alias, safe='')}/close?identifierType=alias"


def closed_once(server: FakeOpsGenie, daemon: DaemonProcess, alias: str, note: str, created: int = 1) -> None:
    """`daemon` closes `alias` with `note`, and sends nothing more until it stops (within a
    second): `created` alerts created, one closed."""
    assert server.wait_for(lambda got: len(closes(server)) == 1, timeout=10), daemon.output()
    assert close_path("/v2/alerts", alias) == closes(server)[0].path
    assert note == closes(server)[0].json()["note"]
    time.sleep(1.0)
    assert 0 == daemon.terminate()
    assert (created, 1) == (len(creates(server)), len(closes(server)))


@pytest.mark.parametrize("path", ["/v2/alerts", JSM_PATH])
def test_an_absence_fires_while_idle_and_closes_when_events_return(
    tmp_path: Path, server: FakeOpsGenie, path: str
) -> None:
    """The alert goes out about `window` after the last heartbeat with no other event to move
    time on, carrying that heartbeat; the next heartbeat closes it by its alias, and the log
    names the close by it. (It said `alert 2 delivered: `, nothing more: a close has no message.)"""
    ws = Workspace(tmp_path, server.url)
    (ws.rules / "rules.yaml").write_text(HEARTBEAT)
    config = yaml.safe_load(ws.config.read_text())
    config["opsgenie"]["alert_url"] = f"{server.url}{path}"
    ws.config.write_text(yaml.safe_dump(config))
    daemon = ws.start()
    ws.append({"kind": "heartbeat", "host": "w1", "seq": 1})
    assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=15), daemon.output()
    alert = creates(server)[0]
    assert path == alert.path
    payload = alert.json()
    VALIDATOR.validate(payload)
    assert (ALIAS, "no heartbeat from w1", "P2") == (payload["alias"], payload["message"], payload["priority"])
    assert '"seq": 1' in payload["description"]  # the heartbeat that armed it
    assert [] == closes(server)
    ws.append({"kind": "heartbeat", "host": "w1", "seq": 2})
    assert server.wait_for(lambda got: len(closes(server)) == 1, timeout=10), daemon.output()
    close = closes(server)[0]
    assert close_path(path, ALIAS) == close.path
    assert {"source": "rulesd", "note": "resolved: worker-heartbeat-missing"} == close.json()
    assert close.headers["Authorization"].startswith("GenieKey ")
    assert 0 == daemon.terminate()
    # The log names what was delivered: the close by its alias (it has no message).
    assert f"alert 2 delivered: close {ALIAS}\n" in daemon.stderr()


def test_a_host_that_flaps_then_dies_within_the_throttle_is_paged_when_it_ends(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """w1 (2 s window, 6 s throttle) falls silent and is paged, beats again (its alert closed),
    then dies for good within the throttle; the daemon is restarted meanwhile. w1 is paged again
    once, when the throttle ends, about 6 s after the first page, under the same alias; the
    heartbeat that comes then closes it. (The silence the throttle held back was never paged:
    w1 stayed dead with its alert closed and nobody paged.)"""
    ws = Workspace(tmp_path, server.url)
    (ws.rules / "rules.yaml").write_text(HEARTBEAT + "throttle: 6s\n")
    daemon = ws.start()
    ws.append({"kind": "heartbeat", "host": "w1"})
    assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=15), daemon.output()
    first = time.monotonic()
    ws.append({"kind": "heartbeat", "host": "w1"})
    assert server.wait_for(lambda got: len(closes(server)) == 1, timeout=10), daemon.output()
    time.sleep(2.5)  # silent again: held back by the throttle
    assert 0 == daemon.terminate()
    daemon = ws.start()
    assert server.wait_for(lambda got: len(creates(server)) == 2, timeout=15), ws.all_output()
    assert time.monotonic() - first > 4.5, "paged again before the throttle ended"
    assert [ALIAS, ALIAS] == [r.json()["alias"] for r in creates(server)]
    ws.append({"kind": "heartbeat", "host": "w1"})
    assert server.wait_for(lambda got: len(closes(server)) == 2, timeout=10), daemon.output()
    time.sleep(1.0)
    assert 0 == daemon.terminate()
    assert (2, 2) == (len(creates(server)), len(closes(server)))


JOB_HUNG = """
name: job-never-finished
sequence: {group_by: [job], steps: [match: {kind: started}, absent: {match: {kind: finished}, for: 2s}]}
throttle: 6s
"""


def test_a_job_that_hangs_again_within_the_throttle_is_paged_when_it_ends(tmp_path: Path, server: FakeOpsGenie) -> None:
    """j1 starts and never finishes: paged 2 s later. It starts again and hangs again, its
    absent step due within the 6 s throttle; the daemon is restarted meanwhile. j1 is paged
    again once, when the throttle ends, about 6 s after the first page, with the start that
    armed it. (The page the throttle held back was dropped: the second hang was never paged.)"""
    ws = Workspace(tmp_path, server.url)
    (ws.rules / "rules.yaml").write_text(JOB_HUNG)
    daemon = ws.start()
    ws.append({"kind": "started", "job": "j1", "seq": 1})
    assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=15), daemon.output()
    first = time.monotonic()
    ws.append({"kind": "started", "job": "j1", "seq": 2})
    time.sleep(2.5)  # its absent step is due: held back by the throttle
    assert 0 == daemon.terminate()
    daemon = ws.start()
    assert server.wait_for(lambda got: len(creates(server)) == 2, timeout=15), ws.all_output()
    assert time.monotonic() - first > 4.5, "paged again before the throttle ended"
    assert '"seq": 2' in creates(server)[1].json()["description"]
    time.sleep(1.0)
    assert 0 == daemon.terminate()
    assert 2 == len(creates(server))


def test_an_expected_host_an_edit_no_longer_expects_has_its_alert_closed(tmp_path: Path, server: FakeOpsGenie) -> None:
    """w1 and w9 are expected and never heard from: both are paged. `expect` is edited to w1
    alone (w9 was a typo) and reloaded by SIGHUP: w9's alert is closed with the note that the
    rule changed; w1's stays open. (w9's alert stayed open for good: no w9 heartbeat would ever
    come to close it.)"""
    ws = Workspace(tmp_path, server.url)
    expecting = HEARTBEAT.replace("group_by: [host]", "group_by: [host], expect: [{host: w1}, {host: w9}]")
    (ws.rules / "rules.yaml").write_text(expecting)
    daemon = ws.start()
    assert server.wait_for(lambda got: len(creates(server)) == 2, timeout=15), daemon.output()
    (ws.rules / "rules.yaml").write_text(expecting.replace(", {host: w9}", ""))
    daemon.proc.send_signal(signal.SIGHUP)
    w9 = 'rulesd: worker-heartbeat-missing: {"host":"w9"}'
    closed_once(server, daemon, w9, "resolved: worker-heartbeat-missing (rule changed)", created=2)


def test_an_expected_host_no_longer_expected_is_let_go_of_even_if_its_match_lets_it_come(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """As above, with a match that w9's events could pass (host starting with w): w9's alert is
    closed at the reload and w9 is no longer watched, so a w9 event that comes later closes
    nothing again; w9 is watched from it as any host newly seen, paged once silent. (w9 was kept
    as open after its close: its event closed the alert a second time.)"""
    ws = Workspace(tmp_path, server.url)
    expecting = HEARTBEAT.replace("{kind: heartbeat}", "{host: {startswith: w}}").replace(
        "group_by: [host]", "group_by: [host], expect: [{host: w1}, {host: w9}]"
    )
    (ws.rules / "rules.yaml").write_text(expecting)
    daemon = ws.start()
    assert server.wait_for(lambda got: len(creates(server)) == 2, timeout=15), daemon.output()
    (ws.rules / "rules.yaml").write_text(expecting.replace(", {host: w9}", ""))
    daemon.proc.send_signal(signal.SIGHUP)
    assert server.wait_for(lambda got: len(closes(server)) == 1, timeout=10), daemon.output()
    w9 = 'rulesd: worker-heartbeat-missing: {"host":"w9"}'
    assert close_path("/v2/alerts", w9) == closes(server)[0].path
    ws.append({"kind": "heartbeat", "host": "w9"})
    assert server.wait_for(lambda got: len(creates(server)) == 3, timeout=15), daemon.output()
    assert w9 == creates(server)[2].json()["alias"]
    time.sleep(0.5)
    assert 0 == daemon.terminate()
    assert [close_path("/v2/alerts", w9)] == [r.path for r in closes(server)]


def test_a_close_that_finds_no_alert_counts_as_done(tmp_path: Path) -> None:
    """OpsGenie answers 404 when the alert was closed or deleted already: nothing is retried or
    dead-lettered, and the outbox is empty."""

    def answer(request: Received) -> Reply:
        return Reply(404, body=b'{"message":"Alert not found"}') if "/close" in request.path else Reply()

    with FakeOpsGenie(answer) as server:
        ws = Workspace(tmp_path, server.url)
        (ws.rules / "rules.yaml").write_text(HEARTBEAT)
        daemon = ws.start()
        ws.append({"kind": "heartbeat", "host": "w1", "seq": 1})
        assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=15), daemon.output()
        ws.append({"kind": "heartbeat", "host": "w1", "seq": 2})
        assert server.wait_for(lambda got: len(closes(server)) == 1, timeout=10), daemon.output()
        assert wait_until(lambda: "delivered" in daemon.stderr() and "alert 2 " in daemon.stderr())
        assert 0 == daemon.terminate()
        assert 1 == len(closes(server)), "a 404 is not retried"
        assert "dead-lettered" not in daemon.output()


def test_a_close_after_its_alert_was_dead_lettered_is_requeued_with_it(tmp_path: Path) -> None:
    """OpsGenie refuses the create (422: dead-lettered); the resolve's close goes out (404) and
    is kept among the dead letters after it; `outbox retry-dead`, once OpsGenie takes the alert,
    sends the create and then its close: the alert it opens is closed, not left open for ever."""
    refusing = [True]

    def answer(request: Received) -> Reply:
        if "/close" in request.path:
            return Reply(404, body=b'{"message":"Alert not found"}')
        return Reply(422, body=b'{"message":"rejected"}') if refusing[0] else Reply()

    with FakeOpsGenie(answer) as server:
        ws = Workspace(tmp_path, server.url)
        (ws.rules / "rules.yaml").write_text(ERRORS.replace("after: 1h", "after: 1s"))
        daemon = ws.start()
        ws.append({"level": "error", "host": "a"})
        assert server.wait_for(lambda got: len(closes(server)) == 1, timeout=15), daemon.output()
        listed = lambda: rulesd_cli("outbox", "list", "--config", str(ws.config), cwd=tmp_path).stdout  # noqa: E731
        assert wait_until(lambda: "delivered, and kept" in listed(), timeout=10), listed()
        refusing[0] = False
        requeued = rulesd_cli("outbox", "retry-dead", "--config", str(ws.config), cwd=tmp_path)
        assert "requeued 2" in requeued.stdout, requeued.stdout
        assert server.wait_for(lambda got: len(closes(server)) == 2, timeout=15), daemon.output()
        time.sleep(0.5)
        assert 0 == daemon.terminate()
    alias = 'rulesd: errors: {"host":"a"}'
    sent = [("close", r.path) if "/close" in r.path else ("create", r.json()["alias"]) for r in server.requests]
    path = close_path("/v2/alerts", alias)
    assert [("create", alias), ("close", path), ("create", alias), ("close", path)] == sent


def state_users(ws: Workspace) -> list[str]:
    """The users whose groups the saved state holds (read beside the running daemon)."""

    with sqlite3.connect(ws.root / "state" / "state.sqlite") as db:
        return [
            json.loads(json.loads(g)[0]) for (g,) in db.execute("SELECT grp FROM engine_groups WHERE kind = 'window'")
        ]


def test_the_state_limit_forgets_the_stalest_groups_and_says_so_once(tmp_path: Path, server: FakeOpsGenie) -> None:
    """With `limits.groups: 3`, a flood of groups keeps three; evictions are counted per rule
    and warned about once."""
    ws = Workspace(tmp_path, server.url, limits={"groups": 3}, metrics={"listen": "127.0.0.1:0"})
    (ws.rules / "rules.yaml").write_text(
        "name: per-user\nmatch: {kind: login}\nthreshold: {count: 99, window: 1h, group_by: [user]}\n"
    )
    daemon = ws.start()
    ws.append(*({"kind": "login", "user": f"u{i}"} for i in range(5000)))
    assert wait_until(lambda: "state limit reached" in daemon.stderr(), timeout=20), daemon.output()
    port = next(
        int(line.rsplit(":", 1)[1].split("/")[0]) for line in daemon.stderr().splitlines() if "metrics on http" in line
    )

    def scrape() -> str:
        return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text

    assert wait_until(lambda: "rulesd_state_groups 3.0" in scrape(), timeout=20), scrape()
    evicted = next(
        float(line.split()[-1])
        for line in scrape().splitlines()
        if line.startswith('rulesd_state_groups_evicted_total{rule="per-user"}')
    )
    assert 4997 == evicted  # all but three went: the last three seen
    assert {"u4997", "u4998", "u4999"} == set(state_users(ws))
    assert 1 == daemon.stderr().count("state limit reached")
    assert 0 == daemon.terminate()


ERRORS = """
name: errors
match: {level: error}
threshold: {count: 1, window: 1m, group_by: [host]}
resolve: {after: 1h}
"""
LIMIT_NOTE = "resolved: errors (state limit)"


def errors_at(start: float) -> list[dict[str, object]]:
    """Errors of hosts h1, h2, h3, ten seconds apart: three alerts open, h1's the stalest."""
    return [{"level": "error", "host": f"h{i}", "t": start - 40 + 10 * i} for i in (1, 2, 3)]


def test_an_open_alert_the_state_limit_forgets_is_closed_once_and_said(tmp_path: Path, server: FakeOpsGenie) -> None:
    """With `limits.groups_per_rule: 2` and three open alerts, the idle sweep forgets the
    stalest open group and closes its alert, with a note saying why; warned about and counted;
    a restart closes nothing again."""
    ws = Workspace(
        tmp_path, server.url, limits={"groups_per_rule": 2}, time_field="t", metrics={"listen": "127.0.0.1:0"}
    )
    (ws.rules / "rules.yaml").write_text(ERRORS)
    daemon = ws.start()
    ws.append(*errors_at(time.time()))
    assert server.wait_for(lambda got: len(creates(server)) == 3 and len(closes(server)) == 1, timeout=20), (
        daemon.output()
    )
    close = closes(server)[0]
    assert close_path("/v2/alerts", 'rulesd: errors: {"host":"h1"}') == close.path
    assert {"source": "rulesd", "note": LIMIT_NOTE} == close.json()
    assert wait_until(lambda: "1 alert(s) closed so far (rules: errors)" in daemon.stderr()), daemon.stderr()
    metrics = requests.get(daemon.metrics_url(), timeout=5).text
    assert 'rulesd_state_alerts_closed_total{rule="errors"} 1.0' in metrics, metrics
    assert 0 == daemon.terminate()
    again = ws.start()
    time.sleep(1.5)
    assert 0 == again.terminate()
    assert (3, 1) == (len(creates(server)), len(closes(server)))


def test_the_idle_sweep_commits_the_closes_of_the_limits_with_the_state(tmp_path: Path) -> None:
    """The close an idle sweep makes is in the outbox in the same commit as the state that no
    longer holds its group (a crash right after loses neither)."""
    wall = [1_800_000_000.0]
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in errors_at(wall[0])))
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(ERRORS)
    (tmp_path / "rulesd.yaml").write_text(
        f"rules: [rules]\nsource: {{type: file, path: {events}, start_at: beginning}}\ntime_field: t\n"
        "state_dir: state\nlimits: {groups_per_rule: 2}\n"
        "opsgenie: {alert_url: 'http://127.0.0.1:9/v2/alerts', api_key: e2e-secret-key-0123456789}\n"
    )
    with daemon_parts(tmp_path / "rulesd.yaml", lambda: wall[0]) as parts:
        daemon = Daemon(parts)
        daemon._process([(label, s, runs) for label, s in daemon.sources.items() if (runs := s.read(10))])
        wall[0] += 10
        daemon._tick()
        queued = [(a.action, a.target or a.payload["message"]) for a in parts.store.alerts()]
        assert [("close", 'rulesd: errors: {"host":"h1"}')] == queued[3:]
        saved = parts.store.load_engine_state() or {}
        assert [['"h2"'], ['"h3"']] == sorted(key for key, _ in saved["open"]["errors"])


def test_a_silent_host_is_not_forgotten_for_the_limits(tmp_path: Path, server: FakeOpsGenie) -> None:
    """With `limits.groups_per_rule: 2`, a silent host (the stalest group of its absence) is kept
    while hosts that still beat are forgotten: its heartbeat returning closes its alert."""
    ws = Workspace(tmp_path, server.url, limits={"groups_per_rule": 2})
    (ws.rules / "rules.yaml").write_text(HEARTBEAT)
    daemon = ws.start()
    ws.append({"kind": "heartbeat", "host": "w1"})
    assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=15), daemon.output()

    def others_beat() -> bool:
        ws.append({"kind": "heartbeat", "host": "w2"}, {"kind": "heartbeat", "host": "w3"})
        return "state limit reached" in daemon.stderr()

    assert wait_until(others_beat, timeout=20, interval=0.3), daemon.output()
    ws.append({"kind": "heartbeat", "host": "w1"})
    assert server.wait_for(lambda got: len(closes(server)) == 1, timeout=10), daemon.output()
    assert close_path("/v2/alerts", ALIAS) == closes(server)[0].path
    assert {"source": "rulesd", "note": "resolved: worker-heartbeat-missing"} == closes(server)[0].json()
    assert 0 == daemon.terminate()


NEW_AGENT = """
name: new-agent
match: {event: login}
new_value: {fields: [agent], group_by: [host]}
"""


def test_a_new_value_group_over_values_per_group_forgets_its_stalest_values_said_once(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """With `limits.values_per_group: 2`, h1's third agent makes the daemon forget the one seen
    longest ago (a): warned about once for the rule, counted as evicted, saved trimmed, and a
    seen again is new (paged again). (A group's values grew without bound, saved whole.)"""
    ws = Workspace(
        tmp_path, server.url, limits={"values_per_group": 2}, time_field="t", metrics={"listen": "127.0.0.1:0"}
    )
    (ws.rules / "rules.yaml").write_text(NEW_AGENT)
    daemon = ws.start()
    start = time.time()
    ws.append(*[{"event": "login", "host": "h1", "agent": a, "t": start + 1 + i} for i, a in enumerate("abc")])
    said = "rule 'new-agent': a group knows limits.values_per_group (2) values"
    assert wait_until(lambda: said in daemon.stderr(), timeout=20), daemon.output()
    metrics = requests.get(daemon.metrics_url(), timeout=5).text
    assert 'rulesd_state_groups_evicted_total{rule="new-agent"} 1.0' in metrics, metrics
    assert "state limit reached" not in daemon.stderr()  # (that warning names the group limits)
    ws.append(*[{"event": "login", "host": "h1", "agent": a, "t": start + 10 + i} for i, a in enumerate("bad")])
    assert server.wait_for(lambda got: len(creates(server)) == 5, timeout=15), daemon.output()
    agents = [json.loads(r.json()["description"].removeprefix("Event:\n"))["agent"] for r in creates(server)]
    assert ["a", "b", "c", "a", "d"] == agents  # b seen again is known, a forgotten is new
    evicted = 'rulesd_state_groups_evicted_total{rule="new-agent"} 3.0'  # b, c, a, d: c and b go
    assert wait_until(lambda: evicted in requests.get(daemon.metrics_url(), timeout=5).text, timeout=20)
    assert 0 == daemon.terminate()
    assert 1 == daemon.stderr().count(said), daemon.stderr()
    shown = rulesd_cli("state", "--config", str(ws.config)).stdout
    assert 'host="h1": 2 value(s) known: "d" (seen ' in shown, shown
    assert "; at limits.values_per_group (2): the values seen longest ago are forgotten" in shown, shown


def test_a_restart_keeps_the_clock_of_a_quiet_source_on_event_time(tmp_path: Path) -> None:
    """While no event comes, the clock moves on with the wall clock from the latest event time
    seen, across a restart too: events an hour behind the wall clock do not make every timer due
    at the restart (the 10-minute absence fired 2 minutes after its heartbeat)."""
    start = 1_800_000_000.0
    wall = [start]
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"kind": "heartbeat", "host": "w1", "t": start - 3600}) + "\n")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(HEARTBEAT.replace("window: 2s", "window: 10m"))
    (tmp_path / "rulesd.yaml").write_text(
        f"rules: [rules]\nsource: {{type: file, path: {events}, start_at: beginning}}\ntime_field: t\n"
        "state_dir: state\nopsgenie: {alert_url: 'http://127.0.0.1:9/v2/alerts', api_key: e2e-secret-key-0123456789}\n"
    )
    config = load_config(str(tmp_path / "rulesd.yaml"))

    def run(steps: Callable[[Daemon], None]) -> tuple[float, int]:
        parts = build_parts(config, load_ruleset(config.rules), environ={}, clock=lambda: wall[0])
        try:
            steps(Daemon(parts))
            return parts.engine.now - start, parts.store.depth()[0]  # the clock, alerts queued
        finally:
            parts.source.close()
            parts.store.close()
            assert parts.lock is not None
            parts.lock.release()

    def read_then_idle(daemon: Daemon) -> None:
        daemon._process([(label, s, runs) for label, s in daemon.sources.items() if (runs := s.read(10))])
        wall[0] += 60
        daemon._tick()

    assert (-3540, 0) == run(read_then_idle)  # the heartbeat's time, one minute on
    wall[0] += 60
    assert (-3480, 0) == run(Daemon._tick)  # restarted a minute later: still 8 minutes to go


def test_a_saved_clock_without_its_wall_time_is_not_moved_on() -> None:
    """Only a clock saved with the wall time it was saved at can move on from where it was; one
    without (a state holding no clock yet) leaves the clock to the first event, as a first start."""
    from rulesd.daemon.build import saved_clock

    assert saved_clock({"clock": 100.0, "clock_saved": 1_700_000_000.0}) == (100.0, 1_700_000_000.0)
    assert saved_clock({"clock": 100.0, "clock_saved": None}) == (float("-inf"), 0.0)
    assert saved_clock({"clock": 100.0}) == (float("-inf"), 0.0)
    assert saved_clock(None) == (float("-inf"), 0.0)


TOGETHER = """
rules:
  - {name: errors-a, match: {level: error}, threshold: {count: 1, window: 1m, group_by: [host]}, resolve: {after: 1s}}
  - {name: errors-b, match: {level: error}, threshold: {count: 1, window: 1m, group_by: [host]}, resolve: {after: 5s}}
"""
SHARED = 'rulesd: errors-a, errors-b: {"host":"a"}'


def open_groups(ws: Workspace) -> list[tuple[str, dict[str, object]]]:
    """The open groups the saved state holds: (rule, state)."""
    with sqlite3.connect(ws.root / "state" / "state.sqlite") as db:
        return [
            (rule, json.loads(data))
            for rule, data in db.execute("SELECT rule, data FROM engine_groups WHERE kind = 'open'")
        ]


@pytest.mark.parametrize("host", [".", ".."])
def test_an_alias_rendered_as_a_dot_segment_goes_out_as_the_default_alias_and_closes(
    tmp_path: Path, server: FakeOpsGenie, host: str
) -> None:
    """An alias template that renders to `.` or `..` (`alias: '{host}'`): the close named it as
    a path segment, `/v2/alerts/../close`, which an HTTP stack takes for `/v2/close`; its 404
    counted as done, so the alert stayed open for good. Such an alias is no alias (as an empty
    one): the alert goes out under the default alias, and is closed by it."""
    ws = Workspace(tmp_path, server.url)
    (ws.rules / "rules.yaml").write_text(HEARTBEAT.replace("alert: {", "alert: {alias: '{host}', "))
    daemon = ws.start()
    ws.append({"kind": "heartbeat", "host": host, "seq": 1})
    assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=15), daemon.output()
    alias = f'rulesd: worker-heartbeat-missing: {{"host":"{host}"}}'
    assert alias == creates(server)[0].json()["alias"]
    ws.append({"kind": "heartbeat", "host": host, "seq": 2})
    closed_once(server, daemon, alias, "resolved: worker-heartbeat-missing")


def test_an_alert_two_rules_fired_together_is_closed_once_when_both_recovered(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """errors-a (after 1s) and errors-b (after 5s) fire on one event: one alert. errors-a
    recovering closes nothing while errors-b holds it (it was closed then, and errors-b's close
    found nothing); across a restart, errors-b recovering closes it once, naming both."""
    ws = Workspace(tmp_path, server.url)
    (ws.rules / "rules.yaml").write_text(TOGETHER)
    daemon = ws.start()
    ws.append({"level": "error", "host": "a"})
    assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=15), daemon.output()
    assert SHARED == creates(server)[0].json()["alias"]
    assert wait_until(lambda: [r for r, _ in open_groups(ws)] == ["errors-b"], timeout=10), daemon.output()
    time.sleep(0.5)
    assert [] == closes(server), daemon.output()
    assert 0 == daemon.terminate()
    [(_, held)] = open_groups(ws)  # what errors-a let go of is noted, saved with the state
    assert {SHARED: [["errors-a", ""]]} == held["released"]
    again = ws.start()
    assert server.wait_for(lambda got: len(closes(server)) == 1, timeout=15), again.output()
    assert close_path("/v2/alerts", SHARED) == closes(server)[0].path
    assert {"source": "rulesd", "note": "resolved: errors-a, errors-b"} == closes(server)[0].json()
    assert wait_until(lambda: open_groups(ws) == [], timeout=10), again.output()
    assert 0 == again.terminate()
    third = ws.start()
    time.sleep(1.0)
    assert 0 == third.terminate()
    assert (1, 1) == (len(creates(server)), len(closes(server)))


def test_a_rule_a_reload_removes_leaves_open_the_alert_another_rule_holds(tmp_path: Path, server: FakeOpsGenie) -> None:
    """The rule file saved without errors-a while both hold their alert: no close at the
    reload; saved without errors-b too, the alert is closed once, the note naming both."""
    ws = Workspace(tmp_path, server.url)
    rules = TOGETHER.replace("after: 1s", "after: 1h").replace("after: 5s", "after: 1h")
    (ws.rules / "rules.yaml").write_text(rules)
    daemon = ws.start()
    ws.append({"level": "error", "host": "a"})
    assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=15), daemon.output()
    (ws.rules / "rules.yaml").write_text("rules:\n" + rules.splitlines()[3] + "\n")
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.wait_for_log("removed: 1 (errors-a)"), daemon.output()
    time.sleep(1.0)
    assert [] == closes(server), daemon.output()
    (ws.rules / "rules.yaml").write_text("name: other\nmatch: {kind: other}\n")
    daemon.proc.send_signal(signal.SIGHUP)
    closed_once(server, daemon, SHARED, "resolved: errors-a (rule removed), errors-b (rule removed)")


# -- open alerts at a reload ---------------------------------------------------------------------


def test_an_open_alert_whose_rule_a_reload_removes_is_closed_once(tmp_path: Path, server: FakeOpsGenie) -> None:
    """The rule file saved without the absence that paged (the file watch reloads): its alert
    is closed by its alias, the note saying why; a restart does not close it again."""
    ws = Workspace(tmp_path, server.url)
    (ws.rules / "rules.yaml").write_text(HEARTBEAT)
    daemon = ws.start()
    ws.append({"kind": "heartbeat", "host": "w1"})
    assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=15), daemon.output()
    (ws.rules / "rules.yaml").write_text("name: other\nmatch: {kind: other}\n")
    assert server.wait_for(lambda got: len(closes(server)) == 1, timeout=10), daemon.output()
    close = closes(server)[0]
    assert close_path("/v2/alerts", ALIAS) == close.path
    assert {"source": "rulesd", "note": "resolved: worker-heartbeat-missing (rule removed)"} == close.json()
    assert 0 == daemon.terminate()
    again = ws.start()
    ws.append({"kind": "other"})  # pages: the restarted daemon is at work by then
    assert server.wait_for(lambda got: len(creates(server)) == 2, timeout=10), again.output()
    time.sleep(1.0)
    assert 0 == again.terminate()
    assert 1 == len(closes(server))


def test_an_open_alert_of_an_edited_absence_closes_when_events_return(tmp_path: Path, server: FakeOpsGenie) -> None:
    """An absence edited (a longer window) while its alert is open keeps it (no close, no page
    again at SIGHUP's reload); the heartbeat's return closes it once."""
    ws = Workspace(tmp_path, server.url)
    (ws.rules / "rules.yaml").write_text(HEARTBEAT)
    daemon = ws.start()
    ws.append({"kind": "heartbeat", "host": "w1", "seq": 1})
    assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=15), daemon.output()
    (ws.rules / "rules.yaml").write_text(HEARTBEAT.replace("window: 2s", "window: 3s"))
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.wait_for_log("changed: 1 (worker-heartbeat-missing)"), daemon.output()
    time.sleep(4.0)  # past the new window: the silence is the one already paged
    assert (1, 0) == (len(creates(server)), len(closes(server)))
    ws.append({"kind": "heartbeat", "host": "w1", "seq": 2})
    assert server.wait_for(lambda got: len(closes(server)) == 1, timeout=10), daemon.output()
    assert close_path("/v2/alerts", ALIAS) == closes(server)[0].path
    assert {"source": "rulesd", "note": "resolved: worker-heartbeat-missing"} == closes(server)[0].json()
    assert 0 == daemon.terminate()
    assert (1, 1) == (len(creates(server)), len(closes(server)))


def test_an_absence_edited_to_no_longer_see_a_silent_host_closes_its_alert(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """w1 and w2 fall silent and are paged. The match is narrowed to w1 and the message edited,
    reloaded by SIGHUP: w2's alert is closed with the note that the rule changed (nothing the
    rule sees would close it); w1's stays open, not paged again, and its heartbeat closes it; a
    w2 heartbeat then closes nothing again. (w2's alert stayed open for good.)"""
    ws = Workspace(tmp_path, server.url)
    (ws.rules / "rules.yaml").write_text(HEARTBEAT)
    daemon = ws.start()
    ws.append({"kind": "heartbeat", "host": "w1"}, {"kind": "heartbeat", "host": "w2"})
    assert server.wait_for(lambda got: len(creates(server)) == 2, timeout=15), daemon.output()
    edited = HEARTBEAT.replace("{kind: heartbeat}", "{kind: heartbeat, host: w1}").replace("no heartbeat", "silent:")
    (ws.rules / "rules.yaml").write_text(edited)
    daemon.proc.send_signal(signal.SIGHUP)
    w2 = 'rulesd: worker-heartbeat-missing: {"host":"w2"}'
    assert server.wait_for(lambda got: len(closes(server)) == 1, timeout=10), daemon.output()
    assert close_path("/v2/alerts", w2) == closes(server)[0].path
    assert "resolved: worker-heartbeat-missing (rule changed)" == closes(server)[0].json()["note"]
    ws.append({"kind": "heartbeat", "host": "w2"}, {"kind": "heartbeat", "host": "w1"})
    assert server.wait_for(lambda got: len(closes(server)) == 2, timeout=10), daemon.output()
    assert close_path("/v2/alerts", ALIAS) == closes(server)[1].path
    time.sleep(1.0)
    assert 0 == daemon.terminate()
    assert (2, 2) == (len(creates(server)), len(closes(server)))


THROTTLED = """
rules:
  - {name: root-login, match: {kind: root}, throttle: 1h, alert: {priority: P3}}
  - name: brute-force
    match: {kind: failed}
    threshold: {count: 2, window: 1m, group_by: [host]}
    throttle: 1h
    alert: {priority: P3}
  - name: worker-silent
    match: {kind: heartbeat}
    absence: {window: 2s, group_by: [host]}
    throttle: 1h
    alert: {priority: P3, message: "no heartbeat from {host}"}
  - name: backup-hung
    sequence:
      group_by: [host]
      steps:
        - match: {kind: backup_started}
        - absent: {match: {kind: backup_finished}, for: 2s}
    throttle: 1h
    alert: {priority: P3}
"""


def test_an_edit_that_keeps_a_rule_s_groups_keeps_their_throttles(tmp_path: Path, server: FakeOpsGenie) -> None:
    """Each kind pages once and its throttle then holds it back: a match and a threshold, an
    absence whose host flaps (silent again after its alert closed) and a backup that hangs again.
    SIGHUP reloads them edited (another priority): the held silence and hang are not paged at
    the reload, nor the match and threshold again at their next events. (The edit dropped the
    throttles: four pages again, at once.)"""
    ws = Workspace(tmp_path, server.url)
    (ws.rules / "rules.yaml").write_text(THROTTLED)
    daemon = ws.start()
    h1 = {"host": "h1"}
    ws.append({"kind": "root"}, {"kind": "failed", **h1}, {"kind": "failed", **h1})
    ws.append({"kind": "heartbeat", **h1}, {"kind": "backup_started", **h1})
    assert server.wait_for(lambda got: len(creates(server)) == 4, timeout=15), daemon.output()
    ws.append({"kind": "heartbeat", **h1}, {"kind": "backup_started", **h1})
    assert server.wait_for(lambda got: len(closes(server)) == 1, timeout=10), daemon.output()
    time.sleep(3.0)  # silent and hung again, both held back by their throttles
    assert (4, 1) == (len(creates(server)), len(closes(server)))
    (ws.rules / "rules.yaml").write_text(THROTTLED.replace("P3", "P2"))
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.wait_for_log("changed: 4"), daemon.output()
    ws.append({"kind": "root"}, {"kind": "failed", **h1}, {"kind": "failed", **h1})
    time.sleep(2.0)
    assert 0 == daemon.terminate()
    assert (4, 1) == (len(creates(server)), len(closes(server))), [r.json().get("message") for r in creates(server)]


def test_an_open_group_of_a_rule_edited_to_resolve_no_more_is_closed_at_the_reload(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """A threshold rule's open alert (resolve after an hour) is closed at once by SIGHUP's
    reload when the edit takes `resolve` away: nothing else would close it."""
    ws = Workspace(tmp_path, server.url)
    rule = "name: errors\nmatch: {level: error}\nthreshold: {count: 1, window: 1m, group_by: [host]}\n"
    (ws.rules / "rules.yaml").write_text(rule + "resolve: {after: 1h}\n")
    daemon = ws.start()
    ws.append({"level": "error", "host": "a"})
    assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=15), daemon.output()
    (ws.rules / "rules.yaml").write_text(rule)
    daemon.proc.send_signal(signal.SIGHUP)
    assert server.wait_for(lambda got: len(closes(server)) == 1, timeout=10), daemon.output()
    assert close_path("/v2/alerts", 'rulesd: errors: {"host":"a"}') == closes(server)[0].path
    assert "resolved: errors (rule changed)" == closes(server)[0].json()["note"]
    time.sleep(1.0)
    assert 0 == daemon.terminate()
    assert (1, 1) == (len(creates(server)), len(closes(server)))


def test_the_closes_of_a_reload_go_with_the_next_batch_when_no_idle_moment_comes(tmp_path: Path) -> None:
    """Under load the loop goes from batch to batch: the closes a reload made are queued in the
    next batch's transaction, with the state that no longer holds them (a rule set without
    timers takes nothing from the engine while evaluating lines)."""
    wall = [1_800_000_000.0]
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"kind": "heartbeat", "host": "w1"}) + "\n")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(HEARTBEAT)
    (tmp_path / "rulesd.yaml").write_text(
        f"rules: [rules]\nsource: {{type: file, path: {events}, start_at: beginning}}\nstate_dir: state\n"
        "opsgenie: {alert_url: 'http://127.0.0.1:9/v2/alerts', api_key: e2e-secret-key-0123456789}\n"
    )
    with daemon_parts(tmp_path / "rulesd.yaml", lambda: wall[0]) as parts:
        daemon = Daemon(parts)

        def read() -> None:
            daemon._process([(label, s, runs) for label, s in daemon.sources.items() if (runs := s.read(10))])

        reload_between_batches(daemon, read, wall, tmp_path / "rules" / "r.yaml", events, "kind")
        queued = [(a.action, a.target or a.payload["message"]) for a in parts.store.alerts()]
        assert [("create", "no heartbeat from w1"), ("close", ALIAS)] == queued
        saved = parts.store.load_engine_state() or {}
        assert "worker-heartbeat-missing" not in saved.get("absence", {})


def test_an_open_alert_whose_rule_was_removed_while_stopped_is_closed_at_the_start(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """Rules deployed by a restart rather than a reload: the daemon started on rules without the
    absence whose alert is open closes it once."""
    ws = Workspace(tmp_path, server.url)
    (ws.rules / "rules.yaml").write_text(HEARTBEAT)
    daemon = ws.start()
    ws.append({"kind": "heartbeat", "host": "w1"})
    assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=15), daemon.output()
    assert 0 == daemon.terminate()
    (ws.rules / "rules.yaml").write_text("name: other\nmatch: {kind: other}\n")
    again = ws.start()
    closed_once(server, again, ALIAS, "resolved: worker-heartbeat-missing (rule removed)")


def expecting(*hosts: str) -> str:
    """A rule file: an absence expecting `hosts`, its rule at line 2."""
    expect = ", ".join(f"{{host: {h}}}" for h in hosts)
    absence = f"{{window: 5m, group_by: [host], expect: [{expect}]}}"
    return f"rules:\n  - name: beats\n    match: {{kind: heartbeat}}\n    absence: {absence}\n"


def test_an_expect_list_longer_than_the_groups_per_rule_is_warned_about(tmp_path: Path, server: FakeOpsGenie) -> None:
    """Expected groups are never forgotten: an absence expecting more groups than
    `limits.groups_per_rule` stays over its limit for good, each other group forgotten at once.
    Said at start and at each reload that keeps it (the rule, where, how many, the limit), and
    by `rulesd check --config`; nothing said it."""
    ws = Workspace(tmp_path, server.url, limits={"groups_per_rule": 2})
    rule_file = ws.rules / "rules.yaml"
    rule_file.write_text(expecting("a", "b", "c"))
    said = f"{rule_file}:2:5: rule 'beats' expects %d groups, more than limits.groups_per_rule (2)"
    daemon = ws.start()
    assert 1 == daemon.stderr().count(said % 3), daemon.stderr()
    rule_file.write_text(expecting("a", "b", "c", "d"))
    assert daemon.wait_for_log("reload ok"), daemon.stderr()
    assert 1 == daemon.stderr().count(said % 4), daemon.stderr()
    rule_file.write_text(expecting("a", "b"))  # within the limit: said no more
    assert wait_until(lambda: 2 == daemon.stderr().count("reload ok")), daemon.stderr()
    assert 2 == daemon.stderr().count("more than limits.groups_per_rule"), daemon.stderr()
    assert 0 == daemon.terminate()
    rule_file.write_text(expecting("a", "b", "c"))
    checked = rulesd_cli("check", "--config", str(ws.config))
    assert 0 == checked.returncode, checked
    assert (said % 3).replace(":2:5: ", ":2:5: warning: ") in checked.stdout, checked.stdout
    assert checked.stdout.endswith("0 error(s), 1 warning(s)\n"), checked.stdout
