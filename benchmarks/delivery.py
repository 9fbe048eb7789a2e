"""CPU per delivered alert: the daemon's sender (the oldest pending alert read from the SQLite
outbox, sent through rulesd's OpsGenie client, its delivery recorded) against a bare
`http.client` POST of the same bodies with the same headers, measured in the same run.

    python benchmarks/delivery.py [--alerts N] [--repeat N] [--keep-alive] [--host-name] [--quick]

The alerts are what `rulesd replay --format json` prints for the "ops" events and 100 rules
(the payloads the daemon would queue), repeated up to `--alerts`. The loopback server
standing in for OpsGenie (`tests/fake_opsgenie.py`) runs in a process of its own, so that
its CPU time is not counted and it takes no GIL from the sender; it closes each connection
after its answer (HTTP/1.0, as in `process.py`), or with `--keep-alive` keeps it for the next
request (HTTP/1.1, as OpsGenie does; both sides then reuse one connection). With `--host-name` the
server is addressed as `localhost`, a name looked up (in /etc/hosts) for each new connection, as
`api.opsgenie.com` is, rather than by its address. CPU time of this process
(every thread: the client's deadline watcher too), best of N; "x floor" is the bare POST's
CPU per alert over the sender's.
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate
from tree import RULESD, ran

from rulesd import __version__
from rulesd.config import OpsgenieConfig
from rulesd.daemon.build import ApiKey, opsgenie_client
from rulesd.sender import Sender
from rulesd.state import SqliteState

KEY = "benchmark-key"


def serve(keep_alive: bool) -> None:
    """The loopback server, in its own process: prints its URL, then serves until killed."""
    from tests.fake_opsgenie import FakeOpsGenie

    with FakeOpsGenie(keep_alive=keep_alive) as server:
        print(server.url, flush=True)
        while True:
            time.sleep(0.5)
            server.requests.clear()  # nothing here reads them


def payloads(count: int, seed: int) -> list[dict[str, Any]]:
    """The ops shape's alerts at 100 rules, as `rulesd replay` builds them, repeated to `count`."""
    out = generate.DATA_DIR
    events, rules = 200_000, 100
    generate.write_all(out, events, seed, "ops", (rules,))
    command = [
        *(*RULESD, "replay", "--format", "json", "--time-field", "timestamp"),
        *("--rules", str(generate.rules_path(out, rules, seed, "ops"))),
        str(generate.events_path(out, events, seed, "ops")),
    ]
    lines = subprocess.run(command, capture_output=True, check=True).stdout.splitlines()
    found = [orjson.loads(line) for line in lines if line.startswith(b"{")]
    return [found[i % len(found)] for i in range(count)]


def floor(url: str, bodies: list[dict[str, Any]], keep_alive: bool) -> float:
    """CPU seconds per alert of a bare `http.client` POST, the response read: a new connection
    each (as the server closes it), or one for all with `keep_alive`."""
    parts = urlsplit(url)
    headers = {
        "Authorization": f"GenieKey {KEY}",
        "Content-Type": "application/json",
        "User-Agent": f"rulesd/{__version__}",
    }
    started = time.process_time()
    conn = None
    for body in bodies:
        if conn is None:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        conn.request("POST", parts.path, body=orjson.dumps(body), headers=headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 202, response.status
        if not keep_alive:
            conn.close()
            conn = None
    if conn is not None:
        conn.close()
    return (time.process_time() - started) / len(bodies)


def sender(url: str, bodies: list[dict[str, Any]]) -> float:
    """CPU seconds per alert of the daemon's sender draining an outbox of `bodies`."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteState(str(Path(tmp) / "state.db"))
        store.commit(positions={}, payloads=bodies, now=time.time())
        store.relax_durability()  # as the sender's own connection
        config = OpsgenieConfig(api_key=KEY, alert_url=url)
        client = opsgenie_client(config, ApiKey(config, os.environ))
        deliver = Sender(store, client, clock=time.time)
        started = time.process_time()
        deliver.step()
        cpu = time.process_time() - started
        assert store.depth()[0] == 0, "not every alert was delivered"
        store.close()
    return cpu / len(bodies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=generate.DEFAULT_SEED)
    parser.add_argument("--keep-alive", action="store_true", help="a server that keeps connections open")
    parser.add_argument("--host-name", action="store_true", help="address the server as localhost (a lookup)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 100 alerts, best of 1")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.keep_alive)
        return
    if args.quick:
        args.alerts, args.repeat = 100, 1
    bodies = payloads(args.alerts, args.seed)
    serve_command = [sys.executable, __file__, "--serve", *(["--keep-alive"] if args.keep_alive else [])]
    server = subprocess.Popen(serve_command, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip() + "/v2/alerts"
        if args.host_name:
            url = url.replace("//127.0.0.1:", "//localhost:", 1)
        floor(url, bodies[:20], args.keep_alive)  # warm both paths once
        sender(url, bodies[:20])
        bare = ours = float("inf")
        for _ in range(args.repeat):  # alternated, so that a busy spell slows both alike
            bare = min(bare, floor(url, bodies, args.keep_alive))
            ours = min(ours, sender(url, bodies))
    finally:
        server.kill()
        server.wait()
    size = sum(len(orjson.dumps(b)) for b in bodies) / len(bodies)
    print(
        f"{args.alerts:,} alerts of {size:.0f} bytes, connections "
        f"{'kept alive' if args.keep_alive else 'closed by the server'}"
        f"{', to localhost' if args.host_name else ''}, best of {args.repeat}, "
        "CPU time of this process, "
        f"load {os.getloadavg()[0]:.2f}; {ran()}"
    )
    print(f"bare http.client POST: {bare * 1e6:.0f} us per alert")
    print(f"rulesd sender:         {ours * 1e6:.0f} us per alert ({bare / ours:.3f} x floor)")


if __name__ == "__main__":
    main()
