"""End-to-end tests of scale-out on Redis: real `rulesd run` and `rulesd forward` processes, a
real redis-server (AOF, appendfsync always) and a loopback OpsGenie.

The yardstick is `rulesd replay` on the same events: N instances on one stream must deliver
exactly its alerts, in its order (duplicates only within the allowances after a fault).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import msgspec
import pytest
import redis
import yaml

from rulesd.daemon.build import stream_reader
from rulesd.daemon.shared import SharedDaemon
from rulesd.state import StateUnavailable
from rulesd.state.redis import LEASE_S, Conflict, RedisState
from tests.daemon_process import (
    API_KEY,
    DaemonProcess,
    Workspace,
    daemon_parts,
    http_get,
    install_key,
    reload_between_batches,
    wait_until,
)
from tests.fake_opsgenie import FakeOpsGenie, Received, Reply
from tests.redis_server import RedisServer
from tests.run_cli import clean_env
from tests.test_e2e_daemon import truncated_quietly_then_killed
from tests.test_e2e_sources import glob_positions_follow_the_files
from tests.test_e2e_timers import VERIFIED
from tests.test_monitoring import samples, scrape
from tests.test_rule_kinds import backup

STREAM = "rulesd:events"
RULES = """
rules:
  - name: brute-force
    match: {event: login_failed}
    threshold: {count: 5, window: 12s, group_by: [user]}
    alert: {message: "brute force on {user}", priority: P2}
  - name: spraying
    match: {event: login_failed}
    distinct: {field: user, count: 4, window: 24s, group_by: [ip]}
  - name: login-after-failures
    sequence:
      group_by: [ip]
      within: 60s
      steps:
        - match: {event: login_failed}
          count: 3
        - match: {event: login_succeeded}
  - name: new-admin-address
    match: {event: login_succeeded, role: admin}
    new_value: {fields: [ip], group_by: [user]}
  - name: heartbeat-missing
    match: {event: heartbeat}
    absence: {window: 18s, group_by: [host]}
  - name: errors
    match: {level: error}
    throttle: 6s
    alert: {message: "error on {host}"}
"""


def events(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """A mix of logins, errors and heartbeats, five per second of event time from four minutes
    from now (instances idle before them move their clock on with the wall clock, as the
    daemon does, so the events must come after however long the instances take to start; and
    no more than 15 minutes ahead, or their times are not believed); host h3's heartbeats stop
    for a while in the middle (its absence fires, then closes)."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    start = int(time.time()) + 240
    for i in range(count):
        t = start + i / 5
        if i % 10 == 0:
            for host in ("h1", "h2", "h3"):
                if host != "h3" or not count // 3 < i < count // 2:
                    out.append({"ts": t, "event": "heartbeat", "host": host})
            continue
        kind = rng.random()
        user, ip = f"u{rng.randrange(12)}", f"10.0.0.{rng.randrange(8)}"
        if kind < 0.6:
            out.append({"ts": t, "event": "login_failed", "user": user, "ip": ip})
        elif kind < 0.8:
            role = "admin" if rng.random() < 0.3 else "user"
            out.append({"ts": t, "event": "login_succeeded", "user": user, "ip": ip, "role": role})
        else:
            out.append({"ts": t, "level": rng.choice(["error", "info"]), "host": f"h{rng.randrange(1, 4)}"})
    return out


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def opsgenie() -> Iterator[FakeOpsGenie]:
    with FakeOpsGenie() as fake:
        yield fake


class Fleet:
    """Rules, configs and processes of instances sharing one Redis."""

    def __init__(self, root: Path, redis_url: str, alert_url: str, rules: str = RULES) -> None:
        self.root, self.redis_url, self.alert_url = root, redis_url, alert_url
        (root / "rules").mkdir(parents=True, exist_ok=True)
        (root / "rules" / "rules.yaml").write_text(rules)
        install_key(root / "opsgenie.key")
        self.processes: list[DaemonProcess] = []

    def config(self, name: str, *, rules: str = "rules", **extra: Any) -> Path:
        """A config for instance `name` (its own state directory) in stream mode, unless `extra` says otherwise."""
        config: dict[str, Any] = {
            "rules": [rules],
            "time_field": "ts",
            "source": {"type": "redis_stream", "url": self.redis_url, "stream": STREAM, "claim_idle": "1s"},
            "state": {"backend": "redis", "url": self.redis_url, "instance": name},
            "state_dir": f"state-{name}",
            "opsgenie": {"api_key_file": "opsgenie.key", "alert_url": f"{self.alert_url}/v2/alerts", "timeout_s": 2},
        }
        config.update(extra)
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self, name: str, **extra: Any) -> DaemonProcess:
        process = DaemonProcess(self.root, ["run", "--config", str(self.config(name, **extra))], None)
        self.processes.append(process)
        assert process.wait_for_log("rulesd started", 60), process.output()  # (slow on a loaded machine)
        return process

    def start_on_file(self, name: str, path: Path, **extra: Any) -> DaemonProcess:
        """Instance `name` in fleet mode, reading the file at `path`."""
        source = {"type": "file", "path": str(path), "start_at": "beginning"}
        return self.start(
            name, source=source, state={"backend": "redis", "url": self.redis_url, "instance": name}, **extra
        )

    def on_file(self, name: str, path: Path, url: str, **extra: Any) -> Path:
        """The config of instance `name` in fleet mode, reading the file at `path` from its beginning."""
        source = {"type": "file", "path": str(path), "start_at": "beginning"}
        state = {"backend": "redis", "url": url, "instance": name}
        return self.config(name, source=source, state=state, **{"time_field": None, **extra})

    def output(self) -> str:
        return "".join(p.output() for p in self.processes)


def replayed(root: Path, config: Path, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What `rulesd replay --config` says would be sent for `lines`, as requests."""
    path = root / "replayed.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    out = subprocess.run(
        [sys.executable, "-m", "rulesd", "replay", "--config", str(config), "--format", "json", str(path)],
        capture_output=True,
        check=True,
        env=clean_env(None),
        cwd=root,
    )
    return [json.loads(line) for line in out.stdout.splitlines()]


class Replayed(msgspec.Struct):
    """What replay sends for some events (as `normalised`), and after them what their timers
    still pending at the end send (the absences of the last heartbeats): replay never fires
    these, but a daemon's clock goes on with the wall clock once the events stop, so they come
    once the stream has been idle for their window (18 s: while the last alerts are still being
    delivered, on a loaded machine)."""

    alerts: list[dict[str, Any]]
    tail: list[dict[str, Any]]

    def check(self, sent: list[dict[str, Any]]) -> None:
        """`sent` (repeats removed) is replay's alerts in order, then none, some or all of the
        tail: fired together, at one clock time, in an order of their own."""
        assert self.alerts == sent[: len(self.alerts)]
        extra = sent[len(self.alerts) :]
        assert len(extra) <= len(self.tail) and all(alert in self.tail for alert in extra), extra


def replay_alerts(root: Path, config: Path, lines: list[dict[str, Any]]) -> Replayed:
    """Replay's alerts for `lines`, with the tail a minute of event time later would add."""
    alerts = normalised(replayed(root, config, lines))
    later = normalised(replayed(root, config, [*lines, {"ts": lines[-1]["ts"] + 60, "event": "end"}]))
    assert alerts == later[: len(alerts)]
    return Replayed(alerts, later[len(alerts) :])


def as_sent(request: Received) -> dict[str, Any]:
    """A request as replay prints it: a create's body without its event source, or a close."""
    if request.path.split("?")[0].endswith("/close"):
        alias = unquote(request.path.split("?")[0].split("/")[-2])
        # The note names each rule, followed by why it let go unless its group recovered.
        names = request.json()["note"].removeprefix("resolved: ").split(", ")
        found = [re.fullmatch(r"(.*?)(?: \((.*)\))?", name) for name in names]
        rules = [m[1] if m else name for m, name in zip(found, names, strict=True)]
        return {"close": alias, "rules": rules, "reasons": [(m and m[2]) or "recovered" for m in found]}
    body = request.json()
    body["details"].pop("Event Source", None)
    return body


def normalised(expected: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for item in expected:
        item = json.loads(json.dumps(item))
        if "close" in item:
            item["close"] = unquote(item["close"])
        else:
            item["details"].pop("Event Source", None)
        out.append(item)
    return out


def delivered(server: FakeOpsGenie) -> tuple[list[dict[str, Any]], int]:
    """The requests in order with repeats removed (a repeat is the same request again), and
    how many repeats there were."""
    seen: set[tuple[str, bytes]] = set()
    unique = []
    for request in list(server.requests):
        key = (request.path, request.body)
        if key in seen:
            continue
        seen.add(key)
        unique.append(as_sent(request))
    return unique, len(server.requests) - len(unique)


def feed(redis_server: RedisServer, lines: list[dict[str, Any]], per_entry: int = 20) -> None:
    """Append `lines` to the stream: entries of `per_entry` events, every fifth a single `event` entry."""
    client = redis_server.client()
    for n, i in enumerate(range(0, len(lines), per_entry)):
        chunk = lines[i : i + per_entry]
        if n % 5 == 4:
            for event in chunk:
                client.xadd(STREAM, {"event": json.dumps(event)})
        else:
            client.xadd(STREAM, {"events": "\n".join(json.dumps(e) for e in chunk)})


def settled(redis_server: RedisServer) -> bool:
    """Every stream entry delivered to the group and committed."""
    try:
        groups = redis_server.client().xinfo_groups(STREAM)
    except Exception:
        return False
    return bool(groups) and all(g["pending"] == 0 and g["lag"] == 0 for g in groups)


def backlog(redis_server: RedisServer) -> int:
    """Stream entries not yet committed (pending or not yet read); -1 before the group is made."""
    try:
        return sum(int(g["pending"]) + int(g["lag"] or 0) for g in redis_server.client().xinfo_groups(STREAM))
    except redis.exceptions.ResponseError:
        return -1


def wait_for_delivery(server: FakeOpsGenie, redis_server: RedisServer, expected: int, stall: float = 60.0) -> None:
    """Until every entry is committed and `expected` alerts are delivered: however long that
    takes while the work goes on (on a loaded machine hundreds of alerts take minutes), but
    no more than `stall` seconds without an entry committed or an alert delivered."""
    seen, since = (-2, -2), time.monotonic()
    while not (settled(redis_server) and len(delivered(server)[0]) >= expected):
        now = (backlog(redis_server), len(server.requests))
        if now != seen:
            seen, since = now, time.monotonic()
        assert time.monotonic() - since < stall, f"stalled: {now[1]} of {expected} alerts, backlog {now[0]}"
        time.sleep(0.1)
    time.sleep(1.5)  # what comes next (an alert twice, or one replay does not send) is checked too


@pytest.mark.parametrize("instances", [1, 3])
def test_instances_on_one_stream_send_exactly_what_replay_sends(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie, instances: int
) -> None:
    """1 and 3 instances: the same alerts (rules, aliases, payloads) in the same order as
    replay, thresholds counted across instances, each delivered once."""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url)
    lines = events(3000)
    expected = replay_alerts(tmp_path, fleet.config("replay"), lines)
    assert len(expected.alerts) > 40 and {"brute-force", "spraying", "heartbeat-missing"} <= {
        r for e in expected.alerts for r in json.loads(e.get("details", {}).get("Triggering Rules", "[]"))
    }
    for i in range(instances):
        fleet.start(f"i{i}")
    feed(redis_server, lines)
    wait_for_delivery(opsgenie, redis_server, len(expected.alerts))
    sent, repeats = delivered(opsgenie)
    expected.check(sent)
    assert 0 == repeats, "a duplicate without any fault"
    if instances > 1:
        counts = [p.output().count("committed") for p in fleet.processes]
        assert all(counts), f"every instance committed some batches: {counts}"


def consumers_pending(redis_server: RedisServer) -> dict[str, int]:
    """Entries pending per consumer of the group."""
    info = redis_server.client().xpending(STREAM, "rulesd")
    return {c["name"].decode(): int(c["pending"]) for c in info["consumers"]}


def hold_entries(
    redis_server: RedisServer,
    process: DaemonProcess,
    name: str,
    chunk: list[dict[str, Any]],
    others: list[DaemonProcess],
) -> None:
    """Stop `process` (SIGSTOP) while it waits for entries, then append `chunk` one entry at a
    time: Redis hands some of them to the stopped reader, which now holds them pending. The
    `others` are stopped for a moment first, their reads ended, so that Redis has no other
    reader to hand the entries to (on a loaded machine it gave them all to the others)."""
    client = redis_server.client()
    for _attempt in range(40):
        wait_until(lambda: settled(redis_server), 20, 0.05)
        for other in others:
            other.proc.send_signal(signal.SIGSTOP)
        time.sleep(0.5)  # the others' reads ended (they wait 200 ms for entries); `process` reads again
        process.proc.send_signal(signal.SIGSTOP)
        for event in chunk[:10]:
            client.xadd(STREAM, {"event": json.dumps(event)})
        chunk = chunk[10:]
        time.sleep(0.2)
        for other in others:
            other.proc.send_signal(signal.SIGCONT)
        if consumers_pending(redis_server).get(name):
            feed(redis_server, chunk)
            return
        process.proc.send_signal(signal.SIGCONT)
    raise AssertionError(f"{name} never held an entry")


def check_allowances(server: FakeOpsGenie, expected: Replayed, faults: int) -> None:
    """Every alert of replay in its order; at most one extra delivery per alert and five in
    all for each fault."""
    sent, repeats = delivered(server)
    expected.check(sent)
    per_request: dict[tuple[str, bytes], int] = {}
    for request in server.requests:
        key = (request.path, request.body)
        per_request[key] = per_request.get(key, 0) + 1
    assert max(per_request.values()) <= 1 + faults
    assert repeats <= 5 * faults


def test_a_killed_and_a_paused_instance_lose_and_double_nothing(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """Of 3 instances one is killed (kill -9) holding entries and one paused past claim_idle
    holding entries: the others claim them; the paused one, back, commits nothing twice. The
    alerts are replay's, thresholds not doubled, deliveries within the allowances."""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url)
    lines = events(3000, seed=11)
    expected = replay_alerts(tmp_path, fleet.config("replay"), lines)
    processes = [fleet.start(f"i{i}") for i in range(3)]
    parts = [lines[i : i + 500] for i in range(0, len(lines), 500)]
    feed(redis_server, parts[0])
    hold_entries(redis_server, processes[0], "i0", parts[1], processes[1:])
    processes[0].kill()  # kill -9 while it holds entries
    hold_entries(redis_server, processes[1], "i1", parts[2], processes[2:])
    time.sleep(2.5)  # paused past claim_idle (1s): its entries are claimed and committed by i2
    processes[1].proc.send_signal(signal.SIGCONT)
    for part in parts[3:]:
        feed(redis_server, part)
    wait_for_delivery(opsgenie, redis_server, len(expected.alerts))
    check_allowances(opsgenie, expected, faults=2)
    assert "claimed" in fleet.output()
    assert processes[1].proc.poll() is None and processes[2].proc.poll() is None


def test_a_redis_restart_mid_stream_loses_nothing_committed(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """Redis killed and started again (AOF, appendfsync always) mid-stream: instances stay up,
    say the state is unavailable, resume; the alerts are replay's."""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url)
    lines = events(2000, seed=5)
    expected = replay_alerts(tmp_path, fleet.config("replay"), lines)
    processes = [fleet.start(f"i{i}") for i in range(2)]
    feed(redis_server, lines[:1000])
    wait_until(lambda: settled(redis_server), 20, 0.05)
    feed(redis_server, lines[1000:1200])
    redis_server.restart(down_for=1.5)
    feed(redis_server, lines[1200:])
    wait_for_delivery(opsgenie, redis_server, len(expected.alerts))
    check_allowances(opsgenie, expected, faults=1)
    assert "state unavailable" in fleet.output()
    assert all(p.proc.poll() is None for p in processes)


def test_workers_go_on_after_redis_comes_back_empty(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """Redis emptied under running workers (FLUSHALL: a restart without its data, the stream
    deleted): the workers make the consumer group again and evaluate what comes next (they
    stopped on NOGROUP or UNBLOCKED, a fatal error each)."""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url)
    processes = [fleet.start(f"i{i}") for i in range(2)]
    page = {"ts": int(time.time()), "level": "error", "host": "h1"}
    feed(redis_server, [page])
    assert opsgenie.wait_for(lambda r: len(r) == 1, 20)
    time.sleep(1.0)  # its delivery seen by both (one delivered in the moment before would be queued again)
    redis_server.client().flushall()
    time.sleep(1)
    feed(redis_server, [{**page, "host": "h2"}])
    assert opsgenie.wait_for(lambda r: len(r) == 2, 20), fleet.output()
    assert ["error on h1", "error on h2"] == [r.json()["message"] for r in opsgenie.requests]
    assert "consumer group rulesd is gone" in fleet.output()
    assert all(p.proc.poll() is None for p in processes), fleet.output()


def test_an_instance_taking_the_outbox_over_from_one_whose_key_is_refused_sends_at_once(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """Instance a's key is refused (401): its sender pauses and gives the sender's lease up.
    Instance b, whose key works, started then, takes the outbox over at its first look and
    sends the alert at once: it waited for a's lease to lapse (15 s), and then out a's pause,
    60 s after the refusal, although its own key had never been refused. a, still paused,
    tries nothing more meanwhile (its refused key is not tried again)."""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url)
    refused = install_key(tmp_path / "refused.key").read_text().strip()[::-1]
    (tmp_path / "refused.key").write_text(refused + "\n")
    os.utime(tmp_path / "refused.key", (time.time() - 60, time.time() - 60))
    opsgenie.responder = lambda r: Reply(401) if refused in r.headers.get("Authorization", "") else Reply()
    opsgenie_a = {"api_key_file": "refused.key", "alert_url": f"{opsgenie.url}/v2/alerts", "timeout_s": 2}
    a = fleet.start("a", opsgenie=opsgenie_a)
    feed(redis_server, [{"ts": int(time.time()), "level": "error", "host": "h1"}])
    assert a.wait_for_log("delivery paused", 20), a.output()
    b = fleet.start("b")
    started = time.monotonic()
    assert opsgenie.wait_for(lambda r: any(f"GenieKey {API_KEY}" == x.headers.get("Authorization") for x in r), 45)
    took = time.monotonic() - started
    assert took < LEASE_S / 3, (took, fleet.output())  # b's first looks, not a's lease nor a's pause
    time.sleep(1.0)
    statuses = [
        (x.headers.get("Authorization") == f"GenieKey {API_KEY}", x.json()["message"]) for x in opsgenie.requests
    ]
    assert [(False, "error on h1"), (True, "error on h1")] == statuses
    assert "alert 1 delivered" in b.output(), b.output()
    assert a.proc.poll() is None and b.proc.poll() is None


FLEET_RULES = """
rules:
  - name: brute-force
    match: {event: login_failed}
    threshold: {count: 5, window: 10m, group_by: [user]}
    alert: {message: "brute force on {user}"}
"""


def test_fleet_mode_counts_across_hosts_and_keeps_positions_per_instance(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """Two instances on their own files: 3 failed logins on one and 2 on the other are five
    (one alert); a restarted instance resumes at its own position (nothing counted twice)."""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=FLEET_RULES)
    files = {name: tmp_path / f"{name}.jsonl" for name in ("a", "b")}
    for path in files.values():
        path.touch()

    def start(name: str) -> DaemonProcess:
        return fleet.start_on_file(name, files[name])

    def append(name: str, count: int) -> None:
        with open(files[name], "a") as fh:
            fh.write("".join(json.dumps({"event": "login_failed", "user": "x"}) + "\n" for _ in range(count)))

    a, b = start("a"), start("b")
    append("a", 3)
    assert a.wait_for_log("committed version")
    append("b", 2)
    assert opsgenie.wait_for(lambda r: len(r) >= 1, 15)
    append("a", 4)
    assert wait_until(lambda: a.stderr().count("committed version") >= 2, 15)
    assert 0 == a.terminate()
    a = start("a")  # resumes after its 7 lines: none of them counts again
    append("b", 1)
    assert opsgenie.wait_for(lambda r: len(r) >= 2, 15)
    time.sleep(1.0)
    assert ["brute force on x", "brute force on x"] == [r.json()["message"] for r in opsgenie.requests]
    assert 0 == b.terminate() and 0 == a.terminate()


def test_forward_restarted_sends_no_line_twice_and_skips_none(tmp_path: Path, redis_server: RedisServer) -> None:
    """`rulesd forward` killed (kill -9) and stopped (SIGTERM, exit 0) while lines keep coming:
    the stream holds every line once, in order."""
    log_file = tmp_path / "app.jsonl"
    log_file.touch()
    config = tmp_path / "forward.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "source": {"type": "file", "path": str(log_file), "start_at": "beginning"},
                "state_dir": "state",
                "forward": {"url": redis_server.url, "stream": STREAM, "batch_lines": 50},
            }
        )
    )
    written = 0

    def write(count: int) -> None:
        nonlocal written
        with open(log_file, "a") as fh:
            fh.write("".join(json.dumps({"n": written + i}) + "\n" for i in range(count)))
        written += count

    def in_stream() -> list[int]:
        out = []
        for _, fields in redis_server.client().xrange(STREAM):
            out += [json.loads(line)["n"] for line in fields[b"events"].split(b"\n")]
        return out

    def start() -> DaemonProcess:
        process = DaemonProcess(tmp_path, ["forward", "--config", str(config)], None)
        assert process.wait_for_log("rulesd forward started"), process.output()
        return process

    forwarder = start()
    for _ in range(5):
        write(300)
        time.sleep(0.05)
    forwarder.kill()  # kill -9, wherever it was
    write(200)
    forwarder = start()
    write(300)
    assert wait_until(lambda: len(in_stream()) >= written, 15)
    assert 0 == forwarder.terminate()
    write(100)
    forwarder = start()
    assert wait_until(lambda: len(in_stream()) >= written, 15)
    assert 0 == forwarder.terminate()
    assert list(range(written)) == in_stream()


