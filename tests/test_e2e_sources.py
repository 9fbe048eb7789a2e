"""End-to-end: the real `rulesd run` reading its sources as configured: regex and text
formats on journal messages, typed fields, time formats, several named sources with their
own positions, and a state database from a single unnamed source kept on upgrade."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.daemon_process import DaemonProcess, Workspace, page, wait_until
from tests.fake_journalctl import FakeJournal, entry
from tests.fake_opsgenie import FakeOpsGenie
from tests.run_cli import rulesd_cli
from tests.test_monitoring import samples, scrape

SSHD_PATTERNS = [
    r"Failed password for (?:invalid user )?(?P<user>\S+) from (?P<ip>\S+) port (?P<port>\d+)",
    r"Invalid user (?P<user>\S+) from (?P<ip>\S+) port (?P<port>\d+)",
]
SSH_BRUTE = """
name: ssh-brute
match: {unit: ssh.service, port: {gte: 1024}}
threshold: {count: 3, window: 10m, group_by: [ip]}
alert: {message: "brute force from {ip} ({source_name})", alias: "ssh-{ip}"}
"""
NGINX = r'(?P<ip>\S+) - \S+ \[(?P<time>[^]]+)\] "(?P<request>[^"]*)" (?P<status>\S+)'


def metrics_url(daemon: DaemonProcess) -> str:
    """The /metrics URL a daemon started with `metrics.listen: 127.0.0.1:0` logged."""
    found = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", daemon.stderr())
    assert found is not None, daemon.stderr()
    return found.group(1)


def metric(url: str, key: str) -> float | None:
    """One sample of the daemon's /metrics, by `name{labels}` with the labels sorted."""
    return samples(scrape(url)).get(key)


def messages(server: FakeOpsGenie) -> list[str]:
    """The messages of the alerts received, in order."""
    return [a["message"] for a in server.alerts()]


def test_journald_messages_are_parsed_by_the_source_pattern(tmp_path: Path, server: FakeOpsGenie) -> None:
    """Debian's sshd logs only to the journal: a regex on MESSAGE (a list of patterns, typed
    port, an ignore_pattern) makes a brute-force rule fire; the entry keeps its own fields;
    ignored and unmatched entries are counted apart."""
    fake = FakeJournal(tmp_path)
    fake.write(
        entry(1, "ssh.service", "Failed password for root from 203.0.113.9 port 50022 ssh2"),
        entry(2, "ssh.service", "Connection closed by 203.0.113.9 port 50022 [preauth]"),
        entry(3, "ssh.service", "Invalid user admin from 203.0.113.9 port 50100"),
        entry(4, "ssh.service", "Accepted publickey for alice from 192.0.2.1 port 40000 ssh2"),
        entry(5, "ssh.service", "Failed password for invalid user bob from 203.0.113.9 port 50200 ssh2"),
    )
    source = {
        "name": "sshd",
        "type": "journald",
        "units": ["ssh.service"],
        "start_at": "beginning",
        "format": "regex",
        "pattern": SSHD_PATTERNS,
        "ignore_pattern": "^Connection closed",
        "fields": {"port": "int"},
    }
    ws = Workspace(tmp_path, server.url, source=source, metrics={"listen": "127.0.0.1:0"})
    (ws.rules / "rules.yaml").write_text(SSH_BRUTE)
    daemon = ws.start(env=fake.env)
    url = metrics_url(daemon)
    assert server.wait_for(lambda r: len(r) >= 1)
    assert ["brute force from 203.0.113.9 (sshd)"] == messages(server)
    event = server.alerts()[0]["description"]
    assert '"unit": "ssh.service"' in event and '"port": 50200' in event and '"pid": 42' in event
    assert wait_until(lambda: metric(url, 'rulesd_lines_ignored_total{source="sshd:journalctl"}') == 1)
    assert 1 == metric(url, 'rulesd_events_invalid_total{source="sshd:journalctl"}')
    assert 3 == metric(url, 'rulesd_events_read_total{source="sshd:journalctl"}')
    assert 0 == daemon.terminate()
    assert "skipped: matches none of the 2 source patterns" in daemon.stderr()


