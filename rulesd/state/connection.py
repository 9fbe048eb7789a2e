"""Redis connections whose host is looked up under their connect timeout, and cut by a stop.

redis-py looks a host name up with a blocking `getaddrinfo` that no timeout covers: a resolver
that does not answer held each new connection for its own timeouts (30 s per query with
`timeout:30` in resolv.conf), the stop's commits too (whose connections the stop makes again,
see `RedisState.bound`), and the loop with them (/healthz, the heartbeat); a signal is not even
heard while the main thread sits in it. Here a TCP or TLS connection looks its host up through
`rulesd.lookup` (a worker thread, one lookup at a time per client, an answer used for a second),
waiting `socket_connect_timeout` at most, and a lookup under way when the process is told to
stop is not waited for any longer. A lookup that had no answer in time is a
`redis.exceptions.TimeoutError` that names the host and the time waited (Redis unavailable, not
retried at once as a closed connection is); one that fails (`Name or service not known`) is a
connection error naming the host, as before. The TLS handshake still checks the certificate
against the host name (`server_hostname`), not the address. A unix:// URL has no host: its
connections are redis-py's own.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis

from rulesd.deadline import Deadline
from rulesd.lookup import AddressInfo, LookupTimeout, Resolver


class LookupCuts:
    """The lookups a client's connections wait for; those under way when `stop` is set are cut.

    Only those under way: the stop's own commands (its bounded commits) connect again, and their
    lookups are bounded by the connect timeout the stop gives them. The cut is made by a thread
    that waits for `stop`, started with the first lookup waited for: a signal handler that cut
    them itself could run while the thread it interrupted holds a lock the cut takes."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self._stop = stop
        self._waiting: set[Deadline] = set()
        self._watching = False
        self._lock = threading.Lock()

    @contextmanager
    def waiting(self) -> Iterator[Deadline]:
        """A lookup's wait: the deadline a stop expires."""
        deadline = Deadline()
        with self._lock:
            # Once the stop came, the lookups are the stop's own: bounded by their timeouts alone.
            if self._stop is not None and not self._stop.is_set():
                self._waiting.add(deadline)
            if self._waiting and not self._watching:
                self._watching = True
                watcher = threading.Thread(target=self._cut_at, args=(self._stop,), name="rulesd-cut", daemon=True)
                watcher.start()
        try:
            yield deadline
        finally:
            deadline.finish()
            with self._lock:
                self._waiting.discard(deadline)

    def _cut_at(self, stop: threading.Event) -> None:
        stop.wait()
        with self._lock:
            waiting = list(self._waiting)
        for deadline in waiting:
            deadline.expire()


class _Resolved(redis.Connection):
    """A TCP connection that looks its host up through `resolver`, within `socket_connect_timeout`."""

    def __init__(self, *, resolver: Resolver, cuts: LookupCuts, **kwargs: Any) -> None:
        self.resolver, self.cuts = resolver, cuts
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]

    def _connect(self) -> socket.socket:
        started = time.monotonic()
        with self.cuts.waiting() as deadline:
            try:
                addresses = self.resolver.addresses(deadline, self.socket_connect_timeout)
            except LookupTimeout as exc:
                why, waited = str(exc), time.monotonic() - started
                if deadline.expired:
                    why = f"the lookup of {self.host}'s address was cut by the stop after {waited:.1f}s"
                # Not an OSError: redis-py would make it "Timeout connecting to server", naming nothing.
                raise redis.exceptions.TimeoutError(f"{why} ({self.host}:{self.port})") from None
        return self._open(addresses)

    def get_resolved_ip(self) -> str | None:
        """The address connected to, for redis-py's debug lines: never looked up (redis-py's own
        falls back to a blocking `getaddrinfo` once the socket cannot say, as after a reset)."""
        try:
            peer = self._sock.getpeername() if self._sock is not None else None
        except OSError:
            return None
        return str(peer[0]) if isinstance(peer, tuple) else None

    def _open(self, addresses: Sequence[AddressInfo]) -> socket.socket:
        """A socket connected to the first of `addresses` that takes it, set up as redis-py sets
        its own (no delay, keepalive, the connect timeout, then the answer timeout)."""
        error: OSError = OSError("the lookup found no address")
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.socket_keepalive:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                    for option, value in self.socket_keepalive_options.items():
                        sock.setsockopt(socket.IPPROTO_TCP, option, value)
                sock.settimeout(self.socket_connect_timeout)
                sock.connect(address)
                sock.settimeout(self.socket_timeout)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error


class ResolvedConnection(_Resolved):
    """redis:// — TCP."""


class ResolvedTLSConnection(redis.SSLConnection, _Resolved):
    """rediss:// — TLS over that TCP connection, the certificate checked against the host name.

    redis-py's own `SSLConnection._connect` wraps the socket (with `server_hostname=self.host`:
    the name is checked) that its `super()._connect()` makes, which this order of the bases
    makes `_Resolved`'s; its helper for the wrapping (`_wrap_socket_with_ssl`) is not called,
    being absent before redis-py 5.1, where a rediss:// URL failed at each connect."""


def resolved_pool(pool: redis.ConnectionPool, stop: threading.Event | None) -> None:
    """Make `pool`'s TCP and TLS connections look their host up as above (a unix socket's are
    left as they are), one resolver for them all."""
    kinds: dict[type[Any], type[_Resolved]] = {
        redis.SSLConnection: ResolvedTLSConnection,
        redis.Connection: ResolvedConnection,
    }
    resolved = kinds.get(pool.connection_class)
    if resolved is None:
        return
    kwargs = pool.connection_kwargs
    kwargs["resolver"] = Resolver(kwargs.get("host", "localhost"), int(kwargs.get("port", 6379)))
    kwargs["cuts"] = LookupCuts(stop)
    if resolved is ResolvedTLSConnection and kwargs.get("ssl_cert_reqs", "required") not in ("none", ssl.CERT_NONE):
        # redis-py before 6.0 checks no name unless told to: a certificate any authority the
        # system trusts signed, for any name, was taken. The URL may still say otherwise.
        kwargs.setdefault("ssl_check_hostname", True)
    pool.connection_class = resolved
