"""The generated functions' code kept in the rule cache: a warm `replay` compiles none of it,
anything kept that is not what was written is compiled afresh, and the alerts are the same."""

from __future__ import annotations

import marshal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rulesd.daemon import Daemon
from rulesd.rules import generated_code
from rulesd.rules.cache import RuleCache
from tests.daemon_process import DaemonProcess, Workspace, aliases, daemon_parts, page, wait_until
from tests.fake_opsgenie import FakeOpsGenie
from tests.run_cli import clean_env

RULES = """
rules:
  - {name: api-timeout, match: {service: api, message: {regex: "timeout after \\\\d+ms"}}}
  - {name: panic, match: {message: {contains: panic}, host: {endswith: ".example.com"}}}
  - {name: slow, match: {service: {in: [db, cache]}, latency_ms: {gt: 900}}}
"""

EVENTS = (
    '{"service": "api", "message": "timeout after 250ms"}\n'
    '{"service": "db", "latency_ms": 1200, "message": "slow"}\n'
    '{"service": "web", "host": "w1.example.com", "message": "kernel panic"}\n'
)

# `rulesd ARGS` run by `runpy`, then how many sources of generated code it compiled.
_COUNTED = """
import builtins, runpy, sys
compiled = []
original = builtins.compile
def counting(source, filename, *args, **kwargs):
    if filename == "<rulesd>":
        compiled.append(source)
    return original(source, filename, *args, **kwargs)
builtins.compile = counting
sys.argv = ["rulesd", *sys.argv[1:]]
try:
    runpy.run_module("rulesd", run_name="__main__")
except SystemExit:
    pass
print(len(compiled), file=sys.stderr)
"""


def _replay(tmp_path: Path, rules: str = RULES, events: str = EVENTS, seed: str = "random") -> tuple[int, str]:
    """How many generated sources a `rulesd replay` of `events` compiled, and its output
    (`seed`: the process's PYTHONHASHSEED)."""
    path = tmp_path / "events.jsonl"
    path.write_text(events)
    return _counted(tmp_path, rules, "replay", "--rules", "{rules}", str(path), seed=seed)


