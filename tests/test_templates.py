"""Templates: `{field.path}` and literal braces, nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from rulesd.rules import templates
from rulesd.rules.fields import make_getter
from rulesd.rules.templates import TemplateError, parse_template

EVENT: dict[str, Any] = {
    "host": "web-1",
    "http": {"status": 502, "ok": False},
    "ratio": 0.25,
    "flag": True,
    "nothing": None,
    "tags": ["a", "b"],
    "items": [{"name": "first"}],
    "obj": {"k": "v", "n": 1},
    "text": "é ünïcode",
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("plain text", "plain text"),
        ("", ""),
        ("{host}", "web-1"),
        ("on {host}!", "on web-1!"),
        ("{http.status}", "502"),
        ("{http.ok}", "false"),
        ("{ratio}", "0.25"),
        ("{flag}", "true"),
        ("{nothing}", ""),
        ("{tags}", '["a","b"]'),
        ("{obj}", '{"k":"v","n":1}'),
        ("{items.0.name}", "first"),
        ("{text}", "é ünïcode"),
        ("[{missing}]", "[]"),
        ("[{http.missing.deeper}]", "[]"),
        ("{host}{host}", "web-1web-1"),
        ("{{host}}", "{host}"),
        ("{{{host}}}", "{web-1}"),
        ("a {{ b }} c", "a { b } c"),
        ("{{}}", "{}"),
        ("100%", "100%"),
        ("$host ${host}", "$host $web-1"),
    ],
)
def test_render(source: str, expected: str) -> None:
    """Fields are replaced by event values (JSON for non-strings); `{{`/`}}` are braces."""
    assert expected == parse_template(source).render(EVENT)


def test_rendering_does_not_evaluate_the_value() -> None:
    """A value that looks like a template is written as it is."""
    assert "{host} {{x}}" == parse_template("{v}").render({"v": "{host} {{x}}", "host": "h"})


def test_a_top_level_field_is_read_by_its_key_and_a_deeper_one_by_its_getter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every alert's message is rendered: a top-level field (most templates) is read with the
    event's `get`, no getter called; a dotted path through its getter, as a condition reads it."""
    walked: list[str] = []

    def counted(path: str) -> Any:
        get = make_getter(path)
        return lambda event: walked.append(path) or get(event)

    monkeypatch.setattr(templates, "make_getter", counted)
    template = parse_template("{host} answered {http.status}{missing} (read by key)")  # a text no other test parses
    assert "web-1 answered 502 (read by key)" == template.render(EVENT)
    assert ["http.status"] == walked


def test_fields_lists_the_paths() -> None:
    """`fields` names every field path the template refers to."""
    assert ("host", "http.status") == parse_template("{host}: {{x}} {http.status}").fields


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{a", "unclosed '{' at position 1 (write '{{' for a brace)"),
        ("x {a.b", "unclosed '{' at position 3 (write '{{' for a brace)"),
        ("}", "unmatched '}' at position 1 (write '}}' for a brace)"),
        ("a } b", "unmatched '}' at position 3 (write '}}' for a brace)"),
        ("{a!r}", "'{a!r}' at position 1 is not a field path"),
        ("{a:>5}", "'{a:>5}' at position 1 is not a field path"),
        ("{a[0]}", "'{a[0]}' at position 1 is not a field path"),
        ("{}", "'{}' at position 1 is not a field path"),
        ("x{ a }", "'{ a }' at position 2 is not a field path"),
        ("{a..b}", "'{a..b}' at position 1 is not a field path"),
        ("{.a}", "'{.a}' at position 1 is not a field path"),
        ("{a.}", "'{a.}' at position 1 is not a field path"),
        ("{a.__class__()}", "'{a.__class__()}' at position 1 is not a field path"),
        ("{{a}", "unmatched '}' at position 4 (write '}}' for a brace)"),
    ],
)
def test_malformed_templates_are_rejected(source: str, message: str) -> None:
    """Anything but `{field.path}` and doubled braces is an error naming the position."""
    with pytest.raises(TemplateError) as caught:
        parse_template(source)
    assert str(caught.value).startswith(message)


def test_a_text_is_parsed_once_and_a_malformed_one_refused_every_time() -> None:
    """Rules repeat their templates: they share the one parsed (a Template is immutable)."""
    assert parse_template("{service}: {message}") is parse_template("{service}: {message}")
    for _ in range(2):
        with pytest.raises(TemplateError, match="position 3"):
            parse_template("ab}")
