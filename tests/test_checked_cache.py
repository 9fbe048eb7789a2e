"""The problems of a rule set checked before, kept in the rule cache (`rulesd.rules.checked`):
a warm load says the same warnings at the same places without checking again, and anything
changed, damaged or foreign is checked in full."""

from __future__ import annotations

import marshal
import os
import time
import types
from pathlib import Path

import pytest

from rulesd.rules import (
    boolean_words,
    checked,
    compile,
    conditions,
    contradictions,
    kind_checks,
    loader,
    patterns,
    value_kinds,
)
from rulesd.rules.cache import RuleCache
from rulesd.rules.loader import check_paths

# Warnings of each kind a warm load skips: a value of another kind than a test in the other
# file takes, a regex found in every text, a brace read as text, a glob in `equals`.
FIRST = """
rules:
  - {name: a, match: {http.status: "500", message: {regex: "(timeout)?"}}}
  - {name: b, match: {host: "web-*"}, alert: {message: "{{host}} is {host}"}}
"""
SECOND = """
rules:
  - {name: c, match: {http.status: {gte: 500}}, threshold: {count: 3, window: 1m, group_by: [host]}}
"""


def _files(tmp_path: Path) -> list[Path]:
    (tmp_path / "rules").mkdir(exist_ok=True)
    first, second = tmp_path / "rules" / "first.yaml", tmp_path / "rules" / "second.yaml"
    first.write_text(FIRST)
    second.write_text(SECOND)
    return [first, second]


def _summary(tmp_path: Path, cache: RuleCache) -> tuple[list[str], list[str], str, list[str]]:
    result = check_paths([tmp_path / "rules"], cache)
    assert result.ruleset is not None
    rules = result.ruleset.rules
    return (
        [r.name for r in rules],
        [r.fingerprint for r in rules],
        result.ruleset.fingerprint,
        list(map(str, result.problems)),
    )


def _checks_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check that only finds problems fails the test when run."""

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("checked again")

    for module, name in [
        # (the checks' modules are imported where they run: a warm start imports none of them)
        (value_kinds, "rule_set_warnings"),
        (boolean_words, "rule_file_warnings"),
        (contradictions, "contradictions"),
        (compile, "matches_every_text"),
        (compile, "literal_fields"),
        (kind_checks, "kind_mistakes"),
        (compile, "reference_problems"),
        (conditions, "regex_problem"),
        (conditions, "_refuse_unequalled"),  # (errors: a rule set kept has none)
        (compile, "unitless"),
    ]:
        monkeypatch.setattr(module, name, fail)

    def no_names(names: list[object]) -> list[object]:
        assert not names, "rule names located again for duplicates (errors: a rule set kept has none)"
        return []

    monkeypatch.setattr(loader, "_duplicate_names", no_names)


def _kept(cache: RuleCache) -> list[Path]:
    return sorted(Path(cache.directory).glob("checked-*.bin"))


def test_a_rule_set_checked_before_says_its_warnings_without_checking_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same rules, fingerprints (stored with the state) and warnings, at the same lines."""
    _files(tmp_path)
    cache = RuleCache(tmp_path / "cache")
    first = _summary(tmp_path, cache)
    assert 4 == len(first[3]) and all(": warning: " in p for p in first[3])
    assert first == _summary(tmp_path, RuleCache(tmp_path / "no-cache"))
    assert 1 == len(_kept(cache))
    _checks_fail(monkeypatch)
    assert first == _summary(tmp_path, cache)
    ruleset = check_paths([tmp_path / "rules"], cache).ruleset
    assert ruleset is not None
    assert ruleset.by_name()["a"].match({"http": {"status": "500"}, "message": "x"})
    assert not ruleset.by_name()["a"].match({"http": {"status": 500}, "message": "x"})


def test_any_file_changed_or_moved_is_checked_again(tmp_path: Path) -> None:
    """A file of the rule set changed (the other file's warning depends on it), or the files
    found under other names: the problems are found afresh and kept for the new rule set."""
    first, second = _files(tmp_path)
    cache = RuleCache(tmp_path / "cache")
    before = _summary(tmp_path, cache)
    assert any("http.status is compared with the text" in p for p in before[3])
    second.write_text(SECOND.replace("{gte: 500}", "500"))
    after = _summary(tmp_path, cache)
    assert not any("http.status is compared" in p for p in after[3])
    assert after == _summary(tmp_path, RuleCache(tmp_path / "no-cache"))
    first.rename(tmp_path / "rules" / "renamed.yaml")
    moved = _summary(tmp_path, cache)
    assert [p.replace("first.yaml", "renamed.yaml") for p in after[3]] == moved[3]
    assert 3 == len(_kept(cache))


def test_a_rule_set_with_an_error_is_not_kept(tmp_path: Path) -> None:
    """Only a rule set that loaded is kept: its errors are found every time."""
    first, _ = _files(tmp_path)
    first.write_text(FIRST + "  - {name: d, match: {host: {regex: '(?=x)'}}}\n")
    cache = RuleCache(tmp_path / "cache")
    for _ in range(2):
        result = check_paths([tmp_path / "rules"], cache)
        assert result.ruleset is None and any("look-ahead" in p.message for p in result.errors)
    assert [] == _kept(cache)


