"""`python -m rulesd` in an environment that lacks one of rulesd's dependencies."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Runs rulesd's __main__ with imports of one module refused, as in a virtualenv made before
# rulesd depended on it.
BLOCKED = """
import runpy, sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r} or name.startswith({module!r} + "."):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Refuse())
sys.argv = ["rulesd", *{argv!r}]
runpy.run_module("rulesd", run_name="__main__")
"""


def _run_without(module: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    code = BLOCKED.format(module=module, argv=argv)
    # No rule cache: every rule file is read (a file found in the cache needs no YAML reader).
    env = {**os.environ, "RULESD_CACHE_DIR": ""}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("yaml", ["check", "rules"]),  # imported by every command that reads a YAML file
        ("argcomplete", ["completion", "bash"]),  # imported by the command that needs it
    ],
)
def test_a_missing_dependency_says_what_to_install_instead_of_a_traceback(module: str, argv: list[str]) -> None:
    result = _run_without(module, argv)
    assert 2 == result.returncode, result.stderr
    assert "Traceback" not in result.stderr
    assert f"the Python module {module!r} is not installed" in result.stderr
    assert "pip install ." in result.stderr


def test_a_command_that_does_not_need_the_missing_dependency_runs() -> None:
    result = _run_without("argcomplete", ["schema"])
    assert 0 == result.returncode, result.stderr
    assert '"$schema"' in result.stdout
