"""What a source's parser counts as it goes (captured values that did not convert to their
field's type, events whose time could not be read) turned into metrics and warnings that
name the source: one rate-limited warning per source and field, so that a flood of one
kind never hides another."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from rulesd.events import Parser
from rulesd.logs import RateLimitedWarning
from rulesd.stats import Stats

log = logging.getLogger("rulesd")


class MissReporter:
    """Reports the new misses of a source's parser after each batch of its lines."""

    def __init__(self, stats: Stats, clock: Callable[[], float] = time.monotonic) -> None:
        self.stats = stats
        self._clock = clock
        self._warnings: dict[tuple[str, ...], RateLimitedWarning] = {}

    def register(self, label: str, parser: Parser) -> None:
        """Start the source's counters at 0 (a rate needs the series before its first increase)."""
        for field in parser.misses.kinds:
            self.stats.unconverted.setdefault((label, field), 0)
        if parser.time is not None:
            self.stats.untimed.setdefault(label, 0)

    def report(self, label: str, parser: Parser) -> None:
        """Count and warn about what `parser` (of the source `label`) missed since last asked."""
        stats = self.stats
        misses = parser.misses
        for field, count in misses.counts.items():
            seen = stats.unconverted.get((label, field), 0)
            if count > seen:
                stats.unconverted[(label, field)] = count
                kind, latest = misses.kinds.get(field, "its type"), misses.latest[field]
                self._warning("field", label, field)(
                    f"source {label}: {count - seen} value(s) of field {field!r} did not convert to {kind} "
                    f"and were left out of the event (latest: {latest!r:.80})"
                )
        reader = parser.time
        if reader is None:
            return
        seen = stats.untimed.setdefault(label, 0)
        if reader.misses > seen:
            stats.untimed[label] = reader.misses
            spec = reader.spec
            self._warning("time", label)(
                f"source {label}: {reader.misses - seen} event(s) without a readable time in field {spec.field!r} "
                f"(time_format {spec.format}; latest {reader.describe_miss()}): evaluated at their arrival time"
            )

    def flush(self) -> None:
        """At stop: say how many warnings each limit still holds back."""
        for warning in self._warnings.values():
            warning.flush()

    def _warning(self, *key: str) -> RateLimitedWarning:
        warning = self._warnings.get(key)
        if warning is None:
            warning = self._warnings[key] = RateLimitedWarning(log, self._clock)
        return warning
