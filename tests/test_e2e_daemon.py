"""End-to-end: the real `rulesd run` process, real files, real signals, and a real HTTP
server on loopback standing in for OpsGenie."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.daemon_process import API_KEY, DaemonProcess, Workspace, page, wait_until
from tests.fake_opsgenie import FakeOpsGenie, Received, Reply
from tests.opsgenie_schema import create_alert_validator
from tests.run_cli import rulesd_cli
from tests.test_e2e_sources import metric, positions

VALIDATOR = create_alert_validator()


def ids(server: FakeOpsGenie) -> list[int]:
    """The event ids of the alerts the server accepted, in arrival order; every payload validated."""
    out = []
    for request in server.requests:
        body = request.json()
        VALIDATOR.validate(body)
        assert f"GenieKey {API_KEY}" == request.headers["Authorization"]
        out.append(int(body["alias"].removeprefix("page-")))
    return out


def test_events_appended_are_alerted_once_each_in_order(workspace: Workspace, server: FakeOpsGenie) -> None:
    """Every matching event becomes one alert, delivered in order; SIGTERM exits 0."""
    daemon = workspace.start()
    workspace.append(*(page(i) for i in range(20)), {"kind": "noise"})
    assert server.wait_for(lambda r: len(r) >= 20)
    assert list(range(20)) == ids(server)
    assert 0 == daemon.terminate()
    assert list(range(20)) == ids(server)


def test_rotation_by_rename_in_the_middle_of_a_burst(workspace: Workspace, server: FakeOpsGenie) -> None:
    """logrotate's rename+create while events are written: each event alerts exactly once."""
    workspace.start()
    for i in range(0, 300, 10):
        workspace.append(*(page(j) for j in range(i, i + 10)))
        if i == 150:
            os.rename(workspace.events, str(workspace.events) + ".1")
            workspace.events.touch()
    assert server.wait_for(lambda r: len(r) >= 300, timeout=20)
    time.sleep(0.5)  # nothing more may arrive: a duplicate would show now
    assert list(range(300)) == sorted(ids(server))
    assert 300 == len(server.requests)


def test_a_glob_matching_the_rotated_name_reads_it_once_across_a_restart(tmp_path: Path, server: FakeOpsGenie) -> None:
    """`path: events.jsonl*` and logrotate's rename+create: events.jsonl.1 is the file already
    read; after a SIGTERM and a start, it is not read again from `start_at: beginning`."""
    workspace = Workspace(
        tmp_path, server.url, source={"type": "file", "path": "events.jsonl*", "start_at": "beginning"}
    )
    daemon = workspace.start()
    workspace.append(*(page(i) for i in range(3)))
    assert server.wait_for(lambda r: len(r) >= 3)
    os.rename(workspace.events, str(workspace.events) + ".1")
    workspace.append(page(3))
    assert server.wait_for(lambda r: len(r) >= 4)
    assert 0 == daemon.terminate()
    workspace.start()
    workspace.append(page(4))
    assert server.wait_for(lambda r: len(r) >= 5)
    time.sleep(0.5)  # nothing more may arrive: a duplicate would show now
    assert [0, 1, 2, 3, 4] == ids(server)


def logrotate_delaycompress(events: Path) -> None:
    """What logrotate does with `compress` and `delaycompress`: the compressed rotations move up
    (.2.gz to .3.gz), events.jsonl.1 becomes .2 and events.jsonl becomes .1, a new events.jsonl is
    made, and then .2 is compressed to .2.gz (and removed). Compressed at level 0: gzip then keeps
    the text as it is, so lines read from the .gz would be events, sent a second time."""
    rotated = [Path(f"{events}.{n}") for n in range(4)]
    for n in (2, 1):
        if Path(f"{rotated[n]}.gz").exists():
            os.rename(f"{rotated[n]}.gz", f"{rotated[n + 1]}.gz")
    if rotated[1].exists():
        os.rename(rotated[1], rotated[2])
    os.rename(events, rotated[1])
    events.touch()
    if rotated[2].exists():
        with open(rotated[2], "rb") as plain, gzip.open(f"{rotated[2]}.gz", "wb", compresslevel=0) as packed:
            shutil.copyfileobj(plain, packed)
        rotated[2].unlink()


