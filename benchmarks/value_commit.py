"""What a new_value group with many values costs to commit, and a burst of new values in one group.

    python benchmarks/value_commit.py [--burst N] [--every N] [--repeat N]

- per commit: one new value added to a group that knows N values (100 to 100,000), then the
  engine's delta (the group's row as JSON: every value, the whole dict each time) written by
  `SqliteState.commit` to a database on disk, as the daemon commits a batch; CPU time per
  commit (the best of `--repeat`), with the row's size.
- burst: `--burst` events of one group, each with a value never seen (a user agent an attacker
  chooses), committed every `--every` events (the daemon's batches), through `Engine.evaluate`
  and `SqliteState.commit`: CPU time in all and bytes written, under the default
  `limits.values_per_group` and, if this rulesd has none (before it), without one.

Run it with the tree to measure first on PYTHONPATH to compare two versions side by side.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# Last, so that a tree put on PYTHONPATH to be measured comes first (it is said which ran).
sys.path.append(str(Path(__file__).resolve().parent.parent))

import rulesd
from rulesd.engine import Engine, Limits
from rulesd.rules.loader import load_ruleset_text
from rulesd.state.sqlite import SqliteState

RULE = "name: new-agent\nmatch: {event: login}\nnew_value: {fields: [agent], group_by: [host]}\n"
T0 = 1_800_000_000.0


def _engine() -> Engine:
    return Engine(load_ruleset_text(RULE), time_field="t", limits=Limits())


def _event(i: int) -> dict[str, object]:
    return {"event": "login", "host": "h1", "agent": f"Mozilla/5.0 (X11; Linux x86_64) probe/{i:08d}", "t": T0 + i}


def per_commit(store: SqliteState, known: int, repeat: int) -> tuple[float, int]:
    """CPU seconds of the best commit of one more value into a group of `known` values, and
    the bytes of the row it writes."""
    engine = _engine()
    for i in range(known):
        engine.evaluate(_event(i), T0 + i)
    store.commit(positions={}, payloads=[], now=T0, engine=engine.state.delta())
    best, size = float("inf"), 0
    for r in range(repeat):
        started = time.process_time()
        engine.evaluate(_event(known + r), T0 + known + r)
        delta = engine.state.delta()
        store.commit(positions={}, payloads=[], now=T0, engine=delta)
        best = min(best, time.process_time() - started)
        size = max(len(row[3]) for row in delta.upserts)
    return best, size


def burst(store: SqliteState, count: int, every: int) -> tuple[float, int]:
    """CPU seconds and bytes written for `count` new values in one group, committed every `every`."""
    engine = _engine()
    written = 0
    started = time.process_time()
    for i in range(count):
        engine.evaluate(_event(i), T0 + i)
        if (i + 1) % every == 0:
            delta = engine.state.delta()
            written += sum(len(row[3]) for row in delta.upserts)
            store.commit(positions={}, payloads=[], now=T0, engine=delta)
    return time.process_time() - started, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--burst", type=int, default=50_000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    limit = getattr(Limits(), "values_per_group", "none (unbounded)")  # (none: a rulesd before the limit)
    print(f"values_per_group: {limit}, load {os.getloadavg()[0]:.2f}; {rulesd.__file__}")
    with tempfile.TemporaryDirectory() as tmp:
        for known in (100, 1_000, 10_000, 100_000):
            store = SqliteState(os.path.join(tmp, f"per-{known}.db"))
            seconds, size = per_commit(store, known, args.repeat)
            print(f"commit of a group of {known:>7,} values: {seconds * 1e3:8.3f} ms CPU, row {size:>10,} bytes")
            store.close()
        store = SqliteState(os.path.join(tmp, "burst.db"))
        seconds, written = burst(store, args.burst, args.every)
        what = f"burst of {args.burst:,} new values, a commit every {args.every}"
        print(f"{what}: {seconds:.2f} s CPU, {written:,} bytes")


if __name__ == "__main__":
    main()
