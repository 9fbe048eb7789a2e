"""JUnit XML of rule tests: `rulesd.junit` and `rulesd test --junit`, read back with an XML parser."""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

from rulesd import ruletest
from rulesd.errors import Problem, SourceLocation
from rulesd.junit import INVALID_CASE, RuleTestFile, junit_xml
from tests.run_cli import rulesd_cli

RULES = "name: err\nmatch: {level: error}\nalert: {priority: P2, message: 'error on {host}'}\n"
PASSING = (
    "rule_files: [rules.yaml]\ntests:\n  - name: pages\n    events:\n"
    "      - {event: {level: error, host: a}}\n"
    "    expect_alerts:\n      - {event: 1, rules: [err], priority: P2}\n"
    "  - name: wrong priority\n    events:\n"
    "      - {event: {level: error, host: b}}\n"
    "    expect_alerts:\n      - {event: 1, rules: [err], priority: P1}\n"
)
INVALID = "rule_files: [rules.yaml]\ntests:\n  - name: t\n    evnts: []\n"


def rulesd_test(*args: str, cwd: Path, rlimit: tuple[int, int] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `rulesd test ARGS` in `cwd` (with no rule cache: nothing written but the report)."""
    return rulesd_cli("test", *args, cwd=cwd, env={"RULESD_CACHE_DIR": ""}, rlimit=rlimit)


def cases(suite: ET.Element) -> dict[str, ET.Element]:
    """A suite's test cases by name."""
    return {case.get("name", ""): case for case in suite.iter("testcase")}


def test_rulesd_test_junit_writes_one_case_per_test_and_a_failure_with_the_differences(tmp_path: Path) -> None:
    """A passing test, a failing one (its failure holds expected, actual and the difference) and an
    invalid file (an error naming the place) are all in the report; the exit status is unchanged."""
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "good.test.yaml").write_text(PASSING)
    (tmp_path / "bad.test.yaml").write_text(INVALID)
    result = rulesd_test("--junit", "report.xml", "good.test.yaml", "bad.test.yaml", cwd=tmp_path)
    assert 1 == result.returncode
    root = ET.parse(tmp_path / "report.xml").getroot()
    assert ("testsuites", "3", "1", "1") == (root.tag, root.get("tests"), root.get("failures"), root.get("errors"))
    good, bad = root.findall("testsuite")
    assert ("good.test.yaml", "2", "1", "0") == (
        good.get("name"),
        good.get("tests"),
        good.get("failures"),
        good.get("errors"),
    )
    passed, failed = cases(good)["pages"], cases(good)["wrong priority"]
    assert ([], "3", "good.test.yaml") == (list(passed), passed.get("line"), passed.get("file"))
    failure = failed.find("failure")
    assert failure is not None and failure.text is not None
    assert "priority: expected 'P1', got 'P2'" in (failure.get("message") or "")
    assert failure.text.startswith("expected:\n  - event 1: rules ['err'], priority: 'P1'\nactual:\n")
    assert "differences:\n" in failure.text
    assert ("bad.test.yaml", "1", "0", "1") == (
        bad.get("name"),
        bad.get("tests"),
        bad.get("failures"),
        bad.get("errors"),
    )
    error = cases(bad)[INVALID_CASE].find("error")
    assert error is not None and error.text is not None
    assert "bad.test.yaml:4:5: error: " in error.text


def test_all_passing_report_has_no_failure(tmp_path: Path) -> None:
    """When every test passes, the report says so and the exit status is 0."""
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "good.test.yaml").write_text(PASSING.split("  - name: wrong priority")[0])
    result = rulesd_test("good.test.yaml", "--junit", "out/report.xml", cwd=tmp_path)
    assert 2 == result.returncode  # the folder does not exist: nothing to write into
    assert "out/report.xml: error: cannot write the JUnit report" in result.stderr
    result = rulesd_test("good.test.yaml", "--junit", "report.xml", cwd=tmp_path)
    root = ET.parse(tmp_path / "report.xml").getroot()
    assert (0, "1", "0", "0") == (result.returncode, root.get("tests"), root.get("failures"), root.get("errors"))
    assert [] == root.findall(".//failure") + root.findall(".//error")


