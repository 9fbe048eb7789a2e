"""YAML documents with the line and column of every value and key.

PyYAML's composer keeps marks on nodes; we build plain Python values from
the nodes ourselves so that each value's place can be looked up afterwards by
its path, and so that duplicate keys are an error rather than silently lost.
"""

from __future__ import annotations

import datetime
import re
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from rulesd.document import Document, JsonPath, read_file
from rulesd.errors import InvalidInputError as InvalidInputError  # re-exported
from rulesd.errors import Problem, SourceLocation
from rulesd.validation import EXPONENT_NUMBER, format_path

try:  # the C composer is much faster on large rule sets
    from yaml import CSafeLoader as _Loader

    _LIBYAML = True
except ImportError:  # pragma: no cover - libyaml missing
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

    _LIBYAML = False


class _RuleLoader(_Loader):
    """The loader, with the resolver calls its composer makes for every node made cheap.

    No path resolver is ever registered, so descending and ascending do nothing; and the tag of
    a plain scalar depends on its text alone, so each distinct text of a document is resolved
    once (a rule file repeats its keys and many values). The tags are those of the loader, but
    for a plain yes, no, on or off, tagged `_WORD_BOOL_TAG` (still a boolean) so that the
    builder can tell it from a true or false (or a `!!bool yes`, whose tag was written), and for
    a plain number with an exponent YAML 1.1 reads as text (`1e3`), tagged `_EXPONENT_TEXT_TAG`
    (still a text) so that the builder records it as well.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        if not self.yaml_path_resolvers:
            # The composer calls these three through the loader's attributes for every node
            # (34,000 for 1,000 rules): builtins that do nothing and a closure, set on the
            # instance, spare a Python frame and a method's look-up each time (~6 ms of ~65).
            self.__dict__.update(
                descend_resolver={}.get,  # (given the node and its index: nothing to do)
                ascend_resolver=().__len__,
                resolve=_plain_tags_once(super().resolve),
            )


def _plain_tags_once(resolve: Callable[[Any, Any, Any], Any]) -> Callable[[Any, Any, Any], Any]:
    """`resolve`, answering a plain scalar's text from a dict after its first time."""
    tags: dict[str, str] = {}
    known = tags.get
    scalar = yaml.ScalarNode

    def resolve_plain(kind: Any, value: Any, implicit: Any) -> Any:
        if kind is scalar and implicit[0]:
            tag = known(value)
            if tag is None:
                tag = resolve(kind, value, implicit)
                if tag == _BOOL_TAG and value not in _TRUE_FALSE:
                    tag = _WORD_BOOL_TAG
                elif tag == _STR_TAG and _EXPONENT_TEXT.match(value):
                    tag = _EXPONENT_TEXT_TAG
                tags[value] = tag
            return tag
        return resolve(kind, value, implicit)

    return resolve_plain