def test_compressed_rotations_matched_by_the_glob_are_never_read(tmp_path: Path, server: FakeOpsGenie) -> None:
    """`path: events.jsonl*` with logrotate's `compress` and `delaycompress`, rotated while the
    daemon runs and while it is stopped: each event is sent once; the .gz files are skipped
    with a note each, never read (their lines would be sent again)."""
    workspace = Workspace(
        tmp_path, server.url, source={"type": "file", "path": "events.jsonl*", "start_at": "beginning"}
    )
    daemon = workspace.start()
    for rotation in range(2):
        workspace.append(*(page(i) for i in range(rotation * 3, rotation * 3 + 3)))
        assert server.wait_for(lambda r, n=rotation * 3 + 3: len(r) >= n)
        logrotate_delaycompress(workspace.events)
    workspace.append(*(page(i) for i in range(6, 9)))
    assert server.wait_for(lambda r: len(r) >= 9)
    assert wait_until(lambda: "events.jsonl.2.gz: gzip-compressed" in daemon.stderr())
    assert 0 == daemon.terminate()
    workspace.append(page(9))
    logrotate_delaycompress(workspace.events)  # while stopped: .1 is compressed, page 9 is in the new .1
    workspace.append(page(10))
    restarted = workspace.start()
    assert server.wait_for(lambda r: len(r) >= 11)
    time.sleep(1)  # nothing more may arrive: a duplicate would show now
    assert list(range(11)) == ids(server)
    for name in ("events.jsonl.2.gz", "events.jsonl.3.gz"):
        assert 1 == restarted.stderr().count(f"{name}: gzip-compressed"), restarted.stderr()
    assert "invalid" not in workspace.all_output().replace("0 invalid", "")
    assert "may have been lost" not in restarted.stderr()  # events.jsonl.1 had been read to its end


def test_copytruncate_does_not_crash(workspace: Workspace, server: FakeOpsGenie) -> None:
    """copytruncate: the file shrinks under us; we start over at 0 and keep alerting."""
    daemon = workspace.start()
    workspace.append(*(page(i) for i in range(5)))
    assert server.wait_for(lambda r: len(r) >= 5)
    shutil.copy(workspace.events, str(workspace.events) + ".1")
    with open(workspace.events, "r+b") as fh:
        fh.truncate(0)
    workspace.append(page(5), page(6))
    assert server.wait_for(lambda r: len(r) >= 7)
    assert [0, 1, 2, 3, 4, 5, 6] == ids(server)
    assert daemon.proc.poll() is None
    assert "truncat" in daemon.stderr()


def saved_offset(workspace: Workspace) -> int | None:
    """The offset saved for the workspace's event file (None: none saved)."""
    saved = positions(workspace).get(str(workspace.events))
    return None if saved is None else int(json.loads(saved)["offset"])


def test_a_truncation_with_nothing_new_is_saved_before_the_next_line(
    workspace: Workspace, server: FakeOpsGenie
) -> None:
    """copytruncate in a quiet moment moved the position to 0 with no line to evaluate, and
    positions were saved only with lines: killed before the next one, the daemon resumed at
    the old offset. The application then wrote its same start-up lines again (the file's first
    1,024 bytes, its fingerprint, alike) and a page: the file was taken for the one read before,
    read from the old offset on, and the page was never sent. The move is now saved at once."""
    truncated_quietly_then_killed(workspace, server, lambda: saved_offset(workspace))


def truncated_quietly_then_killed(
    ws: Workspace, server: FakeOpsGenie, offset: Callable[[], int | None], deliver_within: float = 10.0
) -> None:
    """Page 1 after start-up lines; the file truncated and, once `offset()` (the saved one) is
    0, the daemon killed; the same start-up lines and page 2 written: page 2 must come, within
    `deliver_within` seconds of the restart."""
    banner = [{"kind": "start", "step": i, "pad": "x" * 40} for i in range(20)]  # more than the fingerprint
    daemon = ws.start()
    ws.append(*banner, page(1))
    assert server.wait_for(lambda r: len(r) >= 1)
    with open(ws.events, "r+b") as fh:
        fh.truncate(0)
    assert daemon.wait_for_log("truncated"), daemon.output()
    # (Within 3 s: the idle sweep every 5 s may commit, and save the position, by chance.)
    wait_until(lambda: offset() == 0, timeout=3)
    daemon.kill()
    ws.append(*banner, page(2))  # as long as before: page 2 lies before the old offset
    ws.start()
    assert server.wait_for(lambda r: len(r) >= 2, timeout=deliver_within), ws.all_output()
    assert [1, 2] == ids(server)


def test_a_rotation_with_nothing_new_is_saved_so_a_restart_warns_of_no_loss(
    workspace: Workspace, server: FakeOpsGenie
) -> None:
    """Rotated by rename and create in a quiet moment, the rotated file compressed away (a new
    file; the old one removed) and let go of once read to its end: nothing was saved, so a
    restart warned that events written to it may have been lost, when every one was read. The
    move to the new file is now saved at once: no warning, and what is written next is paged."""
    daemon = workspace.start()
    workspace.append(page(1))
    assert server.wait_for(lambda r: len(r) >= 1)
    rotated = Path(str(workspace.events) + ".1")
    os.rename(workspace.events, rotated)
    workspace.events.touch()
    new_file = os.stat(workspace.events).st_ino
    rotated.unlink()  # as logrotate's compress does
    wait_until(lambda: json.loads(positions(workspace)[str(workspace.events)])["ino"] == new_file, timeout=3)
    # (page 1's delivery recorded first: killed between its answer and its record, it is sent
    # again after the restart, as documented, which is not what this test is about)
    wait_until(
        lambda: (
            not json.loads(rulesd_cli("outbox", "list", "--format", "json", "--config", str(workspace.config)).stdout)
        ),
        timeout=10,
    )
    daemon.kill()
    workspace.append(page(2))
    again = workspace.start()
    assert server.wait_for(lambda r: len(r) >= 2, timeout=10), workspace.all_output()
    assert [1, 2] == ids(server)
    assert "may have been lost" not in again.stderr()


