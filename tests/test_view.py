"""JSON lines judged from views of the fields the index reads fire exactly what the same
lines parsed whole fire, and every line that is not an event is still found invalid."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
import yaml

from rulesd.engine import Engine
from rulesd.events import Named
from rulesd.eventtime import EventTime, TimeReader
from rulesd.pipeline import BLOCK_LINES, Batch, Matches, _viewer, _views, evaluate_lines, match_lines
from rulesd.rules.index import RuleIndex
from rulesd.rules.view import Layout
from tests.ruletools import ruleset_from_yaml
from tests.test_index import sources_written
from tests.test_index_equivalence import (
    SHAPE_SIZES,
    BruteForce,
    _ruleset,
    generate,
    planted_events,
    random_event,
    random_rules,
)

# When the lines are read: after every event time here (a time further ahead is not believed).
ARRIVAL = 2e9


def whole(line: bytes) -> Any:
    """orjson's parser, but not `orjson.loads` itself: `evaluate_lines` then parses every line
    whole, as it does for any parser but plain JSON."""
    return orjson.loads(line)


def outcome(batch: Batch) -> tuple[list[int], list[tuple[int, list[str]]]]:
    return batch.invalid, [(i, [r.name for r in f.rules]) for i, f, _ in batch.firings]  # type: ignore[union-attr]


def both(text: str, lines: list[bytes]) -> tuple[Any, Any]:
    """The outcome of `lines` from views and parsed whole, each by an engine of its own."""
    viewed, parsed = Engine(ruleset_from_yaml(text)), Engine(ruleset_from_yaml(text))
    assert viewed.viewer(None) is not None, "the rule set must be one judged from views"
    from_view = evaluate_lines(lines, orjson.loads, viewed, ARRIVAL)
    return outcome(from_view), outcome(evaluate_lines(lines, whole, parsed, ARRIVAL))


@pytest.mark.parametrize(
    ("shape", "rules", "events"),
    [*SHAPE_SIZES, ("heldout", 100, 4000), ("heldout", 1000, 1500)],
)
def test_benchmark_shapes_fire_the_same_from_views(shape: str, rules: int, events: int) -> None:
    """Thresholds, throttles and every index test of the benchmark shapes; half the lines
    written with non-ASCII text escaped and half as UTF-8."""
    ruleset, raw = _ruleset(rules, shape)
    viewed, parsed = Engine(ruleset), Engine(ruleset)
    assert viewed.viewer(None) is not None
    lines = [
        json.dumps(e).encode() if i % 2 else orjson.dumps(e) for i, e in enumerate(planted_events(raw, events, shape))
    ]
    for start in range(0, len(lines), 500):
        block, arrival = lines[start : start + 500], 1_700_000_000.0 + start
        expected = outcome(evaluate_lines(block, whole, parsed, arrival))
        assert outcome(evaluate_lines(block, orjson.loads, viewed, arrival)) == expected
    assert sum(viewed.matches.values()) == sum(parsed.matches.values()) > events // 100


def _viewable_rules(rng: random.Random, count: int) -> str:
    """Random rules, less those the index's root would screen by their predicate (a rule set
    with any of them is not judged from views)."""
    text = random_rules(rng, count)
    index = RuleIndex(ruleset_from_yaml(text).rules)
    # (a rule whose predicate answers as a screened rule's does is screened with it)
    screened = {r.name for rule in index._root.screened for r in index.alike.get(rule, (rule,))}
    document = yaml.safe_load(text)
    document["rules"] = [r for r in document["rules"] if r["name"] not in screened]
    return yaml.safe_dump(document, allow_unicode=True)


@pytest.mark.parametrize("seed", range(6))
def test_random_rules_fire_from_views_what_brute_force_fires(seed: int) -> None:
    """Regexes, literals, case folds, named lists, bounds and nested paths over random texts
    full of Unicode and case traps, written as UTF-8 or escaped: what brute force fires."""
    rng = random.Random(seed)
    text = _viewable_rules(rng, 60)
    ruleset = ruleset_from_yaml(text)
    engine, reference = Engine(ruleset), BruteForce(ruleset)
    assert engine.viewer(None) is not None
    fired = 0
    for i in range(1500):
        event = orjson.loads(orjson.dumps(random_event(rng)))  # NaN written as null
        line = json.dumps(event).encode() if i % 3 else orjson.dumps(event)
        batch = evaluate_lines([line], orjson.loads, engine, float(i))
        expected = reference.evaluate(event, float(i))
        assert outcome(batch)[1] == ([(0, expected)] if expected else [])
        fired += bool(expected)
    assert fired > 100


RULES = """
rules:
  - {name: api, match: {service: api}}
  - {name: slow, match: {http.status: {gte: 500}}}
  - {name: small, match: {size: {lt: 10}}}
  - {name: deep, match: {items.0.name: disk}}
  - {name: folded, match: {user: {equals: Alice, nocase: true}}}
  - {name: timeout, match: {message: {regex: "time(d )?out"}}}
  - {name: not-debug, match: {env: prod, level: {not_in: [debug, info]}}}
  - {name: unicode-key, match: {"naïve": "oui"}}
