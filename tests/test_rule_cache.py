"""The rule cache: private files, read back only when trusted, and the same rules either way."""

from __future__ import annotations

import marshal
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rulesd.config import load_config
from rulesd.daemon import build_parts
from rulesd.document import Document, split_marks
from rulesd.rules import cache as cache_module
from rulesd.rules import loader
from rulesd.rules.cache import MAX_FILES, STALE_AFTER, RuleCache
from rulesd.rules.loader import check_paths, load_ruleset
from rulesd.rules.patterns import FieldScanner
from rulesd.yamldoc import parse_yaml
from tests.daemon_process import Workspace, daemon_parts
from tests.run_cli import RUN_RULESD, clean_env, imported_by, rulesd_cli

RULES = """
rules:
  - {name: a, match: {service: api, message: {regex: "timeout after \\\\d+ms"}}}
  - {name: b, match: {message: {contains: panic}, host: {endswith: ".example.com"}}}
"""


def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    """The directory is 0700 and every file 0600, even under umask 000."""
    old = os.umask(0)
    try:
        cache = RuleCache(tmp_path / "cache")
        cache.put("kind", "k", b"payload")
    finally:
        os.umask(old)
    assert 0o700 == (tmp_path / "cache").stat().st_mode & 0o777
    assert [0o600] == [p.stat().st_mode & 0o777 for p in (tmp_path / "cache").iterdir()]
    assert b"payload" == cache.get("kind", "k")


def test_a_file_others_may_write_or_a_damaged_one_is_not_used(tmp_path: Path) -> None:
    """Group- or world-writable, or not matching its checksum: a miss, not an error."""
    cache = RuleCache(tmp_path / "cache")
    cache.put("kind", "shared", b"x")
    cache.put("kind", "damaged", b"y" * 100)
    (path,) = (tmp_path / "cache").glob("kind-shared.bin")
    path.chmod(0o620)
    (damaged,) = (tmp_path / "cache").glob("kind-damaged.bin")
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"z")
    assert cache.get("kind", "shared") is None
    assert cache.get("kind", "damaged") is None
    assert cache.get("kind", "missing") is None


def test_old_entries_are_pruned(tmp_path: Path) -> None:
    """At most MAX_FILES per kind are kept."""
    cache = RuleCache(tmp_path)
    for i in range(MAX_FILES + 5):
        cache.put("kind", f"k{i}", b"x")
    assert MAX_FILES == len(list(tmp_path.glob("kind-*.bin")))


def test_a_kind_whose_name_begins_another_kinds_is_pruned_apart(tmp_path: Path) -> None:
    """The entries of `config-blanked-1` (or any kind whose name begins with another's and a
    "-") do not count against `config`'s, nor are pruned with them: 10 of one kind and MAX_FILES
    + 1 of the other leave the 10 and MAX_FILES."""
    cache = RuleCache(tmp_path)
    for i in range(10):
        cache.put("config-blanked-1", f"b{i}", b"x")
    for i in range(MAX_FILES + 1):
        cache.put("config", f"c{i}", b"x")
    assert 10 == len(list(tmp_path.glob("config-blanked-1-*.bin")))
    assert MAX_FILES == len(list(tmp_path.glob("config-c*.bin")))


def test_a_write_that_fails_leaves_no_file_behind(tmp_path: Path) -> None:
    """A cache write cut short (here by a file size limit, as a full disk would) leaves
    neither an entry nor its temporary file: each failed start would otherwise leave one
    more file, which pruning (of entries only) never removes."""
    program = (
        "import resource, signal, sys\n"
        "from rulesd.rules.cache import RuleCache\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "RuleCache(sys.argv[1]).put('kind', 'big', b'x' * 100_000)\n"
    )
    subprocess.run([sys.executable, "-c", program, str(tmp_path / "cache")], check=True)
    assert [] == os.listdir(tmp_path / "cache")


def test_a_temporary_file_left_by_a_killed_writer_does_not_stop_writes(tmp_path: Path) -> None:
    """A writer killed mid-write leaves its temporary file; a later process given the same
    process id (often, in containers) still writes the entry (it was a miss at every start)."""
    cache = RuleCache(tmp_path / "cache")
    cache.put("kind", "other", b"x")  # (the directory made)
    path = tmp_path / "cache" / "kind-k.bin"
    Path(f"{path}.{os.getpid()}.tmp").write_bytes(b"half a wri")
    cache.put("kind", "k", b"payload")
    assert b"payload" == cache.get("kind", "k")