def test_over_long_lines_alone_are_skipped_once_across_a_restart(tmp_path: Path, server: FakeOpsGenie) -> None:
    """Lines over `max_line_bytes` and nothing else: skipped, but the position past them was not
    saved, so every restart read, counted and warned about them again."""
    source = {"type": "file", "path": "events.jsonl", "start_at": "beginning", "max_line_bytes": 1024}
    ws = Workspace(tmp_path, server.url, source=source)
    daemon = ws.start()
    ws.append(b'{"pad": "' + b"x" * 4000 + b'"}\n')
    assert daemon.wait_for_log("skipped a line longer than"), daemon.output()
    wait_until(lambda: saved_offset(ws) == 4012, timeout=3)
    daemon.kill()
    ws.append(page(1))
    again = ws.start()
    assert server.wait_for(lambda r: len(r) >= 1, timeout=10), ws.all_output()
    assert "skipped a line longer than" not in again.stderr()


def test_restart_resumes_exactly_where_it_stopped(workspace: Workspace, server: FakeOpsGenie) -> None:
    """Events written while the daemon is down are read after the restart; none twice."""
    daemon = workspace.start()
    workspace.append(*(page(i) for i in range(10)))
    assert server.wait_for(lambda r: len(r) >= 10)
    assert 0 == daemon.terminate()
    workspace.append(*(page(i) for i in range(10, 25)))
    workspace.start()
    assert server.wait_for(lambda r: len(r) >= 25)
    time.sleep(0.5)
    assert list(range(25)) == ids(server)


def test_sigkill_at_random_moments_loses_no_alert(workspace: Workspace, server: FakeOpsGenie) -> None:
    """Killed with SIGKILL again and again while events flow: every event is alerted at least once,
    and anything sent twice is an exact repeat (same alias, so OpsGenie deduplicates it)."""
    rng = random.Random(7)
    written = 0
    for _ in range(6):
        daemon = workspace.start()
        for _ in range(rng.randint(3, 8)):
            workspace.append(*(page(i) for i in range(written, written + 25)))
            written += 25
            time.sleep(rng.uniform(0.0, 0.05))
        time.sleep(rng.uniform(0.0, 0.3))
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(10)
    workspace.start()
    # A cheap predicate: it runs on every request the server receives (validation comes after).
    assert server.wait_for(lambda r: len({x.json()["alias"] for x in r}) >= written, timeout=60)
    delivered = ids(server)
    assert set(range(written)) == set(delivered)
    bodies: dict[int, bytes] = {}
    for request in server.requests:
        alias = request.json()["alias"]
        assert bodies.setdefault(alias, request.body) == request.body


def test_outage_then_recovery_delivers_everything_in_order(workspace: Workspace, server: FakeOpsGenie) -> None:
    """OpsGenie answers 500 for a while; afterwards every alert arrives, in order. The outage is
    logged once as a warning, its repeats at debug (a warning each flooded the journal)."""
    failures = {"left": 3}

    def flaky(_r: Received) -> Reply:
        if failures["left"] > 0:
            failures["left"] -= 1
            return Reply(500, body=b'{"message":"Internal error"}')
        return Reply()

    server.responder = flaky
    daemon = workspace.start()
    workspace.append(*(page(i) for i in range(5)))
    assert server.wait_for(lambda r: len(r) >= 3 + 5, timeout=30)
    accepted = ids(server)[3:]
    assert [0, 1, 2, 3, 4] == accepted
    # The delivery that ends the outage is logged at info, the ones after it only at debug.
    assert daemon.wait_for_log("rulesd: info: alert 1 delivered after 3 failed attempts: page 0")
    assert "rulesd: debug: alert 2 delivered: page 1" in daemon.stderr()
    assert 1 == daemon.stderr().count("rulesd: warning: alert 1 not delivered, will retry: HTTP 500")
    assert 2 == daemon.stderr().count("rulesd: debug: alert 1 still not delivered, will retry: HTTP 500")


