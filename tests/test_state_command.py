"""`rulesd state` beside the real running daemon: the numbers it reads from the state database
are the daemon's, and reading them disturbs nothing (the daemon goes on alerting)."""

from __future__ import annotations

import calendar
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

from rulesd.engine import Engine
from rulesd.jsontext import compact_json, read_json
from rulesd.state import SqliteState
from rulesd.state.redis import RedisState
from tests.daemon_process import Workspace, wait_until
from tests.fake_opsgenie import FakeOpsGenie, Reply
from tests.redis_server import RedisServer
from tests.ruletools import ruleset_from_yaml
from tests.run_cli import rulesd_cli

RULES = """\
rules:
  - name: errors-per-host
    match: {kind: error}
    threshold: {count: 3, window: 10m, group_by: [host]}
    throttle: 30m
    resolve: {after: 1h}
    alert: {alias: "errors-{host}"}
  - name: users-per-address
    match: {kind: login_failed}
    distinct: {field: user, count: 5, window: 10m, group_by: [ip]}
  - name: heartbeat-missing
    match: {kind: heartbeat}
    absence: {window: 1h, group_by: [host]}
"""


def state(workspace: Workspace, *args: str) -> dict[str, Any]:
    """`rulesd state --format json` on the workspace, by rule name."""
    result = rulesd_cli("state", "--config", str(workspace.config), "--format", "json", *args)
    assert (0, "") == (result.returncode, result.stderr), result
    return json.loads(result.stdout)


def groups(view: dict[str, Any], rule: str) -> dict[str, dict[str, Any]]:
    """A rule's groups by their first group_by value."""
    found = next((r for r in view["rules"] if r["rule"] == rule), {"groups": []})
    return {next(iter(g["group"].values())): g for g in found["groups"]}


def seconds(text: str) -> float:
    """Epoch seconds of an RFC 3339 UTC time as `rulesd state` writes it."""
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def test_state_beside_a_running_daemon(workspace: Workspace, server: FakeOpsGenie) -> None:
    """Counts in the window, distinct values, an absence's timer, then after a firing the
    throttle and the open alert with its close: read while the daemon runs and commits."""
    (workspace.rules / "rules.yaml").write_text(RULES)
    daemon = workspace.start()
    started = time.time()
    workspace.append(
        {"kind": "error", "host": "a"},
        {"kind": "error", "host": "a"},
        {"kind": "error", "host": "b"},
        {"kind": "login_failed", "ip": "192.0.2.1", "user": "alice"},
        {"kind": "login_failed", "ip": "192.0.2.1", "user": "bob"},
        {"kind": "login_failed", "ip": "192.0.2.1", "user": "alice"},
        {"kind": "heartbeat", "host": "h1"},
    )
    assert wait_until(lambda: "h1" in groups(state(workspace), "heartbeat-missing"), timeout=20)
    view = state(workspace)
    assert "engine" == view["clock_source"]
    errors = groups(view, "errors-per-host")
    assert {"a": (2, 3), "b": (1, 3)} == {host: (g["count"], g["needed"]) for host, g in errors.items()}
    users = groups(view, "users-per-address")["192.0.2.1"]
    assert (2, 5, {"alice", "bob"}) == (users["distinct"], users["needed"], {v["value"] for v in users["values"]})
    beat = groups(view, "heartbeat-missing")["h1"]
    assert (False, 3600.0) == (beat["silent"], seconds(beat["fires_at"]) - seconds(beat["last_seen"]))
    assert started - 2 <= seconds(beat["last_seen"]) <= time.time() + 1

    # The daemon goes on: the third error of host a fires, and the state says what followed.
    workspace.append({"kind": "error", "host": "a"})
    assert server.wait_for(lambda r: len(r) >= 1)
    assert ["errors-a"] == [r.json()["alias"] for r in server.requests]
    assert wait_until(lambda: "throttled_until" in groups(state(workspace), "errors-per-host").get("a", {}), timeout=20)
    fired = groups(state(workspace, "--rule", "errors-per-host"), "errors-per-host")["a"]
    assert ["errors-a"] == fired["open_alerts"]
    assert 1800.0 == seconds(fired["throttled_until"]) - seconds(fired["last_fired"])
    assert 3600.0 == seconds(fired["closes_at"]) - seconds(fired["last_fired"])
    assert "count" not in fired  # the group's count started again from zero when it fired

    text = rulesd_cli("state", "--config", str(workspace.config), "--rule", "errors-per-host")
    assert 0 == text.returncode
    lines = text.stdout.splitlines()
    assert "errors-per-host (threshold 3 in 10m, group_by host, throttle 30m, resolve after 1h): 2 groups" == lines[1]
    assert lines[2].startswith('  host="a": throttled until ')
    assert "alert open (errors-a); closes at " in lines[2]
    assert lines[3].startswith('  host="b": 1 of 3 in 10m, the oldest ')

    workspace.append({"kind": "error", "host": "b"}, {"kind": "error", "host": "b"})
    assert server.wait_for(lambda r: len(r) >= 2)
    assert ["errors-a", "errors-b"] == [r.json()["alias"] for r in server.requests]
    assert 0 == daemon.terminate()
    assert "database is locked" not in daemon.output()


