"""The running daemon: the main loop, reloads, heartbeats, liveness and shutdown.

    source -> lines -> pipeline (events -> engine -> alerts) -> one commit (positions + outbox
    + engine state) -> sender thread -> OpsGenie

Reloads and signals are handled between batches, so no event is ever evaluated by a
half-loaded rule set. What runs is built elsewhere (`build.build_parts`).
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from rulesd.alerting.api import AlertError, StopCut, heartbeat_url
from rulesd.alerting.payload import forget_rules
from rulesd.config import Config
from rulesd.daemon.build import Parts, delivery_problem
from rulesd.daemon.committer import Committer, Pending
from rulesd.daemon.misses import MissReporter
from rulesd.daemon.reloader import LoadOutcome, RuleLoader, describe_change
from rulesd.engine.limit_checks import limit_warnings
from rulesd.events import Parser
from rulesd.logs import FailureRun
from rulesd.pipeline import Alert, build_alerts, evaluate_lines, pending
from rulesd.rules import generated_code
from rulesd.sender import SENT
from rulesd.shared_cpu import SharedCpu
from rulesd.sources.base import Source
from rulesd.sources.lines import Lines, Offsets, line_text
from rulesd.state import CLOSE, Request, StateUnavailable
from rulesd.state.claim import NameTaken
from rulesd.stats import Stats

log = logging.getLogger("rulesd")
BATCH_LINES = 8192  # lines per transaction under load (group commit); see also BATCH_BYTES
IDLE_WAIT = 0.2  # seconds; also bounds how late a signal or reload is noticed
STOP_GRACE = 5.0  # seconds the sender may keep draining after SIGTERM; then requests are cut
ABORT_WAIT = 1.0  # seconds a cut request gets to end (a socket shut down ends it at once)
EOF_GRACE = 30.0  # seconds to deliver what is queued when the input has ended
STATUS_EVERY = 5.0  # seconds between STATUS= updates to systemd
HEARTBEAT_EVERY = 60.0  # seconds between OpsGenie heartbeat pings
SWEEP_IDLE = 5.0  # seconds between sweeps of the engine's expired groups while no event comes
TURN_WAIT = 0.05  # seconds each of several sources waits in its turn (see `Daemon._wait`)
RELOAD_FAILED = "reload failed"  # the status text of a failed reload, cleared by the next good one


class Daemon:
    """One running rulesd, over the parts it is given."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.config = parts.config
        self.engine = parts.engine
        self.sources = parts.sources
        self.stats = parts.stats
        self.notifier = parts.notifier
        self.sender = parts.sender
        self.clock = parts.clock
        self.stop_requested = parts.stop_requested
        self.sender_wake = threading.Event()
        self.sender_stop = threading.Event()
        self._heartbeat_due = threading.Event()
        self._last = {"watchdog": 0.0, "status": 0.0, "heartbeat": float("-inf"), "sweep": 0.0}
        # The clock after the latest batch of events, and the wall time it runs on from while
        # idle (see `Engine.idle_wall`; after a restart: as saved).
        self._seen = parts.seen
        self.engine.resume(self._seen[0])  # not back to the times of the first lines read
        self._evicting = False  # whether the state limits were said to be reached
        self._values_said: set[str] = set()  # the rules said to reach limits.values_per_group
        self._limit_closed = 0  # the alerts the limits closed, as last warned about
        self._misses = MissReporter(parts.stats)
        for label, source in self.sources.items():
            self._misses.register(label, source.parser)
        # Counters of a named source are labelled NAME:PATH (two journald sources, one path each).
        self._prefix = {c.label: f"{c.name}:" if c.name else "" for c in parts.config.sources}
        self.loader = RuleLoader(
            self.config.rules, parts.rule_cache, self.engine.prepare_rules, lambda: self.engine.ruleset.fingerprint
        )
        self._code_key = generated_code.code_key(self.config.rules)  # (see `_reloads`)
        self._reload_wanted = False  # a change was seen while a load was under way
        self._stop_extending: Callable[[], None] = _nothing  # EXTEND_TIMEOUT_USEC= while a reload loads
        self._died: str | None = None  # a thread ended by an unexpected exception (see `_thread_died`)
        # The positions saved, as committed: an idle turn commits those that moved since.
        self._committed: dict[str, dict[str, Any]] = {}
        self.committer = Committer(
            parts.store, self.stats, on_change=self._status_changed, on_queued=self.sender_wake.set
        )

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or the input's end); 0 after a clean stop."""
        hook, threading.excepthook = threading.excepthook, self._thread_died
        try:
            status = self._run()
        finally:
            threading.excepthook = hook
        return 1 if self._died is not None else status

    def _thread_died(self, args: threading.ExceptHookArgs) -> None:
        """A thread ended by an exception nothing caught: a bug. Its work (delivering, loading
        rules, watching them) would silently stop while the daemon looks healthy, and restarting
        the thread in a state the bug left behind could do worse; so the daemon stops as it would
        on SIGTERM (the outbox drained for the grace period, what is left kept) and exits 1 for
        systemd to restart it. Nothing is lost: positions advance only with their alerts."""
        if args.exc_type is SystemExit:  # as the default hook: a thread that asked to end
            return
        name = args.thread.name if args.thread is not None else "unknown"
        self._died = f"thread {name} died: {args.exc_type.__name__}: {args.exc_value}"
        log.critical(
            "%s; stopping, a restart resumes from the last commit",
            self._died,
            exc_info=args.exc_value,  # its traceback too
        )
        self.notifier.status(f"fatal error: {self._died}")
        self.stop_requested.set()

    def _run(self) -> int:
        self._install_signals()
        self.parts.watcher.start()
        threads = [
            threading.Thread(
                target=self.sender.run,
                # While it delivers, the sender shares this thread's CPU (see rulesd.shared_cpu).
                args=(self.sender_stop, self.sender_wake, SharedCpu(threading.get_native_id()).held),
                name="rulesd-sender",
                daemon=True,
            )
        ]
        for warning in self.config.warnings:
            log.warning("%s: %s", warning.location, warning.message)
        heartbeat, client = self.config.opsgenie.heartbeat, self.parts.client
        if heartbeat and client is not None:
            if heartbeat_url(client.alert_url, heartbeat) is None:
                log.warning("heartbeat %r is not pinged: %s has no heartbeat API", heartbeat, client.alert_url)
            else:
                threads.append(threading.Thread(target=self._heartbeats, name="rulesd-heartbeat", daemon=True))
        for thread in threads:
            thread.start()
        self._note_sources()
        metrics = self.parts.metrics
        if metrics is not None:
            metrics.start()
            log.info("metrics on http://%s:%d/metrics", *metrics.address)
        log.info(
            "rulesd started: %d rule(s) loaded, %s%s",
            len(self.engine.ruleset.rules),
            describe_sources(self.config),
            " (dry run: alerts printed, not sent)" if self.parts.dry_run else "",
        )
        self.notifier.ready(self._status())
        status = 0
        try:
            self._loop()
        except NameTaken as exc:  # a configuration error: a restart cannot help (exit 2, as at start)
            log.critical("stopping: %s", exc)
            self.notifier.status(f"fatal error: {exc}")
            status = 2
        except Exception as exc:  # the top of the main loop: say what happened, stop, let systemd restart
            # Nothing is lost: the source position only advances with the alerts it caused.
            log.critical("fatal error, stopping; a restart resumes from the last commit: %s", exc, exc_info=True)
            self.notifier.status(f"fatal error: {exc}")
            status = 1
        finally:
            self.stats.stopping = True
            self.notifier.stopping()
            self._shutdown(threads)
        return status

    def _install_signals(self) -> None:
        def stop(signum: int, _frame: Any) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name)
            self.stop_requested.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, lambda _s, _f: self.parts.watcher.request())

    def _loop(self) -> None:
        sources = self.sources
        while not self.stop_requested.is_set():
            self._alive()
            if self.committer.pending is not None:  # the state cannot be written: read nothing
                # but reload (SIGHUP, a saved rule): the batch in hand was evaluated and is kept
                # as it is, and `systemctl reload` must not wait for the disk to be freed.
                self._reloads()
                if not self.committer.retry():
                    self.stop_requested.wait(IDLE_WAIT)
                continue
            self._reloads()
            batch = [(label, source, runs) for label, source in sources.items() if (runs := source.read(BATCH_LINES))]
            if batch:
                self._process(batch)
                continue
            if all(source.exhausted() for source in sources.values()):
                log.info("end of input: %s what is left", "printing" if self.parts.dry_run else "delivering")
                return
            self._tick()
            self._wait(IDLE_WAIT)
        self._stop_clock()

    def _wait(self, timeout: float) -> None:
        """Until some source may have lines, or `timeout`: one source waits on its own; several
        take turns in short slices, so that a line of any of them waits at most a round."""
        sources = list(self.sources.values())
        if len(sources) == 1:
            sources[0].wait(timeout)
            return
        share = min(timeout / len(sources), TURN_WAIT)
        for source in sources:
            source.wait(share)

    def _alive(self) -> None:
        """The main loop turned: feed the watchdog, /healthz, STATUS= and the heartbeat."""
        now = time.monotonic()
        self.stats.loop_alive = now
        self._note_sources()
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

    def _note_sources(self) -> None:
        """Tell the metrics which sources are followed now (a glob may have matched a new file)."""
        self.stats.sources = frozenset(self._source_names())

    def _source_names(self) -> list[str]:
        return [self._prefix.get(label, "") + name for label, s in self.sources.items() for name in s.names()]

    def _status_changed(self) -> None:
        self.notifier.status(self._status())

    def _status(self) -> str:
        depth, _ = self.parts.store.depth()
        events = self.stats.total("events")
        text = f"{self.stats.rules_loaded} rules, {events} events, outbox {depth}"
        problem = self.stats.state_problem or delivery_problem(self.sender) or self.stats.last_error
        return f"{text}; last error: {problem}" if problem else text

    def _process(self, batch: list[tuple[str, Source, list[Lines]]]) -> None:
        """Evaluate each source's runs, then commit their alerts with the positions and engine state."""
        now = self.clock()
        engine, settings, stats = self.engine, self.parts.settings, self.stats
        requests = self._requests(build_alerts(pending(engine), settings, str))  # a reload's closings
        engine.latest = -math.inf  # this batch's latest event time, for the clock while idle
        for label, source, runs in batch:
            parser = source.parser
            prefix = self._prefix.get(label, "")
            for run in runs:
                # A line's offset is only worked out for the rare line that alerts, arms a
                # timer or is invalid.
                offset = Offsets(run)
                where = partial(_where, run, offset)
                result = evaluate_lines(run.data, parser.fast, engine, now, where, parser.time)
                counted = prefix + run.path
                for i in result.invalid:
                    if not run.data[i].strip():  # a blank line: nothing to explain (as in fleet mode)
                        continue
                    # Built only if logged; one kind per source, whatever the reason.
                    self.parts.warn(partial(_skipped, parser, run, offset, i), kind=f"{counted}: invalid line")
                requests += self._requests(build_alerts(result, settings, where))
                stats.bump(stats.events, counted, result.events)
                if result.invalid:
                    stats.bump(stats.invalid, counted, len(result.invalid))
                if result.ignored:
                    stats.bump(stats.ignored, counted, result.ignored)
            self._misses.report(label, parser)
        engine.count_matches()  # the metrics read each rule's count: up to date once a batch
        seen = self._seen
        if engine.latest > -math.inf:  # also when later than the clock had run: see `idle_wall`
            self._seen = (engine.now, engine.idle_wall(now))
        self._commit(requests, now, clock=engine.timed and self._seen != seen)

    def _stop_clock(self) -> None:
        """At a stop, the clock runs on to now (what is due fires) and is saved, whether or not
        anything changed: an idle spell commits nothing, and the next start resumes the clock
        (`Engine.resume`) where it was at the stop, not where it was last saved. Not while the
        state cannot be written: the batch in hand is kept for the next start as it is."""
        if self.committer.pending is None:
            self._tick()
        if self.committer.pending is None:
            self._commit([], self.clock(), clock=True)

    def _tick(self) -> None:
        """While no event comes, the engine's clock moves on with the wall clock from the latest
        event time seen, so that timers (an absence, an absent step, resolve) fire in time; and
        now and then expired groups are forgotten (events do that too, but may have stopped)."""
        now = self.clock()
        if self.engine.timed or self.engine.waiting:  # (waiting: new_value rules learn from the start)
            self.engine.run_on(*self._seen, now)
        if now - self._last["sweep"] >= SWEEP_IDLE:
            self._last["sweep"] = now
            self.engine.sweep(self.engine.now)
        # What timers fired, a reload's closings and the alerts the limits closed: committed
        # with the state that no longer holds them. So are positions that moved with no line to
        # evaluate (a file truncated or rotated, only over-long lines skipped): after a restart
        # the old position could skip what the file holds now, or warn of a loss that was none.
        requests = self._requests(build_alerts(pending(self.engine), self.parts.settings, str))
        positions = checkpoints(self.sources, self.stats)
        moved = any(self._committed.get(key) != position for key, position in positions.items())
        if requests or self.engine.state.changed or moved:  # (a forgotten key too: {} is never saved)
            self._commit(requests, now, positions)

    def _requests(self, alerts: list[Alert]) -> list[dict[str, Any] | Request]:
        """What to queue for `alerts`, counted per rule."""
        out: list[dict[str, Any] | Request] = []
        for alert in alerts:
            if alert.close is not None:
                out.append(Request(alert.payload, CLOSE, alert.close))
                continue
            for name in alert.rules:
                self.stats.bump(self.stats.firings, name)
            out.append(alert.payload)
        return out

    def _commit(
        self,
        requests: list[dict[str, Any] | Request],
        now: float,
        positions: dict[str, dict[str, Any]] | None = None,
        *,
        clock: bool = False,
    ) -> None:
        """One transaction: a crash either keeps these alerts and the new positions, or neither
        (and while the state cannot be written, the committer keeps the batch as it is).
        `clock`: the clock or the wall time it runs on from changed, to be saved also if no
        group did, so that a restart runs it on as it would have run."""
        if positions is None:
            positions = checkpoints(self.sources, self.stats)
        self._committed.update(positions)
        self._committed = still_saved(self._committed)
        state = self.engine.state
        delta = state.delta() if state.changed or clock else None
        # Saved with the clock: the wall time from which it runs on as `_seen` says.
        seen_time, seen_at = self._seen
        wall = seen_at + (self.engine.now - seen_time) if seen_time > -math.inf else now
        self.committer.commit(Pending(positions, requests, now, delta, clock_wall=wall))
        self.stats.state_groups = state.group_count()
        self._warn_limits()

    def _warn_limits(self) -> None:
        """Say when the state limits are first reached, and whenever they closed open alerts."""
        engine = self.engine
        if engine.values_evicted.keys() - self._values_said:
            self._warn_values()
        if not self._evicting:  # checked per commit: until a limit is reached, only this
            if not any(n > engine.values_evicted.get(rule, 0) for rule, n in engine.evicted.items()):
                return  # nor were alerts closed: each closed group is counted as evicted too
            self._evicting = True  # said once: the metric counts the rest
            log.warning(
                "state limit reached: the stalest groups are being forgotten (rules: %s); raise limits.groups "
                "or limits.groups_per_rule, or group by fewer values (rulesd_state_groups_evicted_total counts them)",
                _some_rules(engine.evicted),
            )
        closed = sum(engine.limit_closed.values())
        if closed > self._limit_closed:
            self._limit_closed = closed
            self.parts.warn(
                f"state limit reached with every group left holding an open alert: {closed} alert(s) closed so far "
                f"(rules: {_some_rules(engine.limit_closed)}); raise limits.groups or limits.groups_per_rule "
                "(rulesd_state_alerts_closed_total counts them)",
                kind="state limit: open alerts closed",
            )

    def _warn_values(self) -> None:
        """Say, once per rule, that a new_value group reached limits.values_per_group."""
        for name in sorted(self.engine.values_evicted.keys() - self._values_said):
            self._values_said.add(name)
            log.warning(
                "rule %r: a group knows limits.values_per_group (%d) values: the values seen longest ago are being "
                "forgotten, and each pages again as new when next seen; raise limits.values_per_group, or group "
                "by more fields (rulesd_state_groups_evicted_total counts them)",
                name,
                self.engine.limits.values_per_group,
            )

    def _reloads(self) -> None:
        """Between batches: start a load when the rules changed, swap in a finished one; keep
        the generated code the running rule set compiled anew (its functions are written as
        they are first used: a turn after the first batch, or after a reload, has them)."""
        outcome = self.loader.take()
        if outcome is not None:
            self._finish_reload(outcome)
        generated_code.keep(self.parts.rule_cache, self._code_key)
        if self.parts.watcher.due():
            self._reload_wanted = True
        if self._reload_wanted and not self.loader.busy:
            self._reload_wanted = False
            self.notifier.reloading()
            self._stop_extending = self.notifier.keep_extending()  # systemd waits for READY=1
            log.debug("reload: loading the rules")
            self.loader.start()
        key = self.parts.api_key
        if self.sender.paused_reason is not None and key is not None and key.refresh():
            # OpsGenie refused the key and a new one was written: try it now, not at the slow retry.
            self._resume_sender(key_changed=True)

    def reload(self) -> bool:
        """Load the rules again and wait for the outcome (the main loop does not wait: see
        `_reloads`); on any error keep the running set and log every problem."""
        self.notifier.reloading()
        self._stop_extending = self.notifier.keep_extending()
        self.loader.start()
        self.loader.done.wait()
        outcome = self.loader.take()
        assert outcome is not None
        return self._finish_reload(outcome)

    def _finish_reload(self, outcome: LoadOutcome) -> bool:
        """Apply a finished load (or keep the running rules) and log the one line that says how
        the reload ended; True if the rules on disk now run."""
        try:
            self._reload_key()
            return self._apply(outcome)
        finally:
            self.stats.last_reload_seconds = outcome.seconds
            self._stop_extending()
            self.notifier.ready(self._status())

    def _reload_key(self) -> None:
        if self.parts.api_key is not None:
            self._resume_sender(key_changed=self.parts.api_key.reload())

    def _resume_sender(self, *, key_changed: bool) -> None:
        if self.sender.resume(key_changed=key_changed):
            self.sender_wake.set()

    def _apply(self, outcome: LoadOutcome) -> bool:
        result = outcome.result
        took = f" ({outcome.seconds:.1f}s)"
        if result.ruleset is None:
            self.stats.reloaded(ok=False, at=self.clock())
            errors = result.errors
            why = outcome.crashed or f"{len(errors)} error(s)"
            self.stats.last_error = f"{RELOAD_FAILED}: {why}, previous rules kept"
            log.error(
                "%s: %s; previous rules kept (%d rules)%s", RELOAD_FAILED, why, len(self.engine.ruleset.rules), took
            )
            for problem in errors:
                log.error("%s, previous rules kept: %s", RELOAD_FAILED, problem)
            return False
        old = self.engine.ruleset
        self.stats.reloaded(ok=True, at=self.clock())
        if (self.stats.last_error or "").startswith(RELOAD_FAILED):
            self.stats.last_error = None  # the rules on disk are good again
        if result.ruleset.fingerprint != old.fingerprint:
            self.engine.replace_rules(result.ruleset, outcome.prepared)
            if outcome.code is not None:  # its code is the running set's now, to keep
                generated_code.adopt(outcome.code)
            forget_rules()  # (the rules before are not kept alive by the bodies' memos)
            self.stats.rules_now(self.engine.ruleset.by_name())
            self.stats.ruleset_hash, self.stats.rules_loaded = result.ruleset.fingerprint, len(result.ruleset.rules)
        # Warnings (no rule file found, an expect list the limits cannot hold), before the reload's last word.
        for problem in [*result.problems, *limit_warnings(result.ruleset, self.config.limits)]:
            log.warning("%s: %s", problem.location, problem.message)
        log.info("reload ok: %s%s", describe_change(old, result.ruleset), took)
        return True

    def _abort_requests(self) -> None:
        """The grace period is over: end the requests still in flight, and a wait for the key file."""
        if self.parts.api_key is not None:
            self.parts.api_key.abort()
        if self.parts.client is not None and self.parts.client.abort():
            # Said once a request was in flight to cut: the sender between two requests, or
            # waiting for the key file, cuts nothing. Each request cut says what it was and what
            # becomes of it (an alert stays queued).
            log.warning("stopping: cutting the request in flight")

    def _heartbeats(self) -> None:
        """Ping the OpsGenie heartbeat whenever the main loop asks; failures are logged, never fatal."""
        name, client = self.config.opsgenie.heartbeat, self.parts.client
        assert name is not None and client is not None
        failing = FailureRun()  # an outage is one warning, not one a minute
        while not self.sender_stop.is_set():
            if not self._heartbeat_due.wait(1.0):
                continue
            self._heartbeat_due.clear()
            try:
                client.ping_heartbeat(name)
            except StopCut:
                # rulesd's own doing at the end of the stop grace, not a failed ping: a ping queues
                # nothing (the client's message speaks of an alert kept for the next start).
                log.info("heartbeat %r: its ping was cut by the stop; nothing is lost (a ping queues nothing)", name)
            except AlertError as exc:
                self.stats.bump(self.stats.heartbeats, "failed")
                log.log(failing.failed(str(exc)), "heartbeat %r not pinged: %s", name, exc)
            except Exception:  # a bug in a ping must not stop the daemon: a missed ping is the alarm
                self.stats.bump(self.stats.heartbeats, "failed")
                log.exception("heartbeat %r not pinged: unexpected error", name)
            else:
                self.stats.bump(self.stats.heartbeats, "ok")
                if failing.ended():
                    log.info("heartbeat %r pinged again", name)

    def _input_ended(self) -> bool:
        """True when no more input will come (stdin at its end)."""
        return all(source.exhausted() for source in self.sources.values())

    def _shutdown(self, threads: list[threading.Thread]) -> None:
        """Stop within the grace period whatever the network does: the sender finishes its
        attempt and drains what it can; at the end of the grace a request still in flight is cut
        (its alert stays queued for the next start). Each cut is said before the stop goes on:
        said by a timer's thread that the process did not wait for, a cut went unsaid when that
        thread was held between the cut and its log line (a loaded machine) and the rest of the
        stop ran to the process's end meanwhile."""
        grace = EOF_GRACE if self._input_ended() else STOP_GRACE
        end = time.monotonic() + grace
        self._stop_extending()  # a reload still loading is abandoned
        self.parts.watcher.stop()
        for source in self.sources.values():
            source.close()
        self.sender_stop.set()
        self.sender_wake.set()
        for thread in threads:
            thread.join(timeout=max(0.0, end - time.monotonic()))
        if any(thread.is_alive() for thread in threads):  # a request (or a wait for the key file) outlasted the grace
            self._abort_requests()
            for thread in threads:
                thread.join(timeout=max(0.0, end + ABORT_WAIT - time.monotonic()))
        # The sender's thread is done (unless a request outlived even the cut): the rest of the
        # grace drains what is left from here, a request still in flight at its end cut as above.
        drained = False
        if not threads[0].is_alive():
            cutoff = threading.Timer(max(0.0, end - time.monotonic()), self._abort_requests)
            cutoff.daemon = True
            cutoff.start()
            try:
                drained = self.sender.drain(self.clock() + max(0.0, end - time.monotonic()))
            finally:
                cutoff.cancel()
                cutoff.join()  # (a cut under way is said before the stop goes on)
        self._say_left_queued(drained)
        if self.committer.pending is not None:
            log.warning(
                "the last batch read was not committed (%s): its lines are read again at the next start",
                self.stats.state_problem,
            )
        if self.parts.metrics is not None:
            self.parts.metrics.stop()
        self.notifier.close()
        self.parts.store.close()  # this thread's connection; the sender closed its own
        if self.parts.lock is not None:
            self.parts.lock.release()
        self.parts.warn.flush()  # so that every invalid line counted below was warned about
        self._misses.flush()
        events, invalid = self.stats.total("events"), self.stats.total("invalid")
        log.info("stopped: %d event(s), %d invalid, %s", events, invalid, self._done())

    def _say_left_queued(self, drained: bool) -> None:
        """Say what the stop leaves queued, as far as it is known: with Redis away, the count last
        read may be stale either way (alerts queued or delivered by another instance since)."""
        try:
            depth, _ = self.parts.store.depth(last_known=False)
        except StateUnavailable as exc:
            log.warning(
                "state unavailable at the stop: the outbox's length is unknown; what it holds is sent at the next"
                " start: %s",
                exc,
            )
            return
        if drained and not depth:
            return
        if self.parts.dry_run:
            log.warning("%d alert(s) not printed (a dry run's queue is in memory: none is sent later)", depth)
        else:
            log.warning("%d alert(s) still queued; they will be sent on the next start", depth)

    def _done(self) -> str:
        """The alerts (and closes, a request each) this run queued, or a dry run printed."""
        stats = self.stats
        if self.parts.dry_run:
            closes, how = stats.closes_sent, "printed"
            alerts = stats.delivery.get(SENT, 0) - closes
        else:
            alerts, closes, how = stats.alerts_queued, stats.closes_queued, "queued"
        return f"{alerts} alert(s) and {closes} close(s) {how}" if closes else f"{alerts} alert(s) {how}"


