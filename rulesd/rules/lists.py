"""Named lists: values written once under a rule file's top-level `lists:` and used as `$name`.

A list is visible to every rule file loaded with it (as Falco's lists are), and each name is
defined once in the whole rule set. `$name` is an operand wherever a list is taken: `in`,
`not_in`, `cidr`, `not_cidr`, and a field's matcher itself (`user: $admins`, equal to any of
them). A text that really starts with `$` is written with the `$` doubled (`$$HOME` is the
text `$HOME`), in every operand but a regex (where `$` is an anchor and nothing is a list)
and in the items of lists. The operand is resolved while a condition compiles
(`resolve_operand`), and `reference_problems` finds every misuse in a condition beforehand,
so that `rulesd check` reports all of them at once, each at its `$name`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
from msgspec.structs import force_setattr

from rulesd.deferred_regex import when_used
from rulesd.document import Document, JsonPath
from rulesd.errors import Problem, SourceLocation
from rulesd.rules.networks import NetworkError, Networks, networks_of
from rulesd.rules.view import INT_MAX, INT_MIN

LIST_OPERATORS = ("in", "not_in", "cidr", "not_cidr")
"""The operators whose operand may be a named list (besides a field's matcher itself)."""
NAME = when_used(r"[A-Za-z_][A-Za-z0-9_-]{0,99}")  # (compiled for a rule set that names a list)
_NETWORK_OPERATORS = ("cidr", "not_cidr")
NAN_MESSAGE = "cannot compare with .nan: NaN is equal to nothing, not even itself"


def equality_problem(value: Any) -> str | None:
    """Why no event's value is ever equal to `value`: NaN, or an integer no event holds (see
    `unheld_integer`); None for any other value."""
    if isinstance(value, float) and math.isnan(value):
        return NAN_MESSAGE
    if type(value) is int and not INT_MIN <= value <= INT_MAX:
        return unheld_integer(value, exact=True)
    return None


def unheld_integer(value: Any, *, exact: bool = False) -> str | None:
    """Why no event holds the integer `value`, or None if one may: an integer beyond 64 bits in
    a JSON line is read as the nearest float (or, beyond a double, makes the line invalid), and a
    typed field or journald converts none. With `exact`, None also for an integer that float
    holds exactly (`2**70`): an event's float is then equal to it."""
    if type(value) is not int or INT_MIN <= value <= INT_MAX:
        return None
    try:
        near = float(value)
    except OverflowError:
        read = "beyond a double, makes the line invalid"
    else:
        if exact and near == value:
            return None
        read = f"is read as the nearest float, {near!r}"
    digits = str(value)
    written = digits if len(digits) <= 40 else f"an integer of {len(digits)} digits"
    return (
        f"no event holds {written}: a JSON line's integer beyond 64 bits {read}; quote it to compare it "
        "as text, as the events must quote it to keep it exact"
    )


class NamedList(msgspec.Struct, frozen=True, eq=False):
    """A list defined under `lists:`: its values (with `$$` read as `$`), where it is, and what
    its values are compiled into once for all the rules that use it."""

    # (a struct rather than a dataclass: making a dataclass's class writes and compiles its
    # methods' source, ~4.7 M instructions of every start; its last three fields are its own)
    name: str
    values: tuple[Any, ...]
    location: SourceLocation
    items: tuple[SourceLocation, ...] = ()  # where each value is written
    broken: bool = False  # the definition has errors of its own (reported there)
    options: frozenset[Any] = frozenset()
    """The values as a set (for `in` and a field's matcher)."""
    networks: Networks | None = None
    """The values as networks (for `cidr`), or None if one is not a network (see `network_issue`)."""
    network_issue: str | None = None
    """Why the values are not networks: the first that is not one, where it is, and why."""

    def __post_init__(self) -> None:
        issue, written = None, []
        for value, where in zip(self.values, self.items, strict=False):
            if not isinstance(value, str):
                issue = f"{json.dumps(value)} at {where} is not a network"
                break
            written.append(value)
        if issue is None:
            try:
                networks = networks_of(tuple(written))
            except NetworkError as exc:
                issue = f"{exc} (at {self.items[exc.index]})" if exc.index < len(self.items) else str(exc)
        force_setattr(self, "network_issue", issue)
        force_setattr(self, "networks", networks if issue is None else None)
        force_setattr(self, "options", frozenset(v for v in self.values if _hashable(v)))

    def is_networks(self) -> bool:
        """Whether every item is a network and one at least is written with a prefix length
        (`10.0.0.0/8`): a list for `cidr`, which `in` would compare as text."""
        return self.networks is not None and any("/" in v for v in self.values)


def _hashable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


Lists = Mapping[str, NamedList]
NO_LISTS: Lists = {}


class ListError(ValueError):
    """A misused `$`: `path` locates it within the operand (an item's index, or nothing)."""

    def __init__(self, path: tuple[int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


def reference(value: Any) -> str | None:
    """The name `value` refers to (`$admins` -> `admins`), or None if it is no reference
    (not a text, not starting with `$`, or a text written with `$$`)."""
    if isinstance(value, str) and value.startswith("$") and not value.startswith("$$"):
        return value[1:]
    return None


def literal(value: Any) -> Any:
    """A text as it is meant, `$$` at its start read as `$`; any other value as it is."""
    return value[1:] if isinstance(value, str) and value.startswith("$$") else value


def resolve_operand(op: str | None, operand: Any, lists: Lists) -> Any:
    """The operand of `op` (None: a field's matcher itself) as its test takes it: the
    `NamedList` that `$name` names, a text for `$$text`, a list's items read so; ListError
    says what is wrong with it."""
    if op == "regex":
        return operand  # a regex's `$` is an anchor
    name = reference(operand)
    if name is not None:
        return _named(op, name, lists)
    if isinstance(operand, list):
        for item in operand:  # (the usual list, no text starting with `$`: read as it is, in one pass)
            if isinstance(item, str) and item[:1] == "$":
                break
        else:
            return operand[:]
        for i, item in enumerate(operand):
            if reference(item) is not None:
                message = f"an item of a list cannot be a named list (lists are not merged); write ${item} for the text"
                raise ListError((i,), f"{message} {item!r}")
        return [literal(item) for item in operand]
    if op in ("in", "not_in") and isinstance(operand, str):
        raise ListError((), f"{op} takes a list of values or a named list, not the text {literal(operand)!r}")
    return literal(operand)


def _named(op: str | None, name: str, lists: Lists) -> NamedList:
    """The list `$name` names, if `op` may take it."""
    written = f"${name}"
    if op is not None and op not in LIST_OPERATORS:
        raise ListError(
            (),
            f"{op} takes one value, not a named list (lists go with in, not_in, cidr, not_cidr or as the "
            f"field's matcher); write ${written} for the text {written!r}",
        )
    if NAME().fullmatch(name) is None:
        raise ListError((), f"{written!r} is not a list name (write ${written} for the text {written!r})")
    named = lists.get(name)
    if named is None:
        raise ListError((), f"undefined list {written}{_suggestion(name, lists)}")
    if named.broken:
        raise ListError((), f"the list {written} defined at {named.location} has errors")
    if op in _NETWORK_OPERATORS:
        if named.network_issue is not None:
            raise ListError((), f"{op} needs networks, and {written} ({named.location}) holds {named.network_issue}")
    elif named.is_networks():
        example = f"{{cidr: {written}}}" if op in (None, "in") else f"{{not_cidr: {written}}}"
        raise ListError(
            (),
            f"{written} ({named.location}) is a list of networks, which {op or 'a field matcher'} would compare "
            f"as text: to test addresses, write {example}",
        )
    return named


def _suggestion(name: str, lists: Lists) -> str:
    if not lists:
        return " (no lists are defined: a rule file defines them under a top-level lists:)"
    import difflib  # (only for this message)

    close = difflib.get_close_matches(name, list(lists), n=1, cutoff=0.6)
    if close:
        return f"; did you mean ${close[0]}?"
    return f" (defined: {', '.join('$' + n for n in sorted(lists)[:10])}{', …' if len(lists) > 10 else ''})"


def reference_problems(cond: Any, lists: Lists, path: JsonPath = ()) -> list[tuple[JsonPath, str]]:
    """Every misused `$` in a condition, each with its path (within the condition) and why."""
    problems: list[tuple[JsonPath, str]] = []
    for where, op, operand in operands(cond, path):
        try:
            resolve_operand(op, operand, lists)
        except ListError as exc:
            problems.append(((*where, *exc.path), str(exc)))
    return problems


def lists_used(cond: Any, lists: Lists) -> dict[str, NamedList]:
    """The named lists a condition refers to, by name (those defined)."""
    if not lists:  # (most rule sets define none: their conditions need no walk, ~2% of a warm check)
        return {}
    names = (reference(operand) for _, op, operand in operands(cond, ()) if op != "regex")
    return {name: lists[name] for name in names if name is not None and name in lists}


def operands(cond: Any, path: JsonPath) -> Iterator[tuple[JsonPath, str | None, Any]]:
    """(path, operator or None for a field's matcher, operand) of every field test."""
    if not isinstance(cond, dict):
        return
    for key, value in cond.items():
        where = (*path, key)
        if key in ("all", "any") and isinstance(value, list):
            for i, sub in enumerate(value):
                yield from operands(sub, (*where, i))
        elif key == "not":
            yield from operands(value, where)
        elif isinstance(value, dict):
            for op, operand in value.items():
                if op not in ("exists", "nocase"):
                    yield (*where, op), op, operand
        else:
            yield where, None, value


def read_lists(doc: Document, faulted: set[JsonPath]) -> tuple[dict[str, NamedList], list[Problem]]:
    """The lists a rule file defines, and the problems of their items (`$name` in an item,
    which lists do not allow). `faulted`: the document's schema violations (a list with one
    is kept, marked broken, so that its uses do not read as undefined)."""
    top = doc.value.get("lists") if isinstance(doc.value, dict) and "name" not in doc.value else None
    found: dict[str, NamedList] = {}
    problems: list[Problem] = []
    for name, values in top.items() if isinstance(top, dict) else ():
        base: JsonPath = ("lists", name)
        items = values if isinstance(values, list) else []
        broken = not isinstance(values, list) or any(v[:2] == base for v in faulted)
        for i, item in enumerate(items):
            why = _item_problem(item)
            if why is not None:
                problems.append(Problem(doc.locate((*base, i)), f"lists.{name}[{i}]: {why}"))
                broken = True
        found[str(name)] = NamedList(
            str(name),
            tuple(literal(item) for item in items),
            doc.locate(base, key=True),
            tuple(doc.locate((*base, i)) for i in range(len(items))),
            broken,
        )
    return found, problems


def _item_problem(item: Any) -> str | None:
    """Why `item` cannot be an item of a list: a `$name` (lists do not nest), or a value no
    event's equals, so an `in` would never find it (`equality_problem`)."""
    if reference(item) is not None:
        return f"lists do not nest: write ${item} for the text {item!r}"
    return equality_problem(item)


def merge_lists(per_file: list[dict[str, NamedList]]) -> tuple[dict[str, NamedList], list[Problem]]:
    """The lists of a whole rule set; a name defined in two places is an error at both."""
    merged: dict[str, NamedList] = {}
    problems: list[Problem] = []
    for lists in per_file:
        for name, named in lists.items():
            first = merged.setdefault(name, named)
            if first is not named:
                problems.append(Problem(named.location, f"list ${name} is defined twice (also at {first.location})"))
                problems.append(Problem(first.location, f"list ${name} is defined twice (also at {named.location})"))
    return merged, problems
