"""Conditions that can never hold: tests of one field that contradict each other.

`status: {gt: 5, lt: 3}` compiles into a predicate that is always false: the rule loads and
never fires, which nobody would write on purpose. The tests of a field that must all hold (an
operator mapping, and the field's tests elsewhere in the same conjunction, through `all`) are
checked for a value that passes them all, read as the compiler reads them (no coercion: a
number is no text; a missing field passes only `exists: false`). Where none can, the test that
made it impossible is named, with one earlier test it contradicts.

Only what is certain is said: a regex, and a text compared ignoring case, only restrict the
kind of value (a text); the values they allow are not reasoned about, nor are the networks of
`cidr` beyond one lying within another.
"""

from __future__ import annotations

import ipaddress
import json
import operator
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from rulesd.document import JsonPath
from rulesd.rules.conditions import ConditionError, conjunct_items, is_number, resolved_matcher
from rulesd.rules.lists import Lists
from rulesd.rules.networks import Network, in_ipv6_space, parse_network

_NUMBER, _TEXT, _BOOL, _NULL, _LIST, _OTHER = "a number", "a text", "true or false", "null", "a list", "a mapping"
_ANY_KIND = frozenset({_NUMBER, _TEXT, _BOOL, _NULL, _LIST, _OTHER})
_KINDS = {
    **dict.fromkeys(("gt", "gte", "lt", "lte"), frozenset({_NUMBER})),
    **dict.fromkeys(("startswith", "endswith", "regex", "cidr", "not_cidr"), frozenset({_TEXT})),
}
_COMPARE = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
_ORDER = (_NUMBER, _TEXT, _BOOL, _NULL, _LIST, _OTHER)  # (kinds named in a stable order)


class Contradiction(NamedTuple):
    """A test (at `path`) that no value can pass together with the field's tests before it
    (`other`: one of them that it contradicts alone, if one does); `certain` when the rule (or
    its sequence step) can then never match, rather than a branch of `any`, what a `not`
    negates or an absent step's condition; `scope` says which."""

    path: JsonPath
    other: JsonPath | None
    reason: str
    certain: bool
    scope: str


class _Test(NamedTuple):
    op: str  # an operator; a scalar matcher is `equals`, a list `in`
    operand: Any
    path: JsonPath
    caseless: bool
    kinds: frozenset[str]  # the kinds of value it may hold for


def _test(op: str, operand: Any, path: JsonPath, caseless: bool = False) -> _Test:
    return _Test(op, operand, path, caseless, _kinds(op, operand))


def contradictions(cond: dict[str, Any], path: JsonPath, lists: Lists, scope: str = "") -> list[Contradiction]:
    """The contradictions of the compiled condition `cond`, written at `path` (`scope`
    "absent": an absent step's, which never matching is not certainly a mistake)."""
    if not _worth_a_look(cond, {}):
        return []
    found, _ = _scope(cond, path, lists, {}, scope)
    return found


def shared_field_clash(
    conditions: Sequence[tuple[dict[str, Any], JsonPath]], field: str, lists: Lists
) -> tuple[JsonPath, JsonPath | None, str] | None:
    """The first test of `field` in `conditions` (each with where it is written) that no
    value passes with the field's tests before it in them, when one value must pass them all
    (the steps of a sequence, whose events share their group_by values): where, one it
    contradicts alone (if one does), and why. Only the tests that must hold are read (through
    `all`, not into `any` or `not`)."""
    raw = [(w, at) for cond, path in conditions for key, w, at in conjunct_items(cond, path) if key == field]
    return _field_clash(raw, 0, lists) if len(raw) > 1 else None


def _worth_a_look(cond: dict[str, Any], outer: dict[str, Any]) -> bool:
    """Whether `cond` may hold a contradiction: a field tested twice where both must hold
    (`outer`: the fields tested around it), other than by text tests that never contradict
    each other, or an operator mapping whose operators may. Most conditions have neither, and
    are walked no further. (An over-estimate: the branches of `any` and `not` are looked at
    with the fields around them.)"""
    fields = dict(outer)
    branches: list[Any] = []
    if _unsafe(cond, fields, branches):
        return True
    return any(isinstance(b, dict) and _worth_a_look(b, fields) for b in branches)


