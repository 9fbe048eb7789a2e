"""The file source: follows files like `tail -F` and remembers where it stopped.

A file is known by its identity (st_dev, st_ino) plus a fingerprint (sha256 of its first
bytes), the way fail2ban and Vector's file source know theirs. With that the source
survives rotation by rename+create (the old file is drained through its open descriptor
before the new one is read from 0), copytruncate and other truncation (restart at 0 with a
warning), deletion and re-creation, and restarts of the daemon (saved `Position`s).

Only complete lines are returned; a position always points at the start of a line, so a
checkpoint covers exactly the lines handed out. Lines longer than `max_line_bytes` are
discarded chunk by chunk, never held in memory whole.

`wait()` sleeps on watchdog (inotify on Linux) events for the directories involved, with a
polling fallback for file systems that do not deliver them.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from rulesd.events import JSON_PARSER, Parser
from rulesd.sources.base import MAX_LINE_BYTES, START_AT, START_AT_CHOICES, Saved
from rulesd.sources.lines import BATCH_BYTES, Lines, count_lines, runs_of, size_of

__all__ = ["FileSource", "Position", "classify_saved", "fingerprint"]

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
FINGERPRINT_BYTES = 1024
# Identities of files that were drained and closed, remembered so that a rotated file that
# later matches a glob (events.jsonl.1 for "events.jsonl*") is not read a second time.
_RETIRED_MAX = 1024

Identity = tuple[int, int]
Verdict = Literal["resume", "changed", "truncated"]


@dataclass(frozen=True, slots=True)
class Position:
    """Where reading stopped in one file: its identity, the offset of the next line, and
    a fingerprint of its first bytes (fp_len = min(size, 1024) when taken)."""

    dev: int
    ino: int
    offset: int
    fp_len: int
    fp_hash: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping, as saved in the state database."""
        return {
            "dev": self.dev,
            "ino": self.ino,
            "offset": self.offset,
            "fp_len": self.fp_len,
            "fp_hash": self.fp_hash,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Position:
        """Rebuild a position saved by `to_json`."""
        return cls(
            dev=int(data["dev"]),
            ino=int(data["ino"]),
            offset=int(data["offset"]),
            fp_len=int(data["fp_len"]),
            fp_hash=str(data["fp_hash"]),
        )


# -- pure helpers ---------------------------------------------------------------------------


def saved_positions(saved: Saved) -> dict[str, Position]:
    """The file positions among saved checkpoints: those keyed by an absolute path (the
    journald source saves its cursor under a plain name)."""
    return {path: Position.from_json(data) for path, data in saved.items() if os.path.isabs(path)}


def fingerprint(head: bytes) -> tuple[int, str]:
    """(fp_len, fp_hash) of a file whose first bytes (at most FINGERPRINT_BYTES) are `head`."""
    head = head[:FINGERPRINT_BYTES]
    return len(head), hashlib.sha256(head).hexdigest()


def classify_saved(saved: Position, size: int, head: bytes) -> Verdict:
    """Decide whether a file (its size and first bytes) is still the one `saved` describes.

    "changed": the first bytes differ, so it is another file (or was rewritten);
    "truncated": same start but shorter than the saved offset (copytruncate);
    "resume": safe to continue at saved.offset.
    """
    if len(head) < saved.fp_len or fingerprint(head[: saved.fp_len])[1] != saved.fp_hash:
        return "changed"
    if size < saved.offset:
        return "truncated"
    return "resume"


def expand_patterns(patterns: Sequence[str]) -> list[str]:
    """Paths named by `patterns`, in order, without duplicates.

    A literal path is kept even when it does not exist yet (it is waited for); a glob
    yields only the regular files it matches now.
    """
    paths: dict[str, None] = {}
    for pattern in patterns:
        if not glob.has_magic(pattern):
            paths[pattern] = None
            continue
        for match in sorted(glob.glob(pattern)):
            if os.path.isfile(match):
                paths[match] = None
    return list(paths)


def observed_directory(pattern: str) -> tuple[str, bool]:
    """The directory to watch for `pattern` and whether to watch it recursively."""
    directory = os.path.dirname(pattern) or "."
    if not glob.has_magic(directory):
        return directory, False
    parts: list[str] = []
    for part in directory.split(os.sep):
        if glob.has_magic(part):
            break
        parts.append(part)
    return (os.sep.join(parts) or (os.sep if pattern.startswith(os.sep) else ".")), True


# -- I/O helpers ----------------------------------------------------------------------------


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _identity(st: os.stat_result) -> Identity:
    return st.st_dev, st.st_ino


def _open_regular(path: str) -> tuple[int, os.stat_result] | None:
    """Open a regular file for reading; None when it is missing or not a regular file.
    Other errors (permission denied) are raised for the caller to report."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return fd, st


def _head(fd: int) -> bytes:
    return os.pread(fd, FINGERPRINT_BYTES, 0)


def _last_line_start(fd: int, size: int) -> int:
    """Offset just after the last newline before `size` (0 if none): where "end" starts, so
    that a line being written at startup is still read once it is complete."""
    end = size
    while end > 0:
        start = max(0, end - CHUNK_BYTES)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def _find_by_identity(directory: str, identity: Identity) -> str | None:
    """The path of the file in `directory` with this (dev, ino), e.g. events.jsonl.1."""
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.inode() != identity[1] or not entry.is_file(follow_symlinks=False):
                    continue
                if entry.stat(follow_symlinks=False).st_dev == identity[0]:
                    return entry.path
    except OSError:
        return None
    return None


# -- one open file --------------------------------------------------------------------------


class _Tail:
    """One open file, read in chunks from a line start; hands out complete lines only."""

    def __init__(self, fd: int, st: os.stat_result, offset: int, on_long: Callable[[int], None]) -> None:
        self.fd = fd
        self.identity = _identity(st)
        self.detached = False  # the watched path no longer names this file
        self.eof = False  # the last read found no more bytes
        self.seen_size = st.st_size
        self._on_long = on_long
        self.fp_len, self.fp_hash = fingerprint(_head(fd))
        self._rewind(offset)

    def _rewind(self, offset: int) -> None:
        self._buf = b""
        self._pos = 0  # index in _buf of the next line's start
        self._buf_offset = offset  # file offset of _buf[0]
        self.read_pos = offset  # file offset of the next byte to read
        self._skip_start: int | None = None  # set while discarding an over-long line

    @property
    def committed(self) -> int:
        """Offset of the first line not yet handed out."""
        if self._skip_start is not None:
            return self._skip_start
        return self._buf_offset + self._pos

    def position(self) -> Position:
        """This file's position, covering every line handed out."""
        dev, ino = self.identity
        return Position(dev, ino, self.committed, self.fp_len, self.fp_hash)

    def restart(self) -> None:
        """Start over at 0 (the file was truncated or rewritten)."""
        self._rewind(0)
        self.fp_len, self.fp_hash = fingerprint(_head(self.fd))

    def check_fingerprint(self) -> bool:
        """False if the file's first bytes changed; extends a short fingerprint as it grows."""
        head = _head(self.fd)
        if fingerprint(head[: self.fp_len])[1] != self.fp_hash or len(head) < self.fp_len:
            return False
        if len(head) > self.fp_len:
            self.fp_len, self.fp_hash = fingerprint(head)
        return True

    def read_lines(self, limit: int, path: str, max_line_bytes: int) -> list[Lines]:
        """Up to `limit` complete lines, reading more of the file as needed."""
        runs: list[Lines] = []
        self.eof = False
        size = 0
        while limit > 0 and size < BATCH_BYTES:
            if self._skip_start is not None:
                if not self._discard_long_line():
                    break
                continue
            taken = self._pos
            limit -= self._take_lines(runs, limit, path, max_line_bytes)
            size += self._pos - taken
            if limit <= 0 or size >= BATCH_BYTES:
                break
            if len(self._buf) - self._pos > max_line_bytes:
                self._start_discarding()
            elif not self._fill():
                break
        return runs

    def _take_lines(self, runs: list[Lines], limit: int, path: str, max_line_bytes: int) -> int:
        """Appends the buffer's complete lines (at most `limit`) to `runs`; how many it took."""
        buf, pos = self._buf, self._pos
        end = buf.rfind(b"\n", pos)
        if end < 0:
            return 0
        lines = buf[pos:end].split(b"\n")
        if len(lines) > limit:
            del lines[limit:]
            end = pos + sum(map(len, lines)) + len(lines) - 1
        start = self._buf_offset + pos
        runs += runs_of(path, start, lines, self._buf_offset + end + 1, max_line_bytes, self._on_long)
        self._pos = end + 1
        return len(lines)

    def _fill(self) -> bool:
        chunk = os.pread(self.fd, CHUNK_BYTES, self.read_pos)
        if not chunk:
            self.eof = True
            return False
        self._buf_offset += self._pos
        self._buf = self._buf[self._pos :] + chunk
        self._pos = 0
        self.read_pos += len(chunk)
        return True

    def _start_discarding(self) -> None:
        # The unfinished line is already too long: drop what we hold and skip to its end.
        self._skip_start = self._buf_offset + self._pos
        self._on_long(self._skip_start)
        self._buf, self._pos = b"", 0

    def _discard_long_line(self) -> bool:
        chunk = os.pread(self.fd, CHUNK_BYTES, self.read_pos)
        if not chunk:
            self.eof = True
            return False
        newline = chunk.find(b"\n")
        if newline < 0:
            self.read_pos += len(chunk)
            return True
        self._buf, self._pos = chunk[newline + 1 :], 0
        self._buf_offset = self.read_pos + newline + 1
        self.read_pos += len(chunk)
        self._skip_start = None
        return True

    def unread_bytes(self) -> int:
        """Bytes in the file beyond the last line handed out."""
        return max(0, os.fstat(self.fd).st_size - self.committed)

    def close(self) -> None:
        """Release the descriptor."""
        os.close(self.fd)


# -- one watched path -----------------------------------------------------------------------


@dataclass(slots=True)
class _Watch:
    """A watched path and the files read for it, oldest first: rotated files still being
    drained, then the file the path names now."""

    path: str
    literal: bool
    files: deque[_Tail]

    @property
    def current(self) -> _Tail | None:
        """The file the path named at the last look, if it is still there."""
        if self.files and not self.files[-1].detached:
            return self.files[-1]
        return None


class _Wakeup(FileSystemEventHandler):
    """Turns watchdog events into two flags: `wake` (data may be there) and `changed`
    (files were created, moved or deleted, so paths must be looked at again)."""

    def __init__(self) -> None:
        self.wake = threading.Event()
        self.changed = threading.Event()

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Called in the observer's thread; only sets thread-safe flags."""
        if not isinstance(event, FileModifiedEvent | FileClosedEvent):
            self.changed.set()
        self.wake.set()


# Our own opens and reads must not wake us, so those event types are left out.
_EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileModifiedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]


