"""What `rulesd run` reads: text and regex formats, bad lines skipped with a rate-limited
warning, stdin read to its end, and `start_at` on the first run only."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path

import rulesd
from tests.daemon_process import API_KEY, PAGE_RULE, Workspace, aliases, page, stdin_config, wait_until
from tests.fake_opsgenie import FakeOpsGenie
from tests.opsgenie_schema import create_alert_validator
from tests.run_cli import rulesd_cli

ROOT = Path(__file__).resolve().parent.parent
VALIDATOR = create_alert_validator()


def test_text_format_makes_each_line_a_message(tmp_path: Path) -> None:
    """format: text -> {"message": line} (CR dropped), evaluated by the daemon."""
    config = stdin_config(
        tmp_path,
        "name: t\nmatch: {message: {contains: disk full}}\nalert: {alias: 't: {message}'}\n",
        source={"type": "stdin", "format": "text"},
    )
    result = rulesd_cli(
        "run",
        "--config",
        str(config),
        "--dry-run",
        stdin=b'all good\n/var: disk full\r\n{"json": "is text here"}\nroot: disk full',
    )
    assert 0 == result.returncode, result.stderr
    assert ["t: /var: disk full", "t: root: disk full"] == [
        json.loads(line)["alias"] for line in result.stdout.splitlines()
    ]


def test_a_blank_line_is_skipped_without_a_warning(tmp_path: Path) -> None:
    """A blank line (an empty one, or spaces and a CR) is no event and nothing to explain, as
    in fleet mode and replay; a bad line beside it is still explained at its line."""
    config = stdin_config(tmp_path, PAGE_RULE)
    result = rulesd_cli(
        "run", "--config", str(config), "--dry-run", stdin=b'{"kind": "page", "id": 1}\r\n\n  \r\n{"kind": \n'
    )
    assert 0 == result.returncode, result.stderr
    assert ["p-1"] == [json.loads(line)["alias"] for line in result.stdout.splitlines()]
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert 1 == len(warnings) and "<stdin> (offset 32): skipped: invalid JSON" in warnings[0], result.stderr


def test_regex_format_turns_named_groups_into_fields(tmp_path: Path) -> None:
    """format: regex -> named groups become fields (and `message` the line); a line that does
    not match is skipped with a warning."""
    config = stdin_config(
        tmp_path,
        "name: e\nmatch: {level: ERROR}\nalert: {alias: '{host}/{level}', message: '{message}'}\n",
        source={"type": "stdin", "format": "regex", "pattern": r"^(?P<level>[A-Z]+) (?P<host>\S+) "},
    )
    result = rulesd_cli(
        "run",
        "--config",
        str(config),
        "--dry-run",
        stdin=b"INFO web-1 fine\nERROR web-2 broken pipe\ngarbage\nERROR db-1 down\n",
    )
    assert 0 == result.returncode, result.stderr
    payloads = [json.loads(line) for line in result.stdout.splitlines()]
    assert ["web-2/ERROR", "db-1/ERROR"] == [p["alias"] for p in payloads]
    assert "ERROR web-2 broken pipe" == payloads[0]["message"]
    assert "does not match the source pattern" in result.stderr


def test_bad_lines_are_skipped_with_one_rate_limited_warning_and_counted(tmp_path: Path) -> None:
    """Invalid JSON, invalid UTF-8, non-objects and over-long lines are skipped: one warning
    (the rest held back by the rate limit and counted in one line at stop), the invalid ones
    counted, the valid event alerted."""
    config = stdin_config(tmp_path, PAGE_RULE, source={"type": "stdin", "max_line_bytes": 1024})
    bad = [b"not json\n"] * 30 + [b'{"kind": "page", "x": "\xff\xfe"}\n'] * 10 + [b"[1, 2]\n", b"7\n"] * 5
    long_lines = [b'{"kind": "page", "id": 0, "pad": "' + b"a" * 2048 + b'"}\n'] * 5
    result = rulesd_cli(
        "run", "--config", str(config), "--dry-run", stdin=b"".join(bad + long_lines) + b'{"kind": "page", "id": 1}\n'
    )
    assert 0 == result.returncode, result.stderr
    assert ["p-1"] == [json.loads(line)["alias"] for line in result.stdout.splitlines()]
    stderr = result.stderr
    warnings = [line for line in stderr.splitlines() if line.startswith("rulesd: warning: ")]
    # Each kind is rate-limited on its own (the long lines are seen first, as they are read),
    # and what each held back is counted at stop.
    assert 4 == len(warnings), stderr
    assert "<stdin>: skipped a line longer than 1024 bytes" in warnings[0]
    assert "skipped: " in warnings[1]
    assert warnings[2].startswith(
        "rulesd: warning: 4 similar warning(s) suppressed, the latest: <stdin>: skipped a line longer"
    )
    assert warnings[3].startswith("rulesd: warning: 49 similar warning(s) suppressed, the latest: <stdin> (offset ")
    assert "stopped: 1 event(s), 50 invalid" in stderr


def test_a_flood_of_invalid_lines_does_not_hide_a_truncation_warning(workspace: Workspace) -> None:
    """After an invalid-JSON warning (and more held back), the file is truncated: "file was
    truncated" is logged at once, and at stop the invalid lines held back are counted."""
    daemon = workspace.start()
    workspace.append(*[b"not json\n"] * 50)
    assert daemon.wait_for_log("skipped: ")
    os.truncate(workspace.events, 0)
    workspace.append(page(1))
    assert daemon.wait_for_log(f"{workspace.events}: file was truncated", timeout=5), daemon.stderr()
    assert 0 == daemon.terminate()
    assert "49 similar warning(s) suppressed, the latest: " in daemon.stderr()


