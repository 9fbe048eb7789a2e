"""Text patterns of rules (regexes, and literals to search for), matched in linear time.

Every pattern that rules look for in one field of the events is compiled into one Hyperscan
database (`FieldScanner`); a value is scanned once, in time linear in its length whatever
the patterns, and the answer, the ids of the patterns found in it, serves the rule index and
every rule's predicate alike, so that the two can never disagree about a match.

A rule regex must lie in the syntax that both RE2 and Hyperscan run exactly (`regex_problem`
says why one does not): no backreferences, look-around, atomic groups, possessive or lazy
quantifier modes that need backtracking. Its meaning is Hyperscan's, which is that of
Python's `re.search` on text for everything in that subset except where noted in the README:
found anywhere in the value; `.` does not match a newline; `$` matches at the end or before
a final newline; `\\d`, `\\w`, `\\s` and `\\b` are ASCII; `(?i)` folds Unicode case.
"""

from __future__ import annotations

import _thread
import functools
import hashlib
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import hyperscan
import msgspec
import re2

from rulesd.loggers import logger
from rulesd.rules import joined, regex_text
from rulesd.rules.ascii_case import FOLD_TRAP, TRAP, ascii_folded, byte_caseless
from rulesd.rules.cache import digest

# Found anywhere (one report per pattern and scan), in UTF-8 text, empty matches included
# (`a*` is found in every value, as `re.search` finds it).
FLAGS = hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_ALLOWEMPTY
# Databases scan a vector of one buffer, which is the value whole (anchors as in block mode).
# Block mode, as the `hyperscan` package bundles the library since 0.7.23 (0.9.1 included),
# loses a two-character literal that ends a text of ~17-69 bytes when the database also holds
# a one-character literal or an anchored end: a rule that never fires. Vectored mode finds
# what `re.search` finds (see the tests), for ~0.17 us more per scan.
MODE = hyperscan.HS_MODE_VECTORED

NO_IDS: frozenset[int] = frozenset()


class Pattern(msgspec.Struct, frozen=True):
    """One Hyperscan expression and whether it ignores case."""

    expression: str
    caseless: bool = False

    @property
    def flags(self) -> int:
        """The Hyperscan flags it is compiled with."""
        return FLAGS | (hyperscan.HS_FLAG_CASELESS if self.caseless else 0)


TRAP_PATTERN = Pattern(TRAP)  # (see `ascii_case`)


def literal_pattern(text: str, where: str, caseless: bool = False) -> Pattern | None:
    """The pattern that finds `text` as `contains`, `startswith`, `endswith` or `equals`
    finds it; None for text Hyperscan cannot take (empty, or not valid Unicode)."""
    if not text or not _encodable(text):
        return None
    prefix = "\\A" if where in ("startswith", "equals") else ""
    suffix = "\\z" if where in ("endswith", "equals") else ""
    return Pattern(prefix + _literal(text) + suffix, caseless)


def _literal(text: str) -> str:
    """`text` as a Hyperscan expression that finds exactly it (ASCII punctuation escaped)."""
    return "".join(ch if ch.isalnum() or not ch.isascii() else f"\\x{{{ord(ch):x}}}" for ch in text)


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


# ---- which regexes are allowed ----------------------------------------------------------


def regex_problem(pattern: str, *, hyperscan: bool = True) -> str | None:
    """Why `pattern` cannot be a rule regex (or a source pattern), naming it; None if it can.

    `hyperscan=False` leaves out Hyperscan's own check (a compile per pattern, ~1 ms), for
    rule regexes, which are all compiled at once when their `PatternSet` is built.
    """
    if not _encodable(pattern):
        return f"invalid regex {pattern!r}: not valid Unicode (a lone surrogate)"
    re2_error = _re2_error(pattern)
    error = re2_error if re2_error is not None else _hyperscan_error(pattern) if hyperscan else None
    if error is None:
        return None
    # (what explains a refused regex is imported by the start that has one)
    from rulesd.rules.regex_errors import explain_hyperscan, explain_re2

    return explain_re2(pattern, error) if re2_error is not None else explain_hyperscan(pattern, error)


def _re2_error(pattern: str) -> str | None:
    return _re2_checked(pattern)[0]


def matches_every_text(pattern: str) -> bool:
    """Whether the rule regex `pattern` is found in every text (`(timeout)?`, `.*`, `^`): it
    matches the empty text at the start of any text, or at the end of any. False for a regex
    that is refused."""
    return _re2_checked(pattern)[1]


# Texts standing for every case of what is around the start (the text ends there, a newline,
# an ASCII word character or another follows) and the end of a text, which is all that the
# assertions of an empty match see; `search(text, at, at)` reads them as the context.
_STARTS = ("", "\n", "\nx", "ax", "-x", "\u00e9x")
_ENDS = ("", "a", "-", "\n")


@functools.lru_cache(maxsize=4096)
def _re2_checked(pattern: str) -> tuple[str | None, bool]:
    """RE2's complaint about `pattern` (None if it takes it), and whether it is found in
    every text (see `matches_every_text`); one compile for both, cached."""
    try:
        compiled = re2.compile(pattern, options=_RE2_OPTIONS)
    except re2.error as exc:
        return _text(exc.args[0] if exc.args else exc), False
    everywhere = all(compiled.search(text, 0, 0) for text in _STARTS) or all(
        compiled.search(text, len(text), len(text)) for text in _ENDS
    )
    return None, everywhere


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@functools.lru_cache(maxsize=4096)
def _hyperscan_error(pattern: str, flags: int = FLAGS) -> str | None:
    try:
        hyperscan.Database(mode=MODE).compile(expressions=[pattern.encode()], flags=flags)
    except hyperscan.error as exc:
        return _text(exc.args[0] if exc.args else exc)
    return None


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern on stderr
    return options


