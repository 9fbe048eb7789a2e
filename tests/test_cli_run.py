"""`rulesd run` and `rulesd outbox` exit statuses, through the real command."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rulesd.state import SqliteState
from tests.run_cli import clean_env, imported_by, rulesd_cli

RULE = "name: r\nmatch: {kind: page}\nalert: {alias: 'p-{id}'}\n"


def config(tmp_path: Path, text: str) -> str:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "r.yaml").write_text(RULE)
    path = tmp_path / "rulesd.yaml"
    path.write_text(text)
    return str(path)


def test_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    """Exit 2 and the path named."""
    result = rulesd_cli("run", "--config", str(tmp_path / "nope.yaml"))
    assert 2 == result.returncode
    assert f"{tmp_path}/nope.yaml: error: cannot read" in result.stderr


def test_invalid_rules_at_start_exit_2_with_their_location(tmp_path: Path) -> None:
    """The daemon does not start on broken rules; each error is located."""
    cfg = config(tmp_path, "state_dir: st\nopsgenie: {api_key: k}\n")
    (tmp_path / "rules" / "r.yaml").write_text("name: r\nmatch: {kind: [}\n")
    result = rulesd_cli("run", "--config", cfg)
    assert 2 == result.returncode
    assert "rules/r.yaml:2:" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_api_key_exits_2(tmp_path: Path) -> None:
    """Without a key (and without --dry-run) nothing starts."""
    result = rulesd_cli("run", "--config", config(tmp_path, "state_dir: st\n"))
    assert 2 == result.returncode
    assert "no API key" in result.stderr


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    """Exit 2, naming the key file's path and the setting, not only "No such file or directory"."""
    cfg = config(tmp_path, "state_dir: st\nopsgenie: {api_key_file: secret/opsgenie.key}\n")
    result = rulesd_cli("run", "--config", cfg)
    assert 2 == result.returncode
    assert (
        f"{tmp_path}/secret/opsgenie.key: error: cannot read the API key (opsgenie.api_key_file): "
        "No such file or directory\n"
    ) == result.stderr


def test_a_key_that_cannot_be_sent_stops_the_start_naming_where_it_is(tmp_path: Path) -> None:
    """A key file of two lines (or a key with a space) would be refused by the sender at the
    first page: exit 2 at start, naming the file and the setting, never the key."""
    cfg = config(tmp_path, "state_dir: st\nopsgenie: {api_key_file: opsgenie.key}\n")
    (tmp_path / "opsgenie.key").write_text("# the production key\nkey-0123456789\n")
    (tmp_path / "opsgenie.key").chmod(0o600)
    result = rulesd_cli("run", "--config", cfg)
    assert 2 == result.returncode
    assert (
        f"{tmp_path}/opsgenie.key: error: cannot use the API key (opsgenie.api_key_file): it contains spaces or "
        "control characters; a key is one line of printable characters\n"
    ) == result.stderr
    result = rulesd_cli("run", "--config", config(tmp_path, "state_dir: st\n"), env={"RULESD_OPSGENIE_API_KEY": "a b"})
    assert 2 == result.returncode
    assert result.stderr.startswith("opsgenie: error: cannot use the API key ($RULESD_OPSGENIE_API_KEY): it contains")