MAX_NODES = 1_000_000  # guards against alias bombs ("billion laughs")
# Mappings and lists within one another, at most: the checks that walk a rule's conditions (or a
# rule test's event) go a few frames deep per level, and beyond some 300 levels ended in a
# RecursionError's traceback; no rule, test or setting is written a tenth as deep.
MAX_DEPTH = 128
_YAML_TAG = "tag:yaml.org,2002:"
# Plain data only: a tag naming anything else (`!!python/object`, `!custom`) is refused
# outright instead of being dropped silently, so nobody believes it does something.
_STR_TAG = _YAML_TAG + "str"
_BOOL_TAG = _YAML_TAG + "bool"
_TRUE_FALSE = frozenset({"true", "True", "TRUE", "false", "False", "FALSE"})
# A plain word YAML 1.1 reads as a boolean but YAML 1.2 (and JSON) as text: yes, No, ON, off…
_WORD_BOOL_TAG = "tag:rulesd.invalid,2026:yaml11-bool"
_NUMBER_TAGS = frozenset({_YAML_TAG + "int", _YAML_TAG + "float"})
# A plain number YAML 1.1 reads otherwise than its text (JSON and YAML 1.2 read it as text, or
# as the number written): 0123 is octal 83, 12:30 is 750 (base 60), 1_000 is 1000, 1.10 is 1.1.
_NUMBER_WORD = re.compile(
    r"[-+]?(0[0-9_]+|0x[0-9a-fA-F_]+|0b[01_]+|[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?|[0-9.]*_[0-9_.]*|[0-9]*\.[0-9]*[0-9]0)\Z"
)
# A plain number with an exponent as JSON writes one, which YAML 1.1 resolves as text (`validation`).
_EXPONENT_TEXT = re.compile(EXPONENT_NUMBER + r"\Z")
_EXPONENT_TEXT_TAG = "tag:rulesd.invalid,2026:yaml11-exponent-text"
_MERGE_TAGS = frozenset({_YAML_TAG + "merge", _YAML_TAG + "value"})  # what flatten_mapping rewrites
_ScalarNode = yaml.ScalarNode
_SCALAR_TAGS = frozenset(
    {
        _WORD_BOOL_TAG,
        _EXPONENT_TEXT_TAG,
        *(_YAML_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp", "binary")),
    }
)


class _Builder:
    """Turns a composed node tree into plain values, recording marks and problems.

    Most nodes of a rule file are plain strings under a mapping key or in a list: those are
    read where their parent is built (the same value, mark and count as `build` gives them),
    since a call per node is most of the time of building. Each level of nesting still costs
    two Python frames, as it always did, so that a document nested too deeply for the
    interpreter is reported at the same depth.
    """

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.value_marks = doc.value_marks
        self.key_marks = doc.key_marks
        self.constructor = SafeConstructor()
        self.problems: list[Problem] = []
        # Mistakes after which the document is still read as written (a duplicate key's first
        # value is kept), so that the rest of it can be checked too.
        self.kept: list[Problem] = []
        self.nodes = 0

    def mark(self, node: yaml.Node) -> tuple[int, int]:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def problem(self, node: yaml.Node, message: str) -> None:
        self.problems.append(Problem(SourceLocation(self.doc.path, *self.mark(node)), message))

    def unread(self, node: yaml.Node, message: str) -> None:
        """A value a tag written on it keeps from being read (`!!int x`): it reads as null and
        the rest of the document is still read and checked, so that one run says every problem
        (the schema's at that null only repeat this one, see `validation.unread_dropped`)."""
        self.kept.append(Problem(SourceLocation(self.doc.path, *self.mark(node)), message))

    def build(self, node: yaml.Node, path: JsonPath) -> object:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooLarge(node)
        mark = node.start_mark
        self.value_marks[path] = (mark.line + 1, mark.column + 1)
        if not _allowed_tag(node):
            self.problem(
                node,
                f"the tag '{_show_tag(node.tag)}' is not allowed: only plain YAML data is accepted",
            )
            return None
        if isinstance(node, yaml.MappingNode):
            if len(path) >= MAX_DEPTH:
                raise _TooDeep
            return self.build_mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            if len(path) >= MAX_DEPTH:
                raise _TooDeep
            return self.build_sequence(node, path)
        if node.tag == _WORD_BOOL_TAG:
            self.doc.boolean_words[path] = node.value
            return SafeConstructor.bool_values[node.value.lower()]
        if node.tag == _EXPONENT_TEXT_TAG:
            self.doc.boolean_words[path] = node.value  # (read as text, not as the number written)
            return node.value
        if (
            node.tag in _NUMBER_TAGS
            and not getattr(node, "style", None)
            and _NUMBER_WORD.match(node.value)
            and not _tag_written(node)  # (`!!int 0x1F` asks for the number: no text was meant)
        ):
            self.doc.boolean_words[path] = node.value  # (read as a number, not as written)
        return self.build_scalar(node)

    def build_sequence(self, node: yaml.SequenceNode, path: JsonPath) -> list[object]:
        result: list[object] = []
        value_marks = self.value_marks
        for i, item in enumerate(node.value):
            if item.__class__ is _ScalarNode and item.tag == _STR_TAG and self.nodes < MAX_NODES:
                self.nodes += 1  # a plain string: what `build` would record and return
                mark = item.start_mark
                value_marks[(*path, i)] = (mark.line + 1, mark.column + 1)
                result.append(item.value)
            else:
                result.append(self.build(item, (*path, i)))
        return result

    def build_mapping(self, node: yaml.MappingNode, path: JsonPath) -> dict[str, object]:
        merged = 0  # how many of the pairs were merged in by `<<` (they come first)
        written: set[str] = set()  # the keys written in the mapping itself
        for key_node, _ in node.value:  # (a loop: cheaper than any() on a generator)
            if key_node.tag in _MERGE_TAGS:
                count = len(node.value) - sum(k.tag == _YAML_TAG + "merge" for k, _ in node.value)
                try:
                    self.constructor.flatten_mapping(node)  # resolves `<<` merge keys
                except ConstructorError as exc:
                    self.problem(node, _describe(exc))
                    return {}
                merged = len(node.value) - count
                written = {str(k.value) for k, _ in node.value[merged:] if isinstance(k, yaml.ScalarNode)}
                break
        result: dict[str, object] = {}
        value_marks, key_marks = self.value_marks, self.key_marks
        flow = node.flow_style
        for i, (key_node, value_node) in enumerate(node.value):
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, "a mapping key must be a plain scalar")
                continue
            key = str(key_node.value)
            mark = key_node.start_mark
            child = (*path, key)
            # YAML's merge: a key written in the mapping overrides a merged one, and of the
            # mappings merged in, the first that has the key gives it (neither is a duplicate)
            if i < merged and (key in written or key in result):
                continue
            if key in result:  # the first value is kept; its key's line is where it was defined
                where = SourceLocation(self.doc.path, mark.line + 1, mark.column + 1)
                line = key_marks[child][0]
                self.kept.append(Problem(where, f"duplicate key '{key}' (first defined on line {line})"))
                continue
            key_marks[child] = (mark.line + 1, mark.column + 1)
            if value_node.__class__ is _ScalarNode and value_node.tag == _STR_TAG and self.nodes < MAX_NODES:
                self.nodes += 1  # a plain string: what `build` would record and return
                mark = value_node.start_mark
                value_marks[child] = (mark.line + 1, mark.column + 1)
                result[key] = value_node.value
            else:
                if flow and value_node.start_mark.index == key_node.end_mark.index:  # `{event login_failed}`
                    key, value_node = self.without_colon(key, node, key_node, path)
                    child = (*path, key)
                    key_marks[child] = (mark.line + 1, mark.column + 1)
                result[key] = self.build(value_node, child)
        return result

    def without_colon(self, key: str, node: yaml.MappingNode, key_node: yaml.Node, path: JsonPath) -> Any:
        """A key of a flow mapping written without its ':' (`{service: auth, event login_failed}`),
        which YAML reads as a key of no value, meant by no rule, test or setting: an error, after
        which the rest is checked as if the ':' were there (`event: login_failed`), so that the
        schema does not add errors about the key it was read as. The key and its value node."""
        name, _, rest = key.partition(" ")
        rest = rest.strip()
        message = f"{format_path((*path, key))}: {key!r} has no ':' after it, so YAML reads it as a key with no value"
        if rest:
            message += f": write '{name}: {rest}'"
        elif len(node.value) == 1:  # `tags: [{host}]`
            message += f' (a template is written in quotes: "{{{key}}}")'
        self.kept.append(Problem(SourceLocation(self.doc.path, *self.mark(key_node)), message))
        if not rest:
            return key, yaml.ScalarNode(_YAML_TAG + "null", "", key_node.end_mark, key_node.end_mark)
        try:
            value = yaml.compose(rest, Loader=_RuleLoader)
        except yaml.YAMLError:
            value = None
        if not isinstance(value, yaml.ScalarNode):  # (a text read as a list or mapping stays a text)
            value = yaml.ScalarNode(_STR_TAG, rest)
        value.start_mark = value.end_mark = key_node.start_mark
        return name, value

    def build_scalar(self, node: yaml.Node) -> object:
        if node.tag == _STR_TAG:  # most scalars: what the constructor would return, at once
            return node.value
        try:
            value = self.constructor.construct_object(node, deep=True)
        except ConstructorError as exc:
            self.problem(node, _describe(exc))
            return None
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            # An explicit tag on a text it cannot read (`!!int x`, `!!int ""`, `!!bool maybe`,
            # `!!timestamp 2020-99-99`): PyYAML's constructors fail with Python's own errors.
            message = f"{str(node.value)[:80]!r} is not a valid {_show_tag(node.tag)}"
            length = sum(c.isdigit() for c in str(node.value))
            if node.tag in _NUMBER_TAGS and not _tag_written(node) and length > sys.get_int_max_str_digits():
                # (Python reads no longer integer from text: a limit against quadratic time)
                message = (
                    f"{str(node.value)[:20]!r}… is an integer of {length} digits, more than the "
                    f"{sys.get_int_max_str_digits()} read as a number: quote it if the text is meant"
                )
            elif node.tag in _NUMBER_TAGS:
                message += ": a number needs no tag (count: 5), nor a duration, written with its unit (window: 5m)"
            self.unread(node, message)
            return None
        quote = getattr(node, "style", None) or ""  # (a scalar's; set for a quoted one)
        if node.tag == _YAML_TAG + "int" and re.match(r"[-+]?0[0-9_]+\Z", node.value) and (quote or _tag_written(node)):
            # `!!int "017"` and `!!int 017` are octal 15 to YAML 1.1: the tag asks for a number, so
            # the warning at a plain 017 (quote it if the text is meant) would be wrong advice
            digits = node.value.lstrip("+-").replace("_", "").lstrip("0") or "0"
            decimal = "-" + digits if node.value.startswith("-") and digits != "0" else digits
            message = (
                f"!!int {quote}{node.value}{quote} is the octal number {value}: write {decimal} with no "
                f"tag if that decimal number is meant, else {value}"
            )
            self.unread(node, message)
            return None
        if isinstance(value, datetime.date | bytes):
            return str(node.value)  # dates stay as written: rules compare strings
        return value


