"""A one-line indentation or ':' mistake that YAML finds fault with only at a later line is
reported at the line that is wrong: the first line of a block indented otherwise than the file
indents its blocks, and the first line of a file (a top-level key without its ':', or indented
deeper than the top-level keys after it)."""

from __future__ import annotations

from pathlib import Path

from rulesd.rules.loader import check_text
from tests.run_cli import rulesd_cli

RULE = "rules:\n  - name: a\n    match: {m: x}\n"
BLOCK = "rules:\n  - name: a\n    match:\n      m: x\n"  # (a block of keys: how the file indents them)


def errors(text: str) -> list[str]:
    """The errors of one rule file, as `line:col: message`."""
    return [f"{p.location.line}:{p.location.col}: {p.message}" for p in check_text(text, "r.yaml").errors]


def off_step(line: int, col: int, key: str, opener: int, what: str, step: int, after: int, meant: int) -> str:
    return (
        f"{line}:{col}: YAML syntax error: this line is indented to column {col}, but it is the first line under "
        f"{key!r} (line {opener}), and this file indents {what} of a block {step} columns under its key, and line "
        f"{after} after it is indented as that would have it: indent it to column {meant}"
    )


def test_the_first_key_of_a_block_indented_unlike_the_file_is_the_line_named() -> None:
    # `priority` one column too deep or too shallow, `tags` after it where the file has its keys
    for column in (5, 7, 8):
        text = BLOCK + "    alert:\n" + " " * column + "priority: P3\n      tags: [memory]\n"
        assert [off_step(6, column + 1, "alert", 5, "the keys", 2, 7, 7)] == errors(text)


def test_the_first_key_of_a_block_at_its_key_s_column_is_the_line_named() -> None:
    # (`group_by` leaves `sequence` empty; YAML stops at `steps`, a line too deep for anything)
    text = (
        "rules:\n  - name: a\n    sequence:\n    group_by: [host]\n      steps:\n"
        "        - match: {a: 1}\n        - match: {b: 2}\n    alert:\n      message: x\n"
    )
    assert [off_step(4, 5, "sequence", 3, "the keys", 2, 5, 7)] == errors(text)


def test_the_first_item_of_a_list_indented_unlike_the_file_is_the_line_named() -> None:
    head = "rules:\n  - name: a\n    sequence:\n      steps:\n"
    for column in (6, 7, 9, 10):  # (at the key's column, YAML stops with no column to say)
        text = head + " " * column + "- match: {a: 1}\n        - match: {b: 2}\n    alert: {message: x}\n"
        assert [off_step(5, column + 1, "steps", 4, "the items ('- ')", 2, 6, 9)] == errors(text)
    # the line after it is a key of that first item, where the item would have it
    for column in (6, 7, 9, 10):
        text = head + " " * column + "- match: {a: 1}\n          count: 3\n        - match: {b: 2}\n"
        assert [off_step(5, column + 1, "steps", 4, "the items ('- ')", 2, 6, 9)] == errors(text)


def test_a_file_of_four_column_blocks_and_lists_at_their_key_s_column_is_read_as_it_indents() -> None:
    text = (
        "rules:\n-   name: a\n    match:\n        service: queue\n    alert:\n        message: x\n"
        "        tags:\n        - queue\n        - other\n"
    )
    assert [] == errors(text)
    first_tag = text.replace("        - queue", "         - queue")
    assert [off_step(8, 10, "tags", 7, "the items ('- ')", 0, 9, 9)] == errors(first_tag)
    first_key = text.replace("        service: queue", "      service: queue\n        event: x")
    assert [off_step(4, 7, "match", 3, "the keys", 4, 5, 9)] == errors(first_key)


def test_a_block_indented_unlike_the_file_everywhere_is_left_where_yaml_stops() -> None:
    # (two lines of one column, neither the file's: which is wrong cannot be told)
    text = RULE + "    alert:\n         priority: P3\n         tags: [memory]\n      message: x\n"
    assert ["7:7:" == e[:4] for e in errors(text)] == [True]
    # (no other block of keys to learn the file's indentation from: left where it was)
    assert errors(RULE + "    alert:\n        message: x\n      priority: P2\n")[0].startswith("6:7: ")
    assert errors("a:\n   b: 1\n  c: 2\n")[0].startswith("3:")


def test_a_top_level_key_without_its_colon_is_the_line_named() -> None:
    missing = "YAML syntax error: could not find the ':' after the key that starts here (is it missing?)"
    assert [f"1:1: {missing}"] == errors("rules\n  - name: a\n    match: {m: x}\n")
    assert [f"2:1: {missing}"] == errors("# rules\nlists\n  # the office\n  office: [10.0.0.0/8]\n" + RULE)


def test_a_first_line_indented_deeper_than_the_top_level_keys_is_the_line_named() -> None:
    for column in (2, 3):
        text = " " * (column - 1) + "lists:\n  office: [10.0.0.0/8]\n" + RULE
        message = (
            f"YAML syntax error: this line is indented to column {column}, but the top-level keys of the file "
            f"(line 3) are at column 1: indent it to column 1"
        )
        assert [f"1:{column}: {message}"] == errors(text)


def test_a_key_of_no_alert_in_the_middle_of_its_details_is_the_line_named() -> None:
    head = RULE + "    alert:\n      message: x\n      details:\n        host: h\n"
    moved = head + "      last_status: s\n        runbook: r\n"
    assert [
        "8:7: YAML syntax error: this line is indented to column 7, but it is no key of 'alert' (line 4): it belongs "
        "under 'details' (line 6), whose keys (lines 7 and 9) are at column 9: indent it to column 9, with the lines "
        "under it"
    ] == errors(moved)
    # (a key of the alert, or one misspelled, may be where it belongs: the line after it is named)
    for key in ("priority: P2", "prioirty: P2"):
        assert errors(head + f"      {key}\n        runbook: r\n")[0].startswith("9:")


def test_rulesd_check_names_the_first_line_of_a_block_out_of_step(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(BLOCK + "    alert:\n       priority: P3\n      tags: [memory]\n")
    result = rulesd_cli("check", str(tmp_path / "r.yaml"))
    assert 1 == result.returncode
    assert result.stdout.replace(str(tmp_path), "DIR") == (
        f"DIR/r.yaml:{off_step(6, 8, 'alert', 5, 'the keys', 2, 7, 7).replace(': YAML', ': error: YAML', 1)}\n"
        "FAILED: 1 file(s), 0 rule(s), 1 error(s), 0 warning(s)\n"
    )
