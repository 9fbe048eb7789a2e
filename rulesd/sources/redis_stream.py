"""Events from a Redis stream, read by a consumer group that instances share (stream mode).

An entry holds one JSON event in field `event`, or several, newline-separated, in `events`.
Entries other producers wrote otherwise (neither field, or a line longer than `max_line_bytes`)
hold a blank line in its place, with why it was skipped (`EntryBatch.skipped`): they are
committed (acknowledged) with their batch, reported and counted, never read again.
Each instance reads batches of entries (XREADGROUP); an entry stays pending for its reader
until a commit acknowledges it. Entries another instance has left pending for `claim_idle`
(it died, or was paused) are claimed (XAUTOCLAIM). While a live instance waits for its turn
to commit, it keeps its own pending entries fresh, so that they are not claimed from it.

The position is not this reader's: the commit script keeps the stream's cursor (the last
entry committed), and only commits a batch that no uncommitted entry precedes.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
import redis

from rulesd.state.redis import RedisState, StreamBatch

log = logging.getLogger("rulesd")
BLOCK_MS = 200  # how long a read waits for new entries
MAX_ENTRIES = 1024  # entries per read at most
# Bytes of entries per read, about: sized by the recent entries, so that a worker's memory does
# not follow how large the entries are (1,024 entries of 1 MB each would be 1 GB read at once,
# and a worker killed for it would claim them again, and be killed again).
READ_BYTES = 8 * 1024 * 1024
EMPTY = b""
MAX_LINE_BYTES = 1_048_576


class EntryBatch(msgspec.Struct):
    """Entries read in one go, as lines: `starts[i]` is the index of entry `ids[i]`'s first line."""

    ids: list[str]
    starts: list[int]
    lines: list[bytes]
    claimed: bool = False
    # Lines put in place of what an entry did not hold as events, by index: why (the line is blank).
    skipped: dict[int, str] = msgspec.field(default_factory=dict)
    too_long: frozenset[int] = frozenset()  # those of them longer than max_line_bytes

    def where(self, stream: str) -> Callable[[int], str]:
        """The "Event Source" of line `index`: the stream, the entry id and the line in the entry."""
        ids, starts = self.ids, self.starts

        def where(index: int) -> str:
            entry = bisect.bisect_right(starts, index) - 1
            return f"{stream} {ids[entry]}#{index - starts[entry]}"

        return where

    def stream_batch(self, stream: str, group: str) -> StreamBatch:
        """The batch as the commit script acknowledges it."""
        return StreamBatch(stream, group, self.ids, self.claimed)

    def after(self, cursor: str) -> EntryBatch | None:
        """The entries after `cursor` (those not committed yet), or None if none."""
        keep = [i for i, entry in enumerate(self.ids) if _id(entry) > _id(cursor)]
        if not keep:
            return None
        return _subset(self, keep)

    def singles(self) -> list[EntryBatch]:
        """One batch per entry."""
        return [_subset(self, [i]) for i in range(len(self.ids))]


def _subset(batch: EntryBatch, keep: list[int]) -> EntryBatch:
    ids: list[str] = []
    starts: list[int] = []
    lines: list[bytes] = []
    skipped: dict[int, str] = {}
    too_long: set[int] = set()
    bounds = [*batch.starts, len(batch.lines)]
    for i in keep:
        ids.append(batch.ids[i])
        starts.append(len(lines))
        for old in range(bounds[i], bounds[i + 1]):
            if old in batch.skipped:
                skipped[len(lines)] = batch.skipped[old]
                if old in batch.too_long:
                    too_long.add(len(lines))
            lines.append(batch.lines[old])
    return EntryBatch(ids, starts, lines, batch.claimed, skipped, frozenset(too_long))


