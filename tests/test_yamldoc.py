"""Reading YAML with marks: the values, marks and problems are those of building every node in
turn with PyYAML's own loader, whatever the document (plain strings read where their parent is
built, the loader's resolver calls made cheap)."""

from __future__ import annotations

import datetime
import sys
from collections import Counter
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from yaml.constructor import ConstructorError, SafeConstructor

from rulesd import yamldoc
from rulesd.document import Document, JsonPath
from rulesd.errors import InvalidInputError, Problem, SourceLocation
from rulesd.yamldoc import parse_yaml

_YAML = "tag:yaml.org,2002:"
_SCALARS = {_YAML + t for t in ("str", "int", "float", "bool", "null", "timestamp", "binary")}


class _Reference:
    """Every node built by one call, with the stock loader's tags: the plain way to read a
    document, against which the reader is held."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text
        self.value_marks: dict[JsonPath, tuple[int, int]] = {}
        self.key_marks: dict[JsonPath, tuple[int, int]] = {}
        self.boolean_words: dict[JsonPath, str] = {}
        self.problems: list[Problem] = []
        self.nodes = 0

    def problem(self, node: yaml.Node, message: str) -> None:
        where = SourceLocation(self.path, node.start_mark.line + 1, node.start_mark.column + 1)
        self.problems.append(Problem(where, message))

    def build(self, node: yaml.Node, path: JsonPath) -> object:
        self.nodes += 1
        if self.nodes > yamldoc.MAX_NODES:
            raise _Large(node)
        self.value_marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        allowed = {yaml.MappingNode: _YAML + "map", yaml.SequenceNode: _YAML + "seq"}.get(type(node))
        if (node.tag != allowed) if allowed else (node.tag not in _SCALARS):
            tag = "!!" + node.tag.removeprefix(_YAML) if node.tag.startswith(_YAML) else node.tag
            self.problem(node, f"the tag '{tag}' is not allowed: only plain YAML data is accepted")
            return None
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            return self.build_mapping(node, path)
        try:
            value = SafeConstructor().construct_object(node, deep=True)
        except ConstructorError as exc:
            self.problem(node, yamldoc._describe(exc))
            return None
        # A boolean written as a plain word other than true or false (no tag before it).
        plain = not node.style and not self.text.startswith("!", node.start_mark.index)
        if isinstance(value, bool) and plain and node.value.lower() not in ("true", "false"):
            self.boolean_words[path] = node.value
        # A number YAML 1.1 reads otherwise than its text (octal 0123, base-60 12:30, 1_000).
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and plain and yamldoc._NUMBER_WORD.match(node.value):
            self.boolean_words[path] = node.value
        return str(node.value) if isinstance(value, datetime.date | bytes) else value

    def build_mapping(self, node: yaml.MappingNode, path: JsonPath) -> dict[str, object]:
        pairs = list(node.value)
        if any(key.tag in (_YAML + "merge", _YAML + "value") for key, _ in node.value):
            try:
                SafeConstructor().flatten_mapping(node)
            except ConstructorError as exc:
                self.problem(node, yamldoc._describe(exc))
                return {}
        # YAML's merge keys: a key written in the mapping overrides the merged ones, and the
        # first mapping merged in that has a key gives it.
        own = [pair for pair in node.value if any(pair[0] is key for key, _ in pairs)]
        mine = {str(key.value) for key, _ in own if isinstance(key, yaml.ScalarNode)}
        result: dict[str, object] = {}
        first: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, "a mapping key must be a plain scalar")
                continue
            key = str(key_node.value)
            if not any(key_node is k for k, _ in own) and (key in mine or key in first):
                continue
            if key in first:
                line = first[key].start_mark.line + 1
                self.problem(key_node, f"duplicate key '{key}' (first defined on line {line})")
                continue
            first[key] = key_node
            self.key_marks[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = self.build(value_node, (*path, key))
        return result


class _Large(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


_Read = tuple[object, dict[JsonPath, tuple[int, int]], dict[JsonPath, tuple[int, int]], list[str], dict[JsonPath, str]]


def _expected(text: str) -> _Read:
    reference = _Reference("r.yaml", text)
    node = yaml.compose(text, Loader=yaml.CSafeLoader)
    value: object = None
    try:
        value = reference.build(node, ()) if node is not None else None
    except _Large as exc:
        reference.problem(exc.node, f"document too large (more than {yamldoc.MAX_NODES} nodes)")
    problems = sorted(str(p) for p in reference.problems)
    return value, reference.value_marks, reference.key_marks, problems, reference.boolean_words


def _read(text: str) -> _Read:
    try:
        doc = parse_yaml(text, "r.yaml", keep_going=True)
    except InvalidInputError as exc:
        return None, {}, {}, sorted(str(p) for p in exc.problems), {}
    return doc.value, doc.value_marks, doc.key_marks, sorted(str(p) for p in doc.problems), doc.boolean_words


def _same(text: str) -> None:
    value, value_marks, key_marks, problems, boolean_words = _expected(text)
    got = _read(text)
    assert problems == got[3]
    if problems and not all("duplicate key" in p for p in problems):
        return  # the document is refused: only its problems are read
    assert repr(value) == repr(got[0])  # (repr: True and 1, 1 and 1.0 are equal, not the same)
    assert list(value_marks.items()) == list(got[1].items())
    assert list(key_marks.items()) == list(got[2].items())
    assert boolean_words == got[4]


# Texts whose plain scalars resolve to every tag, quoted or not, tagged or not.
_WORDS = [
    "a",
    "name",
    "x y",
    "10",
    "-3",
    "0x1F",
    "0123",
    "12:30",
    "1_000",
    "1.10",
    "1.5",
    ".nan",
    "true",
    "no",
    "On",
    "null",
    "~",
    "",
    "2024-01-02",
]
_SCALAR_TEXT = st.one_of(
    st.sampled_from(_WORDS),
    st.sampled_from(_WORDS).map(lambda w: f"'{w}'"),
    st.sampled_from(["!!str 5", "!!int 7", "!!float 2", "!custom x", "!!binary aGk=", "!!python/str a", "!!bool no"]),
)
_KEYS = st.sampled_from(["a", "b", "name", "10", "true", "'q'", "<<"])


def _block(depth: int) -> st.SearchStrategy[list[str]]:
    """A YAML node as block lines (indented by the caller), or a flow collection on one line."""
    scalar = _SCALAR_TEXT.map(lambda s: [s])
    if depth == 0:
        return scalar
    child = _block(depth - 1)
    mapping = st.lists(st.tuples(_KEYS, child), min_size=1, max_size=4).map(_mapping_lines)
    sequence = st.lists(child, min_size=1, max_size=4).map(_sequence_lines)
    flow = st.lists(st.sampled_from(_WORDS), max_size=3).map(lambda ws: ["[" + ", ".join(ws) + "]"])
    return st.one_of(scalar, mapping, sequence, flow)


def _mapping_lines(items: list[tuple[str, list[str]]]) -> list[str]:
    lines = []
    for key, value in items:
        if len(value) == 1 and not value[0].startswith(("- ", "  ")) and ": " not in value[0]:
            lines.append(f"{key}: {value[0]}")
        else:
            lines.append(f"{key}:")
            lines.extend("  " + line for line in value)
    return lines


def _sequence_lines(items: list[list[str]]) -> list[str]:
    lines = []
    for value in items:
        lines.append("- " + value[0])
        lines.extend("  " + line for line in value[1:])
    return lines


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_KEYS, _block(3)), min_size=1, max_size=5).map(_mapping_lines))
def test_any_document_reads_as_building_each_node_does(lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    try:
        yaml.compose(text, Loader=yaml.CSafeLoader)
    except yaml.YAMLError:
        return  # not YAML (a `<<` key merging a scalar composes; some generated texts do not)
    _same(text)


@pytest.mark.parametrize(
    "text",
    [
        "base: &b {x: 1, y: [a, b]}\nrule:\n  <<: *b\n  y: c\n  z: *b\n",
        "a: &s [1, 2]\nb: [*s, *s]\nc: {<<: [{p: 1}, {q: 2}], p: 3}\n",
        "rules:\n- name: a\n  match: {x: 1, x: 2}\n- name: a\n  name: b\n",
        "? [a, b]\n: c\nd: e\n",
        "a: {<<: 5}\n",
        "- 2024-01-02\n- 2024-01-02T03:04:05Z\n- !!binary aGk=\n- !!set {a, b}\n",
        "a: &w NO\nb: [*w, yes, 'no', \"off\", !!bool on, True, n]\nc: {<<: {d: OFF}}\n",
    ],
)
def test_documents_with_anchors_merges_duplicates_and_tags(text: str) -> None:
    _same(text)


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 8, 13])
def test_too_large_is_found_at_the_same_node(monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    monkeypatch.setattr(yamldoc, "MAX_NODES", limit)
    _same("a: x\nb: [y, z, {c: w, d: [v, 1]}]\ne: u\nf: [t, s]\n")


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "rules:\n- name: a\n  alert:\n    details: &d\n      x: y\n      self: *d\n",
            "r.yaml:6:7: error: rules[0].alert.details.self: this alias names the mapping or list that holds it "
            "(rules[0].alert.details, line 4)",
        ),
        (
            "rules:\n- name: a\n  match: &m\n    any:\n    - {a: 1}\n    - *m\n",
            "r.yaml:4:5: error: rules[0].match.any[1]: this alias names the mapping or list that holds it "
            "(rules[0].match, line 3)",
        ),
        (
            "&all\nrules: *all\n",
            "r.yaml:2:1: error: rules: this alias names the mapping or list that holds it (the whole",
        ),
    ],
)
def test_an_alias_within_what_it_names_is_an_error_at_the_key_holding_it(text: str, said: str) -> None:
    """An alias inside the mapping or list its anchor names never ends: it was "document
    nested too deeply" at the document's first line, naming no place in it."""
    with pytest.raises(InvalidInputError) as raised:
        parse_yaml(text, "r.yaml")
    (problem,) = raised.value.problems
    assert str(problem).startswith(said), problem
    assert str(problem).endswith("so it would never end: an alias may only repeat a mapping or list outside it")


