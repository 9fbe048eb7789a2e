"""Run a command with a DNS resolver that never answers: `unshare --user --map-root-user --mount
--net -- python dead_resolver.py QUERIES COMMAND...` (`dead_resolver_wrapper` builds that).

In its own network and mount namespaces the command's process (and only it) sees a
resolv.conf naming 127.0.0.1, where a UDP socket takes every query and answers none, and an
nsswitch.conf that looks host names up in /etc/hosts and then DNS (not through a local caching
service the host may run). Each query is written to the file QUERIES as `TYPE NAME`, one a line,
so that a test can count the lookups made. The black hole is a child process that ends once the
command has ended; the command replaces this process, keeping its id (signals reach it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

# The resolver's own bounds, as a resolv.conf may set them: 30 s for the one query, not retried,
# so that a lookup outlasts any test's deadline by far (the default is 5 s per attempt, twice).
RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:30 attempts:1\n"
QUERY_TYPES = {1: "A", 28: "AAAA"}


def wrapper(queries: Path) -> tuple[str, ...]:
    """The command prefix that runs what follows with the dead resolver, its queries in `queries`."""
    return ("unshare", "--user", "--map-root-user", "--mount", "--net", "--", sys.executable, __file__, str(queries))


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


def private_file(text: str, over: str) -> None:
    """`text` bind-mounted over the file `over`, in this mount namespace only."""
    with tempfile.NamedTemporaryFile("w", delete=False, prefix="dead-resolver-") as fh:
        fh.write(text)
    subprocess.run(["mount", "--bind", fh.name, over], check=True)
    os.unlink(fh.name)  # the mount holds the file


def main(queries: Path, command: list[str]) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    private_file(RESOLV_CONF, "/etc/resolv.conf")
    private_file("hosts: files dns\n", "/etc/nsswitch.conf")
    queries.touch()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 53))
    parent = os.getpid()
    if os.fork() == 0:
        swallow(sock, queries, parent)
        os._exit(0)
    sock.close()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
