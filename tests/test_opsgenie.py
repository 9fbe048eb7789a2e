"""The OpsGenie transport: the exact request, every status class, URL rules, no key leaks."""

from __future__ import annotations

import io
import json
from email.utils import formatdate
from typing import Any

import pytest
import requests
import responses
from responses import matchers

import rulesd
from rulesd.alerting.opsgenie import (
    BODY_MAX,
    REDACTED,
    AlertError,
    OpsGenieClient,
    PausingAlertError,
    PermanentAlertError,
    PrintTransport,
    RetryableAlertError,
    alert_api,
    alert_url_warnings,
    classify,
    heartbeat_url,
    redact,
    retry_after,
    validate_alert_url,
)
from rulesd.errors import RulesdError

URL = "https://api.opsgenie.com/v2/alerts"
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
def mock() -> Any:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def make_client(url: str = URL, key: str = KEY, timeout: float = 10.0) -> OpsGenieClient:
    return OpsGenieClient(requests.Session(), url, lambda: key, timeout, clock=lambda: NOW)


def failure(mock: Any, status: int, **kwargs: Any) -> AlertError:
    """The error `create_alert` raises when the server answers `status`."""
    mock.add(responses.POST, URL, status=status, **kwargs)
    with pytest.raises(AlertError) as info:
        make_client().create_alert(PAYLOAD)
    return info.value


# -- the request -------------------------------------------------------------------------------


def test_request_is_pinned(mock: Any) -> None:
    """POST to alert_url with the JSON body, the GenieKey, content type, user agent, timeouts."""
    mock.add(
        responses.POST,
        URL,
        status=202,
        json={"result": "Request will be processed", "took": 0.1, "requestId": "r1"},
        match=[
            matchers.header_matcher(
                {
                    "Authorization": f"GenieKey {KEY}",
                    "Content-Type": "application/json",
                    "User-Agent": f"rulesd/{rulesd.__version__}",
                }
            ),
            matchers.json_params_matcher(PAYLOAD, strict_match=True),
            matchers.request_kwargs_matcher({"timeout": (10.0, 10.0)}),
        ],
    )

    make_client().create_alert(PAYLOAD)

    assert 1 == len(mock.calls)
    assert PAYLOAD == json.loads(mock.calls[0].request.body)


class RecordingSession(requests.Session):
    """A real session that remembers the keyword arguments of each request."""

    def __init__(self) -> None:
        super().__init__()
        self.kwargs: list[dict[str, Any]] = []

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        self.kwargs.append(kwargs)
        return super().request(*args, **kwargs)


def test_redirects_are_disabled_on_the_request(mock: Any) -> None:
    """allow_redirects=False goes to requests itself, not just a check after the fact."""
    mock.add(responses.POST, URL, status=202)
    session = RecordingSession()

    OpsGenieClient(session, URL, lambda: KEY, 10.0).create_alert(PAYLOAD)

    assert [False] == [kw["allow_redirects"] for kw in session.kwargs]


def test_connect_timeout_can_differ(mock: Any) -> None:
    """`timeout` is (connect, read)."""
    mock.add(responses.POST, URL, status=202, match=[matchers.request_kwargs_matcher({"timeout": (3.0, 10.0)})])
    client = OpsGenieClient(requests.Session(), URL, lambda: KEY, 10.0, connect_timeout=3.0)

    client.create_alert(PAYLOAD)


def test_key_is_read_for_every_request(mock: Any) -> None:
    """A reload that changes the key file takes effect with the next alert."""
    keys = iter(["key-one", "key-two"])
    mock.add(responses.POST, URL, status=202)
    client = OpsGenieClient(requests.Session(), URL, lambda: next(keys), 10.0)

    client.create_alert(PAYLOAD)
    client.create_alert(PAYLOAD)

    assert ["GenieKey key-one", "GenieKey key-two"] == [c.request.headers["Authorization"] for c in mock.calls]


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_delivered(mock: Any, status: int) -> None:
    """Any 2xx means delivered (OpsGenie answers 202)."""
    mock.add(responses.POST, URL, status=status)

    make_client().create_alert(PAYLOAD)