def test_a_report_that_cannot_be_written_whole_leaves_the_one_before_it(tmp_path: Path) -> None:
    """A write that fails part-way (here the file size limit of `ulimit -f`; a full disk, a run
    killed by CI's timeout) leaves the report of the run before whole, and no temporary file: it
    was truncated in place, a part of an XML document CI then failed to parse."""
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "good.test.yaml").write_text(PASSING)
    assert 1 == rulesd_test("--junit", "report.xml", "good.test.yaml", cwd=tmp_path).returncode
    before = (tmp_path / "report.xml").read_bytes()
    assert len(before) > 600

    # (Python ignores SIGXFSZ: a write past the limit fails with EFBIG)
    limited = rulesd_test("--junit", "report.xml", "good.test.yaml", cwd=tmp_path, rlimit=(resource.RLIMIT_FSIZE, 512))
    assert 2 == limited.returncode
    assert "report.xml: error: cannot write the JUnit report: File too large" in limited.stderr
    assert before == (tmp_path / "report.xml").read_bytes()
    assert ["good.test.yaml", "report.xml", "rules.yaml"] == sorted(p.name for p in tmp_path.iterdir())


def test_a_report_to_standard_output_or_a_pipe_is_written_there_not_renamed_over_it(tmp_path: Path) -> None:
    """`--junit /dev/stdout`, and a FIFO that a CI step reads, are written to as they are: a
    report renamed into place would have replaced the FIFO (as root, /dev/null too) with a
    file, and the link /dev/stdout names led to no directory to make one in."""
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "good.test.yaml").write_text(PASSING)
    result = rulesd_test("--junit", "/dev/stdout", "good.test.yaml", cwd=tmp_path)
    assert (1, "") == (result.returncode, result.stderr)
    assert 1 == result.stdout.count("<?xml version") and result.stdout.rstrip().endswith("</testsuites>")
    fifo = tmp_path / "report.xml"
    os.mkfifo(fifo)
    read: list[bytes] = []
    reader = threading.Thread(target=lambda: read.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert 1 == rulesd_test("--junit", "report.xml", "good.test.yaml", cwd=tmp_path).returncode
    reader.join(timeout=30)
    assert fifo.is_fifo()
    assert [2] == [len(ET.fromstring(data).findall(".//testcase")) for data in read]


def test_markup_in_names_and_reports_survives_the_round_trip() -> None:
    """Names and reports holding XML's special characters and control-free Unicode are escaped, not
    mangled: the parser reads back exactly what was written."""
    name = 'a <b> & "c" — ünïcode'
    report = "expected:\n  - event 1: rules ['<x>']\nactual:\n  (no alerts)\ndifferences:\n  missing: a & b"
    outcome = ruletest.TestOutcome(name, SourceLocation("t.test.yaml", 7, 5), report)
    problem = Problem(SourceLocation("r&d.yaml", 2, 3), "bad <thing>")
    xml = junit_xml([RuleTestFile("t.test.yaml", (outcome,), (problem,))])
    assert xml.startswith(b"<?xml version='1.0' encoding='utf-8'?>\n")
    suite = ET.fromstring(xml).find("testsuite")
    assert suite is not None
    found = cases(suite)
    failure, error = found[name].find("failure"), found[INVALID_CASE].find("error")
    assert failure is not None and error is not None
    assert (report, "missing: a & b", "7") == (failure.text, failure.get("message"), found[name].get("line"))
    assert "r&d.yaml:2:3: error: bad <thing>" == error.text


def test_characters_xml_cannot_hold_are_escaped_and_the_report_stays_valid(tmp_path: Path) -> None:
    """A test's name with a bell and an escape (YAML's "\\a", "\\e"), a difference holding a
    vertical tab and a test file whose name is not UTF-8: the report is still XML that a parser
    reads (a CI server refuses one that is not), with each such character written as `\\u0007`."""
    (tmp_path / "rules.yaml").write_text(RULES)
    test = PASSING.replace("name: pages", 'name: "pages \\a \\e[31m"').replace("priority: P1", 'message: "a\\vb"')
    named = os.fsdecode(b"\xff.test.yaml")  # the bytes a directory listing may hold
    (tmp_path / named).write_text(test)
    result = rulesd_test("--junit", "report.xml", named, cwd=tmp_path)
    assert 1 == result.returncode, result.stderr
    suite = ET.parse(tmp_path / "report.xml").getroot().find("testsuite")
    assert suite is not None
    assert "\\udcff.test.yaml" == suite.get("name")
    found = cases(suite)
    assert ["pages \\u0007 \\u001b[31m", "wrong priority"] == list(found)
    failure = found["wrong priority"].find("failure")
    assert failure is not None
    assert "message: expected 'a\\x0bb', got 'error on b'" in (failure.get("message") or "")


def test_no_test_files_gives_an_empty_report() -> None:
    """No results: a valid document with zero tests."""
    root = ET.fromstring(junit_xml([]))
    assert ("0", "0", "0", []) == (root.get("tests"), root.get("failures"), root.get("errors"), list(root))