_RE2_OPTIONS = _options()


class SourcePattern:
    """A `regex` source's pattern on RE2: the named groups of its first match in a line.

    RE2's Python wrapper turns every byte offset of a match on `str` into a character offset
    in Python code (18 us per line of eight groups, against 2.4 us for `re`); matching the
    line's UTF-8 bytes with the compiled pattern's own `Match` and decoding the groups costs
    3 us. The wrapper's public `search` is the fallback, should a version lack that binding;
    `tests/test_patterns.py` holds the two to the same answers.
    """

    def __init__(self, pattern: str) -> None:
        compiled = re2.compile(pattern.encode(), options=_RE2_OPTIONS)
        # (the names of a pattern compiled from bytes come as bytes)
        self.groupindex: dict[str, int] = {_text(k): v for k, v in compiled.groupindex.items()}
        self._groups = sorted(self.groupindex.items(), key=lambda item: item[1])
        self._search = compiled.search
        binding = getattr(compiled, "_regexp", None)
        anchor = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
        self._match = binding.Match if binding is not None and anchor is not None else None
        self._anchor = anchor

    def fields(self, text: bytes) -> dict[str, str] | None:
        """The named groups that took part in the first match in `text` (valid UTF-8), as
        text; None if the pattern is not found."""
        if self._match is None:
            return self.fields_by_search(text)
        spans = self._match(self._anchor, text, 0, len(text))
        if spans[0][0] < 0:
            return None
        return {name: _decode(text[spans[i][0] : spans[i][1]]) for name, i in self._groups if spans[i][0] >= 0}

    def found(self, text: bytes) -> bool:
        """Whether the pattern is found in `text` (an `ignore_pattern`)."""
        return self._search(text) is not None

    def fields_by_search(self, text: bytes) -> dict[str, str] | None:
        """`fields` through the wrapper's public `search`."""
        found = self._search(text)
        if found is None:
            return None
        return {_text(name): _decode(value) for name, value in found.groupdict().items() if value is not None}


def _decode(group: bytes) -> str:
    # (a journald MESSAGE may hold a lone surrogate, passed through as it came)
    return group.decode("utf-8", "surrogatepass")


def compile_source_pattern(pattern: str) -> SourcePattern:
    """A source pattern compiled by RE2 (linear time, named groups); ValueError says why not."""
    problem = regex_problem(pattern)
    if problem is not None:
        raise ValueError(problem)
    return SourcePattern(pattern)


# ---- scanning -----------------------------------------------------------------------------

Scan = Callable[[str], frozenset[int]]
# `scan_block(views, value_of)`: the answers for a block of views' values of the field
# (`value_of(view)`; a view None has none): a scan's for a text, None for any other value; or
# None, where the caller is to scan each text itself (the field is scanned text by text now).
BlockScan = Callable[[list[Any], Callable[[Any], Any]], list[frozenset[int] | None] | None]
# Whether a field's block is scanned joined or text by text is judged by what each costs, in
# scans of a text alone (~0.45 us each, the binding's call most of it), counted, not timed, so
# that a replay's choices are the same on any machine: text by text, a text is a scan or, its
# answer remembered (the last text, or the memo of a field whose texts repeat), ANSWERED_COST;
# joined, JOINED_COST and JOINED_TEXT_COST a text (joining, encoding, the joined scan), and
# REPORT_COST a match reported (a call into Python) and FLAG_COST a text flagged (its own
# answer). What a text costs text by text is counted on a block so scanned: the first of a
# rule set, then one in PROBE_EVERY. A joined block dearer than its texts one by one (or whose
# scan reports more matches than that allows: it stops) makes this block and the next few be
# scanned text by text; the blocks so scanned double at each block so found again, from
# PAUSED_FEWEST to PAUSED_MOST (a field whose texts mostly hold a pattern, or mostly repeat),
# and go back to the fewest once a joined block costs less. The choice changes how fast a
# field is scanned, never its answers.
ANSWERED_COST = 0.35
JOINED_COST = 6.0
JOINED_TEXT_COST = 0.15
REPORT_COST = 1.5
FLAG_COST = 1.2
PROBE_EVERY = 64
PAUSED_FEWEST = 8
PAUSED_MOST = 256
# A database of joined texts that is not in the rule cache and is compiled when first needed
# (every command but the daemon, which compiles it beside reading) waits this many blocks
# (~4,000 events), scanned text by text: at 1,000 rules its compile takes 0.05-0.14 s, which
# a replay of a sample after a rule was changed, or a rule test, never gets back.
COMPILE_AFTER = 64
COMPILING = object()  # (what a compile beside answers until it is done)
When = Literal["now", "beside", "later"]  # (see `FieldScanner.join`)
# What `FieldScanner.join` keeps for a field whose texts are scanned one by one; and what names
# the way its database of joined texts is written (`joined.joined_expression` and the flags).
_JOINED_OFF = b"off"
JOINED_WRITING = "joined-every-match-least-repeat-ascii-caseless-bytes-3"  # (a new name for any change of the writing)


# The attribute of a field's scan holding its block scan: the index is given the scan alone.
# (On the function, not in a table by function: the two hold each other, and go together.)
_BLOCK = "block_scan"