def test_state_of_expected_groups_and_sequences_beside_a_running_daemon(
    workspace: Workspace, server: FakeOpsGenie
) -> None:
    """An absence's expected group that no event has come for showed as `last seen` at the
    moment the daemon started watching it, as if the worker had spoken: it is now `never seen
    (expected since …)`, its `last_seen` null, until its first event. A sequence with `within`
    says until when the rest of its steps may come."""
    (workspace.rules / "rules.yaml").write_text(
        "rules:\n"
        "  - name: beat\n"
        "    match: {kind: heartbeat}\n"
        "    absence: {window: 1h, group_by: [worker], expect: [{worker: w1}, {worker: w2}]}\n"
        "  - name: login-then-sudo\n"
        "    sequence:\n"
        "      group_by: [user]\n"
        "      within: 10m\n"
        "      steps:\n"
        "        - match: {kind: login}\n"
        "        - match: {kind: sudo}\n"
    )
    daemon = workspace.start()
    workspace.append({"kind": "heartbeat", "worker": "w1"}, {"kind": "login", "user": "alice"})
    assert wait_until(lambda: "alice" in groups(state(workspace), "login-then-sudo"), timeout=20)
    view = state(workspace)
    beats = groups(view, "beat")
    assert beats["w2"]["last_seen"] is None, beats["w2"]  # (it said the time the watch began)
    assert beats["w1"]["expected_since"] is None, beats["w1"]
    assert 3600.0 == seconds(beats["w2"]["fires_at"]) - seconds(beats["w2"]["expected_since"])
    assert 3600.0 == seconds(beats["w1"]["fires_at"]) - seconds(beats["w1"]["last_seen"])
    alice = groups(view, "login-then-sudo")["alice"]
    assert (2, 600.0) == (alice["step"], seconds(alice["expires_at"]) - seconds(alice["started"]))
    assert {"kind": "sudo"} == alice["waits_for"]["condition"]  # the step waited for, as written
    assert alice["waits_for"]["location"].endswith("rules.yaml:11:18"), alice
    text = rulesd_cli("state", "--config", str(workspace.config)).stdout.splitlines()
    assert [line for line in text if line.startswith('  worker="w2": never seen (expected since ')], text
    assert [line for line in text if line.startswith('  worker="w1": last seen ')], text
    assert [
        line
        for line in text
        if line.startswith('  user="alice": at step 2 of 2 ({"kind": "sudo"} at ')
        and "; the rest must come before " in line
    ], text

    workspace.append({"kind": "heartbeat", "worker": "w2"})
    assert wait_until(lambda: groups(state(workspace), "beat")["w2"]["last_seen"] is not None, timeout=20)
    assert groups(state(workspace), "beat")["w2"]["expected_since"] is None
    assert 0 == daemon.terminate()


def test_reading_a_stopped_daemons_database_leaves_no_files_behind(workspace: Workspace, server: FakeOpsGenie) -> None:
    """After a clean stop the database is alone in the state directory: `state`, `outbox list`
    and `outbox show` read it and leave no -wal or -shm file (owned by whoever ran them, which
    the daemon's user may then not open), and still see what the daemon saved."""
    (workspace.rules / "rules.yaml").write_text(RULES)
    server.responder = lambda _r: Reply(status=503)  # the page stays in the outbox, to be listed
    daemon = workspace.start()
    workspace.append(*[{"kind": "error", "host": "a"}] * 3, {"kind": "error", "host": "b"})
    assert server.wait_for(lambda r: len(r) >= 1)
    assert 0 == daemon.terminate()
    directory = workspace.root / "state"
    alone = sorted(p.name for p in directory.iterdir())
    assert "state.sqlite-wal" not in alone
    assert 1 == groups(state(workspace), "errors-per-host")["b"]["count"]
    listed = rulesd_cli("outbox", "list", "--config", str(workspace.config), "--format", "json")
    assert (0, ["errors-a"]) == (listed.returncode, [row["payload"]["alias"] for row in json.loads(listed.stdout)])
    shown = rulesd_cli("outbox", "show", str(json.loads(listed.stdout)[0]["id"]), "--config", str(workspace.config))
    assert 0 == shown.returncode, shown
    assert alone == sorted(p.name for p in directory.iterdir())


