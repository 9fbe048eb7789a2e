"""The journald source: follows `journalctl --follow --output=json` and resumes from a cursor.

The command line (`journalctl_argv`) is always

    journalctl --follow --output=json --all --no-pager [--boot=all] START [--unit=U ...] [FIELD=VALUE ...]

`--all` because without it journalctl prints fields over 4096 bytes as null; over-long lines
are skipped here instead (`max_line_bytes`). `--boot=all` because newer journalctl limits
`--follow` to the current boot, which would skip what was logged after the saved cursor but
before a reboot; it is left out for journalctl older than 252. START is one of

    --after-cursor=CURSOR --lines=all   resuming: the entries after the last one handed out
    --lines=0                           start_at=end, nothing saved: only new entries
    --lines=all                         start_at=beginning, nothing saved: the whole journal
    --since=@EPOCH --lines=all          start_at=end, journalctl restarted before it gave any
                                        entry: from (the second of) the first start

`--lines=all` next to a cursor matters: `--follow` otherwise implies `--lines=10`, and
journalctl then stops after 10 entries of backlog until the journal changes again.

Filters: each unit becomes `--unit=U` (journalctl ORs the units, and ANDs the group with
everything else); each match `FIELD: [v1, v2]` becomes `FIELD=v1 FIELD=v2` (values of one
field are ORed, different fields ANDed). No `+` is ever emitted: a `+` would OR the match
groups on both sides of it, not the units with the matches. So units `[a, b]` with matches
`{PRIORITY: ["3", "4"], SYSLOG_IDENTIFIER: app}` select

    (unit a OR unit b) AND (PRIORITY=3 OR PRIORITY=4) AND SYSLOG_IDENTIFIER=app

Lines handed out by `read()` are journalctl's raw JSON; `journal_event` turns one into an
event:

    event field   journal field           conversion
    message       MESSAGE                 string; byte arrays decoded as UTF-8, errors replaced
    priority      PRIORITY                int
    unit          _SYSTEMD_UNIT           string
    host          _HOSTNAME               string
    pid           _PID                    int
    identifier    SYSLOG_IDENTIFIER       string
    time          __REALTIME_TIMESTAMP    float, epoch seconds (microseconds / 1e6)
    journal       every field             strings; byte arrays decoded as for message; fields
                                          that occur several times as lists; null stays null

A field the entry lacks, or whose value does not convert (PRIORITY "x"), is left out of the
event; the raw value stays in `journal`. A field that occurs several times gives its first
value to the mapped field. Lines that are not a JSON object, or hold values journalctl never
writes (numbers, objects, bytes over 255), are an `InvalidEvent`.

That is the parser of `format: json` (the default). With `text` or `regex` the source's parser
(`events.make_parser` with `journal_event` as the entry) applies the patterns to `message`
and adds their named groups to these fields.

If journalctl exits it is restarted with a backoff (1 s doubling to 30 s, back to 1 s once it
delivers again), after the cursor of the last entry handed out: entries read from the pipe but
not yet handed out are read again, none is lost or repeated.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import msgspec
import orjson

from rulesd.errors import RulesdError
from rulesd.events import InvalidEvent, Parser
from rulesd.rules.fields import Event
from rulesd.shared_cpu import release_child
from rulesd.sources.base import CHUNK, MAX_LINE_BYTES, START_AT, START_AT_CHOICES, Saved
from rulesd.sources.lines import MAX_CHUNKS_PER_READ, LineQueue, Lines, LineSplitter

__all__ = [
    "JournalCursor",
    "JournaldSource",
    "journal_event",
    "journalctl_argv",
    "match_args",
    "systemd_version",
]

NAME = "journalctl"
KEY = "journald"  # the key of the saved cursor
BACKOFF = (1.0, 30.0)  # seconds: first restart delay, and the cap it doubles up to
BOOT_ALL_SINCE = 252  # oldest journalctl known to accept --boot=all
_STDERR_LINE_BYTES = 4096
_NO_MATCHES: Mapping[str, str | Sequence[str]] = MappingProxyType({})
# journald field names: upper case, digits, underscores, not starting with a digit, <= 64 bytes
_FIELD_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
_DIGITS = re.compile(r"[0-9]+")
_INT_DIGITS, _INT_MAX = 20, (1 << 64) - 1


class JournalCursor(msgspec.Struct, frozen=True):
    """Where reading stopped in the journal: the `__CURSOR` of the last entry handed out."""

    cursor: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping, as saved in the state database."""
        return {"cursor": self.cursor}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JournalCursor:
        """Rebuild a cursor saved by `to_json`."""
        cursor = data.get("cursor")
        if not isinstance(cursor, str) or not cursor:
            raise RulesdError(f"saved journald position has no cursor: {dict(data)!r}")
        return cls(cursor)