def test_typed_fields_let_numeric_conditions_match_captures(tmp_path: Path, server: FakeOpsGenie) -> None:
    """`fields: {status: int}`: `gte: 500` fires on a captured 503; a value that does not
    convert is left out, counted, and warned about naming the source and the field."""
    source = {
        "type": "file",
        "path": "web.log",
        "start_at": "beginning",
        "format": "regex",
        "pattern": r"(?P<method>\S+) (?P<path>\S+) (?P<status>\S+)",
        "fields": {"status": "int"},
    }
    ws = Workspace(tmp_path, server.url, source=source, metrics={"listen": "127.0.0.1:0"})
    (ws.rules / "rules.yaml").write_text(
        "name: errors\nmatch: {status: {gte: 500}}\nalert: {message: '{path} {status}', alias: '{path}'}\n"
    )
    (tmp_path / "web.log").write_text("GET /a 503\nGET /b 200\nGET /c abc\nGET /d 500\n")
    daemon = ws.start()
    url = metrics_url(daemon)
    assert server.wait_for(lambda r: len(r) >= 2)
    assert ["/a 503", "/d 500"] == messages(server)
    assert wait_until(lambda: metric(url, 'rulesd_fields_unconverted_total{field="status",source="file"}') == 1)
    assert 0 == daemon.terminate()
    assert (
        "source file: 1 value(s) of field 'status' did not convert to int and were left out of the event "
        "(latest: 'abc')"
    ) in daemon.stderr()


def test_epoch_milliseconds_and_unreadable_times(tmp_path: Path, server: FakeOpsGenie) -> None:
    """`time_format: epoch_ms`: a burst within a second fires (read as seconds it would span
    minutes); a line whose time cannot be read is evaluated at arrival, counted and warned about."""
    source = {
        "type": "file",
        "path": "app.log",
        "start_at": "beginning",
        "format": "regex",
        "pattern": r"(?P<ts>\S+) (?P<what>\w+)",
        "time_field": "ts",
        "time_format": "epoch_ms",
    }
    ws = Workspace(tmp_path, server.url, source=source, metrics={"listen": "127.0.0.1:0"})
    (ws.rules / "rules.yaml").write_text(
        "name: burst\nmatch: {what: fail}\nthreshold: {count: 3, window: 1m}\nalert: {alias: 'burst-{ts}'}\n"
    )
    (tmp_path / "app.log").write_text(
        "1700000000000 fail\n1700000000100 fail\n1700000000200 fail\nsoon fail\n1700000000300 ok\n"
    )
    daemon = ws.start()
    url = metrics_url(daemon)
    assert server.wait_for(lambda r: len(r) >= 1)
    assert "burst-1700000000200" == server.alerts()[0]["alias"]
    assert wait_until(lambda: metric(url, 'rulesd_events_untimed_total{source="file"}') == 1)
    assert 0 == daemon.terminate()
    assert (
        "source file: 1 event(s) without a readable time in field 'ts' (time_format epoch_ms; "
        "latest unreadable: 'soon'): evaluated at their arrival time"
    ) in daemon.stderr()


BEAT_GONE = """
name: beat-gone
match: {kind: beat}
absence: {window: 5m, group_by: [host]}
alert: {alias: 'gone-{host}'}
"""


def beats_and_a_line_from_the_future(path: Path) -> None:
    """Heartbeats of two hosts, now, and one of a third host at a time far ahead (`1e308`, as a
    broken writer may put in epoch_ms, or a clock a year ahead): believed, it would move the
    clock so far that both hosts' absences fire at once."""
    now = time.time()
    events = [
        {"ts": now - 10, "kind": "beat", "host": "a"},
        {"ts": now - 5, "kind": "beat", "host": "b"},
        {"ts": 1e308, "kind": "beat", "host": "c"},
        {"ts": now + 3600 * 24 * 365, "kind": "beat", "host": "d"},
        {"ts": now, "kind": "beat", "host": "a"},
    ]
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


def test_an_event_time_far_ahead_is_not_believed_by_run(tmp_path: Path, server: FakeOpsGenie) -> None:
    """`rulesd run`: the events ahead are evaluated at their arrival time, counted as untimed and
    warned about; no absence fires."""
    ws = Workspace(tmp_path, server.url, time_field="ts", metrics={"listen": "127.0.0.1:0"})
    (ws.rules / "rules.yaml").write_text(BEAT_GONE)
    beats_and_a_line_from_the_future(ws.events)
    daemon = ws.start()
    url = metrics_url(daemon)
    assert wait_until(lambda: metric(url, 'rulesd_events_untimed_total{source="file"}') == 2)
    time.sleep(1.5)  # the clock moves on with the wall clock at least once a second
    assert 0 == daemon.terminate()
    assert [] == server.alerts()
    assert "stopped: 5 event(s)" in daemon.stderr()
    assert "latest more than 15m ahead of the clock: " in daemon.stderr()


