"""The state directory: one daemon per directory (an advisory lock with the holder's pid), the
read-only commands beside a running daemon, private file modes whatever the umask, and
start-up errors that name the file and say what to do."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from rulesd.state.lock import LOCK_FILE, StateDirectoryBusy, lock_state_dir
from tests.daemon_process import PAGE_RULE, Workspace, aliases, http_get, page, stdin_config, wait_until
from tests.fake_opsgenie import FakeOpsGenie, Reply
from tests.run_cli import rulesd_cli
from tests.test_e2e_systemd import NotifySocket


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run the body (and the processes it starts) under `mask`, as a shell outside systemd would."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_a_second_daemon_on_the_same_state_directory_exits_2_naming_the_holder(
    workspace: Workspace, server: FakeOpsGenie
) -> None:
    """The second `rulesd run` stops at once with the directory and the running daemon's pid;
    the first keeps running alone, so every alert is sent once."""
    first = workspace.start()
    started = time.monotonic()
    second = rulesd_cli("run", "--config", str(workspace.config), timeout=20)
    assert 2 == second.returncode, second.stderr
    assert time.monotonic() - started < 10
    state_dir = str(workspace.root / "state")
    assert f"state directory {state_dir} is in use by another rulesd (pid {first.proc.pid})" in second.stderr
    workspace.append(*(page(i) for i in range(5)))
    assert server.wait_for(lambda r: len(r) >= 5)
    assert 0 == first.terminate()
    assert [f"page-{i}" for i in range(5)] == aliases(server)
    # The lock went with the process: the next daemon starts.
    workspace.start()


def test_read_only_commands_work_beside_a_running_daemon(workspace: Workspace, server: FakeOpsGenie) -> None:
    """`rulesd outbox list|show|retry-dead` and `rulesd check --config` take no lock."""
    server.responder = lambda _r: Reply(status=400, body=b"{}")
    daemon = workspace.start()
    workspace.append(page(1))
    assert daemon.wait_for_log("dead-lettered")
    # From here OpsGenie takes it: the requeued alert is then delivered (or still queued) by the
    # time of the second retry-dead, never dead-lettered again by a refusal racing the command.
    server.responder = lambda _r: Reply()
    config = str(workspace.config)
    listed = rulesd_cli("outbox", "list", "--config", config)
    assert 0 == listed.returncode, listed.stderr
    assert "page 1" in listed.stdout
    shown = rulesd_cli("outbox", "show", "1", "--config", config)
    assert 0 == shown.returncode, shown.stderr
    checked = rulesd_cli("check", "--config", config)
    assert 0 == checked.returncode, checked.stdout + checked.stderr
    requeued = rulesd_cli("outbox", "retry-dead", "--config", config, "--format", "json")
    assert 0 == requeued.returncode, requeued.stderr
    assert {"requeued": 1} == json.loads(requeued.stdout)  # a script reads how many
    again = rulesd_cli("outbox", "retry-dead", "--config", config)
    assert "requeued 0 dead-lettered alert(s)\n" == again.stdout
    assert daemon.proc.poll() is None


@pytest.mark.parametrize("tables", ["", "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"])
def test_the_operator_commands_never_make_the_state_database(tmp_path: Path, tables: str) -> None:
    """A state database the daemon has not made yet (0 bytes, or only some tables: it is
    starting) is read as holding nothing: `outbox list`, `outbox show`, `outbox retry-dead` and
    `state` leave it as it was, where `outbox` wrote the daemon's tables into it and made it 0600."""
    config = stdin_config(tmp_path, PAGE_RULE)
    (tmp_path / "state").mkdir()
    path = tmp_path / "state" / "state.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(tables)
    conn.close()
    path.chmod(0o644)
    before = path.read_bytes()
    expected = {
        ("outbox", "list"): (0, f"no state database at {path}: nothing queued\n"),
        ("outbox", "list", "--format", "json"): (0, "[]\n"),
        ("outbox", "show", "1"): (1, ""),
        ("outbox", "retry-dead"): (0, "requeued 0 dead-lettered alert(s)\n"),
        ("state",): (0, f"no engine state saved in {path} yet\n"),
    }
    for command, (code, out) in expected.items():
        result = rulesd_cli(*command, "--config", str(config))
        assert (before, 0o644) == (path.read_bytes(), stat.S_IMODE(path.stat().st_mode)), command
        assert ["state.sqlite"] == sorted(os.listdir(tmp_path / "state")), command
        assert code == result.returncode, (command, result.stderr)
        assert result.stdout.startswith(out), (command, result.stdout)


