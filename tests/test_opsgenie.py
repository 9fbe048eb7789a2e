"""The OpsGenie transport: the exact request, every status class, URL rules, no key leaks;
against a real HTTP server on loopback."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import rulesd
from rulesd.alerting import connections
from rulesd.alerting.api import (
    BODY_MAX,
    REDACTED,
    AlertError,
    NotTheApi,
    OutputClosed,
    PausingAlertError,
    PermanentAlertError,
    RetryableAlertError,
    alert_api,
    alert_url_warnings,
    classify,
    heartbeat_url,
    redact,
    retry_after,
    validate_alert_url,
)
from rulesd.alerting.connections import connection_pool
from rulesd.alerting.dry_run import PrintTransport
from rulesd.alerting.opsgenie import OpsGenieClient
from rulesd.deadline import Deadline
from rulesd.errors import RulesdError
from rulesd.output import discard
from tests.fake_opsgenie import FakeOpsGenie, Reply
from tests.raw_http import RawServer
from tests.slow_tls import SlowHandshake

URL = "https://api.opsgenie.com/v2/alerts"  # for the pure helpers; requests go to the local server
KEY = "eb243592-faa2-4ba2-a551-1afdf565c889"
NOW = 1_700_000_000.0
PAYLOAD: dict[str, Any] = {
    "message": "Payments upstream failing on a",
    "alias": "rulesd: payments-upstream-errors: a",
    "details": {"Triggering Rules": json.dumps(["payments-upstream-errors"])},
    "tags": ["payments", "host:a"],
    "priority": "P1",
    "source": "rulesd",
}


@pytest.fixture
def server() -> Iterator[FakeOpsGenie]:
    with FakeOpsGenie() as running:
        yield running


BOM = "\ufeff"  # a byte-order mark


def answer(server: FakeOpsGenie, status: int, headers: dict[str, str] | None = None, body: str = "") -> None:
    """Make `server` answer every request with `status`, `headers` and `body`."""
    server.responder = lambda _request: Reply(status, headers or {}, body.encode())


def make_client(server: FakeOpsGenie, key: str = KEY, timeout: float = 10.0) -> OpsGenieClient:
    return OpsGenieClient(f"{server.url}/v2/alerts", lambda: key, timeout, clock=lambda: NOW)


def failure(server: FakeOpsGenie, status: int, **kwargs: Any) -> AlertError:
    """The error `create_alert` raises when the server answers `status`."""
    answer(server, status, **kwargs)
    with pytest.raises(AlertError) as info:
        make_client(server).create_alert(PAYLOAD)
    return info.value


def refused_url() -> tuple[socket.socket, str]:
    """A bound socket that never listens (keep it open): connections to its port are refused,
    and no one else can take the port meanwhile."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    return closed, f"http://127.0.0.1:{closed.getsockname()[1]}/v2/alerts"


# -- the request -------------------------------------------------------------------------------


def test_request_is_pinned(server: FakeOpsGenie) -> None:
    """POST to alert_url with the JSON body, the GenieKey, content type, user agent, timeouts."""
    client = make_client(server)
    client.create_alert(PAYLOAD)

    (request,) = server.requests
    assert ("POST", "/v2/alerts") == (request.method, request.path)
    assert f"GenieKey {KEY}" == request.headers["Authorization"]
    assert "application/json" == request.headers["Content-Type"]
    assert f"rulesd/{rulesd.__version__}" == request.headers["User-Agent"]
    assert PAYLOAD == request.json()
    assert (10.0, 10.0) == client.timeout


def test_a_path_with_a_space_or_a_letter_outside_ascii_is_sent_percent_encoded(server: FakeOpsGenie) -> None:
    """A relay's path as written in alert_url, with a space or `é`: each request goes out with it
    percent-encoded (http.client refuses a space in a request line and cannot write an `é`: every
    alert would fail), the escapes already written kept."""
    client = OpsGenieClient(f"{server.url}/relay é%2Fx/v2/alerts", lambda: KEY, 10.0)
    client.create_alert(PAYLOAD)
    client.close_alert("a b", {})
    client.ping_heartbeat("beat")

    assert [
        "/relay%20%C3%A9%2Fx/v2/alerts",
        "/relay%20%C3%A9%2Fx/v2/alerts/a%20b/close?identifierType=alias",
        "/relay%20%C3%A9%2Fx/v2/heartbeats/beat/ping",
    ] == [r.path for r in server.requests]


def test_connect_timeout_can_differ() -> None:
    """`timeout` is (connect, read)."""
    client = OpsGenieClient(URL, lambda: KEY, 10.0, connect_timeout=3.0)

    assert (3.0, 10.0) == client.timeout


def test_key_is_read_for_every_request(server: FakeOpsGenie) -> None:
    """A reload that changes the key file takes effect with the next alert."""
    keys = iter(["key-one", "key-two"])
    client = OpsGenieClient(f"{server.url}/v2/alerts", lambda: next(keys), 10.0)

    client.create_alert(PAYLOAD)
    client.create_alert(PAYLOAD)

    assert ["GenieKey key-one", "GenieKey key-two"] == [r.headers["Authorization"] for r in server.requests]


def test_a_kept_alive_connection_serves_the_next_request() -> None:
    """A server that keeps the connection open gets every alert on that one connection."""
    with FakeOpsGenie(keep_alive=True) as server:
        client = make_client(server)
        for _ in range(3):
            client.create_alert(PAYLOAD)

    assert 3 == len(server.requests)
    assert 1 == len({r.client for r in server.requests})


