"""Regular expressions compiled when first used: the same pattern, compiled once, and not at
import."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

from rulesd.deferred_regex import when_used

# Modules whose patterns only a rare input or a mistake needs.
RARE = {
    "rulesd.printable",
    "rulesd.rules.foreign",
    "rulesd.rules.misplaced",
    "rulesd.rules.regex_errors",
    "rulesd.alerting.payload",
    "rulesd.events",
    "rulesd.logs",
    "rulesd.cli",  # (`--time-field`'s check)
    "rulesd.rules.lists",  # (a list's name: a rule set with named lists)
}


def test_a_pattern_is_compiled_at_its_first_use_and_once() -> None:
    """The function gives the compiled pattern, the same object each time."""
    digits = when_used(rb"\d+", re.ASCII)
    assert re.compile(rb"\d+", re.ASCII) == digits()
    assert digits() is digits()


def test_importing_the_command_line_compiles_no_rare_pattern() -> None:
    """`import rulesd.cli` (every command's start) compiles none of the patterns that only a rare
    input or a mistake needs: each cost 0.1–0.5 ms of every start."""
    code = textwrap.dedent(
        """
        import json, re, sys
        real, compiled = re.compile, []
        def recording(pattern, flags=0):
            compiled.append((sys._getframe(1).f_globals.get("__name__", ""), str(pattern)))
            return real(pattern, flags)
        re.compile = recording
        import rulesd.cli
        print(json.dumps([[name, pattern] for name, pattern in compiled if name.startswith("rulesd")]))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    compiled = json.loads(done.stdout)
    compiling = {name for name, _ in compiled}
    assert "rulesd.durations" in compiling  # (the recording sees rulesd's modules)
    assert set() == RARE & compiling
    # A template's `{{field}}` (a warning: a warm start, which says the kept ones, looks for none).
    assert [] == [pattern for name, pattern in compiled if name == "rulesd.rules.templates" and r"\{\{" in pattern]
