"""JSON Schema validation of YAML documents, with errors placed at `path:line:col`."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from rulesd.document import Document, JsonPath
from rulesd.errors import Problem, SourceLocation

if TYPE_CHECKING:  # jsonschema is imported when a document is validated: a rule file read
    # back from the rule cache needs none of it, and start-up is shorter without it.
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

# Paths as text here and in the modules a warm start imports: `pathlib` (with `urllib.parse`,
# `ntpath`, `fnmatch`) is ~2.5 ms of an installed rulesd's start, and only a write needs it.
SCHEMA_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "schemas")
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
    with open(os.path.join(SCHEMA_DIR, f"{name}.schema.json"), "rb") as file:
        return file.read()


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
    """Every schema violation in `doc`, each located at the offending key or value (but those
    that only repeat a value the reader could not read, see `unread_dropped`)."""
    return sorted({problem for _, problem in unread_dropped(doc, schema_violations(doc, schema))})


def unread_dropped(doc: Document, violations: list[tuple[JsonPath, Problem]]) -> list[tuple[JsonPath, Problem]]:
    """`violations` of `doc` without those at a value the reader could not read (`!!int x`, read
    as null, whose own problem in `doc.problems` says why): "expected an integer, got null"
    would only repeat it."""
    unread = unread_paths(doc)
    return [(path, p) for path, p in violations if path not in unread] if unread else violations


def unread_paths(doc: Document) -> set[JsonPath]:
    """The paths of the values of `doc` that the reader could not read (read as null): those
    at the place of one of its problems."""
    if not doc.problems:
        return set()
    from rulesd.key_places import value_at

    unread = {(problem.location.line, problem.location.col) for problem in doc.problems}
    return {path for path, mark in doc.marks()[0].items() if mark in unread and value_at(doc.value, path) is None}


def schema_violations(doc: Document, schema: str) -> list[tuple[JsonPath, Problem]]:
    """Like validate_document, with the JSON path of each violation."""
    if _quick_validator(schema)(doc.value):
        return []
    errors = [_most_relevant(error) for error in _validator(schema).iter_errors(doc.value)]
    # A key under the wrong parent first: where it was meant, the parent's own errors (a key it
    # misses, an empty value) only repeat that mistake.
    moved: _Moved = {}
    found: list[tuple[JsonPath, Problem]] = []
    for error in errors:
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            path: JsonPath = tuple(error.absolute_path)
            schema_here = error.schema if isinstance(error.schema, dict) else {}
            found.extend((path, p) for p in _unknown_keys(doc, schema, path, error.instance, schema_here, moved))
    said = {problem.location: problem for _, problem in found}
    for error in errors:
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties":
            continue
        move = _move_repeated(error, path, moved)
        if move is not None:  # (its path is still a fault, said by the misplaced key's problem)
            found.append((path, said[move]))
            continue
        found.extend((path, p) for p in _problems(doc, error, quote=schema != "config"))
    return found


# The mappings a misplaced key was meant in (with the key, or None: the mapping it left empty),
# with the location of that key.
_Moved = dict[tuple[JsonPath, str | None], SourceLocation]


def _move_repeated(error: ValidationError, path: JsonPath, moved: _Moved) -> SourceLocation | None:
    """Where the misplaced key is whose mistake `error` repeats (the key the parent meant to
    have it misses, or the parent left empty by it), if it repeats one."""
    if error.validator == "required" and "'" in error.message:
        return moved.get((path, error.message.split("'")[1]))
    return moved.get((path, None)) if error.validator == "type" and error.instance is None else None


def _most_relevant(error: ValidationError) -> ValidationError:
    # Never print "is not valid under any of the given schemas": descend to the best sub-error.
    while error.context:
        from jsonschema.exceptions import best_match

        best = best_match(error.context)
        if best is None:
            break
        error = best
    return error


def _problems(doc: Document, error: ValidationError, *, quote: bool) -> Iterator[Problem]:
    """The problem `error` is at its place; with `quote`, a number where a text is taken (in a
    rule: a tag, a name) says to quote it (not in the config, whose `listen: 9464` means more)."""
    path: JsonPath = tuple(error.absolute_path)
    where = format_path(path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if "propertyNames" in error.absolute_schema_path and isinstance(error.instance, str):
        # jsonschema reports a bad key at its parent mapping; point at the key itself.
        key_path = (*path, error.instance)
        message = f"{format_path(key_path)}: invalid key: {schema.get('errorMessage', error.message)}"
        yield Problem(doc.locate(key_path, key=True), message)
        return
    if schema.get("writeOnly") is True:  # a secret (the inline API key): never echo its value
        yield Problem(doc.locate(path), f"{where}: {_secret_message(error)}")
        return
    message = _message(error, schema)
    kinds = _items(error.validator_value) if error.validator == "type" else []
    number = isinstance(error.instance, int | float) and not isinstance(error.instance, bool)
    if quote and number and "string" in kinds and not {"integer", "number"} & set(kinds):
        # (a number where a text is taken: `tags: [2024]`, `name: 404`; as written, if YAML read it otherwise)
        written = doc.boolean_words.get(path, str(error.instance))
        message += f': quote it ("{written}") for the text'
    elif {"integer", "number"} & set(kinds) and isinstance(error.instance, str) and exponent(error.instance):
        message += exponent_advice(error.instance, whole="number" not in kinds)
    elif "number" in kinds and path and str(path[-1]).endswith("_s") and isinstance(error.instance, str):
        message += _seconds_advice(str(path[-1]), error.instance)
    yield Problem(doc.locate(path), f"{where}: {message}")


# A number with an exponent as JSON writes one (1e3, 1.5e3, 2E-5), which YAML 1.1 reads as text
# unless it has a point and a signed exponent (1.0e+3), where JSON and YAML 1.2 read a number.
EXPONENT_NUMBER = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?[eE][-+]?[0-9]+"


def exponent(text: str) -> bool:
    """Whether `text` is a number with an exponent as JSON writes one (`1e3`, `1.5E-3`) that is
    finite: YAML 1.1 reads it unquoted as text unless it has a point and a signed exponent."""
    import re  # (only for a value the schema faulted)

    if re.fullmatch(EXPONENT_NUMBER, text) is None:
        return False
    if "." in text and re.search("[eE][-+]", text):  # (YAML's own form: a text only if quoted)
        return False
    return float(text) not in (float("inf"), float("-inf"))


def exponent_advice(text: str, *, whole: bool) -> str:
    """What to write for the number `text` (see `exponent`), which YAML read as text: the
    integer it is, or the float as YAML 1.1 reads one (`1e-7` -> `1.0e-07`)."""
    value = float(text)
    said = f": YAML reads {text} as text (a number with an exponent needs a point and a signed exponent, 1.0e+3)"
    if value.is_integer() and (whole or abs(value) < 1e16):
        return f"{said}: write {int(value)}"
    if whole:
        return f"{said}, and the number {value!r} is no integer"
    mantissa, e, exponent = repr(value).partition("e")  # (repr signs its exponent: 1e-07, 1.5e+20)
    if e and "." not in mantissa:
        mantissa += ".0"
    return f"{said}: write {mantissa}{e}{exponent}"


def _seconds_advice(key: str, written: str) -> str:
    """What to write for a setting counted in seconds (`timeout_s`) given a duration (`10s`)."""
    from rulesd.durations import parse_duration

    try:
        seconds = parse_duration(written)
    except ValueError:
        return f": {key} is a number of seconds ({key}: 10)"
    return f": {key} is a number of seconds, with no unit: write {key}: {seconds:g}"


def _secret_message(error: ValidationError) -> str:
    """What is wrong with a secret's value, without the value."""
    if error.validator == "type":
        return f"expected {_type_names(error.validator_value)} (the value is not shown: it is a secret)"
    return f"invalid value ({error.validator}; the value is not shown: it is a secret)"


