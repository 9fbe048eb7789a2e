"""`rulesd.atomic_file`: a file replaced whole, with the permissions it should have."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rulesd.atomic_file import write_atomically


def test_a_new_file_gets_the_mode_open_would_give_it_and_a_replaced_one_keeps_its_own(tmp_path: Path) -> None:
    """0666 less the umask for a new file (not a temporary file's 0600); an existing file's
    permissions are kept, without a set-id bit."""
    umask = os.umask(0o027)
    try:
        write_atomically(tmp_path / "new.xml", b"<a/>")
    finally:
        os.umask(umask)
    assert (b"<a/>", 0o640) == ((tmp_path / "new.xml").read_bytes(), (tmp_path / "new.xml").stat().st_mode & 0o7777)
    kept = tmp_path / "kept.xml"
    kept.write_bytes(b"old")
    kept.chmod(0o4604)
    write_atomically(kept, b"new")
    assert (b"new", 0o604) == (kept.read_bytes(), kept.stat().st_mode & 0o7777)


def test_a_symbolic_link_stays_and_the_file_it_names_is_replaced(tmp_path: Path) -> None:
    """As `open` would: the link a CI setup made to where its reports go is not replaced by a file."""
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "junit.xml").write_bytes(b"old")
    (tmp_path / "junit.xml").symlink_to("reports/junit.xml")
    write_atomically(tmp_path / "junit.xml", b"new")
    assert (tmp_path / "junit.xml").is_symlink()
    assert b"new" == (tmp_path / "reports" / "junit.xml").read_bytes()
    assert ["junit.xml"] == os.listdir(tmp_path / "reports")


def test_a_target_that_cannot_be_replaced_is_left_as_it_was_with_no_temporary_file(tmp_path: Path) -> None:
    """A directory where the file should be: the rename fails, and the part written goes."""
    (tmp_path / "report.xml").mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomically(tmp_path / "report.xml", b"<a/>")
    assert (["report.xml"], []) == (os.listdir(tmp_path), os.listdir(tmp_path / "report.xml"))
