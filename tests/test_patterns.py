"""Rule regexes and literals: which are allowed, what they mean, and the shared scan."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

import hyperscan
import pytest
import re2

from rulesd.rules import patterns, regex_text
from rulesd.rules.loader import check_text
from rulesd.rules.patterns import (
    FLAGS,
    MEMO_SIZE,
    MEMO_TEXT_MAX,
    MODE,
    PREFILTER,
    FieldScanner,
    Pattern,
    PatternError,
    PatternSet,
    _end_checker,
    compile_source_pattern,
    end_checked,
    literal_pattern,
    memo_of,
    regex_problem,
)

REFUSED = [
    ("(a)\\1", "backreferences", 4),
    ("(?P<x>a)(?P=x)", "backreferences", 9),
    ("a\\k<x>", "backreferences", None),
    ("time(?=out)", "look-ahead assertions", 5),
    ("time(?!out)", "look-ahead assertions", 5),
    ("(?<=dis)connect", "look-behind assertions", 1),
    ("(?<!dis)connect", "look-behind assertions", 1),
    ("(?>a+)b", "atomic groups", 1),
    ("a++b", "possessive quantifiers", None),
    ("a*+b", "possessive quantifiers", None),
    ("^(a)?(?(1)b|c)$", "conditional groups", 6),
    ("(?P>x)", "recursive patterns", 1),
]


@pytest.mark.parametrize(("pattern", "construct", "position"), REFUSED)
def test_constructs_that_need_backtracking_are_refused_saying_which(
    pattern: str, construct: str, position: int | None
) -> None:
    """Each refusal names the construct, where it is, and why."""
    problem = regex_problem(pattern)
    assert problem is not None
    assert f"regex {pattern!r} is refused: {construct} are not supported" in problem
    assert "linear in the text" in problem
    if position is not None:
        assert f"at position {position};" in problem


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(x", "invalid regex '(x': missing ) at position 1"),
        ("timeout|(refused", "invalid regex 'timeout|(refused': missing ) at position 9"),
        ("(a|(b)c", "invalid regex '(a|(b)c': missing ) at position 1"),
        ("a)b(c", "invalid regex 'a)b(c': unexpected ) at position 2"),
        ("[(]\\(x)", "invalid regex '[(]\\\\(x)': unexpected ) at position 7"),  # no group in a class or after \\
        ("[a", "invalid regex '[a': missing ] at position 1"),
        ("x\\Z", "invalid regex 'x\\\\Z': invalid escape sequence at position 2"),  # Python's \Z is RE2's \z
        ("(?x) a # b", "invalid regex '(?x) a # b': invalid perl operator at position 1"),
        ("(?P<1a>x)", "invalid regex '(?P<1a>x)': group name cannot begin with a digit at position 1"),
        (
            "a(?P<n>x)(?P<n>y)",
            "invalid regex 'a(?P<n>x)(?P<n>y)': two named subpatterns use the name 'n' at position 10",
        ),
        ("(?Pn>x)", "invalid regex '(?Pn>x)': invalid named group (write (?P<name>...)) at position 1"),
        (
            "a{2,1}",
            "invalid regex 'a{2,1}': invalid repetition {2,1} (the least count is above the most) at position 2",
        ),
        (
            "a{1001}",
            "regex 'a{1001}' is refused: repetition counts above 1000 are not supported at position 2 (RE2's limit)",
        ),
        ("\\C", "regex '\\\\C' is refused: \\C is unsupported in UTF8 at position 1; it is not in the syntax RE2 and"),
        ("a$b", "regex 'a$b' is refused: embedded end anchors not supported; it is not in the syntax RE2 and"),
        ("a\\bb", "regex 'a\\\\bb' can never match anything"),
    ],
)
def test_other_refusals_say_what_is_wrong(pattern: str, message: str) -> None:
    """Syntax errors say what is wrong and where (1-based), without the reason of the constructs
    refused for needing backtracking (time linear in the text), which would send the user
    looking for a construct that is not there."""
    problem = regex_problem(pattern)
    assert problem is not None and problem.startswith(message), problem
    assert "linear" not in problem


@pytest.mark.parametrize(
    "pattern",
    ["^(a+)+$", "(x+x+)+y", "(a|aa)+$", "(?i)straße", "\\pL+", "\\x{e9}", "(?P<name>x)", "(?<name>x)", "[[:alpha:]]"],
)
def test_patterns_of_the_shared_syntax_are_allowed(pattern: str) -> None:
    """Patterns that backtrack exponentially in `re` are fine here: both engines are linear."""
    assert regex_problem(pattern) is None


def found(pattern: str, text: str, caseless: bool = False) -> bool:
    """Whether the pattern is found in `text` by a one-pattern scan."""
    patterns = PatternSet()
    scanner, pattern_id = patterns.add("f", Pattern(pattern, caseless))
    patterns.build()
    return pattern_id in scanner.scan(text)


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("c$", "abc", True),
        ("c$", "abc\n", True),  # `$`: the end or before a final newline, as in Python and PCRE
        ("c$", "abc\n\n", False),
        ("c\\z", "abc\n", False),  # `\z`: the very end
        ("^$", "", True),  # empty matches are matches, as `re.search` finds them
        ("a*", "zzz", True),
        ("x?", "", True),
        ("a.b", "a\nb", False),  # `.` stops at a newline unless (?s)
        ("(?s)a.b", "a\nb", True),
        ("a.b", "aéb", True),  # `.` is one character, however many bytes
        ("\\d", "٣", False),  # `\d`, `\w`, `\s`, `\b` are ASCII
        ("\\w", "é", False),
        ("\\bé", " é", False),
        ("\\pN", "٣", True),  # Unicode classes are Unicode
        ("(?i)é", "É", True),  # case folding is Unicode
        ("(?i)k", "\u212a", True),  # the Kelvin sign folds to k
        ("(?i)s", "ſ", True),  # and the long s to s
        ("(?i)straße", "STRASSE", False),  # simple folding: ß is not ss
        ("É", "é", False),
        ("(?m)^b", "a\nb", True),
        ("\\x{1F600}", "😀", True),
    ],
)
def test_what_a_regex_means(pattern: str, text: str, expected: bool) -> None:
    """The meaning the README documents."""
    assert expected == found(pattern, text)


ASCII_PATTERNS = [
    "timeout|refused",
    "(?i)TIMEOUT",
    "^up",
    "out$",
    "[0-9]{3}",
    "^[^a-z]+$",
    "ab*c",
    "(ab){2,}",
    "\\bdb-\\d+\\b",
    "x.y",
    "(?s)x.y",
    "a|",
    "q*",
    "[A-Z][0-9]",
    "(?m)^b$",
    "\\s{2}",
]


def test_on_ascii_text_a_regex_finds_what_python_finds() -> None:
    """Where the syntaxes share a meaning (ASCII text, no vertical tab), the scan agrees with
    `re.search` on thousands of random texts."""
    rng = random.Random(5)
    alphabet = "abcqxyAB01 \n.-_db"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(3000)]
    texts += ["upstream timeout", "conn REFUSED", "db-12 down", "x\ny", "abbc", "abab", "up", "out\n", "  "]
    patterns = PatternSet()
    scans = {p: patterns.add("f", Pattern(p)) for p in ASCII_PATTERNS}
    patterns.build()
    differ = [
        (p, t) for t in texts for p, (scanner, i) in scans.items() if (i in scanner.scan(t)) != bool(re.search(p, t))
    ]
    assert [] == differ[:5]


@pytest.mark.parametrize("where", ["contains", "startswith", "endswith", "equals"])
def test_a_literal_is_found_exactly_where_python_finds_it(where: str) -> None:
    """Literals with regex syntax, Unicode and case differences: the scan answers as `in`,
    `startswith`, `endswith` and `==` do."""
    rng = random.Random(11)
    words = ["a.b", "[x]", "(y)", "\\", "é", "É", "日本", "😀", "K", "k", "out\n", "$", "^", " ", "*", "{1}"]
    literals = list(dict.fromkeys(words + ["".join(rng.sample(words, 2)) for _ in range(20)]))
    texts = ["".join(rng.choice(words) for _ in range(rng.randint(0, 4))) for _ in range(800)]
    patterns = PatternSet()
    scans = {}
    for text in literals:
        pattern = literal_pattern(text, where)
        assert pattern is not None
        scans[text] = patterns.add("f", pattern)
    patterns.build()
    python = {
        "contains": lambda lit, t: lit in t,
        "startswith": lambda lit, t: t.startswith(lit),
        "endswith": lambda lit, t: t.endswith(lit),
        "equals": lambda lit, t: t == lit,
    }[where]
    differ = [(lit, t) for t in texts for lit, (s, i) in scans.items() if (i in s.scan(t)) != python(lit, t)]
    assert [] == differ[:5]


def test_a_caseless_literal_folds_case_as_a_caseless_regex_does() -> None:
    """A literal that ignores case (for text operators that ignore case) is found as `(?i)`
    finds its escaped text."""
    pattern = literal_pattern("Straße K", "contains", caseless=True)
    assert pattern is not None
    patterns = PatternSet()
    scanner, i = patterns.add("f", pattern)
    patterns.build()
    assert [True, True, False] == [i in scanner.scan(t) for t in ("xSTRAßE k", "straße \u212a", "strasse k")]


def test_literals_hyperscan_cannot_take_are_left_to_python() -> None:
    """An empty literal or one with a lone surrogate gets no pattern (the predicate alone decides)."""
    assert literal_pattern("", "contains") is None
    assert literal_pattern("a\ud800", "contains") is None


def test_a_lone_surrogate_in_a_value_scans_as_a_replacement_character() -> None:
    """Hyperscan needs valid UTF-8; a text with a lone surrogate (possible from YAML, not from
    JSON) is scanned with U+FFFD in its place instead of failing."""
    assert found("a.b", "a\ud800b")
    assert not found("\\x{d800}|x", "a\ud800b")


def test_the_scan_remembers_the_last_text_and_answers_each_text_its_own() -> None:
    """An equal text built anew gives the same answer, a different text its own."""
    patterns = PatternSet()
    scanner, i = patterns.add("f", Pattern("err"))
    patterns.build()
    text = "an error"
    assert i in scanner.scan(text) and i in scanner.scan(text)
    assert i in scanner.scan("".join(["an ", "error"]))
    assert i not in scanner.scan("all fine")


class _CountingDatabase:
    """A database whose scans are counted."""

    def __init__(self, database: Any) -> None:
        self.database, self.scans = database, 0

    def scan(self, data: bytes, match_event_handler: Any) -> Any:
        self.scans += 1
        return self.database.scan(data, match_event_handler=match_event_handler)


def _counted_scanner(*patterns: str) -> tuple[Any, _CountingDatabase]:
    pattern_set = PatternSet()
    for pattern in patterns:
        scanner, _ = pattern_set.add("f", Pattern(pattern))
    pattern_set.build()
    counting = _CountingDatabase(scanner.database)
    scanner.use(counting)
    return scanner, counting


def test_a_text_seen_lately_is_answered_without_a_scan() -> None:
    """Fields repeat a few values (paths, programs): an equal text, built anew, gets the
    answer of its first scan, and the answers stay those of a scan."""
    patterns = ("err(or)?", "^/api/", "\\.exe$")
    scanner, counting = _counted_scanner(*patterns)
    texts = ["/api/v1", "C:\\cmd.exe", "an error", "fine", "/static/x"]
    rng = random.Random(3)
    for _ in range(500):
        text = "".join(list(rng.choice(texts)))  # a new object each time
        assert scanner.scan(text) == {i for i, p in enumerate(patterns) if re.search(p, text)}
    assert len(texts) == counting.scans


def test_the_last_text_is_answered_again_without_a_scan_when_the_memo_is_off() -> None:
    """The index scans the text of a line's view, the predicates then ask about the same
    text in the line parsed whole (another object): a long text, never in the memo, is
    scanned once for both, and the next different text gets a scan and its own answer."""
    scanner, counting = _counted_scanner("boom [0-9]+")
    long = "x" * MEMO_TEXT_MAX + " boom 42"
    for _ in range(3):
        assert {0} == scanner.scan("".join(list(long)))  # a new object each time
    assert 1 == counting.scans
    assert set() == scanner.scan("y" * len(long))  # as long, but another text
    assert {0} == scanner.scan("".join(list(long)))
    assert 3 == counting.scans


def test_the_texts_remembered_are_few_and_short() -> None:
    """At most MEMO_SIZE texts of at most MEMO_TEXT_MAX characters: a long text is scanned
    each time, and the memo is emptied when full."""
    scanner, counting = _counted_scanner("x")
    long = "x" * (MEMO_TEXT_MAX + 1)
    for text in (long, "a", "".join([long])):
        scanner.scan(text)
    assert 3 == counting.scans
    for i in range(MEMO_SIZE):
        scanner.scan(f"t{i}")
        scanner.scan("".join(["common", ""]))  # a repeat after each new text: the memo pays
    assert 3 + MEMO_SIZE + 2 == counting.scans  # "common" once more after the memo was emptied
    for _ in range(2):
        scanner.scan("".join(["a", ""]))
        scanner.scan("b")
    assert 3 + MEMO_SIZE + 2 + 2 == counting.scans  # "a" was forgotten with the others, then remembered


def _asked_as_the_index_asks(scanner: FieldScanner) -> Callable[[str], frozenset[int]]:
    """A text's answer as the index gets it: remembered (`memo_of`), else scanned."""
    recall = memo_of(scanner.scan).get

    def asked(text: str) -> frozenset[int]:
        ids = recall(text)
        return scanner.scan(text) if ids is None else ids

    return asked


