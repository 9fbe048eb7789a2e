"""Memory per group of engine state: bytes per live group for each rule kind, and the peak RSS
of a whole `rulesd replay` holding 100,000 live threshold groups beside 1,000 rules.

    python benchmarks/group_memory.py [--groups N] [--rules N] [--no-process] [--quick]

- whole process (first, while this process is small: a child's peak RSS counts what it was
  as a fork of this one): `rulesd replay` of the ops shape's rules (999) plus one threshold
  rule grouped by `request_id`, a different value in each event, so that every event leaves a
  live group; against the same process whose extra rule keeps one group (no `group_by`). The
  difference over the groups is what a live group costs in RSS. Each command runs once first,
  unmeasured, to fill the rule cache (measured is an unchanged rule set's run).
- per kind (in process, `tracemalloc`): one rule of that kind grouped by one field whose value
  differs in every event (a second field too for `threshold, 2 fields`), fed one event per
  group; the memory traced after, less before, over the groups. It counts all the engine keeps
  for a group: its key, its state, its slot in the rule's table and its timer, if any
  (absence, an absent step, resolve). The state is not saved here (as in `rulesd replay`), so
  no record of groups changed since the last save is counted. The engine's cache of recent key
  texts (`GroupKeys.TEXTS_MAX`, emptied when full) holds about `groups mod TEXTS_MAX` entries
  at the end: 1,696 of 100,000, under 2 bytes per group.

Memory does not depend on the machine's load: one run is enough. `--quick` (CI, ~10 s):
16,385 groups and 100 rules; at that size the RSS difference is within the allocator's noise.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate
from process import measure, replay_command
from tree import ran

from rulesd.engine import Engine, GroupKeys
from rulesd.rules.loader import load_ruleset_text

T0 = 1_700_000_000.0

# One rule per kind; `user` differs in every event, so each event makes a group of its own.
KINDS: dict[str, str] = {
    "threshold": "threshold: {count: 5, window: 1d, group_by: [user]}",
    "threshold, 2 fields": "threshold: {count: 5, window: 1d, group_by: [user, host]}",
    "throttle": "threshold: {count: 1, window: 1d, group_by: [user]}\nthrottle: 1d",
    "resolve": "threshold: {count: 1, window: 1d, group_by: [user]}\nresolve: {after: 1d}",
    "distinct": "distinct: {field: host, count: 5, window: 1d, group_by: [user]}",
    "sequence": """sequence:
  group_by: [user]
  steps:
    - match: {event: login}
      count: 2
    - match: {event: logout}""",
    "sequence, absent step": """sequence:
  group_by: [user]
  steps:
    - match: {event: login}
    - absent: {match: {event: logout}, for: 1d}""",
    "absence": "absence: {window: 1d, group_by: [user]}",
    "new_value": "new_value: {fields: [host], group_by: [user]}",
}


def rule_text(kind: str) -> str:
    """The rule of `kind`, as YAML (a sequence has its conditions in its steps)."""
    spec = KINDS[kind]
    head = "name: r\n" if spec.startswith("sequence") else "name: r\nmatch: {event: login}\n"
    return head + spec + "\n"


def events(count: int) -> Iterator[tuple[dict[str, Any], float]]:
    """One login per user, half a second apart (all within the rules' day), from ten hosts."""
    for i in range(count):
        time = T0 + i / 2
        yield {"event": "login", "user": f"user-{i:08d}", "host": f"host-{i % 10}", "t": time}, time


def bytes_per_group(kind: str, count: int) -> float:
    """What the engine holds per group of a rule of `kind`, `count` groups live."""
    engine = Engine(load_ruleset_text(rule_text(kind), "rules.yaml"), time_field="t", saved=False)
    evaluate = engine.evaluate
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for event, arrival in events(count):
        evaluate(event, arrival)
        engine.out.clear()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    groups = engine.state.group_count()
    assert groups >= count, f"{kind}: {groups} groups for {count} events"
    return (after - before) / groups


def rss_per_group(count: int, rules: int, seed: int) -> tuple[float, float]:
    """Peak RSS (MB) of `rulesd replay` with `rules` rules whose last keeps a live threshold
    group per event, and the same with that rule keeping one group."""
    module = generate.shape_module("ops")
    peaks = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "RULESD_CACHE_DIR": str(root / "cache")}
        path = root / "events.jsonl"
        generate.write_events(path, _with_ids(module.generate_events(count, seed)))
        for group_by in (["request_id"], []):
            wide: dict[str, Any] = {
                "name": "one-group-per-event",
                "match": {"request_id": {"exists": True}},
                "threshold": {"count": 1_000_000, "window": "1d", "group_by": group_by},
            }
            rule_file = root / "rules.yaml"
            generate.write_rules(rule_file, [*module.generate_rules(rules - 1, seed), wide], seed)
            command = replay_command(rule_file, path, module.TIME_FIELD)
            measure(command, env=env)  # fills the rule cache: measured is an unchanged rule set's run
            peaks.append(measure(command, env=env).max_rss_mb)
    return peaks[0], peaks[1]


def _with_ids(source: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for i, event in enumerate(source):
        event["request_id"] = f"r{i:08d}"  # unique
        yield event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=100_000, help="live groups per measurement")
    parser.add_argument("--rules", type=int, default=1000, help="rules in the whole-process measurement")
    parser.add_argument("--seed", type=int, default=generate.DEFAULT_SEED)
    parser.add_argument("--no-process", action="store_true", help="skip the whole-process measurement")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 16,385 groups, 100 rules")
    args = parser.parse_args()
    if args.quick:
        args.groups, args.rules = 2 * GroupKeys.TEXTS_MAX + 1, 100
    print(f"load average {os.getloadavg()[0]:.2f} (memory does not depend on it); {ran()}")
    if not args.no_process:  # first, while this process is small (see the module's docstring)
        live, one = rss_per_group(args.groups, args.rules, args.seed)
        print(
            f"rulesd replay, ops shape, {args.rules:,} rules, {args.groups:,} live threshold groups: "
            f"peak RSS {live:.1f} MB ({one:.1f} MB with one group: "
            f"{(live - one) * 1024 * 1024 / args.groups:.0f} bytes per group)"
        )
    print(f"bytes per live group ({args.groups:,} groups, tracemalloc):")
    for kind in KINDS:
        print(f"  {kind:<22} {bytes_per_group(kind, args.groups):>7.1f}")


if __name__ == "__main__":
    main()
