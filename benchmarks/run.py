"""Measure replay throughput in process against the floor of reading and parsing the events.

    python benchmarks/run.py [--shape classic,ops,sigma] [--repeat N] [--events N] [--rules 10,100,1000]
                             [--cpu] [--cli] [--quick]

The floor is the least any replay has to do: read the events file in binary and
`orjson.loads` each line. It is measured line by line and in blocks of lines (as
replay reads), and the faster of the two is the floor. `replay` runs `rulesd.replay.replay` (the code path of
`rulesd replay`) over the same file with the alerts discarded. Each figure is
the best of N repetitions, because other work on the machine only ever slows a
run down. `--cli` also times the real `rulesd replay` command once per rule set
as a sanity check (it includes interpreter start-up and rule loading).
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate
from tree import ran

from rulesd.alerting.payload import AlertSettings
from rulesd.replay import ReplaySummary, replay
from rulesd.replay_blocks import BLOCK_BYTES
from rulesd.rules.loader import load_ruleset

FLOORS = 2  # the first runs measure the floor, two ways


@dataclass(frozen=True, slots=True)
class Result:
    """One measured configuration: its best time and what the replay saw."""

    label: str
    seconds: float
    events: int
    alerts: int | None = None

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds


def best_of(
    repeat: int, run: Callable[[], int | None], clock: Callable[[], float] = time.perf_counter
) -> tuple[float, int | None]:
    """The shortest time of `repeat` runs on `clock`, and what the last run returned."""
    best, value = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        started = clock()
        value = run()
        best = min(best, clock() - started)
    return best, value


def floor(path: Path) -> int:
    """Read and parse every line, nothing else; returns the number of lines."""
    loads = orjson.loads
    n = 0
    with path.open("rb") as f:
        for line in f:
            loads(line)
            n += 1
    return n


def floor_in_blocks(path: Path) -> int:
    """The floor read and parsed in blocks of lines, as replay does; returns the number of lines."""
    loads = orjson.loads
    n = 0
    with path.open("rb") as f:
        while block := f.readlines(BLOCK_BYTES):
            n += len(list(map(loads, block)))
    return n


def replay_file(path: Path, ruleset: object, time_field: str) -> int:
    """Replay the file as `rulesd replay --time-field F` does; returns the alert count."""
    with path.open("rb") as f:
        for item in replay(
            ruleset,
            f,
            name=str(path),
            settings=AlertSettings(),  # type: ignore[arg-type]
            time_field=time_field,
            start=time.time(),  # as the command: event times well ahead of their arrival are not believed
        ):
            if isinstance(item, ReplaySummary):
                return item.alerts
    raise AssertionError("replay yielded no summary")


def cli_seconds(events: Path, rules: Path, time_field: str) -> float:
    """Wall time of the real command, output discarded."""
    exe = Path(sys.executable).with_name("rulesd")
    command = [str(exe), "replay", "--rules", str(rules), "--time-field", time_field, str(events)]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="classic,ops,sigma", help="comma-separated shapes (see generate.py)")
    parser.add_argument("--repeat", type=int, default=5, help="best of N (default 5)")
    parser.add_argument("--events", type=int, default=generate.DEFAULT_EVENTS)
    parser.add_argument("--seed", type=int, default=generate.DEFAULT_SEED)
    parser.add_argument("--rules", default=",".join(map(str, generate.RULE_COUNTS)))
    parser.add_argument("--cli", action="store_true", help="also time the real command once")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20,000 events, best of 1")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="time this process's CPU time instead of wall time (steadier on a "
        "shared machine; the process is single-threaded)",
    )
    args = parser.parse_args()
    if args.quick:
        args.events, args.repeat = 20_000, 1
    counts = tuple(int(c) for c in args.rules.split(","))
    for shape in args.shape.split(","):
        measure_shape(shape, counts, args)


def measure_shape(shape: str, counts: tuple[int, ...], args: argparse.Namespace) -> None:
    """Measure and print the floor and the replays of one shape's rule sets."""
    out = generate.DATA_DIR
    generate.write_all(out, args.events, args.seed, shape, counts)
    events = generate.events_path(out, args.events, args.seed, shape)
    time_field = generate.shape_module(shape).TIME_FIELD

    rulesets = {c: load_ruleset([generate.rules_path(out, c, args.seed, shape)]) for c in counts}
    runs: list[tuple[str, Callable[[], int]]] = [
        ("floor (read + orjson.loads)", lambda: floor(events)),
        (f"floor, in {BLOCK_BYTES // 1024} KiB blocks", lambda: floor_in_blocks(events)),
    ]
    runs += [(f"replay, {c} rules", lambda rs=rs: replay_file(events, rs, time_field)) for c, rs in rulesets.items()]
    # Rounds interleave the measurements, so that a busy spell on the machine slows
    # the floor and the replays alike instead of skewing their ratio.
    best = [float("inf")] * len(runs)
    returned: list[int] = [0] * len(runs)
    for _ in range(args.repeat):
        for i, (_, run) in enumerate(runs):
            seconds, value = best_of(1, run, time.process_time if args.cpu else time.perf_counter)
            best[i] = min(best[i], seconds)
            returned[i] = value or 0
    n = returned[0]
    results = [Result(label, best[i], n) for i, (label, _) in enumerate(runs[:FLOORS])]
    results += [Result(label, best[i], n, returned[i]) for i, (label, _) in enumerate(runs) if i >= FLOORS]
    print_table(shape, results, args)
    if args.cli:
        for count in counts:
            took = cli_seconds(events, generate.rules_path(out, count, args.seed, shape), time_field)
            print(
                f"rulesd replay CLI, {count} rules: {took:.2f} s wall "
                f"({n / took:,.0f} events/s including start-up and rule loading)"
            )


def print_table(shape: str, results: list[Result], args: argparse.Namespace) -> None:
    """A small fixed-width table: rate and ratio to the floor (the faster way of parsing)."""
    base = max(r.rate for r in results[:FLOORS])
    clock = "CPU time" if args.cpu else "wall time"
    print(
        f"shape {shape}: {results[0].events:,} events, best of {args.repeat} ({clock}), Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {ran()}"
    )
    print(f"{'measurement':<30} {'events/s':>12} {'x floor':>8} {'best s':>8} {'alerts':>7}")
    for r in results:
        alerts = "" if r.alerts is None else str(r.alerts)
        print(f"{r.label:<30} {r.rate:>12,.0f} {r.rate / base:>8.3f} {r.seconds:>8.3f} {alerts:>7}")


if __name__ == "__main__":
    main()
