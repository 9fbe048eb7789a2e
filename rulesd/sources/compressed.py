"""Compressed files, known by their first bytes: a glob such as `events.jsonl*` also matches
logrotate's compressed rotations (`events.jsonl.2.gz`), which the file source never reads as
lines. Their bytes would be garbage, or, where the compressor kept text as it was (a block it
could not shrink), events read a second time. The magic number decides, not the name: a
`compresscmd` may write any suffix, and a text file may be named anything."""

from __future__ import annotations

import re

# Enough of a file's first bytes to tell (bzip2's is the longest).
HEAD_BYTES = 10

_MAGIC = (
    ("gzip", b"\x1f\x8b\x08"),  # RFC 1952, with deflate, the only method in use
    ("xz", b"\xfd7zXZ\x00"),
    ("zstd", b"\x28\xb5\x2f\xfd"),
    ("lz4", b"\x04\x22\x4d\x18"),  # the frame format
    ("lz4", b"\x02\x21\x4c\x18"),  # the legacy format (`lz4 -l`)
)
# "BZh", the block size, then a block's magic or the end of the stream (an empty input): the
# three letters alone could start a line of text.
_BZIP2 = re.compile(rb"BZh[1-9](?:1AY&SY|\x17rE8P\x90)")


def compression(head: bytes) -> str | None:
    """The format of a file that starts with `head` (at least HEAD_BYTES of it, or all of a
    shorter file), or None if it is not compressed in a format known here."""
    for name, magic in _MAGIC:
        if head.startswith(magic):
            return name
    return "bzip2" if _BZIP2.match(head) else None