def test_a_state_directory_the_user_may_not_search_is_an_error_not_an_empty_outbox(tmp_path: Path) -> None:
    """An operator who is not the daemon's user runs `rulesd outbox` or `rulesd state` on its
    0700 state directory: each says it cannot read the database (exit 1), where they said
    'nothing queued', [] and 'requeued 0' (exit 0) while an alert waited."""
    import tempfile

    from rulesd.state import SqliteState

    # A directory anyone may search, so that only the state directory inside it is closed.
    with tempfile.TemporaryDirectory(dir="/tmp") as shared:
        root = Path(shared)
        root.chmod(0o755)
        state = root / "state"
        state.mkdir(mode=0o700)
        SqliteState(str(state / "state.sqlite")).commit(positions={}, payloads=[{"message": "m"}], now=time.time())
        config = root / "rulesd.yaml"
        config.write_text("state_dir: state\nrules: []\n")
        config.chmod(0o644)
        state.chmod(0o000)  # closed to its owner too; root, who may search it anyway, reads as nobody
        as_another_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        try:
            for command in (
                ["outbox", "list"],
                ["outbox", "list", "--format", "json"],
                ["outbox", "retry-dead"],
                ["state"],
            ):
                result = subprocess.run(
                    [*as_another_user, sys.executable, "-m", "rulesd", *command, "--config", str(config)],
                    capture_output=True,
                    text=True,
                    cwd=root,
                    timeout=60,
                    check=False,
                )
                assert (1, "") == (result.returncode, result.stdout), result.stderr
                assert str(state / "state.sqlite") in result.stderr
                assert "cannot read the state database: Permission denied; run this as the user rulesd" in result.stderr
        finally:
            state.chmod(0o700)


# What a log line can hold to take over a terminal: set its title (OSC), clear it (CSI, also as the
# one C1 character U+009B) and, with a line break, start a line of its own.
HOSTILE = "\x1b]0;owned\x07\x1b[2J\x9b2J\nline 9: P1 [fake]"
ESCAPED = "\\u001b]0;owned\\u0007\\u001b[2J\\u009b2J"


def test_text_outputs_escape_the_control_characters_of_events(workspace: Workspace, server: FakeOpsGenie) -> None:
    """`outbox list`, `outbox show` and `state` print what events and OpsGenie's answers hold
    with every control character escaped, and each field on its own line: a log line cannot
    move the cursor, retitle or clear the operator's terminal, or forge a line of the output."""
    server.responder = lambda _r: Reply(status=422, body=HOSTILE.encode())
    (workspace.rules / "count.yaml").write_text(
        "name: count\nmatch: {kind: page}\nthreshold: {count: 5, window: 1h, group_by: [id]}\n"
    )
    daemon = workspace.start()
    workspace.append({"kind": "page", "id": HOSTILE})
    assert daemon.wait_for_log("dead-lettered")
    config = str(workspace.config)
    listed = rulesd_cli("outbox", "list", "--config", config)
    shown = rulesd_cli("outbox", "show", "1", "--config", config)
    state = rulesd_cli("state", "--config", config)
    for result in (listed, shown, state):
        assert 0 == result.returncode, result.stderr
        assert not set(result.stdout) & {"\x1b", "\x07", "\x9b"}, result.stdout
        assert ESCAPED in result.stdout
    assert f"    message: page {ESCAPED} line 9: P1 [fake]" in listed.stdout.splitlines()  # white space folded
    assert 4 == len(listed.stdout.splitlines()) - 1  # the alert's lines, then the counts
    assert f"    last error: HTTP 422: alert rejected: {ESCAPED} line 9: P1 [fake]" in listed.stdout
    # The alias went to OpsGenie with its control characters as JSON's escapes (text): JSON
    # shows their backslashes escaped.
    sent = ESCAPED.replace("\\", "\\\\")
    assert f'"alias": "page-{sent}\\\\nline 9: P1 [fake]",' in shown.stdout.splitlines()[2]
    assert f'  id="{ESCAPED}\\nline 9: P1 [fake]": 1 of 5 in 1h' in state.stdout