def test_a_kept_connection_the_server_closed_meanwhile_is_replaced() -> None:
    """An answer that lets the connection be kept (HTTP/1.1, framed by its length), then the
    server closes it while idle, as OpsGenie's load balancers do: the next alert goes out on a new
    connection and is delivered at once, not failed on the closed one and retried a second later."""
    raw = RawServer(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}")
    try:
        client = OpsGenieClient(raw.url, lambda: KEY, 5.0, clock=lambda: NOW)
        client.create_alert(PAYLOAD)
        for send in (lambda: client.create_alert(PAYLOAD), lambda: client.close_alert("a", {})):
            time.sleep(0.2)  # the server has closed the connection it answered on
            send()
        assert 3 == raw.requests
    finally:
        raw.close()


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("http://[::1]/v2/alerts", "::1", 80),
        ("https://[2001:db8::1]/v2/alerts", "2001:db8::1", 443),
        ("https://[2001:db8::1]:8443/v2/alerts", "2001:db8::1", 8443),
        ("https://API.opsgenie.com/v2/alerts", "api.opsgenie.com", 443),
        ("https://api.opsgenie.com:443/v2/alerts", "api.opsgenie.com", 443),
        ("https://api.opsgenie.com./v2/alerts", "api.opsgenie.com", 443),  # looked up with its dot
    ],
)
def test_connections_go_to_the_host_and_port_of_alert_url(url: str, host: str, port: int) -> None:
    """An IPv6 literal without a port goes to its scheme's port: http.client took its last group
    for the port (`https://[2001:db8::1]/` went to [2001:db8::]:1)."""
    conn = connection_pool(url, 1, (1.0, 1.0)).take(Deadline())

    assert (host, port) == (conn.host, conn.port)


def test_an_ipv6_literal_alert_url_is_delivered_to() -> None:
    """A relay on an IPv6 address, with a port: delivered, the Host header bracketed."""
    raw = RawServer(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}", host="::1")
    try:
        OpsGenieClient(raw.url, lambda: KEY, 5.0).create_alert(PAYLOAD)
    finally:
        raw.close()
    port = raw.url.split("]:")[1].split("/")[0]
    assert f"Host: [::1]:{port}".encode() in raw.heads[0].split(b"\r\n")


@pytest.mark.parametrize(
    ("first", "connections_used"),
    [
        (Reply(503, body=b"x" * 1000), 1),  # an error answer read whole: the connection serves on
        (Reply(204, body=b""), 1),
        (Reply(202, {"Connection": "close"}), 2),  # the server said it closes: a new one, no failure
        (Reply(503, body=b"x" * 200_000), 2),  # more than is read (64 KiB): that connection is dropped
        (Reply(202, body=b"{" + b"x" * 200_000), 2),
        (Reply(503, trickle=1.0), 2),  # cut at the deadline: dropped, never reused half read
    ],
    ids=["5xx-with-a-body", "204", "connection-close", "5xx-past-the-read-limit", "2xx-past-the-read-limit", "cut"],
)
def test_what_answer_lets_a_connection_serve_the_next_request(first: Reply, connections_used: int) -> None:
    """After each kind of answer the next two alerts are delivered at once, on the same connection
    when the answer was read to its end and the server keeps it, on a new one otherwise."""
    replies = iter([first, Reply(), Reply()])
    with FakeOpsGenie(lambda _r: next(replies), keep_alive=True) as server:
        client = OpsGenieClient(f"{server.url}/v2/alerts", lambda: KEY, 1.0)
        with pytest.raises(RetryableAlertError) if first.status >= 300 else contextlib.nullcontext():
            client.create_alert(PAYLOAD)
        client.create_alert(PAYLOAD)
        client.create_alert(PAYLOAD)

    assert 3 == len(server.requests)
    assert connections_used == len({r.client for r in server.requests})