def _counted(tmp_path: Path, rules: str, *args: str, seed: str = "random") -> tuple[int, str]:
    """How many generated sources `rulesd ARGS` compiled ({rules}: the path of `rules`, written
    to a file), and its output."""
    path = tmp_path / "rules.yaml"
    path.write_text(rules)
    done = subprocess.run(
        [sys.executable, "-c", _COUNTED, *(arg.replace("{rules}", str(path)) for arg in args)],
        capture_output=True,
        text=True,
        env=clean_env({"RULESD_CACHE_DIR": str(tmp_path / "cache"), "PYTHONHASHSEED": seed}),
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    return int(done.stderr.strip().splitlines()[-1]), done.stdout


def test_a_warm_replay_compiles_no_generated_code(tmp_path: Path) -> None:
    """The first replay compiles the predicates' and the index's code and keeps it with the
    rule set; the next one reads it back, and finds the same alerts."""
    first, first_out = _replay(tmp_path)
    second, second_out = _replay(tmp_path)
    assert first > 0
    assert 0 == second
    assert "alerts: 3" in second_out
    assert first_out == second_out


def test_the_code_written_is_the_same_whatever_the_hash_seed(tmp_path: Path) -> None:
    """A rule's values (`in: [...]`, a set once read) fill a table in an order of their own,
    not the one the process's hash seed gives a set: a table's order is that of the code
    written for it, so code kept by one start serves the next, whatever its seed."""
    rules = """
rules:
  - {name: bad, match: {service: api, level: [error, fatal]}}
  - {name: panic, match: {service: api, level: fatal, message: {contains: panic}}}
  - {name: web, match: {service: web}}
"""
    events = "".join(
        f'{{"service": "{service}", "level": "{level}", "message": "panic"}}\n'
        for service, level in (("api", "error"), ("api", "fatal"), ("web", "info"))
    )
    first, first_out = _replay(tmp_path, rules, events, seed="1")
    assert first > 0 and "alerts: 3" in first_out and "panic: 1 firing" in first_out
    for seed in ("2", "3", "4", "5", "6", "7", "8"):
        assert (0, first_out) == _replay(tmp_path, rules, events, seed=seed)


def test_kept_code_not_as_written_is_compiled_afresh(tmp_path: Path) -> None:
    """An entry that is not a mapping of source texts to code (from another version, say) is a
    miss: everything is compiled again, and kept anew for the next start."""
    first, first_out = _replay(tmp_path)
    (entry,) = (tmp_path / "cache").glob("code-*.bin")
    key = entry.name.removeprefix("code-").removesuffix(".bin")
    cache = RuleCache(tmp_path / "cache")
    for wrong in ([1, 2], {"def run(e):\n    return 1\n": "not code"}, {1: compile("1", "<x>", "eval")}):
        cache.put("code", key, marshal.dumps(wrong))
        again, out = _replay(tmp_path)
        assert (first, first_out) == (again, out)
        assert (0, first_out) == _replay(tmp_path)


def test_an_edited_rule_set_alerts_as_edited(tmp_path: Path) -> None:
    """Rules of the same shape with other values are written as the same sources (the values
    are the functions' globals, never in their text): the code kept before the edit serves
    after it, and the edited rule set alerts as its rules say."""
    _replay(tmp_path)
    edited = RULES.replace("service: api", "service: web").replace("gt: 900", "gt: 2000")
    compiled, out = _replay(tmp_path, edited)
    assert 0 == compiled
    assert "alerts: 1" in out and "panic" in out and "api-timeout" not in out and "slow" not in out
    assert (0, out) == _replay(tmp_path, edited)


def test_a_cache_directory_that_is_not_private_keeps_no_code(tmp_path: Path) -> None:
    """Code read back must be this user's alone: in a directory others may write, nothing is
    kept or read, and everything is compiled at each start."""
    (tmp_path / "cache").mkdir(mode=0o777)
    (tmp_path / "cache").chmod(0o777)
    first, first_out = _replay(tmp_path)
    assert [] == list((tmp_path / "cache").glob("code-*.bin"))
    assert (first, first_out) == _replay(tmp_path)


def test_a_keep_with_nothing_asked_anew_reads_no_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`replay` keeps after every block: once what was used is kept, a keep with nothing asked
    for since costs one test, not a look at every source (it is on the replay's every block)."""
    looked: list[str] = []

    class Counting(set[str]):  # (the sources the cache holds)
        def __contains__(self, source: object) -> bool:
            looked.append(str(source))
            return super().__contains__(source)

    _set_back_after(monkeypatch)
    cache = RuleCache(tmp_path / "cache")
    generated_code.load(cache, "key")
    monkeypatch.setattr(generated_code, "_written", Counting())
    sources = [f"def run(e):\n    return e + {n}\n" for n in range(3)]
    for source in sources:
        generated_code.code_for(source)
    generated_code.keep(cache, "key")
    assert looked  # the first keep looks, and writes what was compiled
    assert cache.get("code", "key") is not None
    looked.clear()
    monkeypatch.setattr(generated_code, "_written", Counting(generated_code._written))  # (what that keep wrote)
    for source in sources:  # asked again: nothing new
        generated_code.code_for(source)
    for _ in range(3):
        generated_code.keep(cache, "key")
    assert [] == looked
    generated_code.code_for("def run(e):\n    return e * 2\n")  # a source asked anew is kept
    generated_code.keep(cache, "key")
    assert 4 == len(marshal.loads(cache.get("code", "key") or b""))


def _set_back_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module's state as it is, set back after the test (for the other tests in process)."""
    for name in ("_kept", "_written"):
        monkeypatch.setattr(generated_code, name, getattr(generated_code, name))
    monkeypatch.setattr(generated_code, "_building", threading.local())


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("check", "{rules}"), "OK: 1 file(s), 3 rule(s)"),
        (("explain", "--rules", "{rules}", '{"service": "api", "message": "timeout after 250ms"}'), "api-timeout"),
        (("test", "{tests}"), "rule tests: 1 passed, 0 failed"),
    ],
    ids=["check", "explain", "test"],
)
def test_a_warm_check_explain_or_test_compiles_no_generated_code(
    tmp_path: Path, args: tuple[str, ...], said: str
) -> None:
    """`rulesd check`, `explain` and `test` keep the code of the rule set they load as replay
    does: the next run of each reads it back, and says the same."""
    tests = tmp_path / "rules.test.yaml"
    tests.write_text(
        "rule_files: [rules.yaml]\ntests:\n  - name: a slow db pages\n"
        "    events: [{event: {service: db, latency_ms: 1200}}]\n    expect_alerts: [{event: 1, rules: [slow]}]\n"
    )
    args = tuple(arg.replace("{tests}", str(tests)) for arg in args)
    first, first_out = _counted(tmp_path, RULES, *args)
    assert first > 0
    assert (0, first_out) == _counted(tmp_path, RULES, *args)
    assert said in first_out


