"""The whole-request deadline's watcher: when it is woken, and that every deadline still expires."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack

from rulesd.deadline import Deadline, Deadlines


class CountingCondition(threading.Condition):
    """A condition that counts how often the watcher is woken."""

    notified = 0

    def notify(self, n: int = 1) -> None:
        self.notified += 1
        super().notify(n)


def counting(deadlines: Deadlines) -> CountingCondition:
    condition = CountingCondition(deadlines._lock)
    deadlines._changed = condition
    return condition


def expires_within(deadline: Deadline, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while not deadline.expired and time.monotonic() < end:
        time.sleep(0.01)
    return deadline.expired


def test_a_later_deadline_does_not_wake_the_watcher() -> None:
    """Requests one after another, each with the same timeout, behind one still in flight: none
    wakes the watcher (each is found when it wakes for the earliest), not one thread switch each."""
    deadlines = Deadlines()
    condition = counting(deadlines)
    with deadlines.within(30.0):  # the earliest, in flight throughout
        woken = condition.notified
        for _ in range(5):
            with deadlines.within(30.0):
                pass

        assert 0 == condition.notified - woken


def test_an_earlier_deadline_wakes_the_watcher_and_expires_in_time() -> None:
    deadlines = Deadlines()
    condition = counting(deadlines)
    with ExitStack() as stack:
        stack.enter_context(deadlines.within(30.0))
        short = stack.enter_context(deadlines.within(0.2))

        assert 2 == condition.notified
        assert expires_within(short, 5.0)


def test_a_deadline_the_watcher_was_not_woken_for_still_expires_in_time() -> None:
    deadlines = Deadlines()
    with deadlines.within(0.1):
        pass
    with deadlines.within(0.4) as later:  # behind a finished, earlier one: no wake-up
        assert expires_within(later, 5.0)


def test_an_abort_says_how_many_requests_it_cut() -> None:
    """The stop's cut counts the requests in flight, so that the daemon says it cut one only when
    it did (it warned of cutting the request in flight with none under way); a later request is
    ended at once all the same."""
    deadlines = Deadlines()
    with deadlines.within(30.0) as finished:
        pass
    assert finished.finished
    with deadlines.within(30.0) as in_flight:
        assert 1 == deadlines.abort()
        assert in_flight.expired
    assert 0 == deadlines.abort()
    with deadlines.within(30.0) as later:
        assert later.expired
