"""An answer's headers read without the `email` parser where they are plain: the same message as
http.client's own parse for any block of lines, and the client's decisions unchanged, against a
real server on loopback."""

from __future__ import annotations

import email.parser
import http.client
import io
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rulesd.alerting import headers
from rulesd.alerting.api import RetryableAlertError
from rulesd.alerting.opsgenie import OpsGenieClient
from tests.raw_http import RawServer

KEY = "eb243592-faa2-4ba2-a551-1afdf565c889"
OPSGENIE_HEADERS = (
    b"Date: Mon, 07 Dec 2026 04:48:21 GMT\r\nContent-Type: application/json;charset=UTF-8\r\n"
    b"Content-Length: 2\r\nConnection: keep-alive\r\nX-Request-Id: 3b1f0a0e-1e9c-4ff8-b7a0-6a8f0c2bd9a4\r\n"
    b"X-Response-Time: 0.012\r\nStrict-Transport-Security: max-age=31536000; includeSubDomains\r\n"
    b"Vary: Origin\r\n\r\n"
)


def attributes(message: http.client.HTTPMessage) -> dict[str, Any]:
    """`message`'s attributes, its defects (which compare by identity) by kind and text."""
    return {**vars(message), "defects": [(type(d), str(d)) for d in message.defects]}


def both(block: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """What http.client's parse and rulesd's make of `block`."""
    stdlib = http.client.parse_headers(io.BytesIO(block))
    return attributes(stdlib), attributes(headers.parse_headers(io.BytesIO(block)))


# Pieces of header blocks: plain fields, and what `email` decides about (folds, lone CRs,
# lines without a colon, an empty name, `From `, bytes outside ASCII, blanks at either end).
PIECES = st.sampled_from(
    [
        b"Content-Type: application/json",
        b"Content-Length: 0",
        b"retry-after:2",
        b"X-Blank:",
        b"X-Spaces: \t a b \t",
        b"X-Colons: a:b: c",
        b": no name",
        b"no colon",
        b" folded",
        b"\tfolded",
        b"From nobody",
        b"X-Latin: caf\xe9",
        b"X-Nel: a\x85b",
        b"X-Cr: a\rb",
        b"X-Ctl: a\x0bb",
        b"X@Odd!: v",
        b"",
    ]
)
ENDS = st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\r\n"])


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(PIECES, ENDS), max_size=8), st.sampled_from([b"\r\n", b"\n", b""]))
def test_any_block_makes_the_message_http_client_makes(lines: list[tuple[bytes, bytes]], end: bytes) -> None:
    block = b"".join(piece + line_end for piece, line_end in lines) + end
    stdlib, ours = both(block)
    assert stdlib == ours


@pytest.mark.parametrize(
    "block",
    [
        OPSGENIE_HEADERS,
        b"Content-Type: application/json\r\nContent-Length: 87\r\nConnection: close\r\n\r\n",
        b"\r\n",
        b"Retry-After: 3\r\nRetry-After: 4\r\nSet-Cookie: a=b; Path=/\n\n",
    ],
)
def test_plain_blocks_are_read_without_email(block: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = attributes(http.client.parse_headers(io.BytesIO(block)))
    monkeypatch.setattr(email.parser.Parser, "parsestr", refuse)
    assert attributes(headers.parse_headers(io.BytesIO(block))) == expected


def refuse(*_: object, **__: object) -> None:
    raise AssertionError("the email parser was asked")


def create_against(answer: bytes) -> None:
    raw = RawServer(answer)
    try:
        OpsGenieClient(raw.url, lambda: KEY, 5.0, clock=lambda: 1_700_000_000.0).create_alert({"message": "m"})
    finally:
        raw.close()


def test_the_client_reads_an_opsgenie_answer_without_email(monkeypatch: pytest.MonkeyPatch) -> None:
    """A delivery whose answer's headers are plain asks nothing of the `email` parser."""
    monkeypatch.setattr(email.parser.Parser, "parsestr", refuse)
    create_against(b"HTTP/1.1 202 Accepted\r\n" + OPSGENIE_HEADERS + b"{}")


@pytest.mark.parametrize(
    "retry_after",
    [b"Retry-After: 7\r\n", b"Retry-After:\r\n 7\r\n", b"X-Odd\r\nRetry-After: 7\r\n"],
    ids=["plain", "folded", "a-line-without-colon-first"],
)
def test_a_retry_after_is_read_alike_from_plain_and_other_headers(retry_after: bytes) -> None:
    """A folded header, or a line `email` takes for the start of the body, goes to `email` and
    means what it meant (folded: the value; after a line without a colon: no header at all)."""
    with pytest.raises(RetryableAlertError) as raised:
        create_against(b"HTTP/1.1 503 Busy\r\n" + retry_after + b"Content-Length: 0\r\n\r\n")
    expected = http.client.parse_headers(io.BytesIO(retry_after + b"\r\n")).get("Retry-After")
    assert raised.value.retry_after == (float(expected) if expected else None)