def test_a_check_of_rules_with_errors_keeps_no_code(tmp_path: Path) -> None:
    """Only a rule set that loads is kept: the code of part of one would take the whole set's
    place under the same key."""
    broken = RULES + "  - {name: broken, match: {service: {gt: api}}}\n"
    path = tmp_path / "rules.yaml"
    path.write_text(broken)
    done = subprocess.run(
        [sys.executable, "-m", "rulesd", "check", str(path)],
        capture_output=True,
        env=clean_env({"RULESD_CACHE_DIR": str(tmp_path / "cache")}),
        timeout=60,
        check=False,
    )
    assert 1 == done.returncode, done.stdout
    assert [] == list((tmp_path / "cache").glob("code-*.bin"))


# `rulesd ARGS` run by `runpy`, saying on standard error each generated source it compiles.
_MARKED = """
import builtins, runpy, sys
original = builtins.compile
def marking(source, filename, *args, **kwargs):
    if filename == "<rulesd>":
        print("test: generated code compiled", file=sys.stderr, flush=True)
    return original(source, filename, *args, **kwargs)
builtins.compile = marking
sys.argv = ["rulesd", *sys.argv[1:]]
runpy.run_module("rulesd", run_name="__main__")
"""
COMPILED = "test: generated code compiled"


def _run(workspace: Workspace) -> DaemonProcess:
    """`rulesd run` on `workspace`, started, saying each generated source it compiles."""
    process = DaemonProcess(workspace.root, ["run", "--config", str(workspace.config)], None, launcher=("-c", _MARKED))
    workspace.processes.append(process)
    assert process.wait_for_log("rulesd started"), process.output()
    return process


def _kept_sources(workspace: Workspace) -> set[str]:
    """The sources whose code the daemon's rule cache holds (in its state directory)."""
    found = list((workspace.root / "state" / "cache").glob("code-*.bin"))
    if not found:
        return set()
    (entry,) = found
    key = entry.name.removeprefix("code-").removesuffix(".bin")
    blob = RuleCache(entry.parent).get("code", key)
    return set(marshal.loads(blob)) if blob is not None else set()


def test_a_warm_run_start_compiles_no_generated_code_and_an_edited_rule_alerts_as_edited(
    workspace: Workspace, server: FakeOpsGenie
) -> None:
    """The daemon keeps its rule set's code in its state directory's cache, the functions the
    first events wrote included: the next start compiles none of it and pages as before; a
    reload with an edited rule (the same sources, other values) pages as edited."""
    first = _run(workspace)
    workspace.append(page(1))
    assert server.wait_for(lambda r: len(r) >= 1), first.output()
    compiled = first.stderr().count(COMPILED)
    assert compiled > 0
    assert wait_until(lambda: len(_kept_sources(workspace)) == compiled), first.stderr()
    assert 0 == first.terminate()
    second = _run(workspace)
    workspace.append(page(2))
    assert server.wait_for(lambda r: len(r) >= 2), second.output()
    rule_file = workspace.rules / "rules.yaml"
    rule_file.write_text(rule_file.read_text().replace("kind: page", "kind: other"))
    assert second.wait_for_log("reload ok: 1 rule; changed: 1 (page-on-demand)"), second.stderr()
    workspace.append(page(3), {"kind": "other", "id": 4})
    assert server.wait_for(lambda r: len(r) >= 3), second.output()
    assert 0 == second.terminate()
    assert ["page-1", "page-2", "page-4"] == aliases(server)
    assert 0 == second.stderr().count(COMPILED), second.stderr()


