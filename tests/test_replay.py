"""`replay` parses lines a block at a time; what it reports is what line-by-line evaluation gives."""

from __future__ import annotations

import io
import random
from collections import Counter
from typing import Any

import orjson
import pytest

from rulesd.alerting.payload import AlertSettings, build_payload
from rulesd.engine import Engine
from rulesd.events import parse_json, why_invalid
from rulesd.pipeline import Alert, evaluate_lines
from rulesd.replay import SAMPLE_CHARS, SAMPLES, ReplayedAlert, ReplaySummary, Sample, replay
from rulesd.replay_blocks import BLOCK_BYTES, blocks
from rulesd.rules.model import RuleSet
from tests.ruletools import ruleset_from_yaml

RULES = ruleset_from_yaml("""
rules:
  - {name: err, match: {level: error}, alert: {message: "error on {host}"}}
  - {name: burst, match: {level: warning}, threshold: {count: 3, window: 1m, group_by: [host]}}
""")

LINES = [
    b'{"level":"error","host":"a"}\n',
    b'{"level":"warning","host":"b","ts":1}\n',
    b'{"level":"info"}\n',
    b'{"level":"error","host":"c"}\r\n',
    b'{"level":"error","host":"' + b"h" * BLOCK_BYTES + b'"}\n',  # longer than a block
    b"not json\n",
    b"\n",
    b"   \n",
    b"[1, 2]\n",
    b'"text"\n',
    b'{"level": "error", "host": \n',
    b'{"level":"warning","host":"b"}',  # a last line without its newline
]


def reference(ruleset: RuleSet, data: bytes) -> tuple[list[Any], list[tuple[int, str]]]:
    """What replay must report: each line parsed and evaluated on its own, in order."""
    evaluate = Engine(ruleset, saved=False).evaluate
    alerts: list[Any] = []
    invalid: list[tuple[int, str]] = []
    summary = ReplaySummary()
    for lineno, line in enumerate(io.BytesIO(data), 1):
        summary.lines += 1
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            event = None
        if type(event) is not dict:
            if line.strip():
                # (of the line without its newline, as the daemon says it: orjson counts it)
                invalid.append((lineno, why_invalid(parse_json, line.removesuffix(b"\n"))))
                summary.invalid += 1
                if len(summary.samples) < SAMPLES:
                    text = line.decode(errors="replace").rstrip("\r\n")
                    text = text[:SAMPLE_CHARS] + ("…" if len(text) > SAMPLE_CHARS else "")
                    summary.samples.append(Sample(lineno, text, invalid[-1][1]))
            else:
                summary.blank += 1
            continue
        summary.events += 1
        firing = evaluate(event, 0.0)
        if firing is not None:
            names = tuple(r.name for r in firing.rules)
            summary.alerts += 1
            summary.firings.update(names)
            alerts.append(ReplayedAlert(lineno, Alert(0, names, build_payload(firing, AlertSettings(), f"f:{lineno}"))))
    return [*alerts, summary], invalid


def replayed(ruleset: RuleSet, data: bytes) -> tuple[list[Any], list[tuple[int, str]]]:
    invalid: list[tuple[int, str]] = []
    items = list(
        replay(
            ruleset,
            io.BytesIO(data),
            name="f",
            settings=AlertSettings(),
            start=0.0,
            on_invalid=lambda lineno, why: invalid.append((lineno, why)),
        )
    )
    return items, invalid


@pytest.mark.parametrize("seed", range(12))
def test_replay_reports_what_line_by_line_evaluation_reports(seed: int) -> None:
    """Whatever the lines and wherever the bad ones fall in a block (first, last, across the
    boundary, in the last short block), the alerts, their line numbers, the invalid lines
    and the summary are those of parsing and evaluating each line on its own."""
    rng = random.Random(seed)
    block = BLOCK_BYTES // 30  # lines of about 30 bytes in a block
    count = rng.choice([0, 1, block - 1, block, block + 1, 3 * block + rng.randrange(block)])
    valid_share = rng.choice([1.0, 0.97, 0.6])  # whole valid blocks take the fast path
    lines = [rng.choice(LINES[:5]) if rng.random() < valid_share else rng.choice(LINES[5:-1]) for _ in range(count)]
    data = b"".join(lines) + (LINES[-1] if seed % 2 else b"")
    assert reference(RULES, data) == replayed(RULES, data)