def test_a_dry_run_takes_no_lock(tmp_path: Path) -> None:
    """`--dry-run` uses no state directory, so it runs beside a daemon that holds it."""
    config = stdin_config(tmp_path, PAGE_RULE)
    (tmp_path / "state").mkdir()
    held = lock_state_dir(str(tmp_path / "state"))
    try:
        result = rulesd_cli("run", "--config", str(config), "--dry-run", stdin='{"kind": "page", "id": 1}\n')
    finally:
        held.release()
    assert 0 == result.returncode, result.stderr
    assert '"alias":"p-1"' in result.stdout


def test_a_state_directory_that_cannot_be_made_is_named_with_its_setting(tmp_path: Path) -> None:
    """In a file rather than a directory: a configuration error at state_dir's line, exit 2,
    naming the directory and why (it said only `[Errno 20] Not a directory: '…'`)."""
    (tmp_path / "file").write_text("")
    state_dir = tmp_path / "file" / "state"
    config = stdin_config(tmp_path, PAGE_RULE, state_dir=str(state_dir), opsgenie={"api_key": "k"})
    result = rulesd_cli("run", "--config", str(config))
    assert 2 == result.returncode
    assert re.fullmatch(
        re.escape(str(config))
        + r":\d+:\d+: error: state_dir: "
        + re.escape(f"{state_dir}: the directory it would be made in, {tmp_path}/file, is not a directory ")
        + r"\(only the state directory itself is made\)\n",
        result.stderr,
    ), result.stderr


def test_the_lock_is_refused_to_a_second_holder_and_free_after_release(tmp_path: Path) -> None:
    """flock is per open file: a second lock on the directory, even in one process, is refused
    with the pid written by the holder; released, it can be taken again."""
    held = lock_state_dir(str(tmp_path))
    with pytest.raises(StateDirectoryBusy, match=rf"in use by another rulesd \(pid {os.getpid()}\)"):
        lock_state_dir(str(tmp_path))
    held.release()
    lock_state_dir(str(tmp_path)).release()


def test_every_file_in_the_state_directory_is_private_whatever_the_umask(
    workspace: Workspace, server: FakeOpsGenie
) -> None:
    """Under umask 022 the database, its -wal and -shm journal, the lock file and the rule cache
    are all 0600 (directories 0700): the outbox holds whole alerts."""
    with umask(0o022):
        daemon = workspace.start()
    workspace.append(page(1))
    assert server.wait_for(lambda r: len(r) >= 1)
    state = workspace.root / "state"
    assert {"state.sqlite", "state.sqlite-wal", "state.sqlite-shm", LOCK_FILE} <= {p.name for p in state.iterdir()}
    found = [state, *state.rglob("*")]
    modes = {str(p.relative_to(state)): stat.S_IMODE(p.stat().st_mode) for p in found}
    expected = {str(p.relative_to(state)): 0o700 if p.is_dir() else 0o600 for p in found}
    assert expected == modes
    assert 0 == daemon.terminate()


