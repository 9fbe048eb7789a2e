"""A real HTTP server on loopback standing in for OpsGenie in end-to-end tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client: tuple[str, int] | None = None  # the client's address: one per connection

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """What to answer: status, headers, body."""

    status: int = 202
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"result":"Request will be processed","took":0.01,"requestId":"x"}'
    trickle: float = 0.0  # if set: the headers at once, then the body one byte per `trickle` seconds


Responder = Callable[[Received], Reply]


class FakeOpsGenie:
    """Records every request; answers 202 unless `responder` says otherwise. The connection is
    closed after each answer (HTTP/1.0), or with `keep_alive` kept for the client's next request
    (HTTP/1.1, as OpsGenie does)."""

    def __init__(self, responder: Responder | None = None, *, keep_alive: bool = False) -> None:
        self.requests: list[Received] = []
        self.responder: Responder = responder or (lambda _r: Reply())
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"
            disable_nagle_algorithm = keep_alive  # headers and body written apart must not wait for an ACK

            def do_POST(self) -> None:
                self._handle()

            def do_GET(self) -> None:
                self._handle()

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if len(body) < length:  # the client died mid-request (SIGKILL): a real server drops it too
                    self.close_connection = True
                    return
                received = Received(self.command, self.path, dict(self.headers.items()), body, self.client_address)
                reply = owner.responder(received)
                with owner.changed:
                    owner.requests.append(received)
                    owner.changed.notify_all()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if not reply.trickle:
                    self.wfile.write(reply.body)
                    return
                self.wfile.flush()
                for i in range(len(reply.body)):  # until the client gives up or the server stops
                    if owner.stopping.wait(reply.trickle):
                        return
                    try:
                        self.wfile.write(reply.body[i : i + 1])
                        self.wfile.flush()
                    except OSError:
                        return

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeOpsGenie:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def alerts(self) -> list[dict[str, Any]]:
        """Bodies of the successfully answered create-alert requests, in arrival order."""
        return [r.json() for r in self.requests if r.method == "POST" and r.path.endswith("/v2/alerts")]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0) -> bool:
        """Block until `predicate(requests)` holds or `timeout` passes."""
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self.requests), timeout)
