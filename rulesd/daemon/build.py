"""The composition root: the only place that builds the real parts of a running daemon (the
state database, the source, the HTTP session, the sender, the watchers, the metrics server).

`build_parts` makes them from the configuration; `Daemon` (in `run`) only runs what it is
handed, so a test or another mode can hand it other parts.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, TextIO

import msgspec

from rulesd.alerting.api import Transport
from rulesd.alerting.dry_run import PrintTransport
from rulesd.alerting.payload import AlertSettings
from rulesd.config import Config, OpsgenieConfig, SourceConfig, resolve_api_key
from rulesd.daemon.delivery_log import DeliveryLog
from rulesd.daemon.stop_signals import StopSignals
from rulesd.engine import Engine, EngineState
from rulesd.errors import ConfigError, InvalidInputError, Problem, SourceLocation
from rulesd.events import Parser
from rulesd.logs import RateLimitedWarning
from rulesd.notify import Notifier
from rulesd.reload import RuleWatcher
from rulesd.rules.cache import RuleCache
from rulesd.rules.model import RuleSet
from rulesd.sender import POLL_INTERVAL, Sender
from rulesd.sources.base import Saved, Source
from rulesd.sources.file import FileSource
from rulesd.sources.journald import JournaldSource
from rulesd.sources.named import NamedSource, own_positions
from rulesd.sources.parsers import source_parser
from rulesd.sources.stdin import StdinSource
from rulesd.state import SqliteState, StateBackend, StateError
from rulesd.state.lock import StateLock, lock_state_dir
from rulesd.state.sqlite import database_exists
from rulesd.stats import Stats

if TYPE_CHECKING:  # the Redis client is imported only where the state is in Redis; Prometheus
    # only where metrics are served; the HTTP client only where alerts are sent
    from rulesd.alerting.opsgenie import OpsGenieClient
    from rulesd.metrics import MetricsServer
    from rulesd.sources.redis_stream import StreamReader
    from rulesd.state.redis import RedisState

log = logging.getLogger("rulesd")
STATE_FILE = "state.sqlite"
SHARED_POLL = 0.5  # seconds: how often a sender looks at a shared outbox without being woken
STALL_AFTER = 30.0  # /healthz fails when the main loop has not turned for this long


# A key file changed less than this long ago (seconds) may be halfway through being written: `echo
# KEY > file` and editors truncate it, then write. It is read once it has stood still this long.
KEY_SETTLE = 0.5
# Seconds a key file that keeps changing is waited for, in all, until it stands still once: then
# what it holds is read at each change (waiting per request, every alert would wait this long).
KEY_SETTLE_MAX = 4.0
# A state no key file has: what was "last read" at start and after a reload, so that the file is
# read then, once it stands still, whatever its state.
_UNREAD: tuple[int, ...] = ()
_CHANGED = "the API key file changed"


def settle_wait(file_state: tuple[int, ...] | None, now: float) -> float:
    """Seconds before a key file last changed at `file_state`'s mtime may be read (0: now).
    A file modified in the future (another host's clock) waits the whole KEY_SETTLE."""
    if file_state is None:  # no key file, or gone: nothing is being written
        return 0.0
    age = now - file_state[_MTIME] / 1e9
    return KEY_SETTLE if age < 0 else max(0.0, KEY_SETTLE - age)


class ApiKey:
    """The OpsGenie API key: read at start (a missing key stops the start), again at every
    reload, and from `api_key_file` again whenever that file changes (a key rotated in place
    is used by the next request, without a reload); a key that cannot be read keeps the
    previous one. The key file is read, at start, at a reload and after a change alike, only
    once it has stood still for KEY_SETTLE seconds, so that one caught halfway through a
    rewrite (empty, or a key cut short, which OpsGenie would refuse and pause sending for) is
    not read; the previous key serves meanwhile.

    `clock` is the wall clock (files' times are compared with it); `sleep` is how the start and
    `get` wait (by default a wait that `abort` ends)."""

    def __init__(
        self,
        config: OpsgenieConfig,
        environ: Mapping[str, str],
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self._config, self._environ = config, environ
        self._aborted = threading.Event()
        self._clock, self._sleep = clock, sleep or self._aborted.wait
        self._waited = 0.0  # seconds waited for the key file since it last stood still
        self._why = _CHANGED  # what the next read is said to be for, if it fails
        self._file_seen: tuple[int, ...] | None = _UNREAD
        # The state before reading, so that a write meanwhile is read again.
        _, self._file_seen = self._look(wait=True)
        self._value = resolve_api_key(config, environ)

    def get(self) -> str:
        """The current key (read again first if the key file changed, waiting for it to stand still)."""
        self.refresh(wait=True)
        return self._value

    def refresh(self, *, wait: bool = False) -> bool:
        """Read the key file again if it changed since it was last read (or a reload asked for
        it) and has stood still since; with `wait`, wait for that. True if the key changed."""
        due, seen = self._look(wait=wait)
        if not due:
            return False
        self._file_seen = seen
        why, self._why = self._why, _CHANGED
        return self._read(why)

    def reload(self) -> bool:
        """Read the key again: now if the key file stands still, else once it does (the next
        request waits for that, as for a change). True if it was read now and changed."""
        self._file_seen, self._why = _UNREAD, "reload"
        return self.refresh()

    def abort(self) -> None:
        """The daemon is stopping: wait no more for the key file (a request would be cut anyway)."""
        self._aborted.set()

    def _look(self, *, wait: bool) -> tuple[bool, tuple[int, ...] | None]:
        """Whether the key file is to be read now (it changed and stands still, or kept changing
        for KEY_SETTLE_MAX seconds), and its state; with `wait`, waits for it to stand still."""
        seen = self._file_state()
        while True:
            delay = settle_wait(seen, self._clock())
            if delay <= 0:
                self._waited = 0.0  # it stands still: a change from here is waited for again
            if seen == self._file_seen or delay <= 0:
                return seen != self._file_seen, seen
            if self._waited >= KEY_SETTLE_MAX or self._aborted.is_set():
                return True, seen  # it keeps changing, or the daemon stops: what it holds is read
            if not wait:
                return False, seen  # looked at again at the next call
            # The last slice of KEY_SETTLE_MAX may be too short to see a rewrite: unchanged
            # over it, the file has not been seen to stand still.
            whole = delay <= KEY_SETTLE_MAX - self._waited
            delay = min(delay, KEY_SETTLE_MAX - self._waited)
            self._waited += delay
            self._sleep(delay)
            again, seen = seen, self._file_state()
            if again == seen and whole:  # unchanged while waiting: not being written (whatever its clock says)
                self._waited = 0.0
                return True, seen

    def _read(self, why: str) -> bool:
        try:
            value = resolve_api_key(self._config, self._environ)
        except InvalidInputError as exc:
            log.error("%s: keeping the previous API key: %s", why, exc)
            return False
        changed, self._value = value != self._value, value
        return changed

    def _file_state(self) -> tuple[int, ...] | None:
        """What tells a rewritten or replaced key file from the one read (None: no key file, or
        it cannot be looked at now)."""
        if not self._config.api_key_file:
            return None
        try:
            st = os.stat(self._config.api_key_file)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


_MTIME = 3  # st_mtime_ns in `ApiKey._file_state`


class Parts(msgspec.Struct):
    """Everything a running daemon uses; `build_parts` makes the real ones."""

    config: Config
    engine: Engine
    store: StateBackend
    sources: dict[str, Source]  # by label (`SourceConfig.label`), in the configured order
    sender: Sender
    settings: AlertSettings
    stats: Stats
    notifier: Notifier
    watcher: RuleWatcher
    warn: RateLimitedWarning
    clock: Callable[[], float]  # wall clock, epoch seconds
    client: OpsGenieClient | None = None  # None in a dry run: nothing is sent, no heartbeat
    api_key: ApiKey | None = None  # None in a dry run
    metrics: MetricsServer | None = None
    rule_cache: RuleCache | None = None  # parsed rule files and pattern databases a reload may reuse
    lock: StateLock | None = None  # None in a dry run, which uses no state directory
    stream_parser: Parser | None = None  # stream mode: how the stream's events are read
    # The engine's clock as last saved and the wall time it runs on from ((-inf, 0): none):
    # while no event comes, it moves on as it did before the restart.
    seen: tuple[float, float] = (-math.inf, 0.0)
    # Set to stop the daemon: a signal, or a dry run's standard output closed.
    stop_requested: threading.Event = msgspec.field(default_factory=threading.Event)

    @property
    def dry_run(self) -> bool:
        """Alerts are printed instead of sent."""
        return self.client is None

    @property
    def source(self) -> Source:
        """The first (usually the only) source."""
        return next(iter(self.sources.values()))


def build_parts(
    config: Config,
    ruleset: RuleSet,
    *,
    dry_run: bool = False,
    environ: Mapping[str, str] = os.environ,
    stdout: TextIO = sys.stdout,
    stdin_fd: int = 0,
    clock: Callable[[], float] = time.time,
    rule_cache: RuleCache | None = None,
) -> Parts:
    """The real parts for `config`; ConfigError (a missing key), StateDirectoryBusy (another
    daemon runs on the state directory), StateError, OSError and sqlite3.Error say why they
    cannot be built. A dry run uses no state directory, so it takes no lock. `rule_cache`: the
    cache the rules were loaded with (`rulesd run`'s: one instance for its directory), else one is
    made: in the state directory, or the user's for a dry run."""
    lock = None if dry_run else lock_state(config.state_dir)
    if dry_run:
        rule_cache = rule_cache or RuleCache.for_user(environ)
    else:
        rule_cache = rule_cache or RuleCache.in_state_dir(config.state_dir)
        # The state directory is made now (by `lock_state`): no later write of the cache (a
        # database compiled beside the loop, the code the loop keeps) makes it again, empty,
        # where the daemon would open a new state database, should it be moved away.
        rule_cache.made_parents()
    try:
        parts = _build_parts(config, ruleset, dry_run, environ, stdout, stdin_fd, clock, rule_cache)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    parts.lock = lock
    return parts


def _build_parts(
    config: Config,
    ruleset: RuleSet,
    dry_run: bool,
    environ: Mapping[str, str],
    stdout: TextIO,
    stdin_fd: int,
    clock: Callable[[], float],
    rule_cache: RuleCache | None,
) -> Parts:
    stats = Stats(ruleset_hash=ruleset.fingerprint, rules_loaded=len(ruleset.rules), last_reload_success=clock())
    warn = RateLimitedWarning(log, time.monotonic)
    stop = threading.Event()
    store = open_state(config, dry_run, stop)
    # A shared state is loaded by the daemon's loop (and again whenever it falls behind).
    saved = None if shared(config, dry_run) else store.load_engine_state()
    engine = Engine(ruleset, EngineState.from_json(saved) if saved else None, limits=config.limits)
    # Counted by the engine, read at scrape time.
    stats.matches, stats.evicted, stats.limit_closed = engine.matches, engine.evicted, engine.limit_closed
    stats.rules_now(ruleset.by_name())
    api_key = None if dry_run else ApiKey(config.opsgenie, environ)
    client = None if api_key is None else opsgenie_client(config.opsgenie, api_key)
    transport: Transport = client or PrintTransport(stdout, on_closed=stop.set)
    sender = Sender(
        store,
        transport,
        clock=clock,
        max_age=config.opsgenie.max_age,
        on_result=DeliveryLog(stats, clock),
        # Other instances queue into a shared outbox without waking this sender.
        poll=SHARED_POLL if shared(config, dry_run) else POLL_INTERVAL,
    )
    stream = config.stream_source
    if shared(config, dry_run):
        from rulesd.daemon.name import claim_name
        from rulesd.state.redis import RedisState

        assert isinstance(store, RedisState)
        with StopSignals(stop) as signals:  # heard while a lease is waited out (the loop's own come later)
            claim_name(store, Notifier(environ), signals)  # before its positions are read
    positions = store.load_positions()  # read in stream mode too: a Redis that does not answer stops the start
    sources = {} if stream is not None else open_sources(config, positions, warn, stdin_fd)
    notifier = Notifier(environ)
    parts = Parts(
        config=config,
        engine=engine,
        store=store,
        sources=sources,
        sender=sender,
        settings=AlertSettings(config.opsgenie.source, config.opsgenie.recipients),
        stats=stats,
        notifier=notifier,
        watcher=RuleWatcher(config.rules, clock=time.monotonic),
        warn=warn,
        clock=clock,
        client=client,
        api_key=api_key,
        rule_cache=rule_cache,
        stream_parser=source_parser(stream) if stream is not None else None,
        stop_requested=stop,
        seen=saved_clock(saved),
    )
    parts.metrics = metrics_server(parts)
    return parts


def saved_clock(saved: Mapping[str, Any] | None) -> tuple[float, float]:
    """The engine's clock in a saved state and the wall time it runs on from, if it holds both
    (without the wall time, the clock cannot be moved on from it)."""
    if saved is None or saved.get("clock") is None or saved.get("clock_saved") is None:
        return (-math.inf, 0.0)
    return (float(saved["clock"]), float(saved["clock_saved"]))


def lock_state(state_dir: str) -> StateLock:
    """Make the state directory if needed and take its lock, first of all: a second daemon on
    it must stop before it opens anything."""
    make_state_dir(state_dir)
    return lock_state_dir(state_dir)


def make_state_dir(state_dir: str) -> None:
    """Make the state directory if it is missing: only it, not its parents (as systemd's
    StateDirectory=), so that a misspelt parent stops the start instead of keeping the outbox
    where nothing else looks (`rulesd check --config` says so at its line first)."""
    try:
        os.mkdir(state_dir, mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        reason = "the directory it is in does not exist" if isinstance(exc, FileNotFoundError) else exc.strerror
        raise StateError(f"{state_dir}: cannot create the state directory (state_dir): {reason or exc}") from None


def shared(config: Config, dry_run: bool) -> bool:
    """True when the state is shared with other instances (in Redis)."""
    return config.state.backend == "redis" and not dry_run


def open_state(config: Config, dry_run: bool, stop: threading.Event | None = None) -> StateBackend:
    """The state database in `state_dir` (in memory for a dry run: the real state is never
    touched), or the shared state in Redis (whose lookups under way when `stop` is set are cut)."""
    if dry_run:
        if config.stream_source is not None:
            raise ConfigError(
                [
                    Problem(
                        SourceLocation(config.path or "config"),
                        "a dry run cannot read a redis_stream source: it would consume the stream",
                    )
                ]
            )
        return SqliteState(":memory:")
    if config.state.backend == "redis":
        return open_redis_state(config, stop)
    return SqliteState(os.path.join(config.state_dir, STATE_FILE))


def state_reader(config: Config) -> StateBackend | None:
    """The configured state opened only to be read (`rulesd state`, `rulesd outbox list`,
    beside a running daemon): the SQLite database read-only (None while there is none, or the
    daemon has not made its tables yet), or the shared state in Redis, which is only ever read
    with plain reads."""
    if config.state.backend == "redis":
        return open_redis_state(config)
    path = os.path.join(config.state_dir, STATE_FILE)
    if not database_exists(path):
        return None
    store = SqliteState(path, read_only=True)
    return store if store.has_schema() else None


def open_redis_state(config: Config, stop: threading.Event | None = None) -> RedisState:
    """The shared state at `state.url`, for this instance (`state.instance`); the lookups of its
    host under way when `stop` is set are cut."""
    from rulesd.state.redis import LEASE_S, RedisState, connect, default_instance

    assert config.state.url is not None  # the configuration requires it
    instance = config.state.instance or default_instance(config.state_dir)
    # The lease outlives a whole attempt (a slow OpsGenie must not make another instance resend).
    lease = max(LEASE_S, 2 * config.opsgenie.timeout_s + 5)
    return RedisState(
        connect(config.state.url, stop),
        instance=instance,
        prefix=config.state.prefix,
        lease=lease,
        config=config.path or "the config",
    )


def stream_reader(config: Config, store: RedisState) -> StreamReader | None:
    """The reader of the configured redis_stream source, if that is the source."""
    from rulesd.sources.redis_stream import StreamReader

    stream = config.stream_source
    if stream is None:
        return None
    return StreamReader(
        store, stream.stream, stream.group, store.instance, stream.claim_idle, max_line_bytes=stream.max_line_bytes
    )


def open_sources(config: Config, saved: Saved, warn: Callable[[str], None], stdin_fd: int) -> dict[str, Source]:
    """Every configured source, by label; if one cannot be opened, those opened are closed."""
    sources: dict[str, Source] = {}
    try:
        for source_config in config.sources:
            sources[source_config.label] = open_source(source_config, saved, warn, stdin_fd)
    except BaseException:
        for source in sources.values():
            source.close()
        raise
    return sources


def open_source(config: SourceConfig, saved: Saved, warn: Callable[[str], None], stdin_fd: int) -> Source:
    """The configured source, resuming from the `saved` positions that are its own."""
    parser = source_parser(config)
    own = own_positions(config.name, saved)
    source: Source
    if config.type == "stdin":
        source = StdinSource(stdin_fd, max_line_bytes=config.max_line_bytes, warn=warn, parser=parser)
    elif config.type == "journald":
        source = JournaldSource(
            config.units,
            dict(config.matches),
            start_at=config.start_at,
            warn=warn,
            max_line_bytes=config.max_line_bytes,
            saved=own,
            parser=parser,
        )
    else:
        source = FileSource(
            config.paths,
            start_at=config.start_at,
            max_line_bytes=config.max_line_bytes,
            saved=own,
            warn=warn,
            parser=parser,
        )
    return source if config.name is None else NamedSource(config.name, source)


def opsgenie_client(config: OpsgenieConfig, api_key: ApiKey) -> OpsGenieClient:
    """The HTTP client for alerts and heartbeats, over one pool of connections (imported here:
    a dry run sends nothing and does not load the HTTP client)."""
    from rulesd.alerting.opsgenie import OpsGenieClient

    return OpsGenieClient(config.alert_url, api_key.get, config.timeout_s)


def metrics_server(parts: Parts) -> MetricsServer | None:
    """`/metrics` and `/healthz` on `metrics.listen`, if configured."""
    if not parts.config.metrics_listen:
        return None
    from rulesd.metrics import CannotListen, MetricsServer, build_registry  # Prometheus only when asked for

    sources = list(parts.sources.values())
    sender, client = parts.sender, parts.client
    registry = build_registry(
        parts.stats,
        scraped_depth(parts.store),
        lambda: sum(source.lag_bytes() for source in sources),
        lambda: sum(source.skipped_long for source in sources) + parts.stats.too_long,
        parts.clock,
        paused=lambda: sender.paused_reason is not None,
        not_from_api=lambda: client.not_from_api if client is not None else 0,
    )
    # Under a systemd watchdog, /healthz fails when systemd would consider us hung too.
    interval = parts.notifier.watchdog_interval
    stall_after = interval * 2 if interval is not None else STALL_AFTER
    try:
        return MetricsServer(parts.config.metrics_listen, registry, parts.stats, stall_after, partial(problems, parts))
    except CannotListen as exc:  # a restart cannot free the port: a configuration error, at its line
        raise ConfigError([Problem(parts.config.location("metrics.listen"), str(exc))]) from None


def scraped_depth(store: StateBackend) -> Callable[[], tuple[int, float | None]]:
    """The outbox depth for /metrics, whose every request runs in a thread of its own: SQLite
    gives each thread a connection, and a finished thread's is closed only when the garbage
    collector gets to it, so a scrape a second kept dozens open (two descriptors each). The
    scrape's connection is closed as it ends."""
    if not isinstance(store, SqliteState):
        return store.depth

    def depth() -> tuple[int, float | None]:
        try:
            return store.depth()
        finally:
            store.close()  # this thread's connection only

    return depth


def problems(parts: Parts) -> list[str]:
    """What keeps the daemon from paging now, for /healthz and /readyz."""
    # While it stops, nothing more is read, so no new alert can come, whatever else holds.
    found = ["stopping: nothing more is read, what is queued is being delivered"] if parts.stats.stopping else []
    if (delivery := delivery_problem(parts.sender)) is not None:
        found.append(delivery)
    if parts.stats.state_problem is not None:
        found.append(parts.stats.state_problem)
    return found


def delivery_problem(sender: Sender) -> str | None:
    """What keeps alerts from reaching OpsGenie now (for /readyz and STATUS=), if anything."""
    if sender.paused_reason is not None:
        return f"sending paused: {sender.paused_reason}"
    if (failing := sender.failing()) is not None:
        return f"delivery failing, {failing[0]} attempts in a row: {failing[1]}"
    return None
