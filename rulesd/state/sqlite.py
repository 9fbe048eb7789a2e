"""The state backend of one host: one SQLite database (WAL) with source positions, the
outbox and the engine's window/throttle state.

`commit` writes a batch's positions, the alerts its events caused and the engine
state in ONE transaction, so a crash at any moment either keeps all of them or
none: no alert is lost, and no event whose alert was queued is evaluated again.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext, suppress
from typing import Any

import orjson

from rulesd.engine import StateDelta
from rulesd.engine.state import json_name
from rulesd.jsontext import read_json
from rulesd.state.base import CREATE, KEPT_CLOSE, Attempt, OutboxAlert, Request, StateError, StateUnavailable

SCHEMA_VERSION = 1
PAUSED = "paused"  # not a status of a row: pending while the sender is paused (see `paused`)
# The meta row that says the sender is paused (a refused key), so that another process
# (`rulesd outbox list`) can tell paused alerts from pending ones.
_PAUSED_KEY = "sender_paused"
# The meta row with the engine's clock as last saved and the wall time then, for `rulesd state`.
_CLOCK_KEY = "engine_clock"
# The ids an outbox row may have: SQLite's integers are 64 bits, and it raises OverflowError at
# any other (`rulesd outbox show 99999999999999999999`), which is no alert of the outbox.
_IDS = range(-(2**63), 2**63)
# Failed attempts kept per alert for `rulesd outbox show`: a pause is retried every minute,
# so the history of a long one is cut to its latest entries.
ATTEMPTS_KEPT = 50
# The database and its journal (-wal, -shm) are private whatever the umask: the outbox holds
# whole alerts. SQLite gives the journal files the database file's mode.
FILE_MODE = 0o600
JOURNAL_SUFFIXES = ("-wal", "-shm")
# SQLite's primary result codes (the low byte of an extended code) that the daemon tells apart.
_FULL, _IOERR, _READONLY, _CANTOPEN, _CORRUPT, _NOTADB, _PERM = 13, 10, 8, 14, 11, 26, 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS positions (source TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS engine_state (id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS engine_groups (
    kind TEXT NOT NULL, rule TEXT NOT NULL, grp TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (kind, rule, grp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    response TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (status, id);
CREATE TABLE IF NOT EXISTS outbox_attempts (
    alert_id INTEGER NOT NULL, at REAL NOT NULL, result TEXT NOT NULL, error TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_attempts_alert ON outbox_attempts (alert_id, at);
-- An alert's history leaves with it, in the statement that deletes it: delivering an alert
-- records it with one statement (its own transaction), not four.
CREATE TRIGGER IF NOT EXISTS outbox_history_gone AFTER DELETE ON outbox
BEGIN DELETE FROM outbox_attempts WHERE alert_id = OLD.id; END;
"""
_TABLES = frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA))


