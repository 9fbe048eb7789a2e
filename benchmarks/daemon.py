"""Benchmarks of the daemon (`rulesd run`), the real process against a loopback OpsGenie.

    python benchmarks/daemon.py [--events N] [--quick]

1. Throughput: the daemon path (stdin source, 100 rules, through SQLite) over the
   generated event file, against the bare floor (read + orjson.loads, the faster of line by
   line and in blocks) measured in the same run. The daemon's own time is taken from its
   log records ("rulesd started" to "end of input"), so start-up and the final drain are
   not counted.
2. Alert latency: events appended to a tailed file at 1000 events/s (with the 100
   generated rules loaded); every 20th is a probe that pages. Latency is from the append
   to the local server receiving the alert: p50 and p99.
3. Rule edits: a rule file is replaced (by rename, as editors save); probes that only
   the new version matches are appended every 5 ms; the time from the save to the first
   alert for the new version, median of 10.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import generate
from run import best_of, floor, floor_in_blocks
from tree import RULESD, ran

from tests.fake_opsgenie import FakeOpsGenie, Received, Reply

PROBE_RULE = {
    "name": "bench-probe",
    "match": {"kind": "probe"},
    "alert": {"message": "probe {seq}", "alias": "probe-{seq}", "priority": "P5"},
}


def rulesd(*args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*RULESD, "--log-format", "json", *args], **kwargs)


def write_config(root: Path, rules: list[Path], source: dict[str, Any], url: str) -> Path:
    config = {
        "rules": [str(r) for r in rules],
        "source": source,
        "time_field": "ts",
        "state_dir": str(root / "state"),
        "opsgenie": {"api_key": "benchmark-key", "alert_url": f"{url}/v2/alerts"},
    }
    path = root / "rulesd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def log_time(stderr: Path, text: str) -> float:
    for line in stderr.read_text().splitlines():
        record = json.loads(line)
        if text in record["message"]:
            return float(record["time"])
    raise AssertionError(f"no log record containing {text!r}:\n{stderr.read_text()[-2000:]}")


def throughput(events: Path, rules: Path, url: str) -> tuple[float, int]:
    """Seconds the daemon spent from start to end of input, and the alerts it queued."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = write_config(root, [rules], {"type": "stdin"}, url)
        stderr = root / "stderr"
        with events.open("rb") as stdin, stderr.open("wb") as err:
            proc = rulesd("run", "--config", str(config), stdin=stdin, stderr=err, stdout=subprocess.DEVNULL)
            assert proc.wait(600) == 0, stderr.read_text()[-2000:]
        took = log_time(stderr, "end of input") - log_time(stderr, "rulesd started")
        stopped = next(json.loads(x)["message"] for x in stderr.read_text().splitlines() if "stopped:" in x)
        alerts = int(stopped.split(", ")[-1].split()[0])
        return took, alerts


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Arrivals:
    """Receive times of alerts at the local server, by alias."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    def __call__(self, request: Received) -> Reply:
        alias = request.json().get("alias", "")
        self.at.setdefault(alias, time.time())
        return Reply()


def latency(rules: Path, seconds: float, rate: int) -> list[float]:
    """Append-to-delivery latencies (s) of the probes among `rate` events/s for `seconds`."""
    arrivals = Arrivals()
    background = [orjson.dumps(e) + b"\n" for e in generate.generate_events(int(seconds * rate), 1)]
    with FakeOpsGenie(arrivals) as server, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        probe = root / "probe.yaml"
        probe.write_text(yaml.safe_dump(PROBE_RULE))
        log = root / "events.jsonl"
        log.touch()
        config = write_config(root, [rules, probe], {"type": "file", "path": str(log)}, server.url)
        stderr = root / "stderr"
        with stderr.open("wb") as err:
            proc = rulesd("run", "--config", str(config), stderr=err, stdout=subprocess.DEVNULL)
        try:
            wait_for(lambda: "rulesd started" in stderr.read_text())
            sent = append_at_rate(log, background, rate)
            wait_for(lambda: len(arrivals.at) >= len(sent), timeout=30)
        finally:
            proc.terminate()
            proc.wait(30)
        return [arrivals.at[alias] - t for alias, t in sent.items() if alias in arrivals.at]


def append_at_rate(log: Path, background: list[bytes], rate: int) -> dict[str, float]:
    """Append one line every 1/rate s; every 20th is a probe. Returns probe alias -> append time."""
    sent: dict[str, float] = {}
    start = time.perf_counter()
    with log.open("ab", buffering=0) as fh:
        for i, line in enumerate(background):
            target = start + i / rate
            while (now := time.perf_counter()) < target:
                time.sleep(min(0.0005, target - now))
            if i % 20 == 0:
                sent[f"probe-{i}"] = time.time()
                fh.write(orjson.dumps({"kind": "probe", "seq": i, "ts": time.time()}) + b"\n")
            else:
                fh.write(line)
    return sent


def reload_delays(repeat: int) -> list[float]:
    """Seconds from saving a changed rule file to the first alert only the new version can cause."""
    arrivals = Arrivals()
    delays: list[float] = []
    with FakeOpsGenie(arrivals) as server, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rules_dir = root / "rules"
        rules_dir.mkdir()
        (rules_dir / "probe.yaml").write_text(yaml.safe_dump({**PROBE_RULE, "match": {"generation": -1}}))
        log = root / "events.jsonl"
        log.touch()
        config = write_config(root, [rules_dir], {"type": "file", "path": str(log)}, server.url)
        stderr = root / "stderr"
        with stderr.open("wb") as err:
            proc = rulesd("run", "--config", str(config), stderr=err, stdout=subprocess.DEVNULL)
        try:
            wait_for(lambda: "rulesd started" in stderr.read_text())
            for gen in range(repeat):
                delays.append(one_reload(root, rules_dir, log, arrivals, gen))
        finally:
            proc.terminate()
            proc.wait(30)
    return delays


def one_reload(root: Path, rules_dir: Path, log: Path, arrivals: Arrivals, gen: int) -> float:
    rule = {**PROBE_RULE, "match": {"generation": gen}, "alert": {"alias": f"gen-{gen}-{{seq}}"}}
    tmp = root / "probe.yaml.new"
    tmp.write_text(yaml.safe_dump(rule))
    saved = time.time()
    os.rename(tmp, rules_dir / "probe.yaml")
    stop = threading.Event()

    def probe() -> None:
        seq = 0
        with log.open("ab", buffering=0) as fh:
            while not stop.is_set():
                fh.write(orjson.dumps({"generation": gen, "seq": seq}) + b"\n")
                seq += 1
                time.sleep(0.005)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        wait_for(lambda: any(a.startswith(f"gen-{gen}-") for a in arrivals.at), timeout=10)
    finally:
        stop.set()
        prober.join()
    first = min(t for a, t in arrivals.at.items() if a.startswith(f"gen-{gen}-"))
    time.sleep(0.3)  # let the old generation's probes drain before the next edit
    return first - saved


def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=generate.DEFAULT_EVENTS)
    parser.add_argument("--repeat", type=int, default=3, help="best of N for throughput")
    parser.add_argument("--quick", action="store_true", help="a smoke run, a few seconds")
    args = parser.parse_args()
    if args.quick:
        args.events, args.repeat = 20_000, 1
    out = generate.DATA_DIR
    generate.write_all(out, args.events, generate.DEFAULT_SEED)
    events = generate.events_path(out, args.events, generate.DEFAULT_SEED)
    rules = generate.rules_path(out, 100, generate.DEFAULT_SEED)

    # The floor is the faster of parsing line by line and in blocks (as the daemon parses).
    base, n = min(best_of(args.repeat, lambda: floor(events)), best_of(args.repeat, lambda: floor_in_blocks(events)))
    assert n is not None
    with FakeOpsGenie() as server:
        runs = [throughput(events, rules, server.url) for _ in range(args.repeat)]
    took, alerts = min(runs)
    print(
        f"{n:,} events, 100 rules, best of {args.repeat}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs;"
        f" {ran()}"
    )
    print(f"floor (read + orjson.loads)      {n / base:>10,.0f} events/s")
    print(
        f"rulesd run (stdin, SQLite)       {n / took:>10,.0f} events/s  {base / took:.3f}x floor  "
        f"({alerts} alerts queued)"
    )

    lat = latency(rules, 3 if args.quick else 10, 1000)
    print(
        f"alert latency at 1000 events/s: {len(lat)} probes, p50 {percentile(lat, 50) * 1000:.1f} ms, "
        f"p99 {percentile(lat, 99) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms"
    )
    delays = reload_delays(3 if args.quick else 10)
    print(
        f"rule edit in effect: median {statistics.median(delays) * 1000:.0f} ms, "
        f"max {max(delays) * 1000:.0f} ms over {len(delays)} edits"
    )


if __name__ == "__main__":
    main()