def block_scan_of(scan: Scan) -> BlockScan | None:
    """The block scan of the field whose scan is `scan`; None for another function."""
    block: BlockScan | None = getattr(scan, _BLOCK, None)
    return block


# The attribute of a block scan holding `prime(text, answer)`: the field's scan answers `answer`
# for `text` without scanning it, where the block's answer is not None (a candidate's predicates
# ask about the text of the event parsed whole, an equal text).
_PRIME = "prime"


def prime_of(block: BlockScan) -> Callable[[Any, frozenset[int] | None], None]:
    """What gives the field's scan the answer a block scan found for a text (see `_PRIME`)."""
    prime: Callable[[Any, frozenset[int] | None], None] = getattr(block, _PRIME)
    return prime


# The attribute of a field's scan holding its memo: the answers remembered by text (see
# `_memoised_scan`). The index looks a text up itself and calls the scan only for a text not
# remembered: a dict's `get` costs less than half a call of the scan that finds it. It looks only
# in a memo that holds texts: an empty one (a field of free text, or while the scan probes)
# costs a test, not the hash of a new text.
_MEMO = "memo"


def memo_of(scan: Scan) -> dict[str, frozenset[int]]:
    """The memo of the field whose scan is `scan` (see `_MEMO`)."""
    memo: dict[str, frozenset[int]] = getattr(scan, _MEMO)
    return memo