def start_forward(tmp_path: Path, log_file: Path, redis_server: RedisServer) -> DaemonProcess:
    """`rulesd forward` of `log_file` from its beginning to STREAM, once it has started."""
    config = tmp_path / "forward.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "source": {"type": "file", "path": str(log_file), "start_at": "beginning"},
                "state_dir": "state",
                "forward": {"url": redis_server.url, "stream": STREAM},
            }
        )
    )
    forwarder = DaemonProcess(tmp_path, ["forward", "--config", str(config)], None)
    assert forwarder.wait_for_log("rulesd forward started"), forwarder.output()
    return forwarder


def test_forward_appends_json_lines_as_they_were_written(tmp_path: Path, redis_server: RedisServer) -> None:
    """Each JSON line goes into the stream byte for byte, a CR before its newline kept, blank
    lines left out, the lines of an entry joined by one newline each."""
    log_file = tmp_path / "app.jsonl"
    log_file.write_bytes(b'{"n": 0}\r\n\n{"n": 1, "s": "\xc2\x85\x0b"}\n  \n{"n": 2}\n')
    forwarder = start_forward(tmp_path, log_file, redis_server)
    client = redis_server.client()
    assert wait_until(lambda: client.xlen(STREAM) >= 1, 15)
    assert 0 == forwarder.terminate(), forwarder.output()
    entries = [fields[b"events"] for _, fields in client.xrange(STREAM)]
    assert [b'{"n": 0}\r\n{"n": 1, "s": "\xc2\x85\x0b"}\n{"n": 2}'] == entries


def test_forward_waits_out_a_busy_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    """A script keeping Redis busy (BUSY answers) is Redis unavailable for a while: the
    forwarder says so once, retries every second and goes on (it does not stop), and says when
    it appended again."""
    log_file = tmp_path / "app.jsonl"
    log_file.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(10)))
    forwarder = start_forward(tmp_path, log_file, redis_server)
    thread = redis_server.busy(2)
    with open(log_file, "a") as fh:
        fh.write("".join(json.dumps({"n": i}) + "\n" for i in range(10, 20)))
    thread.join()
    client = redis_server.client()
    assert wait_until(lambda: sum(len(f[b"events"].split(b"\n")) for _, f in client.xrange(STREAM)) >= 20, 15)
    output = forwarder.output()
    # Said once (not every second of an outage), and its end too.
    assert 1 == output.count("cannot append to the stream, retrying: Redis unavailable: BUSY"), output
    assert wait_until(lambda: "appended to the stream again, after " in forwarder.output())
    assert 0 == forwarder.terminate(), forwarder.output()


def test_a_forwarder_with_batch_lines_written_as_a_whole_float_forwards(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """`batch_lines: 3.0` passes the schema as an integer; `rulesd forward` failed with a
    TypeError (range() by a float) at its first batch and exited 1. It is 3 lines an entry."""
    log_file = tmp_path / "app.jsonl"
    log_file.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(7)))
    config = tmp_path / "forward.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "source": {"type": "file", "path": str(log_file), "start_at": "beginning", "max_line_bytes": 4096.0},
                "state_dir": "state",
                "forward": {"url": redis_server.url, "stream": STREAM, "batch_lines": 3.0},
            }
        )
    )
    forwarder = DaemonProcess(tmp_path, ["forward", "--config", str(config)], None)
    client = redis_server.client()
    assert wait_until(lambda: len(client.xrange(STREAM)) >= 3, 15), forwarder.output()
    assert [3, 3, 1] == [len(f[b"events"].split(b"\n")) for _, f in client.xrange(STREAM)]
    assert 0 == forwarder.terminate(), forwarder.output()


def test_a_database_number_redis_does_not_have_is_said_once_not_a_traceback(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A url naming database 99 of a Redis with 16: Redis refuses the connection's SELECT;
    every command says so in one line and exits 1 (they ended in a traceback)."""
    url = redis_server.url.removesuffix("/0") + "/99"
    (tmp_path / "app.jsonl").touch()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(RULES)
    file_source = {"type": "file", "path": "app.jsonl"}
    configs = {
        "fleet": {"source": file_source, "state": {"backend": "redis", "url": url}, "opsgenie": {"api_key": "k"}},
        "forward": {"source": file_source, "forward": {"url": url}},
    }
    for name, config in configs.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**config, "state_dir": f"state-{name}"}))
    for command in (["run"], ["state"], ["outbox", "list"], ["forward", "--config", "forward.yaml"]):
        args = command if "--config" in command else [*command, "--config", "fleet.yaml"]
        result = subprocess.run(
            [sys.executable, "-m", "rulesd", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=clean_env(),
            timeout=30,
        )
        assert 1 == result.returncode, result.stderr
        assert "Redis refused the database number of the url: DB index is out of range" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_stream_worker_needs_redis_at_start(tmp_path: Path, redis_server: RedisServer) -> None:
    """As README says of every instance: without Redis at start (down, or a database it does
    not have) a stream worker exits 1 and names why and the setting (it said it had started,
    then waited, or ended in a traceback)."""
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9")

    def run(config: Path) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, "-m", "rulesd", "run", "--config", str(config)]
        return subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=clean_env(), timeout=30)

    missing_db = redis_server.url.removesuffix("/0") + "/99"
    other_db = fleet.config(
        "b",
        source={"type": "redis_stream", "url": missing_db},
        state={"backend": "redis", "url": missing_db, "instance": "b"},
    )
    redis_server.stop()
    down = run(fleet.config("a"))
    redis_server.start()
    for result, why in ((down, "Redis unavailable"), (run(other_db), "Redis refused the database number")):
        assert 1 == result.returncode, result.stderr
        assert result.stderr.startswith(f"rulesd: error: cannot start: {why}"), result.stderr
        assert result.stderr.splitlines()[0].endswith("(state.url)"), result.stderr  # the setting to look at
        assert "started" not in result.stderr and "Traceback" not in result.stderr


OTHER_RULES = RULES.replace("count: 5, window: 12s", "count: 4, window: 12s")


def test_instances_with_other_rules_refuse_until_a_reload_brings_the_same(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """An instance whose rules differ from the published ones commits nothing and says so with
    both hashes; once its rules are the same (reload), its batches go through: every alert is
    replay's under the published rules."""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "rules.yaml").write_text(OTHER_RULES)
    client = redis_server.client()
    first = fleet.start("i0")
    assert wait_until(lambda: client.get("rulesd:rules") is not None, 15)
    published = client.get("rulesd:rules")
    fleet.start("i1", rules="other")  # publishes its own rule set: i0's differs from it now
    assert wait_until(lambda: client.get("rulesd:rules") != published, 15)
    lines = events(1500, seed=3)
    feed(redis_server, lines)
    assert first.wait_for_log("refusing to commit: rule set", 20)
    (tmp_path / "rules" / "rules.yaml").write_text(OTHER_RULES)  # i0 reloads: the rule sets agree
    expected = replay_alerts(tmp_path, fleet.config("replay", rules="other"), lines)
    wait_for_delivery(opsgenie, redis_server, len(expected.alerts))
    check_allowances(opsgenie, expected, faults=0)
    refusal = next(line for line in fleet.output().splitlines() if "refusing to commit" in line)
    assert "differs from the published rule set" in refusal


def test_outbox_commands_read_the_shared_outbox(tmp_path: Path, redis_server: RedisServer) -> None:
    """`rulesd outbox list` and `retry-dead` with `state: {backend: redis}` work on the queue in Redis."""
    from rulesd.state.redis import RedisState
    from tests.run_cli import rulesd_cli

    store = RedisState(redis_server.client(), instance="x")
    store.publish_rules("R")
    store.load_engine_state()
    store.commit(positions={}, payloads=[{"message": "one", "details": {}}, {"message": "two", "details": {}}], now=1.0)
    first = store.alerts()[0]
    store.dead_letter(first.id, "HTTP 422")
    config = tmp_path / "rulesd.yaml"
    config.write_text(yaml.safe_dump({"state": {"backend": "redis", "url": redis_server.url}, "state_dir": "s"}))
    listed = rulesd_cli("outbox", "list", "--config", str(config), "--format", "json", cwd=tmp_path)
    assert 0 == listed.returncode, listed.stderr
    assert [("one", "dead"), ("two", "pending")] == [(r["message"], r["state"]) for r in json.loads(listed.stdout)]
    requeued = rulesd_cli("outbox", "retry-dead", "--config", str(config), cwd=tmp_path)
    assert "requeued 1" in requeued.stdout
    assert ["two", "one"] == [alert.payload["message"] for alert in store.alerts()]


def test_instances_reloading_a_rule_set_without_an_open_alerts_rule_close_it_once(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """Three fleet instances share an absence's open alert; the rule file saved without it
    reloads them all at once (file watch and SIGHUP): each restores the shared state, one
    commits the close (the others find it committed), and OpsGenie gets it once."""
    heartbeat = "name: heartbeat-missing\nmatch: {event: heartbeat}\nabsence: {window: 2s, group_by: [host]}\n"
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=heartbeat)
    files = {name: tmp_path / f"{name}.jsonl" for name in ("a", "b", "c")}
    for path in files.values():
        path.touch()
    instances = [
        fleet.start(
            name,
            time_field=None,
            source={"type": "file", "path": str(path), "start_at": "beginning"},
            state={"backend": "redis", "url": redis_server.url, "instance": name},
        )
        for name, path in files.items()
    ]
    files["a"].write_text(json.dumps({"event": "heartbeat", "host": "w1"}) + "\n")
    assert opsgenie.wait_for(lambda r: len(r) == 1, 15), fleet.output()
    clock = list(redis_server.client().scan_iter(match="*clock"))
    assert 1 == len(clock)
    fired_at = redis_server.client().get(clock[0])  # the shared clock (event time, wall time) at the firing
    (tmp_path / "rules" / "rules.yaml").write_text("name: other\nmatch: {event: other}\n")
    for process in instances:
        process.proc.send_signal(signal.SIGHUP)
    assert opsgenie.wait_for(lambda r: len(r) == 2, 15), fleet.output()
    assert all(wait_until(lambda p=p: "reload ok" in p.stderr(), 10) for p in instances)
    time.sleep(2.0)
    close = {
        "close": 'rulesd: heartbeat-missing: {"host":"w1"}',
        "rules": ["heartbeat-missing"],
        "reasons": ["rule removed"],
    }
    assert close == as_sent(opsgenie.requests[1])
    assert 2 == len(opsgenie.requests), fleet.output()
    # The close moved no clock: committed with a wall time and no time passed, it would hold
    # the shared clock back by the time since the firing.
    assert fired_at == redis_server.client().get(clock[0])
    assert all(0 == p.terminate() for p in instances)


def test_an_instance_under_load_commits_the_closes_of_a_reload_with_its_next_batch(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """With no idle moment between a reload and the next batch, the closes the restored shared
    state made go into that batch's commit, with the state that no longer holds the open alert
    (applying a batch takes what the engine holds only after a matched event, and a rule set
    without timers has no other moment to)."""
    from rulesd.daemon.shared import SharedDaemon
    from rulesd.state.redis import RedisState

    wall = [time.time()]
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"event": "heartbeat", "host": "w1"}) + "\n")
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9")
    (tmp_path / "rules" / "rules.yaml").write_text(
        "name: heartbeat-missing\nmatch: {event: heartbeat}\nabsence: {window: 2s, group_by: [host]}\n"
    )
    source = {"type": "file", "path": str(events), "start_at": "beginning"}
    state = {"backend": "redis", "url": redis_server.url, "instance": "a"}
    with daemon_parts(fleet.config("a", time_field=None, source=source, state=state), lambda: wall[0]) as parts:
        assert isinstance(parts.store, RedisState)
        daemon = SharedDaemon(parts, parts.store, None)
        daemon.shared.start()
        daemon._started = True
        versions: list[int] = []

        def step() -> None:
            versions.append(parts.store.version)
            assert daemon._step()

        reload_between_batches(daemon, step, wall, tmp_path / "rules" / "rules.yaml", events, "event")
        assert versions[-1] + 1 == parts.store.version  # the batch after the reload: one commit
        queued = [(a.action, a.target or a.payload["message"]) for a in parts.store.alerts()]
        alias = 'rulesd: heartbeat-missing: {"host":"w1"}'
        assert [("create", "rulesd: heartbeat-missing"), ("close", alias)] == queued
        assert "absence" not in (parts.store.load_engine_state() or {})


def test_an_alert_two_rules_fired_together_is_closed_once_by_the_instance_that_sees_both_recover(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """errors-a (after 1s) and errors-b (after 5s) fire on one event on instance a: one alert.
    errors-a recovering closes nothing while errors-b holds it; a stops, and instance b,
    restoring the shared state, closes it once when errors-b recovers, the note naming both."""
    rules = (
        "rules:\n"
        "  - {name: errors-a, match: {level: error}, threshold: {count: 1, window: 1m, group_by: [host]},"
        " resolve: {after: 1s}}\n"
        "  - {name: errors-b, match: {level: error}, threshold: {count: 1, window: 1m, group_by: [host]},"
        " resolve: {after: 5s}}\n"
    )
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=rules)
    files = {name: tmp_path / f"{name}.jsonl" for name in ("a", "b")}
    for path in files.values():
        path.touch()

    def open_rules() -> list[str]:
        fields = redis_server.client().hkeys("rulesd:groups")
        return sorted(f.decode().split("\t")[1] for f in fields if f.startswith(b"open\t"))

    first = fleet.start_on_file("a", files["a"], time_field=None)
    files["a"].write_text(json.dumps({"level": "error", "host": "a"}) + "\n")
    assert opsgenie.wait_for(lambda r: len(r) == 1, 15), fleet.output()
    shared = 'rulesd: errors-a, errors-b: {"host":"a"}'
    assert shared == opsgenie.requests[0].json()["alias"]
    assert wait_until(lambda: open_rules() == ["errors-b"], 10), fleet.output()
    time.sleep(0.5)
    assert 1 == len(opsgenie.requests), fleet.output()
    assert 0 == first.terminate()
    second = fleet.start_on_file("b", files["b"], time_field=None)
    assert opsgenie.wait_for(lambda r: len(r) == 2, 15), fleet.output()
    assert {"close": shared, "rules": ["errors-a", "errors-b"], "reasons": ["recovered"] * 2} == as_sent(
        opsgenie.requests[1]
    )
    assert wait_until(lambda: open_rules() == [], 10), fleet.output()
    time.sleep(1.0)
    assert 0 == second.terminate()
    assert 2 == len(opsgenie.requests), fleet.output()


PASSWORD = "pw-0123456789"


def test_credentials_redis_refuses_at_start_are_a_configuration_error(tmp_path: Path) -> None:
    """A wrong password, none where Redis wants one, or an ACL user without the keys' permission:
    `rulesd run` and `rulesd forward` exit 2 (systemd does not restart them: a restart cannot
    help) naming the setting, never the password; they said "Redis unavailable" and exited 1
    (restarted for ever), or ended in a NOPERM traceback."""
    server = RedisServer(tmp_path / "redis", password=PASSWORD)
    try:
        server.client().acl_setuser(
            "narrow", enabled=True, passwords=["+narrow-pw"], keys=["other:*"], commands=["+@all"]
        )
        (tmp_path / "app.jsonl").touch()
        (tmp_path / "rules").mkdir()
        (tmp_path / "rules" / "rules.yaml").write_text(FLEET_RULES)
        base = f"127.0.0.1:{server.port}/0"
        cases = {
            "wrong password": (f"redis://:not-{PASSWORD}@{base}", "invalid username-password pair"),
            "no password": (f"redis://{base}", "Authentication required"),
            "no permission": (f"redis://narrow:narrow-pw@{base}", "no permissions"),
        }
        for name, (url, why) in cases.items():
            source = {"type": "file", "path": "app.jsonl"}
            run = {"source": source, "state": {"backend": "redis", "url": url}, "opsgenie": {"api_key": "k"}}
            forward = {"source": source, "forward": {"url": url}}
            for command, config, setting in (("run", run, "state.url"), ("forward", forward, "forward.url")):
                path = tmp_path / f"{command}.yaml"
                path.write_text(yaml.safe_dump({**config, "state_dir": f"state-{command}", "rules": ["rules"]}))
                result = subprocess.run(
                    [sys.executable, "-m", "rulesd", command, "--config", str(path)],
                    capture_output=True,
                    text=True,
                    cwd=tmp_path,
                    env=clean_env(),
                    timeout=30,
                )
                assert 2 == result.returncode, (name, command, result.stderr)
                first = result.stderr.splitlines()[0]
                assert "Redis authentication failed: " in first and why in first, (name, command, first)
                assert f"fix the user or password in {setting}" in first, first
                assert "unavailable" not in result.stderr and "Traceback" not in result.stderr, result.stderr
                assert PASSWORD not in result.stderr and "narrow-pw" not in result.stderr
    finally:
        server.stop()


