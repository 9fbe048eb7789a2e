"""Writing a file a person or a CI tool reads (a JUnit report, the bundled schemas) all at once.

The bytes go to a temporary file of a name no other writer has, in the target's directory, which
is then renamed over the target: a reader sees the old file or the new one, never a part. A
writer killed mid-write (a CI timeout), a full disk or a file size limit leaves the old file
whole, and two writers at once (two CI jobs in one checkout, `make -j`) each replace the target
with a whole file of their own instead of renaming the other's half-written one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

# Tried again with another name if taken: only a collision of 64 random bits repeats.
_ATTEMPTS = 16


def write_atomically(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace the file at `path` (a symbolic link: the file it names) with `data`; OSError if
    it cannot be written, with the target as it was and no temporary file left behind. What is
    not a regular file (a device, a pipe) is written to as it is.

    The file keeps the permissions of the one it replaces; a new one gets those `open` would
    give it (0666 less the umask and a directory's default ACL), which is why the temporary file
    is created with O_EXCL and mode 0666 rather than by `tempfile.mkstemp`, whose 0600 could only
    be widened by reading the umask, and that means changing it for every thread of the process.
    """
    try:
        info: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):
        # A device or a pipe (/dev/null, /dev/stdout, a FIFO a CI step reads): nothing there to
        # replace, and a rename would put a file in the device's place (as root: /dev/null).
        with open(path, "wb") as fh:  # (a directory: IsADirectoryError, as before)
            fh.write(data)
        return
    target = os.path.realpath(path)
    directory, name = os.path.split(target)
    kept = None if info is None else info.st_mode & 0o777  # (never a set-id bit on bytes written here)
    fd, partial = _create(directory, name)
    try:
        try:
            if kept is not None:
                os.fchmod(fd, kept)
            view = memoryview(data)
            while view:  # os.write may write less than asked (a signal, a pipe-like file system)
                view = view[os.write(fd, view) :]
            os.fsync(fd)  # the data on disk before the name: a crash after the rename finds it whole
        finally:
            os.close(fd)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def _create(directory: str, name: str) -> tuple[int, str]:
    """A new file `.NAME.RANDOM.tmp` in `directory`, opened for writing, and its path."""
    for _ in range(_ATTEMPTS):
        partial = os.path.join(directory, f".{name}.{os.urandom(8).hex()}.tmp")
        try:
            return os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), partial
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", os.path.join(directory, name))