def test_stdin_is_read_to_its_end_delivered_and_exit_0(tmp_path: Path, server: FakeOpsGenie) -> None:
    """Not a dry run: stdin to EOF, every alert delivered (in order, with the User-Agent) before
    the process exits 0."""
    config = stdin_config(tmp_path, PAGE_RULE, opsgenie={"alert_url": f"{server.url}/v2/alerts"})
    events = b"".join(json.dumps(page(i)).encode() + b"\n" for i in range(10))
    result = rulesd_cli("run", "--config", str(config), stdin=events, env={"RULESD_OPSGENIE_API_KEY": API_KEY})
    assert 0 == result.returncode, result.stderr
    assert [f"p-{i}" for i in range(10)] == aliases(server)
    assert {f"rulesd/{rulesd.__version__}"} == {r.headers["User-Agent"] for r in server.requests}
    for request in server.requests:
        VALIDATOR.validate(request.json())
    assert API_KEY not in result.stdout + result.stderr


def test_start_at_end_applies_to_the_first_run_only(tmp_path: Path, server: FakeOpsGenie) -> None:
    """start_at: end skips what is there at the first start; after a restart the saved position
    wins, so events written while the daemon was down are read."""
    ws = Workspace(tmp_path, server.url, source={"type": "file", "path": "events.jsonl", "start_at": "end"})
    try:
        ws.append({"kind": "page", "id": "old"})
        daemon = ws.start()
        ws.append(page(0))
        assert server.wait_for(lambda r: len(r) >= 1)
        assert 0 == daemon.terminate()
        ws.append(page(1))
        ws.start()
        assert server.wait_for(lambda r: len(r) >= 2)
        time.sleep(0.3)
        assert ["page-0", "page-1"] == aliases(server)
    finally:
        ws.stop_all()


def assert_refused_at_start(workspace: Workspace, problem: str) -> None:
    """`rulesd run` exits 2 before it starts, with `problem` as the error at source.path's line."""
    refused = rulesd_cli("run", "--config", str(workspace.config), timeout=30)
    line = workspace.config.read_text().splitlines().index(f"  path: {workspace.events.name}") + 1
    assert 2 == refused.returncode, refused.stderr
    assert f"{workspace.config}:{line}:9: error: source.path: {problem}\n" in refused.stderr
    assert "rulesd started" not in refused.stderr


