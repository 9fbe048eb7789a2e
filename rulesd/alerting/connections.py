"""Kept-alive connections to the alert host, on the standard library's `http.client`.

A pool here is a few `http.client` connections and a lock: each request takes an idle one (or
makes one) and gives it back once its answer was read whole. urllib3's pool, its response
objects and their bookkeeping cost each delivered alert ~200 µs of CPU that rulesd used none
of (no retries, no redirects, no proxy, one host). What rulesd adds to `http.client`'s
connections: each one's socket is handed to the deadline of the request using it (which shuts
it down when its time is up), the read timeout is set once connected, a request's head and body
go out in one write, a connection the server closed while it was idle is replaced before use,
and a 2xx status line whose headers cannot be read is still known as a 2xx (`status_line`).
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import certifi

from rulesd.alerting.deadline import Deadline
from rulesd.alerting.status_line import StatusLineResponse


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
    deadline: Deadline | None = None  # the deadline of the request using the connection
    read_timeout: float | None = None
    _head: bytes | None = None  # the request's head, held until its body is written
    _hold = False  # the next write is a head to hold

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        assert self.sock is not None
        self.sock.settimeout(self.read_timeout)  # the connection's own timeout bounded connecting
        if self.deadline is not None:
            self.deadline.watch(self.sock)

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


class HTTPSConnection(_Watched, http.client.HTTPSConnection):
    response_class = StatusLineResponse  # a 2xx status line is kept, whatever its headers


Connection = HTTPConnection | HTTPSConnection


class ConnectionPool:
    """Connections to one host, at most `maxsize` kept idle. `timeout` is (connect, read)
    in seconds. No proxy and no setting from the environment: http.client reads none."""

    def __init__(self, url: str, maxsize: int, timeout: tuple[float, float]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "", parts.port
        self.tls = parts.scheme.lower() == "https"
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
            tls: dict[str, Any] = {"context": tls_context()} if self.tls else {}
            conn = self.connection_class(self.host, self.port, timeout=self.connect_timeout, **tls)
            conn.read_timeout = self.read_timeout
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