def test_429_retry_after_is_respected(workspace: Workspace, server: FakeOpsGenie) -> None:
    """A 429 with Retry-After: 2 holds the next attempt back for two seconds."""
    times: list[float] = []

    def limited(_r: Received) -> Reply:
        times.append(time.monotonic())
        if len(times) == 1:
            return Reply(429, {"Retry-After": "2"}, b'{"message":"rate limited"}')
        return Reply()

    server.responder = limited
    workspace.start()
    workspace.append(page(0))
    assert server.wait_for(lambda r: len(r) >= 2, timeout=15)
    assert times[1] - times[0] >= 1.9


def test_422_is_dead_lettered_and_later_alerts_flow(workspace: Workspace, server: FakeOpsGenie) -> None:
    """An alert OpsGenie refuses as invalid is dead-lettered; the ones after it are delivered. The
    log line says why and what the operator can do about it."""
    server.responder = lambda r: (
        Reply(422, body=b'{"message":"Request body is not processable"}')
        if (r.json()["alias"] == "page-1")
        else Reply()
    )
    daemon = workspace.start()
    workspace.append(page(0), page(1), page(2))
    assert server.wait_for(lambda r: len(r) >= 3)
    assert [0, 1, 2] == ids(server)
    assert daemon.wait_for_log(
        "rulesd: error: alert 2 dead-lettered (dead): page 1: HTTP 422: alert rejected: "
        '{"message":"Request body is not processable"}; see it with \'rulesd outbox show 2\', and once the cause '
        "is fixed 'rulesd outbox retry-dead' sends it again"
    ), daemon.stderr()
    listing = rulesd_cli("outbox", "list", "--config", str(workspace.config))
    (dead,) = [line for line in listing.stdout.splitlines() if "  dead  " in line]
    alert_id = int(dead.split()[0])
    assert f"{alert_id}  dead  " in dead and "attempts=1  page-on-demand" in dead, listing.stdout
    assert "    message: page 1\n" in listing.stdout
    assert '    last error: HTTP 422: alert rejected: {"message":"Request body is not processable"}' in listing.stdout
    assert listing.stdout.endswith("0 pending, 0 paused, 1 dead\n")
    (row,) = json.loads(rulesd_cli("outbox", "list", "--format", "json", "--config", str(workspace.config)).stdout)
    assert {"id": alert_id, "state": "dead", "attempts": 1, "lead_rule": "page-on-demand", "message": "page 1"} == {
        k: row[k] for k in ("id", "state", "attempts", "lead_rule", "message")
    }
    assert row["event_source"].startswith(f"{workspace.events} (offset ")
    assert "page-1" == row["payload"]["alias"]
    shown = rulesd_cli("outbox", "show", str(alert_id), "--config", str(workspace.config))
    payload_text, attempts_text = shown.stdout.split("\nattempts: ")
    assert row["payload"] == json.loads(payload_text)
    assert "HTTP 422: alert rejected" in attempts_text and "  dead  " in attempts_text


def test_a_captive_portals_200_is_retried_and_said_once_with_what_answered(
    tmp_path: Path, server: FakeOpsGenie
) -> None:
    """Something on the network path (a captive portal, a misconfigured proxy) answers 200 with a
    web page in OpsGenie's place: the alert did not reach OpsGenie, so it is retried, and
    delivered once the portal is gone, each alert once. The operator is told once, with what
    answered (its Content-Type and how the page begins), the metric counts the answers and
    `rulesd outbox list` shows why the alert waits. The error named neither, and no metric told
    these answers from OpsGenie's own failures."""
    portal = (
        b"<!DOCTYPE html>\n<html><head><title>Guest Wi-Fi - Sign in</title></head><body>Accept the terms</body></html>"
    )
    answered: list[int] = []  # one per answer the portal gave

    def responder(_r: Received) -> Reply:
        if portal_up.is_set():
            answered.append(1)
            return Reply(200, {"Content-Type": "text/html; charset=utf-8"}, portal)
        return Reply()

    portal_up = threading.Event()
    portal_up.set()
    server.responder = responder
    workspace = Workspace(tmp_path, server.url, metrics={"listen": "127.0.0.1:0"})
    daemon = workspace.start()
    workspace.append(page(0), page(1))
    said = (
        "HTTP 200 not from the Alert API: a web page (text/html; charset=utf-8) instead of OpsGenie's JSON, so a "
        "proxy or captive portal answered and the alert did not reach OpsGenie (it is retried); check the network "
        "path to opsgenie.alert_url (a proxy, a firewall, DNS); the page begins: <!DOCTYPE html> <html><head>"
        "<title>Guest Wi-Fi - Sign in</title></head><body>Accept the terms</body></html>"
    )
    assert server.wait_for(lambda r: len(r) >= 2)

    def listing() -> str:
        return rulesd_cli("outbox", "list", "--config", str(workspace.config)).stdout

    assert wait_until(lambda: f"    last error: {said}\n" in listing())  # while the portal answers
    assert listing().endswith("2 pending, 0 paused, 0 dead\n")
    assert 2 <= metric(daemon.metrics_url(), "rulesd_answers_not_from_api_total") <= len(answered)
    portal_up.clear()
    assert server.wait_for(lambda r: len(r) >= len(answered) + 2, timeout=30)
    assert [0] * len(answered) + [0, 1] == ids(server)  # each delivered once, in order, once the portal was gone
    assert daemon.wait_for_log(f"alert 1 delivered after {len(answered)} failed attempts: page 0")
    assert len(answered) == metric(daemon.metrics_url(), "rulesd_answers_not_from_api_total")
    assert 0 == daemon.terminate()
    warnings = [line for line in daemon.stderr().splitlines() if line.startswith("rulesd: warning: alert")]
    assert [f"rulesd: warning: alert 1 not delivered, will retry: {said}; attempt 1 failed"] == [
        w.partition(", retrying in")[0] for w in warnings
    ]
    repeats = f"rulesd: debug: alert 1 still not delivered, will retry: {said}; attempt "
    assert len(answered) - 1 == daemon.stderr().count(repeats)