def test_a_fifo_at_the_source_path_is_skipped_while_running_and_refused_at_start(
    workspace: Workspace, server: FakeOpsGenie
) -> None:
    """The events file is replaced by a FIFO: the running daemon warns naming the path and
    goes on; a restart exits 2 at once with the error at the config's line (where it reached
    READY and then read nothing, for good); once a regular file is back its events are alerted."""
    daemon = workspace.start()
    workspace.append(page(1))
    assert server.wait_for(lambda r: len(r) >= 1)
    workspace.events.unlink()
    os.mkfifo(workspace.events)
    assert daemon.wait_for_log(
        f"{workspace.events}: a FIFO, not a regular file; skipped until a regular file is there"
    ), daemon.output()
    assert 0 == daemon.terminate()
    assert_refused_at_start(
        workspace,
        f"{workspace.events} is a FIFO, not a regular file: a file source follows regular files; to read a pipe, "
        f"use source: {{type: stdin}} and run: rulesd run < {workspace.events}",
    )
    listed = rulesd_cli("outbox", "list", "--config", str(workspace.config))  # the read-only commands do not look
    assert (0, "") == (listed.returncode, listed.stderr)
    workspace.events.unlink()
    workspace.append(page(2))
    restarted = workspace.start()
    assert server.wait_for(lambda r: len(r) >= 2)
    assert ["page-1", "page-2"] == aliases(server)
    assert 0 == restarted.terminate()


def test_a_proc_file_at_the_source_path_is_skipped_while_running_and_refused_at_start(
    workspace: Workspace, server: FakeOpsGenie
) -> None:
    """The events file is replaced by a link to a file of /proc (size 0, yet lines to read): the
    running daemon warns once naming the path and goes on, where it took the size of 0 for a
    truncation at every turn, read the file again and again (each line an event again: ~100,000
    alerts queued in 4 s), a core burnt; a restart exits 2 with the error at the config's line;
    once a regular file is back its events are alerted, each once."""
    rule = "name: any-line\nmatch: {message: {exists: true}}\nalert: {alias: 'line-{message}'}\n"
    (workspace.rules / "rules.yaml").write_text(rule)
    workspace.config.write_text(workspace.config.read_text().replace("type: file", "format: text\n  type: file"))
    daemon = workspace.start()
    workspace.append(b"before\n")
    assert server.wait_for(lambda r: len(r) >= 1)
    workspace.events.unlink()
    workspace.events.symlink_to("/proc/self/status")
    sizeless = "a file whose size reads 0 though it holds data (as the files of /proc and /sys do)"
    assert daemon.wait_for_log(
        f"{workspace.events}: {sizeless}, not a regular file; skipped until a regular file is there"
    ), daemon.output()
    time.sleep(1)  # turns of the main loop: none reads the file
    assert 0 == daemon.terminate()
    assert 1 == daemon.output().count(str(workspace.events)), daemon.output()
    assert ["line-before"] == aliases(server)
    assert_refused_at_start(
        workspace,
        f"{workspace.events} is {sizeless}: a file source follows files that lines are appended to, and this one "
        f"has no end to follow; to read its lines once, use source: {{type: stdin}} and run: rulesd run < "
        f"{workspace.events}",
    )
    workspace.events.unlink()
    workspace.append(b"after\n")
    restarted = workspace.start()
    assert server.wait_for(lambda r: len(r) >= 2)
    time.sleep(0.5)
    assert 0 == restarted.terminate()
    assert ["line-before", "line-after"] == aliases(server)


def test_an_event_nested_deeper_than_json_encoders_go_pages_and_the_next_one_too(
    workspace: Workspace, server: FakeOpsGenie
) -> None:
    """A grouped field nested 300 and 1,000 levels deep (orjson reads 1,024; it writes 254, and
    json's recursion gives out before 1,000): each event pages, and so do the events after
    them. The group key, the template and the alias of such a value raised, and the daemon
    stopped at that line, again after every restart: every later page was lost. Control
    characters reach OpsGenie as JSON's escapes, not as they are."""
    (workspace.rules / "rules.yaml").write_text(
        "name: grouped\nmatch: {kind: page}\nthreshold: {count: 1, window: 1m, group_by: [v]}\n"
        "alert: {message: 'page {id}: {v}', alias: 'page-{id}', tags: ['{v}']}\n"
    )
    daemon = workspace.start()
    workspace.append(nested_line(b"page", b"id", 0, 300), nested_line(b"page", b"id", 1, 1000))
    workspace.append({"kind": "page", "id": 2, "v": "a\x00\x1b[2J\x9b"})
    assert server.wait_for(lambda r: len(r) >= 3), daemon.output()
    bodies = [r.json() for r in server.requests]
    for body in bodies:
        VALIDATOR.validate(body)
    assert ["page-0", "page-1", "page-2"] == [b["alias"] for b in bodies]
    assert ("page 2: a\\u0000\\u001b[2J\\u009b", ["a\\u0000\\u001b[2J\\u009b"]) == (
        bodies[2]["message"],
        bodies[2]["tags"],
    )
    assert 0 == daemon.terminate()