def _unsafe(cond: dict[str, Any], fields: dict[str, Any], branches: list[Any]) -> bool:
    """Whether a field of the conjunction `cond` (through `all`) may have tests that
    contradict each other, given `fields` (each field tested so far, with its matcher, or the
    operators of its tests once it is tested twice); adds its fields to `fields` and its `any`
    and `not` conditions to `branches`."""
    for key, value in cond.items():
        if key == "all":
            if any(isinstance(sub, dict) and _unsafe(sub, fields, branches) for sub in value):
                return True
        elif key == "any":
            branches.extend(value)
        elif key == "not":
            branches.append(value)
        elif key not in fields:
            if value.__class__ is dict and len(value) > 1 and _operators(value) is None:
                return True
            fields[key] = value
        else:
            seen, ops = _operators(fields[key]), _operators(value)
            # (two texts a value starts or ends with may contradict; two it contains never do)
            if seen is None or ops is None or seen & ops & _AFFIXES:
                return True
            fields[key] = seen | ops
    return False


def _operators(matcher: Any) -> frozenset[str] | None:
    """The operators of a matcher if each is `_safe`, else None (a scalar or a list is not)."""
    if isinstance(matcher, frozenset):  # (a field's operators, already gathered)
        return matcher
    if isinstance(matcher, dict) and all(map(_safe, matcher.items())):
        return frozenset(matcher)
    return None


def _safe(item: tuple[str, Any]) -> bool:
    """An operator that, one of each kind in a mapping, contradicts none of the others that
    are: a test of texts (every text may start with one text and end with another), or one
    that rules out values."""
    op, operand = item
    return op in _SAFE and (op != "contains" or isinstance(operand, str))


_SAFE = frozenset({"startswith", "endswith", "contains", "regex", "nocase", "not_equals", "not_in"})
_AFFIXES = frozenset({"startswith", "endswith"})


_Raw = tuple[Any, JsonPath]  # a field's matcher as written, and where


def _scope(
    cond: dict[str, Any], path: JsonPath, lists: Lists, inherited: dict[str, list[_Raw]], scope: str
) -> tuple[list[Contradiction], bool]:
    """The contradictions of a conjunction, given the field tests that hold around it
    (`inherited`), and whether it can never hold."""
    items = conjunct_items(cond, path)
    fields = {key: list(raw) for key, raw in inherited.items()}
    for key, written, where in items:
        if key not in ("any", "not"):
            fields.setdefault(key, []).append((written, where))
    found: list[Contradiction] = []
    for key, raw in fields.items():
        outer = len(inherited.get(key, ()))
        # (nearly every field has one test: nothing to resolve or compare)
        if len(raw) == outer or sum(len(w) if isinstance(w, dict) else 1 for w, _ in raw) < 2:
            continue
        clash = _field_clash(raw, outer, lists)
        if clash is not None:
            found.append(Contradiction(*clash, not scope, scope))
    never = bool(found)
    for key, value, where in items:
        if key == "any":
            branches = [_scope(b, (*where, i), lists, fields, scope or "any") for i, b in enumerate(value)]
            if branches and all(impossible for _, impossible in branches) and not scope:
                never = True  # no branch can hold: neither can the rule
                branches = [([c._replace(certain=True, scope="") for c in f], True) for f, _ in branches]
            found.extend(c for f, _ in branches for c in f)
        elif key == "not":
            found.extend(_scope(value, where, lists, {}, "not")[0])
    return found, never


def _field_clash(raw: list[_Raw], outer: int, lists: Lists) -> tuple[JsonPath, JsonPath | None, str] | None:
    """The first of a field's tests (those after the `outer` inherited ones) that no value can
    pass with the tests before it: where, one it contradicts alone (if one does), and why."""
    known: list[_Test] = []
    for i, (written, where) in enumerate(raw):
        for test in _tests(written, where, lists):
            clash = _clash(known, test) if i >= outer else None
            if clash is not None:
                return (test.path, *clash)
            known.append(test)
        if i == outer - 1 and _never(known) is not None:  # said where the field is tested around it
            return None
    return None