def test_the_memo_answers_as_a_scan_across_its_fills(monkeypatch: pytest.MonkeyPatch) -> None:
    """Randomized: with a small memo filled and emptied many times (and turned off by a run of
    texts that do not repeat, until the scanner is given its database again), every answer
    is the scan's, for texts remembered, forgotten or new, asked of the scan or looked up as
    the index does."""
    monkeypatch.setattr(patterns, "MEMO_SIZE", 16)
    expressions = ("err(or)?", "^/api/", "\\.exe$", "[0-9]{3}")
    scanner, counting = _counted_scanner(*expressions)
    asked, recall = _asked_as_the_index_asks(scanner), memo_of(scanner.scan).get
    rng = random.Random(11)
    pool = [f"/api/{rng.randrange(1000)}" for _ in range(4)] + ["a.exe", "error 500", "fine"]
    remembered = 0
    for round_ in range(30):
        repeats = 0.7 if round_ % 3 else 0.0  # every third round free text: the memo turns off
        for _ in range(100):
            text = rng.choice(pool) if rng.random() < repeats else f"x{rng.randrange(10**6)}.exe"
            ask = asked if rng.random() < 0.5 else scanner.scan
            remembered += ask is asked and recall(text) is not None
            assert ask("".join(list(text))) == {i for i, p in enumerate(expressions) if re.search(p, text)}
        scanner.use(counting)  # (its memo starts again)
    assert remembered > 100, remembered  # (243 of the ~1,500 texts the index asked about)


