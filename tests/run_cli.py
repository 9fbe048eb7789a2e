"""Running the real `rulesd` command in a subprocess: the one helper every CLI test uses."""

from __future__ import annotations

import os
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
) -> subprocess.CompletedProcess[str]:
    """Run `python -m rulesd ARGS` to its end; its output as text (undecodable bytes replaced),
    so that tests may feed any bytes, invalid UTF-8 included, on standard input."""
    result = subprocess.run(
        [sys.executable, "-m", "rulesd", *args],
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=clean_env(env),
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )
