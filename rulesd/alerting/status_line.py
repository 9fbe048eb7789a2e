"""An answer whose status line said 2xx but whose headers could not be read.

http.client reads the status line, then the headers, and refuses a header line over 64 KiB or
more than 100 headers; a reset or a timeout may also come between the two. It then raises as it
does for a connection that broke before any answer, so the alert would be sent again, although
the status line had said it was taken: a duplicate page. rulesd's connections answer with
`StatusLineResponse`, which raises `HeadersUnreadable` with that status instead, so that the
transport can count it as a delivery, as it does a 2xx whose body never completed.
"""

from __future__ import annotations

import http.client

from rulesd.alerting import headers


class HeadersUnreadable(http.client.HTTPException):
    """The 2xx status line came (`status`) but the headers after it could not be read."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}, then headers that cannot be read: {reason}")
        self.status = status


class StatusLineResponse(http.client.HTTPResponse):
    """http.client's response, raising `HeadersUnreadable` when its headers fail after a 2xx
    status line, its plain headers read without the `email` parser (`headers`)."""

    def begin(self) -> None:
        try:
            headers.begin(self)
        except (http.client.HTTPException, OSError) as exc:
            # `status` is set once the final status line is read, before the headers are.
            if isinstance(self.status, int) and 200 <= self.status < 300:
                raise HeadersUnreadable(self.status, f"{type(exc).__name__}: {exc}") from exc
            raise