def test_the_index_finds_texts_remembered_once_they_are_seen_to_repeat() -> None:
    """The index looks a text up in the memo before it calls the scan. The memo stays empty
    while the scan alone counts the repeats (MEMO_SIZE texts); texts that repeat then fill
    it, and are answered without a scan; a text not seen, or not since the memo was emptied,
    is scanned and its answer remembered."""
    scanner, counting = _counted_scanner("err(or)?", "^/api/")
    recall = memo_of(scanner.scan).get
    asked = _asked_as_the_index_asks(scanner)
    texts = ["/api/v1", "an error", "fine"]
    for i in range(MEMO_SIZE):
        assert None is recall(texts[i % 3])  # (probing: only the scan looks)
        asked("".join([texts[i % 3], ""]))
    assert 3 == counting.scans  # they repeat: remembered
    assert {0} == recall("an error") and {1} == recall("/api/v1") and frozenset() == recall("fine")
    for _ in range(100):
        assert {0} == asked("".join(["an ", "error"]))
    assert 3 == counting.scans
    assert None is recall("an error 2")
    assert {0} == asked("an error 2") == recall("an error 2")
    assert 4 == counting.scans


def test_the_index_finds_no_text_of_a_field_that_does_not_repeat() -> None:
    """Free text: after MEMO_SIZE texts that do not repeat, none is remembered, a text
    repeated later included (each scan then only compares with the last text)."""
    scanner, counting = _counted_scanner("x")
    recall = memo_of(scanner.scan).get
    asked = _asked_as_the_index_asks(scanner)
    for i in range(2 * MEMO_SIZE):  # (a probe, and as many again)
        asked(f"message {i}")
    for text in ("again", "other", "again"):
        asked(text)
        assert None is recall(text)
    assert 2 * MEMO_SIZE + 3 == counting.scans


