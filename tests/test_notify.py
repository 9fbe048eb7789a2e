"""Tests for rulesd.notify: the sd_notify protocol over a real unix datagram socket."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from rulesd import notify
from rulesd.notify import Notifier


def receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2)
    return sock


def test_a_status_naming_a_path_that_is_not_utf8_is_sent_escaped(tmp_path: Path) -> None:
    """STATUS= may name a path (the state directory that is full), and a path that is not UTF-8
    holds a lone surrogate: encoding it raised in the main loop, a fatal error. systemd takes
    UTF-8 only: the surrogate goes as its escape, as the log writes it."""
    path = str(tmp_path / "notify")
    sock = receiver(path)
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.status("last error: state directory full: /var/lib/rulesd-\udcff")
    assert b"STATUS=last error: state directory full: /var/lib/rulesd-\\udcff" == sock.recv(4096)


def test_messages_reach_a_path_socket(tmp_path: Path) -> None:
    """READY=1 with STATUS=, RELOADING=1 with MONOTONIC_USEC=, STOPPING=1, WATCHDOG=1."""
    path = str(tmp_path / "notify")
    sock = receiver(path)
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.ready("3 rules")
    assert notifier.reloading()
    assert notifier.stopping()
    assert notifier.watchdog()
    messages = [sock.recv(4096).decode() for _ in range(4)]
    assert "READY=1\nSTATUS=3 rules" == messages[0]
    reloading, usec = messages[1].split("\n")
    assert "RELOADING=1" == reloading and usec.startswith("MONOTONIC_USEC=") and usec[15:].isdigit()
    assert ["STOPPING=1", "WATCHDOG=1"] == messages[2:]


def test_abstract_socket_with_at_sign() -> None:
    """NOTIFY_SOCKET=@name means the abstract namespace (a leading NUL byte)."""
    name = f"rulesd-test-{uuid.uuid4().hex}"
    sock = receiver("\0" + name)
    assert Notifier({"NOTIFY_SOCKET": "@" + name}).status("hello")
    assert b"STATUS=hello" == sock.recv(4096)


def test_without_a_socket_everything_is_a_no_op() -> None:
    """Outside systemd nothing is sent and nothing fails."""
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert notifier.watchdog_interval is None


def test_watchdog_interval_is_half_the_timeout_for_this_process_only() -> None:
    """WATCHDOG_USEC=30 s -> ping every 15 s; a WATCHDOG_PID of another process disables it."""
    assert 15.0 == Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval
    assert 15.0 == Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_interval
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval is None


def test_a_vanished_socket_is_not_an_error(tmp_path: Path) -> None:
    """If systemd's socket is gone, send reports False instead of raising."""
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing")}).ready()


def test_keep_extending_asks_for_more_time_until_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EXTEND_TIMEOUT_USEC= every EXTEND_EVERY seconds, the first only after EXTEND_EVERY (a short
    step sends nothing), none once stopped; outside systemd no thread is even started."""
    monkeypatch.setattr(notify, "EXTEND_EVERY", 0.1)
    path = str(tmp_path / "notify")
    sock = receiver(path)
    sock.settimeout(0.05)
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.keep_extending()()
    with pytest.raises(TimeoutError):
        sock.recv(4096)  # stopped before the first interval: nothing sent
    stop = notifier.keep_extending()
    time.sleep(0.35)
    stop()
    sock.settimeout(0.3)
    messages = []
    with contextlib.suppress(TimeoutError):
        while True:
            messages.append(sock.recv(4096).decode())
    assert 2 <= len(messages) <= 4, messages
    assert {f"EXTEND_TIMEOUT_USEC={int(notify.EXTEND_BY * 1_000_000)}"} == set(messages)
    threads = _threads()
    Notifier({}).keep_extending()()
    assert threads == _threads()


def _threads() -> set[threading.Thread]:
    """The threads alive, but a compile beside a daemon's loop that an earlier test's rule set
    began (`rulesd-compile`): it may end at any moment."""
    return {t for t in threading.enumerate() if t.name != "rulesd-compile"}
