"""Prometheus metrics and a health check, served on `metrics.listen`.

The daemon keeps plain counters on its hot path; this collector reads them at
scrape time, so metrics cost nothing per event. Everything is registered on a
registry of our own, never the process-global default one.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from rulesd.errors import RulesdError
from rulesd.stats import Stats

log = logging.getLogger("rulesd")

# Seconds a client gets to send its request and take the answer: each connection holds a thread,
# and one that never finishes would otherwise hold it for good (the unit's TasksMax=64 counts them).
REQUEST_TIMEOUT = 5.0

_DELIVERY_HELP = (
    ("sent", "Alerts delivered."),
    ("retry", "Failed attempts that will be retried."),
    ("paused", "Attempts refused for the API key or a redirect."),
    ("dead", "Alerts dead-lettered as rejected."),
    ("expired", "Alerts dead-lettered as expired."),
)


class _Collector(Collector):
    def __init__(
        self,
        stats: Stats,
        outbox: Callable[[], tuple[int, float | None]],
        lag: Callable[[], int],
        too_long: Callable[[], int],
        clock: Callable[[], float],
        paused: Callable[[], bool],
        not_from_api: Callable[[], int],
    ) -> None:
        self.stats, self.outbox, self.lag, self.too_long, self.clock = stats, outbox, lag, too_long, clock
        self.paused, self.not_from_api = paused, not_from_api

    def collect(self) -> Iterator[Any]:
        s = self.stats
        # Every counter of every source followed, from 0: a rate needs the series before its first increase.
        sources = s.events.keys() | s.invalid.keys() | s.sources
        yield _per("rulesd_events_read", "Events read, per source.", "source", s.events, sources)
        yield _per("rulesd_events_invalid", "Lines skipped as invalid, per source.", "source", s.invalid, sources)
        ignored_help = "Lines dropped by the source's ignore_pattern, per source."
        yield _per("rulesd_lines_ignored", ignored_help, "source", s.ignored, sources)
        unconverted = CounterMetricFamily(
            "rulesd_fields_unconverted",
            "Captured values left out of the event because they did not convert to their field's type.",
            labels=["source", "field"],
        )
        for (source, name), count in sorted(s.unconverted.items()):
            unconverted.add_metric([source, name], count)
        yield unconverted
        yield _per(
            "rulesd_events_untimed",
            "Events evaluated at their arrival time because their time field was missing or unreadable.",
            "source",
            s.untimed,
        )
        yield _per("rulesd_rule_matches", "Events that matched a rule's condition.", "rule", s.matches)
        yield _per("rulesd_rule_firings", "Times a rule fired.", "rule", s.firings)
        yield _per(
            "rulesd_state_groups_evicted",
            "Groups (and new_value groups' values) forgotten, the stalest first, to stay within the limits.",
            "rule",
            s.evicted,
        )
        yield _per(
            "rulesd_state_alerts_closed",
            "Open alerts closed because their group was forgotten to stay within the limits (all left held one).",
            "rule",
            s.limit_closed,
        )
        yield GaugeMetricFamily("rulesd_state_groups", "Groups the engine keeps state for.", value=s.state_groups)
        yield CounterMetricFamily("rulesd_alerts_queued", "Alerts written to the outbox.", value=s.alerts_queued)
        yield CounterMetricFamily("rulesd_closes_queued", "Alert closes written to the outbox.", value=s.closes_queued)
        for kind, help_text in _DELIVERY_HELP:
            yield CounterMetricFamily(f"rulesd_alerts_{kind}", help_text, value=s.delivery.get(kind, 0))
        yield CounterMetricFamily(
            "rulesd_answers_not_from_api",
            "2xx answers that were a web page, not the Alert API's JSON: a proxy or captive portal answered, "
            "the request is retried.",
            value=self.not_from_api(),
        )
        depth, oldest = self.outbox()
        now = self.clock()
        yield GaugeMetricFamily("rulesd_outbox_depth", "Alerts waiting to be delivered.", value=depth)
        yield GaugeMetricFamily(
            "rulesd_outbox_oldest_age_seconds",
            "Age of the oldest undelivered alert.",
            value=max(0.0, now - oldest) if oldest is not None else 0.0,
        )
        yield _per("rulesd_reloads", "Rule reloads, by result.", "result", s.reloads)
        yield GaugeMetricFamily(
            "rulesd_last_reload_successful",
            "1 if the last rule reload succeeded (or none failed yet), 0 while the previous rules are kept.",
            value=int(s.last_reload_ok),
        )
        yield GaugeMetricFamily(
            "rulesd_last_reload_success_timestamp_seconds",
            "When the rules last loaded successfully (at start or by a reload), epoch seconds.",
            value=s.last_reload_success,
        )
        yield GaugeMetricFamily(
            "rulesd_sending_paused",
            "1 while delivery is paused: OpsGenie refused the API key or redirected; nothing is dropped.",
            value=int(self.paused()),
        )
        yield GaugeMetricFamily(
            "rulesd_state_unavailable",
            "1 while the state cannot be written (e.g. its directory is full): reading waits, nothing is lost.",
            value=int(s.state_problem is not None),
        )
        yield GaugeMetricFamily("rulesd_rules_loaded", "Rules in the running rule set.", value=s.rules_loaded)
        info = InfoMetricFamily("rulesd_ruleset", "The running rule set.")
        info.add_metric([], {"hash": s.ruleset_hash})
        yield info
        yield GaugeMetricFamily(
            "rulesd_source_lag_bytes", "Bytes written to the source but not yet read.", value=self.lag()
        )
        yield CounterMetricFamily(
            "rulesd_lines_too_long", "Lines skipped for exceeding max_line_bytes.", value=self.too_long()
        )
        since = now - s.last_delivery if s.last_delivery is not None else float("nan")
        yield GaugeMetricFamily(
            "rulesd_seconds_since_last_delivery", "Seconds since an alert was last delivered (NaN: never).", value=since
        )
        yield _per("rulesd_heartbeats", "OpsGenie heartbeat pings, by result.", "result", s.heartbeats)


def _per(
    name: str, help_text: str, label: str, values: dict[str, int], keys: Iterable[str] = ()
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_text, labels=[label])
    for key in sorted(values.keys() | set(keys)):
        family.add_metric([key], values.get(key, 0))
    return family


def build_registry(
    stats: Stats,
    outbox: Callable[[], tuple[int, float | None]],
    lag: Callable[[], int],
    too_long: Callable[[], int],
    clock: Callable[[], float] = time.time,
    paused: Callable[[], bool] = lambda: False,
    not_from_api: Callable[[], int] = lambda: 0,
) -> CollectorRegistry:
    """A registry with rulesd's metrics and the process and platform collectors; `paused` tells
    whether delivery is paused, `not_from_api` how many 2xx answers were not the Alert API's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(stats, outbox, lag, too_long, clock, paused, not_from_api))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def health(stalled: float, stall_after: float, problems: list[str]) -> tuple[int, int, str]:
    """The `/healthz` and `/readyz` statuses and their shared body, from how long the main loop
    has not turned and what keeps rulesd from paging.

    `/healthz` is liveness: 200 while the loop turns (a restart cannot fix a refused key or a
    full disk), 503 once it has stalled. `/readyz` is readiness to page: 200 only when the loop
    turns and nothing keeps an alert from reaching OpsGenie. The body names every problem.
    """
    alive = stalled <= stall_after
    lines = ["ok" if alive else f"main loop stalled for {stalled:.0f}s"]
    lines += problems
    return (200 if alive else 503), (200 if alive and not problems else 503), "\n".join(lines) + "\n"


