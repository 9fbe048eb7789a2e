"""Where start-up time goes: imports, YAML, schema validation, compiling rules, the index.

    python benchmarks/startup.py [--shape ops] [--rules 1000] [--repeat N] [--quick]

Whole processes first (CPU time of the child, best of N): the bare interpreter, the
interpreter importing rulesd's command line, `rulesd check RULES` and `rulesd replay` over
an empty file. Then in this process, each phase of loading the rule file timed alone
(best of N): reading the YAML with line marks, the JSON Schema, compiling every rule, and
building the engine (its index, and whatever the index compiles).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate
from process import RULESD, best

from rulesd.engine import Engine
from rulesd.rules.compile import compile_rule
from rulesd.rules.loader import _rules_in, load_ruleset
from rulesd.validation import schema_violations
from rulesd.yamldoc import read_yaml


def phase(repeat: int, run: Callable[[], Any]) -> float:
    """Least CPU seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        gc.collect()
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
    print(f"start-up, {args.shape}, {args.rules} rules, CPU time, best of {args.repeat}, load {os.getloadavg()[0]:.2f}")
    whole = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import rulesd.cli'": [sys.executable, "-c", "import rulesd.cli"],
        "rulesd check RULES": [*RULESD, "check", str(rules)],
        "rulesd replay --rules RULES EMPTY": [*RULESD, "replay", "--rules", str(rules), str(empty)],
    }
    for label, command in whole.items():
        print(f"  {label:<36} {best(args.repeat, command).cpu:.3f} s")

    doc = read_yaml(str(rules))
    violations = schema_violations(doc, "rule")
    items = list(_rules_in(doc))
    ruleset = load_ruleset([rules])
    phases = {
        "read YAML with marks": lambda: read_yaml(str(rules)),
        "JSON Schema validation": lambda: schema_violations(doc, "rule"),
        "compile rules": lambda: [compile_rule(raw, doc, base, violations) for raw, base in items],
        "engine (index)": lambda: Engine(ruleset, saved=False),
        "all of load_ruleset": lambda: load_ruleset([rules]),
    }
    print("in process:")
    for label, run in phases.items():
        print(f"  {label:<36} {phase(args.repeat, run):.3f} s")


if __name__ == "__main__":
    main()
