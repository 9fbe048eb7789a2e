"""JSON Schema validation of YAML documents, with errors placed at `path:line:col`."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rulesd.document import Document, JsonPath
from rulesd.errors import Problem

if TYPE_CHECKING:  # jsonschema is imported when a document is validated: a rule file read
    # back from the rule cache needs none of it, and start-up is shorter without it.
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


@cache
def _schema_text(name: str) -> bytes:
    # Read beside this module (the package is installed as files, as the rule cache's code
    # fingerprint assumes too); importlib.resources would cost ~5 ms of every start to import.
    return (SCHEMA_DIR / f"{name}.schema.json").read_bytes()


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The bundled JSON Schema `name` (`rule`, `config`, `test`)."""
    schema: dict[str, Any] = json.loads(_schema_text(name))
    return schema


@cache
def _validator(name: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema(name))


# Every document is first checked by fastjsonschema, which compiles a schema into Python code
# and takes a tenth of jsonschema's time on a large rule file (most of a cold start); for a
# valid config or test file, jsonschema is then never imported (a third of `rulesd run`'s
# start-up). It only ever says "valid": any doubt goes to jsonschema, whose errors are the
# ones reported. It reads a schema as draft-07, which differs from 2020-12 for ours only where
# `$ref` has validating siblings (draft-07 ignores them): tests/test_validation_quick.py holds
# every schema to having none. The Python it writes for each bundled schema is generated once
# into the package (`rulesd.schema_checks`), not at every start.


@cache
def _quick_validator(name: str) -> Callable[[object], bool]:
    """`valid(value)`: True when fastjsonschema finds `value` valid under schema `name`."""
    check = _generated_check(name) or _compiled_check(name)

    def valid(value: object) -> bool:
        try:
            check(value)
        except Exception:  # a violation, or a value it cannot judge: jsonschema decides
            return False
        return True

    return valid


def _generated_check(name: str) -> Callable[[object], object] | None:
    """The check generated into the package for schema `name` (`rulesd.schema_checks`), if it
    was generated from the schema as it is now."""
    from rulesd.schema_checks import schema_digest

    try:
        module = importlib.import_module(f"rulesd.schema_checks.{name}")
    except ImportError:
        return None
    if getattr(module, "SCHEMA_SHA256", None) != schema_digest(_schema_text(name)):
        return None
    check: Callable[[object], object] = module.validate
    return check


def _compiled_check(name: str) -> Callable[[object], object]:
    """The quick check of schema `name`, generated now as `python -m rulesd.schema_checks`
    would write it, and compiled."""
    from rulesd.schema_checks import generate

    namespace: dict[str, Any] = {}
    exec(compile(generate(name), f"<quick check of the {name} schema>", "exec"), namespace)
    check: Callable[[object], object] = namespace["validate"]
    return check


# The keywords of a schema whose values are schemas: by name, in a list, or one.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SCHEMAS = frozenset(
    {"not", "if", "then", "else", "items", "additionalItems", "contains", "additionalProperties", "propertyNames"}
    | {"unevaluatedItems", "unevaluatedProperties"}
)


