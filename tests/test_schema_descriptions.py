"""The bundled schemas describe every key, so that an editor's hover explains it."""

from __future__ import annotations

from typing import Any

import pytest

from rulesd.validation import load_schema


def undescribed(schema: dict[str, Any]) -> list[str]:
    """The JSON pointer of every property without a non-empty `description` (an `if` only
    tests a value and defines no keys, so it is not walked)."""
    missing: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for name, prop in (node.get("properties") or {}).items():
                text = prop.get("description") if isinstance(prop, dict) else None
                if not (isinstance(text, str) and text.strip()):
                    missing.append(f"{where}/properties/{name}")
            for key, child in node.items():
                if key != "if":
                    walk(child, f"{where}/{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{where}/{i}")

    walk(schema, "#")
    return missing


@pytest.mark.parametrize("kind", ["rule", "config", "test"])
def test_every_key_of_the_bundled_schemas_has_a_description(kind: str) -> None:
    """No property of the rule, config or test schema goes without a description."""
    assert [] == undescribed(load_schema(kind))


def test_the_walk_finds_a_key_without_a_description() -> None:
    """The check itself: a nested key without a description is named."""
    schema = {"properties": {"a": {"description": "x", "properties": {"b": {"type": "string"}}}}}
    assert ["#/properties/a/properties/b"] == undescribed(schema)
