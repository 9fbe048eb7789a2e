"""The daemon's threads: one that dies of an unexpected exception stops the daemon (status 1,
for systemd to restart it) after the usual drain, instead of leaving it looking healthy with
its work undone; a heartbeat ping's bug is a failed ping, never the end of the pings."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rulesd.config import load_config
from rulesd.daemon import Daemon, build_parts
from rulesd.daemon.build import Parts
from rulesd.rules.loader import load_ruleset
from tests.daemon_process import API_KEY, PAGE_RULE, aliases, page, wait_until
from tests.fake_opsgenie import FakeOpsGenie, Reply


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe whose read end is the daemon's standard input: open, so the input never ends."""
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def daemon_parts(tmp_path: Path, server: FakeOpsGenie, stdin_fd: int, **opsgenie: Any) -> Parts:
    """A daemon's real parts: stdin source, state in tmp_path, alerts to `server`."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(PAGE_RULE)
    config = {
        "rules": ["rules"],
        "source": {"type": "stdin"},
        "state_dir": str(tmp_path / "state"),
        "opsgenie": {"api_key": API_KEY, "alert_url": f"{server.url}/v2/alerts", "timeout_s": 2, **opsgenie},
    }
    (tmp_path / "rulesd.yaml").write_text(yaml.safe_dump(config))
    loaded = load_config(str(tmp_path / "rulesd.yaml"))
    return build_parts(loaded, load_ruleset(loaded.rules), environ={}, stdin_fd=stdin_fd)


def run(daemon: Daemon) -> int:
    """`daemon.run()` on this (the main) thread, the signal handlers it installs put back after."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        return daemon.run()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def run_until(parts: Parts, then: Callable[[], object]) -> int:
    """Run a daemon of `parts` until `then` (on another thread) has returned; its exit status."""

    def then_stop() -> None:
        try:
            then()
        finally:
            parts.stop_requested.set()

    stopper = threading.Thread(target=then_stop)
    stopper.start()
    try:
        return run(Daemon(parts))
    finally:
        stopper.join()


def test_a_thread_that_dies_stops_the_daemon_with_status_1_and_loses_nothing(
    tmp_path: Path, server: FakeOpsGenie, pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """The sender's thread dies of a bug after an alert was queued: the error is logged with the
    thread's name and its traceback, the daemon stops by itself with status 1 (it ran on with
    nothing delivering), and the stop's drain still delivers the queued alert once."""
    parts = daemon_parts(tmp_path, server, pipe[0])
    os.write(pipe[1], json.dumps(page(1)).encode() + b"\n")

    def dies(*_args: Any) -> None:
        assert wait_until(lambda: parts.store.depth()[0] == 1)
        raise RuntimeError("a bug in the sender")

    monkeypatch.setattr(parts.sender, "run", dies)
    hook = threading.excepthook
    gave_up = threading.Event()

    def give_up() -> None:  # a daemon that runs on without its sender: the test ends it
        gave_up.set()
        parts.stop_requested.set()

    timer = threading.Timer(10, give_up)
    timer.start()
    try:
        assert 1 == run(Daemon(parts))
    finally:
        timer.cancel()
    assert not gave_up.is_set(), "the daemon ran on after its sender died"
    assert threading.excepthook is hook
    assert ["p-1"] == aliases(server)
    (record,) = [r for r in caplog.records if "died" in r.getMessage()]
    assert "critical" == record.levelname.lower()
    assert record.getMessage().startswith("thread rulesd-sender died: RuntimeError: a bug in the sender; stopping")
    assert record.exc_info is not None and "in dies" in caplog.text  # the traceback


def test_a_heartbeat_ping_that_fails_unexpectedly_is_counted_and_pinging_goes_on(
    tmp_path: Path, server: FakeOpsGenie, pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """A ping that raises something other than a delivery error (a bug) is a failed ping, logged
    with its traceback: the heartbeat thread lives on (it died, and OpsGenie's heartbeat expired
    with the daemon running), and alerts keep going."""
    parts = daemon_parts(tmp_path, server, pipe[0], heartbeat="rulesd")
    assert parts.client is not None
    monkeypatch.setattr(parts.client, "ping_heartbeat", lambda _name: {}["a bug in the ping"])
    monkeypatch.setattr("rulesd.daemon.run.HEARTBEAT_EVERY", 0.2)

    def then_stop() -> None:
        wait_until(lambda: parts.stats.heartbeats.get("failed", 0) >= 2)
        os.write(pipe[1], json.dumps(page(1)).encode() + b"\n")
        server.wait_for(lambda r: len(r) >= 1)

    assert 0 == run_until(parts, then_stop)
    assert parts.stats.heartbeats.get("failed", 0) >= 2
    assert ["p-1"] == aliases(server)
    assert "heartbeat 'rulesd' not pinged: unexpected error" in caplog.text
    assert "KeyError: 'a bug in the ping'" in caplog.text


def test_a_heartbeat_outage_is_one_warning_and_its_end_is_said(
    tmp_path: Path, server: FakeOpsGenie, pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Pings that OpsGenie answers 503 three times in a row, then 202: one warning, the repeats
    at debug, and an info when pinging works again (a warning a minute, for as long as an
    outage lasted, before). Every failed ping is still counted."""
    caplog.set_level(logging.DEBUG, logger="rulesd")
    server.responder = lambda r: Reply(503, body=b'{"message":"down"}') if len(server.requests) < 3 else Reply()
    parts = daemon_parts(tmp_path, server, pipe[0], heartbeat="rulesd")
    monkeypatch.setattr("rulesd.daemon.run.HEARTBEAT_EVERY", 0.2)

    assert 0 == run_until(parts, lambda: wait_until(lambda: parts.stats.heartbeats.get("ok", 0) >= 1))
    assert 3 == parts.stats.heartbeats.get("failed", 0)
    pings = [(r.levelname, r.getMessage()) for r in caplog.records if r.getMessage().startswith("heartbeat 'rulesd'")]
    assert [
        ("WARNING", 'heartbeat \'rulesd\' not pinged: HTTP 503: {"message":"down"}'),
        ("DEBUG", 'heartbeat \'rulesd\' not pinged: HTTP 503: {"message":"down"}'),
        ("DEBUG", 'heartbeat \'rulesd\' not pinged: HTTP 503: {"message":"down"}'),
        ("INFO", "heartbeat 'rulesd' pinged again"),
    ] == pings[:4]


def test_the_end_of_the_stop_grace_with_no_request_in_flight_cuts_nothing_and_says_nothing_of_a_cut(
    tmp_path: Path, server: FakeOpsGenie, pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """A stop whose grace ends while no request is in flight (here the heartbeat thread, between
    pings, takes up to a second to notice the stop, past a grace made short) says nothing of
    a cut: it warned 'stopping: cutting the request in flight' with none under way."""
    parts = daemon_parts(tmp_path, server, pipe[0], heartbeat="rulesd")
    monkeypatch.setattr("rulesd.daemon.run.STOP_GRACE", 0.05)

    assert 0 == run_until(parts, lambda: wait_until(lambda: parts.stats.heartbeats.get("ok", 0) >= 1))
    assert 1 == len(server.requests)
    assert "cutting the request in flight" not in caplog.text
