"""Whatever an event holds, every payload rulesd builds from it is one OpsGenie accepts: events
with hostile values go through the parser, the engine and rules whose templates put them in
every field, and each payload is checked against OpsGenie's own schema and documented limits.
A payload OpsGenie refuses (422) is dead-lettered: a page lost."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rulesd.alerting.payload import AlertSettings, build_payload
from rulesd.engine import Engine, Firing
from rulesd.events import make_parser
from rulesd.pipeline import advance, build_alerts, evaluate_lines
from rulesd.printable import one_line
from tests.opsgenie_schema import DETAILS_MAX, LIMITS, create_alert_validator, details_size
from tests.ruletools import rules_from_yaml, ruleset_from_yaml

VALIDATOR = create_alert_validator()
RULES = ruleset_from_yaml(
    """
rules:
  - name: every-field
    match: {kind: page}
    alert:
      message: "{v} on {w}"
      alias: "{v}"
      description: "seen: {v}"
      details: {value: "{v}", other: "{n.a}", "dotted.key": "{w}"}
      tags: ["{v}", "w:{w}", "{n.a}"]
      entity: "{w}"
      note: "{v} {n}"
  - name: grouped
    description: grouped by v and w
    match: {kind: page}
    threshold: {count: 1, window: 1m, group_by: [v, w]}
    resolve: {after: 1m}
