"""Rule reloads: the watcher debounces a burst of saves, a periodic check catches what no event
reported, and a reload is all-or-nothing and names what changed."""

from __future__ import annotations

import gc
import io
import logging
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from rulesd.alerting.payload import AlertSettings, build_payload
from rulesd.config import Config, SourceConfig
from rulesd.daemon import Daemon, build_parts, describe_change
from rulesd.engine import Firing
from rulesd.reload import RuleWatcher
from rulesd.rules.loader import load_ruleset, load_ruleset_text
from rulesd.rules.model import Rule
from tests.daemon_process import PAGE_RULE, DaemonProcess, Workspace, aliases, http_get, page, wait_until
from tests.fake_opsgenie import FakeOpsGenie
from tests.opsgenie_schema import create_alert_validator

ROOT = Path(__file__).resolve().parent.parent
VALIDATOR = create_alert_validator()


def test_rule_watcher_waits_for_a_burst_of_saves_to_settle(tmp_path: Path) -> None:
    """Watchdog events are debounced: no reload while saves keep coming, one once they stop."""
    rules = tmp_path / "rules"
    rules.mkdir()
    rule = rules / "r.yaml"
    rule.write_text(PAGE_RULE)
    watcher = RuleWatcher([str(rules)], clock=time.monotonic, debounce=0.5, backstop=3600)
    watcher.start()
    try:
        for i in range(8):
            rule.write_text(PAGE_RULE + f"# save {i}\n")
            time.sleep(0.1)
            assert not watcher.due(), f"reload requested in the middle of the burst (save {i})"
        last_save = time.monotonic()
        assert wait_until(watcher.due, timeout=5)
        assert time.monotonic() - last_save >= 0.35
        assert not watcher.due()
    finally:
        watcher.stop()