def _allowed_tag(node: yaml.Node) -> bool:
    if isinstance(node, yaml.MappingNode):
        return bool(node.tag == _YAML_TAG + "map")
    if isinstance(node, yaml.SequenceNode):
        return bool(node.tag == _YAML_TAG + "seq")
    return node.tag in _SCALAR_TAGS


def _tag_written(node: yaml.Node) -> bool:
    """Whether a plain scalar's tag was written (`!!int 017`) rather than read from its text:
    its node then starts at the tag, before the text."""
    return bool(node.end_mark.index - node.start_mark.index != len(node.value))


def _show_tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_YAML_TAG) if tag.startswith(_YAML_TAG) else tag


class _TooDeep(Exception):
    """A mapping or list nested more than MAX_DEPTH levels deep (where: see `_too_deep`)."""


class _TooLarge(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


def _describe(exc: yaml.MarkedYAMLError) -> str:
    problem, context, where = exc.problem, exc.context, exc.context_mark
    if problem and context:
        # "did not find expected ',' or '}' (while parsing a flow mapping started at 3:12)"
        start = f" started at {where.line + 1}:{where.column + 1}" if where else ""
        return f"{problem} ({context}{start})"
    return problem or context or str(exc)


def _offset_location(path: str, text: str, offset: int) -> SourceLocation:
    """The line and column of character `offset` in `text`."""
    line = text.count("\n", 0, offset) + 1
    return SourceLocation(path, line, offset - (text.rfind("\n", 0, offset) + 1) + 1)


def parse_yaml(text: str, path: str, *, keep_going: bool = False) -> Document:
    """Parse one YAML document; raise InvalidInputError listing every problem found.

    With `keep_going`, duplicate keys (the first value is kept) are put in `Document.problems`
    instead, so that the caller can check and report the rest of the file too.
    """
    doc = Document(path, None)
    try:
        node = yaml.compose(text, Loader=_RuleLoader)
    except yaml.MarkedYAMLError as exc:
        raise InvalidInputError([_syntax_problem(exc, text, path)]) from None
    except yaml.reader.ReaderError as exc:
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        message = f"YAML syntax error: the character U+{code:04X} is not allowed"
        offset = exc.position
        if _LIBYAML:  # libyaml counts UTF-8 bytes, not characters
            offset = len(text.encode("utf-8")[:offset].decode("utf-8", "ignore"))
        where = _offset_location(path, text, offset)
        raise InvalidInputError([Problem(where, message)]) from None
    except yaml.YAMLError as exc:
        raise InvalidInputError([Problem(SourceLocation(path), f"YAML error: {exc}")]) from None
    if node is None:
        return doc
    builder = _Builder(doc)
    try:
        doc.value = builder.build(node, ())
    except _TooLarge as exc:
        builder.problem(exc.node, f"document too large (more than {MAX_NODES} nodes)")
    except (_TooDeep, RecursionError) as exc:
        builder.problems.append(_too_deep(doc, exc, node))
    if builder.problems or (builder.kept and not keep_going):
        raise InvalidInputError(sorted([*builder.problems, *builder.kept]))
    doc.problems = builder.kept
    return doc


def _too_deep(doc: Document, exc: Exception, root: yaml.Node) -> Problem:
    """Where a document nested too deeply is, read from the frames of the `_Builder.build`
    calls `exc` went through (nothing is kept while building): an alias within the mapping or
    list it names (`self: *d` under `details: &d`), which never ends, at the key holding it;
    else the node that went too deep."""
    build = _Builder.build.__code__
    seen: dict[int, JsonPath] = {}
    node, tb = root, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is build:
            node, path = tb.tb_frame.f_locals["node"], tb.tb_frame.f_locals["path"]
            if id(node) in seen:  # (an alias is the node its anchor names: no mark of its own)
                held = path[: max(i for i, part in enumerate(path, 1) if isinstance(part, str))]
                line, col = doc.key_marks.get(held, (node.start_mark.line + 1, node.start_mark.column + 1))
                named = format_path(seen[id(node)]) if seen[id(node)] else "the whole document"
                message = (
                    f"{format_path(path)}: this alias names the mapping or list that holds it "
                    f"({named}, line {node.start_mark.line + 1}), so it would never end: an alias may only "
                    "repeat a mapping or list outside it"
                )
                return Problem(SourceLocation(doc.path, line, col), message)
            seen[id(node)] = path
        tb = tb.tb_next
    mark = node.start_mark
    message = f"document nested too deeply: more than {MAX_DEPTH} mappings and lists within one another"
    return Problem(SourceLocation(doc.path, mark.line + 1, mark.column + 1), message)


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str, path: str) -> Problem:
    """A syntax error at its place; a tab in a line's indentation is named as such."""
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return Problem(SourceLocation(path), f"YAML syntax error: {_describe(exc)}")
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    indent = line[: len(line) - len(line.lstrip(" \t"))]
    if "\t" in indent:  # PyYAML only says "found character that cannot start any token"
        where = SourceLocation(path, mark.line + 1, indent.index("\t") + 1)
        return Problem(where, "YAML forbids tabs for indentation: indent with spaces")
    if (exc.problem or "").startswith("found unknown escape character") and line[mark.column : mark.column + 1] == "\\":
        escape = line[mark.column : mark.column + 2]
        message = (
            f"YAML syntax error: {escape} is not an escape YAML knows in double quotes: write the text in single "
            f"quotes ('...{escape}...'), where a backslash is itself, as a regex is best written, or double the "
            f"backslash (\\{escape})"
        )
        return Problem(SourceLocation(path, mark.line + 1, mark.column + 1), message)
    if exc.problem == "did not find expected <document start>":
        top = _top_line_out(lines, mark.line, path)
        if top is not None:
            return top
    indentation = _missing_colon(exc, text, path) or _misindented(exc, path)
    if indentation is not None:
        return (
            _key_out_of_block(lines, indentation)
            or _first_of_block(lines, indentation)
            or _first_item_undashed(lines, indentation)
            or _emptied_parent(lines, indentation)
            or _first_line_off_step(lines, indentation)
            or indentation
        )
    if exc.problem == "did not find expected key":  # (a block of items whose first moved: no column said)
        found = Problem(SourceLocation(path, mark.line + 1, mark.column + 1), f"YAML syntax error: {_describe(exc)}")
        return _first_line_off_step(lines, found) or found
    return _unclosed(exc, lines, path) or Problem(
        SourceLocation(path, mark.line + 1, mark.column + 1), f"YAML syntax error: {_describe(exc)}"
    )


