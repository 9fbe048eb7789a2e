"""Shared test set-up: a loopback OpsGenie, a daemon workspace, and no daemon started by a
test outliving it, even when the test fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.costs import CostRecorder, load_costs, one_at_a_time, slowest_first
from tests.daemon_process import API_KEY, DaemonProcess, Workspace
from tests.fake_opsgenie import FakeOpsGenie


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-costs",
        action="store_true",
        help="rewrite tests/costs.json, the test times the suite is ordered by, from this run",
    )


def pytest_configure(config: pytest.Config) -> None:
    one_at_a_time(config)
    # On the controller only (an xdist worker has `workerinput`): it sees every worker's reports.
    if config.getoption("record_costs") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(CostRecorder(), "rulesd-cost-recorder")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    slowest_first(items, load_costs())


@pytest.fixture(autouse=True, scope="session")
def _private_rule_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Commands started by tests keep their rule cache in a directory of this run, not in the
    user's ~/.cache."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _kill_leftover_daemons() -> Iterator[None]:
    yield
    while DaemonProcess.running:
        DaemonProcess.running.pop().stop()


@pytest.fixture
def server() -> Iterator[FakeOpsGenie]:
    """A loopback HTTP server standing in for OpsGenie."""
    with FakeOpsGenie() as fake:
        yield fake


@pytest.fixture
def workspace(tmp_path: Path, server: FakeOpsGenie) -> Iterator[Workspace]:
    """A daemon workspace aimed at `server`; the API key must appear in no output."""
    ws = Workspace(tmp_path, server.url)
    yield ws
    ws.stop_all()
    assert API_KEY not in ws.all_output(), "the API key leaked into the output"