def test_a_metrics_address_in_use_is_a_configuration_error_at_its_line(tmp_path: Path) -> None:
    """Exit 2 (the unit does not restart it in a loop: a restart cannot free the port), at the
    line of metrics.listen, naming the address taken."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        cfg = config(tmp_path, f"state_dir: st\nopsgenie: {{api_key: k}}\nmetrics:\n  listen: '{listen}'\n")
        result = rulesd_cli("run", "--config", cfg)
    assert (2, f"{cfg}:4:11: error: metrics.listen: {listen}: cannot listen: Address already in use\n") == (
        result.returncode,
        result.stderr,
    )


def test_a_metrics_address_not_of_this_host_is_a_configuration_error_at_its_line(tmp_path: Path) -> None:
    """192.0.2.1 (documentation's address block) is no address of this host."""
    cfg = config(tmp_path, "state_dir: st\nopsgenie: {api_key: k}\nmetrics: {listen: '192.0.2.1:9464'}\n")
    result = rulesd_cli("run", "--config", cfg, "--dry-run", stdin=b"")
    assert (
        2,
        f"{cfg}:3:19: error: metrics.listen: 192.0.2.1:9464: cannot listen: Cannot assign requested address\n",
    ) == (
        result.returncode,
        result.stderr,
    )


def _not_a_database(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite database, not at all" * 4)


@pytest.mark.parametrize(
    ("make", "said", "not_said"),
    [
        # A state file that is not a database: a clear fatal error, no traceback.
        (_not_a_database, "the state database is damaged (file is not a database)", "Traceback"),
        # A directory: not "make it writable", which cannot help.
        (Path.mkdir, "cannot open the state database: it is a directory", "writable"),
    ],
)
def test_unusable_state_database_exits_1(
    tmp_path: Path, make: Callable[[Path], None], said: str, not_said: str
) -> None:
    cfg = config(tmp_path, "state_dir: st\nopsgenie: {api_key: k}\n")
    (tmp_path / "st").mkdir()
    database = tmp_path / "st" / "state.sqlite"
    make(database)
    result = rulesd_cli("run", "--config", cfg)
    assert 1 == result.returncode
    assert f"cannot start: {database}: {said}" in result.stderr
    assert not_said not in result.stderr


def test_a_start_with_no_rule_file_says_so(tmp_path: Path) -> None:
    """An empty rules directory (a deploy that went wrong) starts, as `check` accepts it, but
    with the warning `check` gives, not just "0 rule(s) loaded"."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rulesd.yaml").write_text("rules: [rules]\nsource: {type: stdin}\n")
    result = rulesd_cli("run", "--config", str(tmp_path / "rulesd.yaml"), "--dry-run")
    assert 0 == result.returncode, result.stderr
    assert f"rulesd: warning: {tmp_path / 'rules'}: no rule files (*.yaml, *.yml) found" in result.stderr


def test_a_start_warns_where_yaml_read_an_unquoted_word_as_a_boolean(tmp_path: Path) -> None:
    """The daemon loads rules as `check` does: `country: NO` starts (an event may hold false),
    with `check`'s warning at the word, also when the rule file comes from the cache."""
    cfg = config(tmp_path, "source: {type: stdin}\n")
    (tmp_path / "rules" / "r.yaml").write_text("name: r\nmatch: {country: NO}\nalert: {alias: 'p-{id}'}\n")
    warning = (
        f"rulesd: warning: {tmp_path / 'rules' / 'r.yaml'}:2:18: match.country: YAML reads the unquoted NO as "
        'false, not as text: quote it ("NO") if the text is meant, or write false if the boolean is'
    )
    events = b'{"country": "NO", "id": 1}\n{"country": false, "id": 2}\n'
    for _ in ("cold", "warm"):
        env = {"RULESD_CACHE_DIR": str(tmp_path / "cache")}
        result = rulesd_cli("run", "--config", cfg, "--dry-run", stdin=events, env=env)
        assert 0 == result.returncode, result.stderr
        assert warning in result.stderr.splitlines()
        assert ["p-2"] == [json.loads(line)["alias"] for line in result.stdout.splitlines()]
    assert [] != list((tmp_path / "cache").glob("document-*.bin"))


def test_a_daemons_start_compiles_the_joined_texts_database_replay_of_a_sample_does_not(tmp_path: Path) -> None:
    """The daemon compiles the database that scans a block's texts joined while it loads its
    rules, so that its loop never stops for it; `replay` of a few events, with the same cold
    cache, leaves it until enough blocks have been scanned."""
    cfg = config(tmp_path, "rules: [msg.yaml]\nsource: {type: stdin}\n")
    (tmp_path / "msg.yaml").write_text("name: panic\nmatch: {message: {regex: 'panic: .*'}}\n")
    events = tmp_path / "events.jsonl"
    events.write_text('{"message": "panic: nil map"}\n{"message": "ok"}\n')
    env = {"RULESD_CACHE_DIR": str(tmp_path / "cache")}
    result = rulesd_cli("replay", "--rules", str(tmp_path / "msg.yaml"), str(events), env=env)
    assert 0 == result.returncode, result.stderr
    assert [] == list((tmp_path / "cache").glob("joined-*.bin"))
    result = rulesd_cli("run", "--config", cfg, "--dry-run", stdin=events.read_bytes(), env=env)
    assert 0 == result.returncode, result.stderr
    assert 1 == len(result.stdout.splitlines())
    assert 1 == len(list((tmp_path / "cache").glob("joined-*.bin")))


def test_dry_run_on_stdin_prints_payloads_and_exits_0(tmp_path: Path) -> None:
    """stdin to EOF, one JSON payload per alert on stdout, exit 0; invalid lines only warned about."""
    cfg = config(tmp_path, "opsgenie: {recipients: 'team:ops'}\n")
    events = b'{"kind": "page", "id": 1}\nnot json\n{"kind": "noise"}\n{"kind": "page", "id": 2}'
    result = rulesd_cli("run", "--config", cfg, "--dry-run", stdin=events)
    assert 0 == result.returncode, result.stderr
    payloads = [json.loads(line) for line in result.stdout.splitlines()]
    assert ["p-1", "p-2"] == [p["alias"] for p in payloads]
    assert [{"type": "team", "name": "ops"}] == payloads[0]["responders"]
    assert "skipped: invalid JSON" in result.stderr
    assert "<stdin> (offset 26): skipped: invalid JSON" in result.stderr


def test_a_dry_run_whose_output_is_closed_stops_at_once_and_says_so(tmp_path: Path) -> None:
    """`rulesd run --dry-run | head`: once the reader of its standard output is gone, the dry
    run stops (exit 0, as `rulesd replay | head` does) instead of retrying to print with
    backoff, and says how many alerts it printed and how many it did not."""
    cfg = config(tmp_path, "opsgenie: {}\n")
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rulesd", "run", "--config", cfg, "--dry-run"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(None),
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(b'{"kind": "page", "id": 1}\n')
    proc.stdin.flush()
    assert "p-1" == json.loads(proc.stdout.readline())["alias"]
    proc.stdout.close()  # the reader goes away, as `head -1` does
    with contextlib.suppress(BrokenPipeError):  # (the daemon may have stopped reading already)
        for i in range(2, 40):
            proc.stdin.write(b'{"kind": "page", "id": %d}\n' % i)
            proc.stdin.flush()
            time.sleep(0.005)
    try:  # its input stays open: the closed output alone stops it
        status = proc.wait(timeout=30)
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        proc.kill()
    stderr = proc.stderr.read().decode()
    assert 0 == status, stderr
    assert time.monotonic() - started < 20, stderr
    assert "standard output was closed: the dry run stops" in stderr
    assert "Traceback" not in stderr and "will retry" not in stderr
    assert re.search(r"\d+ alert\(s\) not printed \(a dry run's queue is in memory", stderr), stderr
    assert re.search(r"stopped: \d+ event\(s\), 0 invalid, 1 alert\(s\) printed", stderr), stderr


def test_the_demo_accounts_for_every_invalid_line_and_says_printed() -> None:
    """The README's demo: each invalid line counted in the last line was warned about (one
    directly, the rest as suppressed), and a dry run says it printed its alerts, not queued them."""
    examples = Path(__file__).parent.parent / "examples"
    events = (examples / "events.jsonl").read_bytes()
    result = rulesd_cli("run", "--config", "rulesd.yaml", "--dry-run", stdin=events, cwd=examples)
    stderr = result.stderr
    assert 0 == result.returncode, stderr
    stopped = re.search(r"stopped: (\d+) event\(s\), (\d+) invalid, (\d+) alert\(s\) printed", stderr)
    assert stopped is not None, stderr
    warned = stderr.count(": skipped: ") - stderr.count("suppressed, the latest")
    suppressed = sum(int(n) for n in re.findall(r"(\d+) similar warning\(s\) suppressed", stderr))
    assert (int(stopped[2]), int(stopped[3])) == (warned + suppressed, len(result.stdout.splitlines()))
    assert 2 == int(stopped[2])
    assert "queued" not in stderr


def test_outbox_without_a_database_says_so(tmp_path: Path) -> None:
    """`rulesd outbox list` before the first run: nothing queued, exit 0."""
    result = rulesd_cli("outbox", "list", "--config", config(tmp_path, "state_dir: st\n"))
    assert 0 == result.returncode
    assert "nothing queued" in result.stdout
    as_json = rulesd_cli("outbox", "retry-dead", "--format", "json", "--config", config(tmp_path, "state_dir: st\n"))
    assert (0, {"requeued": 0}) == (as_json.returncode, json.loads(as_json.stdout))


def test_bad_lines_anywhere_in_a_parsed_block_leave_the_others_and_their_offsets_right(tmp_path: Path) -> None:
    """The daemon parses a block of lines, then evaluates it; bad lines at a block's start, end
    and middle, in several blocks, are counted, and every page around them alerts in order,
    naming its own offset."""
    from rulesd.events import BLOCK_LINES

    cfg = config(tmp_path, "opsgenie: {recipients: 'team:ops'}\n")
    bad = [b"not json\n", b"[1, 2]\n", b"7\n", b'{"kind": "page", "id": \n']
    at_bad = {0, BLOCK_LINES - 1, BLOCK_LINES, BLOCK_LINES + 1, 2 * BLOCK_LINES + 7, 5 * BLOCK_LINES - 1}
    lines = [
        bad[i % len(bad)]
        if i in at_bad
        else json.dumps({"kind": "page" if i % 3 else "noise", "id": i}).encode() + b"\n"
        for i in range(5 * BLOCK_LINES)
    ]
    result = rulesd_cli("run", "--config", cfg, "--dry-run", stdin=b"".join(lines))
    assert 0 == result.returncode, result.stderr
    payloads = [json.loads(line) for line in result.stdout.splitlines()]
    offsets = [sum(map(len, lines[:i])) for i in range(len(lines))]
    pages = [i for i in range(len(lines)) if i not in at_bad and i % 3]
    assert [f"p-{i}" for i in pages] == [p["alias"] for p in payloads]
    assert [f"<stdin> (offset {offsets[i]})" for i in pages] == [p["details"]["Event Source"] for p in payloads]
    assert f"stopped: {len(lines) - len(at_bad)} event(s), {len(at_bad)} invalid" in result.stderr


def test_outbox_json_and_show_without_a_database(tmp_path: Path) -> None:
    """Before the first run: an empty JSON list (options after the action), and `show` of any id
    says there is no such alert and exits 1."""
    cfg = config(tmp_path, "state_dir: st\n")
    listing = rulesd_cli("outbox", "list", "--config", cfg, "--format", "json")
    assert (0, []) == (listing.returncode, json.loads(listing.stdout))
    shown = rulesd_cli("outbox", "show", "3", "--config", cfg)
    assert (1, "") == (shown.returncode, shown.stdout)
    assert "no alert 3" in shown.stderr


def test_outbox_show_of_an_alert_no_longer_queued(tmp_path: Path) -> None:
    """An id that is not (or no longer) in the outbox: exit 1, saying that delivered alerts leave it;
    also one beyond the 64 bits of SQLite's integers, which ended in an OverflowError's traceback."""
    cfg = config(tmp_path, "state_dir: st\n")
    (tmp_path / "st").mkdir()
    SqliteState(str(tmp_path / "st" / "state.sqlite"))
    for alert_id in ("42", "99999999999999999999", "-9223372036854775809"):
        shown = rulesd_cli("outbox", "--config", cfg, "show", "--", alert_id)
        assert (1, f"rulesd outbox show: no alert {alert_id} in the outbox (delivered alerts leave it)\n") == (
            shown.returncode,
            shown.stderr,
        )


def test_outbox_of_a_damaged_database_or_a_redis_down_says_so(tmp_path: Path) -> None:
    """A state database that is not one, or a shared outbox whose Redis does not answer: every
    action says where and why in one line (no traceback) and exits 1."""
    from tests.redis_server import free_port

    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "state.sqlite").write_bytes(b"not a database, " * 512)
    damaged = config(tmp_path, "state_dir: st\n")
    down = str(tmp_path / "down.yaml")
    Path(down).write_text(f"state_dir: st\nstate: {{backend: redis, url: 'redis://127.0.0.1:{free_port()}/0'}}\n")
    for cfg, where in ((damaged, str(tmp_path / "st" / "state.sqlite")), (down, "the shared outbox in Redis")):
        for action in (["list"], ["show", "1"], ["retry-dead"], ["list", "--format", "json"]):
            result = rulesd_cli("outbox", *action, "--config", cfg)
            assert (1, "") == (result.returncode, result.stdout), result.stderr
            assert result.stderr.startswith(f"rulesd outbox: error: {where}"), result.stderr
            assert 1 == len(result.stderr.splitlines()), result.stderr


def test_only_a_daemon_that_sends_imports_the_http_client(tmp_path: Path) -> None:
    """The HTTP client (http.client, with ssl and the email package) is imported
    where alerts are sent: a dry run prints them (and still does), and `check --config` and
    `replay --config` only read the configuration, so none of them loads it; the daemon does."""
    cfg = config(
        tmp_path,
        "state_dir: st\nsource: {type: stdin}\nopsgenie: {api_key: k, alert_url: 'http://127.0.0.1:9/v2/alerts'}\n",
    )

    def imported(*args: str, stdin: str = "") -> tuple[str, str]:
        return imported_by(("urllib3", "http.client", "ssl"), *args, stdin=stdin, cwd=tmp_path)

    dry, printed = imported("run", "--config", cfg, "--dry-run", stdin='{"kind": "page", "id": 7}\n')
    assert "[]" == dry
    assert "p-7" == json.loads(printed)["alias"]
    assert "[]" == imported("check", "--config", cfg)[0]
    (tmp_path / "events.jsonl").write_text('{"kind": "page", "id": 8}\n')
    replayed, replay_out = imported("replay", "--config", cfg, "events.jsonl")
    assert "[]" == replayed
    assert "(alias: p-8)" in replay_out
    assert "['http.client', 'ssl']" == imported("run", "--config", cfg)[0]


def test_a_start_at_opsgenie_imports_neither_the_idna_codec_nor_difflib(tmp_path: Path) -> None:
    """The alert host's name is judged without the IDNA codec when it is ASCII, and difflib
    (whose suggestion is for a host that is not OpsGenie's) is imported only for such a host."""
    opsgenie = "opsgenie: {api_key: k, alert_url: 'https://api.opsgenie.com/v2/alerts'}"
    for opsgenie_line, modules in [
        (opsgenie, "[]"),
        (opsgenie.replace("api.opsgenie", "api.opsgenei"), "['difflib']"),
        (opsgenie.replace("api.opsgenie", "api.ópsgenie"), "['difflib', 'encodings.idna']"),
    ]:
        cfg = config(tmp_path, f"state_dir: st\nsource: {{type: stdin}}\n{opsgenie_line}\n")
        wanted = ("encodings.idna", "difflib")
        assert modules == imported_by(wanted, "run", "--config", cfg, "--dry-run", cwd=tmp_path)[0]


def test_a_warm_start_reads_its_config_from_the_cache_without_pyyaml(tmp_path: Path) -> None:
    """The parsed config is kept by its bytes: the second start of a dry run (in the user's
    cache) and of a daemon under systemd (in `$STATE_DIRECTORY`) import no PyYAML and print the
    same; an edited config is parsed again, a mistake in it said at its line every time; a
    daemon with neither directory keeps nothing."""
    (tmp_path / "key").write_text("k\n")
    key = f"api_key_file: {tmp_path / 'key'}"
    text = f"state_dir: st\nsource: {{type: stdin}}\nopsgenie: {{alert_url: 'http://127.0.0.1:9/v2/alerts', {key}}}\n"
    cfg = config(tmp_path, text)

    def yaml_imported(*args: str, env: dict[str, str], stdin: str = "") -> tuple[str, str]:
        return imported_by(("yaml",), "run", "--config", cfg, *args, stdin=stdin, cwd=tmp_path, env=env)

    user = {"RULESD_CACHE_DIR": str(tmp_path / "cache")}
    first, printed = yaml_imported("--dry-run", env=user, stdin='{"kind": "page", "id": 7}\n')
    second, printed_again = yaml_imported("--dry-run", env=user, stdin='{"kind": "page", "id": 7}\n')
    assert ("['yaml']", "[]") == (first, second)
    assert "p-7" == json.loads(printed)["alias"] == json.loads(printed_again)["alias"]
    assert 1 == len(list((tmp_path / "cache").glob("config-*.bin")))

    for edited, error in [
        (text.replace("alert_url", "alert_urll"), "3:12: error: opsgenie.alert_urll: unknown key"),
        (text.replace("}", ""), "2:21: error: YAML syntax error: the '{' at column 9 is not closed"),
    ]:
        Path(cfg).write_text(edited)
        for _ in range(2):
            result = rulesd_cli("run", "--config", cfg, "--dry-run", env=user)
            assert 2 == result.returncode
            assert f"{cfg}:{error}" in result.stderr, result.stderr
    Path(cfg).write_text(text)

    systemd = {"STATE_DIRECTORY": str(tmp_path / "state")}
    assert ("['yaml']", "[]") == (yaml_imported(env=systemd)[0], yaml_imported(env=systemd)[0])
    assert 1 == len(list((tmp_path / "state" / "cache").glob("config-*.bin")))
    assert ("['yaml']", "['yaml']") == (yaml_imported(env={})[0], yaml_imported(env={})[0])
    assert [] == list((tmp_path / "st" / "cache").glob("config-*.bin"))


@pytest.mark.parametrize(
    "secret",
    [
        "opsgenie: {api_key: s3cret, alert_url: 'http://127.0.0.1:9/v2/alerts'}",
        "opsgenie: {api_key_file: KEY}\nstate: {backend: redis, url: 'redis://:s3cret@127.0.0.1:9/0'}",
        "opsgenie: {api_key_file: KEY, alert_url: 'http://rulesd:s3cret@127.0.0.1:9/v2/alerts'}",
        # redis-py reads a password from the URL's query as well as from its userinfo.
        "opsgenie: {api_key_file: KEY}\nstate: {backend: redis, url: 'redis://127.0.0.1:9/0?password=s3cret'}",
        "opsgenie: {api_key_file: KEY}\nstate: {backend: redis, url: 'unix:///run/redis.sock?pass%77ord=s3cret'}",
        # ... and the password of an encrypted client key (rediss://), which it hides as one.
        "opsgenie: {api_key_file: KEY}\nstate: {backend: redis, url: 'rediss://127.0.0.1:9/0?ssl_password=s3cret'}",
    ],
)
def test_a_config_holding_a_secret_is_kept_in_the_cache_without_it(tmp_path: Path, secret: str) -> None:
    """An inline API key or a URL with a password stays in the file the operator protects: no
    cache file holds it. The config is kept with each secret's place in the file's text instead,
    so that a warm start reads it back from the file and imports no PyYAML either."""
    (tmp_path / "key").write_text("k\n")
    cfg = config(
        tmp_path, "state_dir: st\nsource: {type: stdin}\n" + secret.replace("KEY", str(tmp_path / "key")) + "\n"
    )
    user = {"RULESD_CACHE_DIR": str(tmp_path / "cache")}
    starts = [imported_by(("yaml",), "run", "--config", cfg, "--dry-run", cwd=tmp_path, env=user) for _ in range(2)]
    assert ["['yaml']", "[]"] == [imported for imported, _ in starts]
    assert 1 == len(list((tmp_path / "cache").glob("config-blanked-*.bin")))
    assert all(b"s3cret" not in path.read_bytes() for path in (tmp_path / "cache").rglob("*") if path.is_file())


def test_the_stop_line_counts_the_closes_apart_from_the_alerts(tmp_path: Path) -> None:
    """A close is a request of its own, but no alert: a dry run's stop line says how many of
    each it printed (it counted a close as an alert; a run that queues counts them as the
    committer does, tested with it)."""
    cfg = config(tmp_path, "opsgenie: {recipients: 'team:ops'}\ntime_field: t\n")
    (tmp_path / "rules" / "r.yaml").write_text(
        "name: r\nmatch: {kind: page}\nthreshold: {count: 1, window: 1m, group_by: [host]}\nresolve: {after: 1m}\n"
    )
    events = b"".join(
        json.dumps(e).encode() + b"\n"
        for e in [
            {"t": 1700000000, "kind": "page", "host": "a"},
            {"t": 1700000001, "kind": "page", "host": "b"},
            {"t": 1700000300, "kind": "noise"},  # both quiet for 1m: both close
            {"t": 1700000301, "kind": "page", "host": "a"},
        ]
    )
    result = rulesd_cli("run", "--config", cfg, "--dry-run", stdin=events)
    assert 0 == result.returncode, result.stderr
    assert 5 == len(result.stdout.splitlines())
    assert "stopped: 4 event(s), 0 invalid, 3 alert(s) and 2 close(s) printed" in result.stderr, result.stderr
