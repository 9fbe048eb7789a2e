"""The state backend shared by several instances: everything in Redis.

The keys (under a prefix, `rulesd:` by default):

- `version`: the state's version, raised by every commit; `rules`: the published rule set's
  hash; `clock`: the engine's clock (latest event time, and the wall time it was set);
  `fingerprints`, `groups` (a hash: `kind TAB rule TAB group` -> value, as the engine keeps
  them); `changes`: a capped stream of change records, one per version (the groups it
  touched), from which an instance catches up on what others committed.
- `positions`: source positions, a hash keyed `instance TAB key`.
- `outbox` (a stream, entry id `N-0` for alert N), `outbox:state` (attempts of queued
  alerts), `outbox:dead`, `outbox:attempts:N`, `sender` (the lease of the one instance that
  delivers, so that alerts leave in order), `sender:paused`.
- `cursor`: the last stream entry committed (stream mode).
- `instance:NAME`: the process that holds instance NAME's name, with a lease (`rulesd.state.claim`).
- `epoch`: a random name the state gets when an instance first finds none: another one (or
  none) under a running instance means Redis lost what it held (restarted without its data,
  flushed, or its keys evicted).

Every batch's effects are committed by one script (`scripts.COMMIT`): it writes them only if
the state is still at the version the instance last synced (optimistic concurrency: another
instance's commit in between makes this one re-apply its batch on the newer state), the
published rule set is the instance's, and, for a stream, no uncommitted entry precedes the
batch. A Redis that cannot be reached raises `StateUnavailable`.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import msgspec
import orjson
import redis
from redis.commands.core import Script

from rulesd.engine import StateDelta
from rulesd.engine.state import json_name, key_from_json
from rulesd.engine.values import GroupKey
from rulesd.jsontext import read_json
from rulesd.state import claim, scripts
from rulesd.state.base import (
    CREATE,
    DEAD,
    KEPT_CLOSE,
    PENDING,
    Attempt,
    OutboxAlert,
    Request,
    StateAuthFailed,
    StateError,
    StateUnavailable,
)
from rulesd.state.connection import resolved_pool

log = logging.getLogger("rulesd.state")

PREFIX = "rulesd:"
CHANGES_KEPT = 10_000  # change records kept: an instance further behind loads the whole state
LEASE_S = 15.0  # how long the sender's lease outlives its last renewal
ATTEMPTS_KEPT = 50
SEPARATOR = "\t"  # in hash fields: rule names, kinds and instance names have no TAB; JSON escapes it
T = TypeVar("T")
AUTH_FAILED = "Redis authentication failed"
SLOW_ANSWER = 2.0  # seconds: an answer slower than this is said (a CLIENT PAUSE stalls without an error)
SLOW_SAID_EVERY = 60.0  # seconds between two such lines
OUT_OF_MEMORY = "Redis is out of memory (raise its maxmemory, or free memory)"
ANSWER_WAIT = 10.0  # seconds a command waits for its answer before Redis is said unavailable
CONNECT_WAIT = 5.0  # seconds a connection may take to be made
LAST_WAIT = 1.0  # seconds a command waits for its answer past the deadline of a stop (`bound`)

# What makes Redis unusable for now, rather than a request wrong: down, restarting (loading
# its AOF), a replica after a failover (read only), a master that lost its link.
_UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
)


def _unavailable(exc: redis.exceptions.ResponseError) -> bool:
    """An error reply that passes: loading, failing over, or BUSY (a script, anyone's, running
    past busy-reply-threshold: Redis answers nothing else until it ends or is killed)."""
    text = str(exc)
    return "LOADING" in text or "MASTERDOWN" in text or "READONLY" in text or text.startswith("BUSY ")


def default_instance(state_dir: str) -> str:
    """An instance's default name: the host name and its state directory."""
    return f"{socket.gethostname()}:{os.path.abspath(state_dir)}"