class SqliteState:
    """The state backend in one SQLite database. One connection per thread; writes serialised
    by SQLite's lock."""

    def __init__(self, path: str, *, read_only: bool = False) -> None:
        self.path = path
        # A reader beside the daemon (`rulesd state`): opened read-only, so that nothing it does
        # can take the write lock or change the file; it creates no schema.
        self.read_only = read_only
        self._local = threading.local()
        self._memory: sqlite3.Connection | None = None
        if path == ":memory:":
            # A shared in-memory database (dry runs): one connection guarded by a lock.
            self._memory = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        # Only the shared in-memory connection needs a lock; file databases give each thread
        # its own connection and let SQLite (WAL: readers never wait for the writer) arbitrate.
        self._lock: AbstractContextManager[Any] = threading.RLock() if self._memory else nullcontext()
        if read_only:
            self._lock = nullcontext()
            return
        try:
            if self._memory is None:
                make_private(path)
            with self._lock:
                self._conn().executescript(_SCHEMA)
                self._conn().execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
                _add_columns(self._conn())
        except sqlite3.Error as exc:
            self.close()
            raise state_error(exc, path) from None
        except OSError as exc:
            raise state_error(exc, path) from None

    def _conn(self) -> sqlite3.Connection:
        if self._memory is not None:
            return self._memory
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None and self.read_only:
            uri = f"file:{urllib.parse.quote(os.path.abspath(self.path))}?mode=ro"
            if not os.path.exists(self.path + "-wal"):
                # No connection is open (the last to close removes the WAL): read the file as
                # it is. A read-only connection would make -wal and -shm files it cannot remove,
                # owned by whoever ran it, which the daemon's user then may not open.
                uri += "&immutable=1"
            conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
            self._local.conn = conn
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a queued page survives power loss too; group commit keeps fsyncs rare.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            make_private(self.path, create=False)
        return conn

    def relax_durability(self) -> None:
        """For the sender's connection: commits without fsync (WAL, synchronous=NORMAL).

        Losing its last updates in a power cut only means an alert is sent again, which
        OpsGenie folds by alias while that alert is open; queuing (commit) stays fully durable.
        """
        if self._memory is None:
            self._conn().execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- source positions and engine state -------------------------------------------------

    def has_schema(self) -> bool:
        """Whether the daemon has made every table yet: a reader beside a daemon that is
        starting finds the file empty (0 bytes) or half made, and must not make them itself."""
        rows = self._rows("SELECT name FROM sqlite_master WHERE type = 'table'")
        return _TABLES.issubset(name for (name,) in rows)

    def load_positions(self) -> dict[str, dict[str, Any]]:
        """Saved source positions, keyed by source (e.g. file path)."""
        rows = self._rows("SELECT source, data FROM positions")
        return {source: json.loads(data) for source, data in rows}

    def load_engine_state(self) -> dict[str, Any] | None:
        """The saved engine state (in `EngineState.to_json` form), if any, with the engine's
        clock as last saved (`clock`) and the wall time it runs on from (`clock_saved`).

        Read in one read transaction: a snapshot, consistent even while the daemon commits."""
        with self._lock:
            conn = self._conn()
            conn.execute("BEGIN")  # deferred: a read transaction, never the write lock
            try:
                row = conn.execute("SELECT data FROM engine_state WHERE id = 1").fetchone()
                groups = conn.execute("SELECT kind, rule, grp, data FROM engine_groups").fetchall()
                clock = conn.execute("SELECT value FROM meta WHERE key = ?", (_CLOCK_KEY,)).fetchone()
            finally:
                conn.execute("COMMIT")
        if row is None:
            return None
        # A database written before groups had rows of their own holds them all in this row:
        # they are kept, and written as rows at the engine's first save.
        saved = json.loads(row[0])
        state: dict[str, Any] = {
            "fingerprints": saved.get("fingerprints", {}),
            "windows": saved.get("windows", {}),
            "throttles": saved.get("throttles", {}),
        }
        for kind, rule, grp, data in groups:
            state.setdefault(json_name(kind), {}).setdefault(rule, []).append([json.loads(grp), read_json(data)])
        if clock is not None:
            saved_clock = json.loads(clock[0])
            state["clock"], state["clock_saved"] = saved_clock["clock"], saved_clock["saved"]
        return state

    def commit(
        self,
        *,
        positions: Mapping[str, Mapping[str, Any]],
        payloads: Iterable[dict[str, Any] | Request],
        now: float,
        engine: StateDelta | None = None,
        clock_wall: float | None = None,
    ) -> int:
        """Queue `payloads`, save positions and the engine's changes: all in one transaction.
        The engine's clock is saved with the wall time it runs on from (`clock_wall`, default `now`).

        Returns the number of alerts queued.
        """
        rows = [_outbox_row(p, now) for p in payloads]
        with self._lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                if rows:
                    conn.executemany(
                        "INSERT INTO outbox (created, payload, next_attempt, action, target) VALUES (?, ?, ?, ?, ?)",
                        rows,
                    )
                conn.executemany(
                    "INSERT OR REPLACE INTO positions (source, data) VALUES (?, ?)",
                    [(k, json.dumps(dict(v))) for k, v in positions.items() if v],
                )
                # An empty position: the source will never read that key again (FORGOTTEN).
                gone = [(k,) for k, v in positions.items() if not v]
                conn.executemany("DELETE FROM positions WHERE source = ?", gone)
                if engine is not None:
                    _save_engine(conn, engine, now if clock_wall is None else clock_wall)
                conn.execute("COMMIT")
            except BaseException as exc:
                _rollback(conn)
                if isinstance(exc, sqlite3.Error):
                    raise state_error(exc, self.path) from None
                raise
        return len(rows)

    # -- the outbox ---------------------------------------------------------------------------

    def head(self, *, take: bool = True) -> OutboxAlert | None:
        """The oldest pending alert: the sender delivers strictly in order (one process delivers
        from this outbox, so `take` changes nothing)."""
        rows = self._rows(f"SELECT {_COLUMNS} FROM outbox WHERE status = 'pending' ORDER BY id LIMIT 1")
        return _alert(rows[0]) if rows else None

    def owns(self, alert_id: int) -> bool:
        """Always: one process delivers from this outbox (the state directory's lock)."""
        return True

    def mark_sent(self, alert_id: int) -> None:
        """Delivered: the alert (and its history, by the schema's trigger) leaves the outbox; a
        close of an alert whose create is a dead letter stays among them (see `KEPT_CLOSE`).

        The usual case is one statement, its own transaction: every statement is a hand-over of
        the GIL to the reader and back while the sender shares its CPU (`rulesd.shared_cpu`).
        When it deletes nothing (a close kept, or no longer pending), the transaction decides."""
        if self._write(_DELETE_SENT, (alert_id,)):
            return
        self._transaction(
            [
                (_KEEP_CLOSE, (KEPT_CLOSE, alert_id)),
                ("DELETE FROM outbox WHERE id = ? AND status = 'pending'", (alert_id,)),
            ]
        )

    def reschedule(
        self,
        alert_id: int,
        next_attempt: float,
        error: str,
        *,
        count: bool = True,
        at: float | None = None,
        result: str = "retry",
    ) -> None:
        """A failed attempt: try again at `next_attempt`; recorded as `result` if made `at` a time."""
        self._transaction(
            [
                (
                    "UPDATE outbox SET attempts = attempts + ?, next_attempt = ?, last_error = ? WHERE id = ?",
                    (1 if count else 0, next_attempt, error, alert_id),
                ),
                *_history(alert_id, at, result, error),
            ]
        )

    def dead_letter(
        self, alert_id: int, error: str, response: str | None = None, *, at: float | None = None, result: str = "dead"
    ) -> None:
        """Give up on an alert; `rulesd outbox retry-dead` can requeue it."""
        self._transaction(
            [
                (
                    "UPDATE outbox SET status = 'dead', attempts = attempts + 1, last_error = ?, response = ? "
                    "WHERE id = ?",
                    (error, response, alert_id),
                ),
                *_history(alert_id, at, result, error),
            ]
        )

    def attempts(self, alert_id: int) -> list[Attempt]:
        """The failed attempts of an alert still in the outbox, oldest first (at most ATTEMPTS_KEPT)."""
        if alert_id not in _IDS:
            return []
        rows = self._rows("SELECT at, result, error FROM outbox_attempts WHERE alert_id = ? ORDER BY at", (alert_id,))
        return [Attempt(*row) for row in rows]

    def alert(self, alert_id: int) -> OutboxAlert | None:
        """One alert of the outbox by id, if it is still there."""
        if alert_id not in _IDS:  # (SQLite refuses to compare with it: OverflowError)
            return None
        rows = self._rows(f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (alert_id,))
        return _alert(rows[0]) if rows else None

    def set_paused(self, reason: str | None) -> None:
        """Record that the sender is paused (a refused key) and why, or, with None, that it is not."""
        if reason is None:
            self._write("DELETE FROM meta WHERE key = ?", (_PAUSED_KEY,))
        else:
            self._write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_PAUSED_KEY, reason))

    def paused(self) -> str | None:
        """Why the sender is paused, as last recorded by the daemon; None when it is not."""
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (_PAUSED_KEY,))
        return str(rows[0][0]) if rows else None

    def retry_dead(self, now: float) -> int:
        """Requeue every dead-lettered alert (as new, so max_age starts again); returns how many."""
        return self._write(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt = ?, created = ?, "
            "last_error = NULL, response = NULL WHERE status = 'dead'",
            (now, now),
        )

    def alerts(self, status: str | None = None) -> list[OutboxAlert]:
        """Queued alerts in order, optionally only those with `status`."""
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        return [_alert(r) for r in self._rows(f"SELECT {_COLUMNS} FROM outbox {where} ORDER BY id", args)]

    def depth(self, *, last_known: bool = True) -> tuple[int, float | None]:
        """Pending alerts and the creation time of the oldest (always read: the file is here)."""
        ((count, oldest),) = self._rows("SELECT COUNT(*), MIN(created) FROM outbox WHERE status = 'pending'")
        return int(count), oldest

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """Run one query; all its rows, fetched under the lock (the shared dry-run connection)."""
        with self._lock:
            return self._conn().execute(sql, args).fetchall()

    def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        """Run one statement (its own transaction); how many rows it changed."""
        with self._lock:
            try:
                return self._conn().execute(sql, args).rowcount
            except sqlite3.Error as exc:
                raise state_error(exc, self.path) from None

    def _transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Run `statements` in one transaction."""
        with self._lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    conn.execute(sql, args)
                conn.execute("COMMIT")
            except BaseException as exc:
                _rollback(conn)
                if isinstance(exc, sqlite3.Error):
                    raise state_error(exc, self.path) from None
                raise


def make_private(path: str, *, create: bool = True) -> None:
    """Give the database (made empty here if `create` and missing) and its journal files
    mode 0600, whatever the umask; files an older version made more open are tightened."""
    if create:
        with suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))
    for name in (path, *(path + suffix for suffix in JOURNAL_SUFFIXES)):
        try:
            st = os.stat(name)
            if st.st_mode & 0o777 != FILE_MODE and st.st_uid == os.geteuid():
                os.chmod(name, FILE_MODE)
        except FileNotFoundError:
            continue


def database_exists(path: str) -> bool:
    """Whether the state database at `path` exists, for the commands that read it beside the
    daemon; StateError when that cannot be known. `os.path.exists` says False for a directory
    this user may not search (the daemon's state directory is 0700; with systemd's DynamicUser
    it lies under /var/lib/private, 0700 too), and `outbox list` run by another user said
    'nothing queued' while alerts waited."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise StateError(
            f"{path}: cannot read the state database: {exc.strerror or exc}; run this as the user rulesd runs "
            "as, or as root"
        ) from None
    return True


