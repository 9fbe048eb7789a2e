"""The daemon when instances share their state in Redis (scale-out).

Each instance keeps the engine's state in memory as a cache of what is committed. A batch
goes through two steps (`pipeline.match_lines`, then `apply_matches`): the matching, the
expensive part, reads no state and runs before the instance's turn; then the instance
catches up on what others committed since the version it last synced (the groups they
touched, or everything if it fell too far behind), applies its batch, and commits with that
version. If another instance committed in between, nothing is written: the groups the batch
touched are loaded again and the batch is applied again on the newer state (the matching is
kept). So commits are serialised by the version, and a timer that two instances find due
fires once.

- Fleet mode: each instance reads its own sources; counts are fleet-wide.
- Stream mode: the instances read one stream with a consumer group; batches commit in
  stream order (the commit script refuses a batch that an uncommitted entry precedes), so
  N instances produce exactly the alerts one would. A batch another instance committed (it
  was claimed while this one was paused) is dropped, never applied twice.

Redis unavailable (or refusing the credentials, rotated under a running daemon): the loop goes
on turning (signals, reloads, /healthz), reads nothing, says so (log, STATUS=,
`rulesd_state_unavailable`, /healthz and /readyz bodies) and tries again; the batch in hand is
kept and committed when Redis is back, or dropped if another instance did it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping
from functools import partial
from typing import Any

import msgspec
import redis

from rulesd.daemon.build import Parts
from rulesd.daemon.name import NameRenewal
from rulesd.daemon.reloader import LoadOutcome
from rulesd.daemon.run import (
    BATCH_LINES,
    EOF_GRACE,
    IDLE_WAIT,
    STOP_GRACE,
    SWEEP_IDLE,
    Daemon,
    checkpoints,
    still_saved,
)
from rulesd.engine import Counts, Engine, EngineState, StateDelta
from rulesd.events import Parser
from rulesd.pipeline import Alert, Batch, Matches, apply_matches, build_alerts, match_lines, pending
from rulesd.sources.lines import Lines, Offsets, line_text
from rulesd.sources.redis_stream import EntryBatch, StreamReader
from rulesd.state import CLOSE, Request, StateAuthFailed, StateUnavailable
from rulesd.state.redis import Conflict, Made, RedisState

log = logging.getLogger("rulesd")
RETRY_UNAVAILABLE = 1.0  # seconds between attempts while Redis is unavailable
REFUSAL_LOG_EVERY = 30.0  # seconds between repeats of the rule-set refusal
REFUSING = "refusing to commit"
TURN_WAIT_MS = 200  # longest wait for another instance's commit before looking again
UNCONFIRMED_KEPT = 10_000  # queued alerts an instance remembers until it sees them leave the outbox
STOP_ATTEMPTS = 5  # commits of the clock at a stop, each after another instance committed first


class Prepared(msgspec.Struct):
    """A batch matched and waiting to be committed: its runs (each with where its lines
    came from), what matching found, and the rule set it was matched with."""

    runs: list[tuple[str, Lines, Parser, Callable[[int], str]]]
    matches: list[Matches]
    fingerprint: str
    arrival: float
    entries: EntryBatch | None = None  # stream mode
    # The wall time the instance was last idle at before reading the batch (None: it was not):
    # the clock ran on to there, which idle moments with nothing to commit do not commit.
    idle: float | None = None
    token: str = ""  # names the batch, so that a commit whose answer was lost is not made twice
    results: list[Batch] = msgspec.field(default_factory=list)
    # Per rule, the events that matched its condition: counted when the batch is committed,
    # as it may be matched again (a reload) or dropped (another instance committed it).
    matched: dict[str, int] = msgspec.field(default_factory=dict)


class Tally(msgspec.Struct):
    """What a batch counts that depends on the rules and the state it was applied with (per
    rule: matches, firings, groups evicted and alerts closed for the limits; alerts queued).
    Committed with the batch: a commit whose answer was lost is counted from the tally Redis
    kept, as it was made (perhaps under the rules before a reload), never as applied again."""

    matches: dict[str, int]
    firings: dict[str, int]
    alerts: int
    evicted: dict[str, int]
    limit_closed: dict[str, int]
    closes: int = 0  # closes queued (`alerts` counts the alerts created; a tally saved before counted both)
    values_evicted: dict[str, int] = msgspec.field(default_factory=dict)  # of `evicted`: new_value values


class LostTick(msgspec.Struct):
    """An idle pass's commit whose answer was lost: its name, to ask Redis whether it was made
    before anything else is committed, and the source positions it wrote."""

    token: str
    positions: dict[str, dict[str, Any]]


class SharedEngine:
    """Keeps an engine in step with the state that instances commit to a `RedisState`."""

    def __init__(self, engine: Engine, store: RedisState, on_lost: Callable[[str], None] = log.error) -> None:
        self.engine = engine
        self.store = store
        self.on_lost = on_lost  # told when Redis lost what it held (why, and what is gone)
        self.epoch = ""  # the epoch of the state loaded ('' before the first load)
        # The alerts this instance queued, by outbox id, until it sees them leave the outbox: if
        # Redis loses them first, they are queued again (`requeue`) with the next commit.
        self.unconfirmed: dict[int, dict[str, Any] | Request] = {}
        self.requeue: list[dict[str, Any] | Request] = []
        # The alerts of a commit whose answer was lost, by its token, until Redis tells whether
        # it was made: if Redis loses its data first, no one can, and they are queued again
        # (`redo`) unless applying the batch again queues them anyway.
        self.in_doubt: tuple[str, list[dict[str, Any] | Request]] = ("", [])
        self.redo: list[dict[str, Any] | Request] = []
        self.positions_lost = False  # this instance's source positions are to be written again
        self.published = ""
        self.clock_wall: float | None = None  # when the committed clock was set (wall time)
        # The cache may hold changes that were never committed (Redis went away before they
        # could be undone): the whole state is loaded again at the next sync.
        self.stale = False

    def start(self) -> None:
        """Publish this instance's rule set and load the whole committed state."""
        self.store.publish_rules(self.engine.ruleset.fingerprint)
        self.load_all()

    def load_all(self) -> None:
        """Replace the engine's state with the whole committed state (saying if Redis lost
        what this instance had loaded or committed)."""
        snap = self.store.snapshot()
        if self.epoch and snap.epoch != self.epoch:
            self.on_lost(
                "Redis lost the shared state (restarted without its data, flushed, or its keys evicted): "
                "the rules' state (counts, open alerts, values seen) is gone, and the alerts queued in it; "
                f"{self._lost_alerts(0)}"
            )
        elif snap.version < self.store.version:
            self.on_lost(
                f"Redis's shared state went back from version {self.store.version} to {snap.version} "
                "(restarted from an older copy, or failed over to a replica behind): the commits in between "
                f"are lost, with the alerts they queued; {self._lost_alerts(snap.outbox_seq)}"
            )
        self.epoch = snap.epoch
        self.store.version = snap.version
        self.published = snap.rules
        state = EngineState.from_json(snap.state) if snap.state else EngineState()
        self.engine.restore(state, self._clock(snap.clock))

    def _lost_alerts(self, kept: int) -> str:
        """Queue again the alerts this instance queued with outbox ids above `kept` (Redis lost
        them, and its ids go on from `kept`), and write its positions again (a restart would
        otherwise begin at its files' `start_at`); what is done, to say."""
        self.positions_lost = True
        lost = [request for alert_id, request in self.unconfirmed.items() if alert_id > kept]
        self.unconfirmed = {alert_id: r for alert_id, r in self.unconfirmed.items() if alert_id <= kept}
        self.requeue += lost
        doubt = self.in_doubt[1]
        # (a retry that queued them again can be in doubt in turn: through a second loss, once)
        self.redo += [request for request in doubt if request not in self.redo]
        self.in_doubt = ("", [])
        return (
            f"the {len(lost)} alert(s) this instance queued and had not seen delivered are queued again"
            + (f", with the {len(doubt)} of a commit whose answer was lost (it may have been made)" if doubt else "")
            + " (one delivered in the last seconds may go twice); other instances' alerts are queued again by them"
        )

    def first(self, requests: list[dict[str, Any] | Request]) -> list[dict[str, Any] | Request]:
        """What a commit queues: the alerts to queue again, then `requests` (an alert in doubt
        that `requests` queue again, applied again on what Redis has now, goes once)."""
        return self.requeue + [r for r in self.redo if r not in requests] + requests

    def doubt(self, token: str, requests: list[dict[str, Any] | Request]) -> None:
        """The answer of commit `token`, which would queue `requests`, was lost (the daemon asks
        Redis whether it was made before it tries again, `resolved`)."""
        self.in_doubt = (token, requests)

    def resolved(self) -> None:
        """Redis told whether the commit in doubt was made (its alerts are then remembered as any)."""
        self.in_doubt = ("", [])

    def committed(self, queued: Mapping[int, dict[str, Any] | Request], positions: bool) -> None:
        """A commit queued alerts (the alerts to queue again first), still `queued` by outbox id:
        remembered until delivered; it wrote the instance's `positions` too, or not."""
        self.requeue, self.redo = [], []
        self.resolved()
        self.positions_lost &= not positions
        self.unconfirmed.update(queued)
        while len(self.unconfirmed) > UNCONFIRMED_KEPT:  # a long OpsGenie outage: the oldest are not
            del self.unconfirmed[next(iter(self.unconfirmed))]

    def _clock(self, clock: tuple[float, float] | None) -> float:
        self.clock_wall = clock[1] if clock else None
        return clock[0] if clock else -math.inf

    def sync(self) -> None:
        """Catch up on what others committed since the synced version."""
        if self.stale:
            self.load_all()
            self.stale = False
            return
        changes = self.store.catch_up()
        self.published = changes.rules
        if changes.full or changes.epoch != self.epoch:
            # Also when Redis lost the state (or went back), which `load_all` says: its outbox's
            # ids may then be others than those this instance remembers, which are not trimmed.
            self.load_all()
            return
        unconfirmed = self.unconfirmed
        while unconfirmed and (first := next(iter(unconfirmed))) < changes.done:  # delivered (or dead)
            del unconfirmed[first]
        if changes.version != self.store.version:
            self.engine.load_groups(changes.groups, self._clock(changes.clock))
            self.store.version = changes.version

    def undo(self, delta: StateDelta | None, clock: float, counts: Counts) -> None:
        """Forget what applying a batch did (its commit was refused): the groups it touched get
        their committed values back, the clock and the engine's `counts` their values before
        (the batch is applied again, and counted then)."""
        self.engine.rewind(counts)
        try:
            if delta is not None and delta.full:
                self.load_all()
                return
            keys = [(kind, rule, group) for kind, rule, group, _ in delta.upserts] if delta else []
            keys += delta.deletes if delta else []
            self.engine.load_groups(self.store.groups(keys), clock)
        except StateUnavailable:
            self.stale = True
            raise


