"""Firing -> OpsGenie create-alert body, pinned exactly and checked against
OpsGenie's own schema."""

from __future__ import annotations

import datetime
import decimal
import enum
import hashlib
import http
import json
import random
from typing import Any

import pytest

from rulesd.alerting.payload import (
    AlertSettings,
    build_payload,
    cut,
    event_text,
    parse_recipients,
    triggering_rules,
)
from rulesd.engine import Firing
from rulesd.printable import lines, one_line
from rulesd.rules.loader import check_text, load_ruleset_text
from rulesd.rules.model import Responder, Rule
from tests.opsgenie_schema import DETAILS_MAX, create_alert_validator, details_size
from tests.ruletools import rules_from_yaml

VALIDATOR = create_alert_validator()

RULES = rules_from_yaml(
    """
rules:
  - name: upstream
    description: The payment service cannot reach its upstream.
    match: {service: payments}
    threshold: {count: 2, window: 2m, group_by: [host, region]}
    alert:
      message: "Payments upstream failing on {host}"
      priority: P1
      tags: [payments, "host:{host}"]
      responders: [{type: team, name: payments-oncall}, {type: user, username: alice@example.com}]
      details: {runbook: "https://wiki.example.com/payments", status: "{http.status}"}
      entity: "{host}"
      note: "status {http.status}"
  - name: bare
    match: {service: payments}
  - name: described
    description: plain description
    match: {service: payments}
    alert:
      description: "rendered for {host}"
      priority: P2
      tags: [payments, "second, with comma"]
      responders: [{type: escalation, name: payments-escalation}, {type: team, name: payments-oncall}]
      details: {runbook: "ignored: the first rule's key wins", owner: payments}
"""
)
EVENT: dict[str, Any] = {
    "service": "payments",
    "host": "a",
    "http": {"status": 502},
    "message": "upstream timeout",
}
EVENT_JSON = json.dumps(EVENT, indent=2)
DEFAULT_SETTINGS = AlertSettings()


def build(
    rules: list[Rule],
    event: dict[str, Any] = EVENT,
    settings: AlertSettings = DEFAULT_SETTINGS,
    source: str = "",
) -> dict[str, Any]:
    """Build the payload of a firing of `rules` (lead first) and validate it as OpsGenie would."""
    payload = build_payload(Firing(event, 1_700_000_000.0, tuple(rules)), settings, source)
    VALIDATOR.validate(payload)
    assert details_size(payload) <= DETAILS_MAX
    return payload


def rule(yaml_body: str) -> Rule:
    """One rule named `r` with the given YAML lines under it."""
    return rules_from_yaml("name: r\nmatch: {x: 1}\n" + yaml_body)["r"]


def test_full_payload() -> None:
    """A rule with every alert field, plus configured recipients, gives exactly this body."""
    settings = AlertSettings("rulesd-test", parse_recipients("team:ops, alice@example.com"))
    payload = build([RULES["upstream"]], settings=settings, source="events.jsonl:7")
    assert {
        "message": "Payments upstream failing on a",
        "alias": 'rulesd: upstream: {"host":"a"}',
        "description": f"upstream: The payment service cannot reach its upstream.\n\nEvent:\n{EVENT_JSON}",
        "responders": [
            {"type": "team", "name": "payments-oncall"},
            {"type": "user", "username": "alice@example.com"},
            {"type": "team", "name": "ops"},
        ],
        "tags": ["payments", "host:a"],
        "details": {
            "Triggering Rules": '["upstream"]',
            "Event Source": "events.jsonl:7",
            "runbook": "https://wiki.example.com/payments",
            "status": "502",
        },
        "priority": "P1",
        "source": "rulesd-test",
        "entity": "a",
        "note": "status 502",
    } == payload