"""


@pytest.mark.parametrize(
    ("line", "fires"),
    [
        (b'{"service": "api"}', ["api"]),
        (b'{"service": "web", "service": "api"}', ["api"]),  # the last of equal keys, as orjson
        (b'{"service": "api", "service": "web"}', []),
        (b'{"service": null}', []),
        (b'{"http": {"status": 503}}', ["slow"]),
        (b'{"http": {"status": "503"}}', []),
        (b'{"http": [503]}', []),
        (b'{"size": 3}', ["small"]),
        (b'{"size": true}', []),
        (b'{"size": null}', []),
        (b'{"items": [{"name": "disk"}]}', ["deep"]),
        (b'{"items": {"0": {"name": "disk"}}}', ["deep"]),
        (b'{"items": []}', []),
        (b'{"user": "ALICE"}', ["folded"]),
        (b'{"user": "\\u0041lice"}', ["folded"]),
        (b'{"message": "request timed out"}', ["timeout"]),
        (b'{"message": "time\\u006fut"}', ["timeout"]),
        (b'{"message": ["timeout"]}', []),
        (b'{"env": "prod", "level": "error"}', ["not-debug"]),
        (b'{"env": "prod", "level": "info"}', []),
        (b'{"env": "prod"}', []),  # not_in needs the field
        (b'{"service": "api", "other": {"a": [1, 2.5e3, "x", null, false]}}', ["api"]),
        ('{"naïve": "oui"}'.encode(), ["unicode-key"]),
        (b'{"na\\u00efve": "oui"}', ["unicode-key"]),
        (b'{"naive": "oui", "f0": "api", "service": "web"}', []),  # the view's own names are not keys
    ],
)
def test_each_index_test_reads_the_view_as_the_event(line: bytes, fires: list[str]) -> None:
    """Equal and repeated keys, null, nested, deep and list paths, numbers of other types,
    case folds, escapes and regexes: from a view as from the whole event."""
    from_view, parsed = both(RULES, [line])
    assert from_view == parsed == ([], [(0, fires)] if fires else [])


BAD_LINES = [
    b'{"service": "api", "x": [1, 2,]}',  # malformed where no rule reads
    b'{"service": "api", "x": "\\q"}',
    b'{"service": "api", "x": 01}',
    b'{"service": "api", "x": "a\tb"}',
    b'{"service": "api", "x": "\\ud800\\q"}',  # a lone surrogate mended, the rest still bad
    b'{"service": "api"} {}',
    b'{"service": "api", "x": "\xff"}',  # not UTF-8 where no rule reads
    b'{"service": "api", "x": "\xed\xa0\x80"}',  # a surrogate written as UTF-8
    b'{"service": "api", "x": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    b'["service", "api"]',
    b'"api"',
    b"",
    b"\xef\xbb\xbf\xef\xbb\xbf{}",  # one byte order mark is taken away, not two
    b'\xef\xbb\xbf["service", "api"]',
]


@pytest.mark.parametrize("concerned", [True, False])
def test_bad_lines_are_invalid_from_views_as_parsed_whole(concerned: bool) -> None:
    """Bad JSON anywhere in a line, a line that is not an object, a line that is not UTF-8,
    whether or not a rule would concern it: invalid, the good lines beside them evaluated."""
    good = b'{"service": "api", "n": "\xc3\xa9"}'
    bad_lines = [bad if concerned else bad.replace(b'"api"', b'"web"') for bad in BAD_LINES]
    if concerned:  # beyond a double: a line with candidates is parsed whole, and invalid
        bad_lines.append(b'{"service": "api", "x": 1e400}')
    lines = [line for bad in bad_lines for line in (bad, good)]
    from_view, parsed = both(RULES, lines)
    assert from_view == parsed
    assert from_view[0] == list(range(0, len(lines), 2))
    assert from_view[1] == [(i, ["api"]) for i in range(1, len(lines), 2)]


def test_a_number_beyond_a_double_where_no_rule_reads_is_an_event() -> None:
    """The one difference a view makes, documented: it checks the syntax of the fields it
    skips, not that their numbers fit a double, so a line that no rule concerns is taken as
    an event (parsed whole, as with candidates, it is invalid)."""
    assert both(RULES, [b'{"service": "web", "x": 1e400}']) == (([], []), ([0], []))


def test_a_rule_set_that_screens_by_predicates_is_not_viewed() -> None:
    """A rule with no test to look up is checked by its predicate on every event, which needs
    the whole event: such a rule set parses every line whole, and still fires."""
    text = "rules:\n  - {name: coded, match: {code: {exists: true}}}\n  - {name: api, match: {service: api}}\n"
    engine = Engine(ruleset_from_yaml(text))
    assert engine.viewer(None) is None
    batch = evaluate_lines([b'{"code": 1}', b'{"service": "api"}', b"{"], orjson.loads, engine, ARRIVAL)
    assert outcome(batch) == ([2], [(0, ["coded"]), (1, ["api"])])


def test_a_reload_with_prepared_rules_brings_its_own_viewer() -> None:
    """The views of the rule set before a reload read its fields; after, the new rules' fields."""
    engine = Engine(ruleset_from_yaml(RULES))
    assert outcome(evaluate_lines([b'{"service": "api"}'], orjson.loads, engine, ARRIVAL))[1] == [(0, ["api"])]
    new = ruleset_from_yaml("rules:\n  - {name: hosted, match: {host: db-1}}\n")
    engine.replace_rules(new, engine.prepare_rules(new))
    assert engine._viewers, "the prepared rules carry the viewer in use"
    lines = [b'{"service": "api"}', b'{"host": "db-1"}']
    assert outcome(evaluate_lines(lines, orjson.loads, engine, ARRIVAL))[1] == [(1, ["hosted"])]


def test_a_reload_with_prepared_rules_brings_its_own_match_viewer() -> None:
    """The scale-out workers' matching step too: its viewer for the new rules is written with
    them (in the reload's thread), not by the first batch after the swap."""
    engine = Engine(ruleset_from_yaml(RULES))
    assert _matched(match_lines([b'{"service": "api"}'], orjson.loads, engine, ARRIVAL))[1][0][1] == ["api"]
    new = ruleset_from_yaml("rules:\n  - {name: hosted, match: {host: db-1}}\n")
    engine.replace_rules(new, engine.prepare_rules(new))
    assert any(matching for _, _, matching in engine._viewers), "the prepared rules carry the match viewer"
    lines = [b'{"service": "api"}', b'{"host": "db-1"}']
    assert [(i, names) for i, names, _, _ in _matched(match_lines(lines, orjson.loads, engine, ARRIVAL))[1]] == [
        (1, ["hosted"])
    ]