def connect(url: str, stop: threading.Event | None = None) -> redis.Redis:
    """A client for `url` (redis://, rediss://, unix://), bytes in and out; its host looked up
    within the connect timeout, the lookups under way when `stop` is set cut (`connection`)."""
    client = redis.Redis.from_url(
        url, socket_timeout=ANSWER_WAIT, socket_connect_timeout=CONNECT_WAIT, health_check_interval=30
    )
    resolved_pool(client.connection_pool, stop)
    return client


class Made(msgspec.Struct):
    """A commit of this instance whose answer was lost, found made: the `note` it was made
    with, and the alerts it queued that are still queued, by outbox id."""

    note: bytes
    queued: dict[int, dict[str, Any] | Request]


class NameLost(Exception):
    """A script found the instance's name held by no process (`RedisState.call` claims it again)."""


class Conflict(Exception):
    """A commit that wrote nothing: `why` is `rules`, `version`, `taken`, `turn`, `gap` or
    `fenced` (see `scripts.COMMIT`), `detail` what the store holds instead; `made` the commit of
    this instance that is the same batch, made already (`taken`, `detail` '')."""

    def __init__(self, why: str, detail: str, made: Made | None = None) -> None:
        super().__init__(f"{why}: {detail}")
        self.why, self.detail, self.made = why, detail, made


class StreamBatch(msgspec.Struct, frozen=True):
    """Where a batch of stream entries is: the stream, the consumer group, the entry ids,
    and whether the batch was claimed from another instance (then its contiguity in the
    stream is checked: another's batches may be claimed at once)."""

    stream: str
    group: str
    ids: list[str]
    claimed: bool = False


class Changes(msgspec.Struct):
    """What `catch_up` found: the version and clock now, the published rule set's hash, the
    state's epoch ('' if none), and either `full` (load the whole state) or the changed groups'
    values (None: gone)."""

    version: int
    clock: tuple[float, float] | None
    rules: str
    epoch: str
    done: int  # every alert below this id left the outbox (delivered or dead-lettered)
    full: bool = False
    groups: dict[tuple[str, str, GroupKey], Any] = msgspec.field(default_factory=dict)


class Snapshot(msgspec.Struct):
    """The whole engine state at a version (`EngineState.to_json` form), with the clock and
    the state's epoch."""

    version: int
    clock: tuple[float, float] | None
    rules: str
    state: dict[str, Any] | None
    epoch: str = ""
    outbox_seq: int = 0  # the last outbox id given