def test_an_older_database_left_readable_by_others_is_made_private(workspace: Workspace) -> None:
    """A database an older version made 0644 is tightened to 0600 at the next start."""
    state = workspace.root / "state"
    state.mkdir()
    (state / "state.sqlite").touch(mode=0o644)
    os.chmod(state / "state.sqlite", 0o644)
    workspace.start().terminate()
    assert 0o600 == stat.S_IMODE((state / "state.sqlite").stat().st_mode)


def test_a_corrupt_database_at_start_names_the_file_and_what_to_do(workspace: Workspace) -> None:
    """Exit 1 with one line that names the database and says to move it aside; no traceback."""
    state = workspace.root / "state"
    state.mkdir()
    (state / "state.sqlite").write_bytes(b"this is not a database, just junk " * 200)
    result = rulesd_cli("run", "--config", str(workspace.config))
    assert 1 == result.returncode
    assert f"{state / 'state.sqlite'}: the state database is damaged" in result.stderr
    assert "move" in result.stderr and "aside" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB tmpfs (the tests run as root, as CI does), unmounted afterwards."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Write a file into `directory` until its file system has not a byte left; the file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        size = 1 << 20
        while size:
            try:
                os.write(fd, b"\0" * size)
            except OSError as exc:
                assert errno.ENOSPC == exc.errno
                size //= 2
    finally:
        os.close(fd)
    return filler


def big_page(i: int) -> dict[str, object]:
    """A paging event whose alert is a few kilobytes (the event is in its description)."""
    return {**page(i), "pad": "x" * 3000}


def read_one(database: Path, query: str) -> Any:
    """The one value `query` selects, read as another process would (read-only)."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        (value,) = db.execute(query).fetchone()
    finally:
        db.close()
    return value


def saved_offset(database: Path) -> int:
    """The file source's saved offset."""
    return int(json.loads(read_one(database, "SELECT data FROM positions"))["offset"])


def test_a_full_state_directory_pauses_reading_and_loses_nothing(
    tmp_path: Path, server: FakeOpsGenie, small_tmpfs: Path
) -> None:
    """The state directory fills up under a batch of 200 alerts: the daemon stays up, says
    "state directory full" in its log, STATUS=, /healthz, /readyz and a metric, does not move
    its position, and once space returns delivers every alert once, in order."""
    state = small_tmpfs / "state"
    ws = Workspace(tmp_path, server.url, state_dir=str(state), metrics={"listen": "127.0.0.1:0"})
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        daemon = ws.start(env={"NOTIFY_SOCKET": notify.path})
        base = daemon.metrics_url().removesuffix("/metrics")
        ws.append(*(page(i) for i in range(3)))
        assert server.wait_for(lambda r: len(r) >= 3)
        assert wait_until(lambda: "outbox 0" in daemon_status(notify), timeout=15)
        offset_before = saved_offset(state / "state.sqlite")
        filler = fill(small_tmpfs)
        ws.append(*(big_page(i) for i in range(3, 203)))
        assert daemon.wait_for_log("state directory full: "), daemon.stderr()
        assert daemon.wait_for_log("reading paused, nothing is lost"), daemon.stderr()
        live, ready = http_get(f"{base}/healthz"), http_get(f"{base}/readyz")
        assert 200 == live[0] and "state directory full" in live[1]
        assert 503 == ready[0] and "state directory full" in ready[1]
        assert "rulesd_state_unavailable 1.0" in http_get(f"{base}/metrics")[1]
        assert wait_until(lambda: "state directory full" in daemon_status(notify))
        assert offset_before == saved_offset(state / "state.sqlite")
        assert 3 == len(server.requests)
        assert daemon.proc.poll() is None
        filler.unlink()
        assert daemon.wait_for_log("state writable again", timeout=15), daemon.stderr()
        assert server.wait_for(lambda r: len(r) >= 203, timeout=60)
        assert [f"page-{i}" for i in range(203)] == aliases(server)
        assert "rulesd_state_unavailable 0.0" in http_get(f"{base}/metrics")[1]
        assert (200, "ok\n") == http_get(f"{base}/readyz")
        assert 0 == daemon.terminate()
        assert [f"page-{i}" for i in range(203)] == aliases(server)
    finally:
        notify.close()


