"""An answer's headers made into http.client's `HTTPMessage` without the `email` parser when
every line is a plain `name: value`.

http.client reads a response's header lines itself (a line at most 64 KiB, at most 100 lines)
and hands them to the `email` package's parser: ~55 µs of the sender's ~450 µs of CPU per alert
for a loopback server's four headers, ~115 µs for the nine or so OpsGenie sends. A line of
printable ASCII holding a token, a colon and a value, which is what OpsGenie and every HTTP/1.1
server write, leaves that parser nothing to decide: such a block is made here into the message
it would have made (the same name and value pairs, in order; the property tests compare the
two). Any other block (a folded line, a line without a colon or with a byte outside printable
ASCII, an answer that ended before its blank line) goes to `email` as before.

`begin` is http.client's own `HTTPResponse.begin` (its code, so that this Python's rules for the
status line, 1xx answers, the body's framing and keep-alive are what run: they decide whether a
page was taken), with the `parse_headers` it looks up in its module's globals bound to the one
here; patching the module would change it for the metrics server's `http.server` too.
"""

from __future__ import annotations

import email.parser
import http.client
import re
import types
from collections.abc import Callable
from typing import IO, cast

# A line as http.client writes and OpsGenie sends it: a token (the characters `email`'s parser
# takes for a name), a colon, blanks it strips, a value of printable ASCII or tabs (whose blanks
# at the end it keeps), one line end. `email` splits lines at a lone CR too: none is let through.
_PLAIN = re.compile(r"([!-9;-~]+):[ \t]*([\t -~]*?)\r?\n")
_BLANK = (b"\r\n", b"\n")
# http.client's reader of the header lines (its limits on their length and count).
_read_headers: Callable[[IO[bytes]], list[bytes]] = http.client._read_headers  # type: ignore[attr-defined]


def parse_headers(fp: IO[bytes]) -> http.client.HTTPMessage:
    """The header lines at `fp` as the message `http.client.parse_headers` makes of them."""
    lines = _read_headers(fp)
    if lines[-1] in _BLANK:
        message = http.client.HTTPMessage()
        for line in lines[:-1]:
            field = _PLAIN.fullmatch(line.decode("iso-8859-1"))
            if field is None:
                break
            message.set_raw(field[1], field[2])
        else:
            message.set_payload("")  # as `email` leaves it: the body is http.client's to read
            return message
    return email.parser.Parser(_class=http.client.HTTPMessage).parsestr(b"".join(lines).decode("iso-8859-1"))


def _begin_with(parse: Callable[[IO[bytes]], http.client.HTTPMessage]) -> Callable[[http.client.HTTPResponse], None]:
    """http.client's `HTTPResponse.begin` reading its headers with `parse`; `begin` itself if its
    code needs more than its module's globals (a later Python's, using a closure)."""
    begin = http.client.HTTPResponse.begin
    if begin.__code__.co_freevars or "parse_headers" not in begin.__code__.co_names:
        return begin
    return cast(
        Callable[[http.client.HTTPResponse], None],
        types.FunctionType(begin.__code__, {**vars(http.client), "parse_headers": parse}, begin.__name__),
    )


begin = _begin_with(parse_headers)