class SharedDaemon(Daemon):
    """`Daemon` over a shared Redis state: fleet mode (own sources) or stream mode (`reader`)."""

    def __init__(self, parts: Parts, store: RedisState, reader: StreamReader | None) -> None:
        super().__init__(parts)
        self.store = store
        self.reader = reader
        self.shared = SharedEngine(parts.engine, store, self._lost)
        self.pending: list[Prepared] = []
        self._refused_logged = -math.inf
        self._refresh_due = 0.0
        self._stream_parser = parts.stream_parser
        if reader is not None and parts.stream_parser is not None:
            self._misses.register(reader.stream, parts.stream_parser)
        self._started = False
        self._batches = 0
        # Keys sources forgot (FORGOTTEN) not yet committed: a source says a forget once, and a
        # commit refused (another instance first) or lost is made again with positions read anew.
        self._forgets: set[str] = set()
        # Every source position as read: sources checkpoint only those that moved, and a commit
        # here writes them all (one refused or lost is made again with them, and Redis may
        # have lost them).
        self._read_positions: dict[str, dict[str, Any]] = {}
        self._auth_failed = False  # the state problem is Redis refusing the credentials
        self._lost_tick: LostTick | None = None
        self._idle_at: float | None = None  # the wall time of the last idle moment since a batch was read
        self._renew_name = NameRenewal(self.store)  # commits renew it too
        self._looked_at_end = False  # an idle pass was made since the input ended

    # -- the loop --------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self.stop_requested.is_set():
            self._alive()
            self._reloads()
            try:
                self._renew_name()
                if not self._started:
                    self.shared.start()
                    self._started = True
                    self._check_eviction()
                busy = self._step()
            except StateUnavailable as exc:
                self._unavailable(exc)
                self.stop_requested.wait(RETRY_UNAVAILABLE)
                continue
            self._available()
            if busy:
                continue
            ended = self.reader is None and bool(self.sources) and all(s.exhausted() for s in self.sources.values())
            if ended and self._looked_at_end and not self._owed():
                log.info("end of input: delivering what is left")
                return
            try:
                self._tick()
            except StateUnavailable as exc:
                self._unavailable(exc)
                self.stop_requested.wait(RETRY_UNAVAILABLE)  # not at once: it spun, logging each turn
                continue
            # At the end of input, one idle pass made (and again while it owes a commit): the alerts
            # Redis lost meanwhile (found as it syncs) are queued again, not dropped with the process.
            self._looked_at_end = ended
            if self.reader is None and not ended:
                self._wait(IDLE_WAIT)
        self._stop_clock()

    def _owed(self) -> bool:
        """Whether a commit is owed: alerts to queue again (Redis lost them), or an idle pass whose
        answer was lost to ask about."""
        return bool(self.shared.requeue or self.shared.redo or self._lost_tick)

    def _stop_clock(self) -> None:
        """At a stop, the shared clock runs on to now, as the idle run-on rule runs it in any
        instance, and is committed even if nothing else changed (idle moments commit nothing): a
        line logged late and read first after the restart, by this instance or another, is judged
        by it, as on a single host. Not with a batch in hand, nor while the stream has entries
        not committed (kept for the next start as they are), nor while Redis is unavailable. It is
        never moved back: the commit is made on the state synced, again if another was first."""
        # A Redis that hangs holds it no longer than the delivery's grace would.
        self.store.bound(time.monotonic() + STOP_GRACE)
        if self.pending and self._lines_in_hand()[0]:
            self._keep_piped()
        if self.pending:
            self._said_kept()
        if not self._started:
            return
        if self.stats.state_problem is not None:  # said as when Redis went away unnoticed
            log.warning(
                "state unavailable at the stop: the clock is left as last committed: %s", self.stats.state_problem
            )
            return
        for _ in range(STOP_ATTEMPTS):
            try:
                if self._idle_pass(stop=True):
                    return
            except StateUnavailable as exc:
                log.warning("state unavailable at the stop: the clock is left as last committed: %s", exc)
                return

    def _said_kept(self) -> None:
        """A stop with batches read and not committed (refused for the rules, Redis unavailable):
        said, with where their events are then, as the single-host daemon says its batch kept."""
        entries = sum(len(p.entries.ids) for p in self.pending if p.entries is not None)
        refused = self.stats.last_error if (self.stats.last_error or "").startswith(REFUSING) else None
        why = self.stats.state_problem or refused or "stopped before its turn came"
        # Standard input cannot be read again: its lines are lost, said as an error with their count,
        # and so are those of the other sources in hand with them, which are not.
        lost, other = self._lines_in_hand()
        if lost:
            log.error(
                "the batch read was not committed (%s): its %d line(s) from standard input cannot be read"
                " again and are lost, with any alert they would have queued: feed them to rulesd again%s",
                why,
                lost,
                f"; the {other} line(s) from its other sources are read again at the next start" if other else "",
            )
            return
        log.warning(
            "the batch read was not committed (%s): %s",
            why,
            f"its {entries} stream {'entry stays' if entries == 1 else 'entries stay'} pending, claimed after"
            " claim_idle by a running worker"
            " (this one, restarted)"
            if self.reader is not None
            else "its lines are read again at the next start",
        )

    def _lines_in_hand(self) -> tuple[int, int]:
        """How many lines of the batches in hand came from standard input, and how many from the
        other sources. Standard input is known by its configured type: under `sources:` it is a
        named source, not a StdinSource (its lines were said to be read again, and a stop while
        Redis was unavailable did not wait for it to commit them)."""
        stdin = [self.sources[config.label] for config in self.config.sources if config.type == "stdin"]
        piped = {name for source in stdin for name in source.names()}
        lines = [(run.path in piped, len(run.data)) for p in self.pending for _, run, *_ in p.runs]
        return sum(n for from_stdin, n in lines if from_stdin), sum(n for from_stdin, n in lines if not from_stdin)

    def _keep_piped(self) -> None:
        """Lines from standard input cannot be read again: stopped while Redis is unavailable,
        the batches holding some are committed if it answers within the stop's bound (a restart,
        a failover), tried every second. Refused for other rules, they are not: waiting cannot
        cure that."""
        if self.stats.state_problem is None or not self._started:
            return
        end = time.monotonic() + STOP_GRACE
        while self.pending:
            held = len(self.pending)
            try:
                self._commit_first()
            except StateUnavailable:
                left = end - time.monotonic()
                if left <= 0:
                    return
                time.sleep(min(RETRY_UNAVAILABLE, left))
                continue
            self._available()
            if len(self.pending) == held:  # refused: not for Redis
                return

    def _shutdown(self, threads: list[threading.Thread]) -> None:
        # Redis's answers are waited for as long as the grace lasts, then `LAST_WAIT` each (the
        # outbox's depth, the lease given up): a Redis that hangs does not hold the stop past
        # systemd's TimeoutStopSec.
        self.store.bound(time.monotonic() + (EOF_GRACE if self._input_ended() else STOP_GRACE))
        super()._shutdown(threads)

    def _input_ended(self) -> bool:
        # A stream has no end (the sources, which end with stdin's, are then none at all): a
        # worker's stop gets the 5 s grace, not the 30 s that deliver what is left at an end.
        return self.reader is None and super()._input_ended()

    def _source_names(self) -> list[str]:
        return super()._source_names() + ([self.reader.stream] if self.reader is not None else [])

    def _check_eviction(self) -> None:
        """Said at start: a policy that evicts any key loses the state without a word from Redis
        (the volatile-* ones evict only keys with a TTL: the sender's lease and the instances'
        names, which their holders claim again)."""
        policy = self.store.eviction_policy()
        if policy is not None and policy.startswith("allkeys-"):
            log.error(
                "Redis's maxmemory-policy is %s: at its maxmemory it evicts keys, the shared state and "
                "queued alerts among them; set maxmemory-policy noeviction",
                policy,
            )

    def _step(self) -> bool:
        """Read (or claim) a batch if none is in hand, and try to commit the first in hand;
        False when there was nothing to do."""
        if not self.pending and not self._read():
            return False
        self._commit_first()
        return True

    def _read(self) -> bool:
        reader = self.reader
        if reader is None:
            runs = [(label, source, source.read(BATCH_LINES)) for label, source in self.sources.items()]
            prepared = self._prepare_runs([(label, s, r) for label, s, r in runs if r])
        else:
            entries = reader.claim(reader.batch_entries(BATCH_LINES)) or reader.read(reader.batch_entries(BATCH_LINES))
            prepared = self._prepare_entries(entries) if entries is not None else None
        if prepared is None:
            return False
        prepared.idle, self._idle_at = self._idle_at, None
        self.pending.append(prepared)
        return True

    def _prepare_runs(self, batch: list[tuple[str, Any, list[Lines]]]) -> Prepared | None:
        if not batch:
            return None
        now = self.clock()
        runs = []
        for label, source, source_runs in batch:
            prefix = self._prefix.get(label, "")
            for run in source_runs:
                offset = Offsets(run)
                runs.append((prefix + run.path, run, source.parser, _where(run, offset)))
        return self._named(self._match(runs, now))

    def _named(self, prepared: Prepared) -> Prepared:
        prepared.token = self._token()
        return prepared

    def _token(self) -> str:
        """A new name for a commit (unique to this process)."""
        self._batches += 1
        return f"{self.store.token}:{self._batches}"

    def _prepare_entries(
        self, entries: EntryBatch, idle: float | None = None, arrival: float | None = None
    ) -> Prepared:
        """Entries matched as read at `arrival` (default now), after the idle moment `idle`."""
        assert self.reader is not None and self._stream_parser is not None
        run = Lines(self.reader.stream, 0, entries.lines, 0)
        now = self.clock() if arrival is None else arrival
        prepared = self._match([(self.reader.stream, run, self._stream_parser, entries.where(self.reader.stream))], now)
        prepared.entries, prepared.idle = entries, idle
        return self._named(prepared)

    def _match(self, runs: list[tuple[str, Lines, Parser, Callable[[int], str]]], now: float) -> Prepared:
        engine = self.engine
        counted, engine.matches = engine.matches, {}  # (the metrics read `counted`)
        try:
            matches = [match_lines(run.data, parser.fast, engine, now, parser.time) for _, run, parser, _ in runs]
        finally:
            matched, engine.matches = engine.matches, counted
        return Prepared(runs, matches, engine.ruleset.fingerprint, now, matched=matched)

    # -- committing --------------------------------------------------------------------------------

    def _commit_first(self) -> None:
        """Catch up, apply and commit the first batch in hand, again as long as others commit
        first; on a refusal that waiting can cure, wait (and claim what the dead left)."""
        prepared = self.pending[0]
        if prepared.fingerprint != self.engine.ruleset.fingerprint:  # matched before a reload
            self.pending[0] = prepared = self._rematch(prepared)
        engine, store = self.engine, self.store
        while True:
            self.shared.sync()
            self._resolve_lost_tick()
            if not self._runs_published():
                self._refuse(self.shared.published)
                return
            made = self._resolve_doubt(prepared)
            before, counts = engine.now, engine.counts()
            new, results, alerts = self._apply_batch(prepared)
            requests = self.shared.first(new)
            state = engine.state
            delta = state.delta() if state.changed else None
            positions = self._positions() if self.reader is None else {}
            entries = prepared.entries
            # While nothing comes, the clock runs on from this batch's latest event, as late as it
            # came (see `Engine.idle_wall`).
            latest = engine.timed and engine.latest > -math.inf
            clock = engine.now if engine.now != before or latest else None
            wall = engine.idle_wall(prepared.arrival) if latest else prepared.arrival
            tally = _tally(prepared.matched, alerts, counts, engine.counts())
            try:
                if made is not None:  # (applied all the same: what its lines count is counted as any)
                    raise Conflict("taken", "", made)
                store.commit(
                    positions=positions,
                    payloads=requests,
                    now=prepared.arrival,
                    engine=delta,
                    clock=clock,
                    clock_wall=wall,
                    stream=entries.stream_batch(self.reader.stream, self.reader.group)
                    if entries and self.reader
                    else None,
                    token=prepared.token,
                    note=msgspec.json.encode(tally),
                )
                queued = dict(zip(store.queued_ids, requests, strict=True))
            except Conflict as conflict:
                self.shared.undo(delta, before, counts)
                if conflict.why == "version":
                    continue
                if conflict.why == "rules":  # another instance published other rules since the sync
                    self._refuse(conflict.detail)
                    return
                self.shared.resolved()  # (the script looks for a commit already made right after the rules)
                if conflict.made is None:
                    self._refused(prepared, conflict)
                    return
                log.info("batch already committed (its answer was lost): not applied again")
                tally, queued = self._made(conflict.made)
            except StateUnavailable:
                self.shared.stale = True  # whether the commit was made is not known: load it all again
                self.shared.doubt(prepared.token, new)
                engine.rewind(counts)  # and the batch is applied again (or dropped, if it was made)
                raise
            else:
                if clock is not None:
                    self.shared.clock_wall = wall
                log.debug(
                    "committed version %d: %d line(s), %d alert(s)",
                    store.version,
                    sum(r.lines for r in results),
                    len(alerts),
                )
            break
        self._forgets.clear()
        self._committed = still_saved(positions)
        self.shared.committed(queued, positions=True)  # (none in stream mode: the stream's cursor is the position)
        self.pending.pop(0)
        self._count(prepared, results, tally)

    def _made(self, made: Made) -> tuple[Tally, dict[int, dict[str, Any] | Request]]:
        """A commit of this instance found made though its answer was lost: what it counts, as
        committed (a rule a reload removed since has no series to count in), and the alerts it
        queued that are still queued (remembered like any commit's, in case Redis loses them)."""
        tally = _loaded(msgspec.json.decode(made.note, type=Tally), self.engine.ruleset.by_name())
        self.engine.rewind(_plus(self.engine.counts(), tally))  # its evictions and closes count once
        return tally, made.queued

    def _resolve_doubt(self, prepared: Prepared) -> Made | None:
        """A batch whose commit's answer was lost: Redis is asked whether it was made before it is
        applied again (the commit is found made, or fenced off and tried again under a new name).
        So the alerts in doubt are always those of the one try that may have been made: a retry
        applies the batch on another state (others committed since, a reload) and may queue others,
        which are the ones to queue again if Redis then loses its data."""
        if self.shared.in_doubt[0] != prepared.token:
            return None
        made = self.store.resolve(prepared.token)
        self.shared.resolved()
        if made is None:
            log.info("batch not committed (its answer was lost): applied again")
            prepared.token = self._token()
        return made

    def _resolve_lost_tick(self) -> None:
        """An idle pass whose commit's answer was lost is counted if Redis made it (before this
        instance commits anything else, which would replace the record Redis keeps of it)."""
        lost = self._lost_tick
        if lost is None:
            return
        made = self.store.resolve(lost.token)
        self._lost_tick = None
        self.shared.resolved()
        if made is not None:
            log.info("idle pass already committed (its answer was lost)")
            self._tick_made(lost.positions, *self._made(made))

    def _runs_published(self) -> bool:
        """Whether this instance runs the published rule set (publishing it if none is: Redis emptied)."""
        mine = self.engine.ruleset.fingerprint
        if not self.shared.published:
            self.store.publish_rules(mine)
            self.shared.published = mine
        return self.shared.published == mine

    def _apply_batch(self, prepared: Prepared) -> tuple[list[dict[str, Any] | Request], list[Batch], list[Alert]]:
        """Apply a matched batch to the engine's state: the requests to queue, the batches, the alerts."""
        engine, settings = self.engine, self.parts.settings
        if prepared.idle is not None:
            # Where the idle moment before the batch ran the committed clock on (and fired what
            # it made due): late events are judged by that clock, as on a single host.
            engine.run_on(engine.now, self.shared.clock_wall, prepared.idle)
        alerts = build_alerts(pending(engine), settings, str)  # the closings of a restored state
        engine.latest = -math.inf  # this batch's latest event time, for the clock while idle
        requests = _requests(alerts)
        results: list[Batch] = []
        for (_, _, _, where), matches in zip(prepared.runs, prepared.matches, strict=True):
            result = apply_matches(matches, engine, where)
            results.append(result)
            found = build_alerts(result, settings, where)
            alerts += found
            requests += _requests(found)
        return requests, results, alerts

    def _refused(self, prepared: Prepared, conflict: Conflict) -> None:
        """A stream batch the script refused: drop what was committed by another instance,
        wait for earlier entries, or commit one entry at a time a claimed batch with gaps."""
        entries, idle = prepared.entries, prepared.idle
        assert entries is not None and self.reader is not None
        # The batches made here keep the idle moment before the refused one: the first of them
        # to commit runs the committed clock on to it (a claimed entry was read after it too, or
        # the stream would not have been idle), so a late line is judged as it would have been.
        # The refused batch's parts keep when it was read too: their events (an event's time when
        # it has none) and the wall time the clock runs on from are not moved to the refusal.
        part = partial(self._prepare_entries, idle=idle, arrival=prepared.arrival)
        if conflict.why == "taken":
            rest = entries.after(conflict.detail)
            log.info(
                "stream entries %s..%s were committed by another instance: %s",
                entries.ids[0],
                entries.ids[-1],
                "dropped" if rest is None else f"the {len(rest.ids)} after {conflict.detail} kept",
            )
            self.pending[0:1] = [] if rest is None else [part(rest)]
        elif conflict.why == "gap":
            log.info(
                "claimed stream entries %s..%s have another instance's entries between them: committed one at a time",
                entries.ids[0],
                entries.ids[-1],
            )
            self.pending[0:1] = [part(single) for single in entries.singles()]
        else:  # turn: an earlier entry is not committed yet; claim it if its reader is gone
            claimed = self.reader.claim(self.reader.batch_entries(BATCH_LINES))
            if claimed is not None:
                self.pending.insert(0, self._prepare_entries(claimed, idle))
                return
            now = time.monotonic()
            if now >= self._refresh_due:
                self._refresh_due = now + self.reader.claim_idle_ms / 3000
                self.reader.refresh([p.entries for p in self.pending if p.entries is not None])
            self.reader.wait_for_commit(self.store.version, TURN_WAIT_MS)

    def _rematch(self, prepared: Prepared) -> Prepared:
        again = self._match(prepared.runs, prepared.arrival)
        again.entries, again.token, again.idle = prepared.entries, prepared.token, prepared.idle
        return again

    def _refuse(self, published: str) -> None:
        mine = self.engine.ruleset.fingerprint
        message = f"{REFUSING}: rule set {mine} differs from the published rule set {published or '(none)'}"
        self.stats.last_error = message
        now = time.monotonic()
        if now - self._refused_logged >= REFUSAL_LOG_EVERY:
            self._refused_logged = now
            log.error("%s; the batch is kept and retried after a reload brings the same rules", message)
        self.stop_requested.wait(IDLE_WAIT)

    def _positions(self) -> dict[str, dict[str, Any]]:
        self._read_positions.update(checkpoints(self.sources, self.stats))
        positions = dict(self._read_positions)
        self._read_positions = still_saved(self._read_positions)
        for key in self._forgets:
            positions.setdefault(key, {})  # (a file read again under that name has its position)
        self._forgets = {key for key, position in positions.items() if not position}
        return positions

    def _count(self, prepared: Prepared, results: list[Batch], tally: Tally) -> None:
        """A committed batch counts: events and invalid lines (warned about) as `results` found
        them (the lines and their parsers say which, whatever the rules), and the `tally` it was
        committed with."""
        stats = self.stats
        for name, count in tally.matches.items():
            stats.bump(stats.matches, name, count)
        entries = prepared.entries
        skipped, too_long = (entries.skipped, entries.too_long) if entries is not None else ({}, frozenset[int]())
        for (counted, run, parser, where), result in zip(prepared.runs, results, strict=True):
            for i in result.invalid:
                if i in skipped:  # another producer's entry, or a line too long: why is known
                    self.parts.warn(f"{where(i)}: skipped: {skipped[i]}", "too long" if i in too_long else "no events")
                elif run.data[i].strip():
                    self.parts.warn(partial(_skipped, parser, run.data[i], where, i))  # built only if logged
            if self.reader is not None:
                self._misses.report(self.reader.stream, parser)
            stats.bump(stats.events, counted, result.events)
            stats.too_long += len(too_long)  # counted as too long, not as invalid
            if len(result.invalid) > len(too_long):
                stats.bump(stats.invalid, counted, len(result.invalid) - len(too_long))
            if result.ignored:
                stats.bump(stats.ignored, counted, result.ignored)
        self._queued(tally.firings, tally.alerts, tally.closes)
        stats.state_groups = self.engine.state.group_count()
        self._warn_limits()
        if (stats.last_error or "").startswith(REFUSING):
            stats.last_error = None

    def _queued(self, firings: dict[str, int], alerts: int, closes: int) -> None:
        for name, count in firings.items():
            self.stats.bump(self.stats.firings, name, count)
        self.stats.alerts_queued += alerts
        self.stats.closes_queued += closes
        if alerts or closes:
            self.sender_wake.set()

    # -- time, reload, availability ---------------------------------------------------------------

    def _tick(self) -> None:
        self._idle_pass(stop=False)

    def _idle_pass(self, *, stop: bool) -> bool:
        """While no event comes (in stream mode: the whole stream committed), the shared clock
        moves on with the wall clock from the latest event time committed; and now and then
        expired groups are forgotten and the limits kept, as by the single-host daemon (events
        do that too, but may have stopped). Committed as a batch is: once across instances, the
        others finding it done when they catch up. At a `stop` the clock is committed even if
        nothing else changed. False if another instance committed first (nothing was)."""
        engine = self.engine
        if self.pending:
            return True
        now, last_sweep = self.clock(), self._last["sweep"]
        sweeps = now - last_sweep >= SWEEP_IDLE
        # The closings of a restored state (a reload) need no clock: they are committed whatever
        # the stream holds, and with rules that have no timers. Rules that start at a time (a
        # new_value rule's learning, an absence's expected groups) start the clock as timers do.
        moves = (engine.timed or engine.waiting) and (self.reader is None or self._stream_settled())
        self._idle_at = now if moves else None
        # While alerts it queued wait, the instance looks at each pass which left the outbox:
        # the fewer it remembers, the fewer go twice if Redis loses them.
        shared = self.shared
        # Positions that moved with no line (a file truncated or rotated, over-long lines
        # skipped) are committed too: a restart would resume at the old ones.
        positions = self._positions() if self.reader is None else {}
        moved = self.reader is None and positions != self._committed
        waiting = shared.requeue or shared.redo or shared.unconfirmed or shared.positions_lost or self._lost_tick
        if not (moves or engine.out or sweeps or waiting or moved):
            return True
        self.shared.sync()
        self._resolve_lost_tick()
        if not self._runs_published():
            return True
        wall = self.shared.clock_wall
        before, counts = engine.now, engine.counts()
        if moves:
            engine.run_on(before, wall, now)
        if sweeps:
            self._last["sweep"] = now
            engine.sweep(engine.now)
        alerts = build_alerts(pending(engine), self.parts.settings, str)
        new = _requests(alerts)
        requests = shared.first(new)
        positions = positions if shared.positions_lost or moved else {}
        ran_on = stop and engine.now > before  # (a stop commits the clock it ran on to)
        if not requests and not engine.state.changed and not positions and not ran_on:
            # Nothing happened: the committed clock stays as it is, and runs on from it alike in
            # every instance; the next batch read is applied where it ran to (`Prepared.idle`).
            engine.now = before
            shared.positions_lost = False
            return True
        delta = engine.state.delta()
        clock = engine.now if moves else None
        # Named, with what it counts, as a batch is: if its answer is lost, Redis is asked whether
        # it was made (at once, on a new connection, or before the next commit: `LostTick`).
        token, tally = self._token(), _tally({}, alerts, counts, engine.counts())
        try:
            self.store.commit(
                positions=positions,
                payloads=requests,
                now=now,
                engine=delta,
                clock=clock,
                token=token,
                note=msgspec.json.encode(tally),
            )
            queued = dict(zip(self.store.queued_ids, requests, strict=True))
        except Conflict as conflict:
            self.shared.undo(delta, before, counts)
            if conflict.made is None:  # another instance committed first: next time
                self._last["sweep"] = last_sweep
                return False
            tally, queued = self._made(conflict.made)
        except StateUnavailable:
            self.shared.stale = True
            engine.rewind(counts)
            self._last["sweep"] = last_sweep
            self._lost_tick = LostTick(token, positions)
            shared.doubt(token, new)
            raise
        else:
            if moves:
                self.shared.clock_wall = now
        self._tick_made(positions, tally, queued)
        return True

    def _tick_made(
        self, positions: dict[str, dict[str, Any]], tally: Tally, queued: dict[int, dict[str, Any] | Request]
    ) -> None:
        """An idle pass's commit made: its positions are saved, its alerts remembered and counted."""
        if positions:
            self._forgets.clear()
            self._committed = still_saved(positions)
        self.shared.committed(queued, positions=True)
        self._queued(tally.firings, tally.alerts, tally.closes)
        self.stats.state_groups = self.engine.state.group_count()
        self._warn_limits()

    def _stream_settled(self) -> bool:
        """True when every entry of the stream is committed (no lag, nothing pending)."""
        reader = self.reader
        assert reader is not None
        client = self.store.client
        try:
            groups = self.store.call(lambda: client.xinfo_groups(reader.stream))
        except redis.exceptions.ResponseError as exc:
            if "no such key" not in str(exc):
                raise
            return False  # the stream is gone (Redis emptied): the next read makes it and its group again
        for group in groups:
            name = group["name"]
            if (name.decode() if isinstance(name, bytes) else name) == reader.group:
                return not group["pending"] and not group.get("lag")
        return False

    def _finish_reload(self, outcome: LoadOutcome) -> bool:
        """A reload that succeeded publishes the rule set (others refuse to commit until theirs agree)."""
        fingerprint = self.engine.ruleset.fingerprint
        ok = super()._finish_reload(outcome)
        if ok and self._started:
            try:
                self.store.publish_rules(self.engine.ruleset.fingerprint)
                if fingerprint != self.engine.ruleset.fingerprint:
                    # The cache dropped the state of the rules that changed against the rules it
                    # ran; the committed state may already be another instance's under the new
                    # rules: it is loaded again, never overwritten from the cache.
                    self.shared.load_all()
            except StateUnavailable as exc:
                self._unavailable(exc)
                self._started = False  # published (and the state loaded) when Redis is back
        return ok

    def _unavailable(self, exc: StateUnavailable) -> None:
        """Reading waits; said once per kind of problem (an outage, or credentials refused)."""
        auth = isinstance(exc, StateAuthFailed)
        self.store.answered = False
        said = self.stats.state_problem is not None and auth == self._auth_failed
        self.stats.state_problem, self._auth_failed = str(exc), auth
        if said:
            return
        if auth:  # the password was rotated under it: waited out, as the outage it is for now
            log.error("%s; reading paused, retrying until Redis accepts the user and password of state.url", exc)
        else:
            log.error("state unavailable, reading paused until it is back: %s", exc)
        self.notifier.status(self._status())

    def _lost(self, message: str) -> None:
        """Redis lost state this instance knew: said as an error, and kept in STATUS= until the next."""
        log.error("%s", message)
        self.stats.last_error = message
        self.notifier.status(self._status())
        # Its name went with the rest: claimed again before the commit that follows (which would
        # do it unsaid), or this process stops if another took it meanwhile.
        self._renew_name(now=True)

    def _available(self) -> None:
        # Only once Redis answered: a step that had nothing to read asked it nothing.
        if self.stats.state_problem is not None and self.store.answered:
            log.warning("state available again: resuming")
            self.stats.state_problem = None
            self.notifier.status(self._status())

    def _status(self) -> str:
        problem = self.stats.state_problem
        if problem is not None:
            return problem if self._auth_failed else f"state unavailable: {problem}"
        try:
            return super()._status()
        except StateUnavailable as exc:
            return f"state unavailable: {exc}"

    def _commit(  # not used: see `_commit_first`
        self, requests: list[Any], now: float, positions: Any = None, *, clock: bool = False
    ) -> None:
        raise NotImplementedError