# -- status classes ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 402, 404, 413, 422])
def test_other_4xx_is_permanent_with_body(mock: Any, status: int) -> None:
    """Rejections are dead-lettered with the response body, which names the problem."""
    body = '{"message":"Request body is not processable","took":0.0,"requestId":"r1"}'

    error = failure(mock, status, body=body)

    assert isinstance(error, PermanentAlertError)
    assert (status, body) == (error.status, error.body)
    assert str(status) in str(error)
    assert "not processable" in str(error)


def test_permanent_body_is_truncated(mock: Any) -> None:
    """A huge error body is kept to a few KB."""
    error = failure(mock, 413, body="x" * 200_000)

    assert isinstance(error, PermanentAlertError)
    assert BODY_MAX == len(error.body)
    assert error.body.endswith("…")
    assert len(str(error)) < 1000


@pytest.mark.parametrize("status", [401, 403])
def test_wrong_key_pauses(mock: Any, status: int) -> None:
    """401/403: the key is wrong; nothing is the alert's fault."""
    error = failure(mock, status, json={"message": "Key format is not valid!"})

    assert isinstance(error, PausingAlertError)
    assert status == error.status
    assert "API key" in str(error)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_not_followed_and_pauses(mock: Any, status: int) -> None:
    """A redirect would carry the key elsewhere: never followed, the operator must fix alert_url."""
    elsewhere = "https://elsewhere.example.com/v2/alerts"
    mock.add(responses.POST, elsewhere, status=202)

    error = failure(mock, status, headers={"Location": elsewhere})

    assert isinstance(error, PausingAlertError)
    assert "alert_url" in str(error)
    assert elsewhere in str(error)
    assert [URL] == [c.request.url for c in mock.calls]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retryable(mock: Any, status: int) -> None:
    """408, 429 and 5xx are worth retrying; without a hint the sender picks the backoff."""
    error = failure(mock, status, body="busy")

    assert isinstance(error, RetryableAlertError)
    assert (status, None) == (error.status, error.retry_after)


def test_429_retry_after_seconds(mock: Any) -> None:
    """Retry-After in seconds."""
    error = failure(mock, 429, headers={"Retry-After": "30"})

    assert isinstance(error, RetryableAlertError)
    assert 30.0 == error.retry_after


def test_429_retry_after_http_date(mock: Any) -> None:
    """Retry-After as an HTTP-date, relative to the injected clock."""
    error = failure(mock, 429, headers={"Retry-After": formatdate(NOW + 90, usegmt=True)})

    assert isinstance(error, RetryableAlertError)
    assert 90.0 == error.retry_after


def test_429_rate_limit_period(mock: Any) -> None:
    """Without Retry-After, OpsGenie's X-RateLimit-Period-In-Sec."""
    error = failure(mock, 429, headers={"X-RateLimit-State": "THROTTLED", "X-RateLimit-Period-In-Sec": "60"})

    assert isinstance(error, RetryableAlertError)
    assert 60.0 == error.retry_after


def test_503_retry_after(mock: Any) -> None:
    """A 503 may also say when to come back."""
    error = failure(mock, 503, headers={"Retry-After": "120"})

    assert isinstance(error, RetryableAlertError)
    assert 120.0 == error.retry_after


@pytest.mark.parametrize(
    "exc",
    [
        requests.ConnectionError("Connection refused"),
        requests.ConnectTimeout("connect timed out"),
        requests.ReadTimeout("read timed out"),
    ],
)
def test_network_failures_are_retryable(mock: Any, exc: Exception) -> None:
    """No response at all: try again later."""
    mock.add(responses.POST, URL, body=exc)

    with pytest.raises(RetryableAlertError) as info:
        make_client().create_alert(PAYLOAD)

    assert info.value.status is None
    assert ("timeout" if isinstance(exc, requests.Timeout) else "connection error") in str(info.value)


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
    ],
)
def test_invalid_alert_urls(url: str) -> None:
    """Anything that could send the key in clear text or to nowhere is refused."""
    with pytest.raises(ValueError):
        validate_alert_url(url)


def test_client_validates_its_url() -> None:
    """The client refuses a bad alert_url up front."""
    with pytest.raises(ValueError):
        make_client(url="http://api.opsgenie.com/v2/alerts")


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
    client = OpsGenieClient(requests.Session(), jsm, lambda: KEY, 1)
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


