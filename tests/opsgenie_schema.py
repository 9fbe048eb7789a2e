"""OpsGenie's own schema of the create-alert request, to validate the payloads rulesd builds.

The definitions are OpsGenie's Swagger 2.0 files (tests/data/opsgenie-oas, copied unmodified
from github.com/opsgenie/opsgenie-oas). Swagger schemas are JSON Schema plus a few extra
keywords, and their `#/definitions/X` references cross between alert.yaml and common.yaml, so
both files are merged into one `definitions` mapping. Where Swagger is loose we are strict:

- a payload may hold only the properties the API defines (`unevaluatedProperties: false`,
  which sees through the `allOf` of CreateAlertPayload);
- each responder is checked against the definition its `type` selects (Swagger's
  `discriminator` / `x-discriminator-value`), with no other keys: a user takes `username`,
  a team `name`;
- with `limits=True` (the default) the field limits of OpsGenie's Alert API documentation
  are enforced too, except the 8,000-character total of `details`, which JSON Schema cannot
  express (see `details_size`).
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

OAS_DIR = Path(__file__).parent / "data" / "opsgenie-oas" / "definitions"
RECIPIENT = "#/definitions/Recipient"
DISCRIMINATED = "#/definitions/DiscriminatedRecipient"

# https://docs.opsgenie.com/docs/alert-api#create-alert
LIMITS: dict[str, dict[str, Any]] = {
    "message": {"maxLength": 130},
    "alias": {"maxLength": 512},
    "description": {"maxLength": 15000},
    "responders": {"maxItems": 50},
    "visibleTo": {"maxItems": 50},
    "actions": {"maxItems": 10, "items": {"maxLength": 50}},
    "tags": {"maxItems": 20, "items": {"maxLength": 50}},
    "entity": {"maxLength": 512},
    "source": {"maxLength": 100},
    "user": {"maxLength": 100},
    "note": {"maxLength": 25000},
}
DETAILS_MAX = 8000


@cache
def definitions() -> dict[str, Any]:
    """Every definition of alert.yaml and common.yaml, in one mapping."""
    merged: dict[str, Any] = {}
    for name in ("common.yaml", "alert.yaml"):
        merged.update(yaml.safe_load((OAS_DIR / name).read_text(encoding="utf-8")))
    return merged


def _discriminated_recipient(defs: dict[str, Any]) -> dict[str, Any]:
    subtypes = {
        d["x-discriminator-value"]: name
        for name, d in defs.items()
        if isinstance(d, dict) and "x-discriminator-value" in d and {"$ref": RECIPIENT} in d.get("allOf", [])
    }
    return {
        "$ref": RECIPIENT,
        "allOf": [
            {
                "if": {"properties": {"type": {"const": value}}, "required": ["type"]},
                "then": {"$ref": f"#/definitions/{name}"},
            }
            for value, name in sorted(subtypes.items())
        ],
        "unevaluatedProperties": False,
    }


def _swap_recipient_refs(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("$ref") == RECIPIENT:
            return {**node, "$ref": DISCRIMINATED}
        return {k: _swap_recipient_refs(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_swap_recipient_refs(v) for v in node]
    return node


def create_alert_schema(*, limits: bool = True) -> dict[str, Any]:
    """A draft 2020-12 schema of OpsGenie's `CreateAlertPayload`, strict as described above."""
    defs = copy.deepcopy(definitions())
    defs["DiscriminatedRecipient"] = _discriminated_recipient(defs)
    defs["CreateAlertPayload"] = _swap_recipient_refs(defs["CreateAlertPayload"])
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": "#/definitions/CreateAlertPayload",
        "unevaluatedProperties": False,
        "definitions": defs,
    }
    if limits:
        schema["properties"] = LIMITS
    return schema


def create_alert_validator(*, limits: bool = True) -> Draft202012Validator:
    """A validator of create-alert request bodies: `.validate(payload)` raises on a bad one."""
    schema = create_alert_schema(limits=limits)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def details_size(payload: dict[str, Any]) -> int:
    """Characters in `details` keys and values, which OpsGenie caps at DETAILS_MAX."""
    return sum(len(k) + len(v) for k, v in payload.get("details", {}).items())
