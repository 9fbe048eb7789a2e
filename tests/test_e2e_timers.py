"""Timers through the real daemon and a loopback OpsGenie: an absence fires when its host has
been silent for its window, as the events' own times say, and not while its events still come
(late, in fits, from a source that lags); across reloads and restarts too."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from rulesd.daemon import Daemon
from tests.daemon_process import Workspace, daemon_parts, wait_until
from tests.fake_opsgenie import FakeOpsGenie, Received
from tests.run_cli import rulesd_cli
from tests.test_rule_kinds import BACKUP, backup

ABSENCE = """
name: heartbeat-missing
match: {kind: heartbeat}
absence: {window: 6s, group_by: [host]}
alert: {message: "no heartbeat from {host}"}
"""

# A backup that started, finished and was not verified within 6 s: BACKUP with a step between.
VERIFIED = BACKUP.replace("never-finished", "never-verified").replace(
    "    - absent: {match: {event: backup_finished}, for: 2h}",
    "    - match: {event: backup_finished}\n    - absent: {match: {event: backup_verified}, for: 6s}",
)


def creates(server: FakeOpsGenie) -> list[Received]:
    return [r for r in server.requests if r.path.endswith("/alerts")]


def watched(ws: Workspace, kind: str = "absence") -> list[str]:
    """The groups of `kind` (absence, sequence) the daemon's saved state holds."""
    with contextlib.closing(sqlite3.connect(f"file:{ws.root / 'state' / 'state.sqlite'}?mode=ro", uri=True)) as db:
        return [grp for (grp,) in db.execute("SELECT grp FROM engine_groups WHERE kind = ?", (kind,))]


def last_seen(ws: Workspace, host: str) -> float | None:
    """When the saved state last saw `host`, an absence's group grouped by host, if it holds it."""
    group = json.dumps([json.dumps(host)])
    with contextlib.closing(sqlite3.connect(f"file:{ws.root / 'state' / 'state.sqlite'}?mode=ro", uri=True)) as db:
        found = db.execute("SELECT data FROM engine_groups WHERE kind = 'absence' AND grp = ?", (group,)).fetchone()
    return None if found is None else float(json.loads(found[0])["last"])


def paged(server: FakeOpsGenie) -> list[str]:
    """The messages of the alerts `server` received, in order."""
    return [r.json()["message"] for r in creates(server)]


def test_an_absence_does_not_fire_while_late_heartbeats_still_come_in_fits(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """Heartbeats of h1 are written every 2 s, each 2 s later than the one before (the log
    shipping lags more and more: 0, 2, 4, 6, 8 s). Between fits the clock moves on with the wall
    clock, but from each fit's heartbeat as late as it came: no page while they come (the clock
    kept the lead the idle moments gave it over the late heartbeats, and h1's 6 s absence paged
    2 s after the heartbeat of a 6 s lag came). Once they stop, it pages about 6 s after the last
    one was read."""
    ws = Workspace(tmp_path, server.url, time_field="t")
    (ws.rules / "rules.yaml").write_text(ABSENCE)
    daemon = ws.start()
    for lag in (0, 2, 4, 6, 8):
        ws.append({"kind": "heartbeat", "host": "h1", "t": time.time() - lag})
        time.sleep(2)
        assert [] == creates(server), f"paged while h1's heartbeats still come (lag {lag} s): {daemon.output()}"
    last = time.monotonic() - 2
    assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=15), daemon.output()
    assert time.monotonic() - last > 5, "paged before h1 had been silent for 6 s"
    assert "no heartbeat from h1" == creates(server)[0].json()["message"]
    assert 0 == daemon.terminate()


