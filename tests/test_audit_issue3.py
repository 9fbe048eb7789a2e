"""`rulesd run` promises that no other test pins: the config schema and `check --config`, event
formats in the daemon, rate-limited warnings, stdin delivery, the SQLite file, group commit,
the SIGTERM drain, `start_at` on the first run only, request timeouts, one HTTP session, reload
debouncing, the periodic check, all-or-nothing reloads, and the README's demo command."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from jsonschema import Draft202012Validator

import rulesd
from rulesd.config import Config, OpsgenieConfig, SourceConfig
from rulesd.daemon import Daemon
from rulesd.reload import RuleWatcher
from rulesd.rules.loader import load_ruleset
from tests.daemon_process import API_KEY, Workspace, wait_until
from tests.fake_opsgenie import FakeOpsGenie, Received, Reply
from tests.opsgenie_schema import create_alert_validator

ROOT = Path(__file__).resolve().parent.parent
VALIDATOR = create_alert_validator()
PAGE_RULE = "name: r\nmatch: {kind: page}\nalert: {alias: 'p-{id}'}\n"


def rulesd_cli(
    *args: str, stdin: bytes = b"", cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "RULESD_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "rulesd", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=full_env,
    )


def stdin_config(tmp_path: Path, rules: str, **extra: Any) -> Path:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "r.yaml").write_text(rules)
    config = {"source": {"type": "stdin"}, "state_dir": "state", **extra}
    path = tmp_path / "rulesd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def page(i: int) -> dict[str, object]:
    return {"kind": "page", "id": i}


def aliases(server: FakeOpsGenie) -> list[str]:
    return [r.json()["alias"] for r in server.requests if r.method == "POST"]


# -- configuration ------------------------------------------------------------------------------


def test_schema_config_prints_the_schema_the_configs_are_checked_against() -> None:
    """`rulesd schema config` is a valid JSON Schema that accepts the shipped configs and refuses
    an unknown key."""
    result = rulesd_cli("schema", "config")
    assert 0 == result.returncode
    schema = json.loads(result.stdout)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for config in (ROOT / "packaging" / "rulesd.yaml", ROOT / "examples" / "rulesd.yaml"):
        assert [] == list(validator.iter_errors(yaml.safe_load(config.read_text()))), config
    assert list(validator.iter_errors({"sorce": {"type": "stdin"}}))


def test_check_config_checks_the_rules_the_config_names(tmp_path: Path) -> None:
    """`rulesd check --config FILE` checks the rules the config names (not ./rules), and a config
    error is reported as path:line:col; exit 1 for either."""
    (tmp_path / "my-rules").mkdir()
    (tmp_path / "my-rules" / "r.yaml").write_text("name: r\nmatch: {kind: page}\nalert: {priority: P0}\n")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "ok.yaml").write_text(PAGE_RULE)
    config = tmp_path / "rulesd.yaml"
    config.write_text("rules: [my-rules]\n")
    result = rulesd_cli("check", "--config", str(config), cwd=tmp_path)
    assert 1 == result.returncode
    out = result.stdout.decode()
    assert f"{tmp_path}/my-rules/r.yaml:3:19: error: alert.priority:" in out, out
    assert f"FAILED: config {config}, 1 file(s), 0 rule(s), 1 error(s)" in out

    (tmp_path / "my-rules" / "r.yaml").write_text(PAGE_RULE)
    config.write_text("rules: [my-rules]\nopsgenie:\n  alert_url: http://example.com/v2/alerts\n")
    result = rulesd_cli("check", "--config", str(config), cwd=tmp_path)
    assert 1 == result.returncode
    assert f"{config}:3:14: error: opsgenie.alert_url:" in result.stdout.decode()


# -- sources ------------------------------------------------------------------------------------


def test_text_format_makes_each_line_a_message(tmp_path: Path) -> None:
    """format: text -> {"message": line} (CR dropped), evaluated by the daemon."""
    config = stdin_config(
        tmp_path,
        "name: t\nmatch: {message: {contains: disk full}}\nalert: {alias: 't: {message}'}\n",
        source={"type": "stdin", "format": "text"},
    )
    result = rulesd_cli(
        "run",
        "--config",
        str(config),
        "--dry-run",
        stdin=b'all good\n/var: disk full\r\n{"json": "is text here"}\nroot: disk full',
    )
    assert 0 == result.returncode, result.stderr
    assert ["t: /var: disk full", "t: root: disk full"] == [
        json.loads(line)["alias"] for line in result.stdout.splitlines()
    ]


def test_regex_format_turns_named_groups_into_fields(tmp_path: Path) -> None:
    """format: regex -> named groups become fields (and `message` the line); a line that does
    not match is skipped with a warning."""
    config = stdin_config(
        tmp_path,
        "name: e\nmatch: {level: ERROR}\nalert: {alias: '{host}/{level}', message: '{message}'}\n",
        source={"type": "stdin", "format": "regex", "pattern": r"^(?P<level>[A-Z]+) (?P<host>\S+) "},
    )
    result = rulesd_cli(
        "run",
        "--config",
        str(config),
        "--dry-run",
        stdin=b"INFO web-1 fine\nERROR web-2 broken pipe\ngarbage\nERROR db-1 down\n",
    )
    assert 0 == result.returncode, result.stderr
    payloads = [json.loads(line) for line in result.stdout.splitlines()]
    assert ["web-2/ERROR", "db-1/ERROR"] == [p["alias"] for p in payloads]
    assert "ERROR web-2 broken pipe" == payloads[0]["message"]
    assert "does not match the source pattern" in result.stderr.decode()


def test_bad_lines_are_skipped_with_one_rate_limited_warning_and_counted(tmp_path: Path) -> None:
    """Invalid JSON, invalid UTF-8, non-objects and over-long lines are skipped: one warning
    (the rest held back by the rate limit), the invalid ones counted, the valid event alerted."""
    config = stdin_config(tmp_path, PAGE_RULE, source={"type": "stdin", "max_line_bytes": 1024})
    bad = [b"not json\n"] * 30 + [b'{"kind": "page", "x": "\xff\xfe"}\n'] * 10 + [b"[1, 2]\n", b"7\n"] * 5
    long_lines = [b'{"kind": "page", "id": 0, "pad": "' + b"a" * 2048 + b'"}\n'] * 5
    result = rulesd_cli(
        "run", "--config", str(config), "--dry-run", stdin=b"".join(bad + long_lines) + b'{"kind": "page", "id": 1}\n'
    )
    assert 0 == result.returncode, result.stderr
    assert ["p-1"] == [json.loads(line)["alias"] for line in result.stdout.splitlines()]
    stderr = result.stderr.decode()
    assert 1 == stderr.count("skipped"), stderr
    assert "stopped: 1 event(s), 50 invalid" in stderr


def test_stdin_is_read_to_its_end_delivered_and_exit_0(tmp_path: Path, server: FakeOpsGenie) -> None:
    """Not a dry run: stdin to EOF, every alert delivered (in order, with the User-Agent) before
    the process exits 0."""
    config = stdin_config(tmp_path, PAGE_RULE, opsgenie={"alert_url": f"{server.url}/v2/alerts"})
    events = b"".join(json.dumps(page(i)).encode() + b"\n" for i in range(10))
    result = rulesd_cli("run", "--config", str(config), stdin=events, env={"RULESD_OPSGENIE_API_KEY": API_KEY})
    assert 0 == result.returncode, result.stderr
    assert [f"p-{i}" for i in range(10)] == aliases(server)
    assert {f"rulesd/{rulesd.__version__}"} == {r.headers["User-Agent"] for r in server.requests}
    for request in server.requests:
        VALIDATOR.validate(request.json())
    assert API_KEY.encode() not in result.stdout + result.stderr


def test_start_at_end_applies_to_the_first_run_only(tmp_path: Path, server: FakeOpsGenie) -> None:
    """start_at: end skips what is there at the first start; after a restart the saved position
    wins, so events written while the daemon was down are read."""
    ws = Workspace(tmp_path, server.url, source={"type": "file", "path": "events.jsonl", "start_at": "end"})
    try:
        ws.append({"kind": "page", "id": "old"})
        daemon = ws.start()
        ws.append(page(0))
        assert server.wait_for(lambda r: len(r) >= 1)
        assert 0 == daemon.terminate()
        ws.append(page(1))
        ws.start()
        assert server.wait_for(lambda r: len(r) >= 2)
        time.sleep(0.3)
        assert ["page-0", "page-1"] == aliases(server)
    finally:
        ws.stop_all()


# -- state and delivery -------------------------------------------------------------------------


def test_state_is_one_sqlite_database_in_wal_mode(workspace: Workspace, server: FakeOpsGenie) -> None:
    """Positions, the outbox and the window state live in one SQLite database, in WAL mode."""
    (workspace.rules / "burst.yaml").write_text(
        "name: burst\nmatch: {kind: error}\nthreshold: {count: 5, window: 1h}\n"
    )
    daemon = workspace.start()
    workspace.append({"kind": "error"}, page(0))
    assert server.wait_for(lambda r: len(r) >= 1)
    assert 0 == daemon.terminate()
    state = workspace.root / "state"
    assert {"state.sqlite"} == {p.name for p in state.iterdir()} - {"state.sqlite-wal", "state.sqlite-shm"}
    db = sqlite3.connect(state / "state.sqlite")
    try:
        assert "wal" == db.execute("PRAGMA journal_mode").fetchone()[0]
        assert [str(workspace.events)] == [row[0] for row in db.execute("SELECT source FROM positions")]
        assert 1 == db.execute("SELECT count(*) FROM outbox").fetchone()[0] + len(server.requests)
        saved = db.execute("SELECT count(*) FROM engine_groups").fetchone()[0]
        saved += db.execute("SELECT count(*) FROM engine_state").fetchone()[0]
        assert saved >= 1, "the window state of 'burst' was not saved"
    finally:
        db.close()


def test_a_backlog_is_committed_in_few_transactions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group commit: 5000 waiting lines are evaluated and committed together, not one
    transaction per event; every alert still comes out."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(PAGE_RULE)
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        b"".join(json.dumps(page(i) if i % 10 == 0 else {"kind": "noise"}).encode() + b"\n" for i in range(5000))
    )
    config = Config(
        path=str(tmp_path / "rulesd.yaml"),
        rules=(str(tmp_path / "rules"),),
        source=SourceConfig(type="stdin"),
        state_dir=str(tmp_path / "state"),
    )
    out = io.StringIO()
    with open(events, "rb") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        daemon = Daemon(config, load_ruleset(config.rules), dry_run=True, environ={}, stdout=out)
        commits: list[int] = []
        real_commit = daemon.store.commit

        def counting_commit(**kwargs: Any) -> None:
            commits.append(len(kwargs["payloads"]))
            real_commit(**kwargs)

        monkeypatch.setattr(daemon.store, "commit", counting_commit)
        handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            assert 0 == daemon.run()
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
    assert 500 == sum(commits) == len(out.getvalue().splitlines())
    assert len(commits) <= 3, f"{len(commits)} transactions for 5000 lines"
    assert not (tmp_path / "state").exists(), "a dry run touched the state directory"


def test_sigterm_drains_the_outbox_before_exiting(workspace: Workspace, server: FakeOpsGenie) -> None:
    """An alert waiting for its retry when SIGTERM comes is still delivered in the stop grace."""

    def once_busy(_r: Received) -> Reply:
        return Reply(503, {"Retry-After": "1"}, b"{}") if len(server.requests) == 0 else Reply()

    server.responder = once_busy
    daemon = workspace.start()
    workspace.append(page(0))
    assert server.wait_for(lambda r: len(r) >= 1)
    assert 0 == daemon.terminate()
    assert ["page-0", "page-0"] == aliases(server)
    listing = workspace.rulesd("outbox", "list", "--config", str(workspace.config))
    assert "0 pending, 0 dead-lettered" in listing.stdout, listing.stdout + listing.stderr


def test_sigterm_keeps_undelivered_alerts_for_the_next_start(workspace: Workspace, server: FakeOpsGenie) -> None:
    """OpsGenie down through the stop grace: exit 0 anyway, the alert stays queued, and the next
    start delivers it."""
    down = {"yes": True}
    server.responder = lambda _r: Reply(500, body=b"{}") if down["yes"] else Reply()
    daemon = workspace.start()
    workspace.append(page(0))
    assert server.wait_for(lambda r: len(r) >= 1)
    started = time.monotonic()
    assert 0 == daemon.terminate()
    assert time.monotonic() - started < 12
    assert "still queued" in daemon.stderr()
    listing = workspace.rulesd("outbox", "list", "--config", str(workspace.config))
    assert "1 pending, 0 dead-lettered" in listing.stdout, listing.stdout + listing.stderr
    down["yes"] = False
    tried = len(server.requests)
    workspace.start()
    assert server.wait_for(lambda r: len(r) > tried)
    assert "page-0" == server.requests[-1].json()["alias"]
    assert wait_until(
        lambda: "0 pending" in workspace.rulesd("outbox", "list", "--config", str(workspace.config)).stdout
    )


def test_request_timeout_comes_from_the_config(tmp_path: Path, server: FakeOpsGenie) -> None:
    """opsgenie.timeout_s bounds a request: a server that does not answer in time is a
    retryable timeout, and the alert is delivered by the next attempt."""

    def slow_once(_r: Received) -> Reply:
        if not server.requests:
            time.sleep(2.0)
        return Reply()

    server.responder = slow_once
    ws = Workspace(
        tmp_path,
        server.url,
        opsgenie={"api_key_file": "opsgenie.key", "alert_url": f"{server.url}/v2/alerts", "timeout_s": 0.5},
    )
    try:
        daemon = ws.start()
        ws.append(page(0))
        assert server.wait_for(lambda r: len(r) >= 2, timeout=15)
        assert daemon.wait_for_log("will retry")
        assert "timeout" in daemon.stderr()
    finally:
        ws.stop_all()


def test_one_http_session_serves_every_request(
    tmp_path: Path, server: FakeOpsGenie, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon builds one requests.Session (no proxy settings from the environment) and sends
    every alert and heartbeat through it."""
    made: list[requests.Session] = []

    class CountingSession(requests.Session):
        def __init__(self) -> None:
            super().__init__()
            made.append(self)

    monkeypatch.setattr(requests, "Session", CountingSession)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(PAGE_RULE)
    (tmp_path / "events.jsonl").touch()
    config = Config(
        path=str(tmp_path / "rulesd.yaml"),
        rules=(str(tmp_path / "rules"),),
        source=SourceConfig(type="file", paths=(str(tmp_path / "events.jsonl"),)),
        state_dir=str(tmp_path / "state"),
        opsgenie=OpsgenieConfig(alert_url=f"{server.url}/v2/alerts", api_key=API_KEY, timeout_s=5.0),
    )
    daemon = Daemon(config, load_ruleset(config.rules), environ={})
    try:
        assert daemon.client is not None
        for i in range(3):
            daemon.client.create_alert({"message": f"m{i}", "alias": f"a{i}"})
        daemon.client.ping_heartbeat("hb")
    finally:
        daemon.source.close()
        daemon.store.close()
    assert 1 == len(made)
    assert made[0].trust_env is False
    assert ["POST", "POST", "POST", "GET"] == [r.method for r in server.requests]