def test_a_connection_whose_deadline_passed_as_its_answer_ended_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadline's timer can fire just as an answer was read whole: the socket it shuts down
    must not be left in the pool, where the next request (the heartbeat's, in another thread)
    could take it first and then be cut by it, a sent alert retried: a duplicate page."""
    finish = Deadline.finish

    def late(deadline: Deadline) -> None:
        deadline.expire()  # the timer, just before the request could say it was over
        finish(deadline)

    with FakeOpsGenie(keep_alive=True) as server:
        client = make_client(server)
        monkeypatch.setattr(Deadline, "finish", late)
        client.create_alert(PAYLOAD)
        monkeypatch.setattr(Deadline, "finish", finish)
        idle = [conn.sock for conn in client._pool._idle if conn.sock is not None]
        assert not any(connections._dropped(sock) for sock in idle)
        client.create_alert(PAYLOAD)
    assert 2 == len(server.requests)


class RecordedWrites:
    """A connection's socket whose writes are recorded (everything else is the socket's own)."""

    def __init__(self, sock: socket.socket, writes: list[bytes]) -> None:
        self._sock, self._writes = sock, writes

    def sendall(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_a_request_goes_out_in_one_write_with_its_body() -> None:
    """The head and the body of each request are one write (one system call, one packet), on a
    new connection and on a kept-alive one; a request without a body is its head alone."""
    writes: list[bytes] = []
    with FakeOpsGenie(keep_alive=True) as server:
        client = make_client(server)
        pool = client._pool

        class Recording(pool.connection_class):  # type: ignore[name-defined,misc]
            def connect(self) -> None:
                super().connect()
                self.sock = RecordedWrites(self.sock, writes)

        pool.connection_class = Recording
        client.create_alert(PAYLOAD)
        client.close_alert("an alias", {"note": "resolved"})
        client.ping_heartbeat("beat")

    body = json.dumps(PAYLOAD, separators=(",", ":")).encode()
    assert 3 == len(writes) == len(server.requests)
    assert writes[0].startswith(b"POST /v2/alerts HTTP/1.1\r\n") and writes[0].endswith(b"\r\n\r\n" + body)
    assert writes[1].endswith(b'\r\n\r\n{"note":"resolved"}')
    assert writes[2].startswith(b"GET /v2/heartbeats/beat/ping") and writes[2].endswith(b"\r\n\r\n")
    assert [PAYLOAD, {"note": "resolved"}] == [r.json() for r in server.requests[:2]]


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_delivered(server: FakeOpsGenie, status: int) -> None:
    """Any 2xx means delivered (OpsGenie answers 202)."""
    answer(server, status)

    make_client(server).create_alert(PAYLOAD)


@pytest.mark.parametrize("body", ["", "ok", '{"result":"Request will be processed"}'])
@pytest.mark.parametrize("content_type", ["text/plain", "text/html; charset=utf-8"])
def test_a_2xx_with_an_empty_or_other_body_is_delivered(server: FakeOpsGenie, body: str, content_type: str) -> None:
    """A relay in front of the API may answer 202 with nothing, or plain text, even labelled
    text/html (a web framework's default): still delivered."""
    answer(server, 202, {"Content-Type": content_type}, body)
    client = make_client(server)

    client.create_alert(PAYLOAD)
    client.close_alert("a", {})
    assert 2 == len(server.requests)


def test_a_2xx_whose_body_never_ends_is_delivered_once(server: FakeOpsGenie) -> None:
    """A 202 whose body drips a byte a second is cut at the deadline, but its status said the alert
    was taken: delivered, not sent again (it was retried, a duplicate every backoff until max_age)."""
    server.responder = lambda _r: Reply(202, trickle=1.0)
    client = make_client(server, timeout=1.0)

    client.create_alert(PAYLOAD)
    client.close_alert("a", {})
    assert ["/v2/alerts", "/v2/alerts/a/close?identifierType=alias"] == [r.path for r in server.requests]


ACCEPTED = b'{"result":"Request will be processed","took":0.01,"requestId":"r"}'


@pytest.mark.parametrize(
    ("answer", "reset_after", "delivered"),
    [
        # The status line said 2xx: taken, whatever becomes of the body.
        (b"HTTP/1.1 202 Accepted\r\nContent-Length: 200\r\n\r\n" + ACCEPTED[:10], True, True),
        (b"HTTP/1.1 202 Accepted\r\nContent-Length: 200\r\n\r\n" + ACCEPTED, False, True),
        (b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc", False, True),
        (b"HTTP/1.1 202 Accepted\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nnotgz", False, True),
        (b"HTTP/1.0 202 Accepted\r\n\r\n" + ACCEPTED, False, True),
        # ...also when the headers after it cannot be read: http.client refuses them, and raises
        # as for a connection that broke before any answer (a retry: a duplicate page).
        (b"HTTP/1.1 202 Accepted\r\nX-Big: " + b"a" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n", False, True),
        (b"HTTP/1.1 202 Accepted\r\n" + b"X-H: v\r\n" * 101 + b"Content-Length: 0\r\n\r\n", False, True),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n" + b"X-H: v\r\n" * 101 + b"\r\n", False, True),
        (b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nX-Cut: ", True, True),
        # No answer that can be read: maybe taken, maybe not; retried (OpsGenie folds a repeat by alias).
        (b"", True, False),
        (b"", False, False),
        (b"SSH-2.0-OpenSSH_9.6\r\n", False, False),
        (b"HTTP/1.1 500 Oops\r\nX-Big: " + b"a" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n", False, False),
        (b"HTTP/1.1 401 No\r\n" + b"X-H: v\r\n" * 101 + b"Content-Length: 0\r\n\r\n", False, False),
        (b"HTTP/1.1 100 Continue\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", False, False),
        (b"HTTP/1.1 102 Processing\r\n\r\n", False, False),
        (b"HTTP/1.1 500 Oops\r\nContent-Length: 200\r\n\r\n{}", False, False),
    ],
    ids=[
        "202-reset-mid-body",
        "202-short-body",
        "202-broken-chunks",
        "202-broken-gzip",
        "202-http1.0-close",
        "202-header-line-too-long",
        "202-over-100-headers",
        "100-then-200-over-100-headers",
        "202-reset-in-the-headers",
        "reset-before-answer",
        "closed-without-answer",
        "not-http",
        "500-header-line-too-long",
        "401-over-100-headers",
        "100-header-line-too-long",
        "102-as-final-answer",
        "500-short-body",
    ],
)
def test_raw_answers(answer: bytes, reset_after: bool, delivered: bool) -> None:
    """What a create and a close make of answers a well-behaved server never gives: delivered
    once, or retryable, never an error the sender does not know (and never a hang)."""
    raw = RawServer(answer, reset_after=reset_after)
    try:
        # A client each: the server closes every connection after its answer, and a connection
        # kept for the next request would race that close.
        def client() -> OpsGenieClient:
            return OpsGenieClient(raw.url, lambda: KEY, 5.0, clock=lambda: NOW)

        for send in (lambda: client().create_alert(PAYLOAD), lambda: client().close_alert("a", {})):
            if delivered:
                send()
            else:
                with pytest.raises(RetryableAlertError):
                    send()
        assert 2 == raw.requests
    finally:
        raw.close()


def test_a_101_answer_on_an_open_connection_fails_at_once() -> None:
    """`101 Switching Protocols` has no body, and the connection then speaks another protocol: the
    attempt fails at once as retryable (not after waiting for a body until the timeout), and that
    connection is not used again."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        held: list[socket.socket] = []

        def serve() -> None:
            for _ in range(2):
                conn, _ = listener.accept()
                held.append(conn)
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        client = OpsGenieClient(f"http://127.0.0.1:{listener.getsockname()[1]}/v2/alerts", lambda: KEY, 5.0)
        started = time.monotonic()
        for _ in range(2):  # a second connection for the second attempt
            with pytest.raises(RetryableAlertError) as info:
                client.create_alert(PAYLOAD)
            assert 101 == info.value.status
        assert time.monotonic() - started < 2.0
        server.join(5.0)
        assert 2 == len(held)
        for conn in held:
            conn.close()


@pytest.mark.parametrize(
    ("headers", "body", "said"),
    [
        (
            {"Content-Type": "text/html; charset=utf-8"},
            "<html><body>Sign in to the guest Wi-Fi</body></html>",
            "a web page (text/html; charset=utf-8) instead of OpsGenie's JSON",
        ),
        (
            {"Content-Type": "application/json"},
            "\ufeff\n<!DOCTYPE html><title>Proxy error</title>",
            "a web page (application/json) instead",
        ),
        ({}, "<title>Proxy error</title>", "a web page (no Content-Type) instead"),
    ],
)
def test_a_2xx_web_page_is_not_a_delivery(server: FakeOpsGenie, headers: dict[str, str], body: str, said: str) -> None:
    """A 200 with a web page is a captive portal's or a proxy's, not the Alert API's (which answers
    JSON): the create and the close are retried, with an error that says so, names what the answer
    was labelled and how the page begins (whose it is), and each is counted; they counted as
    delivered, and the page was lost."""
    answer(server, 200, headers, body)
    client = make_client(server)
    for count, send in enumerate((lambda: client.create_alert(PAYLOAD), lambda: client.close_alert("a", {})), 1):
        with pytest.raises(NotTheApi) as info:
            send()
        assert isinstance(info.value, RetryableAlertError) and 200 == info.value.status
        assert str(info.value).startswith("HTTP 200 not from the Alert API: ") and said in str(info.value)
        assert "proxy or captive portal" in str(info.value) and "opsgenie.alert_url" in str(info.value)
        assert str(info.value).endswith(f"; the page begins: {' '.join(body.lstrip(BOM).split())}")
        assert BOM not in str(info.value)
        assert count == client.not_from_api


# -- status classes ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 402, 404, 413, 422])
def test_other_4xx_is_permanent_with_body(server: FakeOpsGenie, status: int) -> None:
    """Rejections are dead-lettered with the response body, which names the problem."""
    body = '{"message":"Request body is not processable","took":0.0,"requestId":"r1"}'

    error = failure(server, status, body=body)

    assert isinstance(error, PermanentAlertError)
    assert (status, body) == (error.status, error.body)
    assert str(status) in str(error)
    assert "not processable" in str(error)


def test_permanent_body_is_truncated(server: FakeOpsGenie) -> None:
    """A huge error body is kept to a few KB."""
    error = failure(server, 413, body="x" * 200_000)

    assert isinstance(error, PermanentAlertError)
    assert BODY_MAX == len(error.body)
    assert error.body.endswith("…")
    assert len(str(error)) < 1000


@pytest.mark.parametrize("status", [401, 403])
def test_wrong_key_pauses(server: FakeOpsGenie, status: int) -> None:
    """401/403: the key is wrong; nothing is the alert's fault."""
    error = failure(server, status, body='{"message": "Key format is not valid!"}')

    assert isinstance(error, PausingAlertError)
    assert status == error.status
    assert "API key" in str(error)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_not_followed_and_pauses(server: FakeOpsGenie, status: int) -> None:
    """A redirect would carry the key elsewhere: never followed (even to the same server), the
    operator must fix alert_url."""
    elsewhere = f"{server.url}/elsewhere/v2/alerts"

    error = failure(server, status, headers={"Location": elsewhere})

    assert isinstance(error, PausingAlertError)
    assert "alert_url" in str(error)
    assert elsewhere in str(error)
    assert ["/v2/alerts"] == [r.path for r in server.requests]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retryable(server: FakeOpsGenie, status: int) -> None:
    """408, 429 and 5xx are worth retrying; without a hint the sender picks the backoff."""
    error = failure(server, status, body="busy")

    assert isinstance(error, RetryableAlertError)
    assert (status, None) == (error.status, error.retry_after)


def test_429_retry_after_seconds(server: FakeOpsGenie) -> None:
    """Retry-After in seconds."""
    error = failure(server, 429, headers={"Retry-After": "30"})

    assert isinstance(error, RetryableAlertError)
    assert 30.0 == error.retry_after


def test_429_retry_after_http_date(server: FakeOpsGenie) -> None:
    """Retry-After as an HTTP-date, relative to the injected clock."""
    error = failure(server, 429, headers={"Retry-After": formatdate(NOW + 90, usegmt=True)})

    assert isinstance(error, RetryableAlertError)
    assert 90.0 == error.retry_after


def test_429_rate_limit_period(server: FakeOpsGenie) -> None:
    """Without Retry-After, OpsGenie's X-RateLimit-Period-In-Sec."""
    error = failure(server, 429, headers={"X-RateLimit-State": "THROTTLED", "X-RateLimit-Period-In-Sec": "60"})

    assert isinstance(error, RetryableAlertError)
    assert 60.0 == error.retry_after


def test_503_retry_after(server: FakeOpsGenie) -> None:
    """A 503 may also say when to come back."""
    error = failure(server, 503, headers={"Retry-After": "120"})

    assert isinstance(error, RetryableAlertError)
    assert 120.0 == error.retry_after


def test_connection_refused_is_retryable() -> None:
    """No server at all: try again later."""
    closed, url = refused_url()
    port = closed.getsockname()[1]
    with closed, pytest.raises(RetryableAlertError) as info:
        OpsGenieClient(url, lambda: KEY, 5.0).create_alert(PAYLOAD)

    assert info.value.status is None
    expected = f"connection error: ConnectionRefusedError: [Errno 111] Connection refused (127.0.0.1:{port})"
    assert expected == str(info.value)


def test_a_connection_reset_before_the_answer_names_the_host() -> None:
    """A reset says which host and port reset it, as a failed lookup names the host. (It said
    `connection error: ConnectionResetError: [Errno 104] Connection reset by peer`, no more.)"""
    raw = RawServer(b"", reset_after=True)
    try:
        with pytest.raises(RetryableAlertError) as info:
            OpsGenieClient(raw.url, lambda: KEY, 5.0).create_alert(PAYLOAD)
    finally:
        raw.close()
    host = urlsplit(raw.url).netloc
    assert f"connection error: ConnectionResetError: [Errno 104] Connection reset by peer ({host})" == str(info.value)


def test_a_server_that_never_answers_is_a_retryable_timeout() -> None:
    """Connected, but no answer within the timeout: try again later."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel accepts the connection; no one ever answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v2/alerts"
        with pytest.raises(RetryableAlertError) as info:
            OpsGenieClient(url, lambda: KEY, 0.3).create_alert(PAYLOAD)

    assert info.value.status is None
    assert "timeout" in str(info.value)


def failed_create(client: OpsGenieClient) -> tuple[RetryableAlertError, float]:
    """The retryable error `client` fails a create with, and how long it took to fail."""
    started = time.monotonic()
    with pytest.raises(RetryableAlertError) as info:
        client.create_alert(PAYLOAD)
    return info.value, time.monotonic() - started


def test_a_connect_left_unanswered_is_cut_at_the_deadline() -> None:
    """A host that drops the SYN (here a listener whose backlog is full): connecting is bounded by
    the whole-request deadline (timeout, 1 s), not by the connect timeout alone (here 30 s)."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        queued = [socket.socket() for _ in range(4)]  # never accepted: the backlog is full
        for sock in queued:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
        try:
            client = OpsGenieClient(f"http://127.0.0.1:{port}/v2/alerts", lambda: KEY, 1.0, connect_timeout=30.0)
            error, took = failed_create(client)
        finally:
            for sock in queued:
                sock.close()
    assert "timeout: no complete answer within 1s (opsgenie.timeout_s)" == str(error)
    assert 1.0 <= took < 2.0


def test_a_tls_handshake_that_drips_is_cut_at_the_deadline() -> None:
    """A server that accepts and then sends its handshake a byte every 0.2 s: the whole-request
    deadline (timeout, 1 s) cuts the handshake as a retryable timeout, however long connecting
    may take (it was bounded by the connect timeout alone, here 30 s)."""
    slow = SlowHandshake()
    try:
        error, took = failed_create(OpsGenieClient(slow.url, lambda: KEY, 1.0, connect_timeout=30.0))
    finally:
        slow.close()
    assert 1 == slow.hellos
    assert "timeout: no complete answer within 1s (opsgenie.timeout_s)" == str(error)
    assert 1.0 <= took < 2.0


def test_abort_ends_a_tls_handshake_in_flight() -> None:
    """At shutdown `abort` cuts a request still shaking hands: it fails at once as retryable (the
    alert stays queued), long before its timeout."""
    slow = SlowHandshake()
    try:
        client = OpsGenieClient(slow.url, lambda: KEY, 60.0)
        threading.Timer(0.5, client.abort).start()
        error, took = failed_create(client)
    finally:
        slow.close()
    assert "aborted: rulesd is stopping; the alert stays queued" == str(error)
    assert took < 2.0


def signed_server_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: list[str | None]) -> ssl.SSLContext:
    """A server's TLS settings with a certificate for `localhost` and 127.0.0.1 from a test
    authority, which the client's TLS settings (verification and name check as in use) trust in
    place of certifi's; each name a client asks for (SNI) is appended to `names`."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", "ca.key", "-out", "ca.pem"),
        *("-subj", "/CN=rulesd test authority"),
    )
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "req.pem", "-subj", "/CN=localhost")
    (tmp_path / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl(
        *("x509", "-req", "-in", "req.pem", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"),
        *("-days", "1", "-out", "cert.pem", "-extfile", "ext"),
    )
    client = ssl.create_default_context(cafile=tmp_path / "ca.pem")
    monkeypatch.setattr(connections, "tls_context", lambda: client)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.sni_callback = lambda _sock, name, _context: names.append(name)  # type: ignore[assignment,func-returns-value]
    return server


@pytest.mark.parametrize(
    ("host", "sni"),
    [("localhost", "localhost"), ("localhost.", "localhost"), ("127.0.0.1", None)],
    ids=["name", "absolute-name", "address"],
)
def test_https_to_a_verified_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str, sni: str | None
) -> None:
    """A server whose certificate is for the host: alerts delivered over one kept-alive TLS
    connection, the host name sent (SNI) and checked. An absolute name (`api.opsgenie.com.`) is
    looked up as written but named without its dot, as certificates name hosts: every alert failed
    certificate verification ('Hostname mismatch'), as the Host header named no host either."""
    names: list[str | None] = []
    context = signed_server_context(tmp_path, monkeypatch, names)
    looked_up: list[str] = []
    lookup = socket.getaddrinfo

    def resolver(name: str, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(name)  # no resolver here knows `localhost.`: the name without its dot
        return lookup(name.removesuffix("."), *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with FakeOpsGenie(keep_alive=True) as server:
        server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
        port = server.server.server_address[1]
        client = OpsGenieClient(f"https://{host}:{port}/v2/alerts", lambda: KEY, 5.0)
        client.create_alert(PAYLOAD)
        client.close_alert("a", {})
    assert [host] == looked_up
    assert [sni] == names
    assert [f"{host.rstrip('.')}:{port}"] * 2 == [r.headers["Host"] for r in server.requests]
    assert 1 == len({r.client for r in server.requests})


def test_https_verifies_the_server_before_sending_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server whose certificate no known authority signed (here self-signed) gets no request,
    key included: each attempt fails as a connection error, to be retried. The TLS settings
    (certifi's bundle read and parsed) are made once per process, not once per connection."""
    made: list[ssl.SSLContext] = []
    create = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: made.append(create(*a, **k)) or made[-1])
    connections.tls_context.cache_clear()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with FakeOpsGenie() as server:
        server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
        url = f"https://127.0.0.1:{server.server.server_address[1]}/v2/alerts"
        for client in (OpsGenieClient(url, lambda: KEY, 5.0), OpsGenieClient(url, lambda: KEY, 5.0)):
            for _ in range(2):  # a new connection for each attempt
                with pytest.raises(RetryableAlertError) as info:
                    client.create_alert(PAYLOAD)
                assert "connection error" in str(info.value)
                assert "certificate verify failed" in str(info.value)
    assert [] == server.requests
    assert 1 == len(made)


def test_error_classes_share_the_root() -> None:
    """Callers can catch everything rulesd raises with RulesdError."""
    for cls in (RetryableAlertError, PausingAlertError, PermanentAlertError):
        assert issubclass(cls, AlertError)
    assert issubclass(AlertError, RulesdError)


# -- pure helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "rate_limited", "expected"),
    [
        ({}, True, None),
        ({"retry-after": "5"}, False, 5.0),
        ({"Retry-After": "2.5"}, False, 2.5),
        ({"Retry-After": "-1"}, False, None),
        ({"Retry-After": "nan"}, False, None),
        ({"Retry-After": "soon"}, True, None),
        ({"Retry-After": formatdate(NOW - 100, usegmt=True)}, False, 0.0),
        ({"X-RateLimit-Period-In-Sec": "60"}, False, None),
        ({"x-ratelimit-period-in-sec": "60"}, True, 60.0),
        ({"Retry-After": "10", "X-RateLimit-Period-In-Sec": "60"}, True, 10.0),
        ({"Retry-After": "garbage", "X-RateLimit-Period-In-Sec": "60"}, True, 60.0),
    ],
)
def test_retry_after_table(headers: dict[str, str], rate_limited: bool, expected: float | None) -> None:
    """Retry-After seconds or date first, the rate-limit period only on a 429."""
    assert expected == retry_after(headers, NOW, rate_limited=rate_limited)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (202, None),
        (299, None),
        (302, PausingAlertError),
        (304, PausingAlertError),
        (400, PermanentAlertError),
        (401, PausingAlertError),
        (403, PausingAlertError),
        (404, PermanentAlertError),
        (408, RetryableAlertError),
        (409, PermanentAlertError),
        (413, PermanentAlertError),
        (422, PermanentAlertError),
        (429, RetryableAlertError),
        (500, RetryableAlertError),
        (599, RetryableAlertError),
        (100, RetryableAlertError),
    ],
)
def test_classify_table(status: int, expected: type[AlertError] | None) -> None:
    """Status code -> what the outbox does."""
    error = classify(status, {}, "", NOW)

    assert expected is (None if error is None else type(error))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no secret here", "no secret here"),
        (f"key={KEY}!", f"key={REDACTED}!"),
        (f"{KEY} and {KEY}", f"{REDACTED} and {REDACTED}"),
        (f"cut off at the limit: {KEY[:20]}", f"cut off at the limit: {REDACTED}"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    """Whole keys and a cut-off start of the key are both scrubbed."""
    assert expected == redact(text, KEY)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.opsgenie.com/v2/alerts",
        "https://api.eu.opsgenie.com/v2/alerts",
        "HTTPS://api.opsgenie.com:443/v2/alerts",
        "http://127.0.0.1:8080/v2/alerts",
        "http://127.1.2.3/v2/alerts",
        "http://[::1]:9000/v2/alerts",
        "http://localhost/v2/alerts",
        "http://LOCALHOST:8000/v2/alerts",
        "https://bücher.example/v2/alerts",
    ],
)
def test_valid_alert_urls(url: str) -> None:
    """https anywhere; http only to loopback."""
    assert url == validate_alert_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://api.opsgenie.com/v2/alerts",
        "http://10.0.0.1/v2/alerts",
        "http://[::2]/v2/alerts",
        "http://localhost.example.com/v2/alerts",
        "http://127.0.0.1.nip.io/v2/alerts",
        "ftp://api.opsgenie.com/v2/alerts",
        "api.opsgenie.com/v2/alerts",
        "https:///v2/alerts",
        "",
        "https://user:pw@api.opsgenie.com/v2/alerts",
        "https://api.opsgenie.com:notaport/v2/alerts",
        "https://api..opsgenie.com/v2/alerts",
        f"https://{'a' * 64}.example.com/v2/alerts",
    ],
)
def test_invalid_alert_urls(url: str) -> None:
    """Anything that could send the key in clear text or to nowhere is refused."""
    with pytest.raises(ValueError):
        validate_alert_url(url)