class FieldScanner:
    """The patterns that rules look for in one field, and the scan of a value for all of them.

    `scan(value)` returns the ids of the patterns found in `value`. It remembers the last text
    it scanned (holding a reference, compared by text): the index and then each candidate
    rule's predicate ask about the same value of an event, and only the first question scans,
    though the index asks about the text of the line's view and the predicates about that of
    the line parsed whole, another object. It also remembers the answers for recent short
    texts by text (see `_memoised_scan`): a field's values often repeat. Not for concurrent
    use: the rules of one rule set are evaluated by one thread at a time.
    """

    def __init__(self, field: str) -> None:
        self.field = field
        self.patterns: dict[Pattern, int] = {}
        self.origins: dict[Pattern, list[object]] = {}  # where each was written, for errors
        self.scan: Scan
        self.scan, self._use, self.scan_block, self._join = _memoised_scan(field)
        self.scan.__dict__[_BLOCK] = self.scan_block  # (see `block_scan_of`)
        self.database: Any = None
        self._bytes: tuple[int, frozenset[int]] = (0, NO_IDS)  # (see `as_bytes`)
        self._ended: tuple[int, tuple[Ended, ...]] = (0, ())  # (see `ended`)
        self._key: tuple[int, str] = (-1, "")  # (see `key`)

    def add(self, pattern: Pattern, origin: object = None) -> int:
        """The id of `pattern` (the same pattern twice gets one id)."""
        origins = self.origins.setdefault(pattern, [])
        if origin not in origins:  # a rule's regex is registered by its predicate and its hints
            origins.append(origin)
        return self.patterns.setdefault(pattern, len(self.patterns))

    def key(self) -> str:
        """A hash of the patterns and ids, naming a compiled database of them (found once for
        the field's database and its joined texts' database, as `as_bytes` is)."""
        count, key = self._key
        if count != len(self.patterns):
            key = self._key_of_patterns()
            self._key = (len(self.patterns), key)
        return key

    def _key_of_patterns(self) -> str:
        # Each pattern compiled as bytes is marked (see `compile`): a database from a build that
        # chose otherwise for a pattern answers otherwise for it, and is keyed apart.
        # So is each body written for a regex RE2 answers too, under its own id (see `compile`).
        as_bytes = self.as_bytes()
        text = "\n".join(
            [
                *(
                    f"{i}:{int(p.caseless)}{'b' if i in as_bytes else ''}:{p.expression}"
                    for p, i in self.patterns.items()
                ),
                *(f"{PREFILTER + e.id}:{int(e.pattern.caseless)}:{e.body}" for e in self.ended()),
            ]
        )
        version = getattr(hyperscan, "__version__", "")
        # (a database of a build before the marks, which may have compiled a pattern with `$` as
        # bytes, is keyed apart: the text of its key is the same for every pattern left unmarked;
        # so is one of a build that wrote bodies without their lines in the key)
        return hashlib.sha256(
            f"{version}\n{MODE}\n{FLAGS}\nascii-caseless-bytes-2\nend-prefilter-2\n{text}".encode()
        ).hexdigest()

    def compile(self) -> Any:
        """The Hyperscan database of all the patterns; PatternError names every one refused.

        A caseless pattern of ASCII atoms is compiled as bytes (see `ascii_case`): the scan
        answers for it as in UTF-8 mode, for a fraction of the compile."""
        patterns = list(self.patterns)
        written, ids = patterns, [self.patterns[p] for p in patterns]
        utf8, byte_ids = [p.flags for p in patterns], self.as_bytes()
        as_bytes = [
            f & ~hyperscan.HS_FLAG_UTF8 if self.patterns[p] in byte_ids else f
            for p, f in zip(patterns, utf8, strict=True)
        ]
        # Each regex RE2 answers for too (see `_end_checker`) is also written without its `$`
        # assertions: where that is not found, neither is the regex, and RE2 is not asked.
        bodies = [(Pattern(e.body, e.pattern.caseless), PREFILTER + e.id) for e in self.ended()]
        if bodies:
            written, ids = [*written, *(b for b, _ in bodies)], [*ids, *(i for _, i in bodies)]
            utf8, as_bytes = [*utf8, *(b.flags for b, _ in bodies)], [*as_bytes, *(b.flags for b, _ in bodies)]
        attempts = [utf8]
        if as_bytes != utf8:
            # The trap finds a text those patterns must be asked about again (see the scan).
            # Should the bytes' compile fail, all in UTF-8 mode: the scan answers the same.
            written, ids = [*written, TRAP_PATTERN], [*ids, FOLD_TRAP]
            attempts = [[*as_bytes, FLAGS], [*utf8, FLAGS]]
        for flags in attempts:
            try:
                return _database(written, ids, flags)
            except hyperscan.error as exc:
                error = exc
        from rulesd.rules.regex_errors import explain_hyperscan

        # Hyperscan names no pattern: find them one by one (only ever on this error path).
        refused = [
            (origin, explain_hyperscan(p.expression, problem))
            for p in patterns
            if (problem := _hyperscan_error(p.expression, p.flags)) is not None
            for origin in self.origins[p]
        ]
        if not refused:  # together too large, each alone fine
            message = f"the patterns on {self.field!r} are refused together: {_text(error.args[0])}"
            refused = [(origin, message) for p in patterns for origin in self.origins[p]]
        raise PatternError(refused)

    def use(self, database: Any) -> None:
        """Scan with `database` (compiled from these patterns, or loaded from a cache)."""
        self.database = database
        self._use(database, self.as_bytes(), _end_checker(self.ended()))

    def join(self, load: Callable[[str], bytes | None], keep: Callable[[str, bytes], None], *, when: When) -> None:
        """Give the scanner the database that scans a block's texts joined (see `joined`), once
        it has its own: read by `load(key)`, else compiled and given to `keep(key, blob)`:
        "later", after COMPILE_AFTER blocks scanned text by text (`replay`, `check`, a rule
        test: a short run never pays for it); "beside", at once in a thread of its own, the
        blocks scanned text by text until it is done (a daemon: neither its start nor its
        loop waits for the compile, whose Hyperscan part lets go of the GIL); "now", before
        this returns."""
        # (keyed apart from the field's own database, and from any other way of writing it)
        key = digest(JOINED_WRITING, str(joined.FLAGS), self.key())

        def kept() -> tuple[bool, Any]:
            # Whether the cache answers, and its database (None: the field's texts one by one).
            blob = load(key)
            if blob == _JOINED_OFF:
                return True, None
            database = load_database(blob) if blob is not None else None
            return database is not None, database

        def compiled() -> Any:
            # (the cache read again: a compile beside, queued behind another of the same
            # patterns, finds it kept by then, as a quick reload that left this field alone does)
            found, database = kept()
            if not found:
                database = self._compile_joined()
                keep(key, _JOINED_OFF if database is None else dump_database(database))
            return database

        found, database = kept()
        if found:
            if database is not None:
                self._join(database, 0)
            return

        beside = _compiled_beside(compiled, self.field) if when == "beside" else None
        if beside is not None:
            self._join(beside, 0)
        else:  # (also a compile beside whose thread could not start: then in the loop, later)
            self._join(compiled() if when == "now" else compiled, COMPILE_AFTER)

    def _compile_joined(self) -> Any:
        """The database of joined texts: every pattern as `joined.joined_expression` writes it
        (a regex RE2 answers for too by its body, as in the field's own), each match reported;
        None if a pattern cannot be so written, or the database is refused.

        The patterns the field's own database compiles as bytes (`as_bytes`) are compiled as
        bytes here too, for a third of the compile (0.19 against 0.07 s for one field of 1,000
        rules), with the trap: a text holding a character they would miss as bytes is flagged
        by the trap's match, and its own scan answers for it (see `ascii_case`)."""
        ended = self.ended()
        answered = {e.pattern for e in ended}
        as_bytes = self.as_bytes()
        expressions = [
            (p.expression, p.caseless, self.patterns[p] in as_bytes) for p in self.patterns if p not in answered
        ]
        expressions += [(e.body, e.pattern.caseless, False) for e in ended]
        written = []
        for expression, _, _ in expressions:
            rewritten = joined.joined_expression(expression)
            if rewritten is None:
                return None
            written.append(rewritten.encode())
        utf8 = [joined.FLAGS | (hyperscan.HS_FLAG_CASELESS if caseless else 0) for _, caseless, _ in expressions]
        attempts = [utf8]
        if as_bytes:  # (should the bytes' compile fail, all in UTF-8 mode: the answers are the same)
            written.append(TRAP.encode())
            byte_flags = [f & ~hyperscan.HS_FLAG_UTF8 if b else f for f, (*_, b) in zip(utf8, expressions, strict=True)]
            attempts = [[*byte_flags, joined.FLAGS], [*utf8, joined.FLAGS]]
        for flags in attempts:
            database = hyperscan.Database(mode=MODE)
            try:
                database.compile(expressions=written, ids=list(range(len(written))), flags=flags)
            except hyperscan.error:
                continue
            return database
        return None

    def as_bytes(self) -> frozenset[int]:
        """The ids of the patterns compiled as bytes (`byte_caseless`), found once for the key, the
        compile and the scan: a warm start asks twice."""
        count, ids = self._bytes
        if count != len(self.patterns):  # (patterns added since)
            ids = frozenset(i for p, i in self.patterns.items() if byte_caseless(p.expression, p.caseless))
            self._bytes = (len(self.patterns), ids)
        return ids

    def ended(self) -> tuple[Ended, ...]:
        """The regexes RE2 answers for too, with their bodies (`end_checked`), found once for the
        key, the compile and the scan, as `as_bytes` is."""
        count, ended = self._ended
        if count != len(self.patterns):
            ended = end_checked(self.patterns)
            self._ended = (len(self.patterns), ended)
        return ended