# -- pure helpers: the command line ---------------------------------------------------------


def match_args(matches: Mapping[str, str | Sequence[str]]) -> list[str]:
    """`FIELD=value` arguments, one per value; journalctl ORs values of one field."""
    args: list[str] = []
    for field, values in matches.items():
        if not _FIELD_NAME.fullmatch(field):
            raise RulesdError(
                f"journald match: {field!r} is not a journal field name "
                "(upper case letters, digits and '_', at most 64)"
            )
        listed = [values] if isinstance(values, str) else list(values)
        if not listed:
            raise RulesdError(f"journald match {field}: no values given")
        for value in listed:
            if not isinstance(value, str):
                raise RulesdError(f"journald match {field}: {value!r} is not a string")
            args.append(f"{field}={value}")
    return args


def journalctl_argv(
    journalctl: str,
    units: Sequence[str],
    match_arguments: Sequence[str],
    *,
    cursor: str | None,
    start_at: str,
    since: int | None = None,
    boot_all: bool = True,
) -> list[str]:
    """The journalctl command line (see the module docstring for why each option is there)."""
    argv = [journalctl, "--follow", "--output=json", "--all", "--no-pager"]
    if boot_all:
        argv.append("--boot=all")
    if cursor is not None:
        argv += [f"--after-cursor={cursor}", "--lines=all"]
    elif since is not None:
        argv += [f"--since=@{since}", "--lines=all"]
    elif start_at == "beginning":
        argv.append("--lines=all")
    else:
        argv.append("--lines=0")
    argv += [f"--unit={unit}" for unit in units]
    argv += match_arguments
    return argv


def systemd_version(version_output: bytes) -> int | None:
    """252 from `journalctl --version` output starting `systemd 252 (252.38-1~deb12u1)`."""
    found = re.match(rb"\s*systemd\s+([0-9]+)", version_output)
    return int(found.group(1)) if found else None


# -- pure helpers: entries -> events --------------------------------------------------------


def _as_text(value: str) -> str:
    return value


def _as_int(value: str) -> int | None:
    # journald writes unsigned 64-bit numbers; more digits (an edited export) would overflow
    # the float of a time, or int()'s limit on digits.
    if len(value) > _INT_DIGITS or _DIGITS.fullmatch(value) is None:
        return None
    number = int(value)
    return number if number <= _INT_MAX else None


def _as_seconds(value: str) -> float | None:
    micros = _as_int(value)
    return None if micros is None else micros / 1e6


_MAPPING: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("message", "MESSAGE", _as_text),
    ("priority", "PRIORITY", _as_int),
    ("unit", "_SYSTEMD_UNIT", _as_text),
    ("host", "_HOSTNAME", _as_text),
    ("pid", "_PID", _as_int),
    ("identifier", "SYSLOG_IDENTIFIER", _as_text),
    ("time", "__REALTIME_TIMESTAMP", _as_seconds),
)