def test_401_pauses_without_dead_lettering_and_a_reload_resumes(workspace: Workspace, server: FakeOpsGenie) -> None:
    """A refused key pauses sending; nothing is dropped; fixing the key and SIGHUP delivers."""
    server.responder = lambda r: (
        Reply()
        if r.headers["Authorization"] == "GenieKey good-key"
        else Reply(401, body=b'{"message":"Could not authenticate"}')
    )
    workspace.key_file.write_text(API_KEY)
    daemon = workspace.start()
    workspace.append(page(0), page(1))
    assert server.wait_for(lambda r: len(r) >= 1)
    assert daemon.wait_for_log("paused")
    # Another process sees the pause: both alerts are "paused", not just "pending".
    assert wait_until(
        lambda: "0 pending, 2 paused, 0 dead" in rulesd_cli("outbox", "list", "--config", str(workspace.config)).stdout
    )
    listing = rulesd_cli("outbox", "list", "--config", str(workspace.config), "--format", "json")
    rows = json.loads(listing.stdout)
    keys = ["id", "state", "created", "attempts", "lead_rule", "message", "event_source", "last_error", "payload"]
    assert [keys, keys] == [list(row) for row in rows]
    assert [("paused", 0, "page 0"), ("paused", 0, "page 1")] == [
        (r["state"], r["attempts"], r["message"]) for r in rows
    ]
    assert "HTTP 401: OpsGenie rejected the API key" in rows[0]["last_error"]
    shown = rulesd_cli("outbox", "--config", str(workspace.config), "show", str(rows[0]["id"]), "--format", "json")
    detail = json.loads(shown.stdout)
    assert rows[0]["payload"] == detail["payload"]
    assert "paused" == detail["failed_attempts"][0]["result"]
    workspace.key_file.write_text("good-key\n")
    daemon.proc.send_signal(signal.SIGHUP)
    assert server.wait_for(lambda r: sum(x.headers["Authorization"] == "GenieKey good-key" for x in r) >= 2)
    good = [x.json()["alias"] for x in server.requests if x.headers["Authorization"] == "GenieKey good-key"]
    assert ["page-0", "page-1"] == good
    assert "good-key" not in workspace.all_output()


def refuse_all_but(key: str) -> Callable[[Received], Reply]:
    """A responder that accepts requests with `key` only, and answers others as OpsGenie does a wrong key."""
    return lambda r: (
        Reply()
        if r.headers["Authorization"] == f"GenieKey {key}"
        else Reply(401, body=b'{"message":"Could not authenticate"}')
    )


def replace_key(workspace: Workspace, key: str) -> None:
    """Install a new key as a secrets manager does: a new file renamed over the old one."""
    new = workspace.key_file.with_suffix(".new")
    new.write_text(key + "\n")
    new.chmod(0o600)
    new.replace(workspace.key_file)


def test_a_key_rotated_in_its_file_ends_a_pause_without_a_reload(workspace: Workspace, server: FakeOpsGenie) -> None:
    """OpsGenie refuses the key and sending pauses; a new key written to opsgenie.api_key_file is
    read at once and delivers what waited, in order, with no SIGHUP (it was read only at a reload,
    so the pause went on however often the file was fixed)."""
    server.responder = refuse_all_but("rotated-key")
    daemon = workspace.start()
    workspace.append(page(0), page(1))
    assert daemon.wait_for_log("sending paused, nothing dropped: fix the API key")
    replace_key(workspace, "rotated-key")
    # Well within the paused sender's own retry (60 s).
    assert server.wait_for(lambda r: sum(x.headers["Authorization"] == "GenieKey rotated-key" for x in r) >= 2)
    good = [x.json()["alias"] for x in server.requests if x.headers["Authorization"] == "GenieKey rotated-key"]
    assert ["page-0", "page-1"] == good
    assert daemon.wait_for_log("rulesd: info: sending resumed")
    assert "reload ok" not in daemon.stderr()
    assert "rotated-key" not in workspace.all_output()