def test_defaults_for_a_rule_without_alert_settings() -> None:
    """No `alert:` means the event's message, P3, a name alias, and no entity or note."""
    assert {
        "message": "upstream timeout",
        "alias": "rulesd: bare",
        "description": f"Event:\n{EVENT_JSON}",
        "responders": [],
        "tags": [],
        "details": {"Triggering Rules": '["bare"]'},
        "priority": "P3",
        "source": "rulesd",
    } == build([RULES["bare"]])


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"message": "  spaced\n  out\ttext  "}, "spaced out text"),
        ({"message": ""}, "rulesd: bare"),
        ({"message": 42}, "rulesd: bare"),
        ({}, "rulesd: bare"),
    ],
)
def test_message_fallbacks(event: dict[str, Any], expected: str) -> None:
    """Without `alert.message`: the event's message on one line, else `rulesd: <lead name>`."""
    assert expected == build([RULES["bare"]], event)["message"]


def test_message_template_rendering_empty_falls_back() -> None:
    """A message template that renders empty falls back like a missing one."""
    assert "upstream timeout" == build([rule("alert: {message: '{missing}'}")], EVENT)["message"]


def test_several_rules_make_one_alert_naming_all() -> None:
    """Fired rules are merged: lead's message and priority, unions of tags and responders."""
    payload = build(
        [RULES["upstream"], RULES["described"], RULES["bare"]],
        settings=AlertSettings(recipients=parse_recipients("payments-oncall, bob@example.com")),
    )
    assert {
        "message": "Payments upstream failing on a",
        "alias": 'rulesd: bare, described, upstream: {"host":"a"}',
        "description": "upstream: The payment service cannot reach its upstream.\n"
        "described: rendered for a\n\n"
        f"Event:\n{EVENT_JSON}",
        "responders": [
            {"type": "team", "name": "payments-oncall"},
            {"type": "user", "username": "alice@example.com"},
            {"type": "escalation", "name": "payments-escalation"},
            {"type": "user", "username": "bob@example.com"},
        ],
        "tags": ["payments", "host:a", "second with comma"],
        "details": {
            "Triggering Rules": '["upstream","described","bare"]',
            "runbook": "https://wiki.example.com/payments",
            "status": "502",
            "owner": "payments",
        },
        "priority": "P1",
        "source": "rulesd",
        "entity": "a",
        "note": "status 502",
    } == payload


@pytest.mark.parametrize(
    "names",
    [["bare"], ["upstream", "described"], ["described", "bare", "upstream"]],
)
def test_triggering_rules_is_json_of_the_names_in_order(names: list[str]) -> None:
    """`details["Triggering Rules"]` is what Sentry's json.dumps writes: compact separators."""
    payload = build([RULES[n] for n in names])
    assert json.dumps(names, separators=(",", ":")) == payload["details"]["Triggering Rules"]


def test_triggering_rules_byte_for_byte_as_sentry() -> None:
    """The exact text of the Sentry plugin for two rules: no space after the comma."""
    assert '["upstream","bare"]' == build([RULES["upstream"], RULES["bare"]])["details"]["Triggering Rules"]


def test_triggering_rules_escape_non_ascii_as_sentrys_encoder() -> None:
    """Sentry's encoder keeps ensure_ascii: anything beyond ASCII is written as a \\u escape."""
    assert '["a","\\u00e9t\\u00e9","\\ud83d\\ude80"]' == triggering_rules(["a", "été", "🚀"])


def test_names_over_the_limit_keep_the_leading_ones_and_say_how_many_more() -> None:
    """80 rules with 100-character names (8,241 characters of JSON): the leading names that fit,
    then `"… N more"`, still valid compact JSON, and the whole of details within 8,000."""
    names = [f"{i:02d}" + "n" * 98 for i in range(80)]
    text = "rules:\n" + "".join(f"  - name: {n}\n    match: {{x: 1}}\n" for n in names)
    rules = list(rules_from_yaml(text).values())
    payload = build(rules, source="events.jsonl (offset 0)")
    value = payload["details"]["Triggering Rules"]
    listed = json.loads(value)
    kept = len(listed) - 1
    assert [*names[:kept], f"… {80 - kept} more"] == listed
    assert json.dumps(listed, separators=(",", ":")) == value  # compact, ASCII-only
    assert len("Triggering Rules") + len(value) <= 8000
    # One more name would not have fitted beside the marker.
    one_more = json.dumps([*names[: kept + 1], f"… {79 - kept} more"], separators=(",", ":"))
    assert len("Triggering Rules") + len(one_more) > 8000
    assert "events.jsonl (offset 0)" == payload["details"]["Event Source"]  # room is left for it


