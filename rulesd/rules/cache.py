"""A private on-disk cache of what loading rules computes from unchanged inputs.

Start-up at a thousand rules was mostly parsing YAML with line marks, checking the JSON
Schema and compiling the Hyperscan databases, all of which give the same result for the
same input. They are kept here under a hash of everything they depend on (the input, the
schema, the code that builds them, Python's and Hyperscan's versions), so an unchanged rule
file or pattern set costs a file read.

What is read back is turned into Python objects (`marshal`) and into Hyperscan databases,
which must never come from anyone else: the directory is created 0700, every file 0600
whatever the umask, and a file is used only if this user owns it, nobody else may write it,
and its content matches the SHA-256 stored with it. Anything else is a miss, never an error:
the cache only ever saves time. An entry may hold a part seldom read (`put_sealed`): its
SHA-256 is stored within what the entry's checksum covers, and it is checked against it only
when the part is read (`Sealed.open`), not at every read of the entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import time
from collections.abc import Mapping

from rulesd.loggers import logger

MAGIC = b"rulesd-cache-1\n"
SEALED_MAGIC = b"rulesd-cache-sealed-1\n"  # (a sealed entry is no entry to `get`, nor a plain one to `get_sealed`)
MAX_FILES = 64  # per kind; the least recently used go first
# A temporary file no writer holds locked and untouched this long is a killed writer's, removed by
# the next write. A write takes milliseconds; the age covers a writer between making its file and
# locking it, an older rulesd's writer (which locks nothing) and the clocks of hosts sharing a
# cache over NFS, which may disagree.
STALE_AFTER = 600.0


class RuleCache:
    """Blobs by (kind, key) in one private directory."""

    def __init__(
        self, directory: str | os.PathLike[str], *, create_parents: bool = False, parent_mode: int = 0o777
    ) -> None:
        self.directory = os.fspath(directory)  # (text: the reads of a warm start import no pathlib)
        # Missing parent directories are made (with `parent_mode`, less the umask) if asked:
        # the first start of a daemon loads its rules before anything else made its state
        # directory, which must be as private as the daemon makes it (0700). At the first write
        # only: a state directory moved or removed while the daemon runs is not made again by
        # a later write (the daemon keeps generated code as its first events write it).
        self.create_parents = create_parents
        self.parent_mode = parent_mode

    @classmethod
    def for_user(cls, environ: Mapping[str, str]) -> RuleCache | None:
        """The cache of commands run by a person: `$RULESD_CACHE_DIR` if set (empty: none),
        else `$XDG_CACHE_HOME/rulesd`, else `~/.cache/rulesd`."""
        if "RULESD_CACHE_DIR" in environ:
            chosen = environ["RULESD_CACHE_DIR"]
            return cls(chosen, create_parents=True) if chosen else None
        base = environ.get("XDG_CACHE_HOME", "")
        if not os.path.isabs(base):  # the XDG spec: a relative one is invalid, to be ignored
            base = os.path.join(os.path.expanduser("~"), ".cache")
        return cls(os.path.join(base, "rulesd"), create_parents=True)

    @classmethod
    def in_state_dir(cls, state_dir: str) -> RuleCache:
        """The daemon's cache: `cache/` in its state directory (made by its first write, until
        `made_parents`)."""
        return cls(os.path.join(state_dir, "cache"), create_parents=True, parent_mode=0o700)

    def made_parents(self) -> None:
        """The parent directories exist now (the daemon made its state directory): no later
        write makes them again, though they be moved or removed."""
        self.create_parents = False

    def get(self, kind: str, key: str) -> bytes | None:
        """The blob stored under (kind, key), or None."""
        data = self._read(kind, key)
        if data is None:
            return None
        head, digest, payload = data[: len(MAGIC)], data[len(MAGIC) : len(MAGIC) + 32], data[len(MAGIC) + 32 :]
        if head != MAGIC or hashlib.sha256(payload).digest() != digest:
            return None
        self._used(kind, key)
        return payload

    def get_sealed(self, kind: str, key: str) -> tuple[bytes, Sealed] | None:
        """The blob and the sealed part stored under (kind, key) by `put_sealed`, or None. The
        blob is checked here, the sealed part only when it is opened."""
        data = self._read(kind, key)
        if data is None or not data.startswith(SEALED_MAGIC):
            return None
        start = len(SEALED_MAGIC)
        digest, length = data[start : start + 32], int.from_bytes(data[start + 32 : start + 40], "big")
        checked = memoryview(data)[start + 32 : start + 72 + length]  # its length, the part's digest, the blob
        if len(checked) != 40 + length or hashlib.sha256(checked).digest() != digest:
            return None
        self._used(kind, key)
        # (copied out, so that the file's bytes are not all held for as long as the part is)
        sealed = Sealed(data[start + 72 + length :], bytes(checked[8:40]))
        return bytes(checked[40:]), sealed

    def _read(self, kind: str, key: str) -> bytes | None:
        """The content of the entry's file if it is this user's alone, else None."""
        path = self._path(kind, key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if info.st_uid != os.geteuid() or info.st_mode & 0o077 or not stat.S_ISREG(info.st_mode):
                logger(__name__).warning("ignoring cache file %s: not private to this user", path)
                return None
            with os.fdopen(fd, "rb", closefd=False) as fh:
                return fh.read()
        except OSError:
            return None
        finally:
            os.close(fd)

    def _used(self, kind: str, key: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self._path(kind, key))  # recently used: kept when the directory is pruned

    def put(self, kind: str, key: str, payload: bytes) -> None:
        """Store `payload` under (kind, key); a failure to write is only logged."""
        self._write(kind, key, MAGIC + hashlib.sha256(payload).digest() + payload)

    def put_sealed(self, kind: str, key: str, payload: bytes, sealed: bytes) -> None:
        """Store `payload` under (kind, key) with `sealed` after it, whose SHA-256 the entry's
        checksum covers instead of its bytes: a read checks `payload` and the digest, and
        hashes `sealed` only if it is opened (a document's deeper marks, three quarters of
        its entry, which a start from the cache seldom reads)."""
        checked = len(payload).to_bytes(8, "big") + hashlib.sha256(sealed).digest() + payload
        self._write(kind, key, SEALED_MAGIC + hashlib.sha256(checked).digest() + checked + sealed)

    def _write(self, kind: str, key: str, content: bytes) -> None:
        try:
            self._ensure_directory()
            path = self._path(kind, key)
            # Imported here: a start from a warm cache writes nothing, and tempfile brings shutil,
            # random and the compression modules (~2 ms of every start).
            import tempfile

            # A name of its own (O_EXCL, 0600): one named after the process was taken for good
            # by a writer killed mid-write whose id a later process got (in containers, often),
            # and by the daemon's other thread writing the same entry.
            fd, tmp = tempfile.mkstemp(prefix=f"{kind}-{key}.", suffix=".tmp", dir=self.directory)
            try:
                # Locked until renamed: a later writer removes a temporary file left by one killed
                # in between (`_sweep`), never one a live writer holds. A file system that takes no
                # lock (NFS without its lock service) still takes the entry: the age protects it.
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_EX)
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "wb", closefd=False) as fh:
                    fh.write(content)
                os.replace(tmp, path)
            except OSError:
                # (a full disk): the part written would stay for good, as pruning sees entries only
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            finally:
                os.close(fd)
            self._prune(kind)
        except OSError as exc:
            logger(__name__).debug("rule cache %s not written: %s", _shown(self.directory), exc)

    def _path(self, kind: str, key: str) -> str:
        return os.path.join(self.directory, f"{kind}-{key}.bin")

    def _ensure_directory(self) -> None:
        if self.create_parents:
            self.create_parents = False
            os.makedirs(_parent(self.directory), mode=self.parent_mode, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.directory, 0o700)
        info = os.stat(self.directory)
        if info.st_uid != os.geteuid() or info.st_mode & 0o022:
            raise PermissionError(f"{_shown(self.directory)} is not private to this user")

    def _prune(self, kind: str) -> None:
        """Keep the MAX_FILES entries of `kind` used last, and remove what killed writers left."""
        entries = []
        for entry in os.scandir(self.directory):
            if entry.name.endswith(".tmp"):
                _sweep(entry.path)
            elif (
                entry.name.startswith(f"{kind}-")
                and entry.name.endswith(".bin")
                and "-" not in entry.name[len(kind) + 1 :]
            ):
                entries.append(entry)  # (a key holds no "-": another kind's name may begin with this one's)
        if len(entries) <= MAX_FILES:
            return
        entries.sort(key=lambda e: e.stat().st_mtime)
        for entry in entries[: len(entries) - MAX_FILES]:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


class Sealed:
    """The sealed part of a cache entry: its bytes, given only if they still have the SHA-256
    that the entry's checked part holds for them."""

    __slots__ = ("_data", "_digest")

    def __init__(self, data: bytes, digest: bytes) -> None:
        self._data = data
        self._digest = digest

    def open(self) -> bytes | None:
        """The part's bytes, or None if they are not what was stored (a damaged file)."""
        return self._data if hashlib.sha256(self._data).digest() == self._digest else None