def test_a_text_asked_again_at_once_is_not_counted_as_repeating() -> None:
    """The candidates' predicates ask again about the text the index just asked about, which
    says nothing of the next texts: a field whose texts never repeat, each asked twice in a
    row, is judged free text all the same, and remembers nothing."""
    scanner, counting = _counted_scanner("x")
    asked, memo = _asked_as_the_index_asks(scanner), memo_of(scanner.scan)
    for i in range(2 * MEMO_SIZE):
        asked(f"message {i}")
        assert frozenset() == scanner.scan(f"message {i}")  # (a predicate's question: the last text)
        assert {} == memo, i
    assert 2 * MEMO_SIZE == counting.scans


def test_the_memo_is_emptied_once_full_and_probed_again() -> None:
    """The memo holds at most MEMO_SIZE texts: once full it is emptied, and the next texts are
    probed again before any is remembered. What the scan finds in it (a predicate asking again)
    does not fill it, so the texts that repeat most stay remembered."""
    scanner, counting = _counted_scanner("x")
    recall = memo_of(scanner.scan).get
    asked = _asked_as_the_index_asks(scanner)
    for i in range(MEMO_SIZE):
        asked(f"p{i % 2}")
    assert frozenset() == recall("p0") == recall("p1")
    for _ in range(2 * MEMO_SIZE):  # found by the scan: not counted
        scanner.scan("p0")
        scanner.scan("p1")
    for i in range(MEMO_SIZE - 3):  # (2 in the memo from the probe)
        asked(f"t{i}")
        assert frozenset() == asked("p0")
    assert 2 + MEMO_SIZE - 3 == counting.scans
    assert frozenset() == recall("t0") == recall("p0")
    asked("the last")  # the memo full: emptied
    assert None is recall("p0") is recall("t0")
    scans = counting.scans
    for text in ("t0", "p0", "t0"):  # forgotten: scanned, and probed again
        asked(text)
    assert scans + 2 == counting.scans
    assert None is recall("t0")


def test_a_new_database_forgets_every_answer_remembered() -> None:
    """The answers remembered are those of the database they were scanned with: a scanner
    given another (a new rule set's) answers every text anew, asked as the index asks."""
    scanner, _ = _counted_scanner("err(or)?", "^/api/")
    asked = _asked_as_the_index_asks(scanner)
    for i in range(MEMO_SIZE + 10):
        asked(("/api/v1", "an error", "fine")[i % 3])
    assert {0} == memo_of(scanner.scan).get("an error")
    other = PatternSet()
    other_scanner, _ = other.add("f", Pattern("fine"))
    other.build()
    scanner.use(other_scanner.database)
    assert frozenset() == asked("an error") == asked("/api/v1")
    assert {0} == asked("fine")


def test_texts_that_do_not_repeat_stop_the_memo() -> None:
    """Free text seldom repeats: once the scan has looked up MEMO_SIZE texts with fewer than
    one in eight found again, texts are scanned without being looked up or remembered, until
    the scanner is given a database again."""
    scanner, counting = _counted_scanner("x")
    for i in range(MEMO_SIZE):
        scanner.scan(f"message {i}")
    for text in ("again", "other", "again"):
        scanner.scan(text)
    assert MEMO_SIZE + 3 == counting.scans
    scanner.use(counting)
    for text in ("again", "other", "again"):
        scanner.scan(text)
    assert MEMO_SIZE + 5 == counting.scans


def test_scanning_before_the_databases_are_built_is_an_error() -> None:
    """A rule cannot run half-built: the scan refuses until its database exists."""
    scanner, _ = PatternSet().add("f", Pattern("x"))
    with pytest.raises(RuntimeError, match="before they were compiled"):
        scanner.scan("x")


def test_a_refused_pattern_is_reported_at_every_place_it_was_written() -> None:
    """Hyperscan's refusals (found only when the set is built) name each origin."""
    patterns = PatternSet()
    patterns.add("f", Pattern("ok"), "first")
    patterns.add("f", Pattern("\\C"), "second")
    patterns.add("f", Pattern("\\C"), "third")
    with pytest.raises(PatternError) as caught:
        patterns.build()
    assert ["second", "third"] == [origin for origin, _ in caught.value.refused]


def test_rulesd_check_reports_a_pattern_hyperscan_refuses_at_its_line_and_column() -> None:
    """`\\C` passes RE2 but not Hyperscan; `check` still reports it at the regex's place."""
    result = check_text("rules:\n  - name: r\n    match: {message: {regex: 'x\\C'}}\n", "rules.yaml")
    assert [
        "rules.yaml:3:30: error: rules[0].match.message.regex: regex 'x\\\\C' is refused: \\C is unsupported "
        "in UTF8 at position 2; it is not in the syntax RE2 and Hyperscan share"
    ] == [str(p).split("/")[-1] for p in result.problems]