def test_client_validates_its_url() -> None:
    """The client refuses a bad alert_url up front."""
    with pytest.raises(ValueError):
        OpsGenieClient("http://api.opsgenie.com/v2/alerts", lambda: KEY, 10.0)


# -- heartbeats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alert_url", "name", "expected"),
    [
        (URL, "rulesd", "https://api.opsgenie.com/v2/heartbeats/rulesd/ping"),
        ("https://api.eu.opsgenie.com/v2/alerts/", "prod", "https://api.eu.opsgenie.com/v2/heartbeats/prod/ping"),
        ("http://127.0.0.1:8080/og/v2/alerts", "a b/c", "http://127.0.0.1:8080/og/v2/heartbeats/a%20b%2Fc/ping"),
    ],
)
def test_heartbeat_url(alert_url: str, name: str, expected: str) -> None:
    """The ping goes to the alert URL's API host; the name cannot escape its path segment."""
    assert expected == heartbeat_url(alert_url, name)


def test_jira_service_management_has_no_heartbeat_url() -> None:
    """No heartbeat URL is made up for JSM, whose API has none; pinging it is refused, not sent."""
    jsm = "https://api.atlassian.com/jsm/ops/integration/v2/alerts"
    assert None is heartbeat_url(jsm, "rulesd")
    client = OpsGenieClient(jsm, lambda: KEY, 1)
    with pytest.raises(ValueError, match="no heartbeat API"):
        client.ping_heartbeat("rulesd")