NEW_SHAPE = "name: slow\nmatch: {latency_ms: {gt: 900}, service: {in: [db, cache]}}\nalert: {alias: 'slow-{id}'}\n"


def test_what_a_reload_compiles_is_kept_once_it_runs_and_a_failed_reload_keeps_nothing(
    workspace: Workspace, server: FakeOpsGenie
) -> None:
    """A reload whose rule set has errors may have compiled its good rules' code: none of it is
    kept. Once the rules load, the code they compiled anew is kept, and a restart compiles
    nothing."""
    daemon = _run(workspace)
    assert wait_until(lambda: len(_kept_sources(workspace)) > 0), daemon.stderr()
    before = _kept_sources(workspace)
    compiled = daemon.stderr().count(COMPILED)
    (workspace.rules / "slow.yaml").write_text(NEW_SHAPE)
    (workspace.rules / "broken.yaml").write_text("name: broken\nmatch: {kind: {gt: text}}\n")
    assert daemon.wait_for_log("reload failed"), daemon.stderr()
    assert daemon.stderr().count(COMPILED) > compiled  # (the good rule's code: compiled, not kept)
    time.sleep(1)  # (turns of the loop, each of which keeps what the running set compiled anew)
    assert before == _kept_sources(workspace)
    (workspace.rules / "broken.yaml").unlink()
    assert daemon.wait_for_log("reload ok: 2 rules; added: 1 (slow)"), daemon.stderr()
    assert wait_until(lambda: _kept_sources(workspace) > before), daemon.stderr()
    workspace.append({"latency_ms": 1200, "service": "db", "id": 1})
    assert server.wait_for(lambda r: len(r) >= 1), daemon.output()
    assert 0 == daemon.terminate()
    again = _run(workspace)
    workspace.append({"latency_ms": 1500, "service": "cache", "id": 2}, page(3))
    assert server.wait_for(lambda r: len(r) >= 3), again.output()
    assert 0 == again.terminate()
    assert ["slow-1", "slow-2", "page-3"] == aliases(server)
    assert 0 == again.stderr().count(COMPILED), again.stderr()


def test_a_daemon_whose_cache_is_not_private_keeps_no_code(workspace: Workspace, server: FakeOpsGenie) -> None:
    """Code read back must be this user's alone: a state directory's cache that others may
    write keeps nothing, and every start compiles its code again."""
    cache = workspace.root / "state" / "cache"
    cache.mkdir(parents=True)
    (workspace.root / "state").chmod(0o700)
    cache.chmod(0o777)
    counts = []
    for i in range(2):
        daemon = _run(workspace)
        workspace.append(page(i))
        assert server.wait_for(lambda r, n=i: len(r) > n), daemon.output()
        time.sleep(0.5)  # (turns of the loop)
        assert 0 == daemon.terminate()
        counts.append(daemon.stderr().count(COMPILED))
    assert counts[0] > 0 and counts[0] == counts[1]
    assert [] == list(cache.glob("code-*.bin"))


