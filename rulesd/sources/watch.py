"""Waking the file source when its files may have changed: watchdog (inotify on Linux) on the
directories of its patterns. The file source also polls, for file systems that deliver no
events (NFS) or when the watch limit is reached."""

from __future__ import annotations

import glob
import os
import threading
from collections.abc import Callable, Iterable

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


class _Wakeup(FileSystemEventHandler):
    """Turns watchdog events into two flags: `wake` (data may be there) and `changed`
    (files were created, moved or deleted, so paths must be looked at again), and the paths
    they were about (`take_paths`), so that only those files are read."""

    def __init__(self) -> None:
        self.wake = threading.Event()
        self.changed = threading.Event()
        self._lock = threading.Lock()
        self._paths: set[str] = set()

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Called in the observer's thread; only sets thread-safe flags."""
        with self._lock:
            self._paths.update(os.fsdecode(p) for p in (event.src_path, event.dest_path) if p)
        if not isinstance(event, FileModifiedEvent | FileClosedEvent):
            self.changed.set()
        self.wake.set()

    def take_paths(self) -> set[str]:
        with self._lock:
            paths, self._paths = self._paths, set()
        return paths


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


class DirectoryWatch:
    """Watches the directories that hold (or will hold) the files of some patterns."""

    def __init__(self, warn: Callable[[str], None]) -> None:
        self._warn = warn
        self._wakeup = _Wakeup()
        self._observer = Observer()
        self._observed: set[str] = set()

    @property
    def wake(self) -> threading.Event:
        """Set when data may be there."""
        return self._wakeup.wake

    @property
    def changed(self) -> threading.Event:
        """Set when files were created, moved or deleted, so paths must be looked at again."""
        return self._wakeup.changed

    def take_paths(self) -> set[str]:
        """The paths events were about since the last call (each file written to, created,
        moved or deleted)."""
        return self._wakeup.take_paths()

    def observe(self, patterns: Iterable[str]) -> None:
        """Watch the directory of each pattern that exists and is not watched yet."""
        for pattern in patterns:
            directory, recursive = observed_directory(pattern)
            if directory in self._observed or not os.path.isdir(directory):
                continue
            try:
                self._observer.schedule(self._wakeup, directory, recursive=recursive, event_filter=_EVENT_FILTER)
            except OSError as exc:  # e.g. the inotify watch limit: polling still works
                self._warn(f"{directory}: cannot watch for changes ({exc}); polling instead")
            self._observed.add(directory)

    def start(self) -> None:
        """Start the observer thread."""
        self._observer.start()

    def stop(self) -> None:
        """Stop the observer thread."""
        self._observer.stop()
        if self._observer.is_alive():
            self._observer.join(timeout=5)