# -- known endpoints ---------------------------------------------------------------------------

JSM_URL = "https://api.atlassian.com/jsm/ops/integration/v2/alerts"


@pytest.mark.parametrize(
    ("url", "api"),
    [
        ("https://api.opsgenie.com/v2/alerts", "OpsGenie"),
        ("https://api.eu.opsgenie.com/v2/alerts/", "OpsGenie"),
        ("https://relay.example.com/opsgenie/v2/alerts", "OpsGenie"),
        ("http://127.0.0.1:8080/v2/alerts", "OpsGenie"),
        (JSM_URL, "Jira Service Management"),
        ("http://127.0.0.1:8080/jsm/ops/integration/v2/alerts", "Jira Service Management"),
        ("https://api.eu.opsgenie.com/", None),
        ("https://api.opsgenie.com", None),
        ("https://api.opsgenie.com/v1/alerts", None),
        ("https://api.opsgenie.com/x/v2/alerts", None),
        ("https://api.atlassian.com/v2/alerts", None),
        ("https://api.opsgenie.com/jsm/ops/integration/v2/alerts", None),
        ("https://api.atlassian.com/jsm/ops/integration/v2/", None),
        ("http://127.0.0.1:8080/", None),
    ],
)
def test_alert_api_knows_the_endpoints_by_their_path(url: str, api: str | None) -> None:
    """OpsGenie's /v2/alerts and JSM's /jsm/ops/integration/v2/alerts; exact on the vendors' hosts."""
    assert api == alert_api(url)


