"""Compressed files are known by their first bytes, whatever their name."""

from __future__ import annotations

import bz2
import gzip
import lzma

import pytest

from rulesd.sources.compressed import HEAD_BYTES, compression

LINES = b'{"kind": "page", "id": 1}\n{"kind": "page", "id": 2}\n'


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (gzip.compress(LINES, mtime=0), "gzip"),
        (gzip.compress(b"", mtime=0), "gzip"),
        (bz2.compress(LINES), "bzip2"),
        (bz2.compress(b""), "bzip2"),  # no block: the end-of-stream magic follows the header
        (lzma.compress(LINES), "xz"),
        # The first bytes `zstd -c`, `lz4 -c` and `lz4 -l -c` (1.9) write for LINES.
        (b"\x28\xb5\x2f\xfd\x04\x58\x41\x00\x00\x7b", "zstd"),
        (b"\x04\x22\x4d\x18\x64\x40\xa7\x08\x00\x00", "lz4"),
        (b"\x02\x21\x4c\x18\x09\x00\x00\x00\x80\x7b", "lz4"),
        (LINES, None),
        (b"BZh9 is how a line of text may start\n", None),
        (b"\x1f\x8b", None),  # too short to tell: not yet (a line needs a newline anyway)
        (b"", None),
        (b"\xef\xbb\xbf" + LINES, None),
    ],
)
def test_compressed_formats_are_told_by_their_magic_number(head: bytes, expected: str | None) -> None:
    assert expected == compression(head[:HEAD_BYTES])