def test_a_key_rewritten_in_place_is_used_by_the_next_request(workspace: Workspace, server: FakeOpsGenie) -> None:
    """A key file rewritten in place (same file, new contents) is read again for the next alert."""
    daemon = workspace.start()
    workspace.append(page(0))
    assert server.wait_for(lambda r: len(r) >= 1)
    workspace.key_file.write_text("second-key\n")
    workspace.append(page(1))
    assert server.wait_for(lambda r: len(r) >= 2)
    assert [f"GenieKey {API_KEY}", "GenieKey second-key"] == [r.headers["Authorization"] for r in server.requests]
    assert "second-key" not in daemon.output()


def only_the_whole_key_was_sent(workspace: Workspace, server: FakeOpsGenie, daemon: DaemonProcess) -> None:
    """The alert sent while the key file was written, and one after it, both carried the whole
    key `second-key`; sending never paused and the file was never read empty."""
    assert server.wait_for(lambda r: len(r) >= 1)
    workspace.append(page(1))
    assert server.wait_for(lambda r: len(r) >= 2)
    assert ["GenieKey second-key"] * 2 == [r.headers["Authorization"] for r in server.requests]
    assert 0 == daemon.terminate()
    assert "paused" not in daemon.stderr() and "keeping the previous API key" not in daemon.stderr()


def test_a_key_rewritten_in_two_writes_is_used_only_whole(workspace: Workspace, server: FakeOpsGenie) -> None:
    """The key file truncated and written in two writes 0.2 s apart (a shell's `echo`, an editor,
    cut short) while an alert goes out: the request waits for the file to stand still and
    carries the whole new key. It carried the key cut short, OpsGenie refused it, and sending
    paused (or the empty file was read: an error logged)."""
    server.responder = refuse_all_but("second-key")
    daemon = workspace.start()
    with open(workspace.key_file, "wb") as fh:
        fh.write(b"second-")
        fh.flush()
        workspace.append(page(0))
        time.sleep(0.2)
        fh.write(b"key\n")
    only_the_whole_key_was_sent(workspace, server, daemon)


def test_a_reload_sent_while_the_key_is_written_uses_it_only_whole(workspace: Workspace, server: FakeOpsGenie) -> None:
    """A deploy writes the key file and reloads (`systemctl reload`) while the write is still
    going on: the reload reads the key file by the rule a change follows, once it stands still.
    The reload read it at once, cut short: the alert went out with `GenieKey second-`, OpsGenie
    refused it and sending paused until the rest of the file was read."""
    server.responder = refuse_all_but("second-key")
    daemon = workspace.start()
    with open(workspace.key_file, "wb") as fh:
        fh.write(b"second-")
        fh.flush()
        daemon.proc.send_signal(signal.SIGHUP)
        time.sleep(0.1)
        workspace.append(page(0))
        time.sleep(0.1)
        fh.write(b"key\n")
    only_the_whole_key_was_sent(workspace, server, daemon)


def test_a_refused_key_is_logged_once_however_often_it_is_retried(workspace: Workspace, server: FakeOpsGenie) -> None:
    """Each retry of a refused key (here made at once by SIGHUP) is refused again: one error
    line says so and what to do, the repeats are at debug (an error a minute, all day, before)."""
    server.responder = refuse_all_but("never-this")
    daemon = workspace.start()
    workspace.append(page(0))
    assert daemon.wait_for_log("sending paused")
    for tries in (2, 3):
        daemon.proc.send_signal(signal.SIGHUP)
        assert server.wait_for(lambda r, n=tries: len(r) >= n)
    assert daemon.wait_for_log("rulesd: debug: OpsGenie still refuses the request (HTTP 401")
    assert 1 == daemon.stderr().count("rulesd: error: OpsGenie refused the request")


def test_redirect_is_not_followed_and_the_key_stays_home(workspace: Workspace, server: FakeOpsGenie) -> None:
    """A 302 to another host is never followed: that host never sees a request, let alone the key."""
    with FakeOpsGenie() as elsewhere:
        server.responder = lambda _r: Reply(302, {"Location": f"{elsewhere.url}/v2/alerts"}, b"")
        daemon = workspace.start()
        workspace.append(page(0))
        assert server.wait_for(lambda r: len(r) >= 1)
        assert daemon.wait_for_log("paused")
        time.sleep(0.5)
        assert [] == elsewhere.requests


