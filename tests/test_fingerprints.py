"""Rule fingerprints keep their values: state kept across restarts and reloads (throttles,
groups, a sequence's steps, a new_value rule's learnt values) is matched to rules by them, so
a fingerprint that changed would lose it. Each is the first 16 hex digits of the SHA-256 of
the rule's JSON, keys sorted, non-ASCII as written, with the named lists it uses."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from rulesd.rules.loader import check_paths, rule_sources
from rulesd.rules.model import NewValue, Rule, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import generate


def reference(data: Any) -> str:
    """A fingerprint as rulesd has always written it."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_lists(data: dict[str, Any], rule: Rule, names: list[str]) -> Any:
    """`data` with the values of the named lists `names` of `rule`, as a fingerprint holds them."""
    if not names:
        return data
    return [data, {name: list(rule.lists[name].values) for name in sorted(names)}]


def written(rule: Rule, raw: dict[str, Any]) -> dict[str, str]:
    """Every fingerprint of `rule` (its own, its steps', what it learns), from its mapping `raw`."""
    found = {"rule": reference(with_lists(raw, rule, list(rule.lists)))}
    if isinstance(rule.kind, Sequence):
        steps = [step for step in raw["sequence"]["steps"] if "match" in step]
        for i, (step, compiled) in enumerate(zip(steps, rule.kind.steps, strict=False)):
            data = {"match": step["match"], "count": step.get("count", 1)}
            used = [name for name in rule.lists if f"${name}" in json.dumps(step["match"])]
            found[f"step {i}"] = reference(with_lists(data, rule, used))
            assert found[f"step {i}"] == compiled.fingerprint
    if isinstance(rule.kind, NewValue):
        spec = raw["new_value"]
        learns = {
            "match": raw.get("match"),
            "fields": list(spec["fields"]),
            "group_by": list(spec.get("group_by", ())),
            "learn": rule.kind.learn,
        }
        found["learnt"] = reference(with_lists(learns, rule, list(rule.lists)))
        assert found["learnt"] == rule.kind.learnt
    return found


@pytest.mark.parametrize("shape", generate.SHAPES)
def test_every_benchmark_shape_s_rules_keep_their_fingerprints(shape: str, tmp_path: Path) -> None:
    """Every rule of every shape (each kind, lists, nocase, numbers, texts of any script)."""
    path = tmp_path / "rules.yaml"
    generate.write_rules(path, generate.shape_module(shape).generate_rules(100, generate.DEFAULT_SEED), 1)
    result = check_paths([path])
    assert result.ruleset is not None, result.errors
    sources = rule_sources(result.ruleset.rules)
    for rule in result.ruleset.rules:
        assert reference(with_lists(sources[rule.name].raw, rule, list(rule.lists))) == rule.fingerprint
        written(rule, sources[rule.name].raw)
    assert reference([[r.name, r.fingerprint] for r in result.ruleset.rules]) == result.ruleset.fingerprint


RULES = """\
lists:
  admins: [root, "$$x", "Zoë"]
  nets: [10.0.0.0/8]
rules:
  - name: match
    match: {service: api, user: $admins, size: {gt: 1.5, lte: 10}, ok: true, n: 3}
    alert: {message: "{service} — {user}", priority: P2, tags: [a, b], details: {k: "{n}"}}
  - name: threshold
    match: {any: [{level: error}, {not: {code: {in: [1, 2.5, "x"]}}}]}
    threshold: {count: 5, window: 1m, group_by: [host]}
    throttle: 5m
    resolve: {after: 5m}
  - name: distinct
    match: {ip: {cidr: $nets}, msg: {contains: Été, nocase: true}}
    distinct: {field: user, count: 3, window: 10m}
  - name: sequence
    sequence:
      group_by: [user]
      within: 5m
      steps:
        - match: {event: login, user: {in: $admins}}
          count: 2
        - absent: {match: {event: logout}, for: 1m}
  - name: absence
    match: {kind: heartbeat}
    absence: {window: 2m, group_by: [host], expect: [{host: a}, {host: b}]}
  - name: new_value
    match: {all: [{event: login}, {country: {regex: "^(?:NO|SE)$"}}]}
    new_value: {fields: [country], group_by: [user], learn: 1d, forget: 30d}
"""

# What these rules' fingerprints have been, written down: a change of the encoding (of a float,
# a non-ASCII text, the lists' place) shows here even if the reference above changed with it.
PINNED = {
    "match": {"rule": "ac41dd4af180810b"},
    "threshold": {"rule": "58fbcc67b754becb"},
    "distinct": {"rule": "464d4067cede437f"},
    "sequence": {"rule": "21cc40b2319c0191", "step 0": "fa769dbacfe35580"},
    "absence": {"rule": "eb6cdd317a83f425"},
    "new_value": {"rule": "9be23c469c3b8932", "learnt": "e7155b7bb02c9845"},
}


def test_the_fingerprints_of_every_kind_are_what_they_were(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    result = check_paths([path])
    assert result.ruleset is not None, result.errors
    sources = rule_sources(result.ruleset.rules)
    found = {rule.name: written(rule, sources[rule.name].raw) for rule in result.ruleset.rules}
    assert PINNED == found
