"""When the engine's timers are due: a heap of (due time, kind, rule, group).

A timer is never removed when its group's state changes: the engine checks each due timer
against the state when it comes up and skips those the state no longer asks for, so that
arming a timer costs one push and re-arming one costs nothing more.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from rulesd.engine.values import GroupKey


class Timers:
    """Pending timers, earliest first."""

    __slots__ = ("_seq", "heap")

    def __init__(self) -> None:
        # Earliest first: `heap[0][0]` is the next due time (the engine reads it per event).
        self.heap: list[tuple[float, int, str, str, GroupKey]] = []
        self._seq = 0  # keeps entries of equal due time in the order they were set

    def __len__(self) -> int:
        return len(self.heap)

    def add(self, due: float, kind: str, rule: str, group: GroupKey) -> None:
        """Ask to be told when event time reaches `due`."""
        self._seq += 1
        heapq.heappush(self.heap, (due, self._seq, kind, rule, group))

    def pop_due(self, now: float) -> Iterator[tuple[float, str, str, GroupKey]]:
        """Each timer due at or before `now`, earliest first (due, kind, rule, group), removed
        as it is handed out (so a timer set meanwhile that is due too comes up as well)."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            due, _, kind, rule, group = heapq.heappop(heap)
            yield due, kind, rule, group

    def clear(self) -> None:
        """Forget every timer (they are set again from the state)."""
        self.heap.clear()
