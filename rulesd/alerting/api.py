"""OpsGenie's alert API as rulesd speaks it, without I/O: its endpoints and the checks of an
`alert_url`, the errors that decide what the outbox does with an alert, and what an HTTP
answer means (`classify`).

The exception classes decide what the outbox does with an alert:
`RetryableAlertError` -> try again later, `PausingAlertError` -> stop and retry
slowly without giving up on anything, `PermanentAlertError` -> dead-letter it, `OutputClosed`
(a dry run's standard output closed) -> leave it queued: the daemon stops.

`rulesd.alerting.opsgenie.OpsGenieClient` is the HTTP shell around these; only it (with the
`connections` module it uses) imports the HTTP client (`http.client`, with `ssl` and `email`),
so that the commands that read a configuration and a `--dry-run`, which send nothing, do not
load it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import SplitResult, quote, urlsplit, urlunsplit

from rulesd.alerting.payload import truncate
from rulesd.errors import RulesdError

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
REDACTED = "<redacted>"
# OpsGenie keys are UUIDs; anything printable without whitespace is accepted, but never
# a character that would break the header (or be echoed in an HTTP library's error message).
_KEY_SYNTAX = re.compile(r"[\x21-\x7e]+")


class Transport(Protocol):
    """Something that delivers alert requests, raising `AlertError` when it cannot."""

    def create_alert(self, payload: dict[str, Any] | bytes) -> None:
        """Deliver `payload` (or its JSON, sent as it is); return only once it has been accepted."""

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


class StopCut(RetryableAlertError):
    """The request was cut at the end of the stop grace (`abort`): rulesd's own doing, not a
    failure of the way to OpsGenie. The sender leaves the alert untouched (no attempt counted, no
    backoff stored), so the next start tries it at once; OpsGenie folds a repeat by its alias.
    Retryable for any other caller."""


class NotTheApi(RetryableAlertError):
    """A 2xx that the Alert API did not send: a web page, a proxy's or a captive portal's, where
    OpsGenie answers JSON. The alert did not reach OpsGenie, so it is retried like a 5xx."""


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


class OutputClosed(AlertError):
    """The transport can deliver nothing any more: a dry run's standard output was closed (its
    reader went away, as `head` does). The alert stays queued, untouched, and the daemon stops."""


# -- pure decisions ----------------------------------------------------------------------------


def api_key_problem(key: str) -> str | None:
    """Why `key` (stripped) cannot go into the `Authorization` header (`is empty`, `contains
    …`); None if it can."""
    if not key:
        return "is empty"
    if not _KEY_SYNTAX.fullmatch(key):
        return "contains spaces or control characters"
    return None


def validate_alert_url(url: str) -> str:
    """Return `url` if alerts may be sent there: https, or http to a loopback host only.

    The API key travels in a header, so plain http is allowed only where nothing can
    overhear it (tests, a local relay).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname
    if "://" not in url:  # `api.opsgenie.com/v2/alerts` is all path to urlsplit: "no host" would mislead
        raise ValueError(f"alert_url {url!r} has no scheme: write it as https://{url.lstrip('/')}")
    if not host:
        raise ValueError(f"alert_url {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        # Credentials in a URL end up in logs and error messages.
        raise ValueError("alert_url must not contain credentials (user:password@)")
    _ = parts.port  # raises ValueError for a malformed port
    problem = _host_escape(host)
    if problem is not None:
        raise ValueError(f"alert_url {url!r}: {problem}")
    if not is_host_name(host):
        raise ValueError(f"alert_url {url!r}: {host!r} is no host name (a label is empty or over 63 characters)")
    if scheme == "https" or (scheme == "http" and is_loopback(host)):
        return url
    if scheme == "http":
        raise ValueError(f"alert_url {url!r}: http is allowed only for loopback hosts; use https")
    raise ValueError(f"alert_url {url!r}: the scheme must be https")


def is_host_name(host: str) -> bool:
    """Whether the IDNA codec takes `host`, as every connection looks it up. An ASCII name
    (nearly every one) is judged as the codec judges it, without importing the codec (~0.7 ms
    of every start): each label but the last 1 to 63 bytes, the last (empty after a final dot)
    at most 63."""
    if host.isascii():
        *labels, last = host.split(".")
        return all(0 < len(label) < 64 for label in labels) and len(last) < 64
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


def _host_escape(host: str) -> str | None:
    """Why a host written with a `%` cannot be connected to; None without one. An IPv6 zone id
    (`[fe80::1%25eth0]`, RFC 6874) names an interface of this host: no lookup takes it as written
    (every attempt failed with 'Name or service not known'), no certificate can name it, and a
    Host header must not carry it. Nor does a host name take percent-escapes."""
    if "%" not in host:
        return None
    address, _, zone = host.partition("%")
    if ":" in address:
        return (
            f"an IPv6 zone id ('%{zone}') is not supported: write the address without it ([{address}]) or a host name"
        )
    return f"{host!r} is no host name (a '%' escape): write the host as it is"


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
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    near = []
    if host not in _API_HOSTS:
        import difflib  # (not for the usual hosts: ~0.7 ms of every start)

        near = difflib.get_close_matches(host, _API_HOSTS, n=1, cutoff=0.85)
    if near:
        found.append(
            (
                "alert_url",
                f"the host {host!r} is not {near[0]!r}: a misspelt host would leave every alert undelivered; "
                f"did you mean https://{near[0]}{JSM_PATH if _API_HOSTS[near[0]] == JSM else OPSGENIE_PATH}?",
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
    return _with_path(parts, f"{prefix}/v2/heartbeats/{quote(name, safe='')}/ping")


def close_url(alert_url: str, alias: str) -> str:
    """The URL that closes an alert by alias: the alias percent-encoded as one path segment."""
    parts = urlsplit(alert_url)
    return _with_path(parts, f"{parts.path.rstrip('/')}/{quote(alias, safe='')}/close", "identifierType=alias")


def _with_path(parts: SplitResult, path: str, query: str = "") -> str:
    """The alert URL split into `parts` with `path`, its own query (a relay's) followed by
    `query`, and no fragment.

    Built from its parts: appended to the whole URL, a path would land in its query or fragment
    (`…/alerts?x=1/<alias>/close`), which sends a close to the create endpoint."""
    return urlunsplit((parts.scheme, parts.netloc, path, "&".join(q for q in (parts.query, query) if q), ""))


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
    excerpt = _excerpt(body)
    if 200 <= status < 300:
        if not is_web_page(body):
            return None
        # The Alert API answers JSON (a relay may answer nothing): a web page is some proxy's or a
        # captive portal's, and the alert never reached the API. What it is labelled and how it
        # begins (a portal's title, a proxy's name) tell the operator whose it is.
        label = truncate(" ".join((header(headers, "Content-Type") or "no Content-Type").split()), 100)
        return NotTheApi(
            f"HTTP {status} not from the Alert API: a web page ({label}) instead of OpsGenie's JSON, so a proxy "
            "or captive portal answered and the alert did not reach OpsGenie (it is retried); check the network "
            f"path to opsgenie.alert_url (a proxy, a firewall, DNS); the page begins{excerpt}",
            status,
        )
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
    """A header's value by case-insensitive name (plain dicts in tests, http.client's in use)."""
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


def is_web_page(body: str) -> bool:
    """Whether an answer's body is markup. Not judged by Content-Type: a relay's empty or JSON
    answer may well say text/html (a web framework's default), and it is a delivery."""
    return body.lstrip("\ufeff \t\r\n")[:1] == "<"


def _excerpt(body: str) -> str:
    # A byte-order mark is no character of the answer's, and invisible in a log line.
    flat = " ".join(body.lstrip("\ufeff").split())
    return f": {truncate(flat, 300)}" if flat else ""


def _seconds(value: str) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        return None
    # float() accepts "nan" and "inf"; neither is a wait.
    return seconds if 0 <= seconds < float("inf") else None


def _until_http_date(value: str, now: float) -> float | None:
    from email.utils import parsedate_to_datetime  # only for a Retry-After date (email is ~10 ms to import)

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT, even when it forgets to say so
        return None
    return max(0.0, when.timestamp() - now)
