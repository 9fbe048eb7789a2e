"""Shared test set-up: no daemon started by a test outlives it, even when the test fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.daemon_process import DaemonProcess


@pytest.fixture(autouse=True)
def _kill_leftover_daemons() -> Iterator[None]:
    yield
    while DaemonProcess.running:
        DaemonProcess.running.pop().stop()