def test_rule_watcher_periodic_check_catches_a_change_no_event_reported(tmp_path: Path) -> None:
    """Without any file system event (none is watched here), the periodic hash check notices a
    changed rule file at the next check, and an unchanged one causes no reload; SIGHUP's
    request() reloads at once."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(PAGE_RULE)
    now = [100.0]
    watcher = RuleWatcher([str(rules)], clock=lambda: now[0], debounce=0.1, backstop=5.0)
    (rules / "r.yaml").write_text(PAGE_RULE + "# changed\n")
    now[0] += 1.0
    assert not watcher.due()
    now[0] += 4.5
    assert watcher.due()
    now[0] += 6.0
    assert not watcher.due()
    watcher.request()
    assert watcher.due()
    assert not watcher.due()


def dry_run_daemon(tmp_path: Path, rules: Path) -> Daemon:
    """A daemon (dry run, its loop turned by hand) of the rules at `rules` and an empty file."""
    (tmp_path / "events.jsonl").touch()
    config = Config(
        path=str(tmp_path / "rulesd.yaml"),
        rules=(str(rules),),
        sources=(SourceConfig(type="file", paths=(str(tmp_path / "events.jsonl"),)),),
        state_dir=str(tmp_path / "state"),
    )
    return Daemon(build_parts(config, load_ruleset(config.rules), dry_run=True, environ={}, stdout=io.StringIO()))


def test_reload_is_all_or_nothing_and_names_what_changed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A reload with one good change and one broken file applies nothing and logs every error
    as path:line:col; once fixed, one line names the rules added, removed and changed."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text("name: a\nmatch: {kind: a}\n")
    (rules / "b.yaml").write_text("name: b\nmatch: {kind: b}\n")
    (rules / "keep.yaml").write_text("name: keep\nmatch: {kind: k}\n")
    daemon = dry_run_daemon(tmp_path, rules)
    caplog.set_level(logging.INFO, logger="rulesd")
    try:
        before = daemon.engine.ruleset.fingerprint
        (rules / "a.yaml").write_text("name: a\nmatch: {kind: A}\n")
        (rules / "b.yaml").write_text("name: b\nmatch: {kind: b}\nthrottle: soon\nalert: {priority: P9}\n")
        assert daemon.reload() is False
        assert before == daemon.engine.ruleset.fingerprint
        failed = [r.getMessage() for r in caplog.records if "reload failed" in r.getMessage()]
        assert 3 == len(failed), failed
        assert failed[0].startswith("reload failed: 2 error(s); previous rules kept (3 rules)")
        assert any(f"{rules}/b.yaml:3:" in m for m in failed) and any(f"{rules}/b.yaml:4:" in m for m in failed)
        (rules / "b.yaml").unlink()
        (rules / "c.yaml").write_text("name: c\nmatch: {kind: c}\n")
        assert daemon.reload() is True
        assert {"a", "c", "keep"} == set(daemon.engine.ruleset.by_name())
        assert "reload ok: 3 rules; added: 1 (c); removed: 1 (b); changed: 1 (a)" in caplog.text
    finally:
        daemon.parts.source.close()


def test_the_rules_a_reload_replaced_are_let_go_once_their_alerts_were_built(tmp_path: Path) -> None:
    """Alert bodies' parts are remembered per tuple of rules that fired; a reload replaces
    every rule object, and the tuples of the rules before are never asked for again. They
    must not keep those rules alive (their predicates and Hyperscan databases with them): a
    daemon reloaded again and again, with alerts between reloads, holds its running set."""
    rules = tmp_path / "rules.yaml"

    def written(n: int) -> str:  # (half with an alias template, half with the names' alias)
        alias = ["", ", alert: {alias: '{message}', responders: [{type: team, name: ops}]}"]
        return "rules:\n" + "".join(
            f"  - {{name: replaced-{i}, match: {{message: {{regex: 'e{n}x{i}'}}}}{alias[i % 2]}}}\n" for i in range(8)
        )

    rules.write_text(written(0))
    daemon = dry_run_daemon(tmp_path, rules)
    try:
        for n in range(1, 30):
            rules.write_text(written(n))
            assert daemon.reload() is True
            running = daemon.engine.ruleset.rules
            for fired in (running[:1], running[1:2], running[:3]):  # (alerts between reloads)
                build_payload(Firing({"message": f"e{n}x0"}, 1.0, fired), AlertSettings(), "app.log:1")
        del running, fired
        gc.collect()
        alive = [o for o in gc.get_objects() if type(o) is Rule and o.name.startswith("replaced-")]
        assert len(alive) <= 8, len(alive)  # the running set's alone
    finally:
        daemon.parts.source.close()


def rules_text(names: list[str], kind: str = "k") -> str:
    return "rules:\n" + "".join(f"  - name: {n}\n    match: {{kind: {kind}}}\n" for n in names)


def test_the_reload_line_counts_each_change_and_names_the_first_few() -> None:
    """`N rules, unchanged`, or each kind of change counted with at most five names: a reload of
    100,000 rules writes a short line, not the names of them all."""
    old = load_ruleset_text(rules_text([f"r{i:02d}" for i in range(20)]), "old.yaml")
    same = load_ruleset_text(rules_text([f"r{i:02d}" for i in range(20)]), "same.yaml")
    new = load_ruleset_text(rules_text([f"r{i:02d}" for i in range(8, 40)]), "new.yaml")
    assert "20 rules, unchanged" == describe_change(old, same)
    assert (
        "32 rules; added: 20 (r20, r21, r22, r23, r24, … 15 more); removed: 8 (r00, r01, r02, r03, r04, … 3 more)"
        == describe_change(old, new)
    )


def test_every_reload_logs_its_outcome_so_the_last_word_is_true(workspace: Workspace, server: FakeOpsGenie) -> None:
    """A failed reload logs `reload failed` at error; the good reload after it logs `reload ok`
    at info, and so does a reload that changed nothing: the last reload line is always true."""
    daemon = workspace.start()
    rule_file = workspace.rules / "rules.yaml"
    good = rule_file.read_text()
    rule_file.write_text("rules:\n  - name: x\n    match: {kind: [}\n")
    assert daemon.wait_for_log("rulesd: error: reload failed: 1 error(s); previous rules kept (1 rules)")
    rule_file.write_text(good)
    assert daemon.wait_for_log("rulesd: info: reload ok: 1 rule, unchanged")
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: daemon.stderr().count("reload ok: 1 rule, unchanged") == 2)
    reload_lines = [line for line in daemon.stderr().splitlines() if "reload" in line]
    assert reload_lines[-1].startswith("rulesd: info: reload ok: 1 rule, unchanged")


def test_a_reload_warns_where_yaml_read_an_unquoted_word_as_a_boolean(
    workspace: Workspace, server: FakeOpsGenie
) -> None:
    """A rule saved with `country: NO` is loaded (an event may hold false), with the warning
    `rulesd check` gives, at the word."""
    daemon = workspace.start()
    rule_file = workspace.rules / "norway.yaml"
    rule_file.write_text("name: norway\nmatch: {country: NO}\nalert: {alias: 'no-{id}'}\n")
    assert daemon.wait_for_log("reload ok: 2 rules; added: 1 (norway)"), daemon.stderr()
    warning = f"rulesd: warning: {rule_file}:2:18: match.country: YAML reads the unquoted NO as false, not as text"
    assert any(line.startswith(warning) for line in daemon.stderr().splitlines()), daemon.stderr()
    workspace.append({"country": "NO", "id": 1})
    workspace.append({"country": False, "id": 2})
    assert server.wait_for(lambda r: len(r) >= 1)
    assert 0 == daemon.terminate()
    assert ["no-2"] == aliases(server)


def test_a_reload_warns_at_a_regex_found_in_every_text_and_a_field_in_doubled_braces(
    workspace: Workspace, server: FakeOpsGenie
) -> None:
    """The daemon says at a reload what `rulesd check` says of a rule that loads but almost
    certainly does not mean what it says: `(timeout)?` holds for every text, `{{host}}` is the
    text `{host}`."""
    daemon = workspace.start()
    rule_file = workspace.rules / "timeouts.yaml"
    rule_file.write_text("name: timeouts\nmatch: {message: {regex: '(timeout)?'}}\nalert: {message: 'on {{host}}'}\n")
    assert daemon.wait_for_log("reload ok: 2 rules; added: 1 (timeouts)"), daemon.stderr()
    lines = daemon.stderr().splitlines()
    everywhere = (
        f"rulesd: warning: {rule_file}:2:26: match.message.regex: the regex '(timeout)?' is found in every text"
    )
    assert any(line.startswith(everywhere) for line in lines), daemon.stderr()
    literal = f"rulesd: warning: {rule_file}:3:18: alert.message: '{{{{host}}}}' is the text '{{host}}' in the alert"
    assert any(line.startswith(literal) for line in lines), daemon.stderr()
    assert 0 == daemon.terminate()


def test_a_restart_says_the_warnings_its_rule_cache_kept_and_its_rules_page(
    workspace: Workspace, server: FakeOpsGenie
) -> None:
    """The daemon's rule cache (in its state directory) keeps the warnings of a rule set that
    loaded: the next start compiles it without checking it again, says the same warnings at the
    same places and pages as before; a changed file is checked afresh at its reload."""
    rule_file = workspace.rules / "timeouts.yaml"
    rule_file.write_text("name: timeouts\nmatch: {message: {regex: '(timeout)?'}}\nalert: {alias: 't-{id}{{x}}'}\n")

    def warnings(process: DaemonProcess) -> list[str]:
        return [line for line in process.stderr().splitlines() if line.startswith("rulesd: warning: ")]

    first = workspace.start()
    assert 0 == first.terminate()
    said = warnings(first)
    assert 2 == len(said) and all(str(rule_file) in line for line in said), first.stderr()
    assert 1 == len(list((workspace.root / "state" / "cache").glob("checked-*.bin")))
    second = workspace.start()
    assert said == warnings(second)
    workspace.append({"message": "any text", "id": 1})
    assert server.wait_for(lambda r: len(r) >= 1)
    rule_file.write_text("name: timeouts\nmatch: {message: {regex: 'timeout'}}\nalert: {alias: 't-{id}'}\n")
    assert second.wait_for_log("reload ok: 2 rules; changed: 1 (timeouts)"), second.stderr()
    assert said == warnings(second)  # (none more: the changed file draws none)
    workspace.append({"message": "any text", "id": 2}, {"message": "a timeout", "id": 3})
    assert server.wait_for(lambda r: len(r) >= 2)
    assert 0 == second.terminate()
    assert ["t-1{x}", "t-3"] == aliases(server)
    assert 2 == len(list((workspace.root / "state" / "cache").glob("checked-*.bin")))


BULK = 10_000


def test_a_huge_rule_set_loads_off_the_main_loop(tmp_path: Path, server: FakeOpsGenie) -> None:
    """While 10,000 new rules are read, checked and compiled, the main loop goes on: an event
    is alerted by the running rules and /healthz answers 200 before the reload is done; then
    the new set is swapped in and the reload line stays short."""
    ws = Workspace(tmp_path, server.url, metrics={"listen": "127.0.0.1:0"})
    daemon = ws.start()
    healthz = daemon.metrics_url().replace("/metrics", "/healthz")
    staged = tmp_path / "bulk.yaml.tmp"
    staged.write_text(rules_text([f"bulk-{i:05d}" for i in range(BULK)], kind="bulk"))
    os.rename(staged, ws.rules / "bulk.yaml")
    assert daemon.wait_for_log("reload: loading the rules")
    ws.append(page(1))
    assert server.wait_for(lambda r: len(r) >= 1)
    status, body = http_get(healthz)
    assert 200 == status, body
    assert "reload ok" not in daemon.stderr(), "the alert waited for the reload"
    assert daemon.wait_for_log(f"reload ok: {BULK + 1} rules; added: {BULK} (bulk-00000,", timeout=180)
    (line,) = [x for x in daemon.stderr().splitlines() if "reload ok" in x]
    assert len(line) < 200, line
    assert "page-1" == server.alerts()[0]["alias"]


def test_a_re_created_rules_directory_is_watched_again(workspace: Workspace, server: FakeOpsGenie) -> None:
    """The rules directory is removed and made again (a deploy that replaces it): its old watch
    went with it, yet a rule saved into the new directory is live within a second, not at the
    5 s periodic check."""
    daemon = workspace.start()
    shutil.rmtree(workspace.rules)
    workspace.rules.mkdir()
    # The removal is noticed and reloaded (an empty directory) before the save.
    assert daemon.wait_for_log("reload")
    staged = workspace.root / "urgent.yaml.tmp"
    staged.write_text("name: urgent\nmatch: {kind: urgent}\nalert: {alias: 'urgent-{id}'}\n")
    os.rename(staged, workspace.rules / "urgent.yaml")
    saved = time.monotonic()
    assert daemon.wait_for_log("reload ok: 1 rule; added: 1 (urgent)", timeout=10), daemon.stderr()
    assert time.monotonic() - saved < 1.0
    workspace.append({"kind": "urgent", "id": 1})
    assert server.wait_for(lambda r: len(r) >= 1)
    assert ["urgent-1"] == [a["alias"] for a in server.alerts()]


def rule_file_beside_everything(tmp_path: Path, server: FakeOpsGenie) -> Workspace:
    """A workspace whose one rule file lies beside the config, the event file and the state
    directory (`rules: [rules.yaml]`)."""
    ws = Workspace(tmp_path, server.url, rules=["rules.yaml"])
    (ws.rules / "rules.yaml").rename(tmp_path / "rules.yaml")
    return ws


def test_a_rule_file_is_not_reloaded_for_its_neighbours(tmp_path: Path, server: FakeOpsGenie) -> None:
    """The daemon's own commits into the state directory and the lines appended to the event
    file beside the rule file reload nothing; a save of the rule file is live within a second."""
    ws = rule_file_beside_everything(tmp_path, server)
    daemon = ws.start()
    for i in range(5):
        ws.append(page(i))
        assert server.wait_for(lambda r, n=i + 1: len(r) >= n)
    time.sleep(0.5)  # past the debounce of the last commit
    assert "reload" not in daemon.stderr()
    staged = tmp_path / "rules.yaml.tmp"
    staged.write_text(PAGE_RULE)
    os.rename(staged, tmp_path / "rules.yaml")
    saved = time.monotonic()
    assert daemon.wait_for_log("reload ok: 1 rule; added: 1 (r); removed: 1 (page-on-demand)"), daemon.stderr()
    assert time.monotonic() - saved < 1.0


def inotify_watches(pid: int) -> int:
    """How many inotify watches the process holds."""
    count = 0
    for path in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            count += path.read_text().count("inotify wd:")
        except FileNotFoundError:  # closed since the listing (a connection, a file just read)
            continue
    return count


def test_the_directory_of_a_rule_file_is_not_watched_recursively(tmp_path: Path, server: FakeOpsGenie) -> None:
    """A rule file's directory may hold a large tree (`/rules.yaml` in a container, `/etc`): only
    the directory itself is watched, not every directory below it."""
    ws = rule_file_beside_everything(tmp_path, server)
    for i in range(50):
        (tmp_path / "tree" / str(i)).mkdir(parents=True)
    daemon = ws.start()
    assert inotify_watches(daemon.proc.pid) < 10


def test_events_read_while_no_rule_is_loaded_then_a_rule_pages(workspace: Workspace, server: FakeOpsGenie) -> None:
    """Every rule file deleted while running: the reload leaves no rule, and says so as `check`
    does; events are read and fire nothing (the daemon used to die at the first one), and a
    rule saved later pages."""
    daemon = workspace.start()
    (workspace.rules / "rules.yaml").unlink()
    assert daemon.wait_for_log("reload ok: 0 rules; removed: 1 (page-on-demand)")
    assert daemon.wait_for_log(f"warning: {workspace.rules}: no rule files (*.yaml, *.yml) found"), daemon.stderr()
    workspace.append(page(1))
    time.sleep(0.3)  # read at once (the file is watched), well before the save below is reloaded
    (workspace.rules / "r.yaml").write_text(PAGE_RULE)
    assert daemon.wait_for_log("reload ok: 1 rule; added: 1 (r)"), daemon.stderr()
    workspace.append(page(2))
    assert server.wait_for(lambda r: len(r) >= 1)
    assert 0 == daemon.terminate()
    assert ["p-2"] == [a["alias"] for a in server.alerts()]
    assert "stopped: 2 event(s), 0 invalid, 1 alert(s) queued" in daemon.stderr()


def test_a_rules_directory_swapped_by_a_rename_is_live_within_a_second(
    workspace: Workspace, server: FakeOpsGenie
) -> None:
    """A deploy that renames the new rule directory over the old one (`mv rules rules.old; mv
    rules.new rules`) changes no file the old watch sees: the rename in the rule directory's
    parent is what tells, and a save into the new directory is live within a second too."""
    daemon = workspace.start()
    staged = workspace.root / "rules.new"
    staged.mkdir()
    (staged / "r.yaml").write_text(PAGE_RULE)
    os.rename(workspace.rules, workspace.root / "rules.old")
    os.rename(staged, workspace.rules)
    swapped = time.monotonic()
    assert daemon.wait_for_log("reload ok: 1 rule; added: 1 (r); removed: 1 (page-on-demand)"), daemon.stderr()
    assert time.monotonic() - swapped < 1.0
    (workspace.rules / "urgent.yaml").write_text("name: urgent\nmatch: {kind: urgent}\n")
    saved = time.monotonic()
    assert daemon.wait_for_log("reload ok: 2 rules; added: 1 (urgent)"), daemon.stderr()
    assert time.monotonic() - saved < 1.0
    workspace.append(page(1))
    assert server.wait_for(lambda r: len(r) >= 1)
    assert ["p-1"] == [a["alias"] for a in server.alerts()]
    assert 2 == daemon.stderr().count("reload ok"), "a line appended beside the rule directory reloaded it"