def test_an_invalid_line_in_a_block_leaves_the_line_numbers_of_the_others_right() -> None:
    """A line in the second block is invalid; the alerts after it keep their numbers."""
    info = b'{"level":"info"}\n'
    per_block = BLOCK_BYTES // len(info) + 1
    lines = [info] * (3 * per_block)
    bad = per_block + per_block // 2
    lines[bad] = b"{oops\n"
    lines[bad + 1] = b'{"level":"error","host":"x"}\n'
    lines[-1] = b'{"level":"error","host":"y"}\n'
    items, invalid = replayed(RULES, b"".join(lines))
    assert [(bad + 2, "x"), (len(lines), "y")] == [
        (i.line, i.payload["message"].split()[-1]) for i in items if isinstance(i, ReplayedAlert)
    ]
    assert [bad + 1] == [lineno for lineno, _ in invalid]
    summary = items[-1]
    assert (len(lines) - 1, 1, 2) == (summary.events, summary.invalid, summary.alerts)


def test_the_headline_is_the_payloads_priority_message_and_alias() -> None:
    """`rulesd replay`'s text lines show `headline()`, which builds no payload: it must say
    what the payload says, templates, whitespace, truncation and default messages included."""
    ruleset = ruleset_from_yaml("""
rules:
  - {name: tpl, match: {level: error}, alert: {message: "  error on {host}\\n  at {path} ", priority: P2}}
  - {name: bare, match: {level: error}}
  - {name: aliased, match: {level: warning}, alert: {alias: "w-{host}", message: "{message}"}}
  - {name: grouped, match: {level: notice}, threshold: {count: 1, window: 1m, group_by: [host, path]}}
""")
    data = b"".join(
        orjson.dumps(event) + b"\n"
        for event in [
            {"level": "error", "host": "a" * 300, "path": "/x\ty"},
            {"level": "warning", "host": "b", "message": "m " * 200},
            {"level": "warning", "host": "c"},
            {"level": "notice", "host": "d", "path": 7, "message": "  several\nlines  "},
            {"level": "notice"},
        ]
    )
    alerts = [a for a in replay(ruleset, io.BytesIO(data), name="x", settings=AlertSettings(), start=0.0)]
    replayed = [a for a in alerts if isinstance(a, ReplayedAlert)]
    assert 5 == len(replayed)
    for alert in replayed:
        headline = alert.headline()  # before the payload is built: from the firing
        assert (alert.payload["priority"], alert.payload["message"], alert.payload["alias"]) == headline
        assert headline == alert.headline()  # and after, from the payload


def test_a_headline_calls_only_the_message_s_and_the_alias_s_functions() -> None:
    """Every text line of a replay asks its alert for the headline: beside the message (its
    template rendered) and the alias, no Python function is called for it, neither a function
    of the payload's nor the rule's `group_by` property (a frame each, per alert)."""
    import sys

    data = b'{"level":"error","host":"a"}\n{"level":"error","host":"b"}\n'
    *alerts, _ = list(replay(RULES, io.BytesIO(data), name="x", settings=AlertSettings(), start=0.0))
    assert ("P3", "error on a", "rulesd: err") == alerts[0].alert.headline()  # the alias's memo filled
    called: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            called.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        headline = alerts[1].alert.headline()
    finally:
        sys.setprofile(None)
    assert ("P3", "error on b", "rulesd: err") == headline
    assert ["headline", "message", "render", "alert_alias"] == called


def test_two_values_on_a_line_before_a_blank_one_leave_the_next_line_its_own_event() -> None:
    """A line holding two JSON values is invalid, and the line after it is judged as itself:
    a file's block was viewed in one call, whose views (one per value, none for a blank line)
    were as many as its lines, and the error line was judged from the second value of the line
    before (no alert, and no invalid line said)."""
    data = b'{"level":"info"} {"level":"info"}\n{"level":"error","host":"a"}\n\n'
    *alerts, summary = list(replay(RULES, io.BytesIO(data), name="x", settings=AlertSettings(), start=0.0))
    assert [(2, ("err",))] == [(a.line, a.alert.rules) for a in alerts if isinstance(a, ReplayedAlert)]
    assert isinstance(summary, ReplaySummary) and (1, 1) == (summary.events, summary.invalid)


