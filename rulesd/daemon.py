"""`rulesd run`: the composition root. Builds the real clock, files, database, HTTP
session and threads, and runs the main loop:

    source -> event -> engine -> payload -> one SQLite transaction (positions + outbox)
    -> sender thread -> OpsGenie

Reloads and signals are handled between batches, so no event is ever evaluated
by a half-loaded rule set.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Protocol, TextIO

import orjson
import requests

from rulesd.alerting.opsgenie import AlertError, OpsGenieClient, PrintTransport, Transport, heartbeat_url
from rulesd.alerting.payload import AlertSettings, build_payload
from rulesd.config import Config, resolve_api_key
from rulesd.engine import Engine, EngineState, Firing
from rulesd.errors import InvalidInputError
from rulesd.events import BLOCK_LINES, make_parser, parse_block, parse_json, why_invalid
from rulesd.logs import RateLimitedWarning
from rulesd.metrics import MetricsServer, Stats, build_registry
from rulesd.notify import Notifier
from rulesd.reload import RuleWatcher
from rulesd.rules.loader import check_paths
from rulesd.rules.model import RuleSet
from rulesd.sender import Sender
from rulesd.sources.file import FileSource, Position
from rulesd.sources.journald import JournalCursor, JournaldSource, journal_event
from rulesd.sources.lines import Lines, Offsets
from rulesd.sources.stdin import StdinSource
from rulesd.state import StateStore

log = logging.getLogger("rulesd")
BATCH_LINES = 8192  # lines per transaction under load (group commit); see also BATCH_BYTES
IDLE_WAIT = 0.2  # seconds; also bounds how late a signal or reload is noticed
STOP_GRACE = 5.0  # seconds the sender may keep draining after SIGTERM
EOF_GRACE = 30.0  # seconds to deliver what is queued when stdin ends
STATE_FILE = "state.sqlite"
JOURNAL_KEY = "journald"  # the key JournaldSource.checkpoint() saves its cursor under
STATUS_EVERY = 5.0  # seconds between STATUS= updates to systemd
HEARTBEAT_EVERY = 60.0  # seconds between OpsGenie heartbeat pings
STALL_AFTER = 30.0  # /healthz fails when the main loop has not turned for this long
RELOAD_FAILED = "reload failed"  # the status text of a failed reload, cleared by the next good one


class Checkpoint(Protocol):
    """A source position that can be saved as JSON."""

    def to_json(self) -> dict[str, Any]: ...


class Source(Protocol):
    """What the main loop needs of an event source."""

    def read(self, max_lines: int) -> list[Lines]: ...
    def wait(self, timeout: float) -> None: ...
    def checkpoint(self) -> Mapping[str, Checkpoint]: ...
    def lag_bytes(self) -> int: ...
    def close(self) -> None: ...
    @property
    def skipped_long(self) -> int: ...


class Daemon:
    """One running rulesd."""

    def __init__(
        self,
        config: Config,
        ruleset: RuleSet,
        *,
        dry_run: bool = False,
        environ: Mapping[str, str] = os.environ,
        stdout: TextIO = sys.stdout,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.dry_run = dry_run
        self.environ = environ
        self.clock = clock
        self.stats = Stats(ruleset_hash=ruleset.fingerprint, rules_loaded=len(ruleset.rules))
        self.notifier = Notifier(environ)
        self.stop_requested = threading.Event()
        self.warn = RateLimitedWarning(log, time.monotonic)
        self.store = _open_store(config, dry_run)
        saved = self.store.load_engine_state()
        self.engine = Engine(ruleset, EngineState.from_json(saved) if saved else None, time_field=config.time_field)
        self.stats.matches = self.engine.matches  # counted by the engine, read at scrape time
        self.settings = AlertSettings(config.opsgenie.source, config.opsgenie.recipients)
        # `parse` explains a bad line with InvalidEvent; `fast_parse` is what runs per event
        # (orjson.loads itself for JSON lines: the type check is done inline).
        self.parse = (
            journal_event
            if config.source.type == "journald"
            else make_parser(config.source.format, config.source.pattern)
        )
        self.fast_parse: Callable[[bytes], Any] = orjson.loads if self.parse is parse_json else self.parse
        self._api_key = "" if dry_run else resolve_api_key(config.opsgenie, environ)
        self.client = None if dry_run else self._http_client()
        self.transport: Transport = self.client or PrintTransport(stdout)
        self.sender = Sender(
            self.store, self.transport, clock=clock, max_age=config.opsgenie.max_age, on_result=self._on_delivery
        )
        self.sender_wake = threading.Event()
        self.sender_stop = threading.Event()
        self.watcher = RuleWatcher(config.rules, clock=time.monotonic)
        self.source: Source = self._open_source()
        self.metrics = self._metrics_server()
        self._heartbeat_due = threading.Event()
        self._last = {"watchdog": 0.0, "status": 0.0, "heartbeat": float("-inf")}

    # -- wiring -----------------------------------------------------------------------------

    def _http_client(self) -> OpsGenieClient:
        session = requests.Session()
        session.trust_env = False  # no proxy or .netrc surprises: the key goes only where configured
        return OpsGenieClient(
            session, self.config.opsgenie.alert_url, lambda: self._api_key, self.config.opsgenie.timeout_s
        )

    def _open_source(self) -> Source:
        cfg = self.config.source
        if cfg.type == "stdin":
            return StdinSource(sys.stdin.fileno(), max_line_bytes=cfg.max_line_bytes, warn=self.warn)
        if cfg.type == "journald":
            saved_cursor = self.store.load_positions().get(JOURNAL_KEY)
            return JournaldSource(
                cfg.units,
                dict(cfg.matches),
                start_at=cfg.start_at,
                warn=self.warn,
                max_line_bytes=cfg.max_line_bytes,
                cursor=JournalCursor.from_json(saved_cursor).cursor if saved_cursor else None,
            )
        saved = {k: Position.from_json(v) for k, v in self.store.load_positions().items() if os.path.isabs(k)}
        return FileSource(
            cfg.paths, start_at=cfg.start_at, max_line_bytes=cfg.max_line_bytes, positions=saved, warn=self.warn
        )

    def _metrics_server(self) -> MetricsServer | None:
        if not self.config.metrics_listen:
            return None
        source = self.source
        registry = build_registry(
            self.stats,
            self.store.depth,
            source.lag_bytes,
            lambda: source.skipped_long,
            self.clock,
            paused=lambda: self.sender.paused_reason is not None,
        )
        # Under a systemd watchdog, /healthz fails when systemd would consider us hung too.
        interval = self.notifier.watchdog_interval
        stall_after = interval * 2 if interval is not None else STALL_AFTER
        return MetricsServer(self.config.metrics_listen, registry, self.stats, stall_after)

    def _on_delivery(self, kind: str, alert: Any, detail: str) -> None:
        self.stats.bump(self.stats.delivery, kind)
        message = alert.payload.get("message", "")
        if kind == "sent":
            self.stats.last_delivery = self.clock()
            # After failed attempts (each logged as a warning) the recovery is news too.
            log.log(logging.INFO if alert.attempts else logging.DEBUG, "alert %d %s: %s", alert.id, detail, message)
        elif kind == "retry":
            log.warning("alert %d not delivered, will retry: %s", alert.id, detail)
        elif kind == "paused":  # shown live through sender.paused_reason until a delivery succeeds
            log.error("OpsGenie refused the request (%s); sending paused, nothing dropped", detail)
        else:
            self.stats.last_error = detail
            log.error("alert %d dead-lettered (%s): %s: %s", alert.id, kind, message, detail)

    # -- running ----------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or stdin's end); 0 after a clean stop."""
        self._install_signals()
        self.watcher.start()
        threads = [
            threading.Thread(
                target=self.sender.run, args=(self.sender_stop, self.sender_wake), name="rulesd-sender", daemon=True
            )
        ]
        for warning in self.config.warnings:
            log.warning("%s: %s", warning.location, warning.message)
        heartbeat = self.config.opsgenie.heartbeat
        if heartbeat and self.client is not None:
            if heartbeat_url(self.client.alert_url, heartbeat) is None:
                log.warning("heartbeat %r is not pinged: %s has no heartbeat API", heartbeat, self.client.alert_url)
            else:
                threads.append(threading.Thread(target=self._heartbeats, name="rulesd-heartbeat", daemon=True))
        for thread in threads:
            thread.start()
        if self.metrics is not None:
            self.metrics.start()
            log.info("metrics on http://%s:%d/metrics", *self.metrics.address)
        log.info(
            "rulesd started: %d rule(s) loaded, source %s%s",
            len(self.engine.ruleset.rules),
            self.config.source.type,
            " (dry run: alerts printed, not sent)" if self.dry_run else "",
        )
        self.notifier.ready(self._status())
        status = 0
        try:
            self._loop()
        except Exception as exc:  # the top of the main loop: say what happened, stop, let systemd restart
            # Nothing is lost: the source position only advances with the alerts it caused.
            log.critical("fatal error, stopping; a restart resumes from the last commit: %s", exc, exc_info=True)
            self.notifier.status(f"fatal error: {exc}")
            status = 1
        finally:
            self.notifier.stopping()
            self._shutdown(threads)
        return status

    def _install_signals(self) -> None:
        def stop(signum: int, _frame: Any) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name)
            self.stop_requested.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, lambda _s, _f: self.watcher.request())

    def _loop(self) -> None:
        stdin = isinstance(self.source, StdinSource)
        while not self.stop_requested.is_set():
            self._alive()
            if self.watcher.due():
                self.reload()
            lines = self.source.read(BATCH_LINES)
            if lines:
                self._process(lines)
                continue
            if stdin and self.source.eof:  # type: ignore[attr-defined]
                log.info("end of input: %s what is left", "printing" if self.dry_run else "delivering")
                return
            self.source.wait(IDLE_WAIT)

    def _alive(self) -> None:
        """The main loop turned: feed the watchdog, /healthz, STATUS= and the heartbeat."""
        now = time.monotonic()
        self.stats.loop_alive = now
        interval = self.notifier.watchdog_interval
        if interval is not None and now - self._last["watchdog"] >= interval:
            self._last["watchdog"] = now
            self.notifier.watchdog()
        if self.notifier.enabled and now - self._last["status"] >= STATUS_EVERY:
            self._last["status"] = now
            self.notifier.status(self._status())
        if now - self._last["heartbeat"] >= HEARTBEAT_EVERY:
            self._last["heartbeat"] = now
            self._heartbeat_due.set()  # pinged only while this loop lives

    def _status(self) -> str:
        depth, _ = self.store.depth()
        events = sum(self.stats.events.values())
        text = f"{self.stats.rules_loaded} rules, {events} events, outbox {depth}"
        problem = self.sender.paused_reason or self.stats.last_error
        return f"{text}; last error: {problem}" if problem else text

    def _process(self, runs: list[Lines]) -> None:
        # The per-event hot path: locals only; counts are kept per run, and offsets worked out
        # only for the rare line that alerts or is invalid.
        now = self.clock()
        parse, evaluate = self.fast_parse, self.engine.evaluate
        payloads: list[dict[str, Any]] = []
        for run in runs:
            invalid = 0
            offset = Offsets(run)
            lines = run.data
            for start in range(0, len(lines), BLOCK_LINES):
                for i, event in enumerate(parse_block(parse, lines[start : start + BLOCK_LINES]), start):
                    if type(event) is not dict:
                        invalid += 1
                        self.warn(partial(self._skipped, run.path, offset, i, lines[i]))  # built only if logged
                        continue
                    firing = evaluate(event, now)
                    if firing is not None:
                        payloads.append(self._payload(firing, run.path, offset(i)))
            self._count(run.path, len(lines), invalid)
        # One transaction: a crash either keeps these alerts and the new position, or neither.
        state = self.engine.state
        self.store.commit(
            positions={k: p.to_json() for k, p in self.source.checkpoint().items()},
            payloads=payloads,
            now=now,
            engine=state.delta() if state.changed else None,
        )
        self.stats.alerts_queued += len(payloads)
        if payloads:
            self.sender_wake.set()

    def _skipped(self, path: str, offset: Offsets, index: int, data: bytes) -> str:
        """The warning for an invalid line: where it is and why (the parser is asked again)."""
        return f"{path} (offset {offset(index)}): skipped: {why_invalid(self.parse, data)}"

    def _payload(self, firing: Firing, path: str, offset: int) -> dict[str, Any]:
        for rule in firing.rules:
            self.stats.bump(self.stats.firings, rule.name)
        return build_payload(firing, self.settings, f"{path} (offset {offset})")

    def _count(self, path: str, lines: int, invalid: int) -> None:
        self.stats.bump(self.stats.events, path, lines - invalid)
        if invalid:
            self.stats.bump(self.stats.invalid, path, invalid)

    def reload(self) -> bool:
        """Load the rules again; on any error keep the running set and log every problem."""
        self.notifier.reloading()
        try:
            return self._reload()
        finally:
            self.notifier.ready(self._status())

    def _reload(self) -> bool:
        result = check_paths(self.config.rules)
        if not self.dry_run:
            try:
                self._api_key = resolve_api_key(self.config.opsgenie, self.environ)
            except InvalidInputError as exc:
                log.error("reload: keeping the previous API key: %s", exc)
            if self.sender.resume():
                self.sender_wake.set()
        if result.ruleset is None:
            self.stats.reloaded(ok=False)
            self.stats.last_error = f"{RELOAD_FAILED}: {len(result.errors)} error(s), previous rules kept"
            for problem in result.errors:
                log.error("reload failed, previous rules kept: %s", problem)
            return False
        old = self.engine.ruleset
        self.stats.reloaded(ok=True)
        if (self.stats.last_error or "").startswith(RELOAD_FAILED):
            self.stats.last_error = None  # the rules on disk are good again
        if result.ruleset.fingerprint != old.fingerprint:
            self.engine.replace_rules(result.ruleset)
            self.stats.ruleset_hash, self.stats.rules_loaded = result.ruleset.fingerprint, len(result.ruleset.rules)
            log.info("rules reloaded: %s", describe_change(old, result.ruleset))
        return True

    def _heartbeats(self) -> None:
        """Ping the OpsGenie heartbeat whenever the main loop asks; failures are logged, never fatal."""
        name = self.config.opsgenie.heartbeat
        assert name is not None and self.client is not None
        while not self.sender_stop.is_set():
            if not self._heartbeat_due.wait(1.0):
                continue
            self._heartbeat_due.clear()
            try:
                self.client.ping_heartbeat(name)
            except AlertError as exc:
                self.stats.bump(self.stats.heartbeats, "failed")
                log.warning("heartbeat %r not pinged: %s", name, exc)
            else:
                self.stats.bump(self.stats.heartbeats, "ok")

    def _shutdown(self, threads: list[threading.Thread]) -> None:
        self.watcher.stop()
        self.source.close()
        self.sender_stop.set()
        self.sender_wake.set()
        for thread in threads:
            thread.join(timeout=STOP_GRACE)
        grace = EOF_GRACE if isinstance(self.source, StdinSource) and self.source.eof else STOP_GRACE
        drained = self.sender.drain(self.clock() + grace)
        depth, _ = self.store.depth()
        if not drained or depth:
            log.warning("%d alert(s) still queued; they will be sent on the next start", depth)
        if self.metrics is not None:
            self.metrics.stop()
        self.notifier.close()
        self.warn.flush()  # so that every invalid line counted below was warned about
        log.info(
            "stopped: %d event(s), %d invalid, %d alert(s) %s",
            sum(self.stats.events.values()),
            sum(self.stats.invalid.values()),
            self.stats.alerts_queued,
            "printed" if self.dry_run else "queued",
        )


def describe_change(old: RuleSet, new: RuleSet) -> str:
    """`12 rule(s); added: a; removed: b; changed: c` for the reload log line."""
    before, after = old.by_name(), new.by_name()
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(n for n in set(before) & set(after) if before[n].fingerprint != after[n].fingerprint)
    parts = [f"{len(new.rules)} rule(s)"]
    parts += [
        f"{label}: {', '.join(names)}"
        for label, names in (("added", added), ("removed", removed), ("changed", changed))
        if names
    ]
    return "; ".join(parts)


def _open_store(config: Config, dry_run: bool) -> StateStore:
    if dry_run:
        return StateStore(":memory:")  # a dry run never disturbs the real state
    os.makedirs(config.state_dir, mode=0o700, exist_ok=True)
    return StateStore(os.path.join(config.state_dir, STATE_FILE))
