"""The file source: follows files like `tail -F` and remembers where it stopped.

With the decisions of `rotation` (identity plus a fingerprint of the first bytes) it survives
rotation by rename+create (the old file is drained through its open descriptor before the new
one is read from 0), copytruncate and other truncation (restart at 0 with a warning), deletion
and re-creation, and restarts of the daemon (saved `Position`s). This module keeps the
bookkeeping: which files are read for which path, in which order, and which were finished.

Only complete lines are returned; a position always points at the start of a line, so a
checkpoint covers exactly the lines handed out. Lines longer than `max_line_bytes` are
discarded chunk by chunk, never held in memory whole (see `tail`).

`wait()` sleeps on the directory watch (`watch`), with a polling fallback for file systems
that do not deliver events. What a turn costs does not grow with quiet files: `read()` reads
only the files events named (or a look found grown, or that still have lines to hand out), and
`checkpoint()` builds only the positions that may have moved. The look at every path (`_scan`)
is spaced out so that it takes about 1% of a core at most, however many files there are.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import glob
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Container, Mapping, Sequence
from types import MappingProxyType

import msgspec

from rulesd.events import JSON_PARSER, Parser
from rulesd.printable import path_text
from rulesd.sources.base import FORGOTTEN, MAX_LINE_BYTES, START_AT, START_AT_CHOICES, Checkpoint, Saved
from rulesd.sources.lines import BATCH_BYTES, Lines, count_lines, size_of
from rulesd.sources.rotation import (
    Change,
    Identity,
    Position,
    Retired,
    Verdict,
    judge,
    may_be_the_saved,
    resume_retired,
    resume_saved,
    rotation_name,
    writer_gone,
)
from rulesd.sources.tail import (
    NotRegularFile,
    Tail,
    find_by_identity,
    identity_of,
    last_line_start,
    open_regular,
    read_head,
    stat_or_none,
)
from rulesd.sources.watch import DirectoryWatch

__all__ = ["FileSource", "expand_patterns", "saved_positions"]

log = logging.getLogger(__name__)

# Identities of files that were drained and closed, remembered so that a rotated file that
# later matches a glob (events.jsonl.1 for "events.jsonl*") is not read a second time.
_RETIRED_MAX = 1024
# The share of a core the look at every path may take: it runs at most every poll_interval, and
# no sooner than its own CPU time divided by this (2,000 files: every few seconds).
_SCAN_SHARE = 0.01


def saved_positions(saved: Saved) -> dict[str, Position]:
    """The file positions among saved checkpoints: those keyed by an absolute path (the
    journald source saves its cursor under a plain name)."""
    return {path: Position.from_json(data) for path, data in saved.items() if os.path.isabs(path)}


def expand_patterns(patterns: Sequence[str], known: Container[str] = ()) -> list[str]:
    """Paths named by `patterns`, in order, without duplicates.

    A literal path is kept even when it does not exist yet (it is waited for); a glob
    yields only the regular files it matches now (and the `known` paths it matches, not
    looked at again: the caller does).
    """
    paths: dict[str, None] = {}
    for pattern in patterns:
        if not glob.has_magic(pattern):
            paths[pattern] = None
            continue
        for match in sorted(glob.glob(pattern)):
            if match in known or os.path.isfile(match):
                paths[match] = None
    return list(paths)


def glob_matches(pattern: str, path: str) -> bool:
    """Whether the glob `pattern` names `path`, as `glob.glob` would if it existed: component
    by component, so that `*` never crosses a `/`."""
    parts, names = pattern.split(os.sep), path.split(os.sep)
    return len(parts) == len(names) and all(fnmatch.fnmatchcase(n, p) for p, n in zip(parts, names, strict=True))


class _Watch(msgspec.Struct):
    """A watched path and the files read for it, oldest first: rotated files still being
    drained, then the file the path names now."""

    path: str
    literal: bool
    files: deque[Tail]
    # The path as text, a name that is not UTF-8 with those bytes escaped (`a\\xff.jsonl`): it
    # names the lines in alerts and the saved position, which take UTF-8 only (the surrogates
    # that stand for such bytes in `path` made every commit fail, and the daemon stop).
    name: str = ""

    @property
    def current(self) -> Tail | None:
        """The file the path named at the last look, if it is still there."""
        if self.files and not self.files[-1].detached:
            return self.files[-1]
        return None


def _log_warning(message: str) -> None:
    log.warning("%s", message)


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
        clock: Callable[[], float] = time.monotonic,
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
        self._clock = clock
        self.skipped_long = 0
        self._watches: dict[str, _Watch] = {}
        # The identities of the files in every watch's `files`, kept with them: whether a file
        # is already read is asked for each file opened, and a scan of every watch made a glob's
        # start O(n²) (2,000 files: over half a second).
        self._claims: Counter[Identity] = Counter()
        self._retired: dict[Identity, Retired] = {}
        self._more = False  # the last read() stopped at max_lines or BATCH_BYTES
        self._turn = 0  # which watch reads first, so that no file starves the others
        self._watch = DirectoryWatch(warn)
        self._unreadable: set[str] = set()  # paths already reported as unreadable
        # Compressed files let go, by identity, with the path each was last seen at: not opened
        # again at every scan, and noted once however often renamed (.2.gz to .3.gz).
        self._compressed: dict[Identity, str] = {}
        # Glob matches gone for good (and paths whose file was let go as compressed) whose saved
        # positions are to be deleted with the next checkpoint: a glob of short-lived files (one
        # per job, per container) would otherwise leave a position behind per file, for ever.
        self._forgotten: set[str] = set()
        # Watched paths (dicts as ordered sets) that may have lines to read, and whose positions
        # may have moved since the last checkpoint: at first, all.
        self._active: dict[str, None] = {}
        self._moved: dict[str, None] = {}
        self._start(saved_positions(saved), start_at)
        self._watch.start()
        self._last_scan = clock()
        self._scan_every = poll_interval

    # -- public interface --

    def read(self, max_lines: int) -> list[Lines]:
        """The complete lines available now, at most `max_lines`; never blocks."""
        if max_lines <= 0:
            return []
        for path in self._watch.take_paths():
            if path in self._watches:
                self._active[path] = None
        if self._watch.changed.is_set() or self._scan_due():
            self._scan()
        watches = [self._watches[path] for path in self._active]
        self._turn = (self._turn + 1) % max(1, len(watches))
        runs: list[Lines] = []
        full = False
        lines = size = 0
        for watch in watches[self._turn :] + watches[: self._turn]:
            got = self._read_watch(watch, max_lines - lines)
            runs += got
            lines, size = lines + count_lines(got), size + size_of(got)
            self._moved[watch.path] = None
            if self._settled(watch):
                self._active.pop(watch.path, None)
                self._drop_if_gone(watch)
            full = lines >= max_lines or size >= BATCH_BYTES
            if full:
                break
        self._more = full
        return runs

    def checkpoint(self) -> dict[str, Checkpoint]:
        """Positions covering exactly the lines returned by read() so far, keyed by path: those
        that may have moved since the last call (at the first, all).

        A path whose old file is still being drained reports the old file: after a restart
        it is found again by its identity and finished before the new one is read. A glob
        match gone for good (or a saved one no glob match names now), or a path whose file was
        let go as compressed, is FORGOTTEN, once.
        """
        watches = [w for path in self._moved if (w := self._watches.get(path)) is not None and w.files]
        positions: dict[str, Checkpoint] = {w.name: w.files[0].position() for w in watches}
        for name in self._forgotten:
            positions.setdefault(name, FORGOTTEN)
        self._forgotten.clear()
        self._moved.clear()
        return positions

    def exhausted(self) -> bool:
        """Never: files are followed for as long as the daemon runs."""
        return False

    def wait(self, timeout: float) -> None:
        """Block until new data may be there (a file system event or a poll) or `timeout`."""
        if self._more:
            return
        deadline = self._clock() + timeout
        while (remaining := deadline - self._clock()) > 0:
            if self._watch.wake.wait(min(remaining, self._poll_interval)):
                self._watch.wake.clear()
                return
            # No event: inotify may not work here (NFS, limits), so look ourselves.
            if (self._scan_due() and self._scan()) or self._has_unread():
                return

    def lag_bytes(self) -> int:
        """Bytes written to the files but not yet returned, over all files.

        Asked from the metrics thread while this source reads: it sums over copies (taking
        them runs no Python code, so the reading thread cannot change them midway: a dict
        changed during the sum failed the scrape), and a file closed since counts for 0."""
        lag = 0
        for watch in list(self._watches.values()):
            for tail in tuple(watch.files):
                with contextlib.suppress(OSError):
                    lag += tail.unread_bytes()
        return lag

    def names(self) -> list[str]:
        """Every path followed: the literal ones, also while missing, and each glob match."""
        return [w.name for w in self._watches.values()]

    def close(self) -> None:
        """Stop watching and close every file."""
        self._watch.stop()
        for watch in self._watches.values():
            while watch.files:
                self._let_go(watch).close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- startup: saved positions and start_at --

    def _start(self, positions: dict[str, Position], start_at: str) -> None:
        by_identity = {(p.dev, p.ino): p for p in positions.values()}
        for path in expand_patterns(self._patterns):
            watch = self._add_watch(path)
            saved = positions.get(watch.name)
            if saved is not None:
                self._resume(watch, saved)
            else:
                self._open_first(watch, by_identity, start_at)
        # Positions of files that matched a glob and are gone (deleted while stopped, or left
        # behind by a version that kept them).
        globs = [p for p in self._patterns if glob.has_magic(p)]
        followed = {w.name for w in self._watches.values()}
        self._forgotten.update(
            name for name in positions if name not in followed and any(glob_matches(g, name) for g in globs)
        )
        self._watch.observe(self._patterns)

    def _resume(self, watch: _Watch, saved: Position) -> None:
        """Continue where a previous run stopped, finishing a file rotated meanwhile."""
        st = stat_or_none(watch.path)
        if st is not None and identity_of(st) == saved.identity:
            self._append(watch, self._open_saved(watch.path, watch.path, saved, rotated=False, elsewhere=False))
            return
        new = self._open_new(watch.path) if st is not None else None
        if new is not None and new.compressed and saved.fp_len == 0:
            # A file saved with no byte yet, where a compressed one is now: gzip's output, seen in
            # the moment between its making and its writing. Never to be read, so not looked for:
            # with no byte to tell it by, another file given its inode would pass for it.
            log.debug("%s: the compressed file seen empty last time is gone", watch.path)
            self._append(watch, new)
            return
        found = old_path = find_by_identity(os.path.dirname(watch.path) or ".", saved.identity)
        followed = found is not None and self._follows(found)
        if found is not None and not may_be_the_saved(saved, watch.path, found, followed=followed):
            log.debug("%s: seen empty last time; %s, with its inode, is not taken for it", watch.path, found)
            old_path = None
        old = self._open_saved(watch.path, old_path, saved, rotated=True, elsewhere=True) if old_path else None
        if old is not None and old_path is not None and old.compressed:
            # Opened empty before gzip wrote it, then rotated on (.2.gz to .3.gz): noted where
            # it is now, not as the file its old name holds (that one is noted for itself).
            self._skip_compressed(old_path, old)
        elif old is not None:
            old.detached = True
            self._append(watch, old)
        elif saved.drained:  # rotated on (and compressed, or removed) as it should be
            log.debug("%s: the file read to its end last time is gone", watch.path)
        elif found is not None and old_path is None and followed and rotation_name(watch.path, found):
            # Rotated while stopped (events.jsonl.1 for events.jsonl*): read whole under that name.
            log.debug("%s: the file seen empty last time is read as %s", watch.path, found)
        else:
            self._warn(
                f"{watch.path}: the file read last time is gone; "
                "events written to it after the saved position may have been lost"
            )
        self._append(watch, new)

    def _open_saved(self, path: str, real_path: str, saved: Position, *, rotated: bool, elsewhere: bool) -> Tail | None:
        """Open the file a saved position describes, at the offset `resume_saved` allows."""
        opened = self._open(real_path)
        if opened is None:
            return None
        fd, st = opened
        identity = identity_of(st)
        offset, verdict = resume_saved(
            saved,
            identity,
            st.st_size,
            read_head(fd),
            rotated=rotated,
            claimed=self._claimed(identity),
            elsewhere=elsewhere,
        )
        if offset is None:
            os.close(fd)
            return None
        if verdict != "resume":
            self._warn(self._restart_message(path, verdict))
        return self._tail(fd, st, offset, path, drained=saved.offset if saved.drained else None)

    def _open_first(self, watch: _Watch, by_identity: Mapping[Identity, Position], start_at: str) -> None:
        """First sight of a path at startup: a position saved under another name, or start_at."""
        opened = self._open(watch.path)
        if opened is None:
            return
        fd, st = opened
        saved = by_identity.get(identity_of(st))
        if self._claimed(identity_of(st)):
            os.close(fd)
        elif saved is not None:
            os.close(fd)
            self._append(watch, self._open_saved(watch.path, watch.path, saved, rotated=False, elsewhere=True))
        else:
            offset = 0 if start_at == "beginning" else last_line_start(fd, st.st_size)
            self._append(watch, Tail(fd, st, offset, self._on_long_for(watch.path)))

    # -- looking at the paths again --

    def _scan_due(self) -> bool:
        return self._clock() - self._last_scan >= self._scan_every

    def _scan(self) -> bool:
        """Pick up new glob matches, rotation, truncation and growth that no event told of.
        True if anything changed (the paths concerned are then read at the next turn)."""
        started = time.thread_time()
        self._watch.changed.clear()
        self._last_scan = self._clock()
        changed = False
        for path in expand_patterns(self._patterns, self._watches):
            if path not in self._watches:
                self._add_watch(path)
        for watch in list(self._watches.values()):
            if self._check_path(watch):
                changed = True
                self._touch(watch)
            self._drop_if_gone(watch)
        self._watch.observe(self._patterns)
        self._scan_every = max(self._poll_interval, (time.thread_time() - started) / _SCAN_SHARE)
        return changed

    def _drop_if_gone(self, watch: _Watch) -> None:
        """Forget a glob match that went away for good (read to its end and deleted)."""
        if not watch.files and not watch.literal and stat_or_none(watch.path) is None:
            del self._watches[watch.path]
            self._active.pop(watch.path, None)
            self._forgotten.add(watch.name)

    def _check_path(self, watch: _Watch) -> bool:
        """Look at what the path names now and act on `rotation.judge`; True if anything changed."""
        st = stat_or_none(watch.path)
        path_identity = identity_of(st) if st is not None else None
        current = watch.current
        if current is not None:
            change = self._check_file(watch.path, current, path_identity)
            if change != "replaced":
                return change != "same"
            current.detached = True  # renamed away or deleted: drain it, then let it go
        if path_identity is None or self._claimed(path_identity) or self._compressed.get(path_identity) == watch.path:
            return current is not None
        self._append(watch, self._open_new(watch.path))
        return True

    def _check_file(self, path: str, tail: Tail, path_identity: Identity | None) -> Change:
        """Judge one file read for `path` and carry out the verdict (all but "replaced")."""
        head = functools.cache(functools.partial(read_head, tail.fd))
        size = os.fstat(tail.fd).st_size
        change = judge(tail.tracked(), path_identity, size, head)
        if change == "grew":
            tail.grew(size, head())
        elif change in ("truncated", "changed"):
            self._warn(self._restart_message(path, change))
            tail.restart(size)
        return change

    def _open_new(self, path: str) -> Tail | None:
        """A file that appeared while running: read from 0, unless it is a file we already
        drained under another name (then from where we stopped)."""
        opened = self._open(path)
        if opened is None:
            return None
        fd, st = opened
        identity = identity_of(st)
        if self._claimed(identity):
            os.close(fd)
            return None
        # Taken up under this name, the file is followed again: remembered anew if let go of.
        retired = self._retired.pop(identity, None)
        offset = resume_retired(path, retired, st.st_size, st.st_mtime_ns, read_head(fd))
        return self._tail(fd, st, offset, path, drained=retired.position.offset if retired is not None else None)

    def _tail(self, fd: int, st: os.stat_result, offset: int, path: str, *, drained: int | None) -> Tail:
        """A Tail for `path` from `offset`; `drained`: where a rotated file read to its end (by
        this run or the last) ended, kept while reading goes on from there (`Position.drained`)."""
        tail = Tail(fd, st, offset, self._on_long_for(path))
        if offset == drained:
            tail.drained_at = offset
        return tail

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
                self._check_file(watch.path, tail, tail.identity)
            got = tail.read_lines(limit, watch.name, self._max_line_bytes)
            if tail.compressed:
                self._skip_compressed(watch.path, self._let_go(watch))
                continue
            runs += got
            limit -= count_lines(got)
            if not (done and tail.eof):
                break
            self._retire(watch.path, self._let_go(watch))
        return runs

    def _writer_gone(self, watch: _Watch) -> bool:
        """Whether nothing more will be written to the oldest file of `watch` (`writer_gone`)."""
        newer = os.fstat(watch.files[1].fd).st_size if len(watch.files) > 1 else None
        return writer_gone(os.fstat(watch.files[0].fd).st_nlink, newer)

    def _retire(self, path: str, tail: Tail) -> None:
        if tail.read_pos > tail.committed:
            self._warn(f"{path}: a rotated file ended without a newline; its last line is dropped")
        # Only a file still linked can turn up under another name. A deleted one never comes
        # back, but its inode does, as another file at once: one that starts with the same
        # bytes (a job's file written alike at every run) was taken for it and read from
        # where the deleted one ended, its events skipped.
        st = os.fstat(tail.fd)
        if st.st_nlink:
            self._retired[tail.identity] = Retired(path, tail.position(), st.st_mtime_ns)
            if len(self._retired) > _RETIRED_MAX:
                del self._retired[next(iter(self._retired))]
        else:  # remembered when it was let go of at a rotation, then taken up under its new name
            self._retired.pop(tail.identity, None)
        tail.close()
        self._follow_renamed(tail.identity)

    def _follow_renamed(self, identity: Identity) -> None:
        """Take a drained file up at once (at its end) under a path that names it now
        (events.jsonl.1 for events.jsonl*), not at the next scan: so the checkpoint saved with
        the lines read alongside holds it, and a restart does not read it again from start_at."""
        for watch in self._watches.values():
            if watch.current is None and (st := stat_or_none(watch.path)) and identity_of(st) == identity:
                self._check_path(watch)
                return

    def _has_unread(self) -> bool:
        return any(os.fstat(t.fd).st_size != t.read_pos for p in self._active for t in self._watches[p].files)

    def _settled(self, watch: _Watch) -> bool:
        """Whether a path just read has nothing more to hand out until an event or a look
        says otherwise: one file, read to its end, still the one the path names. A literal
        path never is: there are few, and a line written to one is read at the very next
        turn, even before its event comes."""
        if watch.literal:
            return False
        return not watch.files or (len(watch.files) == 1 and watch.files[0].eof and not watch.files[0].detached)

    def _touch(self, watch: _Watch) -> None:
        """To be read at the next turn, and its position checkpointed."""
        self._active[watch.path] = None
        self._moved[watch.path] = None

    # -- bookkeeping --

    def _open(self, path: str) -> tuple[int, os.stat_result] | None:
        """`open_regular`, reporting an unreadable path (or one that names a FIFO, a device…)
        once instead of raising; it is looked at again at every scan."""
        try:
            opened = open_regular(path)
        except NotRegularFile as exc:
            if path not in self._unreadable:
                self._warn(f"{path}: {exc}; skipped until a regular file is there")
                self._unreadable.add(path)
            return None
        except OSError as exc:
            if path not in self._unreadable:
                self._warn(f"{path}: cannot open ({exc.strerror}); will retry")
                self._unreadable.add(path)
            return None
        self._unreadable.discard(path)
        return opened

    def _add_watch(self, path: str) -> _Watch:
        watch = _Watch(path, literal=path in self._patterns, files=deque(), name=path_text(path))
        self._watches[path] = watch
        self._forgotten.discard(watch.name)
        self._touch(watch)
        return watch

    def _append(self, watch: _Watch, tail: Tail | None) -> None:
        if tail is not None and tail.compressed:
            self._skip_compressed(watch.path, tail)
        elif tail is not None:
            watch.files.append(tail)
            self._claims[tail.identity] += 1
            self._touch(watch)

    def _let_go(self, watch: _Watch) -> Tail:
        """Take the oldest file out of `watch`; only then may it be opened again (elsewhere)."""
        tail = watch.files.popleft()
        self._claims[tail.identity] -= 1
        if not self._claims[tail.identity]:
            del self._claims[tail.identity]
        return tail

    def _skip_compressed(self, path: str, tail: Tail) -> None:
        """Let a compressed file go for good (see `compressed`), saying so once per file."""
        if tail.identity not in self._compressed:
            log.info("%s: %s-compressed, skipped: compressed files are never read", path, tail.compressed)
        watch = self._watches.get(path)
        if watch is not None and not watch.files:
            # A position saved while it was empty (gzip still to write it) goes with it: kept, it
            # named a file never read, and once that was rotated on and removed, a start warned
            # that events written to it may have been lost.
            self._forgotten.add(watch.name)
        self._compressed[tail.identity] = path
        if len(self._compressed) > _RETIRED_MAX:
            del self._compressed[next(iter(self._compressed))]
        tail.close()

    def _follows(self, path: str) -> bool:
        """Whether `path` is one the patterns name (literally, or as a glob's match)."""
        return any(path == p or (glob.has_magic(p) and glob_matches(p, path)) for p in self._patterns)

    def _claimed(self, identity: Identity) -> bool:
        """Is this file already being read (for this or another path)?"""
        return identity in self._claims

    def _on_long_for(self, path: str) -> Callable[[int], None]:
        def on_long(offset: int) -> None:
            self.skipped_long += 1
            self._warn(f"{path}: skipped a line longer than {self._max_line_bytes} bytes at offset {offset}")

        return on_long

    def _restart_message(self, path: str, verdict: Verdict) -> str:
        if verdict == "truncated":
            return f"{path}: file was truncated; reading from its start, events may have been lost"
        return f"{path}: file content changed (fingerprint mismatch); reading from its start"