class RedisState:
    """The state backend in Redis, for instance `instance` (its source positions are its own)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        instance: str,
        prefix: str = PREFIX,
        lease: float = LEASE_S,
        clock: Callable[[], float] | None = None,
        config: str = "the config",
        role: str = "",
    ) -> None:
        # redis-py types its replies as unions of its sync and async clients' answers: they are
        # checked here where they are read instead.
        self.client: Any = client
        self.instance = instance
        self.config = config  # the file that names it, for NameTaken
        self.prefix = prefix
        self.lease_ms = int(lease * 1000)
        self.token = f"{instance}:{os.getpid()}:{secrets.token_hex(4)}"  # this process, for the lease
        self.version = 0  # the version the caller's engine state was last synced to
        self.rules_hash = ""  # the rule set this instance runs (set by `publish_rules`)
        self.k = _Keys(prefix)
        self._scripts: dict[str, Script] = {}
        self._clock = clock
        self._depth: tuple[int, float | None] = (0, None)
        self.queued_ids = range(0)  # the outbox ids the last commit gave its alerts
        self.answered = False  # whether a call succeeded (since the holder last set it False)
        self._slow_said = -math.inf  # when a slow answer was last said (monotonic)
        self._head: tuple[int, str] = (0, "")  # the id and creation time of the alert `head` read last
        self._deadline: float | None = None  # see `bound`
        self._armed: float | None = None  # the wait the connections were last given (`_arm`)
        # This process as the holder of the instance's name, once it claimed it (`claim`): then
        # every commit checks it still holds it, and renews it.
        self.holder = b""
        self._claimed = False
        self.name_lease_ms = int(claim.NAME_LEASE_S * 1000)
        # `role` "forward:": a forwarder's name, apart from the daemon's (their positions are too).
        self.name_key = self.k.prefix + role + "instance:" + instance

    def _script(self, name: str) -> Script:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.client.register_script(getattr(scripts, name))
        return script

    def bound(self, deadline: float) -> None:
        """From now on, wait for an answer until `deadline` (monotonic) at most, and `LAST_WAIT`
        past it: at a stop, a Redis that hangs (takes connections, never answers) must not hold
        the process 10 s per command, past the time systemd gives a stop before it kills it."""
        self._deadline, self._armed = deadline, None

    def _arm(self) -> None:
        """Give the next command the wait left before the deadline, if there is one, in whole
        seconds up: connections are made again only when that changes, so a stop's commands do
        not each open one (a TLS handshake with rediss://), and a command waits under a second
        past the deadline, or LAST_WAIT once it has passed."""
        if self._deadline is None:
            return
        wait = min(ANSWER_WAIT, max(LAST_WAIT, math.ceil(self._deadline - time.monotonic())))
        if wait == self._armed:
            return
        self._armed = wait
        timeouts = {"socket_timeout": wait, "socket_connect_timeout": min(CONNECT_WAIT, wait)}
        pool = self.client.connection_pool
        pool.connection_kwargs.update(timeouts)  # for the connections made from now on
        # The idle ones keep those they were made with, even made again: they get these, and are
        # made again with them (redis-py sets a socket's timeout when it connects).
        for connection in list(getattr(pool, "_available_connections", ())):
            for name, value in timeouts.items():
                setattr(connection, name, value)
        pool.disconnect(inuse_connections=False)

    def call(self, what: Callable[[], T]) -> T:
        """Run `what` (Redis commands); StateUnavailable when Redis cannot be used now."""
        try:
            return self._call(what)
        except NameLost:
            # A script found the name held by none (Redis lost its data, or the lease ran out
            # while this process was paused): claimed again, which is said, then run again.
            if (found := self.claim()) is not None:
                raise claim.NameTaken(self.instance, claim.decode(found[0]), self.config, running=True) from None
            return self._call(what)

    def _call(self, what: Callable[[], T]) -> T:
        self._arm()
        started = time.monotonic()
        try:
            try:
                result = what()
            except redis.exceptions.ConnectionError as exc:
                if isinstance(exc, redis.exceptions.AuthenticationError):
                    raise
                # A connection closed under a command (CLIENT KILL, Redis's `timeout`, a proxy
                # restarting) is no outage: once more at once, on a new connection, before saying
                # Redis is unavailable. A commit whose answer was lost is refused the second time
                # (`taken`, or another version), never made twice.
                result = what()
            self.answered = True
            self._slow(time.monotonic() - started)
            return result
        except (redis.exceptions.AuthenticationError, redis.exceptions.NoPermissionError) as exc:
            # Before _UNAVAILABLE: redis-py makes a refused password a ConnectionError. Redis's
            # message never holds the password.
            raise StateAuthFailed(f"{AUTH_FAILED}: {exc}") from exc
        except _UNAVAILABLE as exc:
            raise StateUnavailable(f"Redis unavailable: {exc}") from exc
        except redis.exceptions.OutOfMemoryError as exc:  # noeviction at maxmemory: nothing was written
            raise StateUnavailable(f"{OUT_OF_MEMORY}: {exc}") from exc
        except redis.exceptions.ResponseError as exc:
            if str(exc) == "NAMELOST":  # scripts.HOLD_NAME
                raise NameLost from None
            if str(exc).startswith("NAMETAKEN "):  # scripts.HOLD_NAME
                holder = claim.decode(str(exc).removeprefix("NAMETAKEN ").encode())
                raise claim.NameTaken(self.instance, holder, self.config, running=True) from None
            if _unavailable(exc):
                raise StateUnavailable(f"Redis unavailable: {exc}") from exc
            if "DB index is out of range" in str(exc):  # the connection's SELECT: waiting cannot help
                raise StateError(
                    f"Redis refused the database number of the url: {exc}"
                    " (it has as many as its `databases` setting says, numbered from 0)"
                ) from None
            raise

    def _slow(self, took: float) -> None:
        """Say an answer that took seconds: everything that needs Redis waited for it meanwhile
        (reading, committing, delivering), below the socket timeout that would call it an outage."""
        if took < SLOW_ANSWER or time.monotonic() - self._slow_said < SLOW_SAID_EVERY:
            return
        self._slow_said = time.monotonic()
        log.warning(
            "Redis took %.1f s to answer (paused by CLIENT PAUSE, busy with a slow command, failing over, or "
            "overloaded): reading and delivery waited meanwhile",
            took,
        )

    def eviction_policy(self) -> str | None:
        """Redis's `maxmemory-policy` (None if it does not say: INFO renamed or refused)."""
        try:
            info = self.call(lambda: self.client.info("memory"))
        except redis.exceptions.ResponseError:
            return None
        policy = info.get("maxmemory_policy")
        return str(policy) if policy is not None else None

    # -- the instance's name -------------------------------------------------------------------

    def claim(self, replace: bytes = b"") -> tuple[bytes, int] | None:
        """Claim or renew the instance's name for this process (over `replace`, a holder found
        gone): None if it holds it now, else the holder's value and its lease's ms left. Said
        in the log when it had to be claimed again while held (Redis lost it, or the lease ran
        out: a pause)."""
        if not self.holder:
            self.holder = claim.encode(claim.this_process(self.token))
        reply = self.call(
            lambda: self._script("CLAIM")(keys=[self.name_key], args=[self.holder, self.name_lease_ms, replace])
        )
        if isinstance(reply, list):
            return bytes(reply[0]), int(reply[1])
        if self._claimed and int(reply) == 0:
            log.warning(
                "instance %r was no longer held by this process in Redis (Redis lost its data, or the lease ran "
                "out while the process was paused) and no other holds it: claimed again",
                self.instance,
            )
        self._claimed = True
        return None

    def held_name(self) -> bytes:
        """This process as the name's holder for the scripts to check (b"": not claimed, checked not)."""
        return self.holder if self._claimed else b""

    # -- the rule set -------------------------------------------------------------------------

    def publish_rules(self, rules_hash: str) -> None:
        """Publish `rules_hash` as the rule set every instance must run (at start and reload)."""
        self.rules_hash = rules_hash
        self.call(lambda: self.client.set(self.k.rules, rules_hash))

    def published_rules(self) -> str:
        """The published rule set's hash ('' if none)."""
        value = self.call(lambda: self.client.get(self.k.rules))
        return value.decode() if value else ""

    # -- engine state -------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The whole engine state, read atomically with its version and its epoch (named now
        if it has none: an empty Redis, or one that lost the state)."""

        def read() -> Any:
            pipe = self.client.pipeline(transaction=True)
            k = self.k
            pipe.set(k.epoch, secrets.token_hex(8), nx=True).get(k.epoch)
            pipe.get(k.version).get(k.clock).get(k.rules).get(k.fingerprints).hgetall(k.groups).get(k.outbox_seq)
            return pipe.execute()

        _, epoch, version, clock, rules, fingerprints, groups, seq = self.call(read)
        state: dict[str, Any] | None = None
        if fingerprints is not None or groups:
            state = {"fingerprints": orjson.loads(fingerprints) if fingerprints else {}}
            for raw, value in groups.items():
                kind, rule, group = raw.decode().split(SEPARATOR, 2)
                state.setdefault(json_name(kind), {}).setdefault(rule, []).append(
                    [orjson.loads(group), read_json(value)]
                )
        return Snapshot(int(version or 0), _clock(clock), (rules or b"").decode(), state, epoch.decode(), int(seq or 0))

    def load_engine_state(self) -> dict[str, Any] | None:
        """The saved engine state, with the clock as saved; the instance is then synced to its
        version (only this object's record of it: nothing is written)."""
        snap = self.snapshot()
        self.version = snap.version
        if snap.state is None or snap.clock is None:
            return snap.state
        return {**snap.state, "clock": snap.clock[0], "clock_saved": snap.clock[1]}

    def catch_up(self) -> Changes:
        """What others committed since the synced version (not yet adopted: see `synced`)."""
        k = self.k
        reply = self.call(
            lambda: self._script("CATCH_UP")(
                keys=[k.version, k.clock, k.changes, k.groups, k.rules, k.epoch, k.outbox, k.outbox_seq],
                args=[self.version],
            )
        )
        how = reply[5]
        changes = Changes(
            int(reply[0]), _clock(reply[1]), reply[2].decode(), reply[3].decode(), int(reply[4]), how == b"full"
        )
        if how == b"keys":
            groups = changes.groups
            for i in range(6, len(reply), 2):
                kind, rule, group = reply[i].decode().split(SEPARATOR, 2)
                value = reply[i + 1]
                groups[(kind, rule, key_from_json(group))] = read_json(value) if value else None
        return changes

    def groups(self, keys: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str, GroupKey], Any]:
        """The committed values of the groups `keys` (kind, rule, group as JSON); None: gone."""
        keys = list(keys)
        if not keys:
            return {}
        fields = [SEPARATOR.join(key) for key in keys]
        values = self.call(lambda: self.client.hmget(self.k.groups, fields))
        return {
            (kind, rule, key_from_json(group)): read_json(value) if value else None
            for (kind, rule, group), value in zip(keys, values, strict=True)
        }

    # -- the commit ---------------------------------------------------------------------------

    def commit(
        self,
        *,
        positions: Mapping[str, Mapping[str, Any]],
        payloads: Iterable[dict[str, Any] | Request],
        now: float,
        engine: StateDelta | None = None,
        clock: float | None = None,
        clock_wall: float | None = None,
        stream: StreamBatch | None = None,
        token: str = "",
        note: bytes = b"",
    ) -> int:
        """Queue `payloads`, save `positions` (this instance's), the engine's changes and its
        `clock`, acknowledge the `stream` batch: all at once, and only if the state is at the
        synced version (else `Conflict`, and nothing is written). How many were queued.
        The clock is saved with the wall time it runs on from (`clock_wall`, default `now`).

        `token` names the batch: committing it again (its answer was lost with the connection)
        is refused as `taken`, with the `note` it was committed with (what it counts: the caller
        counts what was committed, not what it applied this time) and the alerts it queued (see
        `Made`). The outbox ids given are left in `queued_ids`."""
        k = self.k
        outbox = [_outbox_fields(p) for p in payloads]
        upserts = (
            [(SEPARATOR.join((kind, rule, group)), value) for kind, rule, group, value in engine.upserts]
            if engine
            else []
        )
        deletes = [SEPARATOR.join(key) for key in engine.deletes] if engine else []
        full = engine is not None and engine.full
        args: list[Any] = [
            self.version,
            self.rules_hash,
            repr(now),
            _clock_json(clock, now if clock_wall is None else clock_wall),
            "1" if full else "",
            orjson.dumps(engine.fingerprints) if engine is not None and full else b"",
            len(upserts),
            len(deletes),
            len(positions),
            len(outbox),
            stream.group if stream else "",
            stream.ids[0] if stream else "",
            stream.ids[-1] if stream else "",
            len(stream.ids) if stream else 0,
            len(stream.ids) if stream and stream.claimed else 0,
            CHANGES_KEPT,
            token,
            self.instance,
            note,
            self.held_name(),
            self.name_lease_ms,
        ]
        for pair in upserts:
            args += pair
        args += deletes
        for key, value in positions.items():
            args += (self.instance + SEPARATOR + key, orjson.dumps(dict(value)) if value else b"")  # b"": deleted
        for entry in outbox:
            args += entry
        if stream:
            args += stream.ids
        keys = [
            k.version,
            k.rules,
            k.clock,
            k.fingerprints,
            k.groups,
            k.changes,
            k.positions,
            k.outbox,
            k.outbox_seq,
            stream.stream if stream else k.prefix + "none",
            k.cursor,
            k.batches,
            self.name_key,
        ]
        reply = self.call(lambda: self._script("COMMIT")(keys=keys, args=args))
        why, detail = reply[0].decode(), reply[1].decode()
        if why != "ok":
            raise Conflict(why, detail, _made(reply[2:]) if len(reply) > 2 else None)
        self.version = int(detail)
        last = int(reply[2])
        self.queued_ids = range(last - len(outbox) + 1, last + 1)
        return len(outbox)

    def resolve(self, token: str) -> Made | None:
        """Whether this instance's commit named `token`, whose answer was lost, was made (None:
        not made, and it never will be: Redis refuses it if it still comes)."""
        k = self.k
        keys = [k.batches, k.outbox, self.name_key]
        args: list[Any] = [self.instance, token, self.held_name(), self.name_lease_ms]
        reply = self.call(lambda: self._script("RESOLVE")(keys=keys, args=args))
        return _made(reply) if reply else None

    # -- source positions ---------------------------------------------------------------------

    def load_positions(self) -> dict[str, dict[str, Any]]:
        """This instance's saved source positions."""
        mine = self.instance + SEPARATOR
        saved = self.call(lambda: self.client.hgetall(self.k.positions))
        return {
            key.decode()[len(mine) :]: orjson.loads(value)
            for key, value in saved.items()
            if key.decode().startswith(mine)
        }

    def cursor(self) -> str:
        """The last stream entry committed ('0-0': none)."""
        value = self.call(lambda: self.client.get(self.k.cursor))
        return value.decode() if value else "0-0"

    # -- the outbox ---------------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock() if self._clock is not None else time.time()

    def head(self, *, take: bool = True) -> OutboxAlert | None:
        """The oldest queued alert, if this instance holds the sender's lease (or, with `take`,
        takes it); without `take` the lease is not renewed: it lapses, for another to take."""
        k = self.k
        args: list[str | int] = [self.token, self.lease_ms, int(take)]
        reply = self.call(lambda: self._script("HEAD")(keys=[k.sender, k.outbox, k.outbox_state], args=args))
        if not reply:
            return None
        alert = _queued(int(reply[0]), reply[1], reply[2])
        self._head = (alert.id, repr(alert.created))
        return alert

    def _created(self, alert_id: int) -> str:
        """The creation time `head` read for `alert_id` ('' if it read another): the alert in
        hand is only removed, rescheduled or dead-lettered if it is still the one with that id."""
        return self._head[1] if self._head[0] == alert_id else ""

    def owns(self, alert_id: int) -> bool:
        """True if this instance still holds the lease and the alert is still queued: asked
        right before a send, so that an instance resuming from a pause does not send an
        alert another instance has taken over."""
        k = self.k
        return bool(
            self.call(
                lambda: self._script("OWNS")(keys=[k.sender, k.outbox], args=[self.token, self.lease_ms, alert_id])
            )
        )

    def mark_sent(self, alert_id: int) -> None:
        """Delivered: the alert leaves the outbox (whoever holds the lease now), and sending is
        not paused any more, as far as `rulesd outbox list` tells; a close of an alert whose
        create is a dead letter stays among them (see `KEPT_CLOSE`)."""
        k = self.k
        keys = [k.outbox, k.outbox_state, k.outbox_dead, k.attempts(alert_id), k.paused]
        args: list[Any] = [alert_id, KEPT_CLOSE, self._created(alert_id)]
        self.call(lambda: self._script("MARK_SENT")(keys=keys, args=args))

    def reschedule(
        self,
        alert_id: int,
        next_attempt: float,
        error: str,
        *,
        count: bool = True,
        at: float | None = None,
        result: str = "retry",
    ) -> None:
        """A failed attempt: try again at `next_attempt`; recorded as `result` if made `at` a time."""
        k = self.k
        record = _attempt_json(at, result, error)
        args: list[Any] = [alert_id, 1 if count else 0, repr(next_attempt), error, record, ATTEMPTS_KEPT]
        args.append(self._created(alert_id))
        keys = [k.outbox, k.outbox_state, k.attempts(alert_id)]
        self.call(lambda: self._script("RESCHEDULE")(keys=keys, args=args))

    def dead_letter(
        self, alert_id: int, error: str, response: str | None = None, *, at: float | None = None, result: str = "dead"
    ) -> None:
        """Give up on an alert; `retry_dead` can requeue it."""
        k = self.k
        record = _attempt_json(at, result, error)
        args: list[Any] = [alert_id, error, response or "", record, ATTEMPTS_KEPT, self._created(alert_id)]
        keys = [k.outbox, k.outbox_state, k.outbox_dead, k.attempts(alert_id)]
        self.call(lambda: self._script("DEAD_LETTER")(keys=keys, args=args))

    def attempts(self, alert_id: int) -> list[Attempt]:
        """The recorded failed attempts of an alert, oldest first."""
        rows = self.call(lambda: self.client.lrange(self.k.attempts(alert_id), 0, -1))
        return [Attempt(*orjson.loads(row)) for row in rows]

    def alert(self, alert_id: int) -> OutboxAlert | None:
        """One alert of the outbox by id, if it is still there."""
        return next((a for a in self.alerts() if a.id == alert_id), None)

    def set_paused(self, reason: str | None) -> None:
        """Record that the sender is paused (a refused key) and why, or that it is not. Paused,
        it gives the sender's lease up if it holds it: an instance whose key works takes the
        outbox over at its next look, not once the lease has lapsed (up to LEASE_S later); the
        paused sender only looks without taking it until its pause ends (`head`)."""
        if reason is None:
            self.call(lambda: self.client.delete(self.k.paused))
            return
        self.call(lambda: self._script("PAUSE")(keys=[self.k.paused, self.k.sender], args=[reason, self.token]))

    def paused(self) -> str | None:
        """Why the sender is paused, as last recorded; None when it is not."""
        value = self.call(lambda: self.client.get(self.k.paused))
        return value.decode() if value else None

    def retry_dead(self, now: float) -> int:
        """Requeue every dead-lettered alert as new (at the end of the queue); how many."""
        k = self.k
        keys = [k.outbox_dead, k.outbox, k.outbox_seq]
        return int(self.call(lambda: self._script("RETRY_DEAD")(keys=keys, args=[repr(now), k.attempts_prefix])))

    def alerts(self, status: str | None = None) -> list[OutboxAlert]:
        """Queued and dead-lettered alerts in order, optionally only those with `status`."""
        k = self.k

        def read() -> Any:
            pipe = self.client.pipeline(transaction=True)
            pipe.xrange(k.outbox).hgetall(k.outbox_state).hgetall(k.outbox_dead)
            return pipe.execute()

        entries, states, dead = self.call(read)
        found: list[OutboxAlert] = []
        if status in (None, PENDING):
            for entry_id, fields in entries:
                alert_id = int(entry_id.split(b"-")[0])
                found.append(_queued(alert_id, fields, states.get(str(alert_id).encode(), b"")))
        if status in (None, DEAD):
            found += [_dead(int(alert_id), orjson.loads(raw)) for alert_id, raw in dead.items()]
        return sorted(found, key=lambda a: a.id)

    def depth(self, *, last_known: bool = True) -> tuple[int, float | None]:
        """Queued alerts and the creation time of the oldest: the last known while Redis is away
        (for metrics and STATUS=), or, without `last_known`, StateUnavailable (a stop must not say
        an old count as the one it leaves)."""

        def read() -> Any:
            pipe = self.client.pipeline(transaction=False)
            pipe.xlen(self.k.outbox).xrange(self.k.outbox, count=1)
            return pipe.execute()

        try:
            count, first = self.call(read)
        except StateUnavailable:
            if not last_known:
                raise
            return self._depth
        oldest = float(first[0][1][b"created"]) if first else None
        self._depth = int(count), oldest
        return self._depth

    def relax_durability(self) -> None:
        """Nothing to relax: Redis's durability is its own configuration (AOF)."""

    def close(self) -> None:
        """Give up the sender's lease if this process holds it, so another takes over at once."""
        self._arm()
        try:
            # In one script: a lease that lapsed between a read and a delete, taken by another
            # instance meanwhile, would be deleted under it, and a third could send beside it.
            self._script("RELEASE")(keys=[self.k.sender], args=[self.token])
            if self._claimed:
                self._script("RELEASE")(keys=[self.name_key], args=[self.holder])
        except redis.exceptions.RedisError:
            pass  # they expire by themselves