def _unknown_keys(
    doc: Document,
    schema_name: str,
    path: JsonPath,
    instance: dict[str, Any],
    schema: dict[str, Any],
    moved: _Moved,
) -> Iterator[Problem]:
    """A problem at each key of `instance` that `schema` does not take: where it belongs when
    it is taken elsewhere (recorded in `moved`), else a did-you-mean."""
    import difflib  # (only for this message)

    known = sorted(schema.get("properties", {}))
    keys = list(instance)
    for i, key in enumerate(keys):
        if key in known:
            continue
        where = format_path((*path, key))
        # (a key a letter away from one taken here is a typo: `event` for `events`; a mapping
        # whose unknown keys are likely meant one level down says so itself)
        meant = (
            None
            if difflib.get_close_matches(key, known, n=1, cutoff=0.8) or "unknownKeyMessage" in schema
            else _meant(doc, schema_name, path, keys[:i], key, schema, moved)
        )
        if meant:
            yield Problem(doc.locate((*path, key), key=True), f"{where}: {meant}")
            continue
        hint = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        advice = (
            f"did you mean '{hint[0]}'?"
            if hint
            else schema.get("unknownKeyMessage", f"expected one of: {', '.join(known)}")
        )
        yield Problem(doc.locate((*path, key), key=True), f"{where}: unknown key '{key}'; {advice}")


