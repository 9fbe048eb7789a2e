"""Scale-out on Redis: 1 against 2 `rulesd run` processes on one stream, side by side in one run,
and Redis's CPU per event.

    python benchmarks/redis_scale.py [--shape classic] [--rules 100] [--events 200000] [--repeat 3] [--quick]
                                     [--groups 1] [--workers 1,2]

A redis-server (no persistence: the figure is rulesd's) is started on loopback; the events go
into the stream in entries of 1,000 (as `rulesd forward` writes them) before the workers start;
the consumer group is then moved to the stream's start and the clock runs until every entry is
committed (every event evaluated, its alerts queued: the figure compared), then until every alert
is delivered to a loopback server answering 202 (one sender at a time, in order: shown apart).
Each configuration is run `--repeat` times, alternating; the shortest run of each is kept.
Redis's CPU is INFO cpu's used_cpu_user + used_cpu_sys, before and after a run.

`--groups N` puts N - 1 other consumer groups on the stream (another fleet, an archiver), each
holding one entry read and not acknowledged past the events: every commit's trim then asks
each of them how far it is (XINFO GROUPS, XPENDING). The time Redis spent in those two commands
(INFO commandstats) is shown per commit, beside all the scripts' (EVALSHA: the commits and the
few other scripts, the commands they run included).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import DEFAULT_SEED, events_path, rules_path, shape_module, write_all
from tree import RULESD, ran

STREAM, GROUP, PER_ENTRY = "rulesd:events", "rulesd", 1000


class _Accept(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", ""]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return proc, port
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    sys.exit("redis-server did not start")


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(
    work: Path, client: redis.Redis, port: int, alert_url: str, rules: Path, events: Path, n: int, groups: int = 1
) -> dict[str, float]:
    """Fill the stream, start `n` workers, release the group, time until everything is committed."""
    client.flushall()
    lines = events.read_bytes().splitlines()
    pipe = client.pipeline(transaction=False)
    for i in range(0, len(lines), PER_ENTRY):
        pipe.xadd(STREAM, {"events": b"\n".join(lines[i : i + PER_ENTRY])})
    pipe.execute()
    other_groups(client, groups - 1)
    client.xgroup_create(STREAM, GROUP, id="$")  # nothing to read until released below
    url = f"redis://127.0.0.1:{port}/0"
    procs = []
    for i in range(n):
        config = work / f"w{i}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "rules": [str(rules)],
                    "time_field": "ts",
                    "source": {"type": "redis_stream", "url": url, "stream": STREAM, "group": GROUP},
                    "state": {"backend": "redis", "url": url, "instance": f"w{i}"},
                    "state_dir": str(work / f"state-{i}"),
                    "opsgenie": {"api_key": "bench", "alert_url": alert_url},
                }
            )
        )
        err = open(work / f"w{i}.log", "wb")  # noqa: SIM115
        procs.append(subprocess.Popen([*RULESD, "run", "--config", str(config)], stderr=err, stdout=err))
    for i in range(n):
        while b"rulesd started" not in (work / f"w{i}.log").read_bytes():
            if procs[i].poll() is not None:
                sys.exit((work / f"w{i}.log").read_text())
            time.sleep(0.05)
    time.sleep(0.5)
    cpu_before = [process_cpu(p.pid) for p in procs]
    client.config_resetstat()
    version = int(client.get("rulesd:version") or 0)
    redis_before = redis_cpu(client)
    start = time.perf_counter()
    client.xgroup_setid(STREAM, GROUP, id="0")
    last = client.xadd(STREAM, {"events": lines[-1]})  # wakes the blocked readers at once
    total = len(lines) + 1
    while client.get("rulesd:cursor") != last:  # the last entry committed: so is every one before it
        time.sleep(0.002)
    elapsed = time.perf_counter() - start
    cpu = sum(process_cpu(p.pid) - b for p, b in zip(procs, cpu_before, strict=True))
    redis_used = redis_cpu(client) - redis_before
    commits = int(client.get("rulesd:version") or 0) - version
    stats = client.info("commandstats")
    names = ("xinfo|groups", "xpending", "evalsha")
    usec = {name: float(stats.get(f"cmdstat_{name}", {}).get("usec", 0)) for name in names}
    alerts = client.get("rulesd:outbox:seq")
    while client.xlen("rulesd:outbox"):  # then every alert delivered, one sender at a time, in order
        time.sleep(0.002)
    delivered = time.perf_counter() - start
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)
    return {
        "delivered": delivered,
        "alerts": float(alerts or 0),
        "seconds": elapsed,
        "events_per_s": total / elapsed,
        "worker_cpu": cpu,
        "redis_us_per_event": redis_used / total * 1e6,
        "commits": float(commits),
        "trim_us_per_commit": (usec["xinfo|groups"] + usec["xpending"]) / max(commits, 1),
        "scripts_us_per_commit": usec["evalsha"] / max(commits, 1),
    }


def other_groups(client: redis.Redis, count: int) -> None:
    """`count` other consumer groups, each with one entry (after the events) read and not
    acknowledged: pending, so that the trim asks XPENDING where each one is."""
    if not count:
        return
    last = client.xinfo_stream(STREAM)["last-generated-id"]  # the events' last entry
    client.xadd(STREAM, {"events": b"{}"})
    for g in range(count):
        client.xgroup_create(STREAM, f"other-{g}", id=last)
        client.xreadgroup(f"other-{g}", "archiver", {STREAM: ">"}, count=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="classic")
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20,000 events, best of 1 (CI smoke)")
    parser.add_argument("--groups", type=int, default=1, help="consumer groups on the stream, the workers' included")
    parser.add_argument("--workers", default="1,2", help="the numbers of workers to compare (comma-separated)")
    args = parser.parse_args()
    workers = [int(n) for n in args.workers.split(",")]
    if args.quick:
        args.events, args.repeat = 20_000, 1
    data = Path(__file__).resolve().parent / "data"
    events, rules = (
        events_path(data, args.events, DEFAULT_SEED, args.shape),
        rules_path(data, args.rules, DEFAULT_SEED, args.shape),
    )
    if not events.exists() or not rules.exists():
        write_all(data, args.events, DEFAULT_SEED, args.shape, (args.rules,))
    shape_module(args.shape)
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores shared with other work); {ran()}")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Accept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    alert_url = f"http://127.0.0.1:{server.server_address[1]}/v2/alerts"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        proc, port = start_redis(work)
        client = redis.Redis(port=port)
        try:
            best: dict[int, dict[str, float]] = {}
            for _ in range(args.repeat):
                for n in workers:
                    result = run_once(work, client, port, alert_url, rules, events, n, args.groups)
                    if n not in best or result["seconds"] < best[n]["seconds"]:
                        best[n] = result
        finally:
            proc.terminate()
            proc.wait(10)
    for n in workers:
        r = best[n]
        print(
            f"{n} process(es): {r['events_per_s']:>9,.0f} events/s ({r['seconds']:.2f} s), "
            f"worker CPU {r['worker_cpu']:.2f} s, Redis CPU {r['redis_us_per_event']:.2f} us/event; "
            f"{r['alerts']:.0f} alerts all delivered after {r['delivered']:.2f} s; {args.groups} consumer group(s): "
            f"XINFO GROUPS + XPENDING {r['trim_us_per_commit']:.1f} us per commit, of the scripts' "
            f"{r['scripts_us_per_commit']:.0f} us ({r['commits']:.0f} commits)"
        )
    if 1 in best and 2 in best:
        speed_up = best[2]["events_per_s"] / best[1]["events_per_s"]
        print(f"speed-up 2 vs 1 process: {speed_up:.2f}x (best of {args.repeat})")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
