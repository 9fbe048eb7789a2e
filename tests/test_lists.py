"""Named lists: `lists:` defined once for the whole rule set, used as `$name` operands, every
misuse a `rulesd check` error at the `$name`'s place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from rulesd.engine import Engine
from rulesd.rules.index import RuleIndex
from rulesd.rules.lists import ListError, resolve_operand
from rulesd.rules.loader import check_paths, check_text, load_ruleset
from tests.ruletools import rules_from_yaml

LISTS = """
lists:
  admins: [alice, bob, "$$root"]
  office: [10.0.0.0/8, "2001:db8::/32"]
  hosts: [10.0.0.7, 10.0.0.8]
  codes: [500, 502, true]
rules:
"""

MATCH_CASES = [
    ({"user": "$admins"}, {"user": "bob"}, True),
    ({"user": "$admins"}, {"user": "carol"}, False),
    ({"user": "$admins"}, {"user": "$root"}, True),  # `$$root` is the text `$root`
    ({"user": "$admins"}, {"user": "$$root"}, False),
    ({"user": {"in": "$admins"}}, {"user": "alice"}, True),
    ({"user": {"in": "$admins", "nocase": True}}, {"user": "ALICE"}, True),
    ({"user": {"in": "$admins"}}, {"user": "ALICE"}, False),
    ({"user": {"not_in": "$admins"}}, {"user": "carol"}, True),
    ({"user": {"not_in": "$admins"}}, {"user": "bob"}, False),
    ({"user": {"not_in": "$admins"}}, {}, False),  # a missing field satisfies only exists: false
    ({"ip": {"cidr": "$office"}}, {"ip": "10.9.8.7"}, True),
    ({"ip": {"cidr": "$office"}}, {"ip": "::ffff:10.9.8.7"}, True),
    ({"ip": {"not_cidr": "$office"}}, {"ip": "2001:db8::1"}, False),
    ({"ip": {"not_cidr": "$office"}}, {"ip": "192.0.2.1"}, True),
    ({"ip": {"not_cidr": "$office"}}, {"ip": "not-an-ip"}, False),
    ({"ip": "$hosts"}, {"ip": "10.0.0.7"}, True),  # bare addresses: a list for in and for cidr
    ({"ip": {"cidr": "$hosts"}}, {"ip": "::ffff:10.0.0.8"}, True),
    ({"code": "$codes"}, {"code": 502.0}, True),
    ({"code": {"in": "$codes"}}, {"code": True}, True),
    ({"code": {"in": "$codes"}}, {"code": "500"}, False),  # no coercion
    ({"price": "$$5"}, {"price": "$5"}, True),
    ({"price": {"equals": "$$5", "not_equals": "$$6"}}, {"price": "$5"}, True),
    ({"price": {"startswith": "$$"}}, {"price": "$5"}, True),
    ({"price": {"contains": "$$HOME/"}}, {"price": "cd $HOME/x"}, True),
    ({"price": ["$$5", "$$6"]}, {"price": "$6"}, True),
    ({"price": {"regex": "5\\$"}}, {"price": "$5$"}, True),  # a regex is read as written
    ({"price": {"regex": "^\\$\\$"}}, {"price": "$$"}, True),
]


@pytest.mark.parametrize(("match", "event", "expected"), MATCH_CASES)
def test_a_named_list_is_the_operand_it_names(match: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    """`$name` in a list operand is the list's values (a field's matcher: any of them); `$$`
    writes a text starting with `$`, except in a regex."""
    rule = rules_from_yaml(LISTS + yaml.safe_dump([{"name": "r", "match": match}]))["r"]
    assert expected == rule.match(event)
    if expected:  # the index files the rule under the list's values, never skipping a match
        assert rule in RuleIndex([rule]).candidates(event)


def check(text: str) -> list[str]:
    """`rulesd check` of one file's text: `line:col: message` of every problem."""
    return [f"{p.location.line}:{p.location.col}: {p.message}" for p in check_text(text, "r.yaml").problems]


