"""Run a command with a DNS resolver that never answers: `unshare --user --map-root-user --mount
--net -- python dead_resolver.py QUERIES [--hosts FILE] [--relay PORT:SOCKET] COMMAND...`
(`dead_resolver.wrapper` builds that).

In its own network and mount namespaces the command's process (and only it) sees a
resolv.conf naming 127.0.0.1, where a UDP socket takes every query and answers none, and an
nsswitch.conf that looks host names up in /etc/hosts and then DNS (not through a local caching
service the host may run). Each query is written to the file QUERIES as `TYPE NAME`, one a line,
so that a test can count the lookups made. The black hole is a child process that ends once the
command has ended; the command replaces this process, keeping its id (signals reach it).

`--hosts FILE`: FILE is the command's /etc/hosts, which the test may rewrite while it runs (a
name found there is no DNS query; emptied, the same name goes to the dead resolver). `--relay
PORT:SOCKET`: 127.0.0.1:PORT in the command's network (which reaches no other) leads to the Unix
socket SOCKET, where a real server (redis-server's `unixsocket`) listens outside it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# The resolver's own bounds, as a resolv.conf may set them: 30 s for the one query unless a test
# says otherwise, not retried, so that a lookup outlasts any test's deadline by far (the default
# is 5 s per attempt, twice).
RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:{timeout} attempts:1\n"
QUERY_TYPES = {1: "A", 28: "AAAA"}


def wrapper(
    queries: Path, hosts: Path | None = None, relay: tuple[int, Path] | None = None, timeout: int = 30
) -> tuple[str, ...]:
    """The command prefix that runs what follows with the dead resolver, its queries in `queries`
    (`hosts`: its /etc/hosts; `relay`: a port of its loopback led to a Unix socket; `timeout`:
    how long the resolver waits for a query's answer)."""
    options = (*(("--hosts", str(hosts)) if hosts else ()), *(("--relay", f"{relay[0]}:{relay[1]}") if relay else ()))
    options = (*options, "--timeout", str(timeout))
    unshare = ("unshare", "--user", "--map-root-user", "--mount", "--net", "--")
    return (*unshare, sys.executable, __file__, str(queries), *options)


def question(packet: bytes) -> str:
    """A query's `TYPE NAME` (its first question), read past the 12-byte header."""
    labels, at = [], 12
    while at < len(packet) and packet[at]:
        labels.append(packet[at + 1 : at + 1 + packet[at]].decode("ascii", "replace"))
        at += 1 + packet[at]
    kind = int.from_bytes(packet[at + 1 : at + 3], "big")
    return f"{QUERY_TYPES.get(kind, kind)} {'.'.join(labels)}"


def swallow(sock: socket.socket, queries: Path, parent: int) -> None:
    """Take queries, write each down, answer none; end once `parent` (the command) has ended."""
    sock.settimeout(0.2)
    while os.getppid() == parent:
        try:
            packet = sock.recv(4096)
        except TimeoutError:
            continue
        with open(queries, "a") as out:
            out.write(question(packet) + "\n")


def relay(listener: socket.socket, path: str) -> None:
    """Each connection to `listener` joined to a new one to the Unix socket `path`."""
    while True:
        client, _ = listener.accept()
        server = socket.socket(socket.AF_UNIX)
        try:
            server.connect(path)
        except OSError:  # the server is down: refused, as a port nothing listens on would be
            client.close()
            server.close()
            continue
        for source, sink in ((client, server), (server, client)):
            threading.Thread(target=pump, args=(source, sink), daemon=True).start()


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Bytes from `source` to `sink` until either end closes; then both ends are shut."""
    with contextlib.suppress(OSError):  # reset by either end
        while data := source.recv(65536):
            sink.sendall(data)
    for end in (source, sink):
        with contextlib.suppress(OSError):  # shut already
            end.shutdown(socket.SHUT_RDWR)


def private_file(text: str, over: str) -> None:
    """`text` bind-mounted over the file `over`, in this mount namespace only."""
    with tempfile.NamedTemporaryFile("w", delete=False, prefix="dead-resolver-") as fh:
        fh.write(text)
    subprocess.run(["mount", "--bind", fh.name, over], check=True)
    os.unlink(fh.name)  # the mount holds the file


def options(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """The leading `--hosts FILE` / `--relay PORT:SOCKET` / `--timeout S` of `args`, and the
    command after them."""
    found: dict[str, str] = {}
    while args and args[0] in ("--hosts", "--relay", "--timeout"):
        found[args[0]], args = args[1], args[2:]
    return found, args


def main(queries: Path, args: list[str]) -> None:
    given, command = options(args)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    private_file(RESOLV_CONF.format(timeout=int(given.get("--timeout", "30"))), "/etc/resolv.conf")
    private_file("hosts: files dns\n", "/etc/nsswitch.conf")
    if "--hosts" in given:
        subprocess.run(["mount", "--bind", given["--hosts"], "/etc/hosts"], check=True)
    queries.touch()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 53))
    listener = None
    if "--relay" in given:
        port, path = given["--relay"].split(":", 1)
        listener = socket.create_server(("127.0.0.1", int(port)))
    parent = os.getpid()
    if os.fork() == 0:
        if listener is not None:
            threading.Thread(target=relay, args=(listener, path), daemon=True).start()
        swallow(sock, queries, parent)
        os._exit(0)
    sock.close()
    if listener is not None:
        listener.close()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
