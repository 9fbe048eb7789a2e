"""While the sender delivers, it runs on the CPU of the thread that reads and evaluates.

The two threads share one GIL. The reader lets go of it many times per batch (at every
Hyperscan scan and every read), and a sender waiting for it takes it at once. On two CPUs each
such hand-over wakes the other CPU and moves the interpreter's working set between caches:
measured on `rulesd run` with a burst of alerts, a fifth of the process's CPU time went to that.
On one CPU a hand-over is an ordinary context switch.

So for each pass of the sender that delivers, both threads are kept to the CPU the reader is on,
and given back the CPUs they were allowed before as soon as it ends. Between bursts the kernel
places the daemon where it likes: several rulesd processes on a host are never held on one CPU
for longer than a burst. A process already kept to one CPU (systemd's `CPUAffinity=`, `taskset`)
is left alone, and where threads cannot be placed (not Linux, a seccomp filter refusing
`sched_setaffinity`) nothing is done after the first refusal.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class SharedCpu:
    """`held()` keeps the calling thread and thread `reader` (a native thread id of this process)
    on the CPU `reader` is running on, until the block ends."""

    def __init__(self, reader: int | None) -> None:
        self.reader = reader
        self.usable = reader is not None and hasattr(os, "sched_setaffinity")

    @contextmanager
    def held(self) -> Iterator[None]:
        """Both threads on the reader's CPU for the block (or as they were, where that cannot be)."""
        pinned = self._pin() if self.usable else None
        try:
            yield
        finally:
            if pinned is not None:
                self._restore(*pinned)

    def _pin(self) -> tuple[int, set[int], set[int]] | None:
        """Pin both threads: the CPU, and their CPU sets before; None if nothing was changed."""
        assert self.reader is not None
        try:
            readers, mine = os.sched_getaffinity(self.reader), os.sched_getaffinity(0)
            cpu = running_on(self.reader)
            if len(readers | mine) < 2 or cpu not in readers or cpu not in mine:
                return None  # already on one CPU, or the reader's CPU is not one this thread may use
            os.sched_setaffinity(self.reader, {cpu})
        except (OSError, ValueError, IndexError) as exc:
            self._give_up(exc)
            return None
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError as exc:
            self._restore(cpu, readers, readers)
            self._give_up(exc)
            return None
        return cpu, readers, mine

    def _restore(self, cpu: int, readers: set[int], mine: set[int]) -> None:
        """Give the CPUs back: to the reader, to this thread, and to any thread started meanwhile
        by either (a new thread starts with its creator's CPUs). rulesd keeps no thread to one
        CPU otherwise, so a thread kept to exactly `cpu` is one of these."""
        me = threading.get_native_id()
        for thread in _threads():
            try:
                if os.sched_getaffinity(thread) != {cpu}:
                    continue
                cpus = mine if thread == me else readers
                try:
                    os.sched_setaffinity(thread, cpus)
                except OSError:
                    # The set allowed before is gone (a cpuset changed meanwhile): every CPU,
                    # which the kernel narrows to what the cgroup allows; never left on one.
                    os.sched_setaffinity(thread, range(os.cpu_count() or 1))
            except OSError as exc:  # the thread has ended meanwhile: nothing to give back
                log.debug("cannot give thread %s its CPUs back: %s", thread, exc)

    def _give_up(self, exc: BaseException) -> None:
        self.usable = False
        log.debug("threads are not placed on one CPU while delivering: %s", exc)


def _threads() -> list[int]:
    """The native ids of this process's threads."""
    try:
        return [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        return [threading.get_native_id()]


def running_on(thread: int) -> int:
    """The CPU thread `thread` of this process last ran on (field 39 of its /proc stat)."""
    with open(f"/proc/self/task/{thread}/stat", "rb") as fh:
        # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
        return int(fh.read().rsplit(b")", 1)[1].split()[36])