def test_a_document_nested_too_deeply_is_said_where_it_goes_too_deep() -> None:
    """Mappings and lists nested more than MAX_DEPTH levels (700 `not:`, within PyYAML's limit
    of 1,000) are an error at the one that goes too deep, not at the document's first line, and
    before any check walks them (beyond some 300 levels, they ended in a RecursionError)."""
    text = "match:\n" + "".join("  " * (i + 1) + "not:\n" for i in range(700)) + "    a: 1\n"
    with pytest.raises(InvalidInputError) as raised:
        parse_yaml(text, "r.yaml")
    (problem,) = raised.value.problems
    said = f"document nested too deeply: more than {yamldoc.MAX_DEPTH} mappings and lists within one another"
    assert (said, yamldoc.MAX_DEPTH + 1) == (problem.message, problem.location.line)
    inside = "match:\n" + "".join("  " * (i + 1) + "not:\n" for i in range(yamldoc.MAX_DEPTH - 2)) + "    a: 1\n"
    assert parse_yaml(inside, "r.yaml").value is not None


def test_a_registered_path_resolver_is_still_applied() -> None:
    """The loader skips the resolver's path bookkeeping only while nothing uses it."""

    class PathLoader(yamldoc._RuleLoader):
        pass

    PathLoader.add_path_resolver("!special", [(yaml.MappingNode, "a")], yaml.ScalarNode)
    node = yaml.compose("a: x\nb: x\n", Loader=PathLoader)
    assert ["!special", "tag:yaml.org,2002:str"] == [value.tag for _, value in node.value]


