"""Transport to OpsGenie: one POST per alert, every outcome classified.

The exception classes decide what the outbox does with an alert:
`RetryableAlertError` -> try again later, `PausingAlertError` -> stop and retry
slowly without giving up on anything, `PermanentAlertError` -> dead-letter it.

`classify` and `validate_alert_url` are pure; `OpsGenieClient` is the thin I/O
shell around them, on urllib3 (one pool of kept-alive connections to the alert host).
The API key is read on every request (a reload may change it) and is scrubbed from
everything that leaves this module: exception messages, response bodies and redirect
targets.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TextIO
from urllib.parse import quote, urlsplit

import orjson
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError, SSLError
from urllib3.exceptions import TimeoutError as UrllibTimeout
from urllib3.util import parse_url

from rulesd import __version__
from rulesd.alerting.deadline import Deadline, Deadlines, connection_pool
from rulesd.alerting.payload import truncate
from rulesd.errors import RulesdError

USER_AGENT = f"rulesd/{__version__}"
# The alert endpoints rulesd knows. OpsGenie's API is served on api.opsgenie.com and
# api.eu.opsgenie.com; Jira Service Management, which takes the same requests and `GenieKey`
# keys of its API integrations, serves it under its own path on api.atlassian.com.
OPSGENIE, JSM = "OpsGenie", "Jira Service Management"
OPSGENIE_PATH = "/v2/alerts"
JSM_PATH = "/jsm/ops/integration/v2/alerts"
JSM_ALERT_URL = f"https://api.atlassian.com{JSM_PATH}"
_API_HOSTS = {"api.opsgenie.com": OPSGENIE, "api.eu.opsgenie.com": OPSGENIE, "api.atlassian.com": JSM}
# Enough of an error body to explain a rejection, small enough for a log line and the outbox.
BODY_MAX = 4096
# What is read of a response body at most: a misbehaving proxy must not fill memory.
BODY_READ_LIMIT = 64 * 1024
# Connections kept to the alert host: the sender's and the heartbeat's.
POOL_SIZE = 2
REDACTED = "<redacted>"
# OpsGenie keys are UUIDs; anything printable without whitespace is accepted, but never
# a character that would break the header (or be echoed in an HTTP library's error message).
_KEY_SYNTAX = re.compile(r"[\x21-\x7e]+")


class Transport(Protocol):
    """Something that delivers alert requests, raising `AlertError` when it cannot."""

    def create_alert(self, payload: dict[str, Any]) -> None:
        """Deliver `payload`; return only once it has been accepted."""

    def close_alert(self, alias: str, body: dict[str, Any]) -> None:
        """Close the alert `alias`; return once closed, or known to be closed or gone."""


# -- errors ------------------------------------------------------------------------------------


class AlertError(RulesdError):
    """An alert was not delivered. `status` is the HTTP status, if there was a response."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetryableAlertError(AlertError):
    """A transient failure (network, timeout, 408, 429, 5xx): try the same alert again later.

    `retry_after` is the server's requested wait in seconds, if it named one.
    """

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class PausingAlertError(AlertError):
    """Every alert would fail the same way (wrong key, a redirect): pause, dead-letter nothing.

    Only the operator can fix it (the key file, `opsgenie.alert_url`); until then the sender
    retries slowly so that delivery resumes on its own once they have.
    """


class PermanentAlertError(AlertError):
    """OpsGenie rejected this alert (400, 404, 413, 422, ...): retrying cannot help.

    `body` is the response body (key scrubbed, at most `BODY_MAX` characters), kept with the
    dead-lettered alert so the operator can see why.
    """

    def __init__(self, message: str, status: int, body: str) -> None:
        super().__init__(message, status)
        self.body = body


# -- pure decisions ----------------------------------------------------------------------------