def _log_warning(message: str) -> None:
    log.warning("%s", message)


# -- the source -----------------------------------------------------------------------------


class FileSource:
    """Tails every file named by `patterns` (paths or globs), like `tail -F`."""

    def __init__(
        self,
        patterns: Sequence[str],
        *,
        start_at: str = START_AT,
        max_line_bytes: int = MAX_LINE_BYTES,
        saved: Saved = MappingProxyType({}),
        warn: Callable[[str], None] = _log_warning,
        poll_interval: float = 0.25,
        parser: Parser = JSON_PARSER,
    ) -> None:
        if start_at not in START_AT_CHOICES:
            raise ValueError(f"start_at must be 'beginning' or 'end', not {start_at!r}")
        if max_line_bytes < 1 or poll_interval <= 0:
            raise ValueError("max_line_bytes and poll_interval must be positive")
        self._patterns = list(patterns)
        self.parser = parser
        self._max_line_bytes = max_line_bytes
        self._warn = warn
        self._poll_interval = poll_interval
        self.skipped_long = 0
        self._watches: dict[str, _Watch] = {}
        self._retired: dict[Identity, tuple[str, Position]] = {}
        self._more = False  # the last read() stopped at max_lines or BATCH_BYTES
        self._turn = 0  # which watch reads first, so that no file starves the others
        self._wakeup = _Wakeup()
        self._observer = Observer()
        self._observed: set[str] = set()
        self._unreadable: set[str] = set()  # paths already reported as unreadable
        self._start(saved_positions(saved), start_at)
        self._observer.start()
        self._last_scan = time.monotonic()

    # -- public interface --

    def read(self, max_lines: int) -> list[Lines]:
        """The complete lines available now, at most `max_lines`; never blocks."""
        if max_lines <= 0:
            return []
        if self._wakeup.changed.is_set() or self._scan_due():
            self._scan()
        watches = list(self._watches.values())
        self._turn = (self._turn + 1) % max(1, len(watches))
        runs: list[Lines] = []
        full = False
        for watch in watches[self._turn :] + watches[: self._turn]:
            runs += self._read_watch(watch, max_lines - count_lines(runs))
            full = count_lines(runs) >= max_lines or size_of(runs) >= BATCH_BYTES
            if full:
                break
        self._more = full
        return runs

    def checkpoint(self) -> dict[str, Position]:
        """Positions covering exactly the lines returned by read() so far, keyed by path.

        A path whose old file is still being drained reports the old file: after a restart
        it is found again by its identity and finished before the new one is read.
        """
        return {w.path: w.files[0].position() for w in self._watches.values() if w.files}

    def exhausted(self) -> bool:
        """Never: files are followed for as long as the daemon runs."""
        return False

    def wait(self, timeout: float) -> None:
        """Block until new data may be there (a file system event or a poll) or `timeout`."""
        if self._more:
            return
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if self._wakeup.wake.wait(min(remaining, self._poll_interval)):
                self._wakeup.wake.clear()
                return
            # No event: inotify may not work here (NFS, limits), so look ourselves.
            if self._scan() or self._has_unread():
                return

    def lag_bytes(self) -> int:
        """Bytes written to the files but not yet returned, over all files."""
        return sum(t.unread_bytes() for w in self._watches.values() for t in w.files)

    def close(self) -> None:
        """Stop watching and close every file."""
        self._observer.stop()
        if self._observer.is_alive():
            self._observer.join(timeout=5)
        for watch in self._watches.values():
            while watch.files:
                watch.files.popleft().close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- startup: saved positions and start_at --

    def _start(self, positions: dict[str, Position], start_at: str) -> None:
        by_identity = {(p.dev, p.ino): p for p in positions.values()}
        for path in expand_patterns(self._patterns):
            watch = self._add_watch(path)
            saved = positions.get(path)
            if saved is not None:
                self._resume(watch, saved)
            else:
                self._open_first(watch, by_identity, start_at)
        self._observe_directories()

    def _resume(self, watch: _Watch, saved: Position) -> None:
        """Continue where a previous run stopped, finishing a file rotated meanwhile."""
        st = _stat(watch.path)
        if st is not None and _identity(st) == (saved.dev, saved.ino):
            self._append(watch, self._open_saved(watch.path, watch.path, saved, rotated=False))
            return
        old_path = _find_by_identity(os.path.dirname(watch.path) or ".", (saved.dev, saved.ino))
        old = self._open_saved(watch.path, old_path, saved, rotated=True) if old_path else None
        if old is not None:
            old.detached = True
            self._append(watch, old)
        else:
            self._warn(
                f"{watch.path}: the file read last time is gone; "
                "events written to it after the saved position may have been lost"
            )
        if st is not None:
            self._append(watch, self._open_new(watch.path))

    def _open_saved(self, path: str, real_path: str, saved: Position, *, rotated: bool) -> _Tail | None:
        """Open the file a saved position describes, at the offset the fingerprint allows."""
        opened = self._open(real_path)
        if opened is None:
            return None
        fd, st = opened
        verdict = classify_saved(saved, st.st_size, _head(fd))
        if (
            _identity(st) != (saved.dev, saved.ino)
            or (rotated and verdict == "changed")  # its inode was reused by another file
            or self._claimed(_identity(st))  # already read under another matching name
        ):
            os.close(fd)
            return None
        if verdict != "resume":
            self._warn(self._restart_message(path, verdict))
        offset = saved.offset if verdict == "resume" else 0
        return _Tail(fd, st, offset, self._on_long_for(path))

    def _open_first(self, watch: _Watch, by_identity: Mapping[Identity, Position], start_at: str) -> None:
        """First sight of a path at startup: a position saved under another name, or start_at."""
        opened = self._open(watch.path)
        if opened is None:
            return
        fd, st = opened
        saved = by_identity.get(_identity(st))
        if self._claimed(_identity(st)):
            os.close(fd)
        elif saved is not None:
            os.close(fd)
            self._append(watch, self._open_saved(watch.path, watch.path, saved, rotated=False))
        else:
            offset = 0 if start_at == "beginning" else _last_line_start(fd, st.st_size)
            self._append(watch, _Tail(fd, st, offset, self._on_long_for(watch.path)))

    # -- looking at the paths again --

    def _scan_due(self) -> bool:
        return time.monotonic() - self._last_scan >= self._poll_interval

    def _scan(self) -> bool:
        """Pick up new glob matches, rotation and truncation. True if anything changed."""
        self._wakeup.changed.clear()
        self._last_scan = time.monotonic()
        changed = False
        for path in expand_patterns(self._patterns):
            if path not in self._watches:
                self._add_watch(path)
        for watch in list(self._watches.values()):
            changed = self._check_path(watch) or changed
            if not watch.files and not watch.literal and _stat(watch.path) is None:
                del self._watches[watch.path]  # a glob match that went away for good
        self._observe_directories()
        return changed

    def _check_path(self, watch: _Watch) -> bool:
        """Compare what the path names now with the file we read for it."""
        st = _stat(watch.path)
        current = watch.current
        if st is not None and current is not None and current.identity == _identity(st):
            return self._check_truncation(watch.path, current)
        if current is not None:
            current.detached = True  # renamed away or deleted: drain it, then let it go
        if st is None or self._claimed(_identity(st)):
            return current is not None
        self._append(watch, self._open_new(watch.path))
        return True

    def _check_truncation(self, path: str, tail: _Tail) -> bool:
        size = os.fstat(tail.fd).st_size
        if size == tail.seen_size and size >= tail.read_pos:
            return False
        tail.seen_size = size
        if size < tail.read_pos:
            verdict: Verdict = "truncated"
        elif not tail.check_fingerprint():
            verdict = "changed"
        else:
            return True
        self._warn(self._restart_message(path, verdict))
        tail.restart()
        return True

    def _open_new(self, path: str) -> _Tail | None:
        """A file that appeared while running: read from 0, unless it is a file we already
        drained under another name (then from where we stopped)."""
        opened = self._open(path)
        if opened is None:
            return None
        fd, st = opened
        if self._claimed(_identity(st)):
            os.close(fd)
            return None
        offset = 0
        # Only a file seen under another name counts: a re-created path may reuse the inode
        # of the deleted file, and short fingerprints could then match by chance.
        old_path, retired = self._retired.get(_identity(st), (path, None))
        if old_path != path and retired and classify_saved(retired, st.st_size, _head(fd)) == "resume":
            offset = retired.offset
        return _Tail(fd, st, offset, self._on_long_for(path))

    # -- reading --

    def _read_watch(self, watch: _Watch, limit: int) -> list[Lines]:
        """Lines of one path: rotated files are finished before the next file is read."""
        runs: list[Lines] = []
        while watch.files and limit > 0:
            tail = watch.files[0]
            # Decided before the final read: once the writer has moved on, everything it
            # wrote to the old file is already there to be read.
            done = tail.detached and self._writer_gone(watch)
            if tail.eof and not tail.detached:
                # Bytes past where we stopped may belong to a file truncated and refilled
                # since: check before reading them, not only at the next poll.
                self._check_truncation(watch.path, tail)
            got = tail.read_lines(limit, watch.path, self._max_line_bytes)
            runs += got
            limit -= count_lines(got)
            if not (done and tail.eof):
                break
            self._retire(watch.path, watch.files.popleft())
        return runs

    def _writer_gone(self, watch: _Watch) -> bool:
        """True when nothing more will be written to the oldest file of `watch`: it was
        deleted, or a newer file for the same path has data."""
        if os.fstat(watch.files[0].fd).st_nlink == 0:
            return True
        return len(watch.files) > 1 and os.fstat(watch.files[1].fd).st_size > 0

    def _retire(self, path: str, tail: _Tail) -> None:
        if tail.read_pos > tail.committed:
            self._warn(f"{path}: a rotated file ended without a newline; its last line is dropped")
        self._retired[tail.identity] = (path, tail.position())
        if len(self._retired) > _RETIRED_MAX:
            del self._retired[next(iter(self._retired))]
        tail.close()

    def _has_unread(self) -> bool:
        return any(os.fstat(t.fd).st_size != t.read_pos for w in self._watches.values() for t in w.files)

    # -- bookkeeping --

    def _open(self, path: str) -> tuple[int, os.stat_result] | None:
        """`_open_regular`, reporting an unreadable path once instead of raising."""
        try:
            opened = _open_regular(path)
        except OSError as exc:
            if path not in self._unreadable:
                self._warn(f"{path}: cannot open ({exc.strerror}); will retry")
                self._unreadable.add(path)
            return None
        self._unreadable.discard(path)
        return opened

    def _add_watch(self, path: str) -> _Watch:
        watch = _Watch(path, literal=path in self._patterns, files=deque())
        self._watches[path] = watch
        return watch

    def _append(self, watch: _Watch, tail: _Tail | None) -> None:
        if tail is not None:
            watch.files.append(tail)

    def _claimed(self, identity: Identity) -> bool:
        """Is this file already being read (for this or another path)?"""
        return any(t.identity == identity for w in self._watches.values() for t in w.files)

    def _on_long_for(self, path: str) -> Callable[[int], None]:
        def on_long(offset: int) -> None:
            self.skipped_long += 1
            self._warn(f"{path}: skipped a line longer than {self._max_line_bytes} bytes at offset {offset}")

        return on_long

    def _restart_message(self, path: str, verdict: Verdict) -> str:
        if verdict == "truncated":
            return f"{path}: file was truncated; reading from its start, events may have been lost"
        return f"{path}: file content changed (fingerprint mismatch); reading from its start"

    def _observe_directories(self) -> None:
        for pattern in self._patterns:
            directory, recursive = observed_directory(pattern)
            if directory in self._observed or not os.path.isdir(directory):
                continue
            try:
                self._observer.schedule(self._wakeup, directory, recursive=recursive, event_filter=_EVENT_FILTER)
            except OSError as exc:  # e.g. the inotify watch limit: polling still works
                self._warn(f"{directory}: cannot watch for changes ({exc}); polling instead")
            self._observed.add(directory)
