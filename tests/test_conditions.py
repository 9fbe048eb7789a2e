"""The condition language: operators, matchers, missing fields, no coercion."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from rulesd.rules.conditions import ConditionError, compile_condition
from rulesd.validation import load_schema

EVENT: dict[str, Any] = {
    "service": "payments",
    "level": "error",
    "message": "upstream Timeout after 30s",
    "count": 3,
    "ratio": 0.5,
    "flag": True,
    "off": False,
    "nothing": None,
    "status_text": "500",
    "tags": ["red", "blue", 7],
    "http": {"status": 502, "method": "POST", "headers": {"host": "api.example.com"}},
    "items": [{"name": "first", "qty": 1}, {"name": "second", "qty": 2}],
    "numbered": {"0": "zero-key"},
}


def matches(condition: dict[str, Any], event: dict[str, Any] = EVENT) -> bool:
    """Compile `condition` as the loader does and evaluate it on `event`."""
    return compile_condition(condition).test(event)


OPERATOR_CASES = [
    # equals / not_equals
    ({"service": {"equals": "payments"}}, True),
    ({"service": {"equals": "billing"}}, False),
    ({"count": {"equals": 3}}, True),
    ({"count": {"equals": 3.0}}, True),
    ({"ratio": {"equals": 0.5}}, True),
    ({"flag": {"equals": True}}, True),
    ({"off": {"equals": False}}, True),
    ({"nothing": {"equals": None}}, True),
    ({"service": {"not_equals": "billing"}}, True),
    ({"service": {"not_equals": "payments"}}, False),
    ({"count": {"not_equals": "3"}}, True),
    # in / not_in
    ({"level": {"in": ["error", "critical"]}}, True),
    ({"level": {"in": ["warning", "info"]}}, False),
    ({"count": {"in": [1, 2, 3]}}, True),
    ({"count": {"in": ["3", True]}}, False),
    ({"nothing": {"in": [None, "x"]}}, True),
    ({"level": {"not_in": ["warning", "info"]}}, True),
    ({"level": {"not_in": ["error"]}}, False),
    ({"count": {"not_in": ["3"]}}, True),
    # contains: substring of a string, element of a list
    ({"message": {"contains": "Timeout"}}, True),
    ({"message": {"contains": "timeout"}}, False),
    ({"tags": {"contains": "blue"}}, True),
    ({"tags": {"contains": 7}}, True),
    ({"tags": {"contains": "7"}}, False),
    ({"tags": {"contains": "green"}}, False),
    ({"count": {"contains": 3}}, False),
    ({"http": {"contains": "status"}}, False),
    # startswith / endswith
    ({"message": {"startswith": "upstream"}}, True),
    ({"message": {"startswith": "Timeout"}}, False),
    ({"message": {"endswith": "30s"}}, True),
    ({"message": {"endswith": "upstream"}}, False),
    ({"count": {"startswith": "3"}}, False),
    ({"tags": {"startswith": "red"}}, False),
    # regex: re.search, case-sensitive unless the pattern says otherwise
    ({"message": {"regex": "timeout|refused"}}, False),
    ({"message": {"regex": "(?i)timeout|refused"}}, True),
    ({"message": {"regex": "Time.*\\d+s$"}}, True),
    ({"message": {"regex": "^Timeout"}}, False),
    ({"count": {"regex": "3"}}, False),
    ({"tags": {"regex": "red"}}, False),
    # ordering
    ({"count": {"gt": 2}}, True),
    ({"count": {"gt": 3}}, False),
    ({"count": {"gte": 3}}, True),
    ({"count": {"gte": 3.5}}, False),
    ({"count": {"lt": 4}}, True),
    ({"count": {"lt": 3}}, False),
    ({"count": {"lte": 3}}, True),
    ({"count": {"lte": 2.99}}, False),
    ({"ratio": {"gt": 0.25, "lt": 0.75}}, True),
    ({"http.status": {"gte": 500, "lt": 600}}, True),
    ({"http.status": {"gte": 500, "lt": 502}}, False),
    # exists
    ({"service": {"exists": True}}, True),
    ({"service": {"exists": False}}, False),
    ({"nothing": {"exists": True}}, True),
    ({"absent": {"exists": True}}, False),
    ({"absent": {"exists": False}}, True),
    # several operators in one mapping: all must hold
    ({"message": {"startswith": "upstream", "contains": "Timeout"}}, True),
    ({"message": {"startswith": "upstream", "contains": "refused"}}, False),
    ({"count": {"exists": True, "gte": 3}}, True),
    ({"count": {"exists": True, "gte": 4}}, False),
]

ADDRESSES: dict[str, Any] = {
    "v4": "10.1.2.3",
    "v4_public": "192.0.2.44",
    "v6": "2001:db8::7",
    "mapped": "::ffff:10.1.2.3",
    "scoped": "fe80::1%eth0",
    "text": "not-an-ip",
    "network": "10.0.0.0/8",
    "padded": " 10.1.2.3",
    "leading_zero": "010.1.2.3",
    "number": 167838211,
    "list": ["10.1.2.3"],
    "nothing": None,
}

CIDR_CASES = [
    ({"v4": {"cidr": "10.0.0.0/8"}}, True),
    ({"v4": {"cidr": ["192.168.0.0/16", "10.1.0.0/16"]}}, True),
    ({"v4": {"cidr": "10.1.2.3"}}, True),  # an address alone: a network of one
    ({"v4": {"cidr": "10.1.2.4"}}, False),
    ({"v4": {"cidr": "0.0.0.0/0"}}, True),
    ({"v4_public": {"cidr": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}}, False),
    ({"v4": {"cidr": "2001:db8::/32"}}, False),
    ({"v6": {"cidr": "2001:db8::/32"}}, True),
    ({"v6": {"cidr": ["10.0.0.0/8", "2001:db8::/64"]}}, True),
    ({"v6": {"cidr": "2001:db9::/32"}}, False),
    ({"v6": {"cidr": "0.0.0.0/0"}}, False),
    ({"v6": {"cidr": "::/0"}}, True),
    # IPv4-mapped IPv6 is the IPv4 address, both ways
    ({"mapped": {"cidr": "10.0.0.0/8"}}, True),
    ({"mapped": {"cidr": "11.0.0.0/8"}}, False),
    ({"v4": {"cidr": "::ffff:10.0.0.0/104"}}, True),
    ({"v4": {"cidr": "::ffff:0:0/96"}}, True),
    ({"scoped": {"cidr": "fe80::/10"}}, True),  # the scope is not part of the address
    ({"v4": {"not_cidr": "10.0.0.0/8"}}, False),
    ({"v4_public": {"not_cidr": ["10.0.0.0/8", "192.168.0.0/16"]}}, True),
    ({"mapped": {"not_cidr": "10.0.0.0/8"}}, False),
    # a value that is not an address string satisfies neither
    *[
        ({field: {op: "10.0.0.0/8"}}, False)
        for field in ("text", "network", "padded", "leading_zero", "number", "list", "nothing", "absent")
        for op in ("cidr", "not_cidr")
    ],
    ({"number": {"cidr": "0.0.0.0/0"}}, False),
    ({"v4": {"cidr": "10.0.0.0/8", "startswith": "10.1."}}, True),
    ({"v4": {"cidr": "10.0.0.0/8", "not_cidr": "10.1.0.0/16"}}, False),
]


@pytest.mark.parametrize(("condition", "expected"), CIDR_CASES)
def test_cidr_and_not_cidr(condition: dict[str, Any], expected: bool) -> None:
    """An address string inside (outside) the networks; IPv4-mapped IPv6 is its IPv4 address;
    anything that is not an address string satisfies neither operator."""
    assert expected == matches(condition, ADDRESSES)


TEXTS: dict[str, Any] = {
    "ascii": "Upstream TIMEOUT after 30s",
    "sharp_s": "Straße",
    "capital_sharp_s": "STRAẞE",
    "ss": "STRASSE",
    "sigma": "ΟΔΟΣ",
    "final_sigma": "οδος",
    "dotted_i": "İstanbul",
    "dotless_i": "ıstanbul",
    "plain_i": "istanbul",
    "kelvin": "\u212a",
    "georgian": "ა",
    "user": "Alice",
    "tags": ["Red", "blue", 7],
    "number": 7,
    "empty": "",
}

NOCASE_CASES = [
    ({"ascii": {"equals": "upstream timeout after 30s", "nocase": True}}, True),
    ({"ascii": {"equals": "upstream timeout after 30s"}}, False),
    ({"ascii": {"equals": "upstream timeout", "nocase": True}}, False),  # still the whole text
    ({"ascii": {"contains": "timeout", "nocase": True}}, True),
    ({"ascii": {"startswith": "UPSTREAM", "nocase": True}}, True),
    ({"ascii": {"startswith": "timeout", "nocase": True}}, False),
    ({"ascii": {"endswith": "30S", "nocase": True}}, True),
    ({"ascii": {"regex": "timeout after \\d+s$", "nocase": True}}, True),
    ({"ascii": {"regex": "timeout after \\d+s$"}}, False),
    ({"ascii": {"regex": "timeout", "nocase": False}}, False),
    ({"user": {"in": ["alice", "bob"], "nocase": True}}, True),
    ({"user": {"in": ["alic", "bob"], "nocase": True}}, False),
    ({"number": {"in": ["x", 7], "nocase": True}}, True),  # numbers compare as always
    ({"tags": {"contains": "RED", "nocase": True}}, True),  # a list item equal ignoring case
    ({"tags": {"contains": "re", "nocase": True}}, False),  # an item equal, not containing it
    ({"tags": {"contains": "red"}}, False),
    ({"empty": {"equals": "", "nocase": True}}, True),
    ({"empty": {"in": ["", "x"], "nocase": True}}, True),
    ({"ascii": {"in": ["", "x"], "nocase": True}}, False),
    ({"ascii": {"contains": "", "nocase": True}}, True),
    ({"number": {"contains": "7", "nocase": True}}, False),
    ({"absent": {"equals": "x", "nocase": True}}, False),
    # Unicode simple case folding: one character for one character
    ({"sharp_s": {"equals": "STRAẞE", "nocase": True}}, True),
    ({"capital_sharp_s": {"equals": "straße", "nocase": True}}, True),
    ({"ss": {"equals": "straße", "nocase": True}}, False),  # ß is not ss
    ({"sharp_s": {"equals": "strasse", "nocase": True}}, False),
    ({"sigma": {"equals": "οδος", "nocase": True}}, True),  # Σ, σ and ς fold together
    ({"final_sigma": {"equals": "ΟΔΟΣ", "nocase": True}}, True),
    ({"final_sigma": {"endswith": "σ", "nocase": True}}, True),
    ({"dotted_i": {"startswith": "i", "nocase": True}}, False),  # İ folds to nothing else
    ({"dotted_i": {"startswith": "İ", "nocase": True}}, True),
    ({"plain_i": {"startswith": "I", "nocase": True}}, True),
    ({"dotless_i": {"startswith": "I", "nocase": True}}, False),  # nor ı
    ({"kelvin": {"equals": "k", "nocase": True}}, True),
    ({"kelvin": {"in": ["K"], "nocase": True}}, True),
    ({"kelvin": {"regex": "^k$", "nocase": True}}, True),
    # as of Unicode 7.0: Georgian Mtavruli (Unicode 11) are compared exactly
    ({"georgian": {"equals": "Ა", "nocase": True}}, False),
    ({"georgian": {"equals": "ა", "nocase": True}}, True),
]


@pytest.mark.parametrize(("condition", "expected"), NOCASE_CASES)
def test_nocase(condition: dict[str, Any], expected: bool) -> None:
    """`nocase: true` makes the text operators beside it ignore case, by Unicode simple case
    folding (as Hyperscan's caseless matching, which decides them)."""
    assert expected == matches(condition, TEXTS)


@pytest.mark.parametrize("op", ["contains", "startswith", "endswith"])
def test_the_empty_text_under_nocase_is_in_every_text(op: str) -> None:
    """The empty text has no case: under `nocase` it is found in any text (as without it), and
    never in a number or a missing field."""
    condition = {"m": {op: "", "nocase": True}}
    assert [True, True, False, False] == [matches(condition, e) for e in ({"m": "Straße"}, {"m": ""}, {"m": 5}, {})]


@pytest.mark.parametrize(
    ("matcher", "message"),
    [
        ({"nocase": True}, "nocase needs a text operator beside it"),
        ({"exists": True, "nocase": True}, "nocase needs a text operator beside it"),
        ({"equals": 5, "nocase": True}, "nocase needs a text operator beside it"),
        ({"in": [1, 2], "gt": 0, "nocase": True}, "nocase needs a text operator beside it"),
        ({"not_in": ["a"], "nocase": True}, r"nocase does not apply to not_in.*not: \{user: \{in: …"),
        ({"equals": "a", "not_equals": "b", "nocase": True}, "nocase does not apply to not_equals"),
    ],
)
def test_nocase_where_it_would_change_nothing_is_refused(matcher: dict[str, Any], message: str) -> None:
    """`nocase` with no text to compare beside it, or beside an operator it does not change,
    is an error at `nocase`."""
    with pytest.raises(ConditionError, match=message) as raised:
        matches({"user": matcher}, TEXTS)
    assert ("user", "nocase") == raised.value.path


@pytest.mark.parametrize(
    ("operand", "path", "message"),
    [
        ("10.0.0.0/33", ("ip", "cidr"), "invalid network '10.0.0.0/33': '33' is not a valid netmask"),
        ("10.1.2.3/8", ("ip", "cidr"), "has host bits set \\(the network is 10.0.0.0/8\\)"),
        (["10.0.0.0/8", "2001:db8::/129"], ("ip", "cidr", 1), "'129' is not a valid netmask"),
        (["office"], ("ip", "cidr", 0), "invalid network 'office'"),
        ("", ("ip", "cidr"), "invalid network ''"),
    ],
)
def test_an_invalid_network_is_refused_at_its_place(operand: Any, path: tuple[Any, ...], message: str) -> None:
    """A network that `ipaddress` does not read (or that has host bits set) is an error at the
    network, saying why."""
    with pytest.raises(ConditionError, match=message) as raised:
        matches({"ip": {"cidr": operand}}, ADDRESSES)
    assert path == raised.value.path


NAN = float("nan")


@pytest.mark.parametrize(
    ("condition", "path"),
    [
        ({"ratio": NAN}, ("ratio",)),
        ({"ratio": [1, NAN]}, ("ratio", 1)),
        ({"ratio": {"equals": NAN}}, ("ratio", "equals")),
        ({"ratio": {"not_equals": NAN}}, ("ratio", "not_equals")),
        ({"ratio": {"in": ["a", NAN]}}, ("ratio", "in", 1)),
        ({"ratio": {"not_in": [NAN]}}, ("ratio", "not_in", 0)),
        ({"tags": {"contains": NAN}}, ("tags", "contains")),
        ({"not": {"any": [{"ratio": NAN}]}}, ("not", "any", 0, "ratio")),
    ],
)
def test_equality_with_nan_is_refused_at_its_place(condition: dict[str, Any], path: tuple[Any, ...]) -> None:
    """NaN equals nothing, not even itself: a test with it could never hold (or, negated,
    always would), so it is an error at the NaN, as it is for the ordering operators."""
    with pytest.raises(ConditionError, match=r"cannot compare with \.nan: NaN is equal to nothing") as raised:
        matches(condition)
    assert path == raised.value.path


BEYOND = 99999999999999999999  # beyond 64 bits: a JSON line's is read as the float 1e+20


@pytest.mark.parametrize(
    ("condition", "path"),
    [
        ({"id": BEYOND}, ("id",)),
        ({"id": [1, BEYOND]}, ("id", 1)),
        ({"id": {"equals": -(2**63) - 3}}, ("id", "equals")),
        ({"id": {"not_equals": BEYOND}}, ("id", "not_equals")),
        ({"id": {"in": ["a", 10**400]}}, ("id", "in", 1)),
        ({"ids": {"contains": BEYOND}}, ("ids", "contains")),
    ],
)
def test_equality_with_an_integer_no_event_holds_is_refused_at_its_place(
    condition: dict[str, Any], path: tuple[Any, ...]
) -> None:
    """An integer beyond 64 bits in a JSON line is read as the nearest float, which such an
    operand never equals: a test that could never hold (or, negated, always would), an error
    at the integer."""
    with pytest.raises(ConditionError, match=r"no event holds .*: a JSON line's integer beyond 64 bits") as raised:
        matches(condition)
    assert path == raised.value.path


@pytest.mark.parametrize(
    ("operand", "held"), [(2**64 - 1, 2**64 - 1), (-(2**63), -(2**63)), (2**70, 2.0**70), (-(2**64), -(2.0**64))]
)
def test_an_integer_an_event_may_hold_or_equal_is_compared(operand: int, held: float) -> None:
    """Up to 64 bits an event holds the integer itself; beyond, an integer a double holds
    exactly is equal to the float a line's is read as: neither is refused."""
    assert matches({"id": operand}, {"id": held})
    assert matches({"id": {"in": [operand]}}, {"id": held})


@pytest.mark.parametrize(("condition", "expected"), OPERATOR_CASES)
def test_operator(condition: dict[str, Any], expected: bool) -> None:
    """Each operator decides as the README's operator table says."""
    assert expected == matches(condition)


MATCHER_CASES = [
    ({"service": "payments"}, True),
    ({"service": "billing"}, False),
    ({"count": 3}, True),
    ({"count": 3.0}, True),
    ({"ratio": 0.5}, True),
    ({"flag": True}, True),
    ({"off": False}, True),
    ({"nothing": None}, True),
    ({"absent": None}, False),
    ({"level": ["error", "critical"]}, True),
    ({"level": ["warning", "info"]}, False),
    ({"count": [1, 3]}, True),
    ({"count": ["3", True]}, False),
    ({"nothing": [None]}, True),
    ({"absent": [None, "x"]}, False),
    ({"tags": ["red", "blue", 7]}, False),  # a list matcher compares to a scalar, never to a list
    ({"service": "payments", "level": "error"}, True),
    ({"service": "payments", "level": "warning"}, False),
]


@pytest.mark.parametrize(("condition", "expected"), MATCHER_CASES)
def test_scalar_and_list_matchers(condition: dict[str, Any], expected: bool) -> None:
    """A scalar matcher means equals; a list means equals any of."""
    assert expected == matches(condition)


MISSING_CASES = [
    {"absent": "x"},
    {"absent": ["x", "y"]},
    {"absent": {"equals": "x"}},
    {"absent": {"not_equals": "x"}},
    {"absent": {"in": ["x"]}},
    {"absent": {"not_in": ["x"]}},
    {"absent": {"contains": "x"}},
    {"absent": {"startswith": "x"}},
    {"absent": {"endswith": "x"}},
    {"absent": {"regex": ".*"}},
    {"absent": {"gt": 0}},
    {"absent": {"gte": 0}},
    {"absent": {"lt": 0}},
    {"absent": {"lte": 0}},
    {"absent": {"exists": True}},
    {"absent": {"exists": False, "not_equals": "x"}},
    {"http.missing": {"not_equals": 1}},
    {"items.5.name": {"not_in": ["first"]}},
]


@pytest.mark.parametrize("condition", MISSING_CASES)
def test_missing_field_satisfies_nothing_but_exists_false(condition: dict[str, Any]) -> None:
    """A missing field fails every matcher, negative ones included."""
    assert matches(condition) is False


@pytest.mark.parametrize("path", ["absent", "http.missing", "items.9.name", "service.deeper"])
def test_missing_field_satisfies_exists_false(path: str) -> None:
    """`exists: false` holds exactly when the path leads nowhere."""
    assert matches({path: {"exists": False}}) is True


COERCION_CASES = [
    ({"status_text": 500}, False),
    ({"status_text": {"equals": 500}}, False),
    ({"status_text": {"in": [500]}}, False),
    ({"status_text": "500"}, True),
    ({"http.status": "502"}, False),
    ({"http.status": {"in": ["502"]}}, False),
    ({"flag": 1}, False),
    ({"flag": {"equals": 1}}, False),
    ({"flag": {"in": [1]}}, False),
    ({"count": True}, False),
    ({"off": 0}, False),
    ({"nothing": False}, False),
    ({"nothing": ""}, False),
    ({"nothing": 0}, False),
    ({"count": 3.0}, True),
    ({"ratio": {"in": [0.5, "x"]}}, True),
    ({"status_text": {"gt": 100}}, False),
    ({"status_text": {"lte": 1000}}, False),
    ({"flag": {"gte": 0}}, False),
    ({"flag": {"lt": 2}}, False),
    ({"nothing": {"lt": 1}}, False),
    ({"tags": {"gt": 0}}, False),
    ({"http": {"gt": 0}}, False),
]


@pytest.mark.parametrize(("condition", "expected"), COERCION_CASES)
def test_no_coercion(condition: dict[str, Any], expected: bool) -> None:
    """`"500"` is not 500, true is not 1, 1 equals 1.0, ordering needs numbers."""
    assert expected == matches(condition)


@pytest.mark.parametrize(
    ("event", "expected"),
    [({"n": 1}, True), ({"n": 1.0}, True), ({"n": True}, False), ({"n": "1"}, False)],
)
def test_integer_operand_equals_only_numbers(event: dict[str, Any], expected: bool) -> None:
    """`n: 1` matches the numbers 1 and 1.0 only."""
    assert expected == matches({"n": 1}, event)


@pytest.mark.parametrize(
    ("event", "expected"),
    [({"n": True}, True), ({"n": 1}, False), ({"n": 1.0}, False), ({"n": "true"}, False)],
)
def test_boolean_operand_equals_only_booleans(event: dict[str, Any], expected: bool) -> None:
    """`n: true` matches the boolean true only."""
    assert expected == matches({"n": True}, event)


COMBINATOR_CASES = [
    ({"all": [{"service": "payments"}, {"level": "error"}]}, True),
    ({"all": [{"service": "payments"}, {"level": "warning"}]}, False),
    ({"any": [{"service": "billing"}, {"level": "error"}]}, True),
    ({"any": [{"service": "billing"}, {"level": "warning"}]}, False),
    ({"not": {"service": "billing"}}, True),
    ({"not": {"service": "payments"}}, False),
    ({"not": {"absent": "x"}}, True),  # the inner condition fails, so `not` holds
    ({"not": {"absent": {"exists": False}}}, False),
    ({"any": [{"all": [{"service": "payments"}, {"not": {"level": "error"}}]}, {"count": 3}]}, True),
    ({"any": [{"all": [{"service": "payments"}, {"not": {"level": "error"}}]}, {"count": 4}]}, False),
    (
        {
            "all": [
                {"any": [{"level": "warning"}, {"http.status": {"gte": 500}}]},
                {"not": {"not": {"flag": True}}},
            ]
        },
        True,
    ),
    ({"service": "payments", "any": [{"level": "info"}, {"level": "debug"}]}, False),
    ({"service": "payments", "not": {"any": [{"level": "info"}, {"level": "debug"}]}}, True),
    ({"all": [{"all": [{"all": [{"service": "payments"}]}]}]}, True),
    ({"any": [{"any": [{"any": [{"service": "billing"}]}]}]}, False),
]


@pytest.mark.parametrize(("condition", "expected"), COMBINATOR_CASES)
def test_all_any_not_nest(condition: dict[str, Any], expected: bool) -> None:
    """`all`, `any` and `not` combine conditions to any depth."""
    assert expected == matches(condition)


PATH_CASES = [
    ({"http.status": 502}, True),
    ({"http.method": "POST"}, True),
    ({"http.headers.host": "api.example.com"}, True),
    ({"http.headers.host.more": {"exists": False}}, True),
    ({"items.0.name": "first"}, True),
    ({"items.1.name": "second"}, True),
    ({"items.1.qty": {"gt": 1}}, True),
    ({"items.2.name": {"exists": False}}, True),
    ({"items.0": {"exists": True}}, True),
    ({"items.-1.name": {"exists": False}}, True),
    ({"items.first.name": {"exists": False}}, True),
    ({"tags.0": "red"}, True),
    ({"tags.2": 7}, True),
    ({"numbered.0": "zero-key"}, True),
    ({"message.0": {"exists": False}}, True),  # strings are not indexed
    ({"service.name": {"exists": False}}, True),
]


@pytest.mark.parametrize(("condition", "expected"), PATH_CASES)
def test_dotted_paths(condition: dict[str, Any], expected: bool) -> None:
    """Dotted paths walk mappings; numeric segments also index lists."""
    assert expected == matches(condition)


def test_dotted_path_is_not_a_literal_key() -> None:
    """`http.status` walks into `http`; it does not read a key containing a dot."""
    assert matches({"http.status": 1}, {"http.status": 1}) is False


@pytest.mark.parametrize(
    ("regex", "construct"),
    [
        ("^a(b)\\1$", "backreferences"),
        ("^(?P<x>a)(?P=x)$", "backreferences"),
        ("time(?=out)", "look-ahead assertions"),
        ("(?<!dis)connect", "look-behind assertions"),
        ("(?>a+)b", "atomic groups"),
        ("a++b", "possessive quantifiers"),
        ("^(a)?(?(1)b|c)$", "conditional groups"),
    ],
)
def test_regexes_that_need_backtracking_are_refused(regex: str, construct: str) -> None:
    """Constructs no linear-time engine runs are refused, naming the construct."""
    with pytest.raises(ConditionError, match=f"is refused: {construct} are not supported"):
        matches({"s": {"regex": regex}}, {"s": "x"})


def test_every_table_entry_is_a_schema_valid_condition() -> None:
    """The tables above are written in the rule language that `rulesd check` accepts."""
    validator = Draft202012Validator(load_schema("rule"))
    tables = [OPERATOR_CASES, MATCHER_CASES, COERCION_CASES, COMBINATOR_CASES, PATH_CASES, CIDR_CASES, NOCASE_CASES]
    conditions = [c for table in tables for c, _ in table] + MISSING_CASES
    invalid = [c for c in conditions if not validator.is_valid({"name": "t", "match": c})]
    assert [] == invalid