# Hyperscan (the `hyperscan` package 0.9.1, every mode) misses some matches of a regex holding a
# repeat and a `$`: `ks*$` in a text of 17 bytes or more ending "k\n", `b+:*k?$` in "...kbk". In
# randomized comparisons with `re`, regexes with `$` and no repeat, and any with `\z` instead,
# were never wrong. Such regexes of a field are also asked of RE2 (linear time, as Hyperscan),
# whose answer for them counts (Hyperscan also reports some that are none: see `_Part.owned`),
# but for one holding `\z`, found where either finds it (see `_Part.again`).
_REPEATS = frozenset("*+?{")
PREFILTER = 2**30  # added to a regex's id: the id of its body (see `regex_text.body`)


# A regex of a field that RE2 answers for too (see `end_checked`); its `body` is written into
# the database too, as id `PREFILTER + id`. (`NamedTuple`'s functional form, the types given as
# objects: the class form's annotations are text here, which typing compiles at every start.)
Ended = NamedTuple("Ended", [("pattern", Pattern), ("id", int), ("body", str)])  # noqa: UP014


def end_checked(patterns: dict[Pattern, int]) -> tuple[Ended, ...]:
    """The regexes of `patterns` holding a `$` assertion and a repeat, with their bodies."""
    return tuple(
        Ended(p, i, regex_text.body(p.expression))
        for p, i in patterns.items()
        # (the set test first: most regexes have no `$`, and are not read piece by piece)
        if "$" in p.expression and not _REPEATS.isdisjoint(p.expression) and regex_text.dollar_and_repeat(p.expression)
    )


EndCheck = Callable[[str, frozenset[int]], frozenset[int]]


# RE2 sets are compiled in parts when one is too large (see `_parts`). `ids`: a pattern's id by
# its index in the set; `bodies`: the ids of their bodies (RE2 is asked only where one is
# found); `again`: (indexes) asked again without a text's final newline (no `\z`); `owned`: the
# ids RE2 answers for alone (those asked again): Hyperscan, which misses some of their matches,
# also reports some that are none when other regexes share its database (`\s\S+$` beside
# `(?m)^\S\s{1,2}\S{1,2}$` in " k \t s\t\t ks\v\t\v\tsk\v\n"); `asked`: where Hyperscan finds one
# of these ids, RE2 is asked (bodies and owned); `starts`: (indexes) the search of each regex
# that may hold a `(?m)^`, whose match in a whole text ending in a newline is one only if it
# starts before the end (see `check`). (The functional form, as `Ended`.)
_Part = NamedTuple(  # noqa: UP014
    "_Part",
    [
        ("match", Callable[[str | bytes], list[int] | None]),
        ("ids", list[int]),
        ("bodies", frozenset[int]),
        ("again", frozenset[int]),
        ("owned", frozenset[int]),
        ("asked", frozenset[int]),
        ("starts", dict[int, Callable[[str | bytes], Any]]),
    ],
)


def _end_checker(ended: tuple[Ended, ...]) -> EndCheck | None:
    """What gives a scan's answer with the regexes of `ended` as RE2 finds them in the text too
    (`$` before a final newline too, as Hyperscan and `re` mean it), and without the ids of
    their bodies; None if there are none."""
    if not ended:
        return None
    parts = _parts(ended)
    bodies = frozenset(PREFILTER + e.id for e in ended)
    # (a body found is never an answer: those of regexes RE2 could not take are taken out too)
    asked = bodies.union(*(part.asked for part in parts))

    def check(value: str, found: frozenset[int]) -> frozenset[int]:
        if found.isdisjoint(asked):
            return found
        answer = found - bodies
        text: str | bytes = value
        for part in parts:
            if found.isdisjoint(part.asked):
                continue
            answer -= part.owned
            match, ids = part.match, part.ids
            try:
                hits = match(text) or ()
            except UnicodeEncodeError:  # (a lone surrogate: see `_replace_surrogates`)
                text = _replace_surrogates(value)
                hits = match(text) or ()
            # RE2's `$` is the very end of the text: a match ending before a final newline is one
            # in the text without it (but for a regex with `\z`, which would be found there
            # wrongly). RE2's `(?m)^` matches after a final newline, Hyperscan's does not: there a
            # match is empty, at the end; a regex that may hold one is found in the whole text
            # only where its leftmost match starts before the end (a match may take that newline).
            if value.endswith("\n"):
                starts = part.starts
                hits = [
                    *(k for k in hits if k not in starts or _starts_before_end(starts[k], text)),
                    *(k for k in match(text[:-1]) or () if k in part.again),
                ]
            if hits:
                answer = answer.union(ids[k] for k in hits)
        return answer

    return check


def _starts_before_end(search: Callable[[str | bytes], Any], text: str | bytes) -> bool:
    found = search(text)
    return found is not None and found.start() < len(text)