def journal_event(line: bytes) -> Event:
    """One line of `journalctl --output=json` as a rulesd event (mapping in the module docstring)."""
    journal = {name: _decode_field(name, value) for name, value in _load_entry(line).items()}
    event: Event = {}
    for target, name, convert in _MAPPING:
        value = _first_text(journal.get(name))
        if value is not None and (converted := convert(value)) is not None:
            event[target] = converted
    event["journal"] = journal
    return event


JOURNAL_PARSER = Parser(journal_event, journal_event)


def entry_cursor(line: bytes) -> str | None:
    """The `__CURSOR` of one journalctl JSON line, or None if it has none."""
    try:
        cursor = _load_entry(line).get("__CURSOR")
    except InvalidEvent:
        return None
    return cursor if isinstance(cursor, str) and cursor else None


def _load_entry(line: bytes) -> dict[str, Any]:
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        entry = _load_lenient(line, exc)
    if type(entry) is not dict:
        raise InvalidEvent(f"journal entry is not a JSON object but {type(entry).__name__}")
    return entry


def _load_lenient(line: bytes, error: orjson.JSONDecodeError) -> Any:
    # journalctl before 246 wrote non-UTF-8 bytes raw into JSON strings under --all;
    # such an entry is still worth reading, with the bad bytes replaced.
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return orjson.loads(line.decode("utf-8", errors="replace"))
        except orjson.JSONDecodeError:
            pass
    raise InvalidEvent(f"invalid JSON: {error}") from None


def _decode_field(name: str, value: Any) -> Any:
    """A field's value as text: journalctl writes bytes that are not printable UTF-8 as a list
    of numbers, and a field that occurs several times as a list of such values."""
    if value is None or type(value) is str:
        return value
    if type(value) is list:
        if all(type(item) is int for item in value):
            return _decode_bytes(name, value)
        return [_decode_single(name, item) for item in value]
    raise InvalidEvent(f"journal field {name}: unexpected {type(value).__name__} value")