def test_state_without_a_database_and_for_an_unknown_rule(workspace: Workspace) -> None:
    """Before the daemon ever ran: nothing saved yet (exit 0); an unknown rule name: exit 2."""
    (workspace.rules / "rules.yaml").write_text(RULES)
    empty = rulesd_cli("state", "--config", str(workspace.config))
    assert (0, "") == (empty.returncode, empty.stderr)
    assert empty.stdout.startswith(f"no engine state saved in {workspace.root / 'state' / 'state.sqlite'} yet\n")
    unknown = rulesd_cli("state", "--config", str(workspace.config), "--rule", "errors-per-hots")
    assert (2, "rulesd state: no rule named 'errors-per-hots'; did you mean 'errors-per-host'?\n") == (
        unknown.returncode,
        unknown.stderr,
    )


def test_state_never_waits_for_the_write_lock(workspace: Workspace) -> None:
    """While another process holds the database's write lock (the daemon committing a long
    batch), `rulesd state` still reads the last committed state at once: it only ever reads."""
    (workspace.rules / "rules.yaml").write_text(RULES)
    (workspace.root / "state").mkdir()
    path = workspace.root / "state" / "state.sqlite"
    engine = Engine(ruleset_from_yaml(RULES))
    engine.evaluate({"kind": "error", "host": "a"}, time.time())
    SqliteState(str(path)).commit(positions={}, payloads=[], now=time.time(), engine=engine.state.delta())
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("DELETE FROM engine_groups")
    try:
        started = time.monotonic()
        view = state(workspace)
        assert time.monotonic() - started < 10  # a writer would wait for the lock (30 s)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert {"a": 1} == {host: g["count"] for host, g in groups(view, "errors-per-host").items()}


def test_state_reads_the_shared_state_in_redis(tmp_path: Path) -> None:
    """With `state: {backend: redis}`, the state (and the engine clock) come from Redis,
    through the backend's own read of it, which writes nothing there."""
    server = RedisServer(tmp_path / "redis")
    try:
        (tmp_path / "rules").mkdir()
        (tmp_path / "rules" / "r.yaml").write_text(RULES)
        config = tmp_path / "rulesd.yaml"
        state_config = {"backend": "redis", "url": server.url, "instance": "a"}
        config.write_text(yaml.safe_dump({"rules": ["rules"], "source": {"type": "stdin"}, "state": state_config}))
        engine = Engine(ruleset_from_yaml(RULES))
        for host in ("a", "a", "b"):
            engine.evaluate({"kind": "error", "host": host}, 1_767_225_600.0)
        store = RedisState(server.client(), instance="a")
        store.publish_rules("rules")
        store.load_engine_state()
        now = time.time()
        store.commit(positions={}, payloads=[], now=now, engine=engine.state.delta(), clock=engine.now)
        keys = sorted(server.client().keys())
        result = rulesd_cli("state", "--config", str(config), "--format", "json")
        assert (0, "") == (result.returncode, result.stderr)
        view = json.loads(result.stdout)
        assert "engine" == view["clock_source"]
        assert 1_767_225_600.0 + (time.time() - now) + 1 >= seconds(view["clock"]) >= 1_767_225_600.0
        assert {"a": 2, "b": 1} == {host: g["count"] for host, g in groups(view, "errors-per-host").items()}
        assert keys == sorted(server.client().keys())  # nothing written
    finally:
        server.stop()


# The deepest line the parser takes as an event (orjson reads 1,024 levels), grouped by its deep value.
DEEP_HEARTBEAT = {"kind": "heartbeat", "host": "deep", "v": orjson.loads("[" * 1023 + "]" * 1023)}
DEEP_RULES = "rules:\n  - name: beat\n    match: {kind: heartbeat}\n    absence: {window: 1h, group_by: [host, v]}\n"


def test_state_shows_a_group_nested_as_deep_as_events_go(workspace: Workspace) -> None:
    """An absence group whose value is nested 1,023 levels deep is shown, as text and as JSON:
    `rulesd state` ran out of recursion printing it and ended in a traceback."""
    (workspace.rules / "rules.yaml").write_text(DEEP_RULES)
    (workspace.root / "state").mkdir()
    engine = Engine(ruleset_from_yaml(DEEP_RULES))
    engine.evaluate(DEEP_HEARTBEAT, time.time())
    path = workspace.root / "state" / "state.sqlite"
    SqliteState(str(path)).commit(positions={}, payloads=[], now=time.time(), engine=engine.state.delta())
    text = rulesd_cli("state", "--config", str(workspace.config))
    assert (0, "") == (text.returncode, text.stderr), text.stderr[-2000:]
    assert 'host="deep", v=' + "[" * 1023 + "]" * 1023 + ": last seen" in text.stdout, text.stdout
    shown = rulesd_cli("state", "--config", str(workspace.config), "--format", "json")
    assert (0, "") == (shown.returncode, shown.stderr), shown.stderr[-2000:]
    (group,) = read_json(shown.stdout)["rules"][0]["groups"]
    assert compact_json(DEEP_HEARTBEAT["v"]) == compact_json(group["group"]["v"])  # (== recurses)
