"""`python -m rulesd` in an environment that lacks one of rulesd's dependencies."""

from __future__ import annotations

import subprocess
import sys

# Runs rulesd's __main__ with imports of `argcomplete` refused, as in a virtualenv made before
# rulesd depended on it.
BLOCKED = """
import runpy, sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name == "argcomplete" or name.startswith("argcomplete."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Refuse())
sys.argv = ["rulesd", "check", "rules"]
runpy.run_module("rulesd", run_name="__main__")
"""


def test_a_missing_dependency_says_what_to_install_instead_of_a_traceback() -> None:
    result = subprocess.run([sys.executable, "-c", BLOCKED], capture_output=True, text=True, timeout=60)
    assert 2 == result.returncode, result.stderr
    assert "Traceback" not in result.stderr
    assert "the Python module 'argcomplete' is not installed" in result.stderr
    assert "pip install ." in result.stderr
