"""End-to-end: the real `rulesd run` on a journald source, with a stand-in `journalctl` on PATH
that replays recorded journal JSON and honours --after-cursor."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.daemon_process import Workspace
from tests.fake_journalctl import FakeJournal, entry
from tests.fake_opsgenie import FakeOpsGenie

RULE = """
name: app-errors
match: {unit: app.service, message: {startswith: "ERROR"}}
alert: {message: "{message}", alias: "{message}", priority: P2}
"""


def test_journald_source_alerts_and_resumes_by_cursor(tmp_path: Path, server: FakeOpsGenie) -> None:
    """Entries of the followed unit alert; after a restart rulesd resumes after the saved cursor."""
    fake = FakeJournal(tmp_path)
    write = fake.write
    write(
        entry(1, "app.service", "ERROR one"),
        entry(2, "other.service", "ERROR elsewhere"),
        entry(3, "app.service", "all good"),
        entry(4, "app.service", "ERROR two"),
    )
    ws = Workspace(tmp_path, server.url, source={"type": "journald", "units": ["app.service"], "start_at": "beginning"})
    (ws.rules / "rules.yaml").write_text(RULE)
    env = fake.env
    daemon = ws.start(env=env)
    assert server.wait_for(lambda r: len(r) >= 2)
    assert 0 == daemon.terminate()
    write(entry(5, "app.service", "ERROR three"))
    ws.start(env=env)
    assert server.wait_for(lambda r: len(r) >= 3)
    assert ["ERROR one", "ERROR two", "ERROR three"] == [a["message"] for a in server.alerts()]
    first, second = fake.runs()
    assert ["--follow", "--output=json", "--all"] == first[:3]
    assert "--unit=app.service" in first and "--lines=all" in first
    assert f"--after-cursor={entry(4, 'app.service', '')['__CURSOR']}" in second
    config = yaml.safe_load(ws.config.read_text())
    assert "journald" == config["source"]["type"]
