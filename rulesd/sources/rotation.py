"""The file source's decisions, as pure functions: is a file still the one we were reading,
was it rotated, truncated or rewritten, and where do we resume?

They take what the file source tracked and what `stat` and the file's first bytes say now,
and return a verdict; `FileSource` only executes it (fail2ban keeps change detection apart
from reading the same way). A file is known by its identity (st_dev, st_ino) plus a
fingerprint (sha256 of its first bytes, up to FINGERPRINT_BYTES), as fail2ban and Vector's
file source know theirs.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

import msgspec

FINGERPRINT_BYTES = 1024
# What logrotate puts in a rotated file's name: a separator, then a number or a date (dateformat,
# -%Y%m%d by default), maybe a compressor's extension.
_MARK = r"[.\-_]\d[\d\-_.]*"
_COMPRESSED = r"(\.[a-z0-9]+)?"
_ROTATION_MARK = re.compile(_MARK + _COMPRESSED)

Identity = tuple[int, int]  # (st_dev, st_ino)

Verdict = Literal["resume", "changed", "truncated"]
"""Of a saved position against a file: go on at its offset, or start over (with a warning)."""

Change = Literal["same", "grew", "truncated", "changed", "replaced"]
"""Of a file being read, at a look at its path:

- "same": nothing new;
- "grew": more bytes to read (its first bytes unchanged);
- "truncated": shorter than what was read (copytruncate): read it again from 0;
- "changed": its first bytes differ (rewritten in place): read it again from 0;
- "replaced": the path no longer names it (renamed away, deleted or replaced by another
  file): finish reading it through the open descriptor, then let it go.
"""


class Position(msgspec.Struct, frozen=True):
    """Where reading stopped in one file: its identity, the offset of the next line, and
    a fingerprint of its first bytes (fp_len = min(size, FINGERPRINT_BYTES) when taken).
    `drained`: the file was read to its end after its writer had moved on (a rotated file
    taken up under its new name), so nothing can be missing from it if it is gone later."""

    dev: int
    ino: int
    offset: int
    fp_len: int
    fp_hash: str
    drained: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping, as saved in the state database."""
        data = {"dev": self.dev, "ino": self.ino, "offset": self.offset, "fp_len": self.fp_len, "fp_hash": self.fp_hash}
        return {**data, "drained": True} if self.drained else data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Position:
        """Rebuild a position saved by `to_json`."""
        return cls(
            dev=int(data["dev"]),
            ino=int(data["ino"]),
            offset=int(data["offset"]),
            fp_len=int(data["fp_len"]),
            fp_hash=str(data["fp_hash"]),
            drained=data.get("drained") is True,
        )

    @property
    def identity(self) -> Identity:
        """The (dev, ino) of the file."""
        return self.dev, self.ino


class Tracked(msgspec.Struct, frozen=True):
    """What the file source knows of a file it reads: its identity, the size seen at the last
    look, how far it has read, and the fingerprint of its first bytes."""

    identity: Identity
    seen_size: int
    read_pos: int
    fp_len: int
    fp_hash: str


def fingerprint(head: bytes) -> tuple[int, str]:
    """(fp_len, fp_hash) of a file whose first bytes (at most FINGERPRINT_BYTES) are `head`."""
    head = head[:FINGERPRINT_BYTES]
    return len(head), hashlib.sha256(head).hexdigest()


def same_start(fp_len: int, fp_hash: str, head: bytes) -> bool:
    """Whether a file whose first bytes are `head` starts as the fingerprinted one did."""
    return len(head) >= fp_len and fingerprint(head[:fp_len])[1] == fp_hash


def classify_saved(saved: Position, size: int, head: bytes) -> Verdict:
    """Whether a file (its size and first bytes) is still the one `saved` describes.

    "changed": the first bytes differ, so it is another file (or was rewritten);
    "truncated": same start but shorter than the saved offset (copytruncate);
    "resume": safe to continue at saved.offset.
    """
    if not same_start(saved.fp_len, saved.fp_hash, head):
        return "changed"
    if size < saved.offset:
        return "truncated"
    return "resume"


def judge(tracked: Tracked, path_identity: Identity | None, size: int, head: Callable[[], bytes]) -> Change:
    """What became of a file we read, given what its path names now (`path_identity`, None if
    nothing), its size now (through our descriptor) and its first bytes (`head`, read only if
    they matter: when the size changed)."""
    if path_identity != tracked.identity:
        return "replaced"
    if size == tracked.seen_size and size >= tracked.read_pos:
        return "same"
    if size < tracked.read_pos:
        return "truncated"
    return "grew" if same_start(tracked.fp_len, tracked.fp_hash, head()) else "changed"