# -- reload -------------------------------------------------------------------------------------


def test_rule_watcher_waits_for_a_burst_of_saves_to_settle(tmp_path: Path) -> None:
    """Watchdog events are debounced: no reload while saves keep coming, one once they stop."""
    rules = tmp_path / "rules"
    rules.mkdir()
    rule = rules / "r.yaml"
    rule.write_text(PAGE_RULE)
    watcher = RuleWatcher([str(rules)], clock=time.monotonic, debounce=0.5, backstop=3600)
    watcher.start()
    try:
        for i in range(8):
            rule.write_text(PAGE_RULE + f"# save {i}\n")
            time.sleep(0.1)
            assert not watcher.due(), f"reload requested in the middle of the burst (save {i})"
        last_save = time.monotonic()
        assert wait_until(watcher.due, timeout=5)
        assert time.monotonic() - last_save >= 0.35
        assert not watcher.due()
    finally:
        watcher.stop()


def test_rule_watcher_periodic_check_catches_a_change_no_event_reported(tmp_path: Path) -> None:
    """Without any file system event (none is watched here), the periodic hash check notices a
    changed rule file at the next check, and an unchanged one causes no reload; SIGHUP's
    request() reloads at once."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(PAGE_RULE)
    now = [100.0]
    watcher = RuleWatcher([str(rules)], clock=lambda: now[0], debounce=0.1, backstop=5.0)
    (rules / "r.yaml").write_text(PAGE_RULE + "# changed\n")
    now[0] += 1.0
    assert not watcher.due()
    now[0] += 4.5
    assert watcher.due()
    now[0] += 6.0
    assert not watcher.due()
    watcher.request()
    assert watcher.due()
    assert not watcher.due()


def test_reload_is_all_or_nothing_and_names_what_changed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A reload with one good change and one broken file applies nothing and logs every error
    as path:line:col; once fixed, one line names the rules added, removed and changed."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text("name: a\nmatch: {kind: a}\n")
    (rules / "b.yaml").write_text("name: b\nmatch: {kind: b}\n")
    (rules / "keep.yaml").write_text("name: keep\nmatch: {kind: k}\n")
    (tmp_path / "events.jsonl").touch()
    config = Config(
        path=str(tmp_path / "rulesd.yaml"),
        rules=(str(rules),),
        source=SourceConfig(type="file", paths=(str(tmp_path / "events.jsonl"),)),
        state_dir=str(tmp_path / "state"),
    )
    daemon = Daemon(config, load_ruleset(config.rules), dry_run=True, environ={}, stdout=io.StringIO())
    caplog.set_level(logging.INFO, logger="rulesd")
    try:
        before = daemon.engine.ruleset.fingerprint
        (rules / "a.yaml").write_text("name: a\nmatch: {kind: A}\n")
        (rules / "b.yaml").write_text("name: b\nmatch: {kind: b}\nthrottle: soon\nalert: {priority: P9}\n")
        assert daemon.reload() is False
        assert before == daemon.engine.ruleset.fingerprint
        failed = [r.getMessage() for r in caplog.records if "reload failed" in r.getMessage()]
        assert 2 == len(failed), failed
        assert any(f"{rules}/b.yaml:3:" in m for m in failed) and any(f"{rules}/b.yaml:4:" in m for m in failed)
        (rules / "b.yaml").unlink()
        (rules / "c.yaml").write_text("name: c\nmatch: {kind: c}\n")
        assert daemon.reload() is True
        assert {"a", "c", "keep"} == set(daemon.engine.ruleset.by_name())
        assert "rules reloaded: 3 rule(s); added: c; removed: b; changed: a" in caplog.text
    finally:
        daemon.source.close()


# -- the demo -----------------------------------------------------------------------------------


def test_readme_demo_command(tmp_path: Path) -> None:
    """`rulesd run --config examples/rulesd.yaml --dry-run < examples/events.jsonl` prints valid
    CreateAlertPayload lines, exits 0 and leaves no state behind."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    events = (tmp_path / "examples" / "events.jsonl").read_bytes()
    result = rulesd_cli("run", "--config", "examples/rulesd.yaml", "--dry-run", stdin=events, cwd=tmp_path)
    assert 0 == result.returncode, result.stderr
    payloads = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(payloads) >= 3
    for payload in payloads:
        VALIDATOR.validate(payload)
        assert "rulesd-demo" == payload["source"]
    assert not (tmp_path / "examples" / "state").exists()
