"""Starting the real `rulesd run` process for end-to-end tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import yaml

from tests.fake_opsgenie import FakeOpsGenie
from tests.run_cli import clean_env

if TYPE_CHECKING:
    from rulesd.daemon import Daemon, Parts

API_KEY = "e2e-secret-key-0123456789"
RULES = """
rules:
  - name: page-on-demand
    match: {kind: page}
    alert:
      message: "page {id}"
      alias: "page-{id}"
      priority: P2
      tags: [e2e]
"""


PAGE_RULE = "name: r\nmatch: {kind: page}\nalert: {alias: 'p-{id}'}\n"


def stdin_config(tmp_path: Path, rules: str, **extra: Any) -> Path:
    """A config reading stdin, with `rules` as its one rule file and `extra` keys."""
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "r.yaml").write_text(rules)
    config = {"source": {"type": "stdin"}, "state_dir": "state", **extra}
    path = tmp_path / "rulesd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def page(i: int) -> dict[str, object]:
    """An event that PAGE_RULE (and the workspace's rule) pages for, with alias `p-<i>`."""
    return {"kind": "page", "id": i}


def aliases(server: FakeOpsGenie) -> list[str]:
    """The aliases of the alerts `server` received, in order."""
    return [r.json()["alias"] for r in server.requests if r.method == "POST"]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """The status and body of a GET, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@contextmanager
def daemon_parts(config_path: Path, clock: Callable[[], float]) -> Iterator[Parts]:
    """The real parts of a daemon for the config at `config_path` on the wall clock `clock`,
    for a test that turns its loop by hand; closed and unlocked after."""
    from rulesd.config import load_config
    from rulesd.daemon import build_parts
    from rulesd.rules.loader import load_ruleset

    config = load_config(str(config_path))
    parts = build_parts(config, load_ruleset(config.rules), environ={}, clock=clock)
    try:
        yield parts
    finally:
        for source in parts.sources.values():
            source.close()
        parts.store.close()
        if parts.lock is not None:
            parts.lock.release()


def reload_between_batches(
    daemon: Daemon, step: Callable[[], object], wall: list[float], rule_file: Path, events: Path, field: str
) -> None:
    """Turn `daemon`'s loop by hand with no idle moment after a reload: `step` reads and commits
    the lines in `events` (an absence's heartbeat), the absence fires while idle (the wall
    clock moved on), the rule file is saved with one rule that pages on `{field: other}`,
    reloaded, and an event no rule matches is appended and read by `step` at once (matched
    events would take what the engine holds anyway)."""
    step()
    wall[0] += 5
    daemon._tick()  # the absence fires
    rule_file.write_text(f"name: other\nmatch: {{{field}: other}}\n")
    assert daemon.reload()
    with open(events, "a") as fh:
        fh.write(json.dumps({field: "unmatched"}) + "\n")
    step()


def install_key(path: Path) -> Path:
    """API_KEY in a key file at `path`, installed a while before the daemon starts, as in use:
    a key file written this very moment is waited for at start until it has stood still."""
    path.write_text(API_KEY + "\n")
    path.chmod(0o600)  # as the README says to install it
    os.utime(path, (time.time() - 60, time.time() - 60))
    return path


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll `predicate` until it holds or `timeout` passes (for conditions no event signals)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Workspace:
    """A config, rule directory, state directory, key file and event file under tmp_path."""

    def __init__(self, root: Path, alert_url: str, **overrides: Any) -> None:
        self.root = root
        self.rules = root / "rules"
        self.rules.mkdir()
        (self.rules / "rules.yaml").write_text(RULES)
        self.events = root / "events.jsonl"
        self.events.touch()
        self.key_file = install_key(root / "opsgenie.key")
        config: dict[str, Any] = {
            "rules": ["rules"],
            "source": {"type": "file", "path": "events.jsonl", "start_at": "beginning"},
            "state_dir": "state",
            "opsgenie": {"api_key_file": "opsgenie.key", "alert_url": f"{alert_url}/v2/alerts", "timeout_s": 2},
        }
        for key, value in overrides.items():
            if value is None:  # `source=None`: no `source:` key (to give `sources:` instead)
                config.pop(key, None)
            else:
                config[key] = value
        self.config = root / "rulesd.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.processes: list[DaemonProcess] = []

    def append(self, *events: dict[str, Any] | bytes) -> None:
        """Append events (dicts as JSON lines, bytes as they are) in one write."""
        data = b"".join(e if isinstance(e, bytes) else json.dumps(e).encode() + b"\n" for e in events)
        with open(self.events, "ab") as fh:
            fh.write(data)

    def start(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        stdin: int = subprocess.DEVNULL,
        wrapper: tuple[str, ...] = (),
    ) -> DaemonProcess:
        """Start `rulesd run` on this workspace and wait until it is running (`stdin`:
        subprocess.PIPE for a stdin source that stays open; the pipe is `proc.stdin`; `wrapper`:
        a command that runs it, as `dead_resolver.wrapper` gives)."""
        args = ("run", "--config", str(self.config), *args)
        process = DaemonProcess(self.root, list(args), env, stdin=stdin, wrapper=wrapper)
        self.processes.append(process)
        assert process.wait_for_log("rulesd started"), process.output()
        return process

    def all_output(self) -> str:
        """Everything every process of this workspace printed."""
        return "".join(p.output() for p in self.processes)

    def stop_all(self) -> None:
        for p in self.processes:
            p.kill()


class DaemonProcess:
    """One `rulesd` process with its output captured to files."""

    count = 0
    running: ClassVar[list[DaemonProcess]] = []  # killed after each test by tests/conftest.py

    def __init__(
        self,
        root: Path,
        args: list[str],
        env: dict[str, str] | None,
        launcher: tuple[str, ...] = ("-m", "rulesd"),
        stdin: int = subprocess.DEVNULL,
        wrapper: tuple[str, ...] = (),
    ) -> None:
        """`launcher`: how python starts rulesd (`-c CODE`, to run it with a constant changed);
        `wrapper`: a command that runs python, which becomes the process (keeping its id)."""
        DaemonProcess.count += 1
        self.stdout_path = root / f"stdout-{DaemonProcess.count}.txt"
        self.stderr_path = root / f"stderr-{DaemonProcess.count}.txt"
        full_env = clean_env(env)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*wrapper, sys.executable, *launcher, "--log-level", "debug", *args],
                stdout=out,
                stderr=err,
                stdin=stdin,
                env=full_env,
                cwd=root,
            )
        DaemonProcess.running.append(self)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr()

    def wait_for_log(self, text: str, timeout: float = 15.0) -> bool:
        return wait_until(lambda: text in self.stderr() or self.proc.poll() is not None, timeout) and (
            text in self.stderr()
        )

    def metrics_url(self) -> str:
        """The /metrics URL the daemon logged at start (`metrics.listen: 127.0.0.1:0`)."""
        found = re.search(r"metrics on (http://\S+/metrics)", self.stderr())
        assert found is not None, self.stderr()
        return found.group(1)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM (so it can stop its own children), then SIGKILL if it does not exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