def test_a_reload_while_the_state_directory_is_full_is_applied_at_once(
    tmp_path: Path, server: FakeOpsGenie, small_tmpfs: Path
) -> None:
    """A rule changed and SIGHUP while the state directory is full: the reload is done then
    (RELOADING=1 ... READY=1, `reload ok`), not once space returns (under Type=notify-reload,
    `systemctl reload` waited for the disk); the batch in hand is kept and goes out once, in order,
    before what the new rules page for."""
    state = small_tmpfs / "state"
    ws = Workspace(tmp_path, server.url, state_dir=str(state))
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        daemon = ws.start(env={"NOTIFY_SOCKET": notify.path})
        ws.append(page(0))
        assert server.wait_for(lambda r: len(r) >= 1)
        assert wait_until(lambda: 0 == outbox_rows(state / "state.sqlite"), timeout=15)
        filler = fill(small_tmpfs)
        ws.append(*(big_page(i) for i in range(1, 40)))
        assert daemon.wait_for_log("state directory full: "), daemon.stderr()
        (ws.rules / "other.yaml").write_text("name: other\nmatch: {kind: other}\nalert: {alias: 'other-{id}'}\n")
        daemon.proc.send_signal(signal.SIGHUP)
        assert daemon.wait_for_log("reload ok: 2 rules; added: 1 (other)", timeout=10), daemon.stderr()
        assert wait_until(lambda: ["READY=1", "RELOADING=1", "READY=1"] == notify.states()[:3])
        assert 1 == len(server.requests)
        ws.append({"kind": "other", "id": 1})
        filler.unlink()
        assert server.wait_for(lambda r: len(r) >= 41, timeout=60)
        time.sleep(1.0)
        assert [f"page-{i}" for i in range(40)] + ["other-1"] == aliases(server)
        assert 0 == daemon.terminate()
    finally:
        notify.close()


HEARTBEAT = "name: hb-missing\nmatch: {kind: heartbeat}\nabsence: {window: 1s}\nalert: {alias: hb}\n"


def test_a_reload_while_the_state_directory_is_full_closes_the_removed_rules_alert_once(
    tmp_path: Path, server: FakeOpsGenie, small_tmpfs: Path
) -> None:
    """A rule with an open alert removed while the state directory is full: its close waits
    with the reload's changes, and goes out once space returns, after the pages of the batch
    kept and once only (a restart does not close it again)."""
    state = small_tmpfs / "state"
    ws = Workspace(tmp_path, server.url, state_dir=str(state))
    (ws.rules / "hb.yaml").write_text(HEARTBEAT)
    daemon = ws.start()
    ws.append({"kind": "heartbeat"})
    assert server.wait_for(lambda r: ["hb"] == aliases(server), timeout=15), daemon.stderr()
    assert wait_until(lambda: 0 == outbox_rows(state / "state.sqlite"), timeout=15)
    filler = fill(small_tmpfs)
    ws.append(*(big_page(i) for i in range(40)))
    assert daemon.wait_for_log("state directory full: "), daemon.stderr()
    (ws.rules / "hb.yaml").unlink()
    assert daemon.wait_for_log("reload ok: 1 rule; removed: 1 (hb-missing)", timeout=10), daemon.stderr()
    time.sleep(1.0)
    assert 1 == len(server.requests)
    filler.unlink()
    assert server.wait_for(lambda r: len(r) >= 42, timeout=60), daemon.stderr()
    time.sleep(1.0)
    paths = [r.path for r in server.requests]
    close = [i for i, path in enumerate(paths) if path.endswith("/hb/close?identifierType=alias")]
    assert 1 == len(close), paths
    created = [r.json()["alias"] for r in server.requests if r.path.endswith("/alerts")]
    assert ["hb", *(f"page-{i}" for i in range(40))] == created
    assert close[0] > 1  # after the kept batch's pages
    assert {"source": "rulesd", "note": "resolved: hb-missing (rule removed)"} == server.requests[close[0]].json()
    assert 0 == daemon.terminate()
    again = ws.start()
    ws.append(page(40))
    assert server.wait_for(lambda r: len(r) >= 43, timeout=15), again.stderr()
    time.sleep(1.0)
    assert 0 == again.terminate()
    assert 1 == sum("/close" in r.path for r in server.requests)