def resume_saved(
    saved: Position, identity: Identity, size: int, head: bytes, *, rotated: bool, claimed: bool, elsewhere: bool
) -> tuple[int | None, Verdict]:
    """Where to read a file found for a saved position (at start-up): its offset and the verdict.
    `elsewhere`: found by its identity under another name than the one the position was saved
    under (`rotated`: to be read under the saved name).

    None when the file is not the one saved: another identity, a rotated file whose first bytes
    differ (its inode was reused by another file), or one already read under another name.
    """
    verdict = classify_saved(saved, size, head)
    if identity != saved.identity or (rotated and verdict == "changed") or claimed:
        return None, verdict
    if elsewhere and saved.fp_len == 0:
        # No byte to tell it by (an earlier rulesd saved no fingerprint for lines read from a
        # file opened empty): maybe another file given the inode, read whole rather than from
        # an offset that would skip its first lines and tear one.
        return 0, verdict
    return (saved.offset if verdict == "resume" else 0), verdict


def may_be_the_saved(saved: Position, path: str, found: str, *, followed: bool) -> bool:
    """Whether the file found at `found` by the identity of a position saved for `path` (which
    names another file now, or none) may be taken for the saved one and read under `path`.

    A position with no byte to tell its file by (saved while the file was empty) is matched by
    the inode alone: a file given that inode once the saved one was removed (a job's file, a
    neighbour's log) passed for it and was read under its name. Then only a rotation of it may
    be: not a file followed under its own name (read there whole, once), and named after `path`
    as logrotate names what it rotates (`events.jsonl.1`, `events.jsonl-20261206`,
    `events.1.jsonl` with `extension`)."""
    if saved.fp_len:
        return True  # the fingerprint tells (`resume_saved`)
    return not followed and rotation_name(path, found)


def rotation_name(path: str, found: str) -> bool:
    """Whether `found` is named as logrotate names a rotation of `path` (same directory): a number
    or a date after the name (`events.jsonl.1`, `events.jsonl-20261206`, either compressed), or
    before one of its extensions (`extension .jsonl`: `events.1.jsonl`, `events-20261206.jsonl`,
    compressed `events.1.jsonl.gz`; `extension .log` of `web01.example.com.log`:
    `web01.example.com.1.log`). Not `events-debug.jsonl` nor `events.jsonl.tmp`: another
    application's files."""
    name, other = os.path.basename(path), os.path.basename(found)
    if other.startswith(name) and _ROTATION_MARK.fullmatch(other[len(name) :]):
        return True
    # logrotate's `extension` is whatever ending the configuration names, not the first dot's:
    # a host's or an application's name holds dots too.
    return any(
        re.fullmatch(re.escape(name[:at]) + _MARK + re.escape(name[at:]) + _COMPRESSED, other)
        for at in range(1, len(name))
        if name[at] == "."
    )


class Retired(msgspec.Struct, frozen=True):
    """A file let go of once read to its end: the name it was read under, where reading ended,
    and its modification time then (st_mtime_ns)."""

    path: str
    position: Position
    mtime_ns: int


def resume_retired(path: str, retired: Retired | None, size: int, mtime_ns: int, head: bytes) -> int:
    """Where to read a file that appeared at `path` while running (`size`, `mtime_ns` and
    `head` its own): from 0, unless it is a file already drained under another name, not
    written to since (then from where reading stopped)."""
    if retired is None:
        return 0
    # Only a file seen under another name counts: a re-created path may reuse the inode of the
    # deleted file, and short fingerprints could then match by chance. So does one written
    # since: a rename leaves the modification time as it was, while a file given the inode of
    # the retired one once it is deleted (renamed out of a glob's reach, then removed, while
    # not followed) is written after it; starting alike, it was read from the old offset on.
    position = retired.position
    if retired.path != path and retired.mtime_ns == mtime_ns and classify_saved(position, size, head) == "resume":
        return position.offset
    return 0


def writer_gone(links: int, newer_size: int | None) -> bool:
    """Whether nothing more will be written to a rotated file: it was deleted (no links left),
    or a newer file for the same path (`newer_size`, None if none yet) has data."""
    return links == 0 or (newer_size is not None and newer_size > 0)