@pytest.mark.parametrize(("pattern", "construct", "position"), REFUSED)
def test_source_patterns_are_refused_as_rule_regexes_are(pattern: str, construct: str, position: int | None) -> None:
    """The `regex` source format runs RE2, with the same refusals as rule regexes."""
    with pytest.raises(ValueError, match=f"is refused: {construct} are not supported"):
        compile_source_pattern(pattern)


def test_a_source_pattern_gives_its_named_groups() -> None:
    """RE2 has named groups, which become the event's fields; a group that took no part is left out."""
    compiled = compile_source_pattern(r"(?P<user>\S+) from (?P<ip>[\d.]+)(?: port (?P<port>\d+))?")
    assert {"user": "alice", "ip": "10.0.0.1"} == compiled.fields(b"Failed password for alice from 10.0.0.1")
    assert {"user": "é", "ip": "1.2", "port": "22"} == compiled.fields("for é from 1.2 port 22".encode())
    assert compiled.fields(b"nothing here") is None


def test_the_fast_source_match_answers_as_re2s_public_search() -> None:
    """`fields` calls the compiled pattern's own binding; on thousands of random lines, with
    multi-byte characters and optional groups, it answers exactly as the public `search`."""
    rng = random.Random(3)
    compiled = compile_source_pattern(r"(?P<a>[a-zé]+)=(?P<b>\d*)(?:;(?P<c>\S+))?|(?P<d>^日本)")
    words = ["a", "é", "=", "1", ";", "x", "日本", " ", "z", "22"]
    for _ in range(3000):
        line = "".join(rng.choice(words) for _ in range(rng.randint(0, 8))).encode()
        assert compiled.fields_by_search(line) == compiled.fields(line), line


def test_a_field_finds_short_literals_at_the_end_of_any_text() -> None:
    """What a field's scan finds is what `re.search` finds, for literals of one to four
    characters as `contains`, `startswith` and `endswith` write them, mixed in one database,
    in texts up to 100 characters. Hyperscan's block mode as the `hyperscan` package bundles
    it (0.7.23 to 0.9.1 at least) lost a two-character literal ending the text in texts of
    about 17 to 69 characters when the database also held a one-character literal or an
    anchored end (a page lost: `contains: "/c"` beside an `endswith` rule); scanned as a
    vector of one buffer, nothing is lost."""
    rng = random.Random(20240611)
    alphabet = "abcq/ .x"
    wrong = []
    for _ in range(600):
        scanner = FieldScanner("f")
        written: dict[int, tuple[str, str]] = {}
        for _ in range(rng.randint(2, 5)):
            text = "".join(rng.choice(alphabet) for _ in range(rng.choice([1, 2, 2, 3, 4])))
            where = rng.choice(["contains", "contains", "startswith", "endswith"])
            pattern = literal_pattern(text, where)
            assert pattern is not None
            written[scanner.add(pattern)] = (text, where)
        scanner.use(scanner.compile())
        for _ in range(20):
            value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 100)))
            expected = {
                i
                for i, (text, where) in written.items()
                if (text in value if where == "contains" else getattr(value, where)(text))
            }
            if (found := scanner.scan(value)) != expected:
                wrong.append((sorted(written.values()), value, sorted(found), sorted(expected)))
    assert [] == wrong[:3]


def _regex_with_repeats(rng: random.Random, depth: int = 0) -> str:
    """A random run of ASCII atoms, some repeated (`*`, `+`, `?`, `{m,n}`), some grouped."""
    atoms = ["a", "b", "k", "s", ":", ".", "[ab]", "[a-z]", "[^a]", "\\d", "x"]
    repeats = ["", "", "*", "+", "?", "{0,2}", "{1,3}"]
    parts = []
    for _ in range(rng.randint(1, 3)):
        if depth < 2 and rng.random() < 0.15:  # (a group repeated at most once: `re` backtracks)
            branches = "|".join(_regex_with_repeats(rng, depth + 1) for _ in range(rng.randint(1, 2)))
            parts.append(f"(?:{branches})" + rng.choice(["", "?"]))
        else:
            parts.append(rng.choice(atoms) + rng.choice(repeats))
    return "".join(parts)


@pytest.mark.parametrize(
    ("regex", "text"),
    [
        ("ks*$", "xxxxxxxxxxxxxxxk\n"),
        ("b+:*k?$", "a1yaxk1s\nyxx1xykbk"),
        ("k:*$", "1ykysxxysxxkbyysbsk:"),
        ("(?:[ab]+[ab]+[a-z]{0,2}|xs?x{0,2})k$", "ys:1ybyayxyxxx:xk"),
        ("(?i)KS*$", "xxxxxxxxxxxxxxxk\n"),
        ("(?m)ks*$", "xxxxxxxxxxxxxxxk\nyy"),
    ],
)
def test_a_regex_ending_in_a_dollar_after_a_repeat_is_found(regex: str, text: str) -> None:
    """Hyperscan (the `hyperscan` package 0.9.1, every mode) does not find these, which `re`
    finds: such regexes are also asked of RE2."""
    assert re.search(regex, text)
    scanner = FieldScanner("f")
    pattern_id = scanner.add(Pattern(regex))
    scanner.use(scanner.compile())
    assert pattern_id in scanner.scan(text)
    assert pattern_id not in scanner.scan(text.replace("k", "q"))