def test_an_event_time_far_ahead_is_not_believed_by_replay(tmp_path: Path) -> None:
    """`rulesd replay`: the same events, evaluated at the latest event time before them, and reported."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(BEAT_GONE)
    beats_and_a_line_from_the_future(tmp_path / "events.jsonl")
    result = rulesd_cli("replay", "--rules", "rules", "--time-field", "ts", "events.jsonl", cwd=tmp_path)
    assert 0 == result.returncode, result.stderr
    assert "events: 5, invalid lines: 0, alerts: 0" == result.stdout.splitlines()[0]
    assert "2 event(s) without a readable time" in result.stdout
    assert "latest more than 15m ahead of the clock: " in result.stdout


def positions(ws: Workspace) -> dict[str, Any]:
    """The saved source positions of a workspace's state database, by key."""
    db = sqlite3.connect(ws.root / "state" / "state.sqlite")
    try:
        return dict(db.execute("SELECT source, data FROM positions").fetchall())
    finally:
        db.close()


def test_several_sources_each_read_their_own_way_and_resume_on_their_own(tmp_path: Path, server: FakeOpsGenie) -> None:
    """An nginx access log through a regex (typed status, its time_local by strptime) and a JSON
    application log in one daemon: every event carries `source_name`; after a restart each
    source resumes from its own saved position."""
    sources = [
        {
            "name": "nginx",
            "type": "file",
            "path": "access.log",
            "start_at": "beginning",
            "format": "regex",
            "pattern": NGINX,
            "fields": {"status": "int"},
            "time_field": "time",
            "time_format": "%d/%b/%Y:%H:%M:%S %z",
        },
        {"name": "app", "type": "file", "path": "events.jsonl", "start_at": "beginning"},
    ]
    ws = Workspace(tmp_path, server.url, source=None, sources=sources, time_field="ts")
    (ws.rules / "rules.yaml").write_text(
        "rules:\n"
        "  - name: nginx-5xx\n"
        "    match: {source_name: nginx, status: {gte: 500}}\n"
        "    threshold: {count: 2, window: 1m}\n"
        "    alert: {message: '5xx burst at {time}', alias: 'nginx-{time}'}\n"
        "  - name: app-page\n"
        "    match: {source_name: app, kind: page}\n"
        "    alert: {message: 'page {id}', alias: 'app-{id}'}\n"
    )
    access = tmp_path / "access.log"

    def hit(time: str, status: int) -> str:
        return f'203.0.113.9 - - [{time}] "GET / HTTP/1.1" {status} 12\n'

    # Ten minutes apart by their time_local, though read together: no burst.
    access.write_text(hit("10/Dec/2024:06:45:00 +0000", 503) + hit("10/Dec/2024:06:55:00 +0000", 503))
    ws.append({"kind": "page", "id": 1, "source_name": "forged"})
    daemon = ws.start()
    assert server.wait_for(lambda r: len(r) >= 1)
    with access.open("a") as fh:
        fh.write(hit("10/Dec/2024:06:55:30 +0000", 502))
    assert server.wait_for(lambda r: len(r) >= 2), daemon.output()
    assert ["page 1", "5xx burst at 10/Dec/2024:06:55:30 +0000"] == messages(server)
    assert '"source_name": "app"' in server.alerts()[0]["description"]
    assert 0 == daemon.terminate()
    saved = positions(ws)
    assert {f"nginx:{access}", f"app:{ws.events}"} == set(saved)
    with access.open("a") as fh:
        fh.write(hit("10/Dec/2024:07:30:00 +0000", 500) + hit("10/Dec/2024:07:30:10 +0000", 500))
    ws.append({"kind": "page", "id": 2})
    ws.start()
    assert server.wait_for(lambda r: len(r) >= 4)
    assert ["5xx burst at 10/Dec/2024:07:30:10 +0000", "page 2"] == sorted(messages(server)[2:])
    assert not server.wait_for(lambda r: len(r) > 4, timeout=1.0), messages(server)


