"""Rule files are data: text that looks like Python in field names, values, regexes or
templates is matched literally and never executed, although conditions and the index are
compiled into generated functions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rulesd.alerting.payload import AlertSettings, build_payload, truncate
from rulesd.engine import Engine
from tests.ruletools import ruleset_from_yaml

PAYLOADS = [
    "__import__('os').system('touch {marker}')",
    "'); __import__('os').system('touch {marker}'); ('",
    "\"); __import__('os').system('touch {marker}'); (\"",
    "x\n__import__('os').system('touch {marker}')\n",
    "{{__import__('os').system('touch {marker}')}}",
    "C0) or __import__('os').system('touch {marker}') or (C0",
]


@pytest.mark.parametrize("template", PAYLOADS)
def test_code_in_rule_text_is_only_ever_data(tmp_path: Path, template: str) -> None:
    """The same text as a field name, an equality value, an any-of value, a contains needle
    (also ignoring case), a named list's item, a regex literal and a template; the marker file
    is never created, and matching is literal."""
    marker = tmp_path / "executed"
    text = template.format(marker=marker)
    field = text.replace(".", "_").replace("{", "(").replace("}", ")")  # a valid field path
    rules = [
        {"name": "as-field", "match": {field: "yes"}},
        {"name": "as-value", "match": {"kind": text}},
        {"name": "as-any-of", "match": {"kind": [text, "other"], "n": {"gte": 1}}},
        {"name": "as-needle", "match": {"message": {"contains": text}}},
        {"name": "as-regex", "match": {"message": {"regex": re.escape(text)}}},
        {"name": "as-caseless", "match": {"message": {"contains": text.upper(), "nocase": True}}},
        {"name": "as-list-item", "match": {"kind": "$listed"}},
        {
            "name": "as-template",
            "match": {"kind": text},
            "alert": {"priority": "P1", "message": text.replace("{", "{{").replace("}", "}}") + " {kind}"},
        },
    ]
    engine = Engine(ruleset_from_yaml(json.dumps({"lists": {"listed": [text, "other"]}, "rules": rules})))
    fired = engine.evaluate({field: "yes", "kind": text, "n": 2, "message": f"a {text} b"}, 0.0)
    assert fired is not None
    expected = {"as-field", "as-value", "as-any-of", "as-needle", "as-regex", "as-caseless", "as-list-item"}
    assert {*expected, "as-template"} == {r.name for r in fired.rules}
    folded = " ".join(f"{text} {text}".split())  # the message is one line
    assert truncate(folded, 130) == build_payload(fired, AlertSettings())["message"]
    assert engine.evaluate({"kind": "something else", "message": "nothing"}, 1.0) is None
    assert not marker.exists()
