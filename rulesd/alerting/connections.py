"""Kept-alive connections to the alert host, on the standard library's `http.client`.

A pool here is a few `http.client` connections and a lock: each request takes an idle one (or
makes one) and gives it back once its answer was read whole. urllib3's pool, its response
objects and their bookkeeping cost each delivered alert ~200 µs of CPU that rulesd used none
of (no retries, no redirects, no proxy, one host). What rulesd adds to `http.client`'s
connections: they look their host up under the request's deadline (`lookup`), connect and
shake hands themselves, so that each socket is handed to the deadline of the request using it
before anything can block on it (the deadline shuts it down when its time is up, in any phase),
the read timeout is set once connected, a request's head and body go out in one write, a
connection the server closed while it was idle is replaced before use, and a 2xx status line
whose headers cannot be read is still known as a 2xx (`status_line`).
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
from collections.abc import Sequence
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import certifi

from rulesd.alerting.status_line import StatusLineResponse
from rulesd.deadline import Deadline
from rulesd.lookup import AddressInfo, Resolver


@cache
def tls_context() -> ssl.SSLContext:
    """The process's TLS settings: the server verified against certifi's CA bundle (Mozilla's
    roots, whatever the host's own store holds) and its name checked, TLS 1.2 at least. Loading
    the bundle takes milliseconds: once per process, when first needed."""
    return ssl.create_default_context(cafile=certifi.where())


class _Watched:
    """What rulesd's connections add to http.client's (see the module's docstring).

    http.client writes the head and then the body, two system calls and two packets per alert;
    the sender shares the reader's CPU (`rulesd.shared_cpu`), and each call is a hand-over of
    the GIL to the reader and back."""

    sock: socket.socket | None
    host: str
    port: int
    timeout: float | None
    deadline: Deadline | None = None  # the deadline of the request using the connection
    read_timeout: float | None = None
    tls: ssl.SSLContext | None = None  # https: the server is verified with these settings
    resolver: Resolver | None = None  # the lookups of the pool's host (one at a time, under the deadline)
    _head: bytes | None = None  # the request's head, held until its body is written
    _hold = False  # the next write is a head to hold

    def connect(self) -> None:
        """The host's addresses (awaited within the request's deadline), TCP, then for https the
        TLS handshake, each socket given to the request's deadline before anything can block on
        it. http.client's own connect does both in one call, and a deadline given the socket
        only after it returns could not cut a server (or a middlebox) that accepts and then drips
        its handshake, or never answers the ClientHello: the sender, and a stop, waited as long as
        each byte kept coming within a read timeout."""
        deadline = self.deadline or Deadline()  # none: only the timeouts bound it
        resolver = self.resolver or Resolver(self.host, self.port)
        self.sock = _open(resolver.addresses(deadline, self.timeout), self.timeout, deadline)
        if self.tls is not None:
            self.sock = _handshake(self.sock, self.tls, self.host, deadline)
        self.sock.settimeout(self.read_timeout)  # the connection's own timeout bounded connecting

    def request(self, method: str, url: str, body: Any = None, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None and self.deadline is not None:  # kept alive: connect() is not called
            self.deadline.watch(self.sock)
        self._hold = isinstance(body, bytes) and bool(body)
        try:
            super().request(method, url, body, *args, **kwargs)  # type: ignore[misc]
            if self._head is not None:  # no body was written after all
                super().send(self._head)  # type: ignore[misc]
        finally:
            self._head, self._hold = None, False

    def send(self, data: Any) -> None:
        if self._hold:
            self._head, self._hold = data, False
            return
        if self._head is not None:
            data, self._head = self._head + data, None
        super().send(data)  # type: ignore[misc]


class HTTPConnection(_Watched, http.client.HTTPConnection):
    response_class = StatusLineResponse  # a 2xx status line is kept, whatever its headers


class HTTPSConnection(HTTPConnection):
    """An https connection: `tls` set, and the Host header without the port when it is 443.
    Not http.client's HTTPSConnection, whose connect shakes hands out of the deadline's reach."""

    default_port = http.client.HTTPS_PORT


Connection = HTTPConnection | HTTPSConnection


class ConnectionPool:
    """Connections to one host, at most `maxsize` kept idle. `timeout` is (connect, read)
    in seconds. No proxy and no setting from the environment: http.client reads none."""

    def __init__(self, url: str, maxsize: int, timeout: tuple[float, float]) -> None:
        parts = urlsplit(url)
        self.tls = parts.scheme.lower() == "https"
        # The port always given: http.client takes what follows a host's last ':' for the port
        # when none is, and an IPv6 literal's last group is no port (`https://[2001:db8::1]/`).
        # An absolute name (`api.opsgenie.com.`) is looked up as written (not in the search
        # domains), but certificates, SNI and Host headers name the host without the dot: with
        # it, every handshake failed ('Hostname mismatch').
        lookup = parts.hostname or ""
        self.host = lookup.rstrip(".") or lookup
        self.port = parts.port or (http.client.HTTPS_PORT if self.tls else http.client.HTTP_PORT)
        self.resolver = Resolver(lookup, self.port)
        self.connect_timeout, self.read_timeout = timeout
        self.connection_class: type[Connection] = HTTPSConnection if self.tls else HTTPConnection
        self._maxsize = maxsize
        self._idle: list[Connection] = []
        self._lock = threading.Lock()

    def take(self, deadline: Deadline) -> Connection:
        """An idle connection, or a new one (which connects when first used); `deadline` is
        given its socket."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self.connection_class(self.host, self.port, timeout=self.connect_timeout)
            conn.read_timeout = self.read_timeout
            conn.tls = tls_context() if self.tls else None
            conn.resolver = self.resolver
        elif conn.sock is not None and _dropped(conn.sock):
            # Closed by the server while idle (a load balancer's idle timeout): sending on it would
            # fail the alert, to be retried a backoff later. http.client connects again when used.
            conn.close()
        conn.deadline = deadline
        return conn

    def give(self, conn: Connection) -> None:
        """Keep `conn` for a later request (closed if there is no room)."""
        conn.deadline = None
        with self._lock:
            if len(self._idle) < self._maxsize:
                self._idle.append(conn)
                return
        conn.close()


def _open(addresses: Sequence[AddressInfo], timeout: float | None, deadline: Deadline) -> socket.socket:
    """A TCP connection to one of `addresses`, each tried in turn as `socket.create_connection`
    does, each socket given to `deadline` before it connects: a shutdown ends a connect under
    way (a host that drops the SYN), and once the time is up no other address is tried."""
    error: OSError = OSError("the lookup found no address")
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            deadline.watch(sock)
            sock.settimeout(timeout)
            sock.connect(address)
            if deadline.expired:  # it came just before the connect, which the shutdown did not end
                raise TimeoutError("the request's deadline passed while connecting")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as http.client does
            return sock
        except OSError as exc:
            sock.close()
            if deadline.expired:
                raise
            error = exc
    raise error


def _handshake(sock: socket.socket, context: ssl.SSLContext, host: str, deadline: Deadline) -> ssl.SSLSocket:
    """`sock` with TLS: the server's certificate verified and its name checked against `host`
    (which is also the SNI), the handshake under `deadline`. The TLS socket takes the
    descriptor from `sock` (left detached, a shutdown of it a no-op): the deadline is given
    the TLS socket before the handshake may block."""
    tls = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    deadline.watch(tls)
    tls.do_handshake()
    return tls


def _dropped(sock: socket.socket) -> bool:
    """Whether an idle connection can no longer serve a request: readable means its end (or
    bytes no request asked for). poll, not select: a daemon following thousands of files has
    descriptors past 1024."""
    poller = select.poll()
    try:
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):  # closed meanwhile
        return True


def connection_pool(url: str, maxsize: int, timeout: tuple[float, float]) -> ConnectionPool:
    """A pool of kept-alive connections to `url`'s host (at most `maxsize` kept), whose sockets
    a `Deadline` can cut; https verified as `tls_context` says."""
    return ConnectionPool(url, maxsize, timeout)