@pytest.mark.parametrize(
    "foreign",
    [
        b"not marshal",
        marshal.dumps("a text"),
        marshal.dumps((3, [("p", 1, 1, "m", "warning", "extra")])),
        marshal.dumps((3.0, [])),
        marshal.dumps((3, [("p", "1", 1, "m", "warning")])),
        marshal.dumps((3, [("p", 1, 1, "made up", "error")])),  # (an error is never kept)
        marshal.dumps((2, [])),  # (a count of rules other than the rule set's)
    ],
)
def test_a_damaged_or_foreign_entry_is_a_miss(tmp_path: Path, foreign: bytes) -> None:
    """What is read back and is not what a load writes, or whose rules do not add up: the rule
    set is checked in full, and its problems kept again."""
    _files(tmp_path)
    cache = RuleCache(tmp_path / "cache")
    first = _summary(tmp_path, cache)
    (entry,) = _kept(cache)
    cache.put("checked", entry.name[len("checked-") : -len(".bin")], foreign)
    assert first == _summary(tmp_path, cache)
    assert checked.known_problems(cache, entry.name[len("checked-") : -len(".bin")]) is not None


def test_an_entry_not_private_or_not_matching_its_checksum_is_a_miss(tmp_path: Path) -> None:
    """As for every file of the cache: the problems are found afresh."""
    _files(tmp_path)
    cache = RuleCache(tmp_path / "cache")
    first = _summary(tmp_path, cache)
    (entry,) = _kept(cache)
    data = entry.read_bytes()
    entry.write_bytes(data.replace(b"warning", b"warnin_"))
    assert first == _summary(tmp_path, cache)
    entry.chmod(0o660)
    assert checked.known_problems(cache, entry.name[len("checked-") : -len(".bin")]) is None
    assert first == _summary(tmp_path, cache)


def test_a_regex_library_upgraded_in_place_checks_the_rule_set_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pip install -U google-re2` in the same environment rewrites its package's files: what
    RE2 refuses (an error) may change with its version, and a rule set kept under the old one
    must not hide the error. (re2 has no `__version__`: the key stayed the same.) The package
    here is a copy of the module's files standing in for the installed one."""
    installed = tmp_path / "site-packages" / "re2"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("# google-re2 1.1\n")
    (installed / "_re2.so").write_bytes(b"\x7fELF 1.1")
    library = types.ModuleType("re2")
    library.__file__ = str(installed / "__init__.py")
    monkeypatch.setattr(checked, "re2", library)
    checked._code_fingerprint.cache_clear()
    _files(tmp_path)
    cache = RuleCache(tmp_path / "cache")
    try:
        _summary(tmp_path, cache)
        (installed / "_re2.so").write_bytes(b"\x7fELF 1.2, refusing more")  # the upgrade

        def refused(pattern: str) -> tuple[str | None, bool]:  # (the upgraded RE2's answer)
            return ("missing ): (timeout)?" if pattern == "(timeout)?" else None), False

        monkeypatch.setattr(patterns, "_re2_checked", refused)
        checked._code_fingerprint.cache_clear()
        result = check_paths([tmp_path / "rules"], cache)
    finally:
        checked._code_fingerprint.cache_clear()  # (the next test's key: the library as installed)
    assert result.ruleset is None
    assert [("first.yaml", 3)] == [(Path(p.location.path).name, p.location.line) for p in result.errors]


def test_a_source_edited_in_place_changes_its_stamp_even_with_its_time_and_size_put_back(tmp_path: Path) -> None:
    """The cache's keys name rulesd's own sources by a stamp of each file, not its bytes: an edit
    of the same length whose mtime is then set back (`touch -r`, `cp -p`) still changes it (the
    ctime, which nothing sets back), and so does the file replaced by another (a new inode)."""
    source = tmp_path / "compile.py"
    source.write_text("ANSWER = 1\n")
    before = checked.written([source])
    info = source.stat()
    time.sleep(0.02)  # (a clock tick: the times are taken from a coarse clock)
    source.write_text("ANSWER = 2\n")
    os.utime(source, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert (info.st_size, info.st_mtime_ns) == (source.stat().st_size, source.stat().st_mtime_ns)
    assert before != checked.written([source])
    replaced = tmp_path / "new.py"
    replaced.write_text("ANSWER = 1\n")
    os.replace(replaced, source)
    assert before != checked.written([source])
    assert checked.written([source]) == checked.written([source])  # (unchanged: the same stamp)


def test_a_library_upgraded_in_place_with_its_times_and_sizes_kept_changes_its_stamp(tmp_path: Path) -> None:
    """An installer that keeps a wheel's file times and writes a file of the same size over the
    old one (in place, or by a rename) changes the library's stamp: a database or a check kept
    under the old library is not served under the new one."""
    package = tmp_path / "re2"
    package.mkdir()
    library = package / "_re2.so"
    library.write_bytes(b"\x7fELF 1.1")
    before = checked.installed([package])
    info = library.stat()
    time.sleep(0.02)  # (a clock tick: the times are taken from a coarse clock)
    library.write_bytes(b"\x7fELF 1.2")
    os.utime(library, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert (info.st_size, info.st_mtime_ns) == (library.stat().st_size, library.stat().st_mtime_ns)
    assert before != checked.installed([package])
    assert checked.installed([package]) == checked.installed([package])


def test_a_warm_load_reads_none_of_rulesd_s_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The keys of a warm load's entries stamp rulesd's sources instead of hashing them (~470 KB
    read and hashed at every start): the load reads no source file."""
    _files(tmp_path)
    cache = RuleCache(tmp_path / "cache")
    first = _summary(tmp_path, cache)
    read = Path.read_bytes

    def refused(path: Path) -> bytes:
        assert path.suffix not in (".py", ".json"), f"{path} read"
        return read(path)

    monkeypatch.setattr(Path, "read_bytes", refused)
    for fingerprint in (checked._code_fingerprint, loader._code_fingerprint):
        fingerprint.cache_clear()
    try:
        assert first == _summary(tmp_path, cache)
    finally:
        monkeypatch.undo()
        for fingerprint in (checked._code_fingerprint, loader._code_fingerprint):
            fingerprint.cache_clear()