def test_malformed_events_are_survived(workspace: Workspace, server: FakeOpsGenie) -> None:
    """Non-JSON, invalid UTF-8, a 2 MiB line, 10,000-deep nesting and a JSON array are skipped;
    the valid events around them still alert (a CRLF line too), each naming its line's offset."""
    daemon = workspace.start()
    deep = b"[" * 10_000 + b"]" * 10_000
    lines = [
        page(0),
        b"this is not json\n",
        page(1),
        b'{"kind": "page", "id": 9, "x": "\xff\xfe"}\n',
        page(2),
        b'{"kind": "page", "pad": "' + b"a" * (2 * 1024 * 1024) + b'"}\n',
        page(3),
        b'{"a": ' + deep + b"}\n",
        page(4),
        b'[{"kind": "page", "id": 99}]\n',
        page(5),
        b"\n",
        b'{"kind": "page", "id": 6}\r\n',
        page(7),
    ]
    workspace.append(*lines)
    assert server.wait_for(lambda r: len(r) >= 8)
    time.sleep(0.3)
    assert [0, 1, 2, 3, 4, 5, 6, 7] == ids(server)
    assert daemon.proc.poll() is None
    offsets, offset = [], 0
    for line in lines:
        data = line if isinstance(line, bytes) else json.dumps(line).encode() + b"\n"
        if isinstance(line, dict) or data.startswith(b'{"kind": "page", "id": 6}'):
            offsets.append(f"{workspace.events} (offset {offset})")
        offset += len(data)
    assert offsets == [r.json()["details"]["Event Source"] for r in server.requests]


def test_a_file_written_with_a_byte_order_mark_is_read_from_its_first_line(
    workspace: Workspace, server: FakeOpsGenie
) -> None:
    """Windows tools start a file with UTF-8's byte order mark (and a file concatenated from such
    files has one within): each line after one is an event, from its offset; none is invalid."""
    bom = b"\xef\xbb\xbf"
    workspace.append(bom + json.dumps(page(0)).encode() + b"\n", page(1), bom + json.dumps(page(2)).encode() + b"\r\n")
    daemon = workspace.start()
    assert server.wait_for(lambda r: len(r) >= 3)
    assert [0, 1, 2] == ids(server)
    assert 0 == daemon.terminate()
    assert "stopped: 3 event(s), 0 invalid" in daemon.stderr()
    assert f"{workspace.events} (offset 0)" == server.requests[0].json()["details"]["Event Source"]


def test_a_line_with_an_escaped_lone_surrogate_is_paged(workspace: Workspace, server: FakeOpsGenie) -> None:
    """Python's json.dumps writes undecodable input (a user name of raw bytes) as a lone surrogate
    escape, which orjson refuses: the line is paged all the same, with U+FFFD in its place, and
    the page is valid JSON for OpsGenie."""
    workspace.append(page(0), b'{"kind": "page", "id": 1, "user": "r\\udcffot"}\n', page(2))
    daemon = workspace.start()
    assert server.wait_for(lambda r: len(r) >= 3)
    assert [0, 1, 2] == ids(server)
    assert 0 == daemon.terminate()
    assert "stopped: 3 event(s), 0 invalid" in daemon.stderr()


def test_invalid_rule_edit_keeps_the_old_rules(workspace: Workspace, server: FakeOpsGenie) -> None:
    """A broken rule file is reported with path:line:col and the running rules stay."""
    daemon = workspace.start()
    (workspace.rules / "rules.yaml").write_text("rules:\n  - name: page-on-demand\n    match: {kind: [page}\n")
    # the outcome's line comes first, then one line per problem
    assert daemon.wait_for_log("reload failed, previous rules kept: "), daemon.stderr()
    assert daemon.wait_for_log("rules.yaml:3:"), daemon.stderr()
    workspace.append(page(0))
    assert server.wait_for(lambda r: len(r) >= 1)
    assert [0] == ids(server)


def test_valid_rule_edit_applies_within_a_second(workspace: Workspace, server: FakeOpsGenie) -> None:
    """After saving a new rule (by rename, as editors do), events match it within a second."""
    daemon = workspace.start()
    new_rules = workspace.root / "new.yaml.tmp"
    new_rules.write_text(
        "rules:\n  - name: page-on-demand\n    match: {kind: urgent}\n"
        "    alert: {message: 'page {id}', alias: 'page-{id}'}\n"
    )
    os.rename(new_rules, workspace.rules / "rules.yaml")
    saved = time.monotonic()
    assert daemon.wait_for_log("reload ok: 1 rule;", timeout=5)
    assert time.monotonic() - saved < 1.0
    workspace.append({"kind": "page", "id": 0}, {"kind": "urgent", "id": 1})
    assert server.wait_for(lambda r: len(r) >= 1)
    time.sleep(0.3)
    assert [1] == ids(server)


def test_dry_run_prints_payloads_and_needs_no_key(tmp_path: Path, server: FakeOpsGenie) -> None:
    """--dry-run prints one JSON payload per line on stdout and sends nothing."""
    ws = Workspace(tmp_path, server.url)
    ws.key_file.unlink()
    daemon = ws.start("--dry-run")
    ws.append(page(0), page(1))
    assert wait_until(lambda: daemon.stdout_path.read_text().count("\n") >= 2)
    assert 0 == daemon.terminate()
    lines = [json.loads(x) for x in daemon.stdout_path.read_text().splitlines()]
    assert ["page-0", "page-1"] == [p["alias"] for p in lines]
    for payload in lines:
        VALIDATOR.validate(payload)
    assert [] == server.requests