@pytest.mark.parametrize(
    ("url", "heartbeat", "settings"),
    [
        (URL, None, []),
        (URL, "rulesd", []),
        (JSM_URL, None, []),
        (JSM_URL, "rulesd", ["heartbeat"]),
        ("https://api.eu.opsgenie.com/", None, ["alert_url"]),
        ("https://api.eu.opsgenie.com/", "rulesd", ["alert_url"]),
    ],
)
def test_alert_url_warnings(url: str, heartbeat: str | None, settings: list[str]) -> None:
    """An unknown path, and a heartbeat with JSM, are warned about; the rest is fine."""
    found = alert_url_warnings(url, heartbeat)
    assert settings == [setting for setting, _ in found]
    if "alert_url" in settings:
        assert "is not a known alert endpoint: every alert would be refused" in found[0][1]
        assert "https://api.eu.opsgenie.com/v2/alerts" in found[0][1] and JSM_URL in found[0][1]


def test_ping_heartbeat_is_a_keyed_get_with_the_same_errors(server: FakeOpsGenie) -> None:
    """GET with the GenieKey; a redirect pauses like an alert would."""
    make_client(server).ping_heartbeat("rulesd")

    answer(server, 302, headers={"Location": "https://elsewhere.example.com/"})
    with pytest.raises(PausingAlertError):
        make_client(server).ping_heartbeat("rulesd")
    assert [("GET", "/v2/heartbeats/rulesd/ping")] * 2 == [(r.method, r.path) for r in server.requests]
    assert {f"GenieKey {KEY}"} == {r.headers["Authorization"] for r in server.requests}


