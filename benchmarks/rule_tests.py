"""`rulesd test` over many test files that share one large rule set.

    python benchmarks/rule_tests.py [--shape ops] [--rules 1000] [--files 50] [--tests 4]
                                    [--events 10] [--repeat 5] [--tree DIR ...] [--quick]

Writes `--files` test files, each naming the shape's rule file of `--rules` rules and holding
`--tests` tests of `--events` events (consecutive events of the shape's event file, one second
apart, expecting no alert: those whose events fire fail, and their reports are part of the
output). Then runs the real `rulesd test` over all of them, CPU time (user + system) of the
child, best and median of `--repeat`.

`--tree DIR` (repeatable) runs rulesd from DIR (a directory holding a `rulesd` package, put
first on PYTHONPATH) instead of this checkout; with several trees the runs alternate, tree by
tree, pass by pass, so that a change in the machine's load weighs on each alike, and each
tree's output (stdout and exit status) must be byte for byte the first tree's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate
from process import measure
from tree import RULESD


def write_test_files(root: Path, rules: Path, events: Path, files: int, tests: int, per_test: int) -> list[Path]:
    """`files` test files under `root`, each over the rule file `rules`."""
    paths = []
    with open(events, "rb") as lines:
        for f in range(files):
            file_tests: list[dict[str, Any]] = []
            for t in range(tests):
                chunk = [orjson.loads(line) for line in islice(lines, per_test)]
                steps = [{"at": f"{i}s", "event": event} for i, event in enumerate(chunk)]
                file_tests.append({"name": f"file {f} test {t}", "events": steps, "expect_alerts": []})
            path = root / f"t{f:03d}.test.yaml"
            path.write_text(yaml.safe_dump({"rule_files": [str(rules)], "tests": file_tests}, sort_keys=False))
            paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="ops")
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--tests", type=int, default=4)
    parser.add_argument("--events", type=int, default=10, help="events per test")
    parser.add_argument("--seed", type=int, default=generate.DEFAULT_SEED)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tree", action="append", default=[], help="a directory holding a rulesd package")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 100 rules, 5 files, best of 1")
    args = parser.parse_args()
    if args.quick:
        args.rules, args.files, args.repeat = 100, 5, 1
    out = generate.DATA_DIR
    needed = max(1000, args.files * args.tests * args.events)
    generate.write_all(out, needed, args.seed, args.shape, (args.rules,))
    rules = generate.rules_path(out, args.rules, args.seed, args.shape)
    events = generate.events_path(out, needed, args.seed, args.shape)
    trees = [str(Path(tree).resolve()) for tree in args.tree] or [""]
    print(
        f"rulesd test, {args.shape}, {args.rules} rules, {args.files} files of {args.tests} tests of {args.events}"
        f" events, CPU time, {args.repeat} passes, load {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = write_test_files(root, rules, events, args.files, args.tests, args.events)
        os.chdir(root)  # `python -m` puts the working directory first on sys.path: a checkout's rulesd there wins
        command = [*RULESD, "test", *map(str, files)]
        cpu: dict[str, list[float]] = {tree: [] for tree in trees}
        outputs: dict[str, bytes] = {}
        for _ in range(args.repeat):
            for tree in trees:
                env = dict(os.environ, PYTHONPATH=tree) if tree else None
                stdout = root / "stdout.txt"
                cpu[tree].append(measure(command, stdout=stdout, env=env, exits=(0, 1)).cpu)  # 1: a test failed
                output = stdout.read_bytes()
                if outputs.setdefault(tree, output) != output or outputs[trees[0]] != output:
                    raise SystemExit(f"the output of {tree or 'this checkout'} differs from {trees[0] or 'its own'}")
        for tree in trees:
            times = cpu[tree]
            print(f"  {tree or 'this checkout':<40} best {min(times):.3f} s  median {statistics.median(times):.3f} s")
        last = outputs[trees[0]].decode().splitlines()[-1]
        print(f"  output identical across trees: {last}; load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