def _decode_single(name: str, value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    if type(value) is list and all(type(item) is int for item in value):
        return _decode_bytes(name, value)
    raise InvalidEvent(f"journal field {name}: unexpected {type(value).__name__} in its values")


def _decode_bytes(name: str, values: list[int]) -> str:
    try:
        return bytes(values).decode("utf-8", errors="replace")
    except ValueError:
        raise InvalidEvent(f"journal field {name}: byte array holds a value outside 0..255") from None


def _first_text(value: Any) -> str | None:
    if isinstance(value, list):
        return next((item for item in value if isinstance(item, str)), None)
    return value if isinstance(value, str) else None


# -- the imperative shell: one journalctl process -------------------------------------------


class _Journalctl:
    """One running journalctl: stdout split into lines, stderr lines passed on as warnings."""

    def __init__(self, argv: list[str], max_line_bytes: int, warn: Callable[[str], None]) -> None:
        # Own session: a Ctrl-C meant for rulesd must not kill journalctl behind its back.
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        assert self.popen.stdout is not None and self.popen.stderr is not None
        release_child(self.popen.pid)  # (started while the sender delivers, it would keep one CPU)
        self.out: int | None = self.popen.stdout.fileno()
        self.err: int | None = self.popen.stderr.fileno()
        self.lines = LineSplitter(NAME, max_line_bytes, warn)
        self._errors = LineSplitter(f"{NAME} stderr", _STDERR_LINE_BYTES, warn)
        self.warn = warn

    def readable(self, timeout: float) -> bool:
        """True if stdout has data (or EOF); passes on any stderr output meanwhile."""
        fds = [fd for fd in (self.out, self.err) if fd is not None]
        if not fds:
            return False
        ready, _, _ = select.select(fds, [], [], timeout)
        if self.err is not None and self.err in ready:
            self._read_stderr()
        return self.out is not None and self.out in ready

    def read_chunk(self) -> list[Lines] | None:
        """The lines one read of stdout completes; None at EOF."""
        assert self.out is not None
        chunk = os.read(self.out, CHUNK)
        if not chunk:
            self.out = None
            return None
        return self.lines.feed(chunk)

    def finish(self) -> str:
        """Reap a journalctl whose stdout ended; how it ended, for the warning."""
        try:
            code = self.popen.wait(timeout=1.0)
        except subprocess.TimeoutExpired:  # stdout closed but still running: not usable
            self.popen.kill()
            code = self.popen.wait()
        for _ in range(16):  # what it said before dying, usually the reason
            if self.err is None or not select.select([self.err], [], [], 0)[0]:
                break
            self._read_stderr()
        self._close_pipes()
        return _describe_exit(code)

    def stop(self) -> None:
        """Terminate journalctl and release its pipes."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._close_pipes()

    def _read_stderr(self) -> None:
        assert self.err is not None
        chunk = os.read(self.err, CHUNK)
        lines = self._errors.feed(chunk) if chunk else self._errors.finish()
        if not chunk:
            self.err = None
        for line in (line for run in lines for line in run.data):
            self.warn(f"{NAME}: {line.decode('utf-8', errors='replace').rstrip()}")

    def _close_pipes(self) -> None:
        self.out = self.err = None
        for pipe in (self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                pipe.close()


def _describe_exit(code: int) -> str:
    if code >= 0:
        return f"exited with status {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


def probe_journalctl(journalctl: str) -> int | None:
    """The systemd version of `journalctl` (None if it does not say); RulesdError if it cannot run."""
    try:
        done = subprocess.run(
            [journalctl, "--version"], stdin=subprocess.DEVNULL, capture_output=True, timeout=10, check=False
        )
    except OSError as exc:
        raise RulesdError(
            f"journald source: cannot run {journalctl!r}: {exc.strerror or exc}; "
            "is systemd's journalctl installed and on PATH?"
        ) from None
    except subprocess.TimeoutExpired:
        raise RulesdError(f"journald source: '{journalctl} --version' did not finish") from None
    if done.returncode != 0:
        raise RulesdError(f"journald source: '{journalctl} --version' failed with status {done.returncode}")
    return systemd_version(done.stdout)


# -- the source -----------------------------------------------------------------------------


class JournaldSource:
    """Entries of the systemd journal, as journalctl's JSON lines, resumable by cursor.

    journalctl runs as a child process and is read through `select`, so the main loop never
    blocks; if it exits it is restarted (see the module docstring).
    """

    def __init__(
        self,
        units: Sequence[str] = (),
        matches: Mapping[str, str | Sequence[str]] = _NO_MATCHES,
        *,
        saved: Saved = MappingProxyType({}),
        start_at: str = START_AT,
        journalctl: str = "journalctl",
        warn: Callable[[str], None] = lambda message: None,
        max_line_bytes: int = MAX_LINE_BYTES,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        backoff: tuple[float, float] = BACKOFF,
        parser: Parser = JOURNAL_PARSER,
    ) -> None:
        if start_at not in START_AT_CHOICES:
            raise RulesdError(f"journald source: start_at must be 'beginning' or 'end', not {start_at!r}")
        if any(not unit for unit in units):
            raise RulesdError("journald source: empty unit name")
        self.units = tuple(units)
        self.match_arguments = match_args(matches)
        self.journalctl = journalctl
        self.start_at = start_at
        self.warn = warn
        self.max_line_bytes = max_line_bytes
        self.clock = clock
        self.backoff = backoff
        self.restarts = 0
        self.parser = parser
        version = probe_journalctl(journalctl)
        self._boot_all = version is None or version >= BOOT_ALL_SINCE
        self._cursor = JournalCursor.from_json(saved[KEY]).cursor if KEY in saved else None
        self._since: int | None = None
        self._ready = LineQueue()
        self._skipped_before = 0
        self._delay = backoff[0]
        self._restart_at = 0.0
        self._proc: _Journalctl | None = None
        started = int(wall_clock())
        try:
            self._proc = self._spawn()
        except OSError as exc:
            raise RulesdError(f"journald source: cannot start {journalctl!r}: {exc}") from None
        if start_at == "end":  # restarted before any entry was handed out: from the first start on
            self._since = started

    @property
    def skipped_long(self) -> int:
        """How many over-long lines were skipped, over all journalctl runs."""
        current = self._proc.lines.skipped_long if self._proc is not None else 0
        return self._skipped_before + current

    @property
    def running(self) -> bool:
        """Whether journalctl is running now (not between a failure and its restart)."""
        return self._proc is not None

    @property
    def cursor(self) -> str | None:
        """The cursor of the last entry handed out (or the one resumed from)."""
        return self._cursor

    def read(self, max_lines: int) -> list[Lines]:
        """Complete entries available now, at most `max_lines`; never blocks."""
        self._restart_if_due()
        if self._proc is not None:
            self._fill(max_lines)
        out = self._ready.take(max_lines)
        # The checkpoint must cover exactly the lines handed out: the last one with a cursor.
        for line in (line for run in reversed(out) for line in reversed(run.data)):
            if (cursor := entry_cursor(line)) is not None:
                self._cursor = cursor
                break
        return out

    def wait(self, timeout: float) -> None:
        """Block until journalctl has output, a restart is due, or `timeout` seconds pass."""
        if self._ready:
            return
        if self._proc is None:
            time.sleep(max(0.0, min(timeout, self._restart_at - self.clock())))
            return
        self._proc.readable(timeout)

    def checkpoint(self) -> dict[str, JournalCursor]:
        """`{"journald": cursor of the last entry handed out}`; empty before the first one."""
        return {KEY: JournalCursor(self._cursor)} if self._cursor is not None else {}

    def exhausted(self) -> bool:
        """Never: the journal is followed for as long as the daemon runs."""
        return False

    def names(self) -> list[str]:
        """The one name its lines carry."""
        return [NAME]

    def lag_bytes(self) -> int:
        """Bytes read from journalctl but not handed out; the journal's own backlog is unknown."""
        pending = len(self._proc.lines.pending) if self._proc is not None else 0
        return pending + self._ready.size

    def close(self) -> None:
        """Stop journalctl."""
        if self._proc is not None:
            self._proc.stop()
            self._skipped_before += self._proc.lines.skipped_long
            self._proc = None

    # -- internals ----------------------------------------------------------------------------

    def _spawn(self) -> _Journalctl:
        argv = journalctl_argv(
            self.journalctl,
            self.units,
            self.match_arguments,
            cursor=self._cursor,
            start_at=self.start_at,
            since=self._since,
            boot_all=self._boot_all,
        )
        return _Journalctl(argv, self.max_line_bytes, self.warn)

    def _fill(self, want: int) -> None:
        proc = self._proc
        assert proc is not None
        for _ in range(MAX_CHUNKS_PER_READ):
            if self._ready.filled(want) or not proc.readable(0):
                return
            lines = proc.read_chunk()
            if lines is None:
                self._on_exit(proc)
                return
            if lines:
                self._delay = self.backoff[0]  # it works again: next failure restarts quickly
                self._ready.extend(lines)

    def _on_exit(self, proc: _Journalctl) -> None:
        how = proc.finish()
        self._skipped_before += proc.lines.skipped_long
        self._proc = None
        self._schedule_restart(f"{NAME} {how}")

    def _schedule_restart(self, why: str) -> None:
        self._restart_at = self.clock() + self._delay
        where = f"after cursor {self._cursor}" if self._cursor else "where it started"
        self.warn(f"{why}; restarting it in {self._delay:g}s, {where}")
        self._delay = min(self._delay * 2, self.backoff[1])

    def _restart_if_due(self) -> None:
        # Lines still queued belong to the last run: hand them out first, so that the restart
        # resumes after the last of them.
        if self._proc is not None or self._ready or self.clock() < self._restart_at:
            return
        self.restarts += 1
        try:
            self._proc = self._spawn()
        except OSError as exc:
            self._schedule_restart(f"cannot start {self.journalctl!r}: {exc}")
