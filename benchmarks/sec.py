"""rulesd against SEC (the Simple Event Correlator, Perl) on rules that have exact SEC twins.

    python benchmarks/sec.py [--rules 10,100] [--events N] [--repeat N] [--quick]

(500,000 events by default, as the first comparison was made: SEC takes about a minute for
them at 100 rules.)

For each rule count, writes a rulesd rule file and a SEC configuration whose rules match
the same events and fire the same number of times, runs both whole processes over the same
"ops"-shaped events (`shape_ops.py`), checks that every rule fired as often on both sides
(it stops with the difference if not), and prints CPU times and their ratio. SEC is
Debian's `sec` package (`apt-get install sec`); without it this prints that it is missing
and measures nothing else.

The twins: a rulesd condition on fields becomes one Perl regex over the JSON line (the
generator writes keys in a fixed order and no message holds a quote or backslash, so a
field's text is delimited by quotes). A plain rule is SEC's `Single`; a threshold grouped by
host with a one-day throttle is `SingleWithThreshold` (one-day window, the host in `desc`);
a one-day throttle is `SingleWithSuppress`. rulesd replays without `--time-field`, so every
event arrives at the same instant, as all of them do within SEC's one-day windows.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate
import shape_ops
from process import Usage, measure
from tree import RULESD, ran

# Regexes on `message` that mean the same in Perl (on the raw JSON line, inside the message's
# quotes) and in rulesd: no anchors, no `.`, no class that could match a quote.
SEC_REGEXES = (
    r"upstream timeout after \d{{4,}}ms calling {svc}",
    r"connection (refused|reset) by",
    r"connection refused by {svc}",
    r"disk full on /var/lib/{svc}",
    r"deadlock detected on table {obj}s_\d",
    r"ERR-1[0-3]\d\d while processing {obj}",
    r"replication lag \d{{2,}}s on replica db-\d",
    r"circuit breaker open for {svc}",
    r"attempt [3-5] of 5 failed with status 5\d\d",
    r"locked out after [5-8] failed logins",
    r"\b(timeout|timed out|deadline exceeded)\b",
)
DAY = 86_400


def _status_at_least(bound: int) -> str:
    """A Perl regex for the JSON integers from `bound` (500-509) to 599."""
    return f"5(?:0[{bound % 10}-9]|[1-9][0-9])"


def twin_rules(count: int, seed: int) -> list[tuple[dict[str, Any], str]]:
    """`count` pairs (rulesd rule, SEC rule text)."""
    rng = random.Random(seed * 31 + count)
    pairs = []
    for i in range(count):
        kind = rng.choices(("single", "threshold", "regex", "suppress"), (5, 2, 2, 1))[0]
        name = f"sec-{kind}-{i:04d}"
        pairs.append(_twin(name, kind, rng))
    return pairs


def _twin(name: str, kind: str, rng: random.Random) -> tuple[dict[str, Any], str]:
    regex = rng.choice(SEC_REGEXES).format(
        svc=rng.choice(shape_ops.SERVICES), obj=rng.choice(("order", "invoice", "cart", "item", "payment"))
    )
    if kind == "regex":
        match: dict[str, Any] = {"message": {"regex": regex}}
        pattern = f'"message":"[^"]*(?:{regex})'
    else:
        service = rng.choice(shape_ops.SERVICES)
        levels = rng.choice((["error", "critical"], ["error"], ["warning", "error"]))
        match = {"service": service, "level": levels}
        head = f'"service":"{service}","level":"(?:{"|".join(levels)})","host":"([^"]*)",'
        extra = rng.choice(("status", "region", "hosts", "regex"))
        if extra == "status":
            bound = rng.choice((500, 502, 503))
            match["http.status"] = {"gte": bound}
            pattern = head + f'"message":"[^"]*","http":\\{{"status":{_status_at_least(bound)},'
        elif extra == "region":
            region = rng.choice(shape_ops.REGIONS)
            match["region"] = region
            pattern = head + f'.*,"region":"{region}",'
        elif extra == "hosts":
            hosts = rng.sample(shape_ops.HOSTS, rng.randrange(3, 9))
            match["host"] = hosts
            pattern = head.replace('"host":"([^"]*)"', f'"host":"({"|".join(hosts)})"')
        else:
            match["message"] = {"regex": regex}
            pattern = head + f'"message":"[^"]*(?:{regex})'
    rule: dict[str, Any] = {"name": name, "match": match, "alert": {"message": "{service}: {message}"}}
    sec = [f"ptype=RegExp\npattern={pattern}\ncontinue=TakeNext\naction=write %OUT% {name}"]
    if kind == "threshold":
        threshold = rng.randrange(2, 6)
        rule["threshold"] = {"count": threshold, "window": "1d", "group_by": ["host"]}
        rule["throttle"] = "1d"
        sec.insert(0, "type=SingleWithThreshold")
        sec.append(f"desc={name} $1\nwindow={DAY}\nthresh={threshold}")
    elif kind == "suppress":
        rule["throttle"] = "1d"
        sec.insert(0, "type=SingleWithSuppress")
        sec.append(f"desc={name}\nwindow={DAY}")
    else:
        sec.insert(0, "type=Single")
        sec.append(f"desc={name}")
    return rule, "\n".join(sec) + "\n"


def rulesd_firings(rules: Path, events: Path, output: Path) -> tuple[Usage, Counter[str]]:
    """CPU time of `rulesd replay --format json` and how often each rule fired."""
    usage = measure([*RULESD, "replay", "--rules", str(rules), "--format", "json", str(events)], stdout=output)
    fired: Counter[str] = Counter()
    for line in output.read_bytes().splitlines():
        payload = orjson.loads(line)
        fired.update(orjson.loads(payload["details"]["Triggering Rules"]))
    return usage, fired


def sec_firings(conf: Path, events: Path, output: Path) -> tuple[Usage, Counter[str]]:
    """CPU time of `sec` over the events and how often each rule fired."""
    output.write_bytes(b"")
    command = [
        "sec",
        f"--conf={conf}",
        f"--input={events}",
        "--notail",
        "--bufsize=1",
        "--log=/dev/null",
        "--debug=1",
    ]
    usage = measure(command)
    fired = Counter(output.read_text().split())
    return usage, fired


def compare(count: int, events: Path, repeat: int, root: Path, seed: int) -> None:
    """Run both sides on `count` twin rules; stop if they disagree."""
    pairs = twin_rules(count, seed)
    rules, conf, output = root / f"rules-{count}.yaml", root / f"sec-{count}.conf", root / f"sec-{count}.out"
    generate.write_rules(rules, [rule for rule, _ in pairs], seed)
    conf.write_text("\n".join(text.replace("%OUT%", str(output)) for _, text in pairs))
    best_rulesd = best_sec = None
    for _ in range(repeat):
        usage, fired = rulesd_firings(rules, events, root / "alerts.jsonl")
        best_rulesd = usage if best_rulesd is None or usage.cpu < best_rulesd.cpu else best_rulesd
        sec_usage, sec_fired = sec_firings(conf, events, output)
        best_sec = sec_usage if best_sec is None or sec_usage.cpu < best_sec.cpu else best_sec
        if fired != sec_fired:
            differ = {n: (fired[n], sec_fired[n]) for n in set(fired) | set(sec_fired) if fired[n] != sec_fired[n]}
            raise SystemExit(f"rulesd and SEC disagree at {count} rules (rule: rulesd, SEC): {differ}")
    assert best_rulesd is not None and best_sec is not None
    print(
        f"{count:>5} rules: {sum(fired.values()):>6} firings on both sides; rulesd {best_rulesd.cpu:.3f} s, "
        f"SEC {best_sec.cpu:.3f} s: rulesd x{best_sec.cpu / best_rulesd.cpu:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default="10,100")
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=generate.DEFAULT_SEED)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5,000 events, best of 1")
    args = parser.parse_args()
    if args.quick:
        args.events, args.repeat = 5_000, 1
    if shutil.which("sec") is None:
        print("SEC comparison skipped: the `sec` command is missing (Debian: apt-get install sec)")
        return
    version = subprocess.run(["sec", "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(
        f"{version}, {args.events:,} ops events, whole processes, CPU time, best of {args.repeat}, "
        f"load {os.getloadavg()[0]:.2f}; {ran()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        events = root / "events.jsonl"
        generate.write_events(events, shape_ops.generate_events(args.events, args.seed))
        for count in (int(c) for c in args.rules.split(",")):
            compare(count, events, args.repeat, root, args.seed)


if __name__ == "__main__":
    main()