def test_a_bad_line_among_ascii_lines_leaves_the_others_judged() -> None:
    """A block of ASCII lines is viewed at once; a bad line in it is invalid, and the views of
    the lines before and after it are still judged."""
    good, bad = b'{"service": "api"}', b'{"service": "api", "x": [}'
    lines = [good, bad, good, bad, bad, good]
    from_view, parsed = both(RULES, lines)
    assert from_view == parsed == ([1, 3, 4], [(0, ["api"]), (2, ["api"]), (5, ["api"])])


def _timed_outcomes(ruleset: Any, lines: list[bytes], block: int) -> tuple[Batch, Batch]:
    """Both ways, event time read from `timestamp`, `block` lines at a time."""
    viewed = Engine(ruleset, time=TimeReader(EventTime("timestamp")), saved=False)
    parsed = Engine(ruleset, time=TimeReader(EventTime("timestamp")), saved=False)
    assert viewed.timed and viewed.viewer(viewed.time) is not None
    got, expected = Batch(), Batch()
    for start in range(0, len(lines), block):
        part = lines[start : start + block]
        a = evaluate_lines(part, orjson.loads, viewed, ARRIVAL, str, viewed.time)
        b = evaluate_lines(part, whole, parsed, ARRIVAL, str, parsed.time)
        got.invalid += [start + i for i in a.invalid]
        expected.invalid += [start + i for i in b.invalid]
        got.firings += [(start + i, f, t) for i, f, t in a.firings]
        expected.firings += [(start + i, f, t) for i, f, t in b.firings]
    return got, expected


def test_rules_with_timers_fire_and_close_the_same_from_views() -> None:
    """Absences, sequences with an absent step, distinct counts and new values (the kinds
    shape), with bad lines among the events: the same firings, timer firings and order."""
    raw = generate.shape_module("kinds").generate_rules(100, generate.DEFAULT_SEED)
    ruleset = ruleset_from_yaml(yaml.safe_dump({"rules": raw}))
    events = planted_events([r for r in raw if "match" in r], 6000, "kinds")
    for i, event in enumerate(events):  # 5 s apart: 8 hours, so that windows of minutes end
        event["timestamp"] = f"2024-06-11T{i * 5 // 3600:02d}:{i * 5 // 60 % 60:02d}:{i * 5 % 60:02d}Z"
    lines = [orjson.dumps(e) if i % 97 else b'{"timestamp": [}' for i, e in enumerate(events)]
    got, expected = _timed_outcomes(ruleset, lines, 500)
    assert got.invalid == expected.invalid and len(got.invalid) > 50
    assert got.firings == expected.firings
    assert sum(timer for _, _, timer in got.firings) > 10  # timers fired, not only matches


def test_resolved_groups_close_the_same_from_views() -> None:
    """A threshold with `resolve` closes when its group has been quiet; the clock moves on with
    events no rule concerns, whose time is read from the block's last line."""
    text = """
rules:
  - name: errors
    match: {level: error}
    threshold: {count: 2, window: 1m, group_by: [host]}
    resolve: {after: 5m}
"""
    ruleset = ruleset_from_yaml(text)
    lines = []
    for minute in range(60):
        level = "error" if minute % 20 < 2 else "info"
        for second in (0, 30):
            stamp = f"2024-06-11T10:{minute:02d}:{second:02d}Z"
            lines.append(orjson.dumps({"timestamp": stamp, "level": level, "host": "db-1"}))
    got, expected = _timed_outcomes(ruleset, lines, 7)
    assert got.firings == expected.firings
    kinds = [type(f).__name__ for _, f, _ in got.firings]
    assert kinds.count("Closing") == 3 and kinds.count("Firing") >= 3


def test_the_evaluator_of_whole_events_is_written_only_when_a_line_needs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing the index's code takes ~30 ms at 1,000 rules: a run of JSON lines the views
    judge never writes the evaluator of whole events, a refused line writes it once, and a
    reload writes it again only if it was in use."""
    written: list[int] = []
    original = RuleIndex.evaluator
    monkeypatch.setattr(RuleIndex, "evaluator", lambda self, *a: written.append(1) or original(self, *a))
    engine = Engine(ruleset_from_yaml(RULES))
    assert outcome(evaluate_lines([b'{"service": "api"}'] * 3, orjson.loads, engine, ARRIVAL))[1] == [
        (i, ["api"]) for i in range(3)
    ]
    assert written == []
    # An integer beyond 64 bits where the index compares numbers: parsed whole.
    whole_line = b'{"service": "api", "size": 18446744073709551616}'
    refused = [b"[1]", whole_line, b'{"service": "api", "x": 1e400}'] * 2
    batch = evaluate_lines(refused, orjson.loads, engine, ARRIVAL)
    assert outcome(batch) == ([0, 2, 3, 5], [(1, ["api"]), (4, ["api"])]) and written == [1]
    assert engine.evaluate({"service": "api"}, ARRIVAL) is not None and written == [1]
    new = ruleset_from_yaml("rules:\n  - {name: hosted, match: {host: db-1}}\n")
    engine.replace_rules(new)  # written for the new rules, as a reload prepares what is in use
    assert written == [1, 1]
    assert engine.evaluate({"host": "db-1"}, ARRIVAL) is not None and written == [1, 1]
    viewed_only = Engine(ruleset_from_yaml(RULES))
    evaluate_lines([b'{"service": "api"}'], orjson.loads, viewed_only, ARRIVAL)
    viewed_only.replace_rules(new)
    assert outcome(evaluate_lines([b'{"host": "db-1"}'], orjson.loads, viewed_only, ARRIVAL))[1] == [(0, ["hosted"])]
    assert written == [1, 1]


NAMED_RULES = """
rules:
  - {name: by-source, match: {source_name: nginx, status: {gte: 500}}}
  - {name: other-source, match: {source_name: app}}
  - {name: boom, match: {message: {contains: boom}}}
