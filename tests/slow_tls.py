"""A loopback server that accepts TCP and then drips its side of the TLS handshake, a byte at a
time, as a slow server or a middlebox in the way can: each byte comes well within a read
timeout, and the handshake never completes."""

from __future__ import annotations

import socket
import threading

from tests.raw_http import RawServer

# The head of a TLS handshake record (a ServerHello's) announcing 16 KiB: the client waits for
# the whole record before it can make anything of it.
RECORD_HEAD = b"\x16\x03\x03\x40\x00"


class SlowHandshake(RawServer):
    """Answers each ClientHello one byte per `every` seconds, for at most `lasting` seconds
    (then closes: a test of code that waits for it fails instead of hanging)."""

    def __init__(self, every: float = 0.2, lasting: float = 20.0) -> None:
        self.every, self.lasting = every, lasting
        self.hellos = 0  # ClientHellos received
        self.stopping = threading.Event()
        super().__init__(b"")
        self.url = self.url.replace("http://", "https://", 1)

    def _answer(self, conn: socket.socket) -> None:
        if conn.recv(65536)[:1] != b"\x16":  # not a ClientHello
            return
        self.hellos += 1
        drops = int(self.lasting / self.every)
        data = RECORD_HEAD + b"\x00" * drops
        for i in range(drops):
            if self.stopping.wait(self.every):
                return
            try:
                conn.sendall(data[i : i + 1])
            except OSError:  # the client gave up
                return

    def close(self) -> None:
        self.stopping.set()
        super().close()
