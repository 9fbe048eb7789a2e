"""A loopback server that answers each request with raw bytes, for the answers http.server cannot
give: a reset in the middle of a body, a short body, broken chunks, a header line too long."""

from __future__ import annotations

import socket
import struct
import threading


class RawServer:
    """Reads one request per connection, writes `answer`, then closes the connection: with
    `reset_after`, by a reset (RST) instead of an orderly close."""

    def __init__(self, answer: bytes, *, reset_after: bool = False, host: str = "127.0.0.1") -> None:
        self.answer, self.reset_after = answer, reset_after
        self.requests = 0
        self.heads: list[bytes] = []  # each request's head, as received
        ipv6 = ":" in host
        self.sock = socket.create_server((host, 0), family=socket.AF_INET6 if ipv6 else socket.AF_INET)
        self.url = f"http://{f'[{host}]' if ipv6 else host}:{self.sock.getsockname()[1]}/v2/alerts"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed: the test is over
                return
            with conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += conn.recv(65536)
        self.requests += 1
        self.heads.append(head)
        conn.sendall(self.answer)
        if self.reset_after:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def close(self) -> None:
        self.sock.close()
