"""What rules with nothing for the index to look up cost, against the same rule set without
them.

    python benchmarks/unindexed.py [--kind negated|screened] [--rules 1000] [--share 0.02]
                                   [--events N] [--repeat N] [--quick]

An index finds a rule by what an event must hold (`service: api`, a pattern, a lower bound).
Some rules give it nothing of that kind, and unless the index has another way to skip them,
they are sent to the engine with every event: one such rule makes every event read its time
and run the engine's step. Two families:

- `negated`: the only test is a negated equality (`not: {level: [debug, info]}`, a `not` of
  an `any` of one-field equalities, `not_in`, an `any` with such a branch); the index files
  them under the texts they exclude.
- `screened`: the only tests are an upper bound, `exists: true`, a `cidr`, or an `any` with
  such a branch; the index looks up upper bounds like lower ones and screens the others by
  their own predicate, behind a test that a field they need is present.

This replays the ops events (`shape_ops.py`) whole process with the ops rule set of RULES
rules, and with the same set in which SHARE of the rules (seeded) are such rules, each
throttled or counted per host as a production rule would be, and prints both × the
whole-process floor (`floor.py`) and what the replaced rules cost.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate
import shape_ops
from process import HERE, best, replay_command

# What such rules leave out: the noisy levels, as a rule that pages on anything else does.
QUIET = (["debug", "info"], ["debug", "info", "warning"])


def negated_match(i: int, rng: random.Random) -> dict[str, Any]:
    """A condition whose only test is a negated equality, of one of four kinds."""
    kind = i % 4
    if kind == 0:
        match: dict[str, Any] = {"not": {"level": rng.choice(QUIET)}}
    elif kind == 1:
        match = {"not": {"any": [{"level": "debug"}, {"level": "info"}, {"env": rng.choice(("staging", "dev"))}]}}
    elif kind == 2:
        match = {"level": {"not_in": rng.choice(QUIET)}, "env": {"not_equals": "dev"}}
    else:
        service, region = rng.choice(shape_ops.SERVICES), rng.choice(shape_ops.REGIONS)
        match = {"any": [{"not": {"level": rng.choice(QUIET)}}, {"service": service, "region": region}]}
    return match


def screened_match(i: int, rng: random.Random) -> dict[str, Any]:
    """A condition with no equality, pattern or lower bound to look up, of one of five kinds."""
    kind = i % 5
    if kind == 0:  # suspiciously fast answers
        match: dict[str, Any] = {"http.latency_ms": {"lt": rng.choice((1, 2, 5))}}
    elif kind == 1:  # a field only some events carry
        match = {"error.code": {"exists": True}}
    elif kind == 2:  # requests from inside the network
        match = {"client.ip": {"cidr": ["10.0.0.0/8", "192.168.0.0/16"]}}
    elif kind == 3:
        match = {"http.status": {"lt": 200, "not_equals": 101}}
    else:
        service = rng.choice(shape_ops.SERVICES)
        match = {"any": [{"http.latency_ms": {"lte": 1}}, {"service": service, "level": "critical"}]}
    return match


KINDS = {"negated": negated_match, "screened": screened_match}


def production_rule(kind: str, i: int, rng: random.Random) -> dict[str, Any]:
    """A rule of `kind`, throttled, and every other one counted per host."""
    rule: dict[str, Any] = {"name": f"{kind}-{i:04d}", "match": KINDS[kind](i, rng), "throttle": "10m"}
    if i % 2:
        rule["threshold"] = {"count": rng.randrange(5, 20), "window": "1m", "group_by": ["host"]}
    return rule


def with_replaced(rules: list[dict[str, Any]], kind: str, share: float, seed: int) -> list[dict[str, Any]]:
    """`rules` with `share` of them, chosen by `seed`, replaced by rules of `kind`."""
    rng = random.Random(seed)
    out = list(rules)
    for n, i in enumerate(sorted(rng.sample(range(len(out)), max(1, round(len(out) * share))))):
        out[i] = production_rule(kind, n, rng)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=sorted(KINDS), action="append", help="default: both, one after the other")
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--share", type=float, default=0.02, help="share of the rules replaced (default 0.02)")
    parser.add_argument("--events", type=int, default=generate.DEFAULT_EVENTS)
    parser.add_argument("--seed", type=int, default=generate.DEFAULT_SEED)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5,000 events, 100 rules, best of 1")
    args = parser.parse_args()
    if args.quick:
        args.events, args.rules, args.repeat = 5_000, 100, 1
    out = generate.DATA_DIR
    generate.write_all(out, args.events, args.seed, "ops", (args.rules,))
    events = generate.events_path(out, args.events, args.seed, "ops")
    plain = generate.rules_path(out, args.rules, args.seed, "ops")
    kinds = args.kind or sorted(KINDS)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RULESD_CACHE_DIR"] = str(Path(tmp) / "cache")
        rules = yaml.safe_load(plain.read_text())["rules"]
        sets = [("the ops rules", plain)]
        for kind in kinds:
            path = Path(tmp) / f"{kind}.yaml"
            replaced = with_replaced(rules, kind, args.share, args.seed)
            path.write_text(yaml.safe_dump({"rules": replaced}, sort_keys=False))
            sets.append((f"with {kind} rules", path))
        floor = best(args.repeat, [sys.executable, str(HERE / "floor.py"), str(events)])
        print(
            f"ops events: {args.events:,}, {args.rules} rules, {args.share:.0%} of them replaced, best of "
            f"{args.repeat}, CPU time of the child, load {os.getloadavg()[0]:.2f}"
        )
        print(f"floor: {floor.cpu:.3f} s")
        cpu = {}
        for label, path in sets:
            command = replay_command(path, events, shape_ops.TIME_FIELD)
            best(1, command)  # fills the rule cache
            cpu[label] = best(args.repeat, command).cpu
            print(f"  {label:<22} replay {cpu[label]:.3f} s, {floor.cpu / cpu[label]:.3f} x floor")
        for label, _ in sets[1:]:
            print(f"{label}: x{cpu[label] / cpu['the ops rules']:.2f} the time of the ops rules")


if __name__ == "__main__":
    main()
