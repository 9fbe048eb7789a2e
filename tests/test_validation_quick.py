"""The quick schema check (fastjsonschema) may only ever skip jsonschema for a valid file.

rulesd reports jsonschema's errors; fastjsonschema runs first and, when it finds a rule,
config or test file valid, jsonschema is not asked. So a file it accepts must be one
jsonschema accepts too: held here on the example rules, configs and rule tests, the
benchmark shapes and thousands of random mutations of them.
"""

from __future__ import annotations

import copy
import importlib
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rulesd import validation
from rulesd.document import Document
from rulesd.schema_checks import generate as generate_check
from rulesd.schema_checks import schema_digest
from rulesd.validation import (
    SCHEMA_DIR,
    _compiled_check,
    _generated_check,
    _quick_validator,
    _validator,
    load_schema,
    schema_violations,
)
from rulesd.yamldoc import read_yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import generate  # noqa: E402
import shape_kinds  # noqa: E402
import shape_ops  # noqa: E402
import shape_sigma  # noqa: E402

# What a mutation may put in place of a value: each JSON type, empty and odd values.
REPLACEMENTS: list[Any] = [
    "",
    "x",
    "$nolist",
    "5m5m",
    "^(a+)+$",
    0,
    -1,
    1.5,
    10**12,
    True,
    False,
    None,
    [],
    [""],
    [1, 1],
    {},
    {"x": 1},
    {"equals": 1},
    {"regex": "("},
]


# A config using every key of the schema, in both state backends and every source type.
FULL_CONFIG: dict[str, Any] = {
    "rules": ["/etc/rulesd/rules.d", "/etc/rulesd/extra.yaml"],
    "sources": [
        {"name": "app", "type": "file", "path": ["/var/log/app/*.jsonl"], "format": "json", "start_at": "end"},
        {
            "name": "web",
            "type": "file",
            "path": "/var/log/nginx/access.log",
            "format": "regex",
            "pattern": r"^(?P<host>\S+) (?P<status>\d+)",
            "ignore_pattern": ["^#"],
            "fields": {"status": "int"},
            "time_field": "time",
            "time_format": "%d/%b/%Y:%H:%M:%S %z",
            "max_line_bytes": 65536,
        },
        {"name": "sys", "type": "journald", "units": ["sshd.service"], "matches": {"PRIORITY": "3"}},
        {
            "name": "bus",
            "type": "redis_stream",
            "url": "redis://127.0.0.1:6379/0",
            "stream": "events",
            "group": "rulesd",
            "claim_idle": "30s",
        },
    ],
    "time_field": "ts",
    "state_dir": "/var/lib/rulesd",
    "opsgenie": {
        "api_key_file": "/etc/rulesd/key",
        "alert_url": "https://api.eu.opsgenie.com/v2/alerts",
        "recipients": "team:ops, alice@example.com",
        "source": "rulesd",
        "timeout_s": 10,
        "max_age": "24h",
        "heartbeat": "rulesd-prod",
    },
    "metrics": {"listen": "127.0.0.1:9464"},
    "limits": {"groups_per_rule": 1000, "groups": 100000},
    "state": {"backend": "redis", "url": "redis://127.0.0.1:6379/1", "instance": "a", "prefix": "rulesd:"},
    "forward": {"url": "redis://127.0.0.1:6379/0", "stream": "events", "batch_lines": 500},
}

# Keys a mutation may add, by schema: known ones with a wrong value, and unknown ones.
ADDED_KEYS = {
    "rule": ["nocase", "kind", "window", "unknown", "group_by", "throttle", "$x"],
    "config": ["source", "sources", "type", "path", "format", "api_key", "backend", "unknown", "$x"],
    "test": ["events", "expect", "rules", "advance", "name", "unknown", "$x"],
}


