"""A deadline for a whole HTTP request: connecting, sending, the headers and the body.

A socket's timeout only bounds each operation: a server that answers one byte per second never
trips a read timeout, and would hold the sender (and shutdown) for as long as it likes. Here a
watcher thread shuts the request's socket down when its time is up, which ends whatever call is
blocked on it at once, in any phase. The connection a request uses hands its socket to the
request's deadline (`Deadline.watch`, see `connections`). `Deadlines.abort` ends every request
in flight (at shutdown).
"""

from __future__ import annotations

import heapq
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress


class Deadline:
    """One request's deadline: `expired` once its time is up (or it was aborted)."""

    def __init__(self) -> None:
        self.expired = False
        self._finished = False
        self._sockets: list[socket.socket] = []
        self._alarms: list[threading.Event] = []
        self._lock = threading.Lock()

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down when the deadline expires (at once if it has)."""
        with self._lock:
            self._sockets.append(sock)
            if not self.expired:
                return
        _shut(sock)

    def alarm(self, event: threading.Event) -> None:
        """Set `event` when the deadline expires (at once if it has): a wait with no socket to
        shut down (an address lookup's) ends then too."""
        with self._lock:
            if not self.expired:
                self._alarms.append(event)
                return
        event.set()

    def expire(self) -> None:
        """Time is up: end every blocked call on this request's sockets, and every wait."""
        with self._lock:
            if self._finished:
                return
            self.expired = True
            sockets, self._sockets = self._sockets, []
            alarms, self._alarms = self._alarms, []
        for sock in sockets:
            _shut(sock)
        for event in alarms:
            event.set()

    def finish(self) -> None:
        """The request is over: a late timer must not cut a connection kept for the next one."""
        with self._lock:
            self._finished = True
            self._sockets = []
            self._alarms = []

    @property
    def finished(self) -> bool:
        """Whether the request is over (its deadline no longer matters)."""
        return self._finished


def _shut(sock: socket.socket) -> None:
    # The descriptor's own shutdown, also for a TLS socket: its `shutdown` first drops its TLS
    # state, and a call in another thread that then looked at it (a handshake just starting,
    # a request being written) would fail in a way no caller expects, or write in the clear.
    with suppress(OSError):  # already closed: nothing is blocked on it
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Deadlines:
    """The deadlines of the requests in flight, so that shutdown can end them all.

    One watcher thread, started with the first request, expires them when their time is up
    (a thread per request would cost more than a delivery's own work).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._active: set[Deadline] = set()
        self._due: list[tuple[float, int, Deadline]] = []  # a heap; finished ones are skipped
        self._count = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._watcher: threading.Thread | None = None
        self._clock = clock
        self.aborted = False

    @contextmanager
    def within(self, seconds: float) -> Iterator[Deadline]:
        """Run the body as one request that must be over within `seconds`."""
        deadline = Deadline()
        with self._lock:
            self._active.add(deadline)
            if self.aborted:
                deadline.expire()
            self._count += 1
            entry = (self._clock() + seconds, self._count, deadline)
            heapq.heappush(self._due, entry)
            # The watcher sleeps until the earliest deadline: woken only when this one is earlier
            # (the usual later one is found when the watcher wakes; waking it for each request
            # would cost a thread switch per alert).
            if self._due[0] is entry:
                self._changed.notify()
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="rulesd-deadlines", daemon=True)
                self._watcher.start()
        try:
            yield deadline
        finally:
            deadline.finish()
            with self._lock:
                self._active.discard(deadline)

    def _watch(self) -> None:
        """Expire each deadline when its time comes (the watcher thread's loop)."""
        with self._lock:
            while True:
                now = self._clock()
                while self._due and (self._due[0][0] <= now or self._due[0][2].finished):
                    _, _, deadline = heapq.heappop(self._due)
                    if not deadline.finished:
                        deadline.expire()  # takes only the deadline's own lock
                self._changed.wait(self._due[0][0] - now if self._due else None)

    def abort(self) -> int:
        """End every request in flight now, and every later one at once; how many were in flight
        (none: said so rather than a cut that did not happen)."""
        with self._lock:
            self.aborted = True
            active = [deadline for deadline in self._active if not deadline.finished]
        for deadline in active:
            deadline.expire()
        return len(active)
