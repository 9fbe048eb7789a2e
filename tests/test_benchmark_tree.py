"""The whole-process benchmarks run the `rulesd` they say: the first on PYTHONPATH, else their
checkout, wherever they are started from (a tree compared side by side is put on PYTHONPATH)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What a benchmark script does: its directory first on sys.path, `process` imported, a child run.
DRIVER = """
import subprocess, sys
sys.path.insert(0, sys.argv[1])
import process
child = subprocess.run([*process.RULESD, "--version"], capture_output=True, text=True)
print(child.stdout.strip(), flush=True)
print(process.ran())
"""


def other_tree(root: Path) -> Path:
    """A tree whose `rulesd` says it is itself when run."""
    package = root / "rulesd"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text("print('the other tree')\n")
    return package / "__init__.py"


def driven(directory: Path, env: dict[str, str]) -> list[str]:
    """What `DRIVER` prints, started in `directory`: the child's output, then `process.ran()`."""
    command = [sys.executable, "-c", DRIVER, str(ROOT / "benchmarks")]
    done = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True)
    return done.stdout.splitlines() or [done.stderr]


@pytest.mark.parametrize("relative", [False, True])
def test_a_tree_on_pythonpath_is_run_even_from_inside_the_checkout(tmp_path: Path, relative: bool) -> None:
    """Started from the checkout's directory, `python -m rulesd` ran the checkout's `rulesd`
    (the working directory first on sys.path), not the tree PYTHONPATH named: both trees
    measured alike. A relative PYTHONPATH names the same tree in a child started elsewhere."""
    init = other_tree(tmp_path / "old")
    named = os.path.relpath(tmp_path / "old", ROOT) if relative else str(tmp_path / "old")
    env = {**os.environ, "PYTHONPATH": named}
    assert ["the other tree", str(init)] == driven(ROOT, env)


def test_the_checkout_is_run_without_pythonpath_from_anywhere(tmp_path: Path) -> None:
    """Without PYTHONPATH, from another checkout's directory: this checkout's `rulesd`."""
    other_tree(tmp_path)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    version = subprocess.run([sys.executable, "-m", "rulesd", "--version"], cwd=ROOT, capture_output=True, text=True)
    assert [version.stdout.strip(), str(ROOT / "rulesd" / "__init__.py")] == driven(tmp_path, env)
