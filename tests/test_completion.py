"""Shell completion: `rulesd completion bash|zsh|fish`, driven in the real shells.

bash completes through the function the script registers with `complete` (called as bash calls
it, with COMP_WORDS and COMP_LINE); fish through `complete --do-complete`; zsh's script is
checked by zsh's own parser. Each TAB runs the real `rulesd`, found on PATH.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rulesd.cli import build_parser
from rulesd.completion import RULE_OPTION
from tests.run_cli import clean_env, rulesd_cli

BIN = Path(sys.executable).parent  # where this environment's `rulesd` script is
RULES = "rules:\n" + "".join(f"  - {{name: {n}, match: {{a: 1}}}}\n" for n in ("disk-full", "disk-slow", "login"))
BASH_DRIVER = r"""
source "$1"
spec=$(complete -p rulesd) || exit 3
func=${spec##*-F }; func=${func%% *}
COMP_LINE=$2; COMP_POINT=${#COMP_LINE}; COMP_TYPE=9
read -ra COMP_WORDS <<< "$COMP_LINE"
[[ $COMP_LINE == *' ' ]] && COMP_WORDS+=('')
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
"$func" rulesd "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""
# A `rulesd` whose parser also has a command taking `--rule`, as `explain` and `state` do: the
# real main() attaches completion to it, which is what proves the mechanism generic.
PROBE = """#!{python}
import argparse, sys
from rulesd import cli

original = cli._parser

def with_probe():
    parser = original()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    probe = sub.add_parser("probe")
    probe.add_argument("--rule", metavar="NAME")
    probe.add_argument("--rules", action="append", metavar="PATH")
    probe.add_argument("--config", metavar="FILE")
    return parser

cli._parser = with_probe
sys.exit(cli.main())
"""


def shell(name: str) -> str:
    """The shell's path; a missing shell fails the test (`.ci/run` installs zsh and fish)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: apt-get install {name} (.ci/run does)")
    return path


def script(tmp_path: Path, which: str) -> Path:
    """`rulesd completion WHICH`, written to a file."""
    result = rulesd_cli("completion", which)
    assert (0, "") == (result.returncode, result.stderr)
    path = tmp_path / f"rulesd.{which}"
    path.write_text(result.stdout)
    return path


def bash_complete(tmp_path: Path, line: str, bin_dir: Path = BIN, cwd: Path | None = None) -> list[str]:
    """What bash offers for `line` (the cursor at its end), sorted."""
    env = clean_env({"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    result = subprocess.run(
        [shell("bash"), "--norc", "--noprofile", "-c", BASH_DRIVER, "driver", str(script(tmp_path, "bash")), line],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or tmp_path,
        timeout=60,
        check=False,
    )
    assert 0 == result.returncode, result.stderr
    return sorted(word.strip() for word in result.stdout.splitlines() if word.strip())


def commands() -> dict[str, argparse.ArgumentParser]:
    """The real parser's subcommands."""
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_bash_completes_commands_options_and_choices(tmp_path: Path) -> None:
    """Commands, a command from its prefix, options, and option and argument choices."""
    cases = {
        "rulesd ": sorted(commands()),
        "rulesd ch": ["check"],
        "rulesd check --f": ["--format"],
        "rulesd check --format ": ["github", "json", "text"],
        "rulesd test --j": ["--junit"],
        "rulesd schema ": ["config", "rule", "test"],
        "rulesd completion ": ["bash", "fish", "zsh"],
        "rulesd --log-level w": ["warning"],
    }
    assert cases == {line: bash_complete(tmp_path, line) for line in cases}


def test_bash_completes_rule_names_for_every_rule_option(tmp_path: Path) -> None:
    """`--rule <TAB>` offers the rule names of the rules the command line names: `--rules PATH`,
    else the config's `rules`, else ./rules; for the real commands with `--rule` and for a new one."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "r.yaml").write_text(RULES)
    (tmp_path / "rulesd.yaml").write_text("rules: [mine]\n")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "other.yaml").write_text("name: from-default-dir\nmatch: {a: 1}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rulesd").write_text(PROBE.format(python=sys.executable))
    (bin_dir / "rulesd").chmod(0o755)
    config = str(tmp_path / "rulesd.yaml")
    real = [name for name, sub in commands().items() if any(RULE_OPTION in a.option_strings for a in sub._actions)]
    assert {"explain", "state"} <= set(real)
    for command in real:
        assert ["disk-full", "disk-slow", "login"] == bash_complete(
            tmp_path, f"rulesd {command} --config {config} {RULE_OPTION} "
        ), command
    assert {
        "config": ["disk-full", "disk-slow", "login"],
        "prefix": ["disk-full", "disk-slow"],
        "rules": ["from-default-dir"],
        "default": ["from-default-dir"],
        "invalid": [],
    } == {
        "config": bash_complete(tmp_path, f"rulesd probe --config {config} --rule ", bin_dir),
        "prefix": bash_complete(tmp_path, f"rulesd probe --config {config} --rule disk", bin_dir),
        "rules": bash_complete(tmp_path, f"rulesd probe --config {config} --rules rules --rule ", bin_dir),
        "default": bash_complete(tmp_path, "rulesd probe --rule ", bin_dir),
        "invalid": bash_complete(tmp_path, "rulesd probe --rules rulesd.yaml --rule ", bin_dir),
    }


def test_fish_completes_through_its_script(tmp_path: Path) -> None:
    """fish parses the script, and `complete --do-complete` offers what the parser allows."""
    fish = shell("fish")
    path = script(tmp_path, "fish")
    assert 0 == subprocess.run([fish, "--no-execute", str(path)], timeout=60, check=False).returncode
    env = clean_env({"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})

    def complete(line: str) -> list[str]:
        command = f"source {path}; complete --do-complete '{line}'"
        result = subprocess.run(
            [fish, "--no-config", "-c", command], capture_output=True, text=True, env=env, timeout=60, check=True
        )
        return sorted(word.split("\t")[0].strip() for word in result.stdout.splitlines())

    assert (["check"], ["github", "json", "text"]) == (complete("rulesd ch"), complete("rulesd check --format "))


def test_zsh_script_is_valid_zsh_and_registers_rulesd(tmp_path: Path) -> None:
    """zsh parses the script without error (-n), and loading it under compinit registers rulesd."""
    zsh = shell("zsh")
    path = script(tmp_path, "zsh")
    assert 0 == subprocess.run([zsh, "-n", str(path)], timeout=60, check=False).returncode
    command = f"autoload -U compinit && compinit -u -D && source {path} && print -r -- $_comps[rulesd]"
    result = subprocess.run(
        [zsh, "-f", "-c", command], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path
    )
    assert (0, "_python_argcomplete") == (result.returncode, result.stdout.strip()), result.stderr