@pytest.mark.parametrize("seed", range(4))
def test_random_lines_fire_and_are_invalid_as_each_line_parsed_alone(seed: int) -> None:
    """Lines drawn from whole values, blank lines, values across lines, two values on a line,
    CRLF and bad JSON: each line replayed fires, and is invalid, as it does parsed alone (the
    views of a block are each its own line's, whatever makes up for what)."""
    from tests.test_view import outcome, whole

    rng = random.Random(seed)
    values = [b'{"level":"error","host":"a"}', b'{"level":"warning","host":"b"}', b'{"level":"info"}', b"{}"]
    pieces = [b"\n", b" \n", b"\r\n", b'{"level":\n', b'"error"}', b"[}", b" ", b'{"a": [{}]}']
    for _ in range(100):
        parts = (rng.choice(values if rng.random() < 0.7 else pieces) for _ in range(8))
        data = b"".join(part + rng.choice([b"\n", b"", b"\r\n"]) for part in parts)
        lines = data.splitlines(keepends=True)
        if not lines:
            continue
        *alerts, summary = list(replay(RULES, io.BytesIO(data), name="x", settings=AlertSettings(), start=0.0))
        invalid, fired = outcome(evaluate_lines(lines, whole, Engine(RULES), 0.0))
        assert [(i + 1, tuple(names)) for i, names in fired] == [(a.line, a.alert.rules) for a in alerts], data
        bad = [i for i in invalid if lines[i].strip()]  # (a blank line is counted apart)
        assert isinstance(summary, ReplaySummary) and len(bad) == summary.invalid, data


def test_a_text_line_builds_no_payload() -> None:
    """`rulesd replay`'s text output needs only the headline: the rest of the body (the
    indented event JSON, details, tags, responders) is never built for it."""
    from rulesd.cli import _alert_line

    data = b'{"level":"error","host":"a"}\n{"level":"error","host":"b"}\n'
    replayed = [a for a in replay(RULES, io.BytesIO(data), name="x", settings=AlertSettings(), start=0.0)]
    alerts = [a for a in replayed if isinstance(a, ReplayedAlert)]
    assert [
        "line 1: P3 [err] error on a  (alias: rulesd: err)\n",
        "line 2: P3 [err] error on b  (alias: rulesd: err)\n",
    ] == [_alert_line(a) for a in alerts]
    assert [None, None] == [a.alert._payload for a in alerts]


def test_the_summary_counts_each_rule_of_alerts_that_repeat_in_the_order_rules_first_fired() -> None:
    """Alerts of the same rules alike repeat (their names are counted per combination, then per
    rule): the summary's firings are still each rule's alerts, in the order rules first fired,
    as the JSON summary lists them."""
    alike = "".join(f"  - {{name: z-{i}, match: {{uri: {{startswith: /a}}}}}}\n" for i in range(5))
    ruleset = ruleset_from_yaml(
        "rules:\n"
        + alike
        + "  - {name: b, match: {uri: /ab}}\n  - {name: a, match: {uri: /c}, alert: {priority: P1}}\n"
    )
    uris = ["/c", "/a", "/ab", "/a", "/c", "/ab", "/x"]
    items, _ = replayed(ruleset, b"".join(b'{"uri": "%s"}\n' % u.encode() for u in uris))
    *alerts, summary = items
    expected: Counter[str] = Counter()
    for alert in alerts:
        expected.update(alert.rules)
    assert list(expected.items()) == list(summary.firings.items())
    assert {"a": 2, "b": 2, **{f"z-{i}": 4 for i in range(5)}} == summary.firings


