"""Rule files and directories -> one RuleSet, or every problem found on the way.

`rulesd check`, `rulesd test`, `rulesd replay` and the daemon's reload all use
`load_ruleset`, so none of them can accept what another would reject.
"""

from __future__ import annotations

import functools
import importlib.util
import marshal
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import msgspec

from rulesd import collector
from rulesd.document import Document, JsonPath, Marks, missing, read_file, split_marks
from rulesd.errors import InvalidInputError, Problem, RuleError, SourceLocation, listed_again
from rulesd.rules.cache import RuleCache, Sealed, digest
from rulesd.rules.checked import checked_key, installed, keep, known_problems, written
from rulesd.rules.compile import compile_rule, fingerprint, rule_fingerprint
from rulesd.rules.lists import Lists, merge_lists, read_lists
from rulesd.rules.model import Rule, RuleSet
from rulesd.rules.patterns import FieldScanner, PatternError, PatternSet, dump_database, load_database
from rulesd.rules.rule_directories import TooManyEntries, bounded_directories, file_identity, too_many_entries
from rulesd.validation import SCHEMA_DIR, schema_violations, unread_dropped, unread_paths

RULE_SUFFIXES = (".yaml", ".yml")
TEST_SUFFIXES = (".test.yaml", ".test.yml")  # rule tests may live beside the rules they test


class CheckResult(msgspec.Struct, frozen=True):
    """What loading found: the rule set (None if any error) and all problems."""

    ruleset: RuleSet | None
    problems: tuple[Problem, ...]
    files: tuple[str, ...]

    @property
    def errors(self) -> list[Problem]:
        """Problems of severity error."""
        return _errors(self.problems)


def discover_files(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[str], list[Problem]]:
    """Rule files named by `paths`; directories are searched recursively.

    Hidden entries are skipped so that Kubernetes ConfigMap mounts (`..data`, `..2024_…`)
    do not load every rule twice; `*.test.yaml` files are rule tests, not rules. Links are
    followed, but a directory is searched once (a link back to a parent would loop; a warning
    names it) and a file is read once, under the first name it was found by.
    """
    files: list[str] = []
    problems: list[Problem] = []
    for raw in paths:
        path = os.fspath(raw)
        if os.path.isdir(path):
            found = _walk(path, problems)
            if found is None:
                continue
            if not found:
                warning = Problem(SourceLocation(path), "no rule files (*.yaml, *.yml) found", "warning")
                problems.append(warning)
            files.extend(found)
        elif (reason := missing(path)) is None:
            files.append(path)
        else:
            problems.append(Problem(SourceLocation(path), reason))
    return _distinct(files), problems


def discover_test_files(paths: Iterable[str]) -> tuple[list[str], list[Problem]]:
    """Rule test files named by `paths`: a file as it is, and a directory's `*.test.yaml` and
    `*.test.yml`, searched as `discover_files` searches for rule files. A directory without
    any is an error: tests that do not run must not pass."""
    files: list[str] = []
    problems: list[Problem] = []
    for path in paths:
        if not os.path.isdir(path):
            files.append(path)  # (a missing file is said by reading it)
            continue
        found = _walk(path, problems, tests=True)
        if found is None:
            continue
        if not found:
            problems.append(Problem(SourceLocation(path), "no rule test files (*.test.yaml, *.test.yml) found"))
        files.extend(found)
    return _distinct(files), problems


def _walk(top: str, problems: list[Problem], *, tests: bool = False) -> list[str] | None:
    """The rule files under `top`, sorted (`tests`: the rule test files instead); None, with an
    error, past MAX_ENTRIES: `rules: ['/']` walked the whole file system, /proc's too, and read
    every *.yaml on the way as rules."""
    found: list[str] = []
    walk_problems: list[Problem] = []
    try:
        for root, _, names in bounded_directories(top, walk_problems):
            for name in names:
                if name.startswith(".") or name.endswith(TEST_SUFFIXES) != tests:
                    continue
                if name.endswith(RULE_SUFFIXES):
                    path = os.path.join(root, name)
                    if _special(path):  # opening a named pipe would wait for a writer, maybe forever
                        said = "not a regular file (a pipe, socket or device)"
                        walk_problems.append(Problem(SourceLocation(path), said))
                        continue
                    found.append(path)
    except TooManyEntries:
        problems.append(Problem(SourceLocation(top), too_many_entries(top)))
        return None
    problems += walk_problems
    return sorted(found)


