"""Warnings for values compared with events that YAML read as booleans from a word.

YAML 1.1, which PyYAML reads, makes true or false of an unquoted yes, no, on or off (in any of
the cases `no`, `No`, `NO`): `country: NO` compares the field with false and never matches the
text "NO" (Norway), and `rulesd check` had nothing to say. Events do hold booleans (JSON's, a
source's `bool` fields), and `enabled: yes` may well mean true, so such a value is a warning,
not an error: at its place, saying how to write either meaning. The reader records where each
such word was (`Document.boolean_words`); only the places whose value is compared with an
event's are warned about: the operands of a condition (not `exists` and `nocase`, which take
booleans), the items of a named list, the groups an absence rule expects, and the events of a
rule test; and, of a rule's own numbers (a count, a duration), those read as octal. So is a number
written with an exponent as JSON writes one (`code: 1e3`), which YAML 1.1 reads as the text
"1e3": an event's 1000 (a JSON line's `1e3`) is never equal to it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from rulesd.document import Document, JsonPath
from rulesd.errors import Problem
from rulesd.key_places import value_at
from rulesd.rules.lists import operands
from rulesd.validation import exponent, exponent_advice, format_path

_WORDS = frozenset({"yes", "no", "on", "off"})
_ORDERING = frozenset({"gt", "gte", "lt", "lte"})
_DURATIONS = frozenset({"window", "within", "for", "learn", "forget", "throttle", "after"})


def rule_file_warnings(
    doc: Document, rules: Iterable[tuple[dict[str, Any], JsonPath]], faulted: Collection[JsonPath]
) -> list[Problem]:
    """The warnings of a rule file whose `rules` (each with its path) are those of `doc`;
    a value the schema faulted has its error instead (which explains the word too)."""
    words = doc.boolean_words
    if not words:  # (nearly every file: nothing to walk)
        return []
    rules = list(rules)  # (walked twice)
    compared: list[JsonPath] = []
    if isinstance(doc.value, dict) and "name" not in doc.value:  # a rule list's named lists
        compared.extend(path for path in words if len(path) == 3 and path[0] == "lists")
    for raw, base in rules:
        for condition, where in rule_conditions(raw, base):
            for path, _, operand in operands(condition, where):
                compared.append(path)
                if isinstance(operand, list):
                    compared.extend((*path, i) for i in range(len(operand)))
        compared.extend(expected_value_paths(raw, base))
    found = (_warning(doc, path) for path in compared if path in words and path not in faulted)
    warnings = [warning for warning in found if warning is not None]
    looked_at, bases = set(compared), [base for _, base in rules]
    for path in words:  # a rule's own number (`count: 017`) read otherwise than written
        if path not in looked_at and path not in faulted and any(path[: len(b)] == b for b in bases):
            warnings.extend(_setting_warning(doc, path))
    return warnings


def rule_test_warnings(doc: Document) -> list[Problem]:
    """The warnings of a rule test file: the values of its events (`tests[i].events[j].event`)."""
    found = (
        _warning(doc, path)
        for path in doc.boolean_words
        if len(path) > 5 and path[0] == "tests" and path[2] == "events" and path[4] == "event"
    )
    return [warning for warning in found if warning is not None]


def _warning(doc: Document, path: JsonPath) -> Problem | None:
    word = doc.boolean_words[path]
    if word.lower() in _WORDS:
        value = "true" if word.lower() in ("yes", "on") else "false"
        message = (
            f'YAML reads the unquoted {word} as {value}, not as text: quote it ("{word}") if the text is '
            f"meant, or write {value} if the boolean is"
        )
    elif isinstance(number := value_at(doc.value, path), str):  # `code: 1e3`, a text to YAML 1.1
        if not exponent(word):  # (1e999: no number a JSON line holds either)
            return None
        advice = exponent_advice(word, whole=False)
        message = f'{advice.removeprefix(": ")} if the number is meant, or quote it ("{word}") if the text is'
    else:  # a number YAML 1.1 reads otherwise than written (`service: 0123` is 83)
        how = " octal" if re.match(r"[-+]?0[0-9]", word) else " base-60" if ":" in word else ""
        if not how and path[-1] in _ORDERING:  # (1_000 or 1.10 is the number meant there)
            return None
        meant = f"{_decimal(word)} if the decimal number" if how == " octal" else f"{number} if the number"
        message = (
            f'YAML reads the unquoted {word} as the{how} number {number}, not as text: quote it ("{word}") if '
            f"the text is meant, or write {meant} is"
        )
    return Problem(doc.locate(path), f"{format_path(path)}: {message}", "warning")


def _setting_warning(doc: Document, path: JsonPath) -> Iterator[Problem]:
    """A warning at a number of a rule's own (a count, a duration in seconds) that YAML 1.1 reads
    as octal: `count: 017` is 15, so the rule fires at the 15th event, not the 17th. (Hex,
    `1_000` and `1:30`, 90, read as what they look like.)"""
    word, number = doc.boolean_words[path], value_at(doc.value, path)
    if re.match(r"[-+]?0[0-9]", word) and isinstance(number, int) and not isinstance(number, bool):
        unit = "s" if path[-1] in _DURATIONS else ""
        message = f"YAML reads the unquoted {word} as the octal number {number}: write {_decimal(word)}{unit}"
        yield Problem(
            doc.locate(path), f"{format_path(path)}: {message} if that is meant, else {number}{unit}", "warning"
        )


def rule_conditions(raw: dict[str, Any], base: JsonPath) -> Iterator[tuple[Any, JsonPath]]:
    """Each condition of a rule with its path: its match, or its sequence steps'."""
    yield raw.get("match"), (*base, "match")
    sequence = raw.get("sequence")
    steps = sequence.get("steps") if isinstance(sequence, dict) else None
    for i, step in enumerate(steps if isinstance(steps, list) else ()):
        if isinstance(step, dict):
            yield step.get("match"), (*base, "sequence", "steps", i, "match")
            absent = step.get("absent")
            if isinstance(absent, dict):
                yield absent.get("match"), (*base, "sequence", "steps", i, "absent", "match")


def expected_value_paths(raw: dict[str, Any], base: JsonPath) -> Iterator[JsonPath]:
    """The path of each value of the groups an absence rule expects."""
    absence = raw.get("absence")
    expect = absence.get("expect") if isinstance(absence, dict) else None
    for i, group in enumerate(expect if isinstance(expect, list) else ()):
        if isinstance(group, dict):
            yield from ((*base, "absence", "expect", i, field) for field in group)


def _decimal(octal: str) -> str:
    """The decimal number that the text of `octal` means: `-0123` is -123, not 123, and `01_0`
    is 10, not 1_0 (which YAML reads as 10, and warns about again)."""
    digits = octal.lstrip("+-").replace("_", "").lstrip("0") or "0"
    return f"-{digits}" if octal.startswith("-") and digits != "0" else digits
