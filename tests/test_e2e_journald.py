"""End-to-end: the real `rulesd run` on a journald source, with a stand-in `journalctl` on PATH
that replays recorded journal JSON and honours --after-cursor."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import yaml

from tests.daemon_process import Workspace
from tests.fake_opsgenie import FakeOpsGenie

STAND_IN = """#!{python}
import json, os, sys, time
args = sys.argv[1:]
if args == ["--version"]:
    print("systemd 252 (252.38-1~deb12u1)")
    sys.exit(0)
with open(os.environ["STAND_IN_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
after = next((a.split("=", 1)[1] for a in args if a.startswith("--after-cursor=")), None)
units = [a.split("=", 1)[1] for a in args if a.startswith("--unit=")]
sent, skipping = 0, after is not None
while True:
    with open(os.environ["STAND_IN_JOURNAL"]) as fh:
        entries = [json.loads(line) for line in fh if line.strip()]
    for entry in entries[sent:]:
        sent += 1
        if skipping:
            skipping = entry["__CURSOR"] != after
            continue
        if units and entry.get("_SYSTEMD_UNIT") not in units:
            continue
        sys.stdout.write(json.dumps(entry) + "\\n")
        sys.stdout.flush()
    time.sleep(0.05)
"""

RULE = """
name: app-errors
match: {unit: app.service, message: {startswith: "ERROR"}}
alert: {message: "{message}", alias: "{message}", priority: P2}
"""


def entry(i: int, unit: str, message: str) -> dict[str, object]:
    return {
        "__CURSOR": f"s=abc;i={i:x};b=boot;m={i};t={i};x=0",
        "__REALTIME_TIMESTAMP": str(1718035200000000 + i),
        "_SYSTEMD_UNIT": unit,
        "_HOSTNAME": "web-01",
        "PRIORITY": "3",
        "_PID": "42",
        "SYSLOG_IDENTIFIER": "app",
        "MESSAGE": message,
    }


def test_journald_source_alerts_and_resumes_by_cursor(tmp_path: Path, server: FakeOpsGenie) -> None:
    """Entries of the followed unit alert; after a restart rulesd resumes after the saved cursor."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    journalctl = bin_dir / "journalctl"
    journalctl.write_text(STAND_IN.format(python=sys.executable))
    journalctl.chmod(journalctl.stat().st_mode | stat.S_IXUSR)
    journal = tmp_path / "journal.jsonl"
    calls = tmp_path / "calls.jsonl"

    def write(*entries: dict[str, object]) -> None:
        with journal.open("a") as fh:
            fh.writelines(json.dumps(e) + "\n" for e in entries)

    write(
        entry(1, "app.service", "ERROR one"),
        entry(2, "other.service", "ERROR elsewhere"),
        entry(3, "app.service", "all good"),
        entry(4, "app.service", "ERROR two"),
    )
    ws = Workspace(tmp_path, server.url, source={"type": "journald", "units": ["app.service"], "start_at": "beginning"})
    (ws.rules / "rules.yaml").write_text(RULE)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "STAND_IN_JOURNAL": str(journal),
        "STAND_IN_LOG": str(calls),
    }
    daemon = ws.start(env=env)
    assert server.wait_for(lambda r: len(r) >= 2)
    assert 0 == daemon.terminate()
    write(entry(5, "app.service", "ERROR three"))
    ws.start(env=env)
    assert server.wait_for(lambda r: len(r) >= 3)
    assert ["ERROR one", "ERROR two", "ERROR three"] == [a["message"] for a in server.alerts()]
    first, second = [json.loads(line) for line in calls.read_text().splitlines()]
    assert ["--follow", "--output=json", "--all"] == first[:3]
    assert "--unit=app.service" in first and "--lines=all" in first
    assert f"--after-cursor={entry(4, 'app.service', '')['__CURSOR']}" in second
    config = yaml.safe_load(ws.config.read_text())
    assert "journald" == config["source"]["type"]