def _shape(line: str) -> tuple[bool, int] | None:
    """Whether a line is a list item (`- `), and the 0-based column of its dash, else of its
    key; None for a blank line or a comment."""
    body = line.lstrip(" ")
    if not body or body.startswith("#"):
        return None
    return body.startswith("- ") or body == "-", len(line) - len(body)


def _column(shape: tuple[bool, int] | None) -> int:
    """The column of a line's key (after a list item's dash)."""
    return -1 if shape is None else shape[1] + 2 * shape[0]


def _opens_block(line: str) -> bool:
    """Whether a line ends with a key whose value is the block below it."""
    return line.split(" #")[0].rstrip().endswith(":")


def _first_of_block(lines: list[str], problem: Problem) -> Problem | None:
    """An indentation error placed at the line before the one YAML stopped at, when that is the
    odd one out: the first line of a block indented otherwise than the lines after it (a key
    indented too little at the top of an absence, then the rest of it as it should be). YAML
    takes the block's indentation from its first line, so it finds fault with the second."""
    at = problem.location.line - 1  # (0-based)
    shapes = [_shape(line) for line in lines]
    here = shapes[at] if at < len(shapes) else None
    before = next((i for i in range(at - 1, -1, -1) if shapes[i] is not None), None)
    after = next((i for i in range(at + 1, len(lines)) if shapes[i] is not None), None)
    if here is not None and after is not None and _opens_block(lines[at]):
        # the line opens a block: its own lines must be deeper (else it is the line moved, with
        # its block after it), and the sibling to compare with comes after them
        deeper = [i for i in range(after, len(lines)) if shapes[i] is not None and _column(shapes[i]) > here[1]]
        if not deeper or deeper[0] != after:
            return None
        after = next((i for i in range(after, len(lines)) if shapes[i] is not None and i not in deeper), None)
    if here is None or before is None or after is None or shapes[after] != here:
        return None
    if _opens_block(lines[before]) and _column(shapes[before]) < here[1]:
        return None  # the line before is this block's parent key, not a first line out of step
    prior = next((i for i in range(before - 1, -1, -1) if shapes[i] is not None), None)
    if prior is not None and (
        _column(shapes[prior]) >= _column(here)  # the line before ends a block this line is no part of
        if _opens_block(lines[prior])
        else _column(shapes[prior]) == _column(shapes[before])  # or is not its block's first line
    ):
        return None
    item, column = here
    odd_item, odd = shapes[before] or here
    if item and not odd_item and odd in (column, column + 2):  # (an item written without its '- ')
        message = (
            f"YAML syntax error: this line is not a list item, but the lines after it in its block (from line "
            f"{at + 1}) are ('- ' at column {column + 1}): is its '- ' missing?"
        )
        return Problem(SourceLocation(problem.location.path, before + 1, odd + 1), message)
    if odd_item and not item:  # (`- name: x` then its keys: the key's column is after the dash)
        odd += 2
    elif odd_item != item:
        return None
    if odd == column:
        return None
    what = "the items ('- ')" if item else "the keys"
    message = (
        f"YAML syntax error: this line is indented to column {odd + 1}, but {what} after it in its block (from line "
        f"{at + 1}) are at column {column + 1}: indent it to column {column + 1} (or them to {odd + 1})"
    )
    return Problem(SourceLocation(problem.location.path, before + 1, odd + 1), message)


