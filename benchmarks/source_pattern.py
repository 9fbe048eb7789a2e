"""The `regex` source format's per-line cost: RE2 (what rulesd runs) against Python's `re`.

    python benchmarks/source_pattern.py [--lines N] [--repeat N]

Parses sshd-like auth.log lines with a pattern of named groups through
`rulesd.events.regex_parser` (RE2), and through the same steps with `re`, in CPU time per
line, best of N; also the floor of decoding each line alone.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import time
from collections.abc import Callable

from rulesd.events import parse_text, regex_parser

PATTERN = (
    r"^(?P<time>\w{3} +\d+ [\d:]+) (?P<host>\S+) sshd\[(?P<pid>\d+)\]: "
    r"(?P<outcome>Failed|Accepted) (?P<method>password|publickey) for (?:invalid user )?(?P<user>\S+) "
    r"from (?P<ip>[\d.]+) port (?P<port>\d+)"
)


def lines(count: int) -> list[bytes]:
    """auth.log lines, most of them matching the pattern."""
    rng = random.Random(7)
    out = []
    for i in range(count):
        if rng.random() < 0.1:
            out.append(f"Jun 11 10:{i % 60:02d}:00 web-1 CRON[{i}]: session opened for user root\n".encode())
            continue
        outcome = rng.choice(("Failed", "Accepted"))
        out.append(
            f"Jun 11 10:{i % 60:02d}:{i % 60:02d} web-{i % 9} sshd[{1000 + i}]: {outcome} password for "
            f"user{rng.randrange(500)} from 203.0.113.{rng.randrange(255)} port {rng.randrange(1024, 65535)} "
            "ssh2\n".encode()
        )
    return out


def python_parser(pattern: str) -> Callable[[bytes], object]:
    """What the parser did with `re`, for comparison."""
    compiled = re.compile(pattern)

    def parse(line: bytes) -> object:
        message = parse_text(line)["message"]
        m = compiled.search(message)
        return None if m is None else {k: v for k, v in m.groupdict().items() if v is not None}

    return parse


def per_line(parse: Callable[[bytes], object], data: list[bytes], repeat: int) -> float:
    """Least CPU microseconds per line over `repeat` runs (unmatched lines included)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for line in data:
            with contextlib.suppress(ValueError):  # a line the pattern does not match
                parse(line)
        best = min(best, time.process_time() - started)
    return best / len(data) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.lines, args.repeat = 5_000, 1
    data = lines(args.lines)
    decode = per_line(parse_text, data, args.repeat)
    rulesd = per_line(regex_parser(PATTERN), data, args.repeat)
    python = per_line(python_parser(PATTERN), data, args.repeat)
    print(
        f"{args.lines:,} lines, CPU time per line, best of {args.repeat}: decode only {decode:.2f} us, "
        f"RE2 (rulesd) {rulesd:.2f} us, Python re {python:.2f} us"
    )


if __name__ == "__main__":
    main()
