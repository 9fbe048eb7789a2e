"""End-to-end: the real `rulesd run` process as systemd sees it: the notify protocol over a
real unix datagram socket, watchdog pings, /metrics and /healthz over HTTP, heartbeat pings."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from rulesd.metrics import REQUEST_TIMEOUT
from rulesd.notify import EXTEND_BY
from tests.daemon_process import API_KEY, DaemonProcess, Workspace, wait_until
from tests.fake_opsgenie import FakeOpsGenie, Reply
from tests.test_e2e_sources import open_files


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET; records every message."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        while not self.stopped.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def states(self) -> list[str]:
        """The READY/RELOADING/STOPPING fields, in order (STATUS and WATCHDOG left out)."""
        out = []
        for _, message in self.messages:
            for field in message.split("\n"):
                if field.split("=")[0] in ("READY", "RELOADING", "STOPPING"):
                    out.append(field)
        return out

    def pings(self) -> list[float]:
        return [t for t, m in self.messages if "WATCHDOG=1" in m.split("\n")]

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def head(url: str) -> int:
    """The status of a HEAD request (as some uptime checkers send), which must have no body."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5) as response:
            assert b"" == response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def metric(text: str, name: str) -> float:
    """The value of the sample line `name` (with labels, exactly as exposed)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def test_notify_sequence_start_reload_failed_reload_stop(
    tmp_path: Path, server: FakeOpsGenie, notify: NotifySocket
) -> None:
    """READY=1 at start; RELOADING=1 (with MONOTONIC_USEC) then READY=1 around each reload, a failed
    one too (with the error in STATUS=); STOPPING=1 on SIGTERM.

    A rule file written and then SIGHUP may make one reload or two (the file watch may take the
    write apart from the signal), so each step waits for the READY=1 whose status it expects
    rather than for a count of them."""
    ws = Workspace(tmp_path, server.url)
    daemon = ws.start(env={"NOTIFY_SOCKET": notify.path})
    assert wait_until(lambda: notify.states()[:1] == ["READY=1"])
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: notify.states().count("READY=1") == 2)

    def readies() -> list[str]:
        return [m for _, m in notify.messages if m.startswith("READY=1")]

    (ws.rules / "rules.yaml").write_text("rules:\n  - name: x\n    match: {kind: [}\n")
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "reload failed" in readies()[-1])
    failed = len(readies())
    (ws.rules / "rules.yaml").write_text("name: x\nmatch: {kind: page}\n")
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: len(readies()) > failed and "reload failed" not in readies()[-1])
    assert 0 == daemon.terminate()
    states = notify.states()
    reloads = (len(states) - 2) // 2
    assert reloads >= 3
    assert ["READY=1", *["RELOADING=1", "READY=1"] * reloads, "STOPPING=1"] == states
    reloading = [m for _, m in notify.messages if "RELOADING=1" in m]
    assert all("MONOTONIC_USEC=" in m for m in reloading)
    statuses = readies()
    assert all("STATUS=" in m for m in statuses)
    assert "1 rules" in statuses[0]
    assert "reload failed" not in statuses[1]  # the first reload: the same rules
    assert "reload failed" in statuses[failed - 1]
    assert "reload failed" not in statuses[-1]


def test_watchdog_pings_stop_while_the_main_loop_is_stuck(
    tmp_path: Path, server: FakeOpsGenie, notify: NotifySocket
) -> None:
    """Pings come at half WATCHDOG_USEC while the loop turns and stop while it is stuck (here on a
    database lock held by another process), so systemd would restart the service; /healthz turns
    503 meanwhile, and both recover when the loop does."""
    port = free_port()
    ws = Workspace(tmp_path, server.url, metrics={"listen": f"127.0.0.1:{port}"})
    daemon = ws.start(env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})
    assert wait_until(lambda: len(notify.pings()) >= 5)
    gaps = [b - a for a, b in zip(notify.pings(), notify.pings()[1:], strict=False)]
    assert max(gaps) < 0.4
    assert (200, "ok\n") == get(f"http://127.0.0.1:{port}/healthz")
    blocker = sqlite3.connect(tmp_path / "state" / "state.sqlite", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    ws.append({"kind": "page", "id": 1})
    assert wait_until(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 503)
    last = notify.pings()[-1]
    time.sleep(1.0)
    assert notify.pings()[-1] == last, "the watchdog was fed while the main loop was stuck"
    assert "stalled" in get(f"http://127.0.0.1:{port}/healthz")[1]
    blocker.execute("ROLLBACK")
    blocker.close()
    assert wait_until(lambda: notify.pings()[-1] > last)
    assert (200, "ok\n") == get(f"http://127.0.0.1:{port}/healthz")
    assert server.wait_for(lambda r: len(r) >= 1)
    assert 0 == daemon.terminate()


def test_metrics_move_as_events_flow(tmp_path: Path, server: FakeOpsGenie) -> None:
    """/metrics over HTTP: events, invalid lines, firings, alerts sent and reloads count up."""
    port = free_port()
    ws = Workspace(tmp_path, server.url, metrics={"listen": f"127.0.0.1:{port}"})
    daemon = ws.start()
    status, before = get(f"http://127.0.0.1:{port}/metrics")
    assert 200 == status
    assert 1 == metric(before, "rulesd_rules_loaded")
    ws.append({"kind": "page", "id": 1}, {"kind": "noise"}, b"not json\n", {"kind": "page", "id": 2})
    assert server.wait_for(lambda r: len(r) >= 2)
    source = str(ws.events)

    def scraped() -> str:
        return get(f"http://127.0.0.1:{port}/metrics")[1]

    assert wait_until(lambda: metric(scraped(), "rulesd_alerts_sent_total") == 2)
    after = scraped()
    assert 3 == metric(after, f'rulesd_events_read_total{{source="{source}"}}')
    assert 1 == metric(after, f'rulesd_events_invalid_total{{source="{source}"}}')
    assert 2 == metric(after, 'rulesd_rule_firings_total{rule="page-on-demand"}')
    assert 2 == metric(after, 'rulesd_rule_matches_total{rule="page-on-demand"}')
    assert 2 == metric(after, "rulesd_alerts_queued_total")
    assert 0 == metric(after, "rulesd_outbox_depth")
    assert 0 == metric(after, "rulesd_source_lag_bytes")
    assert 0 == metric(after, "rulesd_lines_too_long_total")
    assert metric(after, "rulesd_seconds_since_last_delivery") < 60
    assert "process_resident_memory_bytes" in after
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: metric(scraped(), 'rulesd_reloads_total{result="ok"}') == 1)
    assert API_KEY not in scraped()
    assert (404, "not found: try /metrics, /healthz or /readyz\n") == get(f"http://127.0.0.1:{port}/other")


def test_scrapes_leave_no_state_database_connection_open(tmp_path: Path, server: FakeOpsGenie) -> None:
    """Found by a soak: every /metrics request runs in a thread of its own, which opened a
    connection to the state database for the outbox depth; the thread ended and left it open
    (two descriptors) until the garbage collector came by, so a scrape a second kept dozens
    open. Each scrape's connection is now closed with it."""
    port = free_port()
    ws = Workspace(tmp_path, server.url, metrics={"listen": f"127.0.0.1:{port}"})
    daemon = ws.start()
    database = str(ws.root / "state" / "state.sqlite")

    def held() -> int:
        """Descriptors of the daemon open on the state database (and its -wal)."""
        return sum(1 for f in open_files(daemon.proc.pid) if f.startswith(database))

    ws.append({"kind": "page", "id": 1})  # the main thread's and the sender's connections are open
    assert server.wait_for(lambda r: len(r) >= 1)
    before = held()
    most = before
    for _ in range(60):
        assert 200 == get(f"http://127.0.0.1:{port}/metrics")[0]
        most = max(most, held())
    assert most <= before + 2, f"{before} descriptors on the state database before the scrapes, up to {most} with them"
    assert 0 == daemon.terminate()