def test_ping_heartbeat_is_a_keyed_get_with_the_same_errors(mock: Any) -> None:
    """GET with the GenieKey; a redirect pauses like an alert would."""
    ping = "https://api.opsgenie.com/v2/heartbeats/rulesd/ping"
    mock.add(responses.GET, ping, status=202, match=[matchers.header_matcher({"Authorization": f"GenieKey {KEY}"})])

    make_client().ping_heartbeat("rulesd")

    mock.replace(responses.GET, ping, status=302, headers={"Location": "https://elsewhere.example.com/"})
    with pytest.raises(PausingAlertError):
        make_client().ping_heartbeat("rulesd")
    assert 2 == len(mock.calls)


# -- the key never leaks -----------------------------------------------------------------------


def test_key_never_in_errors(mock: Any) -> None:
    """A server that echoes the key back in bodies and a Location: no error string contains it."""
    echoed = f'{{"message":"bad key {KEY}","key":"{KEY}"}}'
    errors = [
        failure(mock, 401, body=echoed),
        failure(mock, 422, body=echoed),
        failure(mock, 500, body=echoed),
        failure(mock, 413, body=("x" * (BODY_MAX - 10)) + KEY),
        failure(mock, 302, headers={"Location": f"https://evil.example.com/steal?key={KEY}"}),
    ]
    mock.add(responses.POST, URL, body=requests.ConnectionError(f"refused, header GenieKey {KEY}"))
    with pytest.raises(AlertError) as info:
        make_client().create_alert(PAYLOAD)
    errors.append(info.value)

    for error in errors:
        texts = [str(error), repr(error), *(str(a) for a in error.args), getattr(error, "body", "")]
        assert not any(KEY in text for text in texts), texts
        assert not any(KEY[:8] in text for text in texts), texts
        # A chained requests exception would carry the request, Authorization header and all.
        assert error.__cause__ is None
        assert error.__context__ is None or error.__suppress_context__


def test_key_never_in_repr() -> None:
    """The client's repr names the URL only."""
    assert KEY not in repr(make_client())


@pytest.mark.parametrize("key", ["", "  ", "key with space", "key\r\nX-Injected: 1"])
def test_unusable_key_pauses_without_sending(mock: Any, key: str) -> None:
    """An empty or malformed key is the operator's to fix; requests would echo it in its error."""
    with pytest.raises(PausingAlertError) as info:
        make_client(key=key).create_alert(PAYLOAD)

    assert 0 == len(mock.calls)
    assert key.strip() == "" or key not in str(info.value)


def test_unreadable_key_file_pauses(mock: Any) -> None:
    """The key provider failing to read its file pauses delivery."""

    def key() -> str:
        raise FileNotFoundError(2, "No such file or directory", "/etc/rulesd/opsgenie.key")

    with pytest.raises(PausingAlertError, match=r"opsgenie\.key"):
        OpsGenieClient(requests.Session(), URL, key, 10.0).create_alert(PAYLOAD)
    assert 0 == len(mock.calls)


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


CLOSE_URL = URL + "/rulesd%3A%20errors%3A%20%7B%22host%22%3A%22a%2Fb%22%7D/close?identifierType=alias"


def test_close_is_pinned(mock: Any) -> None:
    """A close posts to `<alert_url>/<alias>/close?identifierType=alias`, the alias one
    percent-encoded path segment (a `/` in it too), with the key and the close body."""
    mock.add(
        responses.POST,
        CLOSE_URL,
        status=202,
        match=[
            matchers.header_matcher({"Authorization": f"GenieKey {KEY}", "Content-Type": "application/json"}),
            matchers.json_params_matcher({"source": "rulesd", "note": "resolved: errors"}),
        ],
    )
    make_client().close_alert('rulesd: errors: {"host":"a/b"}', {"source": "rulesd", "note": "resolved: errors"})
    assert 1 == len(mock.calls)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(202, None), (404, None), (500, RetryableAlertError), (401, PausingAlertError), (400, PermanentAlertError)],
)
def test_close_outcomes(mock: Any, status: int, expected: type[AlertError] | None) -> None:
    """A 404 (closed or deleted already) counts as done; other outcomes as for a create."""
    mock.add(responses.POST, CLOSE_URL, status=status, body="{}")
    if expected is None:
        make_client().close_alert('rulesd: errors: {"host":"a/b"}', {})
    else:
        with pytest.raises(expected):
            make_client().close_alert('rulesd: errors: {"host":"a/b"}', {})