def test_a_documents_place_is_its_nearest_marked_part() -> None:
    doc: Document = parse_yaml("rules:\n- name: a\n  match:\n    x: 1\n", "r.yaml")
    assert "r.yaml:4:8" == str(doc.locate(("rules", 0, "match", "x", "deeper")))
    assert "r.yaml:4:5" == str(doc.locate(("rules", 0, "match", "x"), key=True))


def test_the_words_yaml_reads_as_booleans_are_recorded_with_their_place() -> None:
    """An unquoted yes, no, on or off (in its three cases) is a boolean, as YAML 1.1 has it, and
    recorded as written; true and false, quoted words, `!!bool` and PyYAML's texts y and n are not."""
    words = ["NO", "No", "no", "yes", "Yes", "YES", "on", "On", "ON", "off", "Off", "OFF"]
    doc = parse_yaml(f"a: [{', '.join(words)}]\nb: [true, False, 'no', \"on\", !!bool off, y, n]\n", "r.yaml")
    booleans = [word.lower() in ("yes", "on") for word in words]
    assert {"a": booleans, "b": [True, False, "no", "on", False, "y", "n"]} == doc.value
    assert {("a", i): word for i, word in enumerate(words)} == doc.boolean_words
    assert "r.yaml:1:9" == str(doc.locate(("a", 1)))


def test_composing_runs_no_python_code_to_descend_or_ascend_per_node() -> None:
    """The composer calls the resolver's descend and ascend for every node: with no path
    resolver registered, they are builtins that do nothing, not Python functions (two frames
    per node, 68,000 for 1,000 rules); a plain yes is still told from a true."""
    calls: Counter[str] = Counter()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            calls[frame.f_code.co_name] += 1

    text = "rules:\n- {name: a, match: {x: 1, y: 'no'}}\n- {name: b, match: {x: 1, y: yes}}\n"
    sys.setprofile(profile)
    try:
        node = yaml.compose(text, Loader=yamldoc._RuleLoader)
    finally:
        sys.setprofile(None)
    assert 0 == calls["descend_resolver"] + calls["ascend_resolver"]
    assert "tag:rulesd.invalid,2026:yaml11-bool" == node.value[0][1].value[1].value[1][1].value[1][1].tag