# -- the key never leaks -----------------------------------------------------------------------


def test_key_never_in_errors(server: FakeOpsGenie) -> None:
    """A server that echoes the key back in bodies and a Location: no error string contains it."""
    echoed = f'{{"message":"bad key {KEY}","key":"{KEY}"}}'
    errors = [
        failure(server, 401, body=echoed),
        failure(server, 422, body=echoed),
        failure(server, 500, body=echoed),
        failure(server, 413, body=("x" * (BODY_MAX - 10)) + KEY),
        failure(server, 302, headers={"Location": f"https://evil.example.com/steal?key={KEY}"}),
    ]
    closed, url = refused_url()
    with closed, pytest.raises(AlertError) as info:
        OpsGenieClient(url, lambda: KEY, 5.0).create_alert(PAYLOAD)
    errors.append(info.value)

    for error in errors:
        texts = [str(error), repr(error), *(str(a) for a in error.args), getattr(error, "body", "")]
        assert not any(KEY in text for text in texts), texts
        assert not any(KEY[:8] in text for text in texts), texts
        # A chained HTTP library exception could carry the request, Authorization header and all.
        assert error.__cause__ is None
        assert error.__context__ is None or error.__suppress_context__


def test_key_never_in_repr() -> None:
    """The client's repr names the URL only."""
    assert KEY not in repr(OpsGenieClient(URL, lambda: KEY, 10.0))