def test_outbox_retry_dead_requeues_into_the_running_daemon(workspace: Workspace, server: FakeOpsGenie) -> None:
    """`rulesd outbox retry-dead` requeues a dead-lettered alert; the running sender delivers it."""
    rejected = {"page-1"}
    server.responder = lambda r: Reply(422, body=b'{"message":"bad"}') if r.json()["alias"] in rejected else Reply()
    workspace.start()
    workspace.append(page(0), page(1))
    assert server.wait_for(lambda r: len(r) >= 2)
    rejected.clear()
    result = rulesd_cli("outbox", "retry-dead", "--config", str(workspace.config))
    assert "requeued 1 dead-lettered alert(s)" in result.stdout, result.stdout + result.stderr
    assert server.wait_for(lambda r: len(r) >= 3, timeout=15)
    assert [0, 1, 1] == ids(server)
    listing = rulesd_cli("outbox", "list", "--config", str(workspace.config))
    assert "0 pending, 0 paused, 0 dead" in listing.stdout


def test_configmap_symlink_swap_reloads(workspace: Workspace, server: FakeOpsGenie) -> None:
    """A Kubernetes ConfigMap update (the `..data` symlink swapped atomically) is picked up."""
    rules = workspace.rules
    (rules / "rules.yaml").unlink()
    old = rules / "..2026_01_01"
    old.mkdir()
    (old / "rules.yaml").write_text("name: page-on-demand\nmatch: {kind: page}\nalert: {alias: 'page-{id}'}\n")
    (rules / "..data").symlink_to(old.name)
    (rules / "rules.yaml").symlink_to("..data/rules.yaml")
    daemon = workspace.start()
    new = rules / "..2026_01_02"
    new.mkdir()
    (new / "rules.yaml").write_text("name: page-on-demand\nmatch: {kind: urgent}\nalert: {alias: 'page-{id}'}\n")
    (rules / "..data_tmp").symlink_to(new.name)
    os.rename(rules / "..data_tmp", rules / "..data")
    assert daemon.wait_for_log("reload ok: 1 rule;", timeout=5)
    workspace.append({"kind": "page", "id": 0}, {"kind": "urgent", "id": 1})
    assert server.wait_for(lambda r: len(r) >= 1)
    time.sleep(0.3)
    assert [1] == ids(server)
    assert "reload ok: 1 rule; changed: 1 (page-on-demand)" in daemon.stderr()


def test_threshold_counts_survive_a_restart(workspace: Workspace, server: FakeOpsGenie) -> None:
    """Window state is saved with the batch that changed it: two matches before a SIGKILL and
    one after make the threshold of three."""
    (workspace.rules / "burst.yaml").write_text(
        "name: burst\nmatch: {kind: error}\nthreshold: {count: 3, window: 1h, group_by: [host]}\n"
        "alert: {alias: 'burst-{host}'}\n"
    )
    daemon = workspace.start()
    workspace.append({"kind": "error", "host": "a"}, {"kind": "error", "host": "a"}, page(0))
    assert server.wait_for(lambda r: len(r) >= 1)  # the page after them: both were committed
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    workspace.start()
    workspace.append({"kind": "error", "host": "a"})
    assert server.wait_for(lambda r: any(x.json()["alias"] == "burst-a" for x in r))
    time.sleep(0.3)
    aliases = [x.json()["alias"] for x in server.requests]
    # page-0 may arrive twice (killed between its delivery and its removal from the outbox).
    assert ["burst-a"] == [a for a in aliases if a != "page-0"]


def test_a_regex_that_backtracks_forever_in_re_costs_linear_time(workspace: Workspace, server: FakeOpsGenie) -> None:
    """`^(a+)+$` needs time doubling with every `a` in a backtracking engine (a 25-character
    line took seconds, 40 would take days); here `check` accepts it and the daemon scans long
    such lines in linear time and goes on reading: the next event pages at once."""
    (workspace.rules / "redos.yaml").write_text(
        'rules:\n  - {name: redos, match: {message: {regex: "^(a+)+$"}}, alert: {alias: "redos-{n}"}}\n'
    )
    check = rulesd_cli("check", str(workspace.rules))
    assert 0 == check.returncode, check.stdout + check.stderr
    workspace.start()
    workspace.append(
        {"message": "a" * 40 + "!", "n": 1},
        {"message": "a" * 200_000 + "!", "n": 2},
        page(1),
        {"message": "a" * 50_000, "n": 3},
    )
    assert server.wait_for(lambda r: len(r) >= 2, timeout=15)
    assert ["page-1", "redos-3"] == [r.json()["alias"] for r in server.requests]