def test_every_misused_name_is_an_error_at_its_place() -> None:
    """An undefined name (with did-you-mean), a list where one value is taken, a list in a
    list, a non-network list with cidr and a network list with in: each at its `$name`, all
    in one check (a regex's `$` is its own)."""
    text = """\
lists:
  admins: [alice, bob]
  office: [10.0.0.0/8, 192.168.0.0/16]
  mixed: [10.0.0.0/8, office-lan]
rules:
  - name: r
    match:
      user: {in: $admnis}
      a: {equals: $admins}
      b: [carol, $admins]
      c: {cidr: $admins}
      d: {in: $office}
      e: $office
      f: {cidr: $mixed}
      g: "$5"
      h: {in: "$$admins"}
      i: {regex: "[$]admins"}
"""
    assert [
        "8:18: rules[0].match.user.in: undefined list $admnis; did you mean $admins?",
        "9:19: rules[0].match.a.equals: equals takes one value, not a named list (lists go with in, not_in, cidr, "
        "not_cidr or as the field's matcher); write $$admins for the text '$admins'",
        "10:18: rules[0].match.b[1]: an item of a list cannot be a named list (lists are not merged); write "
        "$$admins for the text '$admins'",
        "11:17: rules[0].match.c.cidr: cidr needs networks, and $admins (r.yaml:2:3) holds invalid network "
        "'alice': Expected 4 octets in 'alice' (at r.yaml:2:12)",
        "12:15: rules[0].match.d.in: $office (r.yaml:3:3) is a list of networks, which in would compare as text: "
        "to test addresses, write {cidr: $office}",
        "13:10: rules[0].match.e: $office (r.yaml:3:3) is a list of networks, which a field matcher would compare "
        "as text: to test addresses, write {cidr: $office}",
        "14:17: rules[0].match.f.cidr: cidr needs networks, and $mixed (r.yaml:4:3) holds invalid network "
        "'office-lan': Expected 4 octets in 'office-lan' (at r.yaml:4:23)",
        "15:10: rules[0].match.g: '$5' is not a list name (write $$5 for the text '$5')",
        "16:15: rules[0].match.h.in: in takes a list of values or a named list, not the text '$admins'",
    ] == check(text)


def test_a_misused_name_does_not_hide_the_other_problems_of_its_condition() -> None:
    """The sound entries beside a misused `$name` are still checked."""
    text = 'rules:\n  - name: r\n    match: {user: $nope, level: {regex: "a(?=b)"}}\n'
    assert [
        "3:19: rules[0].match.user: undefined list $nope (no lists are defined: a rule file defines them under a "
        "top-level lists:)",
        "3:41: rules[0].match.level.regex: regex 'a(?=b)' is refused: look-ahead assertions are not supported at "
        "position 2; regexes must run in time linear in the text (the syntax RE2 and Hyperscan share)",
    ] == check(text)


def test_an_undefined_name_without_any_lists_says_where_lists_are_defined() -> None:
    """With no lists at all, the error says how to define one; with many, it names some."""
    assert [
        "3:19: rules[0].match.user: undefined list $admins (no lists are defined: a rule file defines them "
        "under a top-level lists:)"
    ] == check("rules:\n  - name: r\n    match: {user: $admins}\n")
    text = "lists: {a: [1], b: [2]}\nrules:\n  - name: r\n    match: {user: $zzz}\n"
    assert ["4:19: rules[0].match.user: undefined list $zzz (defined: $a, $b)"] == check(text)


def test_a_list_does_not_name_another_and_its_errors_do_not_read_as_undefined() -> None:
    """A list's item `$name` is an error at the item; its uses say the list has errors."""
    text = """\
lists:
  admins: [alice]
  all: [$admins, carol]
  bad: 5
rules:
  - {name: r, match: {user: $all, host: {in: $bad}}}
"""
    assert [
        "3:9: lists.all[0]: lists do not nest: write $$admins for the text '$admins'",
        "4:8: lists.bad: expected a list, got 5",
        "6:29: rules[0].match.user: the list $all defined at r.yaml:3:3 has errors",
        "6:46: rules[0].match.host.in: the list $bad defined at r.yaml:4:3 has errors",
    ] == check(text)


def test_nan_in_a_list_is_an_error_at_the_item() -> None:
    """NaN equals nothing: `in: $codes` would never find it. An error at the item, and its uses
    say the list has errors."""
    text = """\
lists:
  codes: [500, .nan]
rules:
  - {name: r, match: {status: $codes}}
"""
    assert [
        "2:16: lists.codes[1]: cannot compare with .nan: NaN is equal to nothing, not even itself",
        "4:31: rules[0].match.status: the list $codes defined at r.yaml:2:3 has errors",
    ] == check(text)


def test_an_integer_beyond_64_bits_in_a_list_is_an_error_at_the_item() -> None:
    """A JSON line's integer beyond 64 bits is read as the nearest float (1e+20), which the
    list's integer never equals: `in: $ids` would never find it."""
    text = """\
lists:
  ids: [1, 99999999999999999999]
rules:
  - {name: r, match: {id: $ids}}
"""
    assert [
        "2:12: lists.ids[1]: no event holds 99999999999999999999: a JSON line's integer beyond 64 bits is read "
        "as the nearest float, 1e+20; quote it to compare it as text, as the events must quote it to keep it exact",
        "4:27: rules[0].match.id: the list $ids defined at r.yaml:2:3 has errors",
    ] == check(text)


