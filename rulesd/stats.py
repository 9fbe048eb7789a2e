"""The daemon's counters: plain numbers kept on its hot path.

`rulesd.metrics` reads them at scrape time when `metrics.listen` is set; without it, nothing
of Prometheus is even imported.
"""

from __future__ import annotations

import time
from collections.abc import Collection

import msgspec


class Stats(msgspec.Struct):
    """Everything the metrics report, kept by the daemon as plain numbers."""

    events: dict[str, int] = msgspec.field(default_factory=dict)  # per source
    # The sources followed now (a file with no line yet too): their counters are shown from 0.
    sources: frozenset[str] = frozenset()
    invalid: dict[str, int] = msgspec.field(default_factory=dict)  # per source
    ignored: dict[str, int] = msgspec.field(default_factory=dict)  # per source: lines ignore_pattern dropped
    unconverted: dict[tuple[str, str], int] = msgspec.field(default_factory=dict)  # per (source, field)
    untimed: dict[str, int] = msgspec.field(default_factory=dict)  # per source: events timed at arrival
    matches: dict[str, int] = msgspec.field(default_factory=dict)  # per rule
    firings: dict[str, int] = msgspec.field(default_factory=dict)  # per rule
    evicted: dict[str, int] = msgspec.field(default_factory=dict)  # per rule: groups forgotten for the limits
    limit_closed: dict[str, int] = msgspec.field(default_factory=dict)  # per rule: open alerts closed for the limits
    too_long: int = 0  # lines of a redis_stream source skipped for max_line_bytes (file sources count their own)
    state_groups: int = 0  # groups the engine keeps state for, after the latest batch
    alerts_queued: int = 0  # alerts created (a close is a request of its own: closes_queued)
    closes_queued: int = 0
    closes_sent: int = 0  # of delivery[SENT]: the closes (a dry run's printed ones too)
    delivery: dict[str, int] = msgspec.field(default_factory=dict)  # sent / retry / paused / dead / expired
    reloads: dict[str, int] = msgspec.field(default_factory=lambda: {"ok": 0, "failed": 0})
    last_reload_ok: bool = True  # False from a failed reload until one succeeds
    last_reload_success: float = msgspec.field(default_factory=time.time)  # wall clock; the first load counts
    last_reload_seconds: float | None = None  # how long the last reload took to load the rules
    ruleset_hash: str = ""
    rules_loaded: int = 0
    heartbeats: dict[str, int] = msgspec.field(default_factory=lambda: {"ok": 0, "failed": 0})
    last_delivery: float | None = None  # wall clock
    last_error: str | None = None
    state_problem: str | None = None  # why the state cannot be written now (reading waits meanwhile)
    loop_alive: float = msgspec.field(default_factory=time.monotonic)  # when the main loop last turned
    stopping: bool = False  # reading has ended: the daemon drains its outbox and exits
    # What the sources forgotten (`forget_source`) had counted, by table: still in the totals.
    forgotten: dict[str, int] = msgspec.field(default_factory=dict)

    def bump(self, table: dict[str, int], key: str, by: int = 1) -> None:
        """Add `by` to `table[key]`."""
        table[key] = table.get(key, 0) + by

    def forget_source(self, key: str) -> None:
        """Drop the counters of a source key that will not be read again (a glob's file gone):
        a glob of short-lived files would otherwise add series to /metrics for ever."""
        for name, table in (("events", self.events), ("invalid", self.invalid), ("ignored", self.ignored)):
            self.bump(self.forgotten, name, table.pop(key, 0))
        self.sources -= {key}

    def total(self, name: str) -> int:
        """Everything a per-source table (`events`, `invalid`) counted, forgotten sources too."""
        table: dict[str, int] = getattr(self, name)
        return sum(table.values()) + self.forgotten.get(name, 0)

    def rules_now(self, names: Collection[str]) -> None:
        """The running rules are `names`: each one's firings from 0 (an alert on `== 0` or a
        `rate()` needs the series before the first firing), and a removed rule's dropped (the
        engine keeps its own counters alike)."""
        for name in self.firings.keys() - names:
            del self.firings[name]
        for name in names:
            self.firings.setdefault(name, 0)

    def reloaded(self, ok: bool, at: float | None = None) -> None:
        """Count a reload (finished `at`, epoch seconds), and remember whether the rules on disk
        are the ones running."""
        self.bump(self.reloads, "ok" if ok else "failed")
        self.last_reload_ok = ok
        if ok:
            self.last_reload_success = time.time() if at is None else at