def _wrong_answers(
    rng: random.Random, regexes: Callable[[], list[tuple[str, str]]], alphabet: str, ends: list[str]
) -> list[tuple[list[str], str, list[int], list[int]]]:
    """Where a field's scan differs from `re.search`, on 1,000 sets of `regexes()` (each a rule
    regex and what `re` is to find for it), 15 random texts each ending in one of `ends`."""
    wrong = []
    for _ in range(1000):
        scanner = FieldScanner("f")
        written = {scanner.add(Pattern(regex)): oracle for regex, oracle in regexes()}
        scanner.use(scanner.compile())
        for _ in range(15):
            text = "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 2, 5, 15, 16, 17, 20, 40, 70])))
            text += rng.choice(ends)
            expected = {i for i, regex in written.items() if re.search(regex, text)}
            if (found := scanner.scan(text)) != expected:
                wrong.append((sorted(written.values()), text, sorted(found), sorted(expected)))
    return wrong


def test_regexes_ending_in_a_dollar_find_what_re_finds() -> None:
    """A field's scan of regexes with repeats ending in `$` (mixed with others, and with
    literals) finds what `re.search` finds, on texts with and without a final newline."""
    rng = random.Random(20241207)

    def regexes() -> list[tuple[str, str]]:
        written = []
        for _ in range(rng.randint(1, 4)):
            regex = _regex_with_repeats(rng)
            regex = ("^" if rng.random() < 0.3 else "") + regex + rng.choice(["$", "$", "$", ""])
            written.append((regex, regex))
        return written

    wrong = _wrong_answers(rng, regexes, "abks:x1\nxy", ["", "k\n", "s\n", "\n", "k", "k:\n", "bk"])
    assert [] == wrong[:3]


def test_a_regex_with_dollar_and_z_is_not_found_before_a_final_newline_by_its_z() -> None:
    """RE2 is asked of a text ending in a newline again without it, for `$`; a `\\z` of the same
    regex must not then be found before that newline."""
    scanner = FieldScanner("f")
    pattern_id = scanner.add(Pattern("ba*$|c\\z"))
    scanner.use(scanner.compile())
    assert pattern_id not in scanner.scan("xxxxxxxxxxxxxxxxxxxc\n")
    assert pattern_id in scanner.scan("xxxxxxxxxxxxxxxxxxxc")
    assert pattern_id in scanner.scan("xxxxxxxxxxxxxxxxxxxba\n")
    assert pattern_id in scanner.scan("xxxxxxxxxxxxxxxxxxxbaa")


def test_a_regex_among_too_many_for_one_re2_set_is_still_found() -> None:
    """RE2 refuses to compile 300 regexes with `$` and long repeats as one set; the set is
    compiled in parts, and a regex among them that Hyperscan misses (`ks*$` in a text of 17
    bytes ending "k\\n") is still found where its body is. (RE2 alone is asked here: Hyperscan
    takes minutes to compile such a field.)"""
    patterns = {Pattern(f"a{i:04d}.{{0,100}}[0-9a-f]{{1,60}}z+$"): i for i in range(300)}
    missed = patterns[Pattern("ks*$")] = len(patterns)
    whole = re2.Set.SearchSet(re2.Options())
    for pattern in patterns:
        whole.Add(pattern.expression)
    with pytest.raises(re2.error):
        whole.Compile()
    check = _end_checker(end_checked(patterns))
    assert check is not None
    assert check("x" * 15 + "k\n", frozenset({PREFILTER + missed})) == {missed}
    assert check("x" * 15 + "q\n", frozenset({PREFILTER + missed})) == set()
    # (5 is RE2's to answer, and is not in the text; 999 is another regex's, kept as found)
    assert check("a0007" + "-" * 90 + "9fzz\n", frozenset({PREFILTER + 7, 5, 999})) == {7, 999}


def test_re2_alone_answers_for_a_regex_with_a_repeat_and_dollar_hyperscan_reports_wrongly() -> None:
    """Hyperscan reports `\\s\\S+$` found in a text where it is not, when it shares a database
    with `(?m)^\\S\\s{1,2}\\S{1,2}$` (a false page); such a regex is RE2's to answer alone, as
    where Hyperscan misses one: RE2 is asked where Hyperscan reports it, and RE2's answer stands."""
    text = " k \t s\t\t ks\v\t\v\tsk\v\n"
    regexes = ["\\s\\S+$", "(?m)^\\S\\s{1,2}\\S{1,2}$"]
    database = hyperscan.Database(mode=MODE)
    database.compile(expressions=[r.encode() for r in regexes], ids=[0, 1], flags=[FLAGS, FLAGS])
    reported: list[int] = []
    database.scan((text.encode(),), lambda i, *_: reported.append(i))
    assert reported == [0] and not any(re.search(r, text) for r in regexes)  # (Hyperscan's own answer)
    check = _end_checker(end_checked({Pattern(r): i for i, r in enumerate(regexes)}))
    assert check is not None
    assert check(text, frozenset(reported)) == set()
    assert check(text + "x", frozenset({0, 7})) == {0, 7}  # (found there: RE2 says so; 7 is another's)