def _shaped(shapes: list[tuple[bool, int] | None], start: int, step: int, deeper_than: int) -> int | None:
    """The first line from `start` on (going by `step`) that is neither blank, nor a comment,
    nor indented deeper than column `deeper_than` (0-based)."""
    at = start
    while 0 <= at < len(shapes):
        shape = shapes[at]
        if shape is not None and shape[1] <= deeper_than:
            return at
        at += step
    return None


def _key_out_of_block(lines: list[str], problem: Problem) -> Problem | None:
    """A key in the middle of a block indented less than the lines before and after it (`tags:`
    of an alert moved to the rule's column): YAML reads it as a key of the mapping around the
    block, valid so far, and finds fault only at the line after it, which is then deeper than
    any key. When the key is no key of a rule, written at a rule's keys' column, and the block
    it interrupts takes it (and the line after it), the key is the line out of step; else which
    of the two lines is wrong cannot be told by this, and the error stays where it was."""
    if "no mapping under it has keys there" not in problem.message and "which started on line" not in problem.message:
        return None
    at = problem.location.line - 1  # (0-based)
    shapes = [_shape(line) for line in lines]
    here = shapes[at] if at < len(shapes) else None
    if here is None:
        return None
    column = here[1]
    key = _shaped(shapes, at - 1, -1, column - 1)  # the key out of step, with its own block below it
    if key is None or _is_item(shapes[key]) or (key != at - 1) != _opens_block(lines[key]):
        return None  # (the line after a key opening a block is in it)
    if any(shapes[i] is not None and _column(shapes[i]) <= column for i in range(key + 1, at)):
        return None
    before = _shaped(shapes, key - 1, -1, column)
    following = [i for i in range(at + 1, len(lines)) if shapes[i] is not None]
    if _opens_block(lines[at]) and not (following and _column(shapes[following[0]]) > column):
        return None  # (a key whose block is at its own column: it is the line moved, with its block)
    if before is None or shapes[before] != here:
        return None
    odd = _column(shapes[key])
    opener = _shaped(shapes, before - 1, -1, column - 1)
    if opener is None or not _opens_block(lines[opener]):
        return None
    if _rule_key_meant_in(lines, shapes, key, at, opener):
        owner = "a rule"
    elif (field_of := _field_meant_in(lines, shapes, key, opener)) is not None:
        owner = f"{_key(lines[field_of])!r} (line {field_of + 1})"
    else:
        return None
    message = (
        f"YAML syntax error: this line is indented to column {odd + 1}, but it is no key of {owner}: it belongs under "
        f"{_key(lines[opener])!r} (line {opener + 1}), whose keys (lines {before + 1} and {at + 1}) are at column "
        f"{column + 1}: indent it to column {column + 1}, with the lines under it"
    )
    return Problem(SourceLocation(problem.location.path, key + 1, odd + 1), message)