def test_a_password_rotated_under_a_running_instance_is_waited_out_and_said(
    tmp_path: Path, opsgenie: FakeOpsGenie
) -> None:
    """Redis's password changes under a running instance (its connections dropped): it stays
    up, reads nothing and says "Redis authentication failed" (log, STATUS=, /healthz, /readyz,
    rulesd_state_unavailable), not "unavailable"; once the password is back every alert goes
    once, in order."""
    from tests.test_e2e_systemd import NotifySocket
    from tests.test_state_directory import daemon_status

    server = RedisServer(tmp_path / "redis", password=PASSWORD)
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        fleet = Fleet(tmp_path, server.url, opsgenie.url, rules=PAGE_RULES)
        events_file = tmp_path / "app.jsonl"
        events_file.touch()
        source = {"type": "file", "path": str(events_file), "start_at": "beginning"}
        state = {"backend": "redis", "url": server.url, "instance": "a"}
        config = fleet.config("a", source=source, state=state, metrics={"listen": "127.0.0.1:0"})
        daemon = DaemonProcess(tmp_path, ["run", "--config", str(config)], {"NOTIFY_SOCKET": notify.path})
        fleet.processes.append(daemon)
        assert daemon.wait_for_log("rulesd started"), daemon.output()
        base = daemon.metrics_url().removesuffix("/metrics")

        def append(first: int, count: int) -> None:
            with open(events_file, "a") as fh:
                fh.write("".join(json.dumps({"kind": "page", "id": i}) + "\n" for i in range(first, first + count)))

        append(0, 3)
        assert opsgenie.wait_for(lambda r: len(r) >= 3, 15)
        admin = server.client()
        admin.config_set("requirepass", "rotated")
        admin = redis.Redis(host="127.0.0.1", port=server.port, password="rotated")
        admin.client_kill_filter(_type="normal", skipme=True)  # its connections go: it must log in again
        append(3, 20)
        assert daemon.wait_for_log("Redis authentication failed: "), daemon.stderr()
        assert wait_until(lambda: "Redis authentication failed" in daemon_status(notify))
        live, ready = http_get(f"{base}/healthz"), http_get(f"{base}/readyz")
        assert 200 == live[0] and "Redis authentication failed" in live[1], live
        assert 503 == ready[0] and "Redis authentication failed" in ready[1], ready
        assert "rulesd_state_unavailable 1.0" in http_get(f"{base}/metrics")[1]
        assert "unavailable" not in daemon.stderr() and "unavailable" not in daemon_status(notify), daemon.stderr()
        assert daemon.proc.poll() is None
        assert 3 == len(opsgenie.requests)
        admin.config_set("requirepass", PASSWORD)
        assert daemon.wait_for_log("state available again"), daemon.stderr()
        assert opsgenie.wait_for(lambda r: len(r) >= 23, 20)
        time.sleep(1.0)
        assert [f"p-{i}" for i in range(23)] == [r.json()["alias"] for r in opsgenie.requests]
        assert 0 == daemon.terminate()
        assert PASSWORD not in daemon.output()
    finally:
        notify.close()
        server.stop()


PAGE_RULES = "name: r\nmatch: {kind: page}\nalert: {alias: 'p-{id}'}\n"


def paging_instance(fleet: Fleet, url: str, name: str = "a", **extra: Any) -> tuple[DaemonProcess, Callable[..., None]]:
    """Instance `name` in fleet mode (with PAGE_RULES and `extra` settings) reading its file from
    the beginning, and how to append pages (by id) to that file."""
    events_file = fleet.root / f"{name}.jsonl"
    events_file.touch()
    source = {"type": "file", "path": str(events_file), "start_at": "beginning"}
    daemon = fleet.start(name, source=source, state={"backend": "redis", "url": url, "instance": name}, **extra)

    def append(*ids: int) -> None:
        with open(events_file, "a") as fh:
            fh.write("".join(json.dumps({"kind": "page", "id": i}) + "\n" for i in ids))

    return daemon, append


def test_an_instance_whose_sender_lease_another_took_over_is_not_said_to_be_failing(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """Instance a delivers, OpsGenie answers 503 and a's /readyz says delivery is failing; a is
    paused past its lease (SIGSTOP) and b takes the outbox over. Resumed, a sends nothing (the
    outbox is b's), so its /readyz is 200 again, not 503 for failures that are b's to have."""
    opsgenie.responder = lambda _r: Reply(503)
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=PAGE_RULES)
    events_file = tmp_path / "a.jsonl"
    events_file.write_text(json.dumps({"kind": "page", "id": 1}) + "\n")
    a = fleet.start_on_file("a", events_file, time_field=None, metrics={"listen": "127.0.0.1:0"})
    ready_a = a.metrics_url().replace("/metrics", "/readyz")
    assert wait_until(lambda: http_get(ready_a)[0] == 503, timeout=20), a.output()
    assert http_get(ready_a)[1].startswith("ok\ndelivery failing, 3 attempts in a row: HTTP 503")
    (tmp_path / "b.jsonl").touch()
    b = fleet.start_on_file("b", tmp_path / "b.jsonl", time_field=None)
    lease = redis_server.client()
    a.proc.send_signal(signal.SIGSTOP)
    try:
        taken = wait_until(lambda: (lease.get("rulesd:sender") or b"").startswith(b"b:"), timeout=LEASE_S + 15)
    finally:
        a.proc.send_signal(signal.SIGCONT)
    assert taken, fleet.output()
    assert wait_until(lambda: http_get(ready_a) == (200, "ok\n"), timeout=15), http_get(ready_a)
    assert (lease.get("rulesd:sender") or b"").startswith(b"b:")
    assert 0 == a.terminate() and 0 == b.terminate()


def test_an_open_alert_the_state_limit_forgets_is_closed_once_with_the_shared_state(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """With `limits.groups_per_rule: 2`, three open alerts and enough events for the engine to
    sweep, the stalest open group is forgotten and its alert closed, with a note saying why, in
    the commit that removes it from the shared state: the instance restarted closes nothing
    again."""
    fleet = Fleet(
        tmp_path,
        redis_server.url,
        opsgenie.url,
        rules="rules:\n"
        "  - {name: errors, match: {level: error}, threshold: {count: 1, window: 1m, group_by: [host]},"
        " resolve: {after: 1h}}\n"
        "  - {name: noise, match: {event: noise}, threshold: {count: 1000000, window: 1h}}\n",
    )
    now = time.time()
    lines = [{"level": "error", "host": f"h{i}", "ts": now - 40 + 10 * i} for i in (1, 2, 3)]
    lines += [{"event": "noise", "ts": now}] * 4200  # the engine sweeps every 4096 matched events
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in lines))

    def start(name: str) -> DaemonProcess:
        source = {"type": "file", "path": str(events), "start_at": "beginning"}
        state = {"backend": "redis", "url": redis_server.url, "instance": name}
        return fleet.start(name, source=source, state=state, limits={"groups_per_rule": 2})

    first = start("a")
    assert opsgenie.wait_for(lambda r: len(r) == 4, 20), fleet.output()
    close = {"close": 'rulesd: errors: {"host":"h1"}', "rules": ["errors"], "reasons": ["state limit"]}
    assert close == as_sent(opsgenie.requests[3])
    assert wait_until(lambda: "1 alert(s) closed so far (rules: errors)" in first.stderr()), first.stderr()
    assert 0 == first.terminate()
    second = start("a")  # restarted: it restores the shared state, and its position in the file
    assert wait_until(lambda: "rulesd started" in second.stderr())
    time.sleep(2.0)
    assert 0 == second.terminate()
    assert 4 == len(opsgenie.requests), fleet.output()


def test_a_new_value_group_over_values_per_group_is_trimmed_in_the_shared_state(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """With `limits.values_per_group: 2`, h1's three agents and enough events for the engine to
    sweep: the agent seen longest ago (a) is forgotten in the shared state, so a seen again
    pages again; said once for the rule; the shared state holds h1's two latest agents."""
    fleet = Fleet(
        tmp_path,
        redis_server.url,
        opsgenie.url,
        rules="rules:\n"
        "  - {name: new-agent, match: {event: login}, new_value: {fields: [agent], group_by: [host]}}\n"
        "  - {name: noise, match: {event: noise}, threshold: {count: 1000000, window: 1h}}\n",
    )
    now = time.time()
    lines = [{"event": "login", "host": "h1", "agent": a, "ts": now + i} for i, a in enumerate("abc")]
    lines += [{"event": "noise", "ts": now + 5}] * 4200  # the engine sweeps every 4096 matched events
    lines += [{"event": "login", "host": "h1", "agent": a, "ts": now + 6 + i} for i, a in enumerate("ca")]
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in lines))
    state = {"backend": "redis", "url": redis_server.url, "instance": "a"}
    source = {"type": "file", "path": str(events), "start_at": "beginning"}
    daemon = fleet.start("a", source=source, state=state, limits={"values_per_group": 2})
    assert opsgenie.wait_for(lambda r: len(r) == 4, 20), fleet.output()
    said = "rule 'new-agent': a group knows limits.values_per_group (2) values"
    assert wait_until(lambda: said in daemon.stderr()), daemon.stderr()
    assert 0 == daemon.terminate()
    assert 1 == daemon.stderr().count(said)
    client = redis.Redis.from_url(redis_server.url)
    saved = client.hget("rulesd:groups", "\t".join(("new_value", "new-agent", '["\\"h1\\""]')))
    assert saved is not None and ['"a"', '"c"'] == sorted(json.loads(saved))


def test_an_outage_that_ends_in_a_refused_password_says_the_new_cause_in_the_log(
    tmp_path: Path, opsgenie: FakeOpsGenie
) -> None:
    """Redis goes down, then comes back with another password: the log says "Redis authentication
    failed" as soon as that is the cause, for the sender and `rulesd forward` too, as STATUS= does
    (the sender had said only that Redis was unavailable until it was back, the forwarder said it
    a minute later); back with the old password, every alert goes once, in order."""
    server = RedisServer(tmp_path / "redis", password=PASSWORD)
    try:
        fleet = Fleet(tmp_path, server.url, opsgenie.url, rules=PAGE_RULES)
        daemon, append = paging_instance(fleet, server.url)
        forwarded = tmp_path / "forwarded.jsonl"
        forwarded.touch()
        config = tmp_path / "forward.yaml"
        forward = {"url": server.url, "stream": "other"}
        source = {"type": "file", "path": str(forwarded), "start_at": "beginning"}
        config.write_text(yaml.safe_dump({"source": source, "state_dir": "state-forward", "forward": forward}))
        forwarder = DaemonProcess(tmp_path, ["forward", "--config", str(config)], None)
        assert forwarder.wait_for_log("rulesd forward started"), forwarder.output()

        append(*range(3))
        assert opsgenie.wait_for(lambda r: len(r) >= 3, 15)
        server.stop()
        append(*range(3, 8))
        forwarded.write_text(json.dumps({"n": 1}) + "\n")
        assert daemon.wait_for_log("state unavailable, reading paused"), daemon.stderr()
        assert daemon.wait_for_log("sender waits: Redis unavailable"), daemon.stderr()
        assert forwarder.wait_for_log("cannot append to the stream, retrying: Redis unavailable"), forwarder.stderr()
        server.password = "rotated"
        server.start()
        # The reader, the sender and the forwarder, which said the outage, say the new cause.
        assert daemon.wait_for_log("error: Redis authentication failed: ", timeout=10), daemon.stderr()
        assert daemon.wait_for_log("sender waits: Redis authentication failed: ", timeout=10), daemon.stderr()
        said = "cannot append to the stream, retrying: Redis authentication failed: "
        assert forwarder.wait_for_log(said, timeout=10), forwarder.stderr()
        assert 3 == len(opsgenie.requests)
        server.client().config_set("requirepass", PASSWORD)
        server.password = PASSWORD
        assert daemon.wait_for_log("state available again"), daemon.stderr()
        assert opsgenie.wait_for(lambda r: len(r) >= 8, 20)
        time.sleep(1.0)
        assert [f"p-{i}" for i in range(8)] == [r.json()["alias"] for r in opsgenie.requests]
        assert wait_until(lambda: 1 == len(server.client().xrange("other")), 15), forwarder.stderr()
        assert 0 == daemon.terminate() and 0 == forwarder.terminate()
        assert PASSWORD not in daemon.output() + forwarder.output()
    finally:
        server.stop()


LIMIT_RULES = (
    "rules:\n"
    "  - {name: errors, match: {level: error}, threshold: {count: 1, window: 1m, group_by: [host]},"
    " resolve: {after: 1h}}\n"
    "  - {name: noise, match: {event: noise}, threshold: {count: 1000000, window: 1h}}\n"
)


def test_a_batch_applied_again_after_losing_the_race_to_commit_counts_its_evictions_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Instance b's batch makes the engine sweep and forget an open group for the state limit;
    instance a commits first, so b's commit is refused and b applies the batch again on the newer
    state: b counts one group evicted and one alert closed (it counted each twice), and queues
    the close once."""
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=LIMIT_RULES)
    lines = [{"level": "error", "host": f"h{i}"} for i in (1, 2, 3)]
    with contextlib.ExitStack() as stack:
        b = loses_the_race(stack, fleet, redis_server.url, lines, {"groups_per_rule": 2})
        assert {"errors": 1, "noise": 0} == b.stats.evicted
        assert {"errors": 1, "noise": 0} == b.stats.limit_closed
        queued = [(a.action, a.target or a.payload["message"]) for a in b.store.alerts()]
        assert 4 == len(queued) and 1 == sum(action == "close" for action, _ in queued), queued


def test_values_forgotten_in_a_batch_applied_again_after_losing_the_race_count_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Instance b's batch makes the engine sweep a new_value group over `values_per_group: 2`;
    instance a commits first, so b applies the batch again on the newer state: b counts the one
    value forgotten once, as evicted and as a value (what makes the daemon name the limit)."""
    rules = (
        "rules:\n"
        "  - {name: new-agent, match: {event: login}, new_value: {fields: [agent], group_by: [host]}}\n"
        "  - {name: noise, match: {event: noise}, threshold: {count: 1000000, window: 1h}}\n"
    )
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=rules)
    lines = [{"event": "login", "host": "h1", "agent": agent} for agent in "abc"]
    with contextlib.ExitStack() as stack:
        b = loses_the_race(stack, fleet, redis_server.url, lines, {"values_per_group": 2})
        assert ({"new-agent": 1, "noise": 0}, {"new-agent": 1}) == (b.stats.evicted, b.engine.values_evicted)


def loses_the_race(
    stack: contextlib.ExitStack, fleet: Fleet, url: str, lines: list[dict[str, Any]], limits: dict[str, int]
) -> SharedDaemon:
    """Instance b, turned by hand under `limits`, with one batch of `lines` and then enough noise
    for the engine to sweep; instance a commits first, so b's commit is refused and b applies its
    batch again on the newer state. Returns b, its batch committed."""
    now = time.time()
    files = {"a": fleet.root / "a.jsonl", "b": fleet.root / "b.jsonl"}
    files["a"].write_text(json.dumps({"event": "other"}) + "\n")
    noise = [{"event": "noise"}] * 4200  # the engine sweeps every 4096 matched events
    files["b"].write_text("".join(json.dumps(e) + "\n" for e in lines + noise))
    a, b = (
        in_process(stack, fleet.on_file(name, path, url, limits=limits), lambda: now) for name, path in files.items()
    )
    refused = commits_first(a, b)
    assert b._step()
    assert 1 == len(refused) and "version" == getattr(refused[0], "why", None)
    return b


def commits_first(a: SharedDaemon, b: SharedDaemon) -> list[Exception]:
    """Make `a` commit a batch between b's catching up and b's next commit; what b's commits
    raised (its first: a version conflict) are added to the list returned."""
    commit = b.store.commit
    refused: list[Exception] = []

    def a_commits_first(**kwargs: Any) -> int:
        if not refused:
            assert a._step()
        try:
            return commit(**kwargs)
        except Exception as exc:
            refused.append(exc)
            raise

    b.store.commit = a_commits_first  # type: ignore[method-assign]
    return refused


def in_process(stack: contextlib.ExitStack, config: Path, clock: Callable[[], float] = time.time) -> SharedDaemon:
    """A shared daemon for `config` whose loop the test turns by hand (on the wall clock `clock`),
    started: its rule set published and the state loaded."""
    parts = stack.enter_context(daemon_parts(config, clock))
    assert isinstance(parts.store, RedisState)
    daemon = SharedDaemon(parts, parts.store, stream_reader(parts.config, parts.store))
    daemon.shared.start()
    daemon._started = True
    return daemon


def metric(process: DaemonProcess, name: str) -> float:
    """A sample's value on the process's /metrics (`name` with its labels); 0 if absent."""
    for line in http_get(process.metrics_url())[1].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_idle_instances_keep_the_state_limits_and_commit_it_once(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """Three open alerts under `limits.groups_per_rule: 2` and then no more events: within
    seconds an idle instance forgets the stalest group and closes its alert, as the single-host
    daemon does (the limits acted only every 4,096 matched events); of two idle instances one
    commits it, and the close goes once, counted once."""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=LIMIT_RULES)
    now = time.time()
    files = {"a": tmp_path / "a.jsonl", "b": tmp_path / "b.jsonl"}
    files["a"].write_text(
        "".join(json.dumps({"level": "error", "host": f"h{i}", "ts": now - 40 + 10 * i}) + "\n" for i in (1, 2, 3))
    )
    files["b"].touch()
    processes = [
        fleet.start(
            name,
            source={"type": "file", "path": str(path), "start_at": "beginning"},
            state={"backend": "redis", "url": redis_server.url, "instance": name},
            limits={"groups_per_rule": 2},
            metrics={"listen": "127.0.0.1:0"},
        )
        for name, path in files.items()
    ]
    assert opsgenie.wait_for(lambda r: len(r) == 4, 20), fleet.output()
    close = {"close": 'rulesd: errors: {"host":"h1"}', "rules": ["errors"], "reasons": ["state limit"]}
    assert close == as_sent(opsgenie.requests[3])
    time.sleep(6.0)  # both instances swept again meanwhile
    assert 4 == len(opsgenie.requests), fleet.output()
    evicted = [metric(p, 'rulesd_state_groups_evicted_total{rule="errors"}') for p in processes]
    closed = [metric(p, 'rulesd_state_alerts_closed_total{rule="errors"}') for p in processes]
    assert 1 == sum(evicted) and 1 == sum(closed), (evicted, closed)
    groups = redis_server.client().hkeys("rulesd:groups")
    assert 2 == sum(key.startswith(b"open\terrors\t") for key in groups), groups
    assert all(0 == p.terminate() for p in processes)