def validate_alert_url(url: str) -> str:
    """Return `url` if alerts may be sent there: https, or http to a loopback host only.

    The API key travels in a header, so plain http is allowed only where nothing can
    overhear it (tests, a local relay).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname
    if not host:
        raise ValueError(f"alert_url {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        # Credentials in a URL end up in logs and error messages.
        raise ValueError("alert_url must not contain credentials (user:password@)")
    _ = parts.port  # raises ValueError for a malformed port
    if scheme == "https" or (scheme == "http" and is_loopback(host)):
        return url
    if scheme == "http":
        raise ValueError(f"alert_url {url!r}: http is allowed only for loopback hosts; use https")
    raise ValueError(f"alert_url {url!r}: the scheme must be https")


def alert_api(url: str) -> str | None:
    """Which API `url` is an alert endpoint of (`OPSGENIE` or `JSM`), by its path; None if neither.

    On the vendors' own hosts the path must be exactly theirs; elsewhere (a relay, a test
    server) a path ending in the endpoint's path counts, since a relay may add a prefix.
    """
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    api = JSM if path.endswith(JSM_PATH) else OPSGENIE if path.endswith(OPSGENIE_PATH) else None
    vendor = _API_HOSTS.get((parts.hostname or "").lower().rstrip("."))
    if vendor is not None and (api != vendor or path != (JSM_PATH if vendor == JSM else OPSGENIE_PATH)):
        return None
    return api


def alert_url_warnings(url: str, heartbeat: str | None) -> list[tuple[str, str]]:
    """What is likely wrong with a valid `alert_url` (and the heartbeat beside it), as
    (setting, message) pairs: a path that no known alert endpoint has (every alert would be
    refused and dead-lettered), or a heartbeat configured where no heartbeat API exists."""
    api = alert_api(url)
    found: list[tuple[str, str]] = []
    if api is None:
        found.append(
            (
                "alert_url",
                f"{url!r} is not a known alert endpoint: every alert would be refused; use "
                f"https://api.opsgenie.com{OPSGENIE_PATH} (EU: https://api.eu.opsgenie.com{OPSGENIE_PATH}) "
                f"or, for Jira Service Management, {JSM_ALERT_URL}",
            )
        )
    if heartbeat is not None and api == JSM:
        found.append(
            (
                "heartbeat",
                "heartbeats are an OpsGenie API only: Jira Service Management has none at this alert_url, "
                "so the heartbeat will not be pinged; remove it or monitor rulesd another way",
            )
        )
    return found


def heartbeat_url(alert_url: str, name: str) -> str | None:
    """The heartbeat ping URL on the same API host as `alert_url` (…/v2/alerts -> …/v2/heartbeats/NAME/ping);
    None for Jira Service Management, which has no heartbeat API."""
    if alert_api(alert_url) == JSM:
        return None
    parts = urlsplit(alert_url)
    path = parts.path.rstrip("/")
    prefix = path[: -len("/v2/alerts")] if path.endswith("/v2/alerts") else ""
    return f"{parts.scheme}://{parts.netloc}{prefix}/v2/heartbeats/{quote(name, safe='')}/ping"


def close_url(alert_url: str, alias: str) -> str:
    """The URL that closes an alert by alias: the alias percent-encoded as one path segment."""
    return f"{alert_url.rstrip('/')}/{quote(alias, safe='')}/close?identifierType=alias"


def is_loopback(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (a bare host name, brackets removed)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def classify(status: int, headers: Mapping[str, str], body: str, now: float) -> AlertError | None:
    """The error an HTTP response means, or None when the alert was delivered.

    `body` and `headers` must already be scrubbed of the key; `now` (epoch seconds)
    turns an HTTP-date `Retry-After` into a delay.
    """
    if 200 <= status < 300:
        return None
    excerpt = _excerpt(body)
    if 300 <= status < 400:
        target = header(headers, "Location") or "(no Location)"
        return PausingAlertError(
            f"HTTP {status}: redirect to {target} not followed (the API key must not travel "
            "to another host); fix opsgenie.alert_url",
            status,
        )
    if status in (401, 403):
        return PausingAlertError(f"HTTP {status}: OpsGenie rejected the API key{excerpt}", status)
    if status in (408, 429) or status >= 500:
        delay = retry_after(headers, now, rate_limited=status == 429)
        return RetryableAlertError(f"HTTP {status}{excerpt}", status, delay)
    if 400 <= status < 500:
        return PermanentAlertError(f"HTTP {status}: alert rejected{excerpt}", status, body)
    # 1xx or a nonsense status: nothing says the alert arrived, so try again.
    return RetryableAlertError(f"HTTP {status}: unexpected status{excerpt}", status)


def retry_after(headers: Mapping[str, str], now: float, *, rate_limited: bool) -> float | None:
    """The wait the server asked for, in seconds, or None.

    `Retry-After` (seconds or an HTTP-date) first; on a 429 OpsGenie's own
    `X-RateLimit-Period-In-Sec` next.
    """
    value = header(headers, "Retry-After")
    if value is not None:
        delay = _seconds(value)
        if delay is None:
            delay = _until_http_date(value, now)
        if delay is not None:
            return delay
    if rate_limited:
        period = header(headers, "X-RateLimit-Period-In-Sec")
        if period is not None:
            return _seconds(period)
    return None


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value by case-insensitive name (plain dicts in tests, urllib3's in use)."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value.strip()
    return None


def redact(text: str, secret: str) -> str:
    """`text` with every occurrence of `secret` replaced, and a cut-off start of it removed.

    The trailing fragment matters because bodies are read only up to a limit, which
    can end in the middle of an echoed key.
    """
    if not secret:
        return text
    text = text.replace(secret, REDACTED)
    for size in range(min(len(secret) - 1, len(text)), 3, -1):
        if text.endswith(secret[:size]):
            return text[:-size] + REDACTED
    return text


def _excerpt(body: str) -> str:
    flat = " ".join(body.split())
    return f": {truncate(flat, 300)}" if flat else ""


def _seconds(value: str) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        return None
    # float() accepts "nan" and "inf"; neither is a wait.
    return seconds if 0 <= seconds < float("inf") else None


def _until_http_date(value: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT, even when it forgets to say so
        return None
    return max(0.0, when.timestamp() - now)


# -- I/O ---------------------------------------------------------------------------------------


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
        self._timeout = urllib3.Timeout(connect=self.timeout[0], read=self.timeout[1])
        self._total = timeout
        self._clock = clock
        self._deadlines = Deadlines()
        self._pool = connection_pool(self.alert_url, POOL_SIZE)
        self._alert_path = parse_url(self.alert_url).request_uri  # every create goes there

    def __repr__(self) -> str:
        return f"OpsGenieClient(alert_url={self.alert_url!r})"

    def create_alert(self, payload: dict[str, Any]) -> None:
        """POST `payload`; return on 2xx, else raise the `AlertError` subclass that fits."""
        self._call("POST", self._alert_path, payload)

    def close_alert(self, alias: str, body: dict[str, Any]) -> None:
        """`POST <alert_url>/<alias>/close?identifierType=alias`; a 404 (closed or deleted
        already) counts as done, like a 2xx. Other outcomes raise as for create_alert."""
        try:
            self._call("POST", parse_url(close_url(self.alert_url, alias)).request_uri, body)
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
        self._call("GET", parse_url(url).request_uri, None)

    def abort(self) -> None:
        """End every request in flight now (each fails as retryable) and every later one at once."""
        self._deadlines.abort()

    def _call(self, method: str, path: str, payload: dict[str, Any] | None) -> None:
        """Send one request to `path` on the pool's host; return on 2xx, else raise."""
        key = self._read_key()
        with self._deadlines.within(self._total) as deadline:
            try:
                response = self._request(method, path, payload, key)
            except (HTTPError, OSError) as exc:
                raise self._cut_short(deadline) or RetryableAlertError(_describe(exc, key)) from None
            try:
                # Read even a 2xx body: a fully read response lets the connection be reused.
                body = _read_body(response)
            except (HTTPError, OSError):
                # Cut at the deadline, even after a 2xx status: it is tried again (OpsGenie
                # folds a repeat by its alias), rather than counted as delivered unseen.
                cut = self._cut_short(deadline)
                if cut is not None:
                    raise cut from None
                body = "(the response body could not be read)"
            finally:
                if not response.closed:  # not read to its end: the connection cannot serve another
                    response.close()
                response.release_conn()
        if 200 <= response.status < 300:
            return  # delivered: nothing of the answer is kept or shown
        # Scrubbed of the key before anything can log or store them.
        headers = {name: redact(value, key) for name, value in response.headers.items()}
        error = classify(response.status, headers, truncate(redact(body, key), BODY_MAX), self._clock())
        if error is not None:
            raise error

    def _cut_short(self, deadline: Deadline) -> RetryableAlertError | None:
        """The error for a request its deadline (or `abort`) ended; None if it was not that."""
        if not deadline.expired:
            return None
        if self._deadlines.aborted:
            return RetryableAlertError("aborted: rulesd is stopping; the alert stays queued")
        return RetryableAlertError(f"timeout: no complete answer within {self._total:g}s (opsgenie.timeout_s)")

    def _read_key(self) -> str:
        try:
            key = self._api_key().strip()
        except OSError as exc:
            # The message names the key file, never its contents.
            raise PausingAlertError(f"cannot read the OpsGenie API key: {exc}") from None
        if not key:
            raise PausingAlertError("the OpsGenie API key is empty")
        if not _KEY_SYNTAX.fullmatch(key):
            raise PausingAlertError("the OpsGenie API key contains spaces or control characters")
        return key

    def _request(self, method: str, path: str, payload: dict[str, Any] | None, key: str) -> urllib3.BaseHTTPResponse:
        return self._pool.urlopen(
            method,
            path,
            body=orjson.dumps(payload) if payload is not None else None,
            headers={
                "Authorization": f"GenieKey {key}",
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            },
            timeout=self._timeout,
            # Never follow: the Authorization header would go wherever Location points.
            redirect=False,
            retries=False,  # the outbox retries, with backoff
            preload_content=False,
        )


def _read_body(response: urllib3.BaseHTTPResponse) -> str:
    return response.read(BODY_READ_LIMIT).decode("utf-8", "replace")


def _describe(exc: HTTPError | OSError, key: str) -> str:
    # Before the timeouts: urllib3's NewConnectionError is a ConnectTimeoutError too.
    if isinstance(exc, NewConnectionError | ProtocolError | SSLError | ConnectionError):
        kind = "connection error"
    elif isinstance(exc, UrllibTimeout | TimeoutError):
        kind = "timeout"
    else:
        kind = "request failed"
    return redact(f"{kind}: {type(exc).__name__}: {exc}", key)


class PrintTransport:
    """`--dry-run`: writes each payload as one compact JSON line instead of sending it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __repr__(self) -> str:
        return "PrintTransport()"

    def create_alert(self, payload: dict[str, Any]) -> None:
        """Write `payload` as one JSON line and flush, so a pipe reader sees it at once."""
        self._stream.write(orjson.dumps(payload).decode() + "\n")
        self._stream.flush()

    def close_alert(self, alias: str, body: dict[str, Any]) -> None:
        """Write the close as one JSON line: `{"close": alias, ...body}`."""
        self.create_alert({"close": alias, **body})