def _tests(written: Any, where: JsonPath, lists: Lists) -> list[_Test]:
    try:
        matcher = resolved_matcher(written, where, lists)
    except ConditionError:  # (said where it was compiled)
        return []
    if isinstance(matcher, list):
        return [_test("in", matcher, where)]
    if not isinstance(matcher, dict):
        return [_test("equals", matcher, where)]
    caseless = matcher.get("nocase") is True
    return [_test(op, v, (*where, op), caseless) for op, v in matcher.items() if op != "nocase"]


def _clash(known: Sequence[_Test], test: _Test) -> tuple[JsonPath | None, str] | None:
    """Why no value passes `known` (which some value passes) and `test` too: one of `known`
    that `test` contradicts alone, if one does, and the reason; None if some value passes."""
    if _never([*known, test]) is None:
        return None
    for other in known:
        reason = _never([other, test])
        if reason is not None:
            return other.path, reason
    return None, _never([*known, test]) or ""


def _never(tests: Sequence[_Test]) -> str | None:
    """Why no value (nor a missing field) passes every one of `tests`; None if one may."""
    ops = {t.op for t in tests}
    if "exists" in ops:
        exists = {t.operand for t in tests if t.op == "exists"}
        if exists == {True, False}:
            return "a field cannot be both present and missing"
        if False in exists and len(ops) > 1:
            return "exists: false holds only for a missing field, and a missing field passes no other test"
    kinds = _ANY_KIND.intersection(*(t.kinds for t in tests))
    if not kinds:
        named = [" or ".join(k for k in _ORDER if k in t.kinds) for t in tests if t.kinds != _ANY_KIND]
        return f"no value is both {' and '.join(dict.fromkeys(named))}"
    if ops & _LOWER and ops & _UPPER and (why := _range(tests)):
        return why
    for op, verb in (("startswith", "starts"), ("endswith", "ends")):
        if op in ops and (why := _affixes(tests, op, verb)):
            return why
    if "cidr" in ops and "not_cidr" in ops and (why := _networks(tests)):
        return why
    return _values(tests) if ops & _EQUAL else None


def _networks(tests: Sequence[_Test]) -> str | None:
    """Why no address is inside the networks of a `cidr` and outside those of a `not_cidr`,
    if every network of the one lies within a network of the other (as written: a named list
    is not looked into)."""
    inside = [_written_networks(t.operand) for t in tests if t.op == "cidr"]
    outside = [_written_networks(t.operand) for t in tests if t.op == "not_cidr"]
    for nets in inside:
        for others in outside:
            if nets and others and all(any(n.subnet_of(o) for _, o in others) for _, n in nets):
                shown = ", ".join(str(n) for n, _ in nets)
                return f"every address in {shown} is in a network that not_cidr rules out"
    return None


def _written_networks(operand: Any) -> list[tuple[Network, ipaddress.IPv6Network]]:
    """The networks of a `cidr` operand written as text or a list of texts (none otherwise),
    each as written and in the one space addresses are looked up in (where
    `::ffff:10.0.0.0/104` is `10.0.0.0/8`)."""
    written = [operand] if isinstance(operand, str) else operand if isinstance(operand, list) else []
    try:
        return [(net, in_ipv6_space(net)) for net in map(parse_network, written)]
    except (TypeError, ValueError):  # (refused where it was compiled)
        return []


_LOWER, _UPPER, _EQUAL = frozenset({"gt", "gte"}), frozenset({"lt", "lte"}), frozenset({"equals", "in"})


