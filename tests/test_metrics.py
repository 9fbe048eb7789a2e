"""The metrics collector (`rulesd.metrics`), read through prometheus_client's own exposition."""

from __future__ import annotations

import subprocess
import sys

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rulesd.metrics import build_registry
from rulesd.stats import Stats


def exposed(stats: Stats, paused: bool = False) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample the registry exposes for `stats`: (name, labels) -> value."""
    registry = build_registry(stats, lambda: (0, None), lambda: 0, lambda: 0, lambda: 1000.0, lambda: paused)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_both_event_counters_start_at_zero_for_every_source_seen() -> None:
    """A source with events but no invalid line has an invalid counter at 0, and the other way
    round, so that rate() sees the first increase of either."""
    stats = Stats(events={"a.log": 5}, invalid={"b.log": 2})
    samples = exposed(stats)
    assert {
        ("a.log", "read"): 5,
        ("a.log", "invalid"): 0,
        ("b.log", "read"): 0,
        ("b.log", "invalid"): 2,
    } == {
        (source, kind): samples[(f"rulesd_events_{kind}_total", (("source", source),))]
        for source in ("a.log", "b.log")
        for kind in ("read", "invalid")
    }


def test_sending_paused_and_last_reload_gauges() -> None:
    """rulesd_sending_paused follows the callback; rulesd_last_reload_successful the last reload."""
    stats = Stats()
    assert (0, 1) == (
        exposed(stats)[("rulesd_sending_paused", ())],
        exposed(stats)[("rulesd_last_reload_successful", ())],
    )
    stats.reloaded(ok=False)
    assert (1, 0) == (
        exposed(stats, paused=True)[("rulesd_sending_paused", ())],
        exposed(stats)[("rulesd_last_reload_successful", ())],
    )
    stats.reloaded(ok=True)
    samples = exposed(stats)
    assert (1, 1, 1) == (
        samples[("rulesd_last_reload_successful", ())],
        samples[("rulesd_reloads_total", (("result", "ok"),))],
        samples[("rulesd_reloads_total", (("result", "failed"),))],
    )


def test_the_daemon_imports_prometheus_only_to_serve_metrics() -> None:
    """Without `metrics.listen` nothing reads the counters but the daemon: Prometheus' client
    and `http.server` (~13 ms of `rulesd run`'s start-up) are imported only by `rulesd.metrics`."""
    code = (
        "import sys, rulesd.cli, rulesd.daemon.build, rulesd.daemon.run; "
        "print(sorted(m for m in ('prometheus_client', 'http.server') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "[]" == out.stdout.strip()


def test_healthz_naming_a_path_that_is_not_utf8_answers_with_it_escaped() -> None:
    """A problem may name a path (the state directory that is full), and a path that is not
    UTF-8 holds a lone surrogate: encoding the body raised in the request's thread, so /healthz
    answered nothing, a failed liveness probe (and a restart that cannot help). The surrogate
    is written as its escape, as the log writes it."""
    import time
    import urllib.request

    from rulesd.metrics import MetricsServer

    stats = Stats()
    stats.loop_alive = time.monotonic()
    registry = build_registry(stats, lambda: (0, None), lambda: 0, lambda: 0, lambda: 1000.0, lambda: False)
    problem = "state directory full: /var/lib/rulesd-\udcff"
    server = MetricsServer("127.0.0.1:0", registry, stats, 60.0, problems=lambda: [problem])
    server.start()
    try:
        host, port = server.address
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as response:
            assert 200 == response.status
            assert b"ok\nstate directory full: /var/lib/rulesd-\\udcff\n" == response.read()
    finally:
        server.stop()
