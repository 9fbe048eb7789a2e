"""While the sender delivers, it runs on the CPU of the thread that reads and evaluates.

The two threads share one GIL. The reader lets go of it many times per batch (at every
Hyperscan scan and every read), and a sender waiting for it takes it at once. On two CPUs each
such hand-over wakes the other CPU and moves the interpreter's working set between caches:
measured on `rulesd run` with a burst of alerts, a fifth of the process's CPU time went to that.
On one CPU a hand-over is an ordinary context switch.

So for each pass of the sender (as long as alerts are due without a wait; an idle look at the
outbox is a pass too), both threads are kept to the CPU the reader is on, and given back the CPUs
they were allowed before as soon as it ends. So are the threads either of them started meanwhile
(a new thread starts with its creator's CPUs), and a child process the reader starts meanwhile
(journalctl) is given the daemon's CPUs (`release_child`). Between passes the kernel places the
daemon where it likes: several rulesd processes on a host are never held on one CPU for longer
than a burst. A process already kept to one CPU (systemd's `CPUAffinity=`, `taskset`) is left
alone, and where threads cannot be placed (not Linux, a seccomp filter refusing
`sched_setaffinity`) nothing is done after the first refusal.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# The errors after which placing threads is never tried again: the call is refused or missing.
_REFUSED = {errno.EPERM, errno.EACCES, errno.ENOSYS}
# More CPU numbers than any machine has: the kernel keeps those the process may use.
_ANY_CPU = 8192
# The CPUs the daemon's reader had outside a hold, for the child processes it starts.
_daemon_cpus: set[int] | None = None


class SharedCpu:
    """`held()` keeps the calling thread and thread `reader` (a native thread id of this process)
    on the CPU `reader` is running on, until the block ends."""

    def __init__(self, reader: int | None) -> None:
        global _daemon_cpus
        self.reader = reader
        self.usable = reader is not None and hasattr(os, "sched_setaffinity")
        if self.usable and reader is not None:
            try:
                _daemon_cpus = os.sched_getaffinity(reader)
            except OSError:
                self.usable = False

    @contextmanager
    def held(self) -> Iterator[None]:
        """Both threads on the reader's CPU for the block (or as they were, where that cannot be).
        Never raises: placing threads only ever saves time."""
        pinned = self._guarded(self._pin) if self.usable else None
        try:
            yield
        finally:
            if pinned is not None:
                self._guarded(lambda: self._restore(*pinned))

    def _guarded(self, step: Callable[[], T]) -> T | None:
        try:
            return step()
        except OSError as exc:
            if exc.errno in _REFUSED:
                self.usable = False
                log.debug("threads are not placed on one CPU while delivering: %s", exc)
            return None  # (a thread that has ended, a CPU set changed meanwhile: next time)
        except Exception:  # a surprise here must not stop delivery
            self.usable = False
            log.exception("placing threads on one CPU failed; not tried again")
            return None

    def _pin(self) -> tuple[int, set[int], set[int], set[int]] | None:
        """Pin both threads: the CPU, their CPU sets before and the threads alive then; None if
        nothing was changed."""
        assert self.reader is not None
        readers, mine = os.sched_getaffinity(self.reader), os.sched_getaffinity(0)
        cpu = running_on(self.reader)
        if len(readers | mine) < 2 or cpu not in readers or cpu not in mine:
            return None  # already on one CPU, or the reader's CPU is not one this thread may use
        before = set(_threads())
        os.sched_setaffinity(self.reader, {cpu})
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            _give(self.reader, readers)
            raise
        return cpu, readers, mine, before

    def _restore(self, cpu: int, readers: set[int], mine: set[int], before: set[int]) -> None:
        """Give the CPUs back: first to the reader and this thread (threads they start from now on
        start with them), then to the threads either started meanwhile and still on `cpu`."""
        assert self.reader is not None
        _give(0, mine)
        _give(self.reader, readers)
        for thread in set(_threads()) - before:
            try:
                if os.sched_getaffinity(thread) == {cpu}:
                    _give(thread, readers)
            except ProcessLookupError:
                pass  # ended meanwhile


def _give(thread: int, cpus: set[int]) -> None:
    """Thread `thread` (0: this one) may run on `cpus` again; if that set is no longer allowed (a
    cpuset changed meanwhile), on every CPU the cgroup allows: never left on one."""
    try:
        os.sched_setaffinity(thread, cpus)
    except ProcessLookupError:
        pass  # the thread has ended
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        os.sched_setaffinity(thread, range(_ANY_CPU))


def release_child(pid: int) -> None:
    """Give child process `pid`, just started, the daemon's CPUs: started during a hold, it would
    otherwise keep the one CPU of the thread that started it for good."""
    cpus = _daemon_cpus
    if cpus is None or len(cpus) < 2:
        return
    try:
        if len(os.sched_getaffinity(pid)) == 1:
            os.sched_setaffinity(pid, cpus)
    except OSError as exc:  # ended already, or refused: it only ever saves time
        log.debug("cannot give process %d the daemon's CPUs: %s", pid, exc)


def _threads() -> list[int]:
    """The native ids of this process's threads."""
    return [int(name) for name in os.listdir("/proc/self/task")]


def running_on(thread: int) -> int:
    """The CPU thread `thread` of this process last ran on (field 39 of its /proc stat)."""
    with open(f"/proc/self/task/{thread}/stat", "rb") as fh:
        # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
        return int(fh.read().rsplit(b")", 1)[1].split()[36])