def test_a_daemon_reloaded_again_and_again_holds_one_rule_sets_code(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each reload here brings rules of a shape never seen (one more comparison): what the
    module serves and keeps stays the running set's, not every set's the daemon ever loaded."""
    _set_back_after(monkeypatch)
    with daemon_parts(workspace.config, time.time) as parts:
        generated_code.load(parts.rule_cache, generated_code.code_key(parts.config.rules))  # (as `rulesd run`)
        daemon = Daemon(parts)
        rule_file = workspace.rules / "rules.yaml"
        seen: set[str] = set()
        for n in range(1, 25):
            fields = ", ".join(f"f{i}: {{gt: {i}}}" for i in range(n))
            rule_file.write_text(f"name: r\nmatch: {{{fields}}}\n")
            assert daemon.reload()
            daemon._reloads()  # (a turn of the loop: the new set's code kept)
            running = generated_code._building.uses.code
            seen |= set(running)
            assert set(generated_code._kept) <= set(running)
            assert generated_code._written == set(running)
            assert _kept_sources(workspace) == set(running)
        assert len(seen) > 3 * len(running)


def _recorded_after(command: list[str], tmp_path: Path) -> int:
    """How many sources a thread's record holds after `rulesd COMMAND` ran in it (in process, as a
    program using rulesd runs it) and the thread then checked 30 rule sets of shapes never seen
    (one more comparison each)."""
    from rulesd.cli import main
    from rulesd.rules.loader import check_paths

    rule_file = tmp_path / "shapes.yaml"
    held: list[int] = []

    def program() -> None:
        assert 0 == main(command)
        for n in range(1, 31):
            fields = ", ".join(f"f{i}: {{gt: {i}}}" for i in range(n))
            rule_file.write_text(f"name: r\nmatch: {{{fields}}}\n")
            assert check_paths([rule_file]).ruleset is not None
        uses = getattr(generated_code._building, "uses", None)
        held.append(0 if uses is None else len(uses.code))

    thread = threading.Thread(target=program)  # (a thread of its own: its record goes with it)
    thread.start()
    thread.join(timeout=60)
    return held[0]


@pytest.mark.parametrize("command", ["check", "test"])
def test_a_command_run_in_process_leaves_its_thread_recording_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """`rulesd check` or `test` run by a program in one of its threads: once the command returns,
    the rule sets the thread checks or builds afterwards are recorded nowhere. The record the
    command began took every source asked for in the thread from then on, and never let go (a
    code object for each shape of rule met: 30 here), while the code the command kept is in the
    cache."""
    _set_back_after(monkeypatch)
    monkeypatch.setenv("RULESD_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "rules.yaml").write_text(RULES)
    tests = tmp_path / "rules.test.yaml"
    tests.write_text(
        "rule_files: [rules.yaml]\ntests:\n  - name: a slow db pages\n"
        "    events: [{event: {service: db, latency_ms: 1200}}]\n    expect_alerts: [{event: 1, rules: [slow]}]\n"
    )
    named = tests if command == "test" else tmp_path / "rules.yaml"
    assert 0 == _recorded_after([command, str(named)], tmp_path)
    assert list((tmp_path / "cache").glob("code-*.bin")), capsys.readouterr()


def test_rule_tests_keep_the_code_each_file_asked_for_though_they_share_a_rule_set(tmp_path: Path) -> None:
    """Test files naming the same rule files share their check: code first asked for by the
    second (the index's, which a first file of only a timer's advance never ran) is kept with
    the rest, and a second `rulesd test` compiles nothing."""
    tests = tmp_path / "tests"
    tests.mkdir()
    (tmp_path / "rules.yaml").write_text(RULES)
    head = "rule_files: [../rules.yaml]\ntests:\n  - name: t\n    events:\n"
    (tests / "a.test.yaml").write_text(head + "      - {advance: 1m}\n    expect_alerts: []\n")
    (tests / "b.test.yaml").write_text(
        head + '      - {event: {host: w1.example.com, message: "kernel panic"}}\n'
        "    expect_alerts: [{event: 1, rules: [panic]}]\n"
    )
    first, first_out = _counted(tmp_path, RULES, "test", str(tests))
    assert "2 passed" in first_out, first_out
    assert first > 0
    assert (0, first_out) == _counted(tmp_path, RULES, "test", str(tests))
