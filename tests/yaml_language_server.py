"""A minimal Language Server Protocol client that drives the real yaml-language-server (the server
behind VS Code's YAML extension and other editors) over stdio, for tests of the editor set-up."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

SERVER = "yaml-language-server"


def server_command() -> list[str]:
    """The server's command line; a missing server fails the test (`.ci/run` installs it with npm)."""
    path = shutil.which(SERVER)
    if path is None:
        pytest.fail(f"{SERVER} not found: npm install -g {SERVER}@1.25.0 (.ci/run does)")
    return [path, "--stdio"]


class YamlLanguageServer:
    """One server process with a workspace folder; `diagnostics(path, text)` opens a document and
    returns what the server reports for it."""

    def __init__(self, workspace: Path, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.proc = subprocess.Popen(
            server_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.next_id = 0
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        root = workspace.as_uri()
        self.request(
            "initialize",
            {
                "processId": None,
                "rootUri": root,
                "workspaceFolders": [{"uri": root, "name": workspace.name}],
                "capabilities": {"workspace": {"configuration": True}, "textDocument": {"publishDiagnostics": {}}},
            },
        )
        self.notify("initialized", {})
        self.notify("workspace/didChangeConfiguration", {"settings": {"yaml": settings}})

    def _read(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        while True:
            length = 0
            while (line := stream.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if not line:
                return
            self.messages.put(json.loads(stream.read(length)))

    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        self.proc.stdin.flush()

    def notify(self, method: str, params: dict[str, Any]) -> None:
        """Send a notification."""
        self._send({"method": method, "params": params})

    def request(self, method: str, params: dict[str, Any]) -> Any:
        """Send a request and wait for its result, answering the server's own requests meanwhile."""
        self.next_id += 1
        self._send({"id": self.next_id, "method": method, "params": params})
        return self._wait(lambda m: m.get("id") == self.next_id and "method" not in m)["result"]

    def _wait(self, wanted: Any, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            if "method" in message and "id" in message:  # a request of the server's
                self._answer(message)
            elif wanted(message):
                return message

    def _answer(self, request: dict[str, Any]) -> None:
        result: Any = None
        if request["method"] == "workspace/configuration":
            result = [self.settings if item.get("section") == "yaml" else None for item in request["params"]["items"]]
        self._send({"id": request["id"], "result": result})

    def diagnostics(self, path: Path, text: str) -> list[tuple[int, str]]:
        """Open `path` with `text`; the (1-based line, message) of each problem the server reports."""
        uri = path.as_uri()
        self.notify(
            "textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "yaml", "version": 1, "text": text}}
        )
        published = self._wait(
            lambda m: m.get("method") == "textDocument/publishDiagnostics" and m["params"]["uri"] == uri
        )
        return sorted((d["range"]["start"]["line"] + 1, d["message"]) for d in published["params"]["diagnostics"])

    def close(self) -> None:
        """Stop the server."""
        self.proc.kill()
        self.proc.wait(10)