def state_error(exc: sqlite3.Error | OSError, path: str) -> StateError | sqlite3.Error:
    """The backend-neutral error for a failure on the database at `path`, saying what to do;
    an error of no known kind is returned as it is."""
    if isinstance(exc, OSError):
        return StateError(f"{path}: cannot create the state database: {exc.strerror or exc}")
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    directory = os.path.dirname(path) or "."
    if code == _FULL:
        return StateUnavailable(f"state directory full: {directory}: {exc}; free space there")
    if code == _IOERR:
        return StateUnavailable(f"state directory unusable: {path}: {exc}; is {directory} full or failing?")
    if code in (_CORRUPT, _NOTADB):
        return StateError(
            f"{path}: the state database is damaged ({exc}): stop rulesd, move {path} and its -wal and -shm "
            "files aside (keep them to inspect), and start again: a new database is made, the alerts queued "
            "in the old one are not sent, and files are read again from where start_at says"
        )
    if code == _CANTOPEN and os.path.isdir(path):  # no permission would help
        return StateError(f"{path}: cannot open the state database: it is a directory; move it aside")
    if code in (_READONLY, _CANTOPEN, _PERM):
        return StateError(
            f"{path}: cannot write the state database ({exc}): make {directory}, the database and its -wal "
            "and -shm files writable by the user rulesd runs as"
        )
    return exc


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is left of a failed transaction: SQLite may have rolled it back already
    (a full disk does that), and then ROLLBACK itself would fail and hide the real error."""
    if conn.in_transaction:
        with suppress(sqlite3.Error):  # the connection's next BEGIN starts clean either way
            conn.execute("ROLLBACK")


def _history(alert_id: int, at: float | None, result: str, error: str) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements that record a failed attempt and keep only the latest ATTEMPTS_KEPT."""
    if at is None:
        return []
    return [
        (
            "INSERT INTO outbox_attempts (alert_id, at, result, error) VALUES (?, ?, ?, ?)",
            (alert_id, at, result, error),
        ),
        (
            "DELETE FROM outbox_attempts WHERE alert_id = ? AND rowid NOT IN "
            "(SELECT rowid FROM outbox_attempts WHERE alert_id = ? ORDER BY at DESC, rowid DESC LIMIT ?)",
            (alert_id, alert_id, ATTEMPTS_KEPT),
        ),
    ]