def _special(path: str) -> bool:
    """Whether `path` is there but is no regular file (links followed)."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:  # a broken link: reading it says why
        return False


def _distinct(files: list[str]) -> list[str]:
    """`files` without the second name of a file (a link to it, or the same path again)."""
    seen: set[tuple[int, int] | str] = set()
    out: list[str] = []
    for path in files:
        key = file_identity(path) or path
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out


def _rules_in(doc: Document) -> Iterator[tuple[dict[str, Any], tuple[str | int, ...]]]:
    value = doc.value
    if isinstance(value, dict) and ("rules" in value or ("lists" in value and "name" not in value)):
        items = value.get("rules", [])
        for i, item in enumerate(items if isinstance(items, list) else ()):
            if isinstance(item, dict):
                yield item, ("rules", i)
    elif isinstance(value, dict):
        yield value, ()


class _Loaded(msgspec.Struct, frozen=True):
    rules: list[Rule]
    names: list[tuple[str, SourceLocation]]  # every named rule, valid or not
    problems: list[Problem]


class _Parsed(msgspec.Struct):
    """A rule file read and schema-checked: its document (None if there is none to compile),
    its problems so far, the paths the schema faulted, and the key to cache it under once it
    has loaded without a problem (None: not to be cached); `source` is the key of its bytes
    whenever there is a cache (the rule set's checked problems are kept under those)."""

    doc: Document | None
    problems: list[Problem]
    faulted: set[JsonPath]
    key: str | None = None
    source: str | None = None


def _parse_file(path: str, cache: RuleCache | None) -> _Parsed:
    try:
        data = read_file(path)  # once: the cache key and the document are of the same bytes
    except InvalidInputError as exc:
        return _Parsed(None, list(exc.problems), set())
    key = document_key(data) if cache is not None else None
    if cache is not None and key is not None:
        doc = cached_document(cache, key, path, data)
        if doc is not None:
            return _Parsed(doc, [], set(), source=key)  # known to be free of schema violations
    try:
        doc = _read_yaml(path, data)
    except InvalidInputError as exc:
        return _Parsed(None, list(exc.problems), set())
    parsed = _checked(doc, key)
    parsed.source = key
    return parsed


def _read_yaml(path: str, data: bytes) -> Document:
    # PyYAML (~12 ms to import) only when a file is read: not when every file is in the cache.
    from rulesd.yamldoc import parse_yaml_bytes

    return parse_yaml_bytes(data, path, keep_going=True)


def _checked(doc: Document, key: str | None = None) -> _Parsed:
    """A document and its schema violations (a duplicate key keeps its first value, so the
    rest of the file is still checked)."""
    if doc.value is None and not doc.problems:
        message = "empty file: expected a rule or a list under 'rules:'"
        return _Parsed(None, [Problem(SourceLocation(doc.path, 1, 1), message)], set())
    if isinstance(doc.value, list) and doc.value and all(isinstance(v, dict) for v in doc.value):
        # (a list of rules, without its key)
        message = "(top level): expected a mapping, got a list: write 'rules:' on a line above the list of rules"
        return _Parsed(None, [*doc.problems, Problem(doc.locate(()), message)], set())
    # (a document checked once, then read from the rule cache: a warm start needs neither)
    from rulesd.rules.foreign import foreign_conditions, reworded
    from rulesd.rules.misplaced import misplaced_keys

    misplaced = misplaced_keys(doc, _rules_in(doc))
    said = {path for path, _ in misplaced}
    misplaced += [found for found in foreign_conditions(doc, _rules_in(doc)) if found[0] not in said]
    # (the schema's errors within a key written in a condition by mistake only repeat it; one
    # of another tool's keys is said in that tool's words)
    violations = [
        (vpath, problem)
        for vpath, violation in unread_dropped(doc, schema_violations(doc, "rule"))
        if not any(vpath[: len(m)] == m for m, _ in misplaced)
        for problem in [reworded(doc, vpath, violation)]
        if problem is not None
    ]
    violations += misplaced
    problems = sorted({*doc.problems, *(p for _, p in violations)})
    return _Parsed(doc, problems, {vpath for vpath, _ in violations} | unread_paths(doc), key)


def _load_files(
    parsed: list[_Parsed], patterns: PatternSet, cache: RuleCache | None, *, checked: bool = False
) -> list[_Loaded]:
    """The rules of every file, compiled with the named lists of them all (a list is visible
    to every file of the rule set, and defined once in it). `checked`: the rule set's problems
    are known (see `rulesd.rules.checked`), and the checks that only find problems skipped."""
    per_file = []
    for file in parsed:
        if file.doc is not None:
            found, problems = read_lists(file.doc, file.faulted)
            per_file.append(found)
            file.problems.extend(problems)
    lists, duplicates = merge_lists(per_file)
    loaded = [_load_document(file, patterns, lists, checked=checked) for file in parsed]
    for file, result in zip(parsed, loaded, strict=True):
        if cache is not None and file.key is not None and file.doc is not None and not _errors(result.problems):
            cache_document(cache, file.key, file.doc)  # (its warnings come from the document)
    warnings = list(duplicates)
    if not checked:  # (a field's kind is known from how any file of the rule set tests it)
        from rulesd.rules.value_kinds import rule_set_warnings

        files = [(file.doc, list(_rules_in(file.doc))) for file in parsed if file.doc is not None]
        warnings += rule_set_warnings(files)
    loaded.append(_Loaded([], [], warnings))
    return loaded


def _errors(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


# ---- the cache of parsed and schema-checked rule files ---------------------------------


def document_key(data: bytes, kind: str = "document") -> str:
    """What a parsed, schema-checked rule file (or, `kind` "config", a parsed config)
    depends on: its bytes, the schema and the code that parses and checks it, PyYAML as
    installed, Python's version (marshal's format)."""
    return digest(kind, sys.version, _code_fingerprint(), data)


@functools.cache
def _code_fingerprint() -> str:
    here = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    sources = [os.path.join(here, f"{name}.py") for name in ("yamldoc", "document", "validation", "key_places")]
    sources += [os.path.join(here, "rules", f"{name}.py") for name in ("misplaced", "foreign")]
    sources.append(os.path.join(SCHEMA_DIR, "rule.schema.json"))
    return digest(installed(_yaml_packages()), written(sources))


def _yaml_packages() -> list[str]:
    """PyYAML's package directory, found without importing it (a warm load never does): an
    upgrade in place may read a file differently (a YAML 1.2 change, a fixed scanner bug), so
    the documents kept under the old one must be read again."""
    spec = importlib.util.find_spec("yaml")
    return list(spec.submodule_search_locations or ()) if spec is not None else []


def cached_document(cache: RuleCache, key: str, path: str, data: bytes, kind: str = "document") -> Document | None:
    """The document of `path` kept under `key` (see `document_key`, of `data`), or None."""
    entry = cache.get_sealed(kind, key)
    if entry is None:
        return None
    blob, deeper = entry
    try:
        value, value_marks, key_marks, boolean_words = marshal.loads(blob)
    except (EOFError, ValueError, TypeError):
        return None
    return Document(
        path, value, value_marks, key_marks, boolean_words=boolean_words, deeper=_deeper_marks(deeper, path, data)
    )


def _deeper_marks(sealed: Sealed, path: str, data: bytes) -> Callable[[], tuple[Marks, Marks]]:
    """What reads a cached document's deeper marks when first asked for: from the cache entry
    if its part is still what was written, else from the file's bytes parsed again (the cache
    may be damaged between a load and an `explain` of its rules; its marks are then never
    served, and the problem still points at its line)."""

    def read() -> tuple[Marks, Marks]:
        blob = sealed.open()
        if blob is not None:
            try:
                values, keys = marshal.loads(blob)
            except (EOFError, ValueError, TypeError):
                pass
            else:
                return values, keys
        value_marks, key_marks = _read_yaml(path, data).marks()
        return split_marks(value_marks)[1], split_marks(key_marks)[1]

    return read


def cache_document(cache: RuleCache, key: str, doc: Document, kind: str = "document") -> None:
    """Keep `doc` under `key`, unless it holds what marshal cannot write. The marks of long
    paths are kept apart, sealed: checked and read back only if a part of a rule is located
    (see `Document.deeper`)."""
    value_marks, key_marks = doc.marks()
    (shallow_values, deeper_values), (shallow_keys, deeper_keys) = split_marks(value_marks), split_marks(key_marks)
    try:
        deeper = marshal.dumps((deeper_values, deeper_keys))
        blob = marshal.dumps((doc.value, shallow_values, shallow_keys, doc.boolean_words))  # type: ignore[arg-type]
    except ValueError:  # a YAML timestamp or set: not worth caching
        return
    cache.put_sealed(kind, key, blob, deeper)


def _load_document(parsed: _Parsed, patterns: PatternSet, lists: Lists, *, checked: bool = False) -> _Loaded:
    """The rules of a parsed document (semantic checks skip the parts the schema faulted,
    see compile_rule)."""
    problems = list(parsed.problems)
    loaded = _Loaded([], [], problems)
    doc = parsed.doc
    if doc is None:
        return loaded
    if not checked:
        from rulesd.rules.boolean_words import rule_file_warnings

        problems.extend(rule_file_warnings(doc, _rules_in(doc), parsed.faulted))
    for raw, base in _rules_in(doc):
        if not checked and isinstance(raw.get("name"), str):  # (for duplicates: errors, none in a set checked before)
            loaded.names.append((raw["name"], doc.locate((*base, "name"))))
        rule, found = compile_rule(raw, doc, base, parsed.faulted, patterns=patterns, lists=lists, checked=checked)
        problems.extend(found)
        if rule is not None:
            loaded.rules.append(rule)
    return loaded


def check_paths(
    paths: Iterable[str | os.PathLike[str]], cache: RuleCache | None = None, *, daemon: bool = False
) -> CheckResult:
    """Load every rule file under `paths`, collecting all problems.

    With a `cache`, unchanged files and pattern sets are read back instead of parsed,
    checked and compiled again (see `RuleCache`); the result is the same. `daemon`: the rule set
    is a daemon's, which must not stall its loop: what scans a block's texts joined is
    compiled at once in a thread of its own (see `FieldScanner.join`), not in the loop once
    enough blocks have been scanned.
    """
    files, problems = discover_files(paths)
    with collector.paused():
        parsed = [_parse_file(path, cache) for path in files]
        key = _checked_key(files, parsed) if cache is not None else None
        known = known_problems(cache, key) if cache is not None and key is not None else None
        if known is not None:
            count, kept = known
            patterns = PatternSet()
            loaded = _load_files(parsed, patterns, None, checked=True)
            rules = [rule for file in loaded for rule in file.rules]
            if len(rules) == count:  # (else the code or a library changed unseen: checked in full)
                return _combine([_Loaded(rules, [], kept)], files, problems, patterns, cache, daemon)
            parsed = [_parse_file(path, cache) for path in files]  # (the lists' problems were added)
        patterns = PatternSet()  # every rule's patterns, compiled together once all are loaded
        loaded = _load_files(parsed, patterns, cache)
        found = [problem for file in loaded for problem in file.problems]
        result = _combine(loaded, files, problems, patterns, cache, daemon)
        if key is not None and cache is not None and result.ruleset is not None:
            keep(cache, key, len(result.ruleset.rules), found)
        return result


def _checked_key(files: list[str], parsed: list[_Parsed]) -> str | None:
    """The key of the rule set's kept problems: None unless every file was read whole and
    found free of schema violations (only a rule set without an error is kept)."""
    sources = []
    for path, file in zip(files, parsed, strict=True):
        if file.source is None or file.doc is None or file.problems or file.faulted:
            return None
        sources.append((path, file.source))
    return checked_key(sources)


def check_text(text: str, path: str = "<rules>") -> CheckResult:
    """Load one rule file's `text` as if read from `path` (which only names it in problems)."""
    from rulesd.yamldoc import parse_yaml

    patterns = PatternSet()
    try:
        parsed = _checked(parse_yaml(text, path, keep_going=True))
    except InvalidInputError as exc:
        parsed = _Parsed(None, list(exc.problems), set())
    return _combine(_load_files([parsed], patterns, None), [path], [], patterns)


def _combine(
    loaded_files: list[_Loaded],
    files: list[str],
    problems: list[Problem],
    patterns: PatternSet,
    cache: RuleCache | None = None,
    daemon: bool = False,
) -> CheckResult:
    """One rule set of the rules of every file, unless any problem is an error (`daemon`:
    see `check_paths`)."""
    rules: list[Rule] = []
    names: list[tuple[str, SourceLocation]] = []
    for loaded in loaded_files:
        rules.extend(loaded.rules)
        names.extend(loaded.names)
        problems.extend(loaded.problems)
    problems.extend(_duplicate_names(names))
    problems.extend(_build(patterns, cache))
    ruleset = None
    if not _errors(problems):
        _join_texts(patterns, cache, daemon)  # (not for a rule set that will not run)
        digest = fingerprint([[r.name, r.fingerprint] for r in rules])
        ruleset = RuleSet(tuple(rules), tuple(files), digest)
    return CheckResult(ruleset, tuple(sorted(problems)), tuple(files))


def _build(patterns: PatternSet, cache: RuleCache | None) -> list[Problem]:
    """Compile the rule set's pattern databases (or read them from the cache); a pattern
    Hyperscan refuses is an error at each place it was written."""

    def load(scanner: FieldScanner) -> Any:
        blob = cache.get("hyperscan", scanner.key()) if cache is not None else None
        return load_database(blob) if blob is not None else None

    try:
        compiled = patterns.build(load)
    except PatternError as exc:
        places = [(origin.place(), message) for origin, message in exc.refused]  # (see `compile.Written`)
        return [Problem(where, f"{path}: {message}") for (where, path), message in places]
    if cache is not None:
        for scanner in compiled:
            cache.put("hyperscan", scanner.key(), dump_database(scanner.database))
    return []


def _join_texts(patterns: PatternSet, cache: RuleCache | None, daemon: bool) -> None:
    """Give each field's scanner its database of joined texts: read from the cache, else
    compiled beside for a `daemon`, else once enough blocks need it."""
    for scanner in patterns.fields.values():
        scanner.join(
            partial(cache.get, JOINED) if cache is not None else _nothing,
            partial(cache.put, JOINED) if cache is not None else _nothing,
            when="beside" if daemon else "later",
        )


JOINED = "joined"  # the rule cache's kind of what scans a block's texts joined


def _nothing(*args: Any) -> None:
    return None


def _duplicate_names(names: list[tuple[str, SourceLocation]]) -> list[Problem]:
    first: dict[str, SourceLocation] = {}
    problems: list[Problem] = []
    for name, here in names:
        there = first.setdefault(name, here)
        if there is here:
            continue
        if there == here:  # one rule listed again by an alias: the alias has no place of its own
            problems.append(Problem(here, f"duplicate rule name '{name}': {listed_again('rule')}"))
            continue
        problems.append(Problem(here, f"duplicate rule name '{name}' (also defined at {there})"))
        problems.append(Problem(there, f"duplicate rule name '{name}' (also defined at {here})"))
    return sorted(set(problems))


class RuleSource(msgspec.Struct, frozen=True):
    """A rule as written: its mapping, the document it is in and its path in that document,
    so that its parts can be located (`doc.locate((*base, ...))`)."""

    raw: dict[str, Any]
    doc: Document
    base: tuple[str | int, ...]


def rule_sources(rules: Iterable[Rule], cache: RuleCache | None = None) -> dict[str, RuleSource]:
    """The written form of each of `rules` (loaded rules), read again from their files.

    RuleError if a file changed since the rules were loaded (a rule's mapping no longer has
    the fingerprint of the rule loaded from it), so that no part is located in another text.
    """
    wanted = {rule.name: rule for rule in rules}
    found: dict[str, RuleSource] = {}
    for path in dict.fromkeys(rule.location.path for rule in wanted.values()):
        data = read_file(path)
        doc = cached_document(cache, document_key(data), path, data) if cache is not None else None
        doc = doc or _read_yaml(path, data)
        for raw, base in _rules_in(doc):
            rule = wanted.get(raw.get("name"))  # type: ignore[arg-type]
            if rule is not None and rule.location.path == path:
                found[rule.name] = RuleSource(raw, doc, base)
    for name, rule in wanted.items():
        source = found.get(name)
        if source is None or rule_fingerprint(source.raw, rule.lists) != rule.fingerprint:
            raise RuleError([Problem(rule.location, f"rule {name!r} changed while it was read: run again")])
    return found


def load_ruleset(paths: Iterable[str | os.PathLike[str]], cache: RuleCache | None = None) -> RuleSet:
    """Load rules or raise RuleError with every problem; warnings do not fail."""
    return _ruleset_of(check_paths(paths, cache))


def load_ruleset_text(text: str, path: str = "<rules>") -> RuleSet:
    """`load_ruleset` for one rule file given as text (see `check_text`)."""
    return _ruleset_of(check_text(text, path))


def _ruleset_of(result: CheckResult) -> RuleSet:
    if result.ruleset is None:
        raise RuleError(result.errors)
    return result.ruleset


def default_rule_paths() -> list[str]:
    """`./rules`, the default for commands given no path."""
    return ["rules"]