def quick_schema(schema: Any) -> Any:
    """`schema` as fastjsonschema is given it: every `const: X` written `allOf: [{enum: [X]}]`
    (the same constraint). fastjsonschema cannot write a `const` check without exception
    details, which the quick check leaves out (tests/test_validation_quick.py holds its answers
    to those of the schema as written)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: quick_schema(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [quick_schema(sub) for sub in value]
        elif key in _SCHEMAS:
            out[key] = [quick_schema(sub) for sub in value] if isinstance(value, list) else quick_schema(value)
        elif key != "const":
            out[key] = value
    if "const" in schema:
        out["allOf"] = [*out.get("allOf", []), {"enum": [schema["const"]]}]
    return out


def format_path(path: Sequence[str | int]) -> str:
    """`('rules', 2, 'match', 'http.status')` -> `rules[2].match["http.status"]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or "(top level)"


def validate_document(doc: Document, schema: str) -> list[Problem]:
    """Every schema violation in `doc`, each located at the offending key or value."""
    return sorted({problem for _, problem in schema_violations(doc, schema)})


def schema_violations(doc: Document, schema: str) -> list[tuple[JsonPath, Problem]]:
    """Like validate_document, with the JSON path of each violation."""
    if _quick_validator(schema)(doc.value):
        return []
    found: list[tuple[JsonPath, Problem]] = []
    for error in _validator(schema).iter_errors(doc.value):
        best = _most_relevant(error)
        found.extend((tuple(best.absolute_path), p) for p in _problems(doc, best))
    return found


def _most_relevant(error: ValidationError) -> ValidationError:
    # Never print "is not valid under any of the given schemas": descend to the best sub-error.
    while error.context:
        from jsonschema.exceptions import best_match

        best = best_match(error.context)
        if best is None:
            break
        error = best
    return error


def _problems(doc: Document, error: ValidationError) -> Iterator[Problem]:
    path: JsonPath = tuple(error.absolute_path)
    where = format_path(path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        yield from _unknown_keys(doc, path, error.instance, schema)
        return
    if "propertyNames" in error.absolute_schema_path and isinstance(error.instance, str):
        # jsonschema reports a bad key at its parent mapping; point at the key itself.
        key_path = (*path, error.instance)
        message = f"{format_path(key_path)}: invalid key: {schema.get('errorMessage', error.message)}"
        yield Problem(doc.locate(key_path, key=True), message)
        return
    if schema.get("writeOnly") is True:  # a secret (the inline API key): never echo its value
        yield Problem(doc.locate(path), f"{where}: {_secret_message(error)}")
        return
    yield Problem(doc.locate(path), f"{where}: {_message(error, schema)}")


def _secret_message(error: ValidationError) -> str:
    """What is wrong with a secret's value, without the value."""
    if error.validator == "type":
        return f"expected {_type_names(error.validator_value)} (the value is not shown: it is a secret)"
    return f"invalid value ({error.validator}; the value is not shown: it is a secret)"


def _unknown_keys(doc: Document, path: JsonPath, instance: dict[str, Any], schema: dict[str, Any]) -> Iterator[Problem]:
    import difflib  # (only for this message)

    known = sorted(schema.get("properties", {}))
    for key in instance:
        if key in known:
            continue
        hint = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        advice = f"did you mean '{hint[0]}'?" if hint else f"expected one of: {', '.join(known)}"
        message = f"{format_path((*path, key))}: unknown key '{key}'; {advice}"
        yield Problem(doc.locate((*path, key), key=True), message)


def _message(error: ValidationError, schema: dict[str, Any]) -> str:
    custom = schema.get("errorMessage")
    value = _show(error.instance)
    wanted: Any = error.validator_value
    match error.validator:
        case "type":
            kinds = _items(wanted)
            if isinstance(error.instance, bool) and "string" in kinds and "boolean" not in kinds:
                return f"expected {_type_names(wanted)}, got {value} ({_UNQUOTED_BOOLEANS})"
            return f"expected {_type_names(wanted)}, got {value}"
        case "required":
            missing = error.message.split("'")[1] if "'" in error.message else error.message
            return f"missing required key '{missing}'"
        case "enum":
            options = ", ".join(str(o) for o in wanted)
            return f"{value} is not one of: {options}"
        case "pattern" | "minProperties" | "maxProperties" | "not" if custom:
            return f"{value}: {custom}" if error.validator == "pattern" else str(custom)
        case "minimum":
            return f"{value} is less than the minimum of {error.validator_value}"
        case "minItems" if isinstance(error.instance, list) and error.instance:  # (a sequence's one step)
            return f"must have at least {wanted} items (it has {len(error.instance)})"
        case "minItems":
            return "must not be empty"
        case "minProperties":
            return "must not be empty"
        case "uniqueItems":
            return "has duplicate entries"
    return error.message


# YAML 1.1, which PyYAML reads, makes booleans of these words unquoted (`name: off`).
_UNQUOTED_BOOLEANS = "YAML reads an unquoted yes, no, on or off as true or false: quote it for the text"


def _items(value: object) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _type_names(wanted: object) -> str:
    """`["string", "number", "boolean"]` -> `a string, a number or a boolean`."""
    kinds = [str(k) for k in _items(wanted)]
    if len(kinds) == 1:
        return _TYPE_NAMES.get(kinds[0], kinds[0])
    names = ["a boolean" if k == "boolean" else _TYPE_NAMES.get(k, k) for k in kinds]
    return ", ".join(names[:-1]) + " or " + names[-1]


def _show(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