def test_a_regex_re2_refuses_as_written_for_it_is_left_to_hyperscan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should a rule regex, as written for RE2, be refused by it (`check` refuses those RE2 does
    not take as written in the rule), the others are still asked of RE2, and the rule set loads
    (RE2's Add raises rather than answering -1)."""
    written = regex_text.for_re2
    monkeypatch.setattr(regex_text, "for_re2", lambda e: "(" if e.startswith("bad") else written(e))
    check = _end_checker(end_checked({Pattern("bad+$"): 0, Pattern("ks*$"): 1}))
    assert check is not None
    assert check("x" * 15 + "k\n", frozenset({PREFILTER + 1})) == {1}
    assert check("xbad", frozenset({0, PREFILTER + 0})) == {0}


def test_only_a_regex_with_a_dollar_and_a_repeat_is_answered_by_re2() -> None:
    """The `?` of a flags group repeats nothing: `(?i)disk full$` is Hyperscan's alone, as every
    regex with `$` and no repeat (never wrong in the comparisons with `re`), so its texts are
    not asked of RE2; an escaped or classed `?`, `*`, `$` neither counts."""
    ids = {
        Pattern(regex): i
        for i, regex in enumerate(["(?i)disk full$", "(?i)ks*$", "a\\?$", "[?*]x$", "a\\$b*", "(?:ab)?$"])
    }
    assert [e.pattern.expression for e in end_checked(ids)] == ["(?i)ks*$", "(?:ab)?$"]


def test_a_field_without_regexes_for_re2_asks_nothing_more_per_text() -> None:
    """A field with no regex holding `$` and a repeat gets no second check at all: an empty RE2
    set's checker was called for every text of every field (+6 % per event on ops at 100 rules)."""
    assert _end_checker(()) is None
    scanner = FieldScanner("f")
    scanner.add(Pattern("disk full$"))
    scanner.add(Pattern("a+b"))
    assert end_checked(scanner.patterns) == ()


def test_the_cache_key_names_the_bodies_written() -> None:
    """A database written under another rule for the bodies (see `regex_text.body`) holds other
    expressions under the bodies' ids: the same patterns under another body rule have another
    key, so it is never read back."""
    scanner = FieldScanner("message")
    scanner.add(Pattern("(a+$|b)"))
    scanner.add(Pattern("disk"))
    key = scanner.key()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(regex_text, "body", lambda expression: expression[:-1])  # (an older rule)
        elsewhere = FieldScanner("message")
        for pattern in scanner.patterns:
            elsewhere.add(pattern)
        assert key != elsewhere.key()
    assert key == scanner.key()


def test_re2_is_asked_only_where_a_body_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """A regex whose `$` is not its last character (`(a+$|b)`, `k+$|c+d`) has a body too (its
    `$` assertions removed): RE2 is not asked of a text where no body is found."""
    asked: list[object] = []

    class Counted:
        def __init__(self, options: object) -> None:
            self.inner = real(options)
            self.Add, self.Compile = self.inner.Add, self.inner.Compile

        def Match(self, text: object) -> object:
            asked.append(text)
            return self.inner.Match(text)

    real = re2.Set.SearchSet
    monkeypatch.setattr(re2.Set, "SearchSet", Counted)
    scanner = FieldScanner("f")
    ids = [scanner.add(Pattern(regex)) for regex in ("(a+$|b)", "k+$|c+d", "(?m)(x+$|yz)")]
    scanner.use(scanner.compile())
    for text in ("some free words", "qqq", "y" * 40):
        assert scanner.scan(text) == set()
    assert asked == []
    assert scanner.scan("x" * 15 + "k\n") == {ids[1]}
    assert scanner.scan("ccd") == {ids[1]}
    assert scanner.scan("xx\nq") == {ids[2]}
    assert asked


def test_a_multiline_start_is_not_found_after_a_final_newline() -> None:
    """`(?m)^` does not match after a text's final newline, in a regex RE2 answers too as in
    one Hyperscan answers alone (Python's `re` finds `(?m)^$` in "x\\n", Hyperscan does not)."""
    scanner = FieldScanner("f")
    ids = [scanner.add(Pattern(regex)) for regex in ("(?m)^a*b{0,2}$", "(?m)^$", "(?m)^x*ks*$")]
    scanner.use(scanner.compile())
    assert scanner.scan("xsx\n") == set()
    assert scanner.scan("xsx\n\n") == set(ids[:2])
    assert scanner.scan("\n") == set(ids[:2])
    assert scanner.scan("x\n" + "x" * 15 + "k\n") == {ids[2]}


def test_a_multiline_regex_is_found_where_its_match_takes_the_final_newline() -> None:
    """A regex that may hold `(?m)^` is found where its match takes a text's final newline (in
    both texts Hyperscan misses it, and RE2 was asked only of the text without that newline:
    a lost page), and not where its only match is empty after that newline."""
    # (each set as a randomized comparison with `re` found it: Hyperscan's misses depend on it)
    for regexes, text in [
        (("(?m)^\\s(?:ks)*$", "(?m)x|^\\s*\\z", "(?m)^\\sx+$"), "ss x kx  \nsxkkkx  sskxk\nsxsx\nx kss  \nk  \n\n"),
        (("(?m)^\\sk?.*$", "(?m)^[ks]+(?:ks)*$", "(?m)^k?.*\\z"), "sk\nkxskkk kx sxkk  x\n\n"),
    ]:
        scanner = FieldScanner("f")
        ids = [scanner.add(Pattern(regex)) for regex in regexes]
        scanner.use(scanner.compile())
        assert ids[0] in scanner.scan(text)
        assert ids[0] not in scanner.scan("k\n")


def test_s_holds_the_vertical_tab_in_every_regex() -> None:
    """`\\s` matches a vertical tab and `\\S` does not, as in Hyperscan and Python's `re`, in a
    regex RE2 answers too (RE2's `\\s` has no `\\v`)."""
    scanner = FieldScanner("f")
    ids = [scanner.add(Pattern(regex)) for regex in ("a\\S*$", "a[\\S]+$", "a[^\\s]*$", "k\\s*$")]
    scanner.use(scanner.compile())
    assert scanner.scan("a\v") == set()
    assert scanner.scan("ab\v") == set()
    assert scanner.scan("x" * 15 + "k\v\v") == {ids[3]}
    assert scanner.scan("ab") == set(ids[:3])


def test_a_hyphen_beside_s_in_a_class_is_a_character_for_re2() -> None:
    """`[\\s-x]` is a blank, `-` or `x` in a regex RE2 answers too, not the range from a blank
    to `x` (which holds `M`: a false page); `[\\s-\\s]` is one RE2 takes (it raised, and `check`
    and `replay` crashed building the rules)."""
    scanner = FieldScanner("f")
    ids = [scanner.add(Pattern(regex)) for regex in ("[\\s-x]+$", "[^\\s-x]+$", "a[\\s-\\s]*$", "a[\\w-\\S]+$")]
    scanner.use(scanner.compile())
    assert scanner.scan("x M") == {ids[1]}
    assert scanner.scan("M x-\v") == {ids[0]}
    assert scanner.scan("a -\t") == {ids[0], ids[2]}
    assert scanner.scan("a-M\v") == {ids[0]}
    assert scanner.scan("a-M") == {ids[1], ids[3]}
    assert (
        regex_text.for_re2("[\\s-x][-\\S]\\s-x")
        == "[\\t\\n\\v\\f\\r \\-x][\\-\\x00-\\x08\\x0e-\\x1f!-\\x{10ffff}][\\t\\n\\v\\f\\r ]-x"
    )


def _regex_with_dollars(rng: random.Random, depth: int = 0) -> tuple[str, str]:
    """A random regex with `$` and `^` anywhere (in alternatives too), escaped `$`, `$` in
    classes and `\\s`; and the same for `re` with each `^` meaning what PCRE's does (not after
    a final newline), which is written only in `(?m)`."""
    atoms = ["a", "b", "k", "s", "x", ".", "\\$", "[a$]", "[]$]", "[^$]", "\\\\", "\\s", "\\S", "[\\sk]", "\\n"]
    repeats = ["", "", "*", "+", "?", "{0,2}", "{1,3}"]
    parts, oracle = [], []
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        if depth < 2 and roll < 0.15:
            branches = [_regex_with_dollars(rng, depth + 1) for _ in range(rng.randint(1, 3))]
            parts.append("(?:" + "|".join(b for b, _ in branches) + ")")
            oracle.append("(?:" + "|".join(o for _, o in branches) + ")")
        elif roll < 0.3:
            parts.append("$")
            oracle.append("$")
        elif roll < 0.35:
            parts.append("^")
            oracle.append("(?:\\A|^(?!\\Z))")
        else:
            atom = rng.choice(atoms) + rng.choice(repeats)
            parts.append(atom)
            oracle.append(atom)
    return "".join(parts), "".join(oracle)


def test_a_body_is_found_wherever_its_regex_is() -> None:
    """A regex without its `$` assertions (`regex_text.body`) is found in every text the regex is
    found in, on random regexes with `$` anywhere, `\\$`, `$` in classes and `(?m)`."""
    rng = random.Random(20261207)
    lost, tried = [], 0
    while tried < 3000:
        regex = rng.choice(["", "(?m)", "(?i)"]) + _regex_with_dollars(rng)[0]
        if regex_problem(regex, hyperscan=False) is not None:
            continue
        tried += 1
        body = regex_text.body(regex)
        assert "$" not in body.replace("\\$", "").replace("[a$]", "").replace("[]$]", "").replace("[^$]", "")
        for _ in range(10):
            text = "".join(rng.choice("abks$x\n \v]\\") for _ in range(rng.randint(0, 20)))
            if re.search(regex, text) and not re.search(body, text):
                lost.append((regex, body, text))
    assert [] == lost[:3]


@pytest.mark.parametrize(
    ("regex", "body"),
    [
        ("(a+$|b)", "(a+|b)"),
        ("a+$|c+d", "a+|c+d"),
        ("(?m)(x+$|yz)", "(?m)(x+|yz)"),
        ("a\\$b+$", "a\\$b+"),
        ("[]$]+[^$]*[$\\]]$", "[]$]+[^$]*[$\\]]"),
        ("[[:alpha:]$]+$", "[[:alpha:]$]+"),
        ("\\Qa$\\E+$", "\\Qa$\\E+"),
        ("\\\\$", "\\\\"),
        ("\\x{24}+$", "\\x{24}+"),
    ],
)
def test_a_body_keeps_every_dollar_that_is_not_an_assertion(regex: str, body: str) -> None:
    assert regex_problem(regex) is None
    assert regex_text.body(regex) == body


def test_regexes_with_dollar_anywhere_find_what_re_finds() -> None:
    """A field's scan of regexes with `$` anywhere (mixed with others) finds what `re.search`
    finds, `(?m)^` aside after a final newline (see `_regex_with_dollars`): every such regex
    with a repeat is filtered by its body, and a body lost nothing."""
    rng = random.Random(20261208)

    def regexes() -> list[tuple[str, str]]:
        written: list[tuple[str, str]] = []
        while len(written) < rng.randint(1, 4):
            flags = rng.choice(["", "", "(?m)"])
            regex, oracle = _regex_with_dollars(rng)
            if regex_problem(flags + regex) is None:
                written.append((flags + regex, flags + oracle))
        return written

    wrong = _wrong_answers(rng, regexes, "abks:x1\nxy \v$", ["", "k\n", "s\n", "\n", "k", "\n\n", "bk"])
    assert [] == wrong[:3]