def test_text_lines_and_counts_key_by_the_tuple_of_rules_the_engine_shares(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rules alike fire together alert after alert: the text line's joined names and the
    summary's count of them are kept by the tuple of rules the engine shares between those
    firings (hashed by its address), not by the names (a tuple of texts hashes every name at each
    lookup: 41 an alert at 1,000 held-out rules). The same rules in another tuple (the engine's
    order of what fired forgotten between two firings) are still counted as the same rules."""
    from rulesd.alerting import alias
    from rulesd.cli import _alert_line
    from rulesd.engine import core

    monkeypatch.setattr(core, "IN_ORDER_KEPT", 1)  # each other combination forgets the one before
    alike = "".join(f"  - {{name: r-{i:02d}, match: {{level: error}}}}\n" for i in range(30))
    ruleset = ruleset_from_yaml(f"""
rules:
{alike}
  - {{name: t, match: {{level: error}}, threshold: {{count: 1, window: 1m}}}}
  - {{name: w, match: {{level: warning}}, threshold: {{count: 1, window: 1m}}}}
  - {{name: v, match: {{level: warning}}}}
""")
    levels = ["error", "error", "warning", "error", "warning"]
    items, _ = replayed(ruleset, b"".join(b'{"level": "%s"}\n' % level.encode() for level in levels))
    *alerts, summary = items
    fired = [a.alert.fired for a in alerts]
    assert fired[0] is fired[1] and fired[0] is not fired[3] and fired[0] == fired[3]  # forgotten between
    joined = alias._MEMOS[3]
    joined.clear()
    for alert in alerts:
        assert f"[{', '.join(alert.rules)}]" in _alert_line(alert)
    assert {id(f) for f in fired} == {id(key) for key in joined}  # by the shared tuples alone
    names = (*(f"r-{i:02d}" for i in range(30)), "t")  # lead first
    assert [names, names, ("v", "w"), names, ("v", "w")] == [a.rules for a in alerts]
    assert [*names, "v", "w"] == list(summary.firings)  # in the order rules first fired
    assert {**dict.fromkeys(names, 3), "w": 2, "v": 2} == summary.firings


def test_the_tuples_counted_apart_stay_bounded_and_count_as_the_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine makes a combination's tuple again whenever it has forgotten its order of what
    fired, and the summary counts alerts by tuple: over a long replay of many combinations the
    tuples counted apart would grow with the alerts. They go to the rules' counts once
    FIRED_KEPT are held (after a block), in the order they first fired: the counts, and their
    order, are those of the alerts' names."""
    from rulesd import replay as replay_module
    from rulesd.engine import core

    monkeypatch.setattr(core, "IN_ORDER_KEPT", 1)  # a tuple made again at each other combination
    monkeypatch.setattr(replay_module, "FIRED_KEPT", 3)
    held: list[int] = []
    count_firings = replay_module._count_firings

    def counted(fired: Counter[Any], firings: Counter[str]) -> None:
        held.append(len(fired))
        count_firings(fired, firings)

    monkeypatch.setattr(replay_module, "_count_firings", counted)
    ruleset = ruleset_from_yaml(
        "rules:\n"
        + "".join(
            f"  - {{name: r{i}, match: {{n: {{gte: {i}}}}}, threshold: {{count: 1, window: 1m}}}}\n" for i in range(4)
        )
        + "  - {name: all, match: {n: {gte: 0}}}\n"
    )
    rng = random.Random(5)
    data = b"".join(b'{"n": %d, "pad": "%s"}\n' % (rng.randrange(5), b"x" * 100) for _ in range(2000))
    items, _ = replayed(ruleset, data)
    *alerts, summary = items
    expected: Counter[str] = Counter()
    for alert in alerts:
        expected.update(alert.rules)
    assert list(expected.items()) == list(summary.firings.items())  # the same counts, in the same order
    # let go as the replay went: at most FIRED_KEPT - 1 and a block's alerts (its lines, each over 100 bytes)
    assert 1 < len(held) and max(held) < 3 + BLOCK_BYTES // 100
    assert len({id(a.alert.fired) for a in alerts}) > 50  # (tuples made again and again)


def test_a_line_with_candidates_scans_its_free_text_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The index scans a field in the line's view; the line, having candidates, is parsed
    whole and their predicates test the same field's text in it: one Hyperscan scan per line,
    though the text is too long for the memo of recent texts (as free-text messages are)."""
    from rulesd.rules import patterns

    scans: list[bytes] = []
    use = patterns.FieldScanner.use

    class Counting:
        def __init__(self, database: Any) -> None:
            self.database = database

        def scan(self, data: tuple[bytes], on_match: Any) -> Any:  # (a vector of one buffer)
            scans.extend(data)
            return self.database.scan(data, match_event_handler=on_match)

    monkeypatch.setattr(patterns.FieldScanner, "use", lambda self, database: use(self, Counting(database)))
    ruleset = ruleset_from_yaml("""
rules:
  - {name: boom, match: {message: {regex: "boom [0-9]+"}}}
  - {name: boom-api, match: {service: api, message: {regex: "boom [0-9]+ on api"}}}
  - {name: not-quiet, match: {service: api, not: {message: {regex: "^quiet"}}}}
""")
    messages = [f"{'x' * 300} boom {i} on api" for i in range(40)] + [f"quiet {'y' * 300} {i}" for i in range(40)]
    data = b"".join(orjson.dumps({"service": "api", "message": m}) + b"\n" for m in messages)
    replayed = [a for a in replay(ruleset, io.BytesIO(data), name="x", settings=AlertSettings(), start=0.0)]
    fired = [a.rules for a in replayed if isinstance(a, ReplayedAlert)]
    assert [("boom", "boom-api", "not-quiet")] * 40 == [tuple(sorted(r)) for r in fired]
    assert [m.encode() for m in messages] == scans


def test_a_two_character_contains_beside_an_endswith_rule_fires() -> None:
    """A rule looking for a two-character text at the end of a short value fires, though the
    field's database also holds another rule's `endswith` (Hyperscan's block mode lost it)."""
    ruleset = ruleset_from_yaml("""
rules:
  - {name: r12, match: {host: a, msg: {endswith: foo, nocase: true}, cmd: {regex: /c, nocase: true}}}
  - {name: r20, match: {host: a, cmd: {endswith: cmd.exe}, msg: {contains: /c}}}
""")
    data = b'{"cmd": "cmd.exe", "msg": "cmd.exe dir cmd.exe /c", "host": "a"}\n'
    replayed = list(replay(ruleset, io.BytesIO(data), name="x", settings=AlertSettings(), start=0.0))
    assert [("r20",)] == [a.rules for a in replayed if isinstance(a, ReplayedAlert)]


def test_a_regex_with_a_repeat_before_its_dollar_fires() -> None:
    """Rules whose regex holds a repeat and a `$` fire where Hyperscan alone missed them (a text
    of 17 bytes or more ending `k` and a newline; `...kbk`), beside a rule of the same field
    Hyperscan answers alone, and not where they do not match."""
    ruleset = ruleset_from_yaml("""
rules:
  - {name: trailing, match: {msg: {regex: "ks*$"}}}
  - {name: optional, match: {msg: {regex: "b+:*k?$"}}}
  - {name: plain, match: {msg: {contains: yxx}}}
""")
    data = b'{"msg": "xxxxxxxxxxxxxxxk\\n"}\n{"msg": "a1yaxk1s\\nyxx1xykbk"}\n{"msg": "xxxxxxxxxxxxxxxq\\n"}\n'
    replayed = list(replay(ruleset, io.BytesIO(data), name="x", settings=AlertSettings(), start=0.0))
    fired = [a.rules for a in replayed if isinstance(a, ReplayedAlert)]
    assert [("trailing",), ("optional", "plain", "trailing")] == fired


@pytest.mark.parametrize("seed", range(100))
def test_blocks_are_those_readlines_makes_with_long_lines_blank(seed: int) -> None:
    """The blocks read a bounded piece at a time (a short read of a pipe too) are those
    `readlines(BLOCK_BYTES)` made, each line longer than the limit blank in them with its
    length beside it: the engine's clock moves between the same lines as before."""
    rng = random.Random(seed)
    limit = rng.choice([64, 100, 500, 5000, 20000])
    sizes = [0, 1, 5, 63, 64, 65, 100, 101, 300, 2000, BLOCK_BYTES - 1, BLOCK_BYTES, BLOCK_BYTES + 1, 30000]
    lines = [b"x" * rng.choice(sizes) + b"\n" for _ in range(rng.randrange(200))]
    if lines and rng.random() < 0.5:
        lines[-1] = lines[-1][:-1]  # the last line without a newline
    data = b"".join(lines)
    expected = []
    stream = io.BufferedReader(io.BytesIO(data))  # (as replay opens a file; a BytesIO's stops at the hint)
    while block := stream.readlines(BLOCK_BYTES):
        long = {i: len(line) - line.endswith(b"\n") for i, line in enumerate(block)}
        long = {i: length for i, length in long.items() if length > limit}
        expected.append(([b"\n" if i in long else line for i, line in enumerate(block)], long))

    class ShortReads(io.BytesIO):
        def read1(self, size: int = -1) -> bytes:
            return super().read1(rng.randint(1, max(1, size)))

    assert expected == list(blocks(ShortReads(data), limit))
