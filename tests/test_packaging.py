"""Tests for packaging/: the systemd unit, the example production configuration, and the
package's dependencies as pyproject.toml states them."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest

from rulesd.config import CREDENTIAL_NAME, load_config, resolve_api_key
from rulesd.state.claim import BOOT_ID_VARIABLE

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "packaging" / "rulesd.service"
CONFIG = ROOT / "packaging" / "rulesd.yaml"
INSTALLED_RULESD = "/usr/local/bin/rulesd"
MAX_EXPOSURE = 2.0
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def systemd_analyze() -> str:
    """The systemd-analyze binary; a missing one fails the test instead of skipping it."""
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail(
            "systemd-analyze not found: install Debian's `systemd` package "
            "(apt-get install --no-install-recommends systemd); .ci/run does"
        )
    return path


def rulesd_script() -> str:
    """The `rulesd` entry point of the environment running the tests."""
    beside_python = Path(sys.executable).parent / "rulesd"
    found = str(beside_python) if beside_python.exists() else shutil.which("rulesd")
    if found is None:
        pytest.fail("no `rulesd` script beside the Python running the tests: pip install -e .")
    return found


def unit_settings(text: str) -> dict[str, list[str]]:
    """Every `Key=value` of a unit file, values in order of appearance."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart= pointing at this environment's rulesd, which verify requires to exist."""
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_RULESD} " in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={INSTALLED_RULESD} ", f"ExecStart={rulesd_script()} "))
    return copy


def run(argv: list[str], stdin: IO[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, stdin=stdin, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)


def test_unit_passes_systemd_analyze_verify(unit_copy: Path) -> None:
    """`systemd-analyze verify` accepts the unit without a single warning about it."""
    result = run([systemd_analyze(), "verify", "--man=no", str(unit_copy)])
    about_unit = [line for line in result.stderr.splitlines() if unit_copy.name in line or str(unit_copy) in line]
    assert [] == about_unit
    assert 0 == result.returncode, result.stderr


def test_unit_exposure_is_at_most_two(unit_copy: Path) -> None:
    """`systemd-analyze security --offline=yes` rates the sandbox 2.0 or better."""
    result = run([systemd_analyze(), "security", "--offline=yes", str(unit_copy)])
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert found is not None, f"no exposure level (systemd >= 252 needed):\n{result.stdout}{result.stderr}"
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("Type", ["notify"]),
        ("ExecStart", [f"{INSTALLED_RULESD} run --config /etc/rulesd/rulesd.yaml"]),
        ("ExecReload", ["/bin/kill -HUP $MAINPID"]),
        ("WatchdogSec", ["30s"]),
        ("DynamicUser", ["yes"]),
        ("StateDirectory", ["rulesd"]),
        ("ConfigurationDirectory", ["rulesd"]),
        ("LoadCredential", [f"{CREDENTIAL_NAME}:/etc/rulesd/opsgenie.key"]),
        ("MemoryDenyWriteExecute", ["yes"]),
        ("LimitCORE", ["0"]),
        # The sender placed on the reader's CPU while it delivers (rulesd.shared_cpu); EPERM not SIGSYS.
        ("SystemCallFilter", ["@system-service", "~@privileged @resources", "sched_setaffinity"]),
        ("SystemCallErrorNumber", ["EPERM"]),
        # ProcSubset=pid hides /proc/sys: the boot id rulesd.state.claim tells a crashed holder by.
        ("ProcSubset", ["pid"]),
        ("Environment", [f"{BOOT_ID_VARIABLE}=%b"]),
    ],
)
def test_unit_setting(key: str, expected: list[str]) -> None:
    """The settings the daemon's behaviour depends on, e.g. the credential name rulesd.config reads."""
    assert expected == unit_settings(UNIT.read_text()).get(key)


def test_example_config_passes_rulesd_check(tmp_path: Path) -> None:
    """`rulesd check --config` accepts the example, its rules directory pointed at the repository's rules/."""
    copy = tmp_path / "rulesd.yaml"
    copy.write_text(CONFIG.read_text().replace("[/etc/rulesd/rules.d]", f"[{ROOT / 'rules'}]"))
    result = run([rulesd_script(), "check", "--config", str(copy)])
    assert 0 == result.returncode, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("OK: ")