def _sweep(path: str) -> None:
    """Remove the temporary file at `path` if its writer is gone: killed between making it and
    renaming it (SIGKILL, a CI job's timeout), which left it for good, one more at each such
    kill. Gone means no lock on it (a writer holds one until it renames the file, and the kernel
    lets go of a killed one's) and untouched for STALE_AFTER."""
    try:
        if time.time() - os.stat(path, follow_symlinks=False).st_mtime < STALE_AFTER:
            return
        # Read-write: over NFS an exclusive flock is a POSIX lock, which needs a file open for writing.
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)  # under the lock: no writer can be holding it meanwhile
    except OSError:  # held (a writer is at it), or gone already
        pass
    finally:
        os.close(fd)


def digest(*parts: bytes | str) -> str:
    """A hex SHA-256 of `parts`, each length-prefixed (so that no two lists of parts collide).
    A text is taken as UTF-8 with its escaped bytes as they were (a path whose name is not UTF-8,
    `os.fsdecode`'s surrogates: plain `encode` raised at it); other texts' bytes, and so the
    keys, are as before."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogateescape") if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


# A write's own: pathlib's reading of the directory's path (its parent, its text as shown), where a
# warm start, which only reads, imports no pathlib.
def _parent(directory: str) -> str:
    from pathlib import Path

    return str(Path(directory).parent)


def _shown(directory: str) -> str:
    from pathlib import Path

    return str(Path(directory))
