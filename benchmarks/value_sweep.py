"""What a sweep of new_value groups costs when few of their values expire.

    python benchmarks/value_sweep.py [--groups N] [--values N] [--repeat N]

A new_value rule with `forget: 1d` whose groups (`--groups`, hosts) each know `--values`
values (user agents), seen one after another, each group's in turn, so that the values of
every group span the whole day; then `Engine.sweep` at a clock where none, one value per
group, or a tenth of them have gone past `forget`. CPU time per sweep, the best of `--repeat`
(each on a fresh copy of the state, since a sweep forgets what it expires), and the values
forgotten, which must be the same for both versions of the code.

Run it with the tree to measure first on PYTHONPATH to compare two versions side by side.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # (after PYTHONPATH: the tree to compare)

import rulesd
from rulesd.engine import Engine, Limits
from rulesd.engine.state import NEW_VALUE, EngineState, seen_values
from rulesd.rules.loader import load_ruleset_text

RULE = "name: new-agent\nmatch: {event: login}\nnew_value: {fields: [agent], group_by: [host], forget: 1d}\n"
T0 = 1_800_000_000.0
DAY = 86_400.0


def _engine(groups: int, values: int) -> Engine:
    engine = Engine(load_ruleset_text(RULE), time_field="t", saved=False, limits=Limits(values_per_group=values))
    step = DAY / (groups * values)
    n = 0
    for v in range(values):
        for g in range(groups):
            at = T0 + n * step
            engine.evaluate({"event": "login", "host": f"h{g}", "agent": f"Mozilla/5.0 agent {v:06d}", "t": at}, at)
            n += 1
    return engine


def again(engine: Engine, args: argparse.Namespace) -> float:
    """CPU seconds per event of a value its group knows (the values seen longest ago, in turn),
    seen again later than every value the group knows, on a copy of the state."""
    saved = copy.deepcopy(engine.state.tables)
    at = T0 + DAY
    events = [
        {
            "event": "login",
            "host": f"h{g}",
            "agent": f"Mozilla/5.0 agent {v:06d}",
            "t": at + 0.001 * (v * args.groups + g),
        }
        for v in range(100)
        for g in range(args.groups)
    ]
    started = time.process_time()
    for event in events:
        engine.evaluate(event, at)
    seconds = (time.process_time() - started) / len(events)
    engine.state.tables = saved
    return seconds


def restored(engine: Engine, *, reverse: bool) -> float:
    """CPU seconds of the first sweep of an engine started from `engine`'s state, which looks at
    the order of every group's values once (`reverse`: each group's values in the reverse
    order, to be sorted, as no state saved holds them)."""
    state = EngineState.from_json(engine.state.to_json())
    if reverse:
        for groups in state.tables[NEW_VALUE].values():
            for key, values in groups.items():
                groups[key] = dict(reversed(values.items()))
    started = Engine(load_ruleset_text(RULE), state, time_field="t", saved=False, limits=engine.limits)
    now = time.process_time()
    started.sweep(T0)
    return time.process_time() - now


def _known(engine: Engine) -> int:
    return sum(len(seen_values(v)) for v in engine.state.tables[NEW_VALUE]["new-agent"].values())


def sweep(engine: Engine, expired: float, repeat: int) -> tuple[float, int]:
    """The best CPU seconds of a sweep at which the `expired` share of the values is past
    `forget`, and how many values it forgot."""
    saved = copy.deepcopy(engine.state.tables)
    now = T0 + DAY + expired * DAY
    best, gone = float("inf"), 0
    for _ in range(repeat):
        engine.state.tables = copy.deepcopy(saved)
        # An event of the rule at `now`: a rule's groups are swept by its latest event's time.
        engine.evaluate({"event": "login", "host": "h-now", "agent": "a", "t": now}, now)
        before = _known(engine)
        started = time.process_time()
        engine.sweep(now)
        best = min(best, time.process_time() - started)
        gone = before - _known(engine)
    engine.state.tables = saved
    return best, gone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--values", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; {args.groups} groups x {args.values} values; {rulesd.__file__}")
    started = time.process_time()
    engine = _engine(args.groups, args.values)
    each = (time.process_time() - started) / (args.groups * args.values) * 1e6
    print(f"{args.groups * args.values} events, each a value new to its group: {each:.2f} µs CPU each")
    print(f"{args.groups * 100} events, each a value its group knows: {again(engine, args) * 1e6:.2f} µs CPU each")
    for order, label in ((False, "as saved"), (True, "each group's values in reverse order")):
        print(f"first sweep after a restore, {label}: {restored(engine, reverse=order) * 1000:9.2f} ms CPU")
    for share, label in ((0.0, "none"), (1 / args.values, "one per group"), (0.1, "a tenth")):
        seconds, gone = sweep(engine, share - 0.5 / (args.groups * args.values) if share else -1.0, args.repeat)
        print(f"sweep, {label} expiring: {seconds * 1000:9.2f} ms CPU, {gone} values forgotten")


if __name__ == "__main__":
    main()