class CannotListen(RulesdError):
    """`metrics.listen` cannot be bound (taken, or not an address of this host)."""


class MetricsServer:
    """`/metrics` (Prometheus text format), `/healthz` (liveness) and `/readyz` (readiness to
    page) over HTTP, in a background thread. `problems` names what keeps rulesd from paging now
    (paused sending, an unwritable state)."""

    def __init__(
        self,
        listen: str,
        registry: CollectorRegistry,
        stats: Stats,
        stall_after: float,
        problems: Callable[[], list[str]] = list,
    ) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        handler = _handler(registry, stats, stall_after, problems)
        server_class = _server_class(host)
        try:
            self.server = server_class((host, int(port)), handler)
        except OSError as exc:  # "Address already in use" alone does not say which address
            raise CannotListen(f"metrics.listen: {listen}: cannot listen: {exc.strerror or exc}") from None
        self.thread = threading.Thread(target=self.server.serve_forever, name="rulesd-metrics", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (port 0 in the config picks a free one)."""
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Serve in the background."""
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # One log record, not socketserver's bare traceback among the log lines (invalid JSON
        # with --log-format json). A client gone mid-answer is its own business.
        exc = sys.exc_info()[1]
        level = logging.DEBUG if isinstance(exc, OSError) else logging.ERROR
        log.log(
            level,
            "metrics.listen: a request from %s failed: %r",
            client_address[0],
            exc,
            exc_info=level > logging.DEBUG,
        )


def _server_class(host: str) -> type[ThreadingHTTPServer]:
    if ":" not in host:
        return _Server
    import socket

    class V6Server(_Server):
        address_family = socket.AF_INET6

    return V6Server


def _handler(
    registry: CollectorRegistry, stats: Stats, stall_after: float, problems: Callable[[], list[str]]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT

        def do_GET(self) -> None:
            self._reply(*self._answer())

        def do_HEAD(self) -> None:  # uptime checkers and load balancers may probe with HEAD
            self._reply(*self._answer(), with_body=False)

        def _answer(self) -> tuple[int, bytes, str]:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    return 200, generate_latest(registry), CONTENT_TYPE_LATEST
                except Exception as exc:  # the outbox depth reads the state database, which may fail
                    log.error("/metrics: cannot collect the metrics: %s", exc)
                    return 500, f"cannot collect the metrics: {exc}\n".encode(), "text/plain; charset=utf-8"
            if path in ("/healthz", "/readyz"):
                live, ready, body = health(time.monotonic() - stats.loop_alive, stall_after, problems())
                # A problem may name a path that is not UTF-8: its surrogate as the log writes it.
                text = body.encode(errors="backslashreplace")
                return (live if path == "/healthz" else ready), text, "text/plain; charset=utf-8"
            return 404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain"

        def _reply(self, status: int, body: bytes, content_type: str, with_body: bool = True) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
            pass

    return Handler
