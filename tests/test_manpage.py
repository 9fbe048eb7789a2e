"""The committed man page, `man/rulesd.1`: generated from the parser, up to date, and clean roff."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rulesd.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "man" / "rulesd.1"
REGENERATE = ".venv/bin/python man/make_manpage.py"


def test_committed_man_page_is_what_the_parser_generates() -> None:
    """A change to the command line without a regenerated page fails here, with the difference."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "man" / "make_manpage.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == result.returncode, f"man/rulesd.1 is out of date; run `{REGENERATE}`:\n{result.stderr}"


def test_man_page_names_every_command_and_renders_without_warnings() -> None:
    """groff reads the page without a warning, and every subcommand and option (but --help) is in it."""
    groff = shutil.which("groff")
    if groff is None:
        pytest.fail("groff not found: install Debian's groff-base (apt-get install groff-base); .ci/run does")
    lint = subprocess.run([groff, "-man", "-ww", "-z", str(PAGE)], capture_output=True, text=True, check=False)
    assert (0, "") == (lint.returncode, lint.stderr)
    text = PAGE.read_text(encoding="utf-8").replace("\\-", "-")  # roff writes a hyphen as \-
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        assert f"rulesd {name}" in text
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):  # argparse-manpage leaves -h out: man is the help
                continue
            for option in action.option_strings:
                assert option in text, (name, option)