def test_a_restart_runs_the_clock_on_as_late_as_the_last_heartbeats_came(tmp_path: Path) -> None:
    """The daemon's loop turned by hand on a wall clock the test moves: h1's heartbeat at `start`,
    an idle moment of 6 s (the clock at start + 6), then h1's heartbeat of start + 1, read at
    start + 6 (its shipping lags 5 s more). A restart 2 s later runs the clock on from that
    heartbeat as late as it came, as the daemon before it would have: h1's 10 s absence has not
    fired 9 s after that heartbeat was read, and fires after 10. (The clock was saved with the
    wall time of the commit, so it ran on from start + 6 at start + 6 again, and the absence fired
    9 s after the heartbeat came.)"""
    start = time.time()
    wall = [start]
    events = tmp_path / "events.jsonl"
    events.touch()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(ABSENCE.replace("window: 6s", "window: 10s"))
    config = tmp_path / "rulesd.yaml"
    config.write_text(
        f"rules: [rules]\nsource: {{type: file, path: {events}, start_at: beginning}}\ntime_field: t\n"
        "state_dir: state\nopsgenie: {alert_url: 'http://127.0.0.1:9/v2/alerts', api_key: e2e-secret-key-0123456789}\n"
    )

    def heartbeat(at: float) -> None:
        with open(events, "a") as fh:
            fh.write(json.dumps({"kind": "heartbeat", "host": "h1", "t": at}) + "\n")

    def read(daemon: Daemon) -> None:
        daemon._process([(label, s, runs) for label, s in daemon.sources.items() if (runs := s.read(10))])

    def idle_until(daemon: Daemon, at: float) -> int:
        """The alerts queued once idle at wall time `at`."""
        wall[0] = at
        daemon._tick()
        return daemon.parts.store.depth()[0]

    with daemon_parts(config, lambda: wall[0]) as parts:
        daemon = Daemon(parts)
        heartbeat(start)
        read(daemon)
        assert 0 == idle_until(daemon, start + 6)
        assert start + 6 == parts.engine.now
        heartbeat(start + 1)
        read(daemon)
    with daemon_parts(config, lambda: wall[0]) as parts:
        daemon = Daemon(parts)
        assert 0 == idle_until(daemon, start + 8)
        assert start + 6 == parts.engine.now, "the clock as it was before the restart"
        assert 0 == idle_until(daemon, start + 15), "h1's heartbeat was read 9 s ago"
        assert 1 == idle_until(daemon, start + 16.5)


def paged_after_an_edit(
    tmp_path: Path,
    server: FakeOpsGenie,
    rules: tuple[str, str],
    kind: str,
    events: list[dict[str, Any]],
    later: tuple[dict[str, Any], ...] = (),
) -> tuple[float, list[str]]:
    """Start the daemon under the first of `rules` (one rule), give it `events` (dated now), wait
    until their groups of `kind` are saved, write the second, reload by SIGHUP and give it the
    `later` events (dated then): how long after the last events the first page came, and the
    pages received a second later."""
    ws = Workspace(tmp_path, server.url, time_field="t")
    (ws.rules / "rules.yaml").write_text(rules[0])
    daemon = ws.start()
    start = time.time()
    ws.append(*({**event, "t": start} for event in events))
    assert wait_until(lambda: len(events) == len(watched(ws, kind))), daemon.output()  # committed before the reload
    (ws.rules / "rules.yaml").write_text(rules[1])
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.wait_for_log("changed: 1 ("), daemon.output()
    if later:
        start = time.time()
        ws.append(*({**event, "t": start} for event in later))
    assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=15), daemon.output()
    after = time.time() - start
    time.sleep(1.0)
    assert 0 == daemon.terminate()
    return after, paged(server)


def test_an_edited_absence_keeps_watching_the_hosts_it_still_matches(tmp_path: Path, server: FakeOpsGenie) -> None:
    """h1 (prod) and h2 (staging) beat once; the absence's match is narrowed to prod and the rules
    reloaded by SIGHUP before either is due. h1, which the edited rule still matches, is paged for
    when its window has passed since its heartbeat; h2, which it no longer matches, is not. (An
    edited rule dropped every group but those with an open alert: h1 fell silent unpaged.)"""
    edited = ABSENCE.replace("{kind: heartbeat}", "{kind: heartbeat, env: prod}")
    beats = [{"kind": "heartbeat", "host": h, "env": env} for h, env in (("h1", "prod"), ("h2", "staging"))]
    after, pages = paged_after_an_edit(tmp_path, server, (ABSENCE, edited), "absence", beats)
    assert after > 5.5, "paged before h1 had been silent for 6 s"
    assert ["no heartbeat from h1"] == pages


def closes(server: FakeOpsGenie) -> list[tuple[str, str]]:
    """The aliases (decoded) and notes of the closes `server` received, in order."""
    return [(unquote(r.path.split("/")[-2]), r.json()["note"]) for r in server.requests if "/close?" in r.path]