def test_a_huge_detail_key_is_dropped_before_event_source() -> None:
    """Entries are measured key and value together: a 9,000-character key goes, Event Source stays."""
    # A key over 1,024 characters must be written as YAML's explicit `? key`.
    big = rule("alert:\n  details:\n    ? " + "k" * 9000 + "\n    : v\n    runbook: wiki\n")
    payload = build([big], source="events.jsonl (offset 7)")
    assert {"Triggering Rules": '["r"]', "Event Source": "events.jsonl (offset 7)", "runbook": "wiki"} == payload[
        "details"
    ]


def test_details_fit_exactly_at_the_limit() -> None:
    """8,000 characters of keys and values are kept; one more drops the largest entry."""
    fixed = len("Triggering Rules") + len('["r"]') + len("a") + len("b") + len("small")
    exact = build([rule("alert: {details: {a: '{v}', b: small}}")], {"v": "z" * (8000 - fixed)})
    over = build([rule("alert: {details: {a: '{v}', b: small}}")], {"v": "z" * (8001 - fixed)})
    assert (8000, {"Triggering Rules", "a", "b"}) == (details_size(exact), set(exact["details"]))
    assert {"Triggering Rules": '["r"]', "b": "small"} == over["details"]


def test_custom_alias_and_group_alias() -> None:
    """`alert.alias` is rendered; the default alias carries the group as compact JSON."""
    assert "db-a" == build([rule("alert: {alias: 'db-{host}'}")])["alias"]
    grouped = rule("threshold: {count: 1, window: 1m, group_by: [host]}")
    assert 'rulesd: r: {"host":"a"}' == build([grouped], {"host": "a"})["alias"]


GROUPED = rule("threshold: {count: 1, window: 1m, group_by: [user, src]}")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"user": "a, b", "src": "c"}, {"user": "a", "src": "b, c"}),
        ({"user": "1"}, {"user": 1}),
        ({"user": ""}, {"user": None}),
        ({"user": ""}, {}),
        ({"user": None}, {}),
        ({"user": "a", "src": None}, {"user": "a"}),
        ({"user": 'a","src":"b'}, {"user": "a", "src": "b"}),
    ],
)
def test_different_groups_never_share_a_default_alias(first: dict[str, Any], second: dict[str, Any]) -> None:
    """Values holding the separator, text and numbers, empty text, null and a missing field."""
    assert build([GROUPED], first)["alias"] != build([GROUPED], second)["alias"]


def test_the_default_alias_of_a_group_names_its_fields() -> None:
    """`rulesd: <names sorted>: {"field":value,...}` in group_by order, missing fields left out."""
    alias = build([GROUPED, RULES["bare"]], {"user": "zoë, b", "src": 7, "x": 1})["alias"]
    assert 'rulesd: bare, r: {"user":"zoë, b","src":7}' == alias
    assert 'rulesd: r: {"user":"a"}' == build([GROUPED], {"user": "a"})["alias"]


def test_message_is_cut_at_130_with_an_ellipsis() -> None:
    """A long message keeps its first 129 characters and ends in `…`."""
    payload = build([RULES["bare"]], {"message": "x" * 200})
    assert "x" * 129 + "…" == payload["message"]
    assert "x" * 130 == build([RULES["bare"]], {"message": "x" * 130})["message"]


def test_long_alias_becomes_a_stable_hash() -> None:
    """An alias over 512 characters becomes a hash: the same alias always, others differ."""
    long_alias = rule("alert: {alias: '{v}'}")
    first = build([long_alias], {"v": "a" * 600})["alias"]
    again = build([long_alias], {"v": "a" * 600})["alias"]
    other = build([long_alias], {"v": "a" * 599 + "b"})["alias"]
    exact = build([long_alias], {"v": "a" * 512})["alias"]
    assert (True, True, True) == (first == again, first != other, len(first) <= 512)
    assert "a" * 512 == exact