"""
)
SETTINGS = AlertSettings("rulesd\x00\x1b[2J")  # a configured source is no exception
# Control characters: C0, DEL, C1 (a terminal takes U+009B as ESC [) and the line separators.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
ONE_LINE = ("message", "alias", "entity", "source")

HOSTILE_CHARS = st.sampled_from(
    [
        *map(chr, range(0x20)),
        *["\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\ufeff", "\u200b", "\ud800", "\udfff"],
        *["\\", '"', "{", "}", ",", ".", " ", "a", "é", "雪", "😀"],
    ]
)
TEXT = st.one_of(
    st.text(HOSTILE_CHARS, max_size=40),
    st.text(max_size=20),
    st.integers(100, 100_000).map(lambda n: "x" * n),  # up to 100 KB
)
NUMBER = st.one_of(
    st.integers(-(2**80), 2**80),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, -(10**40)]),
    st.floats(),  # NaN and the infinities too: json writes them, orjson refuses the line
    st.sampled_from([1e308, -1e308, 5e-324, 1.7976931348623157e308]),
)
KEY = st.one_of(st.sampled_from(["", ".", "a.b", "n.a", "..", " "]), st.text(HOSTILE_CHARS, max_size=8))


def nested(depth: int) -> Any:
    """A value `depth` levels deep, lists and objects in turn."""
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"": value}
    return value


VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBER, TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEY, inner, max_size=4)),
    max_leaves=12,
)
FIELD = st.one_of(VALUE, st.integers(200, 1023).map(nested))  # orjson reads up to 1,024 levels


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    """One line of a JSON event, as a hostile writer might make it."""
    event = {"kind": "page", "v": draw(FIELD), "w": draw(VALUE), "n": draw(VALUE), "message": draw(VALUE)}
    event.update(draw(st.dictionaries(KEY, VALUE, max_size=3)))
    # ensure_ascii: lone surrogates as `\ud800` escapes (mended into U+FFFD by the parser);
    # without it, written raw, they make bytes that are not UTF-8 (the line is invalid).
    line = json.dumps(event, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        line = line.replace(b"a", b"\xff\xc0", 1)  # not UTF-8
    return line


def check(payload: dict[str, Any]) -> None:
    """`payload` is what OpsGenie accepts: its schema and limits, and no control character
    (in `description`, `note` and details' values a line feed only)."""
    VALIDATOR.validate(payload)
    assert details_size(payload) <= DETAILS_MAX
    assert orjson.loads(orjson.dumps(payload)) == payload  # the outbox stores it so
    for field in ONE_LINE:
        if field in payload:
            assert payload[field].strip() and not CONTROL.search(payload[field]), (field, payload[field][:200])
    for text in [*payload["tags"], *payload["details"]]:
        assert text.strip() and not CONTROL.search(text), text
    for text in [payload["description"], payload.get("note", ""), *payload["details"].values()]:
        assert not CONTROL.search(text.replace("\n", "")), text[:200]


def payloads(line: bytes) -> list[dict[str, Any]]:
    """The bodies of the requests `line` makes: the alert both rules fire, then its close an
    hour later (none if the line is not an event)."""
    engine = Engine(RULES)
    batch = evaluate_lines([line], make_parser().fast, engine, 1e9)
    closes = advance(engine, 1e9 + 3600)
    alerts = [*build_alerts(batch, SETTINGS, lambda i: f"events.jsonl (offset {i})")]
    alerts += build_alerts(closes, SETTINGS, str)
    # What replay's text line prints, read before the body is built (as replay reads it): the
    # body's own, so the checks below hold for the line too, which prints it unescaped.
    heads = [a.headline() for a in alerts if a.close is None]
    assert [(p["priority"], p["message"], p["alias"]) for a in alerts if a.close is None for p in [a.payload]] == heads
    if batch.invalid:  # refused as no event: counted and skipped by the daemon
        assert [] == alerts
    else:  # nothing lost: the alert, then its close
        assert [None, alerts[0].payload["alias"]] == [a.close for a in alerts]
    return [a.payload for a in alerts]


@settings(
    max_examples=200,
    derandomize=True,  # the same examples on every run: a failure is always the same failure
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(lines())
@example(b'{"kind":"page","v":' + b"[" * 300 + b"]" * 300 + b"}")  # orjson writes at most 254 levels
@example(b'{"kind":"page","v":' + b"[" * 1023 + b"]" * 1023 + b"}")  # json's recursion gives out first
@example(b'{"kind":"page","v":"a\\u0000b\\u001b[31mc\\u007f\\u009bd\\u2028e","w":"\\ud800"}')
@example(b'{"kind":"page","v":123456789012345678901234567890,"w":1e308}')
@example(b'{"kind":"page","v":NaN}')
def test_every_payload_is_one_opsgenie_accepts(line: bytes) -> None:
    """Control characters, NUL, lone surrogates, bytes that are not UTF-8, 100 KB strings,
    nesting to orjson's limit, integers beyond 64 bits, 1e308, NaN, keys with dots or empty:
    the line is refused as no event, or every payload built from it passes. Deep nesting
    stopped the engine (a group key, the alias) and the templates; control characters went
    to OpsGenie as they were."""
    for payload in payloads(line):
        if "message" in payload:
            check(payload)
        else:  # a close: its own limits
            assert len(payload["note"]) <= LIMITS["note"]["maxLength"]
            assert len(payload["source"]) <= LIMITS["source"]["maxLength"]
            assert not CONTROL.search(payload["source"] + payload["note"])


def test_control_characters_are_written_as_json_escapes() -> None:
    """Every field shows a control character as the escape JSON writes for it (in one-line
    fields a line break and a tab too), so that no NUL or escape sequence reaches OpsGenie and
    no line break splits a message, a tag or an alias."""
    line = json.dumps({"kind": "page", "v": "a\x00b\x1b[31m\x7f\x9b\u2028\tc\nd", "w": "e\rf", "n": {"a": "\x07"}})
    create, close = payloads(line.encode())
    one = "a\\u0000b\\u001b[31m\\u007f\\u009b\\u2028\\tc\\nd"  # as a one-line field shows "v"
    several = one.replace("\\n", "\n")  # as description, note and details values show it
    assert {
        "message": "a\\u0000b\\u001b[31m\\u007f\\u009b c d on e f",  # white space folded first
        "alias": one,
        "entity": "e\\rf",
        "note": several + ' {"a":"\\u0007"}',
        "tags": [one, "w:e\\rf", "\\u0007"],
        "source": "rulesd\\u0000\\u001b[2J",
    } == {k: create[k] for k in ("message", "alias", "entity", "note", "tags", "source")}
    assert {"value": several, "other": "\\u0007", "dotted.key": "e\\rf"} == {
        k: create["details"][k] for k in ("value", "other", "dotted.key")
    }
    assert create["description"].startswith(f"every-field: seen: {several}\ngrouped: grouped by v and w\n\nEvent:\n")
    assert {"source": "rulesd\\u0000\\u001b[2J", "note": "resolved: grouped"} == close


@pytest.mark.parametrize("depth", [255, 600, 1023])
def test_a_value_nested_deeper_than_the_encoders_go_still_pages(depth: int) -> None:
    """A group_by value nested deeper than orjson writes (254) or json's recursion goes (orjson
    reads 1,024 levels): the engine keys its group, the templates render it and the alert goes
    out. The engine raised, and the daemon stopped at the line again after each restart."""
    create, close = payloads(b'{"kind":"page","v":' + b"[" * depth + b"]" * depth + b"}")
    check(create)
    assert ('["every-field","grouped"]', "resolved: grouped") == (
        create["details"]["Triggering Rules"],
        close["note"],
    )
    assert create["details"]["value"].startswith("[[[[")


def test_a_blank_entity_or_note_is_left_out() -> None:
    """An `entity` or `note` template that renders blank (its fields missing) leaves the field
    out, as an unset one does, rather than send it empty."""
    create, _ = payloads(b'{"kind":"page","v":" "}')
    assert ("entity" in create, "note" in create) == (False, False)


CUT_RULE = rules_from_yaml(
    """
name: r
match: {kind: page}
alert: {message: "{v}", tags: ["{v}"], entity: "{v}", note: "{v}", description: "{v}"}
"""
)["r"]
# Every field cut to a limit, and how many characters its value is set after (`description:
# "r: "`), with the limit itself: a cut may fall anywhere near the value's end.
CUT_FIELDS = {"message": 0, "entity": 0, "note": 0, "description": 3, "source": 0}
# Which characters text brings (no backslash of its own: every one in a field is an escape's).
ESCAPED_OR_NOT = st.text(
    st.sampled_from([*map(chr, range(0x20)), "\x7f", "\x85", "\x9b", "\u2028", '"', "a", "é", "😀"]),
    min_size=1,
    max_size=12,
)
LIMIT_NEAR = st.sampled_from(
    [LIMITS[f]["maxLength"] - at for f, at in CUT_FIELDS.items()] + [LIMITS["tags"]["items"]["maxLength"]]
)
# The end of an escape cut short: `\u00`, or a backslash left alone.
SPLIT_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{0,3})?\Z")


@settings(max_examples=300, derandomize=True, deadline=None)
@given(LIMIT_NEAR, st.integers(-8, 2), ESCAPED_OR_NOT, st.text(st.sampled_from("a\x1b\n"), max_size=6))
def test_a_cut_to_a_limit_never_splits_an_escape(limit: int, shift: int, tail: str, head: str) -> None:
    """Control characters are escaped (`\\u001b`) before OpsGenie's limits are applied; a cut at
    a limit that fell inside an escape left `\\u00` at a field's end (a tag, the message, the
    entity, the note, the description, the source). The cut falls before the whole escape, and
    no further back: the payload is one OpsGenie accepts, within its limits."""
    value = head + "a" * (limit + shift - len(head)) + tail
    payload = build_payload(Firing({"kind": "page", "v": value}, 1.7e9, (CUT_RULE,)), AlertSettings(value))
    VALIDATOR.validate(payload)
    for field, at in CUT_FIELDS.items():
        text, limit_of = payload[field], LIMITS[field]["maxLength"]
        assert not SPLIT_ESCAPE.search(text.removesuffix("…")), (field, text[-12:])
        if text.endswith("…") and len(value) + at > limit_of:  # cut: at most an escape's 5 characters before it
            assert len(text) >= limit_of - 5, (field, text[-12:])
    (tag,) = payload["tags"]
    whole, tag_max = one_line(value.strip()), LIMITS["tags"]["items"]["maxLength"]
    assert not SPLIT_ESCAPE.search(tag) and whole.startswith(tag), tag[-12:]
    assert len(tag) >= tag_max - 5 if len(whole) > tag_max else tag == whole, tag[-12:]
