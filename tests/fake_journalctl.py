"""A stand-in `journalctl` for end-to-end tests of the real daemon: it replays the journal
entries of a JSON-lines file (following it as it grows), honours --unit and --after-cursor,
and records each command line it was started with."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

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


def entry(i: int, unit: str, message: str, **fields: str) -> dict[str, object]:
    """Journal entry number `i` of `unit` (its cursor names `i`)."""
    return {
        "__CURSOR": f"s=abc;i={i:x};b=boot;m={i};t={i};x=0",
        "__REALTIME_TIMESTAMP": str(1718035200000000 + i),
        "_SYSTEMD_UNIT": unit,
        "_HOSTNAME": "web-01",
        "PRIORITY": "3",
        "_PID": "42",
        "SYSLOG_IDENTIFIER": "app",
        "MESSAGE": message,
        **fields,
    }


class FakeJournal:
    """The stand-in on a PATH of its own, the journal it replays and the log of its runs."""

    def __init__(self, root: Path) -> None:
        bin_dir = root / "bin"
        bin_dir.mkdir()
        script = bin_dir / "journalctl"
        script.write_text(STAND_IN.format(python=sys.executable))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        self.journal = root / "journal.jsonl"
        self.journal.touch()
        self.calls = root / "calls.jsonl"
        self.env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "STAND_IN_JOURNAL": str(self.journal),
            "STAND_IN_LOG": str(self.calls),
        }

    def write(self, *entries: dict[str, object]) -> None:
        """Append entries to the journal."""
        with self.journal.open("a") as fh:
            fh.writelines(json.dumps(e) + "\n" for e in entries)

    def runs(self) -> list[list[str]]:
        """The command line of each journalctl run so far."""
        if not self.calls.exists():
            return []
        return [json.loads(line) for line in self.calls.read_text().splitlines()]
