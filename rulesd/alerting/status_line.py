"""An answer whose status line said 2xx but whose headers could not be read.

http.client reads the status line, then the headers, and refuses a header line over 64 KiB or
more than 100 headers; a reset or a timeout may also come between the two. urllib3 then raises
as it does for a connection that broke before any answer, so the alert would be sent again,
although the status line had said it was taken: a duplicate page. The connections of rulesd's
pool answer with `StatusLineResponse`, which keeps that status on the error
(`accepted_status` finds it), so that the transport can count it as a delivery, as it does a
2xx whose body never completed.
"""

from __future__ import annotations

import http.client


class HeadersUnreadable(http.client.HTTPException):
    """The status line came (`status`) but the headers after it could not be read.

    An HTTPException, so that urllib3 handles it as the error it stands for (the connection is
    discarded) and wraps it as it wraps that one."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}, then headers that cannot be read: {reason}")
        self.status = status


class StatusLineResponse(http.client.HTTPResponse):
    """http.client's response, raising `HeadersUnreadable` when its headers fail after a 2xx
    status line."""

    def begin(self) -> None:
        try:
            super().begin()
        except (http.client.HTTPException, OSError) as exc:
            # `status` is set once the final status line is read, before the headers are.
            if isinstance(self.status, int) and 200 <= self.status < 300:
                raise HeadersUnreadable(self.status, f"{type(exc).__name__}: {exc}") from exc
            raise


def accepted_status(exc: BaseException) -> int | None:
    """The 2xx status of an answer whose headers could not be read, if `exc` (as urllib3
    raises it: wrapped, or raised while handling it) stands for one; None otherwise."""
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        item = pending.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, HeadersUnreadable):
            return item.status
        pending.extend((*item.args, item.__cause__, item.__context__))
    return None