def _steps(lines: list[str], shapes: list[tuple[bool, int] | None], leave: int) -> dict[bool, int]:
    """How far this file indents a block under its key, for a block of keys (False) and of items
    (True): the most common distance from a key opening a block to the block's first line, of
    every such pair but the one at the line `leave` (the line in question). Items may be at their
    key's column (a distance of 0), keys not: under a key of no value they are its siblings. A
    kind the file has no other block of is not said: then which line is wrong is not told."""
    counts: dict[bool, Counter[int]] = {False: Counter(), True: Counter()}
    opener = None
    for i, shape in enumerate(shapes):
        if shape is None:
            continue
        if opener is not None and i != leave and shape[1] + shape[0] > _column(shapes[opener]):
            counts[shape[0]][shape[1] - _column(shapes[opener])] += 1
        opener = i if _opens_block(lines[i]) else None
    return {kind: found.most_common(1)[0][0] for kind, found in counts.items() if found}


def _first_line_off_step(lines: list[str], problem: Problem) -> Problem | None:
    """The first line of a block, under the key opening it, indented otherwise than this file
    indents every other block, when the line YAML stopped at (right after it) is where that line's
    sibling or its own key would be had it been indented as the others (`alert:`, then `priority`
    a column too deep and `tags` as the file has it): YAML takes the block's indentation from its
    first line and finds fault with the second, which is the one written right. A block whose two
    lines are both indented otherwise than the file's (4 where it has 2) is left as it is."""
    at = problem.location.line - 1  # (0-based)
    shapes = [_shape(line) for line in lines]
    here = shapes[at] if at < len(shapes) else None
    first = next((i for i in range(at - 1, -1, -1) if shapes[i] is not None), None)
    opener = next((i for i in range((first or 0) - 1, -1, -1) if shapes[i] is not None), None)
    if here is None or first is None or opener is None or not _opens_block(lines[opener]):
        return None
    shape, parent = shapes[first], _column(shapes[opener])
    step = _steps(lines, shapes, first).get(shape[0]) if shape is not None else None
    if shape is None or step is None or shape[1] == parent + step:
        return None
    meant = (shape[0], parent + step)  # the first line as this file would indent it
    if here != meant and not (meant[0] and here == (False, meant[1] + 2)):  # (a sibling, or a key of its item)
        return None
    what = "the items ('- ')" if shape[0] else "the keys"
    message = (
        f"YAML syntax error: this line is indented to column {shape[1] + 1}, but it is the first line under "
        f"{_key(lines[opener])!r} (line {opener + 1}), and this file indents {what} of a block {step} columns under "
        f"its key, and line {at + 1} after it is indented as that would have it: indent it to column {meant[1] + 1}"
    )
    return Problem(SourceLocation(problem.location.path, first + 1, shape[1] + 1), message)


def _is_item(shape: tuple[bool, int] | None) -> bool:
    return shape is None or shape[0]


def _key(line: str) -> str:
    """The key a line writes (after a list item's dash)."""
    return line.split(":", 1)[0].strip().removeprefix("- ").strip()


def _rule_key_meant_in(lines: list[str], shapes: list[tuple[bool, int] | None], key: int, at: int, opener: int) -> bool:
    """Whether the line `key`, written at the column of a rule's keys, names no key of a rule
    but one that the mapping under `opener` (a rule key: `alert`, `match`) takes, as it takes
    the line `at` after it: then the line is the one out of its block."""
    from rulesd.key_places import keys_of_rule_key, rule_keys  # (only for a syntax error)

    column = _column(shapes[key])
    start = _shaped(shapes, key - 1, -1, column - 1)  # the rule's `- name:` item (or none: a file of one rule)
    if (start is None) != (column == 0) or (
        start is not None and not (_is_item(shapes[start]) and _column(shapes[start]) == column)
    ):
        return False
    if _column(shapes[opener]) != column or _key(lines[key]) in rule_keys():
        return False
    parent, name = _key(lines[opener]), _key(lines[key])
    if parent == "match":  # (a condition takes any field, but a rule key misspelled is not one)
        import difflib

        return not difflib.get_close_matches(name, rule_keys(), n=1, cutoff=0.8)
    taken = keys_of_rule_key(parent)
    return parent in rule_keys() and name in taken and _key(lines[at]) in taken


def _field_meant_in(lines: list[str], shapes: list[tuple[bool, int] | None], key: int, opener: int) -> int | None:
    """The line of the rule key (`alert`) whose keys' column the line `key` is written at, when
    it names no key of that mapping (nor one misspelled) and the block it interrupts, under
    `opener`, is one of that mapping's that takes any key (`details`): then the line is the one
    out of its block. None otherwise."""
    import difflib

    from rulesd.key_places import keys_of_rule_key, rule_keys  # (only for a syntax error)

    column = _column(shapes[key])
    owner = _shaped(shapes, key - 1, -1, column - 1)
    if owner is None or _is_item(shapes[owner]) or not _opens_block(lines[owner]) or _column(shapes[opener]) != column:
        return None
    taken, parent, name = keys_of_rule_key(_key(lines[owner])), _key(lines[opener]), _key(lines[key])
    if _key(lines[owner]) not in rule_keys() or parent not in taken or keys_of_rule_key(parent):
        return None  # (`details` takes any key: the schema names none under it)
    if name in taken or difflib.get_close_matches(name, taken, n=1, cutoff=0.8):
        return None
    return owner


