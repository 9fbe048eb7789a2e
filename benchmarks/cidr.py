"""`cidr`/`not_cidr` per event: rulesd's network sets against testing every network of every rule.

    python benchmarks/cidr.py [--rules N] [--events N] [--repeat N] [--quick]

Each rule's condition `source.ip: {not_cidr: [...]}` is compiled as rulesd compiles it
(`compile_condition`: a set of network numbers per prefix length; the parse of an address
text cached; rules listing the same networks share the set and its answer for the last
address); the baseline, measured in the same run, is what a rule engine without that does:
parse the value and test it against each network with `ipaddress`. Two rule sets: every rule
lists the same office networks (3 private ranges, 24 site /24s, 4 /16s and 4 IPv6 /48s), then
each lists them and one network of its own. Events carry office addresses, public IPv4 and
IPv6 addresses and, sometimes, no address at all. CPU time per event, best of N.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import time
from collections.abc import Callable
from typing import Any

from rulesd.rules.conditions import compile_condition

OFFICE = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    *(f"198.51.{i}.0/24" for i in range(0, 48, 2)),
    *(f"100.{64 + i}.0.0/16" for i in range(4)),
    *(f"2001:db8:{i:x}::/48" for i in range(4)),
]


def events(count: int) -> list[dict[str, Any]]:
    """Events with a `source.ip`: a third inside the office list, most others public."""
    rng = random.Random(11)
    public = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(2000)]
    out: list[dict[str, Any]] = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.3:
            ip = rng.choice((f"10.{rng.randrange(256)}.{rng.randrange(256)}.7", f"198.51.{rng.randrange(0, 48, 2)}.9"))
        elif roll < 0.85:
            ip = rng.choice(public)
        elif roll < 0.95:
            ip = f"2001:db8:{rng.randrange(8):x}::{rng.randrange(1 << 16):x}"
        else:
            out.append({"service": "auth"})
            continue
        out.append({"service": "auth", "source": {"ip": ip}})
    return out


def naive_rule(networks: list[str]) -> Callable[[dict[str, Any]], bool]:
    """`not_cidr` as a hand-written test: parse the value, then try each network in turn."""
    parsed = [ipaddress.ip_network(n) for n in networks]

    def test(event: dict[str, Any]) -> bool:
        source = event.get("source")
        value = source.get("ip") if type(source) is dict else None
        if type(value) is not str:
            return False
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return False
        return not any(address in network for network in parsed)

    return test


def per_event(tests: list[Callable[[dict[str, Any]], bool]], data: list[dict[str, Any]], repeat: int) -> float:
    """Least CPU microseconds per event over `repeat` runs of every test on every event."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for event in data:
            for test in tests:
                test(event)
        best = min(best, time.process_time() - started)
    return best / len(data) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rules, args.events, args.repeat = 10, 2_000, 1
    data = events(args.events)
    floor = per_event([lambda e: e.get("source") is None], data, args.repeat)
    print(f"load average {os.getloadavg()[0]:.2f}; {args.rules} rules x {len(OFFICE)} networks, {len(data)} events")
    print(f"  floor (one field read): {floor:.2f} us/event")
    # The same list in every rule (one compiled set, shared), then a list of its own in each
    # (the office list and one network more: no rule's answer serves another's).
    for shared in (True, False):
        lists = [OFFICE if shared else [*OFFICE, f"203.0.{i % 256}.{i // 256 * 4}/30"] for i in range(args.rules)]
        rulesd = [compile_condition({"source.ip": {"not_cidr": networks}}).test for networks in lists]
        naive = [naive_rule(networks) for networks in lists]
        assert [[t(e) for t in rulesd] for e in data] == [[t(e) for t in naive] for e in data]
        ours = per_event(rulesd, data, args.repeat)
        theirs = per_event(naive, data, args.repeat)
        print(f"  {'one list in every rule' if shared else 'a list of its own in each rule'}:")
        print(f"    rulesd (set per prefix length) {ours:9.2f} us/event  {ours / args.rules:.3f} us/rule")
        print(f"    every network, ipaddress       {theirs:9.2f} us/event  {theirs / args.rules:.3f} us/rule")
        print(f"    ratio: every network / rulesd  {theirs / ours:9.1f} x")


if __name__ == "__main__":
    main()
