"""A clock for tests: time that moves only when told."""

from __future__ import annotations

T0 = 1_700_000_000.0  # a fixed epoch time, so that tests are reproducible


class FakeClock:
    """Callable like `time.time`/`time.monotonic`; `advance` and `sleep` move it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        """A `time.sleep` that records the wait and moves the clock instead of waiting."""
        self.sleeps.append(seconds)
        self.now += seconds
