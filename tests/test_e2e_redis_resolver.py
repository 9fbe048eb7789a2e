"""Redis named by a host name whose resolver never answers: real `rulesd` processes (run and
forward) whose process alone sees a dead resolver (`tests/dead_resolver.py`), a real
redis-server reached through its loopback, real signals. The name is in the process's
/etc/hosts while it starts, and removed when the test says."""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests import dead_resolver
from tests.daemon_process import DaemonProcess, install_key, wait_until
from tests.redis_server import RedisServer, free_port
from tests.test_e2e_redis import LATE_RULES

NAME = "redis.rulesd-dead-resolver.example"  # only the dead resolver is asked about it


class Setting:
    """A redis-server outside, its Unix socket led to a port of the processes' own loopback."""

    def __init__(self, root: Path, server: RedisServer, socket: Path) -> None:
        self.root, self.server, self.socket = root, server, socket
        self.port = free_port()
        self.hosts = root / "hosts"
        self.hosts.write_text(f"127.0.0.1 {NAME}\n")
        self.queries = root / "queries"
        self.url = f"redis://{NAME}:{self.port}/0"
        (root / "rules").mkdir()
        (root / "rules" / "rules.yaml").write_text(LATE_RULES)
        install_key(root / "opsgenie.key")
        self.events = root / "a.jsonl"
        self.events.write_text(json.dumps({"ts": time.time(), "event": "heartbeat", "host": "h0"}) + "\n")

    def start(self, *command: str, resolver_timeout: int = 30, **config: object) -> DaemonProcess:
        """`rulesd COMMAND --config` on a config reading `a.jsonl` with the state in this Redis."""
        settings = {
            "rules": ["rules"],
            "time_field": "ts",
            "source": {"type": "file", "path": str(self.events), "start_at": "beginning"},
            "state": {"backend": "redis", "url": self.url, "instance": "a"},
            "state_dir": "state-a",
            "opsgenie": {"api_key_file": "opsgenie.key", "alert_url": "http://127.0.0.1:9/v2/alerts", "timeout_s": 2},
            **config,
        }
        path = self.root / "a.yaml"
        path.write_text(yaml.safe_dump(settings))
        wrapper = dead_resolver.wrapper(self.queries, self.hosts, (self.port, self.socket), resolver_timeout)
        return DaemonProcess(self.root, [*command, "--config", str(path)], None, wrapper=wrapper)

    def resolver_dies(self) -> None:
        """The name leaves /etc/hosts: the next lookup asks the resolver, which never answers.
        (An answer serves for a second: connections made within it need no lookup.)"""
        self.hosts.write_text("")
        time.sleep(1.5)

    def lookups(self) -> list[str]:
        return self.queries.read_text().splitlines() if self.queries.exists() else []


@pytest.fixture
def setting(tmp_path: Path) -> Iterator[Setting]:
    with tempfile.TemporaryDirectory(prefix="rulesd-") as short:  # a socket's path is under 108 bytes
        server = RedisServer(tmp_path / "redis", unix_socket=Path(short) / "redis.sock")
        try:
            yield Setting(tmp_path, server, Path(short) / "redis.sock")
        finally:
            server.stop()


def waited(stderr: str) -> float:
    """The time a lookup was waited for, as the log says it."""
    found = re.search(rf"the lookup of {re.escape(NAME)}'s address had no answer within (\d+\.\d)s", stderr)
    assert found is not None, stderr
    return float(found[1])


def test_a_stop_with_a_dead_resolver_takes_the_stops_bound(setting: Setting) -> None:
    """The resolver dies under a running instance; at SIGTERM the stop makes its connections
    again, whose lookups wait the stop's bound (5 s), then the sender's grace: it exits 0 well
    within systemd's TimeoutStopSec=30s, saying why the clock was left, naming the host and the
    time waited, one lookup asked for all. (Each connection waited out the resolver, 30 s per
    query, and each command twice: the stop took 156 s.)"""
    a = setting.start("run")
    assert a.wait_for_log("committed version 1", 60), a.output()
    setting.resolver_dies()
    began = time.monotonic()
    assert 0 == a.terminate(timeout=60), a.output()
    assert time.monotonic() - began < 20, a.output()
    left = "state unavailable at the stop: the clock is left as last committed: Redis unavailable: the lookup"
    assert left in a.stderr(), a.output()
    assert 4.0 <= waited(a.stderr()) <= 5.0, a.stderr()
    assert {f"A {NAME}", f"AAAA {NAME}"} >= set(setting.lookups()), setting.lookups()


def test_redis_lost_while_the_resolver_is_dead_pauses_reading_and_resumes_once_it_answers(setting: Setting) -> None:
    """Redis restarts (the connections close) while the resolver is dead: the loop is held by
    no lookup longer than the connect timeout (5 s): it says the outage naming the host and the
    time waited, and resumes once the name is found again, after the query under way ended (the
    resolver's own timeout, 12 s here, past the 5 s: one lookup at a time). (The loop waited out
    the resolver, 30 s a query and twice per command, before it said anything.)"""
    a = setting.start("run", resolver_timeout=12)
    assert a.wait_for_log("committed version 1", 60), a.output()
    setting.resolver_dies()
    setting.server.restart()
    assert a.wait_for_log("state unavailable, reading paused until it is back: Redis unavailable: the lookup", 20)
    assert 4.0 <= waited(a.stderr()) <= 5.0, a.stderr()
    setting.hosts.write_text(f"127.0.0.1 {NAME}\n")
    assert a.wait_for_log("state available again: resuming", 45), a.output()
    assert 0 == a.terminate(timeout=30), a.output()


def test_a_start_with_a_dead_resolver_fails_within_the_connect_timeout(setting: Setting) -> None:
    """With no answer for Redis's host, the start ends after the connect timeout (5 s) with exit
    1, naming the host and the time waited, for systemd to restart it. (It waited out the
    resolver, 61 s, past systemd's stop timeout.)"""
    setting.hosts.write_text("")
    began = time.monotonic()
    a = setting.start("run")
    assert 1 == a.proc.wait(30), a.output()
    assert time.monotonic() - began < 15, a.output()
    assert "cannot start: Redis unavailable: the lookup of" in a.stderr(), a.output()
    assert 4.0 <= waited(a.stderr()) <= 5.0, a.stderr()


@pytest.mark.parametrize("command", ["run", "forward"])
def test_a_stop_while_the_start_waits_on_a_dead_resolver_ends_it_at_once(setting: Setting, command: str) -> None:
    """SIGTERM while the start waits for Redis's host: the wait is cut, and the process ends at
    once as after any stop, exit 0 (`rulesd forward` alike), saying the lookup was cut. (The
    signal was not even heard while the lookup blocked: the process ended 61 s later, exit 1,
    and a `systemctl stop` would have left the unit failed.)"""
    setting.hosts.write_text("")
    config = {"forward": {"url": setting.url, "stream": "rulesd:events"}} if command == "forward" else {}
    a = setting.start(command, **config)
    assert wait_until(lambda: bool(setting.lookups()), 30), a.output()
    began = time.monotonic()
    a.proc.terminate()
    assert 0 == a.proc.wait(30), a.output()
    assert time.monotonic() - began < 3, a.output()
    assert "received SIGTERM: stopping before the start: instance 'a' was not claimed" in a.stderr(), a.output()
    assert f"the lookup of {NAME}'s address was cut by the stop after" in a.stderr(), a.output()