def _kinds(op: str, operand: Any) -> frozenset[str]:
    """The kinds of value `op` with `operand` may hold for."""
    if op in ("equals", "in"):
        return frozenset(_kind(v) for v in (operand if op == "in" else [operand]))
    if op == "contains":
        return frozenset({_TEXT, _LIST} if isinstance(operand, str) else {_LIST})
    return _KINDS.get(op, _ANY_KIND)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return _BOOL
    if is_number(value):
        return _NUMBER
    kinds = {str: _TEXT, type(None): _NULL, list: _LIST}
    return kinds.get(type(value), _OTHER)


def _range(tests: Sequence[_Test]) -> str | None:
    """Why no number lies within the bounds of `gt`, `gte`, `lt`, `lte`, if none does."""
    low = max(((t.operand, t.op == "gt") for t in tests if t.op in ("gt", "gte")), default=None)
    high = min(((t.operand, t.op != "lt") for t in tests if t.op in ("lt", "lte")), default=None)
    if low is None or high is None or low[0] < high[0] or (low[0] == high[0] and not low[1] and high[1]):
        return None
    above = f"greater than {_show(low[0])}" if low[1] else f"at least {_show(low[0])}"
    below = f"at most {_show(high[0])}" if high[1] else f"less than {_show(high[0])}"
    return f"no number is {above} and {below}"


def _affixes(tests: Sequence[_Test], op: str, verb: str) -> str | None:
    """Why no text starts (ends) with every operand of `op`, if none does."""
    texts = [t.operand for t in tests if t.op == op and not t.caseless and isinstance(t.operand, str)]
    fits = str.startswith if op == "startswith" else str.endswith
    for i, a in enumerate(texts):
        for b in texts[i + 1 :]:
            if not (fits(a, b) or fits(b, a)):
                return f"no text {verb} with both {_show(a)} and {_show(b)}"
    return None


def _values(tests: Sequence[_Test]) -> str | None:
    """Why none of the values an exact `equals` or `in` allows passes every test, if none does."""
    allowed: dict[Any, Any] | None = None
    for t in tests:
        if t.op in ("equals", "in") and not t.caseless:
            values = t.operand if t.op == "in" else [t.operand]
            try:
                mine = {_key(v): v for v in values}
            except TypeError:  # (an unhashable operand: nothing said)
                return None
            allowed = mine if allowed is None else {k: v for k, v in allowed.items() if k in mine}
    if allowed is None:
        return None
    if allowed and any(all(_passes(t, v) for t in tests) for v in allowed.values()):
        return None
    if not allowed:
        return "they allow no value in common"
    shown = ", ".join(_show(v) for v in list(allowed.values())[:5])
    return f"the value must be {'one of ' if len(allowed) > 1 else ''}{shown}, which the other test rules out"


def _key(value: Any) -> tuple[str, Any]:
    """What equality compares (`1` equals `1.0`; `true` is not `1`)."""
    return _kind(value), value


def _passes(test: _Test, value: Any) -> bool:
    """Whether `value` may pass `test` (True where that is not reasoned about)."""
    op, operand, kind = test.op, test.operand, _kind(value)
    if kind not in test.kinds:
        return False
    if op == "not_equals":
        return test.caseless or _key(value) != _key(operand)
    if op == "not_in":
        return _key(value) not in {_key(v) for v in operand}
    if op in ("gt", "gte", "lt", "lte") and is_number(operand):
        return bool(_COMPARE[op](value, operand))
    if test.caseless or not isinstance(operand, str) or kind != _TEXT:
        return True
    if op == "startswith":
        return bool(value.startswith(operand))
    if op == "endswith":
        return bool(value.endswith(operand))
    return op != "contains" or operand in value


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def messages(found: Sequence[Contradiction]) -> Iterator[tuple[Contradiction, str]]:
    """Each contradiction with what it means for the rule (the place of `other` is the caller's
    to add)."""
    for c in found:
        if c.scope == "any":
            then = "this branch of any can never match"
        elif c.scope == "not":
            then = "what not negates can never hold, so the not always holds"
        elif c.scope == "absent":
            then = "the absent step's condition can never hold, so the rule fires after every step before it"
        else:
            then = "the rule can never fire"
        yield c, f"{c.reason}; {then}"
