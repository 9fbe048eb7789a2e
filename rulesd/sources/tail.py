"""One open file of the file source, read in chunks from a line start, handing out complete
lines only; and the few system calls the file source makes about files."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from rulesd.sources.compressed import compression
from rulesd.sources.lines import BATCH_BYTES, Lines, runs_of, split_lines
from rulesd.sources.rotation import FINGERPRINT_BYTES, Identity, Position, Tracked, fingerprint

CHUNK_BYTES = 64 * 1024


def stat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def identity_of(st: os.stat_result) -> Identity:
    return st.st_dev, st.st_ino


class NotRegularFile(OSError):
    """The path names a FIFO, a socket, a device or a directory: not a file to follow."""


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words, for the warning."""
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


SIZELESS = "a file whose size reads 0 though it holds data (as the files of /proc and /sys do)"


def sizeless(fd: int, st: os.stat_result) -> bool:
    """Whether an open regular file's size reads 0 though reading it gives bytes, as a file of
    /proc or /sys that the kernel makes as it is read: it has no end to follow, and a size of 0
    below what was read looked like a truncation at every look (read again from 0, its lines
    made events again, a core burnt). A file written to since it was looked at has grown: its
    size is asked again after the read."""
    return st.st_size == 0 and bool(os.pread(fd, 1, 0)) and os.fstat(fd).st_size == 0


def open_regular(path: str) -> tuple[int, os.stat_result] | None:
    """Open a regular file for reading; None when it is missing. NotRegularFile when the path
    names something else, or a file whose size reads 0 though it holds data (`sizeless`);
    other errors (permission denied) are raised for the caller to report.

    Never blocks: opening a FIFO for reading would wait for a writer. What is not a regular file
    is not opened at all (opening a FIFO would disturb its writer), and in case the path changes
    between the look and the open, it is opened with O_NONBLOCK (then put back to blocking)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"{file_kind(st.st_mode)}, not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or sizeless(fd, st):
            kind = file_kind(st.st_mode) if not stat.S_ISREG(st.st_mode) else SIZELESS
            raise NotRegularFile(f"{kind}, not a regular file")
    except OSError:  # NotRegularFile, or the first byte could not be read: not kept open
        os.close(fd)
        raise
    os.set_blocking(fd, True)
    return fd, st


def read_head(fd: int) -> bytes:
    return os.pread(fd, FINGERPRINT_BYTES, 0)


def last_line_start(fd: int, size: int) -> int:
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


def find_by_identity(directory: str, identity: Identity) -> str | None:
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


class Tail:
    """One open file, read in chunks from a line start; hands out complete lines only."""

    def __init__(self, fd: int, st: os.stat_result, offset: int, on_long: Callable[[int], None]) -> None:
        self.fd = fd
        self.identity = identity_of(st)
        self.detached = False  # the watched path no longer names this file
        self.eof = False  # the last read found no more bytes
        self.seen_size = st.st_size
        self._on_long = on_long
        head = read_head(fd)
        self.fp_len, self.fp_hash = fingerprint(head)
        # A compressed file (see `compressed`) is never read: its format, once its first bytes
        # show it; the file source then lets it go.
        self.compressed = compression(head)
        self.drained_at: int | None = None  # set by the file source: see `Position.drained`
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
        offset = self.committed
        # fstat only for such a file (rare): a byte written to it since would not be drained.
        drained = offset == self.drained_at and os.fstat(self.fd).st_size == offset
        return Position(dev, ino, offset, self.fp_len, self.fp_hash, drained)

    def restart(self, size: int) -> None:
        """Start over at 0 (the file was truncated or rewritten; `size` is its size now)."""
        self.seen_size = size
        self._rewind(0)
        self.fp_len, self.fp_hash = fingerprint(read_head(self.fd))

    def tracked(self) -> Tracked:
        """What a look at this file's path is judged against (see `rotation.judge`)."""
        return Tracked(self.identity, self.seen_size, self.read_pos, self.fp_len, self.fp_hash)

    def grew(self, size: int, head: bytes) -> None:
        """More bytes came (`size` now, `head` its first bytes): take a longer fingerprint if the
        file was shorter than FINGERPRINT_BYTES when it was taken."""
        self.seen_size = size
        if len(head) > self.fp_len:
            self.fp_len, self.fp_hash = fingerprint(head)

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
        end = buf.rfind(b"\n", pos) + 1  # just after the last complete line
        if end == 0:
            return 0
        lines = split_lines(buf[pos:end])
        if len(lines) > limit:
            del lines[limit:]
            end = pos + sum(map(len, lines))
        start = self._buf_offset + pos
        runs += runs_of(path, start, lines, self._buf_offset + end, max_line_bytes, self._on_long)
        self._pos = end
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
        if self._buf_offset == 0 and self.fp_len < min(len(self._buf), FINGERPRINT_BYTES):
            # Bytes read from the start, past what the fingerprint covers (the file was empty or
            # short when opened): taken in, so that the position saved with the lines read from
            # them holds them. A position of 0 bytes over lines read matched any file given the
            # inode, which a restart then read from that offset: its first lines skipped, one torn.
            self.fp_len, self.fp_hash = fingerprint(self._buf)
        if self._buf_offset == 0 and (kind := compression(self._buf)):
            # The file was empty (or shorter than a magic number) when opened: gzip writes the
            # file it made. No line of it has been handed out (a magic number holds no newline).
            self.compressed, self.eof = kind, True
            self._rewind(self.read_pos)
            return False
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
        """Bytes in the file beyond the last line handed out.

        Asked from the metrics thread, which may hold a Tail the reader has closed meanwhile: its
        descriptor's number may then name the next file opened (the state database, another
        log), whose size is no lag of this one, so only a descriptor naming this file counts."""
        st = os.fstat(self.fd)
        dev, ino = self.identity
        if st.st_ino != ino or st.st_dev != dev:  # compared apart: no tuple made per file and scrape
            return 0
        return max(0, st.st_size - self.committed)

    def close(self) -> None:
        """Release the descriptor."""
        os.close(self.fd)
