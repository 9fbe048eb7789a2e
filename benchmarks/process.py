"""Whole-process measurements: the real `rulesd replay` and `rulesd run` commands, start-up
included, against the whole-process floor (`floor.py`) measured in the same run.

    python benchmarks/process.py [--shape classic,ops,sigma] [--rules 10,100,1000] [--events N]
                                 [--repeat N] [--no-run] [--rss] [--quick]

For each shape and rule count, in CPU time (user + system) of the child process, best of N:

- `replay`: `rulesd replay --rules R --time-field F EVENTS` (alerts written to /dev/null);
- `run`: `rulesd run` with a stdin source and a state directory on disk, delivering to a
  loopback server standing in for OpsGenie (`delivery.py --serve`, a process of its own,
  so that neither its CPU time nor the memory of what it received is counted);
  `dry`: the same with `--dry-run` (alerts printed, an in-memory state database), which
  leaves out what delivering each alert costs;
- `start-up`: `rulesd replay` over an empty file, and `rulesd check R`, so the time that
  does not depend on the events (interpreter, imports, rule loading, index) shows apart.

Every command runs with a rule cache that a first, unmeasured run filled (`RULESD_CACHE_DIR`,
and a copy in each fresh state directory), as an unchanged rule set runs; `startup.py`
shows what loading costs without it.
- `floor`: `floor.py EVENTS` (interpreter start-up, read, `orjson.loads`), run once before
  each replay run, the fastest of the whole table dividing every row (so that a floor taken
  at a busy moment cannot flatter a table); and over an empty file for its own start-up.

The commands run the first `rulesd` on PYTHONPATH (a tree to compare), else this checkout's,
wherever the script is started (`tree.py`); the first line says which.

A ratio is floor CPU / command CPU over the same events ("x floor"; 1.0 would be as fast
as parsing alone). Also printed without start-up on either side (`steady`). `--rss` adds
peak RSS of `rulesd replay` and `rulesd run` with the 1,000-rule set of the shape plus one
rule that keeps a live threshold group per event (`request_id`, 100,000 events).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate
from tree import RULESD, ran

HERE = Path(__file__).resolve().parent
CACHE = Path(tempfile.mkdtemp(prefix="rulesd-bench-cache-"))  # a private rule cache for this run


@dataclass(frozen=True, slots=True)
class Usage:
    """What one child process cost."""

    cpu: float  # user + system seconds
    wall: float
    max_rss_mb: float


def measure(
    command: list[str],
    stdin: Path | None = None,
    stdout: Path | None = None,
    env: dict[str, str] | None = None,
    exits: tuple[int, ...] = (0,),
) -> Usage:
    """Run `command` to completion (stdout discarded, or written to `stdout`) and return its
    own resource use; RuntimeError if its exit status is not one of `exits`."""
    with open(stdin or os.devnull, "rb") as inp, open(stdout or os.devnull, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdin=inp, stdout=out, stderr=subprocess.PIPE, env=env)
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in exits:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n{err.decode()[-3000:]}")
    return Usage(usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024)


def best(repeat: int, command: list[str], **kwargs: Any) -> Usage:
    """The fastest of `repeat` runs of `command` (see `fastest`)."""
    return fastest([measure(command, **kwargs) for _ in range(repeat)])


def fastest(runs: list[Usage]) -> Usage:
    """The least CPU time and wall time of `runs`, and the largest peak RSS seen."""
    return Usage(min(u.cpu for u in runs), min(u.wall for u in runs), max(u.max_rss_mb for u in runs))


@contextlib.contextmanager
def loopback_server() -> Iterator[str]:
    """The URL of a server standing in for OpsGenie, in a process of its own (`delivery.py
    --serve`): held in this one, what it received would swell this process, and with it the
    peak RSS its children report (a child counts the pages it shared with it before `exec`)."""
    server = subprocess.Popen([sys.executable, str(HERE / "delivery.py"), "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        if not url:
            raise RuntimeError(f"the loopback server did not start (exit status {server.wait()})")
        yield url
    finally:
        server.kill()
        server.wait()


def write_config(root: Path, rules: Path, url: str, time_field: str) -> Path:
    """A daemon config: stdin source, state on disk, alerts to the loopback server."""
    config = {
        "rules": [str(rules)],
        "source": {"type": "stdin"},
        "time_field": time_field,
        # Named from the config's directory, so that the config is the same bytes at every run
        # and a start reads it from the cache, as a restarted daemon's unchanged config is read.
        "state_dir": "state",
        "opsgenie": {"api_key": "benchmark-key", "alert_url": f"{url}/v2/alerts"},
    }
    path = root / "rulesd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def replay_command(rules: Path, events: Path, time_field: str) -> list[str]:
    """The `rulesd replay` command line."""
    return [*RULESD, "replay", "--rules", str(rules), "--time-field", time_field, str(events)]


def run_usage(repeat: int, rules: Path, events: Path, time_field: str, url: str, dry_run: bool = False) -> Usage:
    """`rulesd run` with stdin, a fresh state directory each time holding a warm rule cache."""
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            config = write_config(Path(tmp), rules, url, time_field)
            if CACHE.exists():
                shutil.copytree(CACHE, Path(tmp) / "state" / "cache")
                (Path(tmp) / "state").chmod(0o700)
            command = [*RULESD, "run", "--config", str(config), *(["--dry-run"] if dry_run else [])]
            runs.append(measure(command, stdin=events))
    return fastest(runs)


def shape_table(shape: str, counts: list[int], args: argparse.Namespace, url: str) -> None:
    """Measure one shape and print its table.

    The floor is measured beside each replay (one floor run before each replay run) and the
    fastest floor of the whole table divides every row: a floor taken once, at a busy moment,
    would flatter every ratio of the table.
    """
    out = generate.DATA_DIR
    generate.write_all(out, args.events, args.seed, shape, tuple(counts))
    events = generate.events_path(out, args.events, args.seed, shape)
    time_field = generate.shape_module(shape).TIME_FIELD
    empty = out / "empty.jsonl"
    empty.write_bytes(b"")
    floor_cmd = [sys.executable, str(HERE / "floor.py")]
    floors: list[Usage] = []
    floor_start = best(args.repeat, [*floor_cmd, str(empty)])
    rows = []
    for count in counts:
        rules = generate.rules_path(out, count, args.seed, shape)
        measure(replay_command(rules, events, time_field))  # fills the rule cache
        replays = []
        for _ in range(args.repeat):
            floors.append(measure([*floor_cmd, str(events)]))
            replays.append(measure(replay_command(rules, events, time_field)))
        replay = fastest(replays)
        # (copied once a replay of the events filled it: the databases of joined texts, which
        # a replay compiles after 64 blocks, are in it too, as a restarted daemon finds them)
        shutil.rmtree(CACHE, ignore_errors=True)
        shutil.copytree(Path(os.environ["RULESD_CACHE_DIR"]), CACHE)
        start = best(args.repeat, replay_command(rules, empty, time_field))
        check = best(args.repeat, [*RULESD, "check", str(rules)])
        run = dry = None
        if not args.no_run:
            run = run_usage(args.repeat, rules, events, time_field, url)
            dry = run_usage(args.repeat, rules, events, time_field, url, dry_run=True)
        rows.append((count, replay, start, check, run, dry, _alerts(rules, events, time_field)))
    floor = fastest(floors).cpu
    print(
        f"shape {shape}: {args.events:,} events ({events.stat().st_size / args.events:.0f} bytes each), "
        f"best of {args.repeat}, CPU time of the child, load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"floor: {floor:.3f} s ({args.events / floor:,.0f} events/s; best of {len(floors)}, "
        f"slowest {max(u.cpu for u in floors):.3f} s), its start-up {floor_start.cpu:.3f} s"
    )
    print(
        f"{'rules':>5} {'replay x floor':>14} {'steady':>7} {'run x floor':>11} {'dry x floor':>11} "
        f"{'start-up replay':>15} {'check':>6} {'(wall)':>7} {'RSS MB':>7} {'alerts':>7}"
    )
    for count, replay, start, check, run, dry, alerts in rows:
        steady = (floor - floor_start.cpu) / (replay.cpu - start.cpu)
        run_ratio = f"{floor / run.cpu:.3f}" if run else "-"
        dry_ratio = f"{floor / dry.cpu:.3f}" if dry else "-"
        print(
            f"{count:>5} {floor / replay.cpu:>14.3f} {steady:>7.3f} {run_ratio:>11} {dry_ratio:>11} "
            f"{start.cpu:>14.3f}s {check.cpu:>5.3f}s {start.wall:>6.3f}s {replay.max_rss_mb:>7.1f} "
            f"{alerts:>7}"
        )


def _alerts(rules: Path, events: Path, time_field: str) -> int:
    """How many alerts the replay prints (one line each in JSON), counted from a file: held in
    this process, the output would swell it, and with it the peak RSS its next children report
    (see `loopback_server`)."""
    with tempfile.TemporaryFile() as out:
        subprocess.run(
            [*replay_command(rules, events, time_field), "--format", "json"],
            stdout=out,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        out.seek(0)
        return sum(1 for _ in out)


def rss_check(shape: str, args: argparse.Namespace, url: str) -> None:
    """Peak RSS with 1,000 rules and a live threshold group for every one of 100,000 events."""
    module = generate.shape_module(shape)
    count = 100_000 if not args.quick else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        events = root / "events.jsonl"
        generate.write_events(events, _with_ids(module.generate_events(count, args.seed)))
        rules = root / "rules.yaml"
        wide = {
            "name": "one-group-per-event",
            "match": {"request_id": {"exists": True}},
            "threshold": {"count": 1_000_000, "window": "1d", "group_by": ["request_id"]},
        }
        generate.write_rules(rules, [*module.generate_rules(999, args.seed), wide], args.seed)
        replay = measure(replay_command(rules, events, module.TIME_FIELD))
        run = run_usage(1, rules, events, module.TIME_FIELD, url)
    print(
        f"peak RSS, {shape}, 1,000 rules, {count:,} live threshold groups: "
        f"replay {replay.max_rss_mb:.1f} MB, run {run.max_rss_mb:.1f} MB"
    )


def _with_ids(events: Any) -> Any:
    for i, event in enumerate(events):
        event["request_id"] = f"r{i:08d}"  # unique, whatever the shape
        yield event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="classic,ops,sigma")
    parser.add_argument("--rules", default="10,100,1000")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=generate.DEFAULT_SEED)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-run", action="store_true", help="skip `rulesd run` (replay and start-up only)")
    parser.add_argument("--rss", action="store_true", help="also measure peak RSS with 100,000 live groups")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5,000 events, best of 1, 10 and 100 rules")
    args = parser.parse_args()
    if args.quick:
        args.events, args.repeat, args.rules = 5_000, 1, "10,100"
    counts = [int(c) for c in args.rules.split(",")]
    os.environ["RULESD_CACHE_DIR"] = tempfile.mkdtemp(prefix="rulesd-bench-user-cache-")
    print(f"rulesd: {ran()}")
    if args.rss:  # first, as the figures in benchmarks/README.md were taken
        with loopback_server() as url:
            rss_check("ops", args, url)
    with loopback_server() as url:
        for shape in args.shape.split(","):
            shape_table(shape, counts, args, url)


if __name__ == "__main__":
    main()
