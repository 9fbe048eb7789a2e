"""The systemd notify protocol (sd_notify), in pure Python.

Messages go as datagrams to $NOTIFY_SOCKET (a path, or an abstract socket when
it starts with `@`). Without the variable every call is a no-op, so the daemon
runs the same outside systemd.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

# While a start or a reload takes long (rules to load), systemd is asked every EXTEND_EVERY
# seconds for EXTEND_BY more: its own timeout (TimeoutStartSec=) is never shortened by that, and
# a load that hangs is still given up on EXTEND_BY after its last message.
EXTEND_EVERY = 5.0
EXTEND_BY = 30.0


class Notifier:
    """Sends state changes to systemd; never raises (a lost notification must not stop us)."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        wanted = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        # Ping at half the timeout, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval: float | None = int(usec) / 2e6 if wanted else None
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()  # a start or reload extender sends from a thread of its own

    @property
    def enabled(self) -> bool:
        """True when running under a notify-aware supervisor."""
        return bool(self.address)

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` fields in one datagram; False if it could not be sent."""
        if not self.address:
            return False
        try:
            with self._lock:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # systemd takes UTF-8 only: a lone surrogate (a path that is not UTF-8, as in
                # `state directory full: <path>`) is written as its escape, `\udcff`, as the log
                # writes it; encoding it strictly raised in the main loop.
                self._socket.sendto("\n".join(fields).encode(errors="backslashreplace"), self.address)
        except OSError:
            return False
        return True

    def keep_extending(self) -> Callable[[], None]:
        """Until the returned function is called, send EXTEND_TIMEOUT_USEC= every EXTEND_EVERY
        seconds (the first after EXTEND_EVERY: a short start or reload sends nothing). Call it
        before READY=1: it returns once no extension can follow."""
        if not self.address:
            return lambda: None
        done, every = threading.Event(), EXTEND_EVERY

        def extend() -> None:
            while not done.wait(every):
                self.send(f"EXTEND_TIMEOUT_USEC={int(EXTEND_BY * 1_000_000)}")

        thread = threading.Thread(target=extend, name="rulesd-extend-timeout", daemon=True)
        thread.start()

        def stop() -> None:
            done.set()
            thread.join()

        return stop

    def ready(self, status: str = "") -> bool:
        """READY=1, once rules are loaded and the source is open."""
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC, as Type=notify-reload expects."""
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> bool:
        """STOPPING=1."""
        return self.send("STOPPING=1")

    def status(self, text: str) -> bool:
        """A one-line status for `systemctl status`."""
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        """WATCHDOG=1: the main loop is alive."""
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        """Release the socket."""
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