def _fired(alerts: list[Alert]) -> dict[str, int]:
    """The firings of `alerts` per rule (creates only: a close fires no rule)."""
    firings: dict[str, int] = {}
    for alert in alerts:
        if alert.close is None:
            for name in alert.rules:
                firings[name] = firings.get(name, 0) + 1
    return firings


def _tally(matched: dict[str, int], alerts: list[Alert], before: Counts, after: Counts) -> Tally:
    """What applying a batch counts: its `matched` events and `alerts`, and what the limits
    counted between the engine's counts `before` and `after`."""
    closes = sum(1 for alert in alerts if alert.close is not None)
    return Tally(
        dict(matched),
        _fired(alerts),
        len(alerts) - closes,
        _difference(after.evicted, before.evicted),
        _difference(after.limit_closed, before.limit_closed),
        closes,
        _difference(after.values_evicted, before.values_evicted),
    )


def _difference(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {rule: count - before.get(rule, 0) for rule, count in after.items() if count != before.get(rule, 0)}


def _loaded(tally: Tally, rules: Collection[str]) -> Tally:
    """`tally` without the rules not in `rules`: their counters went with the reload that
    removed them, as they would have had the commit's answer come before it."""

    def kept(per_rule: dict[str, int]) -> dict[str, int]:
        return {name: count for name, count in per_rule.items() if name in rules}

    return Tally(
        kept(tally.matches),
        kept(tally.firings),
        tally.alerts,
        kept(tally.evicted),
        kept(tally.limit_closed),
        tally.closes,
        kept(tally.values_evicted),
    )


def _plus(counts: Counts, tally: Tally) -> Counts:
    """The engine's `counts` with what the limits counted in `tally` added."""
    evicted, closed, values = dict(counts.evicted), dict(counts.limit_closed), dict(counts.values_evicted)
    for live, added in ((evicted, tally.evicted), (closed, tally.limit_closed), (values, tally.values_evicted)):
        for rule, count in added.items():
            live[rule] = live.get(rule, 0) + count
    return Counts(evicted, closed, counts.until_sweep, values)


def _requests(alerts: list[Alert]) -> list[dict[str, Any] | Request]:
    """What to queue for `alerts`: a create's payload, or a close of an alias."""
    return [Request(a.payload, CLOSE, a.close) if a.close is not None else a.payload for a in alerts]


def _skipped(parser: Parser, line: bytes, where: Callable[[int], str], index: int) -> str:
    """The warning for an invalid line: where it is and why (the parser is asked again)."""
    return f"{where(index)}: skipped: {parser.why_invalid(line_text(line))}"


def _where(run: Lines, offset: Offsets) -> Callable[[int], str]:
    def where(index: int) -> str:
        return f"{run.path} (offset {offset(index)})"

    return where
