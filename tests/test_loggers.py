"""Tests for rulesd.loggers: logging set up when the first logger is asked for, as asked."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from rulesd import loggers
from tests.run_cli import imported_by, rulesd_cli


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, its handlers and level put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield root
    finally:
        root.handlers[:], root.level = handlers, level


def test_a_deferred_set_up_is_made_at_the_first_logger(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing is set up until a logger is asked for; then the level and format asked for, on
    the standard error of the time they were asked."""
    root_logger.handlers[:] = []
    loggers.configure("warning", "json", deferred=True)
    assert [] == root_logger.handlers
    log = loggers.logger("rulesd")
    log.info("not written")
    log.warning("a line skipped")
    (line,) = capsys.readouterr().err.splitlines()
    assert ("warning", "a line skipped") == (json.loads(line)["level"], json.loads(line)["message"])


def test_replay_and_check_that_log_nothing_import_no_logging(tmp_path: Path) -> None:
    """`rulesd replay` and `rulesd check` with nothing to log never import logging (with
    traceback, string and their patterns: ~3 ms of their start)."""
    (tmp_path / "r.yaml").write_text("name: r\nmatch: {level: error}\nalert: {message: 'error on {host}'}\n")
    (tmp_path / "e.jsonl").write_text('{"level": "error", "host": "a"}\n')
    env = {"RULESD_CACHE_DIR": str(tmp_path / "cache")}
    replayed, out = imported_by(("logging",), "replay", "--rules", "r.yaml", "e.jsonl", cwd=tmp_path, env=env)
    checked, _ = imported_by(("logging",), "check", "r.yaml", cwd=tmp_path, env=env)
    assert ("[]", "[]") == (replayed, checked)
    assert "alerts: 1" in out


def test_replay_writes_a_skipped_line_as_the_command_line_asked(tmp_path: Path) -> None:
    """The warning for a skipped line, in the format and at the level asked for."""
    (tmp_path / "r.yaml").write_text("name: r\nmatch: {level: error}\nalert: {message: 'error on {host}'}\n")
    (tmp_path / "e.jsonl").write_text('{"level": "error", "host": "a"}\nnot json\n')
    as_json = rulesd_cli("--log-format", "json", "replay", "--rules", "r.yaml", "e.jsonl", cwd=tmp_path)
    record = json.loads(as_json.stderr.splitlines()[0])
    assert ("warning", "rulesd") == (record["level"], record["logger"])
    assert record["message"].startswith("e.jsonl:2: skipped: invalid JSON")
    quiet = rulesd_cli("replay", "--log-level", "error", "--rules", "r.yaml", "e.jsonl", cwd=tmp_path)
    assert "skipped" not in quiet.stderr
    assert rulesd_cli("replay", "--rules", "r.yaml", "e.jsonl", cwd=tmp_path).stderr.startswith(
        "rulesd: warning: e.jsonl:2: skipped: invalid JSON"
    )