def test_redis_at_its_maxmemory_pauses_reading_and_still_delivers_what_is_queued(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Redis full (`maxmemory`, policy noeviction: writes answered OOM): the instance stays up
    and says why (it stopped with a fatal error and a traceback, and systemd would restart it
    into the same error), delivers the alerts queued before (removing them frees memory), and
    once Redis has room again every alert goes once, in order."""
    down = [True]
    with FakeOpsGenie(lambda _r: Reply(503) if down[0] else Reply()) as opsgenie:
        fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=PAGE_RULES)
        daemon, append = paging_instance(fleet, redis_server.url)
        append(*range(3))
        assert opsgenie.wait_for(lambda r: len(r) >= 1, 15)  # queued, and failing for now
        client = redis_server.client()
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", int(client.info("memory")["used_memory"]) // 2)
        append(*range(3, 8))
        said = "state unavailable, reading paused until it is back: Redis is out of memory"
        assert daemon.wait_for_log(said), daemon.stderr()
        down[0] = False
        assert opsgenie.wait_for(lambda r: [f"p-{i}" for i in range(3)] == [q.json()["alias"] for q in r][-3:], 20)
        assert daemon.proc.poll() is None and "Traceback" not in daemon.stderr(), daemon.stderr()
        client.config_set("maxmemory", 0)
        assert daemon.wait_for_log("state available again"), daemon.stderr()
        assert opsgenie.wait_for(lambda r: len({q.json()["alias"] for q in r}) == 8, 20)
        time.sleep(1.0)
        aliases = [q.json()["alias"] for q in opsgenie.requests]
        assert [f"p-{i}" for i in range(8)] == list(dict.fromkeys(aliases))
        assert all(1 == aliases.count(f"p-{i}") for i in range(1, 8)), aliases  # p-0 was refused (503) first
        assert 0 == daemon.terminate()
        assert "Traceback" not in daemon.stderr()


def test_a_redis_restarted_without_its_data_is_said_and_the_alerts_it_lost_are_queued_again(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Redis restarted without persistence under two instances, with one alert delivered and
    three queued (OpsGenie refusing them for now): each instance says, as an error, that Redis
    lost the shared state, and the instance that queued the three queues them again (they were
    gone without a word, never delivered); the one delivered before is not sent again."""
    down = [False]
    with FakeOpsGenie(lambda _r: Reply(503) if down[0] else Reply()) as opsgenie:
        fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=PAGE_RULES)
        files = {name: tmp_path / f"{name}.jsonl" for name in ("a", "b")}
        processes = []
        for name, path in files.items():
            path.touch()
            source = {"type": "file", "path": str(path), "start_at": "beginning"}
            state = {"backend": "redis", "url": redis_server.url, "instance": name}
            processes.append(fleet.start(name, source=source, state=state))

        def append(name: str, *ids: int) -> None:
            with open(files[name], "a") as fh:
                fh.write("".join(json.dumps({"kind": "page", "id": i}) + "\n" for i in ids))

        append("a", 9)
        assert opsgenie.wait_for(lambda r: len(r) == 1, 15)
        time.sleep(0.5)  # its delivery recorded
        down[0] = True
        append("a", 0, 1, 2)
        assert opsgenie.wait_for(lambda r: len(r) >= 2, 15)  # queued, and failing for now
        redis_server.restart_empty()
        said = "error: Redis lost the shared state (restarted without its data, flushed, or its keys evicted)"
        assert all(p.wait_for_log(said, timeout=20) for p in processes), fleet.output()
        assert (
            "the 3 alert(s) this instance queued and had not seen delivered are queued again" in processes[0].stderr()
        )
        assert "the 0 alert(s) this instance queued" in processes[1].stderr()
        down[0] = False
        append("b", 3)
        assert opsgenie.wait_for(lambda r: "p-3" in [q.json()["alias"] for q in r], 20), fleet.output()
        time.sleep(1.0)
        aliases = [q.json()["alias"] for q in opsgenie.requests]
        assert ["p-9", "p-0", "p-1", "p-2", "p-3"] == list(dict.fromkeys(aliases)), aliases
        assert all(1 == aliases.count(f"p-{i}") for i in (9, 1, 2, 3)), aliases  # p-0 was refused (503) first
        assert all(p.proc.poll() is None for p in processes)
        assert all(0 == p.terminate() for p in processes)


def test_a_redis_that_evicts_any_key_is_said_at_start(tmp_path: Path, redis_server: RedisServer) -> None:
    """`maxmemory-policy allkeys-lru` lets Redis drop the shared state and queued alerts at its
    maxmemory without a word: the instance says so when it starts (nothing did)."""
    redis_server.client().config_set("maxmemory-policy", "allkeys-lru")
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=PAGE_RULES)
    (tmp_path / "app.jsonl").touch()
    source = {"type": "file", "path": str(tmp_path / "app.jsonl")}
    daemon = fleet.start("a", source=source, state={"backend": "redis", "url": redis_server.url, "instance": "a"})
    said = "error: Redis's maxmemory-policy is allkeys-lru: at its maxmemory it evicts keys"
    assert daemon.wait_for_log(said), daemon.stderr()
    assert 0 == daemon.terminate()


def test_an_instance_restarted_after_redis_lost_its_data_pages_nothing_again(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """Redis restarted without its data under an idle fleet instance reading a file from its
    beginning; the instance is then restarted: it resumes where it was (its positions written
    again once it noticed the loss), not at the file's beginning (every alert went again)."""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=PAGE_RULES)
    events_file = tmp_path / "app.jsonl"
    events_file.write_text("".join(json.dumps({"kind": "page", "id": i}) + "\n" for i in range(3)))
    source = {"type": "file", "path": str(events_file), "start_at": "beginning"}
    state = {"backend": "redis", "url": redis_server.url, "instance": "a"}
    daemon = fleet.start("a", source=source, state=state)
    assert opsgenie.wait_for(lambda r: len(r) == 3, 15)
    time.sleep(1.0)  # their delivery seen (one delivered in the moment before the loss is queued again)
    redis_server.restart_empty()
    assert daemon.wait_for_log("Redis lost the shared state", timeout=20), daemon.stderr()
    time.sleep(1.0)
    assert 0 == daemon.terminate()
    daemon = fleet.start("a", source=source, state=state)
    with open(events_file, "a") as fh:
        fh.write(json.dumps({"kind": "page", "id": 3}) + "\n")
    assert opsgenie.wait_for(lambda r: len(r) >= 4, 15)
    time.sleep(1.0)
    assert [f"p-{i}" for i in range(4)] == [r.json()["alias"] for r in opsgenie.requests]
    assert 0 == daemon.terminate()


def test_a_redis_restarted_from_an_older_copy_is_said_and_the_alerts_it_lost_are_queued_again(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Redis restarted from a copy of its data older than the instance's last commits (an older
    backup, a replica behind): the instance says the state went back, and queues again the
    alerts of the lost commits (they were gone without a word); those delivered before are not
    sent again."""
    down = [False]
    with FakeOpsGenie(lambda _r: Reply(503) if down[0] else Reply()) as opsgenie:
        fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=PAGE_RULES)
        daemon, append = paging_instance(fleet, redis_server.url)
        append(0, 1)
        assert opsgenie.wait_for(lambda r: len(r) == 2, 15)
        time.sleep(1.0)  # their delivery recorded and seen
        older = tmp_path / "older-aof"
        shutil.copytree(redis_server.directory / "appendonlydir", older)
        down[0] = True
        append(2, 3)
        assert opsgenie.wait_for(lambda r: len(r) >= 3, 15)  # queued, and failing for now
        redis_server.stop()
        shutil.rmtree(redis_server.directory / "appendonlydir")
        shutil.copytree(older, redis_server.directory / "appendonlydir")
        redis_server.start()
        assert daemon.wait_for_log("error: Redis's shared state went back from version ", timeout=20), daemon.stderr()
        assert "the 2 alert(s) this instance queued and had not seen delivered are queued again" in daemon.stderr()
        down[0] = False
        assert opsgenie.wait_for(lambda r: {"p-2", "p-3"} <= {q.json()["alias"] for q in r}, 20), daemon.stderr()
        time.sleep(1.0)
        aliases = [q.json()["alias"] for q in opsgenie.requests]
        assert ["p-0", "p-1", "p-2", "p-3"] == list(dict.fromkeys(aliases)), aliases
        assert all(1 == aliases.count(f"p-{i}") for i in (0, 1, 3)), aliases  # p-2 was refused (503) first
        assert 0 == daemon.terminate()


def test_an_idle_instance_says_an_outage_once_and_its_end_once(tmp_path: Path, redis_server: RedisServer) -> None:
    """Redis down for a few seconds under an idle fleet instance: it says so once and, when
    Redis is back, that it is available again, once (it spun, saying both at every turn of its
    loop, since a turn that read nothing counted as Redis available). /healthz (200) and /readyz
    (503) say it in their bodies meanwhile."""
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=PAGE_RULES)
    daemon, _ = paging_instance(fleet, redis_server.url, metrics={"listen": "127.0.0.1:0"})
    base = daemon.metrics_url().removesuffix("/metrics")
    time.sleep(1.0)  # it loaded the state
    redis_server.stop()
    assert daemon.wait_for_log("state unavailable, reading paused", timeout=15), daemon.stderr()
    live, ready = http_get(f"{base}/healthz"), http_get(f"{base}/readyz")
    assert (200, 503) == (live[0], ready[0]) and live[1] == ready[1], (live, ready)
    assert live[1].startswith("ok\nRedis unavailable: "), live
    time.sleep(6.0)  # past an idle sweep, which asks Redis
    redis_server.start()
    assert daemon.wait_for_log("state available again", timeout=15), daemon.stderr()
    time.sleep(1.0)
    log = daemon.stderr()
    assert 1 == log.count("state unavailable, reading paused") and 1 == log.count("state available again"), log
    assert 0 == daemon.terminate()


def test_rule_matches_count_a_batch_matched_again_after_a_reload_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A batch read (and matched), then the rules reloaded before it is committed: it is matched
    again with the new rules, and `rulesd_rule_matches` counts its events once (it counted them
    with both rule sets)."""
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=PAGE_RULES)
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"kind": "page", "id": i}) + "\n" for i in range(3)))
    with contextlib.ExitStack() as stack:
        a = in_process(stack, fleet.on_file("a", path, redis_server.url))
        assert a._read()
        (tmp_path / "rules" / "rules.yaml").write_text(PAGE_RULES.replace("p-{id}", "page-{id}"))
        assert a.reload()
        a._commit_first()
        assert not a.pending
        assert ["page-0", "page-1", "page-2"] == [alert.payload["alias"] for alert in a.store.alerts()]
        assert 3 == a.stats.matches.get("r")