def _emptied_parent(lines: list[str], problem: Problem) -> Problem | None:
    """The first key of a block indented as its parent key (`match:`, then `type: x` at the
    column of `match`): YAML leaves the parent empty and reads the key beside it, valid so far,
    and finds fault only at the next line, indented as the block's keys are."""
    if "which started on line" not in problem.message:
        return None
    at = problem.location.line - 1  # (0-based)
    shapes = [_shape(line) for line in lines]
    here = shapes[at] if at < len(shapes) else None
    key = _shaped(shapes, at - 1, -1, 10**9)
    parent = _shaped(shapes, key - 1, -1, 10**9) if key is not None else None
    if here is None or key is None or parent is None or here[0] or key != at - 1 or _is_item(shapes[key]):
        return None  # (list items beside each other are no key leaving another empty)
    if shapes[key] != shapes[parent] or _column(shapes[key]) >= here[1] or _opens_block(lines[key]):
        return None
    if not _opens_block(lines[parent]):
        return None
    column, odd = here[1], _column(shapes[key])
    name = _key(lines[parent])
    message = (
        f"YAML syntax error: this line is indented to column {odd + 1}, as {name!r} above it is, which leaves "
        f"{name!r} empty, but the line after it is at column {column + 1}: indent it to column {column + 1}, under "
        f"{name!r} (or line {at + 1} to column {odd + 1})"
    )
    return Problem(SourceLocation(problem.location.path, key + 1, odd + 1), message)


def _first_item_undashed(lines: list[str], problem: Problem) -> Problem | None:
    """A list whose first item lost its '- ' (`rules:` then `    name: a`): YAML reads that item
    as a mapping and finds fault only at the next item, which may be many lines further; the
    error is at the first item, where the '- ' is missing."""
    at = problem.location.line - 1  # (0-based)
    shapes = [_shape(line) for line in lines]
    here = shapes[at] if at < len(shapes) else None
    if here is None or not here[0]:
        return None
    above = next((i for i in range(at - 1, -1, -1) if shapes[i] is not None and _column(shapes[i]) <= here[1]), None)
    if above is None or not _opens_block(lines[above]) or _column(shapes[above]) >= here[1]:
        return None
    first = next(i for i in range(above + 1, at + 1) if shapes[i] is not None)
    if first == at or shapes[first] != (False, here[1] + 2):
        return None
    message = (
        f"YAML syntax error: this line is not a list item, but the items after it in its block (from line "
        f"{at + 1}) are ('- ' at column {here[1] + 1}): is its '- ' missing?"
    )
    return Problem(SourceLocation(problem.location.path, first + 1, here[1] + 3), message)


def _unclosed(exc: yaml.MarkedYAMLError, lines: list[str], path: str) -> Problem | None:
    """libyaml's "did not find expected ',' or '}'" in the user's words: a `{` (or `[`) not
    closed on the line it opens, at that line's end; else where a ',' or the closing brace was
    expected, which is most often after a key missing its ':' (`{count: 5, group_by [user]}`)."""
    mark, start, problem = exc.problem_mark, exc.context_mark, exc.problem or ""
    if mark is None or start is None or not problem.startswith("did not find expected ',' or "):
        return None
    closer = problem[-2]
    opener = "{" if closer == "}" else "["
    first = lines[start.line].rstrip() if start.line < len(lines) else ""
    if mark.line > start.line and not first.endswith((",", "{", "[")):  # (written on one line)
        message = (
            f"YAML syntax error: the '{opener}' at column {start.column + 1} is not closed on its line: a '{closer}' "
            "missing here?"
        )
        return Problem(SourceLocation(path, start.line + 1, len(first) + 1), message)
    message = (
        f"YAML syntax error: a ',' or the '{closer}' closing the '{opener}' at {start.line + 1}:{start.column + 1} "
        f"was expected here (is a ':', a ',' or a '{closer}' missing before it?)"
    )
    return Problem(SourceLocation(path, mark.line + 1, mark.column + 1), message)


def _misindented(exc: yaml.MarkedYAMLError, path: str) -> Problem | None:
    """libyaml's words for a line indented as no mapping or list around it is, in the user's:
    which columns were expected, and the line where the block it is in starts."""
    mark, start = exc.problem_mark, exc.context_mark
    if mark is None or start is None:
        return None
    here = f"YAML syntax error: this line is indented to column {mark.column + 1}"
    if exc.problem == "did not find expected key" and mark.column > start.column:
        message = (
            f"{here}, but the keys of the mapping it is in (from line {start.line + 1}) are at column "
            f"{start.column + 1}, and no mapping under it has keys there: is this line, or one above it, indented "
            "wrong?"
        )
    elif exc.problem == "did not find expected '-' indicator":
        message = (
            f"{here}, as the items ('- ') of the list that starts on line {start.line + 1} are, but is not one: is "
            "this line, or that line, indented wrong?"
        )
    else:
        return None
    return Problem(SourceLocation(path, mark.line + 1, mark.column + 1), message)