def test_example_config_s_commented_sources_pass_rulesd_check(tmp_path: Path) -> None:
    """The `sources:` example, uncommented in place of `source:`, is a valid configuration."""
    lines = CONFIG.read_text().replace("[/etc/rulesd/rules.d]", f"[{ROOT / 'rules'}]").splitlines()
    start = lines.index("# sources:")
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("# "))
    source = lines.index("source:")
    source_end = next(i for i in range(source + 1, len(lines)) if lines[i] and not lines[i].startswith(" "))
    example = [line[2:] for line in lines[start:end]]
    copy = tmp_path / "rulesd.yaml"
    copy.write_text("\n".join(lines[:source] + lines[source_end:start] + example + lines[end:]) + "\n")
    result = run([rulesd_script(), "check", "--config", str(copy)])
    assert 0 == result.returncode, result.stdout + result.stderr + copy.read_text()
    assert ["app", "sshd"] == [s.name for s in load_config(str(copy), environ={}).sources]


def test_example_config_uses_systemd_directories_and_credential(tmp_path: Path) -> None:
    """State goes to $STATE_DIRECTORY and the API key comes from $CREDENTIALS_DIRECTORY."""
    (tmp_path / CREDENTIAL_NAME).write_text("key-from-credential\n")
    environ = {"STATE_DIRECTORY": "/var/lib/rulesd", "CREDENTIALS_DIRECTORY": str(tmp_path)}
    config = load_config(str(CONFIG), environ=environ)
    assert ("/etc/rulesd/rules.d",) == config.rules
    assert ("file", ("/var/log/app/*.jsonl",)) == (config.source.type, config.source.paths)
    assert "/var/lib/rulesd" == config.state_dir
    assert "127.0.0.1:9464" == config.metrics_listen
    assert "key-from-credential" == resolve_api_key(config.opsgenie, environ)


MDWE_WRAPPER = f"""
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit(77)
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_daemon_runs_without_writable_executable_memory() -> None:
    """The demo runs under the kernel's MDWE (PR_SET_MDWE), which MemoryDenyWriteExecute=yes mirrors."""
    argv = [
        sys.executable,
        "-c",
        MDWE_WRAPPER,
        rulesd_script(),
        "run",
        "--dry-run",
        "--config",
        str(ROOT / "examples" / "rulesd.yaml"),
    ]
    with (ROOT / "examples" / "events.jsonl").open() as events:
        result = run(argv, stdin=events)
    if result.returncode == 77:
        pytest.skip("the kernel has no PR_SET_MDWE (Linux >= 6.3)")
    assert 0 == result.returncode, result.stderr
    assert result.stdout.strip()


# What rulesd's sources take from msgspec that its first releases lack, with the release that
# brought it (msgspec's changelog, each checked against the release before): `force_setattr`,
# and a `!=` that asks a struct's own `__eq__` (0.18.4 compared every field).
MSGSPEC_ADDED = {"force_setattr": (0, 18, 5), "a struct's own __eq__": (0, 18, 5)}


def msgspec_needs(tree: ast.Module) -> set[str]:
    """The entries of MSGSPEC_ADDED a module uses."""
    needs = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("msgspec"):
            needs.update(alias.name for alias in node.names if alias.name in MSGSPEC_ADDED)
        elif isinstance(node, ast.ClassDef) and "msgspec.Struct" in map(ast.unparse, node.bases):
            methods = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
            needs.update(["a struct's own __eq__"] if "__eq__" in methods else [])
    return needs


def test_the_msgspec_floor_has_what_rulesd_uses() -> None:
    """pip keeps an installed msgspec that meets the floor: under 0.18.4, which `msgspec>=0.18`
    took, every command failed at import (no `force_setattr`), and two new_value kinds equal by
    `==` were different by `!=`."""
    needs = set()
    for source in sorted((ROOT / "rulesd").rglob("*.py")):
        needs |= msgspec_needs(ast.parse(source.read_text(), str(source)))
    assert set(MSGSPEC_ADDED) <= needs  # (else the table is out of date)
    floor = re.search(r'"msgspec>=([0-9.]+)', (ROOT / "pyproject.toml").read_text())
    assert floor is not None
    version = tuple(int(part) for part in floor.group(1).split("."))
    assert [] == [need for need in sorted(needs) if version < MSGSPEC_ADDED[need]]