def _parts(ended: tuple[Ended, ...]) -> list[_Part]:
    """RE2 sets of the regexes of `ended`: one, or when RE2 refuses it as too large, halves of
    it, halved again until each compiles; a regex RE2 refuses alone is answered by Hyperscan
    alone (as are all when RE2 could not take them), its body still taken out of the answer."""
    found_by = re2.Set.SearchSet(_RE2_OPTIONS)
    ids: list[int] = []
    again: set[int] = set()
    starts: dict[int, Callable[[str | bytes], Any]] = {}
    for e in ended:
        expression = ("(?i)" if e.pattern.caseless else "") + regex_text.for_re2(e.pattern.expression)
        # (every rule regex compiles in RE2: `check` refuses those it does not; should one not,
        # as written for RE2, Add raises or gives -1, and Hyperscan answers for it alone)
        try:
            added = found_by.Add(expression)
        except re2.error:
            added = -1
        if added >= 0:
            if "\\z" not in e.pattern.expression:
                again.add(len(ids))
            if regex_text.multiline_start(e.pattern.expression):
                starts[len(ids)] = re2.compile(expression, options=_RE2_OPTIONS).search
            ids.append(e.id)
    try:
        found_by.Compile()
    except re2.error:  # (too large for RE2's memory as one set)
        half = len(ended) // 2
        return [*_parts(ended[:half]), *_parts(ended[half:])] if half else []
    bodies = frozenset(PREFILTER + i for i in ids)
    owned = frozenset(ids[k] for k in again)
    return [_Part(found_by.Match, ids, bodies, frozenset(again), owned, bodies | owned, starts)]


def _database(patterns: list[Pattern], ids: list[int], flags: list[int]) -> Any:
    database = hyperscan.Database(mode=MODE)
    database.compile(expressions=[p.expression.encode() for p in patterns], ids=ids, flags=flags)
    return database


# The answers for recent texts of a field, by text: many fields repeat a few values (paths,
# programs, user agents), and a dict lookup costs a fifth of a scan. Short texts only, so the
# memory stays small; a field whose texts seldom repeat (free-text messages) stops looking
# them up (see `_memoised_scan`).
MEMO_SIZE = 1024  # texts remembered per field, and looked up by a probe (see `_memoised_scan`)
MEMO_TEXT_MAX = 256  # characters


