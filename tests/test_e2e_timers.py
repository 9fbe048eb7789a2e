"""Timers through the real daemon and a loopback OpsGenie: an absence fires when its host has
been silent for its window, as the events' own times say, and not while its events still come
(late, in fits, from a source that lags); across reloads and restarts too."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rulesd.daemon import Daemon
from tests.daemon_process import Workspace, daemon_parts
from tests.fake_opsgenie import FakeOpsGenie, Received

ABSENCE = """
name: heartbeat-missing
match: {kind: heartbeat}
absence: {window: 6s, group_by: [host]}
alert: {message: "no heartbeat from {host}"}
"""


def creates(server: FakeOpsGenie) -> list[Received]:
    return [r for r in server.requests if r.path.endswith("/alerts")]


def test_an_absence_does_not_fire_while_late_heartbeats_still_come_in_fits(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """Heartbeats of h1 are written every 2 s, each 2 s later than the one before (the log
    shipping lags more and more: 0, 2, 4, 6, 8 s). Between fits the clock moves on with the wall
    clock, but from each fit's heartbeat as late as it came: no page while they come (the clock
    kept the lead the idle moments gave it over the late heartbeats, and h1's 6 s absence paged
    2 s after the heartbeat of a 6 s lag came). Once they stop, it pages about 6 s after the last
    one was read."""
    ws = Workspace(tmp_path, server.url, time_field="t")
    (ws.rules / "rules.yaml").write_text(ABSENCE)
    daemon = ws.start()
    for lag in (0, 2, 4, 6, 8):
        ws.append({"kind": "heartbeat", "host": "h1", "t": time.time() - lag})
        time.sleep(2)
        assert [] == creates(server), f"paged while h1's heartbeats still come (lag {lag} s): {daemon.output()}"
    last = time.monotonic() - 2
    assert server.wait_for(lambda got: len(creates(server)) == 1, timeout=15), daemon.output()
    assert time.monotonic() - last > 5, "paged before h1 had been silent for 6 s"
    assert "no heartbeat from h1" == creates(server)[0].json()["message"]
    assert 0 == daemon.terminate()


def test_a_restart_runs_the_clock_on_as_late_as_the_last_heartbeats_came(tmp_path: Path) -> None:
    """The daemon's loop turned by hand on a wall clock the test moves: h1's heartbeat at `start`,
    an idle moment of 6 s (the clock at start + 6), then h1's heartbeat of start + 1, read at
    start + 6 (its shipping lags 5 s more). A restart 2 s later runs the clock on from that
    heartbeat as late as it came, as the daemon before it would have: h1's 10 s absence has not
    fired 9 s after that heartbeat was read, and fires after 10. (The clock was saved with the
    wall time of the commit, so it ran on from start + 6 at start + 6 again, and the absence fired
    9 s after the heartbeat came.)"""
    start = time.time()
    wall = [start]
    events = tmp_path / "events.jsonl"
    events.touch()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(ABSENCE.replace("window: 6s", "window: 10s"))
    config = tmp_path / "rulesd.yaml"
    config.write_text(
        f"rules: [rules]\nsource: {{type: file, path: {events}, start_at: beginning}}\ntime_field: t\n"
        "state_dir: state\nopsgenie: {alert_url: 'http://127.0.0.1:9/v2/alerts', api_key: e2e-secret-key-0123456789}\n"
    )

    def heartbeat(at: float) -> None:
        with open(events, "a") as fh:
            fh.write(json.dumps({"kind": "heartbeat", "host": "h1", "t": at}) + "\n")

    def read(daemon: Daemon) -> None:
        daemon._process([(label, s, runs) for label, s in daemon.sources.items() if (runs := s.read(10))])

    def idle_until(daemon: Daemon, at: float) -> int:
        """The alerts queued once idle at wall time `at`."""
        wall[0] = at
        daemon._tick()
        return daemon.parts.store.depth()[0]

    with daemon_parts(config, lambda: wall[0]) as parts:
        daemon = Daemon(parts)
        heartbeat(start)
        read(daemon)
        assert 0 == idle_until(daemon, start + 6)
        assert start + 6 == parts.engine.now
        heartbeat(start + 1)
        read(daemon)
    with daemon_parts(config, lambda: wall[0]) as parts:
        daemon = Daemon(parts)
        assert 0 == idle_until(daemon, start + 8)
        assert start + 6 == parts.engine.now, "the clock as it was before the restart"
        assert 0 == idle_until(daemon, start + 15), "h1's heartbeat was read 9 s ago"
        assert 1 == idle_until(daemon, start + 16.5)