def test_the_names_alias_of_rules_alike_is_made_once_for_every_event() -> None:
    """Dozens of rules alike without an alias or a group fire together alert after alert: their
    alias (their names, sorted, hashed beyond 512 characters) depends on them alone, so it is
    made once and every alert of theirs carries it; a lead rule with an alias or a group still
    renders its own for each event."""
    alike = rules_from_yaml(
        "rules:\n" + "".join(f"  - {{name: web-files-{i:04d}, match: {{x: 1}}}}\n" for i in range(40))
    )
    rules = tuple(alike[f"web-files-{i:04d}"] for i in (39, *range(39)))  # lead first, as the engine orders them
    names = "rulesd: " + ", ".join(sorted(r.name for r in rules))
    first, again = build(list(rules))["alias"], build(list(rules), {"x": 1, "host": "b"})["alias"]
    assert "rulesd-sha256: " + hashlib.sha256(names.encode()).hexdigest() == first
    assert first is again
    assert (
        "rulesd: web-files-0000, web-files-0001" == build([alike["web-files-0000"], alike["web-files-0001"]])["alias"]
    )
    grouped = rule("threshold: {count: 1, window: 1m, group_by: [host]}")
    assert ['rulesd: r: {"host":"a"}', 'rulesd: r: {"host":"b"}'] == [
        build([grouped], {"host": host})["alias"] for host in "ab"
    ]


def test_what_rules_alike_give_every_alert_is_made_once_and_the_events_part_for_each() -> None:
    """Dozens of rules alike fire together alert after alert: their "Triggering Rules" (dozens
    of names) is made once and every body of theirs carries it, while what each event gives is
    rendered from it: a templated description, tags and details beside rules' fixed ones, and
    the "Event Source" said of each alert over a rule's detail of that name."""
    alike = rules_from_yaml(
        "rules:\n"
        + "".join(f"  - {{name: web-{i:04d}, description: ' plain {i} ', match: {{x: 1}}}}\n" for i in range(40))
        + """
  - name: templated
    match: {x: 1}
    alert:
      description: "on {host}"
      tags: ["host:{host}", fixed, "host:{host}"]
      details: {where: "{host}", Event Source: "rule's", Triggering Rules: "never"}
"""
    )
    rules = [alike["templated"], *(alike[f"web-{i:04d}"] for i in range(40))]
    first = build(rules, {"x": 1, "host": "a"}, source="app.log:1")
    again = build(rules, {"x": 1, "host": "b"}, source="")
    names = '["templated",' + ",".join(f'"web-{i:04d}"' for i in range(40)) + "]"
    assert names == first["details"]["Triggering Rules"]
    assert first["details"]["Triggering Rules"] is again["details"]["Triggering Rules"]
    assert {"Triggering Rules": names, "Event Source": "app.log:1", "where": "a"} == first["details"]
    assert {"Triggering Rules": names, "where": "b", "Event Source": "rule's"} == again["details"]
    assert (["host:a", "fixed"], ["host:b", "fixed"]) == (first["tags"], again["tags"])
    said = "templated: on {}\n" + "\n".join(f"web-{i:04d}: plain {i}" for i in range(40))
    assert first["description"].startswith(said.format("a") + "\n\nEvent:\n")
    assert again["description"].startswith(said.format("b") + "\n\nEvent:\n")
    first["tags"].append("mine")  # each body is its own: one alert's change is no other's
    first["details"]["where"] = "changed"
    assert (["host:b", "fixed"], "b") == (build(rules, {"x": 1, "host": "b"})["tags"], again["details"]["where"])


