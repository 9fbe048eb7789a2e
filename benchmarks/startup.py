"""Where start-up time goes: imports, YAML, schema validation, compiling rules, the index.

    python benchmarks/startup.py [--shape ops] [--rules 1000] [--repeat N] [--quick]

Whole processes first (CPU time of the child, best of N): the bare interpreter, the
interpreter importing rulesd's command line, `rulesd check RULES` and `rulesd replay` over
an empty file, each with an empty rule cache (cold: what a changed rule file costs) and with
the cache the previous run left (warm: an unchanged rule set); and the wall time a daemon
(`rulesd run`, stdin source) takes from its launch to its "rulesd started" line, with a
fresh state directory (cold) and with one whose rule cache a previous start filled (warm),
median and least of N. Then in this process, each
phase of loading the rule file timed alone (best of N, the cyclic collector paused as loading
pauses it): reading the YAML with line marks,
the JSON Schema, compiling every rule, compiling the Hyperscan databases (and loading them
serialised), building the engine's index, and all of `check_paths` cold and warm.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate
from process import best, write_config
from tree import PYTHON, RULESD, ran

from rulesd import collector
from rulesd.engine import Engine
from rulesd.rules.cache import RuleCache
from rulesd.rules.compile import compile_rule
from rulesd.rules.loader import _rules_in, check_paths, load_ruleset
from rulesd.rules.patterns import PatternSet, dump_database, load_database
from rulesd.validation import schema_violations
from rulesd.yamldoc import read_yaml


def phase(repeat: int, run: Callable[[], Any]) -> float:
    """Least CPU seconds of `repeat` calls, the cyclic collector paused as loading pauses it
    (else a phase pays for collections walking what this script keeps alive)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        with collector.paused():
            started = time.process_time()
            run()
            times.append(time.process_time() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="ops")
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=generate.DEFAULT_SEED)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a smoke run: best of 1")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 1
    out = generate.DATA_DIR
    generate.write_all(out, 1000, args.seed, args.shape, (args.rules,))
    rules = generate.rules_path(out, args.rules, args.seed, args.shape)
    empty = out / "empty.jsonl"
    empty.write_bytes(b"")
    print(
        f"start-up, {args.shape}, {args.rules} rules, CPU time, best of {args.repeat}, load {os.getloadavg()[0]:.2f};"
        f" {ran()}"
    )
    doc = read_yaml(str(rules))
    violations = schema_violations(doc, "rule")
    items = list(_rules_in(doc))

    def compile_all() -> PatternSet:
        patterns = PatternSet()
        for raw, base in items:
            compile_rule(raw, doc, base, violations, patterns=patterns)
        return patterns

    commands = {
        "python -c pass": ([*PYTHON, "-c", "pass"], False),
        "python -c 'import rulesd.cli'": ([*PYTHON, "-c", "import rulesd.cli"], False),
        "rulesd check RULES": ([*RULESD, "check", str(rules)], True),
        "rulesd replay --rules RULES EMPTY": ([*RULESD, "replay", "--rules", str(rules), str(empty)], True),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for label, (command, cached) in commands.items():
            if not cached:
                print(f"  {label:<36} {best(args.repeat, command).cpu:.3f} s")
                continue
            cold = min(_cold(command, Path(tmp) / f"cold-{label}-{i}") for i in range(args.repeat))
            warm = best(args.repeat, command, env={**os.environ, "RULESD_CACHE_DIR": str(Path(tmp) / "warm")})
            print(f"  {label:<36} {cold:.3f} s cold, {warm.cpu:.3f} s warm (rule cache)")
        time_field = generate.shape_module(args.shape).TIME_FIELD
        joined = len({scanner.key() for scanner in compile_all().fields.values()})  # (see `_daemon_ready`)
        for label, cached in (("cold", False), ("warm", True)):
            waits = sorted(
                _daemon_ready(rules, time_field, joined, Path(tmp) / "daemon", cached) for _ in range(args.repeat)
            )
            print(
                f"  {'rulesd run, launch to started':<36} {statistics.median(waits):.3f} s {label}"
                f" (wall, median; least {waits[0]:.3f} s)"
            )

    ruleset = load_ruleset([rules])
    patterns = compile_all()
    patterns.build()
    blobs = [dump_database(s.database) for s in patterns.fields.values()]
    with tempfile.TemporaryDirectory() as tmp:
        cache = RuleCache(tmp)
        check_paths([rules], cache)
        phases = {
            "read YAML with marks": lambda: read_yaml(str(rules)),
            "JSON Schema validation": lambda: schema_violations(doc, "rule"),
            "compile rules (predicates, hints)": compile_all,
            "compile Hyperscan databases": lambda: [s.compile() for s in patterns.fields.values()],
            "load them serialised": lambda: [load_database(b) for b in blobs],
            "engine (index)": lambda: Engine(ruleset, saved=False),
            "all of check_paths, no cache": lambda: check_paths([rules]),
            "all of check_paths, warm cache": lambda: check_paths([rules], cache),
        }
        print("in process:")
        for label, run in phases.items():
            print(f"  {label:<36} {phase(args.repeat, run):.3f} s")


def _daemon_ready(rules: Path, time_field: str, joined: int, root: Path, cached: bool) -> float:
    """Wall seconds from launching `rulesd run` (stdin source, state under `root`) to its
    "rulesd started" line; `cached`: the state directory (its rule cache) kept from the last
    start, else a fresh one. `joined`: the entries of joined texts' databases the start keeps
    (one per field's set of patterns)."""
    if not cached:
        shutil.rmtree(root, ignore_errors=True)
    root.mkdir(exist_ok=True)
    config = write_config(root, rules, "http://127.0.0.1:9", time_field)  # (nothing is sent)
    started = time.perf_counter()
    daemon = subprocess.Popen(
        [*RULESD, "run", "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "RULESD_CACHE_DIR"},
    )
    assert daemon.stdin is not None and daemon.stderr is not None
    lines = []
    for line in daemon.stderr:
        lines.append(line)
        if "rulesd started" in line:
            break
    waited = time.perf_counter() - started
    # What a start leaves to do beside its loop (the databases of joined texts compiled and kept,
    # one after another) is let finish, so that the next warm start finds them all.
    deadline = time.monotonic() + 10
    while len(list((root / "state" / "cache").glob("joined-*.bin"))) < joined and time.monotonic() < deadline:
        time.sleep(0.02)
    _, rest = daemon.communicate()  # (its input closed: it stops)
    if daemon.returncode != 0 or not any("rulesd started" in line for line in lines):
        raise RuntimeError(f"rulesd run did not start: {''.join(lines)[-2000:]}{rest[-2000:]}")
    return waited


def _cold(command: list[str], directory: Path) -> float:
    """CPU time of `command` with an empty rule cache of its own."""
    return best(1, command, env={**os.environ, "RULESD_CACHE_DIR": str(directory)}).cpu


if __name__ == "__main__":
    main()
