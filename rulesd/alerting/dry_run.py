"""`--dry-run`'s transport: each alert printed as one JSON line instead of sent."""

from __future__ import annotations

from typing import Any, TextIO

import orjson


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