@pytest.mark.parametrize("seed", range(20))
def test_the_message_is_the_text_on_one_line_whatever_its_white_space_and_controls(seed: int) -> None:
    """The message is the rendered template (else the event's message) with its runs of white
    space made one space, its controls escaped and cut to 130: most messages, printable and
    without two spaces together, are taken as they are; any other is made so."""
    rng = random.Random(seed)
    pieces = ["word", " ", "  ", "\t", "\n", "\x1b[31m", "\u00a0", "\u2028", "\x85", "\u3000", "é", "…", "x" * 60]
    lead = rule("alert: {message: '{text}'}")
    for _ in range(50):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 8)))
        flat = one_line(" ".join(text.split()))
        expected = flat if len(flat) <= 130 else cut(flat, 129) + "…"
        assert (expected or "rulesd: r") == build([lead], {"text": text})["message"]
        assert (expected or "rulesd: bare") == build([RULES["bare"]], {"message": text})["message"]


def test_description_is_cut_at_15000() -> None:
    """The description is at most 15,000 characters, ending in `…` when cut."""
    payload = build([RULES["bare"]], {"blob": "y" * 20000})
    assert (15000, "…") == (len(payload["description"]), payload["description"][-1])


class _Text(str):
    """A subclass of str, as no parser makes: json writes it as text."""


def _nested(depth: int) -> dict[str, Any]:
    event: dict[str, Any] = {"leaf": [1]}
    for level in range(depth):
        event = {"n": event} if level % 2 else {"l": [event]}
    return event


@pytest.mark.parametrize(
    "event",
    [
        EVENT,
        {},
        {"empty": {}, "none": [], "list": [1, [2, [{}]], {"k": []}], "deep": {"a": {"b": {"c": 1}}}},
        {"text": 'quote " backslash \\ newline \n tab \t bell \x07 del \x7f é ü 雪 \u2028 😀'},
        {"lone surrogate": "\ud800"},
        {"floats": [0.1, -0.0, 1e16, 0.0001, 123456789.125, 1.5e300, 5e-324]},
        {"ints": [0, -1, 2**63 - 1, -(2**63)]},
        {"huge int": 2**70},
        {"flags": [True, False]},
        {"null": None},
        {"nan": float("nan")},
        {"inf": [float("inf"), float("-inf")]},
        {"null": None, "deep": [1, {"nan": float("nan")}]},
        {"null": None, "tuple": (1, float("-inf"))},
        {1: "an int key"},
        {None: "a null key"},
        {"tuple": (1, "two")},
        {"set": {3}},
        {"day": datetime.date(2024, 6, 11)},
        {"moment": datetime.datetime(2024, 6, 11, 10, 0, tzinfo=datetime.UTC)},
        {"bytes": b"\x00binary"},
        {"big": decimal.Decimal("1.5")},
        {"int enum": http.HTTPStatus.OK},
        {"text subclass": _Text("x")},
        _nested(3),
        _nested(120),
        _nested(300),
    ],
)
def test_the_event_is_written_as_json_dumps_writes_it(event: dict[str, Any]) -> None:
    """The event in the description is json.dumps's indented text, whatever JSON or a YAML test
    event holds (each unusual value is in an event of its own: one sends the whole event to json)."""
    assert json.dumps(event, indent=2, ensure_ascii=False, default=str) == event_text(event)


def test_an_event_holding_null_but_no_nan_is_written_by_orjson_too() -> None:
    """orjson writes NaN as null, so a `null` in its text has the event searched for NaN; none
    here, so orjson's text stands (its exponent for 1e-7 shows it)."""
    event = {"user": None, "message": "NullPointerException in /dev/null", "tiny": 1e-7}
    assert '{\n  "user": null,\n  "message": "NullPointerException in /dev/null",\n  "tiny": 1e-7\n}' == (
        event_text(event)
    )


class _Shade(enum.Enum):
    DARK = 1


def test_an_enum_which_no_parser_makes_is_written_as_its_value() -> None:
    """The one other difference from json.dumps (which writes `"_Shade.DARK"`)."""
    assert '{\n  "shade": 1\n}' == event_text({"shade": _Shade.DARK})