def _memoised_scan(
    field: str,
) -> tuple[Scan, Callable[[Any, frozenset[int], EndCheck | None], None], BlockScan, Callable[[Any, int], None]]:
    """`scan`, the function that gives it its database, `scan_block` and the function that
    gives that its second database (see `FieldScanner.join`); a closure, so that the hot path
    reads its state from cells instead of an object's attributes.

    Besides the last text, the answers for up to `MEMO_SIZE` recent short texts are kept by
    text: the answer depends only on the text, so an equal text gets it without a scan. The
    index looks texts up in the memo itself (`memo_of`), so a text found there never reaches
    the scan, which cannot count it. Whether a field's texts repeat is therefore judged while
    they are remembered apart, in `probe`, where only the scan looks: after a new database, and
    each time the memo is emptied, the scan alone looks up `MEMO_SIZE` short texts: the window a
    field was judged on when only the scan read the memo (a shorter one finds fewer of the
    texts that repeat: with 256, a field of ~1,500 equally likely texts was judged free text).
    The last text asked again is not counted: the predicates of an event's candidates ask
    again about the text the index asked about, which says nothing of the next texts. If fewer
    than one in eight was found in the probe, the field's texts do not repeat (free text): they
    are no longer looked up nor remembered, until the scanner is given a database again (a new
    rule set); else the probe's texts fill the memo. The memo is emptied once it holds
    `MEMO_SIZE` texts, the probe's among them (what a predicate finds in it does not count:
    the texts that repeat most would otherwise be probed again and again).
    """
    found: list[int] = []
    append = found.append
    last_value: object = None
    last_ids = NO_IDS
    memo: dict[str, frozenset[int]] = {}  # (the index reads it: emptied, never replaced)
    probe: dict[str, frozenset[int]] = {}
    filling = probe  # the texts the scan looks up and fills: the probe's, then the memo's
    recall = filling.get
    remember = True
    repeats = 0
    folded = NO_IDS  # the ids of the patterns compiled as bytes
    ended: EndCheck | None = None  # (see `_end_checker`)
    # Block scans (see `joined`): the scan of joined texts (none until `join` gives it its
    # database, or what compiles it after COMPILE_AFTER blocks); the ends of the matches it
    # reported, and how many stop it; the blocks left to scan text by text, and the next pause.
    joined_scan: Callable[[tuple[Any], object], object] | None = None
    joined_later: Callable[[], Any] | None = None
    reported: list[int] = []
    report = reported.append
    most = 0
    paused = 0
    pause = PAUSED_FEWEST
    scans = 0  # texts scanned alone
    alone = 0.0  # what a text costs text by text, as last counted (0: not yet)
    blocks = 0  # blocks scanned joined since one text by text

    def on_match(pattern_id: int, start: int, end: int, flags: int, context: object) -> None:
        append(pattern_id)

    def unbuilt(data: tuple[bytes], on_match: object) -> None:
        raise RuntimeError(f"the patterns on {field!r} were scanned before they were compiled")

    database_scan: Callable[[tuple[bytes], object], object] = unbuilt

    def scan(value: str) -> frozenset[int]:
        nonlocal last_value, last_ids, repeats, scans
        # By text, not identity: a line with candidates is parsed whole after its view was
        # scanned, and a free-text field (no memo) was scanned again for the predicates (the
        # estate benchmark shape at 1,000 rules: a tenth more scans than events). Another
        # text mostly differs in length, which the comparison reads first.
        if value == last_value:  # (not counted: the predicates ask again about the index's text)
            return last_ids
        if remember:
            ids = recall(value)
            if ids is not None:
                if filling is probe:  # (counted while probing)
                    repeats += 1
                    if repeats + len(probe) >= MEMO_SIZE:
                        full()
                last_value, last_ids = value, ids
                return ids
        scans += 1
        try:
            database_scan((value.encode(),), on_match)  # (a vector of one buffer: see MODE)
        except UnicodeEncodeError:  # a lone surrogate (not from JSON): Hyperscan needs valid UTF-8
            database_scan((_replace_surrogates(value),), on_match)
        if found:
            ids = frozenset(found)
            found.clear()
            if folded and FOLD_TRAP in ids:  # (asked only of a text where something was found)
                ids = refolded(value, ids)
        else:
            ids = NO_IDS
        if ended is not None:
            ids = ended(value, ids)
        if remember and len(value) <= MEMO_TEXT_MAX and type(value) is str:
            filling[value] = ids
            if repeats + len(filling) >= MEMO_SIZE:  # (`repeats` is 0 but while probing)
                full()
        last_value, last_ids = value, ids
        return ids

    def refolded(value: str, ids: frozenset[int]) -> frozenset[int]:
        # The text holds the Kelvin sign or the long s (the trap was found): the patterns compiled
        # as bytes answer for it with them written as the letters they fold to (see
        # `ascii_case`), the others as scanned.
        database_scan((_utf8(ascii_folded(value)),), on_match)
        kept = {i for i in ids if i not in folded and i != FOLD_TRAP}
        kept.update(i for i in found if i in folded)
        found.clear()
        return frozenset(kept) if kept else NO_IDS

    def full() -> None:
        # The probe full: the texts repeat or not; the memo full: emptied, probe again.
        nonlocal remember, repeats, filling, recall
        if filling is probe:
            remember = repeats * 8 >= len(probe) + repeats
            if remember:
                memo.update(probe)
            filling = memo  # (left empty if not remembering)
            probe.clear()
        else:
            memo.clear()
            filling = probe
        recall, repeats = filling.get, 0

    def use(database: Any, byte_caseless: frozenset[int], end_checker: EndCheck | None) -> None:
        nonlocal database_scan, last_value, last_ids, remember, repeats, folded, ended, filling, recall
        nonlocal joined_scan, joined_later, paused, pause, alone, blocks
        database_scan, last_value, last_ids, folded, ended = database.scan, None, NO_IDS, byte_caseless, end_checker
        memo.clear()
        probe.clear()
        filling, recall = probe, probe.get
        remember, repeats = True, 0
        joined_scan, joined_later, paused, pause, alone, blocks = None, None, 0, PAUSED_FEWEST, 0.0, 0

    def prime(value: Any, ids: frozenset[int] | None) -> None:
        # A block's answer for a text a candidate's predicate will ask about again.
        nonlocal last_value, last_ids
        if ids is not None:
            last_value, last_ids = value, ids

    def on_joined_match(pattern_id: int, start: int, end: int, flags: int, context: object) -> bool | None:
        report(end)
        return len(reported) > most or None  # (True stops the scan)

    def one_by_one(values: list[Any]) -> list[frozenset[int] | None]:
        return [scan(v) if type(v) is str else None for v in values]

    def counted(values: list[Any]) -> list[frozenset[int] | None]:
        # `one_by_one`, counting what a text costs so
        nonlocal alone, blocks
        before = scans
        answers = one_by_one(values)
        texts = len(values) - answers.count(None)
        if texts:
            scanned = scans - before
            alone = (scanned + ANSWERED_COST * (texts - scanned)) / texts
        blocks = 0
        return answers

    def scan_block(views: list[Any], value_of: Callable[[Any], Any]) -> list[frozenset[int] | None] | None:
        nonlocal paused, pause, blocks
        if paused:
            paused -= 1
            return None
        if joined_scan is None and joined_later is not None:
            database = joined_later()
            if database is COMPILING:  # (compiled beside: text by text meanwhile)
                return None
            join(database, 0)
        if joined_scan is None:
            return None
        if not alone or blocks >= PROBE_EVERY:
            return counted([value_of(e) if e is not None else None for e in views])
        spare = (alone - JOINED_TEXT_COST) * len(views) - JOINED_COST  # (for reports and texts flagged)
        blocks += 1
        answers = None
        if spare >= REPORT_COST + FLAG_COST:
            answers = joined_answers([value_of(e) if e is not None else None for e in views], spare)
        if answers is None:  # dearer than text by text: so for a while
            paused_next()
        elif not paused:
            pause = PAUSED_FEWEST
        return answers

    def joined_answers(values: list[Any], spare: float) -> list[frozenset[int] | None] | None:
        # The block's answers from the scan of its texts joined (see `joined`); None where
        # its reports and texts flagged cost more than `spare`, or a text cannot be scanned.
        nonlocal most
        others: list[int] = []
        try:
            text = joined.SEPARATOR.join(values)
            texts = values
        except TypeError:  # (a value that is not a text: missing, a number, a list)
            texts = [v if type(v) is str else "" for v in values]
            others = [i for i, v in enumerate(values) if type(v) is not str]
            text = joined.SEPARATOR.join(texts)
        try:
            data = text.encode()
        except UnicodeEncodeError:  # a lone surrogate (not from JSON)
            return None
        assert joined_scan is not None
        most = int(spare / (REPORT_COST + FLAG_COST))  # (each report may flag a text)
        try:
            joined_scan((data,), on_joined_match)
        except hyperscan.ScanTerminated:  # more matches than `most`
            reported.clear()
            return None
        answers: list[frozenset[int] | None] = [NO_IDS] * len(values)
        for i in others:
            answers[i] = None
        if reported:
            flagged = joined.flagged(reported, texts, data, text)
            for i in flagged:
                if type(value := values[i]) is str:
                    answers[i] = scan(value)
            if REPORT_COST * len(reported) + FLAG_COST * len(flagged) > spare:
                paused_next()  # (its answers are right: the next blocks are scanned text by text)
            reported.clear()
        return answers

    def paused_next() -> None:
        nonlocal paused, pause
        paused, pause = pause, min(2 * pause, PAUSED_MOST)

    def join(database: Any, after: int) -> None:
        # The database of joined texts, or what gives it once `after` blocks were scanned text
        # by text (COMPILING until it has it); None: texts are scanned one by one.
        nonlocal joined_scan, joined_later, most, paused
        joined_scan, joined_later, most = None, None, 0
        if callable(database):
            joined_later, paused = database, after
        elif database is not None:
            try:  # (the first report stops it: `most` is 0 here)  # noqa: SIM105
                database.scan((b"",), on_joined_match)
            except hyperscan.ScanTerminated:
                pass
            if reported:  # a pattern found in an empty text: found everywhere, flagging every text
                reported.clear()
            else:
                joined_scan = database.scan

    scan_block.__dict__[_PRIME] = prime  # (see `prime_of`)
    scan.__dict__[_MEMO] = memo  # (see `memo_of`)
    return scan, use, scan_block, join