"""


@pytest.mark.parametrize("text", [NAMED_RULES, "rules:\n  - {name: boom, match: {message: {contains: boom}}}\n"])
def test_a_named_source_is_judged_from_views_with_its_name(text: str) -> None:
    """A named source sets `source_name` in every event, over a field of that name in the line:
    its views hold the name as the events do, whether or not a rule looks it up, and the alert's
    event carries it."""
    lines = [
        b'{"status": 503}',
        b'{"status": 503, "source_name": "app"}',
        b'{"source_name": "app"}',
        b'{"message": "boom", "source_name": 7}',
        b'{"message": "boom", "x": "\xc3\xa9"}',  # UTF-8 checked
        b'["not an object"]',
    ]
    viewed, parsed = Engine(ruleset_from_yaml(text)), Engine(ruleset_from_yaml(text))
    named = Named(orjson.loads, "nginx")
    assert _viewer(named, viewed, None) is not None
    from_view = evaluate_lines(lines, named, viewed, ARRIVAL)
    whole_batch = evaluate_lines(lines, Named(whole, "nginx"), parsed, ARRIVAL)
    assert outcome(from_view) == outcome(whole_batch)
    expected = [(0, ["by-source"]), (1, ["by-source"])] if text == NAMED_RULES else []
    assert outcome(from_view) == ([5], [*expected, (3, ["boom"]), (4, ["boom"])])
    assert {f.event["source_name"] for _, f, _ in from_view.firings} == {"nginx"}  # type: ignore[union-attr]


BIG = """
rules:
  - {name: equal, match: {x: 18446744073709551616}}
  - {name: at-most, match: {y: {lte: 18446744073709551616}}}
  - {name: at-least, match: {z: {gte: 18446744073709555000}}}
  - {name: deep-bound, match: {a.b.c: {gte: 5}}}
  - {name: text, match: {t: "18446744073709551617"}}
"""


@pytest.mark.parametrize(
    "line",
    [
        b'{"x": 18446744073709551617}',  # orjson: 1.8446744073709552e19, which equals the rule's value
        b'{"y": 18446744073709551617}',
        b'{"z": 18446744073709554000}',
        b'{"x": -9223372036854775809}',
        b'{"x": 18446744073709551615}',  # the largest integer orjson keeps
        b'{"z": -9223372036854775808}',
        b'{"a": {"b": {"c": 18446744073709551616}}}',
        b'{"t": 18446744073709551617}',  # compared as a text: no number check needed
        b'{"x": -' + b"1" * 400 + b"}",  # beyond a double: orjson refuses it
        b'{"z": ' + b"9" * 400 + b"}",
    ],
)
def test_integers_beyond_64_bits_are_compared_as_orjson_reads_them(line: bytes) -> None:
    """msgspec keeps such an integer exact, orjson reads a rounded float (or refuses one
    beyond a double): where the index compares numbers, the line is parsed whole."""
    from_view, parsed = both(BIG, [line])
    assert from_view == parsed


def test_keys_msgspec_cannot_name_leave_the_rule_set_unviewed() -> None:
    """A key with a backslash (Windows paths), a quote or a control character cannot name a
    struct's field: such a rule set is not judged from views, and still fires."""
    text = """
rules:
  - {name: windows, match: {'Image\\Path': x}}
  - {name: quoted, match: {'say "hi"': x}}
  - {name: tab, match: {"a\tb": x}}
"""
    engine = Engine(ruleset_from_yaml(text))
    assert engine.viewer(None) is None
    lines = [b'{"Image\\\\Path": "x"}', b'{"say \\"hi\\"": "x"}', b'{"a\\tb": "x"}']
    fired = outcome(evaluate_lines(lines, orjson.loads, engine, ARRIVAL))
    assert fired == ([], [(0, ["windows"]), (1, ["quoted"]), (2, ["tab"])])


@pytest.mark.parametrize("whole_too", [True, False])
def test_an_inner_key_msgspec_cannot_name_leaves_its_object_a_dict(whole_too: bool) -> None:
    """Below the top level such a key costs the rule set nothing: its object is decoded whole
    (as it is anyway when the object is read whole too), and the rules fire as from whole
    events."""
    text = "rules:\n  - {name: path, match: {'h.C:\\x': y}}\n  - {name: status, match: {h.status: {gte: 500}}}\n"
    if whole_too:
        text += "  - {name: down, match: {h: down}}\n"
    viewer = Engine(ruleset_from_yaml(text)).viewer(None)
    assert viewer is not None
    assert _viewed_value(viewer, b'{"h": {"status": 1}}', "h") == {"status": 1}
    lines = [b'{"h": {"C:\\\\x": "y"}}', b'{"h": {"status": 503}}', b'{"h": "down"}', b'{"h": {"C:\\x": "y"}}']
    from_view, parsed = both(text, lines)
    assert from_view == parsed == ([3], [(0, ["path"]), (1, ["status"]), *([(2, ["down"])] if whole_too else [])])