def test_floats_under_1e_minus_4_keep_their_value_but_not_json_dumpss_exponent() -> None:
    """The one difference from json.dumps: `1e-7`, not `1e-07`; `0.00001`, not `1e-05`."""
    event = {"tiny": [1e-7, 1e-5, -2.5e-300], "n": 1}
    text = event_text(event)
    assert '{\n  "tiny": [\n    1e-7,\n    0.00001,\n    -2.5e-300\n  ],\n  "n": 1\n}' == text
    assert event == json.loads(text)


def test_the_description_ends_with_the_event() -> None:
    """After the rules' descriptions comes the event, indented."""
    event = {"service": "payments", "tags": ["a", "b"], "n": 1.5}
    payload = build([RULES["described"]], event)
    assert "described: rendered for\n\nEvent:\n" + json.dumps(event, indent=2) == payload["description"]


def test_the_description_is_escaped_as_one_text_whatever_part_holds_the_controls() -> None:
    """The rules' text and the event's JSON are escaped apart (the rules' once per combination,
    the event's only when it is not ASCII or holds DEL): the description is what escaping it
    whole gives, wherever a control character is (a rule's description, a template's text,
    the event's values: DEL, C1, the line separators, a tab)."""
    rng = random.Random(7)
    pieces = ["a", " ", "é", "\t", "\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\x1b", "\n", "雪", '"', "\\"]
    for _ in range(300):
        said, value = ("".join(rng.choices(pieces, k=rng.randint(0, 8))) for _ in range(2))
        rules = rules_from_yaml(
            "rules:\n"
            f"  - name: fixed\n    description: {json.dumps(said)}\n    match: {{x: 1}}\n"
            f"  - name: templated\n    description: {json.dumps(said)}\n    match: {{x: 1}}\n"
            "    alert: {description: 'got {v}'}\n"
        )
        event = {"v": value, "n": [value, 1]}
        for fired in ([rules["fixed"]], [rules["templated"], rules["fixed"]]):
            written = build(fired, event)["description"]
            parts = [f"{r.name}: " + (f"got {value}".strip() if r.alert.description else said.strip()) for r in fired]
            head = "\n".join(p for p in parts if not p.endswith(": "))
            whole = f"{head}\n\nEvent:\n{event_text(event)}" if head else f"Event:\n{event_text(event)}"
            assert lines(whole) == written, (said, value)


def test_an_ascii_event_is_not_searched_for_control_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    """JSON escapes C0 in the event's text, so ASCII JSON without DEL needs no escape: the
    description's event is not searched for what `lines` would escape (~2.5 µs a body of 500
    characters, for every alert `--format json` writes and the daemon queues)."""
    import rulesd.printable

    def searched() -> Any:
        raise AssertionError("the event's JSON was searched")

    monkeypatch.setattr(rulesd.printable, "_CONTROLS_BUT_NEWLINE", searched)
    event = {"service": "payments", "tags": ["a", "b"], "n": 1.5, "text": "tab\there \u001b"}
    payload = build([RULES["described"]], event)
    assert "described: rendered for\n\nEvent:\n" + json.dumps(event, indent=2) == payload["description"]


def test_details_drop_the_largest_values_first_but_never_triggering_rules() -> None:
    """Over 8,000 characters in all, the largest detail values go first."""
    names = [f"rule-{i:02d}-" + "n" * 80 for i in range(40)]
    text = "rules:\n" + "".join(
        f"  - name: {n}\n    match: {{x: 1}}\n    alert: {{details: {{d{i}: '{{v{i}}}'}}}}\n"
        for i, n in enumerate(names)
    )
    rules = list(rules_from_yaml(text).values())
    event = {"v0": "a" * 3000, "v1": "b" * 2000, "v2": "c" * 1000, "v3": "d" * 10}
    payload = build(rules, event, source="events.jsonl:1")
    assert json.dumps(names, separators=(",", ":")) == payload["details"]["Triggering Rules"]
    assert 3000 < len(payload["details"]["Triggering Rules"])
    kept = {k: v for k, v in payload["details"].items() if k != "Triggering Rules"}
    assert {"Event Source": "events.jsonl:1", "d1": "b" * 2000, "d2": "c" * 1000, "d3": "d" * 10} | {
        f"d{i}": "" for i in range(4, 40)
    } == kept