def test_two_journald_sources_keep_their_own_cursors(tmp_path: Path, server: FakeOpsGenie) -> None:
    """Two journald sources (two units) resume each after its own last entry: neither takes
    the other's cursor, so nothing is lost or repeated."""
    fake = FakeJournal(tmp_path)
    fake.write(
        entry(1, "ssh.service", "ERROR a"),
        entry(2, "app.service", "ERROR b"),
        entry(3, "ssh.service", "fine"),
    )
    sources = [
        {"name": "sshd", "type": "journald", "units": ["ssh.service"], "start_at": "beginning"},
        {"name": "app", "type": "journald", "units": ["app.service"], "start_at": "beginning"},
    ]
    ws = Workspace(tmp_path, server.url, source=None, sources=sources)
    (ws.rules / "rules.yaml").write_text(
        "name: errors\nmatch: {message: {startswith: ERROR}}\n"
        "alert: {message: '{source_name}: {message}', alias: '{source_name}-{message}'}\n"
    )
    daemon = ws.start(env=fake.env)
    assert server.wait_for(lambda r: len(r) >= 2)
    assert wait_until(lambda: len(positions(ws)) == 2)  # both cursors committed
    assert 0 == daemon.terminate()
    assert {"sshd:journald", "app:journald"} == set(positions(ws))
    fake.write(entry(4, "app.service", "ERROR c"), entry(5, "ssh.service", "ERROR d"))
    ws.start(env=fake.env)
    assert server.wait_for(lambda r: len(r) >= 4)
    assert ["app: ERROR b", "app: ERROR c", "sshd: ERROR a", "sshd: ERROR d"] == sorted(messages(server))
    assert not server.wait_for(lambda r: len(r) > 4, timeout=1.0), messages(server)
    restarts = {tuple(a for a in run if a.startswith("--unit")): run for run in fake.runs()[2:]}
    assert f"--after-cursor={entry(3, '', '')['__CURSOR']}" in restarts[("--unit=ssh.service",)]
    assert f"--after-cursor={entry(2, '', '')['__CURSOR']}" in restarts[("--unit=app.service",)]


