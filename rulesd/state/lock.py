"""One daemon per state directory: an advisory lock on a file in it, held for the life of
`rulesd run` or `rulesd forward`.

Two daemons on one state directory would both read the same positions and both drain the
same outbox, so every alert would be sent twice; a forwarder keeps its positions there too, so
beside a daemon or another forwarder each would overwrite the other's (lines skipped or sent
twice). The lock is `flock(2)` on `rulesd.lock`: the
kernel releases it when the process dies however it dies, so a crash never leaves a stale
lock behind, and the file itself is never deleted (deleting a lock file races with the next
locker). The holder writes its pid into the file so that a refused second daemon can name it.
Read-only commands (`rulesd outbox`, `rulesd check`) do not take the lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

from rulesd.state.base import StateError

LOCK_FILE = "rulesd.lock"
FILE_MODE = 0o600
# How long a refused locker waits for the holder's pid to be written (the holder writes it
# right after taking the lock, so an empty file is only ever seen for an instant).
_PID_WAIT = 0.5


class StateDirectoryBusy(StateError):
    """Another running rulesd holds the state directory's lock."""


class StateLock:
    """The held lock on a state directory; `release` (or the process's end) lets it go."""

    def __init__(self, directory: str, fd: int) -> None:
        self.directory = directory
        self.path = os.path.join(directory, LOCK_FILE)
        self._fd: int | None = fd

    def release(self) -> None:
        """Let another daemon take the directory."""
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None


def lock_state_dir(directory: str) -> StateLock:
    """Take the lock on `directory` (which must exist) at once, or raise StateDirectoryBusy
    naming the directory and the holder's pid (StateError if the lock file cannot be made)."""
    path = os.path.join(directory, LOCK_FILE)
    fd, writable = _open_lock_file(path, directory)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateDirectoryBusy(
                f"state directory {directory} is in use by another rulesd ({_holder(fd)}); "
                "one daemon per state directory: stop it first, or give this one another state_dir"
            ) from None
        if writable:
            os.fchmod(fd, FILE_MODE)  # whatever the umask, and for a file an older version made
            _write_pid(fd)
    except BaseException:
        os.close(fd)
        raise
    return StateLock(directory, fd)


def _write_pid(fd: int) -> None:
    """Write our pid into the held lock file, for a refused second daemon to name. On a full
    disk the file stays empty (the second daemon says `pid unknown`): the lock holds all the
    same, and what the full disk stops is reported by the state database. Written in place, not
    renamed into place: the lock is this file's inode, which a rename would swap for another."""
    os.ftruncate(fd, 0)
    try:
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise


def _open_lock_file(path: str, directory: str) -> tuple[int, bool]:
    """The lock file's descriptor, and whether it could be opened for writing."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE), True
    except OSError as exc:
        if not os.path.isfile(path):
            raise StateError(
                f"{path}: cannot create the lock file: {exc.strerror}; make {directory} writable by the "
                "user rulesd runs as"
            ) from None
    # A read-only directory: lock it all the same (flock needs no write access), so that
    # what is wrong with the database is what gets reported.
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC), False


def _holder(fd: int) -> str:
    """`pid N` as the holder wrote it into the lock file, or `pid unknown`."""
    deadline = time.monotonic() + _PID_WAIT
    while True:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return f"pid {text}"
        if time.monotonic() >= deadline:
            return "pid unknown"
        time.sleep(0.01)
