"""A real `redis-server` for tests: on loopback, on a free port, in a temporary directory,
with AOF (`appendfsync always`) so that a restart keeps what was committed.

A missing redis-server fails the tests that need it (`.ci/run` installs it); it never skips them.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import redis


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process; `restart` stops it and starts it again on the same port and data."""

    def __init__(self, directory: Path, password: str | None = None, unix_socket: Path | None = None) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed (apt-get install redis-server)"
        self.binary = binary
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.password = password  # `requirepass`: the default user's password
        self.unix_socket = unix_socket  # where it listens too (a path under 108 bytes)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        """redis://127.0.0.1:PORT/0, with :PASSWORD@ when the server has one"""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A client of this server."""
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)

    def start(self) -> None:
        """Start it and wait until it answers."""
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--protected-mode",
            "yes",
            *(["--requirepass", self.password] if self.password else []),
            *(["--unixsocket", str(self.unix_socket), "--unixsocketperm", "700"] if self.unix_socket else []),
        ]
        with open(self.directory / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.exceptions.RedisError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server did not start: {(self.directory / 'redis.log').read_text()}")

    def stop(self) -> None:
        """Stop it at once (SIGKILL: what was acknowledged must already be in the AOF)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        """Kill it, stay down `down_for` seconds, start it again on the same port and data."""
        self.stop()
        time.sleep(down_for)
        self.start()

    def restart_empty(self) -> None:
        """Kill it and start it again without its data (as a Redis without persistence restarts)."""
        self.stop()
        shutil.rmtree(self.directory / "appendonlydir", ignore_errors=True)
        (self.directory / "dump.rdb").unlink(missing_ok=True)
        self.start()

    def cpu_seconds(self) -> float:
        """The server's CPU time so far (INFO cpu: user + system)."""
        info = self.client().info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def busy(self, seconds: float) -> threading.Thread:
        """Keep it busy for `seconds` with another client's script, past a busy-reply-threshold
        set low (100 ms): every other client is answered BUSY meanwhile. Join the thread."""
        self.client().config_set("busy-reply-threshold", 100)
        script = "local t = redis.call('TIME') while redis.call('TIME')[1] - t[1] < tonumber(ARGV[1]) do end"
        thread = threading.Thread(target=lambda: self.client().eval(script, 0, seconds))
        thread.start()
        time.sleep(0.3)
        return thread