def _save_engine(conn: sqlite3.Connection, delta: StateDelta, wall: float) -> None:
    if delta.full:  # new rules or new state: the only time the fingerprints change
        conn.execute("DELETE FROM engine_groups")
        conn.execute(
            "INSERT OR REPLACE INTO engine_state (id, data) VALUES (1, ?)",
            (orjson.dumps({"fingerprints": delta.fingerprints}).decode(),),
        )
    conn.executemany("INSERT OR REPLACE INTO engine_groups (kind, rule, grp, data) VALUES (?, ?, ?, ?)", delta.upserts)
    conn.executemany("DELETE FROM engine_groups WHERE kind = ? AND rule = ? AND grp = ?", delta.deletes)
    if delta.clock is not None:
        clock = orjson.dumps({"clock": delta.clock, "saved": wall}).decode()
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_CLOCK_KEY, clock))


# A delivered close of an alias whose create (queued before it) is a dead letter: kept as one
# after it, so that `retry-dead`, which requeues them in order, closes the alert it creates.
_CLOSE_OF_DEAD = (
    "action = 'close' AND EXISTS (SELECT 1 FROM outbox AS c WHERE c.status = 'dead' AND c.action = 'create' "
    "AND c.id < outbox.id AND json_extract(c.payload, '$.alias') = outbox.target)"
)
_KEEP_CLOSE = f"UPDATE outbox SET status = 'dead', last_error = ? WHERE id = ? AND {_CLOSE_OF_DEAD}"
# The delivered alert leaves unless it is a close that `_KEEP_CLOSE` keeps (that test only runs
# for a close: SQLite stops at the first false term of an AND).
_DELETE_SENT = f"DELETE FROM outbox WHERE id = ? AND status = 'pending' AND NOT ({_CLOSE_OF_DEAD})"
_INSERT_OUTBOX = "INSERT INTO outbox (created, payload, next_attempt, action, target) VALUES (?, ?, ?, ?, ?)"
_COLUMNS = "id, created, payload, status, attempts, next_attempt, last_error, response, action, target"
# Columns added since the first release: a database written before them gets them (a create).
_ADDED_COLUMNS = (("outbox", "action", "TEXT NOT NULL DEFAULT 'create'"), ("outbox", "target", "TEXT"))


def _add_columns(conn: sqlite3.Connection) -> None:
    for table, column, declaration in _ADDED_COLUMNS:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


def _alert(row: tuple[Any, ...]) -> OutboxAlert:
    alert_id, created, payload, status, attempts, next_attempt, last_error, response, action, target = row
    return OutboxAlert(
        alert_id,
        created,
        orjson.loads(payload),
        status,
        attempts,
        next_attempt,
        last_error,
        response,
        action,
        target,
        # The text queued, sent as it is (bytes where the row holds a blob: written by hand).
        payload if isinstance(payload, bytes) else payload.encode(),
    )


def _outbox_row(request: dict[str, Any] | Request, now: float) -> tuple[Any, ...]:
    """(created, payload, next_attempt, action, target) of a request to queue."""
    if isinstance(request, Request):
        return now, orjson.dumps(request.payload).decode(), now, request.action, request.target
    return now, orjson.dumps(request).decode(), now, CREATE, None