@pytest.mark.parametrize(
    ("lists", "expected"),
    [
        ("{Admins-2: [a], _x: [b]}", []),
        (
            "{2admins: [a]}",
            [
                "1:9: lists[\"2admins\"]: invalid key: a list name starts with a letter or '_', then up to 99 "
                "letters, digits, '_' or '-'"
            ],
        ),
        ("{admins: []}", ["1:17: lists.admins: must not be empty"]),
        ("{admins: [[a]]}", ["1:18: lists.admins[0]: expected a string, a number, a boolean or null, got a list"]),
    ],
)
def test_list_names_and_items_are_checked_by_the_schema(lists: str, expected: list[str]) -> None:
    """Names like identifiers, at least one item, items plain values."""
    assert expected == check(f"lists: {lists}\nrules: []\n")


def _write(directory: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (directory / name).write_text(text)


def test_lists_are_visible_to_every_file_of_the_rule_set(tmp_path: Path) -> None:
    """A file holding only `lists:` serves the rules of the others."""
    _write(
        tmp_path,
        {
            "lists.yaml": "lists:\n  office: [10.0.0.0/8]\n",
            "auth.yaml": "rules:\n  - {name: outside, match: {source.ip: {not_cidr: $office}}}\n",
        },
    )
    ruleset = load_ruleset([tmp_path])
    engine = Engine(ruleset)
    assert engine.evaluate({"source": {"ip": "10.1.1.1"}}, 0.0) is None
    fired = engine.evaluate({"source": {"ip": "192.0.2.1"}}, 1.0)
    assert fired is not None and ["outside"] == [r.name for r in fired.rules]
    only_auth = check_paths([tmp_path / "auth.yaml"])
    assert [
        f'{tmp_path / "auth.yaml"}:2:51: error: rules[0].match["source.ip"].not_cidr: undefined list $office '
        "(no lists are defined: a rule file defines them under a top-level lists:)"
    ] == [str(p) for p in only_auth.problems]


def test_a_name_defined_in_two_files_is_an_error_at_both(tmp_path: Path) -> None:
    """Each name is defined once in the whole rule set."""
    _write(tmp_path, {"a.yaml": "lists:\n  office: [10.0.0.0/8]\n", "b.yaml": "lists:\n  x: [1]\n  office: [2]\n"})
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert [
        f"{a}:2:3: error: list $office is defined twice (also at {b}:3:3)",
        f"{b}:3:3: error: list $office is defined twice (also at {a}:2:3)",
    ] == [str(p) for p in check_paths([tmp_path]).problems]


def test_a_rule_whose_list_changed_is_a_changed_rule(tmp_path: Path) -> None:
    """A rule's fingerprint (which keeps its state across reloads) covers the values of the
    lists it uses, and only those."""
    rules = "rules:\n  - {name: uses, match: {user: $admins}}\n  - {name: other, match: {user: $ops}}\n"

    def fingerprints(admins: str) -> dict[str, str]:
        _write(tmp_path, {"lists.yaml": f"lists:\n  admins: {admins}\n  ops: [olga]\n", "rules.yaml": rules})
        return {r.name: r.fingerprint for r in load_ruleset([tmp_path]).rules}

    before, after = fingerprints("[alice]"), fingerprints("[alice, bob]")
    assert before["uses"] != after["uses"] and before["other"] == after["other"]
    plain = "rules:\n  - {name: plain, match: {user: alice}}\n"
    assert (
        rules_from_yaml(plain)["plain"].fingerprint == rules_from_yaml("lists: {a: [1]}\n" + plain)["plain"].fingerprint
    )


def test_a_single_rule_file_has_no_lists() -> None:
    """`lists:` sits beside `rules:`, not inside a rule mapping."""
    assert [
        "1:1: lists: unknown key 'lists'; expected one of: absence, alert, description, distinct, enabled, match, "
        "name, new_value, resolve, sequence, threshold, throttle",
        "3:15: match.user: undefined list $a (no lists are defined: a rule file defines them under a top-level lists:)",
    ] == check("lists: {a: [1]}\nname: r\nmatch: {user: $a}\n")


def test_a_list_operand_is_read_as_a_new_list_its_double_dollar_texts_as_single() -> None:
    """A list written in a rule is its test's operand as a list of its own (the document's stays
    as written); an item `$$text` is the text `$text`, one `$name` an error at its index."""
    written: list[Any] = ["a", 1, None, True, 2.5, "b$", "$$c"]
    plain = written[:-1]
    for op in ("in", "not_in", None):
        resolved = resolve_operand(op, plain, {})
        assert plain == resolved and resolved is not plain
        assert [*plain, "$c"] == resolve_operand(op, written, {})
    with pytest.raises(ListError) as raised:
        resolve_operand("in", ["a", "$c"], {})
    assert (1,) == raised.value.path