def daemon_status(notify: NotifySocket) -> str:
    """The latest STATUS= the daemon sent."""
    for _, message in reversed(notify.messages):
        for field in message.split("\n"):
            if field.startswith("STATUS="):
                return field
    return ""


def test_a_read_only_state_directory_at_start_names_the_database_and_what_to_do(
    tmp_path: Path, small_tmpfs: Path
) -> None:
    """The state directory's file system is read-only (remounted so: root may write any file
    otherwise): exit 1 with one line naming the database and saying to make it writable."""
    config = stdin_config(tmp_path, PAGE_RULE, state_dir=str(small_tmpfs), opsgenie={"api_key": "k"})
    first = rulesd_cli("run", "--config", str(config), stdin='{"kind": "noise"}\n')
    assert 0 == first.returncode, first.stderr
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    result = rulesd_cli("run", "--config", str(config), stdin='{"kind": "noise"}\n')
    assert 1 == result.returncode
    database = small_tmpfs / "state.sqlite"
    assert f"cannot start: {database}: cannot write the state database" in result.stderr, result.stderr
    assert f"make {small_tmpfs}, the database and its -wal and -shm files writable" in result.stderr
    assert "Traceback" not in result.stderr


def outbox_rows(database: Path) -> int:
    """How many alerts the outbox holds."""
    return int(read_one(database, "SELECT count(*) FROM outbox"))


def test_a_restart_while_the_state_directory_is_full_stays_up_and_loses_nothing(
    tmp_path: Path, server: FakeOpsGenie, small_tmpfs: Path
) -> None:
    """A daemon stopped while its state directory is full starts again on the full disk: it
    stays up, says "state directory full", and delivers every alert once space returns."""
    state = small_tmpfs / "state"
    ws = Workspace(tmp_path, server.url, state_dir=str(state))
    first = ws.start()
    ws.append(*(page(i) for i in range(3)))
    assert server.wait_for(lambda r: len(r) >= 3)
    assert wait_until(lambda: 0 == outbox_rows(state / "state.sqlite"), timeout=15)
    filler = fill(small_tmpfs)
    ws.append(*(big_page(i) for i in range(3, 60)))
    assert first.wait_for_log("state directory full: "), first.stderr()
    assert 0 == first.terminate()
    second = ws.start()
    assert second.wait_for_log("state directory full: "), second.stderr()
    time.sleep(1.5)  # retries at least once while still full
    assert second.proc.poll() is None, second.stderr()
    assert 3 == len(server.requests)
    filler.unlink()
    assert server.wait_for(lambda r: len(r) >= 60, timeout=60)
    assert 0 == second.terminate()
    assert [f"page-{i}" for i in range(60)] == aliases(server)


def test_a_new_state_directory_on_a_full_disk_names_the_directory(tmp_path: Path, small_tmpfs: Path) -> None:
    """No database can be made on a full disk: rulesd exits 1 at once, naming the state
    directory and the cause, instead of a traceback."""
    filler = fill(small_tmpfs)
    config = stdin_config(tmp_path, PAGE_RULE, state_dir=str(small_tmpfs / "state"), opsgenie={"api_key": "k"})
    result = rulesd_cli("run", "--config", str(config), stdin='{"kind": "noise"}\n')
    filler.unlink()
    assert 1 == result.returncode, result.stderr
    assert "Traceback" not in result.stderr
    assert str(small_tmpfs / "state") in result.stderr, result.stderr
    assert "full" in result.stderr, result.stderr