def test_a_client_that_never_finishes_its_request_is_cut_off(tmp_path: Path, server: FakeOpsGenie) -> None:
    """A connection to metrics.listen that sends half a request is closed after REQUEST_TIMEOUT,
    and its thread ends: the unit's TasksMax=64 would otherwise be used up by idle clients, and
    the next reload could not start its thread."""
    port = free_port()
    ws = Workspace(tmp_path, server.url, metrics={"listen": f"127.0.0.1:{port}"})
    daemon = ws.start()

    def threads() -> int:
        return len(os.listdir(f"/proc/{daemon.proc.pid}/task"))

    before = threads()
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    for client in clients:
        client.sendall(b"GET /metr")
    assert wait_until(lambda: threads() >= before + 20)
    assert (200, "ok\n") == get(f"http://127.0.0.1:{port}/healthz")  # the others are still served
    for client in clients:
        client.settimeout(REQUEST_TIMEOUT + 5)
        assert b"" == client.recv(1)  # closed by rulesd
        client.close()
    assert wait_until(lambda: threads() <= before)
    assert 0 == daemon.terminate()


def test_metrics_that_cannot_be_collected_answer_500_and_log_one_json_line(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """When /metrics cannot be collected (here the state directory was moved away, so the outbox
    depth cannot be read), the scrape gets a 500 naming why and the log one JSON record, not an
    empty reply and a bare traceback among the JSON lines; /healthz is unaffected."""
    port = free_port()
    ws = Workspace(tmp_path, server.url, metrics={"listen": f"127.0.0.1:{port}"})
    daemon = ws.start("--log-format", "json")
    (tmp_path / "state").rename(tmp_path / "state.moved")
    status, body = get(f"http://127.0.0.1:{port}/metrics")
    assert (500, "cannot collect the metrics: unable to open database file\n") == (status, body)
    assert (200, "ok\n") == get(f"http://127.0.0.1:{port}/healthz")
    (tmp_path / "state.moved").rename(tmp_path / "state")
    assert 200 == get(f"http://127.0.0.1:{port}/metrics")[0]
    for _ in range(10):  # clients that reset the connection before the answer is written
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
    assert 200 == get(f"http://127.0.0.1:{port}/metrics")[0]
    assert 0 == daemon.terminate()
    records = [json.loads(line) for line in daemon.stderr().splitlines()]
    assert any(r["message"].startswith("/metrics: cannot collect the metrics") for r in records)


def test_heartbeat_is_pinged_from_the_live_loop(tmp_path: Path, server: FakeOpsGenie) -> None:
    """With opsgenie.heartbeat set, GET <api>/v2/heartbeats/NAME/ping with the key, at start and
    every minute after."""
    ws = Workspace(tmp_path, server.url)
    config = yaml.safe_load(ws.config.read_text())
    config["opsgenie"]["heartbeat"] = "rulesd prod"
    ws.config.write_text(yaml.safe_dump(config))
    daemon = ws.start()
    assert server.wait_for(lambda r: any(x.method == "GET" for x in r))
    ping = next(x for x in server.requests if x.method == "GET")
    assert "/v2/heartbeats/rulesd%20prod/ping" == ping.path
    assert f"GenieKey {API_KEY}" == ping.headers["Authorization"]
    assert 0 == daemon.terminate()
    assert API_KEY not in daemon.output()


def test_logs_carry_priority_prefixes_under_the_journal(tmp_path: Path, server: FakeOpsGenie) -> None:
    """When stderr is the journal stream (JOURNAL_STREAM matches it), each line starts with <N>."""
    ws = Workspace(tmp_path, server.url)
    # The file the next process's stderr goes to: opened for writing, it keeps its inode.
    stderr_path = tmp_path / f"stderr-{DaemonProcess.count + 1}.txt"
    stderr_path.touch()
    st = os.stat(stderr_path)
    daemon = ws.start(env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert daemon.stderr_path == stderr_path
    ws.append(b"not json\n")
    assert daemon.wait_for_log("skipped")
    lines = stderr_path.read_text().splitlines()
    assert any(line.startswith("<6>") and "rulesd started" in line for line in lines)
    assert any(line.startswith("<4>") and "skipped" in line for line in lines)
    assert all(line.startswith("<") for line in lines)


def test_status_shows_a_refused_key(tmp_path: Path, server: FakeOpsGenie, notify: NotifySocket) -> None:
    """While OpsGenie refuses the key, STATUS= says so (and nothing is dropped)."""
    server.responder = lambda _r: Reply(401, body=b'{"message":"Could not authenticate"}')
    ws = Workspace(tmp_path, server.url)
    daemon = ws.start(env={"NOTIFY_SOCKET": notify.path})
    ws.append({"kind": "page", "id": 1})
    assert server.wait_for(lambda r: len(r) >= 1)
    assert wait_until(lambda: any("STATUS=" in m and "401" in m for _, m in notify.messages), timeout=15)
    status = next(m for _, m in reversed(notify.messages) if "401" in m)
    assert "outbox 1" in status
    assert API_KEY not in status
    assert 0 == daemon.terminate()


def test_status_shows_delivery_failing_and_its_end(tmp_path: Path, server: FakeOpsGenie, notify: NotifySocket) -> None:
    """While the way to OpsGenie fails (three attempts in a row), STATUS= (what `systemctl
    status` shows) says delivery is failing with the last error, as /readyz does; once an alert
    gets through it says so no more. It showed only the outbox growing."""
    server.responder = lambda _r: Reply(503, body=b"upstream down")
    ws = Workspace(tmp_path, server.url)
    daemon = ws.start(env={"NOTIFY_SOCKET": notify.path})
    ws.append({"kind": "page", "id": 1})

    def status() -> str:
        return next((m for _, m in reversed(notify.messages) if "STATUS=" in m), "")

    # Sent every 5 s: by then a fourth attempt may have failed too.
    failing = re.compile(r"delivery failing, \d+ attempts in a row: HTTP 503")
    assert wait_until(lambda: failing.search(status()) is not None, timeout=30), status()
    server.responder = lambda _r: Reply()
    assert wait_until(lambda: "outbox 0" in status() and "failing" not in status(), timeout=30), status()
    assert 0 == daemon.terminate()


def test_paused_sending_shows_on_healthz_and_fails_readyz(tmp_path: Path, server: FakeOpsGenie) -> None:
    """While OpsGenie refuses the key, /healthz (liveness) stays 200 but says sending is paused,
    /readyz (can page) answers 503 with the same reason, and rulesd_sending_paused is 1; once a
    delivery succeeds again all three are back to ok."""
    server.responder = lambda _r: Reply(401, body=b'{"message":"Could not authenticate"}')
    port = free_port()
    ws = Workspace(tmp_path, server.url, metrics={"listen": f"127.0.0.1:{port}"})
    daemon = ws.start()
    base = f"http://127.0.0.1:{port}"
    assert (200, "ok\n") == get(f"{base}/readyz")
    ws.append({"kind": "page", "id": 1})
    assert wait_until(lambda: get(f"{base}/readyz")[0] == 503)
    live, ready = get(f"{base}/healthz"), get(f"{base}/readyz")
    assert 200 == live[0]
    assert live[1].startswith("ok\nsending paused: HTTP 401: OpsGenie rejected the API key")
    assert live[1] == ready[1]
    assert 1 == metric(get(f"{base}/metrics")[1], "rulesd_sending_paused")
    assert API_KEY not in live[1]
    assert (200, 503, 404) == (head(f"{base}/healthz"), head(f"{base}/readyz"), head(f"{base}/other"))
    server.responder = lambda _r: Reply()
    daemon.proc.send_signal(signal.SIGHUP)  # a reload retries the paused alert at once
    assert wait_until(lambda: get(f"{base}/readyz") == (200, "ok\n"))
    assert (200, "ok\n") == get(f"{base}/healthz")
    assert 200 == head(f"{base}/readyz")
    assert 0 == metric(get(f"{base}/metrics")[1], "rulesd_sending_paused")


def started_with(tmp_path: Path, server: FakeOpsGenie, **opsgenie: object) -> tuple[Workspace, DaemonProcess, str]:
    """A workspace whose config has `opsgenie` settings added and metrics on a free port, its
    daemon started, and the base of its endpoints."""
    port = free_port()
    ws = Workspace(tmp_path, server.url, metrics={"listen": f"127.0.0.1:{port}"})
    config = yaml.safe_load(ws.config.read_text())
    config["opsgenie"].update(opsgenie)
    ws.config.write_text(yaml.safe_dump(config))
    return ws, ws.start(), f"http://127.0.0.1:{port}"


def test_a_new_key_after_the_paused_alert_expired_makes_readyz_ok_again(tmp_path: Path, server: FakeOpsGenie) -> None:
    """OpsGenie refuses the key until the paused alert is older than max_age and expires: the
    key is still the refused one, so /readyz still says sending is paused. A new key written to
    the key file has nothing queued to try it on: the pause ends (/readyz 200,
    rulesd_sending_paused 0), not only once some later alert gets through."""
    server.responder = lambda _r: Reply(401, body=b'{"message":"Could not authenticate"}')
    ws, daemon, base = started_with(tmp_path, server, max_age="5s")
    ws.append({"kind": "page", "id": 1})
    assert daemon.wait_for_log("expired: undelivered after", timeout=20), daemon.output()
    assert get(f"{base}/readyz")[1].startswith("ok\nsending paused: HTTP 401")
    ws.key_file.write_text("a-new-key\n")
    assert wait_until(lambda: get(f"{base}/readyz") == (200, "ok\n")), get(f"{base}/readyz")
    assert 0 == metric(get(f"{base}/metrics")[1], "rulesd_sending_paused")
    assert 1 == len(server.requests)
    assert 0 == daemon.terminate()


def test_delivery_failing_in_a_row_fails_readyz_until_an_alert_gets_through(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """A proxy's web page in place of OpsGenie (or a 503) is retried, not paused: after three
    failed attempts in a row /readyz answers 503 naming the last error (/healthz stays 200 and
    says the same), and once an alert gets through both are back to ok."""
    page = b"<html><title>Guest Wi-Fi</title></html>"
    server.responder = lambda _r: Reply(200, headers={"Content-Type": "text/html"}, body=page)
    port = free_port()
    ws = Workspace(tmp_path, server.url, metrics={"listen": f"127.0.0.1:{port}"})
    daemon = ws.start()
    base = f"http://127.0.0.1:{port}"
    ws.append({"kind": "page", "id": 1})
    assert server.wait_for(lambda r: len(r) >= 2)
    assert (200, "ok\n") == get(f"{base}/readyz")  # a blip: the backoff rides it out
    assert wait_until(lambda: get(f"{base}/readyz")[0] == 503, timeout=20)
    live, ready = get(f"{base}/healthz"), get(f"{base}/readyz")
    assert 200 == live[0]
    assert live[1] == ready[1]
    assert live[1].startswith("ok\ndelivery failing, 3 attempts in a row: HTTP 200 not from the Alert API")
    assert "Guest Wi-Fi" in live[1]
    assert 0 == metric(get(f"{base}/metrics")[1], "rulesd_sending_paused")
    server.responder = lambda _r: Reply()
    assert wait_until(lambda: get(f"{base}/readyz") == (200, "ok\n"), timeout=20)
    assert (200, "ok\n") == get(f"{base}/healthz")
    assert {"page-1"} == {r.json()["alias"] for r in server.requests}  # one alert, tried until it got through
    assert len(server.requests) >= 4
    assert 0 == daemon.terminate()


def failing_readyz(tmp_path: Path, server: FakeOpsGenie, **opsgenie: object) -> tuple[DaemonProcess, str]:
    """A daemon (with `opsgenie` settings added) whose one alert has failed three attempts in a
    row with a 503, so that /readyz says delivery is failing; and the base of its endpoints."""
    ws, daemon, base = started_with(tmp_path, server, **opsgenie)
    ws.append({"kind": "page", "id": 1})
    assert wait_until(lambda: get(f"{base}/readyz")[0] == 503, timeout=20), daemon.output()
    assert get(f"{base}/readyz")[1].startswith("ok\ndelivery failing, 3 attempts in a row: HTTP 503")
    return daemon, base


def test_a_refusal_that_dead_letters_the_failing_alert_makes_readyz_ok_again(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """After three 503s in a row OpsGenie answers the alert with a 422 (dead-lettered): it
    answered, so the way to it works and /readyz is 200 again with nothing else queued, though
    no alert was delivered."""
    refused = threading.Event()

    def responder(_r: object) -> Reply:
        return Reply(422, body=b'{"message":"Request body is not processable"}') if refused.is_set() else Reply(503)

    server.responder = responder
    daemon, base = failing_readyz(tmp_path, server)
    refused.set()
    assert daemon.wait_for_log("dead-lettered (dead)", timeout=20), daemon.output()
    assert wait_until(lambda: get(f"{base}/readyz") == (200, "ok\n"))
    assert (200, "ok\n") == get(f"{base}/healthz")
    assert 0 == daemon.terminate()


def test_an_expiry_that_empties_the_outbox_makes_readyz_ok_again(tmp_path: Path, server: FakeOpsGenie) -> None:
    """OpsGenie keeps answering 503 until the failing alert is older than max_age and is
    dead-lettered as expired: with nothing left to deliver, nothing is failing, so /readyz is
    200 again (not until some later alert gets through, maybe days on); a new alert that fails
    three times in a row says so again."""
    server.responder = lambda _r: Reply(503)
    daemon, base = failing_readyz(tmp_path, server, max_age="10s")
    assert daemon.wait_for_log("expired: undelivered after", timeout=20), daemon.output()
    assert wait_until(lambda: get(f"{base}/readyz") == (200, "ok\n"))
    assert 1 == metric(get(f"{base}/metrics")[1], "rulesd_alerts_expired_total")
    assert 0 == daemon.terminate()


def test_readyz_says_stopping_while_the_outbox_is_drained(tmp_path: Path, server: FakeOpsGenie) -> None:
    """After SIGTERM nothing more is read, so no new alert can come: /readyz answers 503 saying
    the daemon is stopping while the grace drains the outbox (it answered 200 "ok"), and
    /healthz (the process is not stuck) 200 with the same body."""
    server.responder = lambda _r: Reply(503, {"Retry-After": "1"}, b"{}")
    ws, daemon, base = started_with(tmp_path, server)
    ws.append({"kind": "page", "id": 1})
    assert server.wait_for(lambda r: len(r) >= 1)
    assert (200, "ok\n") == get(f"{base}/readyz")  # one failed attempt is a blip
    daemon.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: get(f"{base}/readyz")[0] == 503, timeout=4)
    live, ready = get(f"{base}/healthz"), get(f"{base}/readyz")
    assert 200 == live[0] and live[1] == ready[1]
    assert "\nstopping: nothing more is read, what is queued is being delivered\n" in live[1]
    assert 0 == daemon.proc.wait(timeout=15)


def test_failed_heartbeats_are_logged_and_counted_never_fatal(tmp_path: Path, server: FakeOpsGenie) -> None:
    """A heartbeat ping that fails is a warning and a counter; alerts keep flowing."""
    server.responder = lambda r: Reply(500, body=b"{}") if r.method == "GET" else Reply()
    ws, daemon, base = started_with(tmp_path, server, heartbeat="rulesd")
    assert daemon.wait_for_log("heartbeat 'rulesd' not pinged")
    ws.append({"kind": "page", "id": 1})
    assert server.wait_for(lambda r: any(x.method == "POST" for x in r))
    text = get(f"{base}/metrics")[1]
    assert 1 <= metric(text, 'rulesd_heartbeats_total{result="failed"}')
    assert daemon.proc.poll() is None


def test_jira_service_management_gets_the_alerts_and_no_heartbeat(tmp_path: Path, server: FakeOpsGenie) -> None:
    """With alert_url on JSM's path, alerts are created there with `GenieKey`; a heartbeat
    configured beside it is warned about at start and never pinged (JSM has no heartbeat API)."""
    ws = Workspace(tmp_path, server.url)
    config = yaml.safe_load(ws.config.read_text())
    config["opsgenie"]["alert_url"] = f"{server.url}/jsm/ops/integration/v2/alerts"
    config["opsgenie"]["heartbeat"] = "rulesd"
    ws.config.write_text(yaml.safe_dump(config))
    daemon = ws.start()
    ws.append({"kind": "page", "id": 1}, {"kind": "page", "id": 2})
    assert server.wait_for(lambda r: len(r) >= 2)
    assert [("POST", "/jsm/ops/integration/v2/alerts")] * 2 == [(r.method, r.path) for r in server.requests]
    assert {f"GenieKey {API_KEY}"} == {r.headers["Authorization"] for r in server.requests}
    assert ["page-1", "page-2"] == [r.json()["alias"] for r in server.requests]
    stderr = daemon.stderr()
    assert "opsgenie.heartbeat: heartbeats are an OpsGenie API only" in stderr
    assert "heartbeat 'rulesd' is not pinged:" in stderr
    assert 0 == daemon.terminate()
    assert [] == [r for r in server.requests if r.method == "GET"]


def test_an_unknown_alert_endpoint_is_warned_about_at_start(tmp_path: Path, server: FakeOpsGenie) -> None:
    """An Alertmanager-style base URL: the daemon starts, and says at once that alerts will be refused."""
    ws = Workspace(tmp_path, server.url)
    config = yaml.safe_load(ws.config.read_text())
    config["opsgenie"]["alert_url"] = f"{server.url}/"
    ws.config.write_text(yaml.safe_dump(config))
    daemon = ws.start()
    warning = f"rulesd: warning: {ws.config}:"
    line = next((x for x in daemon.stderr().splitlines() if x.startswith(warning)), "")
    assert f"opsgenie.alert_url: '{server.url}/' is not a known alert endpoint: every alert would be refused" in line
    assert 0 == daemon.terminate()


def bulk_rules(prefix: str, count: int) -> str:
    """`count` rules, each with a template and a throttle, named PREFIX-N."""
    return "rules:\n" + "".join(
        f"  - name: {prefix}-{i}\n    match: {{kind: bulk, host: h{i}}}\n    throttle: 60\n"
        f"    alert: {{message: 'm {{host}}'}}\n"
        for i in range(count)
    )


def test_a_long_start_and_a_long_reload_ask_systemd_for_more_time(
    tmp_path: Path, server: FakeOpsGenie, notify: NotifySocket
) -> None:
    """While a large rule set loads, at start (before READY=1) and at a reload (between
    RELOADING=1 and READY=1), EXTEND_TIMEOUT_USEC= comes every EXTEND_EVERY seconds, so that
    TimeoutStartSec= does not kill a daemon that is making progress; none comes otherwise.
    (EXTEND_EVERY is 5 s; this daemon runs with 0.05 s so that a few thousand rules do.)"""
    ws = Workspace(tmp_path, server.url)
    (ws.rules / "bulk.yaml").write_text(bulk_rules("a", 5000))
    code = "import sys; from rulesd import cli, notify; notify.EXTEND_EVERY = 0.05; sys.exit(cli.main(sys.argv[1:]))"
    daemon = DaemonProcess(
        tmp_path, ["run", "--config", str(ws.config)], {"NOTIFY_SOCKET": notify.path}, launcher=("-c", code)
    )
    ws.processes.append(daemon)
    assert daemon.wait_for_log("rulesd started", timeout=60), daemon.output()
    (ws.rules / "bulk.yaml").write_text(bulk_rules("b", 5000))
    assert wait_until(lambda: "READY=1" in notify.states()[1:])  # the change is reloaded by itself
    assert 0 == daemon.terminate()
    fields = [f for _, m in notify.messages for f in m.split("\n") if not f.startswith(("STATUS=", "WATCHDOG="))]
    extend = f"EXTEND_TIMEOUT_USEC={int(EXTEND_BY * 1_000_000)}"
    assert set(fields) == {extend, "READY=1", "RELOADING=1", "STOPPING=1"} | {
        f for f in fields if f.startswith("MONOTONIC_USEC=")
    }
    marks = [f for f in fields if f != extend and not f.startswith("MONOTONIC_USEC=")]
    assert ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"] == marks
    ready, reloading, ready_again = (i for i, f in enumerate(fields) if f in ("READY=1", "RELOADING=1"))
    assert fields[:ready].count(extend) >= 2, fields  # the start
    assert fields[reloading:ready_again].count(extend) >= 2, fields  # the reload
    assert extend not in fields[ready:reloading] + fields[ready_again:], "an extension came outside a load"


def test_a_sighup_while_the_rules_load_at_start_is_a_reload_once_running(
    tmp_path: Path, server: FakeOpsGenie, notify: NotifySocket
) -> None:
    """A SIGHUP (systemctl reload, kill -HUP) that comes while the rules are being loaded at start,
    before the daemon's handlers, ended the process (status 129), which systemd counts as a clean
    exit and does not restart: no paging until someone noticed. Now it starts, then reloads."""
    ws = Workspace(tmp_path, server.url)
    code = (
        "import os, signal, sys; from rulesd import cli; load = cli.check_paths; "
        "cli.check_paths = lambda *a, **k: (os.kill(os.getpid(), signal.SIGHUP), load(*a, **k))[1]; "
        "sys.exit(cli.main(sys.argv[1:]))"
    )
    daemon = DaemonProcess(
        tmp_path, ["run", "--config", str(ws.config)], {"NOTIFY_SOCKET": notify.path}, launcher=("-c", code)
    )
    ws.processes.append(daemon)
    assert daemon.wait_for_log("rulesd started"), (daemon.proc.poll(), daemon.output())
    assert daemon.wait_for_log("reload ok: 1 rule, unchanged"), daemon.output()
    assert wait_until(lambda: ["READY=1", "RELOADING=1", "READY=1"] == notify.states())
    ws.append({"kind": "page", "id": 1})
    assert server.wait_for(lambda r: len(r) >= 1)
    assert 0 == daemon.terminate()


def test_a_rule_saved_while_the_rules_load_at_start_is_loaded_once_running(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """A rule file saved after the start read the rules but before the daemon watched them (a
    large rule set takes seconds to load, a deploy may write it then): the daemon ran the rules
    it had read, and the file watch, which only compares with the files as they are when it
    starts, never loaded the new one. Now the start reloads once running."""
    ws = Workspace(tmp_path, server.url)
    later = ws.rules / "later.yaml"
    code = (
        "import pathlib, sys; from rulesd import cli; load = cli.check_paths\n"
        "def saved(*a, **k):\n"
        "    result = load(*a, **k)\n"
        f"    pathlib.Path({str(later)!r}).write_text({LATER_RULE!r})\n"
        "    return result\n"
        "cli.check_paths = saved\n"
        "sys.exit(cli.main(sys.argv[1:]))"
    )
    daemon = DaemonProcess(tmp_path, ["run", "--config", str(ws.config)], None, launcher=("-c", code))
    ws.processes.append(daemon)
    assert daemon.wait_for_log("rulesd started: 1 rule(s) loaded"), daemon.output()
    assert daemon.wait_for_log("reload ok: 2 rules; added: 1 (later)", timeout=10), daemon.output()
    ws.append({"kind": "later", "id": 1})
    assert server.wait_for(lambda r: len(r) >= 1)
    assert ["later-1"] == [r.json()["alias"] for r in server.requests]
    assert 0 == daemon.terminate()


LATER_RULE = "name: later\nmatch: {kind: later}\nalert: {alias: 'later-{id}'}\n"


def test_a_rule_file_whose_name_is_not_utf8_is_no_fatal_error(
    tmp_path: Path, server: FakeOpsGenie, notify: NotifySocket
) -> None:
    """A file whose name is not UTF-8 (`bad\\xff.yaml`, written in a Latin-1 locale) put among
    the rule files: the next look at them (a SIGHUP, a saved rule, the 5 s check) hashed the
    names as UTF-8, which raised; the daemon stopped with a fatal error and status 1, and so did
    every restart while the file was there. Now it is a rule file like any other: here one that
    does not load, so the reload fails, the running rules are kept, and paging goes on."""
    ws = Workspace(tmp_path, server.url)
    daemon = ws.start(env={"NOTIFY_SOCKET": notify.path})
    assert wait_until(lambda: notify.states()[:1] == ["READY=1"])
    with open(os.path.join(os.fsencode(ws.rules), b"bad\xff.yaml"), "w") as fh:
        fh.write("name: x\nmatch: {kind: [}\n")
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.wait_for_log("reload failed"), daemon.output()

    def readies() -> list[str]:
        return [m for _, m in notify.messages if m.startswith("READY=1")]

    assert wait_until(lambda: len(readies()) >= 2 and "reload failed" in readies()[-1]), daemon.output()
    assert "bad\\udcff.yaml" in daemon.stderr()
    ws.append({"kind": "page", "id": 1})
    assert server.wait_for(lambda r: len(r) >= 1), daemon.output()
    assert 0 == daemon.terminate()
    assert "fatal error" not in daemon.stderr()
