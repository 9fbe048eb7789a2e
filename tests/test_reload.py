"""Rule reloads: the watcher debounces a burst of saves, a periodic check catches what no event
reported, and a reload is all-or-nothing and names what changed."""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

import pytest

from rulesd.config import Config, SourceConfig
from rulesd.daemon import Daemon, build_parts
from rulesd.reload import RuleWatcher
from rulesd.rules.loader import load_ruleset
from tests.daemon_process import PAGE_RULE, wait_until
from tests.opsgenie_schema import create_alert_validator

ROOT = Path(__file__).resolve().parent.parent
VALIDATOR = create_alert_validator()


def test_rule_watcher_waits_for_a_burst_of_saves_to_settle(tmp_path: Path) -> None:
    """Watchdog events are debounced: no reload while saves keep coming, one once they stop."""
    rules = tmp_path / "rules"
    rules.mkdir()
    rule = rules / "r.yaml"
    rule.write_text(PAGE_RULE)
    watcher = RuleWatcher([str(rules)], clock=time.monotonic, debounce=0.5, backstop=3600)
    watcher.start()
    try:
        for i in range(8):
            rule.write_text(PAGE_RULE + f"# save {i}\n")
            time.sleep(0.1)
            assert not watcher.due(), f"reload requested in the middle of the burst (save {i})"
        last_save = time.monotonic()
        assert wait_until(watcher.due, timeout=5)
        assert time.monotonic() - last_save >= 0.35
        assert not watcher.due()
    finally:
        watcher.stop()


def test_rule_watcher_periodic_check_catches_a_change_no_event_reported(tmp_path: Path) -> None:
    """Without any file system event (none is watched here), the periodic hash check notices a
    changed rule file at the next check, and an unchanged one causes no reload; SIGHUP's
    request() reloads at once."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(PAGE_RULE)
    now = [100.0]
    watcher = RuleWatcher([str(rules)], clock=lambda: now[0], debounce=0.1, backstop=5.0)
    (rules / "r.yaml").write_text(PAGE_RULE + "# changed\n")
    now[0] += 1.0
    assert not watcher.due()
    now[0] += 4.5
    assert watcher.due()
    now[0] += 6.0
    assert not watcher.due()
    watcher.request()
    assert watcher.due()
    assert not watcher.due()


def test_reload_is_all_or_nothing_and_names_what_changed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A reload with one good change and one broken file applies nothing and logs every error
    as path:line:col; once fixed, one line names the rules added, removed and changed."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text("name: a\nmatch: {kind: a}\n")
    (rules / "b.yaml").write_text("name: b\nmatch: {kind: b}\n")
    (rules / "keep.yaml").write_text("name: keep\nmatch: {kind: k}\n")
    (tmp_path / "events.jsonl").touch()
    config = Config(
        path=str(tmp_path / "rulesd.yaml"),
        rules=(str(rules),),
        sources=(SourceConfig(type="file", paths=(str(tmp_path / "events.jsonl"),)),),
        state_dir=str(tmp_path / "state"),
    )
    daemon = Daemon(build_parts(config, load_ruleset(config.rules), dry_run=True, environ={}, stdout=io.StringIO()))
    caplog.set_level(logging.INFO, logger="rulesd")
    try:
        before = daemon.engine.ruleset.fingerprint
        (rules / "a.yaml").write_text("name: a\nmatch: {kind: A}\n")
        (rules / "b.yaml").write_text("name: b\nmatch: {kind: b}\nthrottle: soon\nalert: {priority: P9}\n")
        assert daemon.reload() is False
        assert before == daemon.engine.ruleset.fingerprint
        failed = [r.getMessage() for r in caplog.records if "reload failed" in r.getMessage()]
        assert 2 == len(failed), failed
        assert any(f"{rules}/b.yaml:3:" in m for m in failed) and any(f"{rules}/b.yaml:4:" in m for m in failed)
        (rules / "b.yaml").unlink()
        (rules / "c.yaml").write_text("name: c\nmatch: {kind: c}\n")
        assert daemon.reload() is True
        assert {"a", "c", "keep"} == set(daemon.engine.ruleset.by_name())
        assert "rules reloaded: 3 rule(s); added: c; removed: b; changed: a" in caplog.text
    finally:
        daemon.parts.source.close()