# One compile beside at a time: a reload no longer waits for its rule set's compiles, so quick
# reloads of a large rule set would otherwise run theirs all at once (a hundred thousand
# message patterns take seconds each), where the reload thread ran them one after another.
_ONE_BESIDE = _thread.allocate_lock()  # (`_thread`: `threading` is only imported by a daemon)


def _compiled_beside(compile: Callable[[], Any], field: str) -> Callable[[], Any] | None:
    """Run `compile` in a thread of its own now (once those begun before are done); what is
    returned answers COMPILING until it is done, then what it returned (None if it failed:
    texts are scanned one by one). None if no thread could be started (a container's limit
    on processes reached)."""
    done: list[Any] = []

    def run() -> None:
        try:
            with _ONE_BESIDE:
                done.append(compile())
        except Exception:  # (MemoryError, a bug): the answers are the same without it
            done.append(None)
            logger(__name__).exception("the database scanning %r texts joined was not compiled", field)

    import threading  # (here: only a daemon compiles beside)

    # A daemon thread: a daemon stopping meanwhile does not wait for the compile.
    try:
        threading.Thread(target=run, name="rulesd-compile", daemon=True).start()
    except RuntimeError as exc:  # ("can't start new thread")
        logger(__name__).warning("the database scanning %r texts joined is compiled later: %s", field, exc)
        return None
    return lambda: done[0] if done else COMPILING


def _utf8(value: str) -> bytes:
    try:
        return value.encode()
    except UnicodeEncodeError:
        return _replace_surrogates(value)


def _replace_surrogates(value: str) -> bytes:
    """UTF-8 with each lone surrogate as U+FFFD: valid, and no pattern text can match one."""
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


def dump_database(database: Any) -> bytes:
    """A compiled database as bytes (Hyperscan's own serialisation)."""
    data: bytes = hyperscan.dumpb(database)
    return data


def load_database(data: bytes) -> Any:
    """A database from `dump_database`, or None if this Hyperscan cannot use it (another
    version, or a CPU without the instructions it was compiled for)."""
    try:
        database = hyperscan.loadb(data, MODE)
        database.scratch = hyperscan.Scratch(database)  # compile makes one; loading does not
    except (hyperscan.error, TypeError, ValueError):
        return None
    return database


class PatternError(ValueError):
    """Patterns Hyperscan refused: (origin as given to `add`, message) for each place."""

    def __init__(self, refused: list[tuple[Any, str]]) -> None:
        super().__init__("; ".join(message for _, message in refused))
        self.refused = refused


class PatternSet:
    """All the patterns of a rule set, by field, until `build` compiles each field's database."""

    def __init__(self) -> None:
        self.fields: dict[str, FieldScanner] = {}

    def add(self, field: str, pattern: Pattern, origin: object = None) -> tuple[FieldScanner, int]:
        """The scanner of `field` and the id `pattern` has in it; `origin` says where it was
        written, for the errors of `build`."""
        scanner = self.fields.get(field)
        if scanner is None:
            scanner = self.fields[field] = FieldScanner(field)
        return scanner, scanner.add(pattern, origin)

    def build(self, load: Callable[[FieldScanner], Any] | None = None) -> list[FieldScanner]:
        """Give every field's scanner its database: from `load` (a cache, which answers None
        when it has none), else compiled. Returns the scanners that were compiled; raises
        PatternError with every refused pattern of every field."""
        compiled, refused = [], []
        for scanner in self.fields.values():
            database = load(scanner) if load is not None else None
            if database is None:
                try:
                    database = scanner.compile()
                except PatternError as exc:
                    refused.extend(exc.refused)
                    continue
                compiled.append(scanner)
            scanner.use(database)
        if refused:
            raise PatternError(refused)
        return compiled