def test_rule_matches_do_not_count_a_batch_another_instance_committed(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Worker a reads stream entries and is held up past claim_idle; b claims and commits them,
    and a drops its batch: across the fleet `rulesd_rule_matches` counts the events once (a
    counted them too)."""
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=PAGE_RULES)
    with contextlib.ExitStack() as stack:
        a, b = (in_process(stack, fleet.config(name, time_field=None)) for name in "ab")
        client = redis_server.client()
        assert a._read() is False  # (the consumer group is made)
        client.xadd(STREAM, {"events": "\n".join(json.dumps({"kind": "page", "id": i}) for i in range(3))})
        assert a._read()
        time.sleep(1.2)  # past claim_idle
        assert b._step() and not b.pending
        a._commit_first()
        assert not a.pending and 3 == len(a.store.alerts())
        assert (0, 3) == (a.stats.matches.get("r", 0), b.stats.matches.get("r", 0))


NEW_VALUE_RULES = (
    "name: new-address\nmatch: {event: login}\nnew_value: {fields: [ip], group_by: [user], learn: 2s}\n"
    "alert: {alias: 'new-{user}-{ip}'}\n"
)


def test_an_idle_instance_starts_the_learning_of_new_value_rules_at_its_start(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """With new_value rules only, an idle instance starts the shared clock, as the single-host
    daemon does: `learn` counts from its start, so a value first seen after it pages (the
    learning started at the first event instead, which was only learnt)."""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=NEW_VALUE_RULES)
    path = tmp_path / "a.jsonl"
    path.touch()
    daemon = fleet.start_on_file("a", path)
    assert wait_until(lambda: redis_server.client().exists("rulesd:clock") == 1, 15), daemon.output()
    time.sleep(2.5)  # past `learn`
    with open(path, "a") as fh:
        fh.write(json.dumps({"ts": time.time(), "event": "login", "user": "u", "ip": "10.0.0.1"}) + "\n")
    assert opsgenie.wait_for(lambda r: len(r) >= 1, 15), daemon.output()
    assert "new-u-10.0.0.1" == opsgenie.requests[0].json()["alias"]
    assert 0 == daemon.terminate()


def step_with_its_answer_lost(daemon: SharedDaemon, turn: Callable[[], object] | None = None) -> None:
    """A step (or another `turn` of the loop) whose commit is made (or refused) but whose answer
    is lost (Redis unavailable before it came)."""
    commit = daemon.store.commit

    def answer_lost(**kwargs: Any) -> int:
        with contextlib.suppress(Conflict):
            commit(**kwargs)
        raise StateUnavailable("Redis unavailable: Connection closed by server.")

    daemon.store.commit = answer_lost  # type: ignore[method-assign]
    with pytest.raises(StateUnavailable):
        (turn or daemon._step)()
    daemon.store.commit = commit  # type: ignore[method-assign]


def answer_cut_once(daemon: SharedDaemon) -> None:
    """The next commit script runs, but the connection closes before its answer is read (Redis's
    `timeout`, a proxy resetting it): the instance sends it again at once on a new connection."""
    store = daemon.store
    script = store._script("COMMIT")

    def cut(**kwargs: Any) -> Any:
        store._scripts["COMMIT"] = script
        script(**kwargs)
        raise redis.exceptions.ConnectionError("Connection closed by server.")

    store._scripts["COMMIT"] = cut  # type: ignore[assignment]


def queued_aliases(daemon: SharedDaemon) -> list[str]:
    return [alert.payload["alias"] for alert in daemon.store.alerts()]


@pytest.mark.parametrize("retried", ["at once", "later"])
def test_the_alerts_of_a_batch_whose_answer_was_lost_are_queued_again_when_redis_then_loses_its_data(
    tmp_path: Path, redis_server: RedisServer, retried: str
) -> None:
    """a's commit of three pages is made but its answer lost, and a finds it made when it sends
    it again (at once on a new connection, or after Redis was said unavailable); then Redis loses
    its data before they are delivered: a queues the three again (it had not remembered them, and
    they were gone without a word)."""
    with contextlib.ExitStack() as stack:
        a = on_pages(stack, tmp_path, redis_server, PAGE_RULES, 3)
        if retried == "later":
            step_with_its_answer_lost(a)
        else:
            answer_cut_once(a)
        assert a._step() and not a.pending
        assert ["p-0", "p-1", "p-2"] == queued_aliases(a), "committed once"
        redis_server.client().flushall()
        a._tick()
        assert "the 3 alert(s) this instance queued and had not seen delivered are queued again" in str(
            a.stats.last_error
        )
        assert ["p-0", "p-1", "p-2"] == queued_aliases(a)


def test_alerts_queued_again_go_once_when_the_commit_that_queued_them_again_lost_its_answer(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Redis loses its data with two of a's alerts queued; a's next commit queues them again with
    a new page, and its answer is lost; a finds it made: the two are not queued a third time
    (they were, by the commit after it)."""
    with contextlib.ExitStack() as stack:
        a = on_pages(stack, tmp_path, redis_server, PAGE_RULES, 2)
        assert a._step()
        redis_server.client().flushall()
        with open(tmp_path / "a.jsonl", "a") as fh:
            fh.write(json.dumps({"kind": "page", "id": 2}) + "\n")
        step_with_its_answer_lost(a)
        assert a._step() and not a.pending
        a._tick()
        assert ["p-0", "p-1", "p-2"] == queued_aliases(a)


def test_a_batch_committed_though_its_answer_was_lost_counts_as_it_was_committed(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Instance a's commit is made but its answer lost (Redis unavailable before it came): trying
    again, a finds the batch committed and counts it as it was committed: its events, alerts, and
    the group it forgot for the state limit, with the alert that closed (none were counted)."""
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=LIMIT_RULES)
    lines = [{"level": "error", "host": f"h{i}"} for i in (1, 2, 3)]
    lines += [{"event": "noise"}] * 4200  # the engine sweeps every 4096 matched events
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    with contextlib.ExitStack() as stack:
        a = in_process(stack, fleet.on_file("a", path, redis_server.url, limits={"groups_per_rule": 2}))
        step_with_its_answer_lost(a)
        assert a._step() and not a.pending
        assert 4 == len(a.store.alerts()), "committed once"
        assert {"errors": 1, "noise": 0} == a.stats.evicted
        assert {"errors": 1, "noise": 0} == a.stats.limit_closed
        counted = (
            sum(a.stats.events.values()),
            a.stats.alerts_queued,
            a.stats.closes_queued,
            a.stats.firings["errors"],
        )
        assert (len(lines), 3, 1, 3) == counted  # three pages, and the close of the group forgotten
        assert {"errors": 3, "noise": 4200} == a.stats.matches


def on_pages(stack: contextlib.ExitStack, root: Path, server: RedisServer, rules: str, count: int) -> SharedDaemon:
    """Instance a in fleet mode with `rules`, turned by hand, on a file of `count` page events."""
    fleet = Fleet(root, server.url, "http://127.0.0.1:9", rules=rules)
    path = root / "a.jsonl"
    path.write_text("".join(json.dumps({"kind": "page", "id": i}) + "\n" for i in range(count)))
    return in_process(stack, fleet.on_file("a", path, server.url))


def test_a_batch_whose_answer_was_lost_before_a_reload_counts_for_the_rules_it_was_committed_with(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """a's commit is made but its answer lost; the rules are reloaded (rule r becomes r2, s stays)
    before a tries again: the batch, refused as committed, counts its matches, firings and alerts
    as committed, for s (its matches not counted for r2, the rule it was matched with again).
    r's counters went with the reload, as they would have had the answer come before it: a rule
    not loaded has no series (the late answer brought r's back, and they stayed until the next reload)."""
    rule = "  - {name: %s, match: {kind: page}, alert: {alias: 'p-{id}'}}\n"
    rules = "rules:\n" + rule % "r" + rule % "s"
    with contextlib.ExitStack() as stack:
        a = on_pages(stack, tmp_path, redis_server, rules, 3)
        step_with_its_answer_lost(a)
        (tmp_path / "rules" / "rules.yaml").write_text(rules.replace("name: r,", "name: r2,"))
        assert a.reload()
        assert a._step() and not a.pending
        assert ["p-0", "p-1", "p-2"] == [alert.payload["alias"] for alert in a.store.alerts()], "committed once"
        assert ({"s": 3}, {"s": 3}, 3) == counted(a)
        series = (a.stats.matches, a.stats.firings, a.stats.evicted, a.stats.limit_closed)
        assert [{"r2", "s"}] * 4 == [set(per_rule) for per_rule in series]
        assert 3 == sum(a.stats.events.values())


def test_a_batch_whose_answer_was_lost_twice_counts_as_it_was_committed_the_first_time(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """a's commit of two events a threshold of 3 counts is made and its answer lost; so is the
    answer when a next asks Redis whether it was made (before applying them again on a state that
    holds them already: 4, it would fire). The third attempt counts the batch as the first
    committed it: no firing, no alert."""
    rules = "name: t\nmatch: {kind: page}\nthreshold: {count: 3, window: 1h}\n"
    with contextlib.ExitStack() as stack:
        a = on_pages(stack, tmp_path, redis_server, rules, 2)
        step_with_its_answer_lost(a)
        resolve = a.store.resolve

        def answer_lost(token: str) -> Any:
            resolve(token)
            raise StateUnavailable("Redis unavailable: Connection closed by server.")

        a.store.resolve = answer_lost  # type: ignore[method-assign]
        with pytest.raises(StateUnavailable):
            a._step()
        a.store.resolve = resolve  # type: ignore[method-assign]
        assert a._step() and not a.pending
        assert [] == a.store.alerts()
        assert ({"t": 2}, {}, 0) == counted(a)


def absence_due(stack: contextlib.ExitStack, root: Path, server: RedisServer) -> SharedDaemon:
    """Instance a in fleet mode, turned by hand, after host h's heartbeat: idle 11 s later, so that
    its absence (10 s) is due."""
    fleet = Fleet(root, server.url, "http://127.0.0.1:9", rules=ABSENCE_RULES)
    path = root / "a.jsonl"
    start = time.time()
    path.write_text(json.dumps({"ts": start, "event": "heartbeat", "host": "h"}) + "\n")
    wall = [start]
    a = in_process(stack, fleet.on_file("a", path, server.url, time_field="ts"), lambda: wall[0])
    assert a._step()
    wall[0] = start + 11
    return a


@pytest.mark.parametrize("retried", ["at once", "later"])
def test_an_idle_pass_whose_answer_was_lost_counts_its_firings_once_and_its_alert_is_kept(
    tmp_path: Path, redis_server: RedisServer, retried: str
) -> None:
    """Host h's absence fires while a is idle; the commit is made but its answer lost, and a
    finds it made (its next commit would retry it at once on a new connection, or asks Redis
    before committing anything else): the firing and the alert count once (they counted none),
    the alert is queued once, and when Redis then loses its data a queues it again."""
    with contextlib.ExitStack() as stack:
        a = absence_due(stack, tmp_path, redis_server)
        if retried == "later":
            step_with_its_answer_lost(a, a._tick)
        else:
            answer_cut_once(a)
        a._tick()
        assert 1 == len(a.store.alerts()), "committed once"
        assert ({"heartbeat-missing": 1}, 1) == counted(a)[1:]
        redis_server.client().flushall()
        a._tick()
        assert "the 1 alert(s) this instance queued" in str(a.stats.last_error)
        assert 1 == len(a.store.alerts())


THRESHOLD_PAGE = "name: t\nmatch: {kind: page}\nthreshold: {count: 2, window: 1h}\nalert: {alias: 't'}\n"
DOUBT = "with the 1 of a commit whose answer was lost (it may have been made)"


@pytest.mark.parametrize(("rules", "queued"), [(THRESHOLD_PAGE, ["t"]), (PAGE_RULES, ["p-0", "p-1"])])
def test_the_alert_of_a_commit_whose_answer_was_lost_is_queued_again_when_redis_loses_its_data_before_the_retry(
    tmp_path: Path, redis_server: RedisServer, rules: str, queued: list[str]
) -> None:
    """a's second event fires (a threshold of 2, or a page of its own); the commit is made but
    its answer lost, and Redis loses its data before a tries again, so no one can tell whether it
    was made. a queues the alert again, once: applied again on the empty state the batch fires
    no threshold (the alert was lost: the count it completed is gone), or pages again the same
    (then that page goes once, not twice; the first batch's page is queued again as before)."""
    with contextlib.ExitStack() as stack:
        a = on_pages(stack, tmp_path, redis_server, rules, 1)
        assert a._step()
        with open(tmp_path / "a.jsonl", "a") as fh:
            fh.write(json.dumps({"kind": "page", "id": 1}) + "\n")
        step_with_its_answer_lost(a)
        assert queued == queued_aliases(a), "made"
        redis_server.client().flushall()
        assert a._step() and not a.pending
        assert queued == queued_aliases(a)
        assert DOUBT in str(a.stats.last_error)
        a._tick()
        assert queued == queued_aliases(a), "once"


def test_the_alert_of_an_idle_pass_whose_answer_was_lost_is_queued_again_when_redis_loses_its_data_first(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Host h's absence fires while a is idle; the commit is made but its answer lost, and Redis
    loses its data before a asks whether it was made (the record it would ask went with it): a
    queues the alert again (the absence's timer went with the state too: nothing would fire it)."""
    with contextlib.ExitStack() as stack:
        a = absence_due(stack, tmp_path, redis_server)
        step_with_its_answer_lost(a, a._tick)
        assert 1 == len(a.store.alerts()), "made"
        redis_server.client().flushall()
        a._tick()
        assert ["rulesd: heartbeat-missing"] == [alert.payload["message"] for alert in a.store.alerts()]
        assert DOUBT in str(a.stats.last_error)
        a._tick()
        assert 1 == len(a.store.alerts()), "once"


def test_an_idle_pass_whose_commit_was_not_made_is_fenced_off(tmp_path: Path, redis_server: RedisServer) -> None:
    """An idle pass's commit is sent, the connection is given up before Redis runs it, and a finds
    it not made (its firing comes again with the next pass): the script, if Redis runs it late,
    is refused, so that the alert is not queued twice."""
    with contextlib.ExitStack() as stack:
        a = absence_due(stack, tmp_path, redis_server)
        commit, sent = a.store.commit, []

        def not_run(**kwargs: Any) -> int:
            sent.append(kwargs)
            raise StateUnavailable("Redis unavailable: Timeout reading from socket")

        a.store.commit = not_run  # type: ignore[method-assign]
        with pytest.raises(StateUnavailable):
            a._tick()
        a.store.commit = commit  # type: ignore[method-assign]
        a.shared.sync()
        a._resolve_lost_tick()  # (what a does first when it commits next)
        with pytest.raises(Conflict) as refused:
            a.store.commit(**sent[0])  # Redis runs it now, at the version it was sent at
        assert ("fenced", []) == (refused.value.why, a.store.alerts())
        a._tick()
        assert 1 == len(a.store.alerts()) and ({"heartbeat-missing": 1}, 1) == counted(a)[1:]


def counted(daemon: SharedDaemon) -> tuple[dict[str, int], dict[str, int], int]:
    """What `daemon` counted: matches and firings per rule (the rules loaded are also at 0,
    left out), alerts queued."""
    stats = daemon.stats
    matches = {rule: n for rule, n in stats.matches.items() if n}
    return matches, {rule: n for rule, n in stats.firings.items() if n}, stats.alerts_queued


def test_an_idle_moment_does_not_keep_the_clock_ahead_of_the_events_that_come_after_it(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """While nothing comes the clock runs on with the wall clock, from the latest event as late
    as it came. An idle moment (6 s) moves it on, and host h0's absence (10 s) fires; then a
    heartbeat of h1 comes, later than the one before (its log shipping lags 5 s more): 6 s later
    h1's absence has not fired, it fires once nothing has come for 10 s. (The clock kept the lead
    it had gained over the events, so h1's absence fired 6 s after its heartbeat came, and every
    such idle moment added to the lead.)"""
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=ABSENCE_RULES)
    path = tmp_path / "a.jsonl"
    path.touch()
    start = time.time()
    wall = [start]

    def heartbeat(at: float, host: str = "h1") -> None:
        with open(path, "a") as fh:
            fh.write(json.dumps({"ts": at, "event": "heartbeat", "host": host}) + "\n")

    def idle_until(at: float) -> list[str]:
        wall[0] = at
        a._tick()
        return [json.loads(alert.payload["description"].removeprefix("Event:\n"))["host"] for alert in a.store.alerts()]

    with contextlib.ExitStack() as stack:
        a = in_process(stack, fleet.on_file("a", path, redis_server.url, time_field="ts"), lambda: wall[0])
        heartbeat(start - 8, "h0")
        heartbeat(start)
        assert a._step()
        assert ["h0"] == idle_until(start + 6)
        heartbeat(start + 1)  # read at start + 6
        assert a._step()
        assert ["h0"] == idle_until(start + 12), "h1's heartbeat came 6 s ago"
        assert ["h0", "h1"] == idle_until(start + 16.5)


ABSENCE_RULES = "name: heartbeat-missing\nmatch: {event: heartbeat}\nabsence: {window: 10, group_by: [host]}\n"


def test_a_redis_paused_for_less_than_the_socket_timeout_is_said(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """Redis paused (CLIENT PAUSE) for 4 s, less than the 10 s an instance waits for an answer:
    the instance stalls meanwhile and says so once answered (it said nothing: an operator saw a
    stall and no line); the pages go once, in order, and Redis is not said unavailable."""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=PAGE_RULES)
    daemon, append = paging_instance(fleet, redis_server.url)
    append(0)
    assert opsgenie.wait_for(lambda r: len(r) >= 1, 15), daemon.output()
    redis_server.client().client_pause(4000)
    append(1, 2)
    assert daemon.wait_for_log("Redis took ", 20), daemon.stderr()
    assert opsgenie.wait_for(lambda r: len(r) >= 3, 20), daemon.output()
    time.sleep(1.0)
    assert ["p-0", "p-1", "p-2"] == [r.json()["alias"] for r in opsgenie.requests]
    assert "unavailable" not in daemon.stderr()
    assert 0 == daemon.terminate()


def test_positions_of_a_globs_deleted_files_are_forgotten_in_redis(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """As with SQLite (`glob_positions_follow_the_files`): the positions hash holds this
    instance's fields for the files still there only."""
    (tmp_path / "logs").mkdir()
    source = {"type": "file", "path": str(tmp_path / "logs" / "*.jsonl"), "start_at": "beginning"}
    state = {"backend": "redis", "url": redis_server.url, "instance": "a"}
    ws = Workspace(tmp_path, opsgenie.url, source=source, state=state)

    def saved() -> set[str]:
        fields = redis_server.client().hkeys("rulesd:positions")
        return {f.decode().removeprefix("a\t") for f in fields}

    glob_positions_follow_the_files(ws, opsgenie, saved)


def test_a_truncation_with_nothing_new_is_saved_in_redis_before_the_next_line(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """As with SQLite: a position moved with no line (a file truncated in a quiet moment) is
    committed by the idle instance, so that a restart does not resume at the old offset."""
    source = {"type": "file", "path": "events.jsonl", "start_at": "beginning"}
    state = {"backend": "redis", "url": redis_server.url, "instance": "a"}
    ws = Workspace(tmp_path, opsgenie.url, source=source, state=state)

    def offset() -> int | None:
        saved = redis_server.client().hget("rulesd:positions", f"a\t{ws.events}")
        return None if saved is None else int(json.loads(saved)["offset"])

    truncated_quietly_then_killed(ws, opsgenie, offset, deliver_within=LEASE_S + 20)  # the killed one's lease ends


def test_a_forgotten_position_survives_a_commit_lost_to_another_instance(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A glob's file deleted while b was stopped is forgotten with b's first commit; when a
    commits first and b's commit is refused and made again, the forget goes with it (it was
    handed out once and left out of the second commit, its position kept in Redis for ever)."""
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=PAGE_RULES)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "gone.jsonl").write_text(json.dumps({"event": "other"}) + "\n")
    (logs / "keep.jsonl").write_text(json.dumps({"event": "other"}) + "\n")
    (tmp_path / "a.jsonl").write_text(json.dumps({"event": "other"}) + "\n")
    configs = {"a": fleet.on_file("a", tmp_path / "a.jsonl", redis_server.url)}
    configs["b"] = fleet.on_file("b", logs / "*.jsonl", redis_server.url)

    def saved() -> set[str]:
        fields = redis_server.client().hkeys("rulesd:positions")
        return {Path(f.decode().removeprefix("b\t")).name for f in fields if f.startswith(b"b\t")}

    with contextlib.ExitStack() as stack:
        assert in_process(stack, configs["b"])._step()
    assert {"gone.jsonl", "keep.jsonl"} == saved()
    (logs / "gone.jsonl").unlink()
    with (logs / "keep.jsonl").open("a") as out:
        out.write(json.dumps({"event": "other"}) + "\n")
    with contextlib.ExitStack() as stack:
        a, b = in_process(stack, configs["a"]), in_process(stack, configs["b"])
        refused = commits_first(a, b)
        assert b._step()
        assert 1 == len(refused) and "version" == getattr(refused[0], "why", None)
    assert {"keep.jsonl"} == saved()


def forwarder(root: Path, redis_server: RedisServer, source: Path, batch_lines: int = 10) -> DaemonProcess:
    """`rulesd forward` of `source` (from its beginning) into STREAM, started."""
    config = root / "forward.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "source": {"type": "file", "path": str(source), "start_at": "beginning"},
                "state_dir": "forward-state",
                "forward": {"url": redis_server.url, "stream": STREAM, "batch_lines": batch_lines},
            }
        )
    )
    process = DaemonProcess(root, ["forward", "--config", str(config)], None)
    assert process.wait_for_log("rulesd forward started"), process.output()
    return process


def pages(path: Path, ids: range, noise: int = 0, pad: int = 0) -> None:
    """Append a page event (PAGE_RULES) for each of `ids` to `path`, each after `noise` other
    events of `pad` bytes."""
    other = json.dumps({"event": "noise", "pad": "x" * pad})
    with open(path, "a") as fh:
        fh.write("".join((other + "\n") * noise + json.dumps({"kind": "page", "id": i}) + "\n" for i in ids))


def test_committed_entries_another_consumer_group_has_not_read_stay_in_the_stream(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """The stream has a second consumer group (a user's archiver, another fleet): the workers
    forwarded to while they were stopped catch up and trim the stream, but only what that group
    has read and acknowledged (every entry below the last committed was trimmed: it read 80 of 500)."""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=PAGE_RULES)
    client = redis_server.client()
    client.xgroup_create(STREAM, "archive", id="0", mkstream=True)
    log_file = tmp_path / "app.jsonl"
    log_file.touch()
    forward = forwarder(tmp_path, redis_server, log_file)
    pages(log_file, range(500))
    assert wait_until(lambda: client.xlen(STREAM) >= 50, 15)
    worker = fleet.start("w")
    assert opsgenie.wait_for(lambda r: len(r) >= 500, 60), len(opsgenie.requests)

    def archived(count: int) -> list[bytes]:
        read = client.xreadgroup("archive", "x", {STREAM: ">"}, count=count)
        entries = read[0][1] if read else []
        if entries:
            client.xack(STREAM, "archive", *[entry_id for entry_id, _ in entries])
        return [line for _, fields in entries for line in fields[b"events"].split(b"\n")]

    got = archived(25)
    got += archived(1000)
    assert list(range(500)) == [json.loads(line)["id"] for line in got]
    pages(log_file, range(500, 510))  # the archiver acknowledged all: the next commit trims it all
    assert opsgenie.wait_for(lambda r: len(r) >= 510, 30)
    assert wait_until(lambda: client.xlen(STREAM) <= 1 + 100, 15)  # (`~`: whole nodes of 100 entries)
    assert 0 == worker.terminate() and 0 == forward.terminate()


def test_the_forwarder_leaves_redis_room_for_the_workers_to_catch_up(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """Workers stopped, the forwarder appending on: near Redis's maxmemory it holds back and
    says so, so that the workers, started again, can commit (it filled Redis up, and the
    workers' commits were refused as out of memory: nothing moved again), and every page goes."""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=PAGE_RULES)
    client = redis_server.client()
    fleet.start("w").terminate()  # the consumer group is made
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 2_000_000)
    log_file = tmp_path / "app.jsonl"
    log_file.touch()
    forward = forwarder(tmp_path, redis_server, log_file)
    sent = 0
    while "not appending" not in forward.stderr():
        assert sent < 2000 and "out of memory" not in forward.stderr(), forward.stderr()
        pages(log_file, range(sent, sent + 10), noise=20, pad=200)
        sent += 10
        time.sleep(0.02)
    said = f"not appending to {STREAM}, which holds "
    assert said in forward.stderr() and "until the workers catch up" in forward.stderr(), forward.stderr()
    worker = fleet.start("w")
    assert forward.wait_for_log("Redis has room again: appending to the stream", 60), forward.stderr()
    assert opsgenie.wait_for(lambda r: len(r) >= sent, 120), (len(opsgenie.requests), sent)
    assert list(range(sent)) == sorted(int(r.json()["alias"].removeprefix("p-")) for r in opsgenie.requests)
    assert "out of memory" not in worker.stderr() + forward.stderr()
    assert 0 == worker.terminate() and 0 == forward.terminate()


def test_a_forwarder_whose_redis_user_may_not_read_info_forwards_without_the_memory_bound(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """An ACL user without INFO: the forwarder cannot see how full Redis is, says so once, and
    forwards (a NOPERM on that look stopped every append, retried for ever as credentials refused)."""
    client = redis_server.client()
    client.acl_setuser("default", enabled=True, nopass=True, keys=["*"], channels=["*"], commands=["+@all", "-info"])
    log_file = tmp_path / "app.jsonl"
    log_file.touch()
    forward = forwarder(tmp_path, redis_server, log_file)
    pages(log_file, range(5))
    pages(log_file, range(5, 10))
    forwarded = lambda: sum(len(fields[b"events"].split(b"\n")) for _, fields in client.xrange(STREAM))  # noqa: E731
    assert wait_until(lambda: 10 == forwarded(), 15), forward.stderr()
    assert 1 == forward.stderr().count("appends are not held back near Redis's maxmemory (allow INFO to this user)")
    assert "cannot append" not in forward.stderr()
    assert 0 == forward.terminate()


def test_entries_another_producer_wrote_are_said_with_their_id_committed_and_never_stall_a_worker(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """Entries a user's own producer wrote: without an `event`/`events` field (they were counted
    invalid without a word), with a line longer than `max_line_bytes` (it was evaluated: a page
    went for it), not UTF-8, not JSON, not an object. Each is skipped and said with the stream
    and its entry id (a line too long counted as such), committed with its batch (nothing
    stays pending), and the events around them are evaluated."""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=PAGE_RULES)
    client = redis_server.client()
    no_events = client.xadd(STREAM, {"message": "hello"}).decode()
    long_line = client.xadd(STREAM, {"event": json.dumps({"kind": "page", "id": "long", "pad": "x" * 300})}).decode()
    client.xadd(STREAM, {"event": b'{"kind": "page", "id": "\xe9"}'})
    client.xadd(STREAM, {"events": b"42\n{\n" + json.dumps({"kind": "page", "id": 1}).encode()})
    client.xadd(STREAM, {"event": json.dumps({"kind": "page", "id": 2})})
    source = {"type": "redis_stream", "url": redis_server.url, "stream": STREAM, "max_line_bytes": 256}
    worker = fleet.start("w", source=source, metrics={"listen": "127.0.0.1:0"})
    assert opsgenie.wait_for(lambda r: len(r) >= 2, 20)
    assert wait_until(lambda: settled(redis_server), 15)
    log = worker.stderr()
    assert f"{STREAM} {no_events}#0: skipped: the entry has no field 'event' or 'events' (its fields: 'message')" in log
    assert f"{STREAM} {long_line}#0: skipped: longer than max_line_bytes (256 bytes): " in log, log
    assert ["p-1", "p-2"] == [r.json()["alias"] for r in opsgenie.requests]
    assert 1 == metric(worker, "rulesd_lines_too_long_total")
    assert 4 == metric(worker, f'rulesd_events_invalid_total{{source="{STREAM}"}}')  # no fields, é, 42, {
    client.xadd(STREAM, {"event": json.dumps({"kind": "page", "id": 3})})
    assert opsgenie.wait_for(lambda r: len(r) >= 3, 15)
    assert 0 == worker.terminate()


def test_rulesd_forward_forgets_the_positions_of_a_globs_deleted_files(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """As `rulesd run` does (`glob_positions_follow_the_files`): the forwarder's positions, in Redis
    and in its state directory, keep the files of its glob that are still there only (a forget
    goes with the next append), also one deleted while it was stopped; every line goes once."""
    logs = tmp_path / "logs"
    logs.mkdir()
    keep = logs / "keep.jsonl"
    keep.touch()
    client = redis_server.client()

    def saved() -> tuple[set[str], set[str]]:
        in_redis = {field.decode().split("\t", 1)[1] for field in client.hkeys("rulesd:forward:positions")}
        db = sqlite3.connect(tmp_path / "forward-state" / "state.sqlite")
        try:
            return in_redis, {key for (key,) in db.execute("SELECT source FROM positions")}
        finally:
            db.close()

    def forwarded() -> list[int]:
        entries = client.xrange(STREAM)
        return [json.loads(line)["id"] for _, fields in entries for line in fields[b"events"].split(b"\n")]

    def line_in(path: Path, i: int) -> None:
        pages(path, range(i, i + 1))
        assert wait_until(lambda: i in forwarded(), 15), forwarded()

    forward = forwarder(tmp_path, redis_server, logs / "*.jsonl")
    for i in range(3):
        job = logs / f"job-{i}.jsonl"
        line_in(job, i)
        assert wait_until(lambda job=job: all(str(job) in where for where in saved())), saved()
        job.unlink()
    time.sleep(1.0)  # several scans of the directory: the deleted files are let go
    line_in(keep, 10)  # appended with their positions forgotten
    assert wait_until(lambda: saved() == ({str(keep)}, {str(keep)})), saved()
    gone = logs / "job-9.jsonl"  # deleted while the forwarder is stopped: forgotten at the next start
    line_in(gone, 9)
    assert 0 == forward.terminate()
    gone.unlink()
    forward = forwarder(tmp_path, redis_server, logs / "*.jsonl")
    line_in(keep, 11)
    assert wait_until(lambda: saved() == ({str(keep)}, {str(keep)})), saved()
    assert 0 == forward.terminate()
    assert [0, 1, 2, 10, 9, 11] == forwarded()


@pytest.mark.parametrize("how", ["reload", "restart"])
def test_an_edited_sequence_keeps_its_waits_and_its_chains_part_way_in_the_shared_state(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie, how: str
) -> None:
    """With the state in Redis, as on one host: db1's backup started and finished (it waits at
    the absent step), db2's started (part-way), db3's started; the rule's `for` and message are
    edited, and the instance reloaded by SIGHUP or restarted; db2's backup then finishes. db1 is
    paged for the new `for` (7 s) after its finish, db2 7 s after its finish, both with the new
    message; db3, whose backup never finished, is not. (An edit forgot db2's start.)"""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=VERIFIED)
    path = tmp_path / "a.jsonl"
    path.touch()
    daemon = fleet.start_on_file("a", path, time_field="t")

    def append(*events: dict[str, Any]) -> float:
        now = time.time()
        with open(path, "a") as fh:
            fh.write("".join(json.dumps({**event, "t": now}) + "\n" for event in events))
        return now

    def sequences() -> int:
        return sum(f.startswith(b"sequence\t") for f in redis_server.client().hkeys("rulesd:groups"))

    finished = append(*(backup("started", host=h) for h in ("db1", "db2", "db3")), backup("finished"))
    assert wait_until(lambda: 3 == sequences(), 15), daemon.output()  # committed before the edit
    edited = VERIFIED.replace("6s", "7s") + 'alert: {message: "backup on {host} never verified"}\n'
    if how == "restart":
        assert 0 == daemon.terminate()
        (tmp_path / "rules" / "rules.yaml").write_text(edited)
        daemon = fleet.start_on_file("a", path, time_field="t")
    else:
        (tmp_path / "rules" / "rules.yaml").write_text(edited)
        daemon.proc.send_signal(signal.SIGHUP)
        assert daemon.wait_for_log("changed: 1 ("), daemon.output()
    second = append(backup("finished", host="db2"))
    assert opsgenie.wait_for(lambda r: len(r) == 1, 15), fleet.output()
    assert time.time() - finished > 6.5, "paged before the edited rule's 7 s had passed"
    assert opsgenie.wait_for(lambda r: len(r) == 2, 15), fleet.output()
    assert time.time() - second > 6.5, "paged before the edited rule's 7 s had passed"
    time.sleep(1.0)
    assert ["backup on db1 never verified", "backup on db2 never verified"] == [
        r.json()["message"] for r in opsgenie.requests
    ]
    assert 0 == daemon.terminate()


def test_a_workers_metrics_show_its_stream_and_rules_at_zero_before_anything_happens(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """A stream worker's /metrics has its stream's counters (events read, invalid, ignored) and
    every rule's at 0 from its start, before the first entry: a rate needs the series before its
    first increase. An entry of another producer's then counts as invalid, and a page as read."""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=PAGE_RULES)
    worker = fleet.start("a", time_field=None, metrics={"listen": "127.0.0.1:0"})
    url = worker.metrics_url()
    per_source = ("rulesd_events_read_total", "rulesd_events_invalid_total", "rulesd_lines_ignored_total")
    per_rule = (
        "rulesd_rule_matches_total",
        "rulesd_rule_firings_total",
        "rulesd_state_groups_evicted_total",
        "rulesd_state_alerts_closed_total",
    )

    def series() -> dict[str, float]:
        return {key: value for key, value in samples(scrape(url)).items() if key.startswith((*per_source, *per_rule))}

    zeros = {f'{family}{{source="{STREAM}"}}': 0.0 for family in per_source}
    zeros |= {f'{family}{{rule="r"}}': 0.0 for family in per_rule}
    assert zeros == series(), scrape(url)
    client = redis_server.client()
    client.xadd(STREAM, {"message": "not rulesd's"})
    client.xadd(STREAM, {"event": json.dumps({"kind": "page", "id": 1})})
    assert opsgenie.wait_for(lambda r: len(r) == 1, 20), worker.output()
    counted = {
        f'rulesd_events_invalid_total{{source="{STREAM}"}}': 1.0,
        f'rulesd_events_read_total{{source="{STREAM}"}}': 1.0,
    }
    counted |= {'rulesd_rule_matches_total{rule="r"}': 1.0, 'rulesd_rule_firings_total{rule="r"}': 1.0}
    assert wait_until(lambda: series() == zeros | counted), scrape(url)
    assert 0 == worker.terminate()


class Heartbeats:
    """Instances turned by hand in fleet mode on ABSENCE_RULES (10 s), each reading its own file
    of host h0's heartbeats, on one wall clock that the test sets."""

    def __init__(self, root: Path, server: RedisServer) -> None:
        self.fleet = Fleet(root, server.url, "http://127.0.0.1:9", rules=ABSENCE_RULES)
        self.server = server
        self.start = time.time()
        self.wall = self.start
        self.files = {name: root / f"{name}.jsonl" for name in ("a", "b")}
        for path in self.files.values():
            path.touch()

    def instance(self, stack: contextlib.ExitStack, name: str) -> SharedDaemon:
        config = self.fleet.on_file(name, self.files[name], self.server.url, time_field="ts")
        return in_process(stack, config, lambda: self.wall)

    def beat(self, name: str, at: float) -> None:
        """A heartbeat of h0 dated `at` (seconds after the start) in instance `name`'s file."""
        with open(self.files[name], "a") as fh:
            fh.write(json.dumps({"ts": self.start + at, "event": "heartbeat", "host": "h0"}) + "\n")

    def idle(self, *daemons: SharedDaemon, until: float) -> list[tuple[str, str | None]]:
        """Each of `daemons` idle at `until` (seconds after the start); what the outbox holds."""
        self.wall = self.start + until
        for daemon in daemons:
            daemon._tick()
        return [(alert.action, alert.target) for alert in daemons[0].store.alerts()]


PAGED = [("create", None)]


def test_a_late_heartbeat_after_an_idle_spell_is_judged_by_the_clock_that_ran_on_in_any_instance(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Host h0's absence (10 s) pages while instance a idles; the idle spell goes on in a and b
    with nothing to commit. A heartbeat of h0 dated start + 2 is then read by b at start + 20:
    the clock ran on to start + 20 meanwhile, so it is a late line dated more than the window
    before the clock, as on a single host: the alert stays open, nothing is closed and nothing
    pages again. (Each idle moment put the clock back to the committed start + 10.5: the
    heartbeat closed the alert, and its absence, armed again from start + 2, paged again.)"""
    beats = Heartbeats(tmp_path, redis_server)
    with contextlib.ExitStack() as stack:
        a, b = beats.instance(stack, "a"), beats.instance(stack, "b")
        beats.beat("a", 0)
        assert a._step()
        assert PAGED == beats.idle(a, b, until=10.5)
        assert PAGED == beats.idle(a, b, until=20)
        beats.beat("b", 2)
        assert b._step()
        assert PAGED == beats.idle(b, a, until=20.2), "not a close"
        assert PAGED == beats.idle(a, b, until=40), "nor a second page"


def test_a_late_heartbeat_after_an_idle_spell_across_a_restart_neither_closes_nor_pages_again(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """As above, with instance a restarted in the idle spell: it runs the committed clock on as
    it ran before. Its first idle moment commits its position, and the clock with it (start +
    20); at start + 30 a heartbeat dated start + 12 is late. (The restarted instance put the
    clock back to start + 20 at each idle moment after: the heartbeat closed the alert.)"""
    beats = Heartbeats(tmp_path, redis_server)
    with contextlib.ExitStack() as stack:
        a = beats.instance(stack, "a")
        beats.beat("a", 0)
        assert a._step()
        assert PAGED == beats.idle(a, until=10.5)
    with contextlib.ExitStack() as stack:
        a = beats.instance(stack, "a")
        assert PAGED == beats.idle(a, until=20)
        assert PAGED == beats.idle(a, until=30)
        beats.beat("a", 12)
        assert a._step()
        assert PAGED == beats.idle(a, until=30.2), "not a close"
        assert PAGED == beats.idle(a, until=50), "nor a second page"


def test_a_stop_commits_the_shared_clock_run_on_to_it_for_a_late_heartbeat_read_first_at_the_restart(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Host h0's absence (10 s) pages; a stops at start + 20 while b idles on with nothing to
    commit, and a heartbeat dated start + 8 is written to a's file meanwhile. The stop committed
    the clock run on to start + 20 (as b runs it on from there), so the restarted a, reading the
    heartbeat first at start + 30, judges it late: no close, no second page. Its clock is the
    stop's, not b's start + 30, which would page for hosts whose heartbeats wait to be read.
    (The clock was left at start + 10.5, as the page committed it: the heartbeat closed the
    alert, and its absence paged again.)"""
    beats = Heartbeats(tmp_path, redis_server)
    with contextlib.ExitStack() as stack_b:
        b = beats.instance(stack_b, "b")
        with contextlib.ExitStack() as stack:
            a = beats.instance(stack, "a")
            beats.beat("a", 0)
            assert a._step()
            assert PAGED == beats.idle(a, b, until=10.5)
            assert PAGED == beats.idle(a, b, until=20)
            a.stop_requested.set()
            a._loop()  # (stopping at once)
        assert (beats.start + 20, beats.start + 20) == b.store.snapshot().clock
        beats.beat("a", 8)
        assert PAGED == beats.idle(b, until=30)
        with contextlib.ExitStack() as stack:
            a = beats.instance(stack, "a")
            assert a._step()
            assert PAGED == beats.idle(a, b, until=30.2), "not a close"
            assert PAGED == beats.idle(a, b, until=50), "nor a second page"


LATE_RULES = "name: heartbeat-missing\nmatch: {event: heartbeat}\nabsence: {window: 5s, group_by: [host]}\n"


def redis_gone_under_an_instance(tmp_path: Path, redis_server: RedisServer) -> DaemonProcess:
    """An instance in fleet mode that has committed a heartbeat; then Redis is stopped."""
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=LATE_RULES)
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"ts": time.time(), "event": "heartbeat", "host": "h0"}) + "\n")
    a = fleet.start_on_file("a", path)
    assert a.wait_for_log("committed version 1"), a.output()
    redis_server.stop()
    return a


def test_a_stop_while_redis_is_down_leaves_the_clock_and_exits_at_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Redis goes away just before SIGTERM, before the instance noticed: the stop's commit of
    the clock fails, is said, and the daemon stops at once with status 0 (the clock stays as
    last committed)."""
    a = redis_gone_under_an_instance(tmp_path, redis_server)
    began = time.monotonic()
    assert 0 == a.terminate(), a.output()
    assert time.monotonic() - began < 10, a.output()
    assert "state unavailable at the stop: the clock is left as last committed" in a.stderr(), a.output()


@pytest.mark.parametrize("mode", ["fleet", "stream"])
def test_a_stop_while_redis_hangs_ends_well_within_systemds_stop_timeout(
    tmp_path: Path, redis_server: RedisServer, mode: str
) -> None:
    """Redis stops answering (CLIENT PAUSE: it takes connections and commands, and answers
    none) just before SIGTERM: the command the loop waits on ends within its 10 s, the stop's
    commit of the clock (if it comes to it) waits 5 s at most, the delivery's grace 5 s (a
    stream worker's too), and each command after it 1 s, so the daemon exits 0 within the
    unit's TimeoutStopSec=30s. (Each command waited 10 s, and a stream worker's grace was the
    30 s of an input that ended: 37 s and 41 s, and systemd would have killed it.)"""
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=LATE_RULES)
    heartbeat = json.dumps({"ts": time.time(), "event": "heartbeat", "host": "h0"})
    path = tmp_path / "a.jsonl"
    path.write_text(heartbeat + "\n")
    a = fleet.start_on_file("a", path) if mode == "fleet" else fleet.start("a")
    if mode == "stream":
        redis_server.client().xadd(STREAM, {"event": heartbeat})
    assert a.wait_for_log("committed version 1"), a.output()
    redis_server.client().client_pause(60_000, all=True)
    began = time.monotonic()
    assert 0 == a.terminate(timeout=60), a.output()
    assert time.monotonic() - began < 25, a.output()
    assert "state unavailable" in a.stderr(), a.output()
    assert "the outbox's length is unknown" in a.stderr(), a.output()  # not the count last read


def test_a_stop_after_the_instance_saw_redis_go_away_says_the_clock_is_left(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """As above, with Redis gone long enough for the idle instance to notice before SIGTERM: the
    stop says the clock is left as last committed all the same (it said nothing of the clock,
    so the line depended on which came first, the stop or the instance's next look at Redis)."""
    a = redis_gone_under_an_instance(tmp_path, redis_server)
    assert a.wait_for_log("state unavailable, reading paused"), a.output()
    assert 0 == a.terminate(), a.output()
    assert "state unavailable at the stop: the clock is left as last committed" in a.stderr(), a.output()


def test_a_stop_with_redis_down_says_the_outboxs_length_is_unknown_not_a_count(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """An alert is queued and OpsGenie cannot be reached; Redis goes away before SIGTERM: the
    stop cannot read how many alerts the outbox holds, and says so. It said the count last read
    (`0 alert(s) still queued; they will be sent on the next start`, with one queued) as if it
    had been read then."""
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules="name: page\nmatch: {event: page}\n")
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"ts": time.time(), "event": "page"}) + "\n")
    a = fleet.start_on_file("a", path)
    assert a.wait_for_log("retrying in"), a.output()
    assert 1 == redis_server.client().xlen("rulesd:outbox")
    redis_server.stop()
    assert 0 == a.terminate(), a.output()
    assert "still queued" not in a.stderr(), a.output()
    said = "state unavailable at the stop: the outbox's length is unknown; what it holds is sent at the next start"
    assert said in a.stderr(), a.output()


@pytest.mark.parametrize("case", ["one instance", "two instances", "restarted"])
def test_a_late_heartbeat_after_an_idle_spell_neither_closes_nor_pages_again(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie, case: str
) -> None:
    """Real instances on one stream: host h0's heartbeat comes, its absence (5 s) pages, the
    stream stays idle (across a restart of the instance, in one case), and a heartbeat of h0
    dated 3 s after the first comes 14 s after it: dated more than the window before the clock,
    which ran on with the wall clock, it ends no silence, as on a single host. OpsGenie gets
    the one create, no close and no second create."""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=LATE_RULES)
    fleet.start("a")
    if case == "two instances":
        fleet.start("b")
    client = redis_server.client()
    start = time.time()
    client.xadd(STREAM, {"event": json.dumps({"ts": start, "event": "heartbeat", "host": "h0"})})
    assert opsgenie.wait_for(lambda r: len(r) >= 1, 20), fleet.output()
    if case == "restarted":
        assert 0 == fleet.processes[0].terminate(), fleet.output()
        fleet.start("a")
        time.sleep(1)  # idle after its start
    time.sleep(max(0.0, start + 14 - time.time()))
    client.xadd(STREAM, {"event": json.dumps({"ts": start + 3, "event": "heartbeat", "host": "h0"})})
    assert wait_until(lambda: settled(redis_server), 15), fleet.output()
    time.sleep(7)  # a close comes at once, a second create once nothing comes for the window
    sent = ["close" if r.path.split("?")[0].endswith("/close") else "create" for r in opsgenie.requests]
    assert ["create"] == sent, fleet.output()
    assert all(0 == p.terminate() for p in fleet.processes if p.proc.poll() is None), fleet.output()


@pytest.mark.parametrize("case", ["one instance", "two instances"])
def test_a_late_heartbeat_written_while_stopped_neither_closes_nor_pages_again(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie, case: str
) -> None:
    """Host h0's heartbeat comes, its absence (5 s) pages, the daemon idles and is stopped at
    12 s (one instance on the stream; or, reading files, one of two, the other idling on), and
    a heartbeat of h0 dated 4 s is written while it is stopped. The stop committed the clock
    run on to it, so the restarted instance reads that heartbeat as late, as on a single host:
    OpsGenie gets the one create. (The clock was left as the page committed it, 5 s: the
    heartbeat ended the silence, its alert was closed and its absence paged again.)"""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=LATE_RULES)
    beats = tmp_path / "a.jsonl"
    beats.touch()
    start_a = partial(fleet.start, "a") if case == "one instance" else partial(fleet.start_on_file, "a", beats)
    if case == "two instances":
        (tmp_path / "b.jsonl").touch()
        fleet.start_on_file("b", tmp_path / "b.jsonl")
    first = start_a()
    client = redis_server.client()

    def beat(ts: float) -> None:
        event = {"ts": ts, "event": "heartbeat", "host": "h0"}
        if case == "one instance":
            client.xadd(STREAM, {"event": json.dumps(event)})
        else:
            with beats.open("a") as f:
                f.write(json.dumps(event) + "\n")

    start = time.time()
    beat(start)
    assert opsgenie.wait_for(lambda r: len(r) >= 1, 20), fleet.output()
    time.sleep(max(0.0, start + 12 - time.time()))
    assert 0 == first.terminate(), fleet.output()
    beat(start + 4)
    start_a()
    if case == "one instance":
        assert wait_until(lambda: settled(redis_server), 15), fleet.output()
    time.sleep(8)  # a close comes at once, a second create once nothing comes for the window
    sent = ["close" if r.path.split("?")[0].endswith("/close") else "create" for r in opsgenie.requests]
    assert ["create"] == sent, fleet.output()
    assert all(0 == p.terminate() for p in fleet.processes if p.proc.poll() is None), fleet.output()


def test_a_late_heartbeat_read_after_an_idle_spell_behind_a_dead_workers_entry_neither_closes_nor_pages_again(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """Host h0's absence (5 s) pages and the stream stays idle until 14 s; then two heartbeats
    of h0 dated 3 s come, the first read by a worker that dies with it (a consumer that never
    commits). Instance a reads the second after its idle spell: its commit waits its turn
    behind the dead worker's entry, which a claims and commits first. Both are applied at the
    clock the idle spell ran on to, as on a single host: late, they end no silence, and OpsGenie
    gets the one create. (The claimed entry was applied at the clock the page committed, 5 s:
    OpsGenie got create, close, create.)"""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=LATE_RULES)
    fleet.start("a")
    client = redis_server.client()
    start = time.time()
    client.xadd(STREAM, {"event": json.dumps({"ts": start, "event": "heartbeat", "host": "h0"})})
    assert opsgenie.wait_for(lambda r: len(r) >= 1, 20), fleet.output()
    time.sleep(max(0.0, start + 14 - time.time()))
    late = {"event": json.dumps({"ts": start + 3, "event": "heartbeat", "host": "h0"})}
    with client.pipeline(transaction=True) as both:  # the dead worker reads the first before a can
        both.xadd(STREAM, late).xreadgroup("rulesd", "dead", {STREAM: ">"}, count=1).xadd(STREAM, late)
        both.execute()
    assert wait_until(lambda: settled(redis_server), 15), fleet.output()
    time.sleep(7)  # a close comes at once, a second create once nothing comes for the window
    sent = ["close" if r.path.split("?")[0].endswith("/close") else "create" for r in opsgenie.requests]
    assert ["create"] == sent, fleet.output()
    assert 0 == fleet.processes[0].terminate(), fleet.output()


def test_a_reload_elsewhere_between_the_sync_and_the_commit_of_a_fleet_batch_keeps_the_batch(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Another instance publishes other rules (a reload) after a synced and before its commit
    ran: the script refuses the batch for its rules, and a keeps it and says so, as when it
    finds them at its sync, until a reload brings the same rules. (The refusal was taken for a
    stream worker's: an AssertionError ended the fleet instance's loop.)"""
    with contextlib.ExitStack() as stack:
        a = on_pages(stack, tmp_path, redis_server, PAGE_RULES, 2)
        commit, store = a.store.commit, a.store

        def after_a_reload_elsewhere(**kwargs: Any) -> None:
            store.client.set(store.k.rules, "0123456789abcdef")
            commit(**kwargs)

        a.store.commit = after_a_reload_elsewhere  # type: ignore[method-assign]
        assert a._step()
        a.store.commit = commit  # type: ignore[method-assign]
        assert 1 == len(a.pending) and [] == queued_aliases(a)
        assert str(a.stats.last_error).startswith("refusing to commit: rule set ")


H0 = 'rulesd: heartbeat-missing: {"host":"h0"}'  # the alias of h0's absence
WORKER_RULES = (
    "rules:\n  - {name: page, match: {kind: page}, alert: {alias: 'p-{id}'}}\n"
    "  - {name: heartbeat-missing, match: {event: heartbeat}, absence: {window: 10, group_by: [host]}}\n"
)


class Workers:
    """Stream workers a and b turned by hand on one wall clock the test sets (seconds after the
    start): host h0's absence (10 s) and pages by id. a commits h0's heartbeat at 0, pages while
    idle at 11, and idles with nothing to commit at 16; then entries are written."""

    def __init__(self, stack: contextlib.ExitStack, root: Path, server: RedisServer) -> None:
        fleet = Fleet(root, server.url, "http://127.0.0.1:9", rules=WORKER_RULES)
        self.client = server.client()
        self.start = self.wall = time.time()
        self.a, self.b = (in_process(stack, fleet.config(name), lambda: self.wall) for name in "ab")
        self.add({"ts": self.start, "event": "heartbeat", "host": "h0"})
        assert self.a._step()
        self.at(11)
        self.a._tick()
        assert [H0] == self.queued(), "paged"
        self.at(16)
        self.a._tick()

    def at(self, seconds: float) -> None:
        self.wall = self.start + seconds

    def add(self, *entries: dict[str, Any]) -> list[str]:
        """An entry per event (one without 'ts': another producer's entry, no event in it)."""
        return [self.client.xadd(STREAM, {"event": json.dumps(e)} if "ts" in e else e).decode() for e in entries]

    def late_and_page(self) -> list[str]:
        """Another producer's entry, a page dated 15 and h0's heartbeat dated 4: late by the
        clock the idle moment at 16 ran on to (not by the clock committed at 11)."""
        return self.add(
            {"message": "not rulesd's"},
            {"ts": self.start + 15, "kind": "page", "id": 1},
            {"ts": self.start + 4, "event": "heartbeat", "host": "h0"},
        )

    def queued(self) -> list[str]:
        """The outbox: the alias of each create, 'close' for a close."""
        return [alert.payload["alias"] if alert.action == "create" else alert.action for alert in self.a.store.alerts()]

    def clock(self) -> tuple[float, float] | None:
        """The committed clock, in seconds after the start."""
        clock = self.a.store.snapshot().clock
        return None if clock is None else (clock[0] - self.start, clock[1] - self.start)


def test_the_rest_of_a_stream_batch_another_worker_committed_part_of_keeps_its_idle_moment_and_arrival(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Worker a reads three entries at 16 (after its idle moment); it is paused, and b claims the
    first (another producer's entry, no event) and commits it; a's commit of the three at 18 is
    refused as taken, and the two left are committed as a read them: at the clock the idle moment
    ran on to (h0's heartbeat dated 4 is late: no close, no second page) and as read at 16 (the
    clock runs on from 17, the page's lag after it, and the page is queued once)."""
    with contextlib.ExitStack() as stack:
        w = Workers(stack, tmp_path, redis_server)
        entries = w.late_and_page()
        w.a.reader.batch_entries = lambda lines: 3  # type: ignore[method-assign]
        assert w.a._read() and entries == w.a.pending[0].entries.ids  # type: ignore[union-attr]
        time.sleep(1.2)  # past claim_idle: a looks dead
        w.at(17)
        assert w.b._step() and entries[:1] == w.b.store.cursor().split() and not w.b.pending
        w.at(18)
        assert w.a._step() and entries[1:] == w.a.pending[0].entries.ids  # type: ignore[union-attr]
        assert w.a._step() and not w.a.pending
        assert entries[-1] == w.a.store.cursor()
        assert [H0, "p-1"] == w.queued(), "no close, the page once"
        assert (16, 17) == w.clock()
        w.at(40)
        w.a._tick()
        assert [H0, "p-1"] == w.queued(), "no second page"


def test_a_claimed_stream_batch_with_a_gap_committed_entry_by_entry_keeps_its_idle_moment_and_arrival(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker that dies read h0's heartbeat dated 4 and a page dated 15, and b read the entry
    between them (another producer's), keeping it fresh while it waits. Worker a claims the two
    at 16 (after its idle moment); its commit at 18 is refused for the gap, and it commits them one
    at a time as it read them, b's entry between them: at the clock the idle moment ran on to (the
    heartbeat is late: no close, no second page) and as read at 16 (the clock runs on from 17, the
    page's lag after it, and the page is queued once)."""
    with contextlib.ExitStack() as stack:
        w = Workers(stack, tmp_path, redis_server)
        first = w.add({"ts": w.start + 4, "event": "heartbeat", "host": "h0"})
        w.client.xreadgroup("rulesd", "dead", {STREAM: ">"}, count=1)
        between = w.add({"message": "not rulesd's"})
        assert w.b._read() and between == w.b.pending[0].entries.ids  # type: ignore[union-attr]
        last = w.add({"ts": w.start + 15, "kind": "page", "id": 1})
        w.client.xreadgroup("rulesd", "dead", {STREAM: ">"}, count=1)
        time.sleep(1.2)  # past claim_idle: the dead worker's entries may be claimed
        w.b.reader.refresh([p.entries for p in w.b.pending if p.entries is not None])
        w.a.reader.batch_entries = lambda lines: 3  # type: ignore[method-assign]
        assert w.a._read() and first + last == w.a.pending[0].entries.ids  # type: ignore[union-attr]
        w.at(18)
        with caplog.at_level(logging.INFO, logger="rulesd"):
            assert w.a._step() and [first, last] == [p.entries.ids for p in w.a.pending]  # type: ignore[union-attr]
        said = f"claimed stream entries {first[0]}..{last[0]} have another instance's entries between them"
        assert said in caplog.text
        assert w.a._step() and first == w.a.store.cursor().split()
        assert w.a._step() and 1 == len(w.a.pending), "its turn comes after b's entry"
        assert w.b._step() and not w.b.pending
        assert w.a._step() and not w.a.pending
        assert last == w.a.store.cursor().split()
        assert [H0, "p-1"] == w.queued(), "no close, the page once"
        assert (16, 17) == w.clock()
        w.at(40)
        w.a._tick()
        assert [H0, "p-1"] == w.queued(), "no second page"


@pytest.mark.parametrize("between", ["another instance's commit", "a reload"])
def test_a_retry_made_with_other_alerts_than_its_first_try_is_what_is_queued_again_when_redis_loses_its_data(
    tmp_path: Path, redis_server: RedisServer, between: str, caplog: pytest.LogCaptureFixture
) -> None:
    """a's first try at its page is not made (Redis unreachable); then b commits a page of its
    own (the threshold's 2 is then a's to complete), or the rules are reloaded (the alias becomes
    'u'); a's retry is made, firing 't' or 'u', but its answer is lost; then Redis loses its
    data. a queues again what its retry queued: 't' (it queued the first try's nothing, and the
    page was lost) or 'u' alone (it queued the first try's 't' too, a page no commit made)."""
    rules = THRESHOLD_PAGE if between != "a reload" else PAGE_RULES.replace("'p-{id}'", "'t'")
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=rules)
    for i, name in enumerate("ab"):  # (there at the start: a file made later is seen when its watch says so)
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"kind": "page", "id": i}) + "\n")
    with contextlib.ExitStack() as stack:
        a, b = (in_process(stack, fleet.on_file(name, tmp_path / f"{name}.jsonl", redis_server.url)) for name in "ab")
        commit = a.store.commit

        def not_made(**kwargs: Any) -> int:
            raise StateUnavailable("Redis unavailable: Error 111 connecting to 127.0.0.1. Connection refused.")

        a.store.commit = not_made  # type: ignore[method-assign]
        with pytest.raises(StateUnavailable):
            a._step()
        a.store.commit = commit  # type: ignore[method-assign]
        if between == "a reload":
            (tmp_path / "rules" / "rules.yaml").write_text(rules.replace("'t'", "'u'"))
            assert a.reload()
            made = ["u"]
        else:
            assert b._step() and [] == queued_aliases(b)
            made = ["t"]
        with caplog.at_level(logging.INFO, logger="rulesd"):
            step_with_its_answer_lost(a)
        assert "batch not committed (its answer was lost): applied again" in caplog.text
        assert made == queued_aliases(a), "made"
        redis_server.client().flushall()
        assert a._step() and not a.pending
        assert made == queued_aliases(a)


@pytest.mark.parametrize("how", ["read", "claimed from a dead worker"])
def test_a_stream_batch_in_hand_when_redis_restarts_without_its_data_is_committed_and_the_worker_goes_on(
    tmp_path: Path, redis_server: RedisServer, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Worker a holds a page's entry (read, or claimed from a dead worker) when Redis restarts
    without its data, the stream with it: a commits the page it holds (the only copy of it left),
    queues again the alert Redis lost, and reads on. (The commit script failed on the stream gone,
    an error that ended the worker; a claimed batch was refused as one with a gap between its
    entries, again and again, and the worker read nothing more.)"""
    with contextlib.ExitStack() as stack:
        w = Workers(stack, tmp_path, redis_server)
        held = w.add({"ts": w.start + 15, "kind": "page", "id": 1})
        if how != "read":
            w.client.xreadgroup("rulesd", "dead", {STREAM: ">"}, count=1)
            time.sleep(1.2)  # past claim_idle
        with caplog.at_level(logging.INFO, logger="rulesd"):
            assert w.a._read() and held == w.a.pending[0].entries.ids  # type: ignore[union-attr]
        if how != "read":
            assert "claimed 1 stream entry left pending for 1s or more" in caplog.text, caplog.text
        redis_server.restart_empty()
        assert w.a._step() and not w.a.pending
        assert held == w.a.store.cursor().split()
        assert [H0, "p-1"] == w.queued()
        w.client = redis_server.client()
        w.add({"ts": w.start + 16, "kind": "page", "id": 2})
        assert not w.a._step(), "the consumer group is gone: made again"
        assert w.a._step() and not w.a.pending
        assert [H0, "p-1", "p-2"] == w.queued()


@pytest.mark.parametrize("mode", ["fleet", "stream"])
def test_a_stop_with_a_batch_refused_for_its_rules_says_the_batch_was_not_committed_and_where_it_is(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    """A rolling deploy: another instance published other rules, so a keeps its batch; a is
    stopped before its own restart with them. The stop says the batch was not committed, why, and
    where its events are (read again at the next start, or pending for another worker to claim).
    (It said nothing: the stop's summary counted the events as if committed.)"""
    with contextlib.ExitStack() as stack:
        if mode == "fleet":
            a = on_pages(stack, tmp_path, redis_server, PAGE_RULES, 2)
        else:
            w = Workers(stack, tmp_path, redis_server)
            w.add({"ts": w.start + 15, "kind": "page", "id": 1})
            a = w.a
        a.store.client.set(a.store.k.rules, "0123456789abcdef")
        assert a._step() and 1 == len(a.pending)
        a.stop_requested.set()
        with caplog.at_level(logging.WARNING, logger="rulesd"):
            a._loop()  # (stopping at once)
        where = "its 1 stream entry stays pending" if mode == "stream" else "its lines are read again"
        said = "the batch read was not committed (refusing to commit: rule set "
        assert said in caplog.text and where in caplog.text, caplog.text


def test_a_stop_while_a_batch_waits_its_turn_says_so_and_not_an_older_error(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Worker a holds a batch behind an entry a dead worker read (not yet idle for claim_idle)
    when it is stopped, after an error said earlier: the stop says the batch waited its turn,
    not that error (it gave the last error, whatever it was, as the reason)."""
    with contextlib.ExitStack() as stack:
        w = Workers(stack, tmp_path, redis_server)
        w.add({"ts": w.start + 15, "kind": "page", "id": 1})
        w.client.xreadgroup("rulesd", "dead", {STREAM: ">"}, count=1)
        w.add({"ts": w.start + 15, "kind": "page", "id": 2})
        w.a._lost("Redis lost the shared state (restarted without its data, flushed, or its keys evicted): …")
        assert w.a._step() and 1 == len(w.a.pending) and [] == w.queued()[1:]
        w.a.stop_requested.set()
        with caplog.at_level(logging.WARNING, logger="rulesd"):
            w.a._loop()  # (stopping at once)
        said = "the batch read was not committed (stopped before its turn came): its 1 stream entry stays pending"
        assert said in caplog.text


def run_twin(
    fleet: Fleet, name: str, config: Path, timeout: float = 60, command: str = "run"
) -> subprocess.CompletedProcess[str]:
    """`rulesd run` (or `command`) on `config` in the foreground, to its exit."""
    args = [sys.executable, "-m", "rulesd", command, "--config", str(config)]
    return subprocess.run(args, capture_output=True, text=True, cwd=fleet.root, env=clean_env(), timeout=timeout)


def refused_as_taken(twin: subprocess.CompletedProcess[str], pid: int, config: str, started: str) -> None:
    """`twin` exited 2 at start, naming the holder of the name 'a' (`pid`) and the `config` to change."""
    assert 2 == twin.returncode, twin.stderr
    first_line = twin.stderr.splitlines()[0]
    assert first_line.startswith(
        f"rulesd: error: cannot start: instance 'a' is in use by another rulesd process (pid {pid} on host "
    ), twin.stderr
    assert "give each its own name with state: {instance: …} in " in first_line and config in first_line
    assert started not in twin.stderr and "Traceback" not in twin.stderr


def name_holder(redis_server: RedisServer, name: str) -> dict[str, Any] | None:
    raw = redis_server.client().get(f"rulesd:instance:{name}")
    return json.loads(raw) if raw else None


def append_logins(path: Path, count: int) -> None:
    with open(path, "a") as fh:
        fh.write("".join(json.dumps({"event": "login_failed", "user": "x"}) + "\n" for _ in range(count)))


@pytest.mark.parametrize("mode", ["fleet", "stream"])
def test_a_second_live_process_under_an_instance_name_refuses_to_start(
    tmp_path: Path, redis_server: RedisServer, mode: str
) -> None:
    """A templated config naming every host's instance alike (another state directory, the
    same `instance:`): the second process exits 2 at once, naming the instance, the holder and
    what to change; the first goes on holding the name, which a clean stop gives up."""
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=FLEET_RULES)
    log_file = tmp_path / "a.jsonl"
    log_file.touch()
    first = fleet.start_on_file("a", log_file) if mode == "fleet" else fleet.start("a")
    holder = name_holder(redis_server, "a")
    assert holder is not None and holder["pid"] == first.proc.pid
    extra: dict[str, Any] = {"state": {"backend": "redis", "url": redis_server.url, "instance": "a"}}
    if mode == "fleet":
        extra["source"] = {"type": "file", "path": str(log_file), "start_at": "beginning"}
    twin = run_twin(fleet, "a", fleet.config("a-copy", **extra))
    refused_as_taken(twin, first.proc.pid, "a-copy.yaml", "rulesd started")
    assert first.proc.poll() is None and name_holder(redis_server, "a") == holder
    assert 0 == first.terminate()
    assert name_holder(redis_server, "a") is None  # given up at the clean stop


def test_a_name_whose_holder_was_killed_on_this_host_is_taken_at_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """kill -9 leaves the name held for its lease (30 s): a restart on the same host sees the
    holder's pid gone and takes it at once, resuming at the positions the killed one committed."""
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=FLEET_RULES)
    log_file = tmp_path / "a.jsonl"
    append_logins(log_file, 3)
    first = fleet.start_on_file("a", log_file)
    assert first.wait_for_log("committed version")
    first.kill()
    assert name_holder(redis_server, "a") is not None
    started = time.monotonic()
    again = fleet.start_on_file("a", log_file)
    assert time.monotonic() - started < 20, again.output()
    assert f"instance 'a' taken over from pid {first.proc.pid} on host " in again.stderr()
    holder = name_holder(redis_server, "a")
    assert holder is not None and holder["pid"] == again.proc.pid
    assert 0 == again.terminate()


def held_elsewhere(redis_server: RedisServer, name: str, lease_ms: int, role: str = "") -> bytes:
    """The name claimed as a process on another host would (`role`: "forward:" for a forwarder's);
    the key's value."""
    holder = {"token": "elsewhere:1:x", "host": "elsewhere", "pid": 4242, "since": time.time() - 60}
    holder |= {"boot": "another-boot", "pidns": "pid:[1]", "started": "1"}
    raw = json.dumps(holder).encode()
    redis_server.client().set(f"rulesd:{role}instance:{name}", raw, px=lease_ms)
    return raw


def test_a_name_held_on_another_host_is_waited_out_or_refused_if_renewed(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A holder this host cannot look at (another host, or container): its lease is waited out,
    said in the log, and the name taken; renewed meanwhile (a live process), the start refuses."""
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=FLEET_RULES)
    log_file = tmp_path / "a.jsonl"
    log_file.touch()
    held_elsewhere(redis_server, "a", 3000)
    started = time.monotonic()
    process = fleet.start_on_file("a", log_file)
    assert time.monotonic() - started >= 2.5
    stderr = process.stderr()
    assert "instance 'a' is held by pid 4242 on host elsewhere since " in stderr, stderr
    assert re.search(r"waiting up to [1-3] s for its lease to run out", stderr), stderr
    assert "instance 'a' claimed: the lease of its last holder ran out" in stderr
    assert 0 == process.terminate()

    held_elsewhere(redis_server, "a", 3000)
    renewing = threading.Event()

    def renew() -> None:
        while not renewing.wait(0.5):
            redis_server.client().pexpire("rulesd:instance:a", 3000)

    thread = threading.Thread(target=renew, daemon=True)
    thread.start()
    try:
        refused = run_twin(fleet, "a", fleet.on_file("a", log_file, redis_server.url))
    finally:
        renewing.set()
        thread.join()
    assert 2 == refused.returncode, refused.stderr
    assert "cannot start: instance 'a' is in use by another rulesd process (pid 4242 on host elsewhere" in (
        refused.stderr
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("command", ["run", "forward"])
def test_a_stop_while_a_name_held_elsewhere_is_waited_out_ends_the_start_at_once(
    tmp_path: Path, redis_server: RedisServer, command: str, signum: signal.Signals
) -> None:
    """`systemctl stop` while a start waits out the lease of a holder on another host: the
    process ends at once with exit 0, saying it stopped before claiming the name; the name stays
    the other's and nothing was read (the forwarder waited the lease out, up to 30 s, and started
    before it stopped; `rulesd run` was ended by the signal's default action without a word, or
    by SIGINT's KeyboardInterrupt with exit 130)."""
    log_file = tmp_path / "a.jsonl"
    append_logins(log_file, 3)
    if command == "run":
        fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=FLEET_RULES)
        config, role = fleet.on_file("a", log_file, redis_server.url), ""
    else:
        config, role = forward_config(tmp_path, redis_server.url, log_file, "a", "one.yaml"), "forward:"
    holder = held_elsewhere(redis_server, "a", 60_000, role)
    process = DaemonProcess(tmp_path, [command, "--config", str(config)], None)
    assert process.wait_for_log("for its lease to run out", 60), process.output()
    process.proc.send_signal(signum)
    sent = time.monotonic()
    assert 0 == process.proc.wait(20), process.output()
    assert time.monotonic() - sent < 10, process.output()
    stderr = process.stderr()
    said = f"received {signum.name}: stopping before the start: instance 'a' was not claimed (held by pid 4242 on host"
    assert said in stderr and "nothing was read" in stderr, stderr
    assert "started" not in stderr and "Traceback" not in stderr, stderr
    assert holder == redis_server.client().get(f"rulesd:{role}instance:a")
    assert 0 == redis_server.client().exists(STREAM, "rulesd:positions", "rulesd:forward:positions")


def test_a_paused_process_whose_name_was_taken_stops_and_commits_nothing(
    tmp_path: Path, redis_server: RedisServer, opsgenie: FakeOpsGenie
) -> None:
    """SIGSTOP past the lease (its expiry is made here at once), another process takes the name
    and reads on: the paused one, back, stops with exit 2 and commits nothing (its positions
    would send the next restart back, or ahead); the five failed logins page once."""
    fleet = Fleet(tmp_path, redis_server.url, opsgenie.url, rules=FLEET_RULES)
    log_file = tmp_path / "a.jsonl"
    append_logins(log_file, 2)
    first = fleet.start_on_file("a", log_file)
    assert first.wait_for_log("committed version")
    first.proc.send_signal(signal.SIGSTOP)
    try:
        redis_server.client().delete("rulesd:instance:a")  # its lease ran out
        second = fleet.start(
            "a2",
            source={"type": "file", "path": str(log_file), "start_at": "beginning"},
            state={"backend": "redis", "url": redis_server.url, "instance": "a"},
        )
        append_logins(log_file, 3)
        assert opsgenie.wait_for(lambda r: len(r) >= 1, 20), second.output()
        positions = redis_server.client().hgetall("rulesd:positions")
    finally:
        first.proc.send_signal(signal.SIGCONT)
    append_logins(log_file, 5)
    assert 2 == first.proc.wait(30), first.output()
    stderr = first.stderr()
    assert "instance 'a' is now held by another rulesd process (pid " in stderr, stderr
    assert "this one commits nothing more" in stderr and "Traceback" not in stderr
    assert opsgenie.wait_for(lambda r: len(r) >= 2, 20), second.output()
    assert wait_until(lambda: redis_server.client().hgetall("rulesd:positions") != positions, 15)
    holder = name_holder(redis_server, "a")
    assert holder is not None and holder["pid"] == second.proc.pid
    assert 0 == second.terminate()
    assert ["brute force on x"] * 2 == [r.json()["message"] for r in opsgenie.requests]


def test_a_name_redis_lost_is_claimed_again(tmp_path: Path, redis_server: RedisServer) -> None:
    """Redis restarted without its data: the running instance claims its name again (said), so
    a second process under it is still refused."""
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=FLEET_RULES)
    log_file = tmp_path / "a.jsonl"
    log_file.touch()
    first = fleet.start_on_file("a", log_file)
    redis_server.restart_empty()
    assert first.wait_for_log("was no longer held by this process in Redis", 30), first.output()
    holder = name_holder(redis_server, "a")
    assert holder is not None and holder["pid"] == first.proc.pid
    twin = run_twin(
        fleet,
        "a",
        fleet.config(
            "a-copy",
            source={"type": "file", "path": str(log_file)},
            state={"backend": "redis", "url": redis_server.url, "instance": "a"},
        ),
    )
    assert 2 == twin.returncode and "instance 'a' is in use by another rulesd process" in twin.stderr, twin.stderr
    assert 0 == first.terminate()


def test_alerts_redis_lost_while_standard_input_ended_are_queued_again(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """An alert committed, not yet delivered (OpsGenie unreachable), then Redis goes down and
    comes back without its data while standard input ends: the instance looks once more before it
    stops reading, finds the alert lost and queues it again (it returned at the end of input at
    once, and the page was lost without a word)."""
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=FLEET_RULES)
    config = fleet.config("a", source={"type": "stdin"}, time_field=None)
    process = DaemonProcess(tmp_path, ["run", "--config", str(config)], None, stdin=subprocess.PIPE)
    assert process.wait_for_log("rulesd started", 60), process.output()
    assert process.proc.stdin is not None
    process.proc.stdin.write(
        b"".join(json.dumps({"event": "login_failed", "user": "x"}).encode() + b"\n" for _ in range(5))
    )
    process.proc.stdin.flush()
    assert process.wait_for_log("committed version"), process.output()
    redis_server.stop()
    process.proc.stdin.close()
    time.sleep(2.0)
    shutil.rmtree(redis_server.directory / "appendonlydir", ignore_errors=True)
    redis_server.start()
    assert process.wait_for_log("alert(s) this instance queued and had not seen delivered are queued again", 30), (
        process.output()
    )
    assert wait_until(lambda: redis_server.client().xlen("rulesd:outbox") == 1, 15), process.output()
    assert 0 == process.proc.wait(60), process.output()  # (after the 30 s given to deliver at the end of input)
    assert ["brute force on x"] == [
        json.loads(f[b"payload"])["message"] for _, f in redis_server.client().xrange("rulesd:outbox")
    ]


def test_a_stop_with_a_batch_from_standard_input_not_committed_says_its_lines_are_lost(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A line piped in while the commit is refused (another instance published other rules, as
    while Redis is unavailable), then SIGTERM: the batch is not committed, and standard input
    cannot be read again, so the stop says as an error that its line is lost (it said its lines
    would be read again at the next start, hiding the loss)."""
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=FLEET_RULES)
    config = fleet.config("a", source={"type": "stdin"}, time_field=None)
    process = DaemonProcess(tmp_path, ["run", "--config", str(config)], None, stdin=subprocess.PIPE)
    assert process.wait_for_log("rulesd started", 60), process.output()
    assert process.proc.stdin is not None
    # (its own rule set is published by its loop's first pass, after the start is said)
    assert wait_until(lambda: redis_server.client().get("rulesd:rules") is not None, 30), process.output()
    redis_server.client().set("rulesd:rules", "0123456789abcdef")
    process.proc.stdin.write(json.dumps({"event": "login_failed", "user": "x"}).encode() + b"\n")
    process.proc.stdin.flush()
    assert process.wait_for_log("refusing to commit", 30), process.output()
    assert 0 == process.terminate(60), process.output()
    said = "the batch read was not committed (refusing to commit: rule set "
    assert said in process.stderr(), process.output()
    assert "its 1 line(s) from standard input cannot be read again and are lost" in process.stderr()
    assert "read again at the next start" not in process.stderr()


def piped_and_file(root: Path, redis_server: RedisServer, log_file: Path) -> Path:
    """The config of instance a in fleet mode over two named sources: standard input, and the
    file at `log_file` from its beginning."""
    Fleet(root, redis_server.url, "http://127.0.0.1:9", rules=FLEET_RULES)
    settings = {
        "rules": ["rules"],
        "sources": [
            {"name": "piped", "type": "stdin"},
            {"name": "app", "type": "file", "path": str(log_file), "start_at": "beginning"},
        ],
        "state": {"backend": "redis", "url": redis_server.url, "instance": "a"},
        "state_dir": "state-a",
        "opsgenie": {"api_key_file": "opsgenie.key", "alert_url": "http://127.0.0.1:9/v2/alerts"},
    }
    (root / "a.yaml").write_text(yaml.safe_dump(settings))
    return root / "a.yaml"


def on_piped_logins(stack: contextlib.ExitStack, config_path: Path, count: int) -> SharedDaemon:
    """Instance a of `config_path` turned by hand, started, `count` failed logins piped to its
    standard input (its end closed)."""
    from rulesd.config import load_config
    from rulesd.daemon import build_parts
    from rulesd.rules.loader import load_ruleset

    config = load_config(str(config_path))
    read_end, write_end = os.pipe()
    os.write(write_end, (json.dumps({"event": "login_failed", "user": "x"}) + "\n").encode() * count)
    os.close(write_end)
    parts = build_parts(config, load_ruleset(config.rules), environ={}, stdin_fd=read_end)
    stack.callback(parts.store.close)
    assert parts.lock is not None
    stack.callback(parts.lock.release)
    assert isinstance(parts.store, RedisState)
    daemon = SharedDaemon(parts, parts.store, None)
    daemon.shared.start()
    daemon._started = True
    return daemon


def test_a_stop_with_a_batch_from_standard_input_and_a_file_not_committed_says_where_each_goes(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Sources standard input and a file, one batch holding three lines of the one and two of
    the other, refused (another instance published other rules), then the stop: it says the
    lines from standard input are lost and those from the file are read again at the next start
    (it spoke of standard input's alone, as if the file's were lost too, or not there)."""
    log_file = tmp_path / "a.jsonl"
    append_logins(log_file, 2)
    with contextlib.ExitStack() as stack:
        a = on_piped_logins(stack, piped_and_file(tmp_path, redis_server, log_file), 3)
        a.store.client.set(a.store.k.rules, "0123456789abcdef")
        assert a._step() and 1 == len(a.pending)
        a.stop_requested.set()
        with caplog.at_level(logging.WARNING, logger="rulesd"):
            a._loop()  # (stopping at once)
    said = [r.getMessage() for r in caplog.records if "the batch read was not committed" in r.getMessage()]
    assert 1 == len(said), caplog.text
    assert "its 3 line(s) from standard input cannot be read again and are lost" in said[0]
    assert "; the 2 line(s) from its other sources are read again at the next start" in said[0]


def forward_config(root: Path, redis_url: str, log_file: Path, name: str, file: str) -> Path:
    """A `rulesd forward` config under instance `name`, with its own state directory."""
    config = root / file
    state = {"backend": "redis", "url": redis_url, "instance": name}
    source = {"type": "file", "path": str(log_file), "start_at": "beginning"}
    forward = {"url": redis_url, "stream": STREAM, "batch_lines": 50}
    settings = {"source": source, "state_dir": file + ".state", "state": state, "forward": forward}
    config.write_text(yaml.safe_dump(settings))
    return config


def forwarded(redis_server: RedisServer) -> list[int]:
    """The `n` of every event in the stream, in order."""
    out = []
    for _, fields in redis_server.client().xrange(STREAM):
        out += [json.loads(line)["n"] for line in fields[b"events"].split(b"\n")]
    return out


def forward_holder(redis_server: RedisServer, name: str) -> dict[str, Any] | None:
    raw = redis_server.client().get(f"rulesd:forward:instance:{name}")
    return json.loads(raw) if raw else None


def test_one_forwarder_per_instance_name_beside_a_daemon_of_that_name(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A second `rulesd forward` under a live forwarder's name (another state directory: another
    container) does not start: exit 2, naming the holder (they overwrote each other's positions, so
    a restart sent lines twice or skipped them). A `rulesd run` of that name runs beside it (its
    positions and name are other keys). Killed, the forwarder's name is taken at once on this
    host; every line is in the stream once, and a clean stop gives the name up."""
    log_file = tmp_path / "app.jsonl"

    def write(first: int, count: int) -> None:
        with open(log_file, "a") as fh:
            fh.write("".join(json.dumps({"n": first + i}) + "\n" for i in range(count)))

    write(0, 100)
    one = forward_config(tmp_path, redis_server.url, log_file, "a", "one.yaml")
    two = forward_config(tmp_path, redis_server.url, log_file, "a", "two.yaml")
    first = DaemonProcess(tmp_path, ["forward", "--config", str(one)], None)
    assert first.wait_for_log("rulesd forward started"), first.output()
    holder = forward_holder(redis_server, "a")
    assert holder is not None and holder["pid"] == first.proc.pid
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=FLEET_RULES)
    other = tmp_path / "other.jsonl"
    append_logins(other, 1)
    daemon = fleet.start_on_file("a", other)
    assert daemon.wait_for_log("committed version"), daemon.output()
    twin = run_twin(fleet, "a", two, command="forward")
    refused_as_taken(twin, first.proc.pid, "two.yaml", "rulesd forward started")
    assert wait_until(lambda: len(forwarded(redis_server)) >= 100, 15)
    first.kill()
    write(100, 50)
    started = time.monotonic()
    second = DaemonProcess(tmp_path, ["forward", "--config", str(two)], None)
    assert second.wait_for_log("rulesd forward started"), second.output()
    assert time.monotonic() - started < 20, second.output()
    assert f"instance 'a' taken over from pid {first.proc.pid} on host " in second.stderr()
    assert wait_until(lambda: len(forwarded(redis_server)) >= 150, 15)
    assert 0 == second.terminate()
    assert forward_holder(redis_server, "a") is None  # given up at the clean stop
    assert list(range(150)) == forwarded(redis_server)
    assert daemon.proc.poll() is None and name_holder(redis_server, "a") is not None
    assert 0 == daemon.terminate()


def test_a_forwarder_that_finds_its_name_taken_stops(tmp_path: Path, redis_server: RedisServer) -> None:
    """The name is held by another process (this one was paused past its lease and another took
    it): within the renewal's 5 s the forwarder stops with exit 2 and leaves the name to it."""
    log_file = tmp_path / "app.jsonl"
    log_file.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(10)))
    config = forward_config(tmp_path, redis_server.url, log_file, "a", "one.yaml")
    process = DaemonProcess(tmp_path, ["forward", "--config", str(config)], None)
    assert process.wait_for_log("rulesd forward started"), process.output()
    assert wait_until(lambda: len(forwarded(redis_server)) >= 10, 15)
    holder = {"token": "elsewhere:1:x", "host": "elsewhere", "pid": 4242, "since": time.time() - 60}
    redis_server.client().set("rulesd:forward:instance:a", json.dumps(holder), px=60_000)
    assert 2 == process.proc.wait(30), process.output()
    said = "stopping: instance 'a' is now held by another rulesd process (pid 4242 on host elsewhere"
    assert said in process.stderr(), process.output()
    assert list(range(10)) == forwarded(redis_server)
    assert forward_holder(redis_server, "a") == holder  # not given up: it is the other's


@pytest.mark.parametrize(("first", "second"), [("run", "forward"), ("forward", "run"), ("forward", "forward")])
def test_a_forwarder_and_another_process_on_one_state_directory_do_not_run_together(
    tmp_path: Path, redis_server: RedisServer, first: str, second: str
) -> None:
    """`rulesd forward` keeps its positions in `state_dir` as `rulesd run` does: started on the
    directory of a running daemon or forwarder (under another instance name), or a daemon on a
    forwarder's, the second exits 2 at once naming the directory and the first's pid, as a second
    daemon does (they ran together and overwrote each other's positions: lines skipped or read
    twice); the first runs on and stops cleanly."""
    fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=FLEET_RULES)
    log_file = tmp_path / "a.jsonl"
    append_logins(log_file, 3)
    source = {"type": "file", "path": str(log_file), "start_at": "beginning"}

    def config(command: str, name: str) -> Path:
        if command == "run":
            return fleet.config(name, source=source, state={"backend": "sqlite"}, state_dir="shared", time_field=None)
        forward = {"url": redis_server.url, "stream": STREAM}
        state = {"backend": "redis", "url": redis_server.url, "instance": name}
        return fleet.config(name, source=source, state=state, state_dir="shared", forward=forward)

    running = DaemonProcess(tmp_path, [first, "--config", str(config(first, "one"))], None)
    assert running.wait_for_log("rulesd started" if first == "run" else "rulesd forward started", 60), running.output()
    refused = run_twin(fleet, "two", config(second, "two"), timeout=30, command=second)
    assert 2 == refused.returncode, refused.stderr
    said = f"cannot start: state directory {tmp_path / 'shared'} is in use by another rulesd (pid {running.proc.pid})"
    assert said in refused.stderr and "started" not in refused.stderr, refused.stderr
    assert running.proc.poll() is None
    assert 0 == running.terminate(), running.output()


@pytest.mark.parametrize("named", [False, True])
def test_a_stop_while_redis_is_down_commits_a_batch_from_standard_input_if_redis_comes_back_in_time(
    tmp_path: Path, redis_server: RedisServer, named: bool
) -> None:
    """Five lines piped in, Redis killed before their commit, the instance stopped, Redis back a
    moment later (a restart, a failover): within the stop's bound the batch is committed and its
    alert queued (standard input cannot be read again: the batch was dropped with the process,
    said lost). `named`: standard input as a named source beside a file, under `sources:` (not
    known as standard input there, the batch was dropped, said to be read again)."""
    if named:
        (tmp_path / "a.jsonl").touch()
        config = piped_and_file(tmp_path, redis_server, tmp_path / "a.jsonl")
    else:
        fleet = Fleet(tmp_path, redis_server.url, "http://127.0.0.1:9", rules=FLEET_RULES)
        config = fleet.config("a", source={"type": "stdin"}, time_field=None)
    with contextlib.ExitStack() as stack:
        a = on_piped_logins(stack, config, 5)
        redis_server.stop()
        with pytest.raises(StateUnavailable) as raised:
            a._step()
        a._unavailable(raised.value)
        assert 1 == len(a.pending)
        back = threading.Timer(0.5, redis_server.start)
        back.start()
        a.stop_requested.set()
        a._loop()  # (stopping at once: the batch waited for)
        back.join()
        assert not a.pending
    payloads = [json.loads(f[b"payload"])["message"] for _, f in redis_server.client().xrange("rulesd:outbox")]
    assert ["brute force on x"] == payloads