def _meant(
    doc: Document,
    schema_name: str,
    path: JsonPath,
    before: list[str],
    key: str,
    schema: dict[str, Any],
    moved: _Moved,
) -> str | None:
    """Where the unknown `key` at `path` was meant to be, if that can be told: under the key
    written just before it when that one was left empty (the lines meant under it indented too
    little), else in the nearest mapping (or place) the schema takes it in."""
    from rulesd.key_places import meant_places, value_at

    here = place_name(schema_name, doc, path)
    if before and value_at(doc.value, (*path, before[-1])) is None and _takes(schema_name, schema, before[-1], key):
        parent = (*path, before[-1])
        moved[(parent, None)] = doc.locate((*path, key), key=True)
        line = doc.locate(parent, key=True).line
        return (
            f"'{key}' is not a key {here}: it belongs under '{before[-1]}' (line {line}), which is empty: indent "
            "this line (and those after it) under that"
        )
    written, elsewhere = meant_places(schema_name, key, path, doc.value)
    if written:
        moved.update(dict.fromkeys(((p, key) for p in written), doc.locate((*path, key), key=True)))
        places = either([place_name(schema_name, doc, p, line=True) for p in written])
    elif elsewhere:  # (the place it belongs is not written: say what is taken here too)
        taken = ", ".join(sorted(schema.get("properties", {})))
        return f"'{key}' belongs {either([pattern_name(schema_name, p) for p in elsewhere])}, not {here} " + (
            f"(expected one of: {taken})" if taken else ""
        )
    else:
        return None
    return f"'{key}' belongs {places}, not {here}"


def either(names: list[str]) -> str:
    """`under 'a'`, `under 'b'` -> `under 'a' or 'b'`."""
    if len(names) > 1 and all(n.startswith("under ") for n in names):
        names = [names[0], *(n.removeprefix("under ") for n in names[1:])]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def place_name(schema_name: str, doc: Document, path: JsonPath, *, line: bool = False) -> str:
    """The mapping at `path` in words: `under 'threshold'` (with `line`, its line), `in
    tests[0]`, or for a rule, `at the rule's top level`."""
    from rulesd.key_places import value_at

    a_rule = (path == () and not isinstance(value_at(doc.value, ("rules",)), list)) or path[:1] == ("rules",)
    if schema_name == "rule" and len(path) <= 2 and a_rule:
        return "at the rule's top level"
    if not path:
        return "at the file's top level"
    if isinstance(path[-1], int):
        return f"in {format_path(path)}"
    return f"under '{path[-1]}'" + (f" (line {doc.locate(path, key=True).line})" if line else "")


def pattern_name(schema_name: str, place: tuple[str, ...]) -> str:
    """A place of the schema in words: `under 'sequence.steps[].absent'`."""
    if schema_name == "rule" and place[:2] == ("rules", "[]"):
        place = place[2:]
    if not place:
        return "at the rule's top level" if schema_name == "rule" else "at the file's top level"
    return "under '" + ".".join(place).replace(".[]", "[]") + "'"


def _takes(schema_name: str, schema: dict[str, Any], parent: str, key: str) -> bool:
    """Whether the value of `parent` in a mapping of `schema` is a mapping that takes `key`."""
    sub = _resolved(schema_name, schema.get("properties", {}).get(parent))
    if not isinstance(sub, dict) or "object" not in _items(sub.get("type", "object")):
        return False
    return key in sub.get("properties", {}) or sub.get("additionalProperties", True) is not False


def _resolved(schema_name: str, node: Any) -> Any:
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        node = load_schema(schema_name)["$defs"][node["$ref"].removeprefix("#/$defs/")]
    return node


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
