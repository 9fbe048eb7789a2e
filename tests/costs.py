"""The suite's slowest tests first, so that two xdist workers end together.

Most of the suite's time is a few hundred end-to-end tests of several seconds each (the
longest near a minute on a loaded machine). In collection order, in xdist's default chunks, one
worker was left with a queue of them and ran it while the other sat idle for minutes. Started
first, longest first, and handed out one at a time (`one_at_a_time`), they leave only quick
tests for the end, which even out the two workers.

The times are recorded: `pytest -n 3 --record-costs` writes to COSTS_FILE the tests of this
run that took at least RECORDED_FROM seconds (set-up, call and tear-down), keeping the entries
of tests it did not run. A test not recorded runs after the recorded ones, in collection order,
so that a module's quick tests still share its module-scoped fixtures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

COSTS_FILE = Path(__file__).with_name("costs.json")
RECORDED_FROM = 1.0  # seconds; quicker tests only fill the gaps and need no place of their own


def load_costs(path: Path = COSTS_FILE) -> dict[str, float]:
    """Seconds by test id, as last recorded; none when there is no record."""
    return json.loads(path.read_text()) if path.exists() else {}


def slowest_first(items: list[pytest.Item], costs: dict[str, float]) -> None:
    """Order `items` in place: recorded tests by falling cost, then the rest as collected.
    The order depends on the record only, so every xdist worker collects the same list."""
    items.sort(key=lambda item: -costs.get(item.nodeid, 0.0))


def one_at_a_time(config: pytest.Config) -> None:
    """xdist's `--maxschedchunk=1` unless the command line gives another: by default xdist
    queues up to a quarter of what is left on a worker, and a queue of long tests kept one
    worker busy for minutes after the other had run out. (Set here rather than in addopts, so
    that `pytest -p no:xdist` still runs.)"""
    if config.pluginmanager.hasplugin("xdist") and config.getoption("maxschedchunk") is None:
        config.option.maxschedchunk = 1


class CostRecorder:
    """Adds up each test's phases as the reports arrive (on the xdist controller: from every
    worker), and writes the slow ones at the end of the session."""

    def __init__(self, path: Path = COSTS_FILE) -> None:
        self.path = path
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration

    def pytest_sessionfinish(self) -> None:
        # The tests this run ran replace their entries (or drop them, if now quick); a run of
        # one file keeps the others'.
        costs = {k: v for k, v in load_costs(self.path).items() if k not in self.seconds}
        costs |= {k: round(v, 1) for k, v in self.seconds.items() if v >= RECORDED_FROM}
        self.path.write_text(json.dumps(dict(sorted(costs.items())), indent=0) + "\n")
