"""SIGTERM and SIGINT heard while a start waits (an instance name's lease held on another host,
up to 30 s): `systemctl stop` and `docker stop` must end it at once, not wait for it and then
SIGKILL. The daemon's loop installs handlers of its own once it runs; these are for before."""

from __future__ import annotations

import signal
import threading
from types import TracebackType
from typing import Any

STOPS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """While in use (`with`), SIGTERM and SIGINT set `event` and are named in `heard` (the first
    one) instead of ending the process; the handlers in place before are put back after."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event
        self.heard = ""
        self._previous: list[tuple[signal.Signals, Any]] = []

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds; True once a stop was asked for."""
        return self.event.wait(timeout)

    def __enter__(self) -> StopSignals:
        self._previous = [(signum, signal.signal(signum, self._note)) for signum in STOPS]
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        for signum, handler in self._previous:
            signal.signal(signum, handler)

    def _note(self, signum: int, _frame: Any) -> None:
        self.heard = self.heard or signal.Signals(signum).name
        self.event.set()
