"""While the sender delivers, it and the reader share the reader's CPU (rulesd.shared_cpu)."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from rulesd import shared_cpu as cpu
from rulesd.shared_cpu import SharedCpu, running_on
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


# One CPU to run on: nothing to place, and `held()` must then change nothing (checked below).
SEVERAL_CPUS = len(os.sched_getaffinity(0)) >= 2


def test_both_threads_share_the_readers_cpu_while_held_and_get_their_cpus_back() -> None:
    with kept_affinity(), reader_thread() as reader:
        readers, mine = os.sched_getaffinity(reader), os.sched_getaffinity(0)
        with SharedCpu(reader).held():
            held = os.sched_getaffinity(reader)
            if SEVERAL_CPUS:
                assert 1 == len(held)
                assert held == os.sched_getaffinity(0)
                assert held <= readers
            else:
                assert (readers, mine) == (held, os.sched_getaffinity(0))
        assert readers == os.sched_getaffinity(reader)
        assert mine == os.sched_getaffinity(0)


def test_threads_and_processes_started_during_a_hold_get_the_cpus_back() -> None:
    """A new thread starts with its creator's CPUs: those the reader or the sender start while
    held are given the reader's CPUs after; a child process, by `release_child`."""
    started: list[int] = []
    go, done, stop = threading.Event(), threading.Event(), threading.Event()

    def spawn() -> threading.Thread:
        thread = threading.Thread(target=lambda: (started.append(threading.get_native_id()), stop.wait(10)))
        thread.start()
        return thread

    def reader_loop() -> None:
        started.append(threading.get_native_id())
        go.wait(10)
        threads.append(spawn())  # started by the reader, while it is held
        done.set()
        stop.wait(10)

    threads: list[threading.Thread] = []
    reader = threading.Thread(target=reader_loop)
    with kept_affinity():
        reader.start()
        try:
            wait_until(lambda: len(started) == 1)
            readers = os.sched_getaffinity(started[0])
            with SharedCpu(started[0]).held():
                go.set()
                assert done.wait(10)
                threads.append(spawn())  # started by this thread, while it is held
                child = subprocess.Popen(["sleep", "10"])
                cpu.release_child(child.pid)
                assert wait_until(lambda: len(started) == 3)
            try:
                assert readers == os.sched_getaffinity(child.pid)
            finally:
                child.kill()
                child.wait()
            for tid in started:
                assert readers == os.sched_getaffinity(tid)
        finally:
            stop.set()
            go.set()
            reader.join(10)
            for thread in threads:
                thread.join(10)


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
    allowed = frozenset(os.sched_getaffinity(0))  # what the daemon inherits
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
            # Idle, as it was started (but for a look at the outbox, now and then).
            assert wait_until(lambda: daemon_threads_cpus(pid)[pid] == allowed)
            workspace.append(page(1))
            assert arrived.wait(10), daemon.output()
            during = daemon_threads_cpus(pid)
            if SEVERAL_CPUS:
                assert 1 == len(during[pid])
                assert any(cpus == during[pid] for tid, cpus in during.items() if tid != pid)
            else:
                assert {allowed} == set(during.values())
            release.set()
            assert server.wait_for(lambda requests: len(requests) == 1)
            assert wait_until(lambda: set(daemon_threads_cpus(pid).values()) == {allowed}), daemon_threads_cpus(pid)
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


def test_a_passing_error_is_tried_again_and_a_surprise_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """EINVAL (a cpuset changed between reading and setting) does not turn placing threads off;
    an unexpected error turns it off, and neither reaches the sender's loop."""
    with reader_thread() as reader:
        shared = SharedCpu(reader)
        if not SEVERAL_CPUS:
            assert shared.usable
            return

        def invalid(*args: Any) -> None:
            raise OSError(errno.EINVAL, "Invalid argument")

        monkeypatch.setattr(os, "sched_setaffinity", invalid)
        with shared.held():
            pass
        assert shared.usable
        monkeypatch.undo()

        def surprise(thread: int) -> int:
            raise RuntimeError("unexpected")

        monkeypatch.setattr(cpu, "running_on", surprise)
        with shared.held():
            pass
        assert not shared.usable