def writer(directory: Path, at_rename: str) -> subprocess.Popen[str]:
    """A process writing the entry ("kind", "k") of the cache in `directory`, running `at_rename`
    (Python; `replace(tmp, path)` renames) where it would rename its temporary file."""
    program = (
        "import os, signal, sys\n"
        "from rulesd.rules.cache import RuleCache\n"
        "replace = os.replace\n"
        f"os.replace = lambda tmp, path: [{at_rename}]\n"
        "RuleCache(sys.argv[1]).put('kind', 'k', b'payload')\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", program, str(directory)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def temporary_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.tmp"))


def test_temporary_files_of_killed_writers_are_removed_by_a_later_write(tmp_path: Path) -> None:
    """A writer killed between writing its temporary file and renaming it (a daemon restarted
    after SIGKILL, a `check` killed by CI's timeout) left the file for good, one more at each
    kill. A later write removes those older than STALE_AFTER; a younger one stays (its writer
    may be about to lock it), and so do the entries."""
    directory = tmp_path / "cache"
    cache = RuleCache(directory)
    cache.put("kind", "other", b"x")
    for _ in range(2):
        killed = writer(directory, "os.kill(os.getpid(), signal.SIGKILL)")
        assert -signal.SIGKILL == killed.wait(timeout=30)
    old, young = temporary_files(directory)
    long_ago = time.time() - STALE_AFTER - 60
    os.utime(old, (long_ago, long_ago))
    legacy = directory / f"kind-k.bin.{os.getpid()}.tmp"  # an earlier rulesd's name for one
    legacy.write_bytes(b"half a wri")
    os.utime(legacy, (long_ago, long_ago))
    cache.put("kind", "later", b"y")
    assert [young] == temporary_files(directory)
    assert (b"x", b"y") == (cache.get("kind", "other"), cache.get("kind", "later"))


def test_a_live_writer_s_temporary_file_is_left_alone_however_old(tmp_path: Path) -> None:
    """A writer holds its temporary file locked until it renames it: another process's write
    removes none that a live writer is at, even one untouched for a day (a writer stopped,
    a clock set back), and the entry is written once the writer goes on."""
    directory = tmp_path / "cache"
    cache = RuleCache(directory)
    cache.put("kind", "other", b"x")
    live = writer(directory, "print('renaming', flush=True), sys.stdin.readline(), replace(tmp, path)")
    assert live.stdout is not None and live.stdin is not None
    assert "renaming\n" == live.stdout.readline()
    (held,) = temporary_files(directory)
    day_ago = time.time() - 86400
    os.utime(held, (day_ago, day_ago))
    cache.put("kind", "later", b"y")
    assert [held] == temporary_files(directory)
    live.stdin.write("\n")
    live.stdin.close()
    assert 0 == live.wait(timeout=30)
    assert [] == temporary_files(directory)
    assert b"payload" == cache.get("kind", "k")


def test_user_cache_location(tmp_path: Path) -> None:
    """RULESD_CACHE_DIR, else XDG_CACHE_HOME/rulesd; an empty RULESD_CACHE_DIR turns it off."""
    assert RuleCache.for_user({"RULESD_CACHE_DIR": ""}) is None
    chosen = RuleCache.for_user({"RULESD_CACHE_DIR": str(tmp_path / "c")})
    assert chosen is not None and str(tmp_path / "c") == chosen.directory
    xdg = RuleCache.for_user({"XDG_CACHE_HOME": str(tmp_path)})
    assert xdg is not None and str(tmp_path / "rulesd") == xdg.directory


def test_a_relative_xdg_cache_home_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The XDG Base Directory spec holds a relative path invalid: the cache is then the one
    under the home directory, not a directory made in the rules repository being checked."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cache = RuleCache.for_user({"XDG_CACHE_HOME": "relative"})
    assert cache is not None and str(tmp_path / "home" / ".cache" / "rulesd") == cache.directory


def _summary(path: Path, cache: RuleCache) -> tuple[list[str], list[str], list[str]]:
    result = check_paths([path], cache)
    rules = result.ruleset.rules if result.ruleset else ()
    return [r.name for r in rules], [r.fingerprint for r in rules], [str(p) for p in result.problems]


def test_an_unchanged_rule_file_is_not_parsed_checked_or_compiled_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second load reads the document and the pattern database back, and gives the same
    rule set, whose patterns match as before."""
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    cache = RuleCache(tmp_path / "cache")
    first = _summary(path, cache)

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("not from the cache")

    monkeypatch.setattr(loader, "_read_yaml", fail)
    monkeypatch.setattr(loader, "schema_violations", fail)
    monkeypatch.setattr(FieldScanner, "compile", fail)
    assert first == _summary(path, cache)
    ruleset = check_paths([path], cache).ruleset
    assert ruleset is not None
    rule_a = ruleset.by_name()["a"]
    assert rule_a.match({"service": "api", "message": "upstream timeout after 250ms"})
    assert not rule_a.match({"service": "api", "message": "timeout after ms"})


def test_a_warm_load_reads_no_deeper_marks_and_they_still_locate_every_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached document's marks of the paths below a rule's keys (three quarters of them) are
    read back only when such a part is located: a warm load locates only the rules and their
    names. Read then, they are where the YAML put each part, as if the file were read again."""
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    cache = RuleCache(tmp_path / "cache")
    first = _summary(path, cache)
    read_back: list[Document] = []
    cached_document = loader.cached_document

    def recorded(*args: Any) -> Document | None:
        doc = cached_document(*args)
        read_back.extend([doc] if doc is not None else [])
        return doc

    monkeypatch.setattr(loader, "cached_document", recorded)
    assert first == _summary(path, cache)
    marks = [(max(map(len, doc.value_marks)), max(map(len, doc.key_marks))) for doc in read_back]
    assert [(3, 3)] == marks  # (`rules[0].match`: the paths of a rule's keys at most)
    fresh = parse_yaml(RULES, str(path))
    parts = [("rules", 0, "match", "message", "regex"), ("rules", 1, "match", "host"), ("rules", 0), ("rules", 9)]
    for key in (False, True):
        assert [fresh.locate(p, key=key) for p in parts] == [read_back[0].locate(p, key=key) for p in parts]
    assert (fresh.value_marks, fresh.key_marks) == (read_back[0].value_marks, read_back[0].key_marks)
    ruleset = check_paths([path], cache).ruleset
    assert ruleset is not None
    explained = loader.rule_sources(ruleset.rules, cache)["a"].doc  # (`rulesd explain` reads it so)
    assert fresh.locate(parts[0]) == explained.locate(parts[0])


def test_a_sealed_part_is_checked_when_opened_and_the_rest_at_every_read(tmp_path: Path) -> None:
    """`put_sealed`: the blob and the sealed part's digest are checked by `get_sealed`, the
    part's bytes only by `open`, which gives nothing once they are damaged; a damaged blob is a
    miss, and neither kind of entry is read as the other."""
    cache = RuleCache(tmp_path / "cache")
    cache.put_sealed("kind", "k", b"blob", b"sealed part")
    cache.put("kind", "plain", b"blob")
    entry = cache.get_sealed("kind", "k")
    assert entry is not None
    assert (b"blob", b"sealed part") == (entry[0], bytes(entry[1].open() or b""))
    assert cache.get("kind", "k") is None
    assert cache.get_sealed("kind", "plain") is None
    (path,) = (tmp_path / "cache").glob("kind-k.bin")
    whole = path.read_bytes()
    path.write_bytes(whole[:-1] + b"T")  # the sealed part's last byte
    entry = cache.get_sealed("kind", "k")
    assert entry is not None
    assert (b"blob", None) == (entry[0], entry[1].open())
    blob_at = whole.index(b"blob")
    for damaged in (whole[:blob_at] + b"glob" + whole[blob_at + 4 :], whole[: blob_at + 2]):
        path.write_bytes(damaged)
        assert cache.get_sealed("kind", "k") is None


def _equalities(count: int) -> str:
    """`count` rules without patterns (no Hyperscan database among the entries)."""
    return "rules:\n" + "".join(
        f"  - name: r{i}\n    match:\n      service: api-{i}\n      host: {{endswith: .example.com}}\n"
        for i in range(count)
    )


def test_a_warm_load_checks_no_deeper_marks_until_they_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached document's deeper marks (three quarters of its entry at a thousand rules) are
    hashed against their checksum only when they are read: a warm load hashes none of them."""
    path = tmp_path / "rules.yaml"
    path.write_text(_equalities(40))
    cache = RuleCache(tmp_path / "cache")
    first = _summary(path, cache)
    (entry,) = (tmp_path / "cache").glob("document-*.bin")
    value_marks, key_marks = parse_yaml(path.read_text(), str(path)).marks()
    deeper = len(marshal.dumps((split_marks(value_marks)[1], split_marks(key_marks)[1])))
    hashed: list[int] = []
    sha256 = cache_module.hashlib.sha256

    def counted(*data: bytes) -> Any:
        hashed.extend(len(part) for part in data)
        return sha256(*data)

    monkeypatch.setattr(cache_module.hashlib, "sha256", counted)
    assert first == _summary(path, cache)
    assert 0 < max(hashed) < entry.stat().st_size - deeper / 2


@pytest.mark.parametrize("damage", ["other marks", "not marshal", "cut"])
def test_deeper_marks_damaged_in_the_cache_are_never_served(tmp_path: Path, damage: str) -> None:
    """Deeper marks damaged after the entry was written (here: rewritten, garbled, cut short)
    are not used: the part is located where the file puts it, from the file read again."""
    path = tmp_path / "rules.yaml"
    path.write_text(_equalities(3))
    cache = RuleCache(tmp_path / "cache")
    _summary(path, cache)
    (entry,) = (tmp_path / "cache").glob("document-*.bin")
    fresh = parse_yaml(path.read_text(), str(path))
    value_marks, key_marks = fresh.marks()
    sealed = marshal.dumps((value_marks, key_marks))
    whole = entry.read_bytes()
    start = whole.index(b"rulesd-cache-sealed-1\n") + len(b"rulesd-cache-sealed-1\n")
    tail = 72 + start + int.from_bytes(whole[start + 32 : start + 40], "big")
    wrong = {p: (99, 9) for p in value_marks}
    replaced = {"other marks": marshal.dumps((wrong, wrong)), "not marshal": b"\xff" * 50, "cut": b""}[damage]
    entry.write_bytes(whole[:tail] + replaced)
    assert len(whole) - tail < len(sealed)  # (the deeper marks alone)
    data = path.read_bytes()
    doc = loader.cached_document(cache, loader.document_key(data), str(path), data)
    assert doc is not None  # (the rest of the entry is whole)
    parts = [("rules", 2, "match", "host", "endswith"), ("rules", 1, "match", "service"), ("rules", 0)]
    for key in (False, True):
        assert [fresh.locate(p, key=key) for p in parts] == [doc.locate(p, key=key) for p in parts]
    assert (value_marks, key_marks) == doc.marks()


def test_a_pattern_hyperscan_refuses_is_reported_once_at_its_place_from_a_cached_document(tmp_path: Path) -> None:
    """`\\C` passes RE2, so the file is cached, but not Hyperscan: each load reports it once (its
    predicate and its hints register it), at the regex's line, the second from the document read
    back, whose deeper marks are then read."""
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - name: r\n    match: {message: {regex: 'x\\C'}}\n")
    cache = RuleCache(tmp_path / "cache")
    first, second = (_summary(path, cache)[2] for _ in range(2))
    assert [f"{path}:3:30: error: rules[0].match.message.regex: regex 'x\\\\C' is refused"] == [
        p[: p.index(": \\C")] for p in first
    ]
    assert first == second
    assert any(name.startswith("document-") for name in os.listdir(cache.directory))


def test_a_file_with_warnings_is_cached_and_warned_about_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A warning (an unquoted NO, which YAML reads as false) leaves the rules loadable, so the
    file is cached like any other, and read back it draws the same warning at the same place."""
    path = tmp_path / "rules.yaml"
    path.write_text(RULES + "  - {name: c, match: {country: NO}}\n")
    cache = RuleCache(tmp_path / "cache")
    first = _summary(path, cache)
    assert ["a", "b", "c"] == first[0]
    assert [f"{path}:5:32: warning: rules[2].match.country: YAML reads the unquoted NO as false"] == [
        p[: p.index(", not as text")] for p in first[2]
    ]
    monkeypatch.setattr(loader, "_read_yaml", lambda *args: pytest.fail("not from the cache"))
    assert first == _summary(path, cache)


def test_a_replay_whose_rule_files_are_all_cached_imports_no_yaml(tmp_path: Path) -> None:
    """PyYAML (and importlib.resources) are a fifth of a warm `rulesd replay`'s start-up: a
    start that finds every rule file in the cache needs neither. The first start fills it.
    difflib is for the "did you mean" of a problem, which neither start has."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    events = tmp_path / "events.jsonl"
    events.write_text('{"service": "api", "message": "timeout after 250ms"}\n')

    def imported() -> tuple[str, str]:
        modules = ("yaml", "importlib.resources", "difflib")
        return imported_by(
            modules, "replay", "--rules", str(rules), str(events), env={"RULESD_CACHE_DIR": str(tmp_path / "cache")}
        )

    first, first_out = imported()
    second, second_out = imported()
    assert ("['yaml']", "[]") == (first, second)
    assert "alerts: 1" in second_out
    assert first_out == second_out


def test_a_warm_replay_of_an_installed_rulesd_imports_no_pathlib(tmp_path: Path) -> None:
    """`pathlib` (with `urllib.parse`, `ntpath` and `fnmatch`) is ~2.5 ms of an installed
    rulesd's start: a warm start, which only reads the cache, takes its paths as text; the cold
    one, which writes it, still imports it. Run as `pip install .` runs it: the editable
    install's finder imports `pathlib` before rulesd starts."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    events = tmp_path / "events.jsonl"
    events.write_text('{"service": "api", "message": "timeout after 250ms"}\n')
    modules = ("pathlib", "urllib.parse", "ntpath", "fnmatch")
    env = {"RULESD_CACHE_DIR": str(tmp_path / "cache")}
    (first, _), (second, out) = [
        imported_by(modules, "replay", "--rules", str(rules), str(events), env=env, installed=True) for _ in range(2)
    ]
    assert "pathlib" in first and "[]" == second
    assert "alerts: 1" in out


def test_a_warm_replay_imports_nothing_only_a_mistake_or_another_command_needs(tmp_path: Path) -> None:
    """What explains a mistake (another tool's keys, a misplaced key, a refused regex) is needed
    only where a rule file is checked, not when its check comes from the cache; GitHub
    annotations, the config's limits and shell completion only by other commands."""
    modules = (
        "rulesd.rules.foreign",
        "rulesd.rules.misplaced",
        "rulesd.rules.regex_errors",
        "rulesd.annotations",
        "rulesd.engine.limit_checks",
        "rulesd.completion",
    )
    (first, _), (second, out) = _replayed_cold_then_warm(tmp_path, RULES, modules)
    assert ("['rulesd.rules.foreign', 'rulesd.rules.misplaced']", "[]") == (first, second)
    assert "alerts: 1" in out


def _replayed_cold_then_warm(tmp_path: Path, text: str, modules: tuple[str, ...]) -> list[tuple[str, str]]:
    """Which of `modules` a replay of one event over the rules `text` imported, and what it wrote:
    with an empty rule cache, then with the cache that start filled."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(text)
    events = tmp_path / "events.jsonl"
    events.write_text('{"service": "api", "message": "timeout after 250ms"}\n')
    env = {"RULESD_CACHE_DIR": str(tmp_path / "cache")}
    return [imported_by(modules, "replay", "--rules", str(rules), str(events), env=env) for _ in range(2)]


def test_a_warm_replay_imports_no_check_that_only_finds_problems_nor_what_writes_the_cache(tmp_path: Path) -> None:
    """A rule set loaded from the cache has its warnings kept there: the checks whose only product
    is a problem (contradictions, kinds' mistakes, values of another kind, boolean words) are
    skipped, and so need not be imported; nor does a start that writes nothing need tempfile
    (with shutil, random and the compression modules). The first, cold start needs them all, and
    the warm one says the same warning."""
    text = (
        RULES
        + "  - {name: c, match: {status: 500}, threshold: {count: 3, window: 1m, group_by: [host]}}\n"
        + "  - {name: d, match: {debug: yes}}\n"
        + '  - {name: g, match: {code: "500"}}\n  - {name: h, match: {code: {gt: 400}}}\n'
        + "  - name: e\n    match: {service: api}\n    absence: {window: 5m, group_by: [host], expect: [{host: h1}]}\n"
        + "  - name: f\n    sequence:\n      group_by: [host]\n"
        + "      steps: [{match: {message: {contains: login}}}, {match: {message: {contains: sudo}}}]\n"
    )
    modules = (
        "rulesd.rules.boolean_words",
        "rulesd.rules.contradictions",
        "rulesd.rules.kind_checks",
        "rulesd.rules.value_kinds",
        "tempfile",
    )
    (first, first_out), (second, second_out) = _replayed_cold_then_warm(tmp_path, text, modules)
    assert (str(sorted(modules)), "[]") == (first, second)
    assert "alerts: 1" in second_out
    assert first_out == second_out
    env = {"RULESD_CACHE_DIR": str(tmp_path / "cache2")}
    said = [rulesd_cli("check", str(tmp_path / "rules.yaml"), env=env).stdout for _ in range(2)]
    assert "2 warning(s)" in said[0] and "unquoted yes" in said[0] and "write 500 unquoted" in said[0], said[0]
    assert said[0] == said[1]


# `rulesd ARGS` run by `runpy` with an audit hook: the rulesd modules whose own body compiled
# source text as it ran (a dataclass's methods, the annotations `typing` makes ForwardRefs of),
# a namedtuple's `__new__`, which every tuple class has, aside.
_COMPILED_AT_IMPORT = """
import runpy, sys

found = set()


def hook(event, args):
    if event != "compile" or not isinstance(args[0], (str, bytes)) or args[1] != "<string>":
        return
    frame = sys._getframe(1)
    if frame.f_code.co_name == "namedtuple":
        return
    while frame is not None and frame.f_code.co_name != "<module>":
        frame = frame.f_back
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    if name.startswith("rulesd"):
        found.add(name)


sys.addaudithook(hook)
"""


def test_a_warm_replay_compiles_no_source_text_for_rulesd_s_classes(tmp_path: Path) -> None:
    """The engine's state is a class written out, not a dataclass (whose methods are written as
    source and compiled at every start), and the index's, the view's, the lines' and the
    patterns' tuples give `NamedTuple` their types as objects, not as text it compiles: a warm
    start compiles no text for them."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    events = tmp_path / "events.jsonl"
    events.write_text('{"service": "api", "message": "timeout after 250ms"}\n')
    env = {"RULESD_CACHE_DIR": str(tmp_path / "cache")}
    script = _COMPILED_AT_IMPORT + RUN_RULESD + "print(sorted(found), file=sys.stderr)\n"
    command = [sys.executable, "-c", script, "replay", "--rules", str(rules), str(events)]
    for _ in range(2):  # (cold, then warm)
        done = subprocess.run(command, capture_output=True, text=True, env=clean_env(env), timeout=60, check=False)
    assert "alerts: 1" in done.stdout, done.stderr
    assert "[]" == done.stderr.strip().splitlines()[-1]


def test_a_changed_or_invalid_file_is_read_afresh(tmp_path: Path) -> None:
    """A new content is a new key; a file with problems is never cached, so they are
    reported every time."""
    path = tmp_path / "rules.yaml"
    cache = RuleCache(tmp_path / "cache")
    path.write_text(RULES)
    assert ["a", "b"] == _summary(path, cache)[0]
    path.write_text(RULES.replace("name: b", "name: c"))
    assert ["a", "c"] == _summary(path, cache)[0]
    path.write_text(RULES.replace("timeout after", "(?=x)"))
    for _ in range(2):
        names, _, problems = _summary(path, cache)
        assert [] == names and 1 == len(problems) and "look-ahead" in problems[0]


def test_a_daemon_s_first_start_makes_its_state_directory_private_for_the_cache(tmp_path: Path) -> None:
    """The rules are loaded before anything else made the state directory: the cache makes it,
    0700 whatever the umask, and is written on the first start already."""
    state = tmp_path / "state"
    old = os.umask(0o022)
    try:
        cache = RuleCache.in_state_dir(str(state))
        cache.put("document", "k", b"payload")
    finally:
        os.umask(old)
    assert 0o700 == stat.S_IMODE(state.stat().st_mode)
    assert b"payload" == cache.get("document", "k")


def test_a_yaml_library_upgraded_in_place_reads_the_rule_files_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pip install -U PyYAML` in the same environment rewrites its package's files, and the new
    version may read a file otherwise: a document kept under the old one is parsed again. The
    package here is a copy of PyYAML's files standing in for the installed one."""
    installed = tmp_path / "site-packages" / "yaml"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("__version__ = '6.0.1'\n")
    monkeypatch.setattr(loader, "_yaml_packages", lambda: [installed], raising=False)
    loader._code_fingerprint.cache_clear()
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    cache = RuleCache(tmp_path / "cache")
    parsed: list[str] = []
    read_yaml = loader._read_yaml

    def counted(*args: Any, **kwargs: Any) -> Any:
        parsed.append("parsed")
        return read_yaml(*args, **kwargs)

    monkeypatch.setattr(loader, "_read_yaml", counted)
    try:
        first = _summary(path, cache)
        assert first == _summary(path, cache) and ["parsed"] == parsed  # (kept)
        (installed / "__init__.py").write_text("__version__ = '6.0.2'\n")  # the upgrade
        loader._code_fingerprint.cache_clear()
        assert first == _summary(path, cache)
    finally:
        loader._code_fingerprint.cache_clear()  # (the next test's key: the library as installed)
    assert ["parsed", "parsed"] == parsed


def test_a_state_directory_moved_away_is_not_made_again_by_a_later_write(tmp_path: Path) -> None:
    """The daemon's cache makes its state directory at the first write (a first start loads
    its rules before anything else made it), not at a later one: a state directory moved or
    removed while the daemon runs stays so (the daemon keeps code as its first events write it)."""
    cache = RuleCache.in_state_dir(str(tmp_path / "state"))
    cache.put("kind", "first", b"x")
    assert b"x" == cache.get("kind", "first")
    (tmp_path / "state").rename(tmp_path / "state.moved")
    cache.put("kind", "later", b"y")
    assert not (tmp_path / "state").exists()
    (tmp_path / "state.moved").rename(tmp_path / "state")
    cache.put("kind", "again", b"z")
    assert b"z" == cache.get("kind", "again")


def test_a_daemons_later_writes_make_no_state_directory_moved_away(tmp_path: Path) -> None:
    """The daemon's start made its state directory; the cache its parts keep (the code its loop
    keeps, a reload's files) was made after, and its first write, after a move, made the
    directory again, empty, where the daemon then opened a new state database. So was the
    start's, whose database of joined texts is kept from beside the loop (`made_parents`)."""
    ws = Workspace(tmp_path, "http://127.0.0.1:9")
    with daemon_parts(ws.config, time.time) as parts:  # (its parts' own cache)
        assert parts.rule_cache is not None
        (tmp_path / "state").rename(tmp_path / "state.moved")
        try:
            parts.rule_cache.put("code", "first", b"x")  # (its first write)
            assert not (tmp_path / "state").exists()
        finally:
            (tmp_path / "state.moved").rename(tmp_path / "state")
    started = RuleCache.in_state_dir(str(tmp_path / "state"))  # (`rulesd run`'s, given to its parts)
    config = load_config(str(ws.config))
    parts = build_parts(config, load_ruleset(config.rules), environ={}, rule_cache=started)
    try:
        assert parts.rule_cache is started
        (tmp_path / "state").rename(tmp_path / "state.moved")
        started.put("joined", "first", b"y")  # (its first write: the start wrote nothing)
        assert not (tmp_path / "state").exists()
        (tmp_path / "state.moved").rename(tmp_path / "state")
    finally:
        for source in parts.sources.values():
            source.close()
        parts.store.close()
        assert parts.lock is not None
        parts.lock.release()