def test_a_views_code_inlines_a_chain_of_equalities_as_deep_as_the_code_for_whole_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rule of seven equalities is one function, in a view's block loop as for whole events
    (the loop and the try block around the root's body do not count as inlining)."""
    written = sources_written(monkeypatch)
    index = RuleIndex(
        ruleset_from_yaml("rules:\n  - {name: r, match: {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7}}\n").rules
    )
    index.evaluator(lambda event, time, out: None, [])
    assert len(written) == 1
    for blocks in (False, True):
        written.clear()
        index.viewer(lambda event, time, out: None, [], orjson.loads, lambda line, time: None, blocks=blocks)
        assert len(written) == 1, blocks


def test_a_line_that_may_nest_deeper_than_orjson_allows_is_parsed_whole() -> None:
    """msgspec's nesting limit is the interpreter's (above orjson's 1,024 since Python 3.12):
    the viewer knows which it has, and if deeper is taken, a line holding more brackets than
    orjson's limit is not viewed."""
    engine = Engine(ruleset_from_yaml(RULES))
    viewer = engine.viewer(None)
    assert viewer is not None
    deep = b'{"service": "api", "x": ' + b"[" * 1100 + b"]" * 1100 + b"}"
    try:
        viewer.decode(b'{"x": ' + b"[" * 1025 + b"]" * 1025 + b"}")
        takes_deeper = True
    except viewer.refused:
        takes_deeper = False
    assert viewer.deep == takes_deeper
    good = b'{"service": "api"}'
    forced = viewer._replace(deep=True)
    assert [v is None for v in _views([good, deep, good], forced)] == [False, True, False]
    assert [v is None for v in _views([good] * 3, forced)] == [False] * 3
    assert both(RULES, [good, deep, good])[0] == ([1], [(0, ["api"]), (2, ["api"])])


ERRORS_RESOLVED = """
rules:
  - name: errors
    match: {level: error}
    threshold: {count: 1, window: 1m}
    resolve: {after: 1m}
"""


def test_with_timers_the_clock_takes_the_last_line_orjson_reads() -> None:
    """A block whose last line holds a number beyond a double where no rule reads (an event to
    the view, invalid to orjson): the clock moves to the line before it, as without views."""
    lines = [
        b'{"timestamp": "2024-06-11T10:00:00Z", "level": "error"}',
        b'{"timestamp": "2024-06-11T10:05:00Z", "level": "info"}',
        b'{"timestamp": "2024-06-11T10:06:00Z", "level": "info", "x": 1e400}',
    ]
    got, expected = _timed_outcomes(ruleset_from_yaml(ERRORS_RESOLVED), lines, 3)
    assert got.firings == expected.firings
    assert [type(f).__name__ for _, f, _ in got.firings] == ["Firing", "Closing"]
    assert (got.invalid, expected.invalid) == ([], [2])


BOM = b"\xef\xbb\xbf"


def test_a_line_after_a_byte_order_mark_is_an_event() -> None:
    """Some Windows tools start a file with UTF-8's byte order mark, which orjson refuses: the
    line after it is an event all the same, from views as parsed whole, and in matching."""
    lines = [BOM + b'{"service": "api"}', b'{"service": "api"}', BOM + b'{"size": 3}', BOM + b'{"service": "api"']
    expected = ([3], [(0, ["api"]), (1, ["api"]), (2, ["small"])])
    assert both(RULES, lines) == (expected, expected)
    matches = match_lines(lines, orjson.loads, Engine(ruleset_from_yaml(RULES)), ARRIVAL)
    assert (matches.invalid, [(i, [r.name for r in m.matching]) for i, m in matches.matched]) == expected


def test_a_line_with_an_escaped_lone_surrogate_is_an_event() -> None:
    """orjson refuses a `\\udcff` escape (Python's json.dumps writes undecodable input so): the
    line is an event all the same, with U+FFFD in its place, from views as parsed whole, and in
    matching; so whoever chooses a user name cannot keep an event from being evaluated."""
    rules = RULES + '  - {name: replaced, match: {user: {contains: "\\uFFFD"}}}\n'
    lines = [b'{"service": "api", "user": "r\\udcffot"}', b'{"size": 3, "x": "\\ud800"}', b'{"user": "\\\\udcff"}']
    expected = ([], [(0, ["api", "replaced"]), (1, ["small"])])
    assert both(rules, lines) == (expected, expected)
    matches = match_lines(lines, orjson.loads, Engine(ruleset_from_yaml(rules)), ARRIVAL)
    assert (matches.invalid, [(i, [r.name for r in m.matching]) for i, m in matches.matched]) == expected


def test_with_timers_a_line_after_a_byte_order_mark_moves_the_clock() -> None:
    """The block's last line, after a byte order mark, moves the clock to its time as any
    other line does: the alert it makes due is closed."""
    lines = [
        b'{"timestamp": "2024-06-11T10:00:00Z", "level": "error"}',
        BOM + b'{"timestamp": "2024-06-11T10:02:00Z", "level": "info"}',
    ]
    got, expected = _timed_outcomes(ruleset_from_yaml(ERRORS_RESOLVED), lines, 2)
    assert [type(f).__name__ for _, f, _ in got.firings] == ["Firing", "Closing"]
    assert (got.firings, got.invalid, expected.invalid) == (expected.firings, [], [])


def test_a_path_part_of_digits_outside_ascii_is_a_key_not_a_list_index() -> None:
    """`²` is a digit to `str.isdigit` but no list index: the path reads a key of that name,
    from a view as from the whole event, instead of failing on `int('²')`."""
    text = "rules:\n  - {name: sup, match: {items.²: x}}\n  - {name: zero, match: {items.0: x}}\n"
    lines = [b'{"items": {"\\u00b2": "x"}}', b'{"items": ["x"]}', b'{"items": "x"}']
    from_view, parsed = both(text, lines)
    assert from_view == parsed == ([], [(0, ["sup"]), (1, ["zero"])])


def test_a_block_of_many_short_lines_is_viewed_at_once_whatever_its_brackets() -> None:
    """Only a line longer than orjson's nesting limit can nest deeper: a block of short lines
    with more brackets than the limit in all is still viewed, where msgspec goes deeper."""
    viewer = Engine(ruleset_from_yaml(RULES)).viewer(None)
    assert viewer is not None
    short = b'{"service": "api", "x": [[[[{"a": [1]}]]]]}'
    assert all(v is not None for v in _views([short] * 300, viewer._replace(deep=True)))


def test_a_key_with_a_lone_surrogate_leaves_no_view() -> None:
    """No rule file holds one (its text must be UTF-8), but a rule built in code may: msgspec
    cannot name a field so, and the rule set is judged from whole events."""
    layout = Layout()
    layout.attribute("ok")
    assert layout.viewer(lambda view, line, time: None, None, lambda line, time: None) is not None
    layout.attribute("\ud800")
    assert layout.viewer(lambda view, line, time: None, None, lambda line, time: None) is None


def _viewed_value(viewer: Any, line: bytes, key: str) -> Any:
    """The value the view of `line` holds for the top-level `key`."""
    view = viewer.decode(line)
    return getattr(view, dict(zip(view.__struct_encode_fields__, view.__struct_fields__, strict=True))[key])


MEMBERS = """
rules:
  - {name: failing, match: {http.status: {gte: 500}}}
  - {name: posted, match: {http.method: POST, service: api}}
  - {name: admin, match: {http.path: {startswith: /admin}}}
  - {name: huge, match: {http.bytes: {gt: 18446744073709551615}}}
"""


@pytest.mark.parametrize(
    ("line", "fires"),
    [
        (b'{"http": {"status": 503}}', ["failing"]),
        (b'{"http": {"status": 200, "x": [1, {"y": 2}]}}', []),
        (b'{"http": {"status": 503, "status": 200}}', []),  # the last of equal inner keys, as orjson
        (b'{"http": {"status": 200, "status": 503}}', ["failing"]),
        (b'{"http": {"status": 503}, "http": "down"}', []),  # the last of equal outer keys
        (b'{"http": "down", "http": {"status": 503}}', ["failing"]),
        (b'{"http": {"status": {"code": 503}}}', []),
        (b'{"http": {"status": [503]}}', []),
        (b'{"http": {"status": null}}', []),
        (b'{"http": {}}', []),
        (b'{"http": "503"}', []),
        (b'{"http": [{"status": 503}]}', []),
        (b'{"http": 503}', []),
        (b'{"http": null}', []),
        (b'{"http": true}', []),
        (b'{"status": 503}', []),
        (b'{"http": {"method": "POST"}, "service": "api"}', ["posted"]),
        (
            b'{"http": {"method": "POST", "path": "/admin/x", "status": 500}, "service": "api"}',
            ["admin", "failing", "posted"],
        ),
        (b'{"http": {"\\u0070ath": "/admin"}}', ["admin"]),  # an escaped inner key
        (b'{"http": {"path": "/\\u0061dmin"}}', ["admin"]),
        (b'{"http": {"bytes": 18446744073709551615}}', []),  # the bound itself
        (b'{"http": {"bytes": 18446744073709551617}}', ["huge"]),  # orjson: a rounded float, 2**64
        (b'{"http": {"bytes": -18446744073709551617}}', []),
        (b'{"http": {"status": 503, "other": 1e400}}', None),  # beyond a double, with candidates: invalid
    ],
)
def test_a_field_read_only_below_the_top_level_is_viewed_as_a_struct(line: bytes, fires: list[str] | None) -> None:
    """`http.status` and its siblings, read from a struct of the inner keys the rules read when
    `http` holds an object, from the value itself otherwise: what the whole event gives."""
    engine = Engine(ruleset_from_yaml(MEMBERS))
    viewer = engine.viewer(None)
    assert viewer is not None
    assert type(_viewed_value(viewer, b'{"http": {"status": 1}}', "http")) is not dict, "an object becomes a struct"
    from_view, parsed = both(MEMBERS, [line])
    assert from_view == parsed == (([0], []) if fires is None else ([], [(0, fires)] if fires else []))


def test_a_number_beyond_a_double_in_an_inner_key_no_rule_reads_is_an_event() -> None:
    """The documented difference holds for the keys of an object the index reads only some
    keys of: they are skipped as the top level's are (with candidates, the line is invalid)."""
    assert both(MEMBERS, [b'{"http": {"status": 200, "other": 1e400}}']) == (([], []), ([0], []))


# Bounds on a number at the top level, below it, and beneath a table of a service's lone
# bounds; one bound is -2**63 itself, which the float of an integer below it can equal.
BOUNDED = """
rules:
  - {name: failing, match: {http.status: {gte: 500}}}
  - {name: floor, match: {http.bytes: {gte: -9223372036854775808}}}
  - {name: big, match: {size: {gte: 1000}}}
  - {name: api, match: {service: api, latency: {gte: 100}}}
  - {name: web, match: {service: web, latency: {gte: 200}}}
  - {name: db, match: {service: db, latency: {gte: 50}}}
  - {name: auth, match: {service: auth, latency: {gte: 300}}}
"""
BEYOND = "1" + "0" * 400  # an integer beyond a double: orjson refuses it, msgspec keeps it


@pytest.mark.parametrize(
    ("line", "fires"),
    [
        (b'{"http": {"status": 18446744073709551617}}', ["failing"]),  # orjson: a rounded float
        (b'{"http": {"status": -18446744073709551617}}', []),
        (b'{"size": 18446744073709551617}', ["big"]),
        (b'{"size": -18446744073709551617}', []),
        (b'{"service": "web", "latency": 18446744073709551617}', ["web"]),
        (b'{"service": "db", "latency": -18446744073709551617}', []),
        (b'{"http": {"bytes": -9223372036854775809}}', ["floor"]),  # orjson: -2**63, the bound
        (b'{"http": {"bytes": -9223372036854775808}}', ["floor"]),
        (b'{"http": {"bytes": -9223372036854777857}}', []),  # orjson: the float below -2**63
        (b'{"http": {"status": %s}}' % BEYOND.encode(), None),  # reaches the bound: invalid
        (b'{"size": %s}' % BEYOND.encode(), None),
        (b'{"service": "auth", "latency": %s}' % BEYOND.encode(), None),
    ],
)
def test_an_integer_beyond_64_bits_is_compared_as_orjson_reads_it(line: bytes, fires: list[str] | None) -> None:
    """A view keeps such an integer exact; the line parsed whole holds orjson's float: what the
    bounds let in is what the float reaches (the line is parsed whole once a bound is reached)."""
    from_view, parsed = both(BOUNDED, [line])
    assert from_view == parsed == (([0], []) if fires is None else ([], [(0, fires)] if fires else []))


@pytest.mark.parametrize(
    "line",
    [
        b'{"http": {"status": -%s}}' % BEYOND.encode(),
        b'{"size": -%s}' % BEYOND.encode(),
        b'{"service": "api", "latency": -%s}' % BEYOND.encode(),
    ],
)
def test_an_integer_beyond_a_double_below_every_bound_is_an_event(line: bytes) -> None:
    """The documented difference holds for a number the index compares and that reaches none of
    the bounds it is compared with (all within 2**63 either way): the line is not parsed whole
    to be told apart, as no rule could match it (parsed whole, it is invalid)."""
    assert both(BOUNDED, [line]) == (([], []), ([0], []))


def test_a_field_read_whole_and_below_is_viewed_as_a_dict() -> None:
    """A rule reading `http` itself keeps the whole object as a dict; the rules reading inside
    it read the dict."""
    text = MEMBERS + "  - {name: down, match: {http: down}}\n"
    viewer = Engine(ruleset_from_yaml(text)).viewer(None)
    assert viewer is not None
    assert _viewed_value(viewer, b'{"http": {"status": 1}}', "http") == {"status": 1}
    lines = [
        b'{"http": "down"}',
        b'{"http": {"status": 503, "method": "POST"}, "service": "api"}',
        b'{"http": {"status": 200}}',
        b'{"http": ["down"]}',
    ]
    from_view, parsed = both(text, lines)
    assert from_view == parsed == ([], [(0, ["down"]), (1, ["failing", "posted"])])


def test_blocks_judged_in_one_call_give_each_line_its_own_index() -> None:
    """Lines beyond one block (evaluated a block per call, the loop in the generated code),
    with bad lines, lines parsed whole for their integers, lines with candidates that match
    nothing, and scans whose ids the generated loop iterates: each outcome at its index."""
    text = MEMBERS + BIG.split("rules:\n", 1)[1]
    text += "  - {name: timeout, match: {message: {regex: 'time(d )?out'}}}\n"
    text += "  - {name: refused, match: {message: {contains: refused}}}\n"
    kinds = [
        b'{"http": {"status": 503}}',
        b'{"http": {"status": 200}, "message": "timed out"}',
        b'{"http": {"status": 200}, "x": [}',
        b'{"x": 18446744073709551617}',
        b'{"x": 1}',
        b'{"service": "api", "http": {"method": "GET"}}',
        '{"message": "caf\xc3\xa9 timeout"}'.encode("latin-1"),
        b'{"message": "\xff"}',
        b'{"message": "connection refused: timeout"}',
        b"[]",
    ]
    rng = random.Random(7)
    lines = [rng.choice(kinds) for _ in range(3 * BLOCK_LINES + 17)]
    from_view, parsed = both(text, lines)
    assert from_view == parsed
    assert len(from_view[0]) > len(lines) / 6 and len(from_view[1]) > len(lines) / 6
    assert Engine(ruleset_from_yaml(text)).viewer(None).evaluate_block is not None  # type: ignore[union-attr]


class CountedLines(list[bytes]):
    """A block's lines that count how many of them are read."""

    def __init__(self, lines: list[bytes]) -> None:
        super().__init__(lines)
        self.read = 0

    def __getitem__(self, index: Any) -> Any:
        self.read += 1
        return super().__getitem__(index)

    def __iter__(self) -> Any:
        return (self[i] for i in range(len(self)))


def test_a_blocks_loop_reads_only_the_lines_it_parses() -> None:
    """The generated loop over a block takes each view with its index, and a line only where
    it is parsed: one without a view, or one with candidates (most lines are neither)."""
    text = "rules:\n  - {name: failing, match: {status: {gte: 500}}}\n"
    viewer = Engine(ruleset_from_yaml(text)).viewer(None)
    assert viewer is not None and viewer.evaluate_block is not None
    lines = CountedLines([b'{"status": 200}\n', b'{"status": 503}\n', b'{"status": 2}\n', b"[}\n", b"{}\n"])
    views = [viewer.decode(line) for line in lines[:3]] + [None, viewer.decode(lines[4])]
    lines.read = 0
    invalid: list[int] = []
    firings: list[Any] = []
    viewer.evaluate_block(views, lines, 10, ARRIVAL, invalid, firings)
    assert [10 + 3] == invalid
    assert [(11, ["failing"])] == [(i, [r.name for r in f.rules]) for i, f, _ in firings]
    assert 2 == lines.read


def _matched(matches: Matches) -> tuple[list[int], list[tuple[int, list[str], list[Any], float]], list[Any]]:
    """What `match_lines` found, comparable across engines."""
    found = [(i, [r.name for r in m.matching], m.groups, m.time) for i, m in matches.matched]
    return matches.invalid, found, matches.block_ends


@pytest.mark.parametrize("shape", ["ops", "kinds"])
def test_scale_out_matching_from_views_finds_what_whole_events_find(shape: str) -> None:
    """`match_lines` (the step the scale-out workers run in parallel) judges JSON lines from
    views too: the same matches, groups, event times, invalid lines and block ends (rules
    with timers: the clock's steps) as from lines parsed whole, bad lines among them."""
    raw = generate.shape_module(shape).generate_rules(100, generate.DEFAULT_SEED)
    ruleset = ruleset_from_yaml(yaml.safe_dump({"rules": raw}))
    events = planted_events([r for r in raw if "match" in r], 3000, shape)
    for i, event in enumerate(events):
        event["timestamp"] = f"2024-06-11T{i * 5 // 3600:02d}:{i * 5 // 60 % 60:02d}:{i * 5 % 60:02d}Z"
    lines = [orjson.dumps(e) if i % 97 else b'{"timestamp": [}' for i, e in enumerate(events)]
    lines[-1] = b'{"timestamp": "2024-06-11T23:00:00Z", "x": 1e400}'  # the last line orjson refuses
    viewed = Engine(ruleset, time=TimeReader(EventTime("timestamp")), saved=False)
    parsed = Engine(ruleset, time=TimeReader(EventTime("timestamp")), saved=False)
    assert viewed.viewer(viewed.time, matching=True) is not None and viewed.timed == (shape == "kinds")
    for start in range(0, len(lines), 500):
        block = lines[start : start + 500]
        got = _matched(match_lines(block, orjson.loads, viewed, ARRIVAL, viewed.time))
        expected = _matched(match_lines(block, whole, parsed, ARRIVAL, parsed.time))
        assert got[1:] == expected[1:]
        # The documented difference: `1e400` where no rule reads is an event from a view.
        assert [i for i in expected[0] if i not in got[0]] == ([499] if start + 500 >= len(lines) else [])
    assert any(matching for _, _, matching in viewed._viewers), "the lines were judged from views"


def test_scale_out_matching_from_views_takes_a_named_sources_name() -> None:
    """A named source's views hold its name, over the line's own `source_name`."""
    engine = Engine(ruleset_from_yaml(NAMED_RULES))
    named = Named(orjson.loads, "nginx")
    lines = [b'{"source_name": "app", "status": 503}', b'{"status": 503}', b'{"source_name": "app"}', b"{"]
    got = _matched(match_lines(lines, named, engine, ARRIVAL))
    expected = _matched(match_lines(lines, lambda line: named(line), Engine(ruleset_from_yaml(NAMED_RULES)), ARRIVAL))
    assert got[:2] == expected[:2]
    assert [(i, names) for i, names, _, _ in got[1]] == [(0, ["by-source"]), (1, ["by-source"])]
    assert any(matching for _, _, matching in engine._viewers), "the lines were judged from views"


KEYED = """
rules:
  - {name: zoned, match: {zone: b}}
  - {name: named, match: {app: x}}
  - {name: slow, match: {h.latency: {gte: 9}}}
  - {name: failing, match: {h.status: {gte: 500}}}
"""


def test_a_views_fields_follow_the_order_of_the_first_lines_keys() -> None:
    """msgspec looks each key of a line up among the view's fields from the one after the field
    it last found: the view lists its fields (and an inner object's) in the order the first line
    it judges holds them, whatever order the index reads them in, a rule set reloaded too; a line
    in another order is judged the same."""
    lines = [
        b'{"t": 1, "app": "x", "h": {"status": 503, "latency": 10}, "zone": "b"}\n',
        b'{"zone": "b", "h": {"latency": 10, "status": 503}, "app": "x"}\n',
    ]
    engine = Engine(ruleset_from_yaml(KEYED))
    batch = evaluate_lines(lines, orjson.loads, engine, ARRIVAL)
    assert outcome(batch) == outcome(evaluate_lines(lines, whole, Engine(ruleset_from_yaml(KEYED)), ARRIVAL))
    assert sorted(outcome(batch)[1][0][1]) == ["failing", "named", "slow", "zoned"]
    engine.replace_rules(ruleset_from_yaml(KEYED + "  - {name: other, match: {zone: c}}\n"))
    for viewer in (engine.viewer(None), _viewer(orjson.loads, engine, None, match=True)):
        assert viewer is not None
        view = viewer.decode(lines[0])
        assert view.__struct_encode_fields__ == ("app", "h", "zone")
        assert _viewed_value(viewer, lines[0], "h").__struct_encode_fields__ == ("status", "latency")


def test_the_key_order_kept_is_bounded_and_a_line_of_many_keys_judged_alike() -> None:
    """The engine keeps the first line's key order for its life: of a first line of 100,000 keys
    (and an inner object of as many) it keeps KEYS_KEPT of each; the lines are judged as before."""
    from rulesd.rules.view import KEYS_KEPT, key_order

    many = {f"k{i}": i for i in range(100_000)}
    order = key_order({**many, "h": dict(many), "app": "x"})
    assert order is not None and len(order) == KEYS_KEPT and list(order)[:2] == ["k0", "k1"]
    assert key_order({"h": dict(many)}) == {"h": tuple(f"k{i}" for i in range(KEYS_KEPT))}
    lines = [
        orjson.dumps({**many, "app": "x", "h": {"status": 503, "latency": 10}, "zone": "b"}) + b"\n",
        b'{"zone": "b", "h": {"latency": 10, "status": 503}, "app": "x"}\n',
    ]
    batch = evaluate_lines(lines, orjson.loads, Engine(ruleset_from_yaml(KEYED)), ARRIVAL)
    assert outcome(batch) == outcome(evaluate_lines(lines, whole, Engine(ruleset_from_yaml(KEYED)), ARRIVAL))
    assert sorted(outcome(batch)[1][0][1]) == ["failing", "named", "slow", "zoned"]
