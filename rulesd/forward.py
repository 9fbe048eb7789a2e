"""`rulesd forward`: tail the configured sources into a Redis stream, in batches.

Each append is one server-side script (`scripts.FORWARD`) that adds the entries and stores the
forwarder's source positions with them, so a restart after any crash resumes exactly after
the last line appended: no line is sent twice, none is skipped. A copy of the positions is
kept in `state_dir` like the daemon's (used if Redis has none, e.g. a new Redis).

Lines of a JSON source go as they are; lines of a text, regex or journald source go as the
events their parser makes of them (the stream holds JSON events). An entry holds up to
`forward.batch_lines` events, newline-separated, in field `events`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import orjson
import redis

from rulesd.config import Config
from rulesd.daemon.build import STATE_FILE, lock_state, open_sources
from rulesd.daemon.name import NameRenewal, claim_name
from rulesd.daemon.run import BATCH_LINES, IDLE_WAIT, STATUS_EVERY
from rulesd.daemon.stop_signals import StopSignals
from rulesd.events import IGNORED, parse_block
from rulesd.logs import RateLimitedWarning
from rulesd.notify import Notifier
from rulesd.sources.base import Source
from rulesd.sources.lines import line_text
from rulesd.state import SqliteState, StateAuthFailed, StateUnavailable, scripts
from rulesd.state.claim import NameTaken
from rulesd.state.redis import SEPARATOR, RedisState, connect, default_instance

log = logging.getLogger("rulesd")
RETRY_UNAVAILABLE = 1.0
# While appending fails, it is said once this often (seconds), and its end once it ends.
RETRY_SAID_EVERY = 60.0
# Appends wait while Redis's memory is past this share of its maxmemory: the rest is the
# workers', so that they can still commit (and their commits trim the stream).
FULL_SHARE = 0.8
# While there is room, Redis's memory is asked at most this often (seconds), not before every
# append: one round trip less per batch; and sooner once the bytes appended since could take a
# ROOM_SHARE of what was left below FULL_SHARE (an entry costs Redis more than its bytes).
MEMORY_ASKED_EVERY = 1.0
ROOM_SHARE = 0.25


class Forwarder:
    """Appends the lines of `sources` to the stream of `config.forward`."""

    def __init__(self, config: Config, environ: Mapping[str, str] = os.environ) -> None:
        forward = config.forward
        assert forward is not None
        self.config, self.forward = config, forward
        # Its positions are kept in state_dir as a daemon's are: one process per state directory
        # (a daemon's lock: StateDirectoryBusy), or each would overwrite the other's positions.
        self.lock = lock_state(config.state_dir)
        self.stop_requested = threading.Event()
        self.store = RedisState(
            connect(forward.url, self.stop_requested),
            instance=config.state.instance or default_instance(config.state_dir),
            prefix=config.state.prefix,
            config=config.path or "the config",
            role="forward:",
        )
        self.positions_key = self.store.k.prefix + "forward:positions"
        self.local = SqliteState(os.path.join(config.state_dir, STATE_FILE))
        self.warn = RateLimitedWarning(log, time.monotonic)
        self.notifier = Notifier(environ)
        self.lines_sent = 0
        self.held: str | None = None  # why appends are held back, while they are
        self.memory_known = True  # False once Redis refused INFO to this user
        self.clock = time.monotonic
        self.room_seen = -math.inf  # (clock) when Redis last had room
        self.room_bytes = 0.0  # bytes to append before asking again, even within the second
        self.sources: dict[str, Source] = {}
        self.renew_name: NameRenewal | None = None  # once the name is claimed (`run`)

    def saved_positions(self) -> dict[str, dict[str, Any]]:
        """The positions stored with the last append (Redis), else the local copy."""
        mine = self.store.instance + SEPARATOR
        saved = self.store.call(lambda: self.store.client.hgetall(self.positions_key))
        found = {
            key.decode()[len(mine) :]: orjson.loads(value)
            for key, value in saved.items()
            if key.decode().startswith(mine)
        }
        return found or self.local.load_positions()

    def run(self) -> int:
        """Forward until SIGTERM/SIGINT (or the input's end); 0 after a clean stop, 2 once another
        forwarder took its name (NameTaken at start: another holds it; StoppedWaiting: stopped
        while its lease was waited out)."""
        try:
            with StopSignals(self.stop_requested) as stop:
                # Its positions are kept under its name, as a daemon's: one forwarder per name (a daemon
                # under the same name keeps its own positions, under its own claim: both may run).
                claim_name(self.store, self.notifier, stop)
                self.renew_name = NameRenewal(self.store)
                try:
                    return self._run()
                except NameTaken as exc:  # a configuration error: a restart cannot help (exit 2, as at start)
                    log.critical("stopping: %s", exc)
                    self.notifier.status(f"fatal error: {exc}")
                    return 2
                finally:
                    self.store.close()  # the name given up (kept while another holds it)
        finally:
            self.lock.release()  # last: nothing more is written in state_dir

    def _run(self) -> int:
        self.sources = open_sources(self.config, self.saved_positions(), self.warn, 0)
        log.info("rulesd forward started: to %s %s", self.forward.url.split("@")[-1], self.forward.stream)
        self.notifier.ready(self._status())
        last_status = 0.0
        try:
            while not self.stop_requested.is_set():
                self._renew()
                if self.notifier.enabled and time.monotonic() - last_status >= STATUS_EVERY:
                    last_status = time.monotonic()
                    self.notifier.status(self._status())
                if self._step():
                    continue
                if all(source.exhausted() for source in self.sources.values()):
                    break
                for source in self.sources.values():
                    source.wait(IDLE_WAIT / len(self.sources))
        finally:
            self.notifier.stopping()
            for source in self.sources.values():
                source.close()
            log.info("stopped: %d line(s) forwarded", self.lines_sent)
        return 0

    def _renew(self) -> None:
        """Renew the name's lease when due; NameTaken if another process holds it now. A Redis
        that does not answer is said by the append that waits for it, not here (idle, nothing
        waits: the forwarder does not stop for it)."""
        if self.renew_name is not None:
            with contextlib.suppress(StateUnavailable):
                self.renew_name()

    def _status(self) -> str:
        return self.held or f"{self.lines_sent} lines forwarded to {self.forward.stream}"

    def _step(self) -> bool:
        """Read what the sources have and append it with their positions; False if nothing."""
        batch = [(label, source, source.read(BATCH_LINES)) for label, source in self.sources.items()]
        entries: list[bytes] = []
        count = 0
        for _, source, runs in batch:
            for run in runs:
                events = _events(source, run.data)
                count += len(events)
                for i in range(0, len(events), self.forward.batch_lines):
                    entries.append(b"\n".join(events[i : i + self.forward.batch_lines]))
        if not any(runs for _, _, runs in batch):
            return False
        positions: dict[str, dict[str, Any]] = {}
        for source in self.sources.values():
            positions.update((key, p.to_json()) for key, p in source.checkpoint().items())
        self._append(entries, positions)
        self.lines_sent += count
        return True

    def _append(self, entries: list[bytes], positions: dict[str, dict[str, Any]]) -> None:
        """One script: the entries and the positions; retried while Redis is unavailable, and
        held back while Redis is nearly full."""
        args: list[Any] = [len(entries), *entries]
        fields: list[Any] = []
        for key, value in positions.items():
            fields += [self.store.instance + SEPARATOR + key, orjson.dumps(value) if value else b""]  # b"": deleted
        script = self.store.client.register_script(scripts.FORWARD)
        keys = [self.forward.stream, self.positions_key, self.store.name_key]
        name = [self.store.held_name(), self.store.name_lease_ms]  # (renewed by each append)
        failed, said, cause, held = 0, -math.inf, None, 0.0
        size = sum(map(len, entries))
        while True:
            try:
                self._renew()  # also while it waits: held back by a full Redis for longer than the lease
                full = self._full(size)
                if full is None:
                    self.store.call(lambda: script(keys=keys, args=[*fields_count(fields), *args, *name]))
                    self.room_bytes -= size
                    break
                if not held or time.monotonic() - said >= RETRY_SAID_EVERY:
                    said = time.monotonic()
                    held = held or said
                    self.held = full
                    log.error("%s", full)
                    self.notifier.status(full)
            except StateUnavailable as exc:
                failed += 1
                # Not every second of an outage, but a new cause (Redis back, refusing the password) at once.
                if type(exc) is not cause or time.monotonic() - said >= RETRY_SAID_EVERY:
                    said, cause = time.monotonic(), type(exc)
                    log.error("cannot append to the stream, retrying: %s (attempt %d)", exc, failed)
            if self.stop_requested.wait(RETRY_UNAVAILABLE):
                # Stopping: nothing was appended, and the positions say so; the next start reads it again.
                raise SystemExit(0) from None
        if failed:
            log.warning("appended to the stream again, after %d failed attempt(s)", failed)
        if held:
            self.held = None
            log.warning("Redis has room again: appending to the stream (held back %.0f s)", time.monotonic() - held)
        self.local.commit(positions=positions, payloads=[], now=time.time())

    def _full(self, size: int) -> str | None:
        """Why not to append now: Redis's memory is past FULL_SHARE of its `maxmemory` (None:
        there is room, or no maxmemory). At its maxmemory Redis refuses every write, the workers'
        commits too, which are what frees the stream's entries: forwarding on would stop them
        for good. The lines wait in the files meanwhile. `size`: the bytes to append."""
        if not self.memory_known:
            return None
        if self.clock() - self.room_seen < MEMORY_ASKED_EVERY and size <= self.room_bytes:
            return None
        try:
            info = self.store.call(lambda: self.store.client.info("memory"))
        except StateAuthFailed as exc:
            if not isinstance(exc.__cause__, redis.exceptions.NoPermissionError):
                raise
            self.memory_known = False  # an ACL user without INFO: forwarding is not stopped for it
            log.warning("%s: appends are not held back near Redis's maxmemory (allow INFO to this user)", exc)
            return None
        used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
        if not limit or used < limit * FULL_SHARE:
            self.room_seen = self.clock()
            self.room_bytes = (limit * FULL_SHARE - used) * ROOM_SHARE if limit else math.inf
            return None
        self.room_seen = -math.inf  # held back: asked at each retry
        backlog = self.store.call(lambda: self.store.client.xlen(self.forward.stream))
        return (
            f"Redis is {used / limit:.0%} full ({used // 2**20} MB of its maxmemory {limit // 2**20} MB): "
            f"not appending to {self.forward.stream}, which holds {backlog} entries, until the "
            f"workers catch up (are they running?) or maxmemory is raised; the lines wait in the files"
        )


def fields_count(fields: list[Any]) -> list[Any]:
    """The positions as the script takes them: their count, then field, value pairs."""
    return [len(fields) // 2, *fields]


def _events(source: Source, lines: list[bytes]) -> list[bytes]:
    """What to append for `lines`: JSON lines as they are, other formats' events as JSON."""
    parser = source.parser
    if parser.fast is orjson.loads:  # plain JSON lines: the workers parse them (and count bad ones)
        return [line_text(line) for line in lines if line.strip()]  # entries are joined by newlines
    out = []
    for event in parse_block(parser.fast, lines):
        if type(event) is dict:
            out.append(orjson.dumps(event, default=str))
        elif event is not IGNORED:
            log.debug("not forwarded: not an event")
    return out
