"""The daemon following a glob of many files, most of them quiet (per-container logs).

    python benchmarks/idle_glob.py [--files N] [--seconds S] [--quick]

1. Idle CPU: the real `rulesd run` on `DIR/*.log` with N files of one line each, nothing
   written; its CPU time (utime + stime from /proc/PID/stat) over S seconds, as a share of
   one core.
2. Latency: one line appended to one file (a different one each time, every 0.5 s), from the
   append to the alert it causes reaching a loopback OpsGenie: median and max.

With --startup, only the start: the time from spawning the daemon to its "rulesd started"
(when it tells systemd READY=1) and its CPU time by then, median of --repeat runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon import Arrivals, rulesd, wait_for, write_config
from tree import ran

from tests.fake_opsgenie import FakeOpsGenie

PAGE_RULE = {"name": "page", "match": {"kind": "page"}, "alert": {"message": "page {seq}", "alias": "page-{seq}"}}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Started(NamedTuple):
    proc: subprocess.Popen[bytes]
    paths: list[Path]
    ready: float  # seconds from the spawn to "rulesd started"
    cpu: float  # the daemon's CPU seconds by then


@contextlib.contextmanager
def started(files: int, url: str) -> Iterator[Started]:
    """The daemon on a glob of `files` files of one line each, from its start to its end."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        logs = root / "logs"
        logs.mkdir()
        paths = [logs / f"container-{i:05d}.log" for i in range(files)]
        for path in paths:
            path.write_bytes(orjson.dumps({"kind": "start", "ts": time.time()}) + b"\n")
        rule = root / "page.yaml"
        rule.write_text(yaml.safe_dump(PAGE_RULE))
        source = {"type": "file", "path": str(logs / "*.log"), "start_at": "beginning"}
        config = write_config(root, [rule], source, url)
        stderr = root / "stderr"
        spawned = time.monotonic()
        with stderr.open("wb") as err:
            proc = rulesd("run", "--config", str(config), stderr=err, stdout=subprocess.DEVNULL)
        try:
            wait_for(lambda: "rulesd started" in stderr.read_text(), timeout=120)
            yield Started(proc, paths, time.monotonic() - spawned, cpu_seconds(proc.pid))
        finally:
            proc.terminate()
            proc.wait(30)


def startup(files: int, repeat: int) -> tuple[float, float]:
    """Median seconds from the spawn to ready, and median CPU seconds by then."""
    runs: list[Started] = []
    with FakeOpsGenie(Arrivals()) as server:
        for _ in range(repeat):
            with started(files, server.url) as daemon:
                runs.append(daemon)
    return statistics.median(r.ready for r in runs), statistics.median(r.cpu for r in runs)


def measure(files: int, seconds: float, lines: int) -> tuple[float, list[float]]:
    """Idle CPU share of one core, and the append-to-alert latencies of `lines` lines."""
    arrivals = Arrivals()
    with FakeOpsGenie(arrivals) as server, started(files, server.url) as daemon:
        proc, paths = daemon.proc, daemon.paths
        time.sleep(3)  # the first lines read and committed
        before, start = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        idle = (cpu_seconds(proc.pid) - before) / (time.monotonic() - start)
        sent: dict[str, float] = {}
        for seq, path in enumerate(random.Random(1).sample(paths, lines)):
            sent[f"page-{seq}"] = time.time()
            with path.open("ab") as fh:
                fh.write(orjson.dumps({"kind": "page", "seq": seq}) + b"\n")
            time.sleep(0.5)
        wait_for(lambda: len(arrivals.at) >= len(sent), timeout=30)
    return idle, [arrivals.at[alias] - t for alias, t in sent.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=30.0, help="idle time measured")
    parser.add_argument("--lines", type=int, default=20, help="lines appended, one every 0.5 s")
    parser.add_argument("--quick", action="store_true", help="a smoke run, a few seconds")
    parser.add_argument("--startup", action="store_true", help="only the time from start to ready")
    parser.add_argument("--repeat", type=int, default=3, help="start-ups measured (--startup)")
    args = parser.parse_args()
    if args.quick:
        args.files, args.seconds, args.lines = 200, 3.0, 3
    load = os.getloadavg()[0]
    if args.startup:
        ready, cpu = startup(args.files, args.repeat)
        print(f"{args.files:,} files, glob source, Python {sys.version.split()[0]}, load {load:.1f}; {ran()}")
        print(f"start to ready, median of {args.repeat}: {ready:.2f} s, {cpu:.2f} s of CPU")
        return
    idle, latencies = measure(args.files, args.seconds, args.lines)
    print(f"{args.files:,} files, glob source, Python {sys.version.split()[0]}, load {load:.1f}; {ran()}")
    print(f"idle CPU over {args.seconds:.0f} s: {idle * 100:.1f}% of a core")
    print(
        f"append to alert, {len(latencies)} lines: median {statistics.median(latencies) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
