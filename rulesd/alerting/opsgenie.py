"""Transport to OpsGenie: one POST per alert, every outcome classified (`rulesd.alerting.api`).

`OpsGenieClient` is the thin I/O shell around `api`'s pure decisions, on the standard library's
`http.client` (a few kept-alive connections to the alert host: `connections`). The API key is
read on every request (a reload may change it) and is scrubbed from everything that leaves
this module: exception messages, response bodies and redirect targets.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from http.client import HTTPException, HTTPResponse, IncompleteRead
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from rulesd import __version__
from rulesd.alerting.api import (
    BODY_MAX,
    NotTheApi,
    PausingAlertError,
    PermanentAlertError,
    RetryableAlertError,
    StopCut,
    api_key_problem,
    classify,
    close_url,
    heartbeat_url,
    is_web_page,
    redact,
    validate_alert_url,
)
from rulesd.alerting.connections import Connection, connection_pool
from rulesd.alerting.payload import truncate
from rulesd.alerting.status_line import HeadersUnreadable
from rulesd.deadline import Deadline, Deadlines
from rulesd.lookup import LookupTimeout

USER_AGENT = f"rulesd/{__version__}"
# What is read of a response body at most: a misbehaving proxy must not fill memory.
BODY_READ_LIMIT = 64 * 1024
# Connections kept to the alert host: the sender's and the heartbeat's.
POOL_SIZE = 2
# A request target's characters as RFC 3986 allows them (an escape kept as written).
_TARGET_SAFE = "/?%!$&'()*+,;=:@-._~"


class OpsGenieClient:
    """Creates alerts through the OpsGenie Alert API v2 over one pool of kept-alive connections.

    `api_key` is called for every request so that a reload can change the key. `timeout` is a
    deadline for the whole request (connecting, sending, the headers and the whole body: see
    `deadline`), and also bounds connecting and each read; `connect_timeout` overrides the
    connect bound. `abort` ends the requests in flight (at shutdown). No proxy, no redirect
    and no setting from the environment: the key goes only to `alert_url`'s host.
    """

    def __init__(
        self,
        alert_url: str,
        api_key: Callable[[], str],
        timeout: float,
        *,
        connect_timeout: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.alert_url = validate_alert_url(alert_url)
        self._api_key = api_key
        self.timeout = (connect_timeout if connect_timeout is not None else timeout, timeout)
        self._total = timeout
        self._clock = clock
        self._deadlines = Deadlines()
        self._pool = connection_pool(self.alert_url, POOL_SIZE, self.timeout)
        self._alert_path = _target(self.alert_url)  # every create goes there
        # 2xx answers that were web pages, not the Alert API's (`rulesd_answers_not_from_api_total`).
        self.not_from_api = 0

    def __repr__(self) -> str:
        return f"OpsGenieClient(alert_url={self.alert_url!r})"

    def create_alert(self, payload: dict[str, Any] | bytes) -> None:
        """POST `payload` (given as JSON, the outbox's text: sent as it is); return on 2xx, else
        raise the `AlertError` subclass that fits."""
        self._call("POST", self._alert_path, payload)

    def close_alert(self, alias: str, body: dict[str, Any]) -> None:
        """`POST <alert_url>/<alias>/close?identifierType=alias`; a 404 (closed or deleted
        already) counts as done, like a 2xx. Other outcomes raise as for create_alert."""
        try:
            self._call("POST", _target(close_url(self.alert_url, alias)), body)
        except PermanentAlertError as exc:
            if exc.status != 404:
                raise

    def ping_heartbeat(self, name: str) -> None:
        """Ping the heartbeat `name` (OpsGenie pages when pings stop); same errors as create_alert.

        ValueError when `alert_url` has no heartbeat API (Jira Service Management).
        """
        url = heartbeat_url(self.alert_url, name)
        if url is None:
            raise ValueError(f"{self.alert_url} has no heartbeat API")
        self._call("GET", _target(url), None)

    def abort(self) -> int:
        """End every request in flight now (each fails as retryable) and every later one at once;
        how many were in flight."""
        return self._deadlines.abort()

    def _call(self, method: str, path: str, payload: dict[str, Any] | bytes | None) -> None:
        """Send one request to `path` on the pool's host; return on 2xx, else raise."""
        key = self._read_key()
        with self._deadlines.within(self._total) as deadline:
            conn = self._pool.take(deadline)
            whole = False  # the answer read to its end: the connection can serve another request
            try:
                response = self._request(conn, method, path, payload, key)
                try:
                    # Read even a 2xx body: a fully read answer lets the connection be reused.
                    body = _read_body(response)
                    whole = response.isclosed()
                except (HTTPException, OSError):
                    # A 2xx status line means the request was taken, whatever becomes of its body
                    # (cut at the deadline, reset): sending it again would only be a duplicate.
                    cut = None if 200 <= response.status < 300 else self._cut_short(deadline, None)
                    if cut is not None:
                        raise cut from None
                    body = "(the response body could not be read)"
            except HeadersUnreadable:
                return  # a 2xx status line came: taken, whatever became of the headers after it
            except (HTTPException, OSError) as exc:
                raise self._cut_short(deadline, exc) or RetryableAlertError(self._describe(exc, key)) from None
            finally:
                # Over before the connection is given back: a deadline that passed by now has shut
                # its socket down (or is about to), one that has not never will. Kept, such a
                # socket could be taken by the other thread's request and cut it mid-way.
                deadline.finish()
                if not whole or deadline.expired:
                    conn.close()  # and the answer with it
                self._pool.give(conn)
        if 200 <= response.status < 300 and not is_web_page(body):
            return  # delivered: nothing of the answer is kept or shown
        # Scrubbed of the key before anything can log or store them.
        headers = {name: redact(value, key) for name, value in response.headers.items()}
        error = classify(response.status, headers, truncate(redact(body, key), BODY_MAX), self._clock())
        if isinstance(error, NotTheApi):
            self.not_from_api += 1
        if error is not None:
            raise error

    def _cut_short(self, deadline: Deadline, exc: Exception | None) -> RetryableAlertError | None:
        """The error for a request its deadline (or `abort`) ended, or whose lookup of the host
        had no answer in time (`exc`); None if it was neither."""
        if deadline.expired and self._deadlines.aborted:
            return StopCut("aborted: rulesd is stopping; the alert stays queued")
        if isinstance(exc, LookupTimeout):  # the host named, and the time waited: no answer came at all
            return RetryableAlertError(f"timeout: {exc} (opsgenie.timeout_s)")
        if not deadline.expired:
            return None
        return RetryableAlertError(f"timeout: no complete answer within {self._total:g}s (opsgenie.timeout_s)")

    def _describe(self, exc: HTTPException | OSError, key: str) -> str:
        """A refused or reset connection, a failed TLS handshake or lookup, an answer that is not
        HTTP, said with the host and port it concerns (an error of the socket names neither: a
        config of several instances, or a proxy's address, would leave the reader guessing);
        a failed lookup's error names the host itself."""
        kind = "timeout" if isinstance(exc, TimeoutError) else "connection error"
        text = f"{kind}: {type(exc).__name__}: {exc}"
        if not isinstance(exc, socket.gaierror):
            host = self._pool.host
            text += f" ({f'[{host}]' if ':' in host else host}:{self._pool.port})"
        return redact(text, key)

    def _read_key(self) -> str:
        try:
            key = self._api_key().strip()
        except OSError as exc:
            # The message names the key file, never its contents.
            raise PausingAlertError(f"cannot read the OpsGenie API key: {exc}") from None
        problem = api_key_problem(key)
        if problem is not None:
            raise PausingAlertError(f"the OpsGenie API key {problem}")
        return key

    @staticmethod
    def _request(
        conn: Connection, method: str, path: str, payload: dict[str, Any] | bytes | None, key: str
    ) -> HTTPResponse:
        # http.client follows no redirect (the Authorization header would go wherever Location
        # points) and retries nothing (the outbox retries, with backoff).
        conn.request(
            method,
            path,
            payload if payload is None or isinstance(payload, bytes) else orjson.dumps(payload),
            {"Authorization": f"GenieKey {key}", "Content-Type": "application/json", "User-Agent": USER_AGENT},
        )
        return conn.getresponse()


def _target(url: str) -> str:
    """The request target of `url`: its path (at least `/`) and query, percent-encoded where a
    request line allows no such character (http.client refuses a space or a control character,
    and cannot write one outside ASCII: every alert would fail)."""
    parts = urlsplit(url)
    return quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), safe=_TARGET_SAFE)


def _read_body(response: HTTPResponse) -> str:
    if response.status < 200:
        # A final 101 Switching Protocols: no body, and the connection now speaks another
        # protocol (reading would wait for the deadline): the attempt fails at once, and the
        # connection, left unread, is dropped.
        return ""
    if response.length is None:  # chunks (http.client checks their framing), or up to the connection's end
        return response.read(BODY_READ_LIMIT).decode("utf-8", "replace")
    expected = min(response.length, BODY_READ_LIMIT)
    data = response.read(expected)
    if len(data) < expected:
        # The connection ended inside the body (a deadline shut it down, a reset): for a read of a
        # given size http.client returns what came, without a word.
        raise IncompleteRead(data, expected - len(data))
    return data.decode("utf-8", "replace")