class _Keys:
    """The Redis keys under a prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.version, self.rules, self.clock = prefix + "version", prefix + "rules", prefix + "clock"
        self.fingerprints, self.groups, self.changes = prefix + "fingerprints", prefix + "groups", prefix + "changes"
        self.positions, self.cursor, self.batches = prefix + "positions", prefix + "cursor", prefix + "batches"
        self.epoch = prefix + "epoch"
        self.outbox, self.outbox_seq = prefix + "outbox", prefix + "outbox:seq"
        self.outbox_state, self.outbox_dead = prefix + "outbox:state", prefix + "outbox:dead"
        self.attempts_prefix = prefix + "outbox:attempts:"
        self.sender, self.paused = prefix + "sender", prefix + "sender:paused"

    def attempts(self, alert_id: int) -> str:
        return f"{self.attempts_prefix}{alert_id}"


def _clock(raw: bytes | None) -> tuple[float, float] | None:
    """The saved clock: (latest event time, wall time when it was set), None if never set."""
    if not raw:
        return None
    event_time, wall = orjson.loads(raw)
    return float(event_time), float(wall)


def _clock_json(clock: float | None, now: float) -> bytes:
    if clock is None or not math.isfinite(clock):
        return b""
    return orjson.dumps([clock, now])


def _outbox_fields(request: dict[str, Any] | Request) -> tuple[bytes, str, str]:
    if isinstance(request, Request):
        return orjson.dumps(request.payload), request.action, request.target or ""
    return orjson.dumps(request), CREATE, ""


def _made(reply: list[Any]) -> Made:
    """`scripts.LAST_COMMIT`'s answer: the note, and the outbox entries still queued."""
    queued: dict[int, dict[str, Any] | Request] = {}
    for entry_id, raw in reply[1]:
        fields = dict(zip(raw[::2], raw[1::2], strict=True))
        payload, action = orjson.loads(fields[b"payload"]), fields[b"action"].decode()
        target = fields[b"target"].decode() or None
        queued[int(entry_id.split(b"-")[0])] = payload if action == CREATE else Request(payload, action, target)
    return Made(reply[0], queued)


