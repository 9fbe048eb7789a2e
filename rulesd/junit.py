"""JUnit XML for `rulesd test --junit`, the report format CI systems read (GitLab, Jenkins,
GitHub test-report actions), as `promtool test rules --junit` writes it.

One `<testsuite>` per test file and one `<testcase>` per rule test. A failing test carries a
`<failure>` whose text is the expected/actual report `rulesd test` prints; a test file that cannot
be run (invalid, or its rules are) is one `<testcase>` with an `<error>` listing every problem.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import msgspec

from rulesd.errors import Problem
from rulesd.printable import escape
from rulesd.ruletest import TestOutcome

INVALID_CASE = "(test file)"  # the name of the test case that stands for a file that could not be run

# What XML 1.0 cannot hold, not even as a character reference: C0 controls but tab, line feed and
# carriage return, lone surrogates, U+FFFE and U+FFFF. A test's name may hold any of them (YAML
# writes "\a" or "\e"), and a CI server refuses a report that does; they are written as `\u0007`.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class RuleTestFile(msgspec.Struct, frozen=True):
    """What running one test file gave: its tests' outcomes, or the problems that stopped it."""

    path: str
    outcomes: tuple[TestOutcome, ...]
    problems: tuple[Problem, ...]


def junit_xml(results: Sequence[RuleTestFile]) -> bytes:
    """The JUnit XML document (UTF-8, with declaration) for these test files."""
    root = ET.Element("testsuites", name="rulesd test")
    for result in results:
        root.append(_suite(result))
    for attr in ("tests", "failures", "errors"):
        root.set(attr, str(sum(int(suite.get(attr, "0")) for suite in root)))
    for element in root.iter():
        element.text = element.text and _NOT_XML.sub(escape, element.text)
        element.attrib = {key: _NOT_XML.sub(escape, value) for key, value in element.attrib.items()}
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"


def _suite(result: RuleTestFile) -> ET.Element:
    failures = sum(not o.passed for o in result.outcomes)
    errors = 1 if result.problems else 0
    suite = ET.Element(
        "testsuite",
        name=result.path,
        tests=str(len(result.outcomes) + errors),
        failures=str(failures),
        errors=str(errors),
        skipped="0",
    )
    for outcome in result.outcomes:
        case = _case(suite, outcome.name, result.path, outcome.location.line)
        if not outcome.passed:
            failure = ET.SubElement(case, "failure", message=_summary(outcome.report), type="AlertsDiffer")
            failure.text = outcome.report
    if result.problems:
        case = _case(suite, INVALID_CASE, result.path, 0)
        count = len(result.problems)
        error = ET.SubElement(case, "error", message=f"{count} problem(s): the tests were not run", type="Invalid")
        error.text = "\n".join(str(p) for p in result.problems)
    return suite


def _case(suite: ET.Element, name: str, path: str, line: int) -> ET.Element:
    case = ET.SubElement(suite, "testcase", name=name, classname=path, file=path)
    if line > 0:
        case.set("line", str(line))
    return case


def _summary(report: str) -> str:
    """The differences of a failure report on one line, for the `message` attribute."""
    _, _, differences = report.partition("differences:\n")
    return "; ".join(line.strip() for line in differences.splitlines() if line.strip()) or report
