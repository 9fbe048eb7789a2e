"""Running the real `rulesd` command in a subprocess: the one helper every CLI test uses."""

from __future__ import annotations

import os
import resource
import site
import subprocess
import sys
from pathlib import Path


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without systemd's NOTIFY_* and rulesd's own RULESD_* variables
    (a developer's key or socket must not leak into a test), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "RULESD_"))}
    env.update(extra or {})
    return env


def rulesd_cli(
    *args: str,
    stdin: bytes | str = b"",
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    rlimit: tuple[int, int] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m rulesd ARGS` to its end; its output as text (undecodable bytes replaced),
    so that tests may feed any bytes, invalid UTF-8 included, on standard input. `rlimit`: a
    resource limit of the process (`(resource.RLIMIT_FSIZE, 512)`), as `ulimit` sets one."""

    def set_limit() -> None:
        if rlimit is not None:
            resource.setrlimit(rlimit[0], (rlimit[1], resource.RLIM_INFINITY))

    result = subprocess.run(
        [sys.executable, "-m", "rulesd", *args],
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=clean_env(env),
        preexec_fn=set_limit if rlimit is not None else None,
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )


# The command line run by `runpy` in a child's own interpreter (`python -c SCRIPT ARGS`, the
# script having imported `runpy` and `sys` and set up what it watches).
RUN_RULESD = """
sys.argv = ["rulesd", *sys.argv[1:]]
try:
    runpy.run_module("rulesd", run_name="__main__")
except SystemExit:
    pass
"""

# `rulesd ARGS` run by `runpy` in a fresh interpreter, then which of some modules it imported.
_IMPORTED = """
import runpy, sys
modules = sys.argv[1].split(",")
sys.argv = ["rulesd", *sys.argv[2:]]
try:
    runpy.run_module("rulesd", run_name="__main__")
except SystemExit:
    pass
print(sorted(m for m in modules if m in sys.modules), file=sys.stderr)
"""


# As `pip install .` (not `-e`) runs rulesd: the tree and site-packages put on the path by hand
# under `python -S`, so that no `.pth` file runs, the editable install's finder among them (it
# imports `pathlib`, `urllib.parse`, ... before rulesd starts, which would hide rulesd's own).
_AS_INSTALLED = f"""
import sys
sys.path[:0] = [{str(Path(__file__).resolve().parent.parent)!r}, *{site.getsitepackages()!r}]
"""


def imported_by(
    modules: tuple[str, ...],
    *args: str,
    stdin: str = "",
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    installed: bool = False,
) -> tuple[str, str]:
    """Which of `modules` `rulesd ARGS` imported (the sorted list as Python prints it), and
    what it wrote to standard output; `installed`: run as an installed (not editable) rulesd."""
    command = [sys.executable, *(["-S", "-c", _AS_INSTALLED + _IMPORTED] if installed else ["-c", _IMPORTED])]
    done = subprocess.run(
        [*command, ",".join(modules), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(env),
        timeout=60,
        check=False,
    )
    return done.stderr.strip().splitlines()[-1], done.stdout