def _attempt_json(at: float | None, result: str, error: str) -> bytes:
    return orjson.dumps([at, result, error]) if at is not None else b""


def _queued(alert_id: int, fields: Any, raw_state: bytes) -> OutboxAlert:
    """A queued alert from its stream entry's fields and its state (attempts so far)."""
    if isinstance(fields, list):  # a script's reply: a flat list
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    st = orjson.loads(raw_state) if raw_state else {}
    created = float(fields[b"created"])
    target = fields[b"target"].decode()
    return OutboxAlert(
        id=alert_id,
        created=created,
        payload=orjson.loads(fields[b"payload"]),
        status=PENDING,
        attempts=int(st.get("attempts", 0)),
        next_attempt=float(st.get("next_attempt", created)),
        last_error=st.get("last_error"),
        response=None,
        action=fields[b"action"].decode(),
        target=target or None,
        body=fields[b"payload"],
    )


def _dead(alert_id: int, alert: dict[str, Any]) -> OutboxAlert:
    return OutboxAlert(
        id=alert_id,
        created=float(alert["created"]),
        payload=orjson.loads(alert["payload"]),
        status=DEAD,
        attempts=int(alert["attempts"]),
        next_attempt=float(alert["created"]),
        last_error=alert.get("last_error"),
        response=alert.get("response") or None,
        action=alert["action"],
        target=alert.get("target") or None,
    )
