"""The cyclic garbage collector at start-up: off while a command builds what it keeps, then on,
with what a one-shot command keeps frozen and the daemon's rule sets left collectable."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rulesd import collector
from tests.run_cli import clean_env

REPO = Path(__file__).resolve().parent.parent

# Runs `python -m rulesd ARGS` as runpy does, recording whether the collector was on when the
# rule set was loaded, the collections before it and what was frozen then, every collection
# from the command's start (runpy's compiling of
# `__main__` comes before it) until the first block of events was judged, and the
# collector's state at the end; prints them as JSON on standard error.
OBSERVED = """
import gc, json, runpy, sys
import rulesd.collector, rulesd.pipeline, rulesd.rules.loader

seen = {"collections": 0, "on_at_load": None, "before_load": None, "before_first_block": None}
gc.callbacks.append(lambda phase, info: phase == "start" and seen.update(collections=seen["collections"] + 1))
load, evaluate, pause = rulesd.rules.loader.check_paths, rulesd.pipeline.evaluate_lines, rulesd.collector.pause

def started():
    pause()
    seen["collections"] = 0

rulesd.collector.pause = started

def check_paths(*args, **kwargs):
    seen["on_at_load"] = gc.isenabled()
    seen["before_load"], seen["frozen_at_load"] = seen["collections"], gc.get_freeze_count()
    return load(*args, **kwargs)

def evaluate_lines(*args, **kwargs):
    if seen["before_first_block"] is None:
        seen["before_first_block"] = seen["collections"]
    return evaluate(*args, **kwargs)

rulesd.rules.loader.check_paths, rulesd.pipeline.evaluate_lines = check_paths, evaluate_lines
sys.argv = ["rulesd", *sys.argv[1:]]
try:
    runpy.run_module("rulesd", run_name="__main__")
except SystemExit:
    pass
seen["on_at_end"], seen["frozen"] = gc.isenabled(), gc.get_freeze_count()
print(json.dumps(seen), file=sys.stderr)
"""


def _observe(*args: str, stdin: bytes = b"", cwd: Path = REPO) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", OBSERVED, *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        cwd=cwd,
        env=clean_env({"RULESD_CACHE_DIR": ""}),  # every rule read and compiled: the most allocation
        check=False,
    )
    assert 0 == done.returncode, done.stderr.decode()
    seen: dict[str, object] = json.loads(done.stderr.decode().splitlines()[-1])
    return seen


@pytest.fixture
def collector_on() -> Iterator[None]:
    """Each unit test starts and ends with the collector on and nothing frozen by it."""
    assert gc.isenabled()
    yield
    collector.resume()
    gc.unfreeze()
    gc.enable()


def _events(count: int) -> bytes:
    return b"".join(b'{"service": "payments", "level": "info", "n": %d}\n' % i for i in range(count))


def test_replay_builds_without_a_collection_then_collects_with_its_start_up_frozen() -> None:
    seen = _observe("replay", "--rules", "rules", "-", stdin=_events(5000))
    assert seen["on_at_load"] is False
    assert seen["before_first_block"] == 0  # the imports, the rule set, its index: not one collection
    assert seen["on_at_end"] is True
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 10_000  # the modules and the rule set


def test_the_daemon_loads_its_rules_with_the_collector_on() -> None:
    # A reload drops the rule set it replaces, whose reference cycles only the collector frees:
    # it must not be frozen with the modules.
    seen = _observe("run", "--config", "examples/rulesd.yaml", "--dry-run", stdin=_events(10))
    assert seen["on_at_load"] is True
    assert seen["on_at_end"] is True


def test_the_daemon_starts_without_a_collection_and_freezes_its_modules_before_its_rules() -> None:
    # Its config (PyYAML), the rule watcher (watchdog), the state and the daemon's own modules:
    # imported with the collector off, then frozen, so no later collection walks them again.
    seen = _observe("run", "--config", "examples/rulesd.yaml", "--dry-run", stdin=_events(10))
    assert seen["before_load"] == 0
    assert isinstance(seen["frozen_at_load"], int) and seen["frozen_at_load"] > 25_000


def test_check_keeps_the_collector_off_until_it_ends_then_on() -> None:
    seen = _observe("check", "rules")
    assert seen["on_at_load"] is False
    assert seen["on_at_end"] is True


@pytest.mark.usefixtures("collector_on")
def test_resume_freezes_what_is_alive_and_turns_the_collector_on() -> None:
    collector.pause()
    assert not gc.isenabled()
    kept = [[i] for i in range(100)]
    collector.resume()
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(kept)
    before = gc.get_freeze_count()
    collector.resume()  # once is enough: nothing frozen again
    assert gc.get_freeze_count() == before


@pytest.mark.usefixtures("collector_on")
def test_resume_leaves_the_collector_as_found_when_pause_did_not_turn_it_off() -> None:
    gc.disable()  # by someone else
    collector.pause()
    collector.resume()
    assert not gc.isenabled()
    assert gc.get_freeze_count() == 0
    gc.enable()


@pytest.mark.usefixtures("collector_on")
def test_a_rule_set_built_under_paused_is_collected_once_dropped() -> None:
    from rulesd.engine import Engine
    from rulesd.rules.loader import load_ruleset

    with collector.paused():
        engine = Engine(load_ruleset([REPO / "rules"]))
        engine.evaluator(None)  # its index: generated code and classes, which hold cycles
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    gc.collect()
    del engine
    assert gc.collect() > 0  # the index's cycles, found and freed
