"""`--dry-run`'s transport: each alert printed as one JSON line instead of sent."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TextIO

import orjson

from rulesd.alerting.api import OutputClosed, RetryableAlertError
from rulesd.output import discard

log = logging.getLogger(__name__)


class PrintTransport:
    """`--dry-run`: writes each payload as one compact JSON line instead of sending it.

    When the stream's reader goes away (`rulesd run --dry-run ... | head`), nothing more can be
    printed: every later alert raises `OutputClosed`, and `on_closed` is called once (the daemon
    stops, as `rulesd replay ... | head` does).
    """

    def __init__(self, stream: TextIO, on_closed: Callable[[], None] = lambda: None) -> None:
        self._stream = stream
        self._on_closed = on_closed
        self.closed = False

    def __repr__(self) -> str:
        return "PrintTransport()"

    def create_alert(self, payload: dict[str, Any] | bytes) -> None:
        """Write `payload` as one JSON line (given as JSON, the outbox's compact text: as it is)
        and flush, so a pipe reader sees it at once."""
        if self.closed:
            raise OutputClosed("standard output is closed")
        try:
            line = payload if isinstance(payload, bytes) else orjson.dumps(payload)
            self._stream.write(line.decode() + "\n")
            self._stream.flush()
        except BrokenPipeError:
            self._close()
            raise OutputClosed("standard output was closed") from None
        except OSError as exc:  # a full disk: it may pass, so the alert is tried again later
            raise RetryableAlertError(f"cannot write to standard output: {exc.strerror or exc}") from None

    def close_alert(self, alias: str, body: dict[str, Any]) -> None:
        """Write the close as one JSON line: `{"close": alias, ...body}`."""
        self.create_alert({"close": alias, **body})

    def _close(self) -> None:
        self.closed = True
        log.info("standard output was closed: the dry run stops")
        discard(self._stream)
        self._on_closed()