def checkpoints(sources: dict[str, Source], stats: Stats) -> dict[str, dict[str, Any]]:
    """The sources' checkpoints, as saved: those that may have moved since the last call. A
    key a source forgot (a glob's file gone) takes its counters with it: they are kept under
    the same key (the path, or `NAME:PATH`)."""
    positions: dict[str, dict[str, Any]] = {}
    for source in sources.values():
        for key, position in source.checkpoint().items():
            positions[key] = saved = position.to_json()
            if not saved:
                stats.forget_source(key)
    return positions


def still_saved(positions: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The positions a commit of `positions` leaves saved (a forgotten key's is deleted)."""
    return {key: position for key, position in positions.items() if position}


def _nothing() -> None:
    pass


def _skipped(parser: Parser, run: Lines, offset: Offsets, index: int) -> str:
    """The warning for an invalid line: where it is and why (the parser is asked again)."""
    return f"{_where(run, offset, index)}: skipped: {parser.why_invalid(line_text(run.data[index]))}"


def describe_sources(config: Config) -> str:
    """`source file`, or `sources nginx (file), sshd (journald)`, for the start-up line."""
    sources = config.sources
    if len(sources) == 1 and sources[0].name is None:
        return f"source {sources[0].type}"
    named = ", ".join(f"{source.label} ({source.type})" for source in sources)
    return f"source{'s' if len(sources) > 1 else ''} {named}"


def _where(run: Lines, offset: Offsets, index: int) -> str:
    """Where a line of a run is: the alert's "Event Source" and the invalid line's warning."""
    return f"{run.path} (offset {offset(index)})"


def _some_rules(counts: dict[str, int]) -> str:
    """The first few rules (by name) with a count, for a log line."""
    return ", ".join(sorted(name for name, count in counts.items() if count)[:5])