def _id(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


class StreamReader:
    """Reads a stream as `consumer` of `group` (created at the stream's beginning if missing)."""

    def __init__(
        self,
        store: RedisState,
        stream: str,
        group: str,
        consumer: str,
        claim_idle: float,
        clock: Callable[[], float] = time.monotonic,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self.store, self.stream, self.group, self.consumer = store, stream, group, consumer
        self.max_line_bytes = max_line_bytes
        self.claim_idle_ms = max(1, int(claim_idle * 1000))
        self._clock = clock
        self._next_claim = 0.0
        self._group_ready = False
        self.entries_read = 0
        self._lines_per_entry = 8192.0  # a running average (from one entry a read): entries for a batch of lines
        self._bytes_per_entry = 0.0  # a running average too; none known before the first read

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        client = self.store.client
        try:
            self.store.call(lambda: client.xgroup_create(self.stream, self.group, id="0", mkstream=True))
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def batch_entries(self, lines: int) -> int:
        """How many entries to read for about `lines` events (an entry holds one or many), and
        about READ_BYTES at most."""
        by_bytes = int(READ_BYTES / self._bytes_per_entry) if self._bytes_per_entry else MAX_ENTRIES
        return max(1, min(MAX_ENTRIES, int(lines / self._lines_per_entry), by_bytes))

    def read(self, count: int, block_ms: int = BLOCK_MS) -> EntryBatch | None:
        """New entries (at most `count`), waiting up to `block_ms` for some."""
        self._ensure_group()
        client = self.store.client
        reply = self._group_call(
            lambda: client.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms)
        )
        if not reply:
            return None
        return self._batch(reply[0][1], claimed=False)

    def claim(self, count: int) -> EntryBatch | None:
        """Entries another consumer left pending for `claim_idle`, now this one's; at most
        every half `claim_idle` (the pending list is not free to scan)."""
        now = self._clock()
        if now < self._next_claim:
            return None
        self._next_claim = now + self.claim_idle_ms / 2000
        self._ensure_group()
        client = self.store.client
        reply = self._group_call(
            lambda: client.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms, "0-0", count=count)
        )
        entries = [entry for entry in (reply[1] if reply else []) if entry[1] is not None]
        if not entries:
            return None
        log.info(
            "claimed %d stream %s left pending for %.0fs or more by another instance",
            len(entries),
            "entry" if len(entries) == 1 else "entries",
            self.claim_idle_ms / 1000,
        )
        return self._batch(entries, claimed=True)

    def _group_call(self, call: Callable[[], Any]) -> Any:
        """`store.call(call)`, or None when the group or the stream went away under this reader
        (a Redis restarted empty, the key deleted): the group is made again at the next read, at
        the stream's beginning (what the state's cursor says is committed is then refused and
        dropped). Any other error reply is raised."""
        try:
            return self.store.call(call)
        except redis.exceptions.ResponseError as exc:
            if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                raise
            log.warning("stream %s: consumer group %s is gone (%s); it is made again", self.stream, self.group, exc)
            self._group_ready = False
            return None

    def refresh(self, batches: list[EntryBatch]) -> None:
        """Reset the idle time of this consumer's pending `batches` (it is alive, waiting for its turn)."""
        ids = [entry for batch in batches for entry in batch.ids]
        if not ids:
            return
        client = self.store.client
        for i in range(0, len(ids), 1000):
            chunk = ids[i : i + 1000]
            claimed = self._group_call(
                lambda chunk=chunk: client.xclaim(self.stream, self.group, self.consumer, 0, chunk, justid=True)  # type: ignore[misc]
            )
            if claimed is None:  # the group is gone, and these entries with it
                return

    def wait_for_commit(self, version: int, timeout_ms: int) -> None:
        """Block until another commit after `version` (a change record appears) or the timeout."""
        client = self.store.client
        self.store.call(lambda: client.xread({self.store.k.changes: f"{version}-0"}, count=1, block=timeout_ms))

    def _batch(self, entries: list[Any], *, claimed: bool) -> EntryBatch:
        ids: list[str] = []
        starts: list[int] = []
        lines: list[bytes] = []
        skipped: dict[int, str] = {}
        too_long: set[int] = set()
        limit, size = self.max_line_bytes, 0
        for entry_id, fields in entries:
            if fields is None:  # deleted meanwhile (a claim of a trimmed entry)
                continue
            ids.append(entry_id.decode())
            starts.append(len(lines))
            one = fields.get(b"event")
            many = fields.get(b"events")
            found = ([one] if one is not None else []) + (many.split(b"\n") if many else [])
            if not found:  # another producer's entry: said, and committed with the batch
                names = ", ".join(repr(name.decode(errors="replace")) for name in fields) or "none"
                skipped[len(lines)] = f"the entry has no field 'event' or 'events' (its fields: {names})"
                found = [EMPTY]
            size += sum(map(len, found))  # as read: skipped lines too
            for line in found:
                if len(line) > limit:
                    skipped[len(lines)] = f"longer than max_line_bytes ({limit} bytes): {len(line)} bytes"
                    too_long.add(len(lines))
                    line = EMPTY
                lines.append(line)
        self.entries_read += len(ids)
        if ids:
            self._lines_per_entry = 0.5 * self._lines_per_entry + 0.5 * len(lines) / len(ids)
            average = self._bytes_per_entry
            self._bytes_per_entry = 0.5 * average + 0.5 * size / len(ids) if average else size / len(ids)
        return EntryBatch(ids, starts, lines, claimed, skipped, frozenset(too_long))