def _missing_colon(exc: yaml.MarkedYAMLError, text: str, path: str) -> Problem | None:
    """A key written without its ':' (or a line indented as if it went on the one above), at
    the line where it was written: PyYAML notices it only on the line after."""
    mark, start = exc.problem_mark, exc.context_mark
    if exc.problem == "could not find expected ':'" and start is not None:
        return _colon_missing_at(path, start.line, start.column)
    if mark is None or not (exc.problem or "").startswith("mapping values are not allowed"):
        return None
    scalar = _plain_scalar_before(text)
    if scalar is None or scalar.end_mark.line > mark.line:  # (libyaml's index counts bytes, PyYAML's characters)
        return None
    first = scalar.start_mark
    lines = text.splitlines()
    line = lines[first.line] if first.line < len(lines) else ""
    key = _column(_shape(line))
    head = line[key:].split(": ", 1)[0]  # (a key of words, `User Agent`, has its ':' there)
    if first.line == mark.line and re.search(r" [{\[]", head) and line[key : key + 1] not in "\"'":
        return _colon_missing_at(path, first.line, key)  # `threshold {count: 5}`: a key run into a flow mapping
    if first.line == mark.line:  # `message: Disk full: x`
        message = "YAML syntax error: a ': ' inside a plain value: quote the value (\"...\") to write it"
        return Problem(SourceLocation(path, mark.line + 1, mark.column + 1), message)
    shown = scalar.value if len(scalar.value) <= 40 else scalar.value[:37] + "..."
    below = lines[mark.line] if mark.line < len(lines) else ""
    if first.column == key and len(below) - len(below.lstrip(" ")) > key and _bare_key(line):
        return _colon_missing_at(path, first.line, key)  # `rules` then its items: the text began the line
    if len(below) - len(below.lstrip(" ")) == first.column:  # a key and its value, then a key beside it
        message = (
            f"YAML syntax error: the text {shown!r} that starts here runs on to line {mark.line + 1}, where a ':' "
            "follows it (is a ':' missing on this line?)"
        )
        return Problem(SourceLocation(path, first.line + 1, first.column + 1), message)
    message = (
        f"YAML syntax error: a ':' after the text {shown!r}, which started on line {first.line + 1} (is this line "
        f"indented wrong, or line {first.line + 1}, or is a ':' missing there?)"
    )
    return Problem(SourceLocation(path, mark.line + 1, mark.column + 1), message)


def _bare_key(line: str) -> bool:
    """Whether a line is one plain word and nothing else (`rules`): a key missing its ':' when the
    lines after it are deeper, for no value begins a line on its own."""
    body = line.split(" #")[0].strip()
    return bool(re.fullmatch(r"[A-Za-z_][\w.-]*", body))


def _top_line_out(lines: list[str], at: int, path: str) -> Problem | None:
    """The first line of a file, when YAML ends its document there and finds another at the line
    `at` (0-based): a top-level key missing its ':' (`rules` above its items), or a first key
    indented deeper than the top-level keys after it (` lists:`, then `rules:` at column 1)."""
    shapes = [_shape(line) for line in lines]
    written = [i for i, shape in enumerate(shapes) if shape is not None]
    here = shapes[at] if at < len(shapes) else None
    if len(written) < 2 or here is None or here[0] or written[0] >= at:
        return None
    first, below = written[0], written[1]
    column = _column(shapes[first])
    if _is_item(shapes[first]):
        return None
    if _bare_key(lines[first]) and _column(shapes[below]) > column:
        return _colon_missing_at(path, first, column)
    if column > here[1]:
        message = (
            f"YAML syntax error: this line is indented to column {column + 1}, but the top-level keys of the file "
            f"(line {at + 1}) are at column {here[1] + 1}: indent it to column {here[1] + 1}"
        )
        return Problem(SourceLocation(path, first + 1, column + 1), message)
    return None


def _colon_missing_at(path: str, line: int, column: int) -> Problem:
    message = "YAML syntax error: could not find the ':' after the key that starts here (is it missing?)"
    return Problem(SourceLocation(path, line + 1, column + 1), message)


def _plain_scalar_before(text: str) -> Any:
    """The last plain scalar token PyYAML's scanner reads in `text` before its error."""
    scalar = None
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, yaml.ScalarToken):
                scalar = token if token.plain else None
    except yaml.YAMLError:
        return scalar
    return None


def read_yaml(path: str, *, keep_going: bool = False) -> Document:
    """Read and parse a YAML file; unreadable or undecodable files are problems too."""
    return parse_yaml_bytes(read_file(path), path, keep_going=keep_going)


def parse_yaml_bytes(data: bytes, path: str, *, keep_going: bool = False) -> Document:
    """Parse the bytes of the YAML file `path`; text that is not UTF-8 is a problem too."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8-sig")  # valid up to the bad byte
        where = _offset_location(path, before, len(before))
        bad = data[exc.start]
        message = f"not valid UTF-8 (byte {bad:#04x})"
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # (what Windows PowerShell's `>` writes)
            message += ": the file is UTF-16 (it begins with UTF-16's byte order mark); save it as UTF-8"
        raise InvalidInputError([Problem(where, message)]) from None
    return parse_yaml(text, path, keep_going=keep_going)
