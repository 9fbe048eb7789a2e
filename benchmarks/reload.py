"""A huge rule set reloaded live: how long it takes, what memory it needs, and whether the
daemon keeps working meanwhile.

    python benchmarks/reload.py [--rules 1000,10000,100000] [--repeat N] [--quick]

For each count, a real `rulesd run --dry-run` (file source, /healthz on loopback, no rule
cache: a changed rule set is never cached) starts with one rule; then a file of COUNT more
rules is saved into its rule directory and the daemon reloads. Measured:

- the reload's wall time (the save until `reload ok`) and the daemon's CPU time over it;
- the daemon's peak RSS (VmHWM) after it, and its RSS before the save;
- `/healthz` polled every 50 ms all along: its slowest answer and any answer that was not 200;
- an event for the running rule, written once the load has begun: the seconds until its alert
  is printed (the main loop reads on while the rules load);
- the baseline, in the same run: `rulesd check` of the same rule directory, a process of its
  own (CPU time and peak RSS): reload CPU / check CPU says what the reload costs beyond loading.

The rules are one simple shape (two equalities, a throttle, a message template: about 100
bytes each, as hand-written rules are); `--shape ops` uses the generated ops rules instead.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate
from process import best
from tree import RULESD, ran

ENV = {**os.environ, "RULESD_CACHE_DIR": ""}  # no rule cache: a changed rule set is never cached
RUNNING_RULE = "name: page\nmatch: {kind: page}\nalert: {alias: 'page-{id}'}\n"


@dataclass(frozen=True, slots=True)
class Reload:
    """What one live reload cost and how the daemon did meanwhile."""

    wall: float
    cpu: float
    peak_rss_mb: float
    rss_before_mb: float
    healthz_slowest: float
    healthz_failures: int
    event_latency: float
    alerted_during_load: bool  # False when the load ended before the event could be read


def simple_rules(count: int) -> str:
    """COUNT hand-written-looking rules: two equalities, a throttle, a message template."""
    return "rules:\n" + "".join(
        f"  - name: bulk-{i:06d}\n    match: {{service: svc-{i}, level: error}}\n"
        f"    throttle: 10m\n    alert: {{message: 'errors in {{service}} on {{host}}'}}\n"
        for i in range(count)
    )


def ops_rules(count: int, seed: int) -> str:
    module = generate.shape_module("ops")
    return yaml.safe_dump({"rules": module.generate_rules(count, seed)}, sort_keys=False)


def proc_status(pid: int, field: str) -> float:
    """A /proc/PID/status field in kB, as MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get(url: str) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    return status, time.perf_counter() - started


def wait_for(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {text!r} in {path}:\n{path.read_text()[-3000:]}")
        time.sleep(0.02)


def live_reload(rules_text: str) -> Reload:
    """Start a daemon with one rule, save RULES_TEXT beside it, and watch the reload."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "rules").mkdir()
        (root / "rules" / "page.yaml").write_text(RUNNING_RULE)
        events = root / "events.jsonl"
        events.touch()
        config = root / "rulesd.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "rules": ["rules"],
                    "source": {"type": "file", "path": str(events)},
                    "metrics": {"listen": "127.0.0.1:0"},
                }
            )
        )
        out, err = root / "stdout", root / "stderr"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(
                [*RULESD, "--log-level", "debug", "run", "--config", str(config), "--dry-run"],
                stdout=stdout,
                stderr=stderr,
                env=ENV,
                cwd=root,
            )
        try:
            wait_for(err, "rulesd started", 60)
            found = re.search(r"metrics on (http://\S+)/metrics", err.read_text())
            assert found is not None
            healthz = found.group(1) + "/healthz"
            staged = root / "bulk.yaml.tmp"
            staged.write_text(rules_text)
            rss_before, cpu_before = proc_status(proc.pid, "VmRSS"), proc_cpu(proc.pid)
            saved = time.perf_counter()
            os.rename(staged, root / "rules" / "bulk.yaml")
            slowest, failures, written, alerted = 0.0, 0, 0.0, 0.0
            while "reload ok" not in (log := err.read_text(errors="replace")):
                if "reload failed" in log:
                    raise RuntimeError(log[-3000:])
                status, took = get(healthz)
                slowest, failures = max(slowest, took), failures + (status != 200)
                if not written and "reload: loading the rules" in log:
                    written = time.perf_counter()
                    events.write_text('{"kind": "page", "id": 1}\n')
                if written and not alerted and out.read_text():
                    alerted = time.perf_counter()
                time.sleep(0.05)
            wall = time.perf_counter() - saved
            cpu, peak = proc_cpu(proc.pid) - cpu_before, proc_status(proc.pid, "VmHWM")
            during = bool(alerted)
            if not during:  # a load shorter than the file watch's latency: the alert comes just after
                deadline = time.monotonic() + 10
                while not out.read_text() and time.monotonic() < deadline:
                    time.sleep(0.02)
                if not out.read_text():
                    raise RuntimeError("the event written during the load was never alerted")
                alerted = time.perf_counter()
            return Reload(wall, cpu, peak, rss_before, slowest, failures, alerted - written, during)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default="1000,10000,100000")
    parser.add_argument("--shape", choices=["simple", "ops"], default="simple")
    parser.add_argument("--seed", type=int, default=generate.DEFAULT_SEED)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1,000 rules, best of 1")
    args = parser.parse_args()
    counts = [1000] if args.quick else [int(n) for n in args.rules.split(",")]
    repeat = 1 if args.quick else args.repeat
    print(
        f"live reload, {args.shape} rules, no rule cache; best of {repeat} by CPU (100,000 rules: of 1); "
        f"load {os.getloadavg()[0]:.2f}; {ran()}"
    )
    print(
        f"{'rules':>7} {'wall s':>7} {'cpu s':>7} {'check cpu s':>11} {'reload/check':>12} "
        f"{'peak RSS MB':>11} {'RSS before':>10} {'check RSS':>9} {'healthz max s':>13} {'non-200':>7} "
        f"{'event alerted after s':>21}"
    )
    for count in counts:
        text = simple_rules(count) if args.shape == "simple" else ops_rules(count, args.seed)
        runs = repeat if count < 100_000 else 1
        with tempfile.TemporaryDirectory() as tmp:
            rules = Path(tmp) / "rules"
            rules.mkdir()
            (rules / "page.yaml").write_text(RUNNING_RULE)
            (rules / "bulk.yaml").write_text(text)
            check = best(runs, [*RULESD, "check", str(rules)], env=ENV)
        reloads = [live_reload(text) for _ in range(runs)]
        r = min(reloads, key=lambda x: x.cpu)
        print(
            f"{count:>7} {r.wall:>7.2f} {r.cpu:>7.2f} {check.cpu:>11.2f} {r.cpu / check.cpu:>12.2f} "
            f"{max(x.peak_rss_mb for x in reloads):>11.0f} {r.rss_before_mb:>10.0f} {check.max_rss_mb:>9.0f} "
            f"{max(x.healthz_slowest for x in reloads):>13.3f} {sum(x.healthz_failures for x in reloads):>7} "
            f"{max(x.event_latency for x in reloads):>21.3f}"
            + ("" if all(x.alerted_during_load for x in reloads) else " (the load ended first)")
        )
        per = 1000 / count
        print(
            f"{'':>7} per 1,000 rules: {r.cpu * per:.3f} s CPU, {r.wall * per:.3f} s wall, "
            f"{(max(x.peak_rss_mb for x in reloads) - r.rss_before_mb) * per:.1f} MB above the RSS before"
        )


if __name__ == "__main__":
    main()