def test_details_within_the_limit_are_all_kept() -> None:
    """Details that fit are kept as they are."""
    payload = build([rule("alert: {details: {a: '{v}', b: small}}")], {"v": "z" * 7000})
    assert {"Triggering Rules": '["r"]', "a": "z" * 7000, "b": "small"} == payload["details"]


def test_tags_are_deduplicated_stripped_of_commas_and_limited() -> None:
    """At most 20 tags of at most 50 characters, commas removed, duplicates removed."""
    tags = ["a,b", "ab", " padded ", "{missing}", "L" * 60, "L" * 55] + [f"t{i}" for i in range(30)]
    payload = build([rule("alert: {tags: " + json.dumps(tags) + "}")])
    assert ["ab", "padded", "L" * 50] + [f"t{i}" for i in range(17)] == payload["tags"]


def test_tags_from_several_rules_keep_order() -> None:
    """The union of tags keeps first appearance order."""
    one = rules_from_yaml("name: one\nmatch: {x: 1}\nalert: {tags: [b, a]}\n")["one"]
    two = rules_from_yaml("name: two\nmatch: {x: 1}\nalert: {tags: [c, a, b]}\n")["two"]
    assert ["b", "a", "c"] == build([one, two])["tags"]


def test_responders_are_at_most_50() -> None:
    """Rule responders and recipients together are cut to 50, duplicates removed."""
    responders = [{"type": "team", "name": f"team-{i}"} for i in range(40)]
    recipients = ", ".join([f"team:team-{i}" for i in range(30)] + [f"u{i}@x.org" for i in range(30)])
    payload = build(
        [rule("alert: {responders: " + json.dumps(responders) + "}")],
        settings=AlertSettings(recipients=parse_recipients(recipients)),
    )
    assert responders + [{"type": "user", "username": f"u{i}@x.org"} for i in range(10)] == (payload["responders"])


@pytest.mark.parametrize(
    ("field", "limit", "yaml_body"),
    [
        ("entity", 512, "alert: {entity: '{v}'}"),
        ("note", 25000, "alert: {note: '{v}'}"),
    ],
)
def test_entity_and_note_limits(field: str, limit: int, yaml_body: str) -> None:
    """`entity` and `note` are cut to OpsGenie's limits."""
    payload = build([rule(yaml_body)], {"v": "e" * (limit + 100)})
    assert "e" * (limit - 1) + "…" == payload[field]


def test_source_limit() -> None:
    """The configured source is cut to 100 characters."""
    payload = build([RULES["bare"]], settings=AlertSettings(source="s" * 150))
    assert "s" * 99 + "…" == payload["source"]


def test_the_source_is_escaped_and_cut_once_for_every_body() -> None:
    """The configured source is the same for every alert and close: escaped and cut once, each
    body carries that text, and the same text is made from settings made apart."""
    settings = AlertSettings(source="edge\tproxy " + "s" * 150)
    first, again = build([RULES["bare"]], settings=settings), build([RULES["upstream"]], settings=settings)
    assert ("edge\\tproxy " + "s" * 87 + "…", True) == (first["source"], first["source"] is again["source"])
    apart = AlertSettings(source="edge\tproxy " + "s" * 150)
    assert first["source"] == build([RULES["bare"]], settings=apart)["source"]


def test_payload_is_deterministic() -> None:
    """The same firing always gives the same payload (the outbox stores it)."""
    first = build([RULES["upstream"], RULES["described"]])
    assert first == build([RULES["upstream"], RULES["described"]])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("team:ops", [("team", "name", "ops")]),
        ("user:alice", [("user", "username", "alice")]),
        ("escalation:esc", [("escalation", "name", "esc")]),
        ("schedule:nights", [("schedule", "name", "nights")]),
        ("alice@example.com", [("user", "username", "alice@example.com")]),
        ("payments-oncall", [("team", "name", "payments-oncall")]),
        (" Team : ops , , bob@example.com ", [("team", "name", "ops"), ("user", "username", "bob@example.com")]),
        ("foo:bar", [("team", "name", "foo:bar")]),
        ("", []),
        (None, []),
        (
            "team:ops, alice@example.com, schedule:night",
            [
                ("team", "name", "ops"),
                ("user", "username", "alice@example.com"),
                ("schedule", "name", "night"),
            ],
        ),
    ],
)
def test_parse_recipients(text: str | None, expected: list[tuple[str, str, str]]) -> None:
    """Comma separated entries become responders as the README's recipients rule says."""
    assert tuple(Responder(*e) for e in expected) == parse_recipients(text)