def test_a_regrouped_absence_keeps_paging_for_the_hosts_it_watched(tmp_path: Path, server: FakeOpsGenie) -> None:
    """web falls silent and is paged for; db beats on. The absence is regrouped (group_by [host]
    to [host, dc]) by SIGHUP, and db stops beating at once: db is paged for 6 s after its last
    heartbeat, under its new group; web's alert stays open (not closed while web is still down)
    and is closed, by the alias it went out with, when web beats again. (The reload closed web's
    alert, `resolved: heartbeat-missing (rule changed)`, and forgot both hosts: nothing paged
    for db, and web, still down, was never paged again.)"""
    ws = Workspace(tmp_path, server.url, time_field="t")
    (ws.rules / "rules.yaml").write_text(ABSENCE)
    daemon = ws.start()
    ws.append(*({"kind": "heartbeat", "host": h, "dc": "x", "t": time.time()} for h in ("web", "db")))
    while not creates(server):
        time.sleep(1.0)
        last_db = time.time()
        ws.append({"kind": "heartbeat", "host": "db", "dc": "x", "t": last_db})
    assert ["no heartbeat from web"] == paged(server), daemon.output()
    assert wait_until(lambda: abs(last_db - (last_seen(ws, "db") or 0)) < 0.01), daemon.output()  # read before
    (ws.rules / "rules.yaml").write_text(ABSENCE.replace("[host]", "[host, dc]"))
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.wait_for_log("changed: 1 ("), daemon.output()
    assert server.wait_for(lambda got: len(creates(server)) == 2, timeout=15), daemon.output()
    assert time.time() - last_db > 5.5, "paged for db before it had been silent for 6 s"
    assert ["no heartbeat from web", "no heartbeat from db"] == paged(server)
    assert [] == closes(server), "web's alert closed while web is still down"
    ws.append({"kind": "heartbeat", "host": "web", "dc": "x", "t": time.time()})
    assert server.wait_for(lambda got: len(closes(server)) == 1, timeout=15), daemon.output()
    assert [('rulesd: heartbeat-missing: {"host":"web"}', "resolved: heartbeat-missing")] == closes(server)
    assert 0 == daemon.terminate()


def test_an_expected_group_is_watched_whatever_the_state_limits(tmp_path: Path, server: FakeOpsGenie) -> None:
    """With `limits.groups_per_rule: 2`, hosts h1-h3 beating every second put the absence over its
    limit: the groups forgotten are theirs (they are made again by their next heartbeat), not
    expected e1's, which nothing would make again. e1, never seen, is paged for 8 s after the
    start. (It was the stalest group, forgotten by the idle sweep 5 s after the start, and never
    paged.)"""
    ws = Workspace(tmp_path, server.url, time_field="t", limits={"groups_per_rule": 2})
    rules = ABSENCE.replace("window: 6s", "window: 8s").replace(
        "group_by: [host]", "group_by: [host], expect: [{host: e1}]"
    )
    (ws.rules / "rules.yaml").write_text(rules)
    started = time.monotonic()
    daemon = ws.start()
    while not creates(server) and time.monotonic() - started < 25:
        ws.append(*({"kind": "heartbeat", "host": h, "t": time.time()} for h in ("h1", "h2", "h3")))
        time.sleep(1.0)
    assert ["no heartbeat from e1"] == paged(server), daemon.output()
    assert time.monotonic() - started > 7.5, "paged before e1 had been watched for 8 s"
    assert "state limit reached" in daemon.output()
    assert 0 == daemon.terminate()


def test_a_restart_while_an_absence_is_armed_pages_once_when_it_is_due(tmp_path: Path, server: FakeOpsGenie) -> None:
    """h1 beats once; the daemon is stopped (SIGTERM) and started again before h1's absence is due:
    it pages once, when the window has passed since the heartbeat; started again (SIGTERM, then
    after SIGKILL), it does not page again."""
    ws = Workspace(tmp_path, server.url, time_field="t")
    (ws.rules / "rules.yaml").write_text(ABSENCE)
    daemon = ws.start()
    beat = time.time()
    ws.append({"kind": "heartbeat", "host": "h1", "t": beat})
    time.sleep(1.5)
    assert 0 == daemon.terminate()
    daemon = ws.start()
    assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=15), ws.all_output()
    assert time.time() - beat > 5.5, "paged before h1 had been silent for 6 s"
    assert 0 == daemon.terminate()
    daemon = ws.start()
    time.sleep(1.0)
    daemon.kill()
    daemon = ws.start()
    time.sleep(1.0)
    assert ["no heartbeat from h1"] == paged(server), ws.all_output()
    assert 0 == daemon.terminate()