def corpus(schema: str) -> list[Any]:
    """Valid documents of `schema` of every shape rulesd has examples of."""
    if schema == "config":
        files = [ROOT / "examples" / "rulesd.yaml", ROOT / "packaging" / "rulesd.yaml"]
        state = {"backend": "sqlite"}
        return [*(read_yaml(str(p)).value for p in files), FULL_CONFIG, {**FULL_CONFIG, "state": state}]
    tests = schema == "test"
    files = sorted(p for p in (ROOT / "rules").glob("*.yaml") if (".test." in p.name) == tests)
    docs: list[Any] = [read_yaml(str(p)).value for p in files]
    if not tests:
        for shape in (generate, shape_ops, shape_sigma, shape_kinds):
            docs.append({"rules": shape.generate_rules(12, seed=3)})
    return docs


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside `value`."""
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out.extend(paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out.extend(paths(item, (*prefix, i)))
    return out


def mutate(doc: Any, rng: random.Random, added: list[str]) -> Any:
    """`doc` with one to three random changes: a value replaced, a key dropped or added, a
    list item duplicated."""
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        inner = paths(doc)[1:]
        if not inner:  # nothing left to change
            break
        path = rng.choice(inner)
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        action = rng.random()
        if action < 0.55:
            parent[last] = copy.deepcopy(rng.choice(REPLACEMENTS))
        elif action < 0.75 and isinstance(parent, dict):
            del parent[last]
        elif action < 0.9 and isinstance(parent, dict):
            key = rng.choice(added)
            parent[key] = copy.deepcopy(rng.choice(REPLACEMENTS))
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
    return doc


SCHEMAS = ("rule", "config", "test")


@pytest.mark.parametrize("schema", SCHEMAS)
def test_the_examples_are_valid_for_both(schema: str) -> None:
    quick = _quick_validator(schema)
    docs = corpus(schema)
    assert len(docs) >= 4
    for doc in docs:
        assert quick(doc)
        assert not list(_validator(schema).iter_errors(doc))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("schema", SCHEMAS)
def test_a_mutated_file_the_quick_check_accepts_jsonschema_accepts(schema: str, seed: int) -> None:
    rng = random.Random(seed)
    quick = _quick_validator(schema)
    accepted = refused = 0
    docs = corpus(schema)
    for base in docs:
        for _ in range(1200 // len(docs)):
            doc = mutate(base, rng, ADDED_KEYS[schema])
            errors = list(_validator(schema).iter_errors(doc))
            if quick(doc):
                accepted += 1
                assert not errors, (json.dumps(doc)[:2000], [e.message for e in errors])
            else:
                refused += 1
    assert accepted > 100 and refused > 100  # both sides of the question were asked


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("schema", SCHEMAS)
def test_the_quick_check_answers_as_fastjsonschema_does_on_the_schema_as_written(schema: str, seed: int) -> None:
    """The quick check is compiled without exception details and with `const` written as an
    `enum` of one value: its answers are those of the schema compiled as written."""
    import fastjsonschema

    written = fastjsonschema.compile(load_schema(schema))
    quick = _quick_validator(schema)
    rng = random.Random(seed)
    answers = set()
    docs = corpus(schema)
    for base in docs:
        for doc in [base, *(mutate(base, rng, ADDED_KEYS[schema]) for _ in range(600 // len(docs)))]:
            try:
                written(copy.deepcopy(doc))
                expected = True
            except fastjsonschema.JsonSchemaException:
                expected = False
            assert expected == quick(doc), json.dumps(doc)[:2000]
            answers.add(expected)
    assert {True, False} == answers


def test_a_const_is_still_checked_by_the_quick_check() -> None:
    rule = {"name": "a", "match": {"x": 1}, "alert": {"responders": [{"type": "team", "name": "t"}]}}
    quick = _quick_validator("rule")
    assert quick({"rules": [rule]})
    assert not quick({"rules": [{**rule, "alert": {"responders": [{"type": "user", "name": "t"}]}}]})


def test_errors_are_still_jsonschemas_with_their_place(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("rules:\n  - name: a\n    match: {level: error}\n    throttle: -5\n")
    [(where, problem)] = schema_violations(read_yaml(str(path)), "rule")
    assert ("rules", 0, "throttle") == where
    assert (4, 15) == (problem.location.line, problem.location.col)
    assert "less than the minimum" in problem.message


@pytest.mark.parametrize("schema", SCHEMAS)
def test_no_schema_has_a_ref_beside_validating_keywords(schema: str) -> None:
    """fastjsonschema reads the schema as draft-07, where a `$ref` hides its sibling keywords;
    in 2020-12 (jsonschema) they apply. The two agree as long as no `$ref` has any."""
    annotations = {"$ref", "description", "title", "errorMessage", "markdownDescription", "examples", "default"}

    def walk(node: Any, where: str) -> list[str]:
        found = []
        if isinstance(node, dict):
            if "$ref" in node and set(node) - annotations:
                found.append(where)
            for key, value in node.items():
                found.extend(walk(value, f"{where}/{key}"))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                found.extend(walk(value, f"{where}/{i}"))
        return found

    assert [] == walk(load_schema(schema), "#")


def test_a_value_it_cannot_judge_goes_to_jsonschema() -> None:
    doc = Document("x.yaml", {"rules": [{"name": "a", "match": {"level": object()}}]})
    assert not _quick_validator("rule")(doc.value)


def test_a_valid_config_is_read_without_importing_jsonschema(tmp_path: Path) -> None:
    """jsonschema is a third of `rulesd run`'s start-up: a valid config does not need it; nor
    fastjsonschema, whose check of the config was generated into the package."""
    config = tmp_path / "rulesd.yaml"
    config.write_text((ROOT / "examples" / "rulesd.yaml").read_text())
    code = (
        "import sys; from rulesd.config import load_config; "
        f"load_config({str(config)!r}); print(sorted(m for m in ('jsonschema', 'fastjsonschema') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "[]" == out.stdout.strip()


@pytest.mark.parametrize("schema", SCHEMAS)
def test_the_generated_checks_are_those_of_the_schemas_as_they_are(schema: str) -> None:
    """Each quick check generated into the package names the schema it was made from; after a
    schema changes, `python -m rulesd.schema_checks` writes them again. With the fastjsonschema
    that wrote it, it is exactly what that command would write now; with another, the tests
    above hold its answers (it is what `_quick_validator` uses)."""
    import fastjsonschema

    module = importlib.import_module(f"rulesd.schema_checks.{schema}")
    text = Path(SCHEMA_DIR, f"{schema}.schema.json").read_bytes()
    assert schema_digest(text) == module.SCHEMA_SHA256, "run `python -m rulesd.schema_checks`"
    assert _generated_check(schema) is module.validate
    if module.VERSION == fastjsonschema.VERSION:
        assert generate_check(schema) == Path(module.__file__).read_text(encoding="utf-8")


@pytest.mark.parametrize("schema", SCHEMAS)
def test_the_check_compiled_at_run_time_answers_as_the_generated_one(schema: str) -> None:
    """What a changed schema falls back to (generated and compiled at run time) is the same
    code as the generated module: the same answers on the examples and their mutations."""
    generated, compiled = _generated_check(schema), _compiled_check(schema)
    assert generated is not None and compiled is not generated
    rng = random.Random(7)

    def answer(check: Any, doc: Any) -> bool:
        try:
            check(copy.deepcopy(doc))
        except Exception:
            return False
        return True

    answers = set()
    for base in corpus(schema):
        for doc in [base, *(mutate(base, rng, ADDED_KEYS[schema]) for _ in range(50))]:
            assert answer(generated, doc) == answer(compiled, doc), json.dumps(doc)[:2000]
            answers.add(answer(generated, doc))
    assert {True, False} == answers


def test_a_check_generated_from_another_schema_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """A schema edited without generating its check again: the check is compiled at run time."""
    assert _generated_check("config") is not None
    monkeypatch.setattr(validation, "_schema_text", lambda name: b'{"type": "object", "required": ["x"]}')
    assert _generated_check("config") is None
