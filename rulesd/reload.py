"""Noticing rule changes: watchdog events on the rule directories, debounced, plus a
periodic fingerprint of the files as a backstop (and SIGHUP, wired by the daemon).

Directories are watched rather than files so that editors saving by rename,
`sed -i` and Kubernetes ConfigMap `..data` symlink swaps are all seen.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from rulesd.rules.loader import discover_files
from rulesd.rules.rule_directories import file_identity

log = logging.getLogger("rulesd")


def files_fingerprint(paths: Iterable[str]) -> str:
    """A hash of the rule files' names, sizes, inodes and modification times: cheap to take."""
    files, _ = discover_files(paths)
    digest = hashlib.sha256()
    for path in files:
        name = os.fsencode(path)  # a name that is not UTF-8 holds surrogates: its bytes, as they are
        try:
            st = os.stat(path)
        except OSError:
            digest.update(name + b":gone")
            continue
        digest.update(name + f":{st.st_ino}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()


class _Handler(FileSystemEventHandler):
    def __init__(self, on_change: Callable[[tuple[str, ...]], None], on_deleted: Callable[[str], None]) -> None:
        self.on_change = on_change
        self.directory_deleted = on_deleted

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type == "deleted" and event.is_directory:
            # Perhaps a watched directory itself: its watch ends with it.
            self.directory_deleted(os.fsdecode(event.src_path))
        if event.event_type in ("opened", "closed_no_write"):
            return
        if event.event_type == "modified" and event.is_directory:
            return  # its entries changed (or its mode): each change of an entry is an event of its own
        self.on_change(tuple(os.fsdecode(p) for p in (event.src_path, event.dest_path) if p))


class RuleWatcher:
    """Tells the main loop when rule files may have changed; never reloads by itself."""

    def __init__(
        self, paths: Iterable[str], *, clock: Callable[[], float], debounce: float = 0.1, backstop: float = 5.0
    ) -> None:
        self.paths = tuple(os.path.abspath(path) for path in paths)  # as the watches report them
        self.clock = clock
        self.debounce = debounce
        self.backstop = backstop
        self._lock = threading.Lock()
        self._changed_at: float | None = None
        self._named = False  # an event since the last check named a rule path (not just its neighbours)
        self._forced = False
        self._last_check = clock()
        self._fingerprint = files_fingerprint(self.paths)
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._handler = _Handler(self._touched, self._deleted)
        # What is watched: directory -> (its identity when the watch was made, the watch).
        self._watches: dict[str, tuple[tuple[int, int] | None, Any]] = {}
        # Watched directories reported deleted: a directory made again under the same name may
        # even get the same inode number, so its identity alone cannot tell.
        self._lost: set[str] = set()
        # The directories of rule files (and of missing rule paths): any change there may be a
        # ConfigMap's `..data` swap, which only the fingerprint tells.
        self._file_directories: frozenset[str] = frozenset()

    def start(self) -> None:
        """Start watching the directories that hold the rule paths."""
        observer = Observer()
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._refresh_watches()

    def _refresh_watches(self) -> None:
        """Watch what should be watched now: a rule directory that was removed and made again is
        another directory (its old watch went with it), so it is watched anew; a missing one is
        waited for in its nearest existing parent."""
        if self._observer is None:
            return
        wanted = self._directories()
        with self._lock:
            lost, self._lost = self._lost, set()
        stale = [d for d in self._watches if d not in wanted or d in lost or file_identity(d) != self._watches[d][0]]
        for directory in stale:
            _, watch = self._watches.pop(directory)
            if watch is not None:
                with suppress(KeyError, OSError):
                    self._observer.unschedule(watch)
        for directory, recursive in sorted(wanted.items()):
            if directory in self._watches:
                continue
            identity = file_identity(directory)
            try:
                watch = self._observer.schedule(self._handler, directory, recursive=recursive)
            except OSError as exc:
                log.warning("cannot watch %s for rule changes (%s); relying on the periodic check", directory, exc)
                watch = None
            self._watches[directory] = (identity, watch)

    def stop(self) -> None:
        """Stop the watcher thread."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)

    def request(self) -> None:
        """Ask for a reload now (SIGHUP).

        Called from a signal handler, which runs on the main thread possibly while it holds
        `_lock` inside `due()`: so no lock here, just an assignment (atomic under the GIL).
        The main loop looks at least every IDLE_WAIT seconds.
        """
        self._forced = True

    def due(self) -> bool:
        """True once a change has settled (or was requested): the caller should reload now."""
        now = self.clock()
        if self._forced:
            self._forced = False
            with self._lock:
                self._changed_at = None
            self._fingerprint = files_fingerprint(self.paths)
            return True
        with self._lock:
            settled = self._changed_at is not None and now - self._changed_at >= self.debounce
            named = self._named
        if not settled and now - self._last_check < self.backstop:
            return False
        self._last_check = now
        self._refresh_watches()  # before the fingerprint: what changes after it is seen by the watch
        current = files_fingerprint(self.paths)
        with self._lock:
            self._changed_at = None
            self._named = False
            changed = current != self._fingerprint
            self._fingerprint = current
        # Events about a rule file's neighbours (the state directory, a log) reload only if the
        # fingerprint moved (a ConfigMap's `..data` swap does); a rule path's own always do.
        return changed or (settled and named)

    def _deleted(self, path: str) -> None:
        if path in self._watches:
            with self._lock:
                self._lost.add(path)

    def _touched(self, paths: tuple[str, ...]) -> None:
        named = any(self._names_rule_path(path) for path in paths)
        if not named and not any(os.path.dirname(path) in self._file_directories for path in paths):
            return  # a neighbour of a rule directory, in its parent: only the directory's own name counts
        now = self.clock()
        with self._lock:
            if named or self._changed_at is None:  # a busy neighbour must not postpone a save's reload
                self._changed_at = now
            self._named = self._named or named

    def _names_rule_path(self, path: str) -> bool:
        """`path` is a rule path, lies under one or holds one (a directory above it renamed)."""
        return any(path == rule or _under(path, rule) or _under(rule, path) for rule in self.paths)

    def _directories(self) -> dict[str, bool]:
        """The directories to watch, each with whether to watch it recursively: a rule directory
        is, and its parent is watched alone (a deploy may swap the directory by a rename or a
        link); the directory of a rule file is watched alone (it may be `/` or `/etc`, whose
        trees hold no rules), and so is the nearest existing parent of a missing one, for the
        directory to appear."""
        dirs: dict[str, bool] = {}
        for path in self.paths:
            recursive = os.path.isdir(path)
            target = path if recursive else os.path.dirname(path)
            while not os.path.isdir(target) and target != os.path.dirname(target):
                target = os.path.dirname(target)  # watch the nearest existing parent
                recursive = False
            dirs[target] = dirs.get(target, False) or recursive
            if recursive:
                dirs.setdefault(os.path.dirname(path), False)
        self._file_directories = frozenset(os.path.dirname(p) for p in self.paths if not os.path.isdir(p))
        return dirs


def _under(path: str, directory: str) -> bool:
    return path.startswith(directory.rstrip(os.sep) + os.sep)