def test_an_edited_sequence_still_pages_for_a_backup_that_started_before_the_edit(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """db1 (full) and db2 (incremental) start a backup; the rule is edited (full backups only, a
    longer `for`, a message) and reloaded by SIGHUP while both wait. db1, whose start the edited
    rule still matches, is paged for with the new message 7 s after its start; db2 is not. (An
    edited rule dropped every wait: db1's backup never finished and nobody was paged.)"""
    rule = BACKUP.replace("2h", "6s")
    edited = rule.replace("{event: backup_started}", "{event: backup_started, type: full}").replace("6s", "7s")
    edited += 'alert: {message: "backup on {host} never finished"}\n'
    starts = [{**backup("started", host=h), "type": t} for h, t in (("db1", "full"), ("db2", "incr"))]
    after, pages = paged_after_an_edit(tmp_path, server, (rule, edited), "sequence", starts)
    assert after > 6.5, "paged before the edited rule's 7 s had passed"
    assert ["backup on db1 never finished"] == pages


def test_a_regrouped_sequence_still_pages_for_a_backup_that_started_before_the_edit(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """db1 starts a backup; the rule is regrouped (group_by [host] to [host, dc]) and reloaded
    by SIGHUP while it waits. The backup never finishes: db1 is paged for 6 s after its start,
    under its new group. (An edited group_by dropped every wait, and nobody was paged.)"""
    rule = BACKUP.replace("2h", "6s")
    edited = rule.replace("[host]", "[host, dc]")
    after, pages = paged_after_an_edit(tmp_path, server, (rule, edited), "sequence", [{**backup("started"), "dc": "a"}])
    assert after > 5.5, "paged before 6 s had passed"
    assert 1 == len(pages)
    assert 'rulesd: backup-never-finished: {"host":"db1","dc":"a"}' == creates(server)[0].json()["alias"]


def test_an_edited_sequence_still_pages_for_a_chain_part_way_through_its_steps(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """db1 and db2 start a backup (the first of three steps: started, finished, then no
    verification for 6 s); the rule's `for` and message are edited and reloaded by SIGHUP; db1's
    backup then finishes. db1 is paged for with the new message 7 s after it finished; db2,
    whose backup never finished, is not. (An edit forgot every group part-way through its
    steps: db1's finish came to a rule that had forgotten its start, and nobody was paged.)"""
    rule = VERIFIED
    edited = rule.replace("6s", "7s") + 'alert: {message: "backup on {host} never verified"}\n'
    starts = [backup("started", host=h) for h in ("db1", "db2")]
    after, pages = paged_after_an_edit(tmp_path, server, (rule, edited), "sequence", starts, (backup("finished"),))
    assert after > 6.5, "paged before the edited rule's 7 s had passed"
    assert ["backup on db1 never verified"] == pages


def test_a_late_heartbeat_read_first_after_a_restart_does_not_end_the_silence(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """h1 beats once and is paged for when silent for 6 s; after an idle spell of 2 s more the
    daemon is stopped, a heartbeat of h1 logged late (dated 1 s after the first) is written
    meanwhile, and the daemon is started again. That heartbeat is the first line it reads:
    dated more than the window before the clock at the stop (8 s after the first heartbeat),
    which the restart resumes, it does not end the silence, as it would not have without the
    restart: h1's alert is neither closed nor sent again. (The clock started again from that
    line's time: h1's alert was closed and h1 paged for again 6 s later.)"""
    ws = Workspace(tmp_path, server.url, time_field="t")
    (ws.rules / "rules.yaml").write_text(ABSENCE)
    daemon = ws.start()
    beat = time.time()
    ws.append({"kind": "heartbeat", "host": "h1", "t": beat})
    assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=15), daemon.output()
    time.sleep(max(0.0, beat + 8 - time.time()))
    assert 0 == daemon.terminate()
    ws.append({"kind": "heartbeat", "host": "h1", "t": beat + 1})
    daemon = ws.start()
    time.sleep(8.0)
    assert ["/v2/alerts"] == [r.path for r in server.requests], ws.all_output()
    assert 0 == daemon.terminate()


def test_a_silence_held_until_a_throttle_end_that_rounds_down_is_paged(tmp_path: Path) -> None:
    """h1 (1m window, 2m throttle) is paged at 103.8 s, beats again (closed) and falls silent
    within the throttle: paged when it ends. Times near 0 (as near 2^31 s) round the throttle's
    end below 223.8 s; the timer set there found h1 still throttled and was set again at the
    same time, for good: `rulesd replay` hung, as a daemon's reader would."""
    (tmp_path / "rules.yaml").write_text(
        "rules:\n  - name: beats\n    match: {event: beat}\n    alert: {message: 'down {host}'}\n"
        "    throttle: 2m\n    absence: {window: 1m, group_by: [host]}\n"
    )
    start = 43.837110055302176  # (start + 60 + 120) - (start + 60) < 120
    assert start + 60 + 120 - (start + 60) < 120
    events = [(start, "beat"), (start + 70, "beat"), (start + 300, "other")]
    (tmp_path / "events.jsonl").write_text(
        "".join(json.dumps({"time": t, "event": e, "host": "h1"}) + "\n" for t, e in events)
    )
    result = rulesd_cli(
        "replay", "--time-field", "time", "--rules", "rules.yaml", "events.jsonl", cwd=tmp_path, timeout=30
    )
    assert 0 == result.returncode, result.stderr
    alias = '(alias: rulesd: beats: {"host":"h1"})'
    assert [
        f"line 1: P3 [beats] down h1  {alias}",
        f"line 2: close [beats] {alias}",
        f"line 2: P3 [beats] down h1  {alias}",
    ] == (result.stdout.splitlines()[:3])


def test_a_silence_a_restart_under_a_shorter_throttle_lets_out_is_throttled_from_its_page(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """h1 (5m window, 1h throttle; event times from T, a day ago) is paged at T+300, beats again
    (closed) and falls silent within the throttle. Stopped, the throttle made 30m, started again:
    the silence, whose throttle has ended, is paged at the start, and the 30m run from that page
    (the clock at the stop, T+3000 and the seconds since): h1's next silence, due at T+3400, is
    not paged by T+4400, and is by T+5000. (The timer was set again at the silence's old due
    time: paged dated T+2100, and the next silence paged at T+3900.) The marks' pages show where
    the daemon's clock is; each comes less than 15m after the one before, or its time would not
    be believed."""
    rules = (
        "rules:\n  - name: silent\n    match: {kind: heartbeat}\n    absence: {window: 5m, group_by: [host]}\n"
        "    throttle: 1h\n    alert: {message: 'no heartbeat from {host}'}\n"
        "  - {name: mark, match: {kind: mark}, alert: {message: 'mark {n}'}}\n"
    )
    ws = Workspace(tmp_path, server.url, time_field="t")
    (ws.rules / "rules.yaml").write_text(rules)
    start = time.time() - 86400.0
    beat = {"kind": "heartbeat", "host": "h1"}
    ws.append({**beat, "t": start}, {"kind": "mark", "n": 1, "t": start + 300})
    ws.append({**beat, "t": start + 400}, {"kind": "mark", "n": 2, "t": start + 3000})
    daemon = ws.start()
    assert server.wait_for(lambda got: len(creates(server)) == 3, timeout=15), ws.all_output()
    assert 0 == daemon.terminate()
    (ws.rules / "rules.yaml").write_text(rules.replace("throttle: 1h", "throttle: 30m"))
    daemon = ws.start()
    assert server.wait_for(lambda got: len(creates(server)) == 4, timeout=15), ws.all_output()
    ws.append({**beat, "t": start + 3100}, {"kind": "mark", "n": 3, "t": start + 3950})
    assert server.wait_for(lambda got: "mark 3" in paged(server), timeout=15), ws.all_output()
    ws.append({"kind": "mark", "n": 4, "t": start + 4400})
    assert server.wait_for(lambda got: "mark 4" in paged(server), timeout=15), ws.all_output()
    ws.append({"kind": "mark", "n": 5, "t": start + 5000})
    assert server.wait_for(lambda got: "mark 5" in paged(server), timeout=15), ws.all_output()
    silent = "no heartbeat from h1"
    assert [silent, "mark 1", "mark 2", silent, "mark 3", "mark 4", silent, "mark 5"] == paged(server)
    assert 0 == daemon.terminate()
