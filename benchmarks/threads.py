"""CPU per thread of `rulesd run`: the main thread (read, evaluate, queue, commit) and the
sender, delivering to a loopback server that closes every connection, against `--dry-run`
(alerts printed), alternated.

    python benchmarks/threads.py [--shape ops] [--rules 100] [--repeat N] [--quick]

Each thread's CPU is read from /proc/PID/task/*/stat every 10 ms while the daemon runs (the
last reading before it ends: up to 10 ms short), the whole process's and its context switches
from `wait4`. The daemon runs as in `process.py` (stdin source, state on disk, the rule cache
warm in its state directory), from the first `rulesd` on PYTHONPATH, else this checkout's
(`tree.py`; the header says which). The main thread's growth beside the sender is what delivering costs the reader; see
"what the reader does beside the sender" in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import generate
from process import CACHE, loopback_server, measure, replay_command, write_config
from tree import RULESD, ran

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Threads:
    """What one daemon cost, in CPU seconds and context switches."""

    main: float
    others: list[float]  # the other threads, most first (the sender's is the first)
    whole: float
    voluntary: int
    involuntary: int


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each live thread of process `pid`."""
    seen = {}
    with os.scandir(f"/proc/{pid}/task") as tasks:
        for task in tasks:
            try:
                with open(f"{task.path}/stat", "rb") as fh:
                    # The command name may hold spaces and parentheses: split after its last ')'.
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            seen[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    return seen


def run_threads(rules: Path, events: Path, time_field: str, url: str, dry_run: bool) -> Threads:
    """One `rulesd run` over `events`, its threads' CPU polled until it ends."""
    with tempfile.TemporaryDirectory() as tmp, open(events, "rb") as inp:
        config = write_config(Path(tmp), rules, url, time_field)
        shutil.copytree(CACHE, Path(tmp) / "state" / "cache")
        (Path(tmp) / "state").chmod(0o700)
        command = [*RULESD, "run", "--config", str(config), *(["--dry-run"] if dry_run else [])]
        proc = subprocess.Popen(command, stdin=inp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        last: dict[int, float] = {}
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            with contextlib.suppress(OSError):  # ended between the two looks
                last.update(thread_cpu(proc.pid))
            time.sleep(0.01)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}")
    others = sorted((cpu for tid, cpu in last.items() if tid != proc.pid), reverse=True)
    return Threads(
        last.get(proc.pid, 0.0),
        others,
        usage.ru_utime + usage.ru_stime,
        usage.ru_nvcsw,
        usage.ru_nivcsw,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="ops")
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=4, help="pairs of runs, alternated")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5,000 events, one pair")
    args = parser.parse_args()
    count, seed, out = 5_000 if args.quick else 200_000, generate.DEFAULT_SEED, generate.DATA_DIR
    generate.write_all(out, count, seed, args.shape, (args.rules,))
    events = generate.events_path(out, count, seed, args.shape)
    rules = generate.rules_path(out, args.rules, seed, args.shape)
    time_field = generate.shape_module(args.shape).TIME_FIELD
    os.environ["RULESD_CACHE_DIR"] = str(CACHE)
    empty = out / "empty.jsonl"
    empty.write_bytes(b"")
    measure(replay_command(rules, empty, time_field))  # fills the rule cache
    print(
        f"shape {args.shape}, {args.rules} rules, {count:,} events; CPU seconds per thread "
        f"(main, then the others, most first), whole process, voluntary / involuntary switches; {ran()}"
    )
    with loopback_server() as url:
        for _ in range(1 if args.quick else args.repeat):  # alternated, so that a busy spell slows both alike
            for dry_run in (False, True):
                t = run_threads(rules, events, time_field, url, dry_run)
                others = " ".join(f"{cpu:.2f}" for cpu in t.others if cpu > 0) or "-"
                print(
                    f"{'dry' if dry_run else 'run':>3}: main {t.main:.2f}, others {others}, whole {t.whole:.2f}, "
                    f"switches {t.voluntary} / {t.involuntary}, load {os.getloadavg()[0]:.2f}"
                )


if __name__ == "__main__":
    main()
