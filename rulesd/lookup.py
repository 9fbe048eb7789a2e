"""A host's addresses, looked up under a deadline: the alert host's for each request
(`rulesd.alerting.connections`), Redis's for each connection (`rulesd.state.connection`).

`getaddrinfo` cannot be cut: it blocks for as long as the resolver takes (5 s per attempt and
server by default, far longer behind a stuck NSS module), and a deadline that shuts a request's
sockets down has no socket to shut there. So a host name is looked up in a worker thread whose
answer the request awaits within its deadline, which a stop also ends. A lookup that outlives
the wait is abandoned to end on its own; while it is under way a later request awaits that same
lookup rather than start another, so a resolver that never answers holds one thread, however
many attempts and heartbeat pings are retried meanwhile.

An answer is used again for `REUSE_FOR` seconds, no longer: a thread per lookup costs ~200 µs of
CPU, paid by each alert where the server closes every connection (a relay speaking HTTP/1.0), and
a second is far below any record's TTL, so a moved host is found about as soon as before. An
address (`alert_url` naming an IP) is resolved in the request's own thread, once.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from rulesd.deadline import Deadline

AddressInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]  # as getaddrinfo gives it
REUSE_FOR = 1.0  # seconds an answer serves new connections before the host is looked up again


class LookupTimeout(TimeoutError):
    """The resolver had not answered for the host within the request's time."""


class _Lookup:
    """One lookup under way in its thread: its answer (or error), and the waits to wake."""

    def __init__(self) -> None:
        self.done = False
        self.answer: Sequence[AddressInfo] = ()
        self.error: Exception | None = None
        self.waiting: set[threading.Event] = set()


class Resolver:
    """Looks up `host` (for TCP to `port`) for the connections of one pool, at most one lookup
    at a time."""

    def __init__(self, host: str, port: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.host, self.port = host, port
        self._literal = _is_address(host)  # an address is no lookup: nothing can block
        # An address's answer, once had: it cannot change, and `getaddrinfo` (~4 µs, a release of
        # the GIL to the reader) was paid by every alert where the server closes each connection.
        # A failure (an IPv6 scope naming an interface not there yet) is not kept.
        self._fixed: Sequence[AddressInfo] | None = None
        self._under_way: _Lookup | None = None
        self._answered: tuple[float, Sequence[AddressInfo]] = (-REUSE_FOR, ())  # when, and the answer
        self._clock = clock
        self._lock = threading.Lock()

    def addresses(self, deadline: Deadline, timeout: float | None) -> Sequence[AddressInfo]:
        """The host's addresses, or `LookupTimeout` once `deadline` expires or `timeout` seconds
        pass with no answer; the resolver's own failure as an `OSError` naming the host."""
        if self._literal:
            if self._fixed is None:
                self._fixed = self._lookup()
            return self._fixed
        started = self._clock()
        at, answer = self._answered
        if started - at < REUSE_FOR:
            return answer
        woken = threading.Event()
        lookup = self._join(woken)
        deadline.alarm(woken)
        try:
            woken.wait(timeout)
        finally:
            with self._lock:
                lookup.waiting.discard(woken)
        if not lookup.done or deadline.expired:  # an answer just come is too late: the sockets are cut
            waited = self._clock() - started
            raise LookupTimeout(f"the lookup of {self.host}'s address had no answer within {waited:.1f}s")
        if lookup.error is not None:
            raise lookup.error
        return lookup.answer

    def _join(self, woken: threading.Event) -> _Lookup:
        """The lookup under way (a new one if none is), which sets `woken` when it ends."""
        with self._lock:
            lookup = self._under_way
            if lookup is None:
                lookup = _Lookup()
                # Started under the lock, which its end takes: it cannot end before it is under way.
                threading.Thread(target=self._run, args=(lookup,), name="rulesd-lookup", daemon=True).start()
                self._under_way = lookup
            lookup.waiting.add(woken)
            return lookup

    def _run(self, lookup: _Lookup) -> None:
        """The worker thread: look up, then wake whoever still waits."""
        try:
            lookup.answer = self._lookup()
        except Exception as exc:  # handed to the requests waiting, as a future does (their caller decides)
            lookup.error = exc
        else:
            self._answered = (self._clock(), lookup.answer)
        with self._lock:
            lookup.done = True
            self._under_way = None  # the next request looks up afresh
            waiting = list(lookup.waiting)
        for woken in waiting:
            woken.set()

    def _lookup(self) -> Sequence[AddressInfo]:
        try:
            return socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:  # `Name or service not known` alone names no host
            raise socket.gaierror(exc.errno, f"cannot look up {self.host}: {exc.strerror}") from None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