def test_a_state_database_of_a_single_unnamed_source_keeps_its_position_on_upgrade(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """A daemon that ran with `source:` (no name) is moved to `sources:` with a name: it goes
    on after the position saved before, so no old event alerts again."""
    ws = Workspace(tmp_path, server.url)
    ws.append({"kind": "page", "id": 1})
    daemon = ws.start()
    assert server.wait_for(lambda r: len(r) >= 1)
    assert 0 == daemon.terminate()
    assert {str(ws.events)} == set(positions(ws))
    config = yaml.safe_load(ws.config.read_text())
    config["sources"] = [{"name": "app", **config.pop("source")}]
    ws.config.write_text(yaml.safe_dump(config))
    ws.append({"kind": "page", "id": 2})
    ws.start()
    assert server.wait_for(lambda r: len(r) >= 2)
    assert not server.wait_for(lambda r: len(r) > 2, timeout=1.0)
    assert ["page 1", "page 2"] == messages(server)
    assert f"app:{ws.events}" in positions(ws)


def test_a_log_file_whose_name_is_not_utf8_is_read_and_its_alerts_sent(tmp_path: Path, server: FakeOpsGenie) -> None:
    """A glob matches a file whose name is not UTF-8 (`app-\\xff.jsonl`, written in a Latin-1
    locale): its name, holding a surrogate, went into the alert's "Event Source" and the saved
    position, which could not be encoded; every commit failed, the daemon stopped with a fatal
    error, and every restart read the line again and stopped: no page at all while the file
    was there. Now the name is written with that byte escaped, and reading resumes from it."""
    logs = tmp_path / "logs"
    logs.mkdir()
    source = {"type": "file", "path": str(logs / "*.jsonl"), "start_at": "beginning"}
    ws = Workspace(tmp_path, server.url, source=source)
    odd = os.path.join(os.fsencode(logs), b"app-\xff.jsonl")
    with open(odd, "ab") as fh:
        fh.write(b'{"kind": "page", "id": 1}\n')
    daemon = ws.start()
    assert server.wait_for(lambda r: len(r) >= 1), daemon.output()
    details = server.requests[0].json()["details"]
    assert details["Event Source"] == f"{logs}/app-\\xff.jsonl (offset 0)"
    assert 0 == daemon.terminate()
    with open(odd, "ab") as fh:
        fh.write(b'{"kind": "page", "id": 2}\n')
    again = ws.start()
    assert server.wait_for(lambda r: len(r) >= 2), again.output()
    time.sleep(1.0)
    assert 0 == again.terminate()
    assert ["page-1", "page-2"] == [r.json()["alias"] for r in server.requests]
    assert "fatal error" not in daemon.output() + again.output()


def pager(server: FakeOpsGenie, output: Callable[[], str]) -> Callable[[Path, int], None]:
    """A function that appends `page(i)` to a file and waits for its alert (failing with
    `output()`)."""
    sent = 0

    def page_in(path: Path, i: int) -> None:
        nonlocal sent
        with path.open("a") as fh:
            fh.write(json.dumps(page(i)) + "\n")
        sent += 1
        assert server.wait_for(lambda r: len(r) >= sent), output()

    return page_in


def glob_positions_follow_the_files(ws: Workspace, server: FakeOpsGenie, saved: Callable[[], set[str]]) -> None:
    """Run `ws` (its source: the glob `logs/*.jsonl`) through files that come and go, one page
    each, and check with `saved` (the position keys in the state) that the state keeps
    positions for the files there only: a glob of per-job or per-container files must not
    leave one behind per file for ever (found by a soak: the positions grew by one per file)."""
    logs = ws.root / "logs"
    keep = logs / "keep.jsonl"
    keep.touch()
    page_in = pager(server, ws.all_output)
    daemon = ws.start()
    for i in range(3):
        job = logs / f"job-{i}.jsonl"
        page_in(job, i)
        assert wait_until(lambda job=job: str(job) in saved())
        job.unlink()
    time.sleep(1.0)  # several scans of the directory: the deleted files are let go
    page_in(keep, 10)  # committed with their positions forgotten
    assert wait_until(lambda: saved() == {str(keep)}), saved()
    # A file deleted while the daemon is stopped: forgotten at the next start.
    gone = logs / "job-9.jsonl"
    page_in(gone, 9)
    assert wait_until(lambda: str(gone) in saved())
    assert 0 == daemon.terminate()
    gone.unlink()
    again = ws.start()
    page_in(keep, 11)
    assert wait_until(lambda: saved() == {str(keep)}), saved()
    assert 0 == again.terminate()
    assert [f"page-{i}" for i in (0, 1, 2, 10, 9, 11)] == [r.json()["alias"] for r in server.requests]


def test_positions_of_a_globs_deleted_files_are_forgotten(tmp_path: Path, server: FakeOpsGenie) -> None:
    (tmp_path / "logs").mkdir()
    source = {"type": "file", "path": str(tmp_path / "logs" / "*.jsonl"), "start_at": "beginning"}
    ws = Workspace(tmp_path, server.url, source=source)
    glob_positions_follow_the_files(ws, server, lambda: set(positions(ws)))


def test_metrics_drop_the_series_of_a_globs_gone_files_and_of_removed_rules(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """Found by a soak: /metrics grew a `source` series per file a glob ever matched and a
    `rule` series per rule a reload ever removed (a rule renamed from one deploy to the next),
    for as long as the daemon ran. A file gone for good and a removed rule now take their
    series with them."""
    logs = tmp_path / "logs"
    logs.mkdir()
    source = {"type": "file", "path": str(logs / "*.jsonl"), "start_at": "beginning"}
    ws = Workspace(tmp_path, server.url, source=source, metrics={"listen": "127.0.0.1:0"})
    keep = logs / "keep.jsonl"
    daemon = ws.start()
    url = metrics_url(daemon)
    page_in = pager(server, daemon.output)
    for i in range(3):
        page_in(logs / f"job-{i}.jsonl", i)
        (logs / f"job-{i}.jsonl").unlink()
    time.sleep(1.0)  # several scans of the directory: the deleted files are let go
    for i, name in enumerate(("first", "second", "third")):  # a rule renamed by each deploy
        (ws.rules / "rules.yaml").write_text(f"name: {name}\nmatch: {{kind: page}}\nalert: {{alias: 'page-{{id}}'}}\n")
        daemon.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda name=name: f"added: 1 ({name})" in daemon.stderr()), daemon.output()
        page_in(keep, 10 + i)

    def labels(family: str, label: str) -> set[str]:
        found = (re.search(rf'{label}="([^"]*)"', key) for key in samples(scrape(url)) if key.startswith(family))
        return {m.group(1) for m in found if m}

    assert {str(keep)} == labels("rulesd_events_read_total", "source")
    assert {"third"} == labels("rulesd_rule_firings_total", "rule")
    assert {"third"} == labels("rulesd_rule_matches_total", "rule")
    assert {"third"} == labels("rulesd_state_groups_evicted_total", "rule")
    assert 0 == daemon.terminate()
    assert "stopped: 6 event(s)" in daemon.stderr()  # the forgotten files' events still count there


def test_metrics_show_every_source_and_rule_at_zero_before_anything_happens(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """The per-source and per-rule counters were missing from /metrics until the first event
    of the source or the first match and firing of the rule: `increase()` missed the first one
    and `rulesd_rule_firings_total == 0` could not tell a rule that never fired from one not
    loaded. Every source followed (a file with no line yet, a glob's new match) and every rule
    loaded is there at 0 from the start; a reload adds the new rules at 0 and drops the removed."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.jsonl").touch()
    sources = [
        {"name": "app", "type": "file", "path": "events.jsonl", "start_at": "beginning"},
        {"name": "jobs", "type": "file", "path": str(logs / "*.jsonl"), "start_at": "beginning"},
    ]
    ws = Workspace(tmp_path, server.url, source=None, sources=sources, metrics={"listen": "127.0.0.1:0"})
    (ws.rules / "rules.yaml").write_text(
        "rules:\n- name: one\n  match: {kind: page}\n  alert: {alias: 'one-{id}'}\n"
        "- name: two\n  match: {kind: other}\n  alert: {alias: 'two-{id}'}\n"
    )
    daemon = ws.start()
    url = metrics_url(daemon)
    app, job_a, job_b = f"app:{ws.events}", f"jobs:{logs / 'a.jsonl'}", f"jobs:{logs / 'b.jsonl'}"

    def zeros(family: str, label: str, values: set[str]) -> bool:
        got = {key: value for key, value in samples(scrape(url)).items() if key.startswith(family + "{")}
        return got == {f'{family}{{{label}="{v}"}}': 0.0 for v in values}

    for family in ("rulesd_events_read_total", "rulesd_events_invalid_total", "rulesd_lines_ignored_total"):
        assert zeros(family, "source", {app, job_a}), scrape(url)
    for family in ("rulesd_rule_matches_total", "rulesd_rule_firings_total"):
        assert zeros(family, "rule", {"one", "two"}), scrape(url)
    (logs / "b.jsonl").touch()  # a new match of the glob, no line in it yet
    assert wait_until(lambda: zeros("rulesd_events_read_total", "source", {app, job_a, job_b})), scrape(url)
    (ws.rules / "rules.yaml").write_text(
        "rules:\n- name: one\n  match: {kind: page}\n- name: three\n  match: {kind: x}\n"
    )
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "added: 1 (three)" in daemon.stderr()), daemon.output()
    for family in ("rulesd_rule_matches_total", "rulesd_rule_firings_total"):
        assert zeros(family, "rule", {"one", "three"}), scrape(url)
    ws.append(page(1))
    assert server.wait_for(lambda r: len(r) >= 1), daemon.output()
    assert wait_until(lambda: metric(url, 'rulesd_rule_firings_total{rule="one"}') == 1), scrape(url)
    assert 0 == metric(url, 'rulesd_rule_firings_total{rule="three"}')
    assert 1 == metric(url, f'rulesd_events_read_total{{source="{app}"}}')
    assert 0 == daemon.terminate()


def zero_series(url: str, series: dict[str, set[str]]) -> bool:
    """Whether /metrics has, of each family, exactly a series at 0 per label value given
    (`{"rulesd_rule_firings_total{rule": {"one"}}`: the family and its label, as written)."""
    got = samples(scrape(url))
    for family_label, values in series.items():
        family = family_label.split("{")[0]
        found = {key: value for key, value in got.items() if key.startswith(family + "{")}
        if found != {f'{family_label}="{v}"}}': 0.0 for v in values}:
            return False
    return True


def rule_series(*rules: str) -> dict[str, set[str]]:
    return {f"{family}{{rule": set(rules) for family in ("rulesd_rule_matches_total", "rulesd_rule_firings_total")}


def source_series(*sources: str) -> dict[str, set[str]]:
    families = ("rulesd_events_read_total", "rulesd_events_invalid_total", "rulesd_lines_ignored_total")
    return {f"{family}{{source": set(sources) for family in families}


TWO_RULES = (
    "rules:\n- name: one\n  match: {kind: page}\n  alert: {alias: 'one-{id}'}\n"
    "- name: two\n  match: {kind: other}\n  alert: {alias: 'two-{id}'}\n"
)
RELOADED_RULES = (
    "rules:\n- name: one\n  match: {kind: page}\n  alert: {alias: 'one-{id}'}\n- name: three\n  match: {kind: x}\n"
)


def typed_series(label: str, field: str) -> dict[str, set[str]]:
    """The series of a source with a typed field and a time field."""
    unconverted = f'rulesd_fields_unconverted_total{{field="{field}",source'
    return {unconverted: {label}, "rulesd_events_untimed_total{source": {label}}


def reloaded(daemon: DaemonProcess, ws: Workspace) -> None:
    (ws.rules / "rules.yaml").write_text(RELOADED_RULES)
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "added: 1 (three)" in daemon.stderr()), daemon.output()


def test_metrics_show_a_stdin_source_at_zero_from_the_start_and_after_a_reload(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """A stdin source's counters (`<stdin>`; its typed fields and time field by its type),
    and every rule's, are on /metrics at 0 before any line comes, and stay after a reload."""
    source = {
        "type": "stdin",
        "format": "regex",
        "pattern": r"(?P<kind>\S+) (?P<id>\S+) (?P<ts>\S+)",
        "fields": {"id": "int"},
        "time_field": "ts",
    }
    ws = Workspace(tmp_path, server.url, source=source, metrics={"listen": "127.0.0.1:0"})
    (ws.rules / "rules.yaml").write_text(TWO_RULES)
    daemon = ws.start(stdin=subprocess.PIPE)
    assert daemon.proc.stdin is not None
    url = metrics_url(daemon)
    typed = typed_series("stdin", "id")
    assert zero_series(url, {**source_series("<stdin>"), **rule_series("one", "two"), **typed}), scrape(url)
    reloaded(daemon, ws)
    assert zero_series(url, {**source_series("<stdin>"), **rule_series("one", "three"), **typed}), scrape(url)
    daemon.proc.stdin.write(b"page 1 2024-12-10T06:55:46Z\n")
    daemon.proc.stdin.close()  # the end of input: it delivers and stops
    assert server.wait_for(lambda r: len(r) >= 1), daemon.output()
    assert 0 == daemon.proc.wait(30), daemon.output()


def test_metrics_show_a_journald_source_at_zero_from_the_start_and_after_a_reload(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """A named journald source's counters (`sshd:journalctl`; its typed fields and time
    field by its name), and every rule's, are on /metrics at 0 before any entry comes, and
    stay after a reload."""
    fake = FakeJournal(tmp_path)
    source = {
        "name": "sshd",
        "type": "journald",
        "units": ["ssh.service"],
        "format": "regex",
        "pattern": SSHD_PATTERNS,
        "fields": {"port": "int"},
        "time_field": "ts",
    }
    ws = Workspace(tmp_path, server.url, source=None, sources=[source], metrics={"listen": "127.0.0.1:0"})
    (ws.rules / "rules.yaml").write_text(TWO_RULES)
    daemon = ws.start(env=fake.env)
    url = metrics_url(daemon)
    typed = typed_series("sshd", "port")
    assert zero_series(url, {**source_series("sshd:journalctl"), **rule_series("one", "two"), **typed}), scrape(url)
    reloaded(daemon, ws)
    assert zero_series(url, {**source_series("sshd:journalctl"), **rule_series("one", "three"), **typed}), scrape(url)
    fake.write(entry(1, "ssh.service", "Failed password for root from 203.0.113.7 port 2222", kind="page", id="1"))
    assert wait_until(lambda: metric(url, 'rulesd_events_read_total{source="sshd:journalctl"}') == 1), scrape(url)
    assert 0 == daemon.terminate()


def test_a_new_file_given_a_deleted_files_inode_is_read_from_its_start(tmp_path: Path, server: FakeOpsGenie) -> None:
    """A job writes one file per run, alike at every run, and deletes it once read. The file
    system gives the next run's file the deleted one's inode at once (ext4 does), and the
    source took it for the deleted file seen again under another name: it read it from where
    the deleted one ended, and the run's failure never paged. Each run's file is now read
    whole: every run pages."""
    logs, daemon = job_logs(tmp_path, server, "*.jsonl")
    for i in range(4):
        (logs / f"run-{i}.jsonl").write_bytes(JOB_RUN)
        assert server.wait_for(lambda r, i=i: len(r) > i), daemon.output()
        (logs / f"run-{i}.jsonl").unlink()
        # Read to its end and closed: its inode is free for the next run's file.
        assert wait_until(lambda: not any(f.endswith(" (deleted)") for f in open_files(daemon.proc.pid)))
    assert ["backup failed"] * 4 == [r.json()["alias"] for r in server.requests]
    assert 0 == daemon.terminate()


def test_a_new_file_given_the_inode_of_a_rotated_file_deleted_since_is_read_from_its_start(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """A file rotated (renamed, a new one written at its path) is remembered by inode once
    read to its end, to be taken up at its end under its new name; that memory outlived the
    file's deletion. A new file of the glob under another name, given the inode (ext4 hands a
    freed one out again, not always: hence several rounds) and starting alike, was taken for
    it: read from where the deleted one ended, its failure never paged."""
    rotated_deleted_then_a_new_file(tmp_path, server, "*.log*", followed=True)


def test_a_new_file_given_the_inode_of_a_file_rotated_out_of_the_globs_reach_is_read_from_its_start(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """A file rotated out of the glob's reach (app.log to app.log.1 for `*.log`) is remembered by
    inode once read to its end, should it come back under a name the glob matches. Deleted
    while not followed, it stayed remembered: a new file given its inode (ext4 hands a freed one
    out again, not always: hence several rounds) and starting alike was read from where the
    deleted one ended, and its failure never paged. A file written to since it was let go of is
    now read from its start."""
    rotated_deleted_then_a_new_file(tmp_path, server, "*.log", followed=False)


def rotated_deleted_then_a_new_file(tmp_path: Path, server: FakeOpsGenie, pattern: str, *, followed: bool) -> None:
    """Six rounds of: app.log pages, is rotated to app.log.1 (`followed`: under a name
    `pattern` matches) and a new app.log pages; app.log.1, read to its end and remembered, is
    deleted; a new other.log that starts alike (given its inode, now and then) must page."""
    logs, daemon = job_logs(tmp_path, server, pattern)
    sent = 0

    def paged(path: Path) -> None:
        nonlocal sent
        path.write_bytes(JOB_RUN)
        sent += 1
        assert server.wait_for(lambda r: len(r) >= sent, timeout=5), f"{path}: not paged\n{daemon.output()}"

    for i in range(6):
        app, rotated = logs / f"app-{i}.log", logs / f"app-{i}.log.1"
        paged(app)
        app.rename(rotated)
        paged(app)  # the rotated file is let go of once read to its end, and remembered
        # Taken up under its new name, or closed.
        assert wait_until(lambda r=rotated: (str(r) in open_files(daemon.proc.pid)) == followed), daemon.output()
        rotated.unlink()
        assert wait_until(lambda: not any(f.endswith(" (deleted)") for f in open_files(daemon.proc.pid)))
        paged(logs / f"other-{i}.log")
    assert 0 == daemon.terminate()


JOB_RUN = b'{"job": "backup", "status": "started"}\n{"job": "backup", "status": "failed"}\n'


def job_logs(tmp_path: Path, server: FakeOpsGenie, pattern: str) -> tuple[Path, DaemonProcess]:
    """The logs directory, and a daemon following its files `pattern` matches from their start,
    paging `{job} failed` for each JOB_RUN written to one."""
    logs = tmp_path / "logs"
    logs.mkdir()
    source = {"type": "file", "path": str(logs / pattern), "start_at": "beginning"}
    ws = Workspace(tmp_path, server.url, source=source)
    (ws.rules / "rules.yaml").write_text("name: failed\nmatch: {status: failed}\nalert: {alias: '{job} failed'}\n")
    return logs, ws.start()


def open_files(pid: int) -> list[str]:
    """What the process's file descriptors point at (one may close while they are listed)."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            found.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return found


def test_metrics_count_the_matches_of_every_rule_alike_after_each_batch(tmp_path: Path, server: FakeOpsGenie) -> None:
    """Dozens of rules alike are counted by the one candidate standing for them and brought
    to each rule's count after each batch: /metrics shows every rule's matches as the events
    were read, not only once something else asks for them (a reload)."""
    ws = Workspace(tmp_path, server.url, metrics={"listen": "127.0.0.1:0"})
    alike = "".join(f"  - {{name: alike-{i:02d}, match: {{kind: page}}}}\n" for i in range(20))
    (ws.rules / "rules.yaml").write_text("rules:\n" + alike + "  - {name: other, match: {kind: other}}\n")
    daemon = ws.start()
    url = metrics_url(daemon)
    ws.append({"kind": "page", "id": 1}, {"kind": "other"}, {"kind": "page", "id": 2})
    assert server.wait_for(lambda r: len(r) >= 3), daemon.output()
    ws.append({"kind": "page", "id": 3})
    assert server.wait_for(lambda r: len(r) >= 4), daemon.output()

    def matches() -> dict[str, float]:
        family = "rulesd_rule_matches_total{"
        return {k[len(family) :]: v for k, v in samples(scrape(url)).items() if k.startswith(family)}

    expected = {**{f'rule="alike-{i:02d}"}}': 3.0 for i in range(20)}, 'rule="other"}': 1.0}
    assert wait_until(lambda: matches() == expected), matches()
    assert 0 == daemon.terminate()
