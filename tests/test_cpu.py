"""While the sender delivers, it and the reader share the reader's CPU (rulesd.daemon.cpu)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from rulesd.daemon import cpu
from rulesd.daemon.cpu import SharedCpu, running_on
from tests.daemon_process import Workspace, page, wait_until
from tests.fake_opsgenie import FakeOpsGenie, Received, Reply


@contextmanager
def reader_thread() -> Iterator[int]:
    """A live thread standing in for the daemon's reader; yields its native id."""
    stop, started = threading.Event(), threading.Event()
    ids: list[int] = []

    def loop() -> None:
        ids.append(threading.get_native_id())
        started.set()
        while not stop.wait(0.001):
            pass

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        assert started.wait(10)
        yield ids[0]
    finally:
        stop.set()
        thread.join(10)


@contextmanager
def kept_affinity() -> Iterator[None]:
    """This thread's CPUs as they were, whatever the test does to them."""
    before = os.sched_getaffinity(0)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def test_both_threads_share_the_readers_cpu_while_held_and_get_their_cpus_back() -> None:
    with kept_affinity(), reader_thread() as reader:
        readers, mine = os.sched_getaffinity(reader), os.sched_getaffinity(0)
        assert len(readers | mine) >= 2, "this test needs a machine with two CPUs or more"
        with SharedCpu(reader).held():
            held = os.sched_getaffinity(reader)
            assert 1 == len(held)
            assert held == os.sched_getaffinity(0)
            assert held <= readers
        assert readers == os.sched_getaffinity(reader)
        assert mine == os.sched_getaffinity(0)


def test_threads_already_on_one_cpu_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    with kept_affinity(), reader_thread() as reader:
        one = {min(os.sched_getaffinity(0))}
        os.sched_setaffinity(0, one)
        os.sched_setaffinity(reader, one)
        real = os.sched_setaffinity
        monkeypatch.setattr(os, "sched_setaffinity", lambda *a: (calls.append(a), real(*a)))
        with SharedCpu(reader).held():
            pass
        monkeypatch.setattr(os, "sched_setaffinity", real)
    assert [] == calls


def test_a_refusal_is_not_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A seccomp filter answering EPERM (systemd's SystemCallFilter): delivery goes on as before,
    and nothing is asked of the kernel again."""
    calls: list[Any] = []

    def refused(*args: Any) -> None:
        calls.append(args)
        raise PermissionError(1, "Operation not permitted")

    with reader_thread() as reader:
        before = os.sched_getaffinity(reader)
        monkeypatch.setattr(os, "sched_setaffinity", refused)
        shared = SharedCpu(reader)
        with shared.held():
            pass
        with shared.held():
            pass
        monkeypatch.undo()
        assert before == os.sched_getaffinity(reader)
    assert 1 == len(calls)
    assert not shared.usable


def test_the_reader_gets_its_cpus_back_if_this_thread_cannot_follow(monkeypatch: pytest.MonkeyPatch) -> None:
    with kept_affinity(), reader_thread() as reader:
        readers = os.sched_getaffinity(reader)
        real = os.sched_setaffinity

        def only_other_threads(thread: int, cpus: Any) -> None:
            if thread == 0:
                raise PermissionError(1, "Operation not permitted")
            real(thread, cpus)

        monkeypatch.setattr(os, "sched_setaffinity", only_other_threads)
        with SharedCpu(reader).held():
            assert readers == os.sched_getaffinity(reader)
        monkeypatch.undo()
        assert readers == os.sched_getaffinity(reader)


def test_a_reader_that_is_gone_is_not_an_error() -> None:
    gone = 4_194_305  # above Linux's largest pid_max: no thread has this id
    shared = SharedCpu(gone)
    with shared.held():
        pass
    assert not shared.usable


def test_running_on_tells_the_cpu_a_thread_is_kept_to() -> None:
    with kept_affinity():
        allowed = sorted(os.sched_getaffinity(0))
        assert running_on(threading.get_native_id()) in allowed
        last = allowed[-1]
        os.sched_setaffinity(0, {last})
        time.sleep(0.01)  # (moved at its next scheduling)
        assert last == running_on(threading.get_native_id())


def test_nothing_is_done_without_sched_setaffinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_setaffinity")
    shared = SharedCpu(threading.get_native_id())
    assert not shared.usable
    with shared.held():
        pass
    assert cpu.SharedCpu(None).usable is False


def test_the_daemon_s_sender_shares_the_reader_s_cpu_only_while_it_delivers(tmp_path: Path) -> None:
    """The real daemon: while an alert is in flight, its main thread (the reader) and another of
    its threads (the sender) are kept to one CPU; once delivered, every thread has its CPUs back."""
    allowed = os.sched_getaffinity(0)  # what the daemon inherits
    assert len(allowed) >= 2, "this test needs a machine with two CPUs or more"
    arrived, release = threading.Event(), threading.Event()

    def held_reply(_request: Received) -> Reply:
        arrived.set()
        release.wait(10)
        return Reply()

    with FakeOpsGenie(held_reply) as server:
        workspace = Workspace(tmp_path, server.url)
        daemon = workspace.start()
        pid = daemon.proc.pid
        try:
            assert daemon_threads_cpus(pid)[pid] == allowed  # idle: as it was started
            workspace.append(page(1))
            assert arrived.wait(10), daemon.output()
            during = daemon_threads_cpus(pid)
            assert 1 == len(during[pid])
            assert any(cpus == during[pid] for tid, cpus in during.items() if tid != pid)
            release.set()
            assert server.wait_for(lambda requests: len(requests) == 1)
            assert wait_until(lambda: set(daemon_threads_cpus(pid).values()) == {frozenset(allowed)}), (
                daemon_threads_cpus(pid)
            )
        finally:
            release.set()
            workspace.stop_all()


def daemon_threads_cpus(pid: int) -> dict[int, frozenset[int]]:
    """The CPUs each live thread of process `pid` may run on."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with suppress(ProcessLookupError):
            found[int(tid)] = frozenset(os.sched_getaffinity(int(tid)))
    return found