@pytest.mark.parametrize("key", ["", "  ", "key with space", "key\r\nX-Injected: 1"])
def test_unusable_key_pauses_without_sending(server: FakeOpsGenie, key: str) -> None:
    """An empty or malformed key is the operator's to fix; an HTTP library may echo it in its error."""
    with pytest.raises(PausingAlertError) as info:
        make_client(server, key=key).create_alert(PAYLOAD)

    assert 0 == len(server.requests)
    assert key.strip() == "" or key not in str(info.value)


def test_unreadable_key_file_pauses(server: FakeOpsGenie) -> None:
    """The key provider failing to read its file pauses delivery."""

    def key() -> str:
        raise FileNotFoundError(2, "No such file or directory", "/etc/rulesd/opsgenie.key")

    with pytest.raises(PausingAlertError, match=r"opsgenie\.key"):
        OpsGenieClient(f"{server.url}/v2/alerts", key, 10.0).create_alert(PAYLOAD)
    assert 0 == len(server.requests)


# -- dry run -----------------------------------------------------------------------------------


class FlushCountingStream(io.StringIO):
    """A stream that counts flushes."""

    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_print_transport_writes_one_compact_json_line() -> None:
    """--dry-run: one JSON line per alert, flushed, in payload order."""
    stream = FlushCountingStream()
    transport = PrintTransport(stream)

    transport.create_alert(PAYLOAD)
    transport.create_alert({"message": "ünïcode", "priority": "P3"})

    lines = stream.getvalue().splitlines()
    assert [PAYLOAD, {"message": "ünïcode", "priority": "P3"}] == [json.loads(line) for line in lines]
    assert '{"message":"ünïcode","priority":"P3"}' == lines[1]
    assert 2 == stream.flushes


def test_print_transport_writes_a_queued_json_text_as_it_is() -> None:
    """A create given as the outbox's JSON text (bytes) is printed as that line, not parsed."""
    stream = FlushCountingStream()
    PrintTransport(stream).create_alert('{"message":"ünïcode","n":1.5}'.encode())

    assert '{"message":"ünïcode","n":1.5}\n' == stream.getvalue()
    assert 1 == stream.flushes


def test_print_transport_stops_at_a_closed_output() -> None:
    """`rulesd run --dry-run | head`: once the reader is gone, the alert being printed and every
    later one raise OutputClosed (nothing more is written), and `on_closed` is called once."""
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    closed: list[bool] = []
    transport = PrintTransport(stream, on_closed=lambda: closed.append(True))
    transport.create_alert(PAYLOAD)
    assert PAYLOAD == json.loads(os.read(read_end, 65536))
    os.close(read_end)

    for _ in range(2):
        with pytest.raises(OutputClosed):
            transport.create_alert(PAYLOAD)
    assert [True] == closed
    stream.close()  # what it still buffered goes to /dev/null, not to a broken pipe


def test_print_transport_onto_a_full_disk_tries_again_later() -> None:
    """A full disk may pass: the alert is retryable, and the reason says what failed."""
    with open("/dev/full", "w") as full:
        transport = PrintTransport(full)
        with pytest.raises(RetryableAlertError, match=r"^cannot write to standard output: No space left on device$"):
            transport.create_alert(PAYLOAD)
        assert not transport.closed
        discard(full)  # what it still buffers cannot be written either


CLOSE_PATH = "/v2/alerts/rulesd%3A%20errors%3A%20%7B%22host%22%3A%22a%2Fb%22%7D/close?identifierType=alias"


def test_close_is_pinned(server: FakeOpsGenie) -> None:
    """A close posts to `<alert_url>/<alias>/close?identifierType=alias`, the alias one
    percent-encoded path segment (a `/` in it too), with the key and the close body."""
    make_client(server).close_alert('rulesd: errors: {"host":"a/b"}', {"source": "rulesd", "note": "resolved: errors"})
    (request,) = server.requests
    assert ("POST", CLOSE_PATH) == (request.method, request.path)
    assert f"GenieKey {KEY}" == request.headers["Authorization"]
    assert "application/json" == request.headers["Content-Type"]
    assert {"source": "rulesd", "note": "resolved: errors"} == request.json()


def test_an_alert_url_with_a_query_or_fragment_keeps_closes_and_pings_on_their_own_paths(server: FakeOpsGenie) -> None:
    """A relay's query (`?tenant=a`) goes with every request, the close's and the ping's own
    path before it; a fragment is not sent. Appended to the whole URL, the close's path landed
    in the query (or the fragment), so the close was posted to the create endpoint."""
    client = OpsGenieClient(f"{server.url}/v2/alerts?tenant=a#top", lambda: KEY, 10.0, clock=lambda: NOW)
    client.create_alert({"message": "m"})
    client.close_alert('rulesd: errors: {"host":"a/b"}', {"source": "rulesd", "note": "resolved: errors"})
    client.ping_heartbeat("rulesd")
    close = CLOSE_PATH.replace("?", "?tenant=a&")
    assert ["/v2/alerts?tenant=a", close, "/v2/heartbeats/rulesd/ping?tenant=a"] == [r.path for r in server.requests]


@pytest.mark.parametrize(
    ("status", "expected"),
    [(202, None), (404, None), (500, RetryableAlertError), (401, PausingAlertError), (400, PermanentAlertError)],
)
def test_close_outcomes(server: FakeOpsGenie, status: int, expected: type[AlertError] | None) -> None:
    """A 404 (closed or deleted already) counts as done; other outcomes as for a create."""
    answer(server, status, body="{}")
    if expected is None:
        make_client(server).close_alert('rulesd: errors: {"host":"a/b"}', {})
    else:
        with pytest.raises(expected):
            make_client(server).close_alert('rulesd: errors: {"host":"a/b"}', {})
    assert [CLOSE_PATH] == [r.path for r in server.requests]