def test_an_absence_keeps_a_deeply_nested_event_across_a_restart_and_pages(
    workspace: Workspace, server: FakeOpsGenie
) -> None:
    """An absence keeps its group's last event in the saved state: one nested 300 and 1,000
    levels deep is saved (orjson refused it past 254: a fatal error at every commit, so the
    daemon stopped at that line for good), restored after a restart (json's recursion gave out
    before 1,000 levels: the daemon could not start) and paged for when the silence comes."""
    (workspace.rules / "rules.yaml").write_text(
        "name: gone\nmatch: {kind: beat}\nabsence: {window: 3s, group_by: [v]}\nalert: {alias: 'gone-{n}'}\n"
    )
    daemon = workspace.start()
    workspace.append(nested_line(b"beat", b"n", 0, 300), nested_line(b"beat", b"n", 1, 1000))
    assert wait_until(lambda: 2 == groups_saved(workspace)), daemon.output()
    assert 0 == daemon.terminate()
    assert [] == server.requests  # the silence has not come yet: the state holds both events
    daemon = workspace.start()
    assert server.wait_for(lambda r: len(r) >= 2), daemon.output()
    assert ["gone-0", "gone-1"] == sorted(aliases(server))
    assert 0 == daemon.terminate()
    assert "fatal" not in workspace.all_output()


def groups_saved(workspace: Workspace) -> int:
    """How many groups the saved state holds (read from the database: `rulesd state` writes
    each group's value with json, whose recursion gives out before 1,000 levels)."""
    with contextlib.closing(sqlite3.connect(workspace.root / "state" / "state.sqlite", timeout=5)) as db:
        return int(db.execute("SELECT count(*) FROM engine_groups").fetchone()[0])


def nested_line(kind: bytes, number: bytes, i: int, depth: int) -> bytes:
    """A JSON line of `kind` numbered `i`, whose field `v` is lists nested `depth` levels deep."""
    return b'{"kind":"%s","%s":%d,"v":%s%s}\n' % (kind, number, i, b"[" * depth, b"]" * depth)


def test_lines_end_at_newline_alone_with_their_offsets_and_the_parsers_complaint(tmp_path: Path) -> None:
    """Only `\\n` ends a line: a CR before it, and the bytes other splitters end lines at, stay
    in the line; each alert names its line's offset, and a line cut short is explained as it
    reads without its newline (orjson counts the newline in its place: line 2, not column 16)."""
    config = stdin_config(
        tmp_path,
        "name: t\nmatch: {message: {contains: full}}\nalert: {alias: 't: {message}'}\n",
        source={"type": "stdin", "format": "regex", "pattern": r"^(?P<host>[a-z]+) "},
    )
    stream = b"db disk\rfull\r\n\xc2\x85\nweb \x0b\x0c\x1c\xe2\x80\xa8 full\n\nlb \xc2\x85 full"
    result = rulesd_cli("run", "--config", str(config), "--dry-run", stdin=stream)
    assert 0 == result.returncode, result.stderr
    payloads = [json.loads(line) for line in result.stdout.splitlines()]
    aliases = ["t: db disk\\rfull", "t: web \\u000b\\u000c\\u001c\\u2028 full", "t: lb \\u0085 full"]  # escaped
    assert aliases == [p["alias"] for p in payloads]
    assert ["<stdin> (offset 0)", "<stdin> (offset 17)", "<stdin> (offset 34)"] == [
        p["details"]["Event Source"] for p in payloads
    ]
    assert "<stdin> (offset 14): skipped: does not match the source pattern" in result.stderr
    assert "(offset 33)" not in result.stderr  # a blank line: skipped, nothing to explain

    config = stdin_config(tmp_path, PAGE_RULE)
    stream = b'{"kind": "page",\n{"kind": "page", "id": 2}\r\n'
    result = rulesd_cli("run", "--config", str(config), "--dry-run", stdin=stream)
    assert 0 == result.returncode, result.stderr
    assert ["p-2"] == [json.loads(line)["alias"] for line in result.stdout.splitlines()]
    cut = "<stdin> (offset 0): skipped: invalid JSON: unexpected end of data: line 1 column 17 (char 16)"
    assert cut in result.stderr
