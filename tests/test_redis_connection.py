"""Redis connections looking their host up within the connect timeout (rulesd.state.connection):
against real redis-servers (TCP, TLS, a Unix socket), with a resolver held in-process where a
lookup must not answer (the whole process under a dead resolver: test_e2e_redis_resolver)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from rulesd.state import StateUnavailable
from rulesd.state.connection import ResolvedConnection, ResolvedTLSConnection
from rulesd.state.redis import RedisState, connect
from tests.redis_server import RedisServer, free_port

NAME = "redis.rulesd.example"


@pytest.fixture
def unanswered(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """socket.getaddrinfo that holds every lookup of NAME until the event is set (then fails)."""
    lookup, answer = socket.getaddrinfo, threading.Event()

    def held(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == NAME:
            answer.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", held)
    yield answer
    answer.set()


def test_a_lookup_with_no_answer_is_redis_unavailable_after_the_connect_timeout(unanswered: threading.Event) -> None:
    """Bounded (here by a stop's bound, 1 s), the wait for the host's address ends as Redis
    unavailable, naming the host and the time waited, not retried at once as a closed connection
    is. (The command waited for the resolver, however long.)"""
    store = RedisState(connect(f"redis://{NAME}:6379/0"), instance="a")
    store.bound(time.monotonic() + 1)
    began = time.monotonic()
    with pytest.raises(
        StateUnavailable, match=rf"the lookup of {NAME}'s address had no answer within 1\.\ds \({NAME}:6379\)"
    ):
        store.published_rules()
    assert time.monotonic() - began < 2.5


def test_a_stop_cuts_the_lookup_under_way_and_not_the_stops_own(unanswered: threading.Event) -> None:
    """The lookup a command waits for when the stop comes is cut then; a command after the stop
    waits its own timeout (the stop's commits must not fail for a lookup that would answer)."""
    stop = threading.Event()
    store = RedisState(connect(f"redis://{NAME}:6379/0", stop), instance="a")
    threading.Timer(0.5, stop.set).start()
    began = time.monotonic()
    with pytest.raises(StateUnavailable, match=rf"the lookup of {NAME}'s address was cut by the stop after 0\.\ds"):
        store.published_rules()
    assert time.monotonic() - began < 2.0
    store.bound(time.monotonic() + 1)
    began = time.monotonic()
    with pytest.raises(StateUnavailable, match="had no answer within"):
        store.published_rules()
    assert 0.8 <= time.monotonic() - began < 2.5


def test_the_debug_lines_address_is_never_looked_up(unanswered: threading.Event) -> None:
    """redis-py's debug line on a failed command names the address connected to: a socket that
    cannot say (not connected, reset) gives none, where redis-py looked the host up, blocking."""
    client = connect(f"redis://{NAME}:6379/0")
    connection = client.connection_pool.make_connection()
    connection._sock = socket.socket()  # not connected: getpeername fails, as after a reset
    try:
        began = time.monotonic()
        assert connection.get_resolved_ip() is None
        assert time.monotonic() - began < 1
    finally:
        connection._sock.close()


def test_a_host_name_is_looked_up_and_answered(tmp_path: Path) -> None:
    """A name (localhost) reaches a real Redis through rulesd's lookup."""
    server = RedisServer(tmp_path / "redis")
    try:
        client = connect(f"redis://localhost:{server.port}/0")
        assert client.ping()
        assert client.connection_pool.connection_class is ResolvedConnection
    finally:
        server.stop()


def test_a_unix_socket_is_left_to_redis_py(tmp_path: Path) -> None:
    """unix:// has no host to look up: redis-py's own connections."""
    socket_path = Path("/tmp") / f"rulesd-test-{free_port()}.sock"
    server = RedisServer(tmp_path / "redis", unix_socket=socket_path)
    try:
        client = connect(f"unix://{socket_path}")
        assert client.ping()
        assert client.connection_pool.connection_class is redis.UnixDomainSocketConnection
    finally:
        server.stop()


def tls_redis(tmp_path: Path, name: str) -> tuple[subprocess.Popen[bytes], int]:
    """A redis-server speaking TLS only, its certificate for `name` from a test authority (ca.pem)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=ca",
    )
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "req.pem", "-subj", f"/CN={name}")
    (tmp_path / "ext").write_text(f"subjectAltName=DNS:{name}\n")
    openssl(
        *("x509", "-req", "-in", "req.pem", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"),
        *("-days", "1", "-out", "cert.pem", "-extfile", "ext"),
    )
    port = free_port()
    binary = shutil.which("redis-server")
    assert binary is not None
    args = [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)]
    tls = ["--tls-cert-file", "cert.pem", "--tls-key-file", "key.pem", "--tls-ca-cert-file", "ca.pem"]
    process = subprocess.Popen([*args, *tls, "--tls-auth-clients", "no"], cwd=tmp_path, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket() as knock:
            if knock.connect_ex(("127.0.0.1", port)) == 0:
                return process, port
        time.sleep(0.05)
    process.kill()
    raise AssertionError("redis-server with TLS did not start")


@pytest.mark.parametrize(("certified", "verified"), [("localhost", True), ("other.example", False)])
def test_tls_checks_the_certificate_against_the_host_name(tmp_path: Path, certified: str, verified: bool) -> None:
    """rediss:// connects to the address looked up and checks the certificate against the name
    in the url: a certificate for another name is refused."""
    process, port = tls_redis(tmp_path, certified)
    try:
        client = connect(f"rediss://localhost:{port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}")
        assert client.connection_pool.connection_class is ResolvedTLSConnection
        store = RedisState(client, instance="a")
        if verified:
            assert store.call(client.ping)
        else:
            with pytest.raises(StateUnavailable, match="Hostname mismatch"):
                store.call(client.ping)
    finally:
        process.kill()
        process.wait(10)


def _wrapped_as_redis_py_5_0(self: redis.SSLConnection) -> socket.socket:
    """redis-py 5.0's `SSLConnection._connect`: the TCP socket of `super()._connect()` wrapped
    inline, with no `_wrap_socket_with_ssl` (added in 5.1)."""
    sock = super(redis.SSLConnection, self)._connect()  # type: ignore[misc]
    context = ssl.create_default_context()
    context.check_hostname = self.check_hostname
    context.verify_mode = self.cert_reqs
    context.load_verify_locations(cafile=self.ca_certs)
    return context.wrap_socket(sock, server_hostname=self.host)


def test_tls_connects_with_redis_py_5_0s_wrapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The requirement allows redis-py 5.0, whose SSLConnection wraps the socket in `_connect`
    itself: the host is still looked up by rulesd, and the certificate still checked by name (a
    connection that called 5.1's helper failed at each connect with an AttributeError)."""
    monkeypatch.setattr(redis.SSLConnection, "_connect", _wrapped_as_redis_py_5_0)
    monkeypatch.delattr(redis.SSLConnection, "_wrap_socket_with_ssl", raising=False)
    looked_up: list[str] = []
    lookup = socket.getaddrinfo

    def noted(host: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(host)
        return lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", noted)
    process, port = tls_redis(tmp_path, "localhost")
    try:
        client = connect(f"rediss://localhost:{port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}&ssl_check_hostname=true")
        assert RedisState(client, instance="a").call(client.ping)
        assert ["localhost"] == looked_up
    finally:
        process.kill()
        process.wait(10)


def test_tls_checks_the_host_name_where_redis_py_would_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py before 6.0 checks a certificate's name only if told to (ssl_check_hostname
    False by default): rulesd tells it, so a certificate for another name is refused there too,
    unless the URL itself says not to check."""
    made = redis.SSLConnection.__init__

    def as_before_6_0(self: redis.SSLConnection, **kwargs: Any) -> None:
        kwargs.setdefault("ssl_check_hostname", False)
        made(self, **kwargs)

    monkeypatch.setattr(redis.SSLConnection, "__init__", as_before_6_0)
    process, port = tls_redis(tmp_path, "other.example")
    try:
        url = f"rediss://localhost:{port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}"
        client = connect(url)
        with pytest.raises(StateUnavailable, match="Hostname mismatch"):
            RedisState(client, instance="a").call(client.ping)
        unchecked = connect(url + "&ssl_check_hostname=false")
        assert RedisState(unchecked, instance="a").call(unchecked.ping)
    finally:
        process.kill()
        process.wait(10)