@pytest.mark.parametrize("text", ["team:", "user: ", "ops, schedule:"])
def test_parse_recipients_rejects_an_entry_without_a_name(text: str) -> None:
    """`team:` with nothing after it is an error naming the entry."""
    with pytest.raises(ValueError, match="has no name"):
        parse_recipients(text)


def test_recipients_are_valid_responders() -> None:
    """Every kind of recipient passes OpsGenie's schema as a responder."""
    recipients = parse_recipients("team:t, user:u, escalation:e, schedule:s, a@b.c, plain")
    payload = build([RULES["bare"]], settings=AlertSettings(recipients=recipients))
    assert 6 == len(payload["responders"])


def test_the_validator_rejects_what_opsgenie_would() -> None:
    """The schema helper is strict: wrong responder keys and unknown fields fail."""
    bad = [
        {},
        {"message": "m", "unknown": 1},
        {"message": "m", "responders": [{"type": "user", "name": "alice"}]},
        {"message": "m", "priority": "P0"},
        {"message": "m", "details": {"a": 1}},
        {"message": "m" * 131},
        {"message": "m", "tags": ["t" * 51]},
    ]
    assert [False] * len(bad) == [VALIDATOR.is_valid(p) for p in bad]


@pytest.mark.parametrize("kind", ["user", "team", "escalation", "schedule"])
@pytest.mark.parametrize("key", ["name", "username", "id"])
def test_the_rule_schema_accepts_exactly_the_responders_opsgenie_resolves(kind: str, key: str) -> None:
    """Each pairing of type and key: `rulesd check` accepts it if and only if OpsGenie's own
    CreateAlertPayload schema does (a user by username or id; the others by name or id), and
    the check error stands at the responder."""
    text = f"name: r\nmatch: {{x: 1}}\nalert:\n  responders:\n    - {{type: {kind}, {key}: someone}}\n"
    problems = [str(p) for p in check_text(text, "r.yaml").problems]
    opsgenie_accepts = VALIDATOR.is_valid({"message": "m", "responders": [{"type": kind, key: "someone"}]})
    assert opsgenie_accepts == (not problems), problems
    if problems:
        good = "username" if kind == "user" else "name"
        article = "an" if kind == "escalation" else "a"
        assert [
            f"r.yaml:5:7: error: alert.responders[0]: {article} {kind} responder is named by {good} or id, "
            f"not {key}: OpsGenie cannot resolve it"
        ] == problems
    else:
        rules = list(load_ruleset_text(text).rules)
        payload = build(rules)  # validated against CreateAlertPayload
        assert [{"type": kind, key: "someone"}] == payload["responders"]


@pytest.mark.parametrize(
    ("text", "end", "expected"),
    [
        ("ab\\u001bcd", 5, "ab"),  # inside `\u001b`: before it
        ("ab\\u001bcd", 8, "ab\\u001b"),  # after it: where asked
        ("ab\\ncd", 3, "ab"),
        ('{"k": "a\\"b"}', 9, '{"k": "a'),  # the event's JSON: a quote's escape
        ("a\\\\u001b", 4, "a"),  # an escaped backslash before `u001b`: neither half kept
        ("\\u001b", 3, ""),
        ("short", 50, "short"),
    ],
)
def test_a_cut_falls_before_an_escape_it_would_split(text: str, end: int, expected: str) -> None:
    """`cut` moves a cut back to before a JSON escape it falls inside (`\\u00` was left); the
    property test in test_payload_hostile checks every field of whole payloads."""
    assert expected == cut(text, end)
